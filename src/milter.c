/*
 * milter.c - libmilter callbacks and the listening socket.
 *
 * Threads: libmilter calls these callbacks on one thread per MTA connection.
 * Each connection owns a struct connection (smfi_setpriv) holding its own
 * reference to the configuration, so a configuration swap never changes the
 * rules under a running connection. Message state lives inside it and is
 * reset at every MAIL FROM and abort, so nothing crosses from one message to
 * the next.
 *
 * Process-wide state: libmilter's callback API carries no user pointer, so
 * this module keeps the current configuration, a count of live sessions and
 * the state of the thread that runs smfi_main() in one struct guarded by a
 * mutex.
 *
 * Stopping: Debian's libmilter serves sessions from a worker pool whose
 * controller quits the moment libmilter is told to stop, abandoning every
 * open session. So a stop first waits (bounded) for the sessions to end
 * while still serving, and only then calls smfi_stop(). main owns the
 * signals (see main.c); libmilter's own signal thread is only a fallback.
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
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "precheck.h"

static struct {
	pthread_mutex_t lock;
	pthread_cond_t idle;
	struct conf *conf; /* current configuration; a reference */
	int sessions;      /* live struct connection objects */
	bool serving;      /* the libmilter thread is running */
	int main_status;   /* smfi_main's result, once it returned */
	pthread_t thread;  /* runs smfi_main */
	pthread_t owner;   /* the thread that called milter_start: told when serving ends */
} glue = {.lock = PTHREAD_MUTEX_INITIALIZER, .idle = PTHREAD_COND_INITIALIZER};

struct message {
	bool active;
	char queue_id[32];
	char sender[ADDR_PATH_MAX + 3]; /* as the MTA gave it, cut to fit */
	struct precheck_result check;
};

struct connection {
	struct conf *conf; /* reference held for the connection's life */
	struct sockaddr_storage client;
	bool client_known;
	char client_text[INET6_ADDRSTRLEN];
	struct message msg;
};

/* connection_new - per-session state with a reference to the current conf */
static struct connection *connection_new(void)
{
	struct connection *conn = calloc(1, sizeof(*conn));
	if (conn == NULL)
		return NULL;
	pthread_mutex_lock(&glue.lock);
	conn->conf = conf_ref(glue.conf);
	glue.sessions++;
	pthread_mutex_unlock(&glue.lock);
	snprintf(conn->client_text, sizeof(conn->client_text), "unknown");
	return conn;
}

/* connection_free - release the session and wake a draining stop */
static void connection_free(struct connection *conn)
{
	conf_unref(conn->conf);
	free(conn);
	pthread_mutex_lock(&glue.lock);
	glue.sessions--;
	pthread_cond_broadcast(&glue.idle);
	pthread_mutex_unlock(&glue.lock);
}

/* connection_of - this session's state, created on first use */
static struct connection *connection_of(SMFICTX *ctx)
{
	struct connection *conn = smfi_getpriv(ctx);
	if (conn == NULL) {
		conn = connection_new();
		if (conn == NULL) {
			log_msg(LOG_ERR, "out of memory for a new milter session");
			return NULL;
		}
		smfi_setpriv(ctx, conn);
	}
	return conn;
}

/* message_reset - forget everything about the previous message */
static void message_reset(struct message *msg)
{
	memset(msg, 0, sizeof(*msg));
}

/* copy_cut - copy src into a fixed buffer, truncating */
static void copy_cut(char *dst, size_t size, const char *src)
{
	snprintf(dst, size, "%s", src != NULL ? src : "");
}

