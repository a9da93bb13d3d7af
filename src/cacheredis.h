/*
 * cacheredis.h - the shared Redis cache seen from outside the daemon:
 * vemilter-cache's list, get, del, purge, stats and put when `cache` is a
 * redis:// URL. Blocking (hiredis's synchronous API), every call bounded by
 * a timeout: meant for a command-line tool, never for the mail path (the
 * daemon drives Redis from its event loop).
 *
 * The layout is issue 12's contract, shared with the daemon: a record
 * under cache key K (cache.h: "a:", "d:", "h:", "t:") is the HASH
 * "vemilter:K" whose field "r" is exactly cache_record_encode()'s bytes
 * (other fields belong to the daemon and are left alone), expiring by a
 * Redis TTL at the record's expires_at; "vemilter:lease:K" are the probe
 * leases, never listed, removed by purge. Records are found with SCAN
 * (never KEYS, which would stall a shared server).
 *
 * Owns one connection (struct cacheredis) for the length of one command.
 * Errors: a call that fails returns false / -1 and leaves a one-line
 * reason (without any secret) in cacheredis_error(); after a timeout or a
 * broken connection every further call fails too.
 */
#ifndef VEMILTER_CACHEREDIS_H
#define VEMILTER_CACHEREDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache.h"

#define CACHEREDIS_PREFIX       "vemilter:"
#define CACHEREDIS_LEASE_PREFIX "vemilter:lease:"

struct cacheredis;

/* cacheredis_open - connect to url (redis://, redisurl.h) within
 * timeout_ms, AUTH with the first line of password_file (NULL or "": no
 * AUTH; as the URL's user when it names one), SELECT its db and PING.
 * NULL with a reason in why: a bad URL, an unreadable password file,
 * Redis unreachable or slow, AUTH refused or required. timeout_ms bounds
 * each later call too. */
struct cacheredis *cacheredis_open(const char *url, const char *password_file, int64_t timeout_ms, char *why,
                                   size_t why_size);
void cacheredis_close(struct cacheredis *r); /* NULL is fine */

/* cacheredis_error - why the last call failed ("" if none) */
const char *cacheredis_error(const struct cacheredis *r);

/* cacheredis_url - the URL for messages (never holds a secret) */
const char *cacheredis_url(const struct cacheredis *r);

/* cacheredis_get - the record under key, expired or not: 1 found, 0 absent
 * (or damaged: a field "r" that does not decode), -1 on error. */
int cacheredis_get(struct cacheredis *r, const char *key, struct cache_record *out);

/* cacheredis_put - replace whatever is under key with rec (an
 * administrator's word: no replace rule), expiring at its expires_at (a
 * record already expired is dropped by Redis at once). One MULTI/EXEC, so
 * a reader never sees half of it. */
bool cacheredis_put(struct cacheredis *r, const char *key, const struct cache_record *rec);

/* cacheredis_del - 1 deleted, 0 absent, -1 on error */
int cacheredis_del(struct cacheredis *r, const char *key);

/* cacheredis_foreach - every record ("a:", "d:", "h:", "t:"; leases and
 * damaged records skipped) in key order, as cache_foreach; fn gets the
 * cache key without the prefix. The keys are gathered with SCAN first and
 * read in pipelined batches, so a record that expires meanwhile is simply
 * missing. False on error (after visiting what was read). */
bool cacheredis_foreach(struct cacheredis *r, cache_visit_fn fn, void *arg);

/* cacheredis_purge - delete every key under "vemilter:" (records, leases
 * and whatever else the daemon keeps there); -1 on error, else how many
 * records (leases not counted). */
long cacheredis_purge(struct cacheredis *r);

/* cacheredis_sweep - delete the records whose own expires_at has passed at
 * now (Redis expires them itself at that time: normally none; a clock
 * ahead of the server's finds some); -1 on error, else how many. */
long cacheredis_sweep(struct cacheredis *r, int64_t now_ms);

/* cacheredis_info - the server's used_memory and the number of leases;
 * false on error */
bool cacheredis_info(struct cacheredis *r, uint64_t *used_memory, size_t *leases);

#endif
