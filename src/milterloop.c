/*
 * milterloop.c - the native milter transport (see milterloop.h).
 *
 * Why: with libmilter a message with a cached sender costs several
 * hundred microseconds of CPU, most of it in the kernel (a poll before
 * every packet, sessions handed between libmilter's threads over a pipe
 * and a condition variable); here a packet costs one read and its answer
 * one write on a loop that never sleeps while there is work.
 *
 * Each MTA connection is a struct mconn: its socket, its input buffer,
 * its session (msession.c), the macros of the stages we read, and one event
 * that is both the wake-up of a parked session (made active by the
 * verifier's thread, verify_notify) and its verify_budget deadline.
 *
 * I/O is plain read() and send() on the socket, not a bufferevent: behind
 * a real MTA each packet arrives alone (the SMTP client's next command comes
 * milliseconds later), and a bufferevent spent an ioctl(FIONREAD) and a
 * readv on each, plus its buffer chains' allocations. Here a wake-up is
 * one read() into the connection's own buffer (an inline one big enough for
 * every packet of a cached message; a packet longer than it gets a buffer
 * of the largest packet size, freed once the input is empty again), and an
 * answer is one send(); only what the kernel did not take is queued
 * (an evbuffer made on first need) and written on EV_WRITE. A persistent
 * EV_READ event with milter_timeout as its timeout is added once per
 * connection: libevent re-arms the timeout each time the event fires, so
 * no packet costs an epoll_ctl.
 *
 * A parked session's RCPT packet stays in the input buffer and is handled
 * again on resume, so nothing is copied; packets behind it wait (the MTA
 * sends none before our answer). Everything here runs on the loop thread,
 * but for the notification (event_active, thread-safe with
 * evthread_use_pthreads) and start/stop.
 */
#include "milterloop.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "addr.h"
#include "clock.h"
#include "log.h"
#include "milter.h"
#include "milterwire.h"
#include "msession.h"
#include "verify.h"

/* The input buffer inside every connection: a cached message's packets
 * (OPTNEG, macros, MAIL, RCPT, ABORT, QUIT: under 1 KiB each from Postfix
 * or Sendmail) fit, so the cached path allocates nothing for its input. */
#define INPUT_INLINE 4096
/* A packet longer than that gets a buffer of the largest packet's size. */
#define INPUT_BIG (MW_HEADER_SIZE + MW_DATA_MAX)
/* Answers queued for an MTA that does not read them: past this, its
 * packets are not read either until the queue is written. */
#define OUTPUT_HIGH (256 * 1024)
/* Accepts per wake-up of the listener: one. The listener is level-triggered,
 * so a connection still waiting makes the next epoll_wait return at once
 * (together with every other ready socket: no MTA starves the connections
 * already open), and the usual lone connection (Postfix opens one per SMTP
 * session) costs no second accept4 failing with EAGAIN: a burst of 32 spent
 * 0.4-0.7 of those per cached message (bench/cached_cpu.py, strace). */
#define ACCEPT_BURST 1
/* Out of descriptors: the listener pauses this long, then tries again. */
#define ACCEPT_PAUSE_MS 100

struct milterloop;

struct mconn {
	struct milterloop *loop;
	struct mconn *prev, *next; /* in loop->conns */
	int fd;
	struct event *rd;     /* EV_READ|EV_PERSIST, milter_timeout; added while reading */
	struct event *wr;     /* EV_WRITE|EV_PERSIST, milter_timeout; added while out holds bytes */
	struct evbuffer *out; /* what the kernel did not take; NULL until first needed */
	struct event *wake;   /* parked: the answer came, or the deadline */
	struct msession *session;
	struct mw_choice choice; /* what was negotiated (kept across QUIT_NC) */
	bool negotiated;
	bool parked;                  /* a RCPT waits for its ticket; its packet is still in the input */
	bool failed;                  /* a write failed: closed once the packet is handled */
	bool throttled;               /* reading stopped until the queued answers are written */
	bool closing;                 /* ended (QUIT, a bad packet): closed once out is written */
	bool reading;                 /* rd is added */
	struct verify_ticket *ticket; /* parked on (the session owns it) */
	/* The input: bytes [in_off, in_len) of in, which is small or big. */
	char *in;
	char *big; /* INPUT_BIG octets while a long packet needs them; else NULL */
	size_t in_off, in_len, in_cap;
	struct mw_macros conn_macros, mail_macros, rcpt_macros;
	/* The REPLYCODE packet set for the next refusal: allocated when a
	 * refusal sets one and freed once it is sent, so an idle or accepted
	 * session does not carry it. NULL: none set. */
	char *reply;
	size_t reply_len;
	char small[INPUT_INLINE];
};

