/*
 * verify.c - the verifier in production: the engine thread, and vcore
 * wired to it.
 *
 * Owns the engine (event loop, resolver, TLS), the thread that runs its
 * loop, the cache handle and the core (vcore.c, where every rule of
 * verify.h lives). The core reaches the engine only through struct
 * vcore_engine, implemented here: probes are callouts (callout_start /
 * callout_cancel on the engine's probe_env, whose on_fact feeds late domain
 * facts back to the core), a domain's resolution is dns_lookup_mx on the
 * engine's resolver (the core shares it among the domain's probes and
 * keeps the answer), timers are one-shot libevent timers, wake makes
 * a libevent event active (libevent is set up for threads, so milter
 * threads may call it), the clocks are clock.h's.
 *
 * The engine thread runs the loop until verifier_free() breaks it; the
 * sweep (cache) and tidy (limiter slots) timers run on it. Milter threads
 * only submit, wait and release (vcore's mutex and condition variable).
 *
 * Self-health (health.h, unless self_health = no): every probe outcome is
 * fed to the health window on the engine thread (vcore_engine.probe_result);
 * a change of state is logged once and published in an atomic flag that
 * milter threads read (verify_unhealthy). At start-up a helo_name that
 * does not resolve is warned about, from a thread of its own so a slow
 * resolver never delays the start.
 *
 * With a Redis cache (cache = redis://...): the cache handle is the local
 * LMDB tier (cache_fallback), and the verifier also owns the shared client
 * (shared.h) on the engine loop: every local write is mirrored to it
 * (cache_set_mirror), and the core's shared_* hooks fetch an address's
 * records from it and take its lease before a probe. The circuit breaker
 * is shared too: what ours notes about an MX address (blocked, backed off)
 * is published (probe_env.on_breaker), and what other hosts' noted is put
 * into our table (on_fleet_host) with what is left of its window; a
 * refusal only when it was met from an address of ours (the record names
 * it: many refusals are about the prober's address). A
 * learned refusal is used as one of ours (its reason names the fleet host
 * it came from): the probe takes it as
 * "blocked", our failure class, never a reject nor a record against the
 * sender's domain.
 *
 * Descriptors: probes get a share of the open-file limit (fd_share), so
 * the milter side (one descriptor per MTA session) always has its own. A
 * probe that still finds no descriptor (or memory) for a socket ends
 * tempfail, flagged as our failure (classify_outcome_ours): never cached,
 * no health signal, and a warning at most once a minute.
 */
#include "verify.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache.h"
#include "callout.h"
#include "classify.h"
#include "clock.h"
#include "dns.h"
#include "engine.h"
#include "health.h"
#include "hosts.h"
#include "log.h"
#include "metrics.h"
#include "metricsd.h"
#include "redisurl.h"
#include "shared.h"
#include "vcore.h"

#define TIDY_EVERY_MS   60000
#define RETIRE_GRACE_MS 60000 /* a replaced configuration is kept at least this long */
#define OURS_LOG_MS     60000 /* our own failures: one warning a minute at most */
/* Descriptors kept out of the probes' share: the listening socket, the
 * cache and its lock file, DNS sockets, the log, stdio, libmilter's pipe. */
#define FD_RESERVE 32

struct verifier {
	struct conf *conf;
	struct engine *engine;
	struct cache *cache;   /* NULL: no cache (with Redis: the local tier, cache_fallback) */
	struct shared *shared; /* the shared Redis tier; NULL: none (cache is not a redis:// URL) */
	struct vcore *core;
	pthread_t thread;
	bool thread_running;
	struct event *wake;     /* active: start what is queued */
	struct event *sweep;    /* periodic cache sweep */
	struct event *tidy;     /* periodic removal of idle domain slots */
	struct health health;   /* engine thread only */
	atomic_bool unhealthy;  /* health's state, for milter threads */
	bool ours_logged;       /* engine thread: a warning about our failures was logged ... */
	int64_t ours_log_ms;    /* ... at this time (mono) */
	unsigned ours_unlogged; /* our failures since (or before) it */
	/* metrics_listen: the registry (NULL: off; then every count is a no-op),
	 * its families' ids, and the HTTP server on the engine loop */
	struct metrics *metrics;
	struct metricsd *metricsd;
	/* configurations a reload replaced (engine thread), kept until nothing
	 * that started under them can still read them (retire_sweep) */
	struct retired_conf {
		struct conf *conf;
		int64_t since_ms;
		struct retired_conf *next;
	} * retired;
	struct verifier_metric_ids {
		int verdicts, probes, probe_seconds, dns_seconds, lookups, started, refreshes, joined,
		        greylist_retries, budget, in_flight, waiting, unhealthy, hosts, cache_entries,
		        cache_bytes, shared_up, shared_writes, shared_fetched, shared_breaker, shared_budget;
	} mid;
};

