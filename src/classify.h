/*
 * classify.h - what one SMTP attempt means: the callout's whole judgement
 * in one pure function.
 *
 * smtp.c reports how a dialogue with one server address ended (struct
 * attempt: where, with which reply, and what else is known); callout.c
 * asks classify_attempt() what that means (an outcome with its flags and
 * reason) and what to do next (stop, try the next address, ask the same
 * address again), and keeps the most telling failure across addresses by
 * rank. Nothing here touches a socket, a clock or a global, so every row
 * below is a case in tests/unit/test_classify.c:
 *
 *   where / what                      outcome        flags          next
 *   RCPT 2xx, random address 5xx ..... valid          not_catchall   final
 *   RCPT 2xx, random address 2xx ..... catch_all                     final
 *   RCPT 2xx, random 4xx/421/no answer valid ("catch-all unknown")   final
 *   RCPT 2xx, random still pending ... valid ("catch-all unknown";   final
 *                                      its answer comes as a late fact)
 *   RCPT 2xx, no random asked ........ valid                         final
 *   RCPT 5xx (5.1.1 etc.) ............ invalid                       final
 *   RCPT 5xx about our sender (5.1.7,
 *        5.1.8, "<>:", "sender address
 *        rejected", "null sender" ...),
 *        fallback set, not tried here  blocked                       same address,
 *                                                                    fallback sender
 *   ... fallback tried or unset ...... blocked                       next address
 *   RCPT 5xx 5.7.x / blocklist text .. blocked                       next address
 *   RCPT 450/451 looking greylisted .. tempfail       greylist       next address
 *   RCPT other 4xx, 421 anywhere ..... tempfail                      next address
 *   banner/EHLO/HELO 5xx ............. blocked                       next address
 *   MAIL 5xx (not 421), fallback set
 *        and not tried on this address blocked                       same address,
 *                                                                    fallback sender
 *   MAIL 5xx, fallback tried or unset  blocked                       next address
 *   MAIL accepted with the fallback .. (as above)     fallback_sender
 *   greeting/EHLO names our helo_name,
 *        or the address is this host . tempfail "mx is this host" loop final
 *   protocol error (reply before its
 *        command, malformed reply, codes
 *        disagreeing in one reply) .... tempfail       protocol      next address
 *   TLS handshake failed ............. (nothing)                     same address,
 *                                                                    plain text, once
 *   TLS failed in plain text retry ... tempfail                      next address
 *   SMTPUTF8 needed, not offered ..... unverifiable                  next address
 *   refused, timeout, closed ......... tempfail                      next address
 *   no socket on OUR side (EMFILE,
 *        ENFILE: "out of file
 *        descriptors"; ENOBUFS, ENOMEM) tempfail       limited        final
 *
 * The mail-loop row stops the walk as Postfix does: every address after
 * ours in MX order is a less preferred host, which would only relay back.
 * When every address is used up, the failure of the highest rank wins
 * (enum attempt_rank): a server that cannot be asked tells more than one
 * that refuses us, that more than a 4xx, that more than a broken dialogue,
 * and a broken dialogue (e.g. a desync) more than no reply at all. Only
 * the definite answers (valid, invalid, catch_all) come from one server.
 *
 * A socket we could not create says nothing about the server or the
 * domain: it is our failure, flagged OUTCOME_F_LIMITED like our other
 * limits (never cached, no self-health or breaker signal), and final,
 * since the next address would fail the same way.
 *
 * Core: no libevent, c-ares or OpenSSL headers.
 */
#ifndef VEMILTER_CLASSIFY_H
#define VEMILTER_CLASSIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "conf.h"
#include "outcome.h"
#include "smtpreply.h"

/* How one SMTP dialogue ended (smtp.c reports it; judged here). */
enum smtp_end {
	/* RCPT answered; the catch-all RCPT too if it was asked, unless its
	 * answer is still pending. stage: STAGE_CATCHALL when its answer (or
	 * the lack of one) is in, else STAGE_RCPT */
	SMTP_END_DONE,
	SMTP_END_REPLY,          /* stopped on a reply at `stage` (e.g. 554 banner, 5xx MAIL, 421) */
	SMTP_END_CONNECT_FAILED, /* refused, unreachable */
	SMTP_END_TIMEOUT,        /* a phase timed out at `stage` */
	SMTP_END_CLOSED,         /* the server closed the connection at `stage` */
	SMTP_END_PROTOCOL,       /* malformed reply, line too long, a reply before its command */
	SMTP_END_TLS_FAILED,     /* STARTTLS accepted, handshake failed or timed out */
	SMTP_END_NO_SMTPUTF8,    /* rcpt needs SMTPUTF8, server does not offer it */
	SMTP_END_LOOP,         /* the server is this host (greeting/EHLO names us, or its address is ours) */
	SMTP_END_NO_RESOURCES, /* OUR side could not make the connection (classify_errno_ours) */
};

/* What one attempt at one server address came to. */
struct attempt {
	enum smtp_end end;
	enum probe_stage stage;
	const struct smtp_reply *reply; /* at stage (DONE: RCPT's); NULL: none */
	bool catchall_asked;            /* the random-address RCPT was sent */
	bool catchall_pending;          /* reported before its answer (which may come as a late fact) */
	const struct smtp_reply *catchall_reply; /* its answer; NULL or code 0: none came */
	const char *catchall_rcpt;               /* the random address, for reasons; may be NULL */
	bool fallback_used;                      /* the MAIL FROM that counts carried probe_sender_fallback */
	bool fallback_possible;  /* a fallback is set and this address was not asked with it yet */
	bool tls_retry_possible; /* TLS was tried here and no plain-text retry was made yet */
	const char *error;       /* our words for an end without a usable reply; may be NULL */
};

