/*
 * msession.c - the session rules both milter transports share (see
 * msession.h).
 *
 * Each session owns a struct msession holding its own reference to the
 * configuration, so a configuration swap never changes the rules under a
 * running session. Message state lives inside it and is reset at every
 * MAIL FROM and abort, so nothing crosses from one message to the next.
 */
#include "msession.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "clock.h"
#include "log.h"
#include "policy.h"
#include "precheck.h"
#include "reply.h"
#include "verify.h"

static struct {
	pthread_mutex_t lock;
	pthread_cond_t idle;
	struct conf *conf;         /* current configuration; a reference */
	int sessions;              /* live struct msession objects */
	struct verifier *verifier; /* NULL: no verification (syntax and lists only) */
} shared = {.lock = PTHREAD_MUTEX_INITIALIZER, .idle = PTHREAD_COND_INITIALIZER};

enum message_state {
	MSG_DECIDED,     /* nothing pending: accepted at MAIL FROM, or no MAIL FROM yet */
	MSG_BAD_SYNTAX,  /* reject every recipient but the exempt ones (dry_run: log, accept) */
	MSG_BLOCKLISTED, /* the same, with the blocklist reply */
	MSG_VERIFYING,   /* a verification runs; its verdict applies from the first RCPT */
};

struct message {
	enum message_state state;
	char queue_id[32];
	char sender[ADDR_PATH_MAX + 3]; /* as the MTA gave it, cut to fit */
	struct precheck_result check;
	const char *matched;          /* blocklist entry (points into conf) */
	struct verify_ticket *ticket; /* MSG_VERIFYING: ours to release */
	bool answered;                /* result (or the budget's end) is known */
	bool budget_exceeded;
	struct verify_result result;
	struct policy_verdict verdict;
	bool accept_logged;
	/* Recipient verdict lines: the last one logged (its reason and verdict)
	 * and how many later recipients got the same verdict unlogged; one line
	 * with the count is logged when the message ends (log_repeats). */
	char repeat_reason[32];
	struct policy_verdict repeat_verdict;
	unsigned repeats;
	const char *skip_reason; /* MSG_DECIDED: why no verification (static) */
	int header_count;        /* result_header fields the client sent */
};

struct msession {
	struct conf *conf; /* reference held for the connection's life */
	struct sockaddr_storage client;
	bool client_known;
	bool connect_noreply;   /* NR_CONN negotiated: ms_connect answers MS_NOREPLY */
	bool client_from_macro; /* NOCONNECT negotiated: the client is {client_addr} at MAIL */
	char client_text[INET6_ADDRSTRLEN];
	struct message msg;
};

static void message_reset(struct message *msg);
static void message_end(struct msession *conn);
static void log_repeats(struct msession *conn);

/* copy_cut - copy src (NULL: "") into a fixed buffer, truncating; a
 * copy, not snprintf: it runs several times a message */
static void copy_cut(char *dst, size_t size, const char *src)
{
	size_t n = src != NULL ? strnlen(src, size - 1) : 0;
	memcpy(dst, src != NULL ? src : "", n);
	dst[n] = '\0';
}

/* ms_open - see msession.h */
struct msession *ms_open(void)
{
	struct msession *conn = calloc(1, sizeof(*conn));
	if (conn == NULL) {
		log_msg(LOG_ERR, "out of memory for a new milter session");
		return NULL;
	}
	pthread_mutex_lock(&shared.lock);
	conn->conf = conf_ref(shared.conf);
	shared.sessions++;
	pthread_mutex_unlock(&shared.lock);
	copy_cut(conn->client_text, sizeof(conn->client_text), "unknown");
	return conn;
}

/* ms_close - see msession.h */
void ms_close(struct msession *conn)
{
	message_end(conn);
	conf_unref(conn->conf);
	free(conn);
	pthread_mutex_lock(&shared.lock);
	shared.sessions--;
	pthread_cond_broadcast(&shared.idle);
	pthread_mutex_unlock(&shared.lock);
}

/* ms_conf - see msession.h */
const struct conf *ms_conf(const struct msession *s)
{
	return s->conf;
}

/* ms_negotiated - see msession.h */
void ms_negotiated(struct msession *s, bool client_from_macro, bool connect_noreply)
{
	s->client_from_macro = client_from_macro;
	s->connect_noreply = connect_noreply;
}

