/*
 * dns.c - MX lookup with c-ares driven by the caller's libevent loop.
 *
 * Owns: the c-ares channel of a resolver, one libevent event per c-ares
 * socket (ARES_OPT_SOCK_STATE_CB), the timer that feeds c-ares its
 * timeouts, the resolver's PRNG (equal-preference shuffle), its flights
 * (their queries, and the building of their result), every lookup (and
 * assembling its answer), and the public API of dns.h.
 *
 * Two kinds of object:
 *
 *   lookup  - one caller's dns_lookup_mx: its callbacks, its "kick" event
 *             (everything a lookup does starts from the loop through it)
 *             and the answer handed to its done.
 *   flight  - the resolution a lookup started: MX query; NODATA -> the
 *             domain is its own (implicit) MX; then A and AAAA of every
 *             kept host at once. It owns the queries in flight.
 *
 * Stateless: every lookup resolves anew. Sharing one resolution among the
 * probes of a domain and keeping its answer for its TTL is the verifier's
 * job (vcore.c keeps one record per domain, with a compact copy of the
 * answer made by dnskept.c).
 *
 * A lookup starts from its kick: it starts its flight, whose trace lines
 * go to the lookup's trace. When the flight's last query is back (inside
 * a c-ares callback), the result is packed (struct result), the lookup's
 * answer built from it (assemble: the shuffle of equal preferences, the
 * max_addresses cut) and its kick made active, so done runs from the loop,
 * never nested in c-ares or inside dns_lookup_mx: done may free the
 * resolver. Then the flight is freed.
 *
 * Cancelling. A cancelled lookup is freed at once; its flight is
 * abandoned: its answers ignored, freed when its last query comes back
 * (c-ares 1.18 cannot cancel one query). dns_resolver_free cancels every
 * lookup and destroys the channel, which brings every query back with
 * ARES_EDESTRUCTION.
 *
 * Our own failures. c-ares 1.18 ends a query whose socket() failed (no
 * descriptor, no memory) as if every server refused it (ARES_ECONNREFUSED).
 * So the channel creates its sockets through our socket functions, which
 * remember the errno of the last socket() that failed for lack of
 * resources (cleared by the next that succeeds); a query ending
 * ECONNREFUSED meanwhile is our failure: its answer is TEMPFAIL with
 * dns_answer.ours set and a detail saying so, never the domain's fault.
 */
#include "dns.h"
#include "classify.h"
#include "dnsttl.h"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_MAX_MX        5
#define DEFAULT_MAX_ADDRESSES 10
#define HARD_MAX_MX           64 /* whatever the caller asks: queries in flight per lookup */
#define TRACE_MAX             1024
#define ARES_TRIES            2
#define TTL_NONE              INT64_MAX /* a flight's "no TTL known yet" */

struct dns_sock {
	ares_socket_t fd;
	short flags; /* EV_READ / EV_WRITE now watched */
	struct event *ev;
	struct dns_sock *next;
};

LIST_HEAD(lookup_list, dns_lookup);

struct dns_resolver {
	struct event_base *base;
	ares_channel channel;
	struct event *timer;
	struct dns_sock *socks;
	struct lookup_list lookups; /* every lookup not yet in done */
	uint64_t prng;
	int sock_errno; /* the last socket() failed for lack of resources (errno); 0: not */
};

/* one mail host of a finished resolution, with at least one address */
struct mail_host {
	const char *name;
	unsigned preference;
	size_t n4, n6;
	const struct in_addr *v4;
	const struct in6_addr *v6;
};

#define RESULT_TTL_UNKNOWN (-1)

/* what a finished resolution found */
struct result {
	enum dns_status status;
	bool implicit_mx;
	int64_t ttl_ms;          /* how long DNS says it holds, from when it was made
	                          * (0: not at all); RESULT_TTL_UNKNOWN: unknown */
	char detail[256];        /* unless OK: an OK detail depends on the lookup */
	size_t host_count;       /* OK: hosts[] sorted by preference */
	struct mail_host *hosts; /* one block: hosts, then addresses and names */
};

enum qkind { Q_MX, Q_A, Q_AAAA };

/* one ares_query in flight: the callback's argument */
struct dns_query {
	struct flight *flight;
	enum qkind kind;
	size_t host;
};

/* one mail host being resolved */
struct host_work {
	char name[DNS_NAME_MAX + 1];
	unsigned preference;
	bool temp; /* its A or AAAA lookup failed for now */
	size_t n4, n6;
	struct in_addr v4[DNS_HOST_ADDRS_MAX];
	struct in6_addr v6[DNS_HOST_ADDRS_MAX];
};

struct flight {
	struct dns_resolver *resolver;
	char *domain; /* as the lookup spelt it */
	struct dns_limits limits;
	struct dns_lookup *leader; /* the lookup it answers (and traces to); NULL once cancelled */
	bool abandoned;            /* nobody waits: drain the queries */
	unsigned pending;          /* queries in flight, plus guards */
	bool answered;             /* res.status is final before host lookups */
	struct host_work *work;
	size_t work_count;
	char temp_detail[160]; /* the first temporary failure of a host */
	int ours_errno;        /* a query failed for lack of resources on our side (errno); 0: none */
	int64_t records_ms;    /* the smallest TTL of the records used (MX, A, AAAA); TTL_NONE: none */
	int64_t negative_ms;   /* the smallest negative TTL (RFC 2308) of the NXDOMAIN and NODATA
	                        * answers met, where one was given; TTL_NONE: none */
	struct result res;
};

enum lstate { L_START, L_WAITING, L_FINISHING, L_IN_DONE };

struct dns_lookup {
	struct dns_resolver *resolver; /* NULL once off resolver->lookups */
	char *domain;
	struct dns_limits limits;
	dns_trace_fn trace;
	void *trace_arg;
	dns_answer_fn done;
	void *done_arg;
	struct event *kick; /* deferred start, then deferred done */
	enum lstate state;
	bool cancelled;
	struct flight *flight; /* the resolution it waits for, while L_WAITING */
	struct dns_answer answer;
	LIST_ENTRY(dns_lookup) link; /* resolver->lookups */
};