/* log_verdict - the one line an administrator greps for */
static void log_verdict(const struct connection *conn, const char *action, const char *reason,
                        const char *rcpt, const char *detail)
{
	char line[1536];
	size_t len = 0;
	line[0] = '\0';
	kv_add(line, sizeof(line), &len, "verdict queue_id",
	       conn->msg.queue_id[0] ? conn->msg.queue_id : "-");
	kv_add(line, sizeof(line), &len, "client", conn->client_text);
	kv_add(line, sizeof(line), &len, "sender", conn->msg.sender);
	kv_add(line, sizeof(line), &len, "action", action);
	kv_add(line, sizeof(line), &len, "reason", reason);
	if (rcpt != NULL)
		kv_add(line, sizeof(line), &len, "rcpt", rcpt);
	if (detail != NULL && *detail != '\0')
		kv_add(line, sizeof(line), &len, "detail", detail);
	log_msg(LOG_INFO, "%s", line);
}

/* double_percent - libmilter treats reply text as a format: "%" must be "%%" */
static void double_percent(const char *in, char *out, size_t size)
{
	size_t n = 0;
	for (; *in != '\0' && n + 2 < size; in++) {
		if (*in == '%')
			out[n++] = '%';
		out[n++] = *in;
	}
	out[n] = '\0';
}

/* reply_with - set the SMTP reply from a template; returns the sfsistat */
static sfsistat reply_with(SMFICTX *ctx, const struct reply_template *tmpl, const struct reply_vars *vars)
{
	char text[REPLY_TEXT_MAX + 1];
	char escaped[2 * REPLY_TEXT_MAX + 1];
	reply_expand(tmpl, vars, text, sizeof(text));
	double_percent(text, escaped, sizeof(escaped));
	char code[sizeof(tmpl->code)], ecode[sizeof(tmpl->ecode)];
	copy_cut(code, sizeof(code), tmpl->code);
	copy_cut(ecode, sizeof(ecode), tmpl->ecode);
	if (smfi_setreply(ctx, code, ecode, escaped) != MI_SUCCESS)
		log_msg(LOG_WARNING, "libmilter refused reply \"%s %s %s\"; the MTA uses its default text",
		        code, ecode, text);
	return code[0] == '4' ? SMFIS_TEMPFAIL : SMFIS_REJECT;
}

/* on_negotiate - ask only for the steps and macros we use */
static sfsistat on_negotiate(SMFICTX *ctx, unsigned long actions, unsigned long steps, unsigned long f2,
                             unsigned long f3, unsigned long *want_actions, unsigned long *want_steps,
                             unsigned long *want_f2, unsigned long *want_f3)
{
	if (connection_of(ctx) == NULL)
		return SMFIS_TEMPFAIL;
	const unsigned long skip =
	        SMFIP_NOHELO | SMFIP_NOHDRS | SMFIP_NOEOH | SMFIP_NOBODY | SMFIP_NOUNKNOWN | SMFIP_NODATA;
	*want_actions = 0;
	*want_steps = steps & skip;
	*want_f2 = 0;
	*want_f3 = 0;
	if (actions & SMFIF_SETSYMLIST) {
		*want_actions |= SMFIF_SETSYMLIST;
		/* Postfix sends these by default; Sendmail needs them asked for. */
		if (smfi_setsymlist(ctx, SMFIM_ENVFROM, "i {auth_authen}") != MI_SUCCESS ||
		    smfi_setsymlist(ctx, SMFIM_ENVRCPT, "i") != MI_SUCCESS)
			log_msg(LOG_WARNING,
			        "could not request milter macros; authenticated clients may be checked");
	}
	return SMFIS_CONTINUE;
}

/* on_connect - remember who the client is */
static sfsistat on_connect(SMFICTX *ctx, char *hostname, struct sockaddr *addr)
{
	struct connection *conn = connection_of(ctx);
	if (conn == NULL)
		return SMFIS_TEMPFAIL;
	conn->client_known = false;
	snprintf(conn->client_text, sizeof(conn->client_text), "unknown");
	if (addr == NULL)
		return SMFIS_CONTINUE;
	if (addr->sa_family == AF_INET) {
		memcpy(&conn->client, addr, sizeof(struct sockaddr_in));
		conn->client_known = true;
		inet_ntop(AF_INET, &((struct sockaddr_in *)addr)->sin_addr, conn->client_text,
		          sizeof(conn->client_text));
	} else if (addr->sa_family == AF_INET6) {
		memcpy(&conn->client, addr, sizeof(struct sockaddr_in6));
		conn->client_known = true;
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)addr)->sin6_addr, conn->client_text,
		          sizeof(conn->client_text));
	}
	return SMFIS_CONTINUE;
}

