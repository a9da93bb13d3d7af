/*
 * test_vcore.c - the verifier's rules (vcore.c) with a fake engine and a
 * movable clock: shared probes, the per-domain limits, refreshes and their
 * throttling (the refresh storm), stale negatives and stale temporary
 * answers never served, defer_limit stamps, greylist re-probes, domain
 * facts (lifetime caps, stale refresh, contrary evidence, protocol/loop
 * outcomes), probe hints, late facts and retractions, tagged senders, the
 * budgets (every waiting line drains; client_probe_rate,
 * domain_invalid_limit, max_probes_in_flight) and a clean stop.
 *
 * The fake engine records every probe and timer; a test ends a probe by
 * calling its done callback with the outcome it chooses, and moves both
 * clocks forward, firing due timers. The cache is a real LMDB file in a
 * scratch directory. No sockets; no sleeps or threads but in one test (a
 * waiting thread woken by the answer, with a bounded wait).
 */
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "cache.h"
#include "dnskept.h"
#include "log.h"
#include "tags.h"
#include "unit.h"
#include "vcore.h"
#include "vstore.h"

#define SECOND INT64_C(1000)
#define MINUTE (60 * SECOND)
#define HOUR   (60 * MINUTE)
#define DAY    (24 * HOUR)
#define T0     INT64_C(1700000000000)

#define MAX_PROBES 2048
#define MAX_TIMERS 16384 /* never reused: the drain test fires thousands */

static const char base_conf[] = "positive_ttl = 10d\npositive_refresh = 2d\nnegative_ttl = 3d\n"
                                "negative_refresh = 3h\ninconclusive_ttl = 1d\ntemporary_ttl = 5m\n";

struct fake_probe {
	struct addr address;
	struct callout_hints hints; /* hints.mx: NULL, or &mx below (a copy: it was lent) */
	struct dns_answer mx;       /* hosts copied into mx_hosts */
	struct dns_host mx_hosts[4];
	callout_done_fn done;
	void *arg;
	bool live, cancelled;
	int64_t started; /* F.mono at start */
};

struct fake_timer {
	int64_t due;
	vcore_timer_fn fn;
	void *arg;
	bool live, cancelled;
};

/* a resolution the core asked for */
struct fake_lookup {
	char domain[256];
	vcore_resolved_fn done;
	void *arg;
	bool live, cancelled;
};

#define MAX_LOOKUPS 2048

/* The fake engine: everything the core asked of it. */
static struct {
	int64_t wall, mono;
	struct fake_probe probes[MAX_PROBES];
	int nprobes;
	struct fake_timer timers[MAX_TIMERS];
	int ntimers;
	struct fake_lookup lookups[MAX_LOOKUPS];
	int nlookups;
	bool woken;
} F;

static struct conf *conf;
static struct cache *cache;
static struct vcore *core;
static char dir[64];

/* The fake shared tier (vcore_engine.shared_*), for the next start() when
 * engine_shares is set: every request is recorded and answered by the test
 * (shared_reply); what a fetch "copied in" the test puts in the cache with
 * cache_put_local first. */
enum { FETCH, LEASE };
#define MAX_SHARED 256
static struct {
	struct fake_shared {
		int kind;
		struct addr address;
		int64_t ttl_ms;
		vcore_shared_fn done;
		void *arg;
		bool live, cancelled;
	} req[MAX_SHARED];
	int n;
	int released;
	char last_released[ADDR_PATH_MAX];
} S;
static bool engine_shares; /* for the next start() */

/* The fleet's domain_probe_rate (vcore_engine.fleet_rate), faked: other
 * hosts began FL.others probes in the current wall-clock minute, and the
 * core FL.took; a new minute starts both afresh. */
static struct {
	int64_t minute;
	unsigned others, took, asked;
	unsigned client_others, client_took; /* client_probe_rate, one client */
} FL;
static bool engine_fleet; /* for the next start() */

static bool fake_fleet_client_rate(void *ctx, const char *client, int rate, unsigned *spent)
{
	ck_assert_str_eq(client, "192.0.2.1");
	if (FL.client_others + FL.client_took >= (unsigned)rate) {
		*spent = FL.client_others > 0 ? FL.client_others + FL.client_took : 0;
		return false;
	}
	FL.client_took++;
	return true;
}

static bool fake_fleet_rate(void *ctx, const char *domain, int rate, bool take, int64_t *turn_wall_ms,
                            unsigned *spent)
{
	int64_t minute = F.wall / 60000;
	if (minute != FL.minute) {
		FL.minute = minute;
		FL.others = FL.took = 0;
	}
	FL.asked++;
	unsigned total = FL.others + FL.took;
	if (total >= (unsigned)rate) {
		ck_assert(!take); /* the core takes only what it was just allowed */
		if (turn_wall_ms != NULL)
			*turn_wall_ms = (minute + 1) * 60000;
		if (spent != NULL)
			*spent = FL.others > 0 ? total : 0;
		return false;
	}
	if (take)
		FL.took++;
	return true;
}

static void *fake_shared_fetch(void *ctx, const struct addr *address, const char *stable,
                               vcore_shared_fn done, void *arg)
{
	ck_assert_int_lt(S.n, MAX_SHARED);
	S.req[S.n] = (struct fake_shared){
	        .kind = FETCH, .address = *address, .done = done, .arg = arg, .live = true};
	return &S.req[S.n++];
}

static void *fake_shared_lease(void *ctx, const struct addr *address, int64_t ttl_ms, vcore_shared_fn done,
                               void *arg)
{
	ck_assert_int_lt(S.n, MAX_SHARED);
	S.req[S.n] = (struct fake_shared){
	        .kind = LEASE, .address = *address, .ttl_ms = ttl_ms, .done = done, .arg = arg, .live = true};
	return &S.req[S.n++];
}

static void fake_shared_cancel(void *ctx, void *request)
{
	struct fake_shared *r = request;
	ck_assert(r->live);
	r->live = false;
	r->cancelled = true;
}

static void fake_shared_release(void *ctx, const struct addr *address)
{
	S.released++;
	snprintf(S.last_released, sizeof(S.last_released), "%s", address->normalized);
}

static void *fake_probe_start(void *ctx, const struct addr *address, const struct callout_hints *hints,
                              callout_done_fn done, void *arg)
{
	ck_assert_int_lt(F.nprobes, MAX_PROBES);
	struct fake_probe *p = &F.probes[F.nprobes++];
	p->address = *address;
	p->hints = *hints;
	if (hints->mx != NULL) {
		ck_assert_uint_le(hints->mx->host_count, 4);
		p->mx = *hints->mx;
		if (hints->mx->host_count > 0) /* hosts is NULL for an answer without any */
			memcpy(p->mx_hosts, hints->mx->hosts, hints->mx->host_count * sizeof(*p->mx_hosts));
		p->mx.hosts = p->mx_hosts;
		p->hints.mx = &p->mx;
	}
	p->done = done;
	p->arg = arg;
	p->live = true;
	p->started = F.mono;
	return p;
}

static void *fake_resolve_start(void *ctx, const char *domain, vcore_resolved_fn done, void *arg)
{
	ck_assert_int_lt(F.nlookups, MAX_LOOKUPS);
	struct fake_lookup *l = &F.lookups[F.nlookups++];
	snprintf(l->domain, sizeof(l->domain), "%s", domain);
	l->done = done;
	l->arg = arg;
	l->live = true;
	return l;
}

static void fake_resolve_cancel(void *ctx, void *lookup)
{
	struct fake_lookup *l = lookup;
	ck_assert(l->live);
	l->live = false;
	l->cancelled = true;
}

static void fake_probe_cancel(void *ctx, void *probe)
{
	struct fake_probe *p = probe;
	ck_assert(p->live);
	p->live = false;
	p->cancelled = true;
}

static void *fake_timer_start(void *ctx, int64_t delay_ms, vcore_timer_fn fn, void *arg)
{
	ck_assert_int_lt(F.ntimers, MAX_TIMERS);
	struct fake_timer *t = &F.timers[F.ntimers++];
	t->due = F.mono + delay_ms;
	t->fn = fn;
	t->arg = arg;
	t->live = true;
	return t;
}

static void fake_timer_cancel(void *ctx, void *timer)
{
	struct fake_timer *t = timer;
	ck_assert(t->live);
	t->live = false;
	t->cancelled = true;
}

static void fake_wake(void *ctx)
{
	F.woken = true;
}

static int64_t fake_wall(void *ctx)
{
	return F.wall;
}

static int64_t fake_mono(void *ctx)
{
	return F.mono;
}

/* pump - run what the core queued, as the engine thread would */
static void pump(void)
{
	for (int i = 0; i < 100 && F.woken; i++) {
		F.woken = false;
		vcore_run(core);
	}
	ck_assert(!F.woken);
}

static bool engine_reports_finished; /* for the next start() */
static bool engine_resolves;         /* for the next start(): the fake answers DNS */

/* start - a core over a fresh cache with base_conf plus extra */
static void start(const char *extra)
{
	char text[2048];
	snprintf(text, sizeof(text), "%s%s%s%s", base_conf, extra,
	         strstr(extra, "greylist_retry") == NULL ? "greylist_retry = 5m\n" : "",
	         strstr(extra, "defer_limit") == NULL ? "defer_limit = 2h\n" : "");
	conf = conf_load_text("test", text, NULL, NULL);
	ck_assert_ptr_nonnull(conf);
	memset(&F, 0, sizeof(F));
	F.wall = T0;
	F.mono = 5000;
	char path[128], why[300] = "";
	snprintf(path, sizeof(path), "%s/cache.lmdb", dir);
	cache = cache_open(path, 64, why, sizeof(why));
	ck_assert_msg(cache != NULL, "cache_open: %s", why);
	const struct vcore_engine eng = {
	        .ctx = NULL,
	        .probe_start = fake_probe_start,
	        .probe_cancel = fake_probe_cancel,
	        .timer_start = fake_timer_start,
	        .timer_cancel = fake_timer_cancel,
	        .wake = fake_wake,
	        .wall_ms = fake_wall,
	        .mono_ms = fake_mono,
	        .reports_finished = engine_reports_finished,
	        .resolve_start = engine_resolves ? fake_resolve_start : NULL,
	        .resolve_cancel = engine_resolves ? fake_resolve_cancel : NULL,
	        .shared_fetch = engine_shares ? fake_shared_fetch : NULL,
	        .shared_lease = engine_shares ? fake_shared_lease : NULL,
	        .shared_cancel = engine_shares ? fake_shared_cancel : NULL,
	        .shared_release = engine_shares ? fake_shared_release : NULL,
	        .fleet_rate = engine_fleet ? fake_fleet_rate : NULL,
	        .fleet_client_rate = engine_fleet ? fake_fleet_client_rate : NULL,
	};
	memset(&S, 0, sizeof(S));
	engine_reports_finished = false;
	engine_resolves = false;
	engine_shares = false;
	engine_fleet = false;
	memset(&FL, 0, sizeof(FL));
	FL.minute = F.wall / 60000;
	core = vcore_new(conf, cache, &eng);
	ck_assert_ptr_nonnull(core);
}