static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen);

/* ---------------------------------------------------------------- helpers */

/* vtrace - one "dns: ..." line to a trace callback */
static void vtrace(dns_trace_fn fn, void *arg, const char *fmt, va_list ap)
{
	if (fn == NULL)
		return;
	char line[TRACE_MAX] = "dns: ";
	vsnprintf(line + 5, sizeof(line) - 5, fmt, ap);
	fn(arg, line);
}

/* lookup_trace - a line to one lookup's trace */
__attribute__((format(printf, 2, 3))) static void lookup_trace(struct dns_lookup *lk, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vtrace(lk->trace, lk->trace_arg, fmt, ap);
	va_end(ap);
}

/* flight_trace - a line of a resolution: to its lookup's trace */
__attribute__((format(printf, 2, 3))) static void flight_trace(struct flight *fl, const char *fmt, ...)
{
	struct dns_lookup *leader = fl->leader;
	if (leader == NULL)
		return;
	va_list ap;
	va_start(ap, fmt);
	vtrace(leader->trace, leader->trace_arg, fmt, ap);
	va_end(ap);
}

/* appendf - append to a bounded buffer; "..." marks a cut */
__attribute__((format(printf, 3, 4))) static void appendf(char *buf, size_t size, const char *fmt, ...)
{
	size_t used = strlen(buf);
	if (used + 1 >= size)
		return;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf + used, size - used, fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n >= size - used && size > 4)
		memcpy(buf + size - 4, "...", 4);
}

/* textf - snprintf where cutting a long name short is intended */
__attribute__((format(printf, 3, 4))) static void textf(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, size, fmt, ap);
	va_end(ap);
}

/* status_text - a c-ares status as DNS people say it */
static const char *status_text(int status)
{
	static const struct {
		int status;
		const char *text;
	} names[] = {
	        {ARES_ENOTFOUND, "NXDOMAIN"},
	        {ARES_ENODATA, "NODATA"},
	        {ARES_ESERVFAIL, "SERVFAIL"},
	        {ARES_EREFUSED, "REFUSED"},
	        {ARES_ETIMEOUT, "timeout"},
	        {ARES_EFORMERR, "FORMERR"},
	        {ARES_ENOTIMP, "NOTIMP"},
	        {ARES_EBADRESP, "malformed response"},
	        {ARES_EBADNAME, "not a valid domain name"},
	        /* c-ares 1.18 also ends this way when every server said SERVFAIL/REFUSED */
	        {ARES_ECONNREFUSED, "connection refused, or SERVFAIL/REFUSED from every server"},
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (names[i].status == status)
			return names[i].text;
	return ares_strerror(status);
}

/* kind_name - the query type as text */
static const char *kind_name(enum qkind kind)
{
	return kind == Q_MX ? "MX" : kind == Q_A ? "A" : "AAAA";
}

/* prng_next - splitmix64 step of the resolver's generator */
static uint64_t prng_next(struct dns_resolver *r)
{
	uint64_t z = (r->prng += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* prng_seed - seed from the kernel; if that fails, the clock (only MX order depends on it) */
static void prng_seed(struct dns_resolver *r)
{
	if (getrandom(&r->prng, sizeof(r->prng), GRND_NONBLOCK) != (ssize_t)sizeof(r->prng))
		r->prng = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)r;
}

/* ------------------------------------------------- c-ares on libevent */

/* reschedule - arm the timer for c-ares' next timeout, or disarm it */
static void reschedule(struct dns_resolver *r)
{
	struct timeval tv;
	if (ares_timeout(r->channel, NULL, &tv) != NULL)
		evtimer_add(r->timer, &tv);
	else
		evtimer_del(r->timer);
}

/* on_sock_event - a c-ares socket is readable or writable */
static void on_sock_event(evutil_socket_t fd, short what, void *arg)
{
	struct dns_resolver *r = arg;
	ares_process_fd(r->channel, (what & EV_READ) ? fd : ARES_SOCKET_BAD,
	                (what & EV_WRITE) ? fd : ARES_SOCKET_BAD);
	reschedule(r);
}

/* on_timer - let c-ares expire and retry queries */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct dns_resolver *r = arg;
	ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	reschedule(r);
}

/* sock_forget - stop watching one socket */
static void sock_forget(struct dns_resolver *r, struct dns_sock **link)
{
	struct dns_sock *s = *link;
	*link = s->next;
	if (s->ev != NULL)
		event_free(s->ev);
	free(s);
}

/* on_sock_state - c-ares opened, changed or closed a socket. If the event
 * cannot be made the query is not lost: the timer times it out. */
static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
	struct dns_resolver *r = data;
	struct dns_sock **link = &r->socks;
	while (*link != NULL && (*link)->fd != fd)
		link = &(*link)->next;
	short flags = (short)((readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
	if (*link != NULL && (*link)->flags == flags)
		return;
	if (*link != NULL)
		sock_forget(r, link);
	if (flags == 0)
		return;
	struct dns_sock *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return;
	s->fd = fd;
	s->flags = flags;
	s->ev = event_new(r->base, fd, flags | EV_PERSIST, on_sock_event, r);
	if (s->ev == NULL || event_add(s->ev, NULL) != 0) {
		if (s->ev != NULL)
			event_free(s->ev);
		free(s);
		return;
	}
	s->next = r->socks;
	r->socks = s;
}

/* library_init - ares_library_init, once per process */
static pthread_once_t library_once = PTHREAD_ONCE_INIT;
static int library_status = ARES_ENOTINITIALIZED;

static void library_init(void)
{
	library_status = ares_library_init(ARES_LIB_INIT_ALL);
}

/* The channel's socket functions: the system's, except that socket()
 * failing for lack of resources is remembered (see the header comment).
 * With socket functions set, c-ares 1.18 leaves configuring the socket to
 * them: non-blocking and close-on-exec, as its own would be, and
 * TCP_NODELAY for the length-prefixed TCP queries. */
static ares_socket_t sock_open(int family, int type, int protocol, void *arg)
{
	struct dns_resolver *r = arg;
	int fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
	int err = errno;
	r->sock_errno = fd < 0 && classify_errno_ours(err) != NULL ? err : 0;
	if (fd < 0) {
		errno = err;
		return ARES_SOCKET_BAD;
	}
	int on = 1;
	if (type == SOCK_STREAM)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)); /* only a delay if not */
	return fd;
}