/* refresh_queue_id - the "i" macro, when the MTA has assigned one */
static void refresh_queue_id(SMFICTX *ctx, struct message *msg)
{
	const char *qid = smfi_getsymval(ctx, "i");
	if (qid != NULL && *qid != '\0')
		copy_cut(msg->queue_id, sizeof(msg->queue_id), qid);
}

/* on_envfrom - decide what can be decided about the sender now */
static sfsistat on_envfrom(SMFICTX *ctx, char **argv)
{
	struct connection *conn = connection_of(ctx);
	if (conn == NULL)
		return SMFIS_TEMPFAIL;
	struct message *msg = &conn->msg;
	message_reset(msg);
	msg->active = true;
	refresh_queue_id(ctx, msg);
	const char *sender = argv != NULL && argv[0] != NULL ? argv[0] : "";
	copy_cut(msg->sender, sizeof(msg->sender), sender);

	const struct sockaddr *client = conn->client_known ? (const struct sockaddr *)&conn->client : NULL;
	precheck_sender(conn->conf, sender, client, smfi_getsymval(ctx, "{auth_authen}"), &msg->check);

	switch (msg->check.verdict) {
	case PRECHECK_ACCEPT:
		log_verdict(conn, "accept", msg->check.reason, NULL, msg->check.detail);
		return SMFIS_ACCEPT;
	case PRECHECK_VERIFY:
		/* No callout engine yet: a well-formed sender nobody vouches for
		 * is accepted and logged as such. */
		log_verdict(conn, "accept", "unverified", NULL, "no callout performed");
		return SMFIS_ACCEPT;
	case PRECHECK_REJECT:
		/* Applied per recipient, so postmaster@ stays reachable. */
		log_msg(LOG_DEBUG, "sender %s fails syntax (%s); rejecting at RCPT", msg->sender,
		        msg->check.detail);
		return SMFIS_CONTINUE;
	}
	return SMFIS_CONTINUE;
}

/* on_envrcpt - apply a pending rejection, sparing exempt recipients */
static sfsistat on_envrcpt(SMFICTX *ctx, char **argv)
{
	struct connection *conn = connection_of(ctx);
	if (conn == NULL)
		return SMFIS_TEMPFAIL;
	struct message *msg = &conn->msg;
	if (!msg->active || msg->check.verdict != PRECHECK_REJECT)
		return SMFIS_CONTINUE;
	refresh_queue_id(ctx, msg);
	const char *rcpt = argv != NULL && argv[0] != NULL ? argv[0] : "";
	if (precheck_recipient_exempt(conn->conf, rcpt)) {
		log_verdict(conn, "accept", "exempt_recipient", rcpt, msg->check.detail);
		return SMFIS_CONTINUE;
	}
	log_verdict(conn, "reject", msg->check.reason, rcpt, msg->check.detail);
	struct reply_vars vars = {.address = msg->sender,
	                          .reason = msg->check.detail,
	                          .outcome = msg->check.reason,
	                          .remote = NULL};
	return reply_with(ctx, &conn->conf->bad_syntax_reply, &vars);
}

/* on_abort - the message ended without delivery: forget it */
static sfsistat on_abort(SMFICTX *ctx)
{
	struct connection *conn = smfi_getpriv(ctx);
	if (conn != NULL)
		message_reset(&conn->msg);
	return SMFIS_CONTINUE;
}

/* on_close - the MTA hung up: free the session */
static sfsistat on_close(SMFICTX *ctx)
{
	struct connection *conn = smfi_getpriv(ctx);
	if (conn != NULL) {
		smfi_setpriv(ctx, NULL);
		connection_free(conn);
	}
	return SMFIS_CONTINUE;
}

