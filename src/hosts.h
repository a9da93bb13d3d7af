/*
 * hosts.h - the circuit breaker: what we remember about MX host addresses.
 *
 * A host address that refused us (blocked: 5xx at the greeting, EHLO/HELO
 * or MAIL, or a refusal naming our sender or a blocklist) is remembered for
 * blocked_ttl with the reply it gave; one that did not answer (connection
 * refused or unreachable, no greeting in time) is backed off for
 * host_backoff, doubled for every failure in a row up to HOSTS_BACKOFF_CAP_MS.
 * While either lasts the callout does not connect there: it takes the
 * remembered refusal, or counts a connection failure. Any reply that is not
 * a refusal of us ends the address's backoff and marks it answering for
 * HOSTS_ANSWERED_MS (hosts_note_answer). Postfix's queue manager does the
 * same with a receiving host that fails: it goes on a short-term "dead"
 * list and is left alone for at least minimal_backoff_time.
 *
 * First contact: many probes may want a host nobody has heard from lately
 * at the same moment (a burst of senders at domains sharing one MX). One of
 * them claims it (hosts_claim) and connects; the others wait until its
 * attempt tells how the host answers (a refusal, silence, or an answer:
 * then they go ahead), at most until the claim lapses (hold_ms). So a host
 * that refuses us, or is dead, costs one connection, not one per probe in
 * the burst.
 *
 * Session rate (host_session_rate): new sessions to one address are
 * counted per minute, a minute starting with the first session when none
 * is running (a fixed window, not a sliding one: at worst 2 * rate
 * sessions fall within some 60 s; cheap, 12 bytes a record). Over the rate the callout does not
 * connect there and treats the address like a temporary failure.
 *
 * Catch-all memory (catchall_host_domains, catchall_host_ttl): the
 * distinct domains whose random-address RCPT an address accepted are
 * counted within the ttl; when `need` of them did, the address is
 * remembered as catch-all for the ttl, and a probe of another domain that
 * reaches it takes catch_all without a session (hosts_catchall). A domain
 * whose random RCPT got a 5xx there (hosts_note_not_catchall) proves the
 * host is not uniformly catch-all: the memory ends at once and does not
 * form again for the ttl. Domains are told apart by a 64-bit hash of the
 * name (a collision only counts two as one: slower to remember, never
 * sooner); the first HOSTS_CATCHALL_NAME_MAX characters of each are kept
 * for the log line. Only addresses that answered a random RCPT carry this
 * (one allocation of 40 + need * 88 bytes: 304 at need 3, 920 at most).
 *
 * Bounded: at most the max given to hosts_new (HOSTS_MAX in the engine)
 * records. When full, the least recently touched record not in use (no
 * first contact under way: probes wait for it) is dropped; should all of
 * the 64 oldest be in use, the table holds one more until claims lapse
 * (they are no more than the probes in flight, and last hold_ms); a
 * record whose windows (refusal, backoff, answering, claim) are over is
 * dropped when met, except a failure streak, kept HOSTS_FORGET_MS so the
 * backoff can grow. A record is about 144 bytes, plus the host name,
 * reply text and origin (our source address, the fleet host it came from:
 * at most 46 + 300 bytes) of a remembered refusal (bounded: 255 and
 * OUTCOME_TEXT_MAX):
 * 65536 records take 8 MiB, at worst (every one a refusal with the longest
 * texts) about 45 MiB, plus the catch-all memory: at most 20 MiB at
 * catchall_host_domains 3, 58 MiB at its maximum of 10.
 *
 * Pure: no clock, no loop, no globals; every time is the caller's
 * monotonic now_ms, so tests move time by hand. Owns its records. Threads:
 * the engine's (the event loop's) only.
 */
#ifndef VEMILTER_HOSTS_H
#define VEMILTER_HOSTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "outcome.h"

#define HOSTS_MAX            65536
#define HOSTS_BACKOFF_CAP_MS INT64_C(3600000) /* 1h: the longest backoff */
#define HOSTS_ANSWERED_MS                                                                                    \
	INT64_C(600000) /* an answering host is connected to without a first-contact wait                    \
	                 */
