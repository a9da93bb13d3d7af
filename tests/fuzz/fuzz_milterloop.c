/*
 * fuzz_milterloop.c - a hostile MTA against the native milter transport
 * (src/milterloop.c), end to end in one process: the real loop thread on a
 * unix socket, real sessions (src/msession.c) and a real verifier whose DNS
 * server is a UDP socket of this process (no network).
 *
 * Made once: a directory under /dev/shm (or $TMPDIR) with the milter
 * socket, two configurations (without and with a result header; verify_budget,
 * dns_timeout 100 ms, no cache, no DNS cache), a verifier on the first,
 * milterloop_start() with a 1 s milter_timeout. Input layout:
 *
 *   byte 0   bit 0: the configuration with a result header (EOM edits it)
 *            bit 1: the DNS socket answers each query SERVFAIL at once
 *                   (the probe ends quickly: a temporary failure); else it
 *                   never answers (a RCPT parks until verify_budget)
 *            bit 2: the MTA reads nothing until nothing happened for 20 ms
 *                   (its writes stall, or all is written): the loop's
 *                   output queue, OUTPUT_HIGH
 *            bits 3-4: how the stream is written: 0 at once, 1 an octet a
 *                   write (the first 64 KiB), 2 chunks of 1..64 octets from
 *                   byte 1, 3 packet by packet, each after the answers due
 *                   for the one before (a real MTA)
 *            bit 5: hang up once all is written (a session closed while
 *                   parked or answers pending: any prefix of the answers)
 *            bits 6-7: the stream is the body repeated 1, 16, 256 or 4096
 *                   times (cut at 1 MiB: enough answers to throttle)
 *   byte 1   bits 0-4: the chunk-size seed (mode 2)
 *            bit 5: with byte 0's bit 2, the MTA shuts its reading side
 *                   once its writes stall (answers queued in the loop fail)
 *            bit 6: the MTA reads nothing until the loop closes (its
 *                   milter_timeout, reading or writing): any prefix
 *            bit 7: the MTA shuts its reading side at once: the loop's
 *                   first answer fails and it closes (any prefix)
 *   the rest the body: what the MTA sends (milter packets, or not)
 *
 * The driver predicts from the stream, with milterwire.c's framing and
 * parsers (fuzzed on their own by fuzz_milterwire), what the loop must
 * answer: OPTNEG one 'O' (the steps and actions a subset of the offer);
 * CONNECT 'c' unless NR_CONN was negotiated; MAIL 'a' or 'c' (never a
 * refusal); RCPT 'c', 'a', 't', 'r' or 'y', a 5xx only when
 * precheck_sender() rejects the message's sender by syntax and the
 * recipient is not exempt (the DNS only fails: a failure on our side never
 * rejects), and 'c' or 'a' when it accepts it; HEADER, HELO, EOH, BODY,
 * DATA, UNKNOWN 'c'; EOM 'h'/'m' (only with the header negotiated) then
 * 'c'; MACRO, ABORT, QUIT_NC nothing; QUIT, a command before OPTNEG, an
 * unknown one, a malformed packet, a length of 0 or over 65535: the
 * connection closes. When the stream ends on a packet boundary of an open
 * connection an OPTNEG is appended, whose 'O' proves nothing was answered
 * beyond what was due.
 *
 * Invariants (abort on violation): every octet the loop sends is part of a
 * well-framed reply that is the one due, in order; after the last one due,
 * the end of the connection and nothing else (after the MTA's own
 * shutdown when it stays open); no write fails before the loop had a
 * reason to close; everything within 10 s; then milterloop_running() and a
 * fresh connection is served (OPTNEG 'O', MAIL FROM:<> accepted: 'a', or
 * 'c' with a result header), as is one made before the hostile one and
 * used while that one is open; no leak (ASan).
 *
 * helo_name is set: left empty, the host's name would be looked up with
 * the system resolver. Its start-up check asks dns_servers, the local
 * socket above, like every lookup of the verifier.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "fuzzcheck.h"
#include "log.h"
#include "milterloop.h"
#include "milterwire.h"
#include "msession.h"
#include "precheck.h"
#include "verify.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define F_HEADER   0x01
#define F_DNS_FAIL 0x02
#define F_STALL    0x04
#define F_HANGUP   0x20

#define STREAM_MAX   (1024 * 1024)
#define BYTEWISE_MAX (64 * 1024)
#define BOUND_MS     10000 /* the whole exchange */
#define STALL_MS     20
#define LOOP_TIMEOUT 1000 /* milter_timeout of the loop */

