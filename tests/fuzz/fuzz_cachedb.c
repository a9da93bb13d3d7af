/*
 * fuzz_cachedb.c - cache records read back from an LMDB value of fuzz bytes,
 * through the store's own calls (src/cache.c), not only the decoder.
 *
 * Each input is written, with LMDB directly, as the value of one key in a
 * fresh cache file (next to a valid record), the file closed, and then
 * opened with cache_open() as the daemon and the tools do: cache_get() of
 * that key, cache_foreach() (vemilter-cache list), cache_stats(),
 * cache_put() over it (cache_record_may_replace() reads the old value),
 * cache_get() again, cache_sweep(). Input layout:
 *
 *   byte 0      the key's kind: "a:", "d:", "h:", "t:" (b & 3); bit 2 the
 *               time the calls use is the record's own refresh time (else
 *               a fixed 2026 time)
 *   then        the rest of the key up to a NUL (at most CACHE_KEY_MAX - 3)
 *   then        the value, any length up to 4096
 *
 * The file lives in a directory under $TMPDIR (/dev/shm when it exists, so
 * the store's fsyncs stay cheap), removed at exit.
 *
 * Invariants (abort on violation): cache_get() gives HIT or STALE only
 * when cache_record_decode() accepts the value, and then the same record; cache_foreach() visits
 * the fuzzed key exactly when the value decodes, and always the valid
 * neighbour; cache_stats() counts at most the two records; after a
 * cache_put() of a valid record the key reads back as a hit when the put
 * replaced (and as before when it did not); every call returns; no leak.
 */
#include <errno.h>
#include <lmdb.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NOW_MS INT64_C(1780000000000) /* 2026-05-28 */

static char dir[256], path[300], lock[310];

static void cleanup(void)
{
	unlink(path);
	unlink(lock);
	rmdir(dir);
}

static void setup(void)
{
	if (dir[0] != '\0')
		return;
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
	snprintf(dir, sizeof(dir), "%s/fuzz_cachedb.XXXXXX", base != NULL ? base : "/tmp");
	if (mkdtemp(dir) == NULL)
		abort();
	snprintf(path, sizeof(path), "%s/cache.lmdb", dir);
	snprintf(lock, sizeof(lock), "%s-lock", path);
	atexit(cleanup);
}

static void check(bool cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "fuzz_cachedb: invariant failed: %s\n", what);
		abort();
	}
}

static struct cache_record valid_record(int64_t now)
{
	struct cache_record r;
	memset(&r, 0, sizeof(r));
	outcome_set(&r.outcome, OUTCOME_VALID, STAGE_RCPT, 250, "2.1.5", "ok", "accepted");
	r.probed_at_ms = now;
	r.refresh_at_ms = now + 3600000;
	r.expires_at_ms = now + 86400000;
	return r;
}

/* write_file - a fresh file holding key=value and the valid neighbour */
static void write_file(const char *key, const uint8_t *value, size_t len, const char *other,
                       const uint8_t *ovalue, size_t olen)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	unlink(path);
	unlink(lock);
	if (mdb_env_create(&env) != 0)
		abort();
	mdb_env_set_mapsize(env, 1 << 20);
	if (mdb_env_open(env, path, MDB_NOSUBDIR | MDB_NOSYNC | MDB_NOTLS, 0600) != 0 ||
	    mdb_txn_begin(env, NULL, 0, &txn) != 0 || mdb_dbi_open(txn, NULL, 0, &dbi) != 0)
		abort();
	MDB_val k = {strlen(key), (void *)key}, v = {len, (void *)value};
	MDB_val ok = {strlen(other), (void *)other}, ov = {olen, (void *)ovalue};
	if (mdb_put(txn, dbi, &k, &v, 0) != 0 || mdb_put(txn, dbi, &ok, &ov, 0) != 0 ||
	    mdb_txn_commit(txn) != 0)
		abort();
	mdb_env_close(env);
}

static bool same(const struct cache_record *a, const struct cache_record *b)
{
	unsigned char x[CACHE_RECORD_MAX], y[CACHE_RECORD_MAX];
	size_t lx = cache_record_encode(a, x, sizeof(x)), ly = cache_record_encode(b, y, sizeof(y));
	return lx == ly && lx > 0 && memcmp(x, y, lx) == 0;
}

struct visit {
	const char *key, *other;
	int seen_key, seen_other, total;
};

static bool on_record(void *arg, const char *key, const struct cache_record *rec)
{
	struct visit *v = arg;
	v->total++;
	if (strcmp(key, v->key) == 0)
		v->seen_key++;
	if (strcmp(key, v->other) == 0)
		v->seen_other++;
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const kinds[] = {"a:", "d:", "h:", "t:"};
	if (size < 1 || size > 4096 + CACHE_KEY_MAX)
		return 0;
	setup();
	char key[CACHE_KEY_MAX];
	const uint8_t *p = data + 1, *end = data + size;
	const uint8_t *nul = memchr(p, 0, (size_t)(end - p));
	size_t klen = nul != NULL ? (size_t)(nul - p) : 0; /* no NUL: empty suffix, all value */
	if (klen > CACHE_KEY_MAX - 3)
		klen = CACHE_KEY_MAX - 3;
	snprintf(key, sizeof(key), "%s%.*s", kinds[data[0] & 3], (int)klen, (const char *)p);
	if (nul != NULL)
		p = nul + 1;
	const uint8_t *value = p;
	size_t vlen = (size_t)(end - p);
	if (vlen > 4096 || strlen(key) < 3)
		return 0;
	const char *other =
	        strcmp(key, "d:zz-neighbour.example") == 0 ? "d:zy.example" : "d:zz-neighbour.example";
	struct cache_record good = valid_record(NOW_MS);
	unsigned char gbuf[CACHE_RECORD_MAX];
	size_t glen = cache_record_encode(&good, gbuf, sizeof(gbuf));
	check(glen > 0, "the valid record encodes");
	write_file(key, value, vlen, other, gbuf, glen);

	struct cache_record decoded;
	bool decodes = cache_record_decode(value, vlen, &decoded);
	int64_t now = (data[0] & 4) && decodes ? decoded.refresh_at_ms : NOW_MS;

	char why[256];
	struct cache *c = cache_open(path, 8, why, sizeof(why));
	check(c != NULL, "cache_open of a file LMDB wrote");
	struct cache_record got;
	enum cache_status st = cache_get(c, key, now, &got);
	if (st != CACHE_MISS) {
		check(decodes, "a hit only for a value that decodes");
		check(same(&got, &decoded), "the hit is the decoded record");
	}

	struct visit v = {.key = key, .other = other};
	cache_foreach(c, on_record, &v);
	check(v.seen_other == 1, "the valid neighbour is listed");
	check(v.seen_key == (decodes ? 1 : 0), "the fuzzed record is listed exactly when it decodes");

	struct cache_stats stats;
	if (cache_stats(c, now, &stats))
		check(stats.addresses + stats.domains <= 2, "stats count at most the two records");

	struct cache_record fresh = valid_record(now);
	bool replaces = !decodes || cache_record_may_replace(&decoded, &fresh, now);
	if (cache_put(c, key, &fresh, now) && replaces) {
		st = cache_get(c, key, now, &got);
		check(st != CACHE_MISS && same(&got, &fresh), "a put that replaces reads back");
	}
	cache_sweep(c, now);
	cache_close(c);
	return 0;
}
