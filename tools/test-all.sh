#!/usr/bin/env bash
# test-all.sh - install what is missing, build, and run every test: unit,
# milter-protocol, daemon, fuzz corpus and real-Postfix end to end. Ends
# with the line "tests: N passed, N failed, N skipped" counted over
# individual test cases.
#
# --sanitizers: the same suite on an ASan+UBSan build (configure
# --enable-sanitizers) in build-san/, a copy of the source tree (the files
# git knows, tracked or not ignored), so that the normal in-tree build is
# left as it is: automake cannot build out of a source tree that is itself
# configured. The copy keeps the files' times, so a second run rebuilds only
# what changed. Any sanitizer report fails a test (see Makefile.am and
# tests/lib/vmtest.py).
set -uo pipefail
cd "$(dirname "$0")/.."
sanitize=no
case "${1:-}" in
--sanitizers) sanitize=yes ;;
"") ;;
*)
	echo "usage: tools/test-all.sh [--sanitizers]" >&2
	exit 2
	;;
esac
tools/deps.sh --test || exit 1
if [ "$sanitize" = yes ]; then
	if ! git rev-parse --git-dir >/dev/null 2>&1; then
		echo "test-all.sh --sanitizers: needs a git checkout (to know which files to copy)"
		echo "tests: 0 passed, 1 failed, 0 skipped"
		exit 1
	fi
	mkdir -p build-san
	git ls-files -z --cached --others --exclude-standard |
		tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C build-san
	cd build-san
	if ! { { [ -x configure ] || autoreconf -fi >/dev/null 2>&1; } &&
		{ [ -f Makefile ] || ./configure -q --enable-sanitizers; } &&
		make -j"$(nproc)" >/dev/null; }; then
		echo "sanitizer build failed"
		echo "tests: 0 passed, 1 failed, 0 skipped"
		exit 1
	fi
else
	tools/build.sh || {
		echo "build failed"
		echo "tests: 0 passed, 1 failed, 0 skipped"
		exit 1
	}
fi

make -j"$(nproc)" check >check.out 2>&1
status=$?
grep -E '^(PASS|FAIL|XPASS|ERROR|SKIP):' check.out | grep -v '^PASS' || true
# Show the log of every failing test file.
for log in $(find tests -name '*.log' | sort); do
	if grep -qE '^(not ok|Bail out)' "$log" 2>/dev/null || grep -q '^:test-result: \(FAIL\|ERROR\)' "${log%.log}.trs" 2>/dev/null; then
		echo "=== $log"
		tail -n 60 "$log"
	fi
done
count() { awk -v k="# $1:" 'index($0, k) == 1 { n += $3 } END { print n + 0 }' check.out; }
passed=$(count PASS)
failed=$(($(count FAIL) + $(count XPASS) + $(count ERROR)))
skipped=$(count SKIP)
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
	failed=1 # make itself failed (build of a test program, a crash): never report green
	tail -n 40 check.out
fi
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
