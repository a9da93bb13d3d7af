/*
 * vcore.h - the verifier's logic, apart from the engine it drives.
 *
 * vcore decides everything verify.h promises: one shared probe per
 * address (and per stable form of a tagged sender, tags.h), one record per
 * domain (its mail hosts, resolved once for all its probes and kept for
 * their TTL within dns_cache_time; its limiter), per-domain probe limits and the budgets (client_probe_rate,
 * domain_invalid_limit, max_probes_in_flight; every waiting line drains), background refreshes (at most one a
 * refresh window per record), greylisted probes asked again later; with vstore.h's rules for the cache: which
 * cached answer may be served (a stale answer that would reject, or a stale temporary one, is not: the
 * address is probed again while the client waits), domain facts and the contrary evidence that clears them,
 * probe hints, and the deferral start of temporary answers (for defer_limit).
 *
 * It reaches the engine only through struct vcore_engine: start and cancel
 * a probe, start and cancel a domain's resolution, start and cancel a timer, wake the engine thread, read the
 * wall and monotonic clocks; optionally ask a cache shared by a fleet of hosts before probing (its records,
 * and a lease that makes one host probe an address for the fleet). verify.c wires that to callout_start() and
 * libevent on the engine thread; tests/unit/test_vcore.c wires it to a fake engine with a movable clock, so
 * every rule here is tested without sockets, sleeps or threads.
 *
 * Threads: vcore_submit/wait/release/get_stats from any thread (they take
 * the core's mutex and never call the engine except wake). Everything else
 * (vcore_run, vcore_on_fact, vcore_sweep, vcore_tidy, and every callback
 * the engine makes: probe done, timer) on the engine thread only. The cache
 * is shared and thread-safe.
 */
#ifndef VEMILTER_VCORE_H
#define VEMILTER_VCORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "cache.h"
#include "callout.h"
#include "conf.h"
#include "verify.h"

struct vcore;

typedef void (*vcore_timer_fn)(void *arg);
struct dns_answer;
typedef void (*vcore_resolved_fn)(void *arg, const struct dns_answer *answer);
/* A shared tier's answer: VCORE_SHARED_* */
typedef void (*vcore_shared_fn)(void *arg, int result);
enum { VCORE_SHARED_FAILED = -1, VCORE_SHARED_HELD = 0, VCORE_SHARED_OURS = 1 };

/* The engine as the core sees it. ctx is passed back to every function. */
struct vcore_engine {
	void *ctx;
	/* Start a probe of address; done(arg, outcome) runs exactly once, later,
	 * on the engine thread (never inside probe_start), unless cancelled.
	 * hints->mx: the domain's mail hosts, lent for the call (the probe
	 * copies them), or NULL: the probe resolves them itself. NULL: could
	 * not start. */
	void *(*probe_start)(void *ctx, const struct addr *address, const struct callout_hints *hints,
	                     callout_done_fn done, void *arg);
	/* Stop a probe that has not reported; done will not run. */
	void (*probe_cancel)(void *ctx, void *probe);
	/* Run fn(arg) once on the engine thread after delay_ms; the handle is
	 * the engine's until then. NULL: could not. */
	void *(*timer_start)(void *ctx, int64_t delay_ms, vcore_timer_fn fn, void *arg);
	/* Stop a timer that has not fired. */
	void (*timer_cancel)(void *ctx, void *timer);
	/* From any thread: have the engine thread call vcore_run() soon. */
	void (*wake)(void *ctx);
	int64_t (*wall_ms)(void *ctx); /* milliseconds since the epoch (records) */
	int64_t (*mono_ms)(void *ctx); /* monotonic milliseconds (deadlines, limits) */
	/* The engine calls vcore_on_finished() once per started probe when its
	 * last connection is gone (after QUIT): until then the probe keeps its
	 * place in domain_probe_limit. false: the place is free at done. */
	bool reports_finished;
	/* Optional (NULL: none): every outcome of a probe the engine ran, as it
	 * reports it, before anything else sees it (self-health, health.h). */
	void (*probe_result)(void *ctx, const struct outcome *outcome, int64_t elapsed_ms);
	/* Optional (NULL: every probe resolves its domain itself): resolve a
	 * domain's mail hosts (dns_lookup_mx); done(arg, answer) runs exactly
	 * once, later, on the engine thread (never inside resolve_start),
	 * unless cancelled; the answer is lent for the call. NULL: could not
	 * start. */
	void *(*resolve_start)(void *ctx, const char *domain, vcore_resolved_fn done, void *arg);
	/* Stop a resolution that has not answered; done will not run. */
	void (*resolve_cancel)(void *ctx, void *lookup);
	/* Optional (shared_fetch NULL: no shared tier): a cache shared by a
	 * fleet of hosts (shared.h), asked before a probe someone waits for.
	 * shared_fetch copies the address's records (its "a:", the stable
	 * form's "t:", its domain's "d:" and "h:") from it into the local
	 * cache: done(arg, n) with n records copied, or VCORE_SHARED_FAILED.
	 * shared_lease takes the address's lease for ttl_ms: done(arg,
	 * VCORE_SHARED_OURS), VCORE_SHARED_HELD (another host probes it) or
	 * VCORE_SHARED_FAILED. Both call done exactly once, later, on the
	 * engine thread, unless cancelled; NULL: nothing will run (the tier is
	 * down): probe as without one. */
	void *(*shared_fetch)(void *ctx, const struct addr *address, const char *stable, vcore_shared_fn done,
	                      void *arg);
	void *(*shared_lease)(void *ctx, const struct addr *address, int64_t ttl_ms, vcore_shared_fn done,
	                      void *arg);
	void (*shared_cancel)(void *ctx, void *request);
	/* The probe that held the address's lease has stored its outcome (the
	 * records go out first): give the lease back. */
	void (*shared_release)(void *ctx, const struct addr *address);
	/* Optional (NULL: each host its own budget): domain_probe_rate across
	 * the fleet (shared.h's budgets), on top of the core's own count. May
	 * one more probe of domain (ASCII) start now, at most rate a minute for
	 * the fleet? take false: only asked (nothing counted); true: it starts,
	 * counted. Judged at once, never waits (Redis down: this host's own
	 * count). False: *turn_wall_ms gets when the fleet's minute turns (wall
	 * clock), *spent what the fleet began in it as far as we know (0 when
	 * other hosts' probes are not among them). Either may be NULL. Engine
	 * thread. */
	bool (*fleet_rate)(void *ctx, const char *domain, int rate, bool take, int64_t *turn_wall_ms,
	                   unsigned *spent);
	/* Optional (NULL: each host its own budget): client_probe_rate across
	 * the fleet, on top of the core's own count: may one more probe start
	 * for client, at most rate a minute for the fleet? True: counted.
	 * False: *spent as for fleet_rate. Any thread (a milter thread, under
	 * the core's lock): never waits. */
	bool (*fleet_client_rate)(void *ctx, const char *client, int rate, unsigned *spent);
};

