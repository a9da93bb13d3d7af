#!/usr/bin/env bash
# format.sh - every C file matches .clang-format (TAP, one case a file).
cd "${VEMILTER_SRCDIR:-.}" || exit 1
if ! command -v clang-format >/dev/null; then
	echo "1..1"
	echo "not ok 1 - clang-format is not installed (apt-get install clang-format)"
	exit 1
fi
files=$(ls src/*.c src/*.h tests/unit/*.c tests/unit/*.h 2>/dev/null)
n=0
bad=0
for f in $files; do
	n=$((n + 1))
	if clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then
		echo "ok $n - clang-format $f"
	else
		echo "not ok $n - clang-format $f (run: clang-format -i $f)"
		bad=1
	fi
done
echo "1..$n"
exit $bad
