/*
 * callout.c - one verification: from an address to an outcome.
 *
 * Walks: DNS (or the address literal) -> network guard -> one SMTP probe per
 * address, in MX order, until an answer settles it or probe_timeout passes.
 * What the SMTP dialogue reports is classified here and nowhere else:
 *
 *   RCPT 2xx ................ valid (catch_all when the random address is
 *                             accepted too; a 4xx to it proves nothing)
 *   RCPT 5xx ................ invalid, stop; 5.7.x or a blocklist text:
 *                             blocked (the server refuses us, not the address)
 *   banner/EHLO/HELO/MAIL 5xx blocked, try the next address
 *   any 4xx, timeout, refused connection, dropped connection, garbage
 *                             tempfail, try the next address
 *   TLS handshake failure ... the same address again once, in plain text
 *   SMTPUTF8 needed, not offered: unverifiable, try the next address
 *
 * When every address is used up, the most telling failure wins
 * (unverifiable > blocked > a 4xx reply > no reply at all): "every MX
 * unreachable" and "we are blocked" are our problems, never the sender's.
 *
 * Owns the struct callout, its DNS lookup, its current SMTP probe and its
 * timers; frees itself after calling done.
 */
#include "callout.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dns.h"
#include "netguard.h"
#include "smtp.h"

struct target {
	char host[DNS_NAME_MAX + 1];
	struct sockaddr_storage addr;
	char addr_text[64];
};

/* How telling a non-final outcome is; the highest is reported. */
enum rank {
	RANK_NONE,
	RANK_NO_REPLY,     /* refused, timeout, dropped */
	RANK_TEMP_REPLY,   /* a 4xx from a server */
	RANK_BLOCKED,      /* a server refuses us */
	RANK_UNVERIFIABLE, /* a server cannot be asked */
};

struct callout {
	const struct probe_env *env;
	struct addr address;
	char rcpt[ADDR_PATH_MAX];
	char catchall_rcpt[ADDR_PATH_MAX + 32]; /* 16-letter local part at the domain */
	callout_trace_fn trace;
	void *trace_arg;
	callout_done_fn done;
	void *done_arg;

	struct dns_lookup *lookup;
	struct smtp_probe *probe;
	struct event *deadline;
	struct event *later; /* runs finish() or the literal's first probe from the loop */

	struct target *targets; /* max_mx_addresses of them: thousands of callouts may be in flight */
	size_t target_room;
	size_t target_count;
	size_t next_target;
	bool plain_retry; /* the last target failed TLS: try it once more without */
	bool plain_now;   /* the current attempt is that retry */

	struct outcome result;
	enum rank best_rank;
	bool finished;
};

static void probe_next(struct callout *c);

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

/* forward_trace - dns.c and smtp.c lines go to the same transcript */
static void forward_trace(void *arg, const char *line)
{
	struct callout *c = arg;
	if (c->trace != NULL)
		c->trace(c->trace_arg, line);
}

/* release - free everything the callout holds, and the callout */
static void release(struct callout *c)
{
	if (c->lookup != NULL)
		dns_lookup_cancel(c->lookup);
	if (c->probe != NULL)
		smtp_probe_cancel(c->probe);
	if (c->deadline != NULL)
		event_free(c->deadline);
	if (c->later != NULL)
		event_free(c->later);
	free(c->targets);
	free(c);
}

/* finish - report c->result and free the callout */
static void finish(struct callout *c)
{
	if (c->finished)
		return;
	c->finished = true;
	trace(c, "result: %s (%s)%s%s", outcome_name(c->result.kind), c->result.reason,
	      c->result.mx_host[0] ? " from " : "", c->result.mx_host);
	c->done(c->done_arg, &c->result);
	release(c);
}

/* settle - a final outcome, not tied to a server */
static void settle(struct callout *c, enum outcome_kind kind, enum probe_stage stage, const char *reason)
{
	outcome_set(&c->result, kind, stage, 0, NULL, NULL, reason);
	finish(c);
}

