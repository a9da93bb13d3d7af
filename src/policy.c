/*
 * policy.c - from what we know about a sender to what the MTA is told.
 *
 * The questions, in order: is the sender domain on sender_domain_blocklist
 * (reject without a probe)? Does the most specific domain_overrides entry
 * covering it say skip, or name an action for this outcome? Otherwise the
 * global <outcome>_action applies. The most specific override wins whole:
 * its rules are not merged with those of a parent domain's entry.
 *
 * Whatever the configuration holds (conf.c refuses it, and this file clamps
 * it again), blocked, tempfail and an unfinished probe never reject: none of
 * them says anything about the address. An outcome whose action is tempfail
 * (and the budget's tempfail, when the verifier knew the address's deferral
 * start at submit) turns into accept once the address has been deferred for
 * longer than defer_limit (the verifier says since when; the caller says
 * what time it is). While the verifier finds our own probes failing
 * (health.h), such a tempfail is accepted too (policy_for_self_health).
 * dry_run is applied last, so the intended verdict and its reply
 * survive for the log.
 *
 * Pure: reads the immutable struct conf, allocates nothing, does no I/O.
 */
#include "policy.h"

#include <stddef.h>
#include <string.h>

#include "addr.h"

/* policy_action_name - "accept", "tempfail" or "reject" */
const char *policy_action_name(enum policy_action action)
{
	switch (action) {
	case POLICY_ACCEPT:
		return "accept";
	case POLICY_TEMPFAIL:
		return "tempfail";
	case POLICY_REJECT:
		return "reject";
	}
	return "unknown";
}

/* to_policy - a configured action as a policy action */
static enum policy_action to_policy(enum conf_action action)
{
	switch (action) {
	case CONF_TEMPFAIL:
		return POLICY_TEMPFAIL;
	case CONF_REJECT:
		return POLICY_REJECT;
	case CONF_ACCEPT:
		break;
	}
	return POLICY_ACCEPT;
}

/* never_rejects - outcomes that say nothing about the address */
static bool never_rejects(enum outcome_kind kind)
{
	return kind == OUTCOME_BLOCKED || kind == OUTCOME_TEMPFAIL;
}

/* blocklist_entry - the most specific blocklist entry covering domain, or NULL */
static const char *blocklist_entry(const struct conf *conf, const char *domain)
{
	const struct conf_strings *l = &conf->sender_domain_blocklist;
	const char *best = NULL;
	size_t best_len = 0;

	for (size_t i = 0; i < l->count; i++) {
		size_t len = strlen(l->items[i]);
		if (len > best_len && addr_domain_within(domain, l->items[i])) {
			best = l->items[i];
			best_len = len;
		}
	}
	return best;
}

/* override_entry - the most specific domain_overrides entry covering domain, or NULL */
static const struct conf_override *override_entry(const struct conf *conf, const char *domain)
{
	const struct conf_overrides *l = &conf->domain_overrides;
	const struct conf_override *best = NULL;
	size_t best_len = 0;

	for (size_t i = 0; i < l->count; i++) {
		size_t len = strlen(l->items[i].domain);
		if (len > best_len && addr_domain_within(domain, l->items[i].domain)) {
			best = &l->items[i];
			best_len = len;
		}
	}
	return best;
}

/* decide - fill out from the intended action and its reply, applying dry_run;
 * nothing is deferred */
static void decide(const struct conf *conf, enum policy_action intended, const struct reply_template *reply,
                   struct policy_verdict *out)
{
	out->deferred = false;
	out->deferred_for_ms = 0;
	out->defer_limit = false;
	out->self_health = false;
	out->intended = intended;
	out->reply = intended == POLICY_ACCEPT ? NULL : reply;
	out->dry_run = conf->dry_run && intended != POLICY_ACCEPT;
	out->action = out->dry_run ? POLICY_ACCEPT : intended;
}

/* policy_for_domain - blocklist first, then the most specific override */
enum policy_domain policy_for_domain(const struct conf *conf, const char *domain, const char **matched)
{
	const char *listed = domain != NULL ? blocklist_entry(conf, domain) : NULL;
	const struct conf_override *o = domain != NULL ? override_entry(conf, domain) : NULL;

	if (matched != NULL)
		*matched = listed != NULL ? listed : o != NULL ? o->domain : NULL;
	if (listed != NULL)
		return POLICY_DOMAIN_BLOCKLISTED;
	return o != NULL && o->skip ? POLICY_DOMAIN_SKIP : POLICY_DOMAIN_VERIFY;
}

