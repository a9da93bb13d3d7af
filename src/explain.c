/*
 * explain.c - the daemon's path for one sender, told step by step (see
 * explain.h). Every decision is the daemon's own function: precheck_sender,
 * policy_for_domain, vstore_lookup (read-only), policy_for_verified,
 * reply_expand. Only the wording is this file's.
 */
#include "explain.h"

#include <stdarg.h>
#include <string.h>

#include "addr.h"
#include "policy.h"
#include "precheck.h"
#include "reply.h"
#include "tags.h"
#include "vstore.h"

/* say - one "ADDRESS: key: text" line */
static void __attribute__((format(printf, 4, 5)))
say(FILE *out, const char *who, const char *key, const char *fmt, ...)
{
	fprintf(out, "%s: %s: ", who, key);
	va_list ap;
	va_start(ap, fmt);
	vfprintf(out, fmt, ap);
	va_end(ap);
	fputc('\n', out);
}

/* ago - "3h12m ago" / "in 5m" for a wall-clock time against now */
static void ago(int64_t when_ms, int64_t now_ms, char *buf, size_t size)
{
	int64_t d = (now_ms - when_ms) / 1000;
	bool past = d >= 0;
	if (!past)
		d = -d;
	char span[48];
	if (d >= 86400)
		snprintf(span, sizeof(span), "%lldd%lldh", (long long)(d / 86400),
		         (long long)(d % 86400 / 3600));
	else if (d >= 3600)
		snprintf(span, sizeof(span), "%lldh%lldm", (long long)(d / 3600), (long long)(d % 3600 / 60));
	else if (d >= 60)
		snprintf(span, sizeof(span), "%lldm%llds", (long long)(d / 60), (long long)(d % 60));
	else
		snprintf(span, sizeof(span), "%llds", (long long)d);
	snprintf(buf, size, past ? "%s ago" : "in %s", span);
}

/* say_record - the record under key, if there is one: outcome, reply, and
 * its times */
static void say_record(FILE *out, const char *who, struct cache *cache, const char *key, int64_t now_ms)
{
	struct cache_record rec;
	enum cache_status st = cache_get(cache, key, now_ms, &rec);
	if (st == CACHE_MISS) {
		say(out, who, "record", "%s: none (or expired)", key);
		return;
	}
	char probed[64], refresh[64], expires[64], flags[128];
	ago(rec.probed_at_ms, now_ms, probed, sizeof(probed));
	ago(rec.refresh_at_ms, now_ms, refresh, sizeof(refresh));
	ago(rec.expires_at_ms, now_ms, expires, sizeof(expires));
	outcome_flags_text(rec.outcome.flags, flags, sizeof(flags));
	say(out, who, "record", "%s: %s%s%s%s, probed %s, %s, refresh %s, expires %s", key,
	    outcome_name(rec.outcome.kind), flags[0] ? " (" : "", flags, flags[0] ? ")" : "", probed,
	    st == CACHE_HIT ? "fresh" : "stale", refresh, expires);
	if (rec.outcome.code != 0 || rec.outcome.mx_host[0] != '\0')
		say(out, who, "record reply", "%s%s%d %s %s (%s)",
		    rec.outcome.mx_host[0] ? rec.outcome.mx_host : "", rec.outcome.mx_host[0] ? ": " : "",
		    rec.outcome.code, rec.outcome.ecode, rec.outcome.text, rec.outcome.reason);
	else if (rec.outcome.reason[0] != '\0')
		say(out, who, "record reason", "%s", rec.outcome.reason);
	if (rec.deferred_since_ms != 0) {
		char since[64];
		ago(rec.deferred_since_ms, now_ms, since, sizeof(since));
		say(out, who, "deferred since", "%s", since);
	}
}

/* say_verdict - the policy's verdict and the reply the MTA would send */
static enum explain_result say_verdict(FILE *out, const char *who, const char *sender,
                                       const struct policy_verdict *v, const struct outcome *o)
{
	const char *action = policy_action_name(v->action);
	if (v->dry_run)
		say(out, who, "verdict", "%s (dry_run: would %s)", action, policy_action_name(v->intended));
	else if (v->defer_limit)
		say(out, who, "verdict", "%s (defer_limit: deferred for %llds, longer than defer_limit)",
		    action, (long long)(v->deferred_for_ms / 1000));
	else
		say(out, who, "verdict", "%s", action);
	if (v->reply != NULL && v->action != POLICY_ACCEPT) {
		char bare[ADDR_PATH_MAX + 3], remote[OUTCOME_TEXT_MAX + 32] = "", text[1024];
		reply_bare_address(sender, bare, sizeof(bare));
		if (o != NULL && o->code != 0)
			snprintf(remote, sizeof(remote), "%d %s %s", o->code, o->ecode, o->text);
		struct reply_vars vars = {.address = bare,
		                          .reason = o != NULL ? o->reason : "",
		                          .outcome = o != NULL ? outcome_name(o->kind) : "",
		                          .remote = remote};
		reply_expand(v->reply, &vars, text, sizeof(text));
		say(out, who, "reply", "%s %s %s (to each recipient but the exempt ones)", v->reply->code,
		    v->reply->ecode, text);
	}
	switch (v->action) {
	case POLICY_ACCEPT:
		return EXPLAIN_ACCEPT;
	case POLICY_TEMPFAIL:
		return EXPLAIN_TEMPFAIL;
	case POLICY_REJECT:
		return EXPLAIN_REJECT;
	}
	return EXPLAIN_ACCEPT;
}

