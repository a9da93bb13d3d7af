/*
 * test_policy.c - verdicts: the default action of every outcome, global
 * actions, every form of domain_overrides (skip, verify, OUTCOME=ACTION),
 * subdomains and most-specific-wins, the blocklist and its precedence,
 * verify_budget, bad syntax, dry_run, defer_limit at explicit times (under,
 * at and over the limit, no limit, never deferred, a clock gone back, dry_run,
 * other actions; for an answer and for verify_budget's tempfail), and "blocked and tempfail never reject"
 * even against a configuration that says otherwise.
 *
 * Configurations are loaded from text through conf_load_text(), so these
 * tests see the same struct conf the daemon does.
 */
#include <stdio.h>
#include <string.h>

#include "policy.h"
#include "unit.h"

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Which configured reply a verdict should carry. */
enum which {
	R_NONE,
	R_INVALID,
	R_NO_DOMAIN,
	R_REJECT,
	R_TEMPFAIL,
	R_BUDGET,
	R_BLOCKLIST,
	R_BAD_SYNTAX,
};

/* first_error - conf_error_fn keeping the first message */
static void first_error(void *arg, const char *message)
{
	char *first = arg;

	if (first[0] == '\0')
		snprintf(first, 1200, "%s", message);
}

/* load - a configuration from text; fails the test on any error */
static struct conf *load(const char *text)
{
	char first[1200] = "";
	struct conf *c = conf_load_text("t.conf", text, first_error, first);

	ck_assert_msg(c != NULL, "configuration rejected: %s", first);
	return c;
}

/* reply_of - the template of c that which names, NULL for R_NONE */
static const struct reply_template *reply_of(const struct conf *c, enum which which)
{
	switch (which) {
	case R_INVALID:
		return &c->invalid_reply;
	case R_NO_DOMAIN:
		return &c->no_domain_reply;
	case R_REJECT:
		return &c->reject_reply;
	case R_TEMPFAIL:
		return &c->tempfail_reply;
	case R_BUDGET:
		return &c->budget_reply;
	case R_BLOCKLIST:
		return &c->blocklist_reply;
	case R_BAD_SYNTAX:
		return &c->bad_syntax_reply;
	case R_NONE:
		break;
	}
	return NULL;
}

/* check_verdict - v is intended (accepted instead when dry), with reply which */
static void check_verdict(const struct conf *c, const struct policy_verdict *v, enum policy_action intended,
                          enum which which, bool dry, const char *what)
{
	ck_assert_msg(v->intended == intended, "%s: intended %s, want %s", what,
	              policy_action_name(v->intended), policy_action_name(intended));
	ck_assert_msg(v->action == (dry ? POLICY_ACCEPT : intended), "%s: action %s", what,
	              policy_action_name(v->action));
	ck_assert_msg(v->dry_run == dry, "%s: dry_run %d", what, v->dry_run);
	ck_assert_msg(v->reply == reply_of(c, which), "%s: wrong reply template", what);
}

/* check_not_deferred - a verdict that defer_limit has nothing to do with */
static void check_not_deferred(const struct policy_verdict *v, const char *what)
{
	ck_assert_msg(!v->deferred && v->deferred_for_ms == 0 && !v->defer_limit,
	              "%s: deferred %d for %lld ms, defer_limit %d", what, v->deferred,
	              (long long)v->deferred_for_ms, v->defer_limit);
}

static const char overrides_conf[] = "domain_overrides = example.net skip,"
                                     " outlook.com catch_all=accept valid=accept,"
                                     " strict.example catch_all=reject unverifiable=tempfail invalid=accept,"
                                     " sub.strict.example verify,"
                                     " deep.sub.strict.example TEMPFAIL=tempfail Blocked=Tempfail,"
                                     " parent.example skip,"
                                     " child.parent.example verify,"
                                     " bücher.example no_domain=tempfail\n";

static const char globals_conf[] = "valid_action = tempfail\n"
                                   "invalid_action = tempfail\n"
                                   "no_domain_action = accept\n"
                                   "catch_all_action = reject\n"
                                   "tempfail_action = tempfail\n"
                                   "blocked_action = tempfail\n"
                                   "unverifiable_action = reject\n";

static const char dry_conf[] = "dry_run = yes\n"
                               "catch_all_action = reject\n"
                               "tempfail_action = tempfail\n"
                               "domain_overrides = skip.example skip\n";

