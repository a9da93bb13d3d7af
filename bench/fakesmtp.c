/*
 * fakesmtp.c - a small, fast fake SMTP server for benchmarks (not installed).
 *
 * Listens on one port of one or more loopback addresses and answers the
 * probe's dialogue: greeting, EHLO/HELO, MAIL, RCPT, RSET, NOOP, QUIT (no
 * STARTTLS offered, DATA refused), every reply after --latency-ms. One
 * command at a time, as a server without PIPELINING: a line that comes
 * while a reply is still due waits in the input until that reply is sent.
 * RCPT: a local part starting with --reject-prefix ("bad") gets 550; with
 * --accept-prefix set, only local parts starting with it get 250 (the
 * probe's random catch-all address then gets 550, as from a real server);
 * everything else 250.
 *
 * Counts connections (total, open, most open at once), commands and RCPTs
 * (accepted, rejected) and prints them as one "fakesmtp: ..." line on
 * SIGUSR1 and at exit (SIGTERM, SIGINT). Prints "fakesmtp: listening on
 * port N" once every listener is up (--port 0: a free port, the same on
 * every address).
 *
 * Built for 10,000+ concurrent connections on one thread of libevent: the
 * open-file limit is raised (--nofile, default 65536, else the hard
 * limit), every reply delay is one event on a common timeout (no heap per
 * timer), and a connection holds a bufferevent and a few dozen bytes.
 * Loopback only: an address outside 127.0.0.0/8 is refused.
 *
 * Usage: fakesmtp [--port N] [--addr 127.0.0.1]... [--latency-ms MS]
 *                 [--reject-prefix bad] [--accept-prefix P] [--nofile N]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>

#define MAX_ADDRS    64
#define LINE_MAX_LEN 1000 /* RFC 5321's 512, with room */

struct counters {
	unsigned long long connections, open, max_open, commands, rcpts, accepted, rejected;
};

struct server {
	struct event_base *base;
	const struct timeval *delay; /* the common timeout for --latency-ms */
	const char *reject_prefix;
	const char *accept_prefix; /* NULL: accept all but reject_prefix */
	struct counters n;
	unsigned long accept_errors; /* reported: the first ten */
};

struct conn {
	struct server *srv;
	struct bufferevent *bev;
	struct event *timer; /* the delay before the reply due */
	const char *reply;   /* due when the timer fires; NULL: none */
	bool close_after;    /* QUIT: close once the reply is flushed */
};

static void process(struct conn *c);

/* conn_free - close the connection and forget it */
static void conn_free(struct conn *c)
{
	c->srv->n.open--;
	bufferevent_free(c->bev);
	event_free(c->timer);
	free(c);
}

/* local_part_starts - does RCPT TO:<local@...>'s local part start with prefix? */
static bool local_part_starts(const char *line, const char *prefix)
{
	const char *lt = strchr(line, '<');
	if (lt == NULL || prefix == NULL)
		return false;
	return strncasecmp(lt + 1, prefix, strlen(prefix)) == 0;
}

/* answer - the reply to one command line; sets close_after for QUIT */
static const char *answer(struct conn *c, const char *line)
{
	struct server *s = c->srv;
	s->n.commands++;
	if (strncasecmp(line, "EHLO", 4) == 0)
		return "250-fakesmtp.bench\r\n250-8BITMIME\r\n250 SIZE 10240000\r\n";
	if (strncasecmp(line, "HELO", 4) == 0)
		return "250 fakesmtp.bench\r\n";
	if (strncasecmp(line, "MAIL FROM:", 10) == 0)
		return "250 2.1.0 Ok\r\n";
	if (strncasecmp(line, "RCPT TO:", 8) == 0) {
		s->n.rcpts++;
		bool ok = !local_part_starts(line, s->reject_prefix) &&
		          (s->accept_prefix == NULL || local_part_starts(line, s->accept_prefix));
		if (ok) {
			s->n.accepted++;
			return "250 2.1.5 Ok\r\n";
		}
		s->n.rejected++;
		return "550 5.1.1 <rejected>: Recipient address rejected: User unknown\r\n";
	}
	if (strncasecmp(line, "RSET", 4) == 0 || strncasecmp(line, "NOOP", 4) == 0)
		return "250 2.0.0 Ok\r\n";
	if (strncasecmp(line, "QUIT", 4) == 0) {
		c->close_after = true;
		return "221 2.0.0 Bye\r\n";
	}
	if (strncasecmp(line, "DATA", 4) == 0)
		return "554 5.5.1 no DATA here\r\n";
	return "502 5.5.2 Error: command not recognized\r\n";
}

