/*
 * dns.c - MX lookup with c-ares driven by the caller's libevent loop.
 *
 * Owns: the c-ares channel of a resolver, one libevent event per c-ares
 * socket (ARES_OPT_SOCK_STATE_CB), the timer that feeds c-ares its
 * timeouts, the resolver's PRNG (equal-preference shuffle) and every
 * lookup: its in-flight query records, its per-host work and the answer
 * handed to done.
 *
 * A lookup: MX query; NODATA -> the domain is its own (implicit) MX; then
 * A and AAAA of every kept host at once. It starts and ends from a libevent
 * callback (never from inside dns_lookup_mx, never nested in c-ares), so
 * done may free the resolver. A cancelled lookup stays allocated until its
 * last query comes back (c-ares 1.18 cannot cancel one query); destroying
 * the channel brings them all back with ARES_EDESTRUCTION.
 */
#include "dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_MAX_MX        5
#define DEFAULT_MAX_ADDRESSES 10
#define HARD_MAX_MX           64 /* whatever the caller asks: queries in flight per lookup */
#define TRACE_MAX             1024
#define ARES_TRIES            2

struct dns_sock {
	ares_socket_t fd;
	short flags; /* EV_READ / EV_WRITE now watched */
	struct event *ev;
	struct dns_sock *next;
};

struct dns_resolver {
	struct event_base *base;
	ares_channel channel;
	struct event *timer;
	struct dns_sock *socks;
	struct dns_lookup *lookups; /* running ones, not yet in done */
	uint64_t prng;
};

enum qkind { Q_MX, Q_A, Q_AAAA };

/* one ares_query in flight: the callback's argument */
struct dns_query {
	struct dns_lookup *lookup;
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

enum lstate { L_START, L_RUNNING, L_FINISHING, L_IN_DONE };

struct dns_lookup {
	struct dns_resolver *resolver;
	struct dns_lookup *prev, *next;
	char *domain;
	struct dns_limits limits;
	dns_trace_fn trace;
	void *trace_arg;
	dns_answer_fn done;
	void *done_arg;
	struct event *kick; /* deferred start, then deferred done */
	enum lstate state;
	bool cancelled;
	bool answered;    /* answer.status is final before host lookups */
	unsigned pending; /* queries in flight, plus guards */
	struct host_work *work;
	size_t work_count;
	char temp_detail[160]; /* the first temporary failure of a host */
	struct dns_answer answer;
};

static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen);

/* ---------------------------------------------------------------- helpers */

/* tracef - one "dns: ..." line to the lookup's trace callback */
__attribute__((format(printf, 2, 3))) static void tracef(struct dns_lookup *lk, const char *fmt, ...)
{
	if (lk->trace == NULL)
		return;
	char line[TRACE_MAX] = "dns: ";
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line + 5, sizeof(line) - 5, fmt, ap);
	va_end(ap);
	lk->trace(lk->trace_arg, line);
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
		free(r);
		return NULL;
	}
	r->base = base;
	prng_seed(r);
	if (channel_setup(r, servers, timeout_ms, why, why_size))
		return r;
	if (r->channel != NULL)
		ares_destroy(r->channel);
	event_free(r->timer);
	free(r);
	return NULL;
}

/* ------------------------------------------------------------- lookups */

/* unlink_lookup - take a lookup off its resolver's running list */
static void unlink_lookup(struct dns_lookup *lk)
{
	if (lk->resolver == NULL)
		return;
	if (lk->prev != NULL)
		lk->prev->next = lk->next;
	else
		lk->resolver->lookups = lk->next;
	if (lk->next != NULL)
		lk->next->prev = lk->prev;
	lk->prev = lk->next = NULL;
	lk->resolver = NULL;
}

/* free_lookup - the lookup and all it owns */
static void free_lookup(struct dns_lookup *lk)
{
	if (lk->kick != NULL)
		event_free(lk->kick);
	free(lk->work);
	free(lk->answer.hosts);
	free(lk->domain);
	free(lk);
}