/* One outcome at one domain under one configuration, and its verdict. */
static const struct {
	const char *conf;
	const char *domain;
	enum outcome_kind kind;
	enum policy_action intended;
	enum which reply;
	bool dry;
} outcomes[] = {
        /* defaults: only the definite negatives reject; a remote temporary
         * failure defers, as Postfix and Exim do; a failure on our side accepts */
        {"", "example.org", OUTCOME_VALID, POLICY_ACCEPT, R_NONE, false},
        {"", "example.org", OUTCOME_INVALID, POLICY_REJECT, R_INVALID, false},
        {"", "example.org", OUTCOME_NO_DOMAIN, POLICY_REJECT, R_NO_DOMAIN, false},
        {"", "example.org", OUTCOME_CATCH_ALL, POLICY_ACCEPT, R_NONE, false},
        {"", "example.org", OUTCOME_TEMPFAIL, POLICY_TEMPFAIL, R_TEMPFAIL, false},
        {"", "example.org", OUTCOME_BLOCKED, POLICY_ACCEPT, R_NONE, false},
        {"", "example.org", OUTCOME_UNVERIFIABLE, POLICY_ACCEPT, R_NONE, false},
        {"", NULL, OUTCOME_INVALID, POLICY_REJECT, R_INVALID, false},
        {"", "", OUTCOME_VALID, POLICY_ACCEPT, R_NONE, false},
        /* global actions; tempfail uses the one tempfail reply, other rejects the generic one */
        {globals_conf, "example.org", OUTCOME_VALID, POLICY_TEMPFAIL, R_TEMPFAIL, false},
        {globals_conf, "example.org", OUTCOME_INVALID, POLICY_TEMPFAIL, R_TEMPFAIL, false},
        {globals_conf, "example.org", OUTCOME_NO_DOMAIN, POLICY_ACCEPT, R_NONE, false},
        {globals_conf, "example.org", OUTCOME_CATCH_ALL, POLICY_REJECT, R_REJECT, false},
        {globals_conf, "example.org", OUTCOME_TEMPFAIL, POLICY_TEMPFAIL, R_TEMPFAIL, false},
        {globals_conf, "example.org", OUTCOME_BLOCKED, POLICY_TEMPFAIL, R_TEMPFAIL, false},
        {globals_conf, "example.org", OUTCOME_UNVERIFIABLE, POLICY_REJECT, R_REJECT, false},
        /* OUTCOME=ACTION overrides; the rest of the outcomes keep the global action */
        {overrides_conf, "strict.example", OUTCOME_CATCH_ALL, POLICY_REJECT, R_REJECT, false},
        {overrides_conf, "strict.example", OUTCOME_UNVERIFIABLE, POLICY_TEMPFAIL, R_TEMPFAIL, false},
        {overrides_conf, "strict.example", OUTCOME_INVALID, POLICY_ACCEPT, R_NONE, false},
        {overrides_conf, "strict.example", OUTCOME_NO_DOMAIN, POLICY_REJECT, R_NO_DOMAIN, false},
        {overrides_conf, "strict.example", OUTCOME_VALID, POLICY_ACCEPT, R_NONE, false},
        {overrides_conf, "outlook.com", OUTCOME_CATCH_ALL, POLICY_ACCEPT, R_NONE, false},
        {overrides_conf, "outlook.com", OUTCOME_INVALID, POLICY_REJECT, R_INVALID, false},
        /* an entry covers its subdomains, but not look-alikes */
        {overrides_conf, "mx.strict.example", OUTCOME_CATCH_ALL, POLICY_REJECT, R_REJECT, false},
        {overrides_conf, "a.b.strict.example", OUTCOME_INVALID, POLICY_ACCEPT, R_NONE, false},
        {overrides_conf, "notstrict.example", OUTCOME_CATCH_ALL, POLICY_ACCEPT, R_NONE, false},
        {overrides_conf, "strict.example.org", OUTCOME_CATCH_ALL, POLICY_ACCEPT, R_NONE, false},
        {overrides_conf, "STRICT.Example", OUTCOME_CATCH_ALL, POLICY_REJECT, R_REJECT, false},
        {overrides_conf, "strict.example.", OUTCOME_CATCH_ALL, POLICY_REJECT, R_REJECT, false},
        /* the most specific entry wins whole: no rules inherited from the parent's entry */
        {overrides_conf, "sub.strict.example", OUTCOME_CATCH_ALL, POLICY_ACCEPT, R_NONE, false},
        {overrides_conf, "sub.strict.example", OUTCOME_INVALID, POLICY_REJECT, R_INVALID, false},
        {overrides_conf, "x.sub.strict.example", OUTCOME_INVALID, POLICY_REJECT, R_INVALID, false},
        {overrides_conf, "deep.sub.strict.example", OUTCOME_TEMPFAIL, POLICY_TEMPFAIL, R_TEMPFAIL, false},
        {overrides_conf, "deep.sub.strict.example", OUTCOME_BLOCKED, POLICY_TEMPFAIL, R_TEMPFAIL, false},
        {overrides_conf, "deep.sub.strict.example", OUTCOME_CATCH_ALL, POLICY_ACCEPT, R_NONE, false},
        {overrides_conf, "sub.strict.example", OUTCOME_TEMPFAIL, POLICY_TEMPFAIL, R_TEMPFAIL, false},
        {"tempfail_action = accept\n", "example.org", OUTCOME_TEMPFAIL, POLICY_ACCEPT, R_NONE, false},
        /* skip accepts whatever the outcome; a more specific verify undoes it */
        {overrides_conf, "example.net", OUTCOME_INVALID, POLICY_ACCEPT, R_NONE, false},
        {overrides_conf, "mail.example.net", OUTCOME_NO_DOMAIN, POLICY_ACCEPT, R_NONE, false},
        {overrides_conf, "parent.example", OUTCOME_INVALID, POLICY_ACCEPT, R_NONE, false},
        {overrides_conf, "child.parent.example", OUTCOME_INVALID, POLICY_REJECT, R_INVALID, false},
        {overrides_conf, "a.child.parent.example", OUTCOME_NO_DOMAIN, POLICY_REJECT, R_NO_DOMAIN, false},
        {overrides_conf, "other.parent.example", OUTCOME_NO_DOMAIN, POLICY_ACCEPT, R_NONE, false},
        /* entries are A-labels: an IDN entry matches the A-label domain */
        {overrides_conf, "xn--bcher-kva.example", OUTCOME_NO_DOMAIN, POLICY_TEMPFAIL, R_TEMPFAIL, false},
        /* dry_run: the real decision is kept, the MTA is told accept */
        {dry_conf, "example.org", OUTCOME_VALID, POLICY_ACCEPT, R_NONE, false},
        {dry_conf, "example.org", OUTCOME_INVALID, POLICY_REJECT, R_INVALID, true},
        {dry_conf, "example.org", OUTCOME_NO_DOMAIN, POLICY_REJECT, R_NO_DOMAIN, true},
        {dry_conf, "example.org", OUTCOME_CATCH_ALL, POLICY_REJECT, R_REJECT, true},
        {dry_conf, "example.org", OUTCOME_TEMPFAIL, POLICY_TEMPFAIL, R_TEMPFAIL, true},
        {dry_conf, "example.org", OUTCOME_BLOCKED, POLICY_ACCEPT, R_NONE, false},
        {dry_conf, "skip.example", OUTCOME_INVALID, POLICY_ACCEPT, R_NONE, false},
};