/* The REPLYCODE packet's largest size: room for the codes and a text of
 * 1200 octets, more than a reply template expands to with every % doubled
 * (2 x REPLY_TEXT_MAX). */
#define REPLY_PACKET_MAX (MW_HEADER_SIZE + 1 + 1200)

struct milterloop {
	struct event_base *base;
	struct event *listener;
	struct event *resume_accept; /* after ACCEPT_PAUSE_MS out of descriptors */
	int listen_fd;
	struct timeval timeout;
	struct mconn *conns;
	pthread_t thread;
	pthread_mutex_t lock;
	bool running; /* under lock */
	void (*on_exit)(void *arg);
	void *exit_arg;
	bool stopping; /* main asked the loop to end */
	bool started;  /* the thread was created */
	int64_t emfile_logged_ms;
};

static bool process(struct mconn *c);
static void reading_on(struct mconn *c);

/* ---- the ms_io of a native connection ---- */

/* io_symval - the macro name: the current recipient's, the message's, the
 * connection's (libmilter looks through its stages the same way) */
static const char *io_symval(void *ctx, const char *name)
{
	const struct mconn *c = ctx;
	const char *v = mw_macro(&c->rcpt_macros, name);
	if (v == NULL)
		v = mw_macro(&c->mail_macros, name);
	if (v == NULL)
		v = mw_macro(&c->conn_macros, name);
	return v;
}

/* io_setreply - keep the REPLYCODE packet for the refusal that follows */
static bool io_setreply(void *ctx, const char *code, const char *ecode, const char *text)
{
	struct mconn *c = ctx;
	c->reply_len = 0;
	if (c->reply == NULL && (c->reply = malloc(REPLY_PACKET_MAX)) == NULL)
		return false; /* the caller says so; the MTA uses its default text */
	c->reply_len = mw_build_replycode(code, ecode, text, c->reply, REPLY_PACKET_MAX);
	return c->reply_len > 0;
}

/* out_pending - octets queued for the MTA */
static size_t out_pending(const struct mconn *c)
{
	return c->out != NULL ? evbuffer_get_length(c->out) : 0;
}

/* send_packet - n octets to the MTA: written at once when nothing is
 * queued (the common case: one small answer the MTA waits for, one send
 * and no event touched), the rest queued and written on EV_WRITE. A
 * failure marks the connection, which process() then closes. */
static bool send_packet(struct mconn *c, const char *buf, size_t n)
{
	if (n == 0 || c->failed) {
		c->failed = true;
		return false;
	}
	size_t done = 0;
	if (out_pending(c) == 0) {
		ssize_t w = send(c->fd, buf, n, MSG_NOSIGNAL);
		if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
			c->failed = true;
			return false;
		}
		done = w > 0 ? (size_t)w : 0;
		if (done == n)
			return true;
	}
	if (c->out == NULL && (c->out = evbuffer_new()) == NULL) {
		c->failed = true;
		return false;
	}
	bool was_empty = evbuffer_get_length(c->out) == 0;
	if (evbuffer_add(c->out, buf + done, n - done) != 0 ||
	    (was_empty && event_add(c->wr, &c->loop->timeout) != 0)) {
		c->failed = true;
		return false;
	}
	return true;
}

/* io_chgheader - SMFIR_CHGHEADER, sent before the end-of-message answer */
static bool io_chgheader(void *ctx, const char *name, int index, const char *value)
{
	struct mconn *c = ctx;
	char buf[1024];
	if (!(c->choice.actions & MW_ACT_CHGHDRS) || index < 0)
		return false;
	return send_packet(c, buf, mw_build_chgheader((uint32_t)index, name, value, buf, sizeof(buf)));
}

