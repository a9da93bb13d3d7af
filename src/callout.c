/*
 * callout.c - one verification: from an address to an outcome.
 *
 * Walks: DNS (or the address literal) -> network guard -> one SMTP probe per
 * address, in MX order, until an answer settles it or probe_timeout passes.
 * An address that is this host's own (localaddr.h) is never connected to:
 * the walk ends there as a mail loop. That is checked before the guard (our
 * own MX may resolve to our RFC 1918 address on a split horizon), except
 * for bogus addresses (127.0.0.1, 0.0.0.0: classify_address_bogus). When
 * the guard refuses every address: no_domain if all are bogus, else
 * unverifiable (a private address may be real; refusing it is our policy).
 * An MX host that mx_host_overrides skips (mxrules.h: servers whose answer
 * to RCPT says nothing) ends the walk unverifiable without a session; one
 * whose host_session_rate is used up this minute (hosts.h) is passed over
 * like a temporary failure, never more. An address the host table
 * remembers as catch-all for other domains (hosts.h: catchall_host_domains)
 * ends the walk catch_all without a session, an inference that is never
 * cached (OUTCOME_F_LIMITED); it learns from each verdict's catch-all
 * answer (catchall_learn, kept by catchall_settle once the session proved
 * in step). What each SMTP dialogue reports is
 * judged by classify_attempt() (classify.h has the table): a final answer
 * is reported at once; otherwise the most telling failure is kept by rank
 * and the next address tried (or the same one again, in plain text after a
 * TLS failure, or with probe_sender_fallback after MAIL was refused).
 *
 * The verdict is reported the moment it is known. When the catch-all
 * answer cannot change the action (the real RCPT got a 5xx, or the policy
 * gives catch_all the same action as valid for the domain), smtp.c reports
 * right after the real RCPT; otherwise the verdict waits for the random
 * address's answer at most min(command_timeout, verify_budget / 2), then
 * is reported valid with the catch-all question open. Either way a
 * catch-all answer that comes after the verdict is passed on as a domain
 * fact (probe_env.on_fact), never as a change of the verdict.
 *
 * A server that stays one reply behind looks in step when each command goes
 * out; it shows only after the verdict, at the catch-all and QUIT replies
 * (smtp.h). So the verdict's probe reports whether the session proved in
 * step (on_smtp_sync). An invalid verdict, the one that rejects, is held
 * until then, at most min(command_timeout, verify_budget / 4); a shared
 * session still going on then is asked to end (pool_job_hurry) and the
 * wait starts once more: proved or no evidence (QUIT unanswered, the bound
 * passed) -> invalid; out of step -> tempfail with the protocol flag. A positive verdict was reported at
 * once; if the session then proves out of step, a retraction fact (tempfail, OUTCOME_F_PROTOCOL) takes it
 * back through on_fact.
 *
 * Owns the struct callout, its DNS lookup, its SMTP probes (every live one
 * is on c->probes) and its timers. After calling done it lingers on
 * probe_env.linger while any of its probes still says QUIT or owes the
 * catch-all answer; when the last is gone it calls probe_env.on_finished
 * and frees itself. engine_free closes what still lingers.
 */
#include "callout.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "classify.h"
#include "clock.h"
#include "dns.h"
#include "hosts.h"
#include "linger.h"
#include "localaddr.h"
#include "log.h"
#include "mxrules.h"
#include "netguard.h"
#include "policy.h"
#include "pool.h"
#include "smtp.h"

struct target {
	char host[DNS_NAME_MAX + 1];
	struct sockaddr_storage addr;
	char addr_text[64];
};

struct callout {
	const struct probe_env *env;
	struct addr address;
	char catchall_rcpt[ADDR_PATH_MAX + 32]; /* 16-letter local part at the domain */
	callout_trace_fn trace;
	void *trace_arg;
	callout_done_fn done;
	void *done_arg;

	struct dns_lookup *lookup;
	struct dns_answer *given; /* hints->mx, copied (made only then): answered from the loop
	                           * (on_later), which frees it */
	bool have_given;
	struct pool_job *probe; /* the attempt under way (a job in the pool's session to t) */
	struct event *deadline;
	struct event *later; /* runs the literal's first probe from the loop */
	struct event *hold;  /* bounds how long an invalid verdict waits for the sync proof */
	struct event *wait;  /* asks the breaker again while another probe's first contact is under way */
	bool waiting;        /* the current target waits for that first contact */
	bool claim_held;     /* our probe holds claim_addr's first contact (hosts_claim) */
	struct sockaddr_storage claim_addr;

	struct target *targets; /* as many as the answer has (at most max_mx_addresses), made when it
	                         * comes: thousands of callouts may be in flight, most wanting one */
	size_t target_room;
	size_t target_count;
	size_t next_target;
	bool plain_retry;      /* the last target failed TLS: try it once more without */
	bool plain_now;        /* the current attempt is that retry */
	bool fallback_retry;   /* the last target refused MAIL and RSET: again with the fallback sender */
	bool fallback_now;     /* the current attempt starts with the fallback sender */
	bool hint_fallback;    /* hints: the domain needs the fallback sender (and one is set) */
	bool skip_catchall;    /* hints: the domain is known not to be catch-all */
	bool catchall_matters; /* the policy treats catch_all and valid differently here */

	struct outcome result;
	enum attempt_rank best_rank;
	bool finished;
	bool awaiting_late;             /* the verdict is out; the probe still owes the catch-all answer */
	bool holding;                   /* c->result is an invalid waiting for verdict_probe's sync proof */
	bool hold_hurried;              /* ... its session was asked to end now (on_hold, once) */
	struct pool_job *verdict_probe; /* the attempt the verdict came from, until its sync report */
	struct outcome *held_fact;      /* a catch-all fact that came while holding: passed on after done
	                                 * (made then: few callouts hold; no memory: not passed on, a
	                                 * fact is a hint) */
	struct sockaddr_storage verdict_addr; /* the address the verdict came from */
	bool catchall_seen;        /* it accepted the random address: for its host memory once in step */
	struct linger_list probes; /* every live SMTP probe of this callout (QUIT goes on after done) */
	bool lingering;            /* reported, on env->linger until the last probe is gone */
	struct linger_item linger_item;
};

static void probe_next(struct callout *c);
static void note_limited(struct callout *c, const struct target *t, const char *reason);

static void fill_params(struct callout *c, const struct target *t, struct smtp_params *params);

