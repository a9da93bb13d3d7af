/*
 * vcore.c - the verifier's rules (see vcore.h), engine-agnostic: who
 * waits for which probe, and when probes start.
 *
 * Owns the table of probes in flight (by address, and by stable form for
 * tagged senders), the start queue, every ticket until its last release,
 * the per-domain limiter slots and the pending greylist timers. One mutex
 * (core->lock) guards the probe tables, the start queue, the tickets and
 * the counters. Each ticket has its own condition variable, on
 * CLOCK_MONOTONIC, made when a thread first waits on it: answering a
 * ticket wakes the one thread waiting for it and no other, and a step of
 * the wall clock neither stretches nor cuts verify_budget. An answered
 * ticket is read without the lock (its done flag is atomic, its result
 * written once before it): a cached answer costs one lock at submit and
 * one at release. Limiter slots and
 * greylist timers belong to the engine thread alone. What the cache may
 * answer and what a probe leaves in it is vstore.c's; the cache is never
 * used with the lock held.
 *
 * A request (vcore_submit, any thread) is answered by the cache when
 * vstore_lookup allows (a stale positive answer also queues a background
 * refresh); otherwise it joins the probe in flight for its address (or, a
 * tagged sender, one for another address of its stable form) or queues a
 * new one, and waits.
 *
 * The engine thread starts queued probes in order (vcore_run). A refresh
 * first stamps the records it stands for (their next refresh one window
 * on); one whose records are no longer stale, and that nobody joined, is
 * dropped: so a stale record starts at most one refresh a window, however
 * many requests ask for it and whatever the refresh finds. Then the
 * budgets: every probe joins its domain's line, and the front of the line
 * is decided at once and again whenever a place frees or a timer turns:
 * start (a place under domain_probe_limit, the domain_probe_rate minute
 * allows, max_probes_in_flight not reached), or answer tempfail (its
 * requester's verify_budget has passed or would pass before the rate
 * turns, the domain is paused by domain_invalid_limit), or wait with a
 * timer; answering one hands the turn to the next, so every line drains.
 * A line whose head waits only for max_probes_in_flight is also listed
 * on the core (oldest first): a probe that ends gives its place to the
 * first listed line before its own.
 * client_probe_rate is judged at submit. A started probe gets the
 * domain's hints. When it ends, vstore
 * keeps the outcome (a greylisted one asks for one re-probe after
 * greylist_retry: a timer, dropped should a definite answer come first),
 * and every waiting ticket is answered; a tagged
 * joiner whose address differs gets the answer only if it is positive,
 * else it is queued as its own probe (a reject is about one address).
 */
#include "vcore.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dnskept.h"
#include "log.h"
#include "tags.h"
#include "vstore.h"

#define BUCKETS        4096  /* probes in flight hash tables; chains keep them unbounded */
#define DOMAIN_BUCKETS 16384 /* domain records */
/* How many of the least recently used domain records a new one looks at
 * for an idle one to evict, when the table is full: in-use records (a
 * paused domain's five minutes, a long line) may sit among the oldest. */
#define EVICT_SCAN     64
#define TIMER_BUCKETS  1024 /* pending greylist re-probes */
#define CLIENT_BUCKETS 1024 /* per-client budget table */
#define RATE_WINDOW_MS 60000
/* How long a domain that had domain_invalid_limit invalid addresses in a
 * minute gets no probes for new addresses: long enough for a forged flood
 * to pass (its sender retries in minutes), short enough that real mail to
 * the domain is only delayed, never refused. */
#define INVALID_PAUSE_MS (5 * 60000)
/* Beyond this many client addresses in the budget table, a new client is
 * not tracked (logged): the table must stay bounded under a botnet, and a
 * thousand-address botnet defeats a per-client budget anyway; the domain
 * and global budgets still hold. */
#define CLIENTS_MAX     100000
#define CLIENT_TEXT_MAX 64

/* The budgets (log line, reason): which one a request went over. */
enum budget {
	BUDGET_DOMAIN_RATE,    /* domain_probe_rate */
	BUDGET_DOMAIN_INVALID, /* domain_invalid_limit: the domain's pause */
	BUDGET_IN_FLIGHT,      /* max_probes_in_flight */
	BUDGET_CLIENT,         /* client_probe_rate */
	BUDGET_WAIT,           /* verify_budget: it could not start in time */
	BUDGET_COUNT,
};
_Static_assert(BUDGET_COUNT == VERIFY_BUDGET_KINDS, "verify.h counts the budgets");

/* Why a probe was started (log line, counters). */
enum probe_why {
	WHY_ASKED,    /* someone waits for it */
	WHY_REFRESH,  /* a stale answer was served: refresh it */
	WHY_GREYLIST, /* the last probe was greylisted: ask again */
};

struct verify_ticket {
	struct vcore *core;
	int refs; /* under core->lock */
	/* Set once, under core->lock, after result is written (a release
	 * store), never cleared: a reader that sees it (an acquire load) may
	 * read result without the lock, which the cached path does. */
	atomic_bool done;
	/* answered is initialised only for a ticket a thread waits on
	 * (vcore_wait, under the lock): a cached answer is there at submit and
	 * is never waited for. */
	bool cond_ready;
	pthread_cond_t answered; /* signalled when done is set (CLOCK_MONOTONIC), if cond_ready */
	struct verify_result result;
	int64_t submitted_ms;
	struct addr sender;                /* as submitted: a tagged joiner is told apart by it */
	int64_t deferred_since_ms;         /* known at submit (vstore_lookup); set before it is shared */
	struct verify_ticket *next_waiter; /* in its probe's list */
	void (*notify)(void *arg);         /* called once when done is set (under the lock); NULL: none */
	void *notify_arg;
};

/* One record per domain (engine thread only): its mail hosts (kept for
 * their TTL, within dns_cache_time), the resolution in flight and the
 * probes waiting for it, and its limits: probes running, the ones waiting
 * for a free place, and how many started in the current minute. */
struct domain_slot {
	struct vcore *core;
	struct domain_slot *next_in_bucket;
	struct domain_slot *lru_prev, *lru_next;       /* least recently used first */
	struct dns_kept *mx;                           /* its mail hosts as last resolved; NULL: none kept */
	int64_t mx_until;                              /* mono: kept until (TTL, dns_cache_time) */
	int64_t mx_ttl_end;                            /* mono: when their TTL runs out; 0: unknown */
	void *lookup;                                  /* the engine's resolution in flight; NULL: none */
	struct probe *resolving_head, *resolving_tail; /* launched (places taken), waiting for it */
	int running;                                   /* closing ones included */
	int closing; /* reported, still saying QUIT (engine reports_finished) */
	int started_in_window;
	int64_t window_start_ms;
	int64_t fleet_turn_ms; /* mono: the fleet's rate minute turns (its budget is spent); 0: not refused */
	unsigned fleet_spent;  /* ... and what the fleet began in it */
	struct probe *waiting_head, *waiting_tail;
	void *timer;       /* the engine's timer to look at the line again; NULL: none */
	int64_t timer_due; /* when it fires (mono) */
	bool draining;     /* drain() runs: a release inside it needs no second drain */
	bool at_cap;       /* its head waits for a place under max_probes_in_flight: listed in
	                    * core->cap_head..cap_tail (next_at_cap), oldest first */
	struct domain_slot *next_at_cap;
	int invalid_in_window; /* invalid addresses since invalid_window_start_ms */
	int64_t invalid_window_start_ms;
	int64_t paused_until_ms;         /* domain_invalid_limit reached: no probes until then */
	int64_t logged_ms[BUDGET_COUNT]; /* last "over budget" line for this domain, by budget */
	char domain[];                   /* A-label form, as probes spell it */
};

/* A client address's budget (client_probe_rate), under core->lock: milter
 * threads count it at submit. */
struct client_slot {
	struct client_slot *next_in_bucket;
	char client[CLIENT_TEXT_MAX];
	int started_in_window;
	int64_t window_start_ms;
	int64_t logged_ms;
};

struct probe {
	struct vcore *core;
	struct probe *next_in_bucket; /* by address */
	struct probe *next_in_stable; /* by stable form (tagged probes only) */
	struct probe *next_pending;   /* start queue, then a domain's waiting line */
	struct domain_slot *slot;     /* engine thread: counted as running there */
	struct addr address;
	char stable[ADDR_PATH_MAX]; /* the tagged sender's stable form; "" if not tagged */
	enum probe_why why;
	unsigned stamps;               /* VSTORE_STAMP_* bits a refresh stands for; under the lock */
	bool stamped;                  /* engine thread: start_refresh applied the stamps already */
	unsigned greylist_tries;       /* a greylist re-probe: the re-probes made so far, this one
	                                * included (vstore_store keeps counting from it) */
	bool no_store;                 /* answered by ourselves (limit, no memory): not cached */
	struct verify_ticket *waiters; /* each holds a reference for us */
	void *handle;                  /* the engine's probe; engine thread only */
	bool engine_started;           /* the engine took it: it reports when its connections end */
	bool counted;                  /* engine thread: counted in running_total */
	int64_t started_ms;
	int64_t deadline_ms; /* mono: a verdict after this misses its first requester's verify_budget,
	                      * so a probe still waiting in line then is answered tempfail */
	/* engine thread: the shared tier (vcore_engine.shared_fetch), asked once
	 * before a probe someone waits for */
	bool shared_asked;
	bool lease_ours;        /* we hold the address's lease: released when stored */
	bool lease_rechecked;   /* looked once more after taking the lease */
	void *shared;           /* the tier's request in flight; NULL: none */
	void *shared_timer;     /* the next look while another host probes; NULL: none */
	int64_t shared_poll_ms; /* the last wait between looks */
	int64_t shared_until;   /* mono: past this, stop waiting for the other host */
};

