/*
 * dnsshare.c - the flight table and the answer cache of a resolver.
 *
 * Owns: struct dns_share (the list of joinable flights, the cache's
 * entries and its sweep timer), the member lists of flights, and each
 * flight's key. The flights themselves, their queries and the lookups are
 * dns.c's (see dnsshare.h and the comment at the top of dns.c).
 *
 * Flight table. A flight is listed from its start until it finishes or is
 * abandoned; a lookup whose key matches a listed flight joins it as a
 * member. A member that leaves (is cancelled) is no longer the leader;
 * when the last one leaves while caching is off, the flight is handed back
 * to dns.c to abandon.
 *
 * Cache. Keyed like flights, hashed; an entry lives answer_cache_ms, or
 * the TTL DNS gave its result when that is known and shorter (TTL 0: not
 * kept): for OK the smallest TTL of the MX, A and AAAA records, for
 * NXDOMAIN, NULL_MX and NO_MAIL_HOST the negative TTL or the MX TTL (see
 * result_ttl in dns.c), so a domain that starts to exist is seen as soon
 * as its negative TTL runs out. A result handed out from the cache carries
 * what is left of its TTL, not the TTL it was kept with. At most max_answers
 * entries, the oldest evicted first; an expired entry is dropped when a
 * lookup finds it, and by a sweep timer that is armed only while the cache
 * holds entries. A cached OK result holds only the hosts with addresses,
 * packed in one block.
 */
#include "dnsshare.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <time.h>

#define CACHE_BUCKETS     1024     /* hash chains of the answer cache */
#define CACHE_MS_MAX      86400000 /* answer_cache_ms: one day at most */
#define CACHE_ANSWERS_MAX 1048576  /* max_answers at most */
#define SWEEP_MS_MIN      1000     /* the sweep runs every answer_cache_ms, within these */
#define SWEEP_MS_MAX      60000

struct cached {
	struct dns_key key;
	int64_t expires; /* monotonic ms */
	int64_t ttl_end; /* monotonic ms when res.ttl_ms runs out, if it is known */
	struct result res;
	LIST_ENTRY(cached) chain; /* its hash bucket */
	TAILQ_ENTRY(cached) age;  /* oldest first */
};

LIST_HEAD(cached_chain, cached);

struct dns_share {
	LIST_HEAD(, share_flight) flights; /* the joinable ones */
	int64_t cache_ms;
	size_t cache_max, cache_count;
	struct event *sweep;
	TAILQ_HEAD(, cached) age;
	struct cached_chain buckets[CACHE_BUCKETS];
};

static void on_sweep(evutil_socket_t fd, short what, void *arg);

/* ---------------------------------------------------------------- keys */

/* now_ms - the monotonic clock in milliseconds */
static int64_t now_ms(void)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		return 0; /* cannot fail with CLOCK_MONOTONIC */
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* key_hash - FNV-1a of the domain, ASCII case folded */
static uint32_t key_hash(const char *domain)
{
	uint32_t h = 2166136261u;
	for (const unsigned char *p = (const unsigned char *)domain; *p != '\0'; p++)
		h = (h ^ (uint32_t)(*p >= 'A' && *p <= 'Z' ? *p + ('a' - 'A') : *p)) * 16777619u;
	return h;
}

/* key_same - the same domain, ignoring case, and the same limits */
static bool key_same(const struct dns_key *a, const struct dns_key *b)
{
	return a->hash == b->hash && a->limits.max_mx == b->limits.max_mx &&
	       a->limits.max_addresses == b->limits.max_addresses && strcasecmp(a->domain, b->domain) == 0;
}

/* share_key - see dnsshare.h */
struct dns_key share_key(char *domain, const struct dns_limits *limits)
{
	return (struct dns_key){.domain = domain, .hash = key_hash(domain), .limits = *limits};
}

/* --------------------------------------------------------- answer cache */

/* caching - whether answers are kept at all */
static bool caching(const struct dns_share *s)
{
	return s->cache_ms > 0 && s->cache_max > 0;
}