/* A one-shot timer the core asked for (engine thread). */
struct engine_timer {
	struct event *ev;
	vcore_timer_fn fn;
	void *arg;
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

/* ---- struct vcore_engine on the real engine ---- */

static void *eng_probe_start(void *ctx, const struct addr *address, const struct callout_hints *hints,
                             callout_done_fn done, void *arg)
{
	struct verifier *v = ctx;
	return callout_start(&v->engine->env, address, hints, NULL, NULL, done, arg);
}

static void eng_probe_cancel(void *ctx, void *probe)
{
	callout_cancel(probe);
}

/* eng_resolve_start - a domain's mail hosts, for every probe of it the
 * core starts meanwhile (within the callout's own limits) */
/* A resolution the core asked for, timed for the metrics. */
struct timed_lookup {
	struct verifier *v;
	struct dns_lookup *lookup;
	vcore_resolved_fn done;
	void *arg;
	int64_t started_ms;
};

static void on_timed_lookup(void *arg, const struct dns_answer *answer)
{
	struct timed_lookup *tl = arg;
	struct verifier *v = tl->v;
	if (v->metrics != NULL) {
		char labels[64] = "";
		metrics_label(labels, sizeof(labels), "status", dns_status_name(answer->status));
		metrics_observe(v->metrics, v->mid.dns_seconds, labels,
		                (double)(clock_mono_ms() - tl->started_ms) / 1000.0);
	}
	vcore_resolved_fn done = tl->done;
	void *done_arg = tl->arg;
	free(tl);
	done(done_arg, answer);
}

static void *eng_resolve_start(void *ctx, const char *domain, vcore_resolved_fn done, void *arg)
{
	struct verifier *v = ctx;
	struct dns_limits limits = {.max_mx = (size_t)v->conf->max_mx,
	                            .max_addresses = (size_t)v->conf->max_mx_addresses};
	struct timed_lookup *tl = calloc(1, sizeof(*tl));
	if (tl == NULL)
		return NULL;
	*tl = (struct timed_lookup){.v = v, .done = done, .arg = arg, .started_ms = clock_mono_ms()};
	tl->lookup = dns_lookup_mx(v->engine->env.dns, domain, &limits, NULL, NULL, on_timed_lookup, tl);
	if (tl->lookup == NULL) {
		free(tl);
		return NULL;
	}
	return tl;
}

static void eng_resolve_cancel(void *ctx, void *lookup)
{
	struct timed_lookup *tl = lookup;
	dns_lookup_cancel(tl->lookup);
	free(tl);
}

/* on_engine_timer - fire once, then the timer is gone */
static void on_engine_timer(evutil_socket_t fd, short what, void *arg)
{
	struct engine_timer *t = arg;
	vcore_timer_fn fn = t->fn;
	void *fn_arg = t->arg;
	event_free(t->ev);
	free(t);
	fn(fn_arg);
}

static void *eng_timer_start(void *ctx, int64_t delay_ms, vcore_timer_fn fn, void *arg)
{
	struct verifier *v = ctx;
	struct engine_timer *t = calloc(1, sizeof(*t));
	if (t == NULL)
		return NULL;
	t->fn = fn;
	t->arg = arg;
	t->ev = evtimer_new(v->engine->env.base, on_engine_timer, t);
	struct timeval tv = {.tv_sec = delay_ms / 1000, .tv_usec = (delay_ms % 1000) * 1000};
	if (t->ev == NULL || evtimer_add(t->ev, &tv) != 0) {
		if (t->ev != NULL)
			event_free(t->ev);
		free(t);
		return NULL;
	}
	return t;
}

static void eng_timer_cancel(void *ctx, void *timer)
{
	struct engine_timer *t = timer;
	event_free(t->ev);
	free(t);
}

static void eng_wake(void *ctx)
{
	struct verifier *v = ctx;
	event_active(v->wake, EV_READ, 0);
}

static int64_t eng_wall_ms(void *ctx)
{
	return clock_now_ms();
}

static int64_t eng_mono_ms(void *ctx)
{
	return clock_mono_ms();
}

/* ---- the shared tier (shared.h) as the core sees it ---- */

static void *eng_shared_fetch(void *ctx, const struct addr *address, const char *stable, vcore_shared_fn done,
                              void *arg)
{
	struct verifier *v = ctx;
	char keys[SHARED_FETCH_MAX][CACHE_KEY_MAX];
	const char *list[SHARED_FETCH_MAX];
	size_t n = 0;
	cache_key_address(address->normalized, keys[n], sizeof(keys[n]));
	list[n] = keys[n];
	n++;
	if (stable != NULL && stable[0] != '\0') {
		cache_key_tagged(stable, keys[n], sizeof(keys[n]));
		list[n] = keys[n];
		n++;
	}
	cache_key_domain(address->domain_ascii, keys[n], sizeof(keys[n]));
	list[n] = keys[n];
	n++;
	cache_key_hints(address->domain_ascii, keys[n], sizeof(keys[n]));
	list[n] = keys[n];
	n++;
	return shared_fetch(v->shared, list, n, clock_now_ms(), done, arg);
}

static void *eng_shared_lease(void *ctx, const struct addr *address, int64_t ttl_ms, vcore_shared_fn done,
                              void *arg)
{
	struct verifier *v = ctx;
	char key[CACHE_KEY_MAX];
	cache_key_address(address->normalized, key, sizeof(key));
	return shared_lease(v->shared, key, ttl_ms, done, arg);
}

/* eng_fleet_rate - domain_probe_rate across the fleet (vcore.h) */
static bool eng_fleet_rate(void *ctx, const char *domain, int rate, bool take, int64_t *turn_wall_ms,
                           unsigned *spent)
{
	struct verifier *v = ctx;
	struct fleetrate_said said;
	bool ok = take ? shared_rate_take(v->shared, FLEETRATE_DOMAIN_PROBES, domain, (unsigned)rate, &said)
	               : shared_rate_peek(v->shared, FLEETRATE_DOMAIN_PROBES, domain, (unsigned)rate, &said);
	if (turn_wall_ms != NULL)
		*turn_wall_ms = fleetrate_turn_ms(clock_now_ms());
	if (spent != NULL)
		*spent = said.fleet ? said.spent : 0; /* 0: our own probes alone used it up */
	return ok;
}

/* eng_fleet_client_rate - client_probe_rate across the fleet (vcore.h;
 * any thread) */
static bool eng_fleet_client_rate(void *ctx, const char *client, int rate, unsigned *spent)
{
	struct verifier *v = ctx;
	struct fleetrate_said said;
	bool ok = shared_rate_take(v->shared, FLEETRATE_CLIENT_PROBES, client, (unsigned)rate, &said);
	if (spent != NULL)
		*spent = said.fleet ? said.spent : 0;
	return ok;
}

static void eng_shared_cancel(void *ctx, void *request)
{
	struct verifier *v = ctx;
	shared_cancel(v->shared, request);
}

static void eng_shared_release(void *ctx, const struct addr *address)
{
	struct verifier *v = ctx;
	char key[CACHE_KEY_MAX];
	cache_key_address(address->normalized, key, sizeof(key));
	shared_release(v->shared, key);
}

/* note_ours - a probe that failed on our side (no descriptor or memory for
 * a socket) is the admin's business, not the sender's: a warning, at most
 * one a minute, counting the others */
static void note_ours(struct verifier *v, const struct outcome *o)
{
	if (!classify_outcome_ours(o))
		return;
	int64_t now = clock_mono_ms();
	v->ours_unlogged++;
	if (v->ours_logged && now - v->ours_log_ms < OURS_LOG_MS)
		return;
	log_msg(LOG_WARNING,
	        "our failure, not the sender's: %s (%u probe(s) since the last such warning, answered "
	        "tempfail, not cached); raise the open-file limit or lower max_probes_in_flight",
	        o->reason, v->ours_unlogged);
	v->ours_logged = true;
	v->ours_log_ms = now;
	v->ours_unlogged = 0;
}

/* eng_probe_result - every probe outcome (engine thread): our own
 * failures are warned about; self-health (if on) sees them all, and logs a
 * change of state once, with what to check */
static void eng_probe_result(void *ctx, const struct outcome *o, int64_t elapsed_ms)
{
	struct verifier *v = ctx;
	note_ours(v, o);
	if (v->metrics != NULL) {
		char labels[96] = "";
		metrics_label(labels, sizeof(labels), "outcome", outcome_name(o->kind));
		metrics_observe(v->metrics, v->mid.probe_seconds, labels, (double)elapsed_ms / 1000.0);
		metrics_label(labels, sizeof(labels), "stage", probe_stage_name(o->stage));
		metrics_add(v->metrics, v->mid.probes, labels, 1);
	}
	if (!v->conf->self_health)
		return;
	enum health_change change = health_record(&v->health, o, clock_mono_ms());
	if (change == HEALTH_SAME)
		return;
	atomic_store(&v->unhealthy, change == HEALTH_BECAME_UNHEALTHY);
	char line[1024];
	health_message(&v->health, change, v->engine->helo_name, line, sizeof(line));
	log_msg(change == HEALTH_BECAME_UNHEALTHY ? LOG_WARNING : LOG_NOTICE, "%s", line);
}

/* fd_share - max_probes_in_flight that the open-file limit fds allows.
 * Half of the descriptors (less FD_RESERVE) for probe sockets, half for
 * the MTA's sessions: every session being verified holds one milter
 * descriptor, and its probe at least one socket, so neither side may crowd
 * out the other; when probes alone could use them all, the milter could not
 * accept the sessions they serve (and libmilter's accept loop spins on
 * EMFILE). A probe may hold two sockets at once (its connection and the
 * QUIT of an earlier one, or of its verdict's session, which is not counted
 * in flight), so probes in flight get half of that half. At least 1. */
static unsigned long fd_share(unsigned long fds)
{
	unsigned long probe_sockets = fds > 2 * FD_RESERVE ? (fds - FD_RESERVE) / 2 : fds / 4;
	return probe_sockets / 2 > 0 ? probe_sockets / 2 : 1;
}

/* on_finished - a callout's last connection closed (engine thread) */
static void on_finished(void *arg, const char *domain)
{
	struct verifier *v = arg;
	vcore_on_finished(v->core, domain);
}

/* on_fact - a late domain fact from a callout (engine thread) */
static void on_fact(void *arg, const struct addr *address, const struct outcome *fact)
{
	struct verifier *v = arg;
	vcore_on_fact(v->core, address, fact);
}

/* ---- events on the engine thread ---- */

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
	struct verifier *v = arg;
	vcore_run(v->core);
}

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
	struct verifier *v = arg;
	vcore_sweep(v->core);
}

