/*
 * hosts.c - the circuit breaker's table of MX host addresses (hosts.h).
 *
 * A chained hash on the raw address (family and bytes; an IPv4-mapped IPv6
 * address counts as its IPv4 address) with an intrusive LRU list for
 * eviction. Owns the bucket array, every record, the strings of a
 * remembered refusal, and a record's catch-all memory (struct catchall).
 */
#include "hosts.h"

#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct host_key {
	uint8_t family; /* 4 or 6 */
	uint8_t bytes[16];
};

/* One domain that answered catch-all at the address. */
struct seen {
	uint64_t hash; /* of the whole name, lower case: tells domains apart */
	int64_t at_ms; /* its latest catch-all answer */
	char name[HOSTS_CATCHALL_NAME_MAX + 1];
};

/* An address's catch-all memory: made at its first catch-all answer. */
struct catchall {
	int64_t since_ms, until_ms; /* remembered catch-all while now < until_ms */
	int64_t mixed_until_ms;     /* a not-catch-all answer: no memory forms before this */
	int64_t keep_until_ms;      /* nothing of it matters after this (forgettable) */
	unsigned count, room;       /* seen[0..count) in use, oldest first; room allocated */
	struct seen seen[];
};

struct host_rec {
	struct host_key key;
	struct host_rec *chain;         /* next in the bucket */
	struct host_rec *newer, *older; /* LRU list: head is the newest */
	int64_t touched_ms;             /* last note or lookup that found it live */
	int64_t blocked_since_ms;       /* 0: not blocked */
	int64_t blocked_until_ms;
	int64_t streak_since_ms; /* first failure in a row; 0: none */
	int64_t backoff_until_ms;
	unsigned failures;
	int64_t answered_until_ms; /* it answered lately: no first-contact wait */
	int64_t claimed_until_ms;  /* a probe's first contact is under way */
	int64_t minute_start_ms;   /* host_session_rate: the minute sessions are counted in */
	unsigned minute_sessions;  /* ... and how many began in it */
	enum probe_stage stage;
	int code;
	char ecode[16];
	char *text;          /* owned; NULL: not blocked */
	char *host;          /* owned; NULL: not blocked */
	char *origin;        /* owned, NULL: none; blocked: "source\0from" (hosts_note_blocked) */
	struct catchall *ca; /* owned; NULL: no catch-all answer seen (or forgotten) */
};

struct hosts {
	struct host_rec **buckets;
	size_t bucket_count; /* a power of two */
	size_t count, max;
	struct host_rec *newest, *oldest;
	hosts_session_fn session_fn; /* NULL: sessions are counted here */
	void *session_arg;
};

