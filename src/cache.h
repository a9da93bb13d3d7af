/*
 * cache.h - the verification cache: records, lifetimes, and the LMDB store.
 *
 * Keys: "a:<normalized address>" for an address, "d:<domain>" for facts
 * about a domain that answer for its addresses (catch-all, no_domain, every
 * MX unreachable, blocked), "h:<domain>" for hints that only shape a probe
 * (not catch-all, needs the fallback probe sender: outcome.flags).
 * A record is an outcome plus when it was probed, when it should be
 * refreshed and when it expires; its on-disk format is versioned and
 * documented in cacherec.c.
 *
 * The pure part (record encoding, lifetimes, the replace rule) needs no
 * LMDB and is unit-tested with explicit times. The store is one LMDB file
 * (MDB_NOSUBDIR) that several processes may open at once (the daemon,
 * vemilter-check, vemilter-cache); within a process it is safe from any
 * thread. It hides LMDB's recoverable errors: a full map grows (up to
 * cache_max_mb, then the oldest entries are evicted); a corrupt or
 * unreadable file is moved aside and recreated, with a log line. Errors
 * never stop mail: a failed read is a miss, a failed write is logged.
 */
#ifndef VEMILTER_CACHE_H
#define VEMILTER_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"
#include "outcome.h"

#define CACHE_KEY_MAX    300  /* key buffer size, NUL included */
#define CACHE_RECORD_MAX 1024 /* an encoded record is never longer */

struct cache_record {
	struct outcome outcome;    /* flags are stored; ttl_cap_ms is not */
	int64_t probed_at_ms;      /* wall clock, milliseconds since the epoch */
	int64_t refresh_at_ms;     /* past this: serve, and probe again in the background */
	int64_t expires_at_ms;     /* past this: as if absent */
	int64_t deferred_since_ms; /* first temporary outcome of the address in a row; 0: none */
	unsigned tries;            /* greylist re-probes made so far (0..255) */
};

/* ---- pure part ---- */

/* cache_record_make - a record for an outcome probed at now, with the
 * lifetimes the config gives its class (see vemilter.conf(5)), capped by
 * outcome->ttl_cap_ms when that is set. deferred_since_ms and tries are 0. */
void cache_record_make(const struct conf *conf, const struct outcome *outcome, int64_t now_ms,
                       struct cache_record *out);

/* cache_record_may_replace - may fresh overwrite old at now? Never lets a
 * temporary outcome (tempfail, blocked) overwrite an answer (valid,
 * invalid, no_domain, catch_all) that has not expired. */
bool cache_record_may_replace(const struct cache_record *old, const struct cache_record *fresh,
                              int64_t now_ms);

/* cache_record_encode - into buf; returns the length, 0 if size is too small. */
size_t cache_record_encode(const struct cache_record *rec, unsigned char *buf, size_t size);

/* cache_record_decode - false for a wrong version, a bad length or a field
 * out of range (a damaged record is a miss, never a crash). */
bool cache_record_decode(const unsigned char *buf, size_t len, struct cache_record *out);

/* cache_key_address / cache_key_domain / cache_key_hints - "a:..." /
 * "d:..." / "h:..." into buf (CACHE_KEY_MAX). */
void cache_key_address(const char *normalized, char *buf, size_t size);
void cache_key_domain(const char *domain_ascii, char *buf, size_t size);
void cache_key_hints(const char *domain_ascii, char *buf, size_t size);

/* ---- the LMDB store ---- */

struct cache;

enum cache_status {
	CACHE_HIT,   /* *out filled, not expired */
	CACHE_STALE, /* *out filled, past refresh_at, not expired: serve and refresh */
	CACHE_MISS,  /* absent or expired (or unreadable) */
};

struct cache_stats {
	size_t addresses; /* "a:" records */
	size_t domains;   /* "d:" records */
	size_t expired;   /* of those, expired but not yet swept */
	size_t by_outcome[OUTCOME_KIND_COUNT];
	uint64_t map_bytes;  /* current map size */
	uint64_t used_bytes; /* pages in use */
};

/* cache_open - open or create path; max_mb bounds growth. NULL with a
 * reason in why when even a recreated file cannot be opened. */
struct cache *cache_open(const char *path, int max_mb, char *why, size_t why_size);
void cache_close(struct cache *cache);

enum cache_status cache_get(struct cache *cache, const char *key, int64_t now_ms, struct cache_record *out);

/* cache_put - store rec under key unless cache_record_may_replace() says no
 * (then returns true: nothing to do). False on a write error (logged). */
bool cache_put(struct cache *cache, const char *key, const struct cache_record *rec, int64_t now_ms);

bool cache_del(struct cache *cache, const char *key); /* false if absent or on error */

/* cache_sweep - remove expired records; returns how many. */
size_t cache_sweep(struct cache *cache, int64_t now_ms);

/* cache_purge - remove every record; returns how many. */
size_t cache_purge(struct cache *cache);

typedef bool (*cache_visit_fn)(void *arg, const char *key, const struct cache_record *rec);
/* cache_foreach - every record in key order until fn returns false; damaged
 * records are skipped. fn runs with the cache locked: it must not call back
 * into the cache. */
bool cache_foreach(struct cache *cache, cache_visit_fn fn, void *arg);

bool cache_stats(struct cache *cache, int64_t now_ms, struct cache_stats *out);

#endif