#define HOSTS_RATE_WINDOW_MS       INT64_C(60000)   /* host_session_rate counts sessions per minute */
#define HOSTS_FORGET_MS            INT64_C(7200000) /* an idle failure streak is forgotten after 2h */
#define HOSTS_CATCHALL_DOMAINS_MAX 10               /* catchall_host_domains at most */
#define HOSTS_CATCHALL_NAME_MAX    64               /* characters of each domain name kept for the log */
/* the domains' names, ", " between them, as struct host_catchall gives them */
#define HOSTS_CATCHALL_LIST_MAX (HOSTS_CATCHALL_DOMAINS_MAX * (HOSTS_CATCHALL_NAME_MAX + 2) + 1)

struct hosts;

enum host_state {
	HOST_OK,         /* nothing against it: connect */
	HOST_BLOCKED,    /* it refused us; memo says how */
	HOST_BACKED_OFF, /* it did not answer; wait */
};

/* What the table says about one address at one time (a copy). */
struct host_memo {
	enum host_state state;
	int64_t since_ms;  /* BLOCKED: when it refused; BACKED_OFF: first failure of the streak */
	int64_t until_ms;  /* the end of the window */
	unsigned failures; /* failures in a row (BACKED_OFF) */
	/* BLOCKED: the refusal as it came */
	enum probe_stage stage;
	int code;
	char ecode[16];
	char text[OUTCOME_TEXT_MAX + 1];
	char host[256];  /* the MX host name it was reached by */
	char source[46]; /* BLOCKED: our address the refused session came from ("" unknown) */
	char from[300];  /* BLOCKED: the fleet host it was learned from (shared.h); "" ours */
};

/* hosts_new - an empty table of at most max records; NULL without memory */
struct hosts *hosts_new(size_t max);
void hosts_free(struct hosts *h); /* NULL is fine */
size_t hosts_count(const struct hosts *h);

/* hosts_lookup - the state of sa (AF_INET/AF_INET6; port ignored) at
 * now_ms; memo (may be NULL) gets the details. Drops a record found
 * expired and idle. */
enum host_state hosts_lookup(struct hosts *h, const struct sockaddr *sa, int64_t now_ms,
                             struct host_memo *memo);

/* hosts_note_blocked - sa refused us (o: kind, stage, code, ecode, text
 * are kept; host names it); remembered until now_ms + ttl_ms. source (may
 * be NULL): the numeric address of ours the refused session came from (a
 * refusal may be about it: the fleet is told); from (NULL or "": ours):
 * the fleet host it was learned from, for the log and the probe's reason.
 * ttl_ms <= 0: nothing is kept. False without memory or for an unusable
 * address. */
bool hosts_note_blocked(struct hosts *h, const struct sockaddr *sa, int64_t now_ms, int64_t ttl_ms,
                        const char *host, const struct outcome *o, const char *source, const char *from);

/* hosts_note_failure - sa did not answer: backed off for base_ms doubled
 * per earlier failure in a row, at most HOSTS_BACKOFF_CAP_MS (and never
 * less than base_ms). Either way its first-contact claim is released.
 * Returns the length of the backoff now in force; 0 when base_ms <= 0
 * (off) or nothing could be kept. */
int64_t hosts_note_failure(struct hosts *h, const struct sockaddr *sa, int64_t now_ms, int64_t base_ms);

/* hosts_note_backoff_until - another host of the fleet found sa silent
 * (shared.h): backed off until until_ms (a learned window, not doubled
 * here; a longer one in force stays). Counted as one failure if none was;
 * the claim of a first contact under way stays its prober's. False for an
 * unusable address, a window already over or no memory. */
bool hosts_note_backoff_until(struct hosts *h, const struct sockaddr *sa, int64_t now_ms, int64_t until_ms);

/* hosts_note_answer - sa answered with something that is not a refusal of
 * us: its backoff and failure streak go, its claim is released, and it
 * counts as answering until now_ms + HOSTS_ANSWERED_MS (a remembered
 * refusal stays for its blocked_ttl; the answer may come from a session
 * begun before it) */
void hosts_note_answer(struct hosts *h, const struct sockaddr *sa, int64_t now_ms);