/* A greylisted address waiting for its re-probe (engine thread only). */
struct greylist_timer {
	struct vcore *core;
	struct greylist_timer *next_in_bucket;
	void *handle;
	struct addr address;
	unsigned tries; /* greylist re-probes made once this one has run */
};

struct vcore {
	struct conf *conf;
	struct vstore store; /* the cache (not ours; NULL: none) with conf */
	struct vcore_engine eng;
	unsigned tags; /* enabled tag kinds (tags.h) */

	/* engine thread only */
	struct domain_slot *domains[DOMAIN_BUCKETS];
	struct domain_slot *lru_head, *lru_tail; /* every record, least recently used first */
	size_t domain_count, domain_max;
	struct greylist_timer *timers[TIMER_BUCKETS];
	size_t timer_count, timer_max;
	int running_total; /* probes the engine runs, all domains (max_probes_in_flight); written
	                    * under the lock too (stats.running), read without it here */
	int max_in_flight; /* max_probes_in_flight, lowered by the fd limit (verify.c) */
	int fd_cap;        /* that fd limit (vcore_limit_in_flight); 0: none */
	int64_t in_flight_logged_ms;
	/* The domains whose line waits for max_probes_in_flight, in the order
	 * they met the cap: a place that frees goes to the first of them. */
	struct domain_slot *cap_head, *cap_tail;
	bool cap_draining; /* cap_release() runs: a place freed inside it is seen by its loop */

	pthread_mutex_t lock;
	pthread_condattr_t ticket_cond_attr; /* CLOCK_MONOTONIC, for every ticket's answered */
	struct probe *buckets[BUCKETS];
	struct probe *stable_buckets[BUCKETS];
	struct probe *pending; /* queued for the engine thread */
	struct client_slot *clients[CLIENT_BUCKETS];
	size_t client_count;
	struct verify_stats stats;
	size_t tickets; /* not yet released: the core outlives vcore_free() for them */
	bool freed;     /* vcore_free() ran: the last release frees what is left */
	/* probes finished (answer stored, probe out of the table): a request
	 * whose cache lookup came before one finished looks again rather than
	 * probe the same address a second time (vcore_submit). Written under
	 * the lock; vcore_submit reads it without (atomic): the answer was
	 * stored before the count moved. */
	_Atomic uint64_t finished_seq;
};

/* ---- small helpers ---- */

static int64_t wall_now(struct vcore *c)
{
	return c->eng.wall_ms(c->eng.ctx);
}

static int64_t mono_now(struct vcore *c)
{
	return c->eng.mono_ms(c->eng.ctx);
}

/* is_temporary - the probe could not find out this time */
static bool is_temporary(enum outcome_kind kind)
{
	return kind == OUTCOME_TEMPFAIL || kind == OUTCOME_BLOCKED;
}

/* stable_of - the stable form of a tagged sender into buf ("" if none) */
static void stable_of(struct vcore *c, const struct addr *a, char *buf, size_t size)
{
	tags_stable_form(a, c->tags, buf, size);
}

/* bucket_of - FNV-1a of a key, modulo n */
static size_t bucket_of(const char *key, size_t n)
{
	uint32_t h = 2166136261u;
	for (const unsigned char *p = (const unsigned char *)key; *p; p++)
		h = (h ^ *p) * 16777619u;
	return h % n;
}

/* ---- tickets (under the lock) ---- */

/* ticket_unref - drop one reference */
static void ticket_unref(struct verify_ticket *t)
{
	if (--t->refs == 0) {
		t->core->tickets--;
		if (t->cond_ready)
			pthread_cond_destroy(&t->answered);
		free(t);
	}
}

/* settle_ticket - the answer for one ticket */
static void settle_ticket(struct vcore *c, struct verify_ticket *t, const struct outcome *o,
                          enum verify_source source, int64_t deferred_since_ms)
{
	t->result.outcome = *o;
	t->result.source = source;
	t->result.elapsed_ms = mono_now(c) - t->submitted_ms;
	t->result.deferred_since_ms = is_temporary(o->kind) ? deferred_since_ms : 0;
	atomic_store_explicit(&t->done, true, memory_order_release);
	if (t->cond_ready)
		pthread_cond_signal(&t->answered); /* one thread waits for a ticket: its owner */
	if (t->notify != NULL) {
		/* Under the lock: vcore_notify_cancel() returning means no call
		 * runs or will run. The callback only wakes its loop. */
		t->notify(t->notify_arg);
		t->notify = NULL;
	}
}

/* ---- the probe tables (under the lock) ---- */

/* find_probe - the probe in flight for an address */
static struct probe *find_probe(struct vcore *c, const char *normalized)
{
	for (struct probe *p = c->buckets[bucket_of(normalized, BUCKETS)]; p != NULL; p = p->next_in_bucket)
		if (strcmp(p->address.normalized, normalized) == 0)
			return p;
	return NULL;
}

/* find_stable - a probe in flight for another address of a stable form */
static struct probe *find_stable(struct vcore *c, const char *stable)
{
	for (struct probe *p = c->stable_buckets[bucket_of(stable, BUCKETS)]; p != NULL;
	     p = p->next_in_stable)
		if (strcmp(p->stable, stable) == 0)
			return p;
	return NULL;
}

/* unlink_probe - take p out of both tables */
static void unlink_probe(struct vcore *c, struct probe *p)
{
	struct probe **link = &c->buckets[bucket_of(p->address.normalized, BUCKETS)];
	while (*link != NULL && *link != p)
		link = &(*link)->next_in_bucket;
	if (*link == p)
		*link = p->next_in_bucket;
	if (p->stable[0] == '\0')
		return;
	link = &c->stable_buckets[bucket_of(p->stable, BUCKETS)];
	while (*link != NULL && *link != p)
		link = &(*link)->next_in_stable;
	if (*link == p)
		*link = p->next_in_stable;
}

/* ---- budgets ---- */

/* budget_name - the directive a budget is set by */
static const char *budget_name(enum budget b)
{
	switch (b) {
	case BUDGET_DOMAIN_RATE:
		return "domain_probe_rate";
	case BUDGET_DOMAIN_INVALID:
		return "domain_invalid_limit";
	case BUDGET_IN_FLIGHT:
		return "max_probes_in_flight";
	case BUDGET_CLIENT:
		return "client_probe_rate";
	case BUDGET_WAIT:
		return "verify_budget";
	case BUDGET_COUNT:
		break;
	}
	return "budget";
}

/* verify_budget_name - see verify.h */
const char *verify_budget_name(int i)
{
	return i >= 0 && i < BUDGET_COUNT ? budget_name((enum budget)i) : "budget";
}

/* budget_log - one line naming the budget and the party, at most once a
 * minute per party and budget (*last: when the last one was written), so
 * a flood cannot flood the log as well */
static void budget_log(int64_t *last, int64_t now, enum budget b, const char *kind, const char *party)
{
	if (*last != 0 && now - *last < RATE_WINDOW_MS)
		return;
	*last = now;
	log_msg(LOG_NOTICE,
	        "over budget: %s for %s %s; answering from the cache or tempfail (more "
	        "this minute not logged)",
	        budget_name(b), kind, party);
}

/* budget_outcome - the tempfail a request over budget b gets */
static void budget_outcome(struct outcome *o, enum budget b)
{
	char reason[96];
	snprintf(reason, sizeof(reason), "over budget (%s): not probed", budget_name(b));
	memset(o, 0, sizeof(*o));
	outcome_set(o, OUTCOME_TEMPFAIL, STAGE_NONE, 0, NULL, NULL, reason);
}

/* client_slot_for - the budget of a client address (under the lock);
 * NULL: not tracked (table full, or out of memory) */
static struct client_slot *client_slot_for(struct vcore *c, const char *client, int64_t now)
{
	size_t b = bucket_of(client, CLIENT_BUCKETS);
	for (struct client_slot *s = c->clients[b]; s != NULL; s = s->next_in_bucket)
		if (strcmp(s->client, client) == 0)
			return s;
	if (c->client_count >= CLIENTS_MAX)
		return NULL;
	struct client_slot *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return NULL;
	snprintf(s->client, sizeof(s->client), "%s", client);
	s->window_start_ms = now;
	s->next_in_bucket = c->clients[b];
	c->clients[b] = s;
	c->client_count++;
	return s;
}

/* client_take - a new probe for client (under the lock): false when its
 * client_probe_rate is used up this minute, ours or the fleet's
 * (*log_it: write the line; *fleet_spent: the fleet's count when other
 * hosts' probes are among it, else 0) */
static bool client_take(struct vcore *c, const char *client, int64_t now, bool *log_it, unsigned *fleet_spent)
{
	*log_it = false;
	*fleet_spent = 0;
	int rate = c->conf->client_probe_rate;
	if (client == NULL || client[0] == '\0' || rate <= 0)
		return true;
	struct client_slot *s = client_slot_for(c, client, now);
	if (s == NULL)
		return true;
	if (now - s->window_start_ms >= RATE_WINDOW_MS) {
		s->window_start_ms = now;
		s->started_in_window = 0;
	}
	if (s->started_in_window >= rate ||
	    (c->eng.fleet_client_rate != NULL &&
	     !c->eng.fleet_client_rate(c->eng.ctx, client, rate, fleet_spent))) {
		if (s->logged_ms == 0 || now - s->logged_ms >= RATE_WINDOW_MS) {
			s->logged_ms = now;
			*log_it = true;
		}
		return false;
	}
	s->started_in_window++;
	return true;
}