/* io_addheader - SMFIR_ADDHEADER, sent before the end-of-message answer */
static bool io_addheader(void *ctx, const char *name, const char *value)
{
	struct mconn *c = ctx;
	char buf[1024];
	if (!(c->choice.actions & MW_ACT_ADDHDRS))
		return false;
	return send_packet(c, buf, mw_build_addheader(name, value, buf, sizeof(buf)));
}

/* io_of - the ms_io for c */
static struct ms_io io_of(struct mconn *c)
{
	return (struct ms_io){.ctx = c,
	                      .symval = io_symval,
	                      .setreply = io_setreply,
	                      .chgheader = io_chgheader,
	                      .addheader = io_addheader};
}

/* answer - send the session's answer (a refusal with the reply set for it) */
static bool answer(struct mconn *c, enum ms_reply r)
{
	char buf[8];
	bool ok = true;
	switch (r) {
	case MS_NOREPLY:
		break;
	case MS_CONTINUE:
		ok = send_packet(c, buf, mw_build_simple(MW_REP_CONTINUE, buf, sizeof(buf)));
		break;
	case MS_ACCEPT:
		ok = send_packet(c, buf, mw_build_simple(MW_REP_ACCEPT, buf, sizeof(buf)));
		break;
	case MS_REJECT:
	case MS_TEMPFAIL:
		if (c->reply_len > 0)
			ok = send_packet(c, c->reply, c->reply_len);
		else
			ok = send_packet(c, buf,
			                 mw_build_simple(r == MS_REJECT ? MW_REP_REJECT : MW_REP_TEMPFAIL,
			                                 buf, sizeof(buf)));
		break;
	}
	c->reply_len = 0;
	free(c->reply); /* a refusal is rare: not kept for the next one */
	c->reply = NULL;
	return ok;
}

/* ---- connections ---- */

/* conn_free - close the connection and end its session */
static void conn_free(struct mconn *c)
{
	struct milterloop *loop = c->loop;
	if (c->parked && c->ticket != NULL)
		verify_notify_cancel(c->ticket); /* before the session releases it */
	if (c->wake != NULL)
		event_free(c->wake);
	if (c->rd != NULL)
		event_free(c->rd);
	if (c->wr != NULL)
		event_free(c->wr);
	if (c->out != NULL)
		evbuffer_free(c->out);
	free(c->big);
	free(c->reply);
	if (c->fd >= 0)
		close(c->fd); /* after its events: they leave epoll on a live descriptor */
	if (c->session != NULL)
		ms_close(c->session);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		loop->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	free(c);
}

/* finish - the connection is over (QUIT, or a packet it cannot go on
 * after): closed once the answers already given are written. Why: an MTA
 * that sent its packets ahead (or read slowly) would else lose answers to
 * packets before the last one, decided and logged here, and apply its
 * default action to them instead; libmilter's blocking writes deliver
 * them. Nothing more is read; milter_timeout bounds the wait (on_write).
 * c must not be used after this. */
static void finish(struct mconn *c)
{
	if (out_pending(c) == 0 || c->failed) {
		conn_free(c);
		return;
	}
	c->closing = true;
	if (c->reading && event_del(c->rd) == 0)
		c->reading = false;
}

/* drop - close c for a reason worth a line, once the answers already
 * given are written (finish) */
static void drop(struct mconn *c, const char *why, char cmd)
{
	if (cmd != 0)
		log_msg(LOG_WARNING, "milter connection: %s (command 0x%02x); closing it", why,
		        (unsigned)(unsigned char)cmd);
	else
		log_msg(LOG_WARNING, "milter connection: %s; closing it", why);
	finish(c);
}