/* key_of - the address's key; false for other families */
static bool key_of(const struct sockaddr *sa, struct host_key *k)
{
	memset(k, 0, sizeof(*k));
	if (sa == NULL)
		return false;
	if (sa->sa_family == AF_INET) {
		k->family = 4;
		memcpy(k->bytes, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return true;
	}
	if (sa->sa_family != AF_INET6)
		return false;
	const uint8_t *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
	static const uint8_t mapped[12] = {[10] = 0xff, [11] = 0xff};
	if (memcmp(b, mapped, sizeof(mapped)) == 0) {
		k->family = 4;
		memcpy(k->bytes, b + 12, 4);
	} else {
		k->family = 6;
		memcpy(k->bytes, b, 16);
	}
	return true;
}

/* bucket_of - FNV-1a over the key */
static size_t bucket_of(const struct hosts *h, const struct host_key *k)
{
	uint64_t x = 1469598103934665603ULL;
	const uint8_t *p = (const uint8_t *)k;
	for (size_t i = 0; i < sizeof(*k); i++)
		x = (x ^ p[i]) * 1099511628211ULL;
	return (size_t)(x ^ (x >> 29)) & (h->bucket_count - 1);
}

/* hosts_new - see hosts.h */
struct hosts *hosts_new(size_t max)
{
	if (max == 0)
		return NULL;
	struct hosts *h = calloc(1, sizeof(*h));
	if (h == NULL)
		return NULL;
	h->max = max;
	h->bucket_count = 64;
	while (h->bucket_count < max && h->bucket_count < ((size_t)1 << 30))
		h->bucket_count <<= 1; /* load factor <= 1 when full */
	h->buckets = calloc(h->bucket_count, sizeof(*h->buckets));
	if (h->buckets == NULL) {
		free(h);
		return NULL;
	}
	return h;
}

/* rec_free - a record's memory */
static void rec_free(struct host_rec *r)
{
	free(r->text);
	free(r->host);
	free(r->origin);
	free(r->ca);
	free(r);
}

/* hosts_free - see hosts.h */
void hosts_free(struct hosts *h)
{
	if (h == NULL)
		return;
	struct host_rec *r = h->newest;
	while (r != NULL) {
		struct host_rec *next = r->older;
		rec_free(r);
		r = next;
	}
	free(h->buckets);
	free(h);
}

/* hosts_count - see hosts.h */
size_t hosts_count(const struct hosts *h)
{
	return h != NULL ? h->count : 0;
}

/* lru_unlink / lru_push - the record leaves / becomes the newest */
static void lru_unlink(struct hosts *h, struct host_rec *r)
{
	if (r->newer != NULL)
		r->newer->older = r->older;
	else
		h->newest = r->older;
	if (r->older != NULL)
		r->older->newer = r->newer;
	else
		h->oldest = r->newer;
	r->newer = r->older = NULL;
}

static void lru_push(struct hosts *h, struct host_rec *r)
{
	r->newer = NULL;
	r->older = h->newest;
	if (h->newest != NULL)
		h->newest->newer = r;
	h->newest = r;
	if (h->oldest == NULL)
		h->oldest = r;
}

/* find - the record for k, or NULL */
static struct host_rec *find(const struct hosts *h, const struct host_key *k)
{
	for (struct host_rec *r = h->buckets[bucket_of(h, k)]; r != NULL; r = r->chain)
		if (memcmp(&r->key, k, sizeof(*k)) == 0)
			return r;
	return NULL;
}

/* drop - take r out of the table and free it */
static void drop(struct hosts *h, struct host_rec *r)
{
	struct host_rec **link = &h->buckets[bucket_of(h, &r->key)];
	while (*link != r)
		link = &(*link)->chain;
	*link = r->chain;
	lru_unlink(h, r);
	h->count--;
	rec_free(r);
}

/* touch - r is in use now: newest in the LRU list */
static void touch(struct hosts *h, struct host_rec *r, int64_t now_ms)
{
	r->touched_ms = now_ms;
	lru_unlink(h, r);
	lru_push(h, r);
}

/* How many of the least recently touched records a full table looks at
 * for one to evict: a record whose first contact is under way is in use
 * (the probes waiting for it would all connect), so it is passed over. */
#define EVICT_SCAN 64

/* evict_one - drop the least recently touched record not in use, among
 * the EVICT_SCAN oldest; false if all of them are in use (claims lapse
 * within their hold, and there are no more than probes in flight) */
static bool evict_one(struct hosts *h, int64_t now_ms)
{
	size_t looked = 0;
	for (struct host_rec *r = h->oldest; r != NULL && looked < EVICT_SCAN; r = r->newer, looked++) {
		if (now_ms >= r->claimed_until_ms) {
			drop(h, r);
			return true;
		}
	}
	return false;
}

/* obtain - the record for k, made (evicting the least recently touched
 * one not in use when full) if there is none; NULL without memory */
static struct host_rec *obtain(struct hosts *h, const struct host_key *k, int64_t now_ms)
{
	struct host_rec *r = find(h, k);
	if (r != NULL) {
		touch(h, r, now_ms);
		return r;
	}
	/* back to the bound once claims have lapsed; until then one more */
	while (h->count >= h->max && evict_one(h, now_ms))
		;
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return NULL;
	r->key = *k;
	size_t b = bucket_of(h, k);
	r->chain = h->buckets[b];
	h->buckets[b] = r;
	lru_push(h, r);
	r->touched_ms = now_ms;
	h->count++;
	return r;
}

/* forgettable - nothing of r is in force, and it was left alone long enough
 * that a new failure starts a new streak */
static bool forgettable(const struct host_rec *r, int64_t now_ms)
{
	bool blocked = r->text != NULL && now_ms < r->blocked_until_ms;
	bool backed_off = r->failures > 0 && now_ms < r->backoff_until_ms;
	if (blocked || backed_off || now_ms < r->answered_until_ms || now_ms < r->claimed_until_ms)
		return false;
	if (r->minute_sessions > 0 && now_ms - r->minute_start_ms < HOSTS_RATE_WINDOW_MS)
		return false; /* its session count for this minute still stands */
	if (r->ca != NULL && now_ms < r->ca->keep_until_ms)
		return false; /* catch-all answers still counted, remembered or held off */
	if (r->failures == 0)
		return true; /* an expired refusal and no streak: nothing worth keeping */
	return now_ms - r->touched_ms >= HOSTS_FORGET_MS;
}

/* hosts_lookup - see hosts.h */
enum host_state hosts_lookup(struct hosts *h, const struct sockaddr *sa, int64_t now_ms,
                             struct host_memo *memo)
{
	struct host_key k;
	if (memo != NULL)
		memset(memo, 0, sizeof(*memo));
	if (h == NULL || !key_of(sa, &k))
		return HOST_OK;
	struct host_rec *r = find(h, &k);
	if (r == NULL)
		return HOST_OK;
	if (forgettable(r, now_ms)) {
		drop(h, r);
		return HOST_OK;
	}
	enum host_state state = HOST_OK;
	if (r->text != NULL && now_ms < r->blocked_until_ms)
		state = HOST_BLOCKED; /* a refusal tells more than silence */
	else if (r->failures > 0 && now_ms < r->backoff_until_ms)
		state = HOST_BACKED_OFF;
	if (memo != NULL) {
		memo->state = state;
		memo->failures = r->failures;
		if (state == HOST_BLOCKED) {
			memo->since_ms = r->blocked_since_ms;
			memo->until_ms = r->blocked_until_ms;
			memo->stage = r->stage;
			memo->code = r->code;
			snprintf(memo->ecode, sizeof(memo->ecode), "%s", r->ecode);
			snprintf(memo->text, sizeof(memo->text), "%s", r->text);
			snprintf(memo->host, sizeof(memo->host), "%s", r->host);
			const char *src = r->origin != NULL ? r->origin : "";
			snprintf(memo->source, sizeof(memo->source), "%s", src);
			snprintf(memo->from, sizeof(memo->from), "%s",
			         r->origin != NULL ? src + strlen(src) + 1 : "");
		} else if (state == HOST_BACKED_OFF) {
			memo->since_ms = r->streak_since_ms;
			memo->until_ms = r->backoff_until_ms;
		}
	}
	return state;
}

/* hosts_note_blocked - see hosts.h */
bool hosts_note_blocked(struct hosts *h, const struct sockaddr *sa, int64_t now_ms, int64_t ttl_ms,
                        const char *host, const struct outcome *o, const char *source, const char *from)
{
	struct host_key k;
	if (h == NULL || ttl_ms <= 0 || !key_of(sa, &k))
		return false;
	char *text = strdup(o->text);
	char *name = strdup(host != NULL ? host : "");
	/* source and from in one block: most refusals are ours, with a source */
	size_t sl = source != NULL ? strlen(source) : 0, fl = from != NULL ? strlen(from) : 0;
	char *origin = sl + fl > 0 ? malloc(sl + fl + 2) : NULL;
	struct host_rec *r = text != NULL && name != NULL && (sl + fl == 0 || origin != NULL)
	                             ? obtain(h, &k, now_ms)
	                             : NULL;
	if (r == NULL) {
		free(text);
		free(name);
		free(origin);
		return false;
	}
	if (origin != NULL) {
		memcpy(origin, sl > 0 ? source : "", sl + 1);
		memcpy(origin + sl + 1, fl > 0 ? from : "", fl + 1);
	}
	free(r->text);
	free(r->host);
	free(r->origin);
	r->text = text;
	r->host = name;
	r->origin = origin;
	r->stage = o->stage;
	r->code = o->code;
	snprintf(r->ecode, sizeof(r->ecode), "%s", o->ecode);
	r->blocked_since_ms = now_ms;
	r->blocked_until_ms = now_ms + ttl_ms;
	r->claimed_until_ms = 0;
	/* It answered: whatever silence came before is over. */
	r->failures = 0;
	r->streak_since_ms = 0;
	r->backoff_until_ms = 0;
	return true;
}

/* hosts_note_failure - see hosts.h */
int64_t hosts_note_failure(struct hosts *h, const struct sockaddr *sa, int64_t now_ms, int64_t base_ms)
{
	struct host_key k;
	if (h == NULL || !key_of(sa, &k))
		return 0;
	struct host_rec *r = find(h, &k);
	if (base_ms <= 0) { /* backoff off: the attempt is over all the same */
		if (r != NULL) {
			r->claimed_until_ms = 0;
			r->answered_until_ms = 0;
		}
		return 0;
	}
	if (r != NULL && forgettable(r, now_ms)) {
		drop(h, r); /* a streak left alone that long starts again */
		r = NULL;
	}
	r = obtain(h, &k, now_ms);
	if (r == NULL)
		return 0;
	r->claimed_until_ms = 0;
	r->answered_until_ms = 0; /* silent now, whatever it said before */
	if (r->failures > 0 && now_ms < r->backoff_until_ms)
		return r->backoff_until_ms - now_ms; /* a failure of an attempt begun before the backoff */
	if (r->failures == 0)
		r->streak_since_ms = now_ms;
	r->failures++;
	int64_t ms = base_ms;
	for (unsigned i = 1; i < r->failures && ms < HOSTS_BACKOFF_CAP_MS; i++)
		ms *= 2;
	if (ms > HOSTS_BACKOFF_CAP_MS)
		ms = base_ms > HOSTS_BACKOFF_CAP_MS ? base_ms : HOSTS_BACKOFF_CAP_MS;
	r->backoff_until_ms = now_ms + ms;
	return ms;
}

/* hosts_note_backoff_until - see hosts.h */
bool hosts_note_backoff_until(struct hosts *h, const struct sockaddr *sa, int64_t now_ms, int64_t until_ms)
{
	struct host_key k;
	if (h == NULL || until_ms <= now_ms || !key_of(sa, &k))
		return false;
	struct host_rec *r = obtain(h, &k, now_ms);
	if (r == NULL)
		return false;
	r->answered_until_ms = 0; /* silent for another host now, whatever it said to us before */
	if (r->failures == 0) {
		r->failures = 1;
		r->streak_since_ms = now_ms;
	}
	if (r->backoff_until_ms < until_ms)
		r->backoff_until_ms = until_ms;
	return true;
}

/* hosts_note_answer - see hosts.h */
void hosts_note_answer(struct hosts *h, const struct sockaddr *sa, int64_t now_ms)
{
	struct host_key k;
	if (h == NULL || !key_of(sa, &k))
		return;
	struct host_rec *r = obtain(h, &k, now_ms);
	if (r == NULL)
		return;
	/* A refusal stands for its blocked_ttl: this answer may come from a
	 * session begun before it, and a host that refuses us now and then is
	 * still one that refuses us. Only the silence is over. */
	r->failures = 0;
	r->streak_since_ms = 0;
	r->backoff_until_ms = 0;
	r->claimed_until_ms = 0;
	r->answered_until_ms = now_ms + HOSTS_ANSWERED_MS;
}

/* hosts_claim - see hosts.h */
bool hosts_claim(struct hosts *h, const struct sockaddr *sa, int64_t now_ms, int64_t hold_ms, bool *claimed)
{
	struct host_key k;
	if (claimed != NULL)
		*claimed = false;
	if (h == NULL || !key_of(sa, &k))
		return true;
	struct host_rec *r = find(h, &k);
	if (r != NULL && now_ms < r->answered_until_ms)
		return true;
	if (r != NULL && now_ms < r->claimed_until_ms)
		return false;
	r = obtain(h, &k, now_ms);
	if (r == NULL)
		return true;
	r->claimed_until_ms = now_ms + (hold_ms > 0 ? hold_ms : 1);
	if (claimed != NULL)
		*claimed = true;
	return true;
}

/* hosts_release - see hosts.h */
void hosts_release(struct hosts *h, const struct sockaddr *sa)
{
	struct host_key k;
	if (h == NULL || !key_of(sa, &k))
		return;
	struct host_rec *r = find(h, &k);
	if (r != NULL)
		r->claimed_until_ms = 0; /* an empty record goes when next met (forgettable) */
}

/* hosts_session_take - see hosts.h */
bool hosts_session_take(struct hosts *h, const struct sockaddr *sa, int64_t now_ms, unsigned rate,
                        unsigned *count, bool *fleet)
{
	struct host_key k;
	if (count != NULL)
		*count = 0;
	if (fleet != NULL)
		*fleet = false;
	if (h == NULL || rate == 0 || !key_of(sa, &k))
		return true;
	if (h->session_fn != NULL)
		return h->session_fn(h->session_arg, sa, rate, count, fleet);
	struct host_rec *r = obtain(h, &k, now_ms);
	if (r == NULL)
		return true; /* our trouble never stops a probe */
	if (r->minute_sessions == 0 || now_ms - r->minute_start_ms >= HOSTS_RATE_WINDOW_MS ||
	    now_ms < r->minute_start_ms) {
		r->minute_start_ms = now_ms; /* a new minute begins with this session */
		r->minute_sessions = 0;
	}
	if (r->minute_sessions >= rate) {
		if (count != NULL)
			*count = r->minute_sessions;
		return false;
	}
	r->minute_sessions++;
	if (count != NULL)
		*count = r->minute_sessions;
	return true;
}

/* hosts_set_session_hook - see hosts.h */
void hosts_set_session_hook(struct hosts *h, hosts_session_fn fn, void *arg)
{
	if (h == NULL)
		return;
	h->session_fn = fn;
	h->session_arg = arg;
}

/* name_hash - FNV-1a of the name in lower case */
static uint64_t name_hash(const char *name)
{
	uint64_t x = 1469598103934665603ULL;
	for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; p++)
		x = (x ^ (uint64_t)tolower(*p)) * 1099511628211ULL;
	return x;
}