enum { QUEUE_NOMEM = 0, QUEUE_OK = 1, QUEUE_RECHECK = -1 };
#define NO_RECHECK UINT64_MAX

/* queue_probe - join the probe for sender, or queue a new one. t may be
 * NULL (nobody waits: a refresh or a greylist re-probe); a ticket gets a
 * reference for the probe. join_stable: a waiting tagged request may join
 * a probe of another address of its stable form. stamps: records this
 * request stands for a refresh of. greylist_tries: a greylist re-probe's
 * count (else 0). seen_finished: finished_seq when the caller's cache
 * lookup began (NO_RECHECK: none); if a probe finished since and none is
 * left to join, nothing is queued: QUEUE_RECHECK, look in the cache again.
 * QUEUE_NOMEM (0, false) when out of memory. */
static int queue_probe(struct vcore *c, const struct addr *sender, const char *stable,
                       struct verify_ticket *t, enum probe_why why, unsigned stamps, bool join_stable,
                       unsigned greylist_tries, const char *client, uint64_t seen_finished)
{
	bool wake = false, log_client = false;
	unsigned client_fleet = 0;
	int64_t now = mono_now(c);
	pthread_mutex_lock(&c->lock);
	struct probe *p = find_probe(c, sender->normalized);
	if (p == NULL && join_stable && t != NULL && stamps == 0 && stable[0] != '\0')
		p = find_stable(c, stable);
	if (p != NULL) {
		if (t != NULL)
			c->stats.joined++;
		p->stamps |= stamps;
		if (greylist_tries > p->greylist_tries)
			p->greylist_tries = greylist_tries;
	} else if (seen_finished != NO_RECHECK && seen_finished != atomic_load(&c->finished_seq)) {
		pthread_mutex_unlock(&c->lock);
		return QUEUE_RECHECK;
	} else if (t != NULL && !client_take(c, client, now, &log_client, &client_fleet)) {
		/* Over the client's budget: joining costs nothing, a new probe
		 * does; the cache had nothing to serve (vcore_submit asked it). */
		struct outcome o;
		budget_outcome(&o, BUDGET_CLIENT);
		settle_ticket(c, t, &o, VERIFY_PROBED, t->deferred_since_ms);
		c->stats.over_budget++;
		c->stats.over_budget_by[BUDGET_CLIENT]++;
		pthread_mutex_unlock(&c->lock);
		if (log_client) { /* client_take keeps it to one line a minute */
			char party[200];
			if (client_fleet > 0)
				snprintf(party, sizeof(party), "%s (%u probes this minute across the fleet)",
				         client, client_fleet);
			else
				snprintf(party, sizeof(party), "%s", client);
			budget_log(&(int64_t){0}, now, BUDGET_CLIENT, "client", party);
		}
		return true;
	} else {
		p = calloc(1, sizeof(*p));
		if (p == NULL) {
			pthread_mutex_unlock(&c->lock);
			return false;
		}
		p->core = c;
		p->address = *sender;
		snprintf(p->stable, sizeof(p->stable), "%s", stable);
		p->why = why;
		p->stamps = stamps;
		p->greylist_tries = greylist_tries;
		p->deadline_ms = now + c->conf->verify_budget_ms;
		size_t b = bucket_of(sender->normalized, BUCKETS);
		p->next_in_bucket = c->buckets[b];
		c->buckets[b] = p;
		if (p->stable[0] != '\0') {
			b = bucket_of(p->stable, BUCKETS);
			p->next_in_stable = c->stable_buckets[b];
			c->stable_buckets[b] = p;
		}
		p->next_pending = c->pending;
		c->pending = p;
		c->stats.in_flight++;
		wake = true;
	}
	if (t != NULL) {
		t->refs++;
		t->next_waiter = p->waiters;
		p->waiters = t;
	}
	pthread_mutex_unlock(&c->lock);
	if (wake)
		c->eng.wake(c->eng.ctx);
	return true;
}

/* answer_from_cache - the cache's answer for t, if it may be served
 * (vstore_lookup); true if t was answered. first: t is new, counted in
 * core->tickets here (one lock for both on the cached path). */
static bool answer_from_cache(struct vcore *c, struct verify_ticket *t, const char *stable, bool first)
{
	struct vstore_answer a;
	enum vstore_lookup found = vstore_lookup(&c->store, &t->sender, stable, wall_now(c), &a);
	pthread_mutex_lock(&c->lock);
	if (first)
		c->tickets++;
	t->deferred_since_ms = a.deferred_since_ms;
	if (found == VSTORE_ANSWER) {
		settle_ticket(c, t, &a.outcome, a.source, a.deferred_since_ms);
		switch (a.hit) {
		case VSTORE_HIT_ADDRESS:
			c->stats.cache_hits++;
			break;
		case VSTORE_HIT_STALE:
			c->stats.stale_hits++;
			break;
		case VSTORE_HIT_TAGGED:
			c->stats.tagged_hits++;
			break;
		case VSTORE_HIT_DOMAIN:
			c->stats.domain_facts++;
			break;
		}
	} else {
		c->stats.misses++;
		if (found == VSTORE_WITHHELD)
			c->stats.stale_withheld++;
	}
	pthread_mutex_unlock(&c->lock);
	if (found == VSTORE_ANSWER && a.refresh != 0 &&
	    !queue_probe(c, &t->sender, stable, NULL, WHY_REFRESH, a.refresh, false, 0, NULL, NO_RECHECK))
		log_msg(LOG_WARNING, "out of memory: cannot refresh %s", t->sender.normalized);
	return found == VSTORE_ANSWER;
}

/* ---- greylist re-probes (engine thread) ---- */

/* find_timer - the pending re-probe of an address, by its link */
static struct greylist_timer **find_timer(struct vcore *c, const char *normalized)
{
	struct greylist_timer **link = &c->timers[bucket_of(normalized, TIMER_BUCKETS)];
	while (*link != NULL && strcmp((*link)->address.normalized, normalized) != 0)
		link = &(*link)->next_in_bucket;
	return link;
}

/* on_greylist_timer - the time is up: probe the address again */
static void on_greylist_timer(void *arg)
{
	struct greylist_timer *gt = arg;
	struct vcore *c = gt->core;
	struct greylist_timer **link = find_timer(c, gt->address.normalized);
	if (*link == gt)
		*link = gt->next_in_bucket;
	c->timer_count--;
	char stable[ADDR_PATH_MAX];
	stable_of(c, &gt->address, stable, sizeof(stable));
	if (!queue_probe(c, &gt->address, stable, NULL, WHY_GREYLIST, 0, false, gt->tries, NULL, NO_RECHECK))
		log_msg(LOG_WARNING, "out of memory: cannot probe %s again", gt->address.normalized);
	free(gt);
}

/* schedule_greylist - one re-probe of a greylisted address after
 * greylist_retry, unless one is pending or too many are; it carries its
 * count (tries). True if scheduled (a vstore_greylist_fn) */
static bool schedule_greylist(void *arg, const struct addr *a, unsigned tries)
{
	struct vcore *c = arg;
	if (*find_timer(c, a->normalized) != NULL)
		return false;
	if (c->timer_count >= c->timer_max) {
		log_msg(LOG_NOTICE, "greylisted: %zu re-probes pending already; %s is not asked again early",
		        c->timer_count, a->normalized);
		return false;
	}
	struct greylist_timer *gt = calloc(1, sizeof(*gt));
	if (gt == NULL)
		return false;
	gt->core = c;
	gt->address = *a;
	gt->tries = tries;
	gt->handle = c->eng.timer_start(c->eng.ctx, c->conf->greylist_retry_ms, on_greylist_timer, gt);
	if (gt->handle == NULL) {
		free(gt);
		return false;
	}
	struct greylist_timer **link = find_timer(c, a->normalized);
	*link = gt;
	c->timer_count++;
	log_msg(LOG_DEBUG, "greylisted: %s is asked again in %lld ms", a->normalized,
	        (long long)c->conf->greylist_retry_ms);
	return true;
}

/* drop_greylist - a definite answer came in: a pending re-probe is moot */
static void drop_greylist(struct vcore *c, const struct addr *a)
{
	struct greylist_timer **link = find_timer(c, a->normalized);
	struct greylist_timer *gt = *link;
	if (gt == NULL)
		return;
	*link = gt->next_in_bucket;
	c->timer_count--;
	c->eng.timer_cancel(c->eng.ctx, gt->handle);
	free(gt);
}

/* ---- probes (engine thread) ---- */

static void slot_release(struct vcore *c, struct domain_slot *d);
static void count_invalid(struct vcore *c, const char *domain);
static void cap_release(struct vcore *c);

/* flag_names - the outcome's flags for the log, e.g. " flags=greylist" */
static void flag_names(unsigned flags, char *buf, size_t size)
{
	char names[120];
	outcome_flags_text(flags, names, sizeof(names));
	snprintf(buf, size, "%s%s", names[0] ? " flags=" : "", names);
}

/* why_name - the log's suffix for why a probe ran */
static const char *why_name(enum probe_why why)
{
	switch (why) {
	case WHY_REFRESH:
		return " (refresh)";
	case WHY_GREYLIST:
		return " (greylist retry)";
	case WHY_ASKED:
		break;
	}
	return "";
}

/* requeue_joiners - tagged joiners (linked by next_waiter, each holding
 * the reference it had on the probe) an answer was not for: each gets a
 * probe of its own, nobody else's; out of memory: a tempfail stamped now */
