/*
 * shared.h - the shared cache tier on Redis (issue 12): one client per
 * daemon, on the engine thread's event loop (hiredis's async API and its
 * libevent adapter), between the local LMDB tier and a Redis server that
 * every host of a fleet uses.
 *
 * Owns the connection, its requests and their timers, the second
 * connection that listens for the fleet's breaker records (below), the
 * queue of writes handed over by other threads, the password (read from
 * cache_password_file, never logged) and this host's id ("hostname:pid",
 * what leases hold), and the fleet's budgets (fleetrate.h: what this host
 * knows of them and owes Redis). Everything runs on the engine thread
 * except shared_mirror_put/del (any thread: they queue and wake the loop),
 * shared_rate_take/peek (any thread: the budgets have their own lock) and
 * shared_check (synchronous, for vemilter -n).
 *
 * Connection: connect, AUTH [user] password, SELECT db, SCRIPT LOAD of the
 * scripts (sharedrule.h); only then is Redis "up". Every command, those
 * included, has its own cache_redis_timeout timer: a timeout or an error
 * drops the connection (every request still pending fails), Redis is
 * "down", and a reconnection follows after 1 s, doubling to 30 s, reset by
 * a success. A change of state is logged once (a warning when it goes
 * down, with why; a notice when it is up again); a wrong password is an
 * error line. A host name is resolved once at start (hiredis 0.14 would
 * resolve it with a blocking getaddrinfo() at every connect, on the engine
 * thread); a name that does not resolve then is resolved at each connect.
 *
 * While down, nothing waits for Redis: fetches and leases fail at once (the
 * verifier probes, as without a shared tier), writes are dropped (the local
 * tier has them). Writes are sent in the order they were made, one
 * connection, so a record always reaches Redis before the release of the
 * lease its probe held.
 */
#ifndef VEMILTER_SHARED_H
#define VEMILTER_SHARED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache.h"
#include "conf.h"
#include "fleetrate.h"
#include "redisurl.h"
#include "sharedrule.h"

struct event_base;
struct shared;
struct sockaddr;

/* shared_new - a client for conf->cache (a redis:// URL) on base, copying
 * what it fetches into local (the local tier, not owned; may be NULL: then
 * fetches find nothing). Starts connecting (not waited for). NULL with a
 * reason when the URL or the password file is unusable or out of memory. */
struct shared *shared_new(struct event_base *base, const struct conf *conf, struct cache *local, char *why,
                          size_t why_size);

/* shared_free - the loop has stopped: drop the connection; requests still
 * pending end without their callbacks. NULL is fine. */
void shared_free(struct shared *s);

/* What a reload needs that may block (DNS, a file): read by
 * shared_prepare in the thread that asks for the reload, so the engine
 * thread never waits for either. The password is wiped by its owner. */
struct shared_prepared {
	char addr[REDIS_URL_HOST_MAX];     /* the host, resolved; "": keep the old */
	char password[REDIS_PASSWORD_MAX]; /* valid when password_ok */
	bool password_ok;
	char why[300]; /* !password_ok: why */
};

/* shared_prepare - any thread: out from conf (its cache URL and password
 * file). Never fails: what it could not read is said in out. */
void shared_prepare(const struct conf *conf, struct shared_prepared *out);

/* shared_set_conf - a reload (engine thread): the timeout, the resolved
 * address and the password that shared_prepare read (a new password
 * reconnects; an unreadable file keeps the old one, logged). conf must
 * outlive its use (the caller keeps it). NULL s is fine. */
void shared_set_conf(struct shared *s, const struct conf *conf, const struct shared_prepared *prepared);

/* shared_is_up - Redis answered the setup and nothing failed since */
bool shared_is_up(const struct shared *s);

/* The mirror (cache.h's struct cache_mirror; arg is the struct shared):
 * any thread. A write while Redis is down, or beyond SHARED_QUEUE_MAX
 * waiting, is dropped and counted. */
#define SHARED_QUEUE_MAX 10000
void shared_mirror_put(void *arg, const char *key, const struct cache_record *rec, int64_t now_ms);
void shared_mirror_del(void *arg, const char *key);

/* shared_fetch - look keys (cache keys, up to SHARED_FETCH_MAX) up in
 * Redis in one round trip, and copy each record found into the local tier
 * (unless the local one was probed later, and under the local replace
 * rule). done(arg, n) runs once, later, on the engine thread: n records
 * copied, or -1 when Redis failed. NULL (nothing will run) when Redis is
 * down or the request cannot be made. */
#define SHARED_FETCH_MAX 4
typedef void (*shared_done_fn)(void *arg, int result);
void *shared_fetch(struct shared *s, const char *const *keys, size_t n, int64_t now_ms, shared_done_fn done,
                   void *arg);

/* shared_lease - SET the lease of key (a cache key) to this host's id, NX,
 * for ttl_ms. done(arg, r), later: SHARED_LEASE_OURS, SHARED_LEASE_HELD
 * (another host holds it), or SHARED_FAILED. NULL as for shared_fetch. */
enum { SHARED_FAILED = -1, SHARED_LEASE_HELD = 0, SHARED_LEASE_OURS = 1 };
void *shared_lease(struct shared *s, const char *key, int64_t ttl_ms, shared_done_fn done, void *arg);

/* shared_release - delete the lease of key if it is still ours; queued
 * behind the writes made before it */