/* trace - one transcript line, if anyone listens */
static void __attribute__((format(printf, 2, 3))) trace(struct callout *c, const char *fmt, ...)
{
	if (c->trace == NULL)
		return;
	char line[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	c->trace(c->trace_arg, line);
}

/* forward_trace - dns.c lines go to the same transcript */
static void forward_trace(void *arg, const char *line)
{
	struct callout *c = arg;
	if (c->trace != NULL)
		c->trace(c->trace_arg, line);
}

/* drop_search - free what only the search for a verdict needs */
static void drop_search(struct callout *c)
{
	if (c->lookup != NULL) {
		dns_lookup_cancel(c->lookup);
		c->lookup = NULL;
	}
	if (c->deadline != NULL) {
		event_free(c->deadline);
		c->deadline = NULL;
	}
	if (c->later != NULL) {
		event_free(c->later);
		c->later = NULL;
	}
	if (c->hold != NULL) {
		event_free(c->hold);
		c->hold = NULL;
	}
	if (c->wait != NULL) {
		event_free(c->wait);
		c->wait = NULL;
	}
	free(c->targets);
	c->targets = NULL;
}

/* breaker_release - our first contact ends unheard (the probe is
 * cancelled): the probes waiting for it need not wait for the claim to
 * lapse */
static void breaker_release(struct callout *c)
{
	if (c->claim_held && c->env->hosts != NULL)
		hosts_release(c->env->hosts, (const struct sockaddr *)&c->claim_addr);
	c->claim_held = false;
}

/* release - free everything the callout holds (its probes closed at once,
 * without callbacks), and the callout */
static void release(struct callout *c)
{
	if (c->lingering) {
		linger_remove(c->env->linger, &c->linger_item);
		c->lingering = false;
	}
	if (c->probe != NULL && !c->awaiting_late)
		breaker_release(c);
	drop_search(c);
	if (c->given != NULL)
		free(c->given->hosts);
	free(c->given);
	free(c->held_fact);
	c->probe = NULL; /* on c->probes like the others */
	linger_close_all(&c->probes);
	free(c);
}

/* complete - reported, and the last connection is gone: say so, and go */
static void complete(struct callout *c)
{
	if (c->env->on_finished != NULL)
		c->env->on_finished(c->env->fact_arg, c->address.domain_ascii);
	release(c);
}

/* on_probes_empty - the callout's last live probe is gone */
static void on_probes_empty(struct linger_list *l)
{
	struct callout *c = (struct callout *)((char *)l - offsetof(struct callout, probes));
	if (c->finished)
		complete(c);
}

/* linger_close - the linger's owner ends a callout whose probes still say
 * QUIT or owe the catch-all answer (no fact is passed on) */
static void linger_close(struct linger_item *item)
{
	struct callout *c = (struct callout *)((char *)item - offsetof(struct callout, linger_item));
	c->lingering = false; /* linger_close_all took it off already */
	release(c);
}

/* finish - report c->result; then free the callout, or let it linger while
 * its probes say QUIT or owe the catch-all answer */
static void finish(struct callout *c)
{
	char flags[120];
	if (c->finished)
		return;
	if (c->probe != NULL && !c->awaiting_late) { /* in flight (probe_timeout): it can tell nothing now */
		struct pool_job *p = c->probe;
		c->probe = NULL;
		breaker_release(c);
		pool_job_cancel(p);
	}
	c->finished = true;
	outcome_flags_text(c->result.flags, flags, sizeof(flags));
	trace(c, "result: %s (%s)%s%s%s%s%s", outcome_name(c->result.kind), c->result.reason,
	      c->result.mx_host[0] ? " from " : "", c->result.mx_host, flags[0] ? " [" : "", flags,
	      flags[0] ? "]" : "");
	c->holding = false;
	c->done(c->done_arg, &c->result);
	if (c->held_fact != NULL) { /* learned while the verdict was held: after it, as a late fact is */
		struct outcome *fact = c->held_fact;
		c->held_fact = NULL;
		if (c->env->on_fact != NULL)
			c->env->on_fact(c->env->fact_arg, &c->address, fact);
		free(fact);
	}
	if (c->probes.count > 0 && c->env->linger != NULL) {
		drop_search(c);
		linger_add(c->env->linger, &c->linger_item, linger_close);
		c->lingering = true;
		return; /* on_probes_empty completes it */
	}
	complete(c);
}

/* result_set - c->result anew (no flags, server or TTL cap left from an
 * earlier note), with outcome_set's arguments */
static void result_set(struct callout *c, enum outcome_kind kind, enum probe_stage stage, int code,
                       const char *ecode, const char *text, const char *reason)
{
	memset(&c->result, 0, sizeof(c->result));
	outcome_set(&c->result, kind, stage, code, ecode, text, reason);
}

/* settle - a final outcome, not tied to a server */
static void settle(struct callout *c, enum outcome_kind kind, enum probe_stage stage, const char *reason)
{
	result_set(c, kind, stage, 0, NULL, NULL, reason);
	finish(c);
}

/* set_server - the server an outcome came from */
static void set_server(struct outcome *o, const struct target *t)
{
	snprintf(o->mx_host, sizeof(o->mx_host), "%s", t->host);
	snprintf(o->mx_addr, sizeof(o->mx_addr), "%s", t->addr_text);
}

/* note - remember a non-final failure if it tells at least as much as what
 * we had (the later of equals wins, as before) */
static void note(struct callout *c, const struct target *t, const struct judgement *j)
{
	if (j->rank < c->best_rank)
		return;
	c->best_rank = j->rank;
	c->result = j->outcome;
	set_server(&c->result, t);
}

/* conclude - a final answer from (or about) a server */
static void conclude(struct callout *c, const struct target *t, const struct outcome *o)
{
	c->result = *o;
	set_server(&c->result, t);
	finish(c);
}

/* catchall_memory_on - may the host table's catch-all memory (hosts.h)
 * speak for host [sa]: on (catchall_host_domains), a breaker table, and
 * no explicit verify entry of mx_host_overrides for the host */
static bool catchall_memory_on(const struct callout *c, const char *host, const struct sockaddr *sa)
{
	return c->env->hosts != NULL && c->env->conf->catchall_host_domains > 0 &&
	       mxrules_match(c->env->mx_rules, host, sa, NULL, 0) != MXRULE_VERIFY;
}

/* catchall_learn - the verdict's catch-all answer is known (o: the verdict
 * itself, or the late fact). A 5xx to the random address proves the host
 * not uniformly catch-all: its memory ends now (losing a guess is always
 * safe). An accepted one waits for the session to prove in step
 * (catchall_settle): a reply out of turn must not teach the host. */
static void catchall_learn(struct callout *c, const struct outcome *o, const char *host)
{
	const struct sockaddr *sa = (const struct sockaddr *)&c->verdict_addr;
	struct host_catchall was;
	if (!catchall_memory_on(c, host, sa))
		return;
	if (o->kind == OUTCOME_CATCH_ALL) {
		c->catchall_seen = true;
		return;
	}
	if (o->kind != OUTCOME_VALID || !(o->flags & OUTCOME_F_NOT_CATCHALL))
		return;
	if (hosts_note_not_catchall(c->env->hosts, sa, clock_mono_ms(), c->address.domain_ascii,
	                            c->env->conf->catchall_host_ttl_ms, &was))
		log_msg(LOG_NOTICE,
		        "catch-all host: %s (%s) refused a random address of %s: no longer remembered as "
		        "catch-all (it was for %s)",
		        host, o->mx_addr[0] ? o->mx_addr : "?", c->address.domain_ascii, was.list);
}

/* catchall_settle - the verdict's session is over: in step (or without
 * contrary evidence), an accepted random address counts for its host's
 * memory; becoming catch-all is logged once */
static void catchall_settle(struct callout *c, bool in_step)
{
	const struct conf *conf = c->env->conf;
	const struct sockaddr *sa = (const struct sockaddr *)&c->verdict_addr;
	struct host_catchall became;
	bool seen = c->catchall_seen;
	c->catchall_seen = false;
	if (!seen || !in_step)
		return;
	if (!hosts_note_catchall(c->env->hosts, sa, clock_mono_ms(), c->address.domain_ascii,
	                         (unsigned)conf->catchall_host_domains, conf->catchall_host_ttl_ms, &became))
		return;
	trace(c, "* %s [%s] accepted random addresses for %u domains: remembered as catch-all",
	      c->result.mx_host, c->result.mx_addr, became.domains);
	log_msg(LOG_NOTICE,
	        "catch-all host: %s (%s) accepted random addresses for %u domains (%s): remembered as "
	        "catch-all for %lld s",
	        c->result.mx_host, c->result.mx_addr, became.domains, became.list,
	        (long long)(conf->catchall_host_ttl_ms / 1000));
}

/* on_smtp_late - the random address's answer, after the verdict: a domain
 * fact at most, never a change of the verdict */
static void on_smtp_late(void *arg, const struct smtp_reply *reply)
{
	struct callout *c = arg;
	struct outcome fact;
	c->probe = NULL; /* it finishes on its own from here */
	c->awaiting_late = false;
	if (reply != NULL && classify_catchall_fact(reply, &fact)) {
		snprintf(fact.mx_host, sizeof(fact.mx_host), "%s", c->result.mx_host);
		snprintf(fact.mx_addr, sizeof(fact.mx_addr), "%s", c->result.mx_addr);
		trace(c, "late: random address got %d: %s (%s)", reply->code,
		      fact.kind == OUTCOME_CATCH_ALL ? "catch_all" : "not catch-all",
		      c->address.domain_ascii);
		catchall_learn(c, &fact, c->result.mx_host);
		if (c->holding) { /* not before the verdict, and not at all if it is taken back */
			if (c->held_fact == NULL)
				c->held_fact = malloc(sizeof(*c->held_fact));
			if (c->held_fact != NULL)
				*c->held_fact = fact;
		} else if (c->env->on_fact != NULL) {
			c->env->on_fact(c->env->fact_arg, &c->address, &fact);
		}
	} else if (reply != NULL) {
		trace(c, "late: random address got %d: nothing learned", reply->code);
	} else {
		trace(c, "late: no usable answer for the random address");
	}
	/* The probe goes on to QUIT; on_probes_empty completes the callout. */
}

/* hold_ms - how long an invalid verdict waits for its session's sync
 * proof: min(command_timeout, verify_budget / 4), so a server that hangs at
 * QUIT costs the client little and never the budget */
static int64_t hold_ms(const struct conf *conf)
{
	int64_t quarter = conf->verify_budget_ms / 4;
	return quarter > 0 && quarter < conf->command_timeout_ms ? quarter : conf->command_timeout_ms;
}

/* on_smtp_sync - whether the verdict's session proved in step: releases a
 * held invalid, or takes a reported verdict back (a retraction fact) */
static void on_smtp_sync(void *arg, struct pool_job *probe, const struct smtp_sync_report *report)
{
	struct callout *c = arg;
	if (probe != c->verdict_probe)
		return; /* an attempt the verdict did not come from */
	c->verdict_probe = NULL;
	catchall_settle(c, report->sync != SMTP_SYNC_BROKEN);
	if (c->holding) {
		if (report->sync == SMTP_SYNC_BROKEN) {
			struct outcome held = c->result;
			trace(c, "* the session was out of step: the %d at RCPT is not an answer (%s)",
			      held.code, report->why);
			result_set(c, OUTCOME_TEMPFAIL, report->stage, 0, NULL, NULL, report->why);
			c->result.flags = OUTCOME_F_PROTOCOL | (held.flags & OUTCOME_F_FALLBACK_SENDER);
			snprintf(c->result.mx_host, sizeof(c->result.mx_host), "%s", held.mx_host);
			snprintf(c->result.mx_addr, sizeof(c->result.mx_addr), "%s", held.mx_addr);
			free(c->held_fact); /* from the same broken session */
			c->held_fact = NULL;
		} else {
			trace(c, "* session %s: the invalid verdict stands",
			      report->sync == SMTP_SYNC_PROVED ? "proved in step"
			                                       : "ended without contrary evidence");
		}
		finish(c);
		return;
	}
	if (!c->finished || report->sync != SMTP_SYNC_BROKEN)
		return;
	struct outcome fact;
	memset(&fact, 0, sizeof(fact));
	outcome_set(&fact, OUTCOME_TEMPFAIL, report->stage, 0, NULL, NULL, report->why);
	fact.flags = OUTCOME_F_PROTOCOL;
	snprintf(fact.mx_host, sizeof(fact.mx_host), "%s", c->result.mx_host);
	snprintf(fact.mx_addr, sizeof(fact.mx_addr), "%s", c->result.mx_addr);
	trace(c, "retracted: the %s verdict came from a session out of step (%s)",
	      outcome_name(c->result.kind), report->why);
	if (c->env->on_fact != NULL)
		c->env->on_fact(c->env->fact_arg, &c->address, &fact);
}

/* on_hold - the sync proof did not come in time. A shared session (pool.h)
 * gives it only when the whole session is over, which a busy one may not be
 * yet: the first time, the session is asked to end now (QUIT once the
 * address it asks is answered) and the wait starts again. After that: no
 * contrary evidence (QUIT unanswered), the invalid verdict stands (a later
 * out-of-step finding still retracts it). */
static void on_hold(evutil_socket_t fd, short what, void *arg)
{
	struct callout *c = arg;
	int64_t ms = hold_ms(c->env->conf);
	if (!c->holding)
		return;
	if (!c->hold_hurried && c->verdict_probe != NULL) {
		struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
		c->hold_hurried = true;
		if (pool_job_hurry(c->verdict_probe) && evtimer_add(c->hold, &tv) == 0) {
			trace(c,
			      "* no sync proof within %lld ms, the session went on after this address: "
			      "asked to end now (QUIT), "
			      "at most %lld ms more",
			      (long long)ms, (long long)ms);
			return;
		}
	}
	trace(c, "* no sync proof within %lld ms (QUIT unanswered): the invalid verdict stands",
	      (long long)ms);
	finish(c);
}

/* hold_invalid - keep an invalid verdict until the session proves in step
 * (on_smtp_sync) or hold_ms passes (on_hold); false if it cannot wait */
static bool hold_invalid(struct callout *c, const struct target *t, const struct outcome *o)
{
	int64_t ms = hold_ms(c->env->conf);
	if (ms <= 0)
		return false;
	c->hold = evtimer_new(c->env->base, on_hold, c);
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
	if (c->hold == NULL || evtimer_add(c->hold, &tv) != 0)
		return false;
	c->result = *o;
	set_server(&c->result, t);
	c->holding = true;
	trace(c, "* %d at RCPT: invalid, held until QUIT proves the session in step (at most %lld ms)",
	      o->code, (long long)ms);
	return true;
}

/* attempt_of - what classify_attempt needs from one SMTP result */
static void attempt_of(const struct callout *c, const struct smtp_result *r, struct attempt *a)
{
	const struct conf *conf = c->env->conf;
	*a = (struct attempt){
	        .end = r->end,
	        .stage = r->stage,
	        .reply = &r->reply,
	        .catchall_asked = r->catchall_asked,
	        .catchall_pending = r->catchall_pending,
	        .catchall_reply = &r->catchall_reply,
	        .catchall_rcpt = c->catchall_rcpt,
	        .fallback_used = c->fallback_now || r->fallback_used,
	        .fallback_possible =
	                conf->probe_sender_fallback[0] != '\0' && !c->fallback_now && !r->fallback_used,
	        .tls_retry_possible = !c->plain_now,
	        .error = r->error,
	};
}

/* ours_failed - a connection that failed on our side (no socket, no
 * memory), which says nothing about the server */
static bool ours_failed(const char *error)
{
	static const char *const ours[] = {"cannot create a socket", "unsupported address family",
	                                   "Too many open files", "Cannot allocate memory",
	                                   "No buffer space available"};
	for (size_t i = 0; error != NULL && i < sizeof(ours) / sizeof(ours[0]); i++)
		if (strstr(error, ours[i]) != NULL)
			return true;
	return false;
}

/* refuses_us - a blocked judgement about us, not about the address asked
 * for: any refusal before RCPT (greeting, EHLO/HELO, STARTTLS, MAIL), and
 * at RCPT one naming our sender or a blocklist. A 5.7.1 "relay access
 * denied" at RCPT is about that domain and stays out of the host's record. */
static bool refuses_us(const struct smtp_result *r, const struct judgement *j)
{
	if (j->outcome.kind != OUTCOME_BLOCKED || j->next != ATTEMPT_NEXT_ADDRESS)
		return false; /* a fallback retry is still to come */
	if (r->stage < STAGE_RCPT)
		return true;
	return classify_about_sender(&r->reply) || classify_names_blocklist(&r->reply);
}

/* tell_fleet - what the breaker now holds about t, to env->on_breaker
 * (the shared tier publishes it for the other hosts) */
static void tell_fleet(struct callout *c, const struct target *t, int64_t now)
{
	struct host_memo m;
	if (c->env->on_breaker == NULL ||
	    hosts_lookup(c->env->hosts, (const struct sockaddr *)&t->addr, now, &m) == HOST_OK)
		return;
	c->env->on_breaker(c->env->breaker_arg, (const struct sockaddr *)&t->addr, t->addr_text, &m);
}

/* breaker_learn - tell the circuit breaker (hosts.h) how an attempt at t
 * ended: a refusal of us is remembered for blocked_ttl; no connection or
 * no greeting backs the address off; any other reply ends its backoff */
static void breaker_learn(struct callout *c, const struct target *t, const struct smtp_result *r,
                          const struct judgement *j)
{
	struct hosts *h = c->env->hosts;
	const struct conf *conf = c->env->conf;
	const struct sockaddr *sa = (const struct sockaddr *)&t->addr;
	if (h == NULL)
		return;
	int64_t now = clock_mono_ms();
	hosts_release(h, sa); /* the first contact is over, whatever the note below */
	if (r->shared)
		return; /* another address's attempt, noted when it ended */
	switch (r->end) {
	case SMTP_END_NO_RESOURCES:
		return; /* our failure: nothing learned about the host */
	case SMTP_END_CONNECT_FAILED:
		if (ours_failed(r->error))
			return;
		/* fall through */
	case SMTP_END_TIMEOUT:
		if (r->end == SMTP_END_TIMEOUT && r->stage != STAGE_CONNECT && r->stage != STAGE_BANNER) {
			hosts_note_answer(h, sa, now); /* it spoke, then went slow: not a dead host */
			return;
		}
		int64_t ms = hosts_note_failure(h, sa, now, conf->host_backoff_ms); /* 0: off */
		if (ms > 0) {
			trace(c, "* breaker: no answer from %s: not connecting there for %lld ms",
			      t->addr_text, (long long)ms);
			tell_fleet(c, t, now);
		}
		return;
	case SMTP_END_LOOP:
	case SMTP_END_CLOSED:
		if (r->stage == STAGE_CONNECT || r->stage == STAGE_BANNER)
			return; /* no word from it: neither an answer nor silence to count */
		break;
	default:
		break;
	}
	if (refuses_us(r, j) && conf->blocked_ttl_ms > 0) {
		if (hosts_note_blocked(h, sa, now, conf->blocked_ttl_ms, t->host, &j->outcome, r->source,
		                       NULL)) {
			trace(c, "* breaker: %s [%s] refused us at %s: remembered for %lld s", t->host,
			      t->addr_text, probe_stage_name(r->stage),
			      (long long)(conf->blocked_ttl_ms / 1000));
			tell_fleet(c, t, now);
		}
		return;
	}
	hosts_note_answer(h, sa, now);
}

/* breaker_skips - whether the circuit breaker keeps us away from t: a
 * remembered refusal is judged as that refusal again, a backoff as a
 * connection failure; either is noted like a real attempt (by rank) and
 * the walk goes on. Never more than blocked or tempfail. */
static bool breaker_skips(struct callout *c, const struct target *t)
{
	struct host_memo m;
	int64_t now = clock_mono_ms();
	char reason[400]; /* cut to fit by outcome_set */
	struct judgement j = {.next = ATTEMPT_NEXT_ADDRESS};
	switch (hosts_lookup(c->env->hosts, (const struct sockaddr *)&t->addr, now, &m)) {
	case HOST_OK:
		return false;
	case HOST_BLOCKED:
		if (m.from[0] != '\0') /* not our session: say whose, and when we heard */
			snprintf(reason, sizeof(reason),
			         "learned from the fleet (%.100s, %lld minutes ago): %.100s [%s] refused %s "
			         "at %s",
			         m.from, (long long)((now - m.since_ms) / 60000), m.host, t->addr_text,
			         m.source[0] ? m.source : "it", probe_stage_name(m.stage));
		else
			snprintf(reason, sizeof(reason),
			         "remembered: %.100s [%s] refused us at %s %lld minutes ago", m.host,
			         t->addr_text, probe_stage_name(m.stage),
			         (long long)((now - m.since_ms) / 60000));
		j.rank = RANK_BLOCKED;
		outcome_set(&j.outcome, OUTCOME_BLOCKED, m.stage, m.code, m.ecode, m.text, reason);
		trace(c, "* not connecting to %s [%s]: %s (%d %s%s%s; blocked_ttl)", t->host, t->addr_text,
		      reason, m.code, m.ecode, m.ecode[0] ? " " : "", m.text);
		break;
	case HOST_BACKED_OFF:
		snprintf(reason, sizeof(reason),
		         "backed off: no answer from %s since %lld s ago (%u in a row; next try in %lld s)",
		         t->addr_text, (long long)((now - m.since_ms) / 1000), m.failures,
		         (long long)((m.until_ms - now + 999) / 1000));
		j.rank = RANK_NO_REPLY;
		outcome_set(&j.outcome, OUTCOME_TEMPFAIL, STAGE_CONNECT, 0, NULL, NULL, reason);
		trace(c, "* not connecting to %s [%s]: %s (host_backoff)", t->host, t->addr_text, reason);
		break;
	}
	note(c, t, &j);
	return true;
}

/* override_skips - mx_host_overrides says not to probe t's host (its
 * name or address matches a skip entry, and no more specific verify):
 * servers that accept every RCPT and bounce later prove nothing by a
 * callout. The callout ends unverifiable, without a session. */
static bool override_skips(struct callout *c, const struct target *t)
{
	char pattern[MXRULES_PATTERN_MAX + 1], reason[400];
	if (mxrules_match(c->env->mx_rules, t->host, (const struct sockaddr *)&t->addr, pattern,
	                  sizeof(pattern)) != MXRULE_SKIP)
		return false;
	snprintf(reason, sizeof(reason),
	         "mx_host_overrides: %s skip (servers that accept every RCPT and bounce later)", pattern);
	trace(c, "* not connecting to %s [%s]: %s", t->host, t->addr_text, reason);
	result_set(c, OUTCOME_UNVERIFIABLE, STAGE_GUARD, 0, NULL, NULL, reason);
	set_server(&c->result, t);
	finish(c);
	return true;
}

/* catchall_skips - the host table remembers t's address as catch-all for
 * other domains (catchall_host_domains): the walk ends catch_all without a
 * session. Our inference, not an answer: flagged OUTCOME_F_LIMITED, so it
 * is never cached and says nothing about our health; never more than
 * catch_all. Not for a domain known not to be catch-all (its own evidence
 * wins: it is probed as usual), nor where the policy rejects catch_all
 * (catch_all_action, domain_overrides): a guess never rejects, so there
 * the domain's own session answers. */
static bool catchall_skips(struct callout *c, const struct target *t)
{
	const struct sockaddr *sa = (const struct sockaddr *)&t->addr;
	struct host_catchall m;
	struct policy_verdict pv;
	char reason[400]; /* cut to fit by outcome_set */
	if (c->skip_catchall || !catchall_memory_on(c, t->host, sa) ||
	    !hosts_catchall(c->env->hosts, sa, clock_mono_ms(), &m))
		return false;
	policy_for_outcome(c->env->conf, c->address.domain_ascii, OUTCOME_CATCH_ALL, &pv);
	if (pv.intended == POLICY_REJECT) {
		trace(c,
		      "* %s [%s] is remembered as catch-all, but catch_all is rejected here: probing, "
		      "a guess never rejects",
		      t->host, t->addr_text);
		return false;
	}
	snprintf(reason, sizeof(reason), "remembered: %.100s (%s) accepted random addresses for %u domains",
	         t->host, t->addr_text, m.domains);
	trace(c, "* not connecting to %s [%s]: %s (%s; catchall_host_ttl)", t->host, t->addr_text, reason,
	      m.list);
	result_set(c, OUTCOME_CATCH_ALL, STAGE_CATCHALL, 0, NULL, NULL, reason);
	c->result.flags = OUTCOME_F_LIMITED;
	set_server(&c->result, t);
	finish(c);
	return true;
}

/* rate_skips - host_session_rate sessions to t began this minute already:
 * no connection; t counts as a temporary failure (by rank, like a real
 * one) and the walk goes on. Never more than tempfail. Called when we are
 * about to connect: a first-contact claim we hold is given back. */
static bool rate_skips(struct callout *c, const struct target *t, const struct smtp_params *params)
{
	const struct conf *conf = c->env->conf;
	unsigned count;
	bool fleet;
	if (conf->host_session_rate <= 0 ||
	    !pool_would_open(c->env->pool, (const struct sockaddr *)&t->addr, params) ||
	    hosts_session_take(c->env->hosts, (const struct sockaddr *)&t->addr, clock_mono_ms(),
	                       (unsigned)conf->host_session_rate, &count, &fleet))
		return false;
	if (c->claim_held) {
		hosts_release(c->env->hosts, (const struct sockaddr *)&c->claim_addr);
		c->claim_held = false;
	}
	char reason[200];
	snprintf(reason, sizeof(reason), "host_session_rate: %u sessions to %s this minute%s", count,
	         t->addr_text, fleet ? " across the fleet" : "");
	note_limited(c, t, reason);
	return true;
}

/* note_limited - t was passed over for host_session_rate (reason): a
 * temporary failure by rank, never cached, never a health signal */
static void note_limited(struct callout *c, const struct target *t, const char *reason)
{
	struct judgement j = {.next = ATTEMPT_NEXT_ADDRESS, .rank = RANK_NO_REPLY};
	outcome_set(&j.outcome, OUTCOME_TEMPFAIL, STAGE_CONNECT, 0, NULL, NULL, reason);
	j.outcome.flags |= OUTCOME_F_LIMITED; /* not cached, not a health signal */
	trace(c, "* not connecting to %s [%s]: %s", t->host, t->addr_text, reason);
	note(c, t, &j);
}

/* on_wait - ask the breaker again about the target that waits */
static void on_wait(evutil_socket_t fd, short what, void *arg)
{
	probe_next(arg);
}

/* first_contact_ms - how long one probe may hold a host's first contact
 * (hosts_claim): its connection, greeting and one command; the claim is
 * released as soon as the attempt ends, whichever way */
static int64_t first_contact_ms(const struct conf *conf)
{
	return conf->connect_timeout_ms + conf->banner_timeout_ms + conf->command_timeout_ms;
}

/* breaker_waits - whether t's first contact is another probe's, under way:
 * then this one asks again in BREAKER_WAIT_MS (at most until the claim
 * lapses; probe_timeout bounds it all). False: connect now (the claim is
 * ours, or t answered lately, or the breaker is off). */
#define BREAKER_WAIT_MS 50
static bool breaker_waits(struct callout *c, const struct target *t)
{
	const struct conf *conf = c->env->conf;
	if (c->env->hosts == NULL || (conf->blocked_ttl_ms <= 0 && conf->host_backoff_ms <= 0))
		return false;
	bool claimed;
	if (hosts_claim(c->env->hosts, (const struct sockaddr *)&t->addr, clock_mono_ms(),
	                first_contact_ms(conf), &claimed)) {
		c->claim_held = claimed;
		c->claim_addr = t->addr;
		return false;
	}
	if (c->wait == NULL)
		c->wait = evtimer_new(c->env->base, on_wait, c);
	struct timeval tv = {.tv_sec = 0, .tv_usec = BREAKER_WAIT_MS * 1000};
	if (c->wait == NULL || evtimer_add(c->wait, &tv) != 0)
		return false; /* cannot wait: connect (our trouble never stops a probe) */
	if (!c->waiting)
		trace(c, "* waiting: another probe is connecting to %s [%s] first, to learn how it answers",
		      t->host, t->addr_text);
	c->waiting = true;
	return true;
}

/* on_smtp_done - one connection reported: judge it (classify.h) and act */
static void on_smtp_done(void *arg, const struct smtp_result *r)
{
	struct callout *c = arg;
	const struct target *t = &c->targets[c->next_target - 1];
	struct pool_job *self = c->probe;
	struct attempt a;
	struct judgement j;
	if (!r->catchall_pending)
		c->probe = NULL; /* no longer ours once this returns */
	if (r->limited) {        /* the pool opened no session (host_session_rate): not asked */
		breaker_release(c);
		note_limited(c, t, r->error);
		probe_next(c);
		return;
	}
	attempt_of(c, r, &a);
	classify_attempt(&a, &j);
	breaker_learn(c, t, r, &j);
	c->claim_held = false; /* the note released it */

	switch (j.next) {
	case ATTEMPT_FINAL:
		c->awaiting_late = c->probe != NULL;
		c->verdict_probe = self;
		c->verdict_addr = t->addr;
		if (j.outcome.kind == OUTCOME_CATCH_ALL || j.outcome.kind == OUTCOME_VALID) {
			struct outcome o = j.outcome;
			set_server(&o, t);
			catchall_learn(c, &o, t->host);
		}
		if (j.outcome.kind == OUTCOME_INVALID && hold_invalid(c, t, &j.outcome))
			return;
		conclude(c, t, &j.outcome);
		return;
	case ATTEMPT_RETRY_PLAIN:
		trace(c, "* TLS failed with %s (%s): retrying once without TLS", t->host, r->error);
		c->plain_retry = true;
		c->next_target--;
		break;
	case ATTEMPT_RETRY_FALLBACK:
		note(c, t, &j);
		trace(c, "* %s refused our sender <%s> (at %s): a new connection with the fallback sender",
		      t->host, c->env->conf->probe_sender, probe_stage_name(r->stage));
		c->fallback_retry = true;
		c->next_target--;
		break;
	case ATTEMPT_NEXT_ADDRESS:
		note(c, t, &j);
		break;
	}
	if (c->probe != NULL) { /* a pending catch-all answer nobody needs */
		pool_job_cancel(c->probe);
		c->probe = NULL;
	}
	probe_next(c);
}

/* catchall_wait_ms - how long a verdict waits for the catch-all answer:
 * at most half the client's budget, so a hanging random RCPT costs no
 * budget 4xx, and never more than a command may take */
static int64_t catchall_wait_ms(const struct conf *conf)
{
	int64_t half = conf->verify_budget_ms / 2;
	return half > 0 && half < conf->command_timeout_ms ? half : conf->command_timeout_ms;
}

/* probe_next - the next address (or the same one again), or the best we
 * have when none is left */
static void probe_next(struct callout *c)
{
	struct target *t;
	struct smtp_params params;
	for (;;) { /* past the addresses the circuit breaker keeps us from */
		if (c->next_target >= c->target_count) {
			if (c->best_rank == RANK_NONE)
				result_set(c, OUTCOME_TEMPFAIL, STAGE_CONNECT, 0, NULL, NULL,
				           "no mail server address could be tried");
			finish(c);
			return;
		}
		t = &c->targets[c->next_target];
		bool retry = c->plain_retry || c->fallback_retry;
		if (!retry && !c->waiting)
			trace(c, "* trying %s [%s] (%zu of %zu)", t->host, t->addr_text, c->next_target + 1,
			      c->target_count);
		if (c->env->local != NULL &&
		    local_addrs_is_mine(c->env->local, (const struct sockaddr *)&t->addr, clock_mono_ms())) {
			struct attempt a = {.end = SMTP_END_LOOP, .stage = STAGE_CONNECT};
			struct judgement j;
			c->next_target++;
			trace(c, "* %s [%s] is an address of this host: not probing through ourselves",
			      t->host, t->addr_text);
			classify_attempt(&a, &j);
			conclude(c, t, &j.outcome);
			return;
		}
		if (!retry && override_skips(c, t))
			return;
		if (!retry && catchall_skips(c, t))
			return;
		if (breaker_skips(c, t)) {
			c->waiting = false;
			c->plain_retry = c->fallback_retry = false;
			c->next_target++;
			continue;
		}
		if (breaker_waits(c, t))
			return; /* on_wait asks again */
		c->waiting = false;
		c->next_target++;
		if (!retry) { /* a new address */
			c->plain_now = false;
			c->fallback_now = c->hint_fallback;
		}
		if (c->plain_retry)
			c->plain_now = true;
		if (c->fallback_retry)
			c->fallback_now = true;
		c->plain_retry = c->fallback_retry = false;
		fill_params(c, t, &params);
		if (rate_skips(c, t, &params))
			continue; /* past t, as after a temporary failure */
		break;
	}
	c->probe = pool_submit(c->env->pool, (struct sockaddr *)&t->addr, &params, c->trace, c->trace_arg,
	                       on_smtp_done, on_smtp_late, on_smtp_sync, c);
	if (c->probe == NULL) {
		/* ours: never cached against the domain, never a health signal */
		result_set(c, OUTCOME_TEMPFAIL, STAGE_CONNECT, 0, NULL, NULL, CLASSIFY_NO_MEMORY);
		c->result.flags |= OUTCOME_F_LIMITED;
		finish(c);
	}
}

/* fill_params - what the attempt at t asks, and how (the session it needs:
 * sender, fallback, TLS, SMTPUTF8, and this address's part) */
static void fill_params(struct callout *c, const struct target *t, struct smtp_params *params)
{
	const struct conf *conf = c->env->conf;

	const char *fallback = conf->probe_sender_fallback[0] != '\0' ? conf->probe_sender_fallback : NULL;
	*params = (struct smtp_params){
	        .helo_name = c->env->helo_name,
	        .mail_from = c->fallback_now && fallback != NULL ? fallback : conf->probe_sender,
	        .fallback_from = c->fallback_now ? NULL : fallback,
	        .rcpt = c->address.normalized,
	        .catchall_rcpt = conf->catchall_probe && !c->skip_catchall ? c->catchall_rcpt : NULL,
	        .server_name = t->host,
	        .needs_smtputf8 = c->address.local_utf8,
	        .try_tls = conf->probe_tls && !c->plain_now,
	        .pipelining = conf->probe_pipelining,
	        .ssl_ctx = c->env->ssl_ctx,
	        .report_at_rcpt = !c->catchall_matters,
	        .catchall_wait_ms = catchall_wait_ms(conf),
	        .connect_timeout_ms = conf->connect_timeout_ms,
	        .banner_timeout_ms = conf->banner_timeout_ms,
	        .command_timeout_ms = conf->command_timeout_ms,
	        .linger = &c->probes,
	};
	/* probe_source_address: checked numeric when read; of the other family
	 * than t, nothing is bound (the kernel picks) */
	const char *src = conf->probe_source_address != NULL ? conf->probe_source_address : "";
	struct sockaddr_in *b4 = (struct sockaddr_in *)&params->bind_addr;
	struct sockaddr_in6 *b6 = (struct sockaddr_in6 *)&params->bind_addr;
	if (src[0] == '\0')
		return;
	if (t->addr.ss_family == AF_INET && inet_pton(AF_INET, src, &b4->sin_addr) == 1)
		b4->sin_family = AF_INET;
	else if (t->addr.ss_family == AF_INET6 && inet_pton(AF_INET6, src, &b6->sin6_addr) == 1)
		b6->sin6_family = AF_INET6;
	else
		memset(&params->bind_addr, 0, sizeof(params->bind_addr));
}

/* format_addr - "192.0.2.1" or "2001:db8::1" */
static void format_addr(const struct sockaddr_storage *ss, char *buf, size_t size)
{
	const void *raw = ss->ss_family == AF_INET
	                          ? (const void *)&((const struct sockaddr_in *)ss)->sin_addr
	                          : (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
	if (inet_ntop(ss->ss_family, raw, buf, (socklen_t)size) == NULL)
		snprintf(buf, size, "?");
}

/* The addresses the guard refused, for the outcome when it refused all. */
struct refusals {
	size_t count;
	size_t real;     /* ... of them possibly real (private ranges): not bogus */
	const char *why; /* the range of the last one refused (of a real one, if any) */
};

/* add_target - queue one address unless the guard forbids it (noted in
 * *refused). An address of this host is queued whatever its range (the
 * walk ends there as a mail loop) unless it is bogus (127.0.0.1, 0.0.0.0:
 * the "MX points at localhost" trick is the guard's) */
static void add_target(struct callout *c, const char *host, const struct sockaddr_storage *ss,
                       struct refusals *refused)
{
	if (c->target_count >= c->target_room)
		return;
	struct target *t = &c->targets[c->target_count];
	const struct sockaddr *sa = (const struct sockaddr *)ss;
	const char *why = "";
	format_addr(ss, t->addr_text, sizeof(t->addr_text));
	bool bogus = classify_address_bogus(sa);
	bool mine =
	        !bogus && c->env->local != NULL && local_addrs_is_mine(c->env->local, sa, clock_mono_ms());
	if (!mine && !netguard_allows(sa, &c->env->conf->probe_allow_networks, &why)) {
		trace(c, "guard: not connecting to %s [%s]: %s", host, t->addr_text, why);
		refused->count++;
		if (!bogus || refused->real == 0)
			refused->why = why;
		if (!bogus)
			refused->real++;
		return;
	}
	snprintf(t->host, sizeof(t->host), "%s", host);
	t->addr = *ss;
	in_port_t port = htons((in_port_t)c->env->conf->probe_port);
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)&t->addr)->sin_port = port;
	else
		((struct sockaddr_in6 *)&t->addr)->sin6_port = port;
	c->target_count++;
}