static void requeue_joiners(struct vcore *c, struct verify_ticket *requeue, int64_t now)
{
	while (requeue != NULL) {
		struct verify_ticket *t = requeue;
		requeue = t->next_waiter;
		char stable[ADDR_PATH_MAX];
		stable_of(c, &t->sender, stable, sizeof(stable));
		bool queued = queue_probe(c, &t->sender, stable, t, WHY_ASKED, 0, false, 0, NULL, NO_RECHECK);
		pthread_mutex_lock(&c->lock);
		if (!queued) {
			struct outcome oom = {0};
			outcome_set(&oom, OUTCOME_TEMPFAIL, STAGE_NONE, 0, NULL, NULL,
			            "out of memory queuing a probe");
			settle_ticket(c, t, &oom, VERIFY_PROBED, now);
		}
		ticket_unref(t);
		pthread_mutex_unlock(&c->lock);
	}
}

/* settle_waiters - p is answered (o, from source; deferred: its deferral
 * start): unlink it and answer every ticket waiting for it. A waiter for
 * p's own address gets o; a tagged joiner of another address gets it
 * tagged if it is positive (vstore_transferable), else it is requeued as
 * its own probe (a reject is about one address; now stamps an out of
 * memory tempfail). Counted under the lock: *same (may be NULL) for
 * every waiter of p's address answered, *tagged (may be NULL) for every
 * tagged joiner answered. p stays the caller's to free. */
static void settle_waiters(struct vcore *c, struct probe *p, const struct outcome *o,
                           enum verify_source source, int64_t deferred, uint64_t *same, uint64_t *tagged,
                           int64_t now)
{
	struct verify_ticket *requeue = NULL;
	struct outcome as_tagged = *o;
	as_tagged.flags |= OUTCOME_F_TAGGED;
	pthread_mutex_lock(&c->lock);
	unlink_probe(c, p);
	atomic_fetch_add(&c->finished_seq, 1);
	c->stats.in_flight--;
	for (struct verify_ticket *t = p->waiters, *next; t != NULL; t = next) {
		next = t->next_waiter;
		uint64_t *counter;
		if (strcmp(t->sender.normalized, p->address.normalized) == 0) {
			settle_ticket(c, t, o, source, deferred);
			counter = same;
		} else if (vstore_transferable(o)) {
			settle_ticket(c, t, &as_tagged, source, 0);
			counter = tagged;
		} else {
			t->next_waiter = requeue; /* keeps the probe's reference */
			requeue = t;
			continue;
		}
		if (counter != NULL)
			(*counter)++;
		ticket_unref(t);
	}
	pthread_mutex_unlock(&c->lock);
	requeue_joiners(c, requeue, now);
}

/* on_probe_done - a probe ended: stamp, store, then answer everyone waiting */
static void on_probe_done(void *arg, const struct outcome *o)
{
	struct probe *p = arg;
	struct vcore *c = p->core;
	if (c->eng.probe_result != NULL && p->engine_started)
		c->eng.probe_result(c->eng.ctx, o, mono_now(c) - p->started_ms);
	p->handle = NULL;
	bool freed_place = p->counted;
	if (p->counted) {
		pthread_mutex_lock(&c->lock);
		c->running_total--;
		c->stats.running = (uint64_t)c->running_total;
		pthread_mutex_unlock(&c->lock);
		p->counted = false;
	}
	if (o->kind == OUTCOME_INVALID && !p->no_store)
		count_invalid(c, p->address.domain_ascii);
	/* The place under max_probes_in_flight goes first to the lines that
	 * waited for one, oldest first, then to this probe's own line. */
	if (freed_place)
		cap_release(c);
	if (p->slot != NULL) {
		/* Its connections may still say QUIT: the domain's place is given
		 * back when the engine says they are gone (vcore_on_finished). */
		if (c->eng.reports_finished && p->engine_started)
			p->slot->closing++;
		else
			slot_release(c, p->slot);
	}
	int64_t now = wall_now(c);
	/* Refreshes that joined this probe after it started: stamp them too. */
	pthread_mutex_lock(&c->lock);
	unsigned stamps = p->stamps;
	pthread_mutex_unlock(&c->lock);
	vstore_stamp(&c->store, &p->address, p->stable, stamps, now);
	int64_t deferred = 0;
	/* Our own limit stopped the probe (OUTCOME_F_LIMITED): not an answer to keep. */
	if (!p->no_store && !(o->flags & OUTCOME_F_LIMITED))
		deferred = vstore_store(&c->store, &p->address, p->stable, o, p->greylist_tries, now,
		                        schedule_greylist, c);
	else if (is_temporary(o->kind))
		deferred = vstore_carried_deferral(&c->store, &p->address, now);
	if (!is_temporary(o->kind))
		drop_greylist(c, &p->address);
	if (p->lease_ours && c->eng.shared_release != NULL)
		c->eng.shared_release(c->eng.ctx, &p->address); /* after the records it leaves */
	char flags[128];
	flag_names(o->flags, flags, sizeof(flags));
	log_msg(LOG_DEBUG, "probe %s: %s at %s (%s) in %lld ms%s%s", p->address.normalized,
	        outcome_name(o->kind), probe_stage_name(o->stage), o->reason,
	        (long long)(mono_now(c) - p->started_ms), why_name(p->why), flags);

	settle_waiters(c, p, o, VERIFY_PROBED, deferred, NULL, &c->stats.tagged_hits, now);
	free(p);
}

/* finish_here - answer a probe ourselves (not cached) */
static void finish_here(struct probe *p, const char *reason)
{
	struct outcome o = {0};
	outcome_set(&o, OUTCOME_TEMPFAIL, STAGE_NONE, 0, NULL, NULL, reason);
	p->no_store = true;
	on_probe_done(p, &o);
}

/* over_budget - answer a probe that may not start: tempfail, not cached,
 * and one log line per party a minute (*last). The counts are of requests
 * (verify.h): every ticket waiting for it; a refresh nobody waits for is
 * no request. */
static void over_budget(struct vcore *c, struct probe *p, enum budget b, int64_t *last, const char *kind,
                        const char *party)
{
	budget_log(last, mono_now(c), b, kind, party);
	pthread_mutex_lock(&c->lock);
	for (const struct verify_ticket *t = p->waiters; t != NULL; t = t->next_waiter) {
		c->stats.over_budget++;
		c->stats.over_budget_by[b]++;
	}
	pthread_mutex_unlock(&c->lock);
	struct outcome o;
	budget_outcome(&o, b);
	p->no_store = true;
	on_probe_done(p, &o);
}

/* probe_go - hand the probe to the engine, with the domain's hints and
 * its mail hosts if they were resolved for it (mx; NULL: it resolves) */
static void probe_go(struct vcore *c, struct probe *p, const struct dns_answer *mx)
{
	struct callout_hints hints;
	vstore_hints(&c->store, p->address.domain_ascii, wall_now(c), &hints);
	hints.mx = mx;
	p->handle = c->eng.probe_start(c->eng.ctx, &p->address, &hints, on_probe_done, p);
	p->engine_started = p->handle != NULL;
	if (p->handle == NULL)
		finish_here(p, "out of memory starting a probe");
}

/* probe_go_kept - probe_go with an answer of its own made from kept */
static void probe_go_kept(struct vcore *c, struct probe *p, const struct dns_kept *kept, int64_t ttl_left_ms)
{
	struct dns_answer a;
	if (!dns_kept_answer(kept, ttl_left_ms, &a)) {
		probe_go(c, p, NULL); /* it resolves by itself */
		return;
	}
	probe_go(c, p, &a);
	dns_answer_clear(&a);
}

/* mx_fresh - d's kept mail hosts may still be used */
static bool mx_fresh(struct vcore *c, const struct domain_slot *d)
{
	return d->mx != NULL && mono_now(c) < d->mx_until;
}

/* mx_ttl_left - what is left of the kept answer's TTL (0: unknown) */
static int64_t mx_ttl_left(struct vcore *c, const struct domain_slot *d)
{
	if (d->mx_ttl_end == 0)
		return 0;
	int64_t left = d->mx_ttl_end - mono_now(c);
	return left > 0 ? left : 1;
}

/* mx_keep - keep a finished resolution's answer (not TEMPFAIL) for its
 * TTL, at most dns_cache_time; false if it is not kept (k stays the
 * caller's) */
static bool mx_keep(struct vcore *c, struct domain_slot *d, struct dns_kept *k)
{
	int64_t keep = c->conf->dns_cache_time_ms;
	int64_t ttl = dns_kept_ttl_ms(k);
	if (ttl > 0 && ttl < keep)
		keep = ttl;
	if (dns_kept_status(k) == DNS_TEMPFAIL || keep <= 0)
		return false;
	dns_kept_free(d->mx);
	int64_t now = mono_now(c);
	d->mx = k;
	d->mx_until = now + keep;
	d->mx_ttl_end = ttl > 0 ? now + ttl : 0;
	return true;
}

/* go_unresolved - the probes in a list start without a shared answer:
 * each resolves by itself */
static void go_unresolved(struct vcore *c, struct probe *list)
{
	while (list != NULL) {
		struct probe *p = list;
		list = p->next_pending;
		p->next_pending = NULL;
		probe_go(c, p, NULL);
	}
}

/* on_resolved - the domain's resolution answered: every probe that waited
 * for it starts with its own copy (TEMPFAIL too: they asked at the same
 * moment), and the answer is kept for the probes that follow */
