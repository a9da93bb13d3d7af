/*
 * verify.c - the verifier: cache first, then one shared probe per address.
 *
 * Owns the engine thread and its engine (event loop, resolver, TLS), the
 * cache handle, the table of probes in flight and every ticket until its
 * last release. One mutex (v->lock) guards the table, the start queue, the
 * tickets and the counters; one condition variable (v->settled) is
 * broadcast whenever probes finish, and each waiter checks its own ticket.
 *
 * Data path: verify_submit() (any thread) looks in the cache; on a miss it
 * finds or creates the struct probe for the address under the lock, queues
 * a new one and wakes the engine thread with event_active() (libevent is
 * set up for threads). The engine thread starts the callout; when it ends,
 * it stores the outcome (and what it says about the domain) in the cache,
 * then settles every waiting ticket.
 */
#include "verify.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cache.h"
#include "callout.h"
#include "clock.h"
#include "engine.h"
#include "log.h"

#define BUCKETS        4096 /* probes in flight hash table; chains keep it unbounded */
#define DOMAIN_BUCKETS 1024 /* per-domain limiter table, engine thread only */
#define RATE_WINDOW_MS 60000

struct verify_ticket {
	struct verifier *v;
	int refs; /* under v->lock */
	bool done;
	struct verify_result result;
	int64_t submitted_ms;
	struct verify_ticket *next_waiter; /* in its probe's list */
};

/* Per-domain limits (engine thread only): probes running, the ones waiting
 * for a free place, and how many started in the current minute. */
struct domain_slot {
	struct domain_slot *next_in_bucket;
	char domain[ADDR_DOMAIN_MAX + 1];
	int running;
	int started_in_window;
	int64_t window_start_ms;
	struct probe *waiting_head, *waiting_tail;
};

struct probe {
	struct verifier *v;
	struct probe *next_in_bucket;
	struct probe *next_pending; /* start queue, then a domain's waiting line */
	struct domain_slot *slot;   /* engine thread: counted as running there */
	struct addr address;
	bool refresh;                  /* started to refresh a stale answer */
	bool rate_limited;             /* answered by the limiter: not cached */
	struct verify_ticket *waiters; /* each holds a reference for us */
	struct callout *callout;       /* engine thread only */
	int64_t started_ms;
};

struct verifier {
	struct conf *conf;
	struct engine *engine;
	struct cache *cache; /* NULL: no cache */
	pthread_t thread;
	bool thread_running;
	struct event *wake;                          /* active: start what is queued */
	struct event *sweep;                         /* periodic cache sweep */
	struct event *tidy;                          /* periodic removal of idle domain slots */
	struct domain_slot *domains[DOMAIN_BUCKETS]; /* engine thread only */

	pthread_mutex_t lock;
	pthread_cond_t settled;
	struct probe *buckets[BUCKETS];
	struct probe *pending; /* queued for the engine thread */
	struct verify_stats stats;
};

/* verify_source_name - "probed", "cached", "stale", "domain" */
const char *verify_source_name(enum verify_source source)
{
	switch (source) {
	case VERIFY_PROBED:
		return "probed";
	case VERIFY_CACHED:
		return "cached";
	case VERIFY_STALE:
		return "stale";
	case VERIFY_DOMAIN_FACT:
		return "domain";
	}
	return "unknown";
}

/* bucket_of - FNV-1a of the normalized address */
static size_t bucket_of(const char *key)
{
	uint32_t h = 2166136261u;
	for (const unsigned char *p = (const unsigned char *)key; *p; p++)
		h = (h ^ *p) * 16777619u;
	return h % BUCKETS;
}

/* find_probe - the probe in flight for key, under the lock */
static struct probe *find_probe(struct verifier *v, const char *key)
{
	for (struct probe *p = v->buckets[bucket_of(key)]; p != NULL; p = p->next_in_bucket)
		if (strcmp(p->address.normalized, key) == 0)
			return p;
	return NULL;
}

/* unlink_probe - take p out of the table, under the lock */
static void unlink_probe(struct verifier *v, struct probe *p)
{
	struct probe **link = &v->buckets[bucket_of(p->address.normalized)];
	while (*link != NULL && *link != p)
		link = &(*link)->next_in_bucket;
	if (*link == p)
		*link = p->next_in_bucket;
}

