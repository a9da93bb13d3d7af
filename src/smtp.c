/*
 * smtp.c - one SMTP probe connection: banner, EHLO (HELO), opportunistic
 * STARTTLS, MAIL FROM (RSET and a fallback sender if refused), RCPT TO (and
 * a catch-all RCPT), QUIT. Never DATA.
 *
 * Owns the probe: its bufferevent (the plain socket one, or after STARTTLS
 * the OpenSSL filter over it, which then owns both the socket bufferevent
 * and the SSL), three events and copies of the parameters. An explicit
 * state machine driven by one read callback, one event callback and the
 * timer, which starts the connection from the loop and is the deadline of
 * every phase, so a server dripping one byte at a time cannot stretch a
 * phase either. Lines are pulled into a fixed buffer only after the line
 * limit is checked; a read high-watermark keeps the input buffer bounded;
 * replies are parsed by smtpreply.c. One command at a time, and nothing
 * may wait in the input when a command goes out (desync); except that the
 * last address's RCPT, the random RCPT and QUIT go out as one group (RFC
 * 2920, send_group) to a server that offers PIPELINING, when the session
 * ends after it: their replies are then taken one slot after the other in
 * the same states (ST_RCPT, ST_CATCHALL, ST_QUIT, with piped set), so the
 * verdict and the proof come one round trip after the group.
 *
 * The result is "decided" inside the dialogue and handed over by the notify
 * event from the loop (so done never runs inside smtp_probe_start or deep
 * in a bufferevent callback, and a desync noticed when the next command
 * goes out, in the same callback, can still replace it). QUIT follows, and
 * with it the proof that the session was in step (smtp.h): a 2xx QUIT
 * reply, nothing after it or after the catch-all reply until the server
 * closes. What that proof came to (sync_state) goes to the owner once the
 * connection is over; then the probe frees itself from the notify event. It is on params.linger its whole
 * life, so the list's owner always knows which probes are alive and can close them.
 */
#include "smtp.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#define PARAM_MAX          512   /* octets in a name or an address we send */
#define DEFAULT_TIMEOUT_MS 30000 /* for a timeout given as <= 0 */
#define READ_HIGH_WATER    (SMTP_LINE_MAX * 4)
#define NO_LINE            (-1)
#define LONG_LINE          (-2)
#define JOB_STRINGS        (2 * (PARAM_MAX + 1))

enum state {
	ST_START,    /* created; the timer connects from the loop */
	ST_CONNECT,  /* TCP connect in progress */
	ST_BANNER,   /* waiting for the greeting */
	ST_EHLO,     /* EHLO sent */
	ST_HELO,     /* HELO sent (EHLO got a 5xx) */
	ST_STARTTLS, /* STARTTLS sent */
	ST_TLS,      /* TLS handshake in progress */
	ST_MAIL,     /* MAIL FROM sent */
	ST_RSET,     /* RSET sent: MAIL was refused, the fallback sender comes next */
	ST_RCPT,     /* RCPT TO sent */
	ST_CATCHALL, /* RCPT TO the random address sent */
	ST_BETWEEN,  /* session mode: an address answered, the next not asked yet */
	ST_RSET_TXN, /* session mode: RSET sent to begin a new transaction */
	ST_QUIT,     /* result decided, QUIT sent */
	ST_CLOSED,   /* connection gone; only deliveries to the owner are left */
	ST_COUNT
};

static const struct {
	const char *name;       /* for traces and debugging */
	const char *command;    /* "reply before command (before <command>)" */
	enum probe_stage stage; /* reported when the dialogue ends here */
	bool reply_due;         /* a reply is read in this state */
	const char *doing;      /* "* timeout <doing>" */
} states[ST_COUNT] = {
        [ST_START] = {"start", "", STAGE_NONE, false, "starting"},
        [ST_CONNECT] = {"connect", "", STAGE_CONNECT, false, "connecting"},
        [ST_BANNER] = {"banner", "", STAGE_BANNER, true, "waiting for banner"},
        [ST_EHLO] = {"ehlo", "EHLO", STAGE_EHLO, true, "waiting for EHLO reply"},
        [ST_HELO] = {"helo", "HELO", STAGE_HELO, true, "waiting for HELO reply"},
        [ST_STARTTLS] = {"starttls", "STARTTLS", STAGE_STARTTLS, true, "waiting for STARTTLS reply"},
        [ST_TLS] = {"tls", "", STAGE_TLS, false, "in TLS handshake"},
        [ST_MAIL] = {"mail", "MAIL", STAGE_MAIL, true, "waiting for MAIL reply"},
        [ST_RSET] = {"rset", "RSET", STAGE_MAIL, true, "waiting for RSET reply"},
        [ST_RCPT] = {"rcpt", "RCPT", STAGE_RCPT, true, "waiting for RCPT reply"},
        [ST_CATCHALL] = {"catchall", "the catch-all RCPT", STAGE_CATCHALL, true,
                         "waiting for catch-all RCPT reply"},
        [ST_BETWEEN] = {"between", "RCPT", STAGE_RCPT, false, "between addresses"},
        [ST_RSET_TXN] = {"rset", "RSET", STAGE_RCPT, true, "waiting for RSET reply"},
        [ST_QUIT] = {"quit", "QUIT", STAGE_QUIT, true, "waiting for QUIT reply"}, /* unless only flushing */
        [ST_CLOSED] = {"closed", "", STAGE_NONE, false, "closed"},
};

struct smtp_probe {
	struct event_base *base;
	struct bufferevent *bev; /* plain or TLS filter; NULL once closed */
	struct event *timer;     /* deferred start, phase deadline */
	struct event *notify;    /* hands the result (and a late catch-all answer) over, from the loop */
	struct event *patience;  /* catchall_wait_ms: report without the catch-all answer (made when first
	                          * armed: most probes report at the real RCPT and never need it) */
	enum state state;
	enum probe_stage hello_stage; /* STAGE_EHLO or STAGE_HELO, once greeted */
	bool quit_wait;               /* ST_QUIT: wait for the reply, not only the flush */
	bool quit_answered;           /* ST_QUIT: a 2xx came; now only the close may come */
	bool piped;                   /* RCPT [random RCPT] QUIT went out as one group: nothing more is
	                               * written, the replies fill the group's slots in order */
	bool piped_catchall;          /* ... with the random RCPT in it */
	bool catchall_unwanted;       /* ... which the real RCPT's reply made moot: its slot is read for
	                               * its place in the order only */
	unsigned caps;                /* from the last EHLO reply */
	struct sockaddr_storage addr;
	socklen_t addrlen;
	struct smtp_params params; /* strings point into strings */
	char *strings;
	smtp_trace_fn trace;
	void *trace_arg;
	smtp_done_fn done;
	smtp_late_fn late;
	smtp_sync_fn sync;
	void *arg;
	struct smtp_reply_parser parser;
	/* The address asked now: made at the start and for each next address,
	 * freed once handed over. A probe after its verdict says only the
	 * catch-all RCPT and QUIT, and thousands may do so at once (each -j slot
	 * or max_probes_in_flight place has one beside the probe before its
	 * verdict), so it should not keep a result nobody reads. Invariant:
	 * NULL only while reported. */
	struct smtp_result *result;
	bool tls_active;                 /* the session's, copied into each result when it is handed over */
	bool fallback_used;              /* likewise: the MAIL FROM that counts was fallback_from */
	char source[46];                 /* likewise: our end of the connection (note_source) */
	struct smtp_reply *mail_refusal; /* the first MAIL refusal, while the fallback sender is tried
	                                  * (made then: few probes need it) */