static int sock_close(ares_socket_t fd, void *arg)
{
	return close(fd);
}

static int sock_connect(ares_socket_t fd, const struct sockaddr *sa, ares_socklen_t len, void *arg)
{
	return connect(fd, sa, len);
}

static ares_ssize_t sock_recvfrom(ares_socket_t fd, void *buf, size_t len, int flags, struct sockaddr *from,
                                  ares_socklen_t *from_len, void *arg)
{
	return recvfrom(fd, buf, len, flags, from, from_len);
}

/* c-ares' own send uses MSG_NOSIGNAL: a TCP server that hung up must not
 * raise SIGPIPE in a program that does not ignore it */
static ares_ssize_t sock_sendv(ares_socket_t fd, const struct iovec *iov, int n, void *arg)
{
	struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n};
	return sendmsg(fd, &msg, MSG_NOSIGNAL);
}

static const struct ares_socket_functions sock_functions = {
        .asocket = sock_open,
        .aclose = sock_close,
        .aconnect = sock_connect,
        .arecvfrom = sock_recvfrom,
        .asendv = sock_sendv,
};

/* servers_csv - "a,b,c" from the configured entries; false if one is unusable */
static bool servers_csv(const struct conf_strings *servers, char *csv, size_t size, char *why,
                        size_t why_size)
{
	csv[0] = '\0';
	for (size_t i = 0; i < servers->count; i++) {
		const char *item = servers->items[i];
		if (item[0] == '\0' || strchr(item, ',') != NULL || strlen(csv) + strlen(item) + 2 > size) {
			snprintf(why, why_size, "unusable DNS server \"%s\"", item);
			return false;
		}
		appendf(csv, size, "%s%s", i > 0 ? "," : "", item);
	}
	return true;
}

/* channel_open - the c-ares channel with our options and servers */
static bool channel_open(struct dns_resolver *r, const struct conf_strings *servers, int64_t timeout_ms,
                         int flags, char *why, size_t why_size)
{
	struct ares_options opts;
	memset(&opts, 0, sizeof(opts));
	opts.sock_state_cb = on_sock_state;
	opts.sock_state_cb_data = r;
	opts.timeout = (int)timeout_ms;
	opts.tries = ARES_TRIES;
	opts.flags = flags;
	int status = ares_init_options(&r->channel, &opts,
	                               ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
	                                       (flags != 0 ? ARES_OPT_FLAGS : 0));
	if (status != ARES_SUCCESS) {
		snprintf(why, why_size, "c-ares: %s", ares_strerror(status));
		return false;
	}
	if (servers == NULL || servers->count == 0)
		return true;
	char csv[4096];
	if (!servers_csv(servers, csv, sizeof(csv), why, why_size))
		return false;
	status = ares_set_servers_ports_csv(r->channel, csv);
	if (status != ARES_SUCCESS) {
		snprintf(why, why_size, "DNS servers \"%s\": %s", csv, ares_strerror(status));
		return false;
	}
	return true;
}

/* server_count - how many servers the channel asks */
static size_t server_count(ares_channel channel)
{
	struct ares_addr_port_node *list = NULL;
	size_t n = 0;
	if (ares_get_servers_ports(channel, &list) != ARES_SUCCESS)
		return 0;
	for (const struct ares_addr_port_node *s = list; s != NULL; s = s->next)
		n++;
	ares_free_data(list);
	return n;
}

/* channel_setup - with one server there is no other to fall back on after
 * a SERVFAIL or REFUSED, so let those through (NOCHECKRESP) and name them;
 * with several, c-ares tries the next (and says only ECONNREFUSED) */
static bool channel_setup(struct dns_resolver *r, const struct conf_strings *servers, int64_t timeout_ms,
                          char *why, size_t why_size)
{
	if (!channel_open(r, servers, timeout_ms, 0, why, why_size))
		return false;
	if (server_count(r->channel) != 1)
		return true;
	ares_destroy(r->channel);
	r->channel = NULL;
	return channel_open(r, servers, timeout_ms, ARES_FLAG_NOCHECKRESP, why, why_size);
}

/* dns_resolver_new - see dns.h */
struct dns_resolver *dns_resolver_new(struct event_base *base, const struct conf_strings *servers,
                                      int64_t timeout_ms, char *why, size_t why_size)
{
	if (timeout_ms <= 0 || timeout_ms > 3600000) {
		snprintf(why, why_size, "DNS timeout %lld ms out of range", (long long)timeout_ms);
		return NULL;
	}
	pthread_once(&library_once, library_init);
	if (library_status != ARES_SUCCESS) {
		snprintf(why, why_size, "c-ares: %s", ares_strerror(library_status));
		return NULL;
	}
	struct dns_resolver *r = calloc(1, sizeof(*r));
	if (r == NULL || (r->timer = evtimer_new(base, on_timer, r)) == NULL) {
		snprintf(why, why_size, "out of memory");
		if (r != NULL && r->timer != NULL)
			event_free(r->timer);
		free(r);
		return NULL;
	}
	r->base = base;
	LIST_INIT(&r->lookups);
	prng_seed(r);
	if (channel_setup(r, servers, timeout_ms, why, why_size)) {
		ares_set_socket_functions(r->channel, &sock_functions, r);
		return r;
	}
	if (r->channel != NULL)
		ares_destroy(r->channel);
	event_free(r->timer);
	free(r);
	return NULL;
}