/* message_reset - forget everything about the previous message */
static void message_reset(struct message *msg)
{
	verify_release(msg->ticket);
	memset(msg, 0, sizeof(*msg));
}

/* verdict_line - the fields every verdict line starts with */
static size_t verdict_line(const struct msession *conn, char *line, size_t size, const char *action,
                           const char *reason, const char *rcpt)
{
	size_t len = 0;
	line[0] = '\0';
	kv_add(line, size, &len, "verdict queue_id", conn->msg.queue_id[0] ? conn->msg.queue_id : "-");
	kv_add(line, size, &len, "client", conn->client_text);
	kv_add(line, size, &len, "sender", conn->msg.sender);
	kv_add(line, size, &len, "action", action);
	kv_add(line, size, &len, "reason", reason);
	if (rcpt != NULL)
		kv_add(line, size, &len, "rcpt", rcpt);
	return len;
}

/* log_verdict - the one line an administrator greps for */
static void log_verdict(const struct msession *conn, const char *action, const char *reason, const char *rcpt,
                        const char *detail)
{
	verify_count_verdict(shared.verifier, action, reason, 1);
	if (!log_enabled(LOG_INFO))
		return; /* counted, not formatted */
	char line[1536];
	size_t len = verdict_line(conn, line, sizeof(line), action, reason, rcpt);
	if (detail != NULL && *detail != '\0')
		kv_add(line, sizeof(line), &len, "detail", detail);
	log_line(LOG_INFO, line);
}

/* message_end - the message is over (a new MAIL FROM, abort, close):
 * log what repeated, forget the rest */
static void message_end(struct msession *conn)
{
	log_repeats(conn);
	message_reset(&conn->msg);
}

/* add_dry_run - under dry_run, say what would have been done */
static void add_dry_run(char *line, size_t size, size_t *len, const struct policy_verdict *v)
{
	if (!v->dry_run)
		return;
	kv_add(line, size, len, "dry_run", "yes");
	kv_add(line, size, len, "intended", policy_action_name(v->intended));
}

/* repeat_seen - a recipient verdict (v, reason) is about to be logged:
 * true when it is the one logged last for this message, exempt recipients
 * aside (counted, not logged again: a message to 1,000 recipients from a
 * failed sender gives two lines, not 1,000); else the previous one's count
 * is logged and this one becomes the last */
static bool repeat_seen(struct msession *conn, const struct policy_verdict *v, const char *reason)
{
	struct message *msg = &conn->msg;
	const struct policy_verdict *last = &msg->repeat_verdict;
	if (msg->repeat_reason[0] != '\0' && strcmp(reason, msg->repeat_reason) == 0 &&
	    v->action == last->action && v->intended == last->intended && v->dry_run == last->dry_run) {
		msg->repeats++;
		verify_count_verdict(shared.verifier, policy_action_name(v->action), reason, 1);
		return true;
	}
	log_repeats(conn);
	copy_cut(msg->repeat_reason, sizeof(msg->repeat_reason), reason);
	msg->repeat_verdict = *v;
	return false;
}

/* log_repeats - one line for the recipients whose verdict repeated the
 * line logged for this message before them */
static void log_repeats(struct msession *conn)
{
	struct message *msg = &conn->msg;
	if (msg->repeats > 0 && log_enabled(LOG_INFO)) {
		const struct policy_verdict *v = &msg->repeat_verdict;
		char line[1536], count[32];
		size_t len = verdict_line(conn, line, sizeof(line), policy_action_name(v->action),
		                          msg->repeat_reason, NULL);
		snprintf(count, sizeof(count), "%u", msg->repeats);
		kv_add(line, sizeof(line), &len, "repeated_rcpts", count);
		add_dry_run(line, sizeof(line), &len, v);
		kv_add(line, sizeof(line), &len, "detail",
		       "the verdict logged above for this message, for more recipients");
		log_line(LOG_INFO, line);
	}
	msg->repeats = 0;
	msg->repeat_reason[0] = '\0';
}

/* verified_reason - the reason= of a verdict after verification */
static const char *verified_reason(const struct message *msg)
{
	const struct policy_verdict *v = &msg->verdict;
	return v->self_health         ? "self_health"
	       : v->defer_limit       ? "defer_limit"
	       : msg->budget_exceeded ? "budget_exceeded"
	                              : outcome_name(msg->result.outcome.kind);
}

