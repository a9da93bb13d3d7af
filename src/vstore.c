/*
 * vstore.c - the verifier's cache rules (vstore.h says which). Every
 * function is called with the cache (thread-safe) and the time; nothing
 * here keeps state.
 */
#include "vstore.h"

#include <string.h>

#include "log.h"

/* is_temporary - the probe could not find out this time */
static bool is_temporary(enum outcome_kind kind)
{
	return kind == OUTCOME_TEMPFAIL || kind == OUTCOME_BLOCKED;
}

/* is_positive - an answer that lets mail through: served even when stale */
static bool is_positive(enum outcome_kind kind)
{
	return kind == OUTCOME_VALID || kind == OUTCOME_CATCH_ALL || kind == OUTCOME_UNVERIFIABLE;
}

/* untrusted - the server broke the protocol or the MX is ourselves: the
 * outcome says nothing about the domain */
static bool untrusted(const struct outcome *o)
{
	return (o->flags & (OUTCOME_F_PROTOCOL | OUTCOME_F_LOOP)) != 0;
}

/* domain_fact - what an outcome says about its whole domain, if anything */
static bool domain_fact(const struct outcome *o)
{
	if (untrusted(o))
		return false;
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

/* vstore_transferable - see vstore.h */
bool vstore_transferable(const struct outcome *o)
{
	return is_positive(o->kind) && !untrusted(o);
}

/* deferral_of - when the address was first deferred, for a temporary record */
static int64_t deferral_of(const struct cache_record *rec)
{
	if (!is_temporary(rec->outcome.kind))
		return 0;
	return rec->deferred_since_ms > 0 ? rec->deferred_since_ms : rec->probed_at_ms;
}

/* answer - fill *out from a record */
static enum vstore_lookup answer(struct vstore_answer *out, const struct cache_record *rec,
                                 enum verify_source source, enum vstore_hit hit, int64_t deferred,
                                 unsigned refresh)
{
	out->outcome = rec->outcome;
	out->source = source;
	out->hit = hit;
	out->deferred_since_ms = deferred;
	out->refresh = refresh;
	return VSTORE_ANSWER;
}

/* domain_still_missing - is the domain's no_domain fact, written with an
 * address's no_domain record by the same probe, still there? Contrary
 * evidence (contrary_evidence) deletes it when another address answers. */
static bool domain_still_missing(const struct vstore *s, const char *domain, int64_t now)
{
	struct cache_record rec;
	char key[CACHE_KEY_MAX];
	cache_key_domain(domain, key, sizeof(key));
	return key[0] != '\0' && cache_get(s->cache, key, now, &rec) != CACHE_MISS &&
	       rec.outcome.kind == OUTCOME_NO_DOMAIN;
}

/* stamp_from_fact - a temporary domain fact answers an address: the
 * address gets a record of its own from it, continuing its deferral (prev:
 * its stale temporary record, or NULL); returns the deferral start */
static int64_t stamp_from_fact(const struct vstore *s, const struct addr *sender,
                               const struct cache_record *fact, const struct cache_record *prev, int64_t now)
{
	struct cache_record rec = *fact;
	char key[CACHE_KEY_MAX];
	rec.deferred_since_ms = 0;
	rec.tries = 0;
	cache_record_continue_deferral(s->conf, &rec, prev, now);
	cache_key_address(sender->normalized, key, sizeof(key));
	if (!s->read_only)
		cache_put(s->cache, key, &rec, now);
	return rec.deferred_since_ms;
}

/* vstore_lookup - see vstore.h */
enum vstore_lookup vstore_lookup(const struct vstore *s, const struct addr *sender, const char *stable,
                                 int64_t now, struct vstore_answer *out)
{
	/* Without a cache too: the caller reads the deferral start whatever
	 * the answer (an uninitialized one became a defer_limit accept). */
	out->deferred_since_ms = 0;
	if (s->cache == NULL)
		return VSTORE_PROBE;
	struct cache_record rec, prev;
	bool have_prev = false, withheld = false;
	char key[CACHE_KEY_MAX];

	cache_key_address(sender->normalized, key, sizeof(key));
	enum cache_status st = cache_get(s->cache, key, now, &rec);
	if (st == CACHE_HIT && rec.outcome.kind == OUTCOME_NO_DOMAIN &&
	    !domain_still_missing(s, sender->domain_ascii, now)) {
		/* Another address of the domain has answered since: the domain
		 * exists, and this address's NXDOMAIN is no evidence any more. */
		log_msg(LOG_DEBUG, "no_domain for %s not served: the domain answered since",
		        sender->normalized);
		withheld = true;
	} else if (st == CACHE_HIT) {
		return answer(out, &rec, VERIFY_CACHED, VSTORE_HIT_ADDRESS, deferral_of(&rec), 0);
	} else if (st == CACHE_STALE) {
		if (is_positive(rec.outcome.kind))
			return answer(out, &rec, VERIFY_STALE, VSTORE_HIT_STALE, 0, VSTORE_STAMP_ADDRESS);
		/* A stale negative never rejects; a stale temporary answer is
		 * asked again at once. Either keeps the deferral start. */
		prev = rec;
		have_prev = withheld = true;
		/* Known now, should no answer come in time (verify_budget). */
		out->deferred_since_ms = deferral_of(&prev);
	}

	if (stable[0] != '\0') {
		cache_key_tagged(stable, key, sizeof(key));
		st = cache_get(s->cache, key, now, &rec);
		if (st != CACHE_MISS && vstore_transferable(&rec.outcome) &&
		    (rec.outcome.flags & OUTCOME_F_TAGGED))
			return answer(out, &rec, st == CACHE_HIT ? VERIFY_CACHED : VERIFY_STALE,
			              VSTORE_HIT_TAGGED, 0, st == CACHE_HIT ? 0 : VSTORE_STAMP_TAGGED);
	}

	cache_key_domain(sender->domain_ascii, key, sizeof(key));
	st = cache_get(s->cache, key, now, &rec);
	if (st != CACHE_MISS && domain_fact(&rec.outcome)) {
		if (st == CACHE_HIT) {
			int64_t deferred = 0;
			if (is_temporary(rec.outcome.kind))
				deferred = stamp_from_fact(s, sender, &rec, have_prev ? &prev : NULL, now);
			return answer(out, &rec, VERIFY_DOMAIN_FACT, VSTORE_HIT_DOMAIN, deferred, 0);
		}
		if (is_positive(rec.outcome.kind))
			return answer(out, &rec, VERIFY_DOMAIN_FACT, VSTORE_HIT_DOMAIN, 0,
			              VSTORE_STAMP_DOMAIN);
		withheld = true;
	}
	return withheld ? VSTORE_WITHHELD : VSTORE_PROBE;
}

/* stamp - a refresh of the record under key starts: if it is still
 * stale, its next refresh is one window away, whatever the refresh finds.
 * True if it was stale (and is stamped now). */
static bool stamp(const struct vstore *s, const char *key, int64_t now)
{
	struct cache_record rec;
	if (key[0] == '\0' || cache_get(s->cache, key, now, &rec) != CACHE_STALE)
		return false;
	cache_record_stamp_refresh(s->conf, &rec, now);
	cache_put(s->cache, key, &rec, now);
	return true;
}

/* vstore_stamp - see vstore.h */
bool vstore_stamp(const struct vstore *s, const struct addr *address, const char *stable, unsigned stamps,
                  int64_t now)
{
	char key[CACHE_KEY_MAX];
	bool any = false;
	if (s->cache == NULL)
		return false;
	if (stamps & VSTORE_STAMP_ADDRESS) {
		cache_key_address(address->normalized, key, sizeof(key));
		any |= stamp(s, key, now);
	}
	if ((stamps & VSTORE_STAMP_TAGGED) && stable[0] != '\0') {
		cache_key_tagged(stable, key, sizeof(key));
		any |= stamp(s, key, now);
	}
	if (stamps & VSTORE_STAMP_DOMAIN) {
		cache_key_domain(address->domain_ascii, key, sizeof(key));
		any |= stamp(s, key, now);
	}
	return any;
}

/* update_hints - set and clear flags of the domain's probe hints. Flags
 * are only carried over from a fresh hint record; a clear keeps the old
 * record's lifetimes, a set starts new ones (a valid answer's). */
static void update_hints(const struct vstore *s, const char *domain, unsigned set, unsigned clear,
                         int64_t now)
{
	const unsigned hint_flags = OUTCOME_F_NOT_CATCHALL | OUTCOME_F_FALLBACK_SENDER;
	struct cache_record old, rec;
	char key[CACHE_KEY_MAX];
	cache_key_hints(domain, key, sizeof(key));
	if (key[0] == '\0')
		return;
	enum cache_status st = cache_get(s->cache, key, now, &old);
	if (set == 0) {
		if (st == CACHE_MISS || !(old.outcome.flags & clear))
			return;
		old.outcome.flags &= ~clear & hint_flags;
		if (old.outcome.flags == 0)
			cache_del(s->cache, key);
		else
			cache_put(s->cache, key, &old, now);
		return;
	}
	unsigned keep = st == CACHE_HIT ? old.outcome.flags & hint_flags : 0;
	struct outcome h = {0};
	outcome_set(&h, OUTCOME_VALID, STAGE_NONE, 0, NULL, NULL, "probe hints for the domain");
	h.flags = (keep | set) & ~clear & hint_flags;
	cache_record_make(s->conf, &h, now, &rec);
	cache_put(s->cache, key, &rec, now);
}

/* learn_hints - what a probe's outcome says about how to probe the domain */
static void learn_hints(const struct vstore *s, const char *domain, const struct outcome *o, int64_t now)
{
	if (untrusted(o))
		return;
	unsigned set = o->flags & (OUTCOME_F_NOT_CATCHALL | OUTCOME_F_FALLBACK_SENDER);
	unsigned clear = o->kind == OUTCOME_CATCH_ALL ? OUTCOME_F_NOT_CATCHALL : 0;
	if (set != 0 || clear != 0)
		update_hints(s, domain, set, clear, now);
}

/* vstore_hints - see vstore.h */
void vstore_hints(const struct vstore *s, const char *domain, int64_t now, struct callout_hints *out)
{
	struct cache_record rec;
	char key[CACHE_KEY_MAX];
	memset(out, 0, sizeof(*out));
	if (s->cache == NULL)
		return;
	cache_key_hints(domain, key, sizeof(key));
	enum cache_status st = cache_get(s->cache, key, now, &rec);
	if (st == CACHE_MISS)
		return;
	out->skip_catchall = st == CACHE_HIT && (rec.outcome.flags & OUTCOME_F_NOT_CATCHALL);
	out->use_fallback_sender = (rec.outcome.flags & OUTCOME_F_FALLBACK_SENDER) != 0;
}

/* contrary_evidence - a definite answer for an address of the domain
 * clears the facts it disproves: no_domain, unreachable and blocked (the
 * domain answered); catch-all when the domain proved not catch-all */
static void contrary_evidence(const struct vstore *s, const char *domain, const struct outcome *o,
                              int64_t now)
{
	if (untrusted(o))
		return;
	bool definite =
	        o->kind == OUTCOME_VALID || o->kind == OUTCOME_INVALID || o->kind == OUTCOME_CATCH_ALL;
	bool not_catchall = (o->flags & OUTCOME_F_NOT_CATCHALL) != 0;
	if (!definite && !not_catchall)
		return;
	struct cache_record rec;
	char key[CACHE_KEY_MAX];
	cache_key_domain(domain, key, sizeof(key));
	if (cache_get(s->cache, key, now, &rec) == CACHE_MISS)
		return;
	enum outcome_kind k = rec.outcome.kind;
	if ((definite && (k == OUTCOME_NO_DOMAIN || is_temporary(k))) ||
	    (not_catchall && k == OUTCOME_CATCH_ALL)) {
		cache_del(s->cache, key);
		log_msg(LOG_DEBUG, "domain fact %s for %s cleared: an address answered %s", outcome_name(k),
		        domain, outcome_name(o->kind));
	}
}

/* vstore_carried_deferral - see vstore.h */
int64_t vstore_carried_deferral(const struct vstore *s, const struct addr *address, int64_t now)
{
	struct cache_record rec;
	char key[CACHE_KEY_MAX];
	if (s->cache == NULL)
		return now;
	cache_key_address(address->normalized, key, sizeof(key));
	if (cache_get(s->cache, key, now, &rec) != CACHE_MISS && is_temporary(rec.outcome.kind))
		return deferral_of(&rec);
	return now;
}

/* vstore_store - see vstore.h */
int64_t vstore_store(const struct vstore *s, const struct addr *address, const char *stable,
                     const struct outcome *o, unsigned tries, int64_t now, vstore_greylist_fn greylist,
                     void *arg)
{
	if (s->cache == NULL)
		return is_temporary(o->kind) ? now : 0;
	struct cache_record rec, prev;
	char key[CACHE_KEY_MAX];
	cache_record_make(s->conf, o, now, &rec);
	cache_key_address(address->normalized, key, sizeof(key));
	bool have_prev = cache_get(s->cache, key, now, &prev) != CACHE_MISS;
	cache_record_continue_deferral(s->conf, &rec, have_prev ? &prev : NULL, now);
	/* The re-probe's own count: the temporary record that held it may have
	 * expired (temporary_ttl, defer_limit 0) just when the re-probe ran. */
	if (is_temporary(o->kind) && tries > rec.tries)
		rec.tries = tries;
	/* One re-probe of a greylisted address, if this record is kept (a
	 * greylisted refresh of an answer leaves the answer as it is). */
	if (is_temporary(o->kind) && (o->flags & OUTCOME_F_GREYLIST) && rec.tries < VSTORE_GREYLIST_TRIES &&
	    (!have_prev || cache_record_may_replace(&prev, &rec, now)) && greylist != NULL &&
	    greylist(arg, address, rec.tries + 1))
		rec.tries++;
	cache_put(s->cache, key, &rec, now);

	if (stable[0] != '\0' && vstore_transferable(o)) {
		struct cache_record copy = rec;
		copy.outcome.flags |= OUTCOME_F_TAGGED;
		cache_key_tagged(stable, key, sizeof(key));
		cache_put(s->cache, key, &copy, now);
	}
	contrary_evidence(s, address->domain_ascii, o, now);
	if (domain_fact(o)) {
		struct cache_record fact;
		cache_record_make(s->conf, o, now, &fact);
		cache_key_domain(address->domain_ascii, key, sizeof(key));
		cache_put(s->cache, key, &fact, now);
	}
	learn_hints(s, address->domain_ascii, o, now);
	return is_temporary(o->kind) ? rec.deferred_since_ms : 0;
}

/* vstore_late_fact - see vstore.h */
void vstore_late_fact(const struct vstore *s, const char *domain, const struct outcome *fact, int64_t now)
{
	char key[CACHE_KEY_MAX];
	if (s->cache == NULL || domain == NULL || domain[0] == '\0' || untrusted(fact))
		return;
	if (fact->kind == OUTCOME_CATCH_ALL) {
		struct cache_record rec;
		cache_record_make(s->conf, fact, now, &rec);
		cache_key_domain(domain, key, sizeof(key));
		cache_put(s->cache, key, &rec, now);
		update_hints(s, domain, 0, OUTCOME_F_NOT_CATCHALL, now);
		log_msg(LOG_DEBUG, "domain fact for %s: catch_all (learned after the verdict)", domain);
	} else if (fact->kind == OUTCOME_VALID && (fact->flags & OUTCOME_F_NOT_CATCHALL)) {
		update_hints(s, domain, OUTCOME_F_NOT_CATCHALL, 0, now);
		contrary_evidence(s, domain, fact, now);
		log_msg(LOG_DEBUG, "domain hint for %s: not catch-all (learned after the verdict)", domain);
	}
}

/* put_over - store rec under key whatever is there: cache_put would keep a
 * valid answer over a temporary record (cache_record_may_replace), which is
 * right for a failed probe but not for an answer taken back. */
static void put_over(const struct vstore *s, const char *key, const struct cache_record *rec, int64_t now)
{
	cache_del(s->cache, key);
	cache_put(s->cache, key, rec, now);
}

/* vstore_retract - see vstore.h */
void vstore_retract(const struct vstore *s, const struct addr *address, const char *stable,
                    const struct outcome *fact, int64_t now)
{
	struct cache_record rec, prev, copy;
	char key[CACHE_KEY_MAX];
	if (s->cache == NULL)
		return;
	struct outcome o = *fact;
	o.kind = OUTCOME_TEMPFAIL;
	o.flags = fact->flags & (OUTCOME_F_PROTOCOL | OUTCOME_F_LOOP);
	o.ttl_cap_ms = 0;
	cache_record_make(s->conf, &o, now, &rec);
	cache_key_address(address->normalized, key, sizeof(key));
	bool have_prev = cache_get(s->cache, key, now, &prev) != CACHE_MISS;
	cache_record_continue_deferral(s->conf, &rec, have_prev ? &prev : NULL, now);
	put_over(s, key, &rec, now);
	/* The stable form's copy is written with the address's record, the same
	 * probe time: one with another time is another address's answer. */
	if (have_prev && stable[0] != '\0') {
		cache_key_tagged(stable, key, sizeof(key));
		if (cache_get(s->cache, key, now, &copy) != CACHE_MISS &&
		    copy.probed_at_ms == prev.probed_at_ms)
			cache_del(s->cache, key);
	}
	/* The same session may have taught them. */
	cache_key_domain(address->domain_ascii, key, sizeof(key));
	if (cache_get(s->cache, key, now, &copy) != CACHE_MISS && copy.outcome.kind == OUTCOME_CATCH_ALL)
		cache_del(s->cache, key);
	cache_key_hints(address->domain_ascii, key, sizeof(key));
	if (key[0] != '\0')
		cache_del(s->cache, key);
	log_msg(LOG_NOTICE, "answer for %s taken back (%s): cached %s replaced by tempfail",
	        address->normalized, fact->reason, have_prev ? outcome_name(prev.outcome.kind) : "nothing");
}
