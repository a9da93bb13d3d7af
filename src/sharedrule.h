/*
 * sharedrule.h - the pure part of the shared Redis cache (issue 12): key
 * names, the Lua scripts that keep the cache's rules inside Redis, and the
 * backoff of waits and reconnections, and which breaker records a host
 * applies. No hiredis, no I/O (but localaddr.c's reread), no state: shared.c
 * sends these, tests/unit/test_sharedrule.c runs the scripts against a real
 * redis-server and checks them against cache_record_may_replace().
 *
 * What is in Redis (one layout for every host and for vemilter-cache):
 *  - "vemilter:" + a cache key (cache.h: "a:<addr>", "d:<dom>", "h:<dom>",
 *    "t:<stable>"): a HASH. Field "r": exactly cache_record_encode()'s
 *    bytes (cacherec.c documents the format). Field "w": the id of the host
 *    that wrote it ("hostname:pid"), for people reading it. Expiry:
 *    PEXPIREAT at the record's expires_at (the key vanishes with it).
 *  - "vemilter:lease:" + an "a:" key: a STRING, the id of the host probing
 *    that address now; set with NX and PX (probe_timeout + a margin), so a
 *    host that dies leaves a lease that expires by itself. Never listed.
 *  - "vemilter:m:" + an MX host address (numeric, as inet_ntop writes it):
 *    a STRING, what one host's circuit breaker (hosts.h) learned about that
 *    address: it refused us (blocked, with its reply) or did not answer
 *    (backed off). shared_host_encode() writes it; expiry: the end of the
 *    window (PX, from the writer's clock). Each write is also PUBLISHed on
 *    SHARED_HOST_CHANNEL + the db number (channels are not per db), as
 *    "<address> <record>", so the other hosts learn it at once; a host
 *    that (re)connects SCANs "vemilter:m:*" for what it missed.
 *  - "vemilter:r:<kind>:<name>:<window>": a STRING, an integer: what the
 *    fleet spent of one budget (host_session_rate: kind "s", name an MX
 *    address) in one wall-clock minute (fleetrate.h). INCRBY by
 *    SHARED_LUA_RATE; expiry: two minutes after the first spend.
 *
 * The replace rule across hosts (SHARED_LUA_PUT), atomic in Redis: the
 * stored record is read from its own "r" bytes, and the fresh one replaces
 * it unless
 *  - it was probed before the stored one (hosts keep the latest probe; a
 *    refresh stamp keeps its record's probe time, so it may replace its
 *    own record), or
 *  - cache_record_may_replace() says no: a temporary outcome never
 *    overwrites an unexpired answer, except a stale negative.
 * A stored record past its expiry (or unreadable) is replaced whatever it
 * held; a fresh record already expired is not written. Hosts' clocks are
 * assumed within seconds of each other (NTP): times are the writers'.
 */
#ifndef VEMILTER_SHAREDRULE_H
#define VEMILTER_SHAREDRULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHARED_PREFIX       "vemilter:"
#define SHARED_LEASE_PREFIX "vemilter:lease:"
#define SHARED_KEY_MAX      340 /* a cache key (CACHE_KEY_MAX) and a prefix */
#define SHARED_ID_MAX       300 /* "hostname:pid" */

/* shared_key - SHARED_PREFIX + cache_key into buf; "" if it does not fit
 * or cache_key is empty */
void shared_key(const char *cache_key, char *buf, size_t size);

/* shared_lease_key - SHARED_LEASE_PREFIX + cache_key into buf; "" as above */
void shared_lease_key(const char *cache_key, char *buf, size_t size);

/* A breaker record: one address's state as one host learned it. The
 * text form, one line of tab-separated fields, the reply text last (it is
 * the only field that may hold a tab):
 *   "2" TAB state TAB until TAB stage TAB code TAB ecode TAB writer TAB source TAB host TAB text
 * state "B" (blocked: stage, code, ecode, host and text are its refusal) or
 * "O" (backed off: stage and code 0, the rest empty); until: wall-clock ms
 * the window ends; writer: the id of the host that learned it (a host
 * ignores its own); source: the numeric address the writer's refused
 * session came from (its getsockname; "" unknown). Many refusals are about
 * the probing host's address (a blocklist), not about the MX: a learner
 * applies a refusal only when source is one of its own addresses
 * (shared_host_applies), a backoff (the MX's state) always. Bounded by
 * SHARED_HOST_REC_MAX; a field that does not fit is cut (the text), or the
 * record is refused (decode).
 *
 * Versions: encode writes "2". Decode reads "2" and the older "1" (the
 * same without source: source ""); any other version is refused whole, as
 * a damaged record is. A host that reads only "1" refuses "2" records: it
 * learns nothing from newer hosts (one probe more), never a wrong state. */