void shared_release(struct shared *s, const char *key);

/* shared_cancel - done will not run for this request */
void shared_cancel(struct shared *s, void *request);

/* The circuit breaker across the fleet (sharedrule.h's breaker records).
 *
 * Publish: shared_host_publish (engine thread) hands one address's state
 * to the write queue: sent as SET "vemilter:m:<address>" PX <what is left
 * of the window>, then PUBLISH on the fleet's channel; dropped (counted)
 * while Redis is down. The last writer wins (a host that finds a blocked
 * address silent later says so: the newer word).
 *
 * Learn: while the main connection is up, a second connection SUBSCRIBEs
 * to the channel (set up like the first: AUTH, then SUBSCRIBE within
 * cache_redis_timeout; its loss drops both, and both reconnect together);
 * once subscribed, a SCAN of "vemilter:m:*" (and MGET of what it finds)
 * brings what was written while this host was away. Each record written
 * by another host and not yet over goes to the hook (engine thread): the
 * caller puts it into its breaker table. Nothing waits for any of it: a
 * connect never asks Redis. */
typedef void (*shared_host_fn)(void *arg, const char *address, const struct shared_host_rec *rec);

/* shared_set_host_hook - who learns the fleet's breaker records (NULL fn:
 * nobody; they are still published). Engine thread. */
void shared_set_host_hook(struct shared *s, shared_host_fn fn, void *arg);

/* shared_host_publish - address (numeric) is in rec's state until
 * rec->until_ms (wall clock); rec->writer is filled in here. Engine thread
 * (or any: it only queues). NULL s is fine. */
void shared_host_publish(struct shared *s, const char *address, const struct shared_host_rec *rec);

/* The fleet's budgets (fleetrate.h has the design and its bound): what
 * every host spent of a per-minute budget this wall-clock minute, counted
 * in Redis ("vemilter:r:<kind>:<name>:<window>"). Takes and peeks: any
 * thread (the table has a lock of its own; client_probe_rate is judged in
 * milter threads); reports go out from the engine thread.
 *
 * shared_rate_take - may one more of kind begin for name, at most rate a
 * minute across the fleet? Judged at once from what this host knows (the
 * fleet's total in Redis's last reply to us, and our own spending since);
 * never waits for Redis. Allowed: counted, and reported to Redis at the
 * end of this loop turn (the reply teaches us the fleet's total). Redis
 * down: our own spending alone (plus the fleet's as last seen this
 * minute): the local budget. said (may be NULL) gets the numbers. NULL s:
 * true, nothing counted. */
#define SHARED_BUDGETS_MAX 65536 /* budgets remembered (HOSTS_MAX: one per MX address) */
bool shared_rate_take(struct shared *s, enum fleetrate_kind kind, const char *name, unsigned rate,
                      struct fleetrate_said *said);

/* shared_rate_peek - shared_rate_take without counting (a caller that
 * begins a moment later on the same thread takes then); nothing counted
 * in the stats either */
bool shared_rate_peek(struct shared *s, enum fleetrate_kind kind, const char *name, unsigned rate,
                      struct fleetrate_said *said);

/* shared_session_take - host_session_rate across the fleet: hosts.h's
 * hosts_session_fn (arg: the struct shared), shared_rate_take for sa's
 * address. *count: the sessions begun this minute as far as we know;
 * *fleet: other hosts' among them. */
bool shared_session_take(void *arg, const struct sockaddr *sa, unsigned rate, unsigned *count, bool *fleet);

/* What the client did (for metrics and tests). */
struct shared_stats {
	bool up;
	uint64_t writes;         /* records and deletions sent */
	uint64_t writes_dropped; /* not sent: Redis down, or the queue full */
	uint64_t writes_kept;    /* records the cross-host replace rule kept out */
	uint64_t fetches;        /* lookups sent */
	uint64_t fetched;        /* records copied into the local tier */
	uint64_t failures;       /* commands that failed or timed out */
	uint64_t connects;       /* connections that came up */
	uint64_t leases_taken, leases_held;
	bool subscribed;             /* the breaker channel is listened to */
	uint64_t hosts_sent;         /* breaker records written (dropped ones count in writes_dropped) */
	uint64_t hosts_learned;      /* breaker records of other hosts given to the hook */
	uint64_t rate_reports;       /* budget reports Redis answered */
	uint64_t rate_refused;       /* takes refused (not peeks): the budget was spent */
	uint64_t rate_refused_fleet; /* ... with other hosts' spending counted */
};
void shared_get_stats(const struct shared *s, struct shared_stats *out);

/* shared_check - vemilter -n: connect, AUTH, SELECT, SCRIPT LOAD and an
 * EVALSHA (the daemon's writes, fetches and releases are scripts)
 * synchronously, each within cache_redis_timeout (at least 1 s).
 * SHARED_CHECK_OK; SHARED_CHECK_UNREACHABLE (why): no answer now, which
 * the daemon lives with (it verifies alone and reconnects), so a start
 * must not fail for it; SHARED_CHECK_REFUSED (why): Redis answered and
 * refused us (a wrong password, a db it does not have, no scripts for
 * this user) or the password file is unreadable: a configuration error. */
enum { SHARED_CHECK_REFUSED = -1, SHARED_CHECK_UNREACHABLE = 0, SHARED_CHECK_OK = 1 };
int shared_check(const struct conf *conf, char *why, size_t why_size);

#endif