/* catchall_prune - forget the domains whose answer is ttl_ms old; and a
 * memory or hold-off that is over */
static void catchall_prune(struct catchall *ca, int64_t now_ms, int64_t ttl_ms)
{
	unsigned kept = 0;
	for (unsigned i = 0; i < ca->count; i++)
		if (now_ms - ca->seen[i].at_ms < ttl_ms)
			ca->seen[kept++] = ca->seen[i];
	ca->count = kept;
	if (ca->until_ms != 0 && now_ms >= ca->until_ms)
		ca->since_ms = ca->until_ms = 0;
	if (now_ms >= ca->mixed_until_ms)
		ca->mixed_until_ms = 0;
}

/* catchall_memo - what *ca says, for the caller */
static void catchall_memo(const struct catchall *ca, struct host_catchall *out)
{
	size_t used = 0;
	memset(out, 0, sizeof(*out));
	out->since_ms = ca->since_ms;
	out->until_ms = ca->until_ms;
	out->domains = ca->count;
	for (unsigned i = 0; i < ca->count && used < sizeof(out->list); i++) {
		int n = snprintf(out->list + used, sizeof(out->list) - used, "%s%s", i > 0 ? ", " : "",
		                 ca->seen[i].name);
		if (n < 0)
			break;
		used += (size_t)n;
	}
}

