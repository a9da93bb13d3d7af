/*
 * dnsquery.c - run dns_lookup_mx (src/dns.c) for some domains and print
 * what it answered.
 *
 * Test driver for tests/integration/test_dns.py and for asking by hand:
 *
 *   dnsquery [-v] [-s SERVER[:PORT]]... [-t TIMEOUT_MS] [--max-mx N]
 *            [--max-addresses N] [--cancel-after MS] [--cancel-which I]
 *            [--free-after MS] [--repeat-after MS] DOMAIN...
 *
 * Every domain is looked up at once on one event_base (a domain given
 * several times is looked up that many times, concurrently: the lookups
 * resolve separately: dns.c shares nothing); the answers are printed in the order the domains
 * were given:
 *
 *   example.com status=ok implicit=0 hosts=2
 *     host mx1.example.com pref 10 addrs 192.0.2.1,2001:db8::1
 *     ttl_ms 60000
 *
 * where ttl_ms is dns_answer.ttl_ms: how long DNS says the answer holds
 * (0: unknown).
 * With -v each answer is followed by "  detail TEXT" and by its trace lines
 * ("dns: ..."). --cancel-after cancels the lookup of the first domain (or
 * of domain number I, from 0, with --cancel-which) after MS
 * (dns_lookup_cancel) if it is still running, and --free-after frees the
 * resolver under every running lookup (dns_resolver_free); such domains
 * print status=cancelled. --repeat-after looks every domain up once more,
 * MS after the last first-round lookup ended (each resolves again: the
 * resolver keeps nothing); the second round's answers follow the first's,
 * in the same format. Owns its event_base and resolver. Exit
 * 0 whatever DNS said; 2 on a usage error, 1 when the resolver cannot be
 * made.
 */
#include <arpa/inet.h>
#include <event2/event.h>
#include <getopt.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dns.h"

#define SERVERS_MAX 8

struct query {
	struct run *run;
	const char *domain;
	struct dns_lookup *lookup;
	bool started, finished;
	char *output; /* the answer as printed, and the trace */
	size_t output_len;
};

struct run {
	struct event_base *base;
	struct dns_resolver *resolver;
	bool verbose;
	size_t count;  /* domains, and lookups per round */
	size_t rounds; /* 1, or 2 with --repeat-after */
	size_t round;  /* the one running */
	size_t running;
	size_t cancel_which;
	long repeat_after;
	struct event *repeat;
	struct dns_limits limits;
	char **domains;
	struct query *queries; /* count per round */
};

static const char *const status_names[] = {
        [DNS_OK] = "ok",
        [DNS_NXDOMAIN] = "nxdomain",
        [DNS_NULL_MX] = "null_mx",
        [DNS_NO_MAIL_HOST] = "no_mail_host",
        [DNS_TEMPFAIL] = "tempfail",
};

/* usage - print the synopsis and exit 2 */
static void usage(void)
{
	fprintf(stderr, "usage: dnsquery [-v] [-s SERVER[:PORT]]... [-t TIMEOUT_MS] [--max-mx N]\n"
	                "                [--max-addresses N] [--cancel-after MS] [--cancel-which I]\n"
	                "                [--free-after MS] [--repeat-after MS] DOMAIN...\n");
	exit(2);
}

/* number - a non-negative decimal argument, or usage */
static long number(const char *text)
{
	char *end;
	long v = strtol(text, &end, 10);
	if (*text == '\0' || *end != '\0' || v < 0)
		usage();
	return v;
}

/* append - add text to a query's output */
static void append(struct query *q, const char *text)
{
	size_t len = strlen(text);
	char *grown = realloc(q->output, q->output_len + len + 1);
	if (grown == NULL) {
		perror("dnsquery");
		exit(1);
	}
	q->output = grown;
	memcpy(q->output + q->output_len, text, len + 1);
	q->output_len += len;
}

/* out - append one formatted line to a query's output */
__attribute__((format(printf, 2, 3))) static void out(struct query *q, const char *fmt, ...)
{
	char line[2048];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	strcat(line, "\n");
	append(q, line);
}

