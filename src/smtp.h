/*
 * smtp.h - one SMTP probe connection: ask a server about one address.
 *
 * Dialogue: connect, banner, EHLO (HELO if EHLO gets a 5xx), STARTTLS when
 * offered and asked for (opportunistic, no certificate check), MAIL FROM,
 * RCPT TO the address, optionally RCPT TO a random address at the same domain
 * (catch-all check), QUIT. Never DATA. Runs on libevent bufferevents (TLS via
 * libevent's OpenSSL filter) in the caller's event_base. Every phase has its
 * own timeout; replies are parsed by smtpreply.c, so a hostile server cannot
 * make it allocate without bound.
 *
 * This module reports what happened (where the dialogue ended and the reply
 * there); callout.c decides what that means.
 */
#ifndef VEMILTER_SMTP_H
#define VEMILTER_SMTP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "outcome.h"
#include "smtpreply.h"

struct event_base;
struct smtp_probe;
typedef struct ssl_ctx_st SSL_CTX;

struct smtp_params {
	const char *helo_name;      /* our name in EHLO/HELO */
	const char *mail_from;      /* reverse-path without brackets; "" for <> */
	const char *rcpt;           /* the address to verify, without brackets */
	const char *catchall_rcpt;  /* random address to test catch-all; NULL: don't */
	const char *server_name;    /* MX host name, for SNI and logs; may be "" */
	bool needs_smtputf8;        /* rcpt has a UTF-8 local part */
	bool try_tls;               /* STARTTLS if offered */
	SSL_CTX *ssl_ctx;           /* required when try_tls */
	int64_t connect_timeout_ms; /* each phase's deadline; <= 0 means 30 s */
	int64_t banner_timeout_ms;
	int64_t command_timeout_ms; /* every command, the TLS handshake and the QUIT reply */
};

enum smtp_end {
	/* RCPT answered (and the catch-all RCPT, if asked); stage is
	 * STAGE_CATCHALL if that was asked (even if it got a 421), else STAGE_RCPT */
	SMTP_END_DONE,
	SMTP_END_REPLY,          /* stopped early on a reply at `stage` (e.g. 554 banner, 5xx MAIL) */
	SMTP_END_CONNECT_FAILED, /* refused, unreachable */
	SMTP_END_TIMEOUT,        /* a phase timed out at `stage` */
	SMTP_END_CLOSED,         /* the server closed the connection at `stage` */
	SMTP_END_PROTOCOL,       /* malformed reply, line or reply too long */
	SMTP_END_TLS_FAILED,     /* STARTTLS accepted, handshake failed or timed out */
	SMTP_END_NO_SMTPUTF8,    /* rcpt needs SMTPUTF8, server does not offer it */
};

struct smtp_result {
	enum smtp_end end;
	enum probe_stage stage;  /* where the dialogue ended */
	struct smtp_reply reply; /* reply at `stage` (DONE: the RCPT reply); code 0 if none */
	bool catchall_asked;
	struct smtp_reply catchall_reply;
	bool tls_active;
	char error[160]; /* for CONNECT_FAILED/TIMEOUT/CLOSED/PROTOCOL/TLS_FAILED */
};

typedef void (*smtp_done_fn)(void *arg, const struct smtp_result *result);
/* Transcript lines: "> EHLO probe.example", "< 250-mx.example", "* connected to ...". */
typedef void (*smtp_trace_fn)(void *arg, const char *line);

/* smtp_probe_start - connect to addr (port already set) and run the dialogue.
 * Strings in params are copied. done runs exactly once from the event loop,
 * unless cancelled. NULL on allocation failure. */
struct smtp_probe *smtp_probe_start(struct event_base *base, const struct sockaddr *addr,
                                    const struct smtp_params *params, smtp_trace_fn trace, void *trace_arg,
                                    smtp_done_fn done, void *arg);

/* smtp_probe_cancel - close at once; done will not run. Not from inside the
 * trace callback; inside done it is a no-op (the probe frees itself). */
void smtp_probe_cancel(struct smtp_probe *probe);

#endif
