/*
 * msession.h - what vemilter does in one MTA session, whatever carries the
 * milter protocol: the rules at MAIL FROM, RCPT and end of message (skips,
 * cached answers, policy, postmaster exemption, repeated refusals, the
 * result header, verdict lines and counts). Both transports call it: the
 * libmilter glue (milter.c) and the native one (milterloop.c), so no rule
 * has a second copy.
 *
 * A transport hands each call a struct ms_io: how to read a macro and how
 * to set a reply or edit a header on its own connection. Calls for one
 * session come from one thread at a time.
 *
 * Process-wide (both transports): the current configuration (a session
 * keeps the one it started with), the verifier and the count of open
 * sessions a stop drains; guarded by this module's mutex.
 */
#ifndef VEMILTER_MSESSION_H
#define VEMILTER_MSESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "conf.h"

struct msession;
struct verifier;
struct verify_ticket;

/* What to answer the MTA. MS_REJECT and MS_TEMPFAIL come after io->setreply. */
enum ms_reply { MS_CONTINUE, MS_ACCEPT, MS_REJECT, MS_TEMPFAIL, MS_NOREPLY };

struct ms_io {
	void *ctx;
	/* a macro's value (NULL: not sent) */
	const char *(*symval)(void *ctx, const char *name);
	/* the reply for a refusal; text has every % doubled (as libmilter wants) */
	bool (*setreply)(void *ctx, const char *code, const char *ecode, const char *text);
	/* the index-th (1-based) header called name: removed (value NULL) */
	bool (*chgheader)(void *ctx, const char *name, int index, const char *value);
	bool (*addheader)(void *ctx, const char *name, const char *value);
};

/* ms_open - a new session with a reference to the current configuration;
 * NULL when out of memory (logged). */
struct msession *ms_open(void);

/* ms_close - end the session (what repeated is logged) and free it */
void ms_close(struct msession *s);

/* ms_conf - the configuration the session runs under */
const struct conf *ms_conf(const struct msession *s);

/* ms_negotiated - what the MTA agreed to (milterwire's mw_choose) */
void ms_negotiated(struct msession *s, bool client_from_macro, bool connect_noreply);

/* The steps; each returns the answer for the MTA. */
enum ms_reply ms_connect(struct msession *s, const struct sockaddr *addr);
enum ms_reply ms_envfrom(struct msession *s, const struct ms_io *io, const char *sender);
enum ms_reply ms_envrcpt(struct msession *s, const struct ms_io *io, const char *rcpt);
void ms_header(struct msession *s, const char *name);
enum ms_reply ms_eom(struct msession *s, const struct ms_io *io);
void ms_abort(struct msession *s);

/* ms_rcpt_would_wait - ms_envrcpt(rcpt) would now wait for the verifier:
 * an event loop parks the session instead, on *ticket (verify_notify),
 * until its answer or deadline_ms (clock_mono_ms, the end of
 * verify_budget), then calls ms_envrcpt, which no longer waits. */
bool ms_rcpt_would_wait(struct msession *s, const char *rcpt, struct verify_ticket **ticket,
                        int64_t *deadline_ms);

/* ms_set_conf - new sessions use conf from now on (reload) */
void ms_set_conf(struct conf *conf);
/* ms_set_verifier - sessions verify with it; NULL: syntax and lists only */
void ms_set_verifier(struct verifier *verifier);
/* ms_release_conf - drop the process-wide configuration reference */
void ms_release_conf(void);

/* ms_drain - wait up to seconds for every session to end, or until
 * give_up() (called under this module's lock, after ms_kick) says so;
 * returns the sessions still open */
int ms_drain(int seconds, bool (*give_up)(void));
/* ms_kick - wake ms_drain to ask give_up again */
void ms_kick(void);
/* ms_idle - no session is open */
bool ms_idle(void);

#endif
