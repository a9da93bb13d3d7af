#!/bin/sh
# cache_bench_old.sh - build bench/cache_bench against the cache.c of
# another commit (default: store~4... give one: the commit before the
# rwlock, e.g. the merge base with main), for a before/after in one run:
#
#   bench/cache_bench_old.sh REV [cache_bench options]
#
# builds $builddir/bench/cache_bench-REV from REV's src/cache.c and
# src/cache.h (with today's mdbcheck.c and core library: run it in a built
# tree, make bench first) and runs it with the options given. An older
# cache.c without cache_sync_every runs only the "sync_each" way: compare
# it with "bench/cache_bench -s 0" run right before or after, several
# times (timings on a shared machine are noisy: take medians).
set -e
rev=${1:?usage: cache_bench_old.sh REV [options]}
shift
srcdir=$(cd "$(dirname "$0")/.." && pwd)
builddir=${VEMILTER_BUILDDIR:-$srcdir}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/cache_bench_old.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
git -C "$srcdir" show "$rev:src/cache.c" >"$tmp/cache.c"
git -C "$srcdir" show "$rev:src/cache.h" >"$tmp/cache.h"
name=$(git -C "$srcdir" rev-parse --short "$rev")
out=$builddir/bench/cache_bench-$name
# the old header first: the old cache.c is built with it, the bench with it too
${CC:-cc} -std=gnu11 -D_GNU_SOURCE -O2 -pthread -I"$tmp" -I"$srcdir/src" -I"$builddir" \
	-o "$out" "$srcdir/bench/cache_bench.c" "$tmp/cache.c" "$srcdir/src/mdbcheck.c" \
	"$builddir/libvmcore.a" -llmdb -lidn2
echo "built $out" >&2
"$out" "$@"
