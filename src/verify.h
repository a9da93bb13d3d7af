/*
 * verify.h - one verification per sender, shared by everyone who asks.
 *
 * The verifier owns the engine thread (one libevent loop running every
 * probe) and the cache. A milter thread calls verify_submit() at MAIL FROM:
 * the cache answers at once when it can (address record, then domain facts:
 * catch-all, no_domain, unreachable, blocked); otherwise the request joins
 * the probe already running for that address, or starts one. At RCPT the
 * thread calls verify_wait() with its deadline; a probe that outlives it goes
 * on and fills the cache, so the sender's retry is answered at once. A
 * stale positive answer is served and refreshed by one background probe (at
 * most one a refresh window); a stale answer that would reject, or a stale
 * temporary one, is never served: the address is probed again and the
 * caller waits for it. A greylisted probe is asked again in the background
 * after greylist_retry. Temporary answers carry the wall-clock time the
 * address was first deferred (for defer_limit). Tagged senders (BATV, SRS,
 * VERP) share answers through their stable form (tags.h).
 *
 * The rules live in vcore.c (unit-tested with a fake engine); this file
 * owns the engine thread and wires vcore to callouts and libevent timers.
 *
 * Threads: submit/wait/release from any thread; probes run on the engine
 * thread only. Tickets are reference-counted; each submit needs a release.
 */
#ifndef VEMILTER_VERIFY_H
#define VEMILTER_VERIFY_H

#include <stdbool.h>
#include <stdint.h>

#include "addr.h"
#include "conf.h"
#include "outcome.h"

struct verifier;
struct verify_ticket;

enum verify_source {
	VERIFY_PROBED,      /* a probe ran for this request (or one it joined) */
	VERIFY_CACHED,      /* a fresh cached answer for the address */
	VERIFY_STALE,       /* a cached answer past its refresh time; a refresh runs */
	VERIFY_DOMAIN_FACT, /* what the cache knows about the domain */
};

struct verify_result {
	struct outcome outcome;
	enum verify_source source;
	int64_t elapsed_ms;        /* from submit to the answer */
	int64_t deferred_since_ms; /* wall clock of the address's first temporary outcome in a row
	                            * (for defer_limit); 0: not deferred */
};

#define VERIFY_BUDGET_KINDS 5 /* client, domain rate, domain pause, in flight, wait */

struct verify_stats {
	uint64_t probes;           /* callouts started (including refreshes) */
	uint64_t refreshes;        /* of those, background refreshes of stale answers */
	uint64_t joined;           /* requests that joined a probe in flight */
	uint64_t cache_hits;       /* fresh address answers */
	uint64_t stale_hits;       /* stale answers served */
	uint64_t domain_facts;     /* answers from domain records */
	uint64_t in_flight;        /* probes asked for and not answered: queued, waiting in a
	                            * domain's line, or running */
	uint64_t running;          /* of those, the ones the engine runs (max_probes_in_flight) */
	uint64_t greylist_retries; /* probes started again because the last one was greylisted */
	uint64_t stale_withheld;   /* stale answers not served (would reject, or temporary): re-probed */
	uint64_t tagged_hits;      /* tagged senders answered through their stable form */
	uint64_t over_budget;      /* requests answered tempfail by a budget, without a probe */
	uint64_t over_budget_by[VERIFY_BUDGET_KINDS]; /* ... by budget (verify_budget_name) */
	uint64_t misses;       /* requests the (local) cache could not answer; shared_hits among them */
	uint64_t shared_hits;  /* requests the shared tier answered after a local miss */
	uint64_t shared_waits; /* probes that waited for another host's (its lease held) */
};

/* verify_budget_name - the directive of budget kind i (< VERIFY_BUDGET_KINDS) */
const char *verify_budget_name(int i);

/* verifier_new - start the engine thread and open the cache (conf->cache;
 * a cache that cannot be opened is logged and verification runs without
 * it). Holds a reference to conf. NULL with a reason in why. */
struct verifier *verifier_new(struct conf *conf, char *why, size_t why_size);

/* verifier_free - stop the engine thread, cancel probes, close the cache.
 * Tickets still held stay valid until released. */
void verifier_free(struct verifier *v);

/* verify_submit - start (or join) the verification of sender (not the null
 * sender) for the client at address client (text; NULL: unknown, no
 * client budget). A request over a budget (client_probe_rate,
 * domain_probe_rate, domain_invalid_limit, max_probes_in_flight) gets a
 * cached answer or domain fact if there is one, else tempfail, never a
 * reject and never cached. NULL only when out of memory. */
struct verify_ticket *verify_submit(struct verifier *v, const struct addr *sender, const char *client);

/* verify_wait - wait until the answer is there or the monotonic clock
 * (clock_mono_ms) reaches deadline_ms; true with *out filled if answered. */
bool verify_wait(struct verify_ticket *t, int64_t deadline_ms, struct verify_result *out);

/* verify_notify - instead of waiting (an event loop must not block): fn(arg)
 * is called once, on whichever thread answers the ticket and under the
 * verifier's lock (so it must only wake its own loop: event_active, a
 * queue), when the answer is there. False: already answered (nothing will
 * be called; verify_wait(t, 0, ...) has it). One notification per ticket. */
bool verify_notify(struct verify_ticket *t, void (*fn)(void *arg), void *arg);

/* verify_notify_cancel - no call after it returns (one in progress has
 * finished). Before releasing a ticket whose notification may be armed. */
void verify_notify_cancel(struct verify_ticket *t);

/* verify_submitted_ms - when the ticket was submitted (clock_mono_ms). */
int64_t verify_submitted_ms(const struct verify_ticket *t);

/* verify_deferred_since - the address's deferral start known at submit (wall
 * clock; 0: none): what its withheld stale temporary record carried, and
 * what the probe will continue. For defer_limit when no answer comes within
 * verify_budget (a probe slower than the budget would else defer the
 * sender for ever). */
int64_t verify_deferred_since(const struct verify_ticket *t);

void verify_release(struct verify_ticket *t);

/* verify_unhealthy - self-health (health.h) finds most probes to many
 * hosts failing on our side; any thread. false when self_health = no. */
bool verify_unhealthy(struct verifier *v);

void verify_get_stats(struct verifier *v, struct verify_stats *out);

/* verify_reload - SIGHUP: probes started from now on use fresh (limits,
 * lifetimes, budgets, timeouts, probe settings, helo_name, dns_servers,
 * mx_host_overrides, policy); those running finish under the configuration
 * they started with, which is kept until they are done. Waits for the
 * engine thread to switch. False (why; nothing changed) when it cannot,
 * e.g. the new dns_servers cannot be used. Main thread. */
bool verify_reload(struct verifier *v, struct conf *fresh, char *why, size_t why_size);

/* verify_drain - at a stop, once no milter session is left: wait at most
 * bound_ms for the probes in flight to finish, so that their answers reach
 * the cache and a retry after the restart is answered from it. True when
 * none is left. Any thread but the engine's. */
bool verify_drain(struct verifier *v, int64_t bound_ms);

/* verify_count_verdict - n verdicts given (action, reason), for the metrics
 * (metrics_listen); any thread; nothing when metrics are off */
void verify_count_verdict(struct verifier *v, const char *action, const char *reason, unsigned n);

const char *verify_source_name(enum verify_source source);

#endif