	/* Who owns the probe and what is still owed to the owner. */
	bool decided;    /* result is final (a desync found before it was handed over may still replace it) */
	bool reported;   /* done has run: result is frozen */
	bool late_due;   /* reported with catchall_pending; late has not run */
	bool late_known; /* whether and what the catch-all answer is, is known */
	bool late_have;  /* ... and it is late_reply */
	struct smtp_reply *late_reply; /* made at the first late answer: most probes have none */
	bool sync_due;                 /* reported, sync is set and has not run */
	enum smtp_sync sync_state;     /* what the session proved so far */
	enum probe_stage sync_stage;   /* where it broke */
	char sync_why[160];            /* how */
	bool in_callback;              /* inside done or late: cancel waits for the return */
	bool cancelled;
	bool lingering; /* on params.linger (from the start until freed) */
	struct linger_item linger_item;

	/* Session mode (params.next) */
	unsigned rcpt_errors; /* 5xx RCPT replies in this session */
	unsigned txn_rcpts;   /* RCPTs sent in this transaction */
	bool new_txn;         /* the MAIL under way follows our RSET_TXN */
	bool txn_retried;     /* this address got a 452 and a new transaction already */
	char *job_strings;    /* rcpt and catchall_rcpt of the address asked now: JOB_STRINGS octets, made
	                       * at the second address (thousands of probes ask only one) */
};

static void on_read(struct bufferevent *bev, void *arg);
static void on_write(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);
static void quit(struct smtp_probe *p, bool wait);
static void job_over(struct smtp_probe *p);
static void send_rcpt(struct smtp_probe *p);
static void on_patience(evutil_socket_t fd, short what, void *arg);

/* trace - one transcript line, control characters replaced by '?' */
__attribute__((format(printf, 2, 3))) static void trace(struct smtp_probe *p, const char *fmt, ...)
{
	char line[SMTP_LINE_MAX + 64];
	va_list ap;

	if (p->trace == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	for (char *c = line; *c != '\0'; c++) {
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			*c = '?';
	}
	p->trace(p->trace_arg, line);
}

/* trace_received - a reply line as "< line", non-ASCII bytes replaced too */
static void trace_received(struct smtp_probe *p, const char *line, size_t len)
{
	char buf[SMTP_LINE_MAX + 1];

	if (p->trace == NULL)
		return;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];
		buf[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	buf[len] = '\0';
	trace(p, "< %s", buf);
}

/* timeval_ms - milliseconds as a timeval; <= 0 means the default */
static struct timeval timeval_ms(int64_t ms)
{
	if (ms <= 0)
		ms = DEFAULT_TIMEOUT_MS;
	struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
	return tv;
}

/* set_result - record how the dialogue ended; reply may be NULL, fmt too.
 * Once the result is handed over it stays as it was. */
__attribute__((format(printf, 5, 6))) static void set_result(struct smtp_probe *p, enum smtp_end end,
                                                             enum probe_stage stage,
                                                             const struct smtp_reply *reply, const char *fmt,
                                                             ...)
{
	if (p->reported)
		return;
	struct smtp_result *res = p->result;
	res->end = end;
	res->stage = stage;
	res->catchall_pending = false;
	if (reply != NULL)
		res->reply = *reply;
	else
		memset(&res->reply, 0, sizeof(res->reply));
	res->error[0] = '\0';
	if (fmt != NULL) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(res->error, sizeof(res->error), fmt, ap);
		va_end(ap);
	}
}

/* close_connection - free the bufferevent(s), closing the socket */
static void close_connection(struct smtp_probe *p)
{
	if (p->bev != NULL) {
		bufferevent_free(p->bev);
		p->bev = NULL;
	}
}

/* decide - the result is final: hand it over from the loop, now */
static void decide(struct smtp_probe *p)
{
	if (p->decided)
		return;
	p->decided = true;
	event_active(p->notify, EV_TIMEOUT, 0);
}

/* note_late - what became of a pending catch-all answer (reply, or NULL:
 * none that can be trusted); only the first word counts */
static void note_late(struct smtp_probe *p, const struct smtp_reply *reply)
{
	/* once reported the result is gone: late_due says whether its catch-all answer was open */
	bool open = p->reported ? p->late_due : p->result->catchall_pending;
	if (!open || p->late_known)
		return;
	p->late_known = true;
	if (reply != NULL) {
		if (p->late_reply ==
		    NULL) /* no memory: as if no usable answer came (a fact, not a verdict) */
			p->late_reply = malloc(sizeof(*p->late_reply));
		if (p->late_reply != NULL) {
			p->late_have = true;
			*p->late_reply = *reply;
		}
	}
	event_active(p->notify, EV_TIMEOUT, 0);
}

/* finish_connection - the connection is over: close it; what is still owed
 * to the owner (and the probe's end) follows from the loop */
static void finish_connection(struct smtp_probe *p)
{
	enum probe_stage stage = states[p->state].stage;
	close_connection(p);
	evtimer_del(p->timer);
	if (p->patience != NULL)
		evtimer_del(p->patience);
	p->state = ST_CLOSED;
	note_late(p, NULL);
	if (!p->decided) /* every path decides first; never report an empty answer */
		set_result(p, SMTP_END_PROTOCOL, stage, NULL, "connection ended without a result");
	decide(p);
	event_active(p->notify, EV_TIMEOUT, 0);
}

/* end_now - decided, and nothing left to say to the server */
static void end_now(struct smtp_probe *p)
{
	decide(p);
	finish_connection(p);
}

/* set_phase - enter state st with its timeout (bufferevent and deadline) */
static void set_phase(struct smtp_probe *p, enum state st)
{
	int64_t ms = p->params.command_timeout_ms;

	if (st == ST_CONNECT)
		ms = p->params.connect_timeout_ms;
	else if (st == ST_BANNER)
		ms = p->params.banner_timeout_ms;
	struct timeval tv = timeval_ms(ms);
	p->state = st;
	if (p->bev != NULL)
		bufferevent_set_timeouts(p->bev, &tv, &tv);
	evtimer_add(p->timer, &tv);
}

/* next_slot - a group's reply is in: the next one (in st) is the reply to
 * the group's next command, already sent */
static void next_slot(struct smtp_probe *p, enum state st)
{
	smtp_reply_init(&p->parser);
	set_phase(p, st);
}

/* input_waiting - has the server sent anything we have not read? In plain
 * text the socket's receive queue counts too (libevent may not have read it
 * yet); under TLS only decrypted data does, as the socket may legitimately
 * hold TLS records such as session tickets. */
static bool input_waiting(struct smtp_probe *p)
{
	if (evbuffer_get_length(bufferevent_get_input(p->bev)) > 0)
		return true;
	if (p->tls_active)
		return false;
	evutil_socket_t fd = bufferevent_getfd(p->bev);
	int queued = 0;
	return fd >= 0 && ioctl(fd, FIONREAD, &queued) == 0 && queued > 0;
}

/* out_of_step - the session is shown out of step at stage (the first
 * finding counts); after the result was handed over this is what the owner
 * hears (smtp_sync_fn), as the result itself stays */
__attribute__((format(printf, 3, 4))) static void out_of_step(struct smtp_probe *p, enum probe_stage stage,
                                                              const char *fmt, ...)
{
	if (p->sync_state == SMTP_SYNC_BROKEN)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(p->sync_why, sizeof(p->sync_why), fmt, ap);
	va_end(ap);
	p->sync_state = SMTP_SYNC_BROKEN;
	p->sync_stage = stage;
	if (p->reported) {
		trace(p, "* out of step after the verdict: %s", p->sync_why);
	} else if (p->piped) {
		/* a group's replies are read in one go: the QUIT slot can show
		 * the break before the result is handed over, which then is no
		 * answer at all (as after a desync), not a verdict to take back */
		set_result(p, SMTP_END_PROTOCOL, stage, NULL, "%s", p->sync_why);
	}
}

