/*
 * dns.h - where a domain receives mail: MX lookup with c-ares on libevent.
 *
 * dns_lookup_mx() finds the mail hosts of a domain and their addresses,
 * asynchronously, on the caller's event_base (c-ares sockets are watched
 * through ARES_OPT_SOCK_STATE_CB; Debian 12's c-ares 1.18 has no event thread
 * of its own). The answer keeps "no" apart from "try again": only NXDOMAIN,
 * a null MX (RFC 7505) and "no host resolves, definitely" are definite.
 *
 * Ordering: MX hosts by preference, equal preferences shuffled (RFC 5321
 * 5.1); each host's IPv4 addresses before its IPv6 ones. No MX records: the
 * domain itself is the implicit MX. Bounded: at most limits.max_mx hosts and
 * limits.max_addresses addresses in all, whatever the answer holds.
 *
 * Stateless: every lookup resolves anew, sharing nothing with other
 * lookups. Whoever wants one resolution per domain, kept for its TTL, keeps
 * it (the verifier: vcore.c's domain record, with dnskept.h's compact copy
 * of the answer).
 *
 * TTL: every answer says how long DNS says it holds (dns_answer.ttl_ms),
 * so that facts drawn from it (no such domain, no mail) are believed no
 * longer: NXDOMAIN, and the NODATA answers that make NO_MAIL_HOST, hold for
 * their negative TTL (RFC 2308 section 5: min of the TTL and the MINIMUM
 * of the SOA record in the authority section, read by dnsttl.c); a null MX
 * for its MX record's TTL; an answer made of several replies (MX, then A
 * and AAAA of the hosts) for the shortest TTL among them that is known;
 * OK the same way (the MX, A and AAAA records used, and the negative
 * answers met on the way).
 *
 * Threads: a resolver and its lookups belong to the thread running its
 * event_base.
 */
#ifndef VEMILTER_DNS_H
#define VEMILTER_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "conf.h"

struct event_base;
struct dns_resolver;
struct dns_lookup;

#define DNS_NAME_MAX       255
#define DNS_HOST_ADDRS_MAX 16 /* addresses kept per host */

enum dns_status {
	DNS_OK,           /* hosts[] has at least one host with an address */
	DNS_NXDOMAIN,     /* the domain does not exist: definite */
	DNS_NULL_MX,      /* "MX 0 .": the domain accepts no mail: definite */
	DNS_NO_MAIL_HOST, /* no MX and no A/AAAA, or no MX host resolves: definite */
	DNS_TEMPFAIL,     /* SERVFAIL, REFUSED, timeout, truncation trouble: try later */
};

/* dns_resolver_idle - no lookup of r is waiting for its answer (a
 * replaced resolver may then be freed) */
bool dns_resolver_idle(const struct dns_resolver *r);

/* dns_status_name - "ok", "nxdomain", "null_mx", "no_mail_host", "tempfail" */
const char *dns_status_name(enum dns_status status);

struct dns_host {
	char name[DNS_NAME_MAX + 1];
	unsigned preference;
	size_t address_count;
	struct sockaddr_storage addresses[DNS_HOST_ADDRS_MAX]; /* port 0 */
};

struct dns_answer {
	enum dns_status status;
	bool implicit_mx; /* no MX records: the domain's own A/AAAA */
	size_t host_count;
	struct dns_host *hosts; /* owned by the lookup; valid during the callback only */
	char detail[256];       /* e.g. "SERVFAIL from 127.0.0.1 for MX example.com" */
	bool ours;              /* TEMPFAIL: our side failed (no descriptor or memory for a query's
	                         * socket; detail starts CLASSIFY_NO_FDS or CLASSIFY_NO_MEMORY):
	                         * it says nothing about the domain */
	int64_t ttl_ms;         /* how long DNS says this answer holds, from now: NXDOMAIN / no mail
	                         * host: the negative TTL (RFC 2308: min of the SOA's TTL and MINIMUM),
	                         * or the smallest known TTL of the replies it rests on (MX records,
	                         * NODATA of hosts); NULL_MX: the MX record's TTL; OK: the smallest
	                         * TTL of the replies used. 0: unknown (no SOA in a negative answer, an
	                         * unreadable one, TEMPFAIL). A TTL of 0 (hold it no longer than now)
	                         * is reported as 1, so that it never reads as "unknown". */
};

struct dns_limits {
	size_t max_mx;
	size_t max_addresses;
};

typedef void (*dns_answer_fn)(void *arg, const struct dns_answer *answer);
typedef void (*dns_trace_fn)(void *arg, const char *line);

/* dns_resolver_new - servers: NULL or empty for the system resolver
 * (/etc/resolv.conf), else entries "IP", "IP:PORT", "[IPv6]:PORT".
 * timeout_ms: per query try. NULL with a reason in why on failure. */
struct dns_resolver *dns_resolver_new(struct event_base *base, const struct conf_strings *servers,
                                      int64_t timeout_ms, char *why, size_t why_size);

/* dns_resolver_free - cancels every lookup still running (no callbacks). */
void dns_resolver_free(struct dns_resolver *resolver);

/* dns_lookup_mx - start a lookup for domain (A-label form). done is called
 * exactly once, later, from the event loop (never from inside this call),
 * unless the lookup is cancelled first. trace (may be NULL) receives
 * human-readable lines: each query and what it returned. NULL on allocation
 * failure. */
struct dns_lookup *dns_lookup_mx(struct dns_resolver *resolver, const char *domain,
                                 const struct dns_limits *limits, dns_trace_fn trace, void *trace_arg,
                                 dns_answer_fn done, void *arg);

/* dns_lookup_cancel - stop a lookup; its callback will not run. */
void dns_lookup_cancel(struct dns_lookup *lookup);

#endif