/* retire - keep a replaced configuration reference (engine thread) */
static void retire(struct verifier *v, struct conf *old)
{
	struct retired_conf *r = calloc(1, sizeof(*r));
	if (r == NULL) {
		/* Better a small leak than a conf freed under a reader. */
		log_msg(LOG_WARNING, "reload: out of memory: the previous configuration is kept for good");
		return;
	}
	r->conf = old;
	r->since_ms = clock_mono_ms();
	r->next = v->retired;
	v->retired = r;
}

/* retire_sweep - release replaced configurations once nothing that started
 * under them runs (no probe in flight, nothing lingering, no pool session)
 * and RETIRE_GRACE_MS has passed (a milter thread that read the old
 * pointer just before the swap is long done with it) */
static void retire_sweep(struct verifier *v)
{
	struct verify_stats st;
	vcore_get_stats(v->core, &st);
	bool idle = st.in_flight == 0 && !engine_busy(v->engine);
	for (struct retired_conf **link = &v->retired; *link != NULL;) {
		struct retired_conf *r = *link;
		if (idle && clock_mono_ms() - r->since_ms >= RETIRE_GRACE_MS) {
			*link = r->next;
			conf_unref(r->conf);
			free(r);
		} else {
			link = &r->next;
		}
	}
}

static void on_tidy(evutil_socket_t fd, short what, void *arg)
{
	struct verifier *v = arg;
	vcore_tidy(v->core);
	retire_sweep(v);
	engine_tidy(v->engine);
}

/* ---- verify.h ---- */

struct verify_ticket *verify_submit(struct verifier *v, const struct addr *sender, const char *client)
{
	return vcore_submit(v->core, sender, client);
}

bool verify_wait(struct verify_ticket *t, int64_t deadline_ms, struct verify_result *out)
{
	return vcore_wait(t, deadline_ms, out);
}