static void setup(void)
{
	log_open("test_vcore", LOG_USER, true, LOG_ERR);
	snprintf(dir, sizeof(dir), "/tmp/test_vcore.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	core = NULL;
	cache = NULL;
	conf = NULL;
}

static void teardown(void)
{
	if (core != NULL)
		vcore_free(core);
	if (cache != NULL)
		cache_close(cache);
	conf_unref(conf);
	DIR *d = opendir(dir);
	struct dirent *e;
	char name[512];
	while (d != NULL && (e = readdir(d)) != NULL) {
		snprintf(name, sizeof(name), "%s/%s", dir, e->d_name);
		if (e->d_name[0] != '.')
			unlink(name);
	}
	if (d != NULL)
		closedir(d);
	rmdir(dir);
}

/* parse - an address that must parse */
static struct addr parse(const char *text)
{
	struct addr a;
	char why[200];
	ck_assert_msg(addr_parse(text, strlen(text), &a, why, sizeof(why)), "%s: %s", text, why);
	return a;
}

/* submit - a request, and the engine runs what it queued */
static struct verify_ticket *submit(const char *text)
{
	struct addr a = parse(text);
	struct verify_ticket *t = vcore_submit(core, &a, NULL);
	ck_assert_ptr_nonnull(t);
	pump();
	return t;
}

/* answered - the ticket's answer if it has one (never waits) */
static bool answered(struct verify_ticket *t, struct verify_result *r)
{
	return vcore_wait(t, F.mono, r);
}

/* must_answer - the ticket's answer, which must be there */
static struct verify_result must_answer(struct verify_ticket *t)
{
	struct verify_result r;
	ck_assert_msg(answered(t, &r), "not answered");
	return r;
}

/* ask - submit, take the answer that must be there at once, release */
static struct verify_result ask(const char *text)
{
	struct verify_ticket *t = submit(text);
	struct verify_result r = must_answer(t);
	vcore_release(t);
	return r;
}

/* outcome - kind at stage with flags */
static struct outcome outcome(enum outcome_kind kind, enum probe_stage stage, unsigned flags)
{
	struct outcome o;
	memset(&o, 0, sizeof(o));
	int code = kind == OUTCOME_VALID      ? 250
	           : kind == OUTCOME_INVALID  ? 550
	           : kind == OUTCOME_TEMPFAIL ? 450
	                                      : 0;
	outcome_set(&o, kind, stage, code, NULL, "test reply", "test");
	o.flags = flags;
	return o;
}

/* live - the live probe of an address, or -1 */
static int live(const char *normalized)
{
	for (int i = 0; i < F.nprobes; i++)
		if (F.probes[i].live && strcmp(F.probes[i].address.normalized, normalized) == 0)
			return i;
	return -1;
}

/* live_count - probes running */
static int live_count(void)
{
	int n = 0;
	for (int i = 0; i < F.nprobes; i++)
		n += F.probes[i].live;
	return n;
}

/* finish - the live probe of an address ends with o */
static void finish(const char *normalized, struct outcome o)
{
	int i = live(normalized);
	ck_assert_msg(i >= 0, "no live probe for %s", normalized);
	F.probes[i].live = false;
	F.probes[i].done(F.probes[i].arg, &o);
	pump();
}

/* probe_once - ask for an address nobody knows: one probe, ended with o */
static struct verify_result probe_once(const char *text, struct outcome o)
{
	struct verify_ticket *t = submit(text);
	struct verify_result r;
	ck_assert(!answered(t, &r));
	struct addr a = parse(text);
	finish(a.normalized, o);
	r = must_answer(t);
	vcore_release(t);
	return r;
}

/* advance - both clocks move on; due timers fire in order */
static void advance(int64_t ms)
{
	int64_t until = F.mono + ms;
	for (;;) {
		struct fake_timer *next = NULL;
		for (int i = 0; i < F.ntimers; i++)
			if (F.timers[i].live && F.timers[i].due <= until &&
			    (next == NULL || F.timers[i].due < next->due))
				next = &F.timers[i];
		if (next == NULL)
			break;
		F.wall += next->due - F.mono;
		F.mono = next->due;
		next->live = false;
		next->fn(next->arg);
		pump();
	}
	F.wall += until - F.mono;
	F.mono = until;
}

/* live_timers - timers pending */
static int live_timers(void)
{
	int n = 0;
	for (int i = 0; i < F.ntimers; i++)
		n += F.timers[i].live;
	return n;
}

/* record - the cache record under a key (must be there, fresh or stale) */
static struct cache_record record(const char *key)
{
	struct cache_record rec;
	ck_assert_msg(cache_get(cache, key, F.wall, &rec) != CACHE_MISS, "no record %s", key);
	return rec;
}

/* has_record - a record under key, fresh or stale */
static bool has_record(const char *key)
{
	struct cache_record rec;
	return cache_get(cache, key, F.wall, &rec) != CACHE_MISS;
}

static struct verify_stats stats(void)
{
	struct verify_stats s;
	vcore_get_stats(core, &s);
	return s;
}

/* ---- the shared tier (a fleet's cache: vcore_engine.shared_*) ---- */

/* shared_live - the live shared request of kind, or NULL */
static struct fake_shared *shared_live(int kind)
{
	for (int i = 0; i < S.n; i++)
		if (S.req[i].live && S.req[i].kind == kind)
			return &S.req[i];
	return NULL;
}

/* shared_reply - the live request of kind answers result */
static void shared_reply(int kind, int result)
{
	struct fake_shared *r = shared_live(kind);
	ck_assert_msg(r != NULL, "no live %s request", kind == FETCH ? "fetch" : "lease");
	r->live = false;
	r->done(r->arg, result);
	pump();
}

/* remote_put - a record another host left, as a fetch copies it in */
static void remote_put(const char *key, enum outcome_kind kind)
{
	struct cache_record rec;
	struct outcome o = outcome(kind, STAGE_RCPT, 0);
	cache_record_make(conf, &o, F.wall, &rec);
	ck_assert(cache_put_local(cache, key, &rec, F.wall));
}

START_TEST(shared_fetch_answers_without_probe)
{
	engine_shares = true;
	start("");
	struct verify_ticket *t = submit("alice@ok.test");
	struct verify_result r;
	ck_assert(!answered(t, &r));
	ck_assert_int_eq(F.nprobes, 0);
	ck_assert_ptr_nonnull(shared_live(FETCH));
	struct verify_ticket *t2 = submit("alice@ok.test"); /* joins, no second fetch */
	ck_assert_int_eq(S.n, 1);
	remote_put("a:alice@ok.test", OUTCOME_VALID);
	shared_reply(FETCH, 1);
	r = must_answer(t);
	ck_assert_int_eq(r.outcome.kind, OUTCOME_VALID);
	ck_assert_int_eq(r.source, VERIFY_CACHED);
	ck_assert_int_eq(must_answer(t2).outcome.kind, OUTCOME_VALID);
	vcore_release(t);
	vcore_release(t2);
	ck_assert_int_eq(F.nprobes, 0);
	ck_assert_ptr_null(shared_live(LEASE)); /* answered: no lease taken */
	ck_assert_int_eq(stats().shared_hits, 2);
	ck_assert_int_eq(stats().in_flight, 0);
	/* a domain fact another host learned answers too (catch-all saves the probe) */
	t = submit("x@all.test");
	remote_put("d:all.test", OUTCOME_CATCH_ALL);
	shared_reply(FETCH, 1);
	r = must_answer(t);
	ck_assert_int_eq(r.outcome.kind, OUTCOME_CATCH_ALL);
	ck_assert_int_eq(r.source, VERIFY_DOMAIN_FACT);
	vcore_release(t);
	ck_assert_int_eq(F.nprobes, 0);
}
END_TEST

/* A tagged joiner of a probe the shared tier answers: a positive answer
 * is its too, tagged, and counted a shared hit; a reject is about the
 * other address, so it gets a probe of its own (its own look first). */
START_TEST(shared_fetch_answers_tagged_joiner)
{
	engine_shares = true;
	start("");
	struct verify_ticket *a = submit("list-bounces+a=x.test@lists.test");
	struct verify_ticket *b = submit("list-bounces+b=y.test@lists.test"); /* joins a's */
	ck_assert_int_eq(S.n, 1);
	remote_put("a:list-bounces+a=x.test@lists.test", OUTCOME_VALID);
	shared_reply(FETCH, 1);
	struct verify_result ra = must_answer(a), rb = must_answer(b);
	ck_assert_int_eq(ra.outcome.kind, OUTCOME_VALID);
	ck_assert(!(ra.outcome.flags & OUTCOME_F_TAGGED));
	ck_assert_int_eq(rb.outcome.kind, OUTCOME_VALID);
	ck_assert(rb.outcome.flags & OUTCOME_F_TAGGED);
	ck_assert_int_eq(rb.source, VERIFY_CACHED);
	ck_assert_int_eq(stats().shared_hits, 2);
	ck_assert_int_eq(stats().tagged_hits, 0); /* that counter is the probes' */
	vcore_release(a);
	vcore_release(b);
	a = submit("list2+a=x.test@lists.test");
	b = submit("list2+b=y.test@lists.test");
	remote_put("a:list2+a=x.test@lists.test", OUTCOME_INVALID);
	shared_reply(FETCH, 1);
	ck_assert_int_eq(must_answer(a).outcome.kind, OUTCOME_INVALID);
	struct verify_result r;
	ck_assert(!answered(b, &r));
	ck_assert_int_eq(stats().shared_hits, 3);
	struct fake_shared *again = shared_live(FETCH);
	ck_assert_ptr_nonnull(again);
	ck_assert_str_eq(again->address.normalized, "list2+b=y.test@lists.test");
	remote_put("a:list2+b=y.test@lists.test", OUTCOME_VALID);
	shared_reply(FETCH, 1);
	r = must_answer(b);
	ck_assert_int_eq(r.outcome.kind, OUTCOME_VALID);
	ck_assert(!(r.outcome.flags & OUTCOME_F_TAGGED));
	ck_assert_int_eq(F.nprobes, 0);
	ck_assert_int_eq(stats().in_flight, 0);
	vcore_release(a);
	vcore_release(b);
}
END_TEST

START_TEST(shared_lease_ours_probes_then_releases)
{
	engine_shares = true;
	start("verify_budget = 8s\nprobe_timeout = 30s\n");
	struct verify_ticket *t = submit("bob@ok.test");
	shared_reply(FETCH, 0);
	struct fake_shared *lease = shared_live(LEASE);
	ck_assert_ptr_nonnull(lease);
	ck_assert_int_eq(lease->ttl_ms, 8000 + 30000 + VCORE_LEASE_MARGIN_MS);
	ck_assert_int_eq(F.nprobes, 0);
	shared_reply(LEASE, VCORE_SHARED_OURS);
	ck_assert_int_eq(F.nprobes, 0); /* one more look under the lease first */
	shared_reply(FETCH, 0);
	ck_assert_int_eq(F.nprobes, 1);
	ck_assert_int_eq(S.released, 0);
	finish("bob@ok.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	ck_assert_int_eq(must_answer(t).source, VERIFY_PROBED);
	vcore_release(t);
	ck_assert_int_eq(S.released, 1);
	ck_assert_str_eq(S.last_released, "bob@ok.test");
	ck_assert(has_record("a:bob@ok.test"));
	/* a fetch that found something that does not answer (a hint) leads on to the lease */
	t = submit("carol@ok.test");
	remote_put("h:ok.test", OUTCOME_VALID);
	shared_reply(FETCH, 1);
	ck_assert_ptr_nonnull(shared_live(LEASE));
	shared_reply(LEASE, VCORE_SHARED_FAILED); /* the tier failed: probe as without it */
	ck_assert_int_eq(F.nprobes, 2);
	finish("carol@ok.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	vcore_release(t);
	ck_assert_int_eq(S.released, 1); /* not ours: nothing to give back */
}
END_TEST

/* The window between the first look and the lease: the other host stored
 * its answer and gave its lease back, so ours is granted; the look under
 * the lease finds the answer, serves it and gives the lease back. */
START_TEST(shared_lease_ours_looks_again)
{
	engine_shares = true;
	start("");
	struct verify_ticket *t = submit("hank@ok.test");
	shared_reply(FETCH, 0);
	remote_put("a:hank@ok.test", OUTCOME_INVALID); /* the other host's answer lands */
	shared_reply(LEASE, VCORE_SHARED_OURS);
	ck_assert_ptr_nonnull(shared_live(FETCH));
	shared_reply(FETCH, 1);
	struct verify_result r = must_answer(t);
	ck_assert_int_eq(r.outcome.kind, OUTCOME_INVALID);
	ck_assert_int_eq(r.source, VERIFY_CACHED);
	ck_assert_int_eq(F.nprobes, 0);
	ck_assert_int_eq(S.released, 1);
	ck_assert_str_eq(S.last_released, "hank@ok.test");
	ck_assert_int_eq(stats().in_flight, 0);
	vcore_release(t);
}
END_TEST

START_TEST(shared_failure_probes_at_once)
{
	engine_shares = true;
	start("");
	struct verify_ticket *t = submit("dave@ok.test");
	shared_reply(FETCH, VCORE_SHARED_FAILED);
	ck_assert_int_eq(F.nprobes, 1);
	ck_assert_ptr_null(shared_live(LEASE));
	finish("dave@ok.test", outcome(OUTCOME_INVALID, STAGE_RCPT, 0));
	ck_assert_int_eq(must_answer(t).outcome.kind, OUTCOME_INVALID);
	vcore_release(t);
}
END_TEST

/* A stale answer's refresh asks the tier first: another host refreshed
 * it (or stamped it when it began to): no probe here. Else it runs. */
START_TEST(shared_refresh_once_for_the_fleet)
{
	engine_shares = true;
	start("");
	remote_put("a:ivy@ok.test", OUTCOME_VALID);
	advance(2 * DAY + MINUTE); /* past positive_refresh: stale */
	struct verify_result r = ask("ivy@ok.test");
	ck_assert_int_eq(r.source, VERIFY_STALE);
	ck_assert_ptr_nonnull(shared_live(FETCH)); /* the refresh asks first */
	ck_assert_int_eq(F.nprobes, 0);
	remote_put("a:ivy@ok.test", OUTCOME_VALID); /* the fleet's fresher record */
	shared_reply(FETCH, 1);
	ck_assert_int_eq(F.nprobes, 0);
	ck_assert_int_eq(stats().in_flight, 0);
	ck_assert_int_eq(ask("ivy@ok.test").source, VERIFY_CACHED);
	/* nothing fresher anywhere: the refresh runs (no lease: not waited for) */
	advance(2 * DAY + MINUTE);
	ck_assert_int_eq(ask("ivy@ok.test").source, VERIFY_STALE);
	shared_reply(FETCH, 0);
	ck_assert_ptr_null(shared_live(LEASE));
	ck_assert_int_eq(F.nprobes, 1);
	finish("ivy@ok.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	ck_assert_int_eq(stats().refreshes, 1);
}
END_TEST

START_TEST(shared_lease_held_waits_for_the_answer)
{
	engine_shares = true;
	start("");
	struct verify_ticket *t = submit("erin@ok.test");
	shared_reply(FETCH, 0);
	shared_reply(LEASE, VCORE_SHARED_HELD);
	ck_assert_int_eq(F.nprobes, 0);
	ck_assert_int_eq(stats().shared_waits, 1);
	/* looks again after 50 ms, 100 ms, 200 ms ... */
	int64_t waits[] = {50, 100, 200};
	for (int i = 0; i < 3; i++) {
		ck_assert_ptr_null(shared_live(FETCH));
		advance(waits[i] - 1);
		ck_assert_ptr_null(shared_live(FETCH));
		advance(1);
		ck_assert_ptr_nonnull(shared_live(FETCH));
		if (i < 2) {
			shared_reply(FETCH, 0);
			shared_reply(LEASE, VCORE_SHARED_HELD);
		}
	}
	remote_put("a:erin@ok.test", OUTCOME_INVALID); /* the other host's answer */
	shared_reply(FETCH, 1);
	struct verify_result r = must_answer(t);
	ck_assert_int_eq(r.outcome.kind, OUTCOME_INVALID);
	vcore_release(t);
	ck_assert_int_eq(F.nprobes, 0);
	ck_assert_int_eq(stats().shared_waits, 1);
	ck_assert_int_eq(stats().shared_hits, 1);
	ck_assert_int_eq(stats().in_flight, 0);
}
END_TEST

START_TEST(shared_lease_expired_then_ours)
{
	engine_shares = true;
	start("");
	struct verify_ticket *t = submit("frank@ok.test");
	shared_reply(FETCH, 0);
	shared_reply(LEASE, VCORE_SHARED_HELD);
	/* long after the first request's verify_budget (8 s), still held ... */
	for (int i = 0; i < 12; i++) {
		advance(1000);
		shared_reply(FETCH, 0);
		shared_reply(LEASE, VCORE_SHARED_HELD);
	}
	struct verify_result r;
	ck_assert(!answered(t, &r));
	advance(1000);
	shared_reply(FETCH, 0);
	shared_reply(LEASE, VCORE_SHARED_OURS);   /* the holder died: its lease expired */
	shared_reply(FETCH, VCORE_SHARED_FAILED); /* the look under the lease: the tier failed */
	/* the probe runs (not refused for the first request's spent budget) */
	ck_assert_int_eq(F.nprobes, 1);
	finish("frank@ok.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	ck_assert_int_eq(must_answer(t).source, VERIFY_PROBED);
	vcore_release(t);
	ck_assert_int_eq(S.released, 1);
}
END_TEST

START_TEST(shared_wait_bounded)
{
	engine_shares = true;
	start("verify_budget = 1s\nprobe_timeout = 2s\n");
	struct verify_ticket *t = submit("gina@ok.test");
	int64_t began = F.mono;
	int rounds = 0;
	shared_reply(FETCH, 0);
	shared_reply(LEASE, VCORE_SHARED_HELD);
	struct verify_result r;
	while (!answered(t, &r) && rounds < 100) {
		advance(1000);
		if (shared_live(FETCH) != NULL) {
			shared_reply(FETCH, 0);
			shared_reply(LEASE, VCORE_SHARED_HELD); /* re-taken by someone, again and again */
		}
		rounds++;
	}
	r = must_answer(t);
	ck_assert_int_eq(r.outcome.kind, OUTCOME_TEMPFAIL);
	ck_assert_int_le(F.mono - began, 1000 + 2000 + VCORE_LEASE_MARGIN_MS + 1000);
	vcore_release(t);
	ck_assert_int_eq(F.nprobes, 0);
	ck_assert(!has_record("a:gina@ok.test")); /* not an answer: not kept */
	ck_assert_int_eq(stats().in_flight, 0);
}
END_TEST

START_TEST(shared_free_cancels)
{
	engine_shares = true;
	start("");
	struct verify_ticket *t = submit("hal@ok.test");
	struct fake_shared *f = shared_live(FETCH);
	vcore_free(core);
	core = NULL;
	ck_assert(f->cancelled);
	struct verify_result r = must_answer(t);
	ck_assert_int_eq(r.outcome.kind, OUTCOME_TEMPFAIL);
	vcore_release(t);
}
END_TEST

/* ---- shared probes and limits ---- */

START_TEST(no_cache_no_deferral)
{
	/* without a cache nothing is deferred: the answer's deferral start is
	 * 0, not whatever the caller's storage held (it became a defer_limit
	 * accept at the budget's end) */
	struct vstore s = {.conf = NULL, .cache = NULL};
	struct vstore_answer a;
	memset(&a, 0x5a, sizeof(a));
	struct addr sender = parse("<u@x.example>");
	ck_assert_int_eq(vstore_lookup(&s, &sender, "", 1000, &a), VSTORE_PROBE);
	ck_assert_int_eq(a.deferred_since_ms, 0);
}
END_TEST

/* notify_count - a notification callback: counts its calls */
static void notify_count(void *arg)
{
	(*(int *)arg)++;
}

/* A ticket's notification runs once, when the answer comes (a parked
 * native-transport session resumes then); an answered ticket refuses one;
 * a cancelled one never runs; the core stopping answers and notifies. */
START_TEST(notify_once_on_answer)
{
	start("");
	int calls[3] = {0, 0, 0};
	struct verify_ticket *a = submit("alice@ok.test");
	struct verify_ticket *b = submit("bob@ok.test");
	ck_assert(vcore_notify(a, notify_count, &calls[0]));
	ck_assert(vcore_notify(b, notify_count, &calls[1]));
	vcore_notify_cancel(b);
	ck_assert_int_eq(calls[0], 0);
	finish("alice@ok.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	finish("bob@ok.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	ck_assert_int_eq(calls[0], 1);
	ck_assert_int_eq(calls[1], 0);
	ck_assert(!vcore_notify(a, notify_count, &calls[0])); /* already answered */
	ck_assert_int_eq(calls[0], 1);
	vcore_release(a);
	vcore_release(b);
	struct verify_ticket *c = submit("carol@pending.test");
	ck_assert(vcore_notify(c, notify_count, &calls[2]));
	vcore_free(core);
	core = NULL;
	ck_assert_int_eq(calls[2], 1);
	vcore_release(c);
}
END_TEST

/* A thread waiting on a ticket, as a libmilter worker does at RCPT. */
struct waiter {
	struct verify_ticket *t;
	int64_t deadline; /* core clock (F.mono) */
	bool done;
	struct verify_result r;
	double waited_s; /* real time spent in vcore_wait */
};

static double real_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *waiter_run(void *arg)
{
	struct waiter *w = arg;
	double t0 = real_s();
	w->done = vcore_wait(w->t, w->deadline, &w->r);
	w->waited_s = real_s() - t0;
	return NULL;
}

/* A thread waiting for a probe's answer is woken by it, not by its deadline
 * (the ticket's condition variable is made when the thread starts to wait:
 * a lost signal would show as a 10 s wait); an answered ticket is read
 * again without waiting; a cached answer is there at submit. */
START_TEST(waiter_woken_by_answer)
{
	start("");
	struct verify_ticket *t = submit("alice@ok.test");
	struct waiter w = {.t = t, .deadline = F.mono + 10 * SECOND};
	pthread_t th;
	ck_assert_int_eq(pthread_create(&th, NULL, waiter_run, &w), 0);
	/* Give the thread time to be asleep in the wait (bounded: 50 ms);
	 * answered before it sleeps, the test still holds. */
	nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
	finish("alice@ok.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	ck_assert(w.done);
	ck_assert_int_eq(w.r.outcome.kind, OUTCOME_VALID);
	ck_assert_msg(w.waited_s < 5.0, "woken after %.2f s: by the deadline, not the answer", w.waited_s);
	struct verify_result again = must_answer(t); /* answered: no wait, same answer */
	ck_assert_int_eq(again.outcome.kind, OUTCOME_VALID);
	ck_assert_int_eq(again.source, VERIFY_PROBED);
	vcore_release(t);
	/* Not answered and the deadline passed: false at once. */
	struct verify_ticket *u = submit("bob@ok.test");
	struct verify_result r;
	double t0 = real_s();
	ck_assert(!vcore_wait(u, F.mono - 1, &r));
	ck_assert(real_s() - t0 < 1.0);
	vcore_release(u);
	r = ask("alice@ok.test");
	ck_assert_int_eq(r.source, VERIFY_CACHED);
	ck_assert_int_eq(r.outcome.kind, OUTCOME_VALID);
}
END_TEST

START_TEST(shared_probe_then_cached)
{
	start("");
	struct verify_ticket *t[50];
	for (int i = 0; i < 50; i++)
		t[i] = submit("alice@ok.test");
	ck_assert_int_eq(F.nprobes, 1);
	ck_assert_int_eq(stats().joined, 49);
	struct verify_result r;
	ck_assert(!answered(t[0], &r));
	advance(1200);
	finish("alice@ok.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	for (int i = 0; i < 50; i++) {
		r = must_answer(t[i]);
		ck_assert_int_eq(r.outcome.kind, OUTCOME_VALID);
		ck_assert_int_eq(r.source, VERIFY_PROBED);
		ck_assert_int_eq(r.elapsed_ms, 1200);
		ck_assert_int_eq(r.deferred_since_ms, 0);
		vcore_release(t[i]);
	}
	r = ask("alice@ok.test");
	ck_assert_int_eq(r.source, VERIFY_CACHED);
	ck_assert_int_eq(r.outcome.kind, OUTCOME_VALID);
	ck_assert_int_eq(F.nprobes, 1);
	ck_assert_int_eq(stats().probes, 1);
	ck_assert_int_eq(stats().cache_hits, 1);
	ck_assert_int_eq(stats().in_flight, 0);
}
END_TEST

START_TEST(domain_limits)
{
	start("domain_probe_limit = 2\ndomain_probe_rate = 4\n");
	const char *who[] = {"a@lim.test", "b@lim.test", "c@lim.test", "d@lim.test"};
	struct verify_ticket *t[4];
	for (int i = 0; i < 4; i++)
		t[i] = submit(who[i]);
	ck_assert_int_eq(live_count(), 2); /* two at once; the others wait in line */
	ck_assert_int_eq(F.nprobes, 2);
	finish("a@lim.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	ck_assert_int_eq(live_count(), 2);
	ck_assert_int_eq(F.nprobes, 3);
	ck_assert_int_ge(live("c@lim.test"), 0); /* first come, first served */
	finish("b@lim.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	finish("c@lim.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	finish("d@lim.test", outcome(OUTCOME_INVALID, STAGE_RCPT, 0));
	for (int i = 0; i < 4; i++) {
		must_answer(t[i]);
		vcore_release(t[i]);
	}
	/* the fifth new probe this minute is not made: tempfail, not cached */
	struct verify_result r = ask("e@lim.test");
	ck_assert_int_eq(r.outcome.kind, OUTCOME_TEMPFAIL);
	ck_assert_ptr_nonnull(strstr(r.outcome.reason, "domain_probe_rate"));
	ck_assert_int_eq(r.deferred_since_ms, F.wall);
	ck_assert_int_eq(F.nprobes, 4);
	ck_assert(!has_record("a:e@lim.test"));
	advance(61 * SECOND);
	struct verify_ticket *late = submit("e@lim.test");
	ck_assert_int_eq(F.nprobes, 5);
	finish("e@lim.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	vcore_release(late);
	/* another domain is not limited by this one */
	vcore_tidy(core);
	ck_assert_int_eq(probe_once("x@other.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0)).outcome.kind,
	                 OUTCOME_VALID);
}
END_TEST

START_TEST(domain_place_held_until_connections_close)
{
	/* The engine reports a verdict before QUIT; the domain's place in
	 * domain_probe_limit is given back only when the connection is gone. */
	engine_reports_finished = true;
	start("domain_probe_limit = 1\n");
	struct verify_ticket *a = submit("a@q.test");
	struct verify_ticket *b = submit("b@q.test");
	ck_assert_int_eq(F.nprobes, 1);
	finish("a@q.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	ck_assert_int_eq(must_answer(a).outcome.kind, OUTCOME_VALID); /* answered at once */
	ck_assert_int_eq(F.nprobes, 1);                               /* b still waits: a says QUIT */
	vcore_on_finished(core, "other.test");                        /* another domain: no effect */
	pump();
	ck_assert_int_eq(F.nprobes, 1);
	vcore_on_finished(core, "q.test");
	pump();
	ck_assert_int_eq(F.nprobes, 2);
	ck_assert_int_ge(live("b@q.test"), 0);
	finish("b@q.test", outcome(OUTCOME_INVALID, STAGE_RCPT, 0));
	vcore_on_finished(core, "q.test");
	vcore_on_finished(core, "q.test"); /* a stray report never frees a place twice */
	pump();
	ck_assert_int_eq(must_answer(b).outcome.kind, OUTCOME_INVALID);
	vcore_release(a);
	vcore_release(b);
	struct verify_ticket *c = submit("c@q.test");
	struct verify_ticket *d = submit("d@q.test");
	ck_assert_int_eq(F.nprobes, 3); /* one at a time still */
	finish("c@q.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	ck_assert_int_eq(F.nprobes, 3);
	vcore_on_finished(core, "q.test");
	pump();
	ck_assert_int_eq(F.nprobes, 4);
	finish("d@q.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	vcore_release(c);
	vcore_release(d);
}
END_TEST

/* A refresh that had to wait for the domain's place (domain_probe_limit)
 * runs when its turn comes: its first pass stamped the record, and that
 * stamp is its own, not an earlier refresh's. */
START_TEST(refresh_after_waiting_in_line)
{
	start("domain_probe_limit = 1\n");
	probe_once("v@busy.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	advance(2 * DAY + SECOND);                           /* v's record is stale */
	struct verify_ticket *other = submit("w@busy.test"); /* holds the domain's place */
	ck_assert_int_eq(live_count(), 1);
	struct verify_result r = ask("v@busy.test"); /* stale positive served, refresh queued */
	ck_assert_int_eq(r.source, VERIFY_STALE);
	ck_assert_int_eq(live_count(), 1); /* the refresh waits in line */
	ck_assert_int_eq(record("a:v@busy.test").refresh_at_ms, F.wall + 2 * DAY); /* stamped */
	int before = F.nprobes;
	finish("w@busy.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	vcore_release(other);
	ck_assert_int_eq(F.nprobes, before + 1);
	ck_assert_msg(live("v@busy.test") >= 0, "the refresh of v@busy.test was dropped");
	ck_assert_int_eq(stats().refreshes, 1);
	advance(MINUTE);
	finish("v@busy.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	struct cache_record rec = record("a:v@busy.test");
	ck_assert_int_eq(rec.probed_at_ms, F.wall); /* refreshed */
	ck_assert_int_eq(rec.expires_at_ms, F.wall + 10 * DAY);
	/* and still one refresh a window: more requests start none */
	ck_assert_int_eq(ask("v@busy.test").source, VERIFY_CACHED);
	ck_assert_int_eq(live_count(), 0);
}
END_TEST

START_TEST(our_own_limit_is_not_cached)
{
	/* host_session_rate stopped the probe (OUTCOME_F_LIMITED): the client
	 * gets tempfail, the next try probes again. */
	start("");
	struct verify_result r =
	        probe_once("a@limited.test", outcome(OUTCOME_TEMPFAIL, STAGE_CONNECT, OUTCOME_F_LIMITED));
	ck_assert_int_eq(r.outcome.kind, OUTCOME_TEMPFAIL);
	ck_assert(!has_record("a:a@limited.test"));
	ck_assert(!has_record("d:limited.test"));
	int before = F.nprobes;
	struct verify_ticket *t = submit("a@limited.test");
	ck_assert_int_eq(F.nprobes, before + 1);
	finish("a@limited.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	ck_assert_int_eq(must_answer(t).outcome.kind, OUTCOME_VALID);
	vcore_release(t);
}
END_TEST

/* ---- refresh and its throttling ---- */

/* storm - n messages from a sender whose refresh never succeeds; returns
 * how many probes they started. in_flight: the refresh stays open for the
 * first half of them. */
static int storm(const char *sender, int n)
{
	int before = F.nprobes;
	for (int i = 0; i < n; i++) {
		struct verify_result r = ask(sender);
		ck_assert_int_eq(r.outcome.kind, OUTCOME_VALID); /* a stale positive is served */
		if (i >= n / 2 && live(sender) >= 0)
			finish(sender, outcome(OUTCOME_TEMPFAIL, STAGE_CONNECT, 0));
		advance(10 * SECOND);
	}
	if (live(sender) >= 0)
		finish(sender, outcome(OUTCOME_TEMPFAIL, STAGE_CONNECT, 0));
	return F.nprobes - before;
}

START_TEST(refresh_storm_throttled)
{
	start("");
	probe_once("v@ok.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	advance(2 * DAY + SECOND);
	struct verify_result r = ask("v@ok.test");
	ck_assert_int_eq(r.source, VERIFY_STALE);
	ck_assert_int_eq(F.nprobes, 2);
	finish("v@ok.test", outcome(OUTCOME_TEMPFAIL, STAGE_CONNECT, 0));
	/* the failed refresh did not replace the answer; the record was stamped */
	struct cache_record rec = record("a:v@ok.test");
	ck_assert_int_eq(rec.outcome.kind, OUTCOME_VALID);
	ck_assert_int_eq(rec.refresh_at_ms, F.wall + 2 * DAY);
	int n = storm("v@ok.test", 100);
	fprintf(stderr, "refresh storm: 100 messages -> %d probes (after the window's one refresh)\n", n);
	ck_assert_int_eq(n, 0);
	/* the next window: exactly one refresh for 100 messages */
	advance(2 * DAY);
	n = storm("v@ok.test", 100);
	fprintf(stderr, "refresh storm: 100 messages in a new window -> %d probe(s)\n", n);
	ck_assert_int_eq(n, 1);
	ck_assert_int_eq(stats().refreshes, 2);
	/* many requests queued before the engine ran: still one probe */
	advance(2 * DAY);
	struct addr a = parse("v@ok.test");
	struct verify_ticket *t[20];
	for (int i = 0; i < 20; i++)
		t[i] = vcore_submit(core, &a, NULL);
	pump();
	ck_assert_int_eq(live_count(), 1);
	for (int i = 0; i < 20; i++) {
		ck_assert_int_eq(must_answer(t[i]).outcome.kind, OUTCOME_VALID);
		vcore_release(t[i]);
	}
	/* a refresh that succeeds replaces the record */
	finish("v@ok.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	rec = record("a:v@ok.test");
	ck_assert_int_eq(rec.probed_at_ms, F.wall);
	ck_assert_int_eq(rec.expires_at_ms, F.wall + 10 * DAY);
}
END_TEST

START_TEST(stale_domain_fact_refreshed_once)
{
	start("");
	/* a catch-all fact past its refresh time (written as an older build would) */
	struct outcome o = outcome(OUTCOME_CATCH_ALL, STAGE_CATCHALL, 0);
	struct cache_record rec;
	cache_record_make(conf, &o, F.wall - 2 * DAY, &rec);
	rec.refresh_at_ms = F.wall - SECOND;
	rec.expires_at_ms = F.wall + DAY;
	ck_assert(cache_put(cache, "d:cat.test", &rec, F.wall));
	struct addr a[3] = {parse("a@cat.test"), parse("b@cat.test"), parse("c@cat.test")};
	struct verify_ticket *t[3];
	for (int i = 0; i < 3; i++)
		t[i] = vcore_submit(core, &a[i], NULL);
	pump();
	for (int i = 0; i < 3; i++) {
		struct verify_result r = must_answer(t[i]);
		ck_assert_int_eq(r.outcome.kind, OUTCOME_CATCH_ALL);
		ck_assert_int_eq(r.source, VERIFY_DOMAIN_FACT);
		vcore_release(t[i]);
	}
	ck_assert_int_eq(F.nprobes, 1); /* three queued, one ran */
	ck_assert_int_eq(live("a@cat.test"), 0);
	ck_assert_int_eq(ask("d@cat.test").outcome.kind, OUTCOME_CATCH_ALL);
	ck_assert_int_eq(F.nprobes, 1);
	finish("a@cat.test", outcome(OUTCOME_CATCH_ALL, STAGE_CATCHALL, 0));
	rec = record("d:cat.test");
	ck_assert_int_eq(rec.probed_at_ms, F.wall);
}
END_TEST

/* ---- stale evidence never rejects ---- */

START_TEST(stale_negative_not_served)
{
	start("");
	ck_assert_int_eq(probe_once("n@ok.test", outcome(OUTCOME_INVALID, STAGE_RCPT, 0)).outcome.kind,
	                 OUTCOME_INVALID);
	ck_assert_int_eq(ask("n@ok.test").outcome.kind, OUTCOME_INVALID); /* fresh: served */
	advance(3 * HOUR + SECOND);
	struct verify_ticket *t = submit("n@ok.test");
	struct verify_result r;
	ck_assert(!answered(t, &r)); /* the client waits for a new probe */
	ck_assert_int_eq(F.nprobes, 2);
	ck_assert_int_eq(stats().stale_withheld, 1);
	finish("n@ok.test", outcome(OUTCOME_TEMPFAIL, STAGE_RCPT, 0));
	r = must_answer(t);
	vcore_release(t);
	ck_assert_int_eq(r.outcome.kind, OUTCOME_TEMPFAIL); /* never the stale 550 */
	ck_assert_int_eq(r.source, VERIFY_PROBED);
	ck_assert_int_eq(r.deferred_since_ms, F.wall);
	ck_assert_int_eq(record("a:n@ok.test").outcome.kind,
	                 OUTCOME_TEMPFAIL); /* it replaced the stale 550 */
	r = ask("n@ok.test");
	ck_assert_int_eq(r.outcome.kind, OUTCOME_TEMPFAIL);

	/* a refresh that finds the address valid now */
	probe_once("m@ok.test", outcome(OUTCOME_INVALID, STAGE_RCPT, 0));
	advance(3 * HOUR + SECOND);
	t = submit("m@ok.test");
	ck_assert(!answered(t, &r));
	finish("m@ok.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	ck_assert_int_eq(must_answer(t).outcome.kind, OUTCOME_VALID);
	vcore_release(t);
}
END_TEST

START_TEST(stale_no_domain_fact_not_served)
{
	start("");
	probe_once("x@gone.test", outcome(OUTCOME_NO_DOMAIN, STAGE_DNS, 0));
	struct verify_result r = ask("y@gone.test");
	ck_assert_int_eq(r.outcome.kind, OUTCOME_NO_DOMAIN);
	ck_assert_int_eq(r.source, VERIFY_DOMAIN_FACT);
	ck_assert_int_eq(F.nprobes, 1);
	advance(3 * HOUR + SECOND);
	struct verify_ticket *t = submit("z@gone.test");
	ck_assert(!answered(t, &r));
	ck_assert_int_eq(F.nprobes, 2);
	finish("z@gone.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	r = must_answer(t);
	vcore_release(t);
	ck_assert_int_eq(r.outcome.kind, OUTCOME_VALID);
	ck_assert(!has_record("d:gone.test")); /* contrary evidence cleared the fact */
	t = submit("w@gone.test");
	ck_assert(!answered(t, &r)); /* probed, not answered by a fact */
	finish("w@gone.test", outcome(OUTCOME_INVALID, STAGE_RCPT, 0));
	vcore_release(t);
	/* a stale no_domain whose refresh ends temporary gives that */
	probe_once("x@gone2.test", outcome(OUTCOME_NO_DOMAIN, STAGE_DNS, 0));
	advance(3 * HOUR + SECOND);
	t = submit("q@gone2.test");
	finish("q@gone2.test", outcome(OUTCOME_TEMPFAIL, STAGE_DNS, 0));
	r = must_answer(t);
	vcore_release(t);
	ck_assert_int_eq(r.outcome.kind, OUTCOME_TEMPFAIL);
	ck_assert_int_eq(record("d:gone2.test").outcome.kind, OUTCOME_TEMPFAIL); /* replaced the stale fact */
}
END_TEST

/* The address that saw NXDOMAIN is not told no_domain after another
 * address of the domain has answered (its own record outlives the
 * domain's fact, cleared by the contrary evidence). */
START_TEST(address_no_domain_after_contrary_evidence)
{
	start("");
	struct verify_ticket *ta = submit("alice@appears.test"), *tb = submit("bob@appears.test");
	finish("alice@appears.test", outcome(OUTCOME_NO_DOMAIN, STAGE_DNS, 0));
	ck_assert_int_eq(must_answer(ta).outcome.kind, OUTCOME_NO_DOMAIN);
	/* while the domain's fact stands, alice's own record answers */
	struct verify_result r = ask("alice@appears.test");
	ck_assert_int_eq(r.outcome.kind, OUTCOME_NO_DOMAIN);
	ck_assert_int_eq(r.source, VERIFY_CACHED);
	advance(10 * MINUTE);
	finish("bob@appears.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0)); /* the domain exists */
	vcore_release(ta);
	vcore_release(tb);
	ck_assert(!has_record("d:appears.test"));
	ck_assert_int_eq(record("a:alice@appears.test").outcome.kind, OUTCOME_NO_DOMAIN); /* still fresh */
	uint64_t withheld = stats().stale_withheld;
	struct verify_ticket *t = submit("alice@appears.test");
	ck_assert_msg(!answered(t, &r),
	              "alice@appears.test still answered %s after bob@appears.test verified",
	              outcome_name(r.outcome.kind));
	ck_assert_int_eq(stats().stale_withheld, withheld + 1);
	finish("alice@appears.test", outcome(OUTCOME_INVALID, STAGE_RCPT, 0));
	r = must_answer(t);
	vcore_release(t);
	ck_assert_int_eq(r.outcome.kind, OUTCOME_INVALID);
	ck_assert_int_eq(r.source, VERIFY_PROBED);
}
END_TEST

START_TEST(dns_ttl_caps_a_fact)
{
	start("");
	struct outcome o = outcome(OUTCOME_NO_DOMAIN, STAGE_DNS, 0);
	o.ttl_cap_ms = MINUTE;
	probe_once("a@new.test", o);
	ck_assert_int_eq(record("d:new.test").expires_at_ms, F.wall + MINUTE);
	ck_assert_int_eq(ask("b@new.test").outcome.kind, OUTCOME_NO_DOMAIN);
	advance(MINUTE + SECOND);
	/* the domain has started to exist: the next sender is probed */
	ck_assert_int_eq(probe_once("c@new.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0)).outcome.kind,
	                 OUTCOME_VALID);
}
END_TEST

START_TEST(contrary_evidence_clears_facts)
{
	static const enum outcome_kind facts[] = {OUTCOME_TEMPFAIL, OUTCOME_BLOCKED, OUTCOME_NO_DOMAIN};
	static const enum outcome_kind answers[] = {OUTCOME_VALID, OUTCOME_INVALID, OUTCOME_CATCH_ALL};
	start("");
	for (int f = 0; f < 3; f++) {
		for (int a = 0; a < 3; a++) {
			char dom[64], first[80], second[80], third[80], key[80];
			snprintf(dom, sizeof(dom), "d%d%d.test", f, a);
			snprintf(first, sizeof(first), "first@%s", dom);
			snprintf(second, sizeof(second), "second@%s", dom);
			snprintf(third, sizeof(third), "third@%s", dom);
			snprintf(key, sizeof(key), "d:%s", dom);
			/* two probes in flight; the first leaves a fact, the second disproves it */
			struct verify_ticket *t1 = submit(first), *t2 = submit(second);
			enum probe_stage stage = facts[f] == OUTCOME_BLOCKED     ? STAGE_BANNER
			                         : facts[f] == OUTCOME_NO_DOMAIN ? STAGE_DNS
			                                                         : STAGE_CONNECT;
			finish(first, outcome(facts[f], stage, 0));
			ck_assert_int_eq(record(key).outcome.kind, facts[f]);
			finish(second,
			       outcome(answers[a],
			               answers[a] == OUTCOME_CATCH_ALL ? STAGE_CATCHALL : STAGE_RCPT, 0));
			if (answers[a] == OUTCOME_CATCH_ALL)
				ck_assert_int_eq(record(key).outcome.kind, OUTCOME_CATCH_ALL);
			else
				ck_assert_msg(!has_record(key), "%s not cleared by %s",
				              outcome_name(facts[f]), outcome_name(answers[a]));
			vcore_release(t1);
			vcore_release(t2);
			if (answers[a] != OUTCOME_CATCH_ALL) {
				struct verify_ticket *t3 = submit(third);
				struct verify_result r;
				ck_assert(!answered(t3, &r)); /* probed, not answered by the old fact */
				finish(third, outcome(OUTCOME_VALID, STAGE_RCPT, 0));
				vcore_release(t3);
			}
		}
	}
}
END_TEST

START_TEST(protocol_and_loop_never_domain_facts)
{
	start("");
	probe_once("a@desync.test", outcome(OUTCOME_TEMPFAIL, STAGE_BANNER, OUTCOME_F_PROTOCOL));
	ck_assert(!has_record("d:desync.test"));
	ck_assert_int_eq(record("a:a@desync.test").outcome.kind, OUTCOME_TEMPFAIL);
	probe_once("a@loop.test", outcome(OUTCOME_TEMPFAIL, STAGE_CONNECT, OUTCOME_F_LOOP));
	ck_assert(!has_record("d:loop.test"));
	/* and a protocol-flagged outcome teaches no hints */
	probe_once("b@desync.test",
	           outcome(OUTCOME_TEMPFAIL, STAGE_RCPT, OUTCOME_F_PROTOCOL | OUTCOME_F_NOT_CATCHALL));
	ck_assert(!has_record("h:desync.test"));
	/* a later address is probed, not answered by a fact */
	struct verify_ticket *t = submit("c@desync.test");
	struct verify_result r;
	ck_assert(!answered(t, &r));
	finish("c@desync.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	vcore_release(t);
}
END_TEST

/* ---- defer_limit stamps ---- */

START_TEST(deferral_start_kept)
{
	start("");
	int64_t t0 = F.wall;
	struct verify_result r = probe_once("d@ok.test", outcome(OUTCOME_TEMPFAIL, STAGE_RCPT, 0));
	ck_assert_int_eq(r.deferred_since_ms, t0);
	advance(MINUTE);
	r = ask("d@ok.test");
	ck_assert_int_eq(r.source, VERIFY_CACHED);
	ck_assert_int_eq(r.deferred_since_ms, t0);
	/* past temporary_ttl: not served, probed again, the start carried over */
	advance(5 * MINUTE);
	struct verify_ticket *t = submit("d@ok.test");
	ck_assert(!answered(t, &r));
	finish("d@ok.test", outcome(OUTCOME_BLOCKED, STAGE_MAIL, 0));
	r = must_answer(t);
	vcore_release(t);
	ck_assert_int_eq(r.outcome.kind, OUTCOME_BLOCKED);
	ck_assert_int_eq(r.deferred_since_ms, t0);
	struct cache_record rec = record("a:d@ok.test");
	ck_assert_int_eq(rec.refresh_at_ms, F.wall + 5 * MINUTE);
	ck_assert_int_ge(rec.expires_at_ms, t0 + 2 * HOUR + CACHE_DEFER_MARGIN_MS);
	/* just before defer_limit the record still holds the start */
	advance(2 * HOUR - 7 * MINUTE);
	ck_assert_int_eq(record("a:d@ok.test").deferred_since_ms, t0);
	t = submit("d@ok.test");
	finish("d@ok.test", outcome(OUTCOME_TEMPFAIL, STAGE_RCPT, 0));
	r = must_answer(t);
	vcore_release(t);
	ck_assert_int_eq(r.deferred_since_ms, t0);
	/* and after it, within the margin, the retry still finds it */
	advance(HOUR);
	t = submit("d@ok.test");
	finish("d@ok.test", outcome(OUTCOME_TEMPFAIL, STAGE_RCPT, 0));
	ck_assert_int_eq(must_answer(t).deferred_since_ms, t0);
	vcore_release(t);
	/* a definite answer ends the deferral */
	advance(6 * MINUTE);
	t = submit("d@ok.test");
	finish("d@ok.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	r = must_answer(t);
	vcore_release(t);
	ck_assert_int_eq(r.deferred_since_ms, 0);
	ck_assert_int_eq(record("a:d@ok.test").deferred_since_ms, 0);
}
END_TEST

START_TEST(deferral_from_domain_fact)
{
	start("");
	probe_once("a@down.test", outcome(OUTCOME_TEMPFAIL, STAGE_CONNECT, 0));
	advance(MINUTE);
	int64_t t1 = F.wall;
	struct verify_result r = ask("b@down.test");
	ck_assert_int_eq(r.source, VERIFY_DOMAIN_FACT);
	ck_assert_int_eq(r.outcome.kind, OUTCOME_TEMPFAIL);
	ck_assert_int_eq(r.deferred_since_ms, t1);
	ck_assert_int_eq(record("a:b@down.test").deferred_since_ms, t1); /* the address's own record */
	advance(MINUTE);
	r = ask("b@down.test");
	ck_assert_int_eq(r.deferred_since_ms, t1);
	ck_assert_int_eq(F.nprobes, 1);
	/* both stale now: b is probed again and keeps its start */
	advance(5 * MINUTE);
	struct verify_ticket *t = submit("b@down.test");
	ck_assert(!answered(t, &r));
	finish("b@down.test", outcome(OUTCOME_TEMPFAIL, STAGE_CONNECT, 0));
	r = must_answer(t);
	vcore_release(t);
	ck_assert_int_eq(r.deferred_since_ms, t1);
	/* a fresh fact answers a stale temporary address record, start kept */
	advance(5 * MINUTE + SECOND);
	t = submit("a@down.test");
	finish("a@down.test", outcome(OUTCOME_TEMPFAIL, STAGE_CONNECT, 0)); /* fresh fact again */
	vcore_release(t);
	r = ask("b@down.test");
	ck_assert_int_eq(r.source, VERIFY_DOMAIN_FACT);
	ck_assert_int_eq(r.deferred_since_ms, t1);
}
END_TEST

/* A probe that outlasts verify_budget gives the waiting ticket no answer;
 * the deferral start its stale temporary record carried is known at submit,
 * so defer_limit still applies to the budget's tempfail (policy.h). */
START_TEST(deferral_known_at_submit)
{
	start("");
	probe_once("s@slowdown.test", outcome(OUTCOME_TEMPFAIL, STAGE_CONNECT, 0));
	int64_t first = F.wall;
	advance(3 * HOUR); /* past defer_limit (2h); the record still carries the start */
	ck_assert_int_eq(record("a:s@slowdown.test").deferred_since_ms, first);
	struct verify_ticket *t = submit("s@slowdown.test");
	struct verify_ticket *joined = submit("s@slowdown.test");
	struct verify_result r;
	ck_assert(!answered(t, &r)); /* the probe runs on past the budget */
	ck_assert_int_eq(vcore_deferred_since(t), first);
	ck_assert_int_eq(vcore_deferred_since(joined), first);
	finish("s@slowdown.test", outcome(OUTCOME_TEMPFAIL, STAGE_CONNECT, 0));
	ck_assert_int_eq(must_answer(t).deferred_since_ms, first);
	vcore_release(t);
	vcore_release(joined);
	/* nothing known: an unknown address, a stale negative, a cached answer */
	t = submit("new@slowdown2.test");
	ck_assert_int_eq(vcore_deferred_since(t), 0);
	finish("new@slowdown2.test", outcome(OUTCOME_INVALID, STAGE_RCPT, 0));
	vcore_release(t);
	advance(3 * HOUR + SECOND);
	t = submit("new@slowdown2.test");
	ck_assert(!answered(t, &r));
	ck_assert_int_eq(vcore_deferred_since(t), 0);
	finish("new@slowdown2.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	vcore_release(t);
	t = submit("new@slowdown2.test");
	ck_assert_int_eq(vcore_deferred_since(t), 0);
	vcore_release(t);
}
END_TEST

/* ---- greylisting ---- */

START_TEST(greylist_reprobes)
{
	start("");
	struct verify_result r =
	        probe_once("g@grey.test", outcome(OUTCOME_TEMPFAIL, STAGE_RCPT, OUTCOME_F_GREYLIST));
	ck_assert_int_eq(r.outcome.kind, OUTCOME_TEMPFAIL);
	ck_assert_int_eq(live_timers(), 1);
	ck_assert_int_eq(record("a:g@grey.test").tries, 1);
	for (int i = 2; i <= 4; i++) {
		advance(5 * MINUTE);
		ck_assert_int_eq(F.nprobes, i); /* the re-probe started */
		ck_assert_int_ge(live("g@grey.test"), 0);
		finish("g@grey.test", outcome(OUTCOME_TEMPFAIL, STAGE_RCPT, OUTCOME_F_GREYLIST));
	}
	ck_assert_int_eq(record("a:g@grey.test").tries, 3);
	ck_assert_int_eq(live_timers(), 0); /* three re-probes, then the normal lifetime */
	advance(HOUR);
	ck_assert_int_eq(F.nprobes, 4);
	ck_assert_int_eq(stats().greylist_retries, 3);

	/* a re-probe that gets through fills the cache for the sender's retry */
	probe_once("h@grey.test", outcome(OUTCOME_TEMPFAIL, STAGE_RCPT, OUTCOME_F_GREYLIST));
	advance(5 * MINUTE);
	/* the sender retries while the re-probe runs: it joins it */
	struct verify_ticket *t = submit("h@grey.test");
	ck_assert_int_eq(F.nprobes, 6);
	ck_assert(!answered(t, &r));
	finish("h@grey.test", outcome(OUTCOME_VALID, STAGE_RCPT, OUTCOME_F_NOT_CATCHALL));
	r = must_answer(t);
	vcore_release(t);
	ck_assert_int_eq(r.outcome.kind, OUTCOME_VALID);
	ck_assert_int_eq(record("a:h@grey.test").tries, 0);
	r = ask("h@grey.test");
	ck_assert_int_eq(r.source, VERIFY_CACHED);
	ck_assert_int_eq(r.outcome.kind, OUTCOME_VALID);
	ck_assert_int_eq(live_timers(), 0);
	/* a tempfail that is not greylisting schedules nothing */
	probe_once("i@grey.test", outcome(OUTCOME_TEMPFAIL, STAGE_RCPT, 0));
	ck_assert_int_eq(live_timers(), 0);
}
END_TEST

/* With defer_limit = 0 the temporary record expires (temporary_ttl) just
 * when the re-probe runs: the re-probe carries its count, so the
 * re-probes still stop after VSTORE_GREYLIST_TRIES. */
START_TEST(greylist_reprobes_stop_without_defer_limit)
{
	start("defer_limit = 0\n");
	probe_once("g@grey0.test", outcome(OUTCOME_TEMPFAIL, STAGE_RCPT, OUTCOME_F_GREYLIST));
	for (int i = 0; i < 20; i++) {
		advance(5 * MINUTE);
		if (live("g@grey0.test") < 0)
			break;
		finish("g@grey0.test", outcome(OUTCOME_TEMPFAIL, STAGE_RCPT, OUTCOME_F_GREYLIST));
	}
	fprintf(stderr, "one greylisted request, defer_limit=0: %d probes in 100 minutes\n", F.nprobes);
	ck_assert_int_eq(F.nprobes, 1 + VSTORE_GREYLIST_TRIES);
	ck_assert_int_eq(stats().greylist_retries, VSTORE_GREYLIST_TRIES);
	ck_assert_int_eq(live_timers(), 0);
}
END_TEST

START_TEST(greylist_reprobe_moot_after_an_answer)
{
	start("greylist_retry = 10m\n");
	probe_once("g@grey.test", outcome(OUTCOME_TEMPFAIL, STAGE_RCPT, OUTCOME_F_GREYLIST));
	ck_assert_int_eq(live_timers(), 1);
	/* the sender's retry finds the temporary answer stale and probes first */
	advance(6 * MINUTE);
	ck_assert_int_eq(probe_once("g@grey.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0)).outcome.kind,
	                 OUTCOME_VALID);
	ck_assert_int_eq(live_timers(), 0); /* the pending re-probe is dropped */
	ck_assert(F.timers[0].cancelled);
	advance(HOUR);
	ck_assert_int_eq(F.nprobes, 2);
}
END_TEST

START_TEST(greylist_timers_bounded_and_cancelled)
{
	start("");
	vcore_set_greylist_timers_max(core, 2);
	probe_once("a@grey.test", outcome(OUTCOME_TEMPFAIL, STAGE_RCPT, OUTCOME_F_GREYLIST));
	probe_once("b@grey.test", outcome(OUTCOME_TEMPFAIL, STAGE_RCPT, OUTCOME_F_GREYLIST));
	probe_once("c@grey.test", outcome(OUTCOME_TEMPFAIL, STAGE_RCPT, OUTCOME_F_GREYLIST));
	ck_assert_int_eq(live_timers(), 2);
	ck_assert_int_eq(record("a:c@grey.test").tries, 0); /* not scheduled: not counted */
	vcore_free(core);
	core = NULL;
	ck_assert_int_eq(live_timers(), 0);
	ck_assert(F.timers[0].cancelled && F.timers[1].cancelled);
}
END_TEST

/* ---- hints and late facts ---- */

START_TEST(probe_hints)
{
	start("");
	probe_once("a@hint.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	ck_assert(!F.probes[0].hints.skip_catchall && !F.probes[0].hints.use_fallback_sender);
	probe_once("b@hint.test", outcome(OUTCOME_VALID, STAGE_RCPT, OUTCOME_F_NOT_CATCHALL));
	ck_assert_uint_eq(record("h:hint.test").outcome.flags, OUTCOME_F_NOT_CATCHALL);
	ck_assert_int_eq(record("h:hint.test").expires_at_ms, F.wall + 10 * DAY);
	probe_once("c@hint.test", outcome(OUTCOME_INVALID, STAGE_RCPT, OUTCOME_F_FALLBACK_SENDER));
	ck_assert(F.probes[2].hints.skip_catchall);
	ck_assert(!F.probes[2].hints.use_fallback_sender);
	ck_assert_uint_eq(record("h:hint.test").outcome.flags,
	                  OUTCOME_F_NOT_CATCHALL | OUTCOME_F_FALLBACK_SENDER);
	probe_once("d@hint.test", outcome(OUTCOME_VALID, STAGE_RCPT, OUTCOME_F_FALLBACK_SENDER));
	ck_assert(F.probes[3].hints.skip_catchall && F.probes[3].hints.use_fallback_sender);
	/* a stale not-catch-all hint does not skip the random RCPT */
	advance(2 * DAY + SECOND);
	probe_once("e@hint.test", outcome(OUTCOME_CATCH_ALL, STAGE_CATCHALL, 0));
	ck_assert(!F.probes[4].hints.skip_catchall);
	ck_assert(F.probes[4].hints.use_fallback_sender);
	/* the domain is catch-all now: the hint is gone */
	ck_assert_uint_eq(record("h:hint.test").outcome.flags & OUTCOME_F_NOT_CATCHALL, 0);
	ck_assert_int_eq(record("d:hint.test").outcome.kind, OUTCOME_CATCH_ALL);
}
END_TEST

START_TEST(late_facts)
{
	start("");
	struct addr late = parse("a@late.test");
	struct outcome ca = outcome(OUTCOME_CATCH_ALL, STAGE_CATCHALL, 0);
	probe_once("a@late.test", outcome(OUTCOME_VALID, STAGE_RCPT, OUTCOME_F_NOT_CATCHALL));
	ck_assert(has_record("h:late.test"));
	vcore_on_fact(core, &late, &ca);
	ck_assert_int_eq(record("d:late.test").outcome.kind, OUTCOME_CATCH_ALL);
	ck_assert(!has_record("h:late.test")); /* not-catch-all cleared */
	struct verify_result r = ask("b@late.test");
	ck_assert_int_eq(r.source, VERIFY_DOMAIN_FACT);
	ck_assert_int_eq(r.outcome.kind, OUTCOME_CATCH_ALL);
	struct outcome nc = outcome(OUTCOME_VALID, STAGE_CATCHALL, OUTCOME_F_NOT_CATCHALL);
	vcore_on_fact(core, &late, &nc);
	ck_assert(!has_record("d:late.test")); /* not catch-all after all */
	ck_assert_uint_eq(record("h:late.test").outcome.flags, OUTCOME_F_NOT_CATCHALL);
	probe_once("c@late.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	ck_assert(F.probes[1].hints.skip_catchall);
	/* a catch-all answer from a session out of step is no fact */
	struct outcome bad = outcome(OUTCOME_CATCH_ALL, STAGE_CATCHALL, OUTCOME_F_PROTOCOL);
	vcore_on_fact(core, &late, &bad);
	ck_assert(!has_record("d:late.test"));
	/* a protocol tempfail is a retraction: what c's probe taught is taken back */
	struct addr c = parse("c@late.test");
	struct outcome back = outcome(OUTCOME_TEMPFAIL, STAGE_QUIT, OUTCOME_F_PROTOCOL);
	ck_assert_int_eq(record("a:c@late.test").outcome.kind, OUTCOME_VALID);
	vcore_on_fact(core, &c, &back);
	struct cache_record rec = record("a:c@late.test");
	ck_assert_int_eq(rec.outcome.kind, OUTCOME_TEMPFAIL);
	ck_assert_uint_eq(rec.outcome.flags, OUTCOME_F_PROTOCOL);
	ck_assert(!has_record("h:late.test"));
	ck_assert_int_eq(record("a:a@late.test").outcome.kind, OUTCOME_VALID); /* another address's */
}
END_TEST

/* A retraction (a late protocol tempfail: the session was out of step
 * after the verdict) takes back the address's answer, even a fresh valid
 * one a tempfail would never replace, its tagged copy, and the domain's
 * catch-all fact and hints that session may have taught. */
START_TEST(retraction_takes_back_an_answer)
{
	start("");
	struct outcome back = outcome(OUTCOME_TEMPFAIL, STAGE_RCPT, OUTCOME_F_PROTOCOL);
	probe_once("v@ret.test", outcome(OUTCOME_VALID, STAGE_RCPT, OUTCOME_F_NOT_CATCHALL));
	ck_assert_uint_eq(record("h:ret.test").outcome.flags, OUTCOME_F_NOT_CATCHALL);
	advance(MINUTE);
	struct addr v = parse("v@ret.test");
	vcore_on_fact(core, &v, &back);
	struct cache_record rec = record("a:v@ret.test");
	ck_assert_int_eq(rec.outcome.kind, OUTCOME_TEMPFAIL);
	ck_assert_uint_eq(rec.outcome.flags, OUTCOME_F_PROTOCOL);
	ck_assert_int_eq(rec.deferred_since_ms, F.wall);
	ck_assert(!has_record("h:ret.test"));
	struct verify_result r = ask("v@ret.test");
	ck_assert_int_eq(r.outcome.kind, OUTCOME_TEMPFAIL); /* never the valid the session gave */
	ck_assert_int_eq(r.deferred_since_ms, F.wall);
	ck_assert_int_eq(F.nprobes, 1);
	/* asked again: probed, without the retracted not-catch-all hint */
	advance(5 * MINUTE + SECOND);
	probe_once("v@ret.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	ck_assert(!F.probes[1].hints.skip_catchall);
	ck_assert_int_eq(record("a:v@ret.test").outcome.kind, OUTCOME_VALID);

	/* a 550 from a session out of step is never a reject */
	probe_once("n@ret.test", outcome(OUTCOME_INVALID, STAGE_RCPT, 0));
	struct addr n = parse("n@ret.test");
	vcore_on_fact(core, &n, &back);
	ck_assert_int_eq(ask("n@ret.test").outcome.kind, OUTCOME_TEMPFAIL);

	/* the domain's catch-all fact goes; other facts are DNS's or connect's */
	probe_once("x@cret.test", outcome(OUTCOME_CATCH_ALL, STAGE_CATCHALL, 0));
	ck_assert(has_record("d:cret.test"));
	struct addr x = parse("x@cret.test");
	vcore_on_fact(core, &x, &back);
	ck_assert(!has_record("d:cret.test"));
	probe_once("y@down-ret.test", outcome(OUTCOME_TEMPFAIL, STAGE_CONNECT, 0));
	struct addr y = parse("y@down-ret.test");
	vcore_on_fact(core, &y, &back);
	ck_assert_int_eq(record("d:down-ret.test").outcome.kind, OUTCOME_TEMPFAIL);

	/* a tagged sender: the stable form's copy made from this answer goes */
	probe_once("prvs=1111111111=alice@tret.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	ck_assert(has_record("t:alice@tret.test"));
	struct addr a1 = parse("prvs=1111111111=alice@tret.test");
	vcore_on_fact(core, &a1, &back);
	ck_assert(!has_record("t:alice@tret.test"));
	ck_assert_int_eq(record("a:prvs=1111111111=alice@tret.test").outcome.kind, OUTCOME_TEMPFAIL);
	struct verify_ticket *t = submit("prvs=2222222222=alice@tret.test");
	ck_assert(!answered(t, &r)); /* probed, not answered by the copy */
	finish("prvs=2222222222=alice@tret.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	vcore_release(t);
	/* ... but not one another address's answer made */
	struct outcome old = outcome(OUTCOME_VALID, STAGE_RCPT, 0);
	cache_record_make(conf, &old, F.wall - HOUR, &rec);
	ck_assert(cache_put(cache, "a:prvs=3333333333=alice@tret.test", &rec, F.wall));
	struct addr a3 = parse("prvs=3333333333=alice@tret.test");
	vcore_on_fact(core, &a3, &back);
	ck_assert(has_record("t:alice@tret.test"));
	ck_assert_int_eq(record("a:prvs=3333333333=alice@tret.test").outcome.kind, OUTCOME_TEMPFAIL);
}
END_TEST

/* ---- tagged senders ---- */

START_TEST(tagged_stable_form)
{
	start("");
	struct verify_result r =
	        probe_once("prvs=1111111111=alice@bat.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	ck_assert_int_eq(r.outcome.kind, OUTCOME_VALID);
	ck_assert_str_eq(F.probes[0].address.normalized, "prvs=1111111111=alice@bat.test"); /* as given */
	struct cache_record exact = record("a:prvs=1111111111=alice@bat.test");
	struct cache_record stable = record("t:alice@bat.test");
	ck_assert(stable.outcome.flags & OUTCOME_F_TAGGED);
	ck_assert_int_eq(stable.expires_at_ms, exact.expires_at_ms); /* same lifetimes */
	ck_assert_int_eq(stable.refresh_at_ms, exact.refresh_at_ms);
	ck_assert(!has_record("a:alice@bat.test")); /* the plain address is not answered by a copy */
	r = ask("prvs=2222222222=alice@bat.test");
	ck_assert_int_eq(r.source, VERIFY_CACHED);
	ck_assert(r.outcome.flags & OUTCOME_F_TAGGED);
	ck_assert_int_eq(F.nprobes, 1);
	ck_assert_int_eq(stats().tagged_hits, 1);
	/* a 5xx for a tagged address stays with that address */
	r = probe_once("prvs=3333333333=zed@bat.test", outcome(OUTCOME_INVALID, STAGE_RCPT, 0));
	ck_assert_int_eq(r.outcome.kind, OUTCOME_INVALID);
	ck_assert(!has_record("t:zed@bat.test"));
	ck_assert_int_eq(ask("prvs=3333333333=zed@bat.test").outcome.kind, OUTCOME_INVALID);
	r = probe_once("prvs=4444444444=zed@bat.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	ck_assert_int_eq(F.nprobes, 3);
	/* SRS: the forwarder's stable form */
	probe_once("SRS0=HHH1=TT=orig.test=bob@fwd.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	r = ask("SRS0=JJJ2=UU=orig.test=bob@fwd.test");
	ck_assert_int_eq(r.source, VERIFY_CACHED);
	ck_assert_int_eq(F.nprobes, 4);
	/* a stale stable copy is served and refreshed by the asking address */
	advance(2 * DAY + SECOND);
	r = ask("prvs=5555555555=alice@bat.test");
	ck_assert_int_eq(r.source, VERIFY_STALE);
	ck_assert_int_ge(live("prvs=5555555555=alice@bat.test"), 0);
	finish("prvs=5555555555=alice@bat.test", outcome(OUTCOME_TEMPFAIL, STAGE_CONNECT, 0));
	ck_assert_int_eq(record("t:alice@bat.test").refresh_at_ms, F.wall + 2 * DAY); /* stamped */
	ck_assert_int_eq(ask("prvs=6666666666=alice@bat.test").source, VERIFY_CACHED);
	ck_assert_int_eq(F.nprobes, 5);
}
END_TEST

START_TEST(tagged_concurrent_share_one_probe)
{
	start("");
	struct verify_ticket *a = submit("list-bounces+a=x.test@lists.test");
	struct verify_ticket *b = submit("list-bounces+b=y.test@lists.test");
	ck_assert_int_eq(F.nprobes, 1);
	finish("list-bounces+a=x.test@lists.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	struct verify_result ra = must_answer(a), rb = must_answer(b);
	ck_assert_int_eq(ra.outcome.kind, OUTCOME_VALID);
	ck_assert_int_eq(rb.outcome.kind, OUTCOME_VALID);
	ck_assert(!(ra.outcome.flags & OUTCOME_F_TAGGED));
	ck_assert(rb.outcome.flags & OUTCOME_F_TAGGED);
	vcore_release(a);
	vcore_release(b);
	/* a reject for one is never given to the other: it gets a probe of its own */
	a = submit("list2+a=x.test@lists.test");
	b = submit("list2+b=y.test@lists.test");
	ck_assert_int_eq(F.nprobes, 2);
	finish("list2+a=x.test@lists.test", outcome(OUTCOME_INVALID, STAGE_RCPT, 0));
	ck_assert_int_eq(must_answer(a).outcome.kind, OUTCOME_INVALID);
	struct verify_result r;
	ck_assert(!answered(b, &r));
	ck_assert_int_eq(F.nprobes, 3);
	ck_assert_int_ge(live("list2+b=y.test@lists.test"), 0);
	finish("list2+b=y.test@lists.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	r = must_answer(b);
	ck_assert_int_eq(r.outcome.kind, OUTCOME_VALID);
	ck_assert(!(r.outcome.flags & OUTCOME_F_TAGGED));
	vcore_release(a);
	vcore_release(b);
	/* a temporary answer is not shared either */
	a = submit("list3+a=x.test@lists.test");
	b = submit("list3+b=y.test@lists.test");
	finish("list3+a=x.test@lists.test", outcome(OUTCOME_TEMPFAIL, STAGE_RCPT, 0));
	ck_assert(!answered(b, &r));
	finish("list3+b=y.test@lists.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	ck_assert_int_eq(must_answer(b).outcome.kind, OUTCOME_VALID);
	vcore_release(a);
	vcore_release(b);
}
END_TEST

START_TEST(tagged_senders_off)
{
	start("tagged_senders =\n");
	probe_once("prvs=1111111111=alice@bat.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	probe_once("prvs=2222222222=alice@bat.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	ck_assert_int_eq(F.nprobes, 2);
	ck_assert(!has_record("t:alice@bat.test"));
}
END_TEST

/* ---- budgets, and every line drains ---- */

#define FLOOD 5000
static struct verify_ticket *flood_t[FLOOD];

/* finish_due - probes running for at least ms end: valid for even local
 * parts, invalid for odd ones */
static void finish_due(int64_t ms)
{
	for (int i = 0; i < F.nprobes; i++) {
		if (!F.probes[i].live || F.mono - F.probes[i].started < ms)
			continue;
		const char *n = F.probes[i].address.normalized;
		finish(n, outcome(atoi(n + 1) % 2 == 0 ? OUTCOME_VALID : OUTCOME_INVALID, STAGE_RCPT, 0));
	}
}

/* probed_as - the outcome the fake engine gave address, or -1 if never probed */
static int probed_as(const char *normalized)
{
	for (int i = 0; i < F.nprobes; i++)
		if (strcmp(F.probes[i].address.normalized, normalized) == 0)
			return atoi(normalized + 1) % 2 == 0 ? OUTCOME_VALID : OUTCOME_INVALID;
	return -1;
}

/* real_probed - was sender i of the flood probed? */
static bool real_probed(int i)
{
	char text[64];
	snprintf(text, sizeof(text), "u%d@slow.test", i);
	return probed_as(text) >= 0;
}

/* The stranded-queue bug: 5000 senders at one slow domain (each probe
 * 2 s; one new sender every 10 ms) with domain_probe_limit 5 and
 * domain_probe_rate 60. Every ticket is answered within its budget, the
 * probed ones with their real outcome, the rest tempfail (never cached);
 * once the clock has moved on nothing waits and no probe object is left,
 * and a retry of a tempfailed sender is probed, not joined to a stuck one. */
START_TEST(every_line_drains)
{
	start("domain_probe_limit = 5\ndomain_probe_rate = 60\ndomain_invalid_limit = 0\n"
	      "verify_budget = 8s\n");
	char text[64];
	for (int i = 0; i < FLOOD; i++) {
		snprintf(text, sizeof(text), "u%d@slow.test", i);
		flood_t[i] = submit(text);
		advance(10);
		finish_due(2 * SECOND);
		ck_assert_int_le(live_count(), 5);
	}
	for (int i = 0; i < 20 * 60 && live_count() > 0; i++) {
		advance(100);
		finish_due(2 * SECOND);
	}
	advance(2 * MINUTE);
	ck_assert_int_eq(live_count(), 0);
	ck_assert_int_eq(vcore_probe_objects(core), 0);
	ck_assert_int_eq(stats().in_flight, 0);
	int probed = 0, tempfailed = 0;
	for (int i = 0; i < FLOOD; i++) {
		struct verify_result r = must_answer(flood_t[i]);
		/* it started within its budget; the probe itself takes 2 s */
		ck_assert_int_le(r.elapsed_ms, (real_probed(i) ? 10 : 8) * SECOND);
		snprintf(text, sizeof(text), "u%d@slow.test", i);
		int real = probed_as(text);
		if (real >= 0) {
			ck_assert_int_eq(r.outcome.kind, real);
			probed++;
		} else {
			ck_assert_int_eq(r.outcome.kind, OUTCOME_TEMPFAIL);
			ck_assert_ptr_nonnull(strstr(r.outcome.reason, "over budget"));
			snprintf(text, sizeof(text), "a:u%d@slow.test", i);
			ck_assert(!has_record(text));
			tempfailed++;
		}
		vcore_release(flood_t[i]);
	}
	ck_assert_int_eq(probed, F.nprobes);
	ck_assert_int_eq(probed + tempfailed, FLOOD);
	/* 50 s of flood plus the drain: at most two rate windows' worth */
	ck_assert_int_le(F.nprobes, 2 * 60);
	ck_assert_int_ge(F.nprobes, 60);
	ck_assert_int_eq((int)stats().over_budget, tempfailed);
	fprintf(stderr, "every_line_drains: %d senders, %d probed, %d tempfailed\n", FLOOD, probed,
	        tempfailed);
	/* the retry of a tempfailed sender gets a real answer */
	for (int i = 0; i < FLOOD; i++) {
		snprintf(text, sizeof(text), "u%d@slow.test", i);
		if (probed_as(text) < 0) {
			struct verify_ticket *t = submit(text);
			ck_assert_int_ge(live(text), 0);
			finish(text, outcome(OUTCOME_VALID, STAGE_RCPT, 0));
			ck_assert_int_eq(must_answer(t).outcome.kind, OUTCOME_VALID);
			vcore_release(t);
			break;
		}
	}
	ck_assert_int_eq(vcore_probe_objects(core), 0);
}
END_TEST

/* A probe that waits for the domain's rate window starts when it turns (a
 * timer looks at the line), if that is within its verify_budget; one whose
 * budget ends first is answered at once. */
START_TEST(rate_window_timer_starts_the_line)
{
	start("domain_probe_limit = 5\ndomain_probe_rate = 2\nverify_budget = 20s\n");
	struct verify_ticket *a = submit("a@win.test"), *b = submit("b@win.test");
	ck_assert_int_eq(F.nprobes, 2);
	finish("a@win.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	finish("b@win.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	advance(30 * SECOND);
	/* the window turns in 30 s, after its 20 s budget: answered now */
	struct verify_result r = ask("c@win.test");
	ck_assert_int_eq(r.outcome.kind, OUTCOME_TEMPFAIL);
	ck_assert_ptr_nonnull(strstr(r.outcome.reason, "domain_probe_rate"));
	advance(15 * SECOND);
	/* the window turns in 15 s, within its budget: it waits */
	struct verify_ticket *d = submit("d@win.test");
	struct verify_ticket *e = submit("e@win.test");
	ck_assert_int_eq(F.nprobes, 2);
	ck_assert(!answered(d, &r));
	advance(15 * SECOND);
	ck_assert_int_eq(F.nprobes, 4); /* the timer started both */
	finish("d@win.test", outcome(OUTCOME_INVALID, STAGE_RCPT, 0));
	finish("e@win.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	ck_assert_int_eq(must_answer(d).outcome.kind, OUTCOME_INVALID);
	ck_assert_int_eq(must_answer(e).outcome.kind, OUTCOME_VALID);
	ck_assert_int_eq(vcore_probe_objects(core), 0);
	ck_assert_int_eq(live_timers(), 0);
	vcore_release(a);
	vcore_release(b);
	vcore_release(d);
	vcore_release(e);
}
END_TEST

/* domain_probe_rate across the fleet (vcore_engine.fleet_rate): the other
 * hosts' probes count; a probe the fleet's budget refuses waits for the
 * fleet's minute to turn (the wall clock's) within its budget, or is
 * answered tempfail at once; each started probe is counted for the fleet. */
START_TEST(fleet_domain_rate)
{
	engine_fleet = true;
	start("domain_probe_limit = 5\ndomain_probe_rate = 4\nverify_budget = 20s\n");
	FL.others = 2; /* two by other hosts this minute */
	struct verify_ticket *a = submit("a@fleet.test"), *b = submit("b@fleet.test");
	ck_assert_int_eq(F.nprobes, 2);
	ck_assert_uint_eq(FL.took, 2);
	finish("a@fleet.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	finish("b@fleet.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	/* our own count is 2 of 4, but the fleet's is 4: refused */
	int64_t to_turn = 60000 - F.wall % 60000;
	ck_assert_int_gt(to_turn, 20 * SECOND); /* T0: the minute turns after the 20 s budget */
	struct verify_result r = ask("c@fleet.test");
	ck_assert_int_eq(r.outcome.kind, OUTCOME_TEMPFAIL);
	ck_assert_ptr_nonnull(strstr(r.outcome.reason, "domain_probe_rate"));
	ck_assert_int_eq(F.nprobes, 2);
	advance(to_turn - 10 * SECOND); /* the fleet's minute turns in 10 s, within the budget */
	struct verify_ticket *d = submit("d@fleet.test");
	ck_assert_int_eq(F.nprobes, 2);
	ck_assert(!answered(d, &r));
	advance(60000 - F.wall % 60000); /* the wall-clock minute turns: the timer starts it */
	ck_assert_int_eq(F.nprobes, 3);
	ck_assert_uint_eq(FL.took, 1);
	finish("d@fleet.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	ck_assert_int_eq(must_answer(d).outcome.kind, OUTCOME_VALID);
	vcore_release(a);
	vcore_release(b);
	vcore_release(d);
	ck_assert_int_eq(vcore_probe_objects(core), 0);
}
END_TEST

/* client_probe_rate across the fleet (vcore_engine.fleet_client_rate): the
 * other hosts' probes for the client count; our own count still holds */
START_TEST(fleet_client_rate)
{
	engine_fleet = true;
	start("client_probe_rate = 3\n");
	FL.client_others = 2;
	struct addr a = parse("x@fc0.test");
	struct verify_ticket *t = vcore_submit(core, &a, "192.0.2.1");
	pump();
	ck_assert_int_eq(live_count(), 1);
	ck_assert_uint_eq(FL.client_took, 1);
	a = parse("x@fc1.test");
	struct verify_ticket *over = vcore_submit(core, &a, "192.0.2.1");
	pump();
	ck_assert_int_eq(live_count(), 1); /* 1 of ours, 3 for the fleet: refused */
	struct verify_result r = must_answer(over);
	ck_assert_int_eq(r.outcome.kind, OUTCOME_TEMPFAIL);
	ck_assert_ptr_nonnull(strstr(r.outcome.reason, "client_probe_rate"));
	vcore_release(over);
	/* the fleet's count is not asked while ours refuses; ours still counts */
	FL.client_others = 0;
	for (int i = 2; i <= 3; i++) {
		char text[32];
		snprintf(text, sizeof(text), "x@fc%d.test", i);
		a = parse(text);
		struct verify_ticket *more = vcore_submit(core, &a, "192.0.2.1");
		pump();
		ck_assert_int_eq(live_count(), i);
		vcore_release(more);
	}
	a = parse("x@fc9.test");
	over = vcore_submit(core, &a, "192.0.2.1");
	pump();
	ck_assert_int_eq(must_answer(over).outcome.kind, OUTCOME_TEMPFAIL);
	ck_assert_uint_eq(FL.client_took, 3);
	vcore_release(over);
	vcore_release(t);
}
END_TEST

/* A probe waiting for a place is answered when its budget ends, though no
 * place frees (a slow domain), and the answer hands the turn on. */
START_TEST(waiting_probe_answered_at_its_deadline)
{
	start("domain_probe_limit = 1\nverify_budget = 8s\n");
	struct verify_ticket *a = submit("a@slow.test");
	advance(4 * SECOND);
	struct verify_ticket *b = submit("b@slow.test");
	struct verify_ticket *b2 = submit("b@slow.test"); /* joins b's probe */
	struct verify_result r;
	advance(7 * SECOND);
	ck_assert(!answered(b, &r));
	advance(1 * SECOND);
	r = must_answer(b);
	ck_assert_int_eq(must_answer(b2).outcome.kind, OUTCOME_TEMPFAIL);
	/* Two requests were refused by the budget (one probe): the count is of
	 * requests, as verify.h and the metric say. */
	ck_assert_int_eq(stats().over_budget, 2);
	vcore_release(b2);
	ck_assert_int_eq(r.outcome.kind, OUTCOME_TEMPFAIL);
	ck_assert_int_eq(r.elapsed_ms, 8 * SECOND);
	ck_assert_ptr_nonnull(strstr(r.outcome.reason, "verify_budget"));
	ck_assert(!has_record("a:b@slow.test"));
	ck_assert_int_eq(vcore_probe_objects(core), 1);  /* a only */
	struct verify_ticket *c = submit("c@slow.test"); /* waits behind a, not a stuck b */
	finish("a@slow.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	ck_assert_int_ge(live("c@slow.test"), 0);
	finish("c@slow.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	ck_assert_int_eq(must_answer(c).outcome.kind, OUTCOME_VALID);
	ck_assert_int_eq(vcore_probe_objects(core), 0);
	vcore_release(a);
	vcore_release(b);
	vcore_release(c);
}
END_TEST

/* client_probe_rate: a client over budget is answered from the cache, or
 * by joining a probe in flight, else tempfail without a probe; other
 * clients, and requests without a client, are not limited by it. */
START_TEST(client_budget)
{
	start("client_probe_rate = 3\n");
	probe_once("known@c1.test", outcome(OUTCOME_INVALID, STAGE_RCPT, 0));
	struct verify_ticket *t[3];
	char text[64];
	struct addr a;
	for (int i = 0; i < 3; i++) {
		snprintf(text, sizeof(text), "x@d%d.test", i);
		a = parse(text);
		t[i] = vcore_submit(core, &a, "192.0.2.1");
		pump();
	}
	ck_assert_int_eq(live_count(), 3);
	a = parse("y@d9.test");
	struct verify_ticket *over = vcore_submit(core, &a, "192.0.2.1");
	pump();
	ck_assert_int_eq(live_count(), 3);
	struct verify_result r = must_answer(over);
	ck_assert_int_eq(r.outcome.kind, OUTCOME_TEMPFAIL);
	ck_assert_ptr_nonnull(strstr(r.outcome.reason, "client_probe_rate"));
	vcore_release(over);
	ck_assert(!has_record("a:y@d9.test"));
	/* a cached answer is still served: it costs no probe */
	a = parse("known@c1.test");
	struct verify_ticket *cached = vcore_submit(core, &a, "192.0.2.1");
	ck_assert_int_eq(must_answer(cached).outcome.kind, OUTCOME_INVALID);
	vcore_release(cached);
	/* joining a probe in flight costs none either */
	a = parse("x@d0.test");
	struct verify_ticket *joined = vcore_submit(core, &a, "192.0.2.1");
	ck_assert(!answered(joined, &r));
	/* another client, and no client */
	a = parse("z@d9.test");
	struct verify_ticket *other = vcore_submit(core, &a, "192.0.2.2");
	pump();
	a = parse("w@d9.test");
	struct verify_ticket *none = vcore_submit(core, &a, NULL);
	pump();
	ck_assert_int_eq(live_count(), 5);
	for (int i = 0; i < 3; i++) {
		snprintf(text, sizeof(text), "x@d%d.test", i);
		finish(text, outcome(OUTCOME_VALID, STAGE_RCPT, 0));
		vcore_release(t[i]);
	}
	ck_assert_int_eq(must_answer(joined).outcome.kind, OUTCOME_VALID);
	vcore_release(joined);
	finish("z@d9.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	finish("w@d9.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	vcore_release(other);
	vcore_release(none);
	ck_assert_int_eq(stats().over_budget, 1);
	/* the next minute, the client may probe again */
	advance(MINUTE);
	vcore_tidy(core);
	a = parse("y@d9.test");
	struct verify_ticket *later = vcore_submit(core, &a, "192.0.2.1");
	pump();
	ck_assert_int_ge(live("y@d9.test"), 0);
	finish("y@d9.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	ck_assert_int_eq(must_answer(later).outcome.kind, OUTCOME_VALID);
	vcore_release(later);
}
END_TEST

/* domain_invalid_limit: that many invalid addresses of a domain within a
 * minute pause probes of its new addresses for 5 minutes (tempfail, not
 * cached); cached answers are still served; other domains go on. */
START_TEST(domain_invalid_budget)
{
	start("domain_invalid_limit = 3\n");
	probe_once("v@forged.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	for (int i = 0; i < 3; i++) {
		char text[64];
		snprintf(text, sizeof(text), "bad%d@forged.test", i);
		ck_assert_int_eq(probe_once(text, outcome(OUTCOME_INVALID, STAGE_RCPT, 0)).outcome.kind,
		                 OUTCOME_INVALID);
		advance(10 * SECOND);
	}
	int before = F.nprobes;
	struct verify_result r = ask("new@forged.test");
	ck_assert_int_eq(r.outcome.kind, OUTCOME_TEMPFAIL);
	ck_assert_ptr_nonnull(strstr(r.outcome.reason, "domain_invalid_limit"));
	ck_assert_int_eq(F.nprobes, before);
	ck_assert(!has_record("a:new@forged.test"));
	ck_assert_int_eq(ask("v@forged.test").outcome.kind, OUTCOME_VALID);      /* cached */
	ck_assert_int_eq(ask("bad0@forged.test").outcome.kind, OUTCOME_INVALID); /* cached */
	ck_assert_int_eq(probe_once("x@other.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0)).outcome.kind,
	                 OUTCOME_VALID);
	advance(4 * MINUTE);
	vcore_tidy(core); /* a paused domain is not forgotten */
	ck_assert_int_eq(ask("new2@forged.test").outcome.kind, OUTCOME_TEMPFAIL);
	advance(MINUTE);
	ck_assert_int_eq(probe_once("new@forged.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0)).outcome.kind,
	                 OUTCOME_VALID);
	ck_assert_int_eq(vcore_probe_objects(core), 0);
}
END_TEST

/* max_probes_in_flight, and its lowering (the fd limit): a probe that
 * finds the cap reached waits in its domain's line and starts when any
 * probe ends, never answered at once */
START_TEST(in_flight_budget)
{
	start("max_probes_in_flight = 3\nverify_budget = 8s\n");
	vcore_limit_in_flight(core, 2);
	vcore_limit_in_flight(core, 10); /* never raised above the directive */
	struct verify_ticket *a = submit("a@g1.test"), *b = submit("b@g2.test");
	ck_assert_int_eq(live_count(), 2);
	struct verify_ticket *c = submit("c@g3.test");
	struct verify_result r;
	ck_assert_int_eq(live_count(), 2);
	ck_assert(!answered(c, &r));
	/* What the metrics show as in flight is what the cap counts: the
	 * waiting one is held, not running. */
	ck_assert_int_eq(stats().running, 2);
	ck_assert_int_eq(stats().in_flight, 3);
	advance(2 * SECOND);
	ck_assert(!answered(c, &r));
	finish("a@g1.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	ck_assert_int_ge(live("c@g3.test"), 0); /* the freed place went to it */
	ck_assert_int_eq(live_count(), 2);
	finish("c@g3.test", outcome(OUTCOME_INVALID, STAGE_RCPT, 0));
	r = must_answer(c);
	ck_assert_int_eq(r.outcome.kind, OUTCOME_INVALID);
	ck_assert_int_eq(r.elapsed_ms, 2 * SECOND);
	finish("b@g2.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	vcore_release(a);
	vcore_release(b);
	vcore_release(c);
	ck_assert_int_eq(vcore_probe_objects(core), 0);
	ck_assert_int_eq(stats().running, 0);
	ck_assert_int_eq(stats().over_budget, 0);
	ck_assert_int_eq(live_timers(), 0);
}
END_TEST

/* A probe waiting for the global cap is answered tempfail (naming it, not
 * cached, never a reject) when its verify_budget runs out first; the line
 * behind it goes on waiting and starts when a place frees. */
START_TEST(in_flight_wait_bounded_by_budget)
{
	start("max_probes_in_flight = 1\nverify_budget = 8s\n");
	struct verify_ticket *a = submit("a@h1.test");
	advance(4 * SECOND);
	struct verify_ticket *b = submit("b@h2.test");
	struct verify_result r;
	advance(7 * SECOND);
	ck_assert(!answered(b, &r));
	struct verify_ticket *c = submit("c@h3.test");
	advance(1 * SECOND);
	r = must_answer(b);
	ck_assert_int_eq(r.outcome.kind, OUTCOME_TEMPFAIL);
	ck_assert_int_eq(r.elapsed_ms, 8 * SECOND);
	ck_assert_ptr_nonnull(strstr(r.outcome.reason, "max_probes_in_flight"));
	ck_assert(!has_record("a:b@h2.test"));
	ck_assert(!answered(c, &r));
	ck_assert_int_eq(live_count(), 1);
	finish("a@h1.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	ck_assert_int_ge(live("c@h3.test"), 0);
	finish("c@h3.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	ck_assert_int_eq(must_answer(c).outcome.kind, OUTCOME_VALID);
	ck_assert_int_eq(stats().over_budget, 1);
	ck_assert_int_eq(vcore_probe_objects(core), 0);
	ck_assert_int_eq(live_timers(), 0);
	vcore_release(a);
	vcore_release(b);
	vcore_release(c);
}
END_TEST

/* Every line behind the global cap drains: 600 senders at 200 domains
 * (one every 5 ms) with a cap of 10 and probes of 300 ms; every ticket is
 * answered by its real probe (none waited past its budget: the cap's
 * throughput is ample), at most 10 ran at once, places went to the lines
 * in the order they waited, and nothing is left. */
#define CAP_SENDERS 600
START_TEST(in_flight_lines_drain)
{
	start("max_probes_in_flight = 10\nverify_budget = 20s\ndomain_probe_limit = 2\n"
	      "domain_probe_rate = 0\ndomain_invalid_limit = 0\n");
	static struct verify_ticket *t[CAP_SENDERS];
	char text[64];
	int max_live = 0;
	for (int i = 0; i < CAP_SENDERS || live_count() > 0; i++) {
		if (i < CAP_SENDERS) {
			snprintf(text, sizeof(text), "u%d@d%d.test", i, i % 200);
			struct addr a = parse(text);
			t[i] = vcore_submit(core, &a, NULL);
			ck_assert_ptr_nonnull(t[i]);
			pump();
		}
		advance(5);
		for (int k = 0; k < F.nprobes; k++)
			if (F.probes[k].live && F.mono - F.probes[k].started >= 300) {
				struct outcome o = outcome(OUTCOME_VALID, STAGE_RCPT, 0);
				F.probes[k].live = false;
				F.probes[k].done(F.probes[k].arg, &o);
				pump();
			}
		if (live_count() > max_live)
			max_live = live_count();
		ck_assert_int_lt(i, 100000);
	}
	ck_assert_int_eq(max_live, 10);
	ck_assert_int_eq(F.nprobes, CAP_SENDERS);
	for (int i = 0; i < CAP_SENDERS; i++) {
		struct verify_result r = must_answer(t[i]);
		ck_assert_int_eq(r.outcome.kind, OUTCOME_VALID);
		ck_assert_int_le(r.elapsed_ms, 20 * SECOND);
		vcore_release(t[i]);
	}
	/* the first domain to wait got the first place: starts are in the
	 * order the senders came (one line per domain, FIFO among lines) */
	for (int k = 1; k < F.nprobes; k++) {
		int prev = atoi(F.probes[k - 1].address.normalized + 1);
		int cur = atoi(F.probes[k].address.normalized + 1);
		ck_assert_int_lt(prev, cur);
	}
	ck_assert_int_eq(stats().over_budget, 0);
	ck_assert_int_eq(vcore_probe_objects(core), 0);
	ck_assert_int_eq(live_timers(), 0);
}
END_TEST

/* ---- the domain record: one resolution, kept for its TTL ---- */

/* live_lookups - resolutions pending, of domain (NULL: any) */
static int live_lookups(const char *domain)
{
	int n = 0;
	for (int i = 0; i < F.nlookups; i++)
		n += F.lookups[i].live && (domain == NULL || strcmp(F.lookups[i].domain, domain) == 0);
	return n;
}

/* resolve - the pending resolution of domain answers: status, ttl_ms, and
 * for DNS_OK hosts mx1.DOMAIN (pref 10, 192.0.2.1) and mx2.DOMAIN (pref
 * 10, 192.0.2.2, 2001:db8::2) */
static void resolve(const char *domain, enum dns_status status, int64_t ttl_ms)
{
	int i = F.nlookups - 1;
	while (i >= 0 && !(F.lookups[i].live && strcmp(F.lookups[i].domain, domain) == 0))
		i--;
	ck_assert_msg(i >= 0, "no pending resolution of %s", domain);
	struct dns_host hosts[2];
	memset(hosts, 0, sizeof(hosts));
	struct dns_answer a = {.status = status, .ttl_ms = ttl_ms, .hosts = hosts};
	snprintf(a.detail, sizeof(a.detail), "test answer %d", (int)status);
	if (status == DNS_OK) {
		a.host_count = 2;
		for (int h = 0; h < 2; h++) {
			snprintf(hosts[h].name, sizeof(hosts[h].name), "mx%d.%s", h + 1, domain);
			hosts[h].preference = 10;
			struct sockaddr_in *sin = (struct sockaddr_in *)&hosts[h].addresses[0];
			sin->sin_family = AF_INET;
			inet_pton(AF_INET, h == 0 ? "192.0.2.1" : "192.0.2.2", &sin->sin_addr);
			hosts[h].address_count = 1;
		}
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&hosts[1].addresses[1];
		sin6->sin6_family = AF_INET6;
		inet_pton(AF_INET6, "2001:db8::2", &sin6->sin6_addr);
		hosts[1].address_count = 2;
	}
	F.lookups[i].live = false;
	F.lookups[i].done(F.lookups[i].arg, &a);
	pump();
}

/* finish_all - every live probe ends valid */
static void finish_all(void)
{
	for (int i = 0; i < F.nprobes; i++)
		if (F.probes[i].live) {
			struct outcome o = outcome(OUTCOME_VALID, STAGE_RCPT, 0);
			F.probes[i].live = false;
			F.probes[i].done(F.probes[i].arg, &o);
			pump();
		}
}

/* 20 concurrent probes of one new domain: one resolution, whatever
 * domain_probe_limit holds back; every probe gets its own copy of the
 * answer (both hosts, their addresses, equal preferences in an order of
 * its own), those that start later get the kept one, and no probe starts
 * before the answer */
START_TEST(one_resolution_per_domain)
{
	engine_resolves = true;
	start("domain_probe_limit = 5\ndomain_probe_rate = 0\ndns_cache_time = 30s\n");
	struct verify_ticket *t[20];
	char text[64];
	for (int i = 0; i < 20; i++) {
		snprintf(text, sizeof(text), "u%d@new.test", i);
		t[i] = submit(text);
	}
	ck_assert_int_eq(F.nlookups, 1);
	ck_assert_str_eq(F.lookups[0].domain, "new.test");
	ck_assert_int_eq(F.nprobes, 0); /* they wait for the answer, their places taken */
	resolve("new.test", DNS_OK, 60 * SECOND);
	ck_assert_int_eq(F.nprobes, 5);
	bool first_seen[2] = {false, false};
	for (int round = 0; round < 4; round++)
		finish_all();
	ck_assert_int_eq(F.nprobes, 20);
	ck_assert_int_eq(F.nlookups, 1);
	for (int i = 0; i < F.nprobes; i++) {
		const struct dns_answer *mx = F.probes[i].hints.mx;
		ck_assert_ptr_nonnull(mx);
		ck_assert_int_eq(mx->status, DNS_OK);
		ck_assert_uint_eq(mx->host_count, 2);
		ck_assert_int_gt(mx->ttl_ms, 0);
		ck_assert_int_le(mx->ttl_ms, 60 * SECOND);
		/* first: 0 if mx1 comes first, 1 if mx2 does */
		int first = strcmp(mx->hosts[0].name, "mx1.new.test") == 0 ? 0 : 1;
		first_seen[first] = true;
		ck_assert_str_eq(mx->hosts[0].name, (first == 0 ? "mx1.new.test" : "mx2.new.test"));
		ck_assert_str_eq(mx->hosts[1].name, (first == 0 ? "mx2.new.test" : "mx1.new.test"));
		const struct dns_host *two = &mx->hosts[first == 0 ? 1 : 0]; /* mx2: two addresses */
		ck_assert_uint_eq(two->address_count, 2);
		ck_assert_int_eq(two->addresses[0].ss_family, AF_INET); /* IPv4 first */
		ck_assert_int_eq(two->addresses[1].ss_family, AF_INET6);
		char buf[64];
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&two->addresses[1])->sin6_addr, buf,
		          sizeof(buf));
		ck_assert_str_eq(buf, "2001:db8::2");
	}
	/* 20 probes, 2 equal hosts: both orders, but for a 2^-19 chance */
	ck_assert(first_seen[0] && first_seen[1]);
	for (int i = 0; i < 20; i++) {
		ck_assert_int_eq(must_answer(t[i]).outcome.kind, OUTCOME_VALID);
		vcore_release(t[i]);
	}
	ck_assert_int_eq(vcore_probe_objects(core), 0);
}
END_TEST

/* A kept answer lives no longer than its TTL (a negative TTL of 1 s with
 * dns_cache_time 1h: a domain that starts to exist is seen), and is handed
 * out with what is left of it */
START_TEST(kept_answer_ends_with_its_ttl)
{
	engine_resolves = true;
	start("dns_cache_time = 1h\n");
	struct verify_ticket *a = submit("a@grow.test");
	resolve("grow.test", DNS_NXDOMAIN, 1 * SECOND);
	ck_assert_int_eq(F.probes[0].hints.mx->status, DNS_NXDOMAIN);
	ck_assert_int_eq(F.probes[0].hints.mx->ttl_ms, 1 * SECOND);
	finish("a@grow.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	advance(400);
	struct verify_ticket *b = submit("b@grow.test");
	ck_assert_int_eq(F.nlookups, 1); /* kept */
	ck_assert_int_eq(F.nprobes, 2);
	ck_assert_int_eq(F.probes[1].hints.mx->status, DNS_NXDOMAIN);
	ck_assert_int_eq(F.probes[1].hints.mx->ttl_ms, 600); /* what is left */
	finish("b@grow.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	advance(1100); /* 1.5 s after the answer */
	struct verify_ticket *c = submit("c@grow.test");
	ck_assert_int_eq(F.nlookups, 2); /* asked again */
	ck_assert_int_eq(F.nprobes, 2);
	resolve("grow.test", DNS_OK, 300 * SECOND);
	ck_assert_int_eq(F.probes[2].hints.mx->status, DNS_OK);
	finish("c@grow.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	ck_assert_int_eq(must_answer(c).outcome.kind, OUTCOME_VALID);
	/* the control: a negative TTL of 30 s is still kept 1.5 s later */
	struct verify_ticket *d = submit("d@stay.test");
	resolve("stay.test", DNS_NXDOMAIN, 30 * SECOND);
	finish("d@stay.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	advance(1500);
	struct verify_ticket *e = submit("e@stay.test");
	ck_assert_int_eq(F.nlookups, 3);
	ck_assert_int_eq(F.probes[4].hints.mx->ttl_ms, 28500);
	finish("e@stay.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	/* a TTL of 0 (reported as 1 ms) is not kept past now */
	struct verify_ticket *f = submit("f@zero.test");
	resolve("zero.test", DNS_NXDOMAIN, 1);
	finish("f@zero.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	advance(1);
	struct verify_ticket *g = submit("g@zero.test");
	ck_assert_int_eq(live_lookups("zero.test"), 1);
	resolve("zero.test", DNS_NXDOMAIN, 1);
	finish("g@zero.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	struct verify_ticket *all[] = {a, b, c, d, e, f, g};
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		vcore_release(all[i]);
	ck_assert_int_eq(vcore_probe_objects(core), 0);
}
END_TEST

/* dns_cache_time caps how long an answer is kept, whatever its TTL; the
 * answer of unknown TTL (0) is kept dns_cache_time */
START_TEST(kept_answer_capped_by_dns_cache_time)
{
	engine_resolves = true;
	start("dns_cache_time = 2s\n");
	struct verify_ticket *a = submit("a@long.test");
	resolve("long.test", DNS_OK, HOUR);
	finish("a@long.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	struct verify_ticket *b = submit("b@unknown.test");
	resolve("unknown.test", DNS_NXDOMAIN, 0);
	ck_assert_int_eq(F.probes[1].hints.mx->ttl_ms, 0); /* unknown stays unknown */
	finish("b@unknown.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	advance(1900);
	struct verify_ticket *c = submit("c@long.test"), *d = submit("d@unknown.test");
	ck_assert_int_eq(F.nlookups, 2);
	finish("c@long.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	finish("d@unknown.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	advance(200);
	struct verify_ticket *e = submit("e@long.test"), *f = submit("f@unknown.test");
	ck_assert_int_eq(F.nlookups, 4);
	resolve("long.test", DNS_OK, HOUR);
	resolve("unknown.test", DNS_NXDOMAIN, 0);
	finish("e@long.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	finish("f@unknown.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	struct verify_ticket *all[] = {a, b, c, d, e, f};
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		vcore_release(all[i]);
}
END_TEST

/* A temporary failure is never kept, but the probes that waited for it
 * all get it (they asked at the same moment); with dns_cache_time = 0
 * nothing is kept, and concurrent probes still share one resolution */
START_TEST(tempfail_shared_not_kept)
{
	engine_resolves = true;
	start("dns_cache_time = 0\n");
	struct verify_ticket *t[3] = {submit("a@tf.test"), submit("b@tf.test"), submit("c@tf.test")};
	ck_assert_int_eq(F.nlookups, 1);
	resolve("tf.test", DNS_TEMPFAIL, 0);
	ck_assert_int_eq(F.nprobes, 3);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(F.probes[i].hints.mx->status, DNS_TEMPFAIL);
	finish_all();
	struct verify_ticket *d = submit("d@tf.test");
	ck_assert_int_eq(F.nlookups, 2); /* not kept */
	resolve("tf.test", DNS_OK, HOUR);
	finish_all();
	struct verify_ticket *e = submit("e@tf.test");
	ck_assert_int_eq(F.nlookups, 3); /* dns_cache_time 0: OK not kept either */
	resolve("tf.test", DNS_OK, HOUR);
	finish_all();
	for (int i = 0; i < 3; i++)
		vcore_release(t[i]);
	vcore_release(d);
	vcore_release(e);
	ck_assert_int_eq(vcore_probe_objects(core), 0);
}
END_TEST

/* Stopping with a resolution pending cancels it and answers its probes'
 * tickets; address literals are never resolved by the core */
START_TEST(free_cancels_resolution)
{
	engine_resolves = true;
	start("");
	struct verify_ticket *a = submit("a@pending.test");
	struct verify_ticket *lit = submit("x@[192.0.2.7]");
	ck_assert_int_eq(F.nlookups, 1);
	ck_assert_int_eq(F.nprobes, 1); /* the literal started at once, unresolved */
	ck_assert_ptr_null(F.probes[0].hints.mx);
	vcore_free(core);
	core = NULL;
	ck_assert(F.lookups[0].cancelled);
	struct verify_result r;
	ck_assert(vcore_wait(a, F.mono, &r));
	ck_assert_str_eq(r.outcome.reason, "vemilter is stopping");
	vcore_release(a);
	vcore_release(lit);
}
END_TEST

/* The domain table is bounded: with room for 50 records, 900 domains
 * probed one after another leave at most 50, the least recently used idle
 * ones evicted; a record in use (a running probe, a line waiting behind
 * it) is never evicted: the line still starts when the probe ends. Once
 * everything is idle and expired, tidy leaves none. */
START_TEST(domain_table_bounded)
{
	engine_resolves = true;
	start("domain_probe_limit = 1\ndomain_probe_rate = 0\ndomain_invalid_limit = 0\n"
	      "dns_cache_time = 30s\nverify_budget = 20s\n");
	vcore_set_domains_max(core, 50);
	struct verify_ticket *busy = submit("a@busy.test");
	resolve("busy.test", DNS_OK, HOUR);
	struct verify_ticket *behind = submit("b@busy.test"); /* waits for busy's place */
	ck_assert_int_eq(live_count(), 1);
	char text[64];
	size_t most = 0;
	for (int i = 0; i < 900; i++) {
		snprintf(text, sizeof(text), "u@d%d.test", i);
		struct verify_ticket *t = submit(text);
		snprintf(text, sizeof(text), "d%d.test", i);
		resolve(text, DNS_NXDOMAIN, MINUTE);
		snprintf(text, sizeof(text), "u@d%d.test", i);
		finish(text, outcome(OUTCOME_VALID, STAGE_RCPT, 0));
		vcore_release(t);
		if (vcore_domain_records(core) > most)
			most = vcore_domain_records(core);
		advance(10);
	}
	ck_assert_uint_le(most, 50);
	ck_assert_uint_ge(most, 49);
	/* the busy record survived: its line starts when its probe ends, with
	 * its kept answer (no new resolution) */
	int lookups = F.nlookups;
	finish("a@busy.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	ck_assert_int_ge(live("b@busy.test"), 0);
	ck_assert_int_eq(F.nlookups, lookups);
	finish("b@busy.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	ck_assert_int_eq(must_answer(behind).outcome.kind, OUTCOME_VALID);
	/* an evicted domain is simply resolved again */
	struct verify_ticket *again = submit("v@d0.test");
	ck_assert_int_eq(live_lookups("d0.test"), 1);
	resolve("d0.test", DNS_NXDOMAIN, MINUTE);
	finish("v@d0.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	advance(2 * MINUTE);
	vcore_tidy(core);
	ck_assert_uint_eq(vcore_domain_records(core), 0);
	vcore_release(busy);
	vcore_release(behind);
	vcore_release(again);
	ck_assert_int_eq(vcore_probe_objects(core), 0);
}
END_TEST

/* ---- stopping ---- */

START_TEST(free_cancels_and_answers)
{
	start("");
	struct verify_ticket *t[3] = {submit("a@stop.test"), submit("b@stop.test"), submit("a@stop.test")};
	probe_once("g@grey.test", outcome(OUTCOME_TEMPFAIL, STAGE_RCPT, OUTCOME_F_GREYLIST));
	ck_assert_int_eq(live_count(), 2);
	vcore_free(core);
	core = NULL;
	ck_assert_int_eq(live_count(), 0);
	ck_assert(F.probes[0].cancelled && F.probes[1].cancelled);
	ck_assert_int_eq(live_timers(), 0);
	for (int i = 0; i < 3; i++) {
		struct verify_result r;
		ck_assert(vcore_wait(t[i], F.mono, &r)); /* tickets outlive the core */
		ck_assert_int_eq(r.outcome.kind, OUTCOME_TEMPFAIL);
		ck_assert_str_eq(r.outcome.reason, "vemilter is stopping");
		vcore_release(t[i]);
	}
}
END_TEST

START_TEST(no_cache_still_shares)
{
	char text[1024];
	snprintf(text, sizeof(text), "%s", base_conf);
	conf = conf_load_text("test", text, NULL, NULL);
	memset(&F, 0, sizeof(F));
	F.wall = T0;
	const struct vcore_engine eng = {
	        NULL,      fake_probe_start, fake_probe_cancel, fake_timer_start, fake_timer_cancel,
	        fake_wake, fake_wall,        fake_mono};
	core = vcore_new(conf, NULL, &eng);
	struct verify_ticket *a = submit("a@ok.test"), *b = submit("a@ok.test");
	ck_assert_int_eq(F.nprobes, 1);
	finish("a@ok.test", outcome(OUTCOME_TEMPFAIL, STAGE_RCPT, OUTCOME_F_GREYLIST));
	ck_assert_int_eq(must_answer(a).deferred_since_ms, F.wall);
	ck_assert_int_eq(live_timers(), 0); /* nothing to fill: no re-probe */
	vcore_release(a);
	vcore_release(b);
	probe_once("a@ok.test", outcome(OUTCOME_VALID, STAGE_RCPT, 0));
	ck_assert_int_eq(F.nprobes, 2);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("vcore");
	TCase *tc = tcase_create("vcore");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, shared_probe_then_cached);
	tcase_add_test(tc, notify_once_on_answer);
	tcase_add_test(tc, waiter_woken_by_answer);
	tcase_add_test(tc, domain_limits);
	tcase_add_test(tc, our_own_limit_is_not_cached);
	tcase_add_test(tc, domain_place_held_until_connections_close);
	tcase_add_test(tc, refresh_after_waiting_in_line);
	tcase_add_test(tc, refresh_storm_throttled);
	tcase_add_test(tc, stale_domain_fact_refreshed_once);
	tcase_add_test(tc, stale_negative_not_served);
	tcase_add_test(tc, stale_no_domain_fact_not_served);
	tcase_add_test(tc, address_no_domain_after_contrary_evidence);
	tcase_add_test(tc, dns_ttl_caps_a_fact);
	tcase_add_test(tc, contrary_evidence_clears_facts);
	tcase_add_test(tc, protocol_and_loop_never_domain_facts);
	tcase_add_test(tc, deferral_start_kept);
	tcase_add_test(tc, deferral_from_domain_fact);
	tcase_add_test(tc, deferral_known_at_submit);
	tcase_add_test(tc, greylist_reprobes);
	tcase_add_test(tc, greylist_reprobes_stop_without_defer_limit);
	tcase_add_test(tc, greylist_reprobe_moot_after_an_answer);
	tcase_add_test(tc, greylist_timers_bounded_and_cancelled);
	tcase_add_test(tc, probe_hints);
	tcase_add_test(tc, late_facts);
	tcase_add_test(tc, retraction_takes_back_an_answer);
	tcase_add_test(tc, tagged_stable_form);
	tcase_add_test(tc, tagged_concurrent_share_one_probe);
	tcase_add_test(tc, tagged_senders_off);
	tcase_add_test(tc, free_cancels_and_answers);
	tcase_add_test(tc, no_cache_still_shares);
	tcase_add_test(tc, every_line_drains);
	tcase_add_test(tc, rate_window_timer_starts_the_line);
	tcase_add_test(tc, fleet_domain_rate);
	tcase_add_test(tc, fleet_client_rate);
	tcase_add_test(tc, waiting_probe_answered_at_its_deadline);
	tcase_add_test(tc, client_budget);
	tcase_add_test(tc, domain_invalid_budget);
	tcase_add_test(tc, in_flight_budget);
	tcase_add_test(tc, in_flight_wait_bounded_by_budget);
	tcase_add_test(tc, in_flight_lines_drain);
	tcase_add_test(tc, one_resolution_per_domain);
	tcase_add_test(tc, kept_answer_ends_with_its_ttl);
	tcase_add_test(tc, kept_answer_capped_by_dns_cache_time);
	tcase_add_test(tc, tempfail_shared_not_kept);
	tcase_add_test(tc, free_cancels_resolution);
	tcase_add_test(tc, domain_table_bounded);
	tcase_add_test(tc, no_cache_no_deferral);
	tcase_add_test(tc, shared_fetch_answers_without_probe);
	tcase_add_test(tc, shared_fetch_answers_tagged_joiner);
	tcase_add_test(tc, shared_lease_ours_probes_then_releases);
	tcase_add_test(tc, shared_lease_ours_looks_again);
	tcase_add_test(tc, shared_failure_probes_at_once);
	tcase_add_test(tc, shared_refresh_once_for_the_fleet);
	tcase_add_test(tc, shared_lease_held_waits_for_the_answer);
	tcase_add_test(tc, shared_lease_expired_then_ours);
	tcase_add_test(tc, shared_wait_bounded);
	tcase_add_test(tc, shared_free_cancels);
	suite_add_tcase(s, tc);
	return unit_run(s);
}