/* desync - the server sent something before command st went out: whatever
 * we paired so far may be the wrong reply to the wrong command. Protocol
 * error, unless the result was handed over already (then only a pending
 * catch-all answer is given up); QUIT without waiting for its reply. */
static void desync(struct smtp_probe *p, enum state st)
{
	char why[80];

	snprintf(why, sizeof(why), "reply before command (before %s)", states[st].command);
	struct evbuffer *in = bufferevent_get_input(p->bev);
	size_t n = evbuffer_get_length(in);
	if (n > 0) { /* show what came early, up to its first line end */
		size_t show = n < 200 ? n : 200;
		const char *data = (const char *)evbuffer_pullup(in, (ev_ssize_t)show);
		if (data != NULL) {
			size_t line = 0;
			while (line < show && data[line] != '\r' && data[line] != '\n')
				line++;
			trace_received(p, data, line);
		}
	}
	trace(p, "* protocol error: %s", why);
	set_result(p, SMTP_END_PROTOCOL, states[st].stage, NULL, "%s", why);
	out_of_step(p, states[st].stage, "reply before command (%s%s)",
	            p->reported ? "found after the verdict, before " : "before ", states[st].command);
	note_late(p, NULL);
	decide(p);
	evbuffer_drain(in, n);
	quit(p, false);
}

/* send_command - write one command line and wait for its reply in state st.
 * Anything the server sent before it is a desync (except before a QUIT we
 * do not wait an answer for: that dialogue has failed already). */
__attribute__((format(printf, 3, 4))) static void send_command(struct smtp_probe *p, enum state st,
                                                               const char *fmt, ...)
{
	char cmd[SMTP_LINE_MAX + 1];
	va_list ap;

	if (p->bev == NULL) {
		finish_connection(p);
		return;
	}
	if ((st != ST_QUIT || p->quit_wait) && input_waiting(p)) {
		desync(p, st);
		return;
	}
	va_start(ap, fmt);
	int n = vsnprintf(cmd, sizeof(cmd) - 2, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(cmd) - 2) { /* bad_params makes this impossible */
		set_result(p, SMTP_END_PROTOCOL, states[st].stage, NULL, "command too long");
		end_now(p);
		return;
	}
	trace(p, "> %s", cmd);
	memcpy(cmd + n, "\r\n", 2);
	smtp_reply_init(&p->parser);
	set_phase(p, st);
	if (bufferevent_write(p->bev, cmd, (size_t)n + 2) < 0 ||
	    bufferevent_enable(p->bev, EV_READ | EV_WRITE) < 0) {
		set_result(p, SMTP_END_PROTOCOL, states[st].stage, NULL, "cannot send %s", states[st].name);
		end_now(p);
	}
}

/* quit - say QUIT; wait for its reply, or (after a timeout or a protocol
 * error) only until it is written */
static void quit(struct smtp_probe *p, bool wait)
{
	if (p->bev == NULL) {
		finish_connection(p);
		return;
	}
	if (p->piped) { /* QUIT went out with the group: wait for its slot, or end here */
		if (!wait) {
			finish_connection(p);
			return;
		}
		p->quit_wait = true;
		next_slot(p, ST_QUIT);
		return;
	}
	p->quit_wait = wait;
	send_command(p, ST_QUIT, "QUIT");
	if (!wait && p->bev != NULL)
		bufferevent_disable(p->bev, EV_READ);
}

/* stop_at - the server said no here: END_REPLY; QUIT unless it is closing (421) */
static void stop_at(struct smtp_probe *p, const struct smtp_reply *r)
{
	set_result(p, SMTP_END_REPLY, states[p->state].stage, r, NULL);
	decide(p);
	if (r->code == 421)
		finish_connection(p);
	else
		quit(p, true);
}

/* protocol_error - the server broke the protocol: END_PROTOCOL (or, after
 * the result was handed over, no late catch-all answer), then QUIT */
static void protocol_error(struct smtp_probe *p, const char *why)
{
	if (p->state == ST_QUIT) { /* the result stands, but the QUIT reply proves nothing */
		trace(p, "* protocol error: %s", why);
		out_of_step(p, STAGE_QUIT, "%s (found after the verdict)", why);
		finish_connection(p);
		return;
	}
	trace(p, "* protocol error: %s", why);
	set_result(p, SMTP_END_PROTOCOL, states[p->state].stage, NULL, "%s", why);
	out_of_step(p, states[p->state].stage, "%s%s", why, p->reported ? " (found after the verdict)" : "");
	note_late(p, NULL);
	decide(p);
	quit(p, false);
}

/* positive - a 2xx reply? */
static bool positive(const struct smtp_reply *r)
{
	return r->code / 100 == 2;
}

/* send_mail - check SMTPUTF8 if needed, then MAIL FROM (the fallback
 * sender once RSET made way for it) */
static void send_mail(struct smtp_probe *p)
{
	if (p->params.needs_smtputf8 && !(p->caps & SMTP_CAP_SMTPUTF8)) {
		trace(p, "* server does not offer SMTPUTF8");
		set_result(p, SMTP_END_NO_SMTPUTF8, p->hello_stage, NULL, "server does not offer SMTPUTF8");
		decide(p);
		quit(p, true);
		return;
	}
	send_command(p, ST_MAIL, "MAIL FROM:<%s>%s",
	             p->fallback_used ? p->params.fallback_from : p->params.mail_from,
	             p->params.needs_smtputf8 ? " SMTPUTF8" : "");
}

/* greeted - EHLO/HELO accepted: STARTTLS if offered and wanted, else MAIL */
static void greeted(struct smtp_probe *p, const struct smtp_reply *r, enum probe_stage stage)
{
	p->hello_stage = stage;
	p->caps = stage == STAGE_EHLO ? r->caps : 0;
	if (p->params.try_tls && !p->tls_active && (p->caps & SMTP_CAP_STARTTLS))
		send_command(p, ST_STARTTLS, "STARTTLS");
	else
		send_mail(p);
}

/* names_us - the greeting or EHLO/HELO reply names our own helo_name: the
 * server is this host. END_LOOP, QUIT; true if so */
static bool names_us(struct smtp_probe *p, const struct smtp_reply *r, enum probe_stage stage)
{
	if (!classify_names_host(r, p->params.helo_name))
		return false;
	trace(p, "* the server calls itself %s, our own name: this host", p->params.helo_name);
	set_result(p, SMTP_END_LOOP, stage, r, "the server's %s names this host (%s)",
	           stage == STAGE_BANNER ? "greeting" : "EHLO reply", p->params.helo_name);
	decide(p);
	quit(p, true);
	return true;
}