/* ticket_unref - drop one reference, under the lock */
static void ticket_unref(struct verify_ticket *t)
{
	if (--t->refs == 0)
		free(t);
}

/* settle_ticket - the answer for one ticket, under the lock */
static void settle_ticket(struct verify_ticket *t, const struct outcome *o, enum verify_source source)
{
	t->result.outcome = *o;
	t->result.source = source;
	t->result.elapsed_ms = clock_mono_ms() - t->submitted_ms;
	t->done = true;
}

/* domain_fact - what an outcome says about its whole domain, if anything */
static bool domain_fact(const struct outcome *o)
{
	switch (o->kind) {
	case OUTCOME_CATCH_ALL:
	case OUTCOME_NO_DOMAIN:
	case OUTCOME_BLOCKED:
		return true;
	case OUTCOME_TEMPFAIL:
		/* Every MX unreachable, or DNS trouble: no point in asking again
		 * for another address at once. A 4xx to RCPT is about the address. */
		return o->stage == STAGE_CONNECT || o->stage == STAGE_DNS || o->stage == STAGE_BANNER;
	default:
		return false;
	}
}

/* store - remember an outcome for the address and, if it says something
 * about the domain, for the domain (engine thread) */
static void store(struct verifier *v, const struct probe *p, const struct outcome *o)
{
	if (v->cache == NULL)
		return;
	int64_t now = clock_now_ms();
	struct cache_record rec;
	char key[CACHE_KEY_MAX];
	cache_record_make(v->conf, o, now, &rec);
	cache_key_address(p->address.normalized, key, sizeof(key));
	cache_put(v->cache, key, &rec, now);
	if (domain_fact(o)) {
		cache_key_domain(p->address.domain_ascii, key, sizeof(key));
		cache_put(v->cache, key, &rec, now);
	}
}

static void slot_release(struct verifier *v, struct domain_slot *d);

/* on_probe_done - a callout ended: cache it, then answer everyone waiting */
static void on_probe_done(void *arg, const struct outcome *o)
{
	struct probe *p = arg;
	struct verifier *v = p->v;
	p->callout = NULL;
	if (p->slot != NULL)
		slot_release(v, p->slot);
	if (!p->rate_limited)
		store(v, p, o);
	log_msg(LOG_DEBUG, "probe %s: %s at %s (%s) in %lld ms%s", p->address.normalized,
	        outcome_name(o->kind), probe_stage_name(o->stage), o->reason,
	        (long long)(clock_mono_ms() - p->started_ms), p->refresh ? " (refresh)" : "");

	pthread_mutex_lock(&v->lock);
	unlink_probe(v, p);
	v->stats.in_flight--;
	for (struct verify_ticket *t = p->waiters, *next; t != NULL; t = next) {
		next = t->next_waiter;
		settle_ticket(t, o, VERIFY_PROBED);
		ticket_unref(t);
	}
	pthread_cond_broadcast(&v->settled);
	pthread_mutex_unlock(&v->lock);
	free(p);
}

/* slot_for - the limiter slot of a domain, created on first use */
static struct domain_slot *slot_for(struct verifier *v, const char *domain)
{
	size_t b = bucket_of(domain) % DOMAIN_BUCKETS;
	for (struct domain_slot *d = v->domains[b]; d != NULL; d = d->next_in_bucket)
		if (strcmp(d->domain, domain) == 0)
			return d;
	struct domain_slot *d = calloc(1, sizeof(*d));
	if (d == NULL)
		return NULL;
	snprintf(d->domain, sizeof(d->domain), "%s", domain);
	d->next_in_bucket = v->domains[b];
	v->domains[b] = d;
	return d;
}

/* launch - start the callout of one probe (its place in the slot is taken) */
static void launch(struct verifier *v, struct probe *p)
{
	p->started_ms = clock_mono_ms();
	p->callout = callout_start(&v->engine->env, &p->address, NULL, NULL, NULL, on_probe_done, p);
	if (p->callout == NULL) {
		struct outcome o = {0};
		outcome_set(&o, OUTCOME_TEMPFAIL, STAGE_NONE, 0, NULL, NULL,
		            "out of memory starting a probe");
		on_probe_done(p, &o);
	}
}

/* admit - through the domain's limits: start now, wait in line, or answer
 * tempfail when the domain's probe rate is used up */