#define SHARED_HOST_PREFIX  "vemilter:m:"
#define SHARED_HOST_CHANNEL "vemilter:m:news:"
#define SHARED_HOST_REC_MAX 1400

enum shared_host_state { SHARED_HOST_BLOCKED = 'B', SHARED_HOST_BACKED_OFF = 'O' };

struct shared_host_rec {
	enum shared_host_state state;
	int64_t until_ms; /* wall clock */
	int stage;        /* enum probe_stage */
	int code;
	char ecode[16];
	char writer[SHARED_ID_MAX];
	char source[46]; /* INET6_ADDRSTRLEN: numeric, as inet_ntop writes it; "" unknown */
	char host[256];
	char text[512]; /* OUTCOME_TEXT_MAX + 1 at least */
};

/* shared_host_encode - rec as a record into buf (NUL-terminated); its
 * length, 0 when buf is too small (SHARED_HOST_REC_MAX always fits) */
size_t shared_host_encode(const struct shared_host_rec *rec, char *buf, size_t size);

/* shared_host_decode - a record of len bytes (not NUL-terminated) into
 * out; false for anything not written by shared_host_encode (a version,
 * state or number it does not know, a missing field, a field too long, a
 * control character: encode writes none, and a tab only as a separator or
 * in another writer's text) */
bool shared_host_decode(const char *buf, size_t len, struct shared_host_rec *out);

/* shared_host_key - SHARED_HOST_PREFIX + address into buf; "" if it does
 * not fit or address is empty */
void shared_host_key(const char *address, char *buf, size_t size);

struct local_addrs;

/* shared_host_applies - may a host whose addresses are mine take rec into
 * its breaker? A backoff: yes. A refusal: only when rec->source is one of
 * mine (local_addrs_is_mine: the same host, or hosts sharing an address);
 * a refusal without a source (a "1" record) or from another address is
 * not applied (it costs this host one session; applying it could cost
 * verification against an MX that accepts us). now_ms: monotonic, for
 * local_addrs_is_mine's reread. */
bool shared_host_applies(const struct shared_host_rec *rec, struct local_addrs *mine, int64_t now_ms);

/* The scripts (Lua, run by EVALSHA; shared.c falls back to EVAL on NOSCRIPT).
 *
 * SHARED_LUA_PUT: KEYS[1] the record's key; ARGV[1] the record's bytes,
 * ARGV[2] the writer's now (ms), ARGV[3] its expires_at (ms, decimal),
 * ARGV[4] the writer's id. Returns 1 written, 0 kept the stored one, an
 * error for a record it cannot read.
 *
 * SHARED_LUA_FETCH: KEYS the records' keys; returns one element per key,
 * the "r" bytes or false (nil).
 *
 * SHARED_LUA_RELEASE: KEYS[1] a lease, ARGV[1] our id: deleted only if it
 * is still ours (it may have expired and been taken by another host).
 * Returns 1 deleted, 0 not ours. */
extern const char SHARED_LUA_PUT[];
extern const char SHARED_LUA_FETCH[];
extern const char SHARED_LUA_RELEASE[];

/* SHARED_LUA_RATE: KEYS[1] a fleet budget's key (fleetrate.h:
 * "vemilter:r:<kind>:<name>:<window>"), ARGV[1] what one host spent
 * (> 0), ARGV[2] the key's lifetime (ms): INCRBY, then PEXPIRE when the
 * key has no expiry yet (a new key), so every window's key goes by itself.
 * Returns the fleet's total for the window, this amount included. */
extern const char SHARED_LUA_RATE[];

/* shared_backoff_ms - the next wait of a doubling backoff: first when prev
 * is 0, else prev doubled, never above max */
int64_t shared_backoff_ms(int64_t prev, int64_t first, int64_t max);

/* shared_redis_expiry - what PEXPIREAT is given for a record's expires_at:
 * the same, except that a time past year 9999 (a saturated lifetime) is
 * capped there (Redis refuses expiry times that overflow) */
int64_t shared_redis_expiry(int64_t expires_at_ms);

#endif
