/*
 * callout.h - verify one address: DNS, network guard, SMTP, outcome.
 *
 * callout_start() resolves the address's domain (or takes the answer its
 * caller resolved already, callout_hints.mx, or an address literal as is), drops addresses the network guard
 * forbids, and walks the MX hosts and their addresses within probe_timeout: a connection failure, 4xx,
 * protocol error, TLS failure or timeout moves on to the next address; a definite answer stops, and so does
 * an address of this host (a mail loop: tempfail "mx is this host", never a probe through ourselves; this
 * host is recognised before the guard, so a split-horizon MX on our own
 * RFC 1918 address is a loop too). When the guard refuses every address:
 * no_domain only if all are bogus (loopback, 0.0.0.0, multicast,
 * documentation: classify_address_bogus), else unverifiable.
 *
 * After the verdict the session must prove it was in step (smtp.h): an
 * invalid verdict is held for that proof (at most min(command_timeout,
 * verify_budget / 4)); a positive one is reported at once and, if the
 * session proves out of step, taken back by a retraction fact (on_fact).
 * classify.h says what each dialogue means.
 *
 * The verdict is reported (done) the moment it is known; QUIT and closing
 * come afterwards. The catch-all RCPT's answer is waited for only when it
 * can change the action: not after a 5xx to the real RCPT, and not when the
 * policy gives catch_all the same action as valid for the domain; then the
 * verdict comes right after the real RCPT. Otherwise the verdict waits for
 * it at most min(command_timeout, verify_budget / 2) (a hanging random RCPT
 * must not cost the client the budget 4xx), and is then reported valid
 * with reason "catch-all unknown", as after a 4xx to the random address.
 * An answer that arrives after the verdict is passed on as a domain fact
 * (on_fact), never as a change of the verdict.
 *
 * When a server refuses MAIL FROM:<probe_sender> with 5xx (not 421) and
 * probe_sender_fallback is set, the same server is asked once more with it
 * (after RSET, or in a new connection when RSET fails); an outcome reached
 * that way carries OUTCOME_F_FALLBACK_SENDER.
 *
 * The circuit breaker (probe_env.hosts, hosts.h): before connecting to an
 * address the callout asks the table. An address that refused us within
 * blocked_ttl is not connected to: the attempt is judged as that refusal
 * again (outcome blocked, its stage, code and text; reason "remembered:
 * HOST refused us at STAGE N minutes ago"), and the walk goes on to the
 * next address as after a real refusal. An address backed off (no answer
 * within host_backoff, doubling) is skipped as a connection failure
 * ("backed off: no answer from ADDR since N s ago"). Neither ever yields
 * more than blocked or tempfail. After each real attempt the table is
 * told: a refusal of us (5xx at the greeting, EHLO/HELO or MAIL, or one
 * naming our sender or a blocklist, once no fallback retry is left) is
 * remembered; a refused or timed-out connection or a missing greeting
 * backs the address off; any other reply ends its backoff and marks it
 * answering. A host nobody heard from lately is first contacted by one
 * probe only (hosts_claim): the others that want it meanwhile wait (asking
 * again every 50 ms, bounded by probe_timeout and the claim's lapse) and
 * then take its refusal, skip it as backed off, or connect.
 *
 * Sessions (probe_env.pool, pool.h): each SMTP attempt is a job in the
 * pool, which asks it in a session to that MX host address shared with
 * other callouts' jobs (at most host_sessions at once, host_session_errors
 * failed RCPTs each). Everything above is checked before a job is queued;
 * host_session_rate only for a job that would open a new session. The
 * job's answer is this address's own: its RCPT reply, its classification,
 * its record; the sync proof and the held invalid work per job as for a
 * session of its own.
 *
 * Threads: runs on the event loop of probe_env->base; callbacks come from
 * that loop.
 */
#ifndef VEMILTER_CALLOUT_H
#define VEMILTER_CALLOUT_H

#include "addr.h"
#include "conf.h"
#include "outcome.h"

struct event_base;
struct dns_resolver;
struct callout;
struct mxrule_set;
typedef struct ssl_ctx_st SSL_CTX;