/* explain_sender - see explain.h */
enum explain_result explain_sender(const struct conf *conf, struct cache *cache, const char *input,
                                   int64_t now_ms, FILE *out)
{
	char sender[ADDR_PATH_MAX + 3];
	if (input[0] == '<')
		snprintf(sender, sizeof(sender), "%s", input);
	else
		snprintf(sender, sizeof(sender), "<%s>", input);
	const char *who = input;

	struct precheck_result pre;
	precheck_sender(conf, sender, NULL, NULL, &pre);
	struct policy_verdict v;
	switch (pre.verdict) {
	case PRECHECK_ACCEPT:
		say(out, who, "precheck", "accepted without verification: %s%s%s", pre.reason,
		    pre.detail[0] ? ": " : "", pre.detail);
		say(out, who, "verdict", "accept");
		return EXPLAIN_ACCEPT;
	case PRECHECK_REJECT:
		say(out, who, "precheck", "bad syntax: %s", pre.detail);
		policy_for_bad_syntax(conf, &v);
		return say_verdict(out, who, sender, &v, NULL);
	case PRECHECK_VERIFY:
		break;
	}
	say(out, who, "precheck",
	    "to be verified (as from an untrusted, unauthenticated client: trusted_networks "
	    "and authenticated clients are not checked at all)");
	const char *domain = pre.sender.domain_ascii;
	const char *matched = NULL;
	switch (policy_for_domain(conf, domain, &matched)) {
	case POLICY_DOMAIN_SKIP:
		say(out, who, "domain", "%s: skipped by domain_overrides entry \"%s\"", domain, matched);
		say(out, who, "verdict", "accept");
		return EXPLAIN_ACCEPT;
	case POLICY_DOMAIN_BLOCKLISTED:
		say(out, who, "domain", "%s: in sender_domain_blocklist (\"%s\")", domain, matched);
		policy_for_blocklist(conf, &v);
		return say_verdict(out, who, sender, &v, NULL);
	case POLICY_DOMAIN_VERIFY:
		if (matched != NULL)
			say(out, who, "domain", "%s: domain_overrides entry \"%s\" applies", domain, matched);
		break;
	}
	if (cache == NULL) {
		say(out, who, "cache", "none: the daemon would probe now (vemilter-check %s does)", input);
		return EXPLAIN_PROBE;
	}
	char stable[ADDR_PATH_MAX];
	tags_stable_form(&pre.sender, tags_enabled(conf), stable, sizeof(stable));
	if (stable[0] != '\0')
		say(out, who, "tagged", "stable form %s", stable);
	char key[CACHE_KEY_MAX];
	cache_key_address(pre.sender.normalized, key, sizeof(key));
	say_record(out, who, cache, key, now_ms);
	cache_key_domain(domain, key, sizeof(key));
	say_record(out, who, cache, key, now_ms);
	cache_key_hints(domain, key, sizeof(key));
	say_record(out, who, cache, key, now_ms);

	struct vstore store = {.conf = conf, .cache = cache, .read_only = true};
	struct vstore_answer a;
	switch (vstore_lookup(&store, &pre.sender, stable, now_ms, &a)) {
	case VSTORE_PROBE:
		say(out, who, "answer",
		    "nothing may answer: the daemon would probe now (vemilter-check %s does)", input);
		return EXPLAIN_PROBE;
	case VSTORE_WITHHELD:
		say(out, who, "answer",
		    "a stale record that would refuse, or a temporary one, is not served: the daemon would "
		    "probe "
		    "now");
		return EXPLAIN_PROBE;
	case VSTORE_ANSWER:
		break;
	}
	static const char *const hits[] = {"the address's record",
	                                   "the address's stale record (served; one "
	                                   "background probe refreshes it)",
	                                   "the tagged sender's stable form", "a fact about the domain"};
	say(out, who, "answer", "%s, from %s", outcome_name(a.outcome.kind),
	    a.hit < sizeof(hits) / sizeof(hits[0]) ? hits[a.hit] : "the cache");
	policy_for_verified(conf, domain, a.outcome.kind, a.deferred_since_ms, now_ms, &v);
	return say_verdict(out, who, sender, &v, &a.outcome);
}