/* log_verified - a verdict after verification: outcome, source, MX, reply,
 * time; a verdict that defer_limit turned into accept says so in reason and
 * keeps the outcome (budget_exceeded when no answer came in time), and any
 * deferred sender says for how long */
static void log_verified(const struct msession *conn, const char *rcpt)
{
	const struct message *msg = &conn->msg;
	const struct outcome *o = &msg->result.outcome;
	const struct policy_verdict *v = &msg->verdict;
	const char *reason = verified_reason(msg);
	verify_count_verdict(shared.verifier, policy_action_name(v->action), reason, 1);
	if (!log_enabled(LOG_INFO))
		return; /* counted, not formatted */
	char line[2048], number[32], remote[OUTCOME_TEXT_MAX + 32] = "";
	size_t len = verdict_line(conn, line, sizeof(line), policy_action_name(v->action), reason, rcpt);
	add_dry_run(line, sizeof(line), &len, v);
	if (v->defer_limit || v->self_health)
		kv_add(line, sizeof(line), &len, "outcome",
		       msg->budget_exceeded ? "budget_exceeded" : outcome_name(o->kind));
	if (v->deferred) {
		snprintf(number, sizeof(number), "%llds", (long long)(v->deferred_for_ms / 1000));
		kv_add(line, sizeof(line), &len, "deferred_for", number);
	}
	if (!msg->budget_exceeded) {
		kv_add(line, sizeof(line), &len, "source", verify_source_name(msg->result.source));
		kv_add(line, sizeof(line), &len, "stage", probe_stage_name(o->stage));
		kv_add(line, sizeof(line), &len, "mx", o->mx_host[0] ? o->mx_host : NULL);
		if (o->code != 0)
			snprintf(remote, sizeof(remote), "%d%s%s %s", o->code, o->ecode[0] ? " " : "",
			         o->ecode, o->text);
		kv_add(line, sizeof(line), &len, "reply", remote[0] ? remote : NULL);
		snprintf(number, sizeof(number), "%lld", (long long)msg->result.elapsed_ms);
	} else {
		snprintf(number, sizeof(number), "%lld", (long long)conn->conf->verify_budget_ms);
	}
	kv_add(line, sizeof(line), &len, "elapsed_ms", number);
	kv_add(line, sizeof(line), &len, "detail",
	       msg->budget_exceeded ? "no answer within verify_budget; the "
	                              "probe goes on and fills the cache"
	                            : o->reason);
	log_line(LOG_INFO, line);
}

/* reply_with - set the SMTP reply from a template; returns the answer */
static enum ms_reply reply_with(const struct ms_io *io, const struct reply_template *tmpl,
                                const struct reply_vars *vars)
{
	char text[REPLY_TEXT_MAX + 1];
	char escaped[2 * REPLY_TEXT_MAX + 1];
	reply_expand(tmpl, vars, text, sizeof(text));
	reply_double_percent(text, escaped, sizeof(escaped));
	char code[sizeof(tmpl->code)], ecode[sizeof(tmpl->ecode)];
	copy_cut(code, sizeof(code), tmpl->code);
	copy_cut(ecode, sizeof(ecode), tmpl->ecode);
	if (!io->setreply(io->ctx, code, ecode, escaped))
		log_msg(LOG_WARNING,
		        "the transport refused reply \"%s %s %s\"; the MTA uses its default text", code,
		        ecode, text);
	return code[0] == '4' ? MS_TEMPFAIL : MS_REJECT;
}

/* ms_connect - remember who the client is */
enum ms_reply ms_connect(struct msession *conn, const struct sockaddr *addr)
{
	enum ms_reply ok = conn->connect_noreply ? MS_NOREPLY : MS_CONTINUE;
	conn->client_known = false;
	copy_cut(conn->client_text, sizeof(conn->client_text), "unknown");
	if (addr == NULL)
		return ok;
	if (addr->sa_family == AF_INET) {
		memcpy(&conn->client, addr, sizeof(struct sockaddr_in));
		conn->client_known = true;
		inet_ntop(AF_INET, &((const struct sockaddr_in *)addr)->sin_addr, conn->client_text,
		          sizeof(conn->client_text));
	} else if (addr->sa_family == AF_INET6) {
		memcpy(&conn->client, addr, sizeof(struct sockaddr_in6));
		conn->client_known = true;
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)addr)->sin6_addr, conn->client_text,
		          sizeof(conn->client_text));
	}
	return ok;
}

