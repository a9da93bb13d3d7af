/*
 * pool.h - SMTP sessions shared per MX host address: many probes, few
 * sessions.
 *
 * A callout hands each SMTP attempt to the pool as a job: an address to
 * ask about at one MX host address, with the session it needs (our
 * sender, the fallback sender, TLS or not, SMTPUTF8). Jobs with the same
 * needs at the same address form a line; a line has at most max_sessions
 * sessions open at once (host_sessions), each running smtp.c in session
 * mode: one greeting, EHLO (STARTTLS), MAIL FROM, then one RCPT per job,
 * QUIT as soon as the line has no job waiting. The other jobs wait in the
 * line, in order, bounded by their callouts' deadlines (which cancel them).
 * A session that will ask nothing after its first address (closing, too
 * old, or no job waiting and the line no burst: the test s_next makes for
 * QUIT) tells smtp.c so (smtp_last_fn), which then sends that RCPT, the
 * random RCPT and QUIT as one group to a server that offers PIPELINING.
 *
 * Every job gets its own answer, through the callbacks smtp.h defines for
 * one probe (done, late, sync), with the same guarantees: its own RCPT's
 * reply, never another's; the random-address (catch-all) RCPT is asked
 * once per domain in a session and its answer given to every job of that
 * domain there (a fact about the domain, as smtp.h gives it), never after
 * a 5xx to a job that is not the session's first (it cannot change that
 * verdict, and each failed RCPT counts towards the server's hard error
 * limit); the session's sync proof (the QUIT reply) goes to every job
 * answered in it, when the connection is over.
 *
 * When a session ends:
 *  - after max_errors 5xx RCPT replies (host_session_errors), or once it is
 *    max_age_ms old (a steady flow of jobs would keep it, and everything
 *    waiting for its end, for ever): QUIT, and a new session takes the
 *    rest of the line;
 *  - dropped by the server (closed, or 421) while a job was asked: that job
 *    goes back to the head of the line once (a second drop is its answer:
 *    a failure, never a verdict about the address); jobs not yet asked
 *    never noticed;
 *  - before any RCPT (no connection, refused at the greeting, EHLO or MAIL,
 *    TLS failed, ...): that is about the host, not an address, so every job
 *    waiting in the line then gets a copy of that result (smtp_result.shared),
 *    and the host costs one session, not one per job.
 * New sessions the pool opens on its own count against host_session_rate
 * (hosts_session_take); the callout checks the rate only for a job that
 * would open one (pool_would_open).
 *
 * A session's server_name (SNI, transcripts) is its first job's: MX
 * names that resolve to one address share its sessions.
 *
 * max_sessions 0: no sharing, one session per job, no limit (as before
 * the pool).
 *
 * Owns its lines, sessions (their smtp probes are on its own linger list)
 * and jobs; a job is also on its owner's linger list (smtp_params.linger)
 * from pool_submit until its end, and closing it there cancels it. Lines
 * are freed as soon as they have neither jobs nor sessions, so the pool
 * holds no more than the work in flight. Threads: the engine's loop.
 */
#ifndef VEMILTER_POOL_H
#define VEMILTER_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "smtp.h"

struct event_base;
struct hosts;
struct pool;
struct pool_job;

/* As smtp_done_fn, smtp_late_fn and smtp_sync_fn, per job. */
typedef void (*pool_done_fn)(void *arg, const struct smtp_result *result);
typedef void (*pool_late_fn)(void *arg, const struct smtp_reply *catchall_reply);
typedef void (*pool_sync_fn)(void *arg, struct pool_job *job, const struct smtp_sync_report *report);

struct pool_limits {
	unsigned max_sessions; /* host_sessions: concurrent sessions per line; 0: no sharing */
	int max_errors;        /* host_session_errors: 5xx RCPTs before a session ends; <= 0: none */
	struct hosts *hosts;   /* sessions the pool opens itself are counted here; NULL: not */
	unsigned session_rate; /* host_session_rate, for that count; 0: none */
	int64_t max_age_ms;    /* a session asks no new address after this long (probe_timeout):
	                        * the jobs answered in it, their callouts and their domains'
	                        * places wait for its end; <= 0: no bound */
};

/* pool_new - an empty pool on base; NULL on allocation failure */
struct pool *pool_new(struct event_base *base, const struct pool_limits *limits);

/* pool_set_limits - a reload's limits: sessions already open keep going;
 * later decisions follow the new limits */
void pool_set_limits(struct pool *pool, const struct pool_limits *limits);

/* pool_free - close every session at once, without callbacks; jobs still
 * on an owner's list are left there, detached (closing them frees them) */
void pool_free(struct pool *pool);

/* pool_would_open - would a job for (addr, params) open a new session now
 * (rather than wait in the line)? */
bool pool_would_open(struct pool *pool, const struct sockaddr *addr, const struct smtp_params *params);

/* pool_submit - ask params->rcpt at addr, in a session shared with other
 * jobs that need the same session. Strings are copied. Callbacks as for
 * smtp_probe_start (sync receives the job); params->linger (required)
 * holds the job until its end. NULL on allocation failure. */
struct pool_job *pool_submit(struct pool *pool, const struct sockaddr *addr, const struct smtp_params *params,
                             smtp_trace_fn trace, void *trace_arg, pool_done_fn done, pool_late_fn late,
                             pool_sync_fn sync, void *arg);

/* pool_job_cancel - as smtp_probe_cancel: none of its callbacks runs any
 * more (inside one, once it returns); its session goes on for the others */
void pool_job_cancel(struct pool_job *job);

/* pool_job_hurry - the session job was answered in (or is asked in) asks
 * no more addresses: QUIT once the one asked now is answered, so the sync
 * report comes without waiting for the rest of the line (which a new
 * session takes). For an invalid verdict held for its proof. False if
 * there is no more to wait for than for a probe alone: the job has no
 * session any more (its report came, or the pool is gone), sessions are
 * not shared, or QUIT came right after the job's own address. */
bool pool_job_hurry(struct pool_job *job);

/* pool_sessions - sessions open now (all lines); for tests and stats */
size_t pool_sessions(const struct pool *pool);

#endif