/* make_targets - room for n targets (1 at least); false, with the callout
 * finished as our failure, when there is no memory for them */
static bool make_targets(struct callout *c, size_t n)
{
	c->target_room = n > 0 ? n : 1;
	c->targets = calloc(c->target_room, sizeof(*c->targets));
	if (c->targets != NULL)
		return true;
	c->target_room = 0;
	/* ours: never cached against the domain, never a health signal */
	result_set(c, OUTCOME_TEMPFAIL, STAGE_CONNECT, 0, NULL, NULL, CLASSIFY_NO_MEMORY);
	c->result.flags |= OUTCOME_F_LIMITED;
	finish(c);
	return false;
}

/* start_probing - after targets are known: refuse or go. Refusing is our
 * policy: no_domain only when every address is bogus (the domain cannot
 * take mail there); an address in a private range may be a real server
 * on our side of a split horizon, so then: unverifiable */
static void start_probing(struct callout *c, const struct refusals *refused)
{
	if (c->target_count == 0 && refused->count > 0) {
		char reason[240];
		if (refused->real > 0) {
			snprintf(reason, sizeof(reason),
			         "every mail server address is in a network we do not probe (%s; "
			         "probe_allow_networks can allow it)",
			         refused->why);
			settle(c, OUTCOME_UNVERIFIABLE, STAGE_GUARD, reason);
		} else {
			snprintf(reason, sizeof(reason),
			         "every mail server address is in a forbidden network (%s)", refused->why);
			settle(c, OUTCOME_NO_DOMAIN, STAGE_GUARD, reason);
		}
		return;
	}
	probe_next(c);
}