/* client_from_macro - the client's address from {client_addr} (Postfix:
 * "192.0.2.1", "2001:db8::1"; Sendmail may write "IPv6:2001:db8::1"), as
 * ms_connect would have kept it; none, or one that does not parse: the
 * client is unknown, as after a CONNECT without an address */
static void client_from_macro(const struct ms_io *io, struct msession *conn)
{
	conn->client_known = false;
	copy_cut(conn->client_text, sizeof(conn->client_text), "unknown");
	const char *text = io->symval(io->ctx, "{client_addr}");
	if (text == NULL)
		return;
	if (strncasecmp(text, "IPv6:", 5) == 0)
		text += 5;
	struct sockaddr_in *sin = (struct sockaddr_in *)&conn->client;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&conn->client;
	memset(&conn->client, 0, sizeof(conn->client));
	if (inet_pton(AF_INET, text, &sin->sin_addr) == 1)
		sin->sin_family = AF_INET;
	else if (inet_pton(AF_INET6, text, &sin6->sin6_addr) == 1)
		sin6->sin6_family = AF_INET6;
	else
		return;
	conn->client_known = true;
	/* Written back from the address, as ms_connect does: one spelling. */
	inet_ntop(conn->client.ss_family,
	          conn->client.ss_family == AF_INET ? (const void *)&sin->sin_addr
	                                            : (const void *)&sin6->sin6_addr,
	          conn->client_text, sizeof(conn->client_text));
}

/* refresh_queue_id - the "i" macro, when the MTA has assigned one */
static void refresh_queue_id(const struct ms_io *io, struct message *msg)
{
	const char *qid = io->symval(io->ctx, "i");
	if (qid != NULL && *qid != '\0')
		copy_cut(msg->queue_id, sizeof(msg->queue_id), qid);
}

/* accept_now - the sender is decided at MAIL FROM. Without a result header
 * the MTA need not ask us again for this message; with one, the message
 * must still reach ms_eom so that a header forged by the client is removed
 * and ours says why the sender was not verified. */
static enum ms_reply accept_now(struct msession *conn, const char *reason)
{
	if (conn->conf->result_header[0] == '\0')
		return MS_ACCEPT;
	conn->msg.state = MSG_DECIDED;
	conn->msg.skip_reason = reason;
	return MS_CONTINUE;
}

/* judge - the policy's verdict for the verification's answer (or, with
 * answered false, for the budget's end), defer_limit judged now (the
 * verifier's deferred_since_ms is wall clock; at the budget's end, the
 * deferral start it knew at submit), self-health last */
static void judge(struct msession *conn, bool answered)
{
	struct message *msg = &conn->msg;
	if (answered)
		policy_for_verified(conn->conf, msg->check.sender.domain_ascii, msg->result.outcome.kind,
		                    msg->result.deferred_since_ms, clock_now_ms(), &msg->verdict);
	else
		policy_for_budget(conn->conf, verify_deferred_since(msg->ticket), clock_now_ms(),
		                  &msg->verdict);
	msg->budget_exceeded = !answered;
	msg->answered = true;
	policy_for_self_health(conn->conf, verify_unhealthy(shared.verifier), msg->budget_exceeded,
	                       msg->result.outcome.kind, &msg->verdict);
}

/* decide_if_known - the verifier answered at once (a cached answer or a
 * domain fact): when the verdict accepts and no result header is wanted,
 * the message is done at MAIL FROM and the MTA never calls ms_envrcpt for
 * it (one milter round trip per recipient less on the busiest path). The
 * postmaster exemption matters only to a refusal, so a verdict that would
 * refuse still waits for each RCPT. Nothing known yet: the probe runs while
 * the client sends its recipients. */
static enum ms_reply decide_if_known(struct msession *conn)
{
	struct message *msg = &conn->msg;
	if (conn->conf->result_header[0] != '\0' || !verify_wait(msg->ticket, 0, &msg->result))
		return MS_CONTINUE;
	judge(conn, true);
	if (msg->verdict.action != POLICY_ACCEPT)
		return MS_CONTINUE;
	log_verified(conn, NULL);
	msg->accept_logged = true;
	return MS_ACCEPT;
}