/* on_trace - keep the line for -v */
static void on_trace(void *arg, const char *line)
{
	struct query *q = arg;
	out(q, "%s", line);
}

/* host_line - "  host NAME pref P addrs A,B" */
static void host_line(struct query *q, const struct dns_host *h)
{
	char addrs[DNS_HOST_ADDRS_MAX * (INET6_ADDRSTRLEN + 1)] = "";
	for (size_t i = 0; i < h->address_count; i++) {
		const struct sockaddr_storage *ss = &h->addresses[i];
		const void *raw = ss->ss_family == AF_INET
		                          ? (const void *)&((const struct sockaddr_in *)ss)->sin_addr
		                          : (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
		char text[INET6_ADDRSTRLEN];
		if (inet_ntop(ss->ss_family, raw, text, sizeof(text)) == NULL)
			snprintf(text, sizeof(text), "?");
		strcat(addrs, i > 0 ? "," : "");
		strcat(addrs, text);
	}
	out(q, "  host %s pref %u addrs %s", h->name, h->preference, addrs);
}

static void round_over(struct run *run);

/* on_done - one answer: format it (trace lines come first, keep them after) */
static void on_done(void *arg, const struct dns_answer *answer)
{
	struct query *q = arg;
	char *trace = q->output;
	q->output = NULL;
	q->output_len = 0;
	out(q, "%s status=%s implicit=%d hosts=%zu", q->domain, status_names[answer->status],
	    answer->implicit_mx ? 1 : 0, answer->host_count);
	for (size_t i = 0; i < answer->host_count; i++)
		host_line(q, &answer->hosts[i]);
	out(q, "  ttl_ms %lld", (long long)answer->ttl_ms);
	out(q, "  detail %s", answer->detail);
	if (trace != NULL)
		append(q, trace);
	free(trace);
	q->finished = true;
	q->lookup = NULL;
	if (--q->run->running == 0)
		round_over(q->run);
}

/* on_cancel_timer - cancel the chosen first-round lookup if it is still running */
static void on_cancel_timer(evutil_socket_t fd, short what, void *arg)
{
	struct run *run = arg;
	struct query *q = &run->queries[run->cancel_which];
	if (q->finished || q->lookup == NULL)
		return;
	dns_lookup_cancel(q->lookup);
	q->lookup = NULL;
	if (--run->running == 0)
		round_over(run);
}

/* on_free_timer - free the resolver under the running lookups */
static void on_free_timer(evutil_socket_t fd, short what, void *arg)
{
	struct run *run = arg;
	dns_resolver_free(run->resolver);
	run->resolver = NULL;
	event_base_loopbreak(run->base);
}

/* arm - a one-shot timer after ms */
static struct event *arm(struct run *run, long ms, event_callback_fn fn)
{
	struct event *ev = evtimer_new(run->base, fn, run);
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
	if (ev == NULL || event_add(ev, &tv) != 0) {
		fprintf(stderr, "dnsquery: cannot make a timer\n");
		exit(1);
	}
	return ev;
}

/* start_round - look every domain up, all at once */
static void start_round(struct run *run)
{
	for (size_t i = 0; i < run->count; i++) {
		struct query *q = &run->queries[run->round * run->count + i];
		q->run = run;
		q->domain = run->domains[i];
		q->started = true;
		run->running++;
		q->lookup = dns_lookup_mx(run->resolver, q->domain, &run->limits, on_trace, q, on_done, q);
		if (q->lookup == NULL) {
			fprintf(stderr, "dnsquery: cannot start a lookup of %s\n", q->domain);
			exit(1);
		}
	}
}

/* on_repeat_timer - the second round */
static void on_repeat_timer(evutil_socket_t fd, short what, void *arg)
{
	struct run *run = arg;
	run->round++;
	start_round(run);
}

/* round_over - every lookup of the round ended: the next round, or stop */
static void round_over(struct run *run)
{
	if (run->round + 1 < run->rounds && run->resolver != NULL && run->repeat == NULL)
		run->repeat = arm(run, run->repeat_after, on_repeat_timer);
	else
		event_base_loopbreak(run->base);
}

/* print_all - every answer, in the order the domains were given */
static void print_all(struct run *run)
{
	for (size_t i = 0; i < run->count * run->rounds; i++) {
		struct query *q = &run->queries[i];
		if (!q->started)
			continue;
		if (q->finished) {
			const char *text = q->output;
			if (!run->verbose) {
				/* without -v: the status line and host lines only */
				for (const char *line = text; *line != '\0';) {
					const char *nl = strchr(line, '\n');
					size_t len = nl != NULL ? (size_t)(nl - line + 1) : strlen(line);
					if (strncmp(line, "  detail ", 9) != 0 &&
					    strncmp(line, "dns: ", 5) != 0)
						fwrite(line, 1, len, stdout);
					line += len;
				}
			} else {
				fputs(text, stdout);
			}
		} else {
			printf("%s status=cancelled implicit=0 hosts=0\n", q->domain);
		}
		free(q->output);
	}
}

/* quit - free what main made (the resolver, the queries, the base) and
 * return status: every exit after the resolver exists goes through here */
static int quit(struct run *run, int status)
{
	dns_resolver_free(run->resolver);
	free(run->queries);
	event_base_free(run->base);
	libevent_global_shutdown();
	return status;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	        {"max-mx", required_argument, NULL, 'm'},
	        {"max-addresses", required_argument, NULL, 'a'},
	        {"cancel-after", required_argument, NULL, 'c'},
	        {"cancel-which", required_argument, NULL, 'w'},
	        {"free-after", required_argument, NULL, 'f'},
	        {"repeat-after", required_argument, NULL, 'r'},
	        {"verbose", no_argument, NULL, 'v'},
	        {NULL, 0, NULL, 0},
	};
	char *server_items[SERVERS_MAX];
	struct conf_strings servers = {.count = 0, .items = server_items};
	long timeout_ms = 5000, cancel_after = -1, free_after = -1;
	struct run run = {.rounds = 1, .limits = {.max_mx = 5, .max_addresses = 10}};
	int opt;
	while ((opt = getopt_long(argc, argv, "vs:t:", longopts, NULL)) != -1) {
		switch (opt) {
		case 'v':
			run.verbose = true;
			break;
		case 's':
			if (servers.count == SERVERS_MAX)
				usage();
			server_items[servers.count++] = optarg;
			break;
		case 't':
			timeout_ms = number(optarg);
			break;
		case 'm':
			run.limits.max_mx = (size_t)number(optarg);
			break;
		case 'a':
			run.limits.max_addresses = (size_t)number(optarg);
			break;
		case 'c':
			cancel_after = number(optarg);
			break;
		case 'w':
			run.cancel_which = (size_t)number(optarg);
			break;
		case 'f':
			free_after = number(optarg);
			break;
		case 'r':
			run.repeat_after = number(optarg);
			run.rounds = 2;
			break;
		default:
			usage();
		}
	}
	if (optind >= argc || run.cancel_which >= (size_t)(argc - optind))
		usage();

	run.base = event_base_new();
	if (run.base == NULL) {
		fprintf(stderr, "dnsquery: cannot make an event_base\n");
		return 1;
	}
	char why[256] = "";
	run.resolver = dns_resolver_new(run.base, &servers, timeout_ms, why, sizeof(why));
	if (run.resolver == NULL) {
		fprintf(stderr, "dnsquery: %s\n", why);
		event_base_free(run.base);
		return 1;
	}
	run.count = (size_t)(argc - optind);
	run.domains = argv + optind;
	run.queries = calloc(run.count * run.rounds, sizeof(*run.queries));
	if (run.queries == NULL) {
		perror("dnsquery");
		return quit(&run, 1);
	}
	start_round(&run);
	struct event *cancel = cancel_after >= 0 ? arm(&run, cancel_after, on_cancel_timer) : NULL;
	struct event *release = free_after >= 0 ? arm(&run, free_after, on_free_timer) : NULL;
	if (event_base_dispatch(run.base) < 0)
		fprintf(stderr, "dnsquery: event loop failed\n");
	print_all(&run);

	if (cancel != NULL)
		event_free(cancel);
	if (release != NULL)
		event_free(release);
	if (run.repeat != NULL)
		event_free(run.repeat);
	return quit(&run, 0);
}