/* due - reply after the delay */
static void due(struct conn *c, const char *reply)
{
	c->reply = reply;
	bufferevent_disable(c->bev, EV_READ); /* one command at a time */
	event_add(c->timer, c->srv->delay);
}

/* on_timer - the delay is over: send the reply due, then the next line */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	const char *reply = c->reply;
	c->reply = NULL;
	if (reply != NULL)
		bufferevent_write(c->bev, reply, strlen(reply));
	if (c->close_after) {
		if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
			conn_free(c);
		return; /* on_write closes once flushed */
	}
	bufferevent_enable(c->bev, EV_READ);
	process(c);
}

/* process - answer the next complete line, if any and none is due */
static void process(struct conn *c)
{
	if (c->reply != NULL || c->close_after)
		return;
	struct evbuffer *in = bufferevent_get_input(c->bev);
	size_t len = 0;
	char *line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF);
	if (line == NULL) {
		if (evbuffer_get_length(in) > LINE_MAX_LEN) {
			c->close_after = true;
			due(c, "500 5.5.0 line too long\r\n");
		}
		return;
	}
	due(c, answer(c, line));
	free(line);
}

static void on_read(struct bufferevent *bev, void *arg)
{
	process(arg);
}

static void on_write(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	if (c->close_after && c->reply == NULL)
		conn_free(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		conn_free(arg);
}

/* on_accept - a new connection: the greeting is due after the delay */
static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
	struct server *s = arg;
	struct conn *c = calloc(1, sizeof(*c));
	if (c == NULL) {
		evutil_closesocket(fd);
		return;
	}
	c->srv = s;
	c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
	c->timer = c->bev != NULL ? evtimer_new(s->base, on_timer, c) : NULL;
	if (c->bev == NULL || c->timer == NULL) {
		if (c->bev != NULL)
			bufferevent_free(c->bev);
		else
			evutil_closesocket(fd);
		free(c);
		return;
	}
	s->n.connections++;
	if (++s->n.open > s->n.max_open)
		s->n.max_open = s->n.open;
	bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
	bufferevent_enable(c->bev, EV_WRITE);
	due(c, "220 fakesmtp.bench ESMTP\r\n");
}

/* on_accept_error - e.g. EMFILE: say so, keep listening */
static void on_accept_error(struct evconnlistener *l, void *arg)
{
	struct server *s = arg;
	if (s->accept_errors++ < 10)
		fprintf(stderr, "fakesmtp: accept: %s\n", strerror(errno));
}

static void print_counters(const struct server *s)
{
	printf("fakesmtp: connections=%llu open=%llu max_open=%llu commands=%llu rcpts=%llu "
	       "accepted=%llu rejected=%llu\n",
	       s->n.connections, s->n.open, s->n.max_open, s->n.commands, s->n.rcpts, s->n.accepted,
	       s->n.rejected);
	fflush(stdout);
}

static void on_usr1(evutil_socket_t sig, short what, void *arg)
{
	print_counters(arg);
}

static void on_usr2(evutil_socket_t sig, short what, void *arg)
{
	struct server *s = arg; /* a new measuring period: the peak starts from now */
	s->n.max_open = s->n.open;
}

static void on_term(evutil_socket_t sig, short what, void *arg)
{
	struct server *s = arg;
	event_base_loopbreak(s->base);
}

/* raise_nofile - want descriptors, at most what we may have */
static void raise_nofile(rlim_t want)
{
	struct rlimit lim;
	if (getrlimit(RLIMIT_NOFILE, &lim) != 0)
		return;
	struct rlimit up = {.rlim_cur = want, .rlim_max = want > lim.rlim_max ? want : lim.rlim_max};
	if (setrlimit(RLIMIT_NOFILE, &up) != 0) { /* not privileged: up to the hard limit */
		up.rlim_max = lim.rlim_max;
		up.rlim_cur = want < lim.rlim_max ? want : lim.rlim_max;
		setrlimit(RLIMIT_NOFILE, &up);
	}
}

