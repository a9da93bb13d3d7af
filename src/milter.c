/*
 * milter.c - the milter transports and the listening socket.
 *
 * Two transports carry the protocol (milter_transport): the native one
 * (milterloop.c, the default: one event loop for every MTA connection),
 * which this module starts and stops, and libmilter, the reference, whose
 * callbacks here are thin wrappers around the session rules in msession.c
 * (libmilter calls them on one thread per MTA connection; each connection
 * owns a struct msession through smfi_setpriv). Socket checks (a stale
 * unix socket) are shared.
 *
 * Process-wide state: libmilter's callback API carries no user pointer, so
 * this module keeps the state of the thread that runs smfi_main() (or the
 * native loop) in one struct guarded by a mutex; the configuration and the
 * count of live sessions are msession.c's.
 *
 * Stopping: Debian's libmilter serves sessions from a worker pool whose
 * controller quits the moment libmilter is told to stop, abandoning every
 * open session. So a stop first waits (bounded) for the sessions to end
 * while still serving, and only then calls smfi_stop() (the native loop
 * is stopped after the same wait). main owns the signals (see main.c);
 * libmilter's own signal thread is only a fallback.
 */
#include "milter.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libmilter/mfapi.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "milterloop.h"
#include "milterwire.h"
#include "msession.h"
#include "policy.h"
#include "precheck.h"
#include "reply.h"
#include "verify.h"

static struct {
	pthread_mutex_t lock;
	bool serving;     /* the libmilter thread is running */
	int main_status;  /* smfi_main's result, once it returned */
	pthread_t thread; /* runs smfi_main */
	pthread_t owner;  /* the thread that called milter_start: told when serving ends */
	bool native;      /* milter_transport = native: milterloop.c serves */
	int listen_fd;    /* native: the listening socket, until the loop owns it */
	int64_t timeout_ms;
	struct milterloop *loop; /* native: the running loop */
} glue = {.lock = PTHREAD_MUTEX_INITIALIZER, .listen_fd = -1};

/* session_of - this connection's session (msession.c), created on first use */
static struct msession *session_of(SMFICTX *ctx)
{
	struct msession *s = smfi_getpriv(ctx);
	if (s == NULL) {
		s = ms_open();
		if (s == NULL)
			return NULL;
		smfi_setpriv(ctx, s);
	}
	return s;
}

/* io_symval - ms_io: a macro */
static const char *io_symval(void *ctx, const char *name)
{
	return smfi_getsymval(ctx, (char *)name);
}

/* io_setreply - ms_io: the reply for a refusal */
static bool io_setreply(void *ctx, const char *code, const char *ecode, const char *text)
{
	return smfi_setreply(ctx, (char *)code, (char *)ecode, (char *)text) == MI_SUCCESS;
}

/* io_chgheader - ms_io: change or remove a header */
static bool io_chgheader(void *ctx, const char *name, int index, const char *value)
{
	return smfi_chgheader(ctx, (char *)name, index, (char *)value) == MI_SUCCESS;
}

/* io_addheader - ms_io: add a header */
static bool io_addheader(void *ctx, const char *name, const char *value)
{
	return smfi_addheader(ctx, (char *)name, (char *)value) == MI_SUCCESS;
}

/* io_of - the ms_io for a libmilter context */
static struct ms_io io_of(SMFICTX *ctx)
{
	return (struct ms_io){.ctx = ctx,
	                      .symval = io_symval,
	                      .setreply = io_setreply,
	                      .chgheader = io_chgheader,
	                      .addheader = io_addheader};
}

/* status - libmilter's answer for a session's */
static sfsistat status(enum ms_reply r)
{
	switch (r) {
	case MS_CONTINUE:
		break;
	case MS_ACCEPT:
		return SMFIS_ACCEPT;
	case MS_REJECT:
		return SMFIS_REJECT;
	case MS_TEMPFAIL:
		return SMFIS_TEMPFAIL;
	case MS_NOREPLY:
		return SMFIS_NOREPLY;
	}
	return SMFIS_CONTINUE;
}