/* ------------------------------------------------------------- flights */

/* flight_free - the flight and all it still owns (its lookup gone) */
static void flight_free(struct flight *fl)
{
	free(fl->domain);
	free(fl->work);
	free(fl->res.hosts);
	free(fl);
}

/* flight_abandon - nobody will use its answer: drain its queries, then free it */
static void flight_abandon(struct flight *fl)
{
	fl->abandoned = true;
	fl->leader = NULL; /* its trace callback may go away with it */
	if (fl->pending == 0)
		flight_free(fl);
}

/* start_query - one ares_query for a name; false only if it could not be sent */
static bool start_query(struct flight *fl, const char *name, enum qkind kind, size_t host)
{
	struct dns_query *q = malloc(sizeof(*q));
	if (q == NULL)
		return false;
	q->flight = fl;
	q->kind = kind;
	q->host = host;
	fl->pending++;
	int type = kind == Q_MX ? ns_t_mx : kind == Q_A ? ns_t_a : ns_t_aaaa;
	struct dns_resolver *r = fl->resolver; /* the answer may come at once; callers hold a guard */
	ares_query(r->channel, name, ns_c_in, type, on_answer, q);
	reschedule(r);
	return true;
}

/* settle - the final status is known before (or without) host lookups */
__attribute__((format(printf, 3, 4))) static void settle(struct flight *fl, enum dns_status status,
                                                         const char *fmt, ...)
{
	fl->res.status = status;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(fl->res.detail, sizeof(fl->res.detail), fmt, ap);
	va_end(ap);
	fl->answered = true;
}

/* query_text - what a query's status means: ECONNREFUSED after a socket()
 * of ours failed (fl->ours_errno) is that failure, not the servers' */
static const char *query_text(const struct flight *fl, int status, char *buf, size_t size)
{
	if (status != ARES_ECONNREFUSED || fl->ours_errno == 0)
		return status_text(status);
	snprintf(buf, size, "%s (socket: %s)", classify_errno_ours(fl->ours_errno), strerror(fl->ours_errno));
	return buf;
}

/* settle_ours - the flight failed for lack of resources of ours (err) */
static void settle_ours(struct flight *fl, int err)
{
	fl->ours_errno = err;
	settle(fl, DNS_TEMPFAIL, "%s", classify_errno_ours(err));
}

/* host_note_temp - remember the first temporary failure of a host lookup */
static void host_note_temp(struct flight *fl, enum qkind kind, const char *name, const char *what)
{
	if (fl->temp_detail[0] == '\0')
		textf(fl->temp_detail, sizeof(fl->temp_detail), "%s %s: %s", kind_name(kind), name, what);
}

/* start_hosts - A and AAAA of every host in work[], all at once */
static void start_hosts(struct flight *fl)
{
	fl->pending++; /* guard: answers may come while we still send */
	for (size_t i = 0; i < fl->work_count; i++) {
		struct host_work *w = &fl->work[i];
		for (enum qkind kind = Q_A; kind <= Q_AAAA; kind++) {
			if (!start_query(fl, w->name, kind, i)) {
				w->temp = true;
				fl->ours_errno = ENOMEM;
				host_note_temp(fl, kind, w->name, CLASSIFY_NO_MEMORY);
			}
		}
	}
	fl->pending--;
}

/* start_implicit - no MX: the domain itself is the mail host */
static void start_implicit(struct flight *fl)
{
	fl->res.implicit_mx = true;
	flight_trace(fl, "no MX; using A/AAAA of %s (implicit MX)", fl->domain);
	fl->work = calloc(1, sizeof(*fl->work));
	if (fl->work == NULL) {
		settle_ours(fl, ENOMEM);
		return;
	}
	fl->work_count = 1;
	snprintf(fl->work[0].name, sizeof(fl->work[0].name), "%s", fl->domain);
	start_hosts(fl);
}

/* is_root - the MX target "." of a null MX */
static bool is_root(const char *host)
{
	return host[0] == '\0' || strcmp(host, ".") == 0;
}

/* by_preference - qsort order of MX records */
static int by_preference(const void *a, const void *b)
{
	const struct ares_mx_reply *x = *(const struct ares_mx_reply *const *)a;
	const struct ares_mx_reply *y = *(const struct ares_mx_reply *const *)b;
	return (x->priority > y->priority) - (x->priority < y->priority);
}

/* shuffle_equal - Fisher-Yates within each run of equal preference */
static void shuffle_equal(struct dns_resolver *r, struct ares_mx_reply **v, size_t n)
{
	for (size_t start = 0, end; start < n; start = end) {
		for (end = start + 1; end < n && v[end]->priority == v[start]->priority; end++)
			;
		for (size_t i = end - 1; i > start; i--) {
			size_t j = start + (size_t)(prng_next(r) % (i - start + 1));
			struct ares_mx_reply *t = v[i];
			v[i] = v[j];
			v[j] = t;
		}
	}
}

/* already_listed - a host name already in work[] */
static bool already_listed(const struct flight *fl, const char *name)
{
	for (size_t i = 0; i < fl->work_count; i++)
		if (strcasecmp(fl->work[i].name, name) == 0)
			return true;
	return false;
}

/* note_literal - an MX host that is an IP address: looked up as a name anyway */
static void note_literal(struct flight *fl, const char *name)
{
	unsigned char buf[sizeof(struct in6_addr)];
	if (inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1)
		flight_trace(
		        fl, "MX host %s is an IP address, not a name (bad practice); looking it up as a name",
		        name);
}

/* keep_hosts - sorted, shuffled (which of equal preferences are kept),
 * deduplicated, at most max_mx, into work[] */