/* start_verification - a sender nobody vouches for: lists, then a probe */
static enum ms_reply start_verification(struct msession *conn)
{
	struct message *msg = &conn->msg;
	const char *domain = msg->check.sender.domain_ascii;
	switch (policy_for_domain(conn->conf, domain, &msg->matched)) {
	case POLICY_DOMAIN_SKIP:
		log_verdict(conn, "accept", "domain_override", NULL, msg->matched);
		return accept_now(conn, "domain_override");
	case POLICY_DOMAIN_BLOCKLISTED:
		msg->state = MSG_BLOCKLISTED;
		return MS_CONTINUE;
	case POLICY_DOMAIN_VERIFY:
		break;
	}
	struct verifier *verifier = shared.verifier;
	if (verifier == NULL) {
		log_verdict(conn, "accept", "unverified", NULL, "verification is not running");
		return accept_now(conn, "unverified");
	}
	msg->ticket =
	        verify_submit(verifier, &msg->check.sender, conn->client_known ? conn->client_text : NULL);
	if (msg->ticket == NULL) {
		log_verdict(conn, "accept", "unverified", NULL, "out of memory: not verified");
		return accept_now(conn, "unverified");
	}
	msg->state = MSG_VERIFYING;
	return decide_if_known(conn);
}

/* ms_envfrom - decide what can be decided about the sender now; start the
 * probe for the rest, so it runs while the client sends its recipients */
enum ms_reply ms_envfrom(struct msession *conn, const struct ms_io *io, const char *sender)
{
	struct message *msg = &conn->msg;
	message_end(conn);
	refresh_queue_id(io, msg);
	if (conn->client_from_macro)
		client_from_macro(io, conn);
	if (sender == NULL)
		sender = "";
	copy_cut(msg->sender, sizeof(msg->sender), sender);

	const struct sockaddr *client = conn->client_known ? (const struct sockaddr *)&conn->client : NULL;
	precheck_sender(conn->conf, sender, client, io->symval(io->ctx, "{auth_authen}"), &msg->check);

	switch (msg->check.verdict) {
	case PRECHECK_ACCEPT:
		log_verdict(conn, "accept", msg->check.reason, NULL, msg->check.detail);
		return accept_now(conn, msg->check.reason);
	case PRECHECK_VERIFY:
		return start_verification(conn);
	case PRECHECK_REJECT:
		/* Applied per recipient, so postmaster@ stays reachable. */
		msg->state = MSG_BAD_SYNTAX;
		log_msg(LOG_DEBUG, "sender %s fails syntax (%s); judged at RCPT", msg->sender,
		        msg->check.detail);
		return MS_CONTINUE;
	}
	return MS_CONTINUE;
}

/* await_verdict - wait for the verification's answer, at most until the
 * budget ends, and judge it; waits only the first time */
static void await_verdict(struct msession *conn)
{
	struct message *msg = &conn->msg;
	if (msg->answered)
		return;
	int64_t deadline = verify_submitted_ms(msg->ticket) + conn->conf->verify_budget_ms;
	judge(conn, verify_wait(msg->ticket, deadline, &msg->result));
}

/* refuse - answer one recipient with the verdict's reply */
static enum ms_reply refuse(const struct ms_io *io, const struct msession *conn,
                            const struct reply_template *tmpl, const struct outcome *o)
{
	char remote[OUTCOME_TEXT_MAX + 32] = "";
	if (o != NULL && o->code != 0)
		snprintf(remote, sizeof(remote), "%d %s %s", o->code, o->ecode, o->text);
	char bare[sizeof(conn->msg.sender)];
	reply_bare_address(conn->msg.sender, bare, sizeof(bare));
	struct reply_vars vars = {.address = bare,
	                          .reason = o != NULL ? o->reason : conn->msg.check.detail,
	                          .outcome = o != NULL ? outcome_name(o->kind) : conn->msg.check.reason,
	                          .remote = remote};
	return reply_with(io, tmpl, &vars);
}