enum attempt_next {
	ATTEMPT_FINAL,          /* the outcome stands: report it */
	ATTEMPT_NEXT_ADDRESS,   /* keep it if it ranks highest so far; try the next address */
	ATTEMPT_RETRY_PLAIN,    /* ask the same address again without STARTTLS (outcome unset) */
	ATTEMPT_RETRY_FALLBACK, /* keep it by rank, ask the same address again with the fallback sender */
};

/* How telling a failure is; the highest is reported. */
enum attempt_rank {
	RANK_NONE,
	RANK_NO_REPLY,     /* refused, timeout, dropped, TLS failure */
	RANK_PROTOCOL,     /* the server broke the protocol (desync, garbage) */
	RANK_TEMP_REPLY,   /* a 4xx from a server */
	RANK_BLOCKED,      /* a server refuses us */
	RANK_UNVERIFIABLE, /* a server cannot be asked */
};

struct judgement {
	enum attempt_next next;
	enum attempt_rank rank; /* for ATTEMPT_NEXT_ADDRESS / _RETRY_FALLBACK */
	struct outcome outcome; /* kind, flags, stage, reply, reason; mx_host/mx_addr left "" */
};

/* The reasons of our own failures (classify_errno_ours). */
#define CLASSIFY_NO_FDS    "out of file descriptors"
#define CLASSIFY_NO_MEMORY "out of memory or socket buffers"

/* classify_errno_ours - an errno from socket()/connect() that is our
 * failure, not the server's: CLASSIFY_NO_FDS for EMFILE and ENFILE,
 * CLASSIFY_NO_MEMORY for ENOBUFS and ENOMEM; NULL for any other. */
const char *classify_errno_ours(int err);

/* classify_outcome_ours - an outcome that reports our own failure (see
 * classify_errno_ours): OUTCOME_F_LIMITED, reason starting with one of
 * those reasons */
bool classify_outcome_ours(const struct outcome *o);

/* classify_attempt - the judgement of one attempt (see the table above). */
void classify_attempt(const struct attempt *a, struct judgement *out);

/* classify_catchall_fact - what the random address's answer says about the
 * domain, for a verdict already reported: 2xx: OUTCOME_CATCH_ALL; a 5xx
 * that is about the address (not 5.7.x or a blocklist): OUTCOME_VALID with
 * OUTCOME_F_NOT_CATCHALL. False (nothing learned) for anything else. */
bool classify_catchall_fact(const struct smtp_reply *reply, struct outcome *fact);

/* classify_says_blocked - a 5xx about us rather than the address: about
 * our sender (classify_about_sender), 5.7.x, or, without an enhanced code,
 * a blocklist named in the text */
bool classify_says_blocked(const struct smtp_reply *reply);

/* classify_names_blocklist - a 5xx whose text names a blocklist (or
 * "listed", "client host", reputation, RBL/DNSBL), whatever its enhanced
 * code: a refusal of our address, not of the address asked for */
bool classify_names_blocklist(const struct smtp_reply *reply);

/* classify_about_sender - a 5xx that refuses our MAIL FROM, wherever it
 * comes (Postfix's smtpd_delay_reject reports it at RCPT): enhanced code
 * 5.1.7 or 5.1.8, text starting "<>:", or text naming "sender address
 * rejected", "sender rejected", "null sender" or "MAIL FROM"
 * (case-insensitive), whatever the enhanced code */
bool classify_about_sender(const struct smtp_reply *reply);

/* classify_is_greylisting - a 450/451 that looks like greylisting: enhanced
 * code 4.7.x or 4.2.x, or text naming grey/graylisting, "try again later"
 * or "temporarily deferred" (case-insensitive) */
bool classify_is_greylisting(const struct smtp_reply *reply);

/* classify_names_host - does the reply's first word (a greeting's or EHLO
 * reply's host name) equal host, case-insensitively, ignoring a final dot? */
bool classify_names_host(const struct smtp_reply *reply, const char *host);

/* classify_address_bogus - is sa an address no mail server of a domain
 * can have, whatever network we are on (netguard.h: NETGUARD_BOGUS):
 * loopback, unspecified or "this network" (0/8), multicast,
 * reserved/broadcast (240/4), documentation (TEST-NETs, 2001:db8::/32,
 * 3fff::/20), discard-only and dummy prefixes; an IPv4-mapped, NAT64 or
 * 6to4 address as the IPv4 address inside.
 * An MX there is the "MX points at localhost" trick: when every address
 * the guard refuses is bogus, the domain takes no mail (no_domain). Other
 * refused ranges (RFC 1918, CGNAT, ULA, link-local ...) are real on a
 * split-horizon network: refusing them is our policy, so the callout ends
 * unverifiable there, never no_domain. */
bool classify_address_bogus(const struct sockaddr *sa);

/* classify_catchall_matters - can the catch-all answer change what happens
 * to a sender at domain? False when the policy gives catch_all the same
 * action as valid there: the verdict then need not wait for it. */
bool classify_catchall_matters(const struct conf *conf, const char *domain);

#endif
