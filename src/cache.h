/*
 * cache.h - the verification cache: records, lifetimes, and the LMDB store.
 *
 * Keys: "a:<normalized address>" for an address, "d:<domain>" for facts
 * about a domain that answer for its addresses (catch-all, no_domain, every
 * MX unreachable, blocked), "h:<domain>" for hints that only shape a probe
 * (not catch-all, needs the fallback probe sender: outcome.flags), and
 * "t:<stable form>" for what one address of a tagged sender (BATV, SRS,
 * VERP: tags.h) taught about the others of the same stable form (positive
 * answers only, flagged OUTCOME_F_TAGGED). The "t:" keys live apart from
 * "a:" so that a plain address and a tagged copy never answer for each
 * other.
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

/* cache_record_may_replace - may fresh overwrite old at now? A temporary
 * outcome (tempfail, blocked) never overwrites an answer (valid, invalid,
 * no_domain, catch_all) that has not expired, except a negative (invalid,
 * no_domain) past its refresh time: a stale negative is never served, so
 * the temporary outcome of its refresh is the best there is. */
bool cache_record_may_replace(const struct cache_record *old, const struct cache_record *fresh,
                              int64_t now_ms);

/* How long a temporary record outlives defer_limit: room for the sender's
 * next retry after the limit has passed (Postfix's maximal_backoff_time is
 * 4000 s), so the retry still finds when the deferral started. */
#define CACHE_DEFER_MARGIN_MS INT64_C(4000000)

/* cache_record_continue_deferral - rec (an address's new record, made at
 * now) continues prev (the address's record before it, or NULL): a
 * temporary rec keeps prev's deferral start and greylist tries when prev
 * was temporary too (else starts both at now, 0), and lives at least until
 * deferred_since + defer_limit + CACHE_DEFER_MARGIN_MS (defer_limit 0: no
 * change); its refresh time is unchanged, so a temporary record past it is
 * only a carrier of the deferral start. A definite rec has neither. */
void cache_record_continue_deferral(const struct conf *conf, struct cache_record *rec,
                                    const struct cache_record *prev, int64_t now_ms);

/* cache_record_stamp_refresh - a background refresh of rec was started at
 * now: its next refresh is one refresh window (of its outcome's class)
 * away, never after it expires. One stale record so starts at most one
 * refresh a window, whatever the refresh's outcome (Postfix's verify(8)
 * does the same). */
void cache_record_stamp_refresh(const struct conf *conf, struct cache_record *rec, int64_t now_ms);

/* cache_record_encode - into buf; returns the length, 0 if size is too small. */
size_t cache_record_encode(const struct cache_record *rec, unsigned char *buf, size_t size);

/* cache_record_decode - false for a wrong version, a bad length or a field
 * out of range (a damaged record is a miss, never a crash). */
bool cache_record_decode(const unsigned char *buf, size_t len, struct cache_record *out);

/* cache_key_address / cache_key_domain / cache_key_hints / cache_key_tagged
 * - "a:..." / "d:..." / "h:..." / "t:..." into buf (CACHE_KEY_MAX); "" when
 * the name is empty or does not fit. */
void cache_key_address(const char *normalized, char *buf, size_t size);
void cache_key_domain(const char *domain_ascii, char *buf, size_t size);
void cache_key_hints(const char *domain_ascii, char *buf, size_t size);
void cache_key_tagged(const char *stable, char *buf, size_t size);

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

/* ---- the mirror: every write also goes elsewhere (the shared Redis tier) ----
 *
 * With a mirror set, cache_put hands it each record it wrote (not one the
 * replace rule kept out) and cache_del each key it was asked to delete,
 * after the local write and outside the cache's lock, from whatever thread
 * wrote. Sweeps and purges are local housekeeping and are not mirrored
 * (the other side expires records by itself). cache_put_local writes
 * without the mirror: for records that came from it. */
struct cache_mirror {
	void (*put)(void *arg, const char *key, const struct cache_record *rec, int64_t now_ms);
	void (*del)(void *arg, const char *key);
	void *arg;
};

/* cache_set_mirror - copied; NULL: none. Before any other thread uses the cache. */
void cache_set_mirror(struct cache *cache, const struct cache_mirror *mirror);

/* cache_put_local - cache_put without the mirror */
bool cache_put_local(struct cache *cache, const char *key, const struct cache_record *rec, int64_t now_ms);

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

/* What cache_size reads from LMDB's own counters, without a walk (cheap
 * enough for every metrics scrape). */
struct cache_size {
	size_t records;            /* every key, expired and hints included */
	uint64_t map_bytes;        /* the map's size */
	uint64_t file_pages_bytes; /* up to the last page used (free pages included) */
};

/* cache_size - false (out zeroed) without a cache or on error */
bool cache_size(struct cache *cache, struct cache_size *out);

#endif
