/*
 * mdbcheck.h - is an LMDB data file sound? Its meta pages and the B-trees
 * of its two databases (LMDB's free-page list and the main database),
 * checked against LMDB's file format version 1 (LMDB 0.9 on a 64-bit
 * host) by reading the file with pread(): never through a memory map, so
 * a file shorter than its pages is an answer here, not a SIGBUS.
 *
 * Why: LMDB trusts its pages. A truncated file faults (SIGBUS) when a page
 * past its end is read through the map; a zeroed or overwritten page makes
 * it return MDB_CORRUPTED or MDB_PAGE_NOTFOUND at best, fail an assertion
 * (abort) or, in a write, copy and shift nodes by sizes read from the
 * garbage (memory corruption) at worst. Every one of those is prevented by
 * refusing the file before LMDB reads it: each rule below is one LMDB
 * relies on (cache.c says when the check runs).
 *
 * Pure: no LMDB library, no global state; the caller owns the descriptor.
 */
#ifndef VEMILTER_MDBCHECK_H
#define VEMILTER_MDBCHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mdbcheck_db {
	unsigned flags, depth;
	uint64_t branch_pages, leaf_pages, overflow_pages, entries, root;
};

struct mdbcheck_meta {
	uint64_t txnid;
	uint64_t last_pg;          /* the last page in use */
	unsigned psize;            /* page size */
	struct mdbcheck_db dbs[2]; /* 0: the free-page list, 1: the main database */
};

enum mdbcheck_status {
	MDBCHECK_OK,
	MDBCHECK_DAMAGED, /* why says what */
	MDBCHECK_IOERR,   /* a read failed (errno in why) */
};

/* mdbcheck_metas - read both meta pages of fd, then the file's size, and
 * check: each is a meta page with LMDB's magic and version, the same page
 * size (a power of two, 512 to 32768) and flags, its last page inside the
 * file and its roots inside its pages; the newer one (LMDB uses it) has
 * the higher transaction id. A file of 0 bytes is DAMAGED too ("empty").
 * metas[0], metas[1] and *newest (0 or 1) are filled on OK. */
enum mdbcheck_status mdbcheck_metas(int fd, struct mdbcheck_meta metas[2], int *newest, char *why,
                                    size_t why_size);

/* mdbcheck_trees - walk both databases of meta (one of mdbcheck_metas's,
 * whose pages the caller keeps from being reused: an open LMDB read
 * transaction of that id), reading at most budget pages. Every page
 * reached must be inside the file's last page, reached once, carry its own
 * number and the right kind for its depth (branch, leaf, overflow), have
 * sane bounds and nodes inside the page, keys of a legal size in order,
 * no sub-databases; the free list's entries must name pages in use by
 * neither tree, once; the counts must match the meta's (when the walk was
 * complete). *pages (may be NULL): pages read. */
enum mdbcheck_status mdbcheck_trees(int fd, const struct mdbcheck_meta *meta, size_t budget, size_t *pages,
                                    char *why, size_t why_size);

#endif
