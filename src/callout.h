/*
 * callout.h - verify one address: DNS, network guard, SMTP, outcome.
 *
 * callout_start() resolves the address's domain (or takes an address
 * literal as is), drops addresses the network guard forbids, and walks the
 * MX hosts and their addresses within probe_timeout: a connection failure,
 * 4xx, TLS failure or timeout moves on to the next address; a definite
 * answer stops. It then turns what the SMTP dialogue reported into one
 * struct outcome (see outcome.h for the classes).
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
typedef struct ssl_ctx_st SSL_CTX;

typedef void (*callout_done_fn)(void *arg, const struct outcome *outcome);
/* A domain fact learned after the verdict was reported (the catch-all
 * RCPT's answer): domain is the A-label domain, fact an outcome whose kind
 * and flags say what was learned (OUTCOME_CATCH_ALL, or OUTCOME_VALID with
 * OUTCOME_F_NOT_CATCHALL). */
typedef void (*callout_fact_fn)(void *arg, const char *domain, const struct outcome *fact);
/* What every callout shares; owned by whoever runs the loop. */
struct probe_env {
	struct event_base *base;
	struct dns_resolver *dns;
	SSL_CTX *ssl_ctx;
	const struct conf *conf;
	const char *helo_name;   /* resolved: never "" */
	callout_fact_fn on_fact; /* late domain facts; NULL: dropped */
	void *fact_arg;          /* must outlive every callout (the verifier) */
};

/* What the cache already knows about the domain, to spare the server. */
struct callout_hints {
	bool skip_catchall;       /* the domain is known not to be catch-all: no random RCPT */
	bool use_fallback_sender; /* the domain refuses probe_sender: start with probe_sender_fallback */
};

/* One line of the dialogue: DNS answers, connections, commands, replies. */
typedef void (*callout_trace_fn)(void *arg, const char *line);

/* callout_start - verify address (not the null sender). hints may be NULL.
 * done runs exactly once from the loop unless cancelled; trace may be NULL.
 * NULL on allocation failure. */
struct callout *callout_start(const struct probe_env *env, const struct addr *address,
                              const struct callout_hints *hints, callout_trace_fn trace, void *trace_arg,
                              callout_done_fn done, void *arg);

/* callout_cancel - stop now; done will not run. */
void callout_cancel(struct callout *callout);

#endif