bool verify_notify(struct verify_ticket *t, void (*fn)(void *arg), void *arg)
{
	return vcore_notify(t, fn, arg);
}

void verify_notify_cancel(struct verify_ticket *t)
{
	vcore_notify_cancel(t);
}

int64_t verify_submitted_ms(const struct verify_ticket *t)
{
	return vcore_submitted_ms(t);
}

/* verify_deferred_since - see verify.h */
int64_t verify_deferred_since(const struct verify_ticket *t)
{
	return vcore_deferred_since(t);
}

void verify_release(struct verify_ticket *t)
{
	vcore_release(t);
}

/* verify_unhealthy - see verify.h */
bool verify_unhealthy(struct verifier *v)
{
	return v != NULL && atomic_load(&v->unhealthy);
}

void verify_get_stats(struct verifier *v, struct verify_stats *out)
{
	vcore_get_stats(v->core, out);
}

/* engine_thread - run the loop until verifier_free breaks it */
static void *engine_thread(void *arg)
{
	struct verifier *v = arg;
	event_base_loop(v->engine->env.base, EVLOOP_NO_EXIT_ON_EMPTY);
	return NULL;
}

/* open_cache - the configured cache, or none (logged). With a Redis cache:
 * the local tier (cache_fallback) and the shared client, the local tier's
 * writes mirrored to it; false (why) only when the shared client cannot be
 * made at all (its URL or password file: a configuration error). */
/* on_breaker - probe_env.on_breaker: our breaker noted addr_text blocked
 * or backed off; the fleet hears it (its window moved to the wall clock,
 * which the hosts share) */
static void on_breaker(void *arg, const struct sockaddr *sa, const char *addr_text,
                       const struct host_memo *memo)
{
	struct verifier *v = arg;
	struct shared_host_rec rec = {0};
	int64_t left = memo->until_ms - clock_mono_ms();
	if (left <= 0)
		return;
	rec.until_ms = clock_now_ms() + left;
	if (memo->state == HOST_BLOCKED) {
		rec.state = SHARED_HOST_BLOCKED;
		rec.stage = (int)memo->stage;
		rec.code = memo->code;
		snprintf(rec.ecode, sizeof(rec.ecode), "%s", memo->ecode);
		snprintf(rec.host, sizeof(rec.host), "%s", memo->host);
		snprintf(rec.text, sizeof(rec.text), "%s", memo->text);
		snprintf(rec.source, sizeof(rec.source), "%s", memo->source);
	} else if (memo->state == HOST_BACKED_OFF) {
		rec.state = SHARED_HOST_BACKED_OFF;
	} else {
		return;
	}
	shared_host_publish(v->shared, addr_text, &rec);
}

/* on_fleet_host - shared_host_fn: another host's breaker noted address;
 * into our table for what is left of its window, unless ours already holds
 * as much. Our configuration rules: with blocked_ttl (host_backoff) off,
 * a refusal (silence) is not learned either, and a window is never longer
 * than ours could be (a host with a clock far ahead, or another
 * configuration, must not keep us off a server longer than we would).
 * A refusal is applied only when it was met from one of our own addresses
 * (shared_host_applies): many are about the prober's address (a
 * blocklist), and another host's reputation must not cost us verification
 * for blocked_ttl; one from elsewhere, or without its source (an older
 * writer), is left (debug log): it costs us one session. A backoff (the
 * MX's state) is always applied.
 * Logged (info): a probe that then does not connect there says why in its
 * trace, this line says where the word came from. */
static void on_fleet_host(void *arg, const char *address, const struct shared_host_rec *rec)
{
	struct verifier *v = arg;
	struct sockaddr_storage ss = {0};
	struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, address, &in4->sin_addr) == 1)
		in4->sin_family = AF_INET;
	else if (inet_pton(AF_INET6, address, &in6->sin6_addr) == 1)
		in6->sin6_family = AF_INET6;
	else
		return;
	const struct sockaddr *sa = (const struct sockaddr *)&ss;
	struct hosts *h = v->engine->env.hosts;
	int64_t now = clock_mono_ms(), left = rec->until_ms - clock_now_ms();
	int64_t most = rec->state == SHARED_HOST_BLOCKED                 ? v->conf->blocked_ttl_ms
	               : v->conf->host_backoff_ms > HOSTS_BACKOFF_CAP_MS ? v->conf->host_backoff_ms
	               : v->conf->host_backoff_ms > 0                    ? HOSTS_BACKOFF_CAP_MS
	                                                                 : 0;
	if (left > most)
		left = most;
	struct host_memo m;
	enum host_state state = hosts_lookup(h, sa, now, &m);
	if (!shared_host_applies(rec, &v->engine->local, now)) {
		log_msg(LOG_DEBUG,
		        "breaker: not applying %s's refusal by %s [%s]: met from %s, not an address of ours",
		        rec->writer, rec->host, address, rec->source[0] ? rec->source : "an unknown source");
		return;
	}
	if (left <= 0 || (state != HOST_OK && m.until_ms >= now + left &&
	                  (state == HOST_BLOCKED || rec->state == SHARED_HOST_BACKED_OFF)))
		return; /* what we hold says as much, as long */
	if (rec->state == SHARED_HOST_BLOCKED) {
		struct outcome o;
		int stage = rec->stage >= STAGE_NONE && rec->stage <= STAGE_QUIT ? rec->stage : STAGE_NONE;
		outcome_set(&o, OUTCOME_BLOCKED, (enum probe_stage)stage, rec->code, rec->ecode, rec->text,
		            "learned from the fleet");
		if (hosts_note_blocked(h, sa, now, left, rec->host, &o, rec->source, rec->writer))
			log_msg(LOG_INFO,
			        "breaker: learned from %s: %s [%s] refused us (%s) at %s (%d %s%s%s): not "
			        "connecting there for %lld s",
			        rec->writer, rec->host, address, rec->source,
			        probe_stage_name((enum probe_stage)stage), rec->code, rec->ecode,
			        rec->ecode[0] ? " " : "", rec->text, (long long)((left + 999) / 1000));
	} else if (state != HOST_BLOCKED && hosts_note_backoff_until(h, sa, now, now + left)) {
		log_msg(LOG_INFO,
		        "breaker: learned from %s: no answer from %s: not connecting there for %lld s",
		        rec->writer, address, (long long)((left + 999) / 1000));
	}
}

