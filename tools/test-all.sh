#!/usr/bin/env bash
# test-all.sh - install what is missing, build, and run every test: unit,
# milter-protocol, daemon and real-Postfix end to end. Ends with the line
# "N passed, N failed" counted over individual test cases.
set -uo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh --test || exit 1
tools/build.sh || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }

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
failed=$(( $(count FAIL) + $(count XPASS) + $(count ERROR) ))
skipped=$(count SKIP)
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
	failed=1 # make itself failed (build of a test program, a crash): never report green
	tail -n 40 check.out
fi
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