/* sni_name - server_name without a final dot, if it looks like a host name */
static bool sni_name(const char *name, char *out, size_t size)
{
	size_t n = strlen(name);
	bool letter = false;

	if (n > 0 && name[n - 1] == '.')
		n--;
	if (n == 0 || n >= size || n > 253 || name[0] == '.' || name[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
			letter = true;
		else if (!(c >= '0' && c <= '9') && c != '-' && c != '.')
			return false;
	}
	memcpy(out, name, n);
	out[n] = '\0';
	return letter;
}

/* tls_failed - the handshake did not complete: TLS_FAILED, no QUIT */
static void tls_failed(struct smtp_probe *p, const char *why)
{
	trace(p, "* TLS failed: %s", why);
	set_result(p, SMTP_END_TLS_FAILED, STAGE_TLS, NULL, "%s", why);
	end_now(p);
}

/* start_tls - STARTTLS accepted: wrap the connection in a TLS filter */
static void start_tls(struct smtp_probe *p)
{
	char host[256];

	if (input_waiting(p)) { /* the client speaks first in TLS: anything here is out of turn */
		tls_failed(p, "data after the STARTTLS reply");
		return;
	}
	SSL *ssl = SSL_new(p->params.ssl_ctx);
	if (ssl == NULL) {
		tls_failed(p, "SSL_new failed");
		return;
	}
	SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
	if (sni_name(p->params.server_name, host, sizeof(host)))
		SSL_set_tlsext_host_name(ssl, host);
	bufferevent_set_timeouts(p->bev, NULL, NULL);
	struct bufferevent *tls = bufferevent_openssl_filter_new(
	        p->base, p->bev, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
	if (tls == NULL) {
		/* libevent has freed the SSL (BEV_OPT_CLOSE_ON_FREE); who owns the
		 * socket bufferevent now is unclear, so leak it rather than risk a
		 * double free on this out-of-memory path. */
		p->bev = NULL;
		tls_failed(p, "cannot create the TLS filter");
		return;
	}
	p->bev = tls;
	bufferevent_openssl_set_allow_dirty_shutdown(tls, 1);
	bufferevent_setcb(tls, on_read, on_write, on_event, p);
	bufferevent_setwatermark(tls, EV_READ, 0, READ_HIGH_WATER);
	set_phase(p, ST_TLS);
	bufferevent_enable(tls, EV_READ | EV_WRITE);
}

/* tls_up - handshake done: note it and say EHLO again */
static void tls_up(struct smtp_probe *p)
{
	SSL *ssl = bufferevent_openssl_get_ssl(p->bev);

	p->tls_active = true;
	trace(p, "* TLS established (%s, %s)", SSL_get_version(ssl), SSL_get_cipher_name(ssl));
	send_command(p, ST_EHLO, "EHLO %s", p->params.helo_name);
}

/* mail_refused_for_good - MAIL was refused and the fallback sender cannot
 * be tried in this session (RSET refused, timed out or dropped): the
 * refusal stands; a new connection may try the fallback */
static void mail_refused_for_good(struct smtp_probe *p, bool may_retry)
{
	set_result(p, SMTP_END_REPLY, STAGE_MAIL, p->mail_refusal, NULL);
	if (!p->reported)
		p->result->fallback_retry = may_retry;
	decide(p);
}

/* rcpt_answered - the real RCPT got r (not 421): decide now or after the
 * catch-all RCPT */
static void rcpt_answered(struct smtp_probe *p, const struct smtp_reply *r)
{
	set_result(p, SMTP_END_DONE, STAGE_RCPT, r, NULL);
	if (r->code / 100 == 5)
		p->rcpt_errors++;
	/* After a 5xx about the address the random one cannot change the
	 * verdict, but its answer is still a fact about the domain. */
	bool ask = p->params.catchall_rcpt != NULL &&
	           (positive(r) ||
	            (r->code / 100 == 5 && !classify_says_blocked(r) && !p->params.skip_catchall_after_5xx));
	if (!ask) {
		decide(p);
		if (p->piped && p->piped_catchall) { /* asked already: its reply keeps its place */
			trace(p, "* the random RCPT's reply cannot change this: read only for its place");
			p->catchall_unwanted = true;
			next_slot(p, ST_CATCHALL);
		} else if (p->piped) {
			quit(p, true); /* the QUIT slot is next (its reply may be waiting already) */
		} else {
			job_over(p);
		}
		return;
	}
	p->result->catchall_asked = true;
	if (p->params.report_at_rcpt || !positive(r)) {
		p->result->catchall_pending = true;
		decide(p);
	}
	if (p->piped) {
		next_slot(p, ST_CATCHALL); /* its reply is the group's next slot */
	} else {
		p->txn_rcpts++;
		send_command(p, ST_CATCHALL, "RCPT TO:<%s>", p->params.catchall_rcpt);
	}
	if (p->state == ST_CATCHALL && !p->decided && p->params.catchall_wait_ms > 0) {
		struct timeval tv = timeval_ms(p->params.catchall_wait_ms);
		if (p->patience == NULL)
			p->patience = evtimer_new(p->base, on_patience, p);
		if (p->patience == NULL || evtimer_add(p->patience, &tv) != 0) {
			/* no memory for the bound: report now, as when it passes */
			p->result->catchall_pending = true;
			decide(p);
		}
	}
}

/* catchall_answered - the random address got r */
static void catchall_answered(struct smtp_probe *p, const struct smtp_reply *r)
{
	if (p->patience != NULL)
		evtimer_del(p->patience);
	if (r->code / 100 == 5)
		p->rcpt_errors++;
	/* more after it: this answer may belong to another command (in a
	 * group, QUIT's reply comes next, and its slot is checked then) */
	if (!p->piped && input_waiting(p)) {
		desync(p, ST_QUIT);
		return;
	}
	if (p->catchall_unwanted) {
		/* its slot is filled: nothing about the domain is taken from it */
	} else if (!p->decided) {
		p->result->stage = STAGE_CATCHALL;
		p->result->catchall_reply = *r;
		decide(p);
	} else {
		note_late(p, r);
	}
	if (r->code == 421)
		finish_connection(p);
	else if (p->piped)
		quit(p, true); /* the QUIT slot is next */
	else
		job_over(p);
}

/* catchall_unanswered - no answer to the random address (timeout, close):
 * the real RCPT's answer stands, with the catch-all question open */
static void catchall_unanswered(struct smtp_probe *p)
{
	if (p->patience != NULL)
		evtimer_del(p->patience);
	if (!p->decided) {
		p->result->stage = STAGE_CATCHALL;
		memset(&p->result->catchall_reply, 0, sizeof(p->result->catchall_reply));
		decide(p);
	}
	note_late(p, NULL);
}

/* may_group - may the address asked now go out as one group with QUIT
 * (smtp.h)? The server offers PIPELINING, this is the transaction's first
 * RCPT (so no 452 can ask for a new transaction in this session) and the
 * session ends after it */
static bool may_group(struct smtp_probe *p)
{
	if (!p->params.pipelining || !(p->caps & SMTP_CAP_PIPELINING) || p->txn_rcpts != 0)
		return false;
	if (p->params.next == NULL)
		return true;
	return p->params.last != NULL && p->params.last(p->arg);
}

/* send_group - RCPT TO the address, the random RCPT if it is to be asked,
 * and QUIT, in one write (RFC 2920: QUIT last). As before every command,
 * anything waiting now is a desync. The replies fill ST_RCPT, ST_CATCHALL
 * and ST_QUIT in turn; nothing is written after this. */
static void send_group(struct smtp_probe *p)
{
	char group[3 * (PARAM_MAX + 16)];
	const char *ca = p->params.catchall_rcpt;

	if (p->bev == NULL) {
		finish_connection(p);
		return;
	}
	if (input_waiting(p)) {
		desync(p, ST_RCPT);
		return;
	}
	int n = snprintf(group, sizeof(group), "RCPT TO:<%s>\r\n", p->params.rcpt);
	if (ca != NULL)
		n += snprintf(group + n, sizeof(group) - (size_t)n, "RCPT TO:<%s>\r\n", ca);
	n += snprintf(group + n, sizeof(group) - (size_t)n, "QUIT\r\n");
	if (n < 0 || (size_t)n >= sizeof(group)) { /* bad_params and take_job make this impossible */
		set_result(p, SMTP_END_PROTOCOL, STAGE_RCPT, NULL, "command too long");
		end_now(p);
		return;
	}
	trace(p, "* PIPELINING: RCPT%s and QUIT in one group (the session ends after this address)",
	      ca != NULL ? ", the random RCPT" : "");
	trace(p, "> RCPT TO:<%s>", p->params.rcpt);
	if (ca != NULL)
		trace(p, "> RCPT TO:<%s>", ca);
	trace(p, "> QUIT");
	p->piped = true;
	p->piped_catchall = ca != NULL;
	p->txn_rcpts += ca != NULL ? 2 : 1;
	smtp_reply_init(&p->parser);
	set_phase(p, ST_RCPT);
	if (bufferevent_write(p->bev, group, (size_t)n) < 0 ||
	    bufferevent_enable(p->bev, EV_READ | EV_WRITE) < 0) {
		set_result(p, SMTP_END_PROTOCOL, STAGE_RCPT, NULL, "cannot send rcpt");
		end_now(p);
	}
}

/* send_rcpt - RCPT TO the address asked now (grouped with QUIT when it is
 * the session's last and the server pipelines) */
static void send_rcpt(struct smtp_probe *p)
{
	if (may_group(p)) {
		send_group(p);
		return;
	}
	p->txn_rcpts++;
	send_command(p, ST_RCPT, "RCPT TO:<%s>", p->params.rcpt);
}

/* job_over - the address asked now is decided and nothing more is due from
 * the server for it: QUIT, or in session mode wait (ST_BETWEEN) until the
 * owner has it all (on_notify), then ask for the next. Data waiting now
 * came after the last reply: the reply we paired may not be that address's */
static void job_over(struct smtp_probe *p)
{
	if (p->params.next == NULL) {
		quit(p, true);
		return;
	}
	if (p->bev == NULL) {
		finish_connection(p);
		return;
	}
	if (input_waiting(p)) {
		desync(p, ST_BETWEEN);
		return;
	}
	evtimer_del(p->timer);
	bufferevent_set_timeouts(p->bev, NULL, NULL);
	p->state = ST_BETWEEN;
	event_active(p->notify, EV_TIMEOUT, 0);
}

/* take_job - copy the next address's parameters; NULL or why not */
static const char *take_job(struct smtp_probe *p, const struct smtp_job *job)
{
	const char *rcpt = job->rcpt != NULL ? job->rcpt : "";
	const char *ca = job->catchall_rcpt != NULL ? job->catchall_rcpt : "";
	size_t rn = strlen(rcpt), cn = strlen(ca);

	if (rn == 0)
		return "empty recipient";
	if (rn > PARAM_MAX || cn > PARAM_MAX)
		return "command parameter too long";
	if (strpbrk(rcpt, "\r\n") != NULL || strpbrk(ca, "\r\n") != NULL)
		return "CR or LF in a command parameter";
	memcpy(p->job_strings, rcpt, rn + 1);
	memcpy(p->job_strings + PARAM_MAX + 1, ca, cn + 1);
	p->params.rcpt = p->job_strings;
	p->params.catchall_rcpt = cn > 0 ? p->job_strings + PARAM_MAX + 1 : NULL;
	p->params.report_at_rcpt = job->report_at_rcpt;
	p->params.skip_catchall_after_5xx = job->skip_catchall_after_5xx;
	return NULL;
}

/* advance - session mode, between addresses (everything handed over):
 * the next address's RCPT (a new transaction first when this one is full),
 * or QUIT when there is none or the session has collected its failures */
static void advance(struct smtp_probe *p)
{
	struct smtp_job job;

	if (p->params.max_rcpt_errors > 0 && p->rcpt_errors >= (unsigned)p->params.max_rcpt_errors) {
		trace(p, "* %u failed RCPTs in this session: QUIT (the rest go on in a new one)",
		      p->rcpt_errors);
		quit(p, true);
		return;
	}
	if (p->result == NULL && (p->result = malloc(sizeof(*p->result))) == NULL) {
		/* no room for an answer: take no address; the rest go on in a new session */
		trace(p, "* no memory for the next address: QUIT (the rest go on in a new one)");
		quit(p, true);
		return;
	}
	memset(&job, 0, sizeof(job));
	switch (p->params.next(p->arg, &job)) {
	case SMTP_NEXT_NONE:
		free(p->result); /* no next address: QUIT needs none */
		p->result = NULL;
		quit(p, true);
		return;
	case SMTP_NEXT_WAIT: /* idle in ST_BETWEEN: smtp_probe_resume asks again */
		return;
	case SMTP_NEXT_JOB:
		break;
	}
	/* A new address: its own result, nothing of the previous one's. */
	memset(p->result, 0, sizeof(*p->result));
	p->decided = p->reported = false;
	p->late_due = p->late_known = p->late_have = false;
	p->txn_retried = false;
	if (p->job_strings == NULL && (p->job_strings = malloc(JOB_STRINGS)) == NULL) {
		/* ours: that address only, the session goes on with the next */
		set_result(p, SMTP_END_NO_RESOURCES, STAGE_RCPT, NULL, "%s", CLASSIFY_NO_MEMORY);
		decide(p);
		return;
	}
	const char *bad = take_job(p, &job);
	if (bad != NULL) { /* that address only: the session goes on with the next */
		set_result(p, SMTP_END_PROTOCOL, STAGE_NONE, NULL, "%s", bad);
		decide(p);
		return;
	}
	if (p->txn_rcpts >= SMTP_TXN_RCPTS) {
		trace(p, "* %u RCPTs in this transaction: RSET and a new MAIL FROM", p->txn_rcpts);
		p->new_txn = true;
		send_command(p, ST_RSET_TXN, "RSET");
		return;
	}
	send_rcpt(p);
}

/* new_txn_failed - RSET or the new MAIL FROM after it got r: not an answer
 * about the address (tempfail for it), and the end of the session */
static void new_txn_failed(struct smtp_probe *p, const char *what, const struct smtp_reply *r)
{
	trace(p, "* %s got %d in a new transaction: ending the session", what, r->code);
	set_result(p, SMTP_END_PROTOCOL, STAGE_RCPT, NULL, "%s refused (%d) when starting a new transaction",
	           what, r->code);
	decide(p);
	if (r->code == 421)
		finish_connection(p);
	else
		quit(p, true);
}

/* found_when - how a break found at QUIT is described: after the verdict
 * was handed over, or (a group's replies come in one go) before it */
static const char *found_when(const struct smtp_probe *p)
{
	return p->reported || !p->piped ? "found after the verdict: " : "found in the group's replies: ";
}

/* quit_reply - the QUIT reply: a 2xx with nothing after it is in step so
 * far (the close proves it); anything else is another command's reply, so
 * every reply before it may have been too */
static void quit_reply(struct smtp_probe *p, const struct smtp_reply *r)
{
	if (!positive(r)) {
		trace(p, "* QUIT got %d, not 2xx: the replies were out of step", r->code);
		out_of_step(p, STAGE_QUIT, "reply before command (%sQUIT got %d)", found_when(p), r->code);
		finish_connection(p);
	} else if (input_waiting(p)) {
		trace(p, "* data after the QUIT reply: the replies were out of step");
		out_of_step(p, STAGE_QUIT, "reply before command (%sdata after the QUIT reply)",
		            found_when(p));
		finish_connection(p);
	} else {
		p->quit_answered = true; /* the server closes now (RFC 5321 4.1.1.10); until then, silence */
	}
}

/* on_reply - a complete reply in the current state */
static void on_reply(struct smtp_probe *p, const struct smtp_reply *r)
{
	switch (p->state) {
	case ST_BANNER:
		if (!positive(r))
			stop_at(p, r);
		else if (!names_us(p, r, STAGE_BANNER))
			send_command(p, ST_EHLO, "EHLO %s", p->params.helo_name);
		break;
	case ST_EHLO:
		if (positive(r)) {
			if (!names_us(p, r, STAGE_EHLO))
				greeted(p, r, STAGE_EHLO);
		} else if (r->code / 100 == 5) {
			send_command(p, ST_HELO, "HELO %s", p->params.helo_name);
		} else {
			stop_at(p, r);
		}
		break;
	case ST_HELO:
		if (!positive(r))
			stop_at(p, r);
		else if (!names_us(p, r, STAGE_HELO))
			greeted(p, r, STAGE_HELO);
		break;
	case ST_STARTTLS:
		if (positive(r))
			start_tls(p);
		else if (r->code == 421)
			stop_at(p, r);
		else
			send_mail(p); /* refused: carry on without TLS */
		break;
	case ST_MAIL:
		if (positive(r)) {
			p->txn_rcpts = 0;
			p->new_txn = false;
			send_rcpt(p);
		} else if (p->new_txn) {
			new_txn_failed(p, "MAIL", r);
		} else if (r->code / 100 == 5 && r->code != 421 && p->params.fallback_from != NULL &&
		           !p->fallback_used &&
		           /* no memory for it: the refusal stands, as without a fallback sender */
		           (p->mail_refusal != NULL ||
		            (p->mail_refusal = malloc(sizeof(*p->mail_refusal))) != NULL)) {
			*p->mail_refusal = *r;
			trace(p, "* MAIL FROM:<%s> refused: RSET, then the fallback sender <%s>",
			      p->params.mail_from, p->params.fallback_from);
			send_command(p, ST_RSET, "RSET");
		} else {
			stop_at(p, r);
		}
		break;
	case ST_RSET:
		if (positive(r)) {
			p->fallback_used = true;
			send_mail(p);
		} else {
			mail_refused_for_good(p, r->code != 421);
			if (r->code == 421)
				finish_connection(p);
			else
				quit(p, true);
		}
		break;
	case ST_RCPT:
		if (r->code == 421) {
			stop_at(p, r);
		} else if (r->code == 452 && p->params.next != NULL && !p->piped && p->txn_rcpts > 1 &&
		           !p->txn_retried) {
			/* too many recipients in this transaction (RFC 5321 4.5.3.1.10):
			 * not an answer about the address; ask it again in a new one */
			trace(p,
			      "* 452 after %u RCPTs in this transaction: RSET, a new MAIL FROM, and this "
			      "address again",
			      p->txn_rcpts - 1);
			p->txn_retried = true;
			p->new_txn = true;
			send_command(p, ST_RSET_TXN, "RSET");
		} else {
			rcpt_answered(p, r);
		}
		break;
	case ST_RSET_TXN:
		if (positive(r))
			send_mail(p);
		else
			new_txn_failed(p, "RSET", r);
		break;
	case ST_CATCHALL:
		catchall_answered(p, r);
		break;
	case ST_QUIT:
		quit_reply(p, r);
		break;
	default:
		break;
	}
}

/* awaiting_reply - is a reply due in the current state? */
static bool awaiting_reply(const struct smtp_probe *p)
{
	return states[p->state].reply_due && (p->state != ST_QUIT || p->quit_wait);
}

/* take_line - pull one line (without its EOL) into buf, which has room for
 * SMTP_LINE_MAX octets; its length, NO_LINE (not complete yet) or LONG_LINE */
static long take_line(struct evbuffer *in, char *buf)
{
	size_t eol_len = 0;
	struct evbuffer_ptr at = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF);

	if (at.pos < 0)
		return evbuffer_get_length(in) > SMTP_LINE_MAX + 2 ? LONG_LINE : NO_LINE;
	if ((size_t)at.pos > SMTP_LINE_MAX)
		return LONG_LINE;
	if (evbuffer_remove(in, buf, (size_t)at.pos) != at.pos)
		return LONG_LINE;
	evbuffer_drain(in, eol_len);
	return (long)at.pos;
}

/* on_read - feed complete lines to the reply parser while a reply is due */
static void on_read(struct bufferevent *bev, void *arg)
{
	struct smtp_probe *p = arg;
	char line[SMTP_LINE_MAX + 1];

	while (p->bev != NULL && awaiting_reply(p)) {
		if (p->quit_answered) { /* anything now is a reply nobody asked for */
			struct evbuffer *in = bufferevent_get_input(p->bev);
			if (evbuffer_get_length(in) == 0)
				return;
			long n = take_line(in, line);
			if (n >= 0)
				trace_received(p, line, (size_t)n);
			trace(p, "* data after the QUIT reply: the replies were out of step");
			out_of_step(p, STAGE_QUIT, "reply before command (%sdata after the QUIT reply)",
			            found_when(p));
			finish_connection(p);
			return;
		}
		long n = take_line(bufferevent_get_input(p->bev), line);
		if (n == NO_LINE)
			return;
		if (n == LONG_LINE) {
			protocol_error(p, "line too long");
			return;
		}
		trace_received(p, line, (size_t)n);
		enum smtp_reply_status st = smtp_reply_line(&p->parser, line, (size_t)n);
		if (st == SMTP_REPLY_ERROR) {
			protocol_error(p, p->parser.error);
			return;
		}
		if (st == SMTP_REPLY_DONE)
			on_reply(p, &p->parser.reply);
	}
}

/* on_write - output flushed: ends a QUIT we do not wait an answer for */
static void on_write(struct bufferevent *bev, void *arg)
{
	struct smtp_probe *p = arg;

	if (p->state == ST_QUIT && !p->quit_wait)
		finish_connection(p);
}

/* on_timeout - the current phase took too long */
static void on_timeout(struct smtp_probe *p)
{
	trace(p, "* timeout %s", states[p->state].doing);
	switch (p->state) {
	case ST_CONNECT:
		set_result(p, SMTP_END_TIMEOUT, STAGE_CONNECT, NULL, "timeout connecting");
		end_now(p);
		break;
	case ST_TLS: /* a handshake failure: the caller may retry without TLS */
		tls_failed(p, "timeout in TLS handshake");
		break;
	case ST_QUIT:
		if (p->quit_answered && p->sync_state == SMTP_SYNC_UNKNOWN)
			p->sync_state = SMTP_SYNC_PROVED; /* 2xx, then silence for the whole QUIT phase */
		finish_connection(p);
		break;
	case ST_BETWEEN: /* no deadline while the owner takes the answer */
		break;
	case ST_CATCHALL:
		catchall_unanswered(p);
		quit(p, false);
		break;
	case ST_RSET:
		mail_refused_for_good(p, true);
		quit(p, false);
		break;
	default:
		set_result(p, SMTP_END_TIMEOUT, states[p->state].stage, NULL, "timeout %s",
		           states[p->state].doing);
		decide(p);
		quit(p, false);
		break;
	}
}

/* on_patience - catchall_wait_ms passed without the catch-all answer:
 * report now; the answer may still come through late */
static void on_patience(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_probe *p = arg;

	if (p->state != ST_CATCHALL || p->decided)
		return;
	trace(p, "* no catch-all answer within %lld ms: reporting without it",
	      (long long)p->params.catchall_wait_ms);
	p->result->catchall_pending = true;
	decide(p);
}

/* tls_error - why the handshake failed, from libevent's OpenSSL error list */
static void tls_error(struct smtp_probe *p, bool eof, int sock_err, char *buf, size_t size)
{
	unsigned long e, first = 0;

	while ((e = bufferevent_get_openssl_error(p->bev)) != 0) {
		if (first == 0)
			first = e;
	}
	if (first != 0)
		ERR_error_string_n(first, buf, size);
	else if (eof || sock_err == 0)
		snprintf(buf, size, "connection closed during TLS handshake");
	else
		snprintf(buf, size, "%s", evutil_socket_error_to_string(sock_err));
}

/* on_closed - EOF or error on the connection */
static void on_closed(struct smtp_probe *p, bool eof, int sock_err)
{
	char why[120];
	const char *err = sock_err != 0 ? evutil_socket_error_to_string(sock_err) : "unknown error";

	switch (p->state) {
	case ST_CONNECT:
		trace(p, "* connect failed: %s", err);
		set_result(p, SMTP_END_CONNECT_FAILED, STAGE_CONNECT, NULL, "%s", err);
		end_now(p);
		break;
	case ST_TLS:
		tls_error(p, eof, sock_err, why, sizeof(why));
		tls_failed(p, why);
		break;
	case ST_QUIT:
		if (p->quit_answered && p->sync_state == SMTP_SYNC_UNKNOWN)
			p->sync_state = SMTP_SYNC_PROVED; /* 2xx, nothing after it, closed */
		finish_connection(p);
		break;
	case ST_BETWEEN: /* the last address is answered; the next was not asked */
		trace(p, "* connection closed by server between addresses");
		/* Nothing is read while no reply is due: whatever waits unread
		 * came after the last reply we paired, so that one may have been
		 * another command's (as data after the QUIT reply would show). */
		if (p->bev != NULL && evbuffer_get_length(bufferevent_get_input(p->bev)) > 0) {
			trace(p, "* data unread at the close: the replies were out of step");
			out_of_step(p, STAGE_QUIT,
			            "reply before command (found after the verdict: data before the close "
			            "between addresses)");
		}
		finish_connection(p);
		break;
	case ST_CATCHALL:
		trace(p, "* connection closed by server at the catch-all RCPT");
		catchall_unanswered(p);
		finish_connection(p);
		break;
	case ST_RSET:
		trace(p, "* connection closed by server at RSET");
		mail_refused_for_good(p, true);
		finish_connection(p);
		break;
	default:
		trace(p, "* connection closed by server%s%s", eof ? "" : ": ", eof ? "" : err);
		set_result(p, SMTP_END_CLOSED, states[p->state].stage, NULL,
		           "connection closed by server%s%s", eof ? "" : ": ", eof ? "" : err);
		end_now(p);
		break;
	}
}

_Static_assert(sizeof(((struct smtp_probe *)0)->source) == sizeof(((struct smtp_result *)0)->source),
               "a probe's source fits its results'");

/* note_source - our end of the connection, numeric, for every result of
 * the session (a breaker record names it: a refusal may be about it) */
static void note_source(struct smtp_probe *p)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	evutil_socket_t fd = p->bev != NULL ? bufferevent_getfd(p->bev) : -1;
	p->source[0] = '\0';
	if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
		return;
	if (ss.ss_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, p->source, sizeof(p->source));
	else if (ss.ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, p->source, sizeof(p->source));
}