static bool open_cache(struct verifier *v, char *why, size_t why_size)
{
	const char *path = v->conf->cache;
	bool redis = redis_url_is(path);
	if (redis)
		path = v->conf->cache_fallback;
	if (path[0] == '\0') {
		if (redis)
			log_msg(LOG_ERR, "cache_fallback is empty: a Redis cache needs the local tier milter "
			                 "threads read; verifying without a cache");
		else
			log_msg(LOG_NOTICE, "no cache configured: every sender is probed");
		return true;
	}
	char reason[300];
	v->cache = cache_open(path, v->conf->cache_max_mb, reason, sizeof(reason));
	if (v->cache == NULL) {
		log_msg(LOG_ERR, "cache %s unusable (%s): verifying without a cache", path, reason);
		return true;
	}
	cache_sync_every(v->cache, v->conf->cache_sync_interval_ms); /* false: logged, syncs each write */
	if (!redis)
		return true;
	v->shared = shared_new(v->engine->env.base, v->conf, v->cache, why, why_size);
	if (v->shared == NULL)
		return false;
	const struct cache_mirror mirror = {
	        .put = shared_mirror_put, .del = shared_mirror_del, .arg = v->shared};
	cache_set_mirror(v->cache, &mirror);
	shared_set_host_hook(v->shared, on_fleet_host, v);
	/* host_session_rate across the fleet (fleetrate.h): the pool's and the callouts' takes */
	hosts_set_session_hook(v->engine->env.hosts, shared_session_take, v->shared);
	v->engine->env.on_breaker = on_breaker;
	v->engine->env.breaker_arg = v;
	return true;
}

/* start_events - the wake-up event, the tidy and sweep timers */
static bool start_events(struct verifier *v)
{
	struct event_base *base = v->engine->env.base;
	v->wake = event_new(base, -1, 0, on_wake, v);
	v->tidy = event_new(base, -1, EV_PERSIST, on_tidy, v);
	struct timeval minute = {.tv_sec = TIDY_EVERY_MS / 1000};
	if (v->wake == NULL || v->tidy == NULL || event_add(v->tidy, &minute) != 0)
		return false;
	if (v->cache != NULL) {
		v->sweep = event_new(base, -1, EV_PERSIST, on_sweep, v);
		int64_t ms = v->conf->sweep_interval_ms;
		struct timeval every = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
		if (v->sweep == NULL || event_add(v->sweep, &every) != 0)
			return false;
	}
	return true;
}

/* on_helo_checked - warn when helo_name does not resolve: receiving
 * servers check it (and our address's reverse DNS against it), and refuse
 * probes that fail. Engine thread. A name with address records resolves
 * (the lookup's implicit MX); one with MX records or a null MX is left
 * alone (odd for a host name, but its own addresses were not asked). Its
 * form is judged elsewhere: the config refuses an unqualified helo_name,
 * and engine_helo_name reports an unqualified host name it had to fall
 * back on, so such a name is not looked up here. */
static void on_helo_checked(void *arg, const struct dns_answer *answer)
{
	struct verifier *v = arg;
	const char *problem = NULL;
	switch (answer->status) {
	case DNS_OK:
	case DNS_NULL_MX:
		return;
	case DNS_NXDOMAIN:
		problem = "no such domain";
		break;
	case DNS_NO_MAIL_HOST:
		problem = "no address records";
		break;
	case DNS_TEMPFAIL:
		problem = answer->detail[0] != '\0' ? answer->detail : "temporary DNS failure";
		break;
	}
	log_msg(LOG_WARNING,
	        "helo_name %s does not resolve (%s): receiving servers may refuse our probes; set "
	        "helo_name to a name whose address records exist and match the reverse DNS of our "
	        "address",
	        v->engine->helo_name, problem);
}

/* start_helo_check - look helo_name up with the engine's resolver (before
 * the engine thread runs: the lookup belongs to its loop from then on), so
 * that the check asks the servers of dns_servers as every lookup does, and
 * never blocks a thread on the system resolver */
static void start_helo_check(struct verifier *v)
{
	const char *name = v->engine->helo_name;
	struct dns_limits limits = {.max_mx = 1, .max_addresses = 1};
	if (strchr(name, '.') == NULL)
		return;
	/* Not kept: a resolver a reload replaced is freed only once idle (the
	 * answer comes first), the one freed at stop cancels it without a call;
	 * v outlives both. */
	if (dns_lookup_mx(v->engine->env.dns, name, &limits, NULL, NULL, on_helo_checked, v) == NULL)
		log_msg(LOG_WARNING, "helo_name %s: out of memory for its start-up check", name);
}

/* ---- metrics (metrics_listen) ---- */

/* collect - before each scrape (engine thread: the HTTP server runs on the
 * loop): what is cheaper to read than to keep up to date */