/* outcome_action - the configured action for kind at domain (override first) */
static enum policy_action outcome_action(const struct conf *conf, const char *domain, enum outcome_kind kind)
{
	const struct conf_override *o = domain != NULL ? override_entry(conf, domain) : NULL;

	if ((unsigned)kind >= OUTCOME_KIND_COUNT || (o != NULL && o->skip))
		return POLICY_ACCEPT;
	enum policy_action action =
	        to_policy(o != NULL && o->has_action[kind] ? o->action[kind] : conf->outcome_action[kind]);
	return action == POLICY_REJECT && never_rejects(kind) ? POLICY_ACCEPT : action;
}

/* reject_reply - the reply rejecting outcome kind */
static const struct reply_template *reject_reply(const struct conf *conf, enum outcome_kind kind)
{
	if (kind == OUTCOME_INVALID)
		return &conf->invalid_reply;
	if (kind == OUTCOME_NO_DOMAIN)
		return &conf->no_domain_reply;
	return &conf->reject_reply;
}

/* policy_for_outcome - the verdict for an outcome at this domain */
void policy_for_outcome(const struct conf *conf, const char *domain, enum outcome_kind kind,
                        struct policy_verdict *out)
{
	policy_for_verified(conf, domain, kind, 0, 0, out);
}

/* defer - a tempfail for an address deferred since deferred_since_ms (0:
 * never) becomes accept past defer_limit; then dry_run, as decide */
static void defer(const struct conf *conf, enum policy_action action, const struct reply_template *reply,
                  int64_t deferred_since_ms, int64_t now_ms, struct policy_verdict *out)
{
	bool deferred = action == POLICY_TEMPFAIL && deferred_since_ms > 0;
	/* A clock that went back counts as no time at all: never past the limit. */
	int64_t deferred_for = deferred && now_ms > deferred_since_ms ? now_ms - deferred_since_ms : 0;
	bool over_limit = deferred && conf->defer_limit_ms > 0 && deferred_for > conf->defer_limit_ms;

	decide(conf, over_limit ? POLICY_ACCEPT : action, reply, out);
	out->deferred = deferred;
	out->deferred_for_ms = deferred_for;
	out->defer_limit = over_limit;
}

/* policy_for_verified - the verdict for an outcome, with defer_limit at now_ms */
void policy_for_verified(const struct conf *conf, const char *domain, enum outcome_kind kind,
                         int64_t deferred_since_ms, int64_t now_ms, struct policy_verdict *out)
{
	enum policy_action action = outcome_action(conf, domain, kind);

	defer(conf, action, action == POLICY_REJECT ? reject_reply(conf, kind) : &conf->tempfail_reply,
	      deferred_since_ms, now_ms, out);
}

/* policy_for_budget - no answer within verify_budget: tempfail or accept,
 * never reject; a tempfail gives way to defer_limit as any other does */
void policy_for_budget(const struct conf *conf, int64_t deferred_since_ms, int64_t now_ms,
                       struct policy_verdict *out)
{
	enum policy_action action = to_policy(conf->budget_action);

	defer(conf, action == POLICY_REJECT ? POLICY_TEMPFAIL : action, &conf->budget_reply,
	      deferred_since_ms, now_ms, out);
}

/* policy_for_self_health - while unhealthy, a tempfail that says nothing
 * about the address is accepted */
void policy_for_self_health(const struct conf *conf, bool unhealthy, bool budget, enum outcome_kind kind,
                            struct policy_verdict *out)
{
	bool temporary = budget || kind == OUTCOME_TEMPFAIL || kind == OUTCOME_BLOCKED;
	if (!conf->self_health || !unhealthy || !temporary || out->intended != POLICY_TEMPFAIL)
		return;
	out->intended = POLICY_ACCEPT;
	out->action = POLICY_ACCEPT;
	out->reply = NULL;
	out->dry_run = false;
	out->self_health = true;
}

/* policy_for_bad_syntax - a sender that does not parse is rejected */
void policy_for_bad_syntax(const struct conf *conf, struct policy_verdict *out)
{
	decide(conf, POLICY_REJECT, &conf->bad_syntax_reply, out);
}

/* policy_for_blocklist - a blocklisted sender domain is rejected */
void policy_for_blocklist(const struct conf *conf, struct policy_verdict *out)
{
	decide(conf, POLICY_REJECT, &conf->blocklist_reply, out);
}