static void keep_hosts(struct flight *fl, struct ares_mx_reply **v, size_t n)
{
	qsort(v, n, sizeof(*v), by_preference);
	shuffle_equal(fl->resolver, v, n);
	for (size_t i = 0; i < n; i++) {
		if (fl->work_count >= fl->limits.max_mx) {
			flight_trace(fl, "keeping the first %zu MX hosts (max_mx)", fl->limits.max_mx);
			break;
		}
		if (strlen(v[i]->host) > DNS_NAME_MAX || already_listed(fl, v[i]->host))
			continue;
		note_literal(fl, v[i]->host);
		struct host_work *w = &fl->work[fl->work_count++];
		snprintf(w->name, sizeof(w->name), "%s", v[i]->host);
		w->preference = v[i]->priority;
	}
}

/* trace_mx - "MX d? -> 10 a, 20 b" in the order the server gave */
static void trace_mx(struct flight *fl, const struct ares_mx_reply *mx)
{
	char list[TRACE_MAX - 64] = "";
	for (const struct ares_mx_reply *m = mx; m != NULL; m = m->next)
		appendf(list, sizeof(list), "%s%u %s", m == mx ? "" : ", ", m->priority,
		        is_root(m->host) ? "." : m->host);
	flight_trace(fl, "MX %s? -> %s", fl->domain, list);
}

/* use_mx - MX records parsed: null MX, or the hosts to resolve */
static void use_mx(struct flight *fl, struct ares_mx_reply *mx)
{
	trace_mx(fl, mx);
	size_t total = 0, roots = 0;
	for (const struct ares_mx_reply *m = mx; m != NULL; m = m->next, total++)
		roots += is_root(m->host);
	if (roots == total) {
		settle(fl, DNS_NULL_MX, "null MX (RFC 7505)");
		return;
	}
	if (roots > 0)
		flight_trace(fl, "ignoring the null MX entry among real MX hosts");
	size_t max_mx = fl->limits.max_mx;
	struct ares_mx_reply **v = calloc(total - roots, sizeof(*v));
	fl->work = calloc(total - roots < max_mx ? total - roots : max_mx, sizeof(*fl->work));
	if (v == NULL || fl->work == NULL) {
		free(v);
		settle_ours(fl, ENOMEM);
		return;
	}
	size_t n = 0;
	for (struct ares_mx_reply *m = mx; m != NULL; m = m->next)
		if (!is_root(m->host))
			v[n++] = m;
	keep_hosts(fl, v, n);
	free(v);
	start_hosts(fl);
}

/* note_min - a TTL in seconds (DNSTTL_NONE: none) may lower the smallest one in *slot_ms */
static void note_min(int64_t *slot_ms, int64_t seconds)
{
	if (seconds != DNSTTL_NONE && seconds >= 0 && seconds * 1000 < *slot_ms)
		*slot_ms = seconds * 1000;
}

/* note_reply - what a reply says about how long it holds. records: the TTL
 * of its answer records counts (the MX records used); a negative answer
 * (NXDOMAIN, NODATA) counts its negative TTL, where it gives one. A reply
 * that cannot be read gives nothing: its TTL stays unknown. */
static void note_reply(struct flight *fl, bool records, int status, const unsigned char *abuf, int alen)
{
	struct dnsttl t;
	if (abuf == NULL || alen <= 0 || !dnsttl_scan(abuf, (size_t)alen, &t))
		return;
	if (records)
		note_min(&fl->records_ms, t.answer_s);
	if (status == ARES_ENOTFOUND || status == ARES_ENODATA)
		note_min(&fl->negative_ms, t.negative_s);
}

/* parse_status - what a parser's status says about the reply: a bad name
 * inside the reply (a compression pointer out of bounds, a loop) is a
 * malformed reply (temporary), not the "not a valid domain name" that
 * ARES_EBADNAME means from ares_query, which would make it a definite
 * NXDOMAIN (or a host without addresses) */
static int parse_status(int status)
{
	return status == ARES_EBADNAME ? ARES_EBADRESP : status;
}

/* on_mx - the MX query came back */
static void on_mx(struct flight *fl, int status, unsigned char *abuf, int alen)
{
	struct ares_mx_reply *mx = NULL;
	if (status == ARES_SUCCESS) {
		status = parse_status(ares_parse_mx_reply(abuf, alen, &mx));
		if (status == ARES_SUCCESS && mx == NULL)
			status = ARES_ENODATA;
	}
	note_reply(fl, status == ARES_SUCCESS, status, abuf, alen);
	if (status == ARES_SUCCESS) {
		use_mx(fl, mx);
		ares_free_data(mx);
		return;
	}
	char ours[96];
	const char *what = query_text(fl, status, ours, sizeof(ours));
	flight_trace(fl, "MX %s? -> %s", fl->domain, what);
	if (status == ARES_ENODATA)
		start_implicit(fl);
	else if (status == ARES_ENOTFOUND || status == ARES_EBADNAME)
		settle(fl, DNS_NXDOMAIN, "MX %s: %s", fl->domain, what);
	else if (what == ours) /* the reason first: classify_outcome_ours */
		settle(fl, DNS_TEMPFAIL, "%s: MX %s not asked", what, fl->domain);
	else
		settle(fl, DNS_TEMPFAIL, "MX %s: %s", fl->domain, what);
}

/* note_ttl - the answer holds no longer than an address record's TTL
 * (c-ares gives a TTL with the top bit set as negative: 0, RFC 2181) */
static void note_ttl(struct flight *fl, int ttl)
{
	note_min(&fl->records_ms, ttl > 0 ? ttl : 0);
}

/* take_addresses - parse an A or AAAA answer into the host's list */
static int take_addresses(struct flight *fl, struct host_work *w, enum qkind kind, unsigned char *abuf,
                          int alen)
{
	int n = DNS_HOST_ADDRS_MAX, status;
	if (kind == Q_A) {
		struct ares_addrttl ttls[DNS_HOST_ADDRS_MAX];
		status = parse_status(ares_parse_a_reply(abuf, alen, NULL, ttls, &n));
		for (int i = 0; status == ARES_SUCCESS && i < n; i++) {
			w->v4[w->n4++] = ttls[i].ipaddr;
			note_ttl(fl, ttls[i].ttl);
		}
	} else {
		struct ares_addr6ttl ttls[DNS_HOST_ADDRS_MAX];
		status = parse_status(ares_parse_aaaa_reply(abuf, alen, NULL, ttls, &n));
		for (int i = 0; status == ARES_SUCCESS && i < n; i++) {
			memcpy(&w->v6[w->n6++], &ttls[i].ip6addr, sizeof(struct in6_addr));
			note_ttl(fl, ttls[i].ttl);
		}
	}
	if (status == ARES_SUCCESS && n == 0)
		status = ARES_ENODATA;
	return status;
}

