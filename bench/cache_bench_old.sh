#!/bin/sh
# cache_bench_old.sh - bench/cache_bench built against the cache.c of
# another commit, for a before/after on the same machine in one sitting:
#
#   bench/cache_bench_old.sh REV [cache_bench options]
#
# e.g. REV = 256f04c, the store before the rwlock and the sync thread (one
# mutex around every transaction, every commit synced). Builds
# $builddir/bench/cache_bench-REV from REV's src/cache.c and src/cache.h
# (with today's mdbcheck.c and core library: run it in a built tree) and
# runs it with the options given. An older cache.c without
# cache_sync_every runs only the "sync_each" way; run bench/cache_bench
# right before or after (better: alternate them, several times, and take
# medians: timings on a shared machine are noisy).
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
