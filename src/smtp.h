/*
 * smtp.h - one SMTP probe connection: ask a server about one address.
 *
 * Dialogue: connect, banner, EHLO (HELO if EHLO gets a 5xx), STARTTLS when
 * offered and asked for (opportunistic, no certificate check), MAIL FROM
 * (once more with a fallback sender after RSET if the first is refused),
 * RCPT TO the address, optionally RCPT TO a random address at the same
 * domain (catch-all check), QUIT. Never DATA. Runs on libevent bufferevents
 * (TLS via libevent's OpenSSL filter) in the caller's event_base. Every
 * phase has its own timeout; replies are parsed by smtpreply.c, so a
 * hostile server cannot make it allocate without bound.
 *
 * One command at a time, and a reply belongs to the command before it:
 * anything the server sent before a command goes out (a whole or partial
 * line) is a protocol error ("reply before command (before EHLO)"), never
 * an answer. A greeting or EHLO reply that names our own helo_name ends
 * the dialogue as a mail loop.
 *
 * One exception (params.pipelining, RFC 2920): when the server offers
 * PIPELINING and the session ends after this address (always without
 * params.next; in session mode when params.last says so, and only for a
 * transaction's first RCPT), the rest of the dialogue goes out as one
 * group in one write: RCPT TO the address, the random RCPT when it is to
 * be asked, and QUIT last. The replies come back in one round trip and are
 * taken strictly in order, one slot per command; the same rules hold
 * (nothing may wait when the group goes out; the QUIT slot must hold a
 * 2xx with nothing after it until the close), so a stray reply that shifts
 * the slots shows as a non-2xx in the QUIT slot or data after it. Nothing
 * is written after the group. When the real RCPT's reply means the random
 * address is not to be asked (a 5xx that says we are blocked, or
 * skip_catchall_after_5xx), its slot is read for its place only.
 *
 * The result is reported the moment it is decided: QUIT, its reply and the
 * close come afterwards and cannot delay it. But they are where a server
 * that stays exactly one reply behind shows (nothing waits when a command
 * goes out, yet every reply is the previous command's): so after the result
 * the session must prove it was in step. The QUIT reply must be 2xx, and
 * nothing may follow the catch-all RCPT's reply or the QUIT reply (RFC 5321
 * has the server close right after 221; the wait for that close is bounded
 * by the QUIT phase's command_timeout). What was found is reported once the
 * connection is over (smtp_sync_fn): the owner may hold a verdict for it, or
 * take a reported one back. After done the probe is no longer the caller's
 * (unless a catch-all answer is still due, see catchall_pending): it
 * finishes by itself and frees itself. It is on params.linger from start to
 * end, so the list's owner can tell when all its probes are gone (on_empty)
 * and close them all (linger_close_all).
 *
 * Session mode (params.next, used by pool.c): after an address has been
 * handed over (done, and late when due) the probe asks its owner for the
 * next one and sends its RCPT in the same transaction (RSET and a new MAIL
 * FROM first after SMTP_TXN_RCPTS RCPTs, or once per address when a 452
 * says the transaction has too many recipients); no next one, or
 * max_rcpt_errors failed RCPTs: QUIT. done (and late) run once per
 * address, with that address's own result; sync runs once, for the whole
 * session, when the connection is over: the QUIT proof covers every address
 * answered in it. Before each RCPT the same rule holds as before every
 * command: data waiting is a protocol error (of the address about to be
 * asked, or, found right after a reply, of the address that reply was for).
 *
 * This module reports what happened (where the dialogue ended and the reply
 * there); classify.c decides what that means.
 */
#ifndef VEMILTER_SMTP_H
#define VEMILTER_SMTP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "classify.h"
#include "linger.h"
#include "outcome.h"
#include "smtpreply.h"

#define SMTP_TXN_RCPTS 100 /* RCPTs in one transaction (session mode): RFC 5321's minimum a server takes */

struct event_base;
struct smtp_probe;
typedef struct ssl_ctx_st SSL_CTX;

/* One more address for a session (session mode): what differs per address.
 * Strings are copied before smtp_next_fn returns. */