static void collect(void *arg, struct metrics *m)
{
	struct verifier *v = arg;
	struct verify_stats st;
	vcore_get_stats(v->core, &st);
	const struct verifier_metric_ids *id = &v->mid;
	metrics_set(m, id->lookups, "result=\"hit\"", (double)st.cache_hits);
	metrics_set(m, id->lookups, "result=\"stale\"", (double)st.stale_hits);
	metrics_set(m, id->lookups, "result=\"tagged\"", (double)st.tagged_hits);
	metrics_set(m, id->lookups, "result=\"domain_fact\"", (double)st.domain_facts);
	metrics_set(m, id->lookups, "result=\"miss\"", (double)st.misses);
	metrics_set(m, id->lookups, "result=\"shared\"", (double)st.shared_hits);
	if (v->shared != NULL) {
		struct shared_stats ss;
		shared_get_stats(v->shared, &ss);
		metrics_set(m, id->shared_up, NULL, ss.up ? 1 : 0);
		metrics_set(m, id->shared_writes, "result=\"sent\"", (double)ss.writes);
		metrics_set(m, id->shared_writes, "result=\"kept_out\"", (double)ss.writes_kept);
		metrics_set(m, id->shared_writes, "result=\"dropped\"", (double)ss.writes_dropped);
		metrics_set(m, id->shared_fetched, NULL, (double)ss.fetched);
		metrics_set(m, id->shared_breaker, "result=\"published\"", (double)ss.hosts_sent);
		metrics_set(m, id->shared_breaker, "result=\"learned\"", (double)ss.hosts_learned);
		metrics_set(m, id->shared_budget, "result=\"reported\"", (double)ss.rate_reports);
		metrics_set(m, id->shared_budget, "result=\"refused\"", (double)ss.rate_refused);
		metrics_set(m, id->shared_budget, "result=\"refused_fleet\"", (double)ss.rate_refused_fleet);
	}
	metrics_set(m, id->lookups, "result=\"stale_withheld\"", (double)st.stale_withheld);
	metrics_set(m, id->started, NULL, (double)st.probes);
	metrics_set(m, id->refreshes, NULL, (double)st.refreshes);
	metrics_set(m, id->joined, NULL, (double)st.joined);
	metrics_set(m, id->greylist_retries, NULL, (double)st.greylist_retries);
	for (int i = 0; i < VERIFY_BUDGET_KINDS; i++) {
		char labels[64] = "";
		metrics_label(labels, sizeof(labels), "budget", verify_budget_name(i));
		metrics_set(m, id->budget, labels, (double)st.over_budget_by[i]);
	}
	metrics_set(m, id->in_flight, NULL, (double)st.running);
	metrics_set(m, id->waiting, NULL, (double)(st.in_flight - st.running));
	metrics_set(m, id->unhealthy, NULL, atomic_load(&v->unhealthy) ? 1 : 0);
	struct hosts_census hc;
	hosts_census(v->engine->env.hosts, clock_mono_ms(), &hc);
	metrics_set(m, id->hosts, "state=\"blocked\"", (double)hc.blocked);
	metrics_set(m, id->hosts, "state=\"backed_off\"", (double)hc.backed_off);
	metrics_set(m, id->hosts, "state=\"catch_all\"", (double)hc.catch_all);
	metrics_set(m, id->hosts, "state=\"known\"", (double)hc.records);
	struct cache_size cs;
	if (cache_size(v->cache, &cs)) {
		metrics_set(m, id->cache_entries, NULL, (double)cs.records);
		metrics_set(m, id->cache_bytes, "kind=\"file\"", (double)cs.file_pages_bytes);
		metrics_set(m, id->cache_bytes, "kind=\"map\"", (double)cs.map_bytes);
	}
}

/* start_metrics - the registry, its families and the HTTP server, when
 * metrics_listen is set; false (why) when the server cannot listen */
