/*
 * mdbcheck.c - LMDB's data file checked without LMDB (see mdbcheck.h).
 *
 * The layout read here is LMDB 0.9's (mdb.c, MDB_DATA_VERSION 1, 64-bit
 * page numbers), little-endian as written on this host:
 *  page:  pgno u64 @0, pad u16 @8, flags u16 @10, lower u16 @12, upper u16
 *         @14 (an overflow page: its page count u32 @12), node offsets u16
 *         from @16 (PAGEHDRSZ) up to lower; nodes live from upper to the end
 *  node:  lo u16, hi u16, flags u16, ksize u16, then the key, then the data
 *         (a leaf: size lo|hi<<16; F_BIGDATA: an overflow page number), or
 *         (a branch) the child page lo|hi<<16|flags<<32
 *  meta:  in pages 0 and 1 after the header: magic u32, version u32,
 *         address, mapsize, two databases (pad/psize u32, flags u16, depth
 *         u16, branch, leaf and overflow page counts, entries, root: u64),
 *         last page u64, txnid u64
 *  free list: database 0, keys a txnid (u64), values a list of page
 *         numbers (count u64, then that many u64)
 * Owns nothing past a call: the buffers and bitmaps are freed on return.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mdbcheck.h"

#define MAGIC      0xBEEFC0DEu
#define VERSION    1u
#define PAGEHDRSZ  16u
#define NODESIZE   8u
#define META_BYTES 136u /* the meta fields read below, from the page header on */
#define P_BRANCH   0x01u
#define P_LEAF     0x02u
#define P_OVERFLOW 0x04u
#define P_META     0x08u
#define F_BIGDATA  0x01u
#define INTEGERKEY 0x08u /* MDB_INTEGERKEY: the free list's keys */
#define MAX_KEY    511u  /* mdb_env_get_maxkeysize() of 0.9 */
#define MAX_DEPTH  31u   /* LMDB's cursor stack holds 32 pages */
#define NO_PAGE    UINT64_MAX
#define MIN_PSIZE  512u
#define MAX_PSIZE  32768u

static uint16_t u16(const unsigned char *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t u32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t u64(const unsigned char *p)
{
	return (uint64_t)u32(p) | (uint64_t)u32(p + 4) << 32;
}

/* read_at - exactly n octets at off; false on a short read (errno 0) or an error */
static bool read_at(int fd, void *buf, size_t n, uint64_t off)
{
	size_t done = 0;
	while (done < n) {
		ssize_t got = pread(fd, (char *)buf + done, n - done, (off_t)(off + done));
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			if (got == 0)
				errno = 0;
			return false;
		}
		done += (size_t)got;
	}
	return true;
}

/* parse_db - one database record of a meta page */
static void parse_db(const unsigned char *p, struct mdbcheck_db *db)
{
	db->flags = u16(p + 4);
	db->depth = u16(p + 6);
	db->branch_pages = u64(p + 8);
	db->leaf_pages = u64(p + 16);
	db->overflow_pages = u64(p + 24);
	db->entries = u64(p + 32);
	db->root = u64(p + 40);
}

