/*
 * conf.h - vemilter.conf: one directive table, a parser, an immutable result.
 *
 * conf_load() reads "key = value" lines ("#" starts a comment line) into a new
 * struct conf. Every directive has a type, a default and, for numbers, bounds;
 * an unknown directive, a bad value, a number out of range or an unreadable
 * list file is an error reported as "file:line: message" through the caller's
 * callback, and the whole load fails: never a silent default.
 *
 * Value types: string, boolean (yes/no/true/false/on/off/1/0), integer,
 * octal mode, duration ("30s", "5m", "2h", "7d", "1w", "250ms", combinations
 * like "1h30m"; a bare number is seconds), enum (syslog facility, log level),
 * list (comma-separated; an item "file:/path" adds that file's lines, one
 * entry a line, "#" comments), CIDR list (a list of networks), SMTP reply,
 * action (accept, tempfail, reject), domain overrides (a list of
 * "DOMAIN RULE" entries).
 *
 * The result is immutable and reference-counted: a reader takes a reference
 * (conf_ref) for as long as it uses the object, so a reload that swaps the
 * current pointer never changes a configuration under a running connection.
 */
#ifndef VEMILTER_CONF_H
#define VEMILTER_CONF_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cidr.h"
#include "outcome.h"
#include "reply.h"

#define CONF_DEFAULT_PATH "/etc/vemilter.conf"

struct conf_strings {
	size_t count;
	char **items; /* owned by the conf */
};

/* What the MTA is told about a sender (policy.h maps it to its verdicts). */
enum conf_action {
	CONF_ACCEPT,
	CONF_TEMPFAIL,
	CONF_REJECT,
};

/* One domain_overrides entry: "DOMAIN skip", "DOMAIN verify" or
 * "DOMAIN OUTCOME=ACTION,...". It covers the domain's subdomains. */
struct conf_override {
	char *domain;                                /* lower-case A-labels; owned */
	bool skip;                                   /* never verify: accept */
	bool has_action[OUTCOME_KIND_COUNT];         /* this outcome's action is overridden */
	enum conf_action action[OUTCOME_KIND_COUNT]; /* valid where has_action */
};

struct conf_overrides {
	size_t count;
	struct conf_override *items; /* owned by the conf */
};

struct conf {
	char *path; /* file it was loaded from */

	/* milter socket and process */
	char *socket;              /* libmilter notation: unix:/path, inet:port@host, inet6:... */
	unsigned socket_mode;      /* unix socket permissions */
	char *socket_group;        /* unix socket group; "" = leave as created */
	char *user;                /* run as this user after setup; "" = do not switch */
	char *pid_file;            /* "" = none */
	int64_t milter_timeout_ms; /* an MTA session silent this long is closed (smfi_settimeout) */
	char *milter_transport;    /* "libmilter" or "native" (milterloop.c) */
	int syslog_facility;       /* LOG_MAIL, LOG_LOCAL0, ... */
	int log_level;             /* LOG_ERR .. LOG_DEBUG: highest priority logged */

	/* who is never checked */
	struct cidr_list trusted_networks;
	bool skip_authenticated;                  /* {auth_authen} set: skip */
	struct conf_strings allow_sender_domains; /* lower-case A-labels; covers subdomains */
	struct conf_strings allow_senders;        /* normalized addresses (addr.normalized) */
	struct conf_strings exempt_recipients;    /* "postmaster" (any domain) or full address */

	/* replies */
	struct reply_template bad_syntax_reply;

	/* probing: DNS and the SMTP callout */
	struct conf_strings dns_servers;       /* "IP", "IP:PORT", "[IPv6]:PORT"; empty: /etc/resolv.conf */
	int64_t dns_timeout_ms;                /* per DNS query try */
	int64_t dns_cache_time_ms;             /* mail hosts kept in memory (capped by TTLs) */
	char *helo_name;                       /* EHLO name; "": this host's fully qualified name */
	char *metrics_listen;                  /* ADDRESS:PORT of the /metrics HTTP server; "": off */
	char *probe_sender;                    /* MAIL FROM of probes; "": the null sender <> */
	char *probe_sender_fallback;           /* MAIL FROM when a server refuses probe_sender; "": off */
	int probe_port;                        /* 25; tests point it elsewhere */
	char *probe_source_address;            /* numeric; "": the kernel picks by route */
	bool probe_tls;                        /* STARTTLS when offered */
	bool probe_pipelining;                 /* the last RCPT and QUIT as one group (RFC 2920) */
	bool catchall_probe;                   /* ask for a random address too */
	int max_mx;                            /* MX hosts tried */
	int max_mx_addresses;                  /* addresses tried, all hosts together */
	struct cidr_list probe_allow_networks; /* exceptions to the network guard */
	int64_t connect_timeout_ms;
	int64_t banner_timeout_ms;
	int64_t command_timeout_ms;
	int64_t probe_timeout_ms; /* one whole verification, all MX hosts */