/* settle_dns - DNS settled a fact about the domain: it lives no longer
 * than DNS says (the negative TTL, the null MX's TTL) */
static void settle_dns(struct callout *c, const struct dns_answer *answer, const char *reason)
{
	result_set(c, OUTCOME_NO_DOMAIN, STAGE_DNS, 0, NULL, NULL, reason);
	c->result.ttl_cap_ms = answer->ttl_ms > 0 ? answer->ttl_ms : 0;
	finish(c);
}

/* on_dns - the domain's mail hosts, or why there are none */
static void on_dns(void *arg, const struct dns_answer *answer)
{
	struct callout *c = arg;
	c->lookup = NULL;
	switch (answer->status) {
	case DNS_NXDOMAIN:
		settle_dns(c, answer, "domain does not exist (NXDOMAIN)");
		return;
	case DNS_NULL_MX:
		settle_dns(c, answer, "domain accepts no mail (null MX, RFC 7505)");
		return;
	case DNS_NO_MAIL_HOST:
		settle_dns(c, answer, answer->detail[0] ? answer->detail : "no mail host");
		return;
	case DNS_TEMPFAIL:
		result_set(c, OUTCOME_TEMPFAIL, STAGE_DNS, 0, NULL, NULL,
		           answer->detail[0] ? answer->detail : "DNS lookup failed");
		if (answer->ours) /* no socket for the query: our failure, not the domain's */
			c->result.flags |= OUTCOME_F_LIMITED;
		finish(c);
		return;
	case DNS_OK:
		break;
	}
	size_t addresses = 0;
	for (size_t h = 0; h < answer->host_count; h++)
		addresses += answer->hosts[h].address_count;
	size_t most = (size_t)c->env->conf->max_mx_addresses;
	if (!make_targets(c, addresses < most ? addresses : most))
		return;
	struct refusals refused = {.why = ""};
	for (size_t h = 0; h < answer->host_count; h++)
		for (size_t a = 0; a < answer->hosts[h].address_count; a++)
			add_target(c, answer->hosts[h].name, &answer->hosts[h].addresses[a], &refused);
	start_probing(c, &refused);
}