static void on_resolved(void *arg, const struct dns_answer *answer)
{
	struct domain_slot *d = arg;
	struct vcore *c = d->core;
	d->lookup = NULL;
	/* Starting one may end it at once (and start others): the list is
	 * taken off the record first, so those make a list of their own. */
	struct probe *waiting = d->resolving_head;
	d->resolving_head = d->resolving_tail = NULL;
	struct dns_kept *k = dns_keep(answer);
	if (k == NULL) {
		go_unresolved(c, waiting); /* out of memory: nothing shared */
		return;
	}
	bool kept = mx_keep(c, d, k);
	while (waiting != NULL) {
		struct probe *p = waiting;
		waiting = p->next_pending;
		p->next_pending = NULL;
		probe_go_kept(c, p, k, answer->ttl_ms);
	}
	if (!kept)
		dns_kept_free(k);
}

/* launch - start the probe (its place in the slot is taken): with the
 * domain's kept mail hosts if fresh, else once its resolution (shared by
 * every probe of the domain that starts meanwhile) has answered */
static void launch(struct vcore *c, struct probe *p)
{
	p->started_ms = mono_now(c);
	pthread_mutex_lock(&c->lock);
	c->stats.probes++;
	if (p->why == WHY_REFRESH)
		c->stats.refreshes++;
	else if (p->why == WHY_GREYLIST)
		c->stats.greylist_retries++;
	c->running_total++;
	c->stats.running = (uint64_t)c->running_total;
	pthread_mutex_unlock(&c->lock);
	p->counted = true;
	struct domain_slot *d = p->slot;
	if (d == NULL || c->eng.resolve_start == NULL || p->address.domain_kind != ADDR_DOMAIN_NAME) {
		probe_go(c, p, NULL);
		return;
	}
	if (mx_fresh(c, d)) {
		probe_go_kept(c, p, d->mx, mx_ttl_left(c, d));
		return;
	}
	p->next_pending = NULL;
	if (d->resolving_tail != NULL)
		d->resolving_tail->next_pending = p;
	else
		d->resolving_head = p;
	d->resolving_tail = p;
	if (d->lookup != NULL)
		return; /* it joins the resolution in flight */
	d->lookup = c->eng.resolve_start(c->eng.ctx, d->domain, on_resolved, d);
	if (d->lookup != NULL)
		return;
	struct probe *waiting = d->resolving_head;
	d->resolving_head = d->resolving_tail = NULL;
	go_unresolved(c, waiting);
}

/* slot_find - the record of a domain, if there is one */
static struct domain_slot *slot_find(struct vcore *c, const char *domain)
{
	for (struct domain_slot *d = c->domains[bucket_of(domain, DOMAIN_BUCKETS)]; d != NULL;
	     d = d->next_in_bucket)
		if (strcmp(d->domain, domain) == 0)
			return d;
	return NULL;
}

/* lru_unlink - take d out of the use order */
static void lru_unlink(struct vcore *c, struct domain_slot *d)
{
	if (d->lru_prev != NULL)
		d->lru_prev->lru_next = d->lru_next;
	else if (c->lru_head == d)
		c->lru_head = d->lru_next;
	if (d->lru_next != NULL)
		d->lru_next->lru_prev = d->lru_prev;
	else if (c->lru_tail == d)
		c->lru_tail = d->lru_prev;
	d->lru_prev = d->lru_next = NULL;
}

/* lru_touch - d was used now: it goes last in the use order */
static void lru_touch(struct vcore *c, struct domain_slot *d)
{
	if (c->lru_tail == d)
		return;
	lru_unlink(c, d);
	d->lru_prev = c->lru_tail;
	if (c->lru_tail != NULL)
		c->lru_tail->lru_next = d;
	else
		c->lru_head = d;
	c->lru_tail = d;
}

/* slot_in_use - a probe, a line, a resolution, a timer or a pause hangs
 * on the record: it must stay */
static bool slot_in_use(const struct domain_slot *d, int64_t now)
{
	return d->running > 0 || d->waiting_head != NULL || d->timer != NULL || d->lookup != NULL ||
	       d->resolving_head != NULL || d->at_cap || d->draining || d->paused_until_ms > now;
}

/* slot_drop - forget a record not in use */
static void slot_drop(struct vcore *c, struct domain_slot *d)
{
	struct domain_slot **link = &c->domains[bucket_of(d->domain, DOMAIN_BUCKETS)];
	while (*link != NULL && *link != d)
		link = &(*link)->next_in_bucket;
	if (*link == d)
		*link = d->next_in_bucket;
	lru_unlink(c, d);
	dns_kept_free(d->mx);
	c->domain_count--;
	free(d);
}

/* evict_one - make room: drop the least recently used record not in use
 * among the EVICT_SCAN oldest; false if they are all in use */
static bool evict_one(struct vcore *c)
{
	int64_t now = mono_now(c);
	size_t looked = 0;
	for (struct domain_slot *d = c->lru_head; d != NULL && looked < EVICT_SCAN;
	     d = d->lru_next, looked++) {
		if (!slot_in_use(d, now)) {
			slot_drop(c, d);
			return true;
		}
	}
	return false;
}

/* slot_for - the record of a domain, created on first use (evicting the
 * least recently used one not in use when the table is full) */
static struct domain_slot *slot_for(struct vcore *c, const char *domain)
{
	struct domain_slot *d = slot_find(c, domain);
	if (d != NULL) {
		lru_touch(c, d);
		return d;
	}
	if (c->domain_count >= c->domain_max && !evict_one(c))
		log_msg(LOG_DEBUG, "domain table full (%zu) of records in use: %s added beyond it",
		        c->domain_count, domain);
	size_t len = strlen(domain);
	d = calloc(1, sizeof(*d) + len + 1);
	if (d == NULL)
		return NULL;
	d->core = c;
	memcpy(d->domain, domain, len + 1);
	d->window_start_ms = mono_now(c) - RATE_WINDOW_MS; /* a new domain starts a new window */
	size_t b = bucket_of(domain, DOMAIN_BUCKETS);
	d->next_in_bucket = c->domains[b];
	c->domains[b] = d;
	c->domain_count++;
	lru_touch(c, d);
	return d;
}

/* count_invalid - a probe found an invalid address of domain: at
 * domain_invalid_limit in a minute (a forged flood at the domain, each
 * probe a distinct address: probes are shared per address and an invalid
 * answer is cached), the domain's new addresses pause INVALID_PAUSE_MS */
static void count_invalid(struct vcore *c, const char *domain)
{
	int limit = c->conf->domain_invalid_limit;
	if (limit <= 0)
		return;
	struct domain_slot *d = slot_for(c, domain);
	if (d == NULL)
		return;
	int64_t now = mono_now(c);
	if (now - d->invalid_window_start_ms >= RATE_WINDOW_MS) {
		d->invalid_window_start_ms = now;
		d->invalid_in_window = 0;
	}
	if (++d->invalid_in_window >= limit && d->paused_until_ms <= now) {
		d->paused_until_ms = now + INVALID_PAUSE_MS;
		log_msg(LOG_NOTICE,
		        "domain_invalid_limit: %d invalid addresses of %s within a minute; no probes for its "
		        "new addresses for %d s",
		        d->invalid_in_window, d->domain, INVALID_PAUSE_MS / 1000);
	}
}

/* rate_turn - when the domain's rate window turns (mono): the fleet's
 * when its budget is what refused (ours allowed), else ours */
static int64_t rate_turn(const struct domain_slot *d)
{
	/* rate_left sets fleet_turn_ms only when our own count allowed */
	return d->fleet_turn_ms != 0 ? d->fleet_turn_ms : d->window_start_ms + RATE_WINDOW_MS;
}

/* rate_left - may one more probe of d start now? (turns the window) Our
 * own count first, then the fleet's (eng.fleet_rate, asked only) */
static bool rate_left(struct vcore *c, struct domain_slot *d, int64_t now)
{
	if (now - d->window_start_ms >= RATE_WINDOW_MS) {
		d->window_start_ms = now;
		d->started_in_window = 0;
	}
	d->fleet_turn_ms = 0;
	int rate = c->conf->domain_probe_rate;
	if (rate > 0 && d->started_in_window >= rate)
		return false;
	int64_t turn_wall = 0;
	if (rate > 0 && c->eng.fleet_rate != NULL &&
	    !c->eng.fleet_rate(c->eng.ctx, d->domain, rate, false, &turn_wall, &d->fleet_spent)) {
		int64_t left = turn_wall - wall_now(c);
		d->fleet_turn_ms = now + (left > 0 ? left : 1);
		return false;
	}
	return true;
}

static void on_domain_timer(void *arg);

/* arm_timer - look at d's line again at due (mono), unless a timer fires
 * sooner already; none when the line is empty */
static void arm_timer(struct vcore *c, struct domain_slot *d, int64_t due)
{
	if (d->timer != NULL && (d->waiting_head == NULL || d->timer_due > due)) {
		c->eng.timer_cancel(c->eng.ctx, d->timer);
		d->timer = NULL;
	}
	if (d->waiting_head == NULL || d->timer != NULL)
		return;
	int64_t delay = due - mono_now(c);
	d->timer = c->eng.timer_start(c->eng.ctx, delay > 0 ? delay : 0, on_domain_timer, d);
	d->timer_due = due;
	if (d->timer == NULL)
		log_msg(LOG_WARNING,
		        "cannot start a timer for %s's waiting probes; the next probe "
		        "to end hands on their turn",
		        d->domain);
}

