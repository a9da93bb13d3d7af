#!/bin/sh
# fuzz.sh - build every fuzz target with libFuzzer and run each in turn
# (what "make fuzz" does).
#
#   fuzz.sh SRCDIR BUILDDIR
#
# Environment (make fuzz sets them): FUZZ_CC (clang), FUZZ_SECONDS (per
# target, default 60), FUZZ_TARGETS_RUN (names without fuzz_, default all),
# FUZZ_CFLAGS / FUZZ_LIBS (pkg-config flags of the libraries). One target
# at a time, one process each.
#
# The sources (src/*.c but the mains and the libmilter glue) are compiled
# once with -fsanitize=fuzzer-no-link,address,undefined into
# BUILDDIR/fuzz-build/; each target links them with libFuzzer's main
# (-DVEMILTER_LIBFUZZER drops replay.c's). Each run starts from a copy of
# tests/fuzz/corpus/<name> in fuzz-build/work/<name> (new inputs go there,
# not into the source tree), writes crashes to fuzz-build/crash/<name>/ and
# its log to fuzz-build/<name>.log. Ends with one line per target: its
# executions, and "crash" with the artifacts if it found one; exit 1 if any
# did. Keep what was found with -merge=1 as tests/fuzz/README.md says.
set -u
src=$1
build=$2
cc=${FUZZ_CC:-clang}
seconds=${FUZZ_SECONDS:-60}
all="addr smtpreply cacherec conf dnsttl smtp dns milter reply cachedb milterwire milterloop"
run=${FUZZ_TARGETS_RUN:-}
[ -n "$run" ] || run=$all
out=$build/fuzz-build
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
cflags="-g -O1 -std=gnu11 -D_GNU_SOURCE -DVEMILTER_LIBFUZZER -pthread -I$src/src -I$build ${FUZZ_CFLAGS:-}"

command -v "$cc" >/dev/null 2>&1 || { echo "fuzz.sh: $cc not found (apt-get install clang)" >&2; exit 1; }
mkdir -p "$out/obj" "$out/work" "$out/crash" || exit 1

# the library: every module, instrumented for coverage
objs=
for f in "$src"/src/*.c; do
	name=$(basename "$f" .c)
	case $name in main | check | cachetool) continue ;; esac
	o=$out/obj/$name.o
	if [ ! -f "$o" ] || [ "$f" -nt "$o" ]; then
		$cc $cflags $san -fsanitize=fuzzer-no-link -c -o "$o" "$f" || exit 1
	fi
	objs="$objs $o"
done
rm -f "$out/libvm.a"
ar cr "$out/libvm.a" $objs || exit 1

failed=0
summary=
for t in $run; do
	bin=$out/fuzz_$t
	$cc $cflags $san -fsanitize=fuzzer -o "$bin" "$src/tests/fuzz/fuzz_$t.c" "$out/libvm.a" \
		${FUZZ_LIBS:-} -pthread || exit 1
	mkdir -p "$out/work/$t" "$out/crash/$t"
	cp "$src/tests/fuzz/corpus/$t"/* "$out/work/$t/" 2>/dev/null
	echo "fuzz.sh: fuzz_$t for ${seconds}s"
	"$bin" -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix="$out/crash/$t/" \
		"$out/work/$t" >"$out/$t.log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/$t.log" | awk '{ n += $1 } END { print n + 0 }')
	line="fuzz_$t: $execs executions in ${seconds}s"
	if [ "$rc" -ne 0 ] || [ -n "$(ls -A "$out/crash/$t")" ]; then
		line="$line, crash (exit $rc): $(ls "$out/crash/$t" | tr '\n' ' ')"
		failed=1
	fi
	summary="$summary$line
"
done
printf '%s' "$summary"
exit $failed