typedef void (*callout_done_fn)(void *arg, const struct outcome *outcome);
/* A fact learned after the verdict was reported, about the probed
 * address's domain (address->domain_ascii, the A-label domain) or about the
 * verdict itself. fact's kind and flags say which:
 *  - OUTCOME_CATCH_ALL, or OUTCOME_VALID with OUTCOME_F_NOT_CATCHALL: the
 *    catch-all RCPT's answer, a fact about the domain;
 *  - OUTCOME_TEMPFAIL with OUTCOME_F_PROTOCOL: a retraction. The session the
 *    verdict came from proved out of step after it (the QUIT reply was not
 *    2xx, or data followed the catch-all or QUIT reply: a server one reply
 *    behind), so every reply in it may have answered another command. The
 *    verdict for address is taken back: its record is to be overwritten
 *    with this outcome, and the domain facts and hints from that probe
 *    dropped. stage says where it was found, reason e.g. "reply before
 *    command (found after the verdict: QUIT got 550)". An invalid verdict
 *    is held until its session proves in step (at most min(command_timeout,
 *    verify_budget / 4)), so a retraction of an invalid comes only when that
 *    bound passed first. */
typedef void (*callout_fact_fn)(void *arg, const struct addr *address, const struct outcome *fact);
struct linger_list;
struct local_addrs;
struct hosts;
struct pool;

/* A callout that reported has closed its last connection (QUIT answered or
 * given up, the late catch-all answer in): once per such callout, after
 * done (at once if nothing was left), from the loop; never for a callout
 * cancelled or closed by linger_close_all. A limit on connections to a
 * domain (domain_probe_limit) can hold its slot until then. */
typedef void (*callout_finished_fn)(void *arg, const char *domain);

/* What every callout shares; owned by whoever runs the loop. */
struct host_memo;
struct sockaddr;

struct probe_env {
	struct event_base *base;
	struct dns_resolver *dns;
	SSL_CTX *ssl_ctx;
	const struct conf *conf;
	const char *helo_name;           /* resolved: never "" */
	callout_fact_fn on_fact;         /* late domain facts; NULL: dropped */
	callout_finished_fn on_finished; /* NULL: nobody asks */
	void *fact_arg; /* for on_fact and on_finished; must outlive every callout, lingering ones too */
	/* Callouts and probes that go on after their verdict (QUIT, the late
	 * catch-all answer) live here until they end; linger_close_all() ends
	 * them without callbacks. NULL: they are closed at once. */
	struct linger_list *linger;
	struct local_addrs *local; /* this host's addresses (mail loops); NULL: not checked */
	/* The circuit breaker (hosts.h): MX host addresses that refused us or
	 * did not answer, consulted before each connection and told how each
	 * attempt ended. NULL: no breaker. */
	struct hosts *hosts;
	/* Told each time the breaker notes an address blocked or backed off by
	 * an attempt of ours (memo: its state now, times on clock_mono_ms), so
	 * the fleet may learn it (shared.h); engine thread. NULL: nobody. */
	void (*on_breaker)(void *arg, const struct sockaddr *sa, const char *addr_text,
	                   const struct host_memo *memo);
	void *breaker_arg;
	const struct mxrule_set *mx_rules; /* mx_host_overrides, parsed once; NULL: none */
	/* Sessions shared per MX host address (pool.h): every SMTP attempt is
	 * a job there. Required. */
	struct pool *pool;
};

struct dns_answer;

/* What the cache already knows about the domain, to spare the server. */
struct callout_hints {
	bool skip_catchall;       /* the domain is known not to be catch-all: no random RCPT */
	bool use_fallback_sender; /* the domain refuses probe_sender: start with probe_sender_fallback */
	/* The domain's mail hosts, resolved already (the verifier shares one
	 * resolution among the probes of a domain and keeps it for its TTL):
	 * copied by callout_start and used as if its own lookup had answered
	 * (ttl_ms: what is left of the TTL). NULL: the callout resolves. */
	const struct dns_answer *mx;
};

/* One line of the dialogue: DNS answers, connections, commands, replies. */
typedef void (*callout_trace_fn)(void *arg, const char *line);

/* callout_start - verify address (not the null sender). hints may be NULL.
 * done runs exactly once from the loop unless cancelled first; after done
 * the callout is no longer the caller's: it lingers on env->linger while
 * its connections say QUIT or owe the catch-all answer, then calls
 * env->on_finished and frees itself. trace may be NULL; lines come while
 * it lingers too, so trace_arg must outlive the linger's owner. NULL on
 * allocation failure. */
struct callout *callout_start(const struct probe_env *env, const struct addr *address,
                              const struct callout_hints *hints, callout_trace_fn trace, void *trace_arg,
                              callout_done_fn done, void *arg);

/* callout_cancel - stop now; done will not run. Only before done. */
void callout_cancel(struct callout *callout);

#endif