struct smtp_job {
	const char *rcpt;             /* without brackets */
	const char *catchall_rcpt;    /* NULL: no random RCPT for this one */
	bool report_at_rcpt;          /* as in smtp_params */
	bool skip_catchall_after_5xx; /* as in smtp_params */
};
/* Session mode: the previous address has been handed over (done, and late
 * when due); the next one to ask about in this session (JOB, *job filled),
 * none (QUIT), or none yet (WAIT: the connection stays open, idle, until
 * the owner calls smtp_probe_resume). Called with the probe's arg; must
 * not cancel the probe. */
enum smtp_next { SMTP_NEXT_NONE, SMTP_NEXT_JOB, SMTP_NEXT_WAIT };
typedef enum smtp_next (*smtp_next_fn)(void *arg, struct smtp_job *job);
/* Session mode, with params.pipelining: asked (with the probe's arg) just
 * before a transaction's first RCPT goes out to a server that offers
 * PIPELINING: true if no other address will be asked in this session, so
 * the RCPT may go out grouped with QUIT (then smtp_next_fn is not called
 * again). Must not cancel the probe. */
typedef bool (*smtp_last_fn)(void *arg);

struct smtp_params {
	const char *helo_name;     /* our name in EHLO/HELO */
	const char *mail_from;     /* reverse-path without brackets; "" for <> */
	const char *fallback_from; /* MAIL 5xx (not 421) to mail_from: RSET, then MAIL FROM this
	                            * once (without brackets, not ""); NULL: never */
	const char *rcpt;          /* the address to verify, without brackets */
	const char *catchall_rcpt; /* random address to test catch-all; NULL: don't */
	const char *server_name;   /* MX host name, for SNI and logs; may be "" */
	bool needs_smtputf8;       /* rcpt has a UTF-8 local part */
	bool try_tls;              /* STARTTLS if offered */
	SSL_CTX *ssl_ctx;          /* required when try_tls */
	/* Report right after the RCPT reply; the catch-all RCPT's answer then
	 * comes through late. (After a 5xx to RCPT that is about the address,
	 * this is always so: the random address cannot change an invalid.) */
	bool report_at_rcpt;
	int64_t catchall_wait_ms;   /* report with the catch-all answer pending after waiting this long
	                             * for it (it may still come through late); <= 0: no such bound */
	int64_t connect_timeout_ms; /* each phase's deadline; <= 0 means 30 s */
	int64_t banner_timeout_ms;
	int64_t command_timeout_ms; /* every command, the TLS handshake and the QUIT reply */
	/* probe_source_address: bound before connecting when its family is the
	 * peer's; ss_family 0 (or another family): the kernel picks by route */
	struct sockaddr_storage bind_addr;
	/* The probe is on this list from start to end (and so finishes QUIT
	 * after it reported); linger_close_all() there acts as
	 * smtp_probe_cancel. NULL: it closes as soon as it has reported. */
	struct linger_list *linger;
	/* Session mode (pool.c drives it): after the first address, more of
	 * them in the same session, one at a time (smtp_next_fn). NULL: one
	 * address, then QUIT. */
	smtp_next_fn next;
	bool skip_catchall_after_5xx; /* no random RCPT after a 5xx to the real one (it is only a
	                               * domain fact, and one more failed RCPT the server counts) */
	int max_rcpt_errors;          /* session mode: after this many 5xx RCPT replies (the random
	                               * address's too) QUIT instead of asking for the next; <= 0: none */
	/* RFC 2920 (see above): the last address's RCPT, the random RCPT and
	 * QUIT as one group when the server offers PIPELINING; the verdict
	 * then needs no round trip more than the RCPT reply. false: one
	 * command at a time (for a server whose PIPELINING is broken). */
	bool pipelining;
	smtp_last_fn last; /* session mode: is this the last address? NULL: never grouped */
};

/* enum smtp_end is in classify.h */