/* start_query - one ares_query for a name; false only if it could not be sent */
static bool start_query(struct dns_lookup *lk, const char *name, enum qkind kind, size_t host)
{
	struct dns_query *q = malloc(sizeof(*q));
	if (q == NULL)
		return false;
	q->lookup = lk;
	q->kind = kind;
	q->host = host;
	lk->pending++;
	int type = kind == Q_MX ? ns_t_mx : kind == Q_A ? ns_t_a : ns_t_aaaa;
	struct dns_resolver *r = lk->resolver; /* the answer may come at once, but never done */
	ares_query(r->channel, name, ns_c_in, type, on_answer, q);
	reschedule(r);
	return true;
}

/* settle - the final answer is known before (or without) host lookups */
__attribute__((format(printf, 3, 4))) static void settle(struct dns_lookup *lk, enum dns_status status,
                                                         const char *fmt, ...)
{
	lk->answer.status = status;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(lk->answer.detail, sizeof(lk->answer.detail), fmt, ap);
	va_end(ap);
	lk->answered = true;
}

/* host_note_temp - remember the first temporary failure of a host lookup */
static void host_note_temp(struct dns_lookup *lk, enum qkind kind, const char *name, const char *what)
{
	if (lk->temp_detail[0] == '\0')
		textf(lk->temp_detail, sizeof(lk->temp_detail), "%s %s: %s", kind_name(kind), name, what);
}

/* add_addresses - copy one host's addresses, IPv4 first, within the budget */
static size_t add_addresses(struct dns_host *out, const struct host_work *w, size_t budget)
{
	size_t n = 0;
	for (size_t i = 0; i < w->n4 && n < budget && n < DNS_HOST_ADDRS_MAX; i++, n++) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&out->addresses[n];
		sin->sin_family = AF_INET;
		sin->sin_addr = w->v4[i];
	}
	for (size_t i = 0; i < w->n6 && n < budget && n < DNS_HOST_ADDRS_MAX; i++, n++) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->addresses[n];
		sin6->sin6_family = AF_INET6;
		sin6->sin6_addr = w->v6[i];
	}
	out->address_count = n;
	return n;
}

/* assemble - the answer from the hosts' A/AAAA results */
static void assemble(struct dns_lookup *lk)
{
	struct dns_answer *a = &lk->answer;
	a->hosts = calloc(lk->work_count > 0 ? lk->work_count : 1, sizeof(*a->hosts));
	if (a->hosts == NULL) {
		settle(lk, DNS_TEMPFAIL, "out of memory");
		return;
	}
	size_t total = 0;
	bool temp = false;
	for (size_t i = 0; i < lk->work_count; i++) {
		const struct host_work *w = &lk->work[i];
		temp = temp || w->temp;
		if (w->n4 + w->n6 == 0) {
			tracef(lk, "%s has no address: skipped", w->name);
			continue;
		}
		if (total >= lk->limits.max_addresses) {
			tracef(lk, "%s skipped: max_addresses (%zu) reached", w->name,
			       lk->limits.max_addresses);
			continue;
		}
		struct dns_host *h = &a->hosts[a->host_count++];
		snprintf(h->name, sizeof(h->name), "%s", w->name);
		h->preference = w->preference;
		total += add_addresses(h, w, lk->limits.max_addresses - total);
	}
	if (a->host_count > 0) {
		a->status = DNS_OK;
		if (a->implicit_mx)
			textf(a->detail, sizeof(a->detail), "no MX; using A/AAAA of %s (implicit MX)",
			      lk->domain);
		else
			textf(a->detail, sizeof(a->detail), "%zu MX host(s), %zu address(es)", a->host_count,
			      total);
	} else if (temp) {
		a->status = DNS_TEMPFAIL;
		textf(a->detail, sizeof(a->detail), "%s: %s",
		      a->implicit_mx ? "no MX, no address yet" : "no MX host resolves yet", lk->temp_detail);
	} else {
		a->status = DNS_NO_MAIL_HOST;
		if (a->implicit_mx)
			textf(a->detail, sizeof(a->detail), "no MX and no A/AAAA for %s", lk->domain);
		else
			textf(a->detail, sizeof(a->detail), "no MX host of %s has an address", lk->domain);
	}
}