/* on_event - connected, EOF, error or a bufferevent timeout */
static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct smtp_probe *p = arg;
	int sock_err = EVUTIL_SOCKET_ERROR();

	if (what & BEV_EVENT_CONNECTED) {
		if (p->state == ST_TLS) {
			tls_up(p);
		} else if (p->state == ST_CONNECT) {
			note_source(p);
			trace(p, "* connected");
			smtp_reply_init(&p->parser);
			set_phase(p, ST_BANNER);
			bufferevent_enable(p->bev, EV_READ | EV_WRITE);
		}
	} else if (what & BEV_EVENT_TIMEOUT) {
		on_timeout(p);
	} else if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		on_closed(p, (what & BEV_EVENT_EOF) != 0, (what & BEV_EVENT_ERROR) ? sock_err : 0);
	}
}

/* format_addr - "192.0.2.1:25" or "[2001:db8::1]:25" */
static void format_addr(const struct smtp_probe *p, char *buf, size_t size)
{
	char ip[INET6_ADDRSTRLEN] = "?";

	if (p->addr.ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&p->addr;
		inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
		snprintf(buf, size, "[%s]:%u", ip, ntohs(a->sin6_port));
	} else {
		const struct sockaddr_in *a = (const struct sockaddr_in *)&p->addr;
		inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
		snprintf(buf, size, "%s:%u", ip, ntohs(a->sin_port));
	}
}