static void admit(struct verifier *v, struct probe *p)
{
	struct domain_slot *d = slot_for(v, p->address.domain_ascii);
	if (d == NULL) {
		launch(v, p); /* out of memory for the limiter: probe unlimited */
		return;
	}
	int64_t now = clock_mono_ms();
	if (now - d->window_start_ms >= RATE_WINDOW_MS) {
		d->window_start_ms = now;
		d->started_in_window = 0;
	}
	int rate = v->conf->domain_probe_rate;
	if (rate > 0 && d->started_in_window >= rate) {
		struct outcome o = {0};
		outcome_set(&o, OUTCOME_TEMPFAIL, STAGE_NONE, 0, NULL, NULL,
		            "per-domain probe rate limit reached (domain_probe_rate)");
		log_msg(LOG_NOTICE, "probe rate limit: %d probes to %s this minute; answering tempfail", rate,
		        d->domain);
		p->rate_limited = true;
		on_probe_done(p, &o);
		return;
	}
	if (d->running >= v->conf->domain_probe_limit) {
		p->next_pending = NULL;
		if (d->waiting_tail != NULL)
			d->waiting_tail->next_pending = p;
		else
			d->waiting_head = p;
		d->waiting_tail = p;
		return;
	}
	d->running++;
	d->started_in_window++;
	p->slot = d;
	launch(v, p);
}

/* slot_release - a probe of the domain ended: let the next one in line go */
static void slot_release(struct verifier *v, struct domain_slot *d)
{
	d->running--;
	struct probe *next = d->waiting_head;
	if (next == NULL)
		return;
	d->waiting_head = next->next_pending;
	if (d->waiting_head == NULL)
		d->waiting_tail = NULL;
	/* Deferred to the loop: we are inside the finished probe's callback. */
	next->next_pending = NULL;
	pthread_mutex_lock(&v->lock);
	next->next_pending = v->pending;
	v->pending = next;
	pthread_mutex_unlock(&v->lock);
	event_active(v->wake, EV_READ, 0);
}

/* tidy_domains - engine thread: forget idle domains whose minute is over */
static void tidy_domains(evutil_socket_t fd, short what, void *arg)
{
	struct verifier *v = arg;
	int64_t now = clock_mono_ms();
	for (size_t b = 0; b < DOMAIN_BUCKETS; b++) {
		struct domain_slot **link = &v->domains[b];
		while (*link != NULL) {
			struct domain_slot *d = *link;
			if (d->running == 0 && d->waiting_head == NULL &&
			    now - d->window_start_ms >= RATE_WINDOW_MS) {
				*link = d->next_in_bucket;
				free(d);
			} else {
				link = &d->next_in_bucket;
			}
		}
	}
}

/* start_pending - engine thread: admit every queued probe */
static void start_pending(evutil_socket_t fd, short what, void *arg)
{
	struct verifier *v = arg;
	pthread_mutex_lock(&v->lock);
	struct probe *queue = v->pending;
	v->pending = NULL;
	pthread_mutex_unlock(&v->lock);

	while (queue != NULL) {
		struct probe *p = queue;
		queue = p->next_pending;
		admit(v, p);
	}
}

/* sweep_cache - engine thread: drop expired records now and then */
static void sweep_cache(evutil_socket_t fd, short what, void *arg)
{
	struct verifier *v = arg;
	size_t removed = cache_sweep(v->cache, clock_now_ms());
	if (removed > 0)
		log_msg(LOG_INFO, "cache: removed %zu expired entries", removed);
}

/* queue_probe - join the probe for sender or start one; t may be NULL (a
 * refresh nobody waits for). Takes a reference on t for the probe. */
static bool queue_probe(struct verifier *v, const struct addr *sender, struct verify_ticket *t, bool refresh)
{
	bool wake = false;
	pthread_mutex_lock(&v->lock);
	struct probe *p = find_probe(v, sender->normalized);
	if (p != NULL) {
		if (t != NULL)
			v->stats.joined++;
	} else {
		p = calloc(1, sizeof(*p));
		if (p == NULL) {
			pthread_mutex_unlock(&v->lock);
			return false;
		}
		p->v = v;
		p->address = *sender;
		p->refresh = refresh;
		size_t b = bucket_of(sender->normalized);
		p->next_in_bucket = v->buckets[b];
		v->buckets[b] = p;
		p->next_pending = v->pending;
		v->pending = p;
		v->stats.probes++;
		v->stats.in_flight++;
		if (refresh)
			v->stats.refreshes++;
		wake = true;
	}
	if (t != NULL) {
		t->refs++;
		t->next_waiter = p->waiters;
		p->waiters = t;
	}
	pthread_mutex_unlock(&v->lock);
	if (wake)
		event_active(v->wake, EV_READ, 0);
	return true;
}