/* ---- the process-wide harness, made once ---- */

static struct {
	bool ready;
	char dir[256];
	char sock[300];
	int dns_fd;
	bool dns_fail;
	struct conf *plain, *header;
	struct verifier *verifier;
	struct milterloop *loop;
} h = {.dns_fd = -1};

static void on_conf_error(void *arg, const char *msg)
{
	(void)arg;
	fprintf(stderr, "fuzz_milterloop: %s\n", msg);
}

static void teardown(void)
{
	milterloop_stop(h.loop);
	ms_set_verifier(NULL);
	verifier_free(h.verifier);
	ms_release_conf();
	conf_unref(h.plain);
	conf_unref(h.header);
	if (h.dns_fd >= 0)
		close(h.dns_fd);
	unlink(h.sock);
	rmdir(h.dir);
}

static struct conf *make_conf(int port, const char *extra)
{
	char text[1024];
	snprintf(text, sizeof(text),
	         "cache =\n"
	         "helo_name = probe.fuzz.test\n"
	         "dns_servers = 127.0.0.1:%d\n"
	         "dns_timeout = 100ms\n"
	         "dns_cache_time = 0\n"
	         "verify_budget = 100ms\n"
	         "%s",
	         port, extra);
	struct conf *c = conf_load_text("fuzz_milterloop.conf", text, on_conf_error, NULL);
	if (c == NULL)
		abort();
	return c;
}

