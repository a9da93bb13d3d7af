/*
 * fuzz_dns.c - DNS answers made of fuzz bytes through the resolver and the
 * MX walk (src/dns.c, dnsttl.c, dnsshare.c) and c-ares's parsing
 * (ares_parse_mx_reply / ares_parse_a_reply / ares_parse_aaaa_reply as
 * dns.c calls them).
 *
 * Each input runs one dns_lookup_mx("fuzz.example") on a fresh resolver
 * whose only server is a UDP socket on 127.0.0.1 inside this process; that
 * peer answers every query it receives with the next chunk of the input.
 * Input layout:
 *
 *   byte 0      limits: max_mx 1 + (b & 7), max_addresses 1 + ((b >> 3) & 7)
 *   then        chunks, each [len_hi len_lo mode] + len octets:
 *     mode bit 0 clear: the octets are [flags(2) ancount(2) nscount(2)
 *                arcount(2) records...]; the reply is the query's ID, the
 *                flags, qdcount 1, the counts, the query's own question
 *                (so c-ares takes it as the answer) and the records
 *     mode bit 0 set: the octets are the whole reply; only its ID is
 *                replaced by the query's (question, counts: all fuzz)
 *     mode bit 1: no answer to this query (c-ares times out, 20 ms, and
 *                retries: the retry takes the next chunk)
 *
 * When the chunks run out every query gets REFUSED, so each lookup ends
 * fast; a 3 s guard bounds the whole run (never expected to fire).
 * Invariants (abort on violation): the callback runs exactly once; status
 * in range; host_count <= max_mx, each host's address_count <= its limit
 * and <= DNS_HOST_ADDRS_MAX, every address AF_INET/AF_INET6 with port 0,
 * names NUL-terminated printable ASCII, hosts only with DNS_OK (and at
 * least one then); DNS_NXDOMAIN only when a reply said NXDOMAIN (a
 * malformed reply must never become a definite answer); detail printable; ttl_ms within 0..2^31-1 s; no leak
 * (ASan).
 */
#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conf.h"
#include "dns.h"
#include "fuzzcheck.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct run {
	struct event_base *base;
	const uint8_t *rest; /* chunks not yet used */
	size_t rest_len;
	int answers;
	struct dns_limits limits;
	unsigned queries;
	bool nxdomain_sent; /* a reply with RCODE 3 went out */
};

static int udp_fd = -1;
static char server[64];