/* trace_addresses - "A host? -> 192.0.2.1, 192.0.2.2" */
static void trace_addresses(struct flight *fl, const struct host_work *w, enum qkind kind)
{
	char list[TRACE_MAX - 64] = "", text[INET6_ADDRSTRLEN];
	size_t n = kind == Q_A ? w->n4 : w->n6;
	for (size_t i = 0; i < n; i++) {
		const void *raw = kind == Q_A ? (const void *)&w->v4[i] : (const void *)&w->v6[i];
		if (inet_ntop(kind == Q_A ? AF_INET : AF_INET6, raw, text, sizeof(text)) == NULL)
			snprintf(text, sizeof(text), "?");
		appendf(list, sizeof(list), "%s%s", i > 0 ? ", " : "", text);
	}
	flight_trace(fl, "%s %s? -> %s", kind_name(kind), w->name, list);
}

/* on_host - an A or AAAA query of a mail host came back */
static void on_host(struct flight *fl, enum qkind kind, size_t host, int status, unsigned char *abuf,
                    int alen)
{
	struct host_work *w = &fl->work[host];
	if (status == ARES_SUCCESS)
		status = take_addresses(fl, w, kind, abuf, alen);
	if (status == ARES_SUCCESS) {
		trace_addresses(fl, w, kind);
		return;
	}
	note_reply(fl, false, status, abuf, alen);
	char ours[96];
	const char *what = query_text(fl, status, ours, sizeof(ours));
	flight_trace(fl, "%s %s? -> %s", kind_name(kind), w->name, what);
	if (status != ARES_ENOTFOUND && status != ARES_ENODATA && status != ARES_EBADNAME) {
		w->temp = true;
		host_note_temp(fl, kind, w->name, what);
	}
}

/* pack_hosts - the hosts of work[] that have an address, in one block:
 * hosts, then every host's IPv6 and IPv4 addresses, then the names (the
 * names last: after a name of any length an address would be misaligned);
 * false if out of memory */
static bool pack_hosts(struct result *res, const struct host_work *work, size_t n)
{
	size_t kept = 0, bytes = 0;
	for (size_t i = 0; i < n; i++) {
		if (work[i].n4 + work[i].n6 == 0)
			continue;
		kept++;
		bytes += work[i].n6 * sizeof(struct in6_addr) + work[i].n4 * sizeof(struct in_addr) +
		         strlen(work[i].name) + 1;
	}
	if (kept == 0)
		return true;
	res->hosts = malloc(kept * sizeof(*res->hosts) + bytes);
	if (res->hosts == NULL)
		return false;
	unsigned char *p = (unsigned char *)(res->hosts + kept); /* in6_addr and in_addr need 4 */
	for (size_t i = 0; i < n; i++) {
		const struct host_work *w = &work[i];
		if (w->n4 + w->n6 == 0)
			continue;
		struct mail_host *h = &res->hosts[res->host_count++];
		h->preference = w->preference;
		h->n4 = w->n4;
		h->n6 = w->n6;
		h->v6 = memcpy(p, w->v6, w->n6 * sizeof(struct in6_addr));
		p += w->n6 * sizeof(struct in6_addr);
		h->v4 = memcpy(p, w->v4, w->n4 * sizeof(struct in_addr));
		p += w->n4 * sizeof(struct in_addr);
	}
	for (size_t i = 0, k = 0; i < n; i++) {
		const struct host_work *w = &work[i];
		if (w->n4 + w->n6 == 0)
			continue;
		res->hosts[k++].name = memcpy(p, w->name, strlen(w->name) + 1);
		p += strlen(w->name) + 1;
	}
	return true;
}

/* conclude - every query is back: the result's status, and its hosts */
static void conclude(struct flight *fl)
{
	struct result *res = &fl->res;
	if (fl->answered)
		return;
	bool temp = false;
	for (size_t i = 0; i < fl->work_count; i++) {
		temp = temp || fl->work[i].temp;
		if (fl->work[i].n4 + fl->work[i].n6 == 0)
			flight_trace(fl, "%s has no address: skipped", fl->work[i].name);
	}
	if (!pack_hosts(res, fl->work, fl->work_count))
		settle_ours(fl, ENOMEM);
	else if (res->host_count > 0)
		res->status = DNS_OK;         /* its detail: see assemble */
	else if (temp && fl->ours_errno != 0) /* the reason first: classify_outcome_ours */
		settle(fl, DNS_TEMPFAIL, "%s: %s (%s)", classify_errno_ours(fl->ours_errno),
		       res->implicit_mx ? "no address asked for" : "not every MX host's address asked for",
		       fl->temp_detail);
	else if (temp)
		settle(fl, DNS_TEMPFAIL, "%s: %s",
		       res->implicit_mx ? "no MX, no address yet" : "no MX host resolves yet",
		       fl->temp_detail);
	else if (res->implicit_mx)
		settle(fl, DNS_NO_MAIL_HOST, "no MX and no A/AAAA for %s", fl->domain);
	else
		settle(fl, DNS_NO_MAIL_HOST, "no MX host of %s has an address", fl->domain);
}

/* ------------------------------------------------------------- answers */

/* lookup_fail - a lookup's answer is a temporary failure of its own (ours) */
static void lookup_fail(struct dns_lookup *lk, const char *why)
{
	free(lk->answer.hosts);
	lk->answer.hosts = NULL;
	lk->answer.host_count = 0;
	lk->answer.status = DNS_TEMPFAIL;
	lk->answer.ours = true; /* every caller: out of memory */
	lk->answer.ttl_ms = 0;
	snprintf(lk->answer.detail, sizeof(lk->answer.detail), "%s", why);
}