static void setup(void)
{
	if (h.ready)
		return;
	log_open("fuzz_milterloop", LOG_MAIL, true, getenv("FUZZ_MILTERLOOP_LOG") ? LOG_DEBUG : LOG_CRIT);
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
	snprintf(h.dir, sizeof(h.dir), "%s/fuzz_milterloop.XXXXXX", base != NULL ? base : "/tmp");
	if (mkdtemp(h.dir) == NULL)
		abort();
	snprintf(h.sock, sizeof(h.sock), "%s/milter.sock", h.dir);

	h.dns_fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sin);
	if (h.dns_fd < 0 || bind(h.dns_fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
	    getsockname(h.dns_fd, (struct sockaddr *)&sin, &sl) != 0)
		abort();
	int port = ntohs(sin.sin_port);
	h.plain = make_conf(port, "");
	h.header = make_conf(port, "result_header = X-Sender-Verified\n");

	char why[256];
	h.verifier = verifier_new(h.plain, why, sizeof(why));
	if (h.verifier == NULL) {
		fprintf(stderr, "fuzz_milterloop: verifier: %s\n", why);
		abort();
	}
	ms_set_verifier(h.verifier);
	ms_set_conf(h.plain);

	char spec[320];
	snprintf(spec, sizeof(spec), "unix:%s", h.sock);
	int fd = milterloop_listen(spec);
	if (fd < 0 || (h.loop = milterloop_start(fd, LOOP_TIMEOUT, NULL, NULL)) == NULL)
		abort();
	h.ready = true;
	atexit(teardown);
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* dns_serve - every query waiting: answered SERVFAIL (the header and
 * question of the query, no records) or dropped */
static void dns_serve(void)
{
	unsigned char q[1500];
	struct sockaddr_storage from;
	for (;;) {
		socklen_t fl = sizeof(from);
		ssize_t n = recvfrom(h.dns_fd, q, sizeof(q), 0, (struct sockaddr *)&from, &fl);
		if (n < 0)
			return;
		if (!h.dns_fail || n < 12)
			continue;
		size_t at = 12;
		while (at < (size_t)n && q[at] != 0 && (q[at] & 0xc0) == 0)
			at += 1 + q[at];
		at += 1 + 4; /* the root label, QTYPE, QCLASS */
		if (at > (size_t)n)
			continue;
		q[2] = 0x80 | (q[2] & 0x79); /* QR, the opcode and RD kept */
		q[3] = 0x80 | 2;             /* RA, SERVFAIL */
		memset(q + 4, 0, 8);
		q[5] = 1; /* QDCOUNT 1, nothing else */
		(void)sendto(h.dns_fd, q, at, 0, (struct sockaddr *)&from, fl);
	}
}

/* ---- what is due ---- */

enum due_kind {
	DUE_OPTNEG,   /* 'O' */
	DUE_CONTINUE, /* 'c' */
	DUE_MAIL,     /* 'a' or 'c' */
	DUE_RCPT,     /* c a t r y, refusals as allowed */
	DUE_EOM,      /* h/m..., then 'c' */
};

struct due {
	enum due_kind kind;
	size_t after;        /* stream offset at the end of the packet it answers */
	bool may_reject;     /* RCPT: the sender failed syntax, recipient not exempt */
	bool must_pass;      /* RCPT: the sender is accepted without a probe */
	bool may_edit;       /* EOM: header actions negotiated */
	uint32_t offered[2]; /* OPTNEG: actions, steps offered */
};

struct plan {
	struct due *due;
	size_t count, cap;
	bool closes;      /* the loop must close (QUIT, or something it refuses) */
	size_t closes_at; /* after the stream's first closes_at octets */
	bool partial;     /* the stream ends inside a packet */
};

static void plan_add(struct plan *pl, struct due d)
{
	if (pl->count == pl->cap) {
		pl->cap = pl->cap ? pl->cap * 2 : 64;
		pl->due = realloc(pl->due, pl->cap * sizeof(*pl->due));
		if (pl->due == NULL)
			abort();
	}
	pl->due[pl->count++] = d;
}

/* predict - the answers due for stream[0..len), as milterloop.c's rules
 * say, into pl; the conf decides the header and the sender checks */
static void predict(const char *stream, size_t len, const struct conf *conf, struct plan *pl)
{
	bool negotiated = false, noreply_connect = false, edit = false;
	enum { S_NONE, S_ACCEPT, S_REJECT, S_VERIFY } sender = S_NONE;
	bool header = conf->result_header[0] != '\0';
	size_t off = 0;
	while (off < len) {
		struct mw_packet p;
		size_t used;
		enum mw_frame_status st = mw_frame(stream + off, len - off, &p, &used);
		if (st == MW_FRAME_NEED) {
			pl->partial = true;
			return;
		}
		if (st == MW_FRAME_BAD)
			goto closed;
		off += used;
		struct due d = {.after = off};
		const char *argv[MW_ARGS_MAX];
		if (!negotiated && p.cmd != MW_CMD_OPTNEG)
			goto closed;
		switch (p.cmd) {
		case MW_CMD_OPTNEG: {
			struct mw_optneg mta;
			struct mw_choice choice;
			if (!mw_parse_optneg(&p, &mta))
				goto closed;
			mw_choose(&mta, header, true, &choice);
			negotiated = true;
			noreply_connect = choice.connect_noreply;
			edit = (choice.actions & (MW_ACT_ADDHDRS | MW_ACT_CHGHDRS)) != 0;
			d.kind = DUE_OPTNEG;
			d.offered[0] = mta.actions;
			d.offered[1] = mta.steps;
			plan_add(pl, d);
			break;
		}
		case MW_CMD_MACRO: {
			struct mw_macros m;
			char stage;
			if (!mw_parse_macros(&p, &stage, &m))
				goto closed;
			break;
		}
		case MW_CMD_CONNECT: {
			struct mw_connect cn;
			if (!mw_parse_connect(&p, &cn))
				goto closed;
			if (!noreply_connect) {
				d.kind = DUE_CONTINUE;
				plan_add(pl, d);
			}
			break;
		}
		case MW_CMD_MAIL: {
			struct precheck_result r;
			if (!mw_parse_args(&p, argv, MW_ARGS_MAX))
				goto closed;
			precheck_sender(conf, argv[0], NULL, NULL, &r);
			sender = r.verdict == PRECHECK_ACCEPT   ? S_ACCEPT
			         : r.verdict == PRECHECK_REJECT ? S_REJECT
			                                        : S_VERIFY;
			d.kind = DUE_MAIL;
			plan_add(pl, d);
			break;
		}
		case MW_CMD_RCPT:
			if (!mw_parse_args(&p, argv, MW_ARGS_MAX))
				goto closed;
			d.kind = DUE_RCPT;
			d.may_reject = sender == S_REJECT && !precheck_recipient_exempt(conf, argv[0]);
			d.must_pass = sender == S_ACCEPT || sender == S_NONE;
			plan_add(pl, d);
			break;
		case MW_CMD_HEADER: {
			const char *name, *value;
			if (!mw_parse_header(&p, &name, &value))
				goto closed;
			d.kind = DUE_CONTINUE;
			plan_add(pl, d);
			break;
		}
		case MW_CMD_EOM:
			d.kind = DUE_EOM;
			d.may_edit = edit;
			plan_add(pl, d);
			break;
		case MW_CMD_ABORT:
			sender = S_NONE;
			break;
		case MW_CMD_HELO:
		case MW_CMD_EOH:
		case MW_CMD_BODY:
		case MW_CMD_DATA:
		case MW_CMD_UNKNOWN:
			d.kind = DUE_CONTINUE;
			plan_add(pl, d);
			break;
		case MW_CMD_QUIT:
			goto closed;
		case MW_CMD_QUIT_NC:
			sender = S_NONE;
			break;
		default:
			goto closed;
		}
	}
	return;
closed:
	pl->closes = true;
	pl->closes_at = off;
}

/* ---- checking what comes back ---- */

/* nul_string - a NUL-terminated string at *at within data[0..len) */
static bool nul_string(const char *data, size_t len, size_t *at)
{
	const char *end = memchr(data + *at, '\0', len - *at);
	if (end == NULL)
		return false;
	*at = (size_t)(end - data) + 1;
	return true;
}

static uint32_t get32(const char *p)
{
	const unsigned char *u = (const unsigned char *)p;
	return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

/* check_replycode - "ddd[ d.d.d] text": 4xx or 5xx, one line, NUL-ended */
static bool check_replycode(const struct mw_packet *p, bool may_reject)
{
	if (p->len < 4 || p->data[p->len - 1] != '\0' || strlen(p->data) != p->len - 1)
		return false;
	if ((p->data[0] != '4' && p->data[0] != '5') || p->data[1] < '0' || p->data[1] > '9' ||
	    p->data[2] < '0' || p->data[2] > '9' || (p->data[3] != ' ' && p->data[3] != '\0'))
		return false;
	if (p->data[0] == '5' && !may_reject)
		return false;
	return strpbrk(p->data, "\r\n") == NULL;
}

/* reply_ok - p is (part of) the answer d: true; *last when it ends it */
static bool reply_ok(const struct due *d, const struct mw_packet *p, bool *last)
{
	*last = true;
	switch (d->kind) {
	case DUE_OPTNEG: {
		if (p->cmd != MW_REP_OPTNEG || p->len < 12)
			return false;
		uint32_t version = get32(p->data), actions = get32(p->data + 4), steps = get32(p->data + 8);
		if (version < 2 || version > MW_VERSION || (actions & ~d->offered[0]) != 0 ||
		    (steps & ~d->offered[1]) != 0)
			return false;
		for (size_t at = 12; at < p->len;) { /* macro lists: stage, names */
			if (p->len - at < 5)
				return false;
			at += 4;
			if (!nul_string(p->data, p->len, &at))
				return false;
		}
		return true;
	}
	case DUE_CONTINUE:
		return p->cmd == MW_REP_CONTINUE && p->len == 0;
	case DUE_MAIL:
		return (p->cmd == MW_REP_CONTINUE || p->cmd == MW_REP_ACCEPT) && p->len == 0;
	case DUE_RCPT:
		switch (p->cmd) {
		case MW_REP_CONTINUE:
		case MW_REP_ACCEPT:
			return p->len == 0;
		case MW_REP_TEMPFAIL:
			return p->len == 0 && !d->must_pass;
		case MW_REP_REJECT:
			return p->len == 0 && d->may_reject;
		case MW_REP_REPLYCODE:
			return !d->must_pass && check_replycode(p, d->may_reject);
		default:
			return false;
		}
	case DUE_EOM:
		if (p->cmd == MW_REP_CONTINUE)
			return p->len == 0;
		*last = false;
		if (!d->may_edit)
			return false;
		size_t at = 0;
		if (p->cmd == MW_REP_CHGHEADER) {
			if (p->len < 4)
				return false;
			at = 4;
		} else if (p->cmd != MW_REP_ADDHEADER) {
			return false;
		}
		return nul_string(p->data, p->len, &at) && nul_string(p->data, p->len, &at) && at == p->len;
	}
	return false;
}

/* ---- one exchange ---- */

/* How the MTA behaves (byte 1's high bits, and byte 0's) */
#define B_SHUT_LATER 0x20 /* with F_STALL: shuts its reading side once stalled */
#define B_NEVER_READ 0x40 /* reads nothing until the loop gives up on it */
#define B_SHUT_RD    0x80 /* shuts its reading side at once: answers fail */

struct run {
	const char *stream;
	size_t len, written;
	struct plan plan;
	size_t next_due;
	char in[70000];
	size_t in_len;
	bool eof;
	bool shut; /* our write side is shut */
	bool write_failed;
	bool reads_shut; /* our reading side is shut */
	int mode;
	int flags, how; /* byte 0, byte 1 */
	uint32_t seed;
};

/* chunk - how many octets to write next */
static size_t chunk(struct run *r)
{
	size_t left = r->len - r->written;
	size_t n = left;
	switch (r->mode) {
	case 1:
		if (r->written < BYTEWISE_MAX)
			n = 1;
		break;
	case 2:
		r->seed ^= r->seed << 13;
		r->seed ^= r->seed >> 17;
		r->seed ^= r->seed << 5;
		n = 1 + r->seed % 64;
		break;
	case 3: {
		/* one packet (all the rest when it is not one) */
		struct mw_packet p;
		size_t used;
		if (mw_frame(r->stream + r->written, left, &p, &used) == MW_FRAME_OK)
			n = used;
		break;
	}
	}
	return n < left ? n : left;
}

/* may_write - mode 3 waits for the answers due for what was written */
static bool may_write(const struct run *r)
{
	if (r->written == r->len || r->write_failed)
		return false;
	if (r->mode != 3 || r->reads_shut || (r->how & B_NEVER_READ))
		return true;
	return r->next_due == r->plan.count || r->plan.due[r->next_due].after > r->written;
}

/* take_replies - check every whole reply packet read so far */
static void take_replies(struct run *r)
{
	size_t off = 0;
	for (;;) {
		struct mw_packet p;
		size_t used;
		enum mw_frame_status st = mw_frame(r->in + off, r->in_len - off, &p, &used);
		if (st == MW_FRAME_NEED)
			break;
		if (st == MW_FRAME_BAD)
			FAIL(); /* a reply of length 0 or too long */
		if (r->next_due == r->plan.count)
			FAIL(); /* more than was due: an answer to ABORT, a MACRO, a NR step */
		const struct due *d = &r->plan.due[r->next_due];
		bool last;
		if (!reply_ok(d, &p, &last)) {
			fprintf(stderr, "fuzz_milterloop: reply '%c' (%zu octets) to due #%zu (kind %d)\n",
			        p.cmd, p.len, r->next_due, (int)d->kind);
			FAIL();
		}
		if (d->after > r->written)
			FAIL(); /* an answer before its packet was sent */
		if (last)
			r->next_due++;
		off += used;
	}
	memmove(r->in, r->in + off, r->in_len - off);
	r->in_len -= off;
}

/* may_close_at - the loop may have closed once written octets were sent:
 * it had a reason (a packet it closes on; with B_SHUT_RD the first answer
 * it could not send) */
static bool may_close_at(const struct run *r, size_t written)
{
	if (r->plan.closes && written >= r->plan.closes_at)
		return true;
	return r->reads_shut && r->plan.count > 0 && written >= r->plan.due[0].after;
}

/* exchange - write the stream, read and check the answers, until the end
 * of the connection */
static void exchange(int fd, struct run *r)
{
	const int64_t deadline = now_ms() + BOUND_MS;
	const bool hangup = (r->flags & F_HANGUP) != 0;
	bool shut_rd = (r->how & B_SHUT_RD) != 0;
	bool never_read = (r->how & B_NEVER_READ) != 0;
	bool stalled = false;
	for (;;) {
		if (shut_rd && !r->reads_shut) {
			shutdown(fd, SHUT_RD);
			r->reads_shut = true;
		}
		bool all_due = r->next_due == r->plan.count;
		bool done_writing = r->written == r->len || r->write_failed;
		/* our end: after every answer due on a connection that stays
		 * open (a real MTA never hangs up on an answer it waits for);
		 * at once when hanging up; an MTA that reads nothing hangs up
		 * only when nothing is due */
		bool shut_now =
		        hangup || (!shut_rd && !never_read && all_due) || (shut_rd && r->plan.count == 0);
		if (!r->shut && done_writing && !r->plan.closes && shut_now) {
			shutdown(fd, SHUT_WR);
			r->shut = true;
		}
		if (r->eof)
			break;
		bool want_write = may_write(r);
		bool want_read = !shut_rd && (!never_read || r->eof) && (!(r->flags & F_STALL) || stalled);
		struct pollfd pfd[2] = {
		        {.fd = fd, .events = (short)((want_read ? POLLIN : 0) | (want_write ? POLLOUT : 0))},
		        {.fd = h.dns_fd, .events = POLLIN}};
		int64_t left = deadline - now_ms();
		if (left <= 0) {
			fprintf(stderr,
			        "fuzz_milterloop: no end after %d ms: %zu of %zu written, %zu of %zu "
			        "answers\n",
			        BOUND_MS, r->written, r->len, r->next_due, r->plan.count);
			FAIL();
		}
		int wait = (int)left;
		if ((r->flags & F_STALL) && !stalled)
			wait = STALL_MS;
		int n = poll(pfd, 2, wait);
		if (n < 0 && errno != EINTR)
			FAIL();
		if (n == 0 && (r->flags & F_STALL)) {
			stalled = true;
			if (r->how & B_SHUT_LATER)
				shut_rd = true; /* with answers queued in the loop */
		}
		if (pfd[1].revents & POLLIN)
			dns_serve();
		if (pfd[0].revents & (POLLHUP | POLLERR))
			stalled = true; /* the loop closed: a stalling MTA reads the rest now */
		if (want_write && (pfd[0].revents & (POLLOUT | POLLERR | POLLHUP))) {
			size_t c = chunk(r);
			ssize_t w = send(fd, r->stream + r->written, c, MSG_NOSIGNAL);
			if (w > 0) {
				r->written += (size_t)w;
				stalled = false;
			} else if (w < 0 && errno != EAGAIN && errno != EINTR) {
				/* the loop closed: only after what makes it close */
				if (!may_close_at(r, r->written) && !never_read) {
					fprintf(stderr, "fuzz_milterloop: write: %s at %zu\n",
					        strerror(errno), r->written);
					FAIL();
				}
				r->write_failed = true;
			}
		}
		if ((shut_rd || never_read) && (pfd[0].revents & POLLHUP)) {
			/* the loop closed; what it sent is read below */
			if (shut_rd)
				r->eof = true;
			else
				never_read = false; /* read it all now */
			continue;
		}
		if (want_read && (pfd[0].revents & (POLLIN | POLLERR | POLLHUP))) {
			ssize_t got = recv(fd, r->in + r->in_len, sizeof(r->in) - r->in_len, 0);
			if (got > 0) {
				r->in_len += (size_t)got;
				take_replies(r);
			} else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
				r->eof = true;
			}
		}
	}
	/* The end: after every answer due, and no octet of another; or, when
	 * the MTA hung up first or read nothing, after any prefix of them. A
	 * loop that closes first must have been given a reason. */
	if (r->in_len != 0 && !r->reads_shut)
		FAIL(); /* a cut answer */
	bool prefix_ok = hangup || r->reads_shut || (r->how & B_NEVER_READ);
	if (!prefix_ok && r->next_due != r->plan.count) {
		fprintf(stderr, "fuzz_milterloop: closed after %zu of %zu answers (%zu of %zu written)\n",
		        r->next_due, r->plan.count, r->written, r->len);
		FAIL();
	}
	if (!r->shut && !may_close_at(r, r->written) && !(r->how & B_NEVER_READ)) {
		fprintf(stderr, "fuzz_milterloop: closed by the loop for no reason at %zu of %zu\n",
		        r->written, r->len);
		FAIL();
	}
}

static int connect_loop(void)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	if (strlen(h.sock) >= sizeof(sun.sun_path))
		abort();
	memcpy(sun.sun_path, h.sock, strlen(h.sock) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0)
		FAIL();
	if (fcntl(fd, F_SETFL, O_NONBLOCK) != 0)
		FAIL();
	return fd;
}