/* sockaddr_of - the CONNECT step's address; NULL when unknown */
static const struct sockaddr *sockaddr_of(const struct mw_connect *cn, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	const char *text = cn->address;
	if (text == NULL)
		return NULL;
	if (strncasecmp(text, "IPv6:", 5) == 0)
		text += 5;
	if (cn->family == '4' && inet_pton(AF_INET, text, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(cn->port);
		return (const struct sockaddr *)ss;
	}
	if (cn->family == '6' && inet_pton(AF_INET6, text, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(cn->port);
		return (const struct sockaddr *)ss;
	}
	return NULL;
}

/* on_wake - the parked RCPT's ticket is answered, or its deadline came */
static void on_wake(evutil_socket_t fd, short what, void *arg)
{
	struct mconn *c = arg;
	(void)fd;
	(void)what;
	if (!c->parked)
		return;
	verify_notify_cancel(c->ticket); /* the deadline came first: no call after this */
	event_del(c->wake);
	c->parked = false;
	c->ticket = NULL;
	if (process(c) && !c->throttled)
		reading_on(c); /* again if a full input stopped it; milter_timeout from now */
}

/* notify - verify_notify's callback, on the verifier's thread */
static void notify(void *arg)
{
	struct mconn *c = arg;
	event_active(c->wake, EV_READ, 0);
}

/* park - a RCPT whose verdict is not known yet: resume on the answer or
 * at the deadline; false when the answer is already there */
static bool park(struct mconn *c, struct verify_ticket *ticket, int64_t deadline_ms)
{
	int64_t wait_ms = deadline_ms - clock_mono_ms();
	if (wait_ms < 1)
		wait_ms = 1;
	c->ticket = ticket;
	c->parked = true;
	struct timeval tv = {.tv_sec = wait_ms / 1000, .tv_usec = (wait_ms % 1000) * 1000};
	event_add(c->wake, &tv);
	if (!verify_notify(ticket, notify, c)) {
		event_del(c->wake);
		c->parked = false;
		c->ticket = NULL;
		return false;
	}
	/* The MTA is silent while it waits for our answer: milter_timeout
	 * (which may be shorter than verify_budget) is not for this wait,
	 * which the deadline bounds; libmilter does not time a callback
	 * either: on_read ignores the read timeout while parked. A hang-up is
	 * still seen (reading stays on while the input has room). */
	return true;
}

enum handled { H_DONE, H_PARKED, H_CLOSED };

/* handle_rcpt - RCPT TO: answered now, or parked */
static enum handled handle_rcpt(struct mconn *c, const struct mw_packet *p)
{
	const char *argv[MW_ARGS_MAX];
	if (!mw_parse_args(p, argv, MW_ARGS_MAX)) {
		drop(c, "malformed RCPT packet", p->cmd);
		return H_CLOSED;
	}
	struct verify_ticket *ticket;
	int64_t deadline;
	if (ms_rcpt_would_wait(c->session, argv[0], &ticket, &deadline) && park(c, ticket, deadline))
		return H_PARKED;
	struct ms_io io = io_of(c);
	(void)answer(c, ms_envrcpt(c->session, &io, argv[0]));
	return H_DONE;
}

/* handle_optneg - SMFIC_OPTNEG: ask for what msession uses */
static enum handled handle_optneg(struct mconn *c, const struct mw_packet *p)
{
	struct mw_optneg mta;
	char buf[256];
	if (!mw_parse_optneg(p, &mta)) {
		drop(c, "malformed option negotiation", p->cmd);
		return H_CLOSED;
	}
	bool header = ms_conf(c->session)->result_header[0] != '\0';
	mw_choose(&mta, header, true, &c->choice);
	if (c->choice.header_refused)
		log_msg(LOG_WARNING, "the MTA does not let milters edit headers: no %s header",
		        ms_conf(c->session)->result_header);
	ms_negotiated(c->session, c->choice.client_from_macro, c->choice.connect_noreply);
	c->negotiated = true;
	(void)send_packet(c, buf, mw_build_optneg(&mta, &c->choice, buf, sizeof(buf)));
	return H_DONE;
}

/* handle_macros - SMFIC_MACRO: keep the ones we read, by stage */
static enum handled handle_macros(struct mconn *c, const struct mw_packet *p)
{
	struct mw_macros m;
	char stage;
	if (!mw_parse_macros(p, &stage, &m)) {
		drop(c, "malformed macro packet", p->cmd);
		return H_CLOSED;
	}
	if (stage == MW_CMD_CONNECT) {
		c->conn_macros = m;
	} else if (stage == MW_CMD_MAIL) {
		c->mail_macros = m;
		memset(&c->rcpt_macros, 0, sizeof(c->rcpt_macros));
	} else if (stage == MW_CMD_RCPT) {
		c->rcpt_macros = m;
	}
	return H_DONE;
}

/* handle - one packet */
static enum handled handle(struct mconn *c, const struct mw_packet *p)
{
	struct ms_io io = io_of(c);
	const char *argv[MW_ARGS_MAX];
	if (!c->negotiated && p->cmd != MW_CMD_OPTNEG) {
		drop(c, "a command before option negotiation", p->cmd);
		return H_CLOSED;
	}
	switch (p->cmd) {
	case MW_CMD_OPTNEG:
		return handle_optneg(c, p);
	case MW_CMD_MACRO:
		return handle_macros(c, p);
	case MW_CMD_CONNECT: {
		struct mw_connect cn;
		struct sockaddr_storage ss;
		if (!mw_parse_connect(p, &cn)) {
			drop(c, "malformed CONNECT packet", p->cmd);
			return H_CLOSED;
		}
		(void)answer(c, ms_connect(c->session, sockaddr_of(&cn, &ss)));
		return H_DONE;
	}
	case MW_CMD_MAIL:
		if (!mw_parse_args(p, argv, MW_ARGS_MAX)) {
			drop(c, "malformed MAIL packet", p->cmd);
			return H_CLOSED;
		}
		memset(&c->rcpt_macros, 0, sizeof(c->rcpt_macros));
		(void)answer(c, ms_envfrom(c->session, &io, argv[0]));
		return H_DONE;
	case MW_CMD_RCPT:
		return handle_rcpt(c, p);
	case MW_CMD_HEADER: {
		const char *name, *value;
		if (!mw_parse_header(p, &name, &value)) {
			drop(c, "malformed HEADER packet", p->cmd);
			return H_CLOSED;
		}
		ms_header(c->session, name);
		(void)answer(c, MS_CONTINUE);
		return H_DONE;
	}
	case MW_CMD_EOM:
		(void)answer(c, ms_eom(c->session, &io));
		return H_DONE;
	case MW_CMD_ABORT:
		ms_abort(c->session);
		memset(&c->mail_macros, 0, sizeof(c->mail_macros));
		memset(&c->rcpt_macros, 0, sizeof(c->rcpt_macros));
		return H_DONE; /* no answer to an abort */
	case MW_CMD_HELO:
	case MW_CMD_EOH:
	case MW_CMD_BODY:
	case MW_CMD_DATA:
	case MW_CMD_UNKNOWN:
		/* Steps we asked not to get; an MTA that sends them anyway
		 * waits for an answer. */
		(void)answer(c, MS_CONTINUE);
		return H_DONE;
	case MW_CMD_QUIT:
		finish(c);
		return H_CLOSED;
	case MW_CMD_QUIT_NC: {
		/* A new SMTP session on the same connection: a new session,
		 * the negotiation kept. */
		struct msession *fresh = ms_open();
		if (fresh == NULL) {
			drop(c, "out of memory for a new session", 0);
			return H_CLOSED;
		}
		ms_close(c->session);
		c->session = fresh;
		ms_negotiated(fresh, c->choice.client_from_macro, c->choice.connect_noreply);
		memset(&c->conn_macros, 0, sizeof(c->conn_macros));
		memset(&c->mail_macros, 0, sizeof(c->mail_macros));
		memset(&c->rcpt_macros, 0, sizeof(c->rcpt_macros));
		return H_DONE;
	}
	default:
		drop(c, "unknown command", p->cmd);
		return H_CLOSED;
	}
}

/* input_room - after the whole packets are handled: the partial one
 * left moved to the buffer's start, in a buffer it fits in (the big one
 * while it needs it); false when out of memory (c is then closed) */
static bool input_room(struct mconn *c)
{
	size_t left = c->in_len - c->in_off;
	if (left == 0 && c->big != NULL) {
		free(c->big); /* the long packet is handled: back to the inline buffer */
		c->big = NULL;
		c->in = c->small;
		c->in_cap = sizeof(c->small);
	}
	if (c->in_off > 0) {
		memmove(c->in, c->in + c->in_off, left);
		c->in_off = 0;
		c->in_len = left;
	}
	if (left < MW_HEADER_SIZE || c->big != NULL)
		return true;
	const unsigned char *h = (const unsigned char *)c->in;
	uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
	if (MW_HEADER_SIZE + (size_t)len <= c->in_cap)
		return true; /* (a length over MW_DATA_MAX was refused by mw_frame) */
	c->big = malloc(INPUT_BIG);
	if (c->big == NULL) {
		drop(c, "out of memory for a long packet", 0);
		return false;
	}
	memcpy(c->big, c->in, left);
	c->in = c->big;
	c->in_cap = INPUT_BIG;
	return true;
}

/* process - handle every whole packet in the input, unless parked; false
 * when c was closed (or is closing: then it must not be used either) */
static bool process(struct mconn *c)
{
	while (!c->parked) {
		if (out_pending(c) > OUTPUT_HIGH) {
			c->throttled = true;
			if (c->reading && event_del(c->rd) == 0)
				c->reading = false;
			return true; /* on_write resumes */
		}
		struct mw_packet p;
		size_t used;
		switch (mw_frame(c->in + c->in_off, c->in_len - c->in_off, &p, &used)) {
		case MW_FRAME_BAD:
			drop(c, "a packet length of 0 or over 65535", 0);
			return false;
		case MW_FRAME_NEED:
			return input_room(c);
		case MW_FRAME_OK:
			break;
		}
		enum handled h = handle(c, &p);
		if (h == H_CLOSED)
			return false; /* c is gone */
		if (h == H_PARKED)
			return true; /* the packet stays: handled again on resume */
		if (c->failed) {
			log_msg(LOG_INFO, "milter connection: cannot write to the MTA: closed");
			conn_free(c);
			return false;
		}
		c->in_off += used;
	}
	return true;
}

/* reading_on - read (again), milter_timeout counted from now; on an event
 * already added this only moves its timeout (no system call) */
static void reading_on(struct mconn *c)
{
	if (event_add(c->rd, &c->loop->timeout) == 0)
		c->reading = true;
}

/* on_read - bytes from the MTA (one read: the socket is level-triggered,
 * so bytes a full buffer left behind wake us again), its end, or
 * milter_timeout without a byte */
static void on_read(evutil_socket_t fd, short what, void *arg)
{
	struct mconn *c = arg;
	if (what & EV_TIMEOUT) {
		if (c->parked)
			return; /* the deadline bounds this wait (see park); the timeout re-arms */
		log_msg(LOG_INFO, "milter connection silent for milter_timeout: closed");
		conn_free(c);
		return;
	}
	size_t room = c->in_cap - c->in_len;
	if (room == 0) {
		/* Parked with a full input (process() leaves room otherwise):
		 * the rest waits in the socket until the RCPT is answered. */
		if (event_del(c->rd) == 0)
			c->reading = false;
		return;
	}
	ssize_t n = read(fd, c->in + c->in_len, room);
	if (n > 0) {
		c->in_len += (size_t)n;
		(void)process(c);
		return;
	}
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n < 0 && errno != ECONNRESET && errno != EPIPE)
		log_msg(LOG_INFO, "milter connection: %s: closed", strerror(errno));
	conn_free(c); /* end of file (the MTA hung up), or an error */
}

/* on_write - the socket takes more: write what is queued; once all is
 * written, stop watching and close if closing, else read again if
 * throttled */
static void on_write(evutil_socket_t fd, short what, void *arg)
{
	struct mconn *c = arg;
	if (what & EV_TIMEOUT) {
		log_msg(LOG_INFO, "milter connection: the MTA took no answer for milter_timeout: closed");
		conn_free(c);
		return;
	}
	if (evbuffer_write(c->out, fd) < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
		if (errno != ECONNRESET && errno != EPIPE)
			log_msg(LOG_INFO, "milter connection: %s: closed", strerror(errno));
		conn_free(c);
		return;
	}
	if (evbuffer_get_length(c->out) > 0)
		return;
	event_del(c->wr);
	if (c->closing) {
		conn_free(c);
		return;
	}
	if (!c->throttled)
		return;
	c->throttled = false;
	if (process(c) && !c->throttled)
		reading_on(c);
}

/* conn_new - a connection accepted on fd */
static void conn_new(struct milterloop *loop, int fd)
{
	/* malloc, not calloc: the inline input buffer needs no zeroing */
	struct mconn *c = malloc(sizeof(*c));
	if (c != NULL)
		memset(c, 0, offsetof(struct mconn, small));
	if (c == NULL || (c->session = ms_open()) == NULL) {
		log_msg(LOG_ERR, "out of memory for a new milter connection");
		free(c);
		close(fd);
		return;
	}
	c->loop = loop;
	c->fd = fd;
	c->in = c->small;
	c->in_cap = sizeof(c->small);
	c->next = loop->conns;
	if (loop->conns != NULL)
		loop->conns->prev = c;
	loop->conns = c;
	c->rd = event_new(loop->base, fd, EV_READ | EV_PERSIST, on_read, c);
	c->wr = event_new(loop->base, fd, EV_WRITE | EV_PERSIST, on_write, c);
	c->wake = event_new(loop->base, -1, 0, on_wake, c);
	if (c->rd == NULL || c->wr == NULL || c->wake == NULL) {
		drop(c, "out of memory for its events", 0);
		return;
	}
	/* Writing is watched only while something is queued (send_packet):
	 * watched for nothing, it costs two epoll_ctl calls per connection. */
	reading_on(c);
	if (!c->reading)
		drop(c, "cannot watch it", 0);
}

/* on_resume_accept - try accepting again after running out of descriptors */
static void on_resume_accept(evutil_socket_t fd, short what, void *arg)
{
	struct milterloop *loop = arg;
	(void)fd;
	(void)what;
	event_add(loop->listener, NULL);
}

/* on_accept - new MTA connections */
static void on_accept(evutil_socket_t fd, short what, void *arg)
{
	struct milterloop *loop = arg;
	(void)what;
	for (int i = 0; i < ACCEPT_BURST; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int conn = accept4(fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (conn < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				/* The MTA's connection waits in the backlog; retrying at
				 * once would spin. */
				int64_t now = clock_mono_ms();
				if (now - loop->emfile_logged_ms > 10000) {
					log_msg(LOG_ERR, "cannot accept an MTA connection: %s; retrying",
					        strerror(errno));
					loop->emfile_logged_ms = now;
				}
				event_del(loop->listener);
				struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};
				event_add(loop->resume_accept, &tv);
			}
			return; /* EAGAIN, or a connection reset before we took it */
		}
		if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
			int one = 1; /* each answer is one small packet the MTA waits for */
			setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		}
		conn_new(loop, conn);
	}
}