/* verdict_for_rcpt - apply a verification's verdict to one recipient */
static enum ms_reply verdict_for_rcpt(const struct ms_io *io, struct msession *conn, const char *rcpt)
{
	struct message *msg = &conn->msg;
	await_verdict(conn);
	if (msg->verdict.action == POLICY_ACCEPT) {
		if (!msg->accept_logged) {
			log_verified(conn, NULL);
			msg->accept_logged = true;
		}
		/* Done with this message: spare the MTA the rest of the round
		 * trips, unless the result header still has to be written. */
		return conn->conf->result_header[0] == '\0' ? MS_ACCEPT : MS_CONTINUE;
	}
	if (!repeat_seen(conn, &msg->verdict, verified_reason(msg)))
		log_verified(conn, rcpt);
	if (msg->budget_exceeded)
		msg->answered = false; /* a later recipient may find the answer in */
	return refuse(io, conn, msg->verdict.reply, msg->budget_exceeded ? NULL : &msg->result.outcome);
}

/* verdict_unprobed - apply a verdict decided without a probe (bad syntax,
 * blocklist) to one recipient: one line each, dry_run included */
static enum ms_reply verdict_unprobed(const struct ms_io *io, struct msession *conn,
                                      const struct policy_verdict *v, const char *reason, const char *rcpt,
                                      const char *detail)
{
	if (!repeat_seen(conn, v, reason)) {
		verify_count_verdict(shared.verifier, policy_action_name(v->action), reason, 1);
		if (log_enabled(LOG_INFO)) {
			char line[1536];
			size_t len = verdict_line(conn, line, sizeof(line), policy_action_name(v->action),
			                          reason, rcpt);
			add_dry_run(line, sizeof(line), &len, v);
			if (detail != NULL && *detail != '\0')
				kv_add(line, sizeof(line), &len, "detail", detail);
			log_line(LOG_INFO, line);
		}
	}
	if (v->action == POLICY_ACCEPT)
		return MS_CONTINUE;
	return refuse(io, conn, v->reply, NULL);
}

/* ms_rcpt_would_wait - see msession.h: ms_envrcpt's path up to await_verdict */
bool ms_rcpt_would_wait(struct msession *conn, const char *rcpt, struct verify_ticket **ticket,
                        int64_t *deadline_ms)
{
	struct message *msg = &conn->msg;
	if (msg->state != MSG_VERIFYING || msg->answered ||
	    precheck_recipient_exempt(conn->conf, rcpt != NULL ? rcpt : ""))
		return false;
	*ticket = msg->ticket;
	*deadline_ms = verify_submitted_ms(msg->ticket) + conn->conf->verify_budget_ms;
	struct verify_result unused;
	return clock_mono_ms() < *deadline_ms && !verify_wait(msg->ticket, 0, &unused);
}

/* ms_envrcpt - apply the sender's verdict, sparing exempt recipients */
enum ms_reply ms_envrcpt(struct msession *conn, const struct ms_io *io, const char *rcpt)
{
	struct message *msg = &conn->msg;
	if (msg->state == MSG_DECIDED)
		return MS_CONTINUE;
	refresh_queue_id(io, msg);
	if (rcpt == NULL)
		rcpt = "";
	if (precheck_recipient_exempt(conn->conf, rcpt)) {
		/* Each one is logged: who got through is worth its line. */
		log_verdict(conn, "accept", "exempt_recipient", rcpt, msg->check.detail);
		return MS_CONTINUE;
	}
	struct policy_verdict v;
	switch (msg->state) {
	case MSG_BAD_SYNTAX:
		policy_for_bad_syntax(conn->conf, &v);
		return verdict_unprobed(io, conn, &v, msg->check.reason, rcpt, msg->check.detail);
	case MSG_BLOCKLISTED:
		policy_for_blocklist(conn->conf, &v);
		return verdict_unprobed(io, conn, &v, "blocklisted", rcpt, msg->matched);
	case MSG_VERIFYING:
		return verdict_for_rcpt(io, conn, rcpt);
	case MSG_DECIDED:
		break;
	}
	return MS_CONTINUE;
}

/* ms_header - count the client's own result headers, to remove them */
void ms_header(struct msession *conn, const char *name)
{
	if (strcasecmp(name, conn->conf->result_header) == 0)
		conn->msg.header_count++;
}