START_TEST(outcome_verdict)
{
	struct conf *c = load(outcomes[_i].conf);
	struct policy_verdict v;
	char what[200];

	memset(&v, 0xa5, sizeof(v));
	snprintf(what, sizeof(what), "case %d: %s at %s", _i, outcome_name(outcomes[_i].kind),
	         outcomes[_i].domain ? outcomes[_i].domain : "(null)");
	policy_for_outcome(c, outcomes[_i].domain, outcomes[_i].kind, &v);
	check_verdict(c, &v, outcomes[_i].intended, outcomes[_i].reply, outcomes[_i].dry, what);
	check_not_deferred(&v, what);
	/* never deferred: policy_for_verified says the same at any time */
	memset(&v, 0xa5, sizeof(v));
	policy_for_verified(c, outcomes[_i].domain, outcomes[_i].kind, 0, INT64_C(1800000000000), &v);
	check_verdict(c, &v, outcomes[_i].intended, outcomes[_i].reply, outcomes[_i].dry, what);
	check_not_deferred(&v, what);
	conf_unref(c);
}
END_TEST

#define T0   INT64_C(1800000000000) /* the address's first temporary outcome (wall clock, ms) */
#define SEC  INT64_C(1000)
#define HOUR (3600 * SEC)

static const char deferred_dry_conf[] = "dry_run = yes\n";
static const char deferred_conf[] = "defer_limit = 10m\n"
                                    "blocked_action = tempfail\n"
                                    "unverifiable_action = tempfail\n"
                                    "domain_overrides = lenient.example tempfail=accept,"
                                    " strict.example tempfail=tempfail\n";

/* defer_limit: an outcome, since when its address is deferred, the time of
 * the verdict, and what comes of it. */
