/*
 * engine.h - what every probe shares: the event loop, the resolver, the TLS
 * context, the name we announce, this host's addresses, and the work that
 * goes on after a verdict (QUIT, late catch-all answers), and the circuit
 * breaker's table of MX host addresses (hosts.h).
 *
 * engine_new() builds them from a configuration; the caller runs the loop
 * (vemilter-check runs it until its probes and their lingering work are
 * done). engine_free() closes whatever still lingers, without callbacks,
 * before it frees the loop. Everything here belongs to the thread that
 * runs engine->env.base.
 */
#ifndef VEMILTER_ENGINE_H
#define VEMILTER_ENGINE_H

#include <stddef.h>

#include "callout.h"
#include "conf.h"
#include "linger.h"
#include "localaddr.h"
#include "mxrules.h"

struct engine {
	struct probe_env env; /* base, dns, ssl_ctx, conf, helo_name, linger, local */
	char helo_name[256];
	struct linger_list linger;  /* env.linger points here */
	struct local_addrs local;   /* env.local points here */
	struct hosts *hosts;        /* the circuit breaker's table (HOSTS_MAX); env.hosts too */
	struct mxrule_set mx_rules; /* conf->mx_host_overrides parsed; env.mx_rules points here */
	struct pool *pool;          /* sessions shared per MX host address (pool.h); env.pool too */
	/* resolvers a reload replaced, kept until their lookups are answered */
	struct retired_resolver {
		struct dns_resolver *dns;
		struct retired_resolver *next;
	} * retired_dns;
};

/* engine_new - NULL with a reason in why on failure. conf must outlive it. */
struct engine *engine_new(const struct conf *conf, char *why, size_t why_size);
void engine_free(struct engine *engine);

/* engine_apply_conf - a reload, on the engine's thread: probes started
 * from now on use fresh (env.conf; the caller keeps fresh, and the
 * configuration it replaces, alive while anything may still read them:
 * engine_busy), with its helo_name, mx_host_overrides, pool limits, and,
 * when dns_servers or dns_timeout changed, a new resolver (the old one
 * answers its lookups under way, then engine_tidy frees it). False with a
 * reason (nothing changed) when the new resolver cannot be made. */
bool engine_apply_conf(struct engine *engine, const struct conf *fresh, char *why, size_t why_size);

/* engine_busy - anything under way that may still read the configuration
 * it started with: lingering callouts, open pool sessions */
bool engine_busy(const struct engine *engine);

/* engine_tidy - free the replaced resolvers that have no lookup left */
void engine_tidy(struct engine *engine);

/* engine_lingering - how many callouts and probes still go on after their
 * verdict */
size_t engine_lingering(const struct engine *engine);

/* engine_helo_name - the configured helo_name, or this host's fully
 * qualified name (getaddrinfo AI_CANONNAME). False with a reason when no
 * usable name can be found. */
bool engine_helo_name(const char *configured, char *out, size_t size, char *why, size_t why_size);

/* engine_raise_fd_limit - lift the soft open-file limit to the hard one:
 * every probe in flight holds a socket, and 1024 is Linux's usual soft
 * limit. Logs nothing; returns the limit now in force. */
unsigned long engine_raise_fd_limit(void);

#endif