/* meta_ok - one meta page's own rules, against the file's pages */
static bool meta_ok(const unsigned char *page, int i, uint64_t size, struct mdbcheck_meta *m, char *why,
                    size_t why_size)
{
	const unsigned char *meta = page + PAGEHDRSZ;
	if (u64(page) != (uint64_t)i || !(u16(page + 10) & P_META)) {
		snprintf(why, why_size, "meta page %d is not a meta page", i);
		return false;
	}
	if (u32(meta) != MAGIC || u32(meta + 4) != VERSION) {
		snprintf(why, why_size, "meta page %d: bad magic or version", i);
		return false;
	}
	parse_db(meta + 24, &m->dbs[0]);
	parse_db(meta + 72, &m->dbs[1]);
	m->psize = u32(meta + 24);
	m->last_pg = u64(meta + 120);
	m->txnid = u64(meta + 128);
	if (m->psize < MIN_PSIZE || m->psize > MAX_PSIZE || (m->psize & (m->psize - 1)) != 0) {
		snprintf(why, why_size, "meta page %d: page size %u", i, m->psize);
		return false;
	}
	uint64_t pages = size / m->psize;
	if (m->last_pg < 1 || m->last_pg >= pages) {
		snprintf(why, why_size,
		         "file is %llu bytes but meta page %d uses %llu pages of %u (truncated?)",
		         (unsigned long long)size, i,
		         (unsigned long long)(m->last_pg < UINT64_MAX ? m->last_pg + 1 : m->last_pg),
		         m->psize);
		return false;
	}
	for (int d = 0; d < 2; d++) {
		const struct mdbcheck_db *db = &m->dbs[d];
		bool empty = db->root == NO_PAGE;
		if ((!empty &&
		     (db->root < 2 || db->root > m->last_pg || db->depth < 1 || db->depth > MAX_DEPTH)) ||
		    (empty && (db->depth != 0 || db->entries != 0))) {
			snprintf(why, why_size, "meta page %d: database %d: root %llu, depth %u", i, d,
			         (unsigned long long)db->root, db->depth);
			return false;
		}
	}
	if (!(m->dbs[0].flags & INTEGERKEY) || m->dbs[1].flags != 0) {
		snprintf(why, why_size, "meta page %d: database flags %#x, %#x", i, m->dbs[0].flags,
		         m->dbs[1].flags);
		return false;
	}
	return true;
}

/* mdbcheck_metas - see mdbcheck.h */
enum mdbcheck_status mdbcheck_metas(int fd, struct mdbcheck_meta metas[2], int *newest, char *why,
                                    size_t why_size)
{
	unsigned char page[2][PAGEHDRSZ + META_BYTES];
	struct stat st;
	if (!read_at(fd, page[0], sizeof(page[0]), 0)) {
		if (errno != 0)
			goto ioerr;
		snprintf(why, why_size, "file is shorter than one meta page");
		return MDBCHECK_DAMAGED;
	}
	unsigned psize = u32(page[0] + PAGEHDRSZ + 24);
	if (u32(page[0] + PAGEHDRSZ) != MAGIC) {
		snprintf(why, why_size, "meta page 0: bad magic");
		return MDBCHECK_DAMAGED;
	}
	if (psize < MIN_PSIZE || psize > MAX_PSIZE || (psize & (psize - 1)) != 0) {
		snprintf(why, why_size, "meta page 0: page size %u", psize);
		return MDBCHECK_DAMAGED;
	}
	if (!read_at(fd, page[1], sizeof(page[1]), psize)) {
		if (errno != 0)
			goto ioerr;
		snprintf(why, why_size, "file is shorter than its two meta pages (truncated?)");
		return MDBCHECK_DAMAGED;
	}
	/* the size after the meta pages: a writer extends the file before it
	 * writes the meta page naming the new pages */
	if (fstat(fd, &st) != 0)
		goto ioerr;
	for (int i = 0; i < 2; i++)
		if (!meta_ok(page[i], i, (uint64_t)st.st_size, &metas[i], why, why_size))
			return MDBCHECK_DAMAGED;
	int n = metas[1].txnid > metas[0].txnid;
	const struct mdbcheck_meta *a = &metas[n], *b = &metas[1 - n];
	if (a->psize != b->psize || a->dbs[0].flags != b->dbs[0].flags) {
		snprintf(why, why_size, "the meta pages disagree on the page size or flags");
		return MDBCHECK_DAMAGED;
	}
	if ((a->txnid == b->txnid && a->txnid != 0) || b->last_pg > a->last_pg) {
		snprintf(why, why_size,
		         "the meta pages are inconsistent (txn %llu and %llu, last page %llu and %llu)",
		         (unsigned long long)a->txnid, (unsigned long long)b->txnid,
		         (unsigned long long)a->last_pg, (unsigned long long)b->last_pg);
		return MDBCHECK_DAMAGED;
	}
	*newest = n;
	return MDBCHECK_OK;
ioerr:
	snprintf(why, why_size, "cannot read: %s", strerror(errno));
	return MDBCHECK_IOERR;
}