/* ms_eom - replace any result header with ours naming the outcome */
enum ms_reply ms_eom(struct msession *conn, const struct ms_io *io)
{
	if (conn->conf->result_header[0] == '\0')
		return MS_CONTINUE;
	struct message *msg = &conn->msg;
	const char *name = conn->conf->result_header;
	/* Remove from the last: indexes of the earlier ones stay valid. */
	for (int i = msg->header_count; i >= 1; i--)
		if (!io->chgheader(io->ctx, name, i, NULL))
			log_msg(LOG_WARNING, "could not remove a client's %s header", name);
	char value[512];
	const struct outcome *o = &msg->result.outcome;
	/* Every accepted message gets one, whatever let it through: an exempt
	 * recipient or dry_run can accept a sender that failed syntax or the
	 * blocklist, and a message to exempt recipients only never waited for
	 * the verification (what is known now is told, nothing is waited for). */
	if (msg->state == MSG_VERIFYING && !msg->answered && verify_wait(msg->ticket, 0, &msg->result))
		judge(conn, true);
	if (msg->state == MSG_DECIDED && msg->skip_reason != NULL)
		snprintf(value, sizeof(value), "none (%s)", msg->skip_reason);
	else if (msg->state == MSG_DECIDED)
		return MS_CONTINUE; /* no MAIL FROM seen: nothing to say */
	else if (msg->state == MSG_BAD_SYNTAX)
		snprintf(value, sizeof(value), "bad_syntax (%.200s)", msg->check.detail);
	else if (msg->state == MSG_BLOCKLISTED)
		snprintf(value, sizeof(value), "blocklisted (%.200s)",
		         msg->matched != NULL ? msg->matched : "");
	else if (msg->budget_exceeded) /* waited for: answered is cleared for a later RCPT */
		snprintf(value, sizeof(value), "unknown (no answer within verify_budget)");
	else if (!msg->answered)
		snprintf(value, sizeof(value), "unknown (only exempt recipients: not waited for)");
	else
		snprintf(value, sizeof(value), "%s (%s%s%s)", outcome_name(o->kind),
		         verify_source_name(msg->result.source), o->mx_host[0] ? ", mx " : "", o->mx_host);
	/* The texts may quote what the client or a remote server sent: a header
	 * carries printable ASCII only. */
	for (char *p = value; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
			*p = '?';
	if (!io->addheader(io->ctx, name, value))
		log_msg(LOG_WARNING, "could not add the %s header", name);
	return MS_CONTINUE;
}

/* ms_abort - the message ended without delivery: forget it */
void ms_abort(struct msession *conn)
{
	message_end(conn);
}

/* ms_set_verifier - see msession.h */
void ms_set_verifier(struct verifier *verifier)
{
	shared.verifier = verifier;
}

/* ms_set_conf - see msession.h */
void ms_set_conf(struct conf *conf)
{
	pthread_mutex_lock(&shared.lock);
	struct conf *old = shared.conf;
	shared.conf = conf_ref(conf);
	pthread_mutex_unlock(&shared.lock);
	conf_unref(old);
}

/* ms_release_conf - see msession.h */
void ms_release_conf(void)
{
	pthread_mutex_lock(&shared.lock);
	conf_unref(shared.conf);
	shared.conf = NULL;
	pthread_mutex_unlock(&shared.lock);
}

/* ms_drain - see msession.h */
int ms_drain(int seconds, bool (*give_up)(void))
{
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += seconds;
	pthread_mutex_lock(&shared.lock);
	if (!give_up() && shared.sessions > 0)
		log_msg(LOG_INFO, "stopping: waiting up to %d s for %d milter session(s) to finish", seconds,
		        shared.sessions);
	while (!give_up() && shared.sessions > 0) {
		if (pthread_cond_timedwait(&shared.idle, &shared.lock, &deadline) == ETIMEDOUT) {
			log_msg(LOG_WARNING,
			        "stopping with %d milter session(s) still open; the MTA applies its "
			        "milter_default_action to them",
			        shared.sessions);
			break;
		}
	}
	int left = shared.sessions;
	pthread_mutex_unlock(&shared.lock);
	return left;
}

/* ms_kick - see msession.h */
void ms_kick(void)
{
	pthread_mutex_lock(&shared.lock);
	pthread_cond_broadcast(&shared.idle);
	pthread_mutex_unlock(&shared.lock);
}

/* ms_idle - see msession.h */
bool ms_idle(void)
{
	pthread_mutex_lock(&shared.lock);
	bool idle = shared.sessions == 0;
	pthread_mutex_unlock(&shared.lock);
	return idle;
}