/* ---- the listening socket ---- */

/* listen_unix - a unix socket at path */
static int listen_unix(const char *path)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sun.sun_path)) {
		log_msg(LOG_ERR, "socket path %s is too long", path);
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(sun.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0 || listen(fd, SOMAXCONN) != 0) {
		int err = errno;
		close(fd);
		errno = err;
		return -1;
	}
	return fd;
}

/* listen_inet - inet:PORT[@HOST] or inet6:PORT[@HOST] (no host: any) */
static int listen_inet(const char *rest, int family)
{
	char port[16], host[256] = "";
	const char *at = strchr(rest, '@');
	size_t plen = at != NULL ? (size_t)(at - rest) : strlen(rest);
	if (plen == 0 || plen >= sizeof(port) || (at != NULL && strlen(at + 1) >= sizeof(host))) {
		errno = EINVAL;
		return -1;
	}
	memcpy(port, rest, plen);
	port[plen] = '\0';
	if (at != NULL) {
		const char *h = at + 1;
		size_t hl = strlen(h);
		if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') { /* inet6:PORT@[::1] */
			h++;
			hl -= 2;
		}
		snprintf(host, sizeof(host), "%.*s", (int)hl, h);
	}
	struct addrinfo hints = {.ai_family = family, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
	struct addrinfo *res = NULL;
	int rc = getaddrinfo(host[0] != '\0' ? host : NULL, port, &hints, &res);
	if (rc != 0) {
		log_msg(LOG_ERR, "socket inet address %s: %s", rest, gai_strerror(rc));
		errno = EINVAL;
		return -1;
	}
	int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd >= 0) {
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
			int err = errno;
			close(fd);
			errno = err;
			fd = -1;
		}
	}
	freeaddrinfo(res);
	return fd;
}