/* pop_head - take the first probe out of d's line */
static struct probe *pop_head(struct domain_slot *d)
{
	struct probe *p = d->waiting_head;
	d->waiting_head = p->next_pending;
	if (d->waiting_head == NULL)
		d->waiting_tail = NULL;
	p->next_pending = NULL;
	return p;
}

/* cap_list - list d among the lines waiting for max_probes_in_flight
 * (at the end), or take it off that list */
static void cap_list(struct vcore *c, struct domain_slot *d, bool waits)
{
	if (waits == d->at_cap)
		return;
	d->at_cap = waits;
	if (waits) {
		d->next_at_cap = NULL;
		if (c->cap_tail != NULL)
			c->cap_tail->next_at_cap = d;
		else
			c->cap_head = d;
		c->cap_tail = d;
		return;
	}
	struct domain_slot **link = &c->cap_head, *prev = NULL;
	while (*link != NULL && *link != d) {
		prev = *link;
		link = &(*link)->next_at_cap;
	}
	if (*link == d)
		*link = d->next_at_cap;
	if (c->cap_tail == d)
		c->cap_tail = prev;
	d->next_at_cap = NULL;
}

static void drain(struct vcore *c, struct domain_slot *d);

/* cap_release - places under max_probes_in_flight are free: the lines
 * that waited for one drain in turn, oldest first, while places last. A
 * line still blocked goes back to the end of the list (drain). */
static void cap_release(struct vcore *c)
{
	if (c->cap_draining)
		return; /* the loop below sees the place */
	c->cap_draining = true;
	/* Each line is looked at once per call: one that re-lists itself
	 * (still blocked) does not spin the loop. */
	struct domain_slot *last = c->cap_tail;
	while (c->cap_head != NULL && c->running_total < c->max_in_flight) {
		struct domain_slot *d = c->cap_head;
		cap_list(c, d, false);
		drain(c, d);
		if (d == last)
			break;
	}
	c->cap_draining = false;
}

/* drain - decide for the probes at the head of d's line until one must
 * wait: each one starts (a place is free, the rate allows, and a place
 * under max_probes_in_flight), or is answered tempfail (not cached) when
 * it may not start (the domain's pause) or can no longer start within its
 * requester's verify_budget (the deadline passed, or the rate is used up
 * until after it). Answering one goes straight on to the next, so no line
 * is ever stranded. Whatever still waits has a timer: its deadline, or the
 * rate window's turn; a line waiting for the global cap is listed too, so
 * the next probe of any domain to end hands it the place. */
static void drain(struct vcore *c, struct domain_slot *d)
{
	if (d->draining)
		return; /* a release inside: the loop below sees the free place */
	d->draining = true;
	bool blocked_by_cap = false;
	while (d->waiting_head != NULL) {
		struct probe *p = d->waiting_head;
		int64_t now = mono_now(c);
		bool rate_ok = rate_left(c, d, now);
		if (d->paused_until_ms > now) {
			over_budget(c, pop_head(d), BUDGET_DOMAIN_INVALID,
			            &d->logged_ms[BUDGET_DOMAIN_INVALID], "domain", d->domain);
		} else if (now >= p->deadline_ms && c->running_total >= c->max_in_flight &&
		           d->running < c->conf->domain_probe_limit && rate_ok) {
			/* Its budget ran out waiting for a place under the global cap
			 * alone: that cap is what its requester is told about. */
			over_budget(c, pop_head(d), BUDGET_IN_FLIGHT, &c->in_flight_logged_ms, "all",
			            "domains");
		} else if (now >= p->deadline_ms || (!rate_ok && rate_turn(d) > p->deadline_ms)) {
			/* It cannot start in time: its requester gets tempfail now
			 * rather than a probe it will never see. */
			enum budget b = now >= p->deadline_ms ? BUDGET_WAIT : BUDGET_DOMAIN_RATE;
			char party[300];
			if (b == BUDGET_DOMAIN_RATE && d->fleet_turn_ms != 0 && d->fleet_spent > 0)
				snprintf(party, sizeof(party), "%s (%u probes this minute across the fleet)",
				         d->domain, d->fleet_spent);
			else
				snprintf(party, sizeof(party), "%s", d->domain);
			over_budget(c, pop_head(d), b, &d->logged_ms[b], "domain", party);
		} else if (d->running >= c->conf->domain_probe_limit || !rate_ok) {
			break; /* it waits: for a place, or the window's turn */
		} else if (c->running_total >= c->max_in_flight) {
			/* It waits for a place under the global cap, within its
			 * budget (its deadline's timer below): the first probe of
			 * any domain to end hands it one (cap_release). */
			blocked_by_cap = true;
			break;
		} else {
			pop_head(d);
			d->running++;
			d->started_in_window++;
			/* counted for the fleet: rate_left allowed it just now */
			int rate = c->conf->domain_probe_rate;
			if (c->eng.fleet_rate != NULL && rate > 0)
				c->eng.fleet_rate(c->eng.ctx, d->domain, rate, true, NULL, NULL);
			p->slot = d;
			launch(c, p);
		}
	}
	d->draining = false;
	cap_list(c, d, blocked_by_cap && d->waiting_head != NULL);
	if (d->waiting_head != NULL) {
		int64_t due = d->waiting_head->deadline_ms;
		if (!rate_left(c, d, mono_now(c)) && rate_turn(d) < due)
			due = rate_turn(d);
		arm_timer(c, d, due);
	} else {
		arm_timer(c, d, 0); /* cancels a timer no longer needed */
	}
}

/* on_domain_timer - a deadline in d's line, or its rate window turned */
static void on_domain_timer(void *arg)
{
	struct domain_slot *d = arg;
	d->timer = NULL; /* fired: the engine's handle is gone */
	drain(d->core, d);
}

/* admit - a probe joins its domain's line, and the line is drained: it
 * starts now, waits its turn, or is answered tempfail at once */
static void admit(struct vcore *c, struct probe *p)
{
	struct domain_slot *d = slot_for(c, p->address.domain_ascii);
	if (d == NULL) {
		/* A probe without a slot could not give its place back, and its
		 * on_finished would free another probe's: do not probe at all. */
		finish_here(p, "out of memory for the domain's probe limit");
		return;
	}
	p->next_pending = NULL;
	if (d->waiting_tail != NULL)
		d->waiting_tail->next_pending = p;
	else
		d->waiting_head = p;
	d->waiting_tail = p;
	drain(c, d);
}

/* slot_release - a probe of the domain ended: its place goes to the line */
static void slot_release(struct vcore *c, struct domain_slot *d)
{
	d->running--;
	drain(c, d);
}

/* start_refresh - stamp the records a refresh stands for, here on the
 * engine thread, before it starts. A refresh whose records are no longer
 * stale (stamped by an earlier refresh, or replaced) and that nobody joined
 * is dropped: that is what bounds refreshes to one a window per record,
 * however many requests queued one. False if p was dropped (freed). */
static bool start_refresh(struct vcore *c, struct probe *p)
{
	/* Stamped by its own first pass, then it waited for a place in
	 * domain_probe_limit: its records are not stale any more because of
	 * this very refresh, which must now run, not be dropped. */
	if (p->stamped)
		return true;
	pthread_mutex_lock(&c->lock);
	unsigned stamps = p->stamps;
	pthread_mutex_unlock(&c->lock);
	if (stamps == 0)
		return true;
	if (vstore_stamp(&c->store, &p->address, p->stable, stamps, wall_now(c)) || p->why != WHY_REFRESH) {
		p->stamped = true;
		return true;
	}
	pthread_mutex_lock(&c->lock);
	bool drop = p->waiters == NULL;
	if (drop) {
		unlink_probe(c, p);
		c->stats.in_flight--;
	}
	pthread_mutex_unlock(&c->lock);
	if (drop) {
		log_msg(LOG_DEBUG, "refresh of %s not needed: refreshed already this window",
		        p->address.normalized);
		free(p);
	}
	return !drop;
}

/* ---- the shared tier (engine thread) ----
 *
 * A probe someone waits for first asks the fleet's shared cache: its
 * records are copied into the local cache and looked up again (an answer:
 * every waiter gets it, no probe); else the address's lease is taken (ours:
 * probe, and give it back once the outcome is stored; held by another host:
 * look again with backoff until its answer appears or its lease could have
 * expired, then take it and probe). A refresh fetches too, and then runs
 * only if its records are still stale (another host may have refreshed or
 * stamped them). Any failure of the tier: probe, as without one. */

static void shared_ask(struct vcore *c, struct probe *p);
static void on_shared_lease(void *arg, int result);

/* proceed - the probe goes on as without a shared tier */
static void proceed(struct vcore *c, struct probe *p)
{
	if (start_refresh(c, p))
		admit(c, p);
}

/* lease_ms - how long a lease lasts: the holder's wait in line, its probe,
 * and a margin */
static int64_t lease_ms(const struct vcore *c)
{
	return c->conf->verify_budget_ms + c->conf->probe_timeout_ms + VCORE_LEASE_MARGIN_MS;
}

/* shared_answer - the local cache, with what the shared tier copied in,
 * answers p: every waiter gets the answer (a tagged joiner of another
 * address only a positive one, else it is queued as its own probe), and p
 * is gone. False (p untouched) when it does not answer. */