struct smtp_result {
	enum smtp_end end;
	enum probe_stage stage;           /* where the dialogue ended */
	struct smtp_reply reply;          /* reply at `stage` (DONE: the RCPT reply; MAIL refused: the first
	                                   * refusal); code 0 if none */
	bool catchall_asked;              /* the random-address RCPT was sent */
	bool catchall_pending;            /* ... and this result comes before its answer: late will run */
	struct smtp_reply catchall_reply; /* its answer when in (not pending); code 0: none came */
	bool fallback_used;               /* the MAIL FROM that counts was fallback_from */
	bool fallback_retry; /* MAIL refused, RSET refused: fallback_from only in a new connection */
	bool tls_active;
	bool limited;    /* pool.c: not asked at all, host_session_rate allows no new session (error says
	                  * so); not a word from the server */
	bool shared;     /* pool.c: another address's session ended this way before any RCPT, and this
	                  * address was waiting for it: a copy, already told to the breaker */
	char error[160]; /* for CONNECT_FAILED/TIMEOUT/CLOSED/PROTOCOL/TLS_FAILED/LOOP */
	char source[46]; /* our end of the connection (getsockname, numeric, no port) once connected;
	                  * "" before. A refusal may be about it (a blocklist of our address): the
	                  * fleet's breaker records carry it (sharedrule.h) */
};

/* The result, once. */
typedef void (*smtp_done_fn)(void *arg, const struct smtp_result *result);
/* The catch-all answer after a result with catchall_pending: the reply, or
 * NULL when none usable came (timeout, close, protocol error). Once. */
typedef void (*smtp_late_fn)(void *arg, const struct smtp_reply *catchall_reply);
/* Was the session in step? Known once the connection is over. */
enum smtp_sync {
	SMTP_SYNC_UNKNOWN, /* no evidence either way: QUIT unanswered (timeout, close), or not waited for */
	SMTP_SYNC_PROVED,  /* QUIT got 2xx, nothing followed it, and the server closed (or the QUIT phase
	                    * ended quietly) */
	SMTP_SYNC_BROKEN,  /* out of step: data before a command, after the catch-all or QUIT reply, a
	                    * non-2xx QUIT reply, or a protocol error after the result */
};

struct smtp_sync_report {
	enum smtp_sync sync;
	enum probe_stage stage; /* where it was found (BROKEN) */
	const char *why;        /* e.g. "reply before command (found after the verdict)"; "" if none */
};

/* The sync report, once, after done (and late when due), when the
 * connection is over; probe says which probe it is about (it is still
 * alive, and freed when this returns). Never after a cancel or
 * linger_close_all. */
typedef void (*smtp_sync_fn)(void *arg, struct smtp_probe *probe, const struct smtp_sync_report *report);
/* Transcript lines: "> EHLO probe.example", "< 250-mx.example", "* connected to ...". */
typedef void (*smtp_trace_fn)(void *arg, const char *line);

/* smtp_probe_start - connect to addr (port already set) and run the dialogue.
 * Strings in params are copied. done runs exactly once from the event loop,
 * unless cancelled first; after a result with catchall_pending, late (which
 * must then be set) runs exactly once too, with the same arg; then sync (if
 * not NULL) runs once when the connection is over. The probe is the
 * caller's until done returns (or, with catchall_pending, until late
 * returns); then it finishes by itself and frees itself. Transcript lines
 * come while it lingers too (QUIT and its reply), so trace_arg must outlive
 * the probe (or the list's owner). NULL on allocation failure. */
struct smtp_probe *smtp_probe_start(struct event_base *base, const struct sockaddr *addr,
                                    const struct smtp_params *params, smtp_trace_fn trace, void *trace_arg,
                                    smtp_done_fn done, smtp_late_fn late, smtp_sync_fn sync, void *arg);

/* smtp_probe_cancel - close at once; neither done nor late will run. Only
 * while the probe is the caller's; inside done or late it takes effect when
 * the callback returns. Not from inside the trace callback. */
void smtp_probe_cancel(struct smtp_probe *probe);

/* smtp_probe_resume - session mode, after smtp_next_fn said WAIT: ask it
 * again (from the loop, not inside this call) */
void smtp_probe_resume(struct smtp_probe *probe);

/* smtp_probe_ending - QUIT is said (or the connection is over): the
 * session asks nothing more, and its sync report needs no hurry */
bool smtp_probe_ending(const struct smtp_probe *probe);

#endif