/* milterloop_listen - see milterloop.h */
int milterloop_listen(const char *spec)
{
	const char *path = milter_socket_path(spec);
	if (path != NULL)
		return listen_unix(path);
	if (strncmp(spec, "inet:", 5) == 0)
		return listen_inet(spec + 5, AF_INET);
	if (strncmp(spec, "inet6:", 6) == 0)
		return listen_inet(spec + 6, AF_INET6);
	errno = EINVAL;
	return -1;
}

/* ---- the thread ---- */

/* loop_thread - run the loop until stopped */
static void *loop_thread(void *arg)
{
	struct milterloop *loop = arg;
	event_base_dispatch(loop->base);
	pthread_mutex_lock(&loop->lock);
	loop->running = false;
	bool asked = loop->stopping;
	pthread_mutex_unlock(&loop->lock);
	if (!asked && loop->on_exit != NULL)
		loop->on_exit(loop->exit_arg);
	return NULL;
}

/* milterloop_start - see milterloop.h */
struct milterloop *milterloop_start(int listen_fd, int64_t timeout_ms, void (*on_exit)(void *arg), void *arg)
{
	static pthread_once_t threads_once = PTHREAD_ONCE_INIT;
	/* event_active from the verifier's thread needs a locked base. */
	pthread_once(&threads_once, (void (*)(void))evthread_use_pthreads);
	struct milterloop *loop = calloc(1, sizeof(*loop));
	if (loop == NULL) {
		log_msg(LOG_ERR, "out of memory for the milter loop");
		return NULL;
	}
	pthread_mutex_init(&loop->lock, NULL);
	loop->listen_fd = listen_fd;
	loop->timeout.tv_sec = timeout_ms / 1000;
	loop->timeout.tv_usec = (timeout_ms % 1000) * 1000;
	loop->on_exit = on_exit;
	loop->exit_arg = arg;
	loop->base = event_base_new();
	if (loop->base != NULL) {
		loop->listener = event_new(loop->base, listen_fd, EV_READ | EV_PERSIST, on_accept, loop);
		loop->resume_accept = evtimer_new(loop->base, on_resume_accept, loop);
	}
	if (loop->base == NULL || loop->listener == NULL || loop->resume_accept == NULL ||
	    event_add(loop->listener, NULL) != 0) {
		log_msg(LOG_ERR, "cannot set up the milter loop");
		milterloop_stop(loop);
		return NULL;
	}
	loop->running = true;
	int err = pthread_create(&loop->thread, NULL, loop_thread, loop);
	loop->started = err == 0;
	if (err != 0) {
		loop->running = false;
		log_msg(LOG_ERR, "cannot start the milter thread: %s", strerror(err));
		milterloop_stop(loop);
		return NULL;
	}
	return loop;
}

/* milterloop_running - see milterloop.h */
bool milterloop_running(struct milterloop *loop)
{
	pthread_mutex_lock(&loop->lock);
	bool running = loop->running;
	pthread_mutex_unlock(&loop->lock);
	return running;
}

/* milterloop_stop - see milterloop.h */
void milterloop_stop(struct milterloop *loop)
{
	if (loop == NULL)
		return;
	pthread_mutex_lock(&loop->lock);
	bool started = loop->started;
	loop->stopping = true;
	pthread_mutex_unlock(&loop->lock);
	if (loop->base != NULL && started) {
		event_base_loopbreak(loop->base);
		pthread_join(loop->thread, NULL);
	}
	/* The loop has ended: its connections are ours to close. */
	while (loop->conns != NULL)
		conn_free(loop->conns);
	if (loop->listener != NULL)
		event_free(loop->listener);
	if (loop->resume_accept != NULL)
		event_free(loop->resume_accept);
	if (loop->base != NULL)
		event_base_free(loop->base);
	if (loop->listen_fd >= 0)
		close(loop->listen_fd);
	pthread_mutex_destroy(&loop->lock);
	free(loop);
}