/* shuffled_order - indexes of res->hosts, equal preferences in this lookup's own random order */
static void shuffled_order(struct dns_resolver *r, const struct result *res, size_t *order)
{
	for (size_t i = 0; i < res->host_count; i++)
		order[i] = i;
	for (size_t start = 0, end; start < res->host_count; start = end) {
		unsigned pref = res->hosts[start].preference;
		for (end = start + 1; end < res->host_count && res->hosts[end].preference == pref; end++)
			;
		for (size_t i = end - 1; i > start; i--) {
			size_t j = start + (size_t)(prng_next(r) % (i - start + 1));
			size_t t = order[i];
			order[i] = order[j];
			order[j] = t;
		}
	}
}

/* add_addresses - copy one host's addresses, IPv4 first, within the budget */
static size_t add_addresses(struct dns_host *out, const struct mail_host *m, size_t budget)
{
	size_t n = 0;
	for (size_t i = 0; i < m->n4 && n < budget && n < DNS_HOST_ADDRS_MAX; i++, n++) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&out->addresses[n];
		sin->sin_family = AF_INET;
		sin->sin_addr = m->v4[i];
	}
	for (size_t i = 0; i < m->n6 && n < budget && n < DNS_HOST_ADDRS_MAX; i++, n++) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->addresses[n];
		sin6->sin6_family = AF_INET6;
		sin6->sin6_addr = m->v6[i];
	}
	out->address_count = n;
	return n;
}

/* answer_ttl - dns_answer.ttl_ms for ttl_left_ms, what is left of the
 * result's TTL (RESULT_TTL_UNKNOWN: unknown, reported as 0); a TTL that
 * is known and over is reported as 1 ms, since 0 says "unknown" */
static int64_t answer_ttl(int64_t ttl_left_ms)
{
	if (ttl_left_ms == RESULT_TTL_UNKNOWN)
		return 0;
	return ttl_left_ms > 0 ? ttl_left_ms : 1;
}

/* assemble - one lookup's answer from a finished result: its own order of
 * equal preferences, max_addresses applied in that order; tracing: the
 * lookup led the resolution, so its trace hears about the cuts;
 * ttl_left_ms: what is left of the result's TTL */
static void assemble(struct dns_lookup *lk, const struct result *res, bool tracing, int64_t ttl_left_ms)
{
	struct dns_answer *a = &lk->answer;
	a->status = res->status;
	a->implicit_mx = res->implicit_mx;
	a->ttl_ms = answer_ttl(ttl_left_ms);
	snprintf(a->detail, sizeof(a->detail), "%s", res->detail);
	if (res->status != DNS_OK)
		return;
	a->hosts = calloc(res->host_count, sizeof(*a->hosts));
	if (a->hosts == NULL) {
		lookup_fail(lk, CLASSIFY_NO_MEMORY);
		return;
	}
	size_t order[HARD_MAX_MX], total = 0;
	shuffled_order(lk->resolver, res, order);
	for (size_t i = 0; i < res->host_count; i++) {
		const struct mail_host *m = &res->hosts[order[i]];
		if (total >= lk->limits.max_addresses) {
			if (tracing)
				lookup_trace(lk, "%s skipped: max_addresses (%zu) reached", m->name,
				             lk->limits.max_addresses);
			continue;
		}
		struct dns_host *h = &a->hosts[a->host_count++];
		snprintf(h->name, sizeof(h->name), "%s", m->name);
		h->preference = m->preference;
		total += add_addresses(h, m, lk->limits.max_addresses - total);
	}
	if (a->implicit_mx)
		textf(a->detail, sizeof(a->detail), "no MX; using A/AAAA of %s (implicit MX)", lk->domain);
	else
		textf(a->detail, sizeof(a->detail), "%zu MX host(s), %zu address(es)", a->host_count, total);
}

/* answer_ready - the lookup's answer is built: done runs from the loop */
static void answer_ready(struct dns_lookup *lk)
{
	lk->state = L_FINISHING;
	event_active(lk->kick, EV_TIMEOUT, 1);
}

/* result_ttl - how long DNS says the result holds: as long as the
 * shortest known TTL of the replies it rests on, records (MX, null MX, A,
 * AAAA) and negative answers alike (NXDOMAIN and NODATA with an SOA: no
 * MX, so the implicit MX; a host without IPv6; a host that does not
 * exist), since any of them changing may change the answer. TEMPFAIL:
 * unknown (never kept, nothing drawn from it). */
static int64_t result_ttl(const struct flight *fl)
{
	if (fl->res.status == DNS_TEMPFAIL)
		return RESULT_TTL_UNKNOWN;
	int64_t ms = fl->records_ms < fl->negative_ms ? fl->records_ms : fl->negative_ms;
	return ms == TTL_NONE ? RESULT_TTL_UNKNOWN : ms;
}

/* flight_finish - hand the result to its lookup, free the flight */
static void flight_finish(struct flight *fl)
{
	conclude(fl);
	fl->res.ttl_ms = result_ttl(fl);
	struct dns_lookup *lk = fl->leader;
	if (lk != NULL) {
		lk->flight = NULL;
		assemble(lk, &fl->res, true, fl->res.ttl_ms);
		lk->answer.ours = lk->answer.status == DNS_TEMPFAIL && fl->ours_errno != 0;
		answer_ready(lk);
	}
	flight_free(fl);
}

/* flight_check - after a query or a guard: finish, or free an abandoned
 * flight, once nothing is in flight any more */
static void flight_check(struct flight *fl)
{
	if (fl->pending > 0)
		return;
	if (fl->abandoned)
		flight_free(fl);
	else
		flight_finish(fl);
}

