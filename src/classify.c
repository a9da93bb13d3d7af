/*
 * classify.c - the callout's judgement of one SMTP attempt (the table is in
 * classify.h). Pure: reads its arguments, writes its result, owns nothing.
 */
#include "classify.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "netguard.h"
#include "policy.h"

/* code_class - 2, 4, 5 (or 0 for no reply) */
static int code_class(const struct smtp_reply *r)
{
	return r != NULL ? r->code / 100 : 0;
}

/* classify_about_sender - see classify.h */
bool classify_about_sender(const struct smtp_reply *reply)
{
	/* Postfix with smtpd_delay_reject (its default) refuses a sender at
	 * RCPT: "554 5.7.1 <>: Sender address rejected: Access denied". */
	static const char *const words[] = {"sender address rejected", "sender rejected", "null sender",
	                                    "mail from"};
	if (reply == NULL || reply->code / 100 != 5)
		return false;
	if (strcmp(reply->ecode, "5.1.7") == 0 || strcmp(reply->ecode, "5.1.8") == 0)
		return true;
	if (strncmp(reply->text, "<>:", 3) == 0)
		return true;
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strcasestr(reply->text, words[i]) != NULL)
			return true;
	return false;
}

/* classify_names_blocklist - see classify.h */
bool classify_names_blocklist(const struct smtp_reply *reply)
{
	static const char *const words[] = {"blocklist", "blacklist", "blocked", "spamhaus",   "reputation",
	                                    "rbl",       "dnsbl",     "listed",  "client host"};
	if (reply == NULL || reply->code / 100 != 5)
		return false;
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strcasestr(reply->text, words[i]) != NULL)
			return true;
	return false;
}

/* classify_says_blocked - see classify.h */
bool classify_says_blocked(const struct smtp_reply *reply)
{
	static const char *const words[] = {"blocklist",  "blacklist", "blocked", "spamhaus",
	                                    "reputation", "rbl",       "dnsbl"};
	if (reply == NULL)
		return false;
	if (classify_about_sender(reply))
		return true;
	if (strncmp(reply->ecode, "5.7.", 4) == 0)
		return true;
	if (reply->ecode[0] != '\0')
		return false;
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strcasestr(reply->text, words[i]) != NULL)
			return true;
	return false;
}

/* classify_is_greylisting - see classify.h */
bool classify_is_greylisting(const struct smtp_reply *reply)
{
	static const char *const words[] = {"grey", "gray", "try again later", "temporarily deferred"};
	if (reply == NULL || (reply->code != 450 && reply->code != 451))
		return false;
	if (strncmp(reply->ecode, "4.7.", 4) == 0 || strncmp(reply->ecode, "4.2.", 4) == 0)
		return true;
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strcasestr(reply->text, words[i]) != NULL)
			return true;
	return false;
}

/* classify_names_host - see classify.h */
bool classify_names_host(const struct smtp_reply *reply, const char *host)
{
	if (reply == NULL || host == NULL)
		return false;
	size_t hn = strlen(host);
	if (hn > 0 && host[hn - 1] == '.')
		hn--;
	const char *w = reply->text;
	size_t wn = strcspn(w, " ");
	if (wn > 0 && w[wn - 1] == '.')
		wn--;
	return hn > 0 && wn == hn && strncasecmp(w, host, hn) == 0;
}

/* classify_catchall_fact - see classify.h */
bool classify_catchall_fact(const struct smtp_reply *reply, struct outcome *fact)
{
	int c = code_class(reply);
	memset(fact, 0, sizeof(*fact));
	if (c == 2) {
		outcome_set(fact, OUTCOME_CATCH_ALL, STAGE_CATCHALL, reply->code, reply->ecode, reply->text,
		            "server accepts any address");
		return true;
	}
	if (c == 5 && !classify_says_blocked(reply)) {
		outcome_set(fact, OUTCOME_VALID, STAGE_CATCHALL, reply->code, reply->ecode, reply->text,
		            "random address rejected: not catch-all");
		fact->flags |= OUTCOME_F_NOT_CATCHALL;
		return true;
	}
	return false;
}

/* classify_address_bogus - see classify.h; the guard's tables say which
 * blocks are bogus, so the two never disagree */
bool classify_address_bogus(const struct sockaddr *sa)
{
	return sa != NULL && netguard_judge(sa, NULL) == NETGUARD_BOGUS;
}

/* classify_catchall_matters - see classify.h */
bool classify_catchall_matters(const struct conf *conf, const char *domain)
{
	struct policy_verdict valid, catch_all;
	policy_for_outcome(conf, domain, OUTCOME_VALID, &valid);
	policy_for_outcome(conf, domain, OUTCOME_CATCH_ALL, &catch_all);
	return valid.intended != catch_all.intended;
}