static bool shared_answer(struct vcore *c, struct probe *p)
{
	struct vstore_answer a;
	if (vstore_lookup(&c->store, &p->address, p->stable, wall_now(c), &a) != VSTORE_ANSWER)
		return false;
	log_msg(LOG_DEBUG, "%s: answered from the shared cache (%s)", p->address.normalized,
	        outcome_name(a.outcome.kind));
	settle_waiters(c, p, &a.outcome, a.source, a.deferred_since_ms, &c->stats.shared_hits,
	               &c->stats.shared_hits, wall_now(c));
	if (a.refresh != 0 &&
	    !queue_probe(c, &p->address, p->stable, NULL, WHY_REFRESH, a.refresh, false, 0, NULL, NO_RECHECK))
		log_msg(LOG_WARNING, "out of memory: cannot refresh %s", p->address.normalized);
	free(p);
	return true;
}

/* on_shared_timer - look for the other host's answer again */
static void on_shared_timer(void *arg)
{
	struct probe *p = arg;
	p->shared_timer = NULL;
	shared_ask(p->core, p);
}

/* on_shared_rechecked - the look after the lease was taken: another host's
 * answer that landed between our first look and our lease (it stored,
 * then gave its lease back: its write precedes its release on its one
 * connection, so this look sees it) is served, and our lease given back;
 * nothing, or the tier failed: probe under our lease */
static void on_shared_rechecked(void *arg, int n)
{
	struct probe *p = arg;
	struct vcore *c = p->core;
	p->shared = NULL;
	if (n > 0) {
		struct addr address = p->address; /* shared_answer frees p */
		if (shared_answer(c, p)) {
			if (c->eng.shared_release != NULL)
				c->eng.shared_release(c->eng.ctx, &address);
			return;
		}
	}
	on_shared_lease(p, VCORE_SHARED_OURS);
}

/* on_shared_lease - the lease: ours (look once more, then probe), held
 * (wait), failed (probe) */
static void on_shared_lease(void *arg, int result)
{
	struct probe *p = arg;
	struct vcore *c = p->core;
	p->shared = NULL;
	if (result == VCORE_SHARED_OURS && !p->lease_rechecked) {
		p->lease_ours = true;
		p->lease_rechecked = true;
		p->shared = c->eng.shared_fetch(c->eng.ctx, &p->address, p->stable, on_shared_rechecked, p);
		if (p->shared != NULL)
			return;
	}
	if (result != VCORE_SHARED_HELD) {
		p->lease_ours = result == VCORE_SHARED_OURS;
		/* After a wait for another host (it died, or ended without an
		 * answer to keep), the requests that joined meanwhile are the
		 * ones still waiting: the line judges this probe by them, not by
		 * a first requester long gone. */
		if (p->shared_poll_ms > 0)
			p->deadline_ms = mono_now(c) + c->conf->verify_budget_ms;
		proceed(c, p);
		return;
	}
	int64_t now = mono_now(c);
	if (p->shared_poll_ms == 0) {
		pthread_mutex_lock(&c->lock);
		c->stats.shared_waits++;
		pthread_mutex_unlock(&c->lock);
		log_msg(LOG_DEBUG, "%s: another host probes it; waiting for its answer",
		        p->address.normalized);
	}
	if (now >= p->shared_until) {
		/* The lease outlived its holder's probe: someone took it again. */
		finish_here(p, "verification in progress on another host");
		return;
	}
	p->shared_poll_ms = p->shared_poll_ms == 0 ? VCORE_SHARED_POLL_FIRST_MS : p->shared_poll_ms * 2;
	if (p->shared_poll_ms > VCORE_SHARED_POLL_MAX_MS)
		p->shared_poll_ms = VCORE_SHARED_POLL_MAX_MS;
	int64_t delay = p->shared_poll_ms < p->shared_until - now ? p->shared_poll_ms : p->shared_until - now;
	p->shared_timer = c->eng.timer_start(c->eng.ctx, delay, on_shared_timer, p);
	if (p->shared_timer == NULL)
		proceed(c, p); /* cannot wait: probe ourselves */
}

/* on_shared_fetched - records copied in (n), or the tier failed (probe) */
static void on_shared_fetched(void *arg, int n)
{
	struct probe *p = arg;
	struct vcore *c = p->core;
	p->shared = NULL;
	if (n == VCORE_SHARED_FAILED || p->why == WHY_REFRESH) {
		/* A refresh goes on only if its records are still stale now
		 * (start_refresh): another host may have refreshed them, or
		 * stamped them when it started to. */
		proceed(c, p);
		return;
	}
	if (n > 0 && shared_answer(c, p))
		return;
	p->shared = c->eng.shared_lease == NULL
	                    ? NULL
	                    : c->eng.shared_lease(c->eng.ctx, &p->address, lease_ms(c), on_shared_lease, p);
	if (p->shared == NULL)
		proceed(c, p);
}

/* shared_ask - fetch the address's records from the shared tier */
static void shared_ask(struct vcore *c, struct probe *p)
{
	p->shared = c->eng.shared_fetch(c->eng.ctx, &p->address, p->stable, on_shared_fetched, p);
	if (p->shared == NULL)
		proceed(c, p);
}

/* begin - a queued probe: through the shared tier first when it is one
 * someone waits for, or a refresh (whose records another host may have
 * refreshed, or stamped: then it is dropped, so a stale record is
 * refreshed about once a window for the fleet); a greylist re-probe is
 * this host's own business */
static void begin(struct vcore *c, struct probe *p)
{
	if (p->why == WHY_GREYLIST || c->eng.shared_fetch == NULL || c->store.cache == NULL ||
	    p->shared_asked) {
		proceed(c, p);
		return;
	}
	p->shared_asked = true;
	p->shared_until = mono_now(c) + lease_ms(c);
	shared_ask(c, p);
}

/* vcore_run - see vcore.h */
void vcore_run(struct vcore *c)
{
	pthread_mutex_lock(&c->lock);
	struct probe *queue = c->pending;
	c->pending = NULL;
	pthread_mutex_unlock(&c->lock);
	/* The queue is newest first: start the oldest first. */
	struct probe *ordered = NULL;
	while (queue != NULL) {
		struct probe *p = queue;
		queue = p->next_pending;
		p->next_pending = ordered;
		ordered = p;
	}
	while (ordered != NULL) {
		struct probe *p = ordered;
		ordered = p->next_pending;
		p->next_pending = NULL;
		begin(c, p);
	}
}

/* vcore_tidy - see vcore.h */
void vcore_tidy(struct vcore *c)
{
	int64_t now = mono_now(c);
	for (size_t b = 0; b < DOMAIN_BUCKETS; b++) {
		struct domain_slot **link = &c->domains[b];
		while (*link != NULL) {
			struct domain_slot *d = *link;
			if (!slot_in_use(d, now) && now - d->window_start_ms >= RATE_WINDOW_MS &&
			    now - d->invalid_window_start_ms >= RATE_WINDOW_MS && !mx_fresh(c, d)) {
				*link = d->next_in_bucket;
				lru_unlink(c, d);
				dns_kept_free(d->mx);
				c->domain_count--;
				free(d);
			} else {
				link = &d->next_in_bucket;
			}
		}
	}
	/* Idle client budgets: their minute is over. */
	pthread_mutex_lock(&c->lock);
	for (size_t b = 0; b < CLIENT_BUCKETS; b++) {
		struct client_slot **link = &c->clients[b];
		while (*link != NULL) {
			struct client_slot *s = *link;
			if (now - s->window_start_ms >= RATE_WINDOW_MS &&
			    (s->logged_ms == 0 || now - s->logged_ms >= RATE_WINDOW_MS)) {
				*link = s->next_in_bucket;
				c->client_count--;
				free(s);
			} else {
				link = &s->next_in_bucket;
			}
		}
	}
	pthread_mutex_unlock(&c->lock);
}

/* vcore_sweep - see vcore.h */
size_t vcore_sweep(struct vcore *c)
{
	if (c->store.cache == NULL)
		return 0;
	size_t removed = cache_sweep(c->store.cache, wall_now(c));
	if (removed > 0)
		log_msg(LOG_INFO, "cache: removed %zu expired entries", removed);
	return removed;
}

/* vcore_on_finished - see vcore.h */
void vcore_on_finished(struct vcore *c, const char *domain)
{
	size_t b = bucket_of(domain, DOMAIN_BUCKETS);
	for (struct domain_slot *d = c->domains[b]; d != NULL; d = d->next_in_bucket) {
		if (strcmp(d->domain, domain) == 0 && d->closing > 0) {
			d->closing--;
			slot_release(c, d);
			return;
		}
	}
}

/* vcore_on_fact - see vcore.h */
void vcore_on_fact(struct vcore *c, const struct addr *address, const struct outcome *fact)
{
	if (fact->kind == OUTCOME_TEMPFAIL && (fact->flags & OUTCOME_F_PROTOCOL)) {
		char stable[ADDR_PATH_MAX];
		stable_of(c, address, stable, sizeof(stable));
		vstore_retract(&c->store, address, stable, fact, wall_now(c));
		return;
	}
	vstore_late_fact(&c->store, address->domain_ascii, fact, wall_now(c));
}

/* ---- life cycle and the ticket API ---- */

/* vcore_new - see vcore.h */
struct vcore *vcore_new(struct conf *conf, struct cache *cache, const struct vcore_engine *engine)
{
	struct vcore *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	/* Every ticket's condition variable runs on CLOCK_MONOTONIC (vcore_wait):
	 * the attributes are made once, not per message. */
	if (pthread_condattr_init(&c->ticket_cond_attr) != 0) {
		free(c);
		return NULL;
	}
	if (pthread_condattr_setclock(&c->ticket_cond_attr, CLOCK_MONOTONIC) != 0) {
		pthread_condattr_destroy(&c->ticket_cond_attr);
		free(c);
		return NULL;
	}
	pthread_mutex_init(&c->lock, NULL);
	c->conf = conf_ref(conf);
	c->store.conf = c->conf;
	c->store.cache = cache;
	c->eng = *engine;
	c->tags = tags_enabled(conf);
	c->timer_max = VCORE_GREYLIST_TIMERS_MAX;
	c->max_in_flight = conf->max_probes_in_flight;
	c->domain_max = VCORE_DOMAINS_MAX;
	return c;
}