/* maybe_complete - all queries back: build the answer, call done from the loop */
static void maybe_complete(struct dns_lookup *lk)
{
	if (lk->pending > 0 || lk->state != L_RUNNING || lk->cancelled)
		return;
	if (!lk->answered)
		assemble(lk);
	lk->state = L_FINISHING;
	event_active(lk->kick, EV_TIMEOUT, 1);
}

/* start_hosts - A and AAAA of every host in work[], all at once */
static void start_hosts(struct dns_lookup *lk)
{
	lk->pending++; /* guard: answers may come while we still send */
	for (size_t i = 0; i < lk->work_count; i++) {
		struct host_work *w = &lk->work[i];
		for (enum qkind kind = Q_A; kind <= Q_AAAA; kind++) {
			if (!start_query(lk, w->name, kind, i)) {
				w->temp = true;
				host_note_temp(lk, kind, w->name, "out of memory");
			}
		}
	}
	lk->pending--;
}

/* start_implicit - no MX: the domain itself is the mail host */
static void start_implicit(struct dns_lookup *lk)
{
	lk->answer.implicit_mx = true;
	tracef(lk, "no MX; using A/AAAA of %s (implicit MX)", lk->domain);
	lk->work = calloc(1, sizeof(*lk->work));
	if (lk->work == NULL) {
		settle(lk, DNS_TEMPFAIL, "out of memory");
		return;
	}
	lk->work_count = 1;
	snprintf(lk->work[0].name, sizeof(lk->work[0].name), "%s", lk->domain);
	start_hosts(lk);
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

/* already_listed - a host name already among the first n of work[] */
static bool already_listed(const struct dns_lookup *lk, const char *name)
{
	for (size_t i = 0; i < lk->work_count; i++)
		if (strcasecmp(lk->work[i].name, name) == 0)
			return true;
	return false;
}

/* note_literal - an MX host that is an IP address: looked up as a name anyway */
static void note_literal(struct dns_lookup *lk, const char *name)
{
	unsigned char buf[sizeof(struct in6_addr)];
	if (inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1)
		tracef(lk, "MX host %s is an IP address, not a name (bad practice); looking it up as a name",
		       name);
}

/* keep_hosts - sorted, shuffled, deduplicated, at most max_mx, into work[] */
static void keep_hosts(struct dns_lookup *lk, struct ares_mx_reply **v, size_t n)
{
	qsort(v, n, sizeof(*v), by_preference);
	shuffle_equal(lk->resolver, v, n);
	for (size_t i = 0; i < n; i++) {
		if (lk->work_count >= lk->limits.max_mx) {
			tracef(lk, "keeping the first %zu MX hosts (max_mx)", lk->limits.max_mx);
			break;
		}
		if (strlen(v[i]->host) > DNS_NAME_MAX || already_listed(lk, v[i]->host))
			continue;
		note_literal(lk, v[i]->host);
		struct host_work *w = &lk->work[lk->work_count++];
		snprintf(w->name, sizeof(w->name), "%s", v[i]->host);
		w->preference = v[i]->priority;
	}
}

/* trace_mx - "MX d? -> 10 a, 20 b" in the order the server gave */
static void trace_mx(struct dns_lookup *lk, const struct ares_mx_reply *mx)
{
	char list[TRACE_MAX - 64] = "";
	for (const struct ares_mx_reply *m = mx; m != NULL; m = m->next)
		appendf(list, sizeof(list), "%s%u %s", m == mx ? "" : ", ", m->priority,
		        is_root(m->host) ? "." : m->host);
	tracef(lk, "MX %s? -> %s", lk->domain, list);
}

/* use_mx - MX records parsed: null MX, or the hosts to resolve */
static void use_mx(struct dns_lookup *lk, struct ares_mx_reply *mx)
{
	trace_mx(lk, mx);
	size_t total = 0, roots = 0;
	for (const struct ares_mx_reply *m = mx; m != NULL; m = m->next, total++)
		roots += is_root(m->host);
	if (roots == total) {
		settle(lk, DNS_NULL_MX, "null MX (RFC 7505)");
		return;
	}
	if (roots > 0)
		tracef(lk, "ignoring the null MX entry among real MX hosts");
	struct ares_mx_reply **v = calloc(total - roots, sizeof(*v));
	lk->work = calloc(total - roots < lk->limits.max_mx ? total - roots : lk->limits.max_mx,
	                  sizeof(*lk->work));
	if (v == NULL || lk->work == NULL) {
		free(v);
		settle(lk, DNS_TEMPFAIL, "out of memory");
		return;
	}
	size_t n = 0;
	for (struct ares_mx_reply *m = mx; m != NULL; m = m->next)
		if (!is_root(m->host))
			v[n++] = m;
	keep_hosts(lk, v, n);
	free(v);
	start_hosts(lk);
}

/* on_mx - the MX query came back */
static void on_mx(struct dns_lookup *lk, int status, unsigned char *abuf, int alen)
{
	struct ares_mx_reply *mx = NULL;
	if (status == ARES_SUCCESS) {
		status = ares_parse_mx_reply(abuf, alen, &mx);
		if (status == ARES_SUCCESS && mx == NULL)
			status = ARES_ENODATA;
	}
	if (status == ARES_SUCCESS) {
		use_mx(lk, mx);
		ares_free_data(mx);
		return;
	}
	tracef(lk, "MX %s? -> %s", lk->domain, status_text(status));
	if (status == ARES_ENODATA)
		start_implicit(lk);
	else if (status == ARES_ENOTFOUND || status == ARES_EBADNAME)
		settle(lk, DNS_NXDOMAIN, "MX %s: %s", lk->domain, status_text(status));
	else
		settle(lk, DNS_TEMPFAIL, "MX %s: %s", lk->domain, status_text(status));
}

/* take_addresses - parse an A or AAAA answer into the host's list */
static int take_addresses(struct host_work *w, enum qkind kind, unsigned char *abuf, int alen)
{
	int n = DNS_HOST_ADDRS_MAX, status;
	if (kind == Q_A) {
		struct ares_addrttl ttls[DNS_HOST_ADDRS_MAX];
		status = ares_parse_a_reply(abuf, alen, NULL, ttls, &n);
		for (int i = 0; status == ARES_SUCCESS && i < n; i++)
			w->v4[w->n4++] = ttls[i].ipaddr;
	} else {
		struct ares_addr6ttl ttls[DNS_HOST_ADDRS_MAX];
		status = ares_parse_aaaa_reply(abuf, alen, NULL, ttls, &n);
		for (int i = 0; status == ARES_SUCCESS && i < n; i++)
			memcpy(&w->v6[w->n6++], &ttls[i].ip6addr, sizeof(struct in6_addr));
	}
	if (status == ARES_SUCCESS && n == 0)
		status = ARES_ENODATA;
	return status;
}

/* trace_addresses - "A host? -> 192.0.2.1, 192.0.2.2" */
static void trace_addresses(struct dns_lookup *lk, const struct host_work *w, enum qkind kind)
{
	char list[TRACE_MAX - 64] = "", text[INET6_ADDRSTRLEN];
	size_t n = kind == Q_A ? w->n4 : w->n6;
	for (size_t i = 0; i < n; i++) {
		const void *raw = kind == Q_A ? (const void *)&w->v4[i] : (const void *)&w->v6[i];
		if (inet_ntop(kind == Q_A ? AF_INET : AF_INET6, raw, text, sizeof(text)) == NULL)
			snprintf(text, sizeof(text), "?");
		appendf(list, sizeof(list), "%s%s", i > 0 ? ", " : "", text);
	}
	tracef(lk, "%s %s? -> %s", kind_name(kind), w->name, list);
}

/* on_host - an A or AAAA query of a mail host came back */
static void on_host(struct dns_lookup *lk, enum qkind kind, size_t host, int status, unsigned char *abuf,
                    int alen)
{
	struct host_work *w = &lk->work[host];
	if (status == ARES_SUCCESS)
		status = take_addresses(w, kind, abuf, alen);
	if (status == ARES_SUCCESS) {
		trace_addresses(lk, w, kind);
		return;
	}
	tracef(lk, "%s %s? -> %s", kind_name(kind), w->name, status_text(status));
	if (status != ARES_ENOTFOUND && status != ARES_ENODATA && status != ARES_EBADNAME) {
		w->temp = true;
		host_note_temp(lk, kind, w->name, status_text(status));
	}
}

/* on_answer - every ares_query ends here, exactly once */
static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct dns_query *q = arg;
	struct dns_lookup *lk = q->lookup;
	enum qkind kind = q->kind;
	size_t host = q->host;
	free(q);
	lk->pending--;
	if (lk->cancelled) {
		if (lk->pending == 0)
			free_lookup(lk);
		return;
	}
	if (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED)
		return; /* the channel is going away: no done, no new queries */
	if (kind == Q_MX)
		on_mx(lk, status, abuf, alen);
	else
		on_host(lk, kind, host, status, abuf, alen);
	maybe_complete(lk);
}