/* note - remember a non-final failure if it tells more than what we had */
static void note(struct callout *c, enum rank rank, enum outcome_kind kind, const struct target *t,
                 const struct smtp_result *r, const char *reason)
{
	if (rank < c->best_rank)
		return;
	c->best_rank = rank;
	const struct smtp_reply *reply = r != NULL ? &r->reply : NULL;
	outcome_set(&c->result, kind, r != NULL ? r->stage : STAGE_CONNECT, reply ? reply->code : 0,
	            reply ? reply->ecode : NULL, reply ? reply->text : NULL, reason);
	snprintf(c->result.mx_host, sizeof(c->result.mx_host), "%s", t->host);
	snprintf(c->result.mx_addr, sizeof(c->result.mx_addr), "%s", t->addr_text);
}

/* conclude - a final answer from a server */
static void conclude(struct callout *c, enum outcome_kind kind, const struct target *t,
                     enum probe_stage stage, const struct smtp_reply *reply, const char *reason)
{
	outcome_set(&c->result, kind, stage, reply->code, reply->ecode, reply->text, reason);
	snprintf(c->result.mx_host, sizeof(c->result.mx_host), "%s", t->host);
	snprintf(c->result.mx_addr, sizeof(c->result.mx_addr), "%s", t->addr_text);
	finish(c);
}

/* says_blocked - a 5xx about us rather than the address: 5.7.x, or a
 * blocklist named in the text of a reply without an enhanced code */
static bool says_blocked(const struct smtp_reply *reply)
{
	static const char *const words[] = {"blocklist",  "blacklist", "blocked", "spamhaus",
	                                    "reputation", "rbl",       "dnsbl"};
	if (strncmp(reply->ecode, "5.7.", 4) == 0)
		return true;
	if (reply->ecode[0] != '\0')
		return false;
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strcasestr(reply->text, words[i]) != NULL)
			return true;
	return false;
}

/* judge_rcpt - the dialogue reached RCPT: decide, or move on */
static void judge_rcpt(struct callout *c, const struct target *t, const struct smtp_result *r)
{
	const struct smtp_reply *reply = &r->reply;
	char reason[200];
	if (reply->code >= 200 && reply->code < 300) {
		if (r->catchall_asked && r->catchall_reply.code >= 200 && r->catchall_reply.code < 300) {
			snprintf(reason, sizeof(reason),
			         "server accepts any address (random <%.120s> got %d)", c->catchall_rcpt,
			         r->catchall_reply.code);
			conclude(c, OUTCOME_CATCH_ALL, t, STAGE_CATCHALL, &r->catchall_reply, reason);
			return;
		}
		if (r->catchall_asked && r->catchall_reply.code >= 400 && r->catchall_reply.code < 500)
			snprintf(reason, sizeof(reason),
			         "address accepted; catch-all unknown (random address got %d)",
			         r->catchall_reply.code);
		else
			snprintf(reason, sizeof(reason), "address accepted");
		conclude(c, OUTCOME_VALID, t, STAGE_RCPT, reply, reason);
	} else if (reply->code >= 500) {
		if (says_blocked(reply)) {
			note(c, RANK_BLOCKED, OUTCOME_BLOCKED, t, r,
			     "server refuses our probe at RCPT (policy)");
			probe_next(c);
			return;
		}
		conclude(c, OUTCOME_INVALID, t, STAGE_RCPT, reply, "address rejected");
	} else {
		note(c, RANK_TEMP_REPLY, OUTCOME_TEMPFAIL, t, r, "temporary failure at RCPT");
		probe_next(c);
	}
}