/* on_negotiate - ask only for the steps, actions and macros we use.
 *
 * Every step the MTA sends costs a packet that libmilter reads with
 * several system calls, and a reply costs a round trip: on the cached path
 * those are most of the CPU a message costs (bench/cached_cpu.py). So when
 * the MTA lets us choose the macros (SETSYMLIST: Postfix and Sendmail do),
 * the client's address comes as {client_addr} with MAIL FROM and the
 * CONNECT step is not sent at all (SMFIP_NOCONNECT); otherwise CONNECT is
 * sent without a reply (SMFIP_NR_CONN). */
static sfsistat on_negotiate(SMFICTX *ctx, unsigned long actions, unsigned long steps, unsigned long f2,
                             unsigned long f3, unsigned long *want_actions, unsigned long *want_steps,
                             unsigned long *want_f2, unsigned long *want_f3)
{
	struct msession *conn = session_of(ctx);
	if (conn == NULL)
		return SMFIS_REJECT;
	/* The choice is milterwire's, shared with the native transport. */
	struct mw_optneg mta = {6, (uint32_t)actions, (uint32_t)steps};
	struct mw_choice choice;
	bool header = ms_conf(conn)->result_header[0] != '\0';
	mw_choose(&mta, header, true, &choice);
	if (choice.symlist && (smfi_setsymlist(ctx, SMFIM_ENVFROM, MW_MACROS_ENVFROM) != MI_SUCCESS ||
	                       smfi_setsymlist(ctx, SMFIM_ENVRCPT, MW_MACROS_ENVRCPT) != MI_SUCCESS)) {
		log_msg(LOG_WARNING, "could not request milter macros; authenticated clients may be checked");
		mw_choose(&mta, header, false, &choice);
	}
	if (choice.header_refused)
		log_msg(LOG_WARNING, "the MTA does not let milters edit headers: no %s header",
		        ms_conf(conn)->result_header);
	*want_actions = choice.actions;
	*want_steps = choice.steps;
	*want_f2 = 0;
	*want_f3 = 0;
	ms_negotiated(conn, choice.client_from_macro, choice.connect_noreply);
	return SMFIS_CONTINUE;
}

/* on_connect - remember who the client is */
static sfsistat on_connect(SMFICTX *ctx, char *hostname, struct sockaddr *addr)
{
	struct msession *s = session_of(ctx);
	return s == NULL ? SMFIS_TEMPFAIL : status(ms_connect(s, addr));
}

/* on_envfrom - MAIL FROM */
static sfsistat on_envfrom(SMFICTX *ctx, char **argv)
{
	struct msession *s = session_of(ctx);
	if (s == NULL)
		return SMFIS_TEMPFAIL;
	struct ms_io io = io_of(ctx);
	return status(ms_envfrom(s, &io, argv != NULL ? argv[0] : NULL));
}

/* on_envrcpt - RCPT TO */
static sfsistat on_envrcpt(SMFICTX *ctx, char **argv)
{
	struct msession *s = session_of(ctx);
	if (s == NULL)
		return SMFIS_TEMPFAIL;
	struct ms_io io = io_of(ctx);
	return status(ms_envrcpt(s, &io, argv != NULL ? argv[0] : NULL));
}

/* on_header - one header of the message */
static sfsistat on_header(SMFICTX *ctx, char *name, char *value)
{
	struct msession *s = smfi_getpriv(ctx);
	if (s != NULL)
		ms_header(s, name);
	return SMFIS_CONTINUE;
}

/* on_eom - the end of the message */
static sfsistat on_eom(SMFICTX *ctx)
{
	struct msession *s = smfi_getpriv(ctx);
	if (s == NULL)
		return SMFIS_CONTINUE;
	struct ms_io io = io_of(ctx);
	return status(ms_eom(s, &io));
}

/* on_abort - the message ended without delivery */
static sfsistat on_abort(SMFICTX *ctx)
{
	struct msession *s = smfi_getpriv(ctx);
	if (s != NULL)
		ms_abort(s);
	return SMFIS_CONTINUE;
}