/* classify_errno_ours - see classify.h */
const char *classify_errno_ours(int err)
{
	switch (err) {
	case EMFILE:
	case ENFILE:
		return CLASSIFY_NO_FDS;
	case ENOBUFS:
	case ENOMEM:
		return CLASSIFY_NO_MEMORY;
	default:
		return NULL;
	}
}

/* classify_outcome_ours - see classify.h */
bool classify_outcome_ours(const struct outcome *o)
{
	return (o->flags & OUTCOME_F_LIMITED) &&
	       (strncmp(o->reason, CLASSIFY_NO_FDS, strlen(CLASSIFY_NO_FDS)) == 0 ||
	        strncmp(o->reason, CLASSIFY_NO_MEMORY, strlen(CLASSIFY_NO_MEMORY)) == 0);
}

/* set - fill out->outcome from the reply at the attempt's stage */
static void set(struct judgement *out, enum attempt_next next, enum attempt_rank rank, enum outcome_kind kind,
                unsigned flags, enum probe_stage stage, const struct smtp_reply *reply, const char *reason)
{
	out->next = next;
	out->rank = rank;
	const bool has = reply != NULL && reply->code != 0;
	outcome_set(&out->outcome, kind, stage, has ? reply->code : 0, has ? reply->ecode : NULL,
	            has ? reply->text : NULL, reason);
	out->outcome.flags = flags;
}

/* judge_accepted - RCPT got 2xx: valid or catch-all, by the random address */
static void judge_accepted(const struct attempt *a, unsigned flags, struct judgement *out)
{
	const struct smtp_reply *ca = a->catchall_reply;
	char reason[200];
	if (!a->catchall_asked) {
		set(out, ATTEMPT_FINAL, RANK_NONE, OUTCOME_VALID, flags, STAGE_RCPT, a->reply,
		    "address accepted");
		return;
	}
	if (a->catchall_pending) {
		set(out, ATTEMPT_FINAL, RANK_NONE, OUTCOME_VALID, flags, STAGE_RCPT, a->reply,
		    "address accepted; catch-all unknown (the random address is not answered yet)");
		return;
	}
	if (code_class(ca) == 2) {
		snprintf(reason, sizeof(reason), "server accepts any address (random <%.120s> got %d)",
		         a->catchall_rcpt != NULL ? a->catchall_rcpt : "?", ca->code);
		set(out, ATTEMPT_FINAL, RANK_NONE, OUTCOME_CATCH_ALL, flags, STAGE_CATCHALL, ca, reason);
		return;
	}
	if (code_class(ca) == 5 && !classify_says_blocked(ca)) {
		set(out, ATTEMPT_FINAL, RANK_NONE, OUTCOME_VALID, flags | OUTCOME_F_NOT_CATCHALL, STAGE_RCPT,
		    a->reply, "address accepted");
		return;
	}
	if (ca != NULL && ca->code != 0)
		snprintf(reason, sizeof(reason),
		         "address accepted; catch-all unknown (random address got %d)", ca->code);
	else
		snprintf(reason, sizeof(reason),
		         "address accepted; catch-all unknown (random address not answered)");
	set(out, ATTEMPT_FINAL, RANK_NONE, OUTCOME_VALID, flags, STAGE_RCPT, a->reply, reason);
}

/* judge_rcpt - the dialogue reached RCPT and got an answer */
static void judge_rcpt(const struct attempt *a, unsigned flags, struct judgement *out)
{
	const struct smtp_reply *r = a->reply;
	switch (code_class(r)) {
	case 2:
		judge_accepted(a, flags, out);
		return;
	case 5:
		if (classify_about_sender(r) && a->fallback_used) /* the fallback is no hint then */
			set(out, ATTEMPT_NEXT_ADDRESS, RANK_BLOCKED, OUTCOME_BLOCKED,
			    flags & ~OUTCOME_F_FALLBACK_SENDER, STAGE_RCPT, r,
			    "server refuses our probe sender at RCPT (the fallback sender too)");
		else if (classify_about_sender(r))
			set(out, a->fallback_possible ? ATTEMPT_RETRY_FALLBACK : ATTEMPT_NEXT_ADDRESS,
			    RANK_BLOCKED, OUTCOME_BLOCKED, flags, STAGE_RCPT, r,
			    "server refuses our probe sender at RCPT");
		else if (classify_says_blocked(r))
			set(out, ATTEMPT_NEXT_ADDRESS, RANK_BLOCKED, OUTCOME_BLOCKED, flags, STAGE_RCPT, r,
			    "server refuses our probe at RCPT (policy)");
		else
			set(out, ATTEMPT_FINAL, RANK_NONE, OUTCOME_INVALID, flags, STAGE_RCPT, r,
			    "address rejected");
		return;
	default:
		if (classify_is_greylisting(r))
			set(out, ATTEMPT_NEXT_ADDRESS, RANK_TEMP_REPLY, OUTCOME_TEMPFAIL,
			    flags | OUTCOME_F_GREYLIST, STAGE_RCPT, r, "greylisted at RCPT");
		else
			set(out, ATTEMPT_NEXT_ADDRESS, RANK_TEMP_REPLY, OUTCOME_TEMPFAIL, flags, STAGE_RCPT,
			    r, "temporary failure at RCPT");
		return;
	}
}

