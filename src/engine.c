/*
 * engine.c - builds and frees the shared parts of probing: a libevent base,
 * a c-ares resolver on it, an OpenSSL client context for STARTTLS, the EHLO
 * name, this host's addresses, the linger list, the circuit breaker's
 * table of MX host addresses and the pool of sessions shared per MX host
 * address. Owns them all, and what lingers on the list.
 */
#include "engine.h"

#include <event2/event.h>
#include <netdb.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "clock.h"
#include "dns.h"
#include "hosts.h"
#include "log.h"
#include "pool.h"

/* engine_helo_name - see engine.h */
bool engine_helo_name(const char *configured, char *out, size_t size, char *why, size_t why_size)
{
	if (configured != NULL && configured[0] != '\0') {
		snprintf(out, size, "%s", configured);
		return true;
	}
	char host[256];
	if (gethostname(host, sizeof(host)) != 0) {
		snprintf(why, why_size, "gethostname failed; set helo_name");
		return false;
	}
	host[sizeof(host) - 1] = '\0';
	struct addrinfo hints = {.ai_flags = AI_CANONNAME, .ai_family = AF_UNSPEC};
	struct addrinfo *res = NULL;
	if (strchr(host, '.') == NULL && getaddrinfo(host, NULL, &hints, &res) == 0 && res != NULL &&
	    res->ai_canonname != NULL && strchr(res->ai_canonname, '.') != NULL)
		snprintf(host, sizeof(host), "%s", res->ai_canonname);
	if (res != NULL)
		freeaddrinfo(res);
	if (strchr(host, '.') == NULL) {
		snprintf(why, why_size,
		         "this host's name \"%s\" is not fully qualified; set helo_name (receiving servers "
		         "judge probes by it)",
		         host);
		return false;
	}
	snprintf(out, size, "%s", host);
	return true;
}

/* new_ssl_ctx - a client context for opportunistic STARTTLS */
static SSL_CTX *new_ssl_ctx(void)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL)
		return NULL;
	/* Opportunistic: privacy against passive listeners, no authentication,
	 * as RFC 7435 describes; a certificate problem must not stop a probe. */
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	return ctx;
}

/* pool_limits_of - what the pool is told of conf, at start and at a reload */
static struct pool_limits pool_limits_of(const struct engine *engine, const struct conf *conf)
{
	return (struct pool_limits){.max_sessions = (unsigned)conf->host_sessions,
	                            .max_errors = conf->host_session_errors,
	                            .hosts = engine->hosts,
	                            .session_rate = (unsigned)conf->host_session_rate,
	                            .max_age_ms = conf->probe_timeout_ms};
}

/* engine_new - see engine.h */
struct engine *engine_new(const struct conf *conf, char *why, size_t why_size)
{
	struct engine *engine = calloc(1, sizeof(*engine));
	if (engine == NULL) {
		snprintf(why, why_size, "out of memory");
		return NULL;
	}
	engine->env.conf = conf;
	engine->env.helo_name = engine->helo_name;
	engine->env.linger = &engine->linger;
	engine->env.local = &engine->local;
	char local_why[80];
	if (!local_addrs_load(&engine->local, clock_mono_ms(), local_why, sizeof(local_why)))
		log_msg(LOG_WARNING,
		        "cannot list this host's addresses (%s): only 127.0.0.1 and ::1 count as "
		        "this host for now",
		        local_why);
	if (!engine_helo_name(conf->helo_name, engine->helo_name, sizeof(engine->helo_name), why, why_size)) {
		/* Probing goes on (mail must flow), but the admin must hear of it:
		 * many servers refuse an unqualified EHLO name, and those answers
		 * come back as "blocked", never as a rejection. */
		if (gethostname(engine->helo_name, sizeof(engine->helo_name)) != 0)
			snprintf(engine->helo_name, sizeof(engine->helo_name), "localhost.localdomain");
		engine->helo_name[sizeof(engine->helo_name) - 1] = '\0';
		log_msg(LOG_ERR, "%s; probing as \"%s\" meanwhile", why, engine->helo_name);
	}
	engine->env.base = event_base_new();
	if (engine->env.base == NULL) {
		snprintf(why, why_size, "cannot create the event loop");
		goto fail;
	}
	engine->env.dns =
	        dns_resolver_new(engine->env.base, &conf->dns_servers, conf->dns_timeout_ms, why, why_size);
	if (engine->env.dns == NULL)
		goto fail;
	engine->hosts = hosts_new(HOSTS_MAX);
	if (engine->hosts == NULL) {
		snprintf(why, why_size, "out of memory");
		goto fail;
	}
	engine->env.hosts = engine->hosts;
	if (!mxrules_compile(&conf->mx_host_overrides, &engine->mx_rules)) {
		snprintf(why, why_size, "out of memory");
		goto fail;
	}
	engine->env.mx_rules = &engine->mx_rules;
	struct pool_limits limits = pool_limits_of(engine, conf);
	engine->pool = pool_new(engine->env.base, &limits);
	if (engine->pool == NULL) {
		snprintf(why, why_size, "out of memory");
		goto fail;
	}
	engine->env.pool = engine->pool;
	engine->env.ssl_ctx = new_ssl_ctx();
	if (engine->env.ssl_ctx == NULL) {
		snprintf(why, why_size, "cannot create the TLS context");
		goto fail;
	}
	return engine;
fail:
	engine_free(engine);
	return NULL;
}