/* catchall_room - r's memory with room for need domains; NULL without memory */
static struct catchall *catchall_room(struct host_rec *r, unsigned need)
{
	if (r->ca != NULL && r->ca->room >= need)
		return r->ca;
	struct catchall *ca = realloc(r->ca, sizeof(*ca) + need * sizeof(ca->seen[0]));
	if (ca == NULL)
		return NULL; /* r->ca as it was */
	if (r->ca == NULL)
		memset(ca, 0, sizeof(*ca));
	ca->room = need;
	r->ca = ca;
	return ca;
}

/* hosts_note_catchall - see hosts.h */
bool hosts_note_catchall(struct hosts *h, const struct sockaddr *sa, int64_t now_ms, const char *domain,
                         unsigned need, int64_t ttl_ms, struct host_catchall *became)
{
	struct host_key k;
	if (need > HOSTS_CATCHALL_DOMAINS_MAX)
		need = HOSTS_CATCHALL_DOMAINS_MAX;
	if (h == NULL || need == 0 || ttl_ms <= 0 || domain == NULL || domain[0] == '\0' || !key_of(sa, &k))
		return false;
	struct host_rec *r = obtain(h, &k, now_ms);
	struct catchall *ca = r != NULL ? catchall_room(r, need) : NULL;
	if (ca == NULL)
		return false;
	catchall_prune(ca, now_ms, ttl_ms);
	if (ca->until_ms != 0 || ca->mixed_until_ms != 0)
		return false; /* remembered already (an older session's answer), or held off */
	uint64_t hash = name_hash(domain);
	unsigned i = 0;
	while (i < ca->count && ca->seen[i].hash != hash)
		i++;
	if (i == ca->count && ca->count == ca->room) /* full (need was lowered): the oldest goes */
		memmove(&ca->seen[0], &ca->seen[1], --ca->count * sizeof(ca->seen[0]));
	if (i >= ca->count) {
		i = ca->count++;
	} else { /* the same domain again: now its latest answer, so the newest */
		struct seen again = ca->seen[i];
		memmove(&ca->seen[i], &ca->seen[i + 1], (ca->count - i - 1) * sizeof(ca->seen[0]));
		ca->seen[i = ca->count - 1] = again;
	}
	ca->seen[i].hash = hash;
	ca->seen[i].at_ms = now_ms;
	snprintf(ca->seen[i].name, sizeof(ca->seen[i].name), "%s", domain);
	ca->keep_until_ms = now_ms + ttl_ms;
	if (ca->count < need)
		return false;
	ca->since_ms = now_ms;
	ca->until_ms = now_ms + ttl_ms;
	if (became != NULL)
		catchall_memo(ca, became);
	return true;
}