static struct smfiDesc filter = {
        .xxfi_name = "vemilter",
        .xxfi_version = SMFI_VERSION,
        .xxfi_flags = 0,
        .xxfi_connect = on_connect,
        .xxfi_envfrom = on_envfrom,
        .xxfi_envrcpt = on_envrcpt,
        .xxfi_abort = on_abort,
        .xxfi_close = on_close,
        .xxfi_negotiate = on_negotiate,
};

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
	if (smfi_register(filter) != MI_SUCCESS) {
		log_msg(LOG_ERR, "smfi_register failed");
		return false;
	}
	/* smfi_setconn keeps the pointer: conf outlives the milter. */
	if (smfi_setconn(conf->socket) != MI_SUCCESS) {
		log_msg(LOG_ERR, "socket %s: libmilter rejected the address", conf->socket);
		return false;
	}
	const char *path = milter_socket_path(conf->socket);
	if (path != NULL && !clear_stale_socket(path))
		return false;
	if (smfi_opensocket(false) != MI_SUCCESS) {
		log_msg(LOG_ERR, "cannot open milter socket %s (in use, or a missing directory?)",
		        conf->socket);
		return false;
	}
	if (path != NULL && chmod(path, conf->socket_mode) != 0) {
		log_msg(LOG_ERR, "chmod %04o %s: %s", conf->socket_mode, path, strerror(errno));
		return false;
	}
	log_msg(LOG_INFO, "listening on %s", conf->socket);
	return true;
}

/* serve_thread - run libmilter; tell the owner when it returns */
static void *serve_thread(void *arg)
{
	int rc = smfi_main();
	pthread_mutex_lock(&glue.lock);
	glue.serving = false;
	glue.main_status = rc == MI_SUCCESS ? 0 : 1;
	pthread_cond_broadcast(&glue.idle);
	pthread_mutex_unlock(&glue.lock);
	/* Wake the owner's sigwait(): libmilter stopped on its own (an error,
	 * or a signal its own signal thread caught). */
	pthread_kill(glue.owner, SIGTERM);
	return NULL;
}

/* milter_start - see milter.h */
bool milter_start(void)
{
	glue.owner = pthread_self();
	glue.serving = true;
	int err = pthread_create(&glue.thread, NULL, serve_thread, NULL);
	if (err != 0) {
		glue.serving = false;
		log_msg(LOG_ERR, "cannot start the milter thread: %s", strerror(err));
		return false;
	}
	return true;
}

/* milter_stop - see milter.h */
int milter_stop(int drain_seconds)
{
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += drain_seconds;
	pthread_mutex_lock(&glue.lock);
	if (glue.serving && glue.sessions > 0)
		log_msg(LOG_INFO, "stopping: waiting up to %d s for %d milter session(s) to finish",
		        drain_seconds, glue.sessions);
	while (glue.serving && glue.sessions > 0) {
		if (pthread_cond_timedwait(&glue.idle, &glue.lock, &deadline) == ETIMEDOUT) {
			log_msg(LOG_WARNING,
			        "stopping with %d milter session(s) still open; the MTA applies its "
			        "milter_default_action to them",
			        glue.sessions);
			break;
		}
	}
	pthread_mutex_unlock(&glue.lock);
	/* Only now: once libmilter stops, it serves no session any more. */
	smfi_stop();
	pthread_join(glue.thread, NULL);
	return glue.main_status;
}

/* milter_set_conf - see milter.h */
void milter_set_conf(struct conf *conf)
{
	pthread_mutex_lock(&glue.lock);
	struct conf *old = glue.conf;
	glue.conf = conf_ref(conf);
	pthread_mutex_unlock(&glue.lock);
	conf_unref(old);
}

/* milter_close - see milter.h */
void milter_close(void)
{
	pthread_mutex_lock(&glue.lock);
	conf_unref(glue.conf);
	glue.conf = NULL;
	pthread_mutex_unlock(&glue.lock);
}