/* answer_from_cache - address record, then domain facts; true if answered */
static bool answer_from_cache(struct verifier *v, const struct addr *sender, struct verify_ticket *t)
{
	if (v->cache == NULL)
		return false;
	int64_t now = clock_now_ms();
	struct cache_record rec;
	char key[CACHE_KEY_MAX];
	cache_key_address(sender->normalized, key, sizeof(key));
	enum cache_status st = cache_get(v->cache, key, now, &rec);
	if (st == CACHE_MISS) {
		cache_key_domain(sender->domain_ascii, key, sizeof(key));
		if (cache_get(v->cache, key, now, &rec) == CACHE_MISS || !domain_fact(&rec.outcome))
			return false;
		pthread_mutex_lock(&v->lock);
		v->stats.domain_facts++;
		settle_ticket(t, &rec.outcome, VERIFY_DOMAIN_FACT);
		pthread_mutex_unlock(&v->lock);
		return true;
	}
	pthread_mutex_lock(&v->lock);
	if (st == CACHE_HIT)
		v->stats.cache_hits++;
	else
		v->stats.stale_hits++;
	settle_ticket(t, &rec.outcome, st == CACHE_HIT ? VERIFY_CACHED : VERIFY_STALE);
	pthread_mutex_unlock(&v->lock);
	if (st == CACHE_STALE && !queue_probe(v, sender, NULL, true))
		log_msg(LOG_WARNING, "out of memory: cannot refresh %s", sender->normalized);
	return true;
}

/* verify_submit - see verify.h */
struct verify_ticket *verify_submit(struct verifier *v, const struct addr *sender)
{
	struct verify_ticket *t = calloc(1, sizeof(*t));
	if (t == NULL)
		return NULL;
	t->v = v;
	t->refs = 1;
	t->submitted_ms = clock_mono_ms();
	if (answer_from_cache(v, sender, t))
		return t;
	if (!queue_probe(v, sender, t, false)) {
		free(t);
		return NULL;
	}
	return t;
}

/* verify_wait - see verify.h */
bool verify_wait(struct verify_ticket *t, int64_t deadline_ms, struct verify_result *out)
{
	struct verifier *v = t->v;
	/* The condition variable runs on CLOCK_REALTIME: convert the deadline. */
	int64_t wait_ms = deadline_ms - clock_mono_ms();
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	if (wait_ms > 0) {
		until.tv_sec += wait_ms / 1000;
		until.tv_nsec += (wait_ms % 1000) * 1000000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
	}
	pthread_mutex_lock(&v->lock);
	while (!t->done && wait_ms > 0)
		if (pthread_cond_timedwait(&v->settled, &v->lock, &until) == ETIMEDOUT)
			break;
	bool done = t->done;
	if (done)
		*out = t->result;
	pthread_mutex_unlock(&v->lock);
	return done;
}

/* verify_submitted_ms - see verify.h */
int64_t verify_submitted_ms(const struct verify_ticket *t)
{
	return t->submitted_ms;
}

/* verify_release - see verify.h */
void verify_release(struct verify_ticket *t)
{
	if (t == NULL)
		return;
	struct verifier *v = t->v;
	pthread_mutex_lock(&v->lock);
	ticket_unref(t);
	pthread_mutex_unlock(&v->lock);
}

/* verify_get_stats - see verify.h */
void verify_get_stats(struct verifier *v, struct verify_stats *out)
{
	pthread_mutex_lock(&v->lock);
	*out = v->stats;
	pthread_mutex_unlock(&v->lock);
}

/* engine_thread - run the loop until verifier_free breaks it */
static void *engine_thread(void *arg)
{
	struct verifier *v = arg;
	event_base_loop(v->engine->env.base, EVLOOP_NO_EXIT_ON_EMPTY);
	return NULL;
}

/* open_cache - the configured cache, or none (logged) */
static void open_cache(struct verifier *v)
{
	if (v->conf->cache[0] == '\0') {
		log_msg(LOG_NOTICE, "no cache configured: every sender is probed");
		return;
	}
	char why[300];
	v->cache = cache_open(v->conf->cache, v->conf->cache_max_mb, why, sizeof(why));
	if (v->cache == NULL)
		log_msg(LOG_ERR, "cache %s unusable (%s): verifying without a cache", v->conf->cache, why);
}

