/*
 * dnsshare.h - sharing and caching of MX resolutions, inside the DNS module.
 *
 * Internal to the DNS module: only src/dns.c and src/dnsshare.c include it.
 * A resolver (dns.c) has one struct dns_share, which owns:
 *
 *   the flight table - the flights lookups may still join, found by key
 *                      (the domain, ignoring case, and the limits), and
 *                      each flight's members: the lookups waiting for it,
 *                      the first of them its leader;
 *   the answer cache - finished results (struct result), kept for a while,
 *                      with a sweep timer on the event_base while it holds
 *                      any.
 *
 * dns.c owns the flights themselves (their queries, and when they are
 * freed) and the lookups; it embeds a struct share_flight in each flight
 * and a struct share_member in each lookup, whose fields are dnsshare.c's
 * except where noted. dnsshare.c never looks inside a struct flight or a
 * struct dns_lookup: it hands them back as they were given.
 */
#ifndef VEMILTER_DNSSHARE_H
#define VEMILTER_DNSSHARE_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "dns.h"

struct event_base;
struct dns_share;  /* opaque: one resolver's flight table and answer cache */
struct flight;     /* dns.c's */
struct dns_lookup; /* dns.c's */

/* what flights and cached results are found by */
struct dns_key {
	char *domain;  /* as the first lookup spelt it */
	uint32_t hash; /* of the domain, case folded */
	struct dns_limits limits;
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

/* what a finished resolution found: read by each member, kept by the cache */
struct result {
	enum dns_status status;
	bool implicit_mx;
	int64_t ttl_ms;          /* how long DNS says it holds, from when it was made
	                          * (0: not at all); RESULT_TTL_UNKNOWN: unknown */
	char detail[256];        /* unless OK: an OK detail depends on the lookup */
	size_t host_count;       /* OK: hosts[] sorted by preference */
	struct mail_host *hosts; /* one block: hosts, then addresses and names */
};

/* a lookup's place among a flight's members: embedded in struct dns_lookup */
struct share_member {
	struct dns_lookup *lookup;
	struct share_flight *flight; /* the flight it waits for; NULL if none */
	LIST_ENTRY(share_member) link;
};

/* a flight's place in the table: embedded in struct flight. dns.c may read
 * key and leader. */
struct share_flight {
	struct flight *flight;
	struct dns_key key;        /* key.domain owned: freed by share_close */
	struct dns_lookup *leader; /* gets the trace lines; NULL once cancelled */
	bool listed;               /* in the table: joinable */
	LIST_HEAD(, share_member) members;
	LIST_ENTRY(share_flight) link;
};

/* share_new - an empty table and cache on base; NULL if out of memory */
struct dns_share *share_new(struct event_base *base);

/* share_free - drop every kept answer; every flight is unlisted by now */
void share_free(struct dns_share *s);

/* share_set_cache - see dns_resolver_set_answer_cache in dns.h */
bool share_set_cache(struct dns_share *s, int64_t answer_cache_ms, size_t max_answers);

/* share_key - the key of a lookup; domain is borrowed, not copied */
struct dns_key share_key(char *domain, const struct dns_limits *limits);

/* share_cached - the fresh result kept for this key, or NULL; *ttl_left_ms
 * is then what is left of its ttl_ms now (RESULT_TTL_UNKNOWN if unknown) */
const struct result *share_cached(struct dns_share *s, const struct dns_key *key, int64_t *ttl_left_ms);

/* share_keep - keep a finished flight's result unless it is TEMPFAIL or
 * caching is off, for the answer cache time or res->ttl_ms if known and
 * shorter (a TTL of 0: not kept); once kept, key->domain and res->hosts
 * belong to the cache (set to NULL) */
void share_keep(struct dns_share *s, struct dns_key *key, struct result *res);

/* share_find - the joinable flight with this key, or NULL */
struct flight *share_find(struct dns_share *s, const struct dns_key *key);

/* share_open - list fl (embedding sf) under a copy of key, led by lk
 * (embedding m), its only member; false if out of memory */
bool share_open(struct dns_share *s, struct share_flight *sf, struct flight *fl, const struct dns_key *key,
                struct dns_lookup *lk, struct share_member *m);

/* share_join - lk (embedding m) waits for the flight too */
void share_join(struct share_flight *sf, struct dns_lookup *lk, struct share_member *m);

/* share_leave - a member is cancelled and leaves its flight; returns the
 * flight if nobody waits for it any more and nothing would be kept
 * (caching is off): the caller abandons it. Else NULL. */
struct flight *share_leave(struct dns_share *s, struct share_member *m);

/* share_next_member - take the first member off the flight; NULL if none */
struct dns_lookup *share_next_member(struct share_flight *sf);

/* share_any_flight - some listed flight, or NULL */
struct flight *share_any_flight(struct dns_share *s);

/* share_unlist - no lookup joins this flight any more */
void share_unlist(struct share_flight *sf);

/* share_close - unlist the flight and free its key (no members left) */
void share_close(struct share_flight *sf);

#endif