static void setup(void)
{
	if (udp_fd >= 0)
		return;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	udp_fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (udp_fd < 0 || bind(udp_fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    getsockname(udp_fd, (struct sockaddr *)&a, &len) != 0)
		FAIL();
	snprintf(server, sizeof(server), "127.0.0.1:%u", ntohs(a.sin_port));
}

static void check_text(const char *s, size_t size)
{
	size_t n = strnlen(s, size);
	if (n == size)
		FAIL();
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			FAIL();
}

/* question_end - the offset just past the query's question; 0 if malformed */
static size_t question_end(const uint8_t *q, size_t len)
{
	size_t i = 12;
	while (i < len && q[i] != 0)
		i += 1 + (size_t)q[i];
	if (i + 5 > len)
		return 0;
	return i + 5; /* root label, QTYPE, QCLASS */
}

static void on_query(evutil_socket_t fd, short what, void *arg)
{
	struct run *run = arg;
	uint8_t q[1500], reply[4096];
	struct sockaddr_storage from;
	socklen_t fromlen = sizeof(from);
	ssize_t n = recvfrom(udp_fd, q, sizeof(q), 0, (struct sockaddr *)&from, &fromlen);
	if (n < 12)
		return;
	run->queries++;
	size_t qend = question_end(q, (size_t)n);
	if (qend == 0)
		FAIL(); /* c-ares sent a malformed query */
	size_t len = 0;
	if (run->rest_len < 3) {
		/* out of chunks: REFUSED, with the question */
		memcpy(reply, q, qend);
		reply[2] = 0x81;
		reply[3] = 0x85;
		memset(reply + 6, 0, 6);
		len = qend;
	} else {
		size_t clen = ((size_t)run->rest[0] << 8 | run->rest[1]);
		uint8_t mode = run->rest[2];
		run->rest += 3;
		run->rest_len -= 3;
		if (clen > run->rest_len)
			clen = run->rest_len;
		const uint8_t *c = run->rest;
		run->rest += clen;
		run->rest_len -= clen;
		if (mode & 2)
			return; /* lost */
		if (mode & 1) {
			if (clen > sizeof(reply))
				clen = sizeof(reply);
			memcpy(reply, c, clen);
			len = clen;
			if (len >= 2)
				memcpy(reply, q, 2);
		} else {
			uint8_t head[8] = {0};
			memcpy(head, c, clen < 8 ? clen : 8);
			size_t body = clen > 8 ? clen - 8 : 0;
			if (qend + body > sizeof(reply))
				body = sizeof(reply) - qend;
			memcpy(reply, q, 2);
			memcpy(reply + 2, head, 2);
			reply[4] = 0;
			reply[5] = 1;
			memcpy(reply + 6, head + 2, 6);
			memcpy(reply + 12, q + 12, qend - 12);
			memcpy(reply + qend, c + 8, body);
			len = qend + body;
		}
	}
	if (len >= 4 && (reply[3] & 0x0f) == 3)
		run->nxdomain_sent = true;
	sendto(udp_fd, reply, len, 0, (struct sockaddr *)&from, fromlen);
}

static void on_answer(void *arg, const struct dns_answer *a)
{
	struct run *run = arg;
	if (run->answers++ != 0)
		FAIL();
	if (a->status > DNS_TEMPFAIL)
		FAIL();
	check_text(a->detail, sizeof(a->detail));
	if (a->ttl_ms < 0 || a->ttl_ms > INT64_C(2147483647) * 1000)
		FAIL();
	if (a->status == DNS_NXDOMAIN && !run->nxdomain_sent)
		FAIL(); /* a definite "no such domain" without the server saying so */
	if (a->status != DNS_OK && a->host_count != 0)
		FAIL();
	if (a->status == DNS_OK && (a->host_count == 0 || a->hosts == NULL))
		FAIL();
	if (a->host_count > run->limits.max_mx)
		FAIL();
	size_t total = 0;
	for (size_t i = 0; i < a->host_count; i++) {
		const struct dns_host *h = &a->hosts[i];
		total += h->address_count;
		check_text(h->name, sizeof(h->name));
		if (h->address_count > DNS_HOST_ADDRS_MAX)
			FAIL();
		for (size_t j = 0; j < h->address_count; j++) {
			const struct sockaddr_storage *ss = &h->addresses[j];
			if (ss->ss_family == AF_INET) {
				if (((const struct sockaddr_in *)ss)->sin_port != 0)
					FAIL();
			} else if (ss->ss_family == AF_INET6) {
				if (((const struct sockaddr_in6 *)ss)->sin6_port != 0)
					FAIL();
			} else {
				FAIL();
			}
		}
	}
	if (total > run->limits.max_addresses)
		FAIL();
	event_base_loopbreak(run->base);
}

static void on_trace(void *arg, const char *line)
{
	(void)strlen(line);
}

static void on_guard(evutil_socket_t fd, short what, void *arg)
{
	event_base_loopbreak(arg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 16384)
		return 0;
	setup();
	struct run run = {
	        .rest = data + 1,
	        .rest_len = size - 1,
	        .limits = {.max_mx = 1 + (data[0] & 7), .max_addresses = 1 + ((data[0] >> 3) & 7)},
	};
	run.base = event_base_new();
	if (run.base == NULL)
		FAIL();
	char *entry = server;
	struct conf_strings servers = {.items = &entry, .count = 1};
	char why[256];
	struct dns_resolver *r = dns_resolver_new(run.base, &servers, 20, why, sizeof(why));
	if (r == NULL) {
		fprintf(stderr, "fuzz_dns: %s\n", why);
		FAIL();
	}
	struct event *peer = event_new(run.base, udp_fd, EV_READ | EV_PERSIST, on_query, &run);
	struct event *guard = evtimer_new(run.base, on_guard, run.base);
	struct timeval guard_tv = {3, 0};
	if (peer == NULL || guard == NULL)
		FAIL();
	event_add(peer, NULL);
	event_add(guard, &guard_tv);
	struct dns_lookup *l = dns_lookup_mx(r, "fuzz.example", &run.limits, on_trace, NULL, on_answer, &run);
	if (l == NULL)
		FAIL();
	event_base_dispatch(run.base);
	if (run.answers == 0)
		dns_lookup_cancel(l);
	dns_resolver_free(r);
	/* a reply still queued for a query of this run must not answer the next */
	uint8_t drain[1500];
	while (recv(udp_fd, drain, sizeof(drain), MSG_DONTWAIT) >= 0)
		;
	event_free(peer);
	event_free(guard);
	event_base_free(run.base);
	return 0;
}