static const struct {
	const char *conf;
	const char *domain;
	enum outcome_kind kind;
	int64_t since, now;
	enum policy_action intended; /* after defer_limit, before dry_run */
	enum which reply;
	bool dry;
	bool deferred;
	int64_t deferred_for;
	bool limit;
} deferrals[] = {
        /* the default limit, 2h: under, at, just over, well over */
        {"", "example.org", OUTCOME_TEMPFAIL, T0, T0, POLICY_TEMPFAIL, R_TEMPFAIL, false, true, 0, false},
        {"", "example.org", OUTCOME_TEMPFAIL, T0, T0 + 2 * HOUR - 1, POLICY_TEMPFAIL, R_TEMPFAIL, false, true,
         2 * HOUR - 1, false},
        {"", "example.org", OUTCOME_TEMPFAIL, T0, T0 + 2 * HOUR, POLICY_TEMPFAIL, R_TEMPFAIL, false, true,
         2 * HOUR, false},
        {"", "example.org", OUTCOME_TEMPFAIL, T0, T0 + 2 * HOUR + 1, POLICY_ACCEPT, R_NONE, false, true,
         2 * HOUR + 1, true},
        {"", "example.org", OUTCOME_TEMPFAIL, T0, T0 + 7201 * SEC, POLICY_ACCEPT, R_NONE, false, true,
         7201 * SEC, true},
        /* never deferred before (since 0): tempfail, however late it is */
        {"", "example.org", OUTCOME_TEMPFAIL, 0, T0, POLICY_TEMPFAIL, R_TEMPFAIL, false, false, 0, false},
        /* a clock that went back: no time has passed */
        {"", "example.org", OUTCOME_TEMPFAIL, T0, T0 - HOUR, POLICY_TEMPFAIL, R_TEMPFAIL, false, true, 0,
         false},
        {"", "example.org", OUTCOME_TEMPFAIL, T0, 0, POLICY_TEMPFAIL, R_TEMPFAIL, false, true, 0, false},
        /* defer_limit = 0: no limit, deferred for 30 days is still deferred */
        {"defer_limit = 0\n", "example.org", OUTCOME_TEMPFAIL, T0, T0 + 720 * HOUR, POLICY_TEMPFAIL,
         R_TEMPFAIL, false, true, 720 * HOUR, false},
        /* a limit of its own */
        {deferred_conf, "example.org", OUTCOME_TEMPFAIL, T0, T0 + 600 * SEC, POLICY_TEMPFAIL, R_TEMPFAIL,
         false, true, 600 * SEC, false},
        {deferred_conf, "example.org", OUTCOME_TEMPFAIL, T0, T0 + 601 * SEC, POLICY_ACCEPT, R_NONE, false,
         true, 601 * SEC, true},
        /* dry_run: under the limit the tempfail is only logged; over it,
         * accept is what is intended, so dry_run has nothing to turn */
        {deferred_dry_conf, "example.org", OUTCOME_TEMPFAIL, T0, T0 + HOUR, POLICY_TEMPFAIL, R_TEMPFAIL, true,
         true, HOUR, false},
        {deferred_dry_conf, "example.org", OUTCOME_TEMPFAIL, T0, T0 + 3 * HOUR, POLICY_ACCEPT, R_NONE, false,
         true, 3 * HOUR, true},
        /* any outcome whose action is tempfail: blocked set to tempfail too */
        {deferred_conf, "example.org", OUTCOME_BLOCKED, T0, T0 + HOUR, POLICY_ACCEPT, R_NONE, false, true,
         HOUR, true},
        {deferred_conf, "example.org", OUTCOME_UNVERIFIABLE, T0, T0 + 60 * SEC, POLICY_TEMPFAIL, R_TEMPFAIL,
         false, true, 60 * SEC, false},
        {deferred_conf, "strict.example", OUTCOME_TEMPFAIL, T0, T0 + HOUR, POLICY_ACCEPT, R_NONE, false, true,
         HOUR, true},
        /* an outcome whose action is not tempfail is not deferred, whatever
         * the verifier says: accept stays accept, reject stays reject */
        {"", "example.org", OUTCOME_BLOCKED, T0, T0 + 3 * HOUR, POLICY_ACCEPT, R_NONE, false, false, 0,
         false},
        {"tempfail_action = accept\n", "example.org", OUTCOME_TEMPFAIL, T0, T0 + 3 * HOUR, POLICY_ACCEPT,
         R_NONE, false, false, 0, false},
        {deferred_conf, "lenient.example", OUTCOME_TEMPFAIL, T0, T0 + 3 * HOUR, POLICY_ACCEPT, R_NONE, false,
         false, 0, false},
        {"", "example.org", OUTCOME_INVALID, T0, T0 + 3 * HOUR, POLICY_REJECT, R_INVALID, false, false, 0,
         false},
        {"", "example.org", OUTCOME_NO_DOMAIN, T0, T0 + 3 * HOUR, POLICY_REJECT, R_NO_DOMAIN, false, false, 0,
         false},
        {"", "example.org", OUTCOME_VALID, T0, T0 + 3 * HOUR, POLICY_ACCEPT, R_NONE, false, false, 0, false},
        {deferred_dry_conf, "example.org", OUTCOME_INVALID, T0, T0 + 3 * HOUR, POLICY_REJECT, R_INVALID, true,
         false, 0, false},
};