/* cache_drop - forget one entry; no sweep pending once none is left */
static void cache_drop(struct dns_share *s, struct cached *c)
{
	LIST_REMOVE(c, chain);
	TAILQ_REMOVE(&s->age, c, age);
	free(c->res.hosts);
	free(c->key.domain);
	free(c);
	if (--s->cache_count == 0)
		evtimer_del(s->sweep);
}

/* cache_trim - keep at most max entries, dropping the oldest */
static void cache_trim(struct dns_share *s, size_t max)
{
	while (s->cache_count > max)
		cache_drop(s, TAILQ_FIRST(&s->age));
}

/* cache_find - the fresh entry with this key; an expired one is dropped */
static struct cached *cache_find(struct dns_share *s, const struct dns_key *key)
{
	for (struct cached *c = LIST_FIRST(&s->buckets[key->hash % CACHE_BUCKETS]); c != NULL;
	     c = LIST_NEXT(c, chain)) {
		if (!key_same(&c->key, key))
			continue;
		if (c->expires > now_ms())
			return c;
		cache_drop(s, c);
		return NULL;
	}
	return NULL;
}

/* sweep_arm - look for expired entries in a while, if there are entries */
static void sweep_arm(struct dns_share *s)
{
	if (s->cache_count == 0 || evtimer_pending(s->sweep, NULL))
		return;
	int64_t ms = s->cache_ms < SWEEP_MS_MIN   ? SWEEP_MS_MIN
	             : s->cache_ms > SWEEP_MS_MAX ? SWEEP_MS_MAX
	                                          : s->cache_ms;
	struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
	evtimer_add(s->sweep, &tv); /* if that fails, entries still expire when found */
}

/* on_sweep - drop every expired entry */
static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
	struct dns_share *s = arg;
	int64_t now = now_ms();
	struct cached *next;
	for (struct cached *c = TAILQ_FIRST(&s->age); c != NULL; c = next) {
		next = TAILQ_NEXT(c, age);
		if (c->expires <= now)
			cache_drop(s, c);
	}
	sweep_arm(s);
}

/* keep_ms - how long a finished flight's result may be kept; 0: not at all */
static int64_t keep_ms(const struct dns_share *s, const struct result *res)
{
	if (res->status == DNS_TEMPFAIL || !caching(s))
		return 0;
	if (res->ttl_ms != RESULT_TTL_UNKNOWN && res->ttl_ms < s->cache_ms)
		return res->ttl_ms;
	return s->cache_ms;
}

/* share_keep - see dnsshare.h */
void share_keep(struct dns_share *s, struct dns_key *key, struct result *res)
{
	int64_t keep = keep_ms(s, res);
	if (keep <= 0)
		return;
	struct cached *c = cache_find(s, key);
	if (c != NULL)
		cache_drop(s, c);
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return; /* not kept: costs queries later, nothing else */
	cache_trim(s, s->cache_max - 1);
	c->key = *key;
	c->res = *res;
	key->domain = NULL;
	res->hosts = NULL;
	int64_t now = now_ms();
	c->expires = now + keep;
	c->ttl_end = c->res.ttl_ms != RESULT_TTL_UNKNOWN ? now + c->res.ttl_ms : 0; /* >= expires */
	LIST_INSERT_HEAD(&s->buckets[c->key.hash % CACHE_BUCKETS], c, chain);
	TAILQ_INSERT_TAIL(&s->age, c, age);
	s->cache_count++;
	sweep_arm(s);
}

/* share_cached - see dnsshare.h */
const struct result *share_cached(struct dns_share *s, const struct dns_key *key, int64_t *ttl_left_ms)
{
	const struct cached *c = cache_find(s, key);
	if (c == NULL)
		return NULL;
	*ttl_left_ms = RESULT_TTL_UNKNOWN;
	if (c->res.ttl_ms != RESULT_TTL_UNKNOWN) {
		int64_t left = c->ttl_end - now_ms();
		*ttl_left_ms = left > 0 ? left : 0;
	}
	return &c->res;
}