/* same_servers - whether two dns_servers lists are the same, in order */
static bool same_servers(const struct conf_strings *a, const struct conf_strings *b)
{
	if (a->count != b->count)
		return false;
	for (size_t i = 0; i < a->count; i++)
		if (strcmp(a->items[i], b->items[i]) != 0)
			return false;
	return true;
}

/* engine_apply_conf - see engine.h */
bool engine_apply_conf(struct engine *engine, const struct conf *fresh, char *why, size_t why_size)
{
	const struct conf *old = engine->env.conf;
	struct dns_resolver *dns = NULL;
	if (!same_servers(&old->dns_servers, &fresh->dns_servers) ||
	    old->dns_timeout_ms != fresh->dns_timeout_ms) {
		dns = dns_resolver_new(engine->env.base, &fresh->dns_servers, fresh->dns_timeout_ms, why,
		                       why_size);
		if (dns == NULL)
			return false;
	}
	struct mxrule_set rules;
	if (!mxrules_compile(&fresh->mx_host_overrides, &rules)) {
		if (dns != NULL)
			dns_resolver_free(dns);
		snprintf(why, why_size, "out of memory");
		return false;
	}
	struct retired_resolver *retired = NULL;
	if (dns != NULL && (retired = calloc(1, sizeof(*retired))) == NULL) {
		dns_resolver_free(dns);
		mxrules_set_free(&rules);
		snprintf(why, why_size, "out of memory");
		return false;
	}
	/* Nothing can fail from here. Rules are used only while a callout
	 * decides (never kept across events): swapped in place. The name is
	 * copied in place as well: sessions read it when they send EHLO. */
	mxrules_set_free(&engine->mx_rules);
	engine->mx_rules = rules;
	char helo[sizeof(engine->helo_name)], why_helo[256];
	if (engine_helo_name(fresh->helo_name, helo, sizeof(helo), why_helo, sizeof(why_helo)))
		memcpy(engine->helo_name, helo, sizeof(helo));
	else
		log_msg(LOG_ERR, "reload: %s; probing as \"%s\" meanwhile", why_helo, engine->helo_name);
	if (dns != NULL) {
		retired->dns = engine->env.dns;
		retired->next = engine->retired_dns;
		engine->retired_dns = retired;
		engine->env.dns = dns;
	}
	struct pool_limits limits = pool_limits_of(engine, fresh);
	pool_set_limits(engine->pool, &limits);
	engine->env.conf = fresh;
	return true;
}

/* engine_busy - see engine.h */
bool engine_busy(const struct engine *engine)
{
	return engine->linger.count > 0 || pool_sessions(engine->pool) > 0;
}

/* engine_tidy - see engine.h */
void engine_tidy(struct engine *engine)
{
	for (struct retired_resolver **link = &engine->retired_dns; *link != NULL;) {
		struct retired_resolver *r = *link;
		if (dns_resolver_idle(r->dns)) {
			*link = r->next;
			dns_resolver_free(r->dns);
			free(r);
		} else {
			link = &r->next;
		}
	}
}

/* engine_free - frees what engine_new built; NULL is fine */
void engine_free(struct engine *engine)
{
	if (engine == NULL)
		return;
	/* First what lingers: it holds sockets and events of the loop. */
	linger_close_all(&engine->linger);
	pool_free(engine->pool); /* after what lingers: their jobs leave it first */
	local_addrs_clear(&engine->local);
	hosts_free(engine->hosts);
	mxrules_set_free(&engine->mx_rules);
	while (engine->retired_dns != NULL) {
		struct retired_resolver *r = engine->retired_dns;
		engine->retired_dns = r->next;
		dns_resolver_free(r->dns);
		free(r);
	}
	if (engine->env.dns != NULL)
		dns_resolver_free(engine->env.dns);
	if (engine->env.ssl_ctx != NULL)
		SSL_CTX_free(engine->env.ssl_ctx);
	if (engine->env.base != NULL)
		event_base_free(engine->env.base);
	free(engine);
}

/* engine_lingering - see engine.h */
size_t engine_lingering(const struct engine *engine)
{
	return engine->linger.count;
}

/* engine_raise_fd_limit - see engine.h */
unsigned long engine_raise_fd_limit(void)
{
	struct rlimit lim;
	if (getrlimit(RLIMIT_NOFILE, &lim) != 0)
		return 0;
	if (lim.rlim_cur < lim.rlim_max) {
		struct rlimit raised = {.rlim_cur = lim.rlim_max, .rlim_max = lim.rlim_max};
		if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
			lim = raised;
	}
	return (unsigned long)lim.rlim_cur;
}