START_TEST(defer_limit)
{
	struct conf *c = load(deferrals[_i].conf);
	struct policy_verdict v;
	char what[200];

	memset(&v, 0xa5, sizeof(v));
	snprintf(what, sizeof(what), "deferral %d: %s at %s, %+lld ms", _i, outcome_name(deferrals[_i].kind),
	         deferrals[_i].domain, (long long)(deferrals[_i].now - deferrals[_i].since));
	policy_for_verified(c, deferrals[_i].domain, deferrals[_i].kind, deferrals[_i].since,
	                    deferrals[_i].now, &v);
	check_verdict(c, &v, deferrals[_i].intended, deferrals[_i].reply, deferrals[_i].dry, what);
	ck_assert_msg(v.deferred == deferrals[_i].deferred, "%s: deferred %d", what, v.deferred);
	ck_assert_msg(v.deferred_for_ms == deferrals[_i].deferred_for, "%s: deferred for %lld ms", what,
	              (long long)v.deferred_for_ms);
	ck_assert_msg(v.defer_limit == deferrals[_i].limit, "%s: defer_limit %d", what, v.defer_limit);
	conf_unref(c);
}
END_TEST

static const char domains_conf[] = "sender_domain_blocklist = mailinator.com, spam.example, sub.skip.example,"
                                   " x.spam.example, bücher.example\n"
                                   "domain_overrides = skip.example skip, spam.example skip,"
                                   " mailinator.com verify, v.skip.example verify,"
                                   " rules.example catch_all=reject\n";

/* A sender domain and what happens before any probe. */
static const struct {
	const char *domain;
	enum policy_domain want;
	const char *matched;
} domains[] = {
        {"mailinator.com", POLICY_DOMAIN_BLOCKLISTED, "mailinator.com"},
        {"x.mailinator.com", POLICY_DOMAIN_BLOCKLISTED, "mailinator.com"},
        {"mailinator.co", POLICY_DOMAIN_VERIFY, NULL},
        {"notmailinator.com", POLICY_DOMAIN_VERIFY, NULL},
        {"spam.example", POLICY_DOMAIN_BLOCKLISTED, "spam.example"}, /* blocklist beats skip */
        {"a.x.spam.example", POLICY_DOMAIN_BLOCKLISTED, "x.spam.example"},
        {"skip.example", POLICY_DOMAIN_SKIP, "skip.example"},
        {"a.skip.example", POLICY_DOMAIN_SKIP, "skip.example"},
        {"v.skip.example", POLICY_DOMAIN_VERIFY, "v.skip.example"},
        {"a.v.skip.example", POLICY_DOMAIN_VERIFY, "v.skip.example"},
        {"sub.skip.example", POLICY_DOMAIN_BLOCKLISTED, "sub.skip.example"},
        {"a.sub.skip.example", POLICY_DOMAIN_BLOCKLISTED, "sub.skip.example"},
        {"rules.example", POLICY_DOMAIN_VERIFY, "rules.example"},
        {"xn--bcher-kva.example", POLICY_DOMAIN_BLOCKLISTED, "xn--bcher-kva.example"},
        {"other.example", POLICY_DOMAIN_VERIFY, NULL},
        {"", POLICY_DOMAIN_VERIFY, NULL},
        {NULL, POLICY_DOMAIN_VERIFY, NULL},
};

START_TEST(domain_policy)
{
	struct conf *c = load(domains_conf);
	const char *matched = "untouched";
	const char *name = domains[_i].domain ? domains[_i].domain : "(null)";

	ck_assert_msg(policy_for_domain(c, domains[_i].domain, &matched) == domains[_i].want, "%s", name);
	if (domains[_i].matched == NULL)
		ck_assert_msg(matched == NULL, "%s: matched %s", name, matched);
	else
		ck_assert_msg(matched != NULL && strcmp(matched, domains[_i].matched) == 0, "%s: matched %s",
		              name, matched ? matched : "(null)");
	ck_assert_int_eq(policy_for_domain(c, domains[_i].domain, NULL), domains[_i].want);
	conf_unref(c);
}
END_TEST

START_TEST(domain_defaults)
{
	struct conf *c = load("");
	const char *matched = "untouched";

	ck_assert_int_eq(policy_for_domain(c, "example.org", &matched), POLICY_DOMAIN_VERIFY);
	ck_assert_ptr_null(matched);
	conf_unref(c);
}
END_TEST