	/* circuit breaker (hosts.h): per MX host address */
	int64_t blocked_ttl_ms;       /* a host that refused us is not asked again for this long; 0: off */
	int64_t host_backoff_ms;      /* a host that did not answer is skipped this long (doubling); 0: off */
	int host_session_rate;        /* new sessions per minute to one MX host address; 0: no limit */
	int catchall_host_domains;    /* distinct catch-all domains that make an address catch-all; 0: off */
	int64_t catchall_host_ttl_ms; /* ... within this long, and it is remembered this long */
	int host_sessions;       /* concurrent sessions per MX host address, shared by probes (pool.h); 0: one
	                          * session per probe */
	int host_session_errors; /* 5xx RCPTs after which a shared session ends; 0: no bound */
	struct conf_strings mx_host_overrides; /* "PATTERN skip|verify", normalized (mxrules.h) */

	/* verification in the milter, and the cache */
	int64_t verify_budget_ms;       /* how long a milter thread waits at RCPT */
	char *cache;                    /* LMDB file, or a redis:// URL (redisurl.h); "" = no cache */
	int cache_max_mb;               /* the map grows up to this, then evicts */
	int64_t cache_sync_interval_ms; /* commits synced this often; 0: each one */
	char *cache_fallback;           /* Redis cache: the local LMDB tier; "" = none */
	char *cache_password_file;      /* Redis cache: its password's file; "" = none */
	int64_t cache_redis_timeout_ms; /* every Redis call's timeout */
	int64_t positive_ttl_ms;        /* valid */
	int64_t positive_refresh_ms;
	int64_t negative_ttl_ms; /* invalid, no_domain */
	int64_t negative_refresh_ms;
	int64_t inconclusive_ttl_ms; /* catch_all, unverifiable */
	int64_t temporary_ttl_ms;    /* tempfail, blocked */
	int64_t sweep_interval_ms;   /* expired entries removed this often */
	int domain_probe_limit;      /* probes to one domain at once; more wait */
	int domain_probe_rate;       /* new probes to one domain per minute; 0: no limit */
	/* budgets for every party a flood could make us hammer (issue 8) */
	int client_probe_rate;     /* probes started per minute for one client address; 0: no limit */
	int domain_invalid_limit;  /* distinct invalid addresses of a domain a minute, then a pause; 0: off */
	int max_probes_in_flight;  /* probes running at once, all domains (also bounded by fds) */
	int64_t greylist_retry_ms; /* a greylisted probe is asked again after this */
	struct conf_strings tagged_senders; /* "batv", "srs", "verp": cached under the stable form */

	/* policy: from an outcome to what the MTA is told */
	enum conf_action outcome_action[OUTCOME_KIND_COUNT]; /* by enum outcome_kind */
	enum conf_action budget_action;                      /* no answer within verify_budget */
	int64_t defer_limit_ms;              /* a sender deferred longer than this is accepted; 0: no limit */
	struct reply_template invalid_reply; /* reject, outcome invalid: 5xx */
	struct reply_template no_domain_reply;       /* reject, outcome no_domain: 5xx */
	struct reply_template reject_reply;          /* reject, any other outcome: 5xx */
	struct reply_template tempfail_reply;        /* tempfail, any outcome: 4xx */
	struct reply_template budget_reply;          /* tempfail, budget exceeded: 4xx */
	struct reply_template blocklist_reply;       /* reject, blocklisted domain: 5xx */
	struct conf_overrides domain_overrides;      /* per-domain skip or actions */
	struct conf_strings sender_domain_blocklist; /* lower-case A-labels; covers subdomains */
	bool dry_run;                                /* decide and log, accept everything */
	bool self_health;    /* accept tempfail outcomes while our own probes fail (health.h) */
	char *result_header; /* header naming the outcome; "" = none */

	atomic_int refs;
};

/* Receives one "file:line: message" per error (no trailing newline). */
typedef void (*conf_error_fn)(void *arg, const char *message);

/* conf_load - read path; NULL if any error (each one reported via on_error). */
struct conf *conf_load(const char *path, conf_error_fn on_error, void *arg);

/* conf_load_text - same, from a string; name is used in messages. For tests
 * and for built-in defaults (text ""). */
struct conf *conf_load_text(const char *name, const char *text, conf_error_fn on_error, void *arg);

struct conf *conf_ref(struct conf *c);
void conf_unref(struct conf *c); /* frees on the last reference; NULL is fine */

/* Directive table, read-only: for documentation checks and "-n" output. */
size_t conf_directive_count(void);
const char *conf_directive_name(size_t i);
const char *conf_directive_default(size_t i);
/* conf_directive_restart - directive i is read once at start: a reload
 * (SIGHUP) does not apply it */
bool conf_directive_restart(size_t i);
/* conf_directive_changed - whether a and b differ in directive i (only the
 * types of restart directives are compared; others: false) */
bool conf_directive_changed(const struct conf *a, const struct conf *b, size_t i);

/* conf_parse_duration_ms - "1h30m" -> 5400000. False on syntax error/overflow. */
bool conf_parse_duration_ms(const char *text, int64_t *out_ms);

/* conf_parse_integer - decimal integer (optional "-") within min..max, the
 * parser behind integer directives. False with a reason in why. */
bool conf_parse_integer(const char *text, int64_t min, int64_t max, int64_t *out, char *why, size_t why_size);

/* conf_strings_contains - exact, case-insensitive membership. */
bool conf_strings_contains(const struct conf_strings *list, const char *item);

#endif