/* judge_reply - the dialogue stopped on a reply before RCPT was answered */
static void judge_reply(const struct attempt *a, unsigned flags, struct judgement *out)
{
	const struct smtp_reply *r = a->reply;
	char reason[200];
	const char *stage = probe_stage_name(a->stage);
	if (code_class(r) != 5) { /* 4xx, 421 anywhere (also at RCPT) */
		snprintf(reason, sizeof(reason), "temporary failure at %s", stage);
		set(out, ATTEMPT_NEXT_ADDRESS, RANK_TEMP_REPLY, OUTCOME_TEMPFAIL, flags, a->stage, r, reason);
		return;
	}
	if (a->stage == STAGE_MAIL && a->fallback_used) {
		set(out, ATTEMPT_NEXT_ADDRESS, RANK_BLOCKED, OUTCOME_BLOCKED,
		    flags & ~OUTCOME_F_FALLBACK_SENDER, a->stage, r,
		    "refused at mail (the fallback sender too)");
		return;
	}
	snprintf(reason, sizeof(reason), "refused at %s", stage);
	enum attempt_next next = a->stage == STAGE_MAIL && a->fallback_possible ? ATTEMPT_RETRY_FALLBACK
	                                                                        : ATTEMPT_NEXT_ADDRESS;
	set(out, next, RANK_BLOCKED, OUTCOME_BLOCKED, flags, a->stage, r, reason);
}

/* classify_attempt - see classify.h */
void classify_attempt(const struct attempt *a, struct judgement *out)
{
	char reason[200];
	memset(out, 0, sizeof(*out));
	/* The fallback sender counts once MAIL accepted it: a refusal of it is
	 * no hint that the domain needs it. */
	unsigned flags = a->fallback_used && a->stage != STAGE_MAIL ? OUTCOME_F_FALLBACK_SENDER : 0;
	const char *error = a->error != NULL && a->error[0] != '\0' ? a->error : NULL;

	switch (a->end) {
	case SMTP_END_DONE:
		judge_rcpt(a, flags, out);
		return;
	case SMTP_END_REPLY:
		judge_reply(a, flags, out);
		return;
	case SMTP_END_LOOP:
		set(out, ATTEMPT_FINAL, RANK_NONE, OUTCOME_TEMPFAIL, flags | OUTCOME_F_LOOP, a->stage,
		    a->reply, "mx is this host");
		return;
	case SMTP_END_PROTOCOL:
		set(out, ATTEMPT_NEXT_ADDRESS, RANK_PROTOCOL, OUTCOME_TEMPFAIL, flags | OUTCOME_F_PROTOCOL,
		    a->stage, NULL, error != NULL ? error : "protocol error");
		return;
	case SMTP_END_TLS_FAILED:
		if (a->tls_retry_possible) {
			out->next = ATTEMPT_RETRY_PLAIN;
			out->rank = RANK_NONE;
			return;
		}
		snprintf(reason, sizeof(reason), "TLS failed: %s",
		         error != NULL ? error : "handshake failed");
		set(out, ATTEMPT_NEXT_ADDRESS, RANK_NO_REPLY, OUTCOME_TEMPFAIL, flags, a->stage, NULL,
		    reason);
		return;
	case SMTP_END_NO_SMTPUTF8:
		set(out, ATTEMPT_NEXT_ADDRESS, RANK_UNVERIFIABLE, OUTCOME_UNVERIFIABLE, flags, a->stage, NULL,
		    "UTF-8 local part, and the server does not offer SMTPUTF8");
		return;
	case SMTP_END_NO_RESOURCES:
		/* Ours: not the server's fault, and the next address would fail
		 * the same way. Never cached, never held against the host. */
		set(out, ATTEMPT_FINAL, RANK_NONE, OUTCOME_TEMPFAIL, flags | OUTCOME_F_LIMITED, a->stage,
		    NULL, error != NULL ? error : CLASSIFY_NO_FDS);
		return;
	case SMTP_END_CONNECT_FAILED:
	case SMTP_END_TIMEOUT:
	case SMTP_END_CLOSED:
		set(out, ATTEMPT_NEXT_ADDRESS, RANK_NO_REPLY, OUTCOME_TEMPFAIL, flags, a->stage, NULL,
		    error != NULL ? error : "connection failed");
		return;
	}
	set(out, ATTEMPT_NEXT_ADDRESS, RANK_NO_REPLY, OUTCOME_TEMPFAIL, flags, a->stage, NULL,
	    "unknown end of dialogue");
}