/* on_answer - every ares_query ends here, exactly once */
static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct dns_query *q = arg;
	struct flight *fl = q->flight;
	enum qkind kind = q->kind;
	size_t host = q->host;
	free(q);
	fl->pending--;
	if (status == ARES_ECONNREFUSED && fl->resolver->sock_errno != 0 && !fl->abandoned)
		fl->ours_errno = fl->resolver->sock_errno; /* no socket: no server was asked */
	if (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED)
		fl->abandoned = true; /* the channel is going away: no done, no new queries */
	if (fl->abandoned)
		; /* drained: only freed below */
	else if (kind == Q_MX)
		on_mx(fl, status, abuf, alen);
	else
		on_host(fl, kind, host, status, abuf, alen);
	flight_check(fl);
}

/* flight_start - the resolution of lk's domain; false if out of memory */
static bool flight_start(struct dns_lookup *lk)
{
	struct dns_resolver *r = lk->resolver;
	struct flight *fl = calloc(1, sizeof(*fl));
	if (fl == NULL || (fl->domain = strdup(lk->domain)) == NULL) {
		free(fl);
		return false;
	}
	fl->resolver = r;
	fl->limits = lk->limits;
	fl->leader = lk;
	lk->flight = fl;
	fl->records_ms = fl->negative_ms = TTL_NONE;
	lk->state = L_WAITING;
	fl->pending++; /* guard: the answer may come at once */
	if (!start_query(fl, fl->domain, Q_MX, 0))
		settle_ours(fl, ENOMEM);
	fl->pending--;
	flight_check(fl);
	return true;
}

/* ------------------------------------------------------------- lookups */

/* lookup_unlist - take a lookup off its resolver's list */
static void lookup_unlist(struct dns_lookup *lk)
{
	if (lk->resolver == NULL)
		return;
	LIST_REMOVE(lk, link);
	lk->resolver = NULL;
}

/* free_lookup - the lookup and all it owns */
static void free_lookup(struct dns_lookup *lk)
{
	if (lk->kick != NULL)
		event_free(lk->kick);
	free(lk->answer.hosts);
	free(lk->domain);
	free(lk);
}

/* lookup_begin - start the lookup's resolution */
static void lookup_begin(struct dns_lookup *lk)
{
	if (!flight_start(lk)) {
		lookup_fail(lk, CLASSIFY_NO_MEMORY);
		answer_ready(lk);
	}
}

/* on_kick - from the loop: start the lookup, or hand over its answer */
static void on_kick(evutil_socket_t fd, short what, void *arg)
{
	struct dns_lookup *lk = arg;
	if (lk->state == L_START) {
		lookup_begin(lk);
		return;
	}
	lk->state = L_IN_DONE;
	lookup_unlist(lk);
	lk->done(lk->done_arg, &lk->answer);
	free_lookup(lk);
}

/* clamp_limits - the caller's limits, or the defaults, within bounds */
static struct dns_limits clamp_limits(const struct dns_limits *limits)
{
	struct dns_limits l = {.max_mx = limits != NULL ? limits->max_mx : DEFAULT_MAX_MX,
	                       .max_addresses =
	                               limits != NULL ? limits->max_addresses : DEFAULT_MAX_ADDRESSES};
	l.max_mx = l.max_mx < 1 ? 1 : l.max_mx > HARD_MAX_MX ? HARD_MAX_MX : l.max_mx;
	l.max_addresses = l.max_addresses < 1 ? 1 : l.max_addresses;
	return l;
}

/* dns_lookup_mx - see dns.h */
struct dns_lookup *dns_lookup_mx(struct dns_resolver *resolver, const char *domain,
                                 const struct dns_limits *limits, dns_trace_fn trace, void *trace_arg,
                                 dns_answer_fn done, void *arg)
{
	struct dns_lookup *lk = calloc(1, sizeof(*lk));
	if (lk == NULL)
		return NULL;
	lk->kick = event_new(resolver->base, -1, 0, on_kick, lk);
	lk->domain = strdup(domain);
	if (lk->kick == NULL || lk->domain == NULL) {
		free_lookup(lk);
		return NULL;
	}
	lk->limits = clamp_limits(limits);
	lk->trace = trace;
	lk->trace_arg = trace_arg;
	lk->done = done;
	lk->done_arg = arg;
	lk->resolver = resolver;
	LIST_INSERT_HEAD(&resolver->lookups, lk, link);
	event_active(lk->kick, EV_TIMEOUT, 1);
	return lk;
}

/* dns_lookup_cancel - see dns.h */
void dns_lookup_cancel(struct dns_lookup *lookup)
{
	if (lookup == NULL || lookup->cancelled)
		return;
	lookup->cancelled = true;
	if (lookup->state == L_IN_DONE)
		return; /* inside its own done: freed when done returns */
	if (lookup->state == L_WAITING && lookup->flight != NULL)
		flight_abandon(lookup->flight);
	lookup_unlist(lookup);
	free_lookup(lookup);
}

/* dns_resolver_free - see dns.h */
void dns_resolver_free(struct dns_resolver *resolver)
{
	if (resolver == NULL)
		return;
	while (!LIST_EMPTY(&resolver->lookups))
		dns_lookup_cancel(LIST_FIRST(&resolver->lookups));
	ares_destroy(resolver->channel); /* abandoned flights are freed with their last query */
	while (resolver->socks != NULL)
		sock_forget(resolver, &resolver->socks);
	event_free(resolver->timer);
	free(resolver);
}

/* dns_status_name - see dns.h */
const char *dns_status_name(enum dns_status status)
{
	switch (status) {
	case DNS_OK:
		return "ok";
	case DNS_NXDOMAIN:
		return "nxdomain";
	case DNS_NULL_MX:
		return "null_mx";
	case DNS_NO_MAIL_HOST:
		return "no_mail_host";
	case DNS_TEMPFAIL:
		return "tempfail";
	}
	return "unknown";
}

/* dns_resolver_idle - see dns.h */
bool dns_resolver_idle(const struct dns_resolver *r)
{
	return LIST_EMPTY(&r->lookups);
}
