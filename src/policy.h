/*
 * policy.h - from what we know about a sender to what the MTA is told.
 *
 * Two questions, both pure and answered from the configuration alone:
 *  - before any probe: does a per-domain override say skip, or the domain
 *    blocklist say reject? (policy_for_domain)
 *  - after verification: which action, with which SMTP reply, does this
 *    outcome get for this domain, and has the address been deferred for
 *    longer than defer_limit? (policy_for_verified; policy_for_budget when
 *    the answer did not come within verify_budget)
 * and the verdicts that need no probe (policy_for_bad_syntax,
 * policy_for_blocklist).
 * Actions are accept, tempfail or reject. By default only the definite
 * negatives (invalid, no_domain) reject and a remote temporary failure
 * tempfails, until defer_limit; blocked, tempfail and an unfinished probe
 * never reject, whatever the configuration says. dry_run turns every reject
 * and tempfail into an accept, and says so, so the verdict can still be
 * logged.
 */
#ifndef VEMILTER_POLICY_H
#define VEMILTER_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "conf.h"
#include "outcome.h"
#include "reply.h"

enum policy_action {
	POLICY_ACCEPT,
	POLICY_TEMPFAIL,
	POLICY_REJECT,
};

enum policy_domain {
	POLICY_DOMAIN_VERIFY,      /* nothing special: verify */
	POLICY_DOMAIN_SKIP,        /* an override says: never verify, accept */
	POLICY_DOMAIN_BLOCKLISTED, /* the blocklist says: reject without a probe */
};

struct policy_verdict {
	enum policy_action action;          /* what the MTA is told (accept under dry_run) */
	enum policy_action intended;        /* what the policy decided, before dry_run */
	const struct reply_template *reply; /* intended tempfail/reject: the template to expand (under
	                                     * dry_run, the one that would have been sent); else NULL */
	bool dry_run;                       /* intended != action because of dry_run */
	bool deferred;                      /* the outcome's action was tempfail and the address has
	                                     * been deferred before: deferred_for_ms says how long */
	int64_t deferred_for_ms;            /* since the address's first temporary outcome (>= 0) */
	bool defer_limit;                   /* that tempfail became accept: deferred_for_ms is over
	                                     * defer_limit (intended is then accept) */
	bool self_health;                   /* a tempfail became accept because our own probes are
	                                     * failing (policy_for_self_health) */
};

const char *policy_action_name(enum policy_action action);

/* policy_for_domain - overrides and blocklist for a sender domain (A-label,
 * lower case); *matched, if not NULL, names the entry that decided: the
 * blocklist entry, else the most specific override entry, else NULL. The
 * blocklist wins over any override. */
enum policy_domain policy_for_domain(const struct conf *conf, const char *domain, const char **matched);

/* policy_for_outcome - the verdict for an outcome at this domain, after any
 * per-domain override of that outcome's action. */
void policy_for_outcome(const struct conf *conf, const char *domain, enum outcome_kind kind,
                        struct policy_verdict *out);

/* policy_for_verified - policy_for_outcome, then defer_limit, at now_ms
 * (wall clock). deferred_since_ms is the wall clock of the address's first
 * temporary outcome in a row, as the verifier reports it (0: none). When the
 * outcome's action is tempfail, the address has been deferred before and
 * now_ms - deferred_since_ms > defer_limit (not 0), the verdict is accept
 * (out->defer_limit): a real MTA that keeps retrying is never refused for
 * ever because the sender's servers cannot be asked. dry_run is applied
 * after that, to what is then intended. */
void policy_for_verified(const struct conf *conf, const char *domain, enum outcome_kind kind,
                         int64_t deferred_since_ms, int64_t now_ms, struct policy_verdict *out);

/* policy_for_budget - the verdict when no answer came within verify_budget
 * (budget_action, never reject), then defer_limit as in
 * policy_for_verified: deferred_since_ms is the deferral start the verifier
 * knew at submit (verify_deferred_since; 0: none). A sender whose probes
 * always outlast the budget (an MX that drops packets) is so accepted once
 * past defer_limit, like any other deferred sender. */
void policy_for_budget(const struct conf *conf, int64_t deferred_since_ms, int64_t now_ms,
                       struct policy_verdict *out);

/* policy_for_self_health - fail open while our side is unhealthy
 * (health.h): when self_health is on and unhealthy is true, a verdict that
 * intends tempfail for an outcome that says nothing about the address
 * (tempfail, blocked) or for the budget (budget true: no answer within
 * verify_budget) becomes accept (out->self_health): our own trouble must
 * never defer the world's mail. Definite answers (invalid, no_domain,
 * valid, catch_all, unverifiable) keep their verdict. Call it after
 * policy_for_verified / policy_for_budget. */
void policy_for_self_health(const struct conf *conf, bool unhealthy, bool budget, enum outcome_kind kind,
                            struct policy_verdict *out);

/* policy_for_bad_syntax - the verdict for a sender address that does not
 * parse: reject with bad_syntax_reply (accept under dry_run). */
void policy_for_bad_syntax(const struct conf *conf, struct policy_verdict *out);

/* policy_for_blocklist - the verdict for a blocklisted sender domain. */
void policy_for_blocklist(const struct conf *conf, struct policy_verdict *out);

#endif