/* The verdicts that need no outcome, under one configuration; defer_limit
 * never touches them. */
static const struct {
	const char *conf;
	enum policy_action budget;
	enum which budget_reply;
	bool dry;
} fixed[] = {
        {"", POLICY_TEMPFAIL, R_BUDGET, false},
        {"budget_action = tempfail\n", POLICY_TEMPFAIL, R_BUDGET, false},
        {"budget_action = accept\n", POLICY_ACCEPT, R_NONE, false},
        {"dry_run = yes\n", POLICY_TEMPFAIL, R_BUDGET, true},
        {"dry_run = yes\nbudget_action = accept\n", POLICY_ACCEPT, R_NONE, true},
        {"defer_limit = 1s\n", POLICY_TEMPFAIL, R_BUDGET, false},
};

/* defer_limit for a probe that outlasted verify_budget: the deferral start
 * the verifier knew at submit, the time of the verdict, and what comes of
 * it (an MX that drops packets is never answered within the budget). */
static const struct {
	const char *conf;
	int64_t since, now;
	enum policy_action intended; /* after defer_limit, before dry_run */
	enum which reply;
	bool dry;
	bool deferred;
	int64_t deferred_for;
	bool limit;
} budget_deferrals[] = {
        {"", T0, T0 + 2 * HOUR, POLICY_TEMPFAIL, R_BUDGET, false, true, 2 * HOUR, false},
        {"", T0, T0 + 2 * HOUR + 1, POLICY_ACCEPT, R_NONE, false, true, 2 * HOUR + 1, true},
        {"", T0, T0 + 3 * HOUR, POLICY_ACCEPT, R_NONE, false, true, 3 * HOUR, true},
        /* nothing known at submit: the budget's tempfail */
        {"", 0, T0 + 3 * HOUR, POLICY_TEMPFAIL, R_BUDGET, false, false, 0, false},
        /* a clock gone back: no time has passed */
        {"", T0, T0 - HOUR, POLICY_TEMPFAIL, R_BUDGET, false, true, 0, false},
        {"defer_limit = 0\n", T0, T0 + 720 * HOUR, POLICY_TEMPFAIL, R_BUDGET, false, true, 720 * HOUR, false},
        {deferred_conf, T0, T0 + 601 * SEC, POLICY_ACCEPT, R_NONE, false, true, 601 * SEC, true},
        /* budget_action = accept: nothing to defer */
        {"budget_action = accept\n", T0, T0 + 3 * HOUR, POLICY_ACCEPT, R_NONE, false, false, 0, false},
        {deferred_dry_conf, T0, T0 + HOUR, POLICY_TEMPFAIL, R_BUDGET, true, true, HOUR, false},
        {deferred_dry_conf, T0, T0 + 3 * HOUR, POLICY_ACCEPT, R_NONE, false, true, 3 * HOUR, true},
};

START_TEST(budget_defer_limit)
{
	struct conf *c = load(budget_deferrals[_i].conf);
	struct policy_verdict v;
	char what[200];

	memset(&v, 0xa5, sizeof(v));
	snprintf(what, sizeof(what), "budget deferral %d: %+lld ms", _i,
	         (long long)(budget_deferrals[_i].now - budget_deferrals[_i].since));
	policy_for_budget(c, budget_deferrals[_i].since, budget_deferrals[_i].now, &v);
	check_verdict(c, &v, budget_deferrals[_i].intended, budget_deferrals[_i].reply,
	              budget_deferrals[_i].dry, what);
	ck_assert_msg(v.deferred == budget_deferrals[_i].deferred, "%s: deferred %d", what, v.deferred);
	ck_assert_msg(v.deferred_for_ms == budget_deferrals[_i].deferred_for, "%s: deferred for %lld ms",
	              what, (long long)v.deferred_for_ms);
	ck_assert_msg(v.defer_limit == budget_deferrals[_i].limit, "%s: defer_limit %d", what, v.defer_limit);
	conf_unref(c);
}
END_TEST

START_TEST(budget_blocklist_syntax)
{
	struct conf *c = load(fixed[_i].conf);
	struct policy_verdict v;

	memset(&v, 0xa5, sizeof(v));
	policy_for_budget(c, 0, T0, &v);
	check_verdict(c, &v, fixed[_i].budget, fixed[_i].budget_reply,
	              fixed[_i].dry && fixed[_i].budget != POLICY_ACCEPT, "budget");
	check_not_deferred(&v, "budget");
	memset(&v, 0xa5, sizeof(v));
	policy_for_blocklist(c, &v);
	check_verdict(c, &v, POLICY_REJECT, R_BLOCKLIST, fixed[_i].dry, "blocklist");
	check_not_deferred(&v, "blocklist");
	memset(&v, 0xa5, sizeof(v));
	policy_for_bad_syntax(c, &v);
	check_verdict(c, &v, POLICY_REJECT, R_BAD_SYNTAX, fixed[_i].dry, "bad syntax");
	check_not_deferred(&v, "bad syntax");
	conf_unref(c);
}
END_TEST