/* One walk of both trees. */
struct walk {
	int fd;
	const struct mdbcheck_meta *meta;
	unsigned psize;
	size_t budget, pages; /* pages read so far */
	bool partial;         /* the budget ran out: the counts are not compared */
	unsigned char *seen;  /* a bit per page: reached by a tree */
	unsigned char *buf[MAX_DEPTH + 1];
	unsigned char *value; /* an overflow value being read */
	uint64_t *freed;      /* page numbers on the free list */
	size_t nfreed, freed_cap;
	struct mdbcheck_db count; /* of the tree being walked */
	char *why;
	size_t why_size;
	enum mdbcheck_status status;
};

/* fail - record the first problem; always false */
static bool fail(struct walk *w, enum mdbcheck_status status, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static bool fail(struct walk *w, enum mdbcheck_status status, const char *fmt, ...)
{
	va_list ap;
	if (w->status == MDBCHECK_OK) {
		w->status = status;
		va_start(ap, fmt);
		vsnprintf(w->why, w->why_size, fmt, ap);
		va_end(ap);
	}
	return false;
}

/* claim - page pgno is reached (once) */
static bool claim(struct walk *w, uint64_t pgno)
{
	if (pgno < 2 || pgno > w->meta->last_pg)
		return fail(w, MDBCHECK_DAMAGED, "page %llu is outside the file's pages (last %llu)",
		            (unsigned long long)(pgno), (unsigned long long)(w->meta->last_pg));
	if (w->seen[pgno / 8] & (1u << (pgno % 8)))
		return fail(w, MDBCHECK_DAMAGED, "page %llu is reached twice", (unsigned long long)pgno);
	w->seen[pgno / 8] |= (unsigned char)(1u << (pgno % 8));
	return true;
}

/* load - read n octets of page pgno into buf */
static bool load(struct walk *w, uint64_t pgno, unsigned char *buf, size_t n)
{
	if (read_at(w->fd, buf, n, pgno * w->psize))
		return true;
	if (errno == 0)
		return fail(w, MDBCHECK_DAMAGED, "page %llu is past the end of the file",
		            (unsigned long long)pgno);
	return fail(w, MDBCHECK_IOERR, "cannot read page %llu (errno %llu)", (unsigned long long)(pgno),
	            (unsigned long long)errno);
}

/* key_cmp - the order of keys in a database: the free list's are integers */
static int key_cmp(bool integer, const unsigned char *a, size_t alen, const unsigned char *b, size_t blen)
{
	if (integer) {
		uint64_t x = u64(a), y = u64(b);
		return (x > y) - (x < y);
	}
	int c = memcmp(a, b, alen < blen ? alen : blen);
	return c != 0 ? c : (alen > blen) - (alen < blen);
}

/* free_value - a free-list entry: a count, then that many pages */
static bool free_value(struct walk *w, uint64_t pgno, const unsigned char *v, size_t size)
{
	if (size < 8 || size % 8 != 0 || u64(v) != size / 8 - 1)
		return fail(w, MDBCHECK_DAMAGED, "page %llu: a free-list entry of %llu octets",
		            (unsigned long long)(pgno), (unsigned long long)(size));
	for (size_t i = 1; i < size / 8; i++) {
		uint64_t p = u64(v + 8 * i);
		if (p < 2 || p > w->meta->last_pg)
			return fail(w, MDBCHECK_DAMAGED, "page %llu: the free list names page %llu",
			            (unsigned long long)(pgno), (unsigned long long)(p));
		if (w->nfreed == w->freed_cap) {
			size_t cap = w->freed_cap ? 2 * w->freed_cap : 1024;
			uint64_t *grown = realloc(w->freed, cap * sizeof(*grown));
			if (grown == NULL)
				return fail(w, MDBCHECK_IOERR, "out of memory");
			w->freed = grown;
			w->freed_cap = cap;
		}
		w->freed[w->nfreed++] = p;
	}
	return true;
}

/* overflow - a leaf's value on overflow pages: check them, and read a free
 * list's value to check it too */
static bool overflow(struct walk *w, int dbi, uint64_t from, uint64_t pgno, size_t size)
{
	unsigned char head[PAGEHDRSZ];
	if (!claim(w, pgno) || !load(w, pgno, head, sizeof(head)))
		return false;
	w->pages++;
	uint64_t n = u32(head + 12);
	if (u64(head) != pgno || u16(head + 10) != P_OVERFLOW || n < 1 || n > w->meta->last_pg - pgno + 1 ||
	    n * w->psize < PAGEHDRSZ + (uint64_t)size)
		return fail(w, MDBCHECK_DAMAGED, "page %llu: a bad overflow page %llu",
		            (unsigned long long)(from), (unsigned long long)(pgno));
	for (uint64_t i = 1; i < n; i++)
		if (!claim(w, pgno + i))
			return false;
	w->count.overflow_pages += n;
	if (dbi != 0)
		return true;
	free(w->value);
	if ((w->value = malloc(size > 0 ? size : 1)) == NULL)
		return fail(w, MDBCHECK_IOERR, "out of memory");
	if (!read_at(w->fd, w->value, size, pgno * w->psize + PAGEHDRSZ))
		return fail(w, errno == 0 ? MDBCHECK_DAMAGED : MDBCHECK_IOERR,
		            "page %llu: cannot read overflow page %llu", (unsigned long long)(from),
		            (unsigned long long)(pgno));
	return free_value(w, from, w->value, size);
}

/* walk_page - one page of database dbi at level (1: the root) and below it */
static bool walk_page(struct walk *w, int dbi, uint64_t pgno, unsigned level)
{
	const struct mdbcheck_db *db = &w->meta->dbs[dbi];
	unsigned char *p = w->buf[level];
	unsigned psize = w->psize;
	if (w->pages >= w->budget) {
		w->partial = true;
		return true;
	}
	if (!claim(w, pgno) || !load(w, pgno, p, psize))
		return false;
	w->pages++;
	bool leaf = level == db->depth, integer = dbi == 0;
	unsigned flags = u16(p + 10), lower = u16(p + 12), upper = u16(p + 14);
	if (u64(p) != pgno)
		return fail(w, MDBCHECK_DAMAGED, "page %llu says it is page %llu (overwritten?)",
		            (unsigned long long)(pgno), (unsigned long long)(u64(p)));
	if (flags != (leaf ? P_LEAF : P_BRANCH))
		return leaf ? fail(w, MDBCHECK_DAMAGED,
		                   "page %llu: flags %#llx where the tree needs a leaf (zeroed or "
		                   "overwritten?)",
		                   (unsigned long long)(pgno), (unsigned long long)(flags))
		            : fail(w, MDBCHECK_DAMAGED,
		                   "page %llu: flags %#llx where the tree needs a branch (zeroed or "
		                   "overwritten?)",
		                   (unsigned long long)(pgno), (unsigned long long)(flags));
	unsigned n = lower >= PAGEHDRSZ ? (lower - PAGEHDRSZ) / 2 : 0;
	if (lower < PAGEHDRSZ || (lower - PAGEHDRSZ) % 2 != 0 || lower > upper || upper > psize || n < 1 ||
	    (!leaf && dbi != 0 && n < 2))
		return fail(w, MDBCHECK_DAMAGED, "page %llu: bad bounds (lower %llu)",
		            (unsigned long long)(pgno), (unsigned long long)(lower));
	if (leaf)
		w->count.leaf_pages++;
	else
		w->count.branch_pages++;
	const unsigned char *prev = NULL;
	size_t prev_len = 0;
	for (unsigned i = 0; i < n; i++) {
		unsigned off = u16(p + PAGEHDRSZ + 2 * i);
		if (off % 2 != 0 || off < upper || off + NODESIZE > psize)
			return fail(w, MDBCHECK_DAMAGED, "page %llu: node %llu is outside the page",
			            (unsigned long long)(pgno), (unsigned long long)(i));
		const unsigned char *node = p + off, *key = node + NODESIZE;
		unsigned lo = u16(node), hi = u16(node + 2), nflags = u16(node + 4), ksize = u16(node + 6);
		if (off + NODESIZE + ksize > psize || ksize > MAX_KEY || ((leaf || i > 0) && ksize == 0) ||
		    (integer && (leaf || i > 0) && ksize != 8))
			return fail(w, MDBCHECK_DAMAGED, "page %llu: node %llu has a bad key size",
			            (unsigned long long)(pgno), (unsigned long long)(i));
		if (leaf || i > 0) {
			if (prev != NULL && key_cmp(integer, prev, prev_len, key, ksize) >= 0)
				return fail(w, MDBCHECK_DAMAGED, "page %llu: key %llu is out of order",
				            (unsigned long long)(pgno), (unsigned long long)(i));
			prev = key;
			prev_len = ksize;
		}
		if (!leaf) {
			uint64_t child = lo | (uint64_t)hi << 16 | (uint64_t)nflags << 32;
			if (!walk_page(w, dbi, child, level + 1))
				return false;
			if (w->partial)
				return true;
			continue;
		}
		size_t dsize = lo | (size_t)hi << 16;
		const unsigned char *data = key + ksize;
		w->count.entries++;
		if (integer && u64(key) > w->meta->txnid)
			return fail(w, MDBCHECK_DAMAGED, "page %llu: a free-list entry of a future txn %llu",
			            (unsigned long long)(pgno), (unsigned long long)(u64(key)));
		if (nflags == F_BIGDATA) {
			if (off + NODESIZE + ksize + 8 > psize)
				return fail(w, MDBCHECK_DAMAGED, "page %llu: node %llu is outside the page",
				            (unsigned long long)(pgno), (unsigned long long)(i));
			if (!overflow(w, dbi, pgno, u64(data), dsize))
				return false;
		} else if (nflags != 0) {
			return fail(w, MDBCHECK_DAMAGED, "page %llu: node %llu has flags of a sub-database",
			            (unsigned long long)(pgno), (unsigned long long)(i));
		} else if (off + NODESIZE + ksize + dsize > psize) {
			return fail(w, MDBCHECK_DAMAGED, "page %llu: node %llu's data is outside the page",
			            (unsigned long long)(pgno), (unsigned long long)(i));
		} else if (integer && !free_value(w, pgno, data, dsize)) {
			return false;
		}
	}
	return true;
}

/* walk_db - one database from its root; its counts against the meta's */
static bool walk_db(struct walk *w, int dbi)
{
	const struct mdbcheck_db *db = &w->meta->dbs[dbi];
	memset(&w->count, 0, sizeof(w->count));
	if (db->root == NO_PAGE)
		return true;
	if (!walk_page(w, dbi, db->root, 1))
		return false;
	if (w->partial)
		return true;
	if (w->count.branch_pages != db->branch_pages || w->count.leaf_pages != db->leaf_pages ||
	    w->count.overflow_pages != db->overflow_pages || w->count.entries != db->entries)
		return fail(w, MDBCHECK_DAMAGED, "database %llu: %llu entries where the meta says otherwise",
		            (unsigned long long)dbi, (unsigned long long)(w->count.entries));
	return true;
}

/* mdbcheck_trees - see mdbcheck.h */
enum mdbcheck_status mdbcheck_trees(int fd, const struct mdbcheck_meta *meta, size_t budget, size_t *pages,
                                    char *why, size_t why_size)
{
	struct walk w = {.fd = fd,
	                 .meta = meta,
	                 .psize = meta->psize,
	                 .budget = budget,
	                 .why = why,
	                 .why_size = why_size};
	bool ok = (w.seen = calloc(meta->last_pg / 8 + 1, 1)) != NULL;
	for (unsigned i = 0; ok && i <= MAX_DEPTH; i++)
		ok = (w.buf[i] = malloc(meta->psize)) != NULL;
	if (!ok)
		fail(&w, MDBCHECK_IOERR, "out of memory");
	else if (walk_db(&w, 1) && walk_db(&w, 0) && !w.partial) {
		/* a page on the free list is in neither tree, and listed once */
		for (size_t i = 0; i < w.nfreed && w.status == MDBCHECK_OK; i++)
			if (!claim(&w, w.freed[i])) {
				w.why[0] = '\0';
				w.status = MDBCHECK_OK;
				fail(&w, MDBCHECK_DAMAGED, "the free list names page %llu, which is in use",
				     (unsigned long long)w.freed[i]);
			}
	}
	if (pages != NULL)
		*pages = w.pages;
	for (unsigned i = 0; i <= MAX_DEPTH; i++)
		free(w.buf[i]);
	free(w.seen);
	free(w.freed);
	free(w.value);
	return w.status;
}