/* on_smtp_done - one connection ended: classify (see the table above) */
static void on_smtp_done(void *arg, const struct smtp_result *r)
{
	struct callout *c = arg;
	const struct target *t = &c->targets[c->next_target - 1];
	char reason[200];
	c->probe = NULL;

	switch (r->end) {
	case SMTP_END_DONE:
		judge_rcpt(c, t, r);
		return;
	case SMTP_END_REPLY:
		snprintf(reason, sizeof(reason), "%s at %s",
		         r->reply.code >= 500 ? "refused" : "temporary failure", probe_stage_name(r->stage));
		if (r->reply.code >= 500)
			note(c, RANK_BLOCKED, OUTCOME_BLOCKED, t, r, reason);
		else
			note(c, RANK_TEMP_REPLY, OUTCOME_TEMPFAIL, t, r, reason);
		break;
	case SMTP_END_TLS_FAILED:
		if (!c->plain_now) {
			trace(c, "* TLS failed with %s (%s): retrying once without TLS", t->host, r->error);
			c->plain_retry = true;
			c->next_target--;
			break;
		}
		snprintf(reason, sizeof(reason), "TLS failed: %s", r->error);
		note(c, RANK_NO_REPLY, OUTCOME_TEMPFAIL, t, r, reason);
		break;
	case SMTP_END_NO_SMTPUTF8:
		note(c, RANK_UNVERIFIABLE, OUTCOME_UNVERIFIABLE, t, r,
		     "UTF-8 local part, and the server does not offer SMTPUTF8");
		break;
	case SMTP_END_CONNECT_FAILED:
	case SMTP_END_TIMEOUT:
	case SMTP_END_CLOSED:
	case SMTP_END_PROTOCOL:
		snprintf(reason, sizeof(reason), "%s", r->error[0] ? r->error : "connection failed");
		note(c, RANK_NO_REPLY, OUTCOME_TEMPFAIL, t, r, reason);
		break;
	}
	probe_next(c);
}

/* probe_next - the next address, or the best we have when none is left */
static void probe_next(struct callout *c)
{
	if (c->next_target >= c->target_count) {
		if (c->best_rank == RANK_NONE)
			outcome_set(&c->result, OUTCOME_TEMPFAIL, STAGE_CONNECT, 0, NULL, NULL,
			            "no mail server address could be tried");
		finish(c);
		return;
	}
	struct target *t = &c->targets[c->next_target++];
	const struct conf *conf = c->env->conf;
	c->plain_now = c->plain_retry;
	c->plain_retry = false;
	if (!c->plain_now)
		trace(c, "* trying %s [%s] (%zu of %zu)", t->host, t->addr_text, c->next_target,
		      c->target_count);
	bool tls = conf->probe_tls && !c->plain_now;

	struct smtp_params params = {
	        .helo_name = c->env->helo_name,
	        .mail_from = conf->probe_sender,
	        .rcpt = c->rcpt,
	        .catchall_rcpt = conf->catchall_probe ? c->catchall_rcpt : NULL,
	        .server_name = t->host,
	        .needs_smtputf8 = c->address.local_utf8,
	        .try_tls = tls,
	        .ssl_ctx = c->env->ssl_ctx,
	        .connect_timeout_ms = conf->connect_timeout_ms,
	        .banner_timeout_ms = conf->banner_timeout_ms,
	        .command_timeout_ms = conf->command_timeout_ms,
	};
	c->probe = smtp_probe_start(c->env->base, (struct sockaddr *)&t->addr, &params, forward_trace, c,
	                            on_smtp_done, c);
	if (c->probe == NULL) {
		outcome_set(&c->result, OUTCOME_TEMPFAIL, STAGE_CONNECT, 0, NULL, NULL, "out of memory");
		finish(c);
	}
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

/* add_target - queue one address unless the guard forbids it; returns
 * false when it was refused (and *why names the range) */
static bool add_target(struct callout *c, const char *host, const struct sockaddr_storage *ss,
                       const char **why)
{
	if (c->target_count >= c->target_room)
		return true;
	struct target *t = &c->targets[c->target_count];
	format_addr(ss, t->addr_text, sizeof(t->addr_text));
	if (!netguard_allows((const struct sockaddr *)ss, &c->env->conf->probe_allow_networks, why)) {
		trace(c, "guard: not connecting to %s [%s]: %s", host, t->addr_text, *why);
		return false;
	}
	snprintf(t->host, sizeof(t->host), "%s", host);
	t->addr = *ss;
	in_port_t port = htons((in_port_t)c->env->conf->probe_port);
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)&t->addr)->sin_port = port;
	else
		((struct sockaddr_in6 *)&t->addr)->sin6_port = port;
	c->target_count++;
	return true;
}