/* A host that finds an address's lease held looks for the holder's answer
 * after 50 ms, doubling to 1 s, until the lease has had time to expire:
 * verify_budget + probe_timeout + VCORE_LEASE_MARGIN_MS (the holder's probe
 * may wait its turn within verify_budget, then runs within probe_timeout). */
#define VCORE_SHARED_POLL_FIRST_MS 50
#define VCORE_SHARED_POLL_MAX_MS   1000
#define VCORE_LEASE_MARGIN_MS      2000

/* At most this many greylisted addresses wait for their re-probe at once;
 * beyond, a greylisted address is logged and not asked again early. (How
 * often one address is asked again: VSTORE_GREYLIST_TRIES.) */
#define VCORE_GREYLIST_TIMERS_MAX 10000

/* vcore_new - a core over cache (NULL: none; not owned) and engine (copied).
 * Holds a reference to conf. NULL when out of memory. */
struct vcore *vcore_new(struct conf *conf, struct cache *cache, const struct vcore_engine *engine);

/* vcore_set_conf - engine thread, at a reload: limits, lifetimes, budgets,
 * tags and policy come from fresh from now on (a reference is taken);
 * probes already running finish as they are. Returns the reference to the
 * previous configuration, which milter threads may still be reading: the
 * caller releases it once that cannot be (verify.c keeps it a while). */
struct conf *vcore_set_conf(struct vcore *core, struct conf *fresh);

/* vcore_free - the engine thread is stopped: cancel every probe and timer,
 * answer every waiting ticket with tempfail ("vemilter is stopping").
 * Tickets still held stay valid until released. */
void vcore_free(struct vcore *core);

/* vcore_run - engine thread, after wake: start what was queued. */
void vcore_run(struct vcore *core);

/* vcore_on_fact - engine thread: a late fact from the callout that probed
 * address (probe_env.on_fact; see callout.h): a domain fact is kept
 * (vstore_late_fact); a tempfail flagged OUTCOME_F_PROTOCOL is a
 * retraction: the session went out of step after the verdict was reported,
 * and what the probe taught is taken back (vstore_retract). */
void vcore_on_fact(struct vcore *core, const struct addr *address, const struct outcome *fact);

/* vcore_on_finished - engine thread: a reported probe of domain has closed
 * its last connection (probe_env.on_finished; only with reports_finished). */
void vcore_on_finished(struct vcore *core, const char *domain);

/* vcore_sweep - engine thread: drop expired cache records; how many. */
size_t vcore_sweep(struct vcore *core);

/* vcore_tidy - engine thread: forget idle domain records (no probe,
 * line, lookup or pause; their rate minute over, their mail hosts
 * expired) and idle client budgets. */
void vcore_tidy(struct vcore *core);

/* At most this many domain records at once: beyond, a new domain evicts
 * the least recently used idle one (one in use never is; while none is
 * idle the table grows past it, bounded by the probes in flight). */
#define VCORE_DOMAINS_MAX 20000

/* vcore_set_domains_max - lower the bound on domain records (tests). */
void vcore_set_domains_max(struct vcore *core, size_t max);

/* vcore_domain_records - domain records held now (tests, bench). */
size_t vcore_domain_records(struct vcore *core);

/* vcore_set_greylist_timers_max - lower the bound on pending greylist
 * re-probes (tests). */
void vcore_set_greylist_timers_max(struct vcore *core, size_t max);

/* vcore_limit_in_flight - lower max_probes_in_flight to max (the engine's
 * open-file limit, less a margin); engine thread or before it runs. */
void vcore_limit_in_flight(struct vcore *core, int max);

/* vcore_probe_objects - probes the core holds (queued, waiting in a
 * domain's line, or running): 0 once every queue has drained (tests). */
size_t vcore_probe_objects(struct vcore *core);

/* The ticket functions behind verify.h (same contracts). client: the
 * connecting client's address as text, for client_probe_rate (NULL: none). */
struct verify_ticket *vcore_submit(struct vcore *core, const struct addr *sender, const char *client);
bool vcore_wait(struct verify_ticket *t, int64_t deadline_ms, struct verify_result *out);
int64_t vcore_submitted_ms(const struct verify_ticket *t);
bool vcore_notify(struct verify_ticket *t, void (*fn)(void *arg), void *arg);
void vcore_notify_cancel(struct verify_ticket *t);
int64_t vcore_deferred_since(const struct verify_ticket *t);
void vcore_release(struct verify_ticket *t);
void vcore_get_stats(struct vcore *core, struct verify_stats *out);

#endif