/* hosts_note_not_catchall - see hosts.h */
bool hosts_note_not_catchall(struct hosts *h, const struct sockaddr *sa, int64_t now_ms, const char *domain,
                             int64_t ttl_ms, struct host_catchall *ended)
{
	struct host_key k;
	(void)domain; /* which domain does not matter: one is enough to prove the host mixed */
	if (ended != NULL)
		memset(ended, 0, sizeof(*ended));
	if (h == NULL || ttl_ms <= 0 || !key_of(sa, &k))
		return false;
	/* Kept even where no catch-all answer came yet: the hold-off must not
	 * depend on the order in which the answers came. */
	struct host_rec *r = obtain(h, &k, now_ms);
	struct catchall *ca = r != NULL ? catchall_room(r, 0) : NULL;
	if (ca == NULL)
		return false;
	catchall_prune(ca, now_ms, ttl_ms);
	bool was = ca->until_ms != 0;
	if (was && ended != NULL)
		catchall_memo(ca, ended);
	ca->count = 0;
	ca->since_ms = ca->until_ms = 0;
	ca->mixed_until_ms = ca->keep_until_ms = now_ms + ttl_ms;
	return was;
}

/* hosts_catchall - see hosts.h */
bool hosts_catchall(struct hosts *h, const struct sockaddr *sa, int64_t now_ms, struct host_catchall *memo)
{
	struct host_key k;
	if (memo != NULL)
		memset(memo, 0, sizeof(*memo));
	if (h == NULL || !key_of(sa, &k))
		return false;
	struct host_rec *r = find(h, &k);
	if (r == NULL || r->ca == NULL || r->ca->until_ms == 0 || now_ms >= r->ca->until_ms ||
	    now_ms < r->ca->since_ms)
		return false;
	if (memo != NULL)
		catchall_memo(r->ca, memo);
	return true;
}

/* hosts_census - see hosts.h */
void hosts_census(const struct hosts *h, int64_t now_ms, struct hosts_census *out)
{
	memset(out, 0, sizeof(*out));
	if (h == NULL)
		return;
	for (const struct host_rec *r = h->newest; r != NULL; r = r->older) {
		out->records++;
		out->blocked += r->blocked_since_ms != 0 && now_ms < r->blocked_until_ms;
		out->backed_off += r->streak_since_ms != 0 && now_ms < r->backoff_until_ms;
		out->catch_all += r->ca != NULL && now_ms < r->ca->until_ms;
	}
}
