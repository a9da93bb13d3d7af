/*
 * fuzz_smtp.c - the SMTP client (src/smtp.c) talking to a server that sends
 * fuzz bytes.
 *
 * Each input runs one smtp_probe_start() against a peer inside this process:
 * a TCP listener on 127.0.0.1 (made once) whose accepted connection is
 * driven on the same event_base as the probe. Input layout:
 *
 *   byte 0       probe options: 1 try_tls (STARTTLS with an SSL_CTX that
 *                verifies nothing), 2 catch-all RCPT, 4 report_at_rcpt,
 *                8 fallback_from, 16 needs_smtputf8, 32 a bound on the
 *                catch-all wait
 *   the rest     chunks separated by NUL octets; each chunk's first octet
 *                says how it is sent: bit 0 wait for a line from the client
 *                first (else send at once: out of turn unless the client
 *                is waiting), bit 1 close the connection after it, bit 2
 *                split it in two writes at the position given by the
 *                octet's upper bits (a line cut anywhere)
 *
 * A chunk that waits for a client line is sent anyway after 2 ms without
 * one (so an input never hangs on a timeout); when the chunks run out the
 * peer closes. Phase timeouts are 200 ms as a backstop, and the whole run is
 * bounded by a 2 s guard that closes everything (counted, never expected).
 *
 * Invariants (abort on violation): done runs exactly once, late only after
 * a result with catchall_pending and then exactly once, sync at most once
 * and only after done (and late when due); the result's end and stage are
 * in range, the error text and the replies' text are NUL-terminated
 * printable ASCII, reply codes 0 or 100..599; a result of SMTP_END_DONE
 * rests on at least four chunks (banner, EHLO, MAIL and RCPT replies: a
 * reply that came in one chunk with the one before it arrived before its
 * command and must be a protocol error); no leak (ASan).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzzcheck.h"
#include "linger.h"
#include "smtp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHUNK_WAIT  1
#define CHUNK_CLOSE 2
#define CHUNK_SPLIT 4

struct peer {
	const uint8_t *rest; /* chunks not yet sent */
	size_t rest_len;
	int fd;                 /* accepted connection; -1 none/closed */
	struct event *on_read;  /* the client's lines */
	struct event *on_timer; /* the next chunk is due */
	bool line_seen;         /* a complete client line since the last chunk */
	size_t chunks_sent;
};

struct run {
	struct event_base *base;
	struct peer peer;
	int done_calls, late_calls, sync_calls;
	bool pending;
	struct smtp_result result;
	struct smtp_probe *probe;
};

static int listen_fd = -1;
static struct sockaddr_in listen_addr;
static SSL_CTX *ssl_ctx;

/* setup - the listener and the SSL_CTX, once for the process */
static void setup(void)
{
	if (listen_fd >= 0)
		return;
	signal(SIGPIPE, SIG_IGN); /* as main.c and check.c: a peer that closes must not kill us */
	listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (listen_fd < 0)
		FAIL();
	memset(&listen_addr, 0, sizeof(listen_addr));
	listen_addr.sin_family = AF_INET;
	listen_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t len = sizeof(listen_addr);
	if (bind(listen_fd, (struct sockaddr *)&listen_addr, sizeof(listen_addr)) != 0 ||
	    listen(listen_fd, 16) != 0 || getsockname(listen_fd, (struct sockaddr *)&listen_addr, &len) != 0)
		FAIL();
	ssl_ctx = SSL_CTX_new(TLS_client_method());
	if (ssl_ctx == NULL)
		FAIL();
	SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_NONE, NULL);
}

static void check_text(const char *s, size_t size)
{
	size_t n = strnlen(s, size);
	if (n == size)
		FAIL(); /* not terminated */
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			FAIL();
}

static void check_reply(const struct smtp_reply *r)
{
	if (r->code != 0 && (r->code < 100 || r->code > 599))
		FAIL();
	check_text(r->text, sizeof(r->text));
	check_text(r->ecode, sizeof(r->ecode));
}