/* put_packet - one packet at stream[*len] */
static void put_packet(char *stream, size_t *len, char cmd, const void *data, size_t n)
{
	uint32_t l = (uint32_t)n + 1;
	char *p = stream + *len;
	p[0] = (char)(l >> 24);
	p[1] = (char)(l >> 16);
	p[2] = (char)(l >> 8);
	p[3] = (char)l;
	p[4] = cmd;
	memcpy(p + 5, data, n);
	*len += 5 + n;
}

static const char optneg_postfix[12] = {0, 0, 0, 6, 0, 0, 1, 0xff, 0, 0x1f, 0xff, 0xff};

/* fresh_session - the loop serves fd (a new connection if -1): OPTNEG,
 * MAIL FROM:<> accepted */
static void fresh_session(const struct conf *conf, int fd)
{
	if (!milterloop_running(h.loop))
		FAIL();
	char stream[64];
	size_t len = 0;
	put_packet(stream, &len, MW_CMD_OPTNEG, optneg_postfix, sizeof(optneg_postfix));
	put_packet(stream, &len, MW_CMD_MAIL, "<>", 3);
	put_packet(stream, &len, MW_CMD_QUIT, "", 0);
	struct run *r = calloc(1, sizeof(*r));
	if (r == NULL)
		abort();
	r->stream = stream;
	r->len = len;
	predict(stream, len, conf, &r->plan);
	if (fd < 0)
		fd = connect_loop();
	exchange(fd, r);
	close(fd);
	if (r->plan.count != 2 || r->next_due != 2)
		FAIL();
	free(r->plan.due);
	free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	setup();
	int flags = size > 0 ? data[0] : 0;
	const struct conf *conf = (flags & F_HEADER) ? h.header : h.plain;
	ms_set_conf((struct conf *)conf);
	h.dns_fail = (flags & F_DNS_FAIL) != 0;
	if (size < 2) {
		fresh_session(conf, -1);
		return 0;
	}
	const char *body = (const char *)data + 2;
	size_t body_len = size - 2;
	static const size_t repeats[4] = {1, 16, 256, 4096};
	size_t times = repeats[(flags >> 6) & 3];
	if (body_len > 0 && times > STREAM_MAX / body_len)
		times = STREAM_MAX / body_len > 0 ? STREAM_MAX / body_len : 1;
	/* room for the appended OPTNEG */
	char *stream = malloc(body_len * times + 32);
	if (stream == NULL)
		abort();
	size_t len = 0;
	for (size_t i = 0; i < times; i++, len += body_len)
		memcpy(stream + len, body, body_len);

	struct run *r = calloc(1, sizeof(*r));
	if (r == NULL)
		abort();
	predict(stream, len, conf, &r->plan);
	if (!r->plan.closes && !r->plan.partial && !(flags & F_HANGUP)) {
		/* the witness that nothing more was answered */
		size_t before = len;
		put_packet(stream, &len, MW_CMD_OPTNEG, optneg_postfix, sizeof(optneg_postfix));
		struct plan tail = {0};
		predict(stream, len, conf, &tail); /* the same, and one 'O' */
		if (tail.count != r->plan.count + 1 || tail.closes || tail.partial)
			FAIL();
		tail.due[tail.count - 1].after = len;
		(void)before;
		free(r->plan.due);
		r->plan = tail;
	}
	r->stream = stream;
	r->len = len;
	r->mode = (flags >> 3) & 3;
	r->flags = flags;
	r->how = data[1];
	r->seed = 0x9e3779b9u ^ (data[1] & 0x1fu);

	/* another MTA connection, older than the hostile one, is served
	 * while that one is open (and leaves the loop's list from behind it) */
	int other = connect_loop();
	int fd = connect_loop();
	fresh_session(conf, other);
	exchange(fd, r);
	close(fd);
	free(r->plan.due);
	free(r);
	free(stream);

	fresh_session(conf, -1);
	return 0;
}
