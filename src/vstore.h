/*
 * vstore.h - the verifier's rules for its cache: which record may answer a
 * request, and what a probe's outcome leaves behind.
 *
 * The verifier (vcore.c) owns threads, probes and waiting; this module owns
 * what is read from and written to the cache for it, on the keys cache.h
 * names ("a:" address, "t:" tagged stable form, "d:" domain facts, "h:"
 * probe hints). No locks of its own, no engine; every time is an argument.
 *
 * What may answer a request (vstore_lookup), in order:
 *  1. "a:<address>" fresh: served (a temporary answer with the address's
 *     deferral start; a no_domain answer only while the domain's no_domain
 *     fact, written with it, is there: once another address of the domain
 *     has answered, the domain exists). Stale and positive (valid, catch_all, unverifiable):
 *     served, with a background refresh. Stale and negative (invalid,
 *     no_domain: stale evidence never rejects) or temporary: not served;
 *     the record carries the deferral start over to the probe that follows.
 *  2. for a tagged sender, "t:<stable form>": a positive answer another
 *     address of the sender earned (served, refreshed when stale).
 *  3. "d:<domain>": a fresh fact is served; a temporary one also gives the
 *     address a record of its own, so its deferral start is kept. A stale
 *     positive fact is served and refreshed; a stale negative is not.
 *  4. nothing: the address is probed.
 *
 * What a probe leaves (vstore_store): the outcome under "a:" (a temporary
 * one continuing the address's deferral and greylist tries: cache.h); a
 * positive one also under "t:" for a tagged sender (flagged
 * OUTCOME_F_TAGGED; a 5xx is about one address and never goes there); a
 * fact about the domain under "d:" (never from an outcome flagged protocol
 * or loop); a definite answer deletes the domain facts it disproves
 * (no_domain, unreachable, blocked; catch-all when the domain proved not to
 * be); the hints learn not-catch-all and the fallback sender.
 *
 * What a retraction takes back (vstore_retract): the callout found the
 * session out of step after it had reported (callout.h): the address's
 * answer becomes a temporary protocol record, whatever it was; its
 * stable form's copy made from that answer, the domain's catch-all fact and
 * its hints (which that session may have taught) are deleted.
 */
#ifndef VEMILTER_VSTORE_H
#define VEMILTER_VSTORE_H

#include <stdbool.h>
#include <stdint.h>

#include "addr.h"
#include "cache.h"
#include "callout.h"
#include "conf.h"
#include "verify.h"

/* The cache and the lifetimes it is used with; neither owned. */
struct vstore {
	const struct conf *conf;
	struct cache *cache; /* NULL: no cache, nothing is served or kept */
	bool read_only;      /* vstore_lookup writes nothing (vemilter-check --explain) */
};

/* Records a background refresh stands for (stamped: cache_record_stamp_refresh). */
enum {
	VSTORE_STAMP_ADDRESS = 1 << 0, /* a:<address> */
	VSTORE_STAMP_TAGGED = 1 << 1,  /* t:<stable form> */
	VSTORE_STAMP_DOMAIN = 1 << 2,  /* d:<domain> */
};

/* A greylisted address is asked again at most this often in a row. */
#define VSTORE_GREYLIST_TRIES 3

enum vstore_lookup {
	VSTORE_ANSWER,   /* *out is the answer */
	VSTORE_PROBE,    /* nothing to serve: probe */
	VSTORE_WITHHELD, /* a stale record would have rejected, or was temporary: probe */
};

/* Which kind of cached answer it was (for the counters). */
enum vstore_hit {
	VSTORE_HIT_ADDRESS, /* the address's fresh record */
	VSTORE_HIT_STALE,   /* the address's stale positive record */
	VSTORE_HIT_TAGGED,  /* the stable form's record */
	VSTORE_HIT_DOMAIN,  /* a domain fact */
};

struct vstore_answer {
	struct outcome outcome;
	enum verify_source source;
	int64_t deferred_since_ms; /* temporary answers: the address's deferral start; not
	                            * answered: the start its stale temporary record carries
	                            * (what a probe that outlasts verify_budget continues), 0: none */
	enum vstore_hit hit;
	unsigned refresh; /* VSTORE_STAMP_* bits: queue a background refresh for them; 0: none */
};

/* vstore_lookup - what may answer sender (stable: its stable form, "" if
 * not tagged) at now. May write the address's record (unless read_only: a temporary domain
 * fact's deferral stamp). Not answered: only out->deferred_since_ms is set. */
enum vstore_lookup vstore_lookup(const struct vstore *s, const struct addr *sender, const char *stable,
                                 int64_t now, struct vstore_answer *out);

/* vstore_stamp - a background refresh of these records starts: each that
 * is still stale gets its next refresh one window on. True if any was. */
bool vstore_stamp(const struct vstore *s, const struct addr *address, const char *stable, unsigned stamps,
                  int64_t now);

/* Asked when a greylisted outcome is stored and the address may be asked
 * again: true if a re-probe was scheduled (then it is counted). tries: the
 * re-probes made once it has run; the re-probe hands it back to
 * vstore_store, so the count survives the temporary record's expiry. */
typedef bool (*vstore_greylist_fn)(void *arg, const struct addr *address, unsigned tries);

/* vstore_store - keep a probe's outcome for address (see the top). tries:
 * the greylist re-probes made so far when the probe is one (0: not one);
 * the count goes on from it or the address's record, whichever is more.
 * Returns the address's deferral start for a temporary outcome (now
 * without a cache), else 0. */
int64_t vstore_store(const struct vstore *s, const struct addr *address, const char *stable,
                     const struct outcome *o, unsigned tries, int64_t now, vstore_greylist_fn greylist,
                     void *arg);

/* vstore_carried_deferral - the deferral start of a temporary answer that
 * is not kept (our own limits): the address's, else now. */
int64_t vstore_carried_deferral(const struct vstore *s, const struct addr *address, int64_t now);

/* vstore_hints - how to probe the domain: skip the random RCPT when it is
 * known (fresh) not to be catch-all; start with the fallback sender when
 * it refuses the probe sender. */
void vstore_hints(const struct vstore *s, const char *domain, int64_t now, struct callout_hints *out);

/* vstore_late_fact - a domain fact learned after the verdict (callout.h's
 * on_fact): catch-all is stored as a fact and clears the not-catch-all
 * hint; not-catch-all sets the hint and clears a catch-all fact. */
void vstore_late_fact(const struct vstore *s, const char *domain, const struct outcome *fact, int64_t now);

/* vstore_retract - fact (OUTCOME_TEMPFAIL flagged OUTCOME_F_PROTOCOL): the
 * probe of address (stable: its stable form, "" if not tagged) went out of
 * step after its answer was reported; take back what it taught (see the
 * top). The address's new record continues its deferral. */
void vstore_retract(const struct vstore *s, const struct addr *address, const char *stable,
                    const struct outcome *fact, int64_t now);

/* vstore_transferable - may one address of a tagged sender give this
 * answer to another of its stable form? Positive answers only. */
bool vstore_transferable(const struct outcome *o);

#endif