static void peer_close(struct peer *p)
{
	if (p->fd < 0)
		return;
	event_del(p->on_read);
	event_del(p->on_timer);
	close(p->fd);
	p->fd = -1;
}

static void write_all(int fd, const uint8_t *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
		if (n <= 0)
			return; /* the client closed: what it does then is under test */
		buf += n;
		len -= (size_t)n;
	}
}

/* send_chunk - the next chunk, then arm for the one after; close when none is left */
static void send_chunk(struct peer *p)
{
	if (p->rest_len == 0) {
		peer_close(p);
		return;
	}
	const uint8_t *nul = memchr(p->rest, 0, p->rest_len);
	size_t len = nul != NULL ? (size_t)(nul - p->rest) : p->rest_len;
	const uint8_t *chunk = p->rest;
	p->rest += len;
	p->rest_len -= len;
	if (nul != NULL) {
		p->rest++;
		p->rest_len--;
	}
	uint8_t how = len > 0 ? chunk[0] : 0;
	const uint8_t *body = len > 0 ? chunk + 1 : chunk;
	size_t body_len = len > 0 ? len - 1 : 0;
	if ((how & CHUNK_SPLIT) && body_len > 1) {
		size_t cut = 1 + (size_t)(how >> 3) % (body_len - 1);
		write_all(p->fd, body, cut);
		write_all(p->fd, body + cut, body_len - cut);
	} else {
		write_all(p->fd, body, body_len);
	}
	p->chunks_sent++;
	p->line_seen = false;
	if (how & CHUNK_CLOSE) {
		peer_close(p);
		return;
	}
	/* the next one: at once, or when the client has said something (at
	 * most 2 ms from now) */
	bool wait = p->rest_len > 0 && (p->rest[0] & CHUNK_WAIT);
	struct timeval tv = {0, wait ? 2000 : 0};
	event_add(p->on_timer, &tv);
}

static void on_peer_timer(evutil_socket_t fd, short what, void *arg)
{
	send_chunk(arg);
}

static void on_peer_read(evutil_socket_t fd, short what, void *arg)
{
	struct peer *p = arg;
	char buf[1024];
	ssize_t n = recv(p->fd, buf, sizeof(buf), 0);
	if (n <= 0) {
		peer_close(p);
		return;
	}
	if (memchr(buf, '\n', (size_t)n) != NULL && !p->line_seen) {
		p->line_seen = true;
		/* a waiting chunk is due now */
		if (event_pending(p->on_timer, EV_TIMEOUT, NULL)) {
			struct timeval now = {0, 0};
			event_add(p->on_timer, &now);
		}
	}
}

static void on_accept(evutil_socket_t fd, short what, void *arg)
{
	struct run *run = arg;
	struct peer *p = &run->peer;
	int c = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
	if (c < 0)
		return;
	if (p->fd >= 0) { /* one connection per probe */
		close(c);
		return;
	}
	p->fd = c;
	p->on_read = event_new(run->base, c, EV_READ | EV_PERSIST, on_peer_read, p);
	p->on_timer = evtimer_new(run->base, on_peer_timer, p);
	if (p->on_read == NULL || p->on_timer == NULL)
		FAIL();
	event_add(p->on_read, NULL);
	send_chunk(p); /* the banner (or whatever the first chunk is) */
}

static void on_done(void *arg, const struct smtp_result *r)
{
	struct run *run = arg;
	if (run->done_calls++ != 0)
		FAIL();
	if (r->end > SMTP_END_LOOP)
		FAIL();
	check_text(r->error, sizeof(r->error));
	check_reply(&r->reply);
	if (r->catchall_asked && !r->catchall_pending)
		check_reply(&r->catchall_reply);
	if (r->end == SMTP_END_DONE && run->peer.chunks_sent < 4)
		FAIL(); /* a verdict on fewer replies than commands */
	run->result = *r;
	run->pending = r->catchall_pending;
}