/* start_probing - after targets are known: refuse or go */
static void start_probing(struct callout *c, size_t refused, const char *why)
{
	if (c->target_count == 0 && refused > 0) {
		char reason[200];
		snprintf(reason, sizeof(reason), "every mail server address is in a forbidden network (%s)",
		         why);
		settle(c, OUTCOME_NO_DOMAIN, STAGE_GUARD, reason);
		return;
	}
	probe_next(c);
}

/* on_dns - the domain's mail hosts, or why there are none */
static void on_dns(void *arg, const struct dns_answer *answer)
{
	struct callout *c = arg;
	c->lookup = NULL;
	switch (answer->status) {
	case DNS_NXDOMAIN:
		settle(c, OUTCOME_NO_DOMAIN, STAGE_DNS, "domain does not exist (NXDOMAIN)");
		return;
	case DNS_NULL_MX:
		settle(c, OUTCOME_NO_DOMAIN, STAGE_DNS, "domain accepts no mail (null MX, RFC 7505)");
		return;
	case DNS_NO_MAIL_HOST:
		settle(c, OUTCOME_NO_DOMAIN, STAGE_DNS, answer->detail[0] ? answer->detail : "no mail host");
		return;
	case DNS_TEMPFAIL:
		settle(c, OUTCOME_TEMPFAIL, STAGE_DNS,
		       answer->detail[0] ? answer->detail : "DNS lookup failed");
		return;
	case DNS_OK:
		break;
	}
	size_t refused = 0;
	const char *why = "";
	for (size_t h = 0; h < answer->host_count; h++)
		for (size_t a = 0; a < answer->hosts[h].address_count; a++)
			if (!add_target(c, answer->hosts[h].name, &answer->hosts[h].addresses[a], &why))
				refused++;
	start_probing(c, refused, why);
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

/* on_later - first step of an address literal, run from the loop */
static void on_later(evutil_socket_t fd, short what, void *arg)
{
	struct callout *c = arg;
	struct sockaddr_storage ss;
	if (!literal_target(c, &ss)) {
		settle(c, OUTCOME_NO_DOMAIN, STAGE_DNS, "address literal is not a usable address");
		return;
	}
	trace(c, "dns: %s is an address literal: no lookup", c->address.domain_ascii);
	const char *why = "";
	size_t refused = add_target(c, c->address.domain_ascii, &ss, &why) ? 0 : 1;
	start_probing(c, refused, why);
}

/* on_deadline - probe_timeout passed: stop with the best we know */
static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct callout *c = arg;
	trace(c, "* probe_timeout (%lld ms) passed", (long long)c->env->conf->probe_timeout_ms);
	if (c->best_rank == RANK_NONE)
		outcome_set(&c->result, OUTCOME_TEMPFAIL, c->probe != NULL ? STAGE_CONNECT : STAGE_DNS, 0,
		            NULL, NULL, "no answer within probe_timeout");
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
	c->trace = trace_fn;
	c->trace_arg = trace_arg;
	c->done = done;
	c->done_arg = arg;
	snprintf(c->rcpt, sizeof(c->rcpt), "%s", address->normalized);
	char local[24];
	random_local_part(local, sizeof(local));
	snprintf(c->catchall_rcpt, sizeof(c->catchall_rcpt), "%s@%s", local, address->domain_ascii);
	outcome_set(&c->result, OUTCOME_TEMPFAIL, STAGE_NONE, 0, NULL, NULL, "not probed");

	c->target_room = (size_t)env->conf->max_mx_addresses;
	c->targets = calloc(c->target_room, sizeof(*c->targets));
	if (c->targets == NULL)
		goto fail;
	c->deadline = evtimer_new(env->base, on_deadline, c);
	struct timeval tv = {.tv_sec = env->conf->probe_timeout_ms / 1000,
	                     .tv_usec = (env->conf->probe_timeout_ms % 1000) * 1000};
	if (c->deadline == NULL || evtimer_add(c->deadline, &tv) != 0)
		goto fail;
	if (address->domain_kind != ADDR_DOMAIN_NAME) {
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