/* conf.c refuses these settings; the policy holds even if a conf has them. */
START_TEST(never_rejects)
{
	struct conf *c = load("domain_overrides = x.example blocked=tempfail tempfail=tempfail\n");
	struct policy_verdict v;

	c->outcome_action[OUTCOME_BLOCKED] = CONF_REJECT;
	c->outcome_action[OUTCOME_TEMPFAIL] = CONF_REJECT;
	c->budget_action = CONF_REJECT;
	policy_for_outcome(c, "example.org", OUTCOME_BLOCKED, &v);
	check_verdict(c, &v, POLICY_ACCEPT, R_NONE, false, "global blocked=reject");
	policy_for_outcome(c, "example.org", OUTCOME_TEMPFAIL, &v);
	check_verdict(c, &v, POLICY_ACCEPT, R_NONE, false, "global tempfail=reject");
	policy_for_budget(c, 0, T0, &v);
	check_verdict(c, &v, POLICY_TEMPFAIL, R_BUDGET, false, "budget_action=reject");
	policy_for_budget(c, T0, T0 + 3 * HOUR, &v); /* deferred over the limit: accept, as tempfail */
	check_verdict(c, &v, POLICY_ACCEPT, R_NONE, false, "budget_action=reject, deferred 3h");

	ck_assert_uint_eq(c->domain_overrides.count, 1);
	c->domain_overrides.items[0].action[OUTCOME_BLOCKED] = CONF_REJECT;
	c->domain_overrides.items[0].action[OUTCOME_TEMPFAIL] = CONF_REJECT;
	for (int kind = 0; kind < OUTCOME_KIND_COUNT; kind++) {
		policy_for_outcome(c, "mx.x.example", (enum outcome_kind)kind, &v);
		ck_assert_msg(v.intended != POLICY_REJECT || outcome_is_definite((enum outcome_kind)kind),
		              "%s rejects", outcome_name((enum outcome_kind)kind));
	}
	conf_unref(c);
}
END_TEST

START_TEST(unknown_outcome)
{
	struct conf *c = load("");
	struct policy_verdict v;

	policy_for_outcome(c, "example.org", (enum outcome_kind)OUTCOME_KIND_COUNT, &v);
	check_verdict(c, &v, POLICY_ACCEPT, R_NONE, false, "unknown outcome");
	policy_for_outcome(c, "example.org", (enum outcome_kind) - 1, &v);
	check_verdict(c, &v, POLICY_ACCEPT, R_NONE, false, "negative outcome");
	conf_unref(c);
}
END_TEST

START_TEST(action_names)
{
	ck_assert_str_eq(policy_action_name(POLICY_ACCEPT), "accept");
	ck_assert_str_eq(policy_action_name(POLICY_TEMPFAIL), "tempfail");
	ck_assert_str_eq(policy_action_name(POLICY_REJECT), "reject");
	ck_assert_str_eq(policy_action_name((enum policy_action)42), "unknown");
}
END_TEST

/* The default replies, expanded as the milter will. */
static const struct {
	enum which which;
	const char *want;
} replies[] = {
        {R_INVALID, "550 5.1.0 Sender address <bob@example.org> rejected: mailbox does not exist "
                    "(5.1.1 User unknown)"},
        {R_NO_DOMAIN, "550 5.1.8 Sender address <bob@example.org> rejected: domain does not exist "
                      "(NXDOMAIN)"},
        {R_REJECT, "550 5.7.1 Sender address <bob@example.org> rejected: catch_all (accepts any address)"},
        {R_TEMPFAIL, "451 4.7.1 Sender address <bob@example.org> could not be verified (connection "
                     "timed out), try again later"},
        {R_BUDGET, "451 4.7.1 Sender address verification in progress, try again later"},
        {R_BLOCKLIST, "550 5.7.1 Sender address <bob@example.org> rejected: its domain is not accepted here"},
};