static void on_late(void *arg, const struct smtp_reply *reply)
{
	struct run *run = arg;
	if (run->done_calls != 1 || !run->pending || run->late_calls++ != 0)
		FAIL();
	if (reply != NULL)
		check_reply(reply);
}

static void on_sync(void *arg, struct smtp_probe *probe, const struct smtp_sync_report *report)
{
	struct run *run = arg;
	if (run->done_calls != 1 || (run->pending && run->late_calls != 1) || run->sync_calls++ != 0)
		FAIL();
	if (report->sync > SMTP_SYNC_BROKEN || report->why == NULL)
		FAIL();
	check_text(report->why, strlen(report->why) + 1);
}

static void on_trace(void *arg, const char *line)
{
	if (line == NULL)
		FAIL();
	(void)strlen(line);
}

static void on_guard(evutil_socket_t fd, short what, void *arg)
{
	event_base_loopbreak(arg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 8192)
		return 0;
	setup();
	uint8_t opts = data[0];
	struct run run = {0};
	run.peer.fd = -1;
	run.peer.rest = data + 1;
	run.peer.rest_len = size - 1;
	run.base = event_base_new();
	if (run.base == NULL)
		FAIL();
	struct linger_list linger = {0};
	struct smtp_params params = {
	        .helo_name = "probe.fuzz.example",
	        .mail_from = "",
	        .fallback_from = (opts & 8) ? "postmaster@fuzz.example" : NULL,
	        .rcpt = "user@fuzz.example",
	        .catchall_rcpt = (opts & 2) ? "x7q9z@fuzz.example" : NULL,
	        .server_name = "mx.fuzz.example",
	        .needs_smtputf8 = (opts & 16) != 0,
	        .try_tls = (opts & 1) != 0,
	        .ssl_ctx = ssl_ctx,
	        .report_at_rcpt = (opts & 4) != 0,
	        .catchall_wait_ms = (opts & 32) ? 5 : 0,
	        .connect_timeout_ms = 200,
	        .banner_timeout_ms = 200,
	        .command_timeout_ms = 200,
	        .linger = &linger,
	};
	struct event *accept_ev = event_new(run.base, listen_fd, EV_READ | EV_PERSIST, on_accept, &run);
	struct event *guard = evtimer_new(run.base, on_guard, run.base);
	struct timeval guard_tv = {2, 0};
	if (accept_ev == NULL || guard == NULL)
		FAIL();
	event_add(accept_ev, NULL);
	event_add(guard, &guard_tv);
	run.probe = smtp_probe_start(run.base, (struct sockaddr *)&listen_addr, &params, on_trace, &run,
	                             on_done, on_late, on_sync, &run);
	if (run.probe == NULL)
		FAIL();
	/* until the probe is gone (it is on linger from start to end), or the guard */
	while (linger.count > 0 && event_base_got_break(run.base) == 0)
		if (event_base_loop(run.base, EVLOOP_ONCE) != 0)
			break;
	if (run.done_calls == 0)
		smtp_probe_cancel(run.probe); /* only the guard ends a probe before its result */
	else if (run.pending && run.late_calls == 0)
		smtp_probe_cancel(run.probe);
	linger_close_all(&linger);
	peer_close(&run.peer);
	/* a connection never accepted (only after the guard) must not be the
	 * next input's */
	struct pollfd pfd = {.fd = listen_fd, .events = POLLIN};
	while (poll(&pfd, 1, 0) == 1) {
		int stale = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (stale < 0)
			break;
		close(stale);
	}
	if (run.peer.on_read != NULL)
		event_free(run.peer.on_read);
	if (run.peer.on_timer != NULL)
		event_free(run.peer.on_timer);
	event_free(accept_ev);
	event_free(guard);
	event_base_free(run.base);
	return 0;
}