/* on_kick - from the loop: start the lookup, or hand over its answer */
static void on_kick(evutil_socket_t fd, short what, void *arg)
{
	struct dns_lookup *lk = arg;
	if (lk->state == L_START) {
		lk->state = L_RUNNING;
		if (!start_query(lk, lk->domain, Q_MX, 0))
			settle(lk, DNS_TEMPFAIL, "out of memory");
		maybe_complete(lk);
		return;
	}
	lk->state = L_IN_DONE;
	unlink_lookup(lk);
	lk->done(lk->done_arg, &lk->answer);
	free_lookup(lk);
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
	lk->limits.max_mx = limits != NULL ? limits->max_mx : DEFAULT_MAX_MX;
	lk->limits.max_addresses = limits != NULL ? limits->max_addresses : DEFAULT_MAX_ADDRESSES;
	lk->limits.max_mx = lk->limits.max_mx < 1             ? 1
	                    : lk->limits.max_mx > HARD_MAX_MX ? HARD_MAX_MX
	                                                      : lk->limits.max_mx;
	lk->limits.max_addresses = lk->limits.max_addresses < 1 ? 1 : lk->limits.max_addresses;
	lk->trace = trace;
	lk->trace_arg = trace_arg;
	lk->done = done;
	lk->done_arg = arg;
	lk->resolver = resolver;
	lk->next = resolver->lookups;
	if (lk->next != NULL)
		lk->next->prev = lk;
	resolver->lookups = lk;
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
	unlink_lookup(lookup);
	event_free(lookup->kick);
	lookup->kick = NULL;
	if (lookup->pending == 0)
		free_lookup(lookup);
}

/* dns_resolver_free - see dns.h */
void dns_resolver_free(struct dns_resolver *resolver)
{
	if (resolver == NULL)
		return;
	while (resolver->lookups != NULL)
		dns_lookup_cancel(resolver->lookups);
	ares_destroy(resolver->channel); /* cancelled lookups still waiting are freed here */
	while (resolver->socks != NULL)
		sock_forget(resolver, &resolver->socks);
	event_free(resolver->timer);
	free(resolver);
}