/* start_events - the wake-up event and the sweep timer */
static bool start_events(struct verifier *v)
{
	struct event_base *base = v->engine->env.base;
	v->wake = event_new(base, -1, 0, start_pending, v);
	v->tidy = event_new(base, -1, EV_PERSIST, tidy_domains, v);
	struct timeval minute = {.tv_sec = RATE_WINDOW_MS / 1000};
	if (v->wake == NULL || v->tidy == NULL || event_add(v->tidy, &minute) != 0)
		return false;
	if (v->cache != NULL) {
		v->sweep = event_new(base, -1, EV_PERSIST, sweep_cache, v);
		int64_t ms = v->conf->sweep_interval_ms;
		struct timeval every = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
		if (v->sweep == NULL || event_add(v->sweep, &every) != 0)
			return false;
	}
	return true;
}

/* verifier_new - see verify.h */
struct verifier *verifier_new(struct conf *conf, char *why, size_t why_size)
{
	static pthread_once_t threads_once = PTHREAD_ONCE_INIT;
	/* libevent must know about threads before the base exists, so that
	 * event_active() from milter threads wakes the loop safely. */
	pthread_once(&threads_once, (void (*)(void))evthread_use_pthreads);

	struct verifier *v = calloc(1, sizeof(*v));
	if (v == NULL) {
		snprintf(why, why_size, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&v->lock, NULL);
	pthread_cond_init(&v->settled, NULL);
	v->conf = conf_ref(conf);
	v->engine = engine_new(conf, why, why_size);
	if (v->engine == NULL)
		goto fail;
	open_cache(v);
	if (!start_events(v)) {
		snprintf(why, why_size, "cannot create engine events");
		goto fail;
	}
	int err = pthread_create(&v->thread, NULL, engine_thread, v);
	if (err != 0) {
		snprintf(why, why_size, "cannot start the engine thread: %s", strerror(err));
		goto fail;
	}
	v->thread_running = true;
	log_msg(LOG_INFO, "engine started: helo_name %s, cache %s", v->engine->helo_name,
	        v->cache != NULL ? conf->cache : "none");
	return v;
fail:
	verifier_free(v);
	return NULL;
}

/* cancel_all - engine thread gone: cancel every probe, settle its waiters */
static void cancel_all(struct verifier *v)
{
	struct outcome stopping = {0};
	outcome_set(&stopping, OUTCOME_TEMPFAIL, STAGE_NONE, 0, NULL, NULL, "vemilter is stopping");
	pthread_mutex_lock(&v->lock);
	for (size_t b = 0; b < BUCKETS; b++) {
		while (v->buckets[b] != NULL) {
			struct probe *p = v->buckets[b];
			v->buckets[b] = p->next_in_bucket;
			if (p->callout != NULL)
				callout_cancel(p->callout);
			for (struct verify_ticket *t = p->waiters, *next; t != NULL; t = next) {
				next = t->next_waiter;
				settle_ticket(t, &stopping, VERIFY_PROBED);
				ticket_unref(t);
			}
			free(p);
		}
	}
	v->pending = NULL;
	pthread_cond_broadcast(&v->settled);
	pthread_mutex_unlock(&v->lock);
}

/* verifier_free - see verify.h */
void verifier_free(struct verifier *v)
{
	if (v == NULL)
		return;
	if (v->thread_running) {
		event_base_loopbreak(v->engine->env.base);
		pthread_join(v->thread, NULL);
	}
	cancel_all(v);
	if (v->wake != NULL)
		event_free(v->wake);
	if (v->sweep != NULL)
		event_free(v->sweep);
	if (v->tidy != NULL)
		event_free(v->tidy);
	for (size_t b = 0; b < DOMAIN_BUCKETS; b++)
		while (v->domains[b] != NULL) {
			struct domain_slot *d = v->domains[b];
			v->domains[b] = d->next_in_bucket;
			free(d);
		}
	engine_free(v->engine);
	if (v->cache != NULL)
		cache_close(v->cache);
	conf_unref(v->conf);
	pthread_cond_destroy(&v->settled);
	pthread_mutex_destroy(&v->lock);
	free(v);
}