/* vcore_set_domains_max - see vcore.h */
void vcore_set_domains_max(struct vcore *c, size_t max)
{
	c->domain_max = max;
}

/* vcore_domain_records - see vcore.h */
size_t vcore_domain_records(struct vcore *c)
{
	return c->domain_count;
}

/* vcore_set_greylist_timers_max - see vcore.h */
void vcore_set_greylist_timers_max(struct vcore *c, size_t max)
{
	c->timer_max = max;
}

/* vcore_limit_in_flight - see vcore.h */
void vcore_limit_in_flight(struct vcore *c, int max)
{
	if (max >= 1)
		c->fd_cap = max;
	if (max >= 1 && max < c->max_in_flight)
		c->max_in_flight = max;
}

/* vcore_set_conf - see vcore.h */
struct conf *vcore_set_conf(struct vcore *c, struct conf *fresh)
{
	pthread_mutex_lock(&c->lock);
	struct conf *old = c->conf;
	c->conf = conf_ref(fresh);
	c->store.conf = c->conf;
	c->tags = tags_enabled(fresh);
	c->max_in_flight = fresh->max_probes_in_flight;
	if (c->fd_cap >= 1 && c->fd_cap < c->max_in_flight)
		c->max_in_flight = c->fd_cap;
	pthread_mutex_unlock(&c->lock);
	return old;
}

/* vcore_probe_objects - see vcore.h */
size_t vcore_probe_objects(struct vcore *c)
{
	pthread_mutex_lock(&c->lock);
	size_t n = (size_t)c->stats.in_flight;
	pthread_mutex_unlock(&c->lock);
	return n;
}

/* destroy - the last of the core: its lock and the struct itself */
static void destroy(struct vcore *c)
{
	pthread_mutex_destroy(&c->lock);
	pthread_condattr_destroy(&c->ticket_cond_attr);
	free(c);
}

/* vcore_free - see vcore.h */
void vcore_free(struct vcore *c)
{
	if (c == NULL)
		return;
	struct outcome stopping = {0};
	outcome_set(&stopping, OUTCOME_TEMPFAIL, STAGE_NONE, 0, NULL, NULL, "vemilter is stopping");
	int64_t now = wall_now(c);
	pthread_mutex_lock(&c->lock);
	for (size_t b = 0; b < BUCKETS; b++) {
		while (c->buckets[b] != NULL) {
			struct probe *p = c->buckets[b];
			c->buckets[b] = p->next_in_bucket;
			if (p->handle != NULL)
				c->eng.probe_cancel(c->eng.ctx, p->handle);
			if (p->shared != NULL && c->eng.shared_cancel != NULL)
				c->eng.shared_cancel(c->eng.ctx, p->shared);
			if (p->shared_timer != NULL)
				c->eng.timer_cancel(c->eng.ctx, p->shared_timer);
			for (struct verify_ticket *t = p->waiters, *next; t != NULL; t = next) {
				next = t->next_waiter;
				settle_ticket(c, t, &stopping, VERIFY_PROBED, now);
				ticket_unref(t);
			}
			free(p);
		}
		c->stable_buckets[b] = NULL;
	}
	c->pending = NULL;
	pthread_mutex_unlock(&c->lock);
	for (size_t b = 0; b < TIMER_BUCKETS; b++)
		while (c->timers[b] != NULL) {
			struct greylist_timer *gt = c->timers[b];
			c->timers[b] = gt->next_in_bucket;
			c->eng.timer_cancel(c->eng.ctx, gt->handle);
			free(gt);
		}
	for (size_t b = 0; b < DOMAIN_BUCKETS; b++)
		while (c->domains[b] != NULL) {
			struct domain_slot *d = c->domains[b];
			c->domains[b] = d->next_in_bucket;
			if (d->timer != NULL)
				c->eng.timer_cancel(c->eng.ctx, d->timer);
			if (d->lookup != NULL)
				c->eng.resolve_cancel(c->eng.ctx, d->lookup);
			dns_kept_free(d->mx);
			free(d);
		}
	for (size_t b = 0; b < CLIENT_BUCKETS; b++)
		while (c->clients[b] != NULL) {
			struct client_slot *s = c->clients[b];
			c->clients[b] = s->next_in_bucket;
			free(s);
		}
	conf_unref(c->conf);
	c->conf = NULL;
	/* Tickets still held keep the lock alive until their release. */
	pthread_mutex_lock(&c->lock);
	c->freed = true;
	bool last = c->tickets == 0;
	pthread_mutex_unlock(&c->lock);
	if (last)
		destroy(c);
}

/* vcore_submit - see verify_submit in verify.h */
struct verify_ticket *vcore_submit(struct vcore *c, const struct addr *sender, const char *client)
{
	struct verify_ticket *t = calloc(1, sizeof(*t));
	if (t == NULL)
		return NULL;
	t->core = c;
	t->refs = 1;
	t->submitted_ms = mono_now(c);
	t->sender = *sender;
	char stable[ADDR_PATH_MAX];
	stable_of(c, sender, stable, sizeof(stable));
	/* The lookup runs unlocked: a probe of this sender may finish (store
	 * its answer, leave the table) between a miss and the join, so a
	 * probe finished meanwhile sends us back to the cache (twice at most,
	 * then a probe it is). A cache hit takes the lock once (counting the
	 * ticket, answering it), the release once more. */
	for (int round = 0;; round++) {
		uint64_t seen = atomic_load(&c->finished_seq);
		if (answer_from_cache(c, t, stable, round == 0))
			return t;
		int q = queue_probe(c, sender, stable, t, WHY_ASKED, 0, true, 0, client,
		                    round < 2 ? seen : NO_RECHECK);
		if (q == QUEUE_RECHECK)
			continue;
		if (q == QUEUE_NOMEM) {
			vcore_release(t);
			return NULL;
		}
		return t;
	}
}

/* vcore_wait - see verify_wait in verify.h */
bool vcore_wait(struct verify_ticket *t, int64_t deadline_ms, struct verify_result *out)
{
	struct vcore *c = t->core;
	/* deadline_ms is on the core's monotonic clock; the ticket's condition
	 * variable runs on CLOCK_MONOTONIC: wait the difference from now. */
	if (atomic_load_explicit(&t->done, memory_order_acquire)) {
		*out = t->result; /* written before done, never again */
		return true;
	}
	int64_t wait_ms = deadline_ms - mono_now(c);
	if (wait_ms <= 0)
		return false; /* not answered, and no time to wait */
	struct timespec until;
	clock_gettime(CLOCK_MONOTONIC, &until);
	if (wait_ms > 0) {
		until.tv_sec += wait_ms / 1000;
		until.tv_nsec += (wait_ms % 1000) * 1000000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
	}
	pthread_mutex_lock(&c->lock);
	if (!t->done && !t->cond_ready)
		t->cond_ready = pthread_cond_init(&t->answered, &c->ticket_cond_attr) == 0;
	if (!t->cond_ready && !t->done)
		log_msg(LOG_ERR, "cannot wait for the verification of %s: out of resources",
		        t->sender.normalized); /* treated as no answer in time */
	while (!t->done && t->cond_ready)
		if (pthread_cond_timedwait(&t->answered, &c->lock, &until) == ETIMEDOUT)
			break;
	bool done = t->done;
	if (done)
		*out = t->result;
	pthread_mutex_unlock(&c->lock);
	return done;
}

/* vcore_notify - see verify_notify in verify.h */
bool vcore_notify(struct verify_ticket *t, void (*fn)(void *arg), void *arg)
{
	pthread_mutex_lock(&t->core->lock);
	bool armed = !t->done;
	if (armed) {
		t->notify = fn;
		t->notify_arg = arg;
	}
	pthread_mutex_unlock(&t->core->lock);
	return armed;
}

/* vcore_notify_cancel - see verify_notify_cancel in verify.h */
void vcore_notify_cancel(struct verify_ticket *t)
{
	pthread_mutex_lock(&t->core->lock);
	t->notify = NULL;
	t->notify_arg = NULL;
	pthread_mutex_unlock(&t->core->lock);
}

/* vcore_submitted_ms - see verify_submitted_ms in verify.h */
int64_t vcore_submitted_ms(const struct verify_ticket *t)
{
	return t->submitted_ms;
}

/* vcore_deferred_since - see verify_deferred_since in verify.h */
int64_t vcore_deferred_since(const struct verify_ticket *t)
{
	return t->deferred_since_ms;
}

/* vcore_release - see verify_release in verify.h */
void vcore_release(struct verify_ticket *t)
{
	if (t == NULL)
		return;
	struct vcore *c = t->core;
	pthread_mutex_lock(&c->lock);
	ticket_unref(t);
	bool last = c->freed && c->tickets == 0;
	pthread_mutex_unlock(&c->lock);
	if (last)
		destroy(c);
}

/* vcore_get_stats - see verify_get_stats in verify.h */
void vcore_get_stats(struct vcore *c, struct verify_stats *out)
{
	pthread_mutex_lock(&c->lock);
	*out = c->stats;
	pthread_mutex_unlock(&c->lock);
}
