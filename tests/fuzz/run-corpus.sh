#!/bin/sh
# run-corpus.sh - replay the stored fuzz corpus through every fuzz target.
#
# A TAP test for make check: for each target, runs
# $VEMILTER_BUILDDIR/tests/fuzz/fuzz_<name> (the gcc build, with replay.c as
# its main) on every file of $VEMILTER_SRCDIR/tests/fuzz/corpus/<name>/ and
# emits one line per target: "ok N - fuzz_<name>: K inputs replayed". A
# target that crashes, aborts on a broken invariant, exits non-zero, replays
# fewer inputs than the directory holds, or has an empty corpus is "not ok".

srcdir=${VEMILTER_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
builddir=${VEMILTER_BUILDDIR:-.}
targets="addr smtpreply cacherec conf dnsttl smtp dns milter reply cachedb milterwire milterloop"
log=${TMPDIR:-/tmp}/vemilter-fuzz.$$
trap 'rm -f "$log"' EXIT INT TERM

set -- $targets
echo "1..$#"
n=0
failed=0
for name in $targets; do
	n=$((n + 1))
	bin=$builddir/tests/fuzz/fuzz_$name
	dir=$srcdir/tests/fuzz/corpus/$name
	if [ ! -x "$bin" ]; then
		echo "not ok $n - fuzz_$name: $bin not built"
		failed=1
		continue
	fi
	want=$(find "$dir" -maxdepth 1 -type f 2>/dev/null | wc -l)
	if [ "$want" -eq 0 ]; then
		echo "not ok $n - fuzz_$name: corpus $dir is empty or missing"
		failed=1
		continue
	fi
	"$bin" "$dir" >"$log" 2>&1
	rc=$?
	got=$(grep -c '^ok ' "$log")
	if [ "$rc" -ne 0 ] || [ "$got" -ne "$want" ]; then
		echo "not ok $n - fuzz_$name: exit status $rc, $got of $want inputs replayed"
		# replay.c goes through the files in strcmp order: the input that
		# failed is the one after the last "ok"
		culprit=$(find "$dir" -maxdepth 1 -type f | LC_ALL=C sort | sed -n "$((got + 1))p")
		[ -n "$culprit" ] && echo "# failing input: $culprit"
		tail -n 5 "$log" | sed 's/^/# /'
		failed=1
		continue
	fi
	echo "ok $n - fuzz_$name: $got inputs replayed"
done
exit $failed