/* on_close - the MTA hung up: free the session */
static sfsistat on_close(SMFICTX *ctx)
{
	struct msession *s = smfi_getpriv(ctx);
	if (s != NULL) {
		smfi_setpriv(ctx, NULL);
		ms_close(s);
	}
	return SMFIS_CONTINUE;
}

static struct smfiDesc filter = {
        .xxfi_name = "vemilter",
        .xxfi_version = SMFI_VERSION,
        .xxfi_flags = SMFIF_ADDHDRS | SMFIF_CHGHDRS,
        .xxfi_connect = on_connect,
        .xxfi_envfrom = on_envfrom,
        .xxfi_envrcpt = on_envrcpt,
        .xxfi_header = on_header,
        .xxfi_eom = on_eom,
        .xxfi_abort = on_abort,
        .xxfi_close = on_close,
        .xxfi_negotiate = on_negotiate,
};

/* milter_set_verifier - see milter.h */
void milter_set_verifier(struct verifier *verifier)
{
	ms_set_verifier(verifier);
}

/* milter_socket_path - see milter.h */
const char *milter_socket_path(const char *spec)
{
	if (strncmp(spec, "unix:", 5) == 0)
		return spec + 5;
	if (strncmp(spec, "local:", 6) == 0)
		return spec + 6;
	if (spec[0] == '/')
		return spec;
	return NULL;
}

/* clear_stale_socket - unlink path only if it is a socket nobody answers on */
static bool clear_stale_socket(const char *path)
{
	struct stat st;
	if (lstat(path, &st) != 0) {
		if (errno == ENOENT)
			return true;
		log_msg(LOG_ERR, "cannot inspect socket %s: %s", path, strerror(errno));
		return false;
	}
	if (!S_ISSOCK(st.st_mode)) {
		log_msg(LOG_ERR, "%s exists and is not a socket; not touching it", path);
		return false;
	}
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sun.sun_path)) {
		log_msg(LOG_ERR, "socket path %s is too long", path);
		return false;
	}
	strcpy(sun.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		log_msg(LOG_ERR, "socket: %s", strerror(errno));
		return false;
	}
	int rc = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
	int err = errno;
	close(fd);
	if (rc == 0) {
		log_msg(LOG_ERR, "another process is listening on %s; is vemilter already running?", path);
		return false;
	}
	if (err != ECONNREFUSED) {
		log_msg(LOG_ERR, "cannot probe socket %s: %s", path, strerror(err));
		return false;
	}
	if (unlink(path) != 0) {
		log_msg(LOG_ERR, "cannot remove stale socket %s: %s", path, strerror(errno));
		return false;
	}
	log_msg(LOG_NOTICE, "removed stale socket %s (nothing was listening)", path);
	return true;
}

/* milter_open - see milter.h */
bool milter_open(struct conf *conf)
{
	milter_set_conf(conf);
	glue.native = strcmp(conf->milter_transport, "native") == 0;
	glue.timeout_ms = conf->milter_timeout_ms;
	if (glue.native) {
		const char *path = milter_socket_path(conf->socket);
		return path == NULL || clear_stale_socket(path);
	}
	if (smfi_register(filter) != MI_SUCCESS) {
		log_msg(LOG_ERR, "smfi_register failed");
		return false;
	}
	/* smfi_setconn keeps the pointer: conf outlives the milter. */
	if (smfi_setconn(conf->socket) != MI_SUCCESS) {
		log_msg(LOG_ERR, "socket %s: libmilter rejected the address", conf->socket);
		return false;
	}
	/* Without it libmilter waits two hours for an MTA's next command: a
	 * dead or half-sent session would hold its descriptor (and thread)
	 * that long. libmilter reads it once, when it starts serving. */
	if (smfi_settimeout((int)(conf->milter_timeout_ms / 1000)) != MI_SUCCESS) {
		log_msg(LOG_ERR, "libmilter refused milter_timeout %llds",
		        (long long)(conf->milter_timeout_ms / 1000));
		return false;
	}
	const char *path = milter_socket_path(conf->socket);
	return path == NULL || clear_stale_socket(path);
}