/* literal_target - [192.0.2.1] / [IPv6:2001:db8::1] as the only target */
static bool literal_target(struct callout *c, struct sockaddr_storage *ss)
{
	const char *inside = c->address.domain_ascii + 1;
	char text[ADDR_DOMAIN_MAX + 1];
	snprintf(text, sizeof(text), "%s", inside);
	char *close = strchr(text, ']');
	if (close != NULL)
		*close = '\0';
	memset(ss, 0, sizeof(*ss));
	if (c->address.domain_kind == ADDR_DOMAIN_IPV4) {
		ss->ss_family = AF_INET;
		return inet_pton(AF_INET, text, &((struct sockaddr_in *)ss)->sin_addr) == 1;
	}
	ss->ss_family = AF_INET6;
	return strncasecmp(text, "ipv6:", 5) == 0 &&
	       inet_pton(AF_INET6, text + 5, &((struct sockaddr_in6 *)ss)->sin6_addr) == 1;
}

/* on_later - first step of an address literal, or of a domain whose
 * answer was given (callout_hints.mx), run from the loop */
static void on_later(evutil_socket_t fd, short what, void *arg)
{
	struct callout *c = arg;
	if (c->have_given) {
		trace(c, "dns: MX %s? -> (resolved already) %s", c->address.domain_ascii, c->given->detail);
		/* An answer is read during on_dns only (the targets are copies):
		 * freed after it, not kept for the callout's life (a host is
		 * 2.3 KiB, and thousands of callouts may each hold a copy of one
		 * domain's answer).
		 * Taken off c first: on_dns may finish and free the callout. */
		struct dns_answer *given = c->given;
		c->given = NULL;
		c->have_given = false;
		on_dns(c, given);
		free(given->hosts);
		free(given);
		return;
	}
	struct sockaddr_storage ss;
	if (!literal_target(c, &ss)) {
		settle(c, OUTCOME_NO_DOMAIN, STAGE_DNS, "address literal is not a usable address");
		return;
	}
	trace(c, "dns: %s is an address literal: no lookup", c->address.domain_ascii);
	if (!make_targets(c, 1))
		return;
	struct refusals refused = {.why = ""};
	add_target(c, c->address.domain_ascii, &ss, &refused);
	start_probing(c, &refused);
}