START_TEST(default_replies)
{
	static const char *const reasons[] = {
	        [R_INVALID] = "address rejected",
	        [R_NO_DOMAIN] = "domain does not exist (NXDOMAIN)",
	        [R_REJECT] = "accepts any address",
	        [R_TEMPFAIL] = "connection timed out",
	        [R_BUDGET] = "verification takes too long",
	        [R_BLOCKLIST] = "blocklisted",
	};
	struct conf *c = load("");
	const struct reply_template *t = reply_of(c, replies[_i].which);
	struct reply_vars vars = {"bob@example.org", reasons[replies[_i].which], "catch_all",
	                          "5.1.1 User unknown"};
	char text[REPLY_TEXT_MAX * 2], line[sizeof(text) + 32];

	reply_expand(t, &vars, text, sizeof(text));
	snprintf(line, sizeof(line), "%s %s %s", t->code, t->ecode, text);
	ck_assert_str_eq(line, replies[_i].want);
	conf_unref(c);
}
END_TEST

/* Self-health: while unhealthy (and self_health on), a tempfail for an
 * outcome that says nothing about the address, or the budget's, is
 * accepted; definite answers and everything while healthy or switched off
 * keep their verdict; under dry_run the intended tempfail becomes accept. */
static const struct {
	const char *conf;
	bool unhealthy, budget;
	enum outcome_kind kind;
	enum policy_action intended;
	bool self_health;
} healths[] = {
        {"", true, false, OUTCOME_TEMPFAIL, POLICY_ACCEPT, true},
        {"", false, false, OUTCOME_TEMPFAIL, POLICY_TEMPFAIL, false},
        {"self_health = no\n", true, false, OUTCOME_TEMPFAIL, POLICY_TEMPFAIL, false},
        {"", true, true, OUTCOME_VALID, POLICY_ACCEPT, true}, /* budget: kind unknown */
        {"", false, true, OUTCOME_VALID, POLICY_TEMPFAIL, false},
        {"self_health = no\n", true, true, OUTCOME_VALID, POLICY_TEMPFAIL, false},
        {"", true, false, OUTCOME_INVALID, POLICY_REJECT, false},
        {"", true, false, OUTCOME_NO_DOMAIN, POLICY_REJECT, false},
        {"", true, false, OUTCOME_VALID, POLICY_ACCEPT, false},
        {"catch_all_action = tempfail\n", true, false, OUTCOME_CATCH_ALL, POLICY_TEMPFAIL, false},
        {"blocked_action = tempfail\n", true, false, OUTCOME_BLOCKED, POLICY_ACCEPT, true},
        {"blocked_action = tempfail\n", false, false, OUTCOME_BLOCKED, POLICY_TEMPFAIL, false},
        {"tempfail_action = accept\n", true, false, OUTCOME_TEMPFAIL, POLICY_ACCEPT, false},
        {"dry_run = yes\n", true, false, OUTCOME_TEMPFAIL, POLICY_ACCEPT, true},
        {"dry_run = yes\n", true, false, OUTCOME_INVALID, POLICY_REJECT, false},
};

START_TEST(self_health)
{
	struct conf *c = load(healths[_i].conf);
	struct policy_verdict v;
	char what[120];

	memset(&v, 0xa5, sizeof(v));
	snprintf(what, sizeof(what), "self-health case %d (%s)", _i, outcome_name(healths[_i].kind));
	if (healths[_i].budget)
		policy_for_budget(c, 0, T0, &v);
	else
		policy_for_verified(c, "example.org", healths[_i].kind, 0, T0, &v);
	policy_for_self_health(c, healths[_i].unhealthy, healths[_i].budget, healths[_i].kind, &v);
	ck_assert_msg(v.intended == healths[_i].intended, "%s: intended %s", what,
	              policy_action_name(v.intended));
	ck_assert_msg(v.self_health == healths[_i].self_health, "%s: self_health %d", what, v.self_health);
	if (v.self_health) {
		ck_assert_msg(v.action == POLICY_ACCEPT && v.reply == NULL && !v.dry_run, "%s", what);
	}
	conf_unref(c);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("policy");
	TCase *verdicts = tcase_create("verdicts");
	TCase *domain = tcase_create("domain");

	tcase_add_loop_test(verdicts, outcome_verdict, 0, N(outcomes));
	tcase_add_loop_test(verdicts, budget_blocklist_syntax, 0, N(fixed));
	tcase_add_loop_test(verdicts, defer_limit, 0, N(deferrals));
	tcase_add_loop_test(verdicts, budget_defer_limit, 0, N(budget_deferrals));
	tcase_add_test(verdicts, never_rejects);
	tcase_add_loop_test(verdicts, self_health, 0, N(healths));
	tcase_add_test(verdicts, unknown_outcome);
	tcase_add_test(verdicts, action_names);
	tcase_add_loop_test(verdicts, default_replies, 0, N(replies));
	suite_add_tcase(s, verdicts);

	tcase_add_loop_test(domain, domain_policy, 0, N(domains));
	tcase_add_test(domain, domain_defaults);
	suite_add_tcase(s, domain);
	return unit_run(s);
}