/* bound_socket - with params.bind_addr of the peer's family, a
 * non-blocking socket bound to it (port 0) into *fd; else *fd stays -1 and
 * libevent makes the socket as it connects. False (the result set, the
 * probe ended) when the socket or the bind fails: our side, never the
 * server's (a source address this host does not have is a configuration
 * error, said in the result). */
static bool bound_socket(struct smtp_probe *p, evutil_socket_t *fd)
{
	const struct sockaddr_storage *b = &p->params.bind_addr;
	if (b->ss_family == 0 || b->ss_family != p->addr.ss_family)
		return true;
	socklen_t len = b->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	evutil_socket_t s = socket(b->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s < 0 || bind(s, (const struct sockaddr *)b, len) < 0) {
		int e = EVUTIL_SOCKET_ERROR();
		const char *err = evutil_socket_error_to_string(e);
		const char *ours = classify_errno_ours(e);
		if (s >= 0)
			evutil_closesocket(s);
		trace(p, "* cannot use probe_source_address: %s (our side)", err);
		set_result(p, SMTP_END_NO_RESOURCES, STAGE_CONNECT, NULL, "%s (probe_source_address: %s)",
		           ours != NULL ? ours : "our side", err);
		end_now(p);
		return false;
	}
	*fd = s;
	return true;
}