/* on_deadline - probe_timeout passed: stop with the best we know */
static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct callout *c = arg;
	trace(c, "* probe_timeout (%lld ms) passed", (long long)c->env->conf->probe_timeout_ms);
	if (c->best_rank == RANK_NONE && !c->holding) /* a held invalid stands, as at on_hold */
		result_set(c, OUTCOME_TEMPFAIL, c->probe != NULL ? STAGE_CONNECT : STAGE_DNS, 0, NULL, NULL,
		           "no answer within probe_timeout");
	finish(c);
}

/* random_local_part - a local part no one has: 16 random letters/digits */
static void random_local_part(char *out, size_t size)
{
	static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
	unsigned char noise[16];
	arc4random_buf(noise, sizeof(noise));
	size_t n = 0;
	for (; n < sizeof(noise) && n + 1 < size; n++)
		out[n] = alphabet[noise[n] % (sizeof(alphabet) - 1)];
	out[n] = '\0';
}

/* copy_answer - a copy of a given answer, its hosts our own */
static bool copy_answer(struct dns_answer *to, const struct dns_answer *from)
{
	*to = *from;
	to->hosts = NULL;
	if (from->host_count == 0)
		return true;
	to->hosts = calloc(from->host_count, sizeof(*to->hosts));
	if (to->hosts == NULL)
		return false;
	memcpy(to->hosts, from->hosts, from->host_count * sizeof(*to->hosts));
	return true;
}