/* milter_listen - see milter.h */
bool milter_listen(const struct conf *conf)
{
	const char *path = milter_socket_path(conf->socket);
	errno = 0;
	bool opened;
	if (glue.native)
		opened = (glue.listen_fd = milterloop_listen(conf->socket)) >= 0;
	else
		opened = smfi_opensocket(false) == MI_SUCCESS;
	if (!opened) {
		int err = errno; /* bind()'s, as libmilter leaves it (0 if it failed otherwise) */
		if (err == EADDRINUSE)
			log_msg(LOG_ERR,
			        "cannot listen on %s: the address is in use (is vemilter already "
			        "running?); nothing changed",
			        conf->socket);
		else
			log_msg(LOG_ERR, "cannot open milter socket %s: %s", conf->socket,
			        err != 0 ? strerror(err) : "libmilter refused it (a missing directory?)");
		return false;
	}
	if (path != NULL && chmod(path, conf->socket_mode) != 0) {
		log_msg(LOG_ERR, "chmod %04o %s: %s", conf->socket_mode, path, strerror(errno));
		return false;
	}
	log_msg(LOG_INFO, "listening on %s%s", conf->socket, glue.native ? " (native milter transport)" : "");
	return true;
}

/* serve_thread - run libmilter; tell the owner when it returns */
static void *serve_thread(void *arg)
{
	int rc = smfi_main();
	pthread_mutex_lock(&glue.lock);
	glue.serving = false;
	glue.main_status = rc == MI_SUCCESS ? 0 : 1;
	pthread_mutex_unlock(&glue.lock);
	ms_kick(); /* a draining stop need not wait any longer */
	/* Wake the owner's sigwait(): libmilter stopped on its own (an error,
	 * or a signal its own signal thread caught). */
	pthread_kill(glue.owner, SIGTERM);
	return NULL;
}

/* loop_ended - the native loop ended by itself: tell the owner, as
 * serve_thread does for libmilter */
static void loop_ended(void *arg)
{
	(void)arg;
	ms_kick();
	pthread_kill(glue.owner, SIGTERM);
}

/* not_serving_native - ms_drain's give_up for the native loop */
static bool not_serving_native(void)
{
	return glue.loop == NULL || !milterloop_running(glue.loop);
}

/* milter_start - see milter.h */
bool milter_start(void)
{
	glue.owner = pthread_self();
	if (glue.native) {
		glue.loop = milterloop_start(glue.listen_fd, glue.timeout_ms, loop_ended, NULL);
		if (glue.loop == NULL)
			return false;
		glue.listen_fd = -1; /* the loop's now */
		return true;
	}
	glue.serving = true;
	int err = pthread_create(&glue.thread, NULL, serve_thread, NULL);
	if (err != 0) {
		glue.serving = false;
		log_msg(LOG_ERR, "cannot start the milter thread: %s", strerror(err));
		return false;
	}
	return true;
}

/* not_serving - ms_drain's give_up: libmilter stopped by itself */
static bool not_serving(void)
{
	pthread_mutex_lock(&glue.lock);
	bool serving = glue.serving;
	pthread_mutex_unlock(&glue.lock);
	return !serving;
}

/* milter_stop - see milter.h */
int milter_stop(int drain_seconds)
{
	if (glue.native) {
		ms_drain(drain_seconds, not_serving_native);
		bool ran = glue.loop != NULL && milterloop_running(glue.loop);
		milterloop_stop(glue.loop);
		glue.loop = NULL;
		return ran ? 0 : 1;
	}
	ms_drain(drain_seconds, not_serving);
	/* Only now: once libmilter stops, it serves no session any more. */
	smfi_stop();
	pthread_join(glue.thread, NULL);
	return glue.main_status;
}

/* milter_idle - see milter.h */
bool milter_idle(void)
{
	return ms_idle();
}

/* milter_set_conf - see milter.h */
void milter_set_conf(struct conf *conf)
{
	ms_set_conf(conf);
}

/* milter_close - see milter.h */
void milter_close(void)
{
	ms_release_conf();
}