/* begin - open the connection (from the loop) */
static void begin(struct smtp_probe *p)
{
	char where[INET6_ADDRSTRLEN + 16];
	const char *name = p->params.server_name;

	format_addr(p, where, sizeof(where));
	trace(p, "* connecting to %s%s%s%s", where, *name ? " (" : "", name, *name ? ")" : "");
	evutil_socket_t fd = -1;
	if (!bound_socket(p, &fd))
		return;
	p->bev = bufferevent_socket_new(p->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (p->bev == NULL) { /* only memory can be missing */
		if (fd >= 0)
			evutil_closesocket(fd);
		set_result(p, SMTP_END_NO_RESOURCES, STAGE_CONNECT, NULL, "%s", CLASSIFY_NO_MEMORY);
		end_now(p);
		return;
	}
	bufferevent_setcb(p->bev, on_read, on_write, on_event, p);
	bufferevent_setwatermark(p->bev, EV_READ, 0, READ_HIGH_WATER);
	set_phase(p, ST_CONNECT);
	if (bufferevent_socket_connect(p->bev, (struct sockaddr *)&p->addr, (int)p->addrlen) < 0) {
		int e = EVUTIL_SOCKET_ERROR(); /* socket() or connect() */
		const char *err = evutil_socket_error_to_string(e);
		const char *ours = classify_errno_ours(e); /* e.g. EMFILE: not the server's doing */
		trace(p, "* connect failed: %s%s", err, ours != NULL ? " (our side)" : "");
		if (ours != NULL)
			set_result(p, SMTP_END_NO_RESOURCES, STAGE_CONNECT, NULL, "%s (%s)", ours, err);
		else
			set_result(p, SMTP_END_CONNECT_FAILED, STAGE_CONNECT, NULL, "%s", err);
		end_now(p);
	}
}

/* free_probe - release everything the probe owns (and leave the linger) */
static void free_probe(struct smtp_probe *p)
{
	if (p->lingering)
		linger_remove(p->params.linger, &p->linger_item);
	close_connection(p);
	if (p->timer != NULL)
		event_free(p->timer);
	if (p->notify != NULL)
		event_free(p->notify);
	if (p->patience != NULL)
		event_free(p->patience);
	free(p->strings);
	free(p->job_strings);
	free(p->mail_refusal);
	free(p->late_reply);
	free(p->result);
	free(p);
}

/* linger_close - the list's owner ends the probe (as smtp_probe_cancel) */
static void linger_close(struct linger_item *item)
{
	struct smtp_probe *p = (struct smtp_probe *)((char *)item - offsetof(struct smtp_probe, linger_item));
	p->lingering = false; /* linger_close_all took it off already */
	if (p->in_callback)
		p->cancelled = true; /* freed when done or late returns */
	else
		free_probe(p);
}

enum owner_call { CALL_DONE, CALL_LATE, CALL_SYNC };

/* call_owner - run done, late or sync; false if the owner cancelled (probe freed) */
static bool call_owner(struct smtp_probe *p, enum owner_call which)
{
	p->in_callback = true;
	if (which == CALL_LATE) {
		p->late(p->arg, p->late_have ? p->late_reply : NULL);
	} else if (which == CALL_SYNC) {
		struct smtp_sync_report report = {
		        .sync = p->sync_state,
		        .stage = p->sync_state == SMTP_SYNC_BROKEN ? p->sync_stage : STAGE_NONE,
		        .why = p->sync_state == SMTP_SYNC_BROKEN ? p->sync_why : "",
		};
		p->sync(p->arg, p, &report);
	} else {
		p->result->tls_active = p->tls_active;
		p->result->fallback_used = p->fallback_used;
		memcpy(p->result->source, p->source, sizeof(p->result->source));
		p->done(p->arg, p->result);
	}
	p->in_callback = false;
	if (p->cancelled) {
		free_probe(p);
		return false;
	}
	return true;
}

/* on_notify - hand over what is due (the result, then a late catch-all
 * answer, then once the connection is over the sync report); once the
 * owner has all, finish on the linger or free */
static void on_notify(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_probe *p = arg;

	if (p->decided && !p->reported) {
		p->reported = true;
		p->late_due = p->result->catchall_pending && p->late != NULL;
		p->sync_due = p->sync != NULL;
		if (!call_owner(p, CALL_DONE))
			return;
		free(p->result); /* the owner has it; a next address gets its own (advance) */
		p->result = NULL;
	}
	if (p->late_due && p->late_known) {
		p->late_due = false;
		if (!call_owner(p, CALL_LATE))
			return;
		free(p->late_reply); /* handed over; QUIT may take a while yet */
		p->late_reply = NULL;
		p->late_have = false;
	}
	if (!p->reported || p->late_due)
		return; /* still the owner's */
	if (p->state == ST_BETWEEN && p->bev != NULL) {
		advance(p); /* the next address, or QUIT; notify runs again when due */
		return;
	}
	bool over = p->state == ST_CLOSED || p->bev == NULL || !p->lingering;
	if (over && p->sync_due) {
		p->sync_due = false;
		if (!call_owner(p, CALL_SYNC))
			return;
	}
	if (over)
		free_probe(p); /* over, or nowhere to linger: close now */
}

/* on_timer - deferred start, or a phase deadline */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_probe *p = arg;

	if (p->state == ST_START)
		begin(p);
	else if (p->state != ST_CLOSED)
		on_timeout(p);
}