/* callout_start - see callout.h */
struct callout *callout_start(const struct probe_env *env, const struct addr *address,
                              const struct callout_hints *hints, callout_trace_fn trace_fn, void *trace_arg,
                              callout_done_fn done, void *arg)
{
	struct callout *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	c->env = env;
	c->address = *address;
	c->probes.on_empty = on_probes_empty;
	c->skip_catchall = hints != NULL && hints->skip_catchall;
	c->hint_fallback =
	        hints != NULL && hints->use_fallback_sender && env->conf->probe_sender_fallback[0] != '\0';
	c->catchall_matters = classify_catchall_matters(env->conf, address->domain_ascii);
	c->trace = trace_fn;
	c->trace_arg = trace_arg;
	c->done = done;
	c->done_arg = arg;
	char local[24];
	random_local_part(local, sizeof(local));
	snprintf(c->catchall_rcpt, sizeof(c->catchall_rcpt), "%s@%s", local, address->domain_ascii);
	result_set(c, OUTCOME_TEMPFAIL, STAGE_NONE, 0, NULL, NULL, "not probed");

	c->deadline = evtimer_new(env->base, on_deadline, c);
	struct timeval tv = {.tv_sec = env->conf->probe_timeout_ms / 1000,
	                     .tv_usec = (env->conf->probe_timeout_ms % 1000) * 1000};
	if (c->deadline == NULL || evtimer_add(c->deadline, &tv) != 0)
		goto fail;
	if (address->domain_kind == ADDR_DOMAIN_NAME && hints != NULL && hints->mx != NULL) {
		if ((c->given = malloc(sizeof(*c->given))) == NULL || !copy_answer(c->given, hints->mx))
			goto fail;
		c->have_given = true;
	}
	if (address->domain_kind != ADDR_DOMAIN_NAME || c->have_given) {
		c->later = evtimer_new(env->base, on_later, c);
		if (c->later == NULL)
			goto fail;
		event_active(c->later, EV_TIMEOUT, 0);
		return c;
	}
	struct dns_limits limits = {.max_mx = (size_t)env->conf->max_mx,
	                            .max_addresses = (size_t)env->conf->max_mx_addresses};
	c->lookup = dns_lookup_mx(env->dns, address->domain_ascii, &limits, forward_trace, c, on_dns, c);
	if (c->lookup == NULL)
		goto fail;
	return c;
fail:
	release(c);
	return NULL;
}

/* callout_cancel - see callout.h */
void callout_cancel(struct callout *callout)
{
	if (callout != NULL)
		release(callout);
}