static bool start_metrics(struct verifier *v, char *why, size_t why_size)
{
	if (v->conf->metrics_listen[0] == '\0')
		return true;
	static const double probe_bounds[] = {0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60};
	static const double dns_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
	struct metrics *m = metrics_new();
	if (m == NULL) {
		snprintf(why, why_size, "out of memory");
		return false;
	}
	struct verifier_metric_ids *id = &v->mid;
	id->verdicts = metrics_family(
	        m, "vemilter_verdicts", METRIC_COUNTER,
	        "Verdicts given to the MTA, by action and reason (one per recipient line).", NULL, 0);
	id->lookups = metrics_family(m, "vemilter_cache_lookups", METRIC_COUNTER,
	                             "Verification requests by what the cache gave them.", NULL, 0);
	id->started = metrics_family(m, "vemilter_probes_started", METRIC_COUNTER,
	                             "Probes started, background refreshes included.", NULL, 0);
	id->refreshes = metrics_family(m, "vemilter_probe_refreshes", METRIC_COUNTER,
	                               "Background refreshes of stale answers.", NULL, 0);
	id->joined = metrics_family(m, "vemilter_probes_joined", METRIC_COUNTER,
	                            "Requests that joined a probe already running.", NULL, 0);
	id->greylist_retries = metrics_family(m, "vemilter_greylist_retries", METRIC_COUNTER,
	                                      "Probes asked again after greylisting.", NULL, 0);
	id->probes = metrics_family(m, "vemilter_probes", METRIC_COUNTER,
	                            "Probes finished, by outcome and the stage that decided it.", NULL, 0);
	id->probe_seconds = metrics_family(m, "vemilter_probe_duration_seconds", METRIC_HISTOGRAM,
	                                   "Time from a probe's start to its verdict.", probe_bounds,
	                                   sizeof(probe_bounds) / sizeof(probe_bounds[0]));
	id->dns_seconds = metrics_family(m, "vemilter_dns_duration_seconds", METRIC_HISTOGRAM,
	                                 "Time to resolve a sender domain's mail hosts.", dns_bounds,
	                                 sizeof(dns_bounds) / sizeof(dns_bounds[0]));
	id->budget = metrics_family(
	        m, "vemilter_budget_refusals", METRIC_COUNTER,
	        "Requests answered tempfail without a probe, by the budget they were over.", NULL, 0);
	id->in_flight = metrics_family(m, "vemilter_probes_in_flight", METRIC_GAUGE,
	                               "Probes running now (what max_probes_in_flight counts).", NULL, 0);
	id->waiting = metrics_family(
	        m, "vemilter_probes_waiting", METRIC_GAUGE,
	        "Probes asked for and not started yet: queued, or waiting in their domain's line.", NULL, 0);
	id->unhealthy =
	        metrics_family(m, "vemilter_self_health_unhealthy", METRIC_GAUGE,
	                       "1 while most probes fail on our side (self-health), else 0.", NULL, 0);
	id->hosts = metrics_family(m, "vemilter_mx_hosts", METRIC_GAUGE,
	                           "MX host addresses the circuit breaker remembers, by state.", NULL, 0);
	id->cache_entries = metrics_family(
	        m, "vemilter_cache_entries", METRIC_GAUGE,
	        "Cache records (addresses, domain facts and hints; expired ones until swept).", NULL, 0);
	id->cache_bytes =
	        metrics_family(m, "vemilter_cache_bytes", METRIC_GAUGE,
	                       "Cache file: bytes up to its last page used, and the map's size.", NULL, 0);
	id->shared_up =
	        metrics_family(m, "vemilter_shared_cache_up", METRIC_GAUGE,
	                       "1 while the shared Redis cache answers, else 0 (absent: none).", NULL, 0);
	id->shared_writes = metrics_family(
	        m, "vemilter_shared_cache_writes", METRIC_COUNTER,
	        "Writes to the shared Redis cache: sent, kept out by its replace rule, dropped (Redis down).",
	        NULL, 0);
	id->shared_fetched =
	        metrics_family(m, "vemilter_shared_cache_fetched", METRIC_COUNTER,
	                       "Records copied from the shared Redis cache into the local one.", NULL, 0);
	id->shared_breaker = metrics_family(
	        m, "vemilter_shared_breaker_records", METRIC_COUNTER,
	        "Circuit-breaker records (an MX address blocked or backed off) published to the shared "
	        "Redis cache, and learned from other hosts.",
	        NULL, 0);
	id->shared_budget = metrics_family(
	        m, "vemilter_shared_budget_events", METRIC_COUNTER,
	        "Fleet budgets (host_session_rate, domain_probe_rate, client_probe_rate) on Redis: spending "
	        "reports Redis answered, sessions or probes refused, and refused with other hosts' spending "
	        "counted.",
	        NULL, 0);
	if (id->shared_up < 0 || id->shared_writes < 0 || id->shared_fetched < 0 || id->shared_breaker < 0 ||
	    id->shared_budget < 0 || id->verdicts < 0 || id->lookups < 0 || id->started < 0 ||
	    id->refreshes < 0 || id->joined < 0 || id->greylist_retries < 0 || id->probes < 0 ||
	    id->probe_seconds < 0 || id->dns_seconds < 0 || id->budget < 0 || id->in_flight < 0 ||
	    id->waiting < 0 || id->unhealthy < 0 || id->hosts < 0 || id->cache_entries < 0 ||
	    id->cache_bytes < 0) {
		metrics_free(m);
		snprintf(why, why_size, "out of memory");
		return false;
	}
	metrics_set_collector(m, collect, v);
	v->metrics = m;
	/* Before the engine thread runs: the server joins the loop from here. */
	v->metricsd = metricsd_start(v->engine->env.base, v->conf->metrics_listen, m, why, why_size);
	if (v->metricsd == NULL)
		return false;
	log_msg(LOG_INFO, "metrics served on http://%s/metrics", v->conf->metrics_listen);
	return true;
}

/* verify_drain - see verify.h */
bool verify_drain(struct verifier *v, int64_t bound_ms)
{
	if (v == NULL)
		return true;
	int64_t deadline = clock_mono_ms() + bound_ms;
	struct verify_stats st;
	vcore_get_stats(v->core, &st);
	if (st.in_flight > 0)
		log_msg(LOG_INFO,
		        "stopping: waiting up to %lld s for %llu probe(s) in flight, so their answers are "
		        "cached",
		        (long long)(bound_ms / 1000), (unsigned long long)st.in_flight);
	while (st.in_flight > 0 && clock_mono_ms() < deadline) {
		struct timespec pause = {.tv_nsec = 50 * 1000000};
		nanosleep(&pause, NULL);
		vcore_get_stats(v->core, &st);
	}
	if (st.in_flight > 0)
		log_msg(LOG_WARNING, "stopping with %llu probe(s) still in flight: their answers are lost",
		        (unsigned long long)st.in_flight);
	return st.in_flight == 0;
}

/* verify_count_verdict - see verify.h */
void verify_count_verdict(struct verifier *v, const char *action, const char *reason, unsigned n)
{
	if (v == NULL || v->metrics == NULL || n == 0)
		return;
	char labels[128] = "";
	metrics_label(labels, sizeof(labels), "action", action);
	metrics_label(labels, sizeof(labels), "reason", reason);
	metrics_add(v->metrics, v->mid.verdicts, labels, n);
}

/* A reload handed to the engine thread, and its result. */
struct reload_request {
	struct verifier *v;
	struct conf *fresh;
	struct shared_prepared shared; /* read before the hand-over (DNS, a file) */
	pthread_mutex_t lock;
	pthread_cond_t done_cv;
	bool done, ok;
	char why[300];
};

/* on_reload - engine thread: switch the engine, then the core, then the
 * verifier's own settings, between probes */