/* hosts_claim - may a probe connect to sa (HOST_OK by hosts_lookup) now?
 * True when sa answered within HOSTS_ANSWERED_MS, or nobody holds its
 * first contact: then the caller does, until a note about sa or now_ms +
 * hold_ms. False while another caller's first contact is under way: wait
 * and ask again. True without memory (never blocks a probe for our
 * trouble). *claimed (may be NULL) says whether the caller now holds the
 * claim (and owes a note or hosts_release). */
bool hosts_claim(struct hosts *h, const struct sockaddr *sa, int64_t now_ms, int64_t hold_ms, bool *claimed);

/* hosts_release - the caller's first contact with sa ended without a word
 * either way (its probe was cancelled): the next caller may claim it */
void hosts_release(struct hosts *h, const struct sockaddr *sa);

/* hosts_session_take - may one more session to sa begin at now_ms, at
 * most rate a minute? True: yes, and it is counted. False: rate sessions
 * began this minute already; nothing is counted. rate 0 (no limit), an
 * unusable address or no memory: true, nothing kept. *count (may be NULL)
 * gets the sessions counted this minute, this one included; *fleet (may be
 * NULL) whether other hosts' sessions are among them (the hook's word).
 * With a session hook set, the hook decides instead (the table's own
 * count is not used). */
bool hosts_session_take(struct hosts *h, const struct sockaddr *sa, int64_t now_ms, unsigned rate,
                        unsigned *count, bool *fleet);

/* A session hook: host_session_rate counted elsewhere (across a fleet:
 * shared.h's shared_session_take, which has its own minutes on the wall
 * clock and falls back to this host's own count when Redis is down).
 * Same contract as hosts_session_take, without the clock. */
typedef bool (*hosts_session_fn)(void *arg, const struct sockaddr *sa, unsigned rate, unsigned *count,
                                 bool *fleet);

/* hosts_set_session_hook - from now on fn (arg) counts the sessions; NULL
 * fn: the table again. Set before the loop runs (engine thread). */
void hosts_set_session_hook(struct hosts *h, hosts_session_fn fn, void *arg);

/* What the table says about an address's catch-all memory (a copy). */
struct host_catchall {
	int64_t since_ms;                   /* when it became catch-all (0: it is not) */
	int64_t until_ms;                   /* ... and until when */
	unsigned domains;                   /* distinct domains that answered catch-all within the ttl */
	char list[HOSTS_CATCHALL_LIST_MAX]; /* their names, oldest first, ", " between */
};

/* hosts_note_catchall - sa accepted the random address of domain at
 * now_ms. Counted with the other distinct domains that did within ttl_ms;
 * when need of them did, sa is remembered as catch-all until now_ms +
 * ttl_ms and true is returned (once: *became, may be NULL, gets the
 * details). False otherwise: not yet enough, already remembered (a session
 * begun before), held off by a recent not-catch-all answer, need 0 or
 * ttl_ms <= 0 (off), an unusable address or no memory. need is capped at
 * HOSTS_CATCHALL_DOMAINS_MAX. */
bool hosts_note_catchall(struct hosts *h, const struct sockaddr *sa, int64_t now_ms, const char *domain,
                         unsigned need, int64_t ttl_ms, struct host_catchall *became);

/* hosts_note_not_catchall - the random address of domain got a 5xx about
 * the address at sa: sa is not uniformly catch-all. Its memory ends and
 * its count starts again; none forms until now_ms + ttl_ms (whether or not
 * catch-all answers came before: the order of answers must not matter).
 * True when a memory in force was ended (*ended, may be NULL, gets what it
 * was). ttl_ms <= 0: nothing is kept. */
bool hosts_note_not_catchall(struct hosts *h, const struct sockaddr *sa, int64_t now_ms, const char *domain,
                             int64_t ttl_ms, struct host_catchall *ended);

/* hosts_catchall - is sa remembered as catch-all at now_ms? memo (may be
 * NULL) gets the details. */
bool hosts_catchall(struct hosts *h, const struct sockaddr *sa, int64_t now_ms, struct host_catchall *memo);

/* What the table holds at now_ms, for the metrics: addresses remembered
 * as refusing us, backed off, and remembered as catch-all (one address may
 * be in several), and records in all. Walks the table: O(records). */
struct hosts_census {
	size_t records, blocked, backed_off, catch_all;
};
void hosts_census(const struct hosts *h, int64_t now_ms, struct hosts_census *out);

#endif