static void usage(void)
{
	fprintf(stderr, "usage: fakesmtp [--port N] [--addr 127.0.0.1]... [--latency-ms MS] "
	                "[--reject-prefix bad] [--accept-prefix P] [--nofile N]\n");
	exit(64);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {{"port", required_argument, NULL, 'p'},
	                                     {"addr", required_argument, NULL, 'a'},
	                                     {"latency-ms", required_argument, NULL, 'l'},
	                                     {"reject-prefix", required_argument, NULL, 'r'},
	                                     {"accept-prefix", required_argument, NULL, 'A'},
	                                     {"nofile", required_argument, NULL, 'n'},
	                                     {NULL, 0, NULL, 0}};
	struct server s = {.reject_prefix = "bad"};
	const char *addrs[MAX_ADDRS];
	int naddrs = 0, port = 0, c;
	long latency_ms = 0;
	rlim_t nofile = 65536;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			port = atoi(optarg);
			break;
		case 'a':
			if (naddrs == MAX_ADDRS)
				usage();
			addrs[naddrs++] = optarg;
			break;
		case 'l':
			latency_ms = atol(optarg);
			break;
		case 'r':
			s.reject_prefix = optarg[0] ? optarg : NULL;
			break;
		case 'A':
			s.accept_prefix = optarg[0] ? optarg : NULL;
			break;
		case 'n':
			nofile = (rlim_t)strtoul(optarg, NULL, 10);
			break;
		default:
			usage();
		}
	}
	if (naddrs == 0)
		addrs[naddrs++] = "127.0.0.1";
	if (latency_ms < 0 || port < 0 || port > 65535)
		usage();
	raise_nofile(nofile);
	signal(SIGPIPE, SIG_IGN);
	s.base = event_base_new();
	if (s.base == NULL)
		return 1;
	struct timeval tv = {.tv_sec = latency_ms / 1000, .tv_usec = (latency_ms % 1000) * 1000};
	s.delay = event_base_init_common_timeout(s.base, &tv);
	if (s.delay == NULL)
		s.delay = &tv;

	struct evconnlistener *listeners[MAX_ADDRS];
	for (int i = 0; i < naddrs; i++) {
		struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
		if (inet_pton(AF_INET, addrs[i], &sin.sin_addr) != 1 ||
		    (ntohl(sin.sin_addr.s_addr) >> 24) != 127) {
			fprintf(stderr, "fakesmtp: %s is not a loopback IPv4 address\n", addrs[i]);
			return 64;
		}
		listeners[i] = evconnlistener_new_bind(s.base, on_accept, &s,
		                                       LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 4096,
		                                       (struct sockaddr *)&sin, sizeof(sin));
		if (listeners[i] == NULL) {
			fprintf(stderr, "fakesmtp: cannot listen on %s:%d: %s\n", addrs[i], port,
			        strerror(errno));
			return 1;
		}
		evconnlistener_set_error_cb(listeners[i], on_accept_error);
		if (port == 0) { /* the others take the same port */
			struct sockaddr_in bound;
			socklen_t len = sizeof(bound);
			getsockname(evconnlistener_get_fd(listeners[i]), (struct sockaddr *)&bound, &len);
			port = ntohs(bound.sin_port);
		}
	}
	struct event *sigs[4] = {
	        evsignal_new(s.base, SIGUSR1, on_usr1, &s), evsignal_new(s.base, SIGUSR2, on_usr2, &s),
	        evsignal_new(s.base, SIGTERM, on_term, &s), evsignal_new(s.base, SIGINT, on_term, &s)};
	for (int i = 0; i < 4; i++)
		if (sigs[i] == NULL || event_add(sigs[i], NULL) != 0)
			return 1;
	printf("fakesmtp: listening on port %d\n", port);
	fflush(stdout);
	event_base_dispatch(s.base);
	print_counters(&s);
	/* Connections still open are left to the exit. */
	for (int i = 0; i < naddrs; i++)
		evconnlistener_free(listeners[i]);
	for (int i = 0; i < 4; i++)
		event_free(sigs[i]);
	return 0;
}