/* bad_params - why params cannot be sent as they are, or NULL */
static const char *bad_params(const struct smtp_params *pp)
{
	const char *s[] = {pp->helo_name, pp->mail_from,     pp->fallback_from,
	                   pp->rcpt,      pp->catchall_rcpt, pp->server_name};

	if (pp->helo_name == NULL || pp->helo_name[0] == '\0')
		return "empty HELO name";
	if (pp->rcpt == NULL || pp->rcpt[0] == '\0')
		return "empty recipient";
	for (size_t i = 0; i < sizeof(s) / sizeof(s[0]); i++) {
		if (s[i] != NULL && strpbrk(s[i], "\r\n") != NULL)
			return "CR or LF in a command parameter";
		if (s[i] != NULL && strlen(s[i]) > PARAM_MAX)
			return "command parameter too long";
	}
	return NULL;
}

/* copy_params - p->params with every string copied into one block */
static bool copy_params(struct smtp_probe *p, const struct smtp_params *pp)
{
	enum { N = 6 };
	const char *src[N] = {pp->helo_name, pp->mail_from,     pp->fallback_from,
	                      pp->rcpt,      pp->catchall_rcpt, pp->server_name};
	const char **dst[N] = {&p->params.helo_name, &p->params.mail_from,     &p->params.fallback_from,
	                       &p->params.rcpt,      &p->params.catchall_rcpt, &p->params.server_name};
	size_t total = 0;

	p->params = *pp;
	for (int i = 0; i < N; i++)
		total += (src[i] != NULL ? strlen(src[i]) : 0) + 1;
	p->strings = malloc(total);
	if (p->strings == NULL)
		return false;
	char *at = p->strings;
	for (int i = 0; i < N; i++) {
		size_t n = src[i] != NULL ? strlen(src[i]) : 0;
		memcpy(at, src[i] != NULL ? src[i] : "", n);
		at[n] = '\0';
		*dst[i] = at;
		at += n + 1;
	}
	if (pp->catchall_rcpt == NULL || pp->catchall_rcpt[0] == '\0')
		p->params.catchall_rcpt = NULL;
	if (pp->fallback_from == NULL || pp->fallback_from[0] == '\0')
		p->params.fallback_from = NULL;
	if (pp->ssl_ctx == NULL)
		p->params.try_tls = false;
	return true;
}

/* copy_addr - keep the peer address; false for an unsupported family */
static bool copy_addr(struct smtp_probe *p, const struct sockaddr *addr)
{
	if (addr == NULL)
		return false;
	if (addr->sa_family == AF_INET)
		p->addrlen = sizeof(struct sockaddr_in);
	else if (addr->sa_family == AF_INET6)
		p->addrlen = sizeof(struct sockaddr_in6);
	else
		return false;
	memcpy(&p->addr, addr, p->addrlen);
	return true;
}

/* smtp_probe_start - see smtp.h */
struct smtp_probe *smtp_probe_start(struct event_base *base, const struct sockaddr *addr,
                                    const struct smtp_params *params, smtp_trace_fn trace_fn, void *trace_arg,
                                    smtp_done_fn done, smtp_late_fn late, smtp_sync_fn sync, void *arg)
{
	struct smtp_probe *p = calloc(1, sizeof(*p));
	struct timeval now = {0, 0};

	if (p == NULL)
		return NULL;
	p->base = base;
	p->trace = trace_fn;
	p->trace_arg = trace_arg;
	p->done = done;
	p->late = late;
	p->sync = sync;
	p->arg = arg;
	p->timer = evtimer_new(base, on_timer, p);
	p->notify = evtimer_new(base, on_notify, p);
	p->result = calloc(1, sizeof(*p->result));
	if (p->timer == NULL || p->notify == NULL || p->result == NULL || !copy_params(p, params)) {
		free_probe(p);
		return NULL;
	}
	p->state = ST_START;
	const char *bad = bad_params(params);
	if (bad != NULL) {
		set_result(p, SMTP_END_PROTOCOL, STAGE_NONE, NULL, "%s", bad);
		p->state = ST_CLOSED;
		decide(p);
	} else if (!copy_addr(p, addr)) {
		set_result(p, SMTP_END_CONNECT_FAILED, STAGE_CONNECT, NULL, "unsupported address family");
		p->state = ST_CLOSED;
		decide(p);
	} else {
		evtimer_add(p->timer, &now);
	}
	if (params->linger != NULL) {
		linger_add(params->linger, &p->linger_item, linger_close);
		p->lingering = true;
	}
	return p;
}

/* smtp_probe_resume - see smtp.h */
void smtp_probe_resume(struct smtp_probe *probe)
{
	if (probe != NULL && probe->state == ST_BETWEEN)
		event_active(probe->notify, EV_TIMEOUT, 0); /* on_notify advances */
}

/* smtp_probe_ending - see smtp.h */
bool smtp_probe_ending(const struct smtp_probe *probe)
{
	return probe == NULL || probe->bev == NULL || probe->piped || probe->state == ST_QUIT ||
	       probe->state == ST_CLOSED;
}

/* smtp_probe_cancel - see smtp.h */
void smtp_probe_cancel(struct smtp_probe *probe)
{
	if (probe == NULL)
		return;
	if (probe->in_callback) {
		probe->cancelled = true;
		return;
	}
	free_probe(probe);
}