static void on_reload(evutil_socket_t fd, short what, void *arg)
{
	struct reload_request *rq = arg;
	struct verifier *v = rq->v;
	bool ok = engine_apply_conf(v->engine, rq->fresh, rq->why, sizeof(rq->why));
	if (ok) {
		retire(v, vcore_set_conf(v->core, rq->fresh));
		retire(v, v->conf);
		v->conf = conf_ref(rq->fresh);
		shared_set_conf(v->shared, v->conf, &rq->shared);
		if (v->sweep != NULL) {
			int64_t ms = v->conf->sweep_interval_ms;
			struct timeval every = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
			event_add(v->sweep, &every); /* re-adding a pending event resets its timeout */
		}
	}
	pthread_mutex_lock(&rq->lock);
	rq->ok = ok;
	rq->done = true;
	pthread_cond_signal(&rq->done_cv);
	pthread_mutex_unlock(&rq->lock);
}

/* verify_reload - see verify.h */
bool verify_reload(struct verifier *v, struct conf *fresh, char *why, size_t why_size)
{
	struct reload_request rq = {.v = v, .fresh = fresh};
	if (v->shared != NULL)
		shared_prepare(fresh, &rq.shared);
	pthread_mutex_init(&rq.lock, NULL);
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&rq.done_cv, &attr);
	pthread_condattr_destroy(&attr);
	struct timeval now_tv = {0, 0};
	bool ok = false;
	if (event_base_once(v->engine->env.base, -1, EV_TIMEOUT, on_reload, &rq, &now_tv) != 0) {
		snprintf(why, why_size, "cannot reach the engine thread");
	} else {
		/* The loop runs every event in turn: this one within moments. It
		 * must not be abandoned (rq lives on this stack), so no bound. */
		pthread_mutex_lock(&rq.lock);
		while (!rq.done)
			pthread_cond_wait(&rq.done_cv, &rq.lock);
		ok = rq.ok;
		pthread_mutex_unlock(&rq.lock);
		if (!ok)
			snprintf(why, why_size, "%s", rq.why);
	}
	explicit_bzero(&rq.shared, sizeof(rq.shared));
	pthread_cond_destroy(&rq.done_cv);
	pthread_mutex_destroy(&rq.lock);
	return ok;
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
	v->conf = conf_ref(conf);
	v->engine = engine_new(conf, why, why_size);
	if (v->engine == NULL)
		goto fail;
	if (!open_cache(v, why, why_size))
		goto fail;
	const struct vcore_engine eng = {
	        .ctx = v,
	        .probe_start = eng_probe_start,
	        .probe_cancel = eng_probe_cancel,
	        .timer_start = eng_timer_start,
	        .timer_cancel = eng_timer_cancel,
	        .wake = eng_wake,
	        .wall_ms = eng_wall_ms,
	        .mono_ms = eng_mono_ms,
	        .reports_finished = true, /* callouts call probe_env.on_finished */
	        .probe_result = eng_probe_result,
	        .resolve_start = eng_resolve_start,
	        .resolve_cancel = eng_resolve_cancel,
	        .shared_fetch = v->shared != NULL ? eng_shared_fetch : NULL,
	        .shared_lease = eng_shared_lease,
	        .shared_cancel = eng_shared_cancel,
	        .shared_release = eng_shared_release,
	        .fleet_rate = v->shared != NULL ? eng_fleet_rate : NULL,
	        .fleet_client_rate = v->shared != NULL ? eng_fleet_client_rate : NULL,
	};
	health_init(&v->health);
	atomic_init(&v->unhealthy, false);
	v->core = vcore_new(conf, v->cache, &eng);
	if (v->core == NULL) {
		snprintf(why, why_size, "out of memory");
		goto fail;
	}
	unsigned long fds = engine_raise_fd_limit();
	unsigned long share = fd_share(fds);
	if (share < (unsigned long)conf->max_probes_in_flight) {
		vcore_limit_in_flight(v->core, (int)share);
		log_msg(LOG_NOTICE,
		        "max_probes_in_flight lowered to %lu by the open-file limit (%lu): probes get half "
		        "of the descriptors, the MTA's sessions the other half",
		        share, fds);
	}
	v->engine->env.on_fact = on_fact;
	v->engine->env.on_finished = on_finished;
	v->engine->env.fact_arg = v;
	if (!start_events(v)) {
		snprintf(why, why_size, "cannot create engine events");
		goto fail;
	}
	if (!start_metrics(v, why, why_size))
		goto fail;
	start_helo_check(v);
	int err = pthread_create(&v->thread, NULL, engine_thread, v);
	if (err != 0) {
		snprintf(why, why_size, "cannot start the engine thread: %s", strerror(err));
		goto fail;
	}
	v->thread_running = true;
	log_msg(LOG_INFO, "engine started: helo_name %s, cache %s%s%s", v->engine->helo_name,
	        v->shared != NULL  ? conf->cache
	        : v->cache != NULL ? conf->cache
	                           : "none",
	        v->shared != NULL ? ", local tier " : "", v->shared != NULL ? conf->cache_fallback : "");
	return v;
fail:
	verifier_free(v);
	return NULL;
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
	/* The loop is stopped: the core cancels its probes and timers here. */
	vcore_free(v->core);
	/* Then the shared tier: no write is mirrored to it any more. */
	if (v->cache != NULL)
		cache_set_mirror(v->cache, NULL);
	shared_free(v->shared);
	v->shared = NULL;
	if (v->wake != NULL)
		event_free(v->wake);
	if (v->sweep != NULL)
		event_free(v->sweep);
	if (v->tidy != NULL)
		event_free(v->tidy);
	metricsd_stop(v->metricsd);
	engine_free(v->engine);
	/* nothing runs any more: every replaced configuration goes */
	while (v->retired != NULL) {
		struct retired_conf *r = v->retired;
		v->retired = r->next;
		conf_unref(r->conf);
		free(r);
	}
	metrics_free(v->metrics);
	if (v->cache != NULL)
		cache_close(v->cache);
	conf_unref(v->conf);
	free(v);
}
