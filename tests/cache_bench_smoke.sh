#!/bin/sh
# cache_bench_smoke.sh - a smoke run of bench/cache_bench (TAP): both ways
# of syncing run their three phases with -q (0.2 s each, 2 readers), every
# phase line is there with a positive rate and no failed put or missed get
# (every key read was put before). Timings are not judged: that is the
# bench's own job, run by hand (make bench).
builddir=${VEMILTER_BUILDDIR:-.}
bin=$builddir/bench/cache_bench
dir=$(mktemp -d "${TMPDIR:-/tmp}/cache_bench_smoke.XXXXXX") || exit 1
out=$dir/out
trap 'rm -rf "$dir"' EXIT INT TERM
echo "1..7"
if [ ! -x "$bin" ]; then
	echo "not ok 1 - $bin not built"
	exit 1
fi
if timeout 60 "$bin" -q -d "$dir" >"$out" 2>"$dir/err"; then
	echo "ok 1 - cache_bench -q exits 0"
else
	echo "not ok 1 - cache_bench -q failed: $(cat "$dir/err")"
fi
n=1
for way in sync_each sync_1000ms; do
	for phase in put get mixed; do
		n=$((n + 1))
		line=$(grep "^phase=$phase way=$way " "$out")
		case $phase in
		put) rate=puts_per_s ;;
		*) rate=gets_per_s ;;
		esac
		value=$(printf '%s\n' "$line" | sed -n "s/.* $rate=\([0-9]*\).*/\1/p")
		if [ -n "$line" ] && [ "${value:-0}" -gt 0 ] &&
			! printf '%s\n' "$line" | grep -q ' failed=[1-9]' &&
			! printf '%s\n' "$line" | grep -q ' misses=[1-9]'; then
			echo "ok $n - $phase $way: $rate=$value"
		else
			echo "not ok $n - $phase $way: ${line:-no line}"
		fi
	done
done