/* share_set_cache - see dnsshare.h */
bool share_set_cache(struct dns_share *s, int64_t answer_cache_ms, size_t max_answers)
{
	if (answer_cache_ms < 0 || answer_cache_ms > CACHE_MS_MAX || max_answers > CACHE_ANSWERS_MAX)
		return false;
	s->cache_ms = answer_cache_ms;
	s->cache_max = max_answers;
	cache_trim(s, caching(s) ? max_answers : 0);
	return true;
}

/* ------------------------------------------------------------- flights */

/* share_find - see dnsshare.h */
struct flight *share_find(struct dns_share *s, const struct dns_key *key)
{
	for (struct share_flight *sf = LIST_FIRST(&s->flights); sf != NULL; sf = LIST_NEXT(sf, link))
		if (key_same(&sf->key, key))
			return sf->flight;
	return NULL;
}

/* share_open - see dnsshare.h */
bool share_open(struct dns_share *s, struct share_flight *sf, struct flight *fl, const struct dns_key *key,
                struct dns_lookup *lk, struct share_member *m)
{
	char *domain = strdup(key->domain);
	if (domain == NULL)
		return false;
	sf->flight = fl;
	sf->key = *key;
	sf->key.domain = domain;
	sf->leader = lk;
	LIST_INIT(&sf->members);
	share_join(sf, lk, m);
	LIST_INSERT_HEAD(&s->flights, sf, link);
	sf->listed = true;
	return true;
}

/* share_join - see dnsshare.h */
void share_join(struct share_flight *sf, struct dns_lookup *lk, struct share_member *m)
{
	m->lookup = lk;
	m->flight = sf;
	LIST_INSERT_HEAD(&sf->members, m, link);
}

/* share_leave - see dnsshare.h */
struct flight *share_leave(struct dns_share *s, struct share_member *m)
{
	struct share_flight *sf = m->flight;
	LIST_REMOVE(m, link);
	m->flight = NULL;
	if (sf->leader == m->lookup)
		sf->leader = NULL; /* its trace callback may go away with it */
	if (LIST_EMPTY(&sf->members) && !caching(s))
		return sf->flight;
	return NULL;
}

/* share_next_member - see dnsshare.h */
struct dns_lookup *share_next_member(struct share_flight *sf)
{
	struct share_member *m = LIST_FIRST(&sf->members);
	if (m == NULL)
		return NULL;
	LIST_REMOVE(m, link);
	m->flight = NULL;
	return m->lookup;
}

/* share_any_flight - see dnsshare.h */
struct flight *share_any_flight(struct dns_share *s)
{
	struct share_flight *sf = LIST_FIRST(&s->flights);
	return sf != NULL ? sf->flight : NULL;
}

/* share_unlist - see dnsshare.h */
void share_unlist(struct share_flight *sf)
{
	if (!sf->listed)
		return;
	LIST_REMOVE(sf, link);
	sf->listed = false;
}

/* share_close - see dnsshare.h */
void share_close(struct share_flight *sf)
{
	share_unlist(sf);
	free(sf->key.domain);
	sf->key.domain = NULL;
}

/* ------------------------------------------------------ table and cache */

/* share_new - see dnsshare.h */
struct dns_share *share_new(struct event_base *base)
{
	struct dns_share *s = calloc(1, sizeof(*s));
	if (s == NULL || (s->sweep = evtimer_new(base, on_sweep, s)) == NULL) {
		free(s);
		return NULL;
	}
	LIST_INIT(&s->flights);
	TAILQ_INIT(&s->age);
	for (size_t i = 0; i < CACHE_BUCKETS; i++)
		LIST_INIT(&s->buckets[i]);
	s->cache_ms = DNS_ANSWER_CACHE_MS_DEFAULT;
	s->cache_max = DNS_ANSWER_CACHE_MAX;
	return s;
}

/* share_free - see dnsshare.h */
void share_free(struct dns_share *s)
{
	if (s == NULL)
		return;
	cache_trim(s, 0);
	event_free(s->sweep);
	free(s);
}
