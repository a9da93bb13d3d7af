/*
 * test_classify.c - the callout's judgement of one SMTP attempt, one table
 * row per case: every row of the table in classify.h (and so callout.c),
 * plus the rows of issue 7 (desync, mail loop, greylisting, fallback
 * sender, catch-all answered early and late, 421, 5.7.x blocked vs 5.1.1
 * invalid, SMTPUTF8, TLS failure, timeouts). Replies go through the real
 * parser (smtpreply.c), so a row reads like the dialogue it stands for.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include "classify.h"
#include "conf.h"
#include "smtpreply.h"
#include "unit.h"

#define NONE NULL

struct row {
	const char *name;
	/* the attempt */
	enum smtp_end end;
	enum probe_stage stage;
	const char *reply; /* lines separated by '\n'; NULL: none */
	bool ca_asked, ca_pending;
	const char *ca_reply;
	bool fb_used, fb_possible, tls_retry;
	const char *error;
	/* the judgement */
	enum attempt_next next;
	enum attempt_rank rank;
	enum outcome_kind kind;
	unsigned flags;
	enum probe_stage want_stage;
	int want_code;
	const char *reason; /* a substring of the reason */
};

#define RCPT SMTP_END_DONE, STAGE_RCPT
#define F_NC OUTCOME_F_NOT_CATCHALL
#define F_FB OUTCOME_F_FALLBACK_SENDER
#define F_GL OUTCOME_F_GREYLIST
#define F_PR OUTCOME_F_PROTOCOL
#define F_LO OUTCOME_F_LOOP
#define F_LI OUTCOME_F_LIMITED

static const struct row rows[] = {
        /* RCPT 2xx: valid or catch-all, by the random address */
        {"rcpt 250, random 550 5.1.1", RCPT, "250 2.1.5 ok", true, false, "550 5.1.1 no such user", false,
         false, false, NONE, ATTEMPT_FINAL, RANK_NONE, OUTCOME_VALID, F_NC, STAGE_RCPT, 250,
         "address accepted"},
        {"rcpt 250, random 550 without enhanced code", RCPT, "250 ok", true, false, "550 unknown user", false,
         false, false, NONE, ATTEMPT_FINAL, RANK_NONE, OUTCOME_VALID, F_NC, STAGE_RCPT, 250,
         "address accepted"},
        {"rcpt 250, random 250: catch-all", RCPT, "250 2.1.5 ok", true, false, "250 2.1.5 ok", false, false,
         false, NONE, ATTEMPT_FINAL, RANK_NONE, OUTCOME_CATCH_ALL, 0, STAGE_CATCHALL, 250,
         "server accepts any address (random <r@x.test> got 250)"},
        {"rcpt 250, random 452: catch-all unknown", RCPT, "250 ok", true, false, "452 4.5.3 too many", false,
         false, false, NONE, ATTEMPT_FINAL, RANK_NONE, OUTCOME_VALID, 0, STAGE_RCPT, 250,
         "catch-all unknown (random address got 452)"},
        {"rcpt 250, random 421: catch-all unknown", RCPT, "250 ok", true, false, "421 4.3.0 bye", false,
         false, false, NONE, ATTEMPT_FINAL, RANK_NONE, OUTCOME_VALID, 0, STAGE_RCPT, 250,
         "catch-all unknown (random address got 421)"},
        {"rcpt 250, random timed out / closed", RCPT, "250 ok", true, false, NONE, false, false, false, NONE,
         ATTEMPT_FINAL, RANK_NONE, OUTCOME_VALID, 0, STAGE_RCPT, 250,
         "catch-all unknown (random address not answered)"},
        {"rcpt 250, random 550 5.7.1 (policy): no not-catch-all fact", RCPT, "250 ok", true, false,
         "550 5.7.1 relaying denied", false, false, false, NONE, ATTEMPT_FINAL, RANK_NONE, OUTCOME_VALID, 0,
         STAGE_RCPT, 250, "catch-all unknown (random address got 550)"},
        {"rcpt 250, reported early (random pending)", RCPT, "250 ok", true, true, NONE, false, false, false,
         NONE, ATTEMPT_FINAL, RANK_NONE, OUTCOME_VALID, 0, STAGE_RCPT, 250,
         "catch-all unknown (the random address is not answered yet)"},
        {"rcpt 250, no random asked (skip_catchall / catchall_probe off)", RCPT, "250 2.1.5 ok", false, false,
         NONE, false, false, false, NONE, ATTEMPT_FINAL, RANK_NONE, OUTCOME_VALID, 0, STAGE_RCPT, 250,
         "address accepted"},
        {"rcpt 250 with the fallback sender, random 550", RCPT, "250 ok", true, false, "550 5.1.1 no", true,
         false, false, NONE, ATTEMPT_FINAL, RANK_NONE, OUTCOME_VALID, F_NC | F_FB, STAGE_RCPT, 250,
         "address accepted"},
        {"rcpt 250 with the fallback sender, random 250", RCPT, "250 ok", true, false, "250 ok", true, false,
         false, NONE, ATTEMPT_FINAL, RANK_NONE, OUTCOME_CATCH_ALL, F_FB, STAGE_CATCHALL, 250,
         "accepts any address"},
        {"rcpt 251 (forwarding) is a yes", RCPT, "251 2.1.5 will forward", false, false, NONE, false, false,
         false, NONE, ATTEMPT_FINAL, RANK_NONE, OUTCOME_VALID, 0, STAGE_RCPT, 251, "address accepted"},
        /* RCPT 5xx: invalid, or blocked when it is about us */
        {"rcpt 550 5.1.1: invalid", RCPT, "550 5.1.1 <x@y>: user unknown", false, false, NONE, false, false,
         false, NONE, ATTEMPT_FINAL, RANK_NONE, OUTCOME_INVALID, 0, STAGE_RCPT, 550, "address rejected"},
        {"rcpt 550 5.1.1, random pending (reported early)", RCPT, "550 5.1.1 user unknown", true, true, NONE,
         false, false, false, NONE, ATTEMPT_FINAL, RANK_NONE, OUTCOME_INVALID, 0, STAGE_RCPT, 550,
         "address rejected"},
        {"rcpt 550 multi-line 5.1.1: invalid", RCPT, "550-5.1.1 no such user\n550 5.1.1 check the address",
         false, false, NONE, false, false, false, NONE, ATTEMPT_FINAL, RANK_NONE, OUTCOME_INVALID, 0,
         STAGE_RCPT, 550, "address rejected"},
        {"rcpt 553 without enhanced code: invalid", RCPT, "553 mailbox name not allowed", false, false, NONE,
         false, false, false, NONE, ATTEMPT_FINAL, RANK_NONE, OUTCOME_INVALID, 0, STAGE_RCPT, 553,
         "address rejected"},
        {"rcpt 550 5.1.1 with the fallback sender: invalid", RCPT, "550 5.1.1 user unknown", false, false,
         NONE, true, false, false, NONE, ATTEMPT_FINAL, RANK_NONE, OUTCOME_INVALID, F_FB, STAGE_RCPT, 550,
         "address rejected"},
        {"rcpt 550 5.7.1: blocked, next address", RCPT, "550 5.7.1 client host blocked", false, false, NONE,
         false, false, false, NONE, ATTEMPT_NEXT_ADDRESS, RANK_BLOCKED, OUTCOME_BLOCKED, 0, STAGE_RCPT, 550,
         "refuses our probe at RCPT"},
        {"rcpt 554 naming a blocklist, no enhanced code: blocked", RCPT, "554 rejected: listed by Spamhaus",
         false, false, NONE, false, false, false, NONE, ATTEMPT_NEXT_ADDRESS, RANK_BLOCKED, OUTCOME_BLOCKED,
         0, STAGE_RCPT, 554, "policy"},
        {"rcpt 550 5.1.1 naming a blocklist: the enhanced code wins, invalid", RCPT,
         "550 5.1.1 unknown user (not a blacklist)", false, false, NONE, false, false, false, NONE,
         ATTEMPT_FINAL, RANK_NONE, OUTCOME_INVALID, 0, STAGE_RCPT, 550, "address rejected"},
        /* RCPT 5xx about our sender (Postfix smtpd_delay_reject): blocked, never invalid */
        {"rcpt 554 5.7.1 <>: Sender address rejected, no fallback set", RCPT,
         "554 5.7.1 <>: Sender address rejected: Access denied", false, false, NONE, false, false, false,
         NONE, ATTEMPT_NEXT_ADDRESS, RANK_BLOCKED, OUTCOME_BLOCKED, 0, STAGE_RCPT, 554,
         "refuses our probe sender at RCPT"},
        {"rcpt 554 5.7.1 <>: Sender address rejected, fallback set: ask again with it", RCPT,
         "554 5.7.1 <>: Sender address rejected: Access denied", false, false, NONE, false, true, false, NONE,
         ATTEMPT_RETRY_FALLBACK, RANK_BLOCKED, OUTCOME_BLOCKED, 0, STAGE_RCPT, 554,
         "refuses our probe sender at RCPT"},
        {"rcpt 550 5.1.0 <>: Sender address rejected (not 5.7.x): blocked, not invalid", RCPT,
         "550 5.1.0 <>: Sender address rejected: User unknown in local recipient table", false, false, NONE,
         false, false, false, NONE, ATTEMPT_NEXT_ADDRESS, RANK_BLOCKED, OUTCOME_BLOCKED, 0, STAGE_RCPT, 550,
         "refuses our probe sender"},
        {"rcpt 553 5.1.8 (bad sender's system address): blocked, fallback retry", RCPT,
         "553 5.1.8 <probe@vemilter.test>: Domain of sender address does not exist", false, false, NONE,
         false, true, false, NONE, ATTEMPT_RETRY_FALLBACK, RANK_BLOCKED, OUTCOME_BLOCKED, 0, STAGE_RCPT, 553,
         "refuses our probe sender"},
        {"rcpt 550 5.1.7 (bad sender's mailbox syntax): blocked", RCPT, "550 5.1.7 bad sender mailbox syntax",
         false, false, NONE, false, false, false, NONE, ATTEMPT_NEXT_ADDRESS, RANK_BLOCKED, OUTCOME_BLOCKED,
         0, STAGE_RCPT, 550, "refuses our probe sender"},
        {"rcpt 550 'null sender' without enhanced code: blocked", RCPT, "550 Null sender not accepted here",
         false, false, NONE, false, false, false, NONE, ATTEMPT_NEXT_ADDRESS, RANK_BLOCKED, OUTCOME_BLOCKED,
         0, STAGE_RCPT, 550, "refuses our probe sender"},
        {"rcpt 550 5.1.1 naming MAIL FROM: about us, blocked", RCPT, "550 5.1.1 MAIL FROM <> not allowed",
         false, false, NONE, false, false, false, NONE, ATTEMPT_NEXT_ADDRESS, RANK_BLOCKED, OUTCOME_BLOCKED,
         0, STAGE_RCPT, 550, "refuses our probe sender"},
        {"rcpt 550 'Sender rejected' with 5.1.1: blocked", RCPT, "550 5.1.1 Sender rejected", false, false,
         NONE, false, false, false, NONE, ATTEMPT_NEXT_ADDRESS, RANK_BLOCKED, OUTCOME_BLOCKED, 0, STAGE_RCPT,
         550, "refuses our probe sender"},
        {"rcpt 554 sender rejected with the fallback sender too: no fallback flag", RCPT,
         "554 5.7.1 <probe@vemilter.test>: Sender address rejected: Access denied", false, false, NONE, true,
         false, false, NONE, ATTEMPT_NEXT_ADDRESS, RANK_BLOCKED, OUTCOME_BLOCKED, 0, STAGE_RCPT, 554,
         "the fallback sender too"},
        {"rcpt 250, random 554 <>: Sender address rejected: catch-all unknown", RCPT, "250 ok", true, false,
         "554 5.7.1 <>: Sender address rejected: Access denied", false, false, false, NONE, ATTEMPT_FINAL,
         RANK_NONE, OUTCOME_VALID, 0, STAGE_RCPT, 250, "catch-all unknown (random address got 554)"},
        {"rcpt 550 5.1.1 Recipient address rejected: still invalid", RCPT,
         "550 5.1.1 <nobody@x.test>: Recipient address rejected: User unknown in local recipient table",
         false, false, NONE, false, true, false, NONE, ATTEMPT_FINAL, RANK_NONE, OUTCOME_INVALID, 0,
         STAGE_RCPT, 550, "address rejected"},
        /* RCPT 4xx: tempfail, greylisting flagged */
        {"rcpt 450 4.7.1 greylisted", RCPT, "450 4.7.1 greylisted, try again later", false, false, NONE,
         false, false, false, NONE, ATTEMPT_NEXT_ADDRESS, RANK_TEMP_REPLY, OUTCOME_TEMPFAIL, F_GL, STAGE_RCPT,
         450, "greylisted at RCPT"},
        {"rcpt 451 4.7.1 (4.7.x)", RCPT, "451 4.7.1 please come back", false, false, NONE, false, false,
         false, NONE, ATTEMPT_NEXT_ADDRESS, RANK_TEMP_REPLY, OUTCOME_TEMPFAIL, F_GL, STAGE_RCPT, 451,
         "greylisted"},
        {"rcpt 451 4.2.0 (4.2.x)", RCPT, "451 4.2.0 mailbox busy", false, false, NONE, false, false, false,
         NONE, ATTEMPT_NEXT_ADDRESS, RANK_TEMP_REPLY, OUTCOME_TEMPFAIL, F_GL, STAGE_RCPT, 451, "greylisted"},
        {"rcpt 450 'Greylisted' without enhanced code", RCPT, "450 Recipient address rejected: GREYLISTED",
         false, false, NONE, false, false, false, NONE, ATTEMPT_NEXT_ADDRESS, RANK_TEMP_REPLY,
         OUTCOME_TEMPFAIL, F_GL, STAGE_RCPT, 450, "greylisted"},
        {"rcpt 450 'graylisted' (US spelling)", RCPT, "450 graylisted for 5 minutes", false, false, NONE,
         false, false, false, NONE, ATTEMPT_NEXT_ADDRESS, RANK_TEMP_REPLY, OUTCOME_TEMPFAIL, F_GL, STAGE_RCPT,
         450, "greylisted"},
        {"rcpt 451 4.3.0 'Try again later'", RCPT, "451 4.3.0 Try Again Later", false, false, NONE, false,
         false, false, NONE, ATTEMPT_NEXT_ADDRESS, RANK_TEMP_REPLY, OUTCOME_TEMPFAIL, F_GL, STAGE_RCPT, 451,
         "greylisted"},
        {"rcpt 450 'temporarily deferred'", RCPT, "450 4.1.1 temporarily deferred", false, false, NONE, false,
         false, false, NONE, ATTEMPT_NEXT_ADDRESS, RANK_TEMP_REPLY, OUTCOME_TEMPFAIL, F_GL, STAGE_RCPT, 450,
         "greylisted"},
        {"rcpt 452 4.5.3 too many recipients: not greylisting", RCPT, "452 4.5.3 too many recipients", false,
         false, NONE, false, false, false, NONE, ATTEMPT_NEXT_ADDRESS, RANK_TEMP_REPLY, OUTCOME_TEMPFAIL, 0,
         STAGE_RCPT, 452, "temporary failure at RCPT"},
        {"rcpt 450 4.1.1 mailbox unavailable: not greylisting", RCPT, "450 4.1.1 mailbox unavailable", false,
         false, NONE, false, false, false, NONE, ATTEMPT_NEXT_ADDRESS, RANK_TEMP_REPLY, OUTCOME_TEMPFAIL, 0,
         STAGE_RCPT, 450, "temporary failure at RCPT"},
        {"rcpt 452 'try again later' (not 450/451): not greylisting", RCPT, "452 try again later", false,
         false, NONE, false, false, false, NONE, ATTEMPT_NEXT_ADDRESS, RANK_TEMP_REPLY, OUTCOME_TEMPFAIL, 0,
         STAGE_RCPT, 452, "temporary failure at RCPT"},
        {"rcpt 450 4.7.1 with the fallback sender", RCPT, "450 4.7.1 greylisted", false, false, NONE, true,
         false, false, NONE, ATTEMPT_NEXT_ADDRESS, RANK_TEMP_REPLY, OUTCOME_TEMPFAIL, F_GL | F_FB, STAGE_RCPT,
         450, "greylisted"},
        /* 421 anywhere */
        {"rcpt 421: the server is closing", SMTP_END_REPLY, STAGE_RCPT, "421 4.3.0 shutting down", false,
         false, NONE, false, false, false, NONE, ATTEMPT_NEXT_ADDRESS, RANK_TEMP_REPLY, OUTCOME_TEMPFAIL, 0,
         STAGE_RCPT, 421, "temporary failure at rcpt"},
        {"banner 421", SMTP_END_REPLY, STAGE_BANNER, "421 4.3.2 service not available", false, false, NONE,
         false, false, false, NONE, ATTEMPT_NEXT_ADDRESS, RANK_TEMP_REPLY, OUTCOME_TEMPFAIL, 0, STAGE_BANNER,
         421, "temporary failure at banner"},
        {"starttls 421", SMTP_END_REPLY, STAGE_STARTTLS, "421 4.7.0 not now", false, false, NONE, false,
         false, false, NONE, ATTEMPT_NEXT_ADDRESS, RANK_TEMP_REPLY, OUTCOME_TEMPFAIL, 0, STAGE_STARTTLS, 421,
         "temporary failure at starttls"},
        {"mail 421 with a fallback set: no fallback retry", SMTP_END_REPLY, STAGE_MAIL,
         "421 4.3.0 going down", false, false, NONE, false, true, false, NONE, ATTEMPT_NEXT_ADDRESS,
         RANK_TEMP_REPLY, OUTCOME_TEMPFAIL, 0, STAGE_MAIL, 421, "temporary failure at mail"},
        /* other 4xx before RCPT */
        {"ehlo 450", SMTP_END_REPLY, STAGE_EHLO, "450 4.3.2 busy", false, false, NONE, false, false, false,
         NONE, ATTEMPT_NEXT_ADDRESS, RANK_TEMP_REPLY, OUTCOME_TEMPFAIL, 0, STAGE_EHLO, 450,
         "temporary failure at ehlo"},
        {"mail 451", SMTP_END_REPLY, STAGE_MAIL, "451 4.3.0 local problem", false, false, NONE, false, true,
         false, NONE, ATTEMPT_NEXT_ADDRESS, RANK_TEMP_REPLY, OUTCOME_TEMPFAIL, 0, STAGE_MAIL, 451,
         "temporary failure at mail"},
        /* 5xx before RCPT: blocked */
        {"banner 554 5.7.1", SMTP_END_REPLY, STAGE_BANNER, "554 5.7.1 your IP is blocklisted", false, false,
         NONE, false, false, false, NONE, ATTEMPT_NEXT_ADDRESS, RANK_BLOCKED, OUTCOME_BLOCKED, 0,
         STAGE_BANNER, 554, "refused at banner"},
        {"ehlo and helo refused", SMTP_END_REPLY, STAGE_HELO, "550 5.7.1 go away", false, false, NONE, false,
         false, false, NONE, ATTEMPT_NEXT_ADDRESS, RANK_BLOCKED, OUTCOME_BLOCKED, 0, STAGE_HELO, 550,
         "refused at helo"},
        {"mail 550, no fallback set", SMTP_END_REPLY, STAGE_MAIL, "550 5.7.1 null sender refused", false,
         false, NONE, false, false, false, NONE, ATTEMPT_NEXT_ADDRESS, RANK_BLOCKED, OUTCOME_BLOCKED, 0,
         STAGE_MAIL, 550, "refused at mail"},
        {"mail 550, fallback set, not tried here: ask again with it", SMTP_END_REPLY, STAGE_MAIL,
         "550 5.7.1 null sender refused", false, false, NONE, false, true, false, NONE,
         ATTEMPT_RETRY_FALLBACK, RANK_BLOCKED, OUTCOME_BLOCKED, 0, STAGE_MAIL, 550, "refused at mail"},
        {"mail 550 to the fallback sender too", SMTP_END_REPLY, STAGE_MAIL, "550 5.7.1 not you either", false,
         false, NONE, true, false, false, NONE, ATTEMPT_NEXT_ADDRESS, RANK_BLOCKED, OUTCOME_BLOCKED, 0,
         STAGE_MAIL, 550, "the fallback sender too"},
        /* mail loops */
        {"greeting names our helo_name", SMTP_END_LOOP, STAGE_BANNER, "220 probe.vemilter.test ESMTP", false,
         false, NONE, false, false, false, "the server's greeting names this host", ATTEMPT_FINAL, RANK_NONE,
         OUTCOME_TEMPFAIL, F_LO, STAGE_BANNER, 220, "mx is this host"},
        {"EHLO reply names our helo_name", SMTP_END_LOOP, STAGE_EHLO, "250-PROBE.vemilter.test\n250 8BITMIME",
         false, false, NONE, false, false, false, NONE, ATTEMPT_FINAL, RANK_NONE, OUTCOME_TEMPFAIL, F_LO,
         STAGE_EHLO, 250, "mx is this host"},
        {"the address is one of ours (no connection)", SMTP_END_LOOP, STAGE_CONNECT, NONE, false, false, NONE,
         false, false, false, NONE, ATTEMPT_FINAL, RANK_NONE, OUTCOME_TEMPFAIL, F_LO, STAGE_CONNECT, 0,
         "mx is this host"},
        /* protocol errors: tempfail, never an answer */
        {"desync: a reply before EHLO", SMTP_END_PROTOCOL, STAGE_EHLO, NONE, false, false, NONE, false, false,
         false, "reply before command (before EHLO)", ATTEMPT_NEXT_ADDRESS, RANK_PROTOCOL, OUTCOME_TEMPFAIL,
         F_PR, STAGE_EHLO, 0, "reply before command (before EHLO)"},
        {"desync: a reply before RCPT", SMTP_END_PROTOCOL, STAGE_RCPT, NONE, false, false, NONE, false, false,
         false, "reply before command (before RCPT)", ATTEMPT_NEXT_ADDRESS, RANK_PROTOCOL, OUTCOME_TEMPFAIL,
         F_PR, STAGE_RCPT, 0, "reply before command (before RCPT)"},
        {"desync after the fallback sender was accepted", SMTP_END_PROTOCOL, STAGE_CATCHALL, NONE, true,
         false, NONE, true, false, false, "reply before command (before the catch-all RCPT)",
         ATTEMPT_NEXT_ADDRESS, RANK_PROTOCOL, OUTCOME_TEMPFAIL, F_PR | F_FB, STAGE_CATCHALL, 0,
         "before the catch-all RCPT"},
        {"codes disagree within one reply", SMTP_END_PROTOCOL, STAGE_RCPT, NONE, false, false, NONE, false,
         false, false, "reply code changed from 250 to 550 within a reply", ATTEMPT_NEXT_ADDRESS,
         RANK_PROTOCOL, OUTCOME_TEMPFAIL, F_PR, STAGE_RCPT, 0, "changed from 250 to 550"},
        {"garbage instead of a banner", SMTP_END_PROTOCOL, STAGE_BANNER, NONE, false, false, NONE, false,
         false, false, "reply does not start with a 3-digit code 2xx..5xx", ATTEMPT_NEXT_ADDRESS,
         RANK_PROTOCOL, OUTCOME_TEMPFAIL, F_PR, STAGE_BANNER, 0, "3-digit code"},
        {"protocol error without words", SMTP_END_PROTOCOL, STAGE_MAIL, NONE, false, false, NONE, false,
         false, false, NONE, ATTEMPT_NEXT_ADDRESS, RANK_PROTOCOL, OUTCOME_TEMPFAIL, F_PR, STAGE_MAIL, 0,
         "protocol error"},
        /* TLS */
        {"TLS failed: once more in plain text", SMTP_END_TLS_FAILED, STAGE_TLS, NONE, false, false, NONE,
         false, false, true, "handshake failure", ATTEMPT_RETRY_PLAIN, RANK_NONE, OUTCOME_VALID, 0,
         STAGE_NONE, 0, NULL},
        {"TLS failed on the plain retry: tempfail", SMTP_END_TLS_FAILED, STAGE_TLS, NONE, false, false, NONE,
         false, false, false, "handshake failure", ATTEMPT_NEXT_ADDRESS, RANK_NO_REPLY, OUTCOME_TEMPFAIL, 0,
         STAGE_TLS, 0, "TLS failed: handshake failure"},
        /* SMTPUTF8 */
        {"SMTPUTF8 needed, not offered", SMTP_END_NO_SMTPUTF8, STAGE_EHLO, NONE, false, false, NONE, false,
         false, false, "server does not offer SMTPUTF8", ATTEMPT_NEXT_ADDRESS, RANK_UNVERIFIABLE,
         OUTCOME_UNVERIFIABLE, 0, STAGE_EHLO, 0, "does not offer SMTPUTF8"},
        /* no socket on our side: our failure, final (the next address fails the same way) */
        {"no descriptor for the socket", SMTP_END_NO_RESOURCES, STAGE_CONNECT, NONE, false, false, NONE,
         false, false, false, "out of file descriptors (Too many open files)", ATTEMPT_FINAL, RANK_NONE,
         OUTCOME_TEMPFAIL, F_LI, STAGE_CONNECT, 0, "out of file descriptors (Too many open files)"},
        {"no descriptor, no words", SMTP_END_NO_RESOURCES, STAGE_CONNECT, NONE, false, false, NONE, false,
         false, false, "", ATTEMPT_FINAL, RANK_NONE, OUTCOME_TEMPFAIL, F_LI, STAGE_CONNECT, 0,
         "out of file descriptors"},
        {"no memory for the socket, fallback in use", SMTP_END_NO_RESOURCES, STAGE_CONNECT, NONE, false,
         false, NONE, true, false, false, "out of memory or socket buffers", ATTEMPT_FINAL, RANK_NONE,
         OUTCOME_TEMPFAIL, F_LI | F_FB, STAGE_CONNECT, 0, "out of memory"},
        /* no reply at all */
        {"connection refused", SMTP_END_CONNECT_FAILED, STAGE_CONNECT, NONE, false, false, NONE, false, false,
         false, "Connection refused", ATTEMPT_NEXT_ADDRESS, RANK_NO_REPLY, OUTCOME_TEMPFAIL, 0, STAGE_CONNECT,
         0, "Connection refused"},
        {"connect failed without words", SMTP_END_CONNECT_FAILED, STAGE_CONNECT, NONE, false, false, NONE,
         false, false, false, "", ATTEMPT_NEXT_ADDRESS, RANK_NO_REPLY, OUTCOME_TEMPFAIL, 0, STAGE_CONNECT, 0,
         "connection failed"},
        {"timeout at the banner", SMTP_END_TIMEOUT, STAGE_BANNER, NONE, false, false, NONE, false, false,
         false, "timeout waiting for banner", ATTEMPT_NEXT_ADDRESS, RANK_NO_REPLY, OUTCOME_TEMPFAIL, 0,
         STAGE_BANNER, 0, "timeout waiting for banner"},
        {"timeout at RCPT", SMTP_END_TIMEOUT, STAGE_RCPT, NONE, false, false, NONE, false, false, false,
         "timeout waiting for RCPT reply", ATTEMPT_NEXT_ADDRESS, RANK_NO_REPLY, OUTCOME_TEMPFAIL, 0,
         STAGE_RCPT, 0, "timeout waiting for RCPT reply"},
        {"timeout at RCPT with the fallback sender", SMTP_END_TIMEOUT, STAGE_RCPT, NONE, false, false, NONE,
         true, false, false, "timeout waiting for RCPT reply", ATTEMPT_NEXT_ADDRESS, RANK_NO_REPLY,
         OUTCOME_TEMPFAIL, F_FB, STAGE_RCPT, 0, "timeout"},
        {"timeout at MAIL with the fallback sender: no fallback flag", SMTP_END_TIMEOUT, STAGE_MAIL, NONE,
         false, false, NONE, true, false, false, "timeout waiting for MAIL reply", ATTEMPT_NEXT_ADDRESS,
         RANK_NO_REPLY, OUTCOME_TEMPFAIL, 0, STAGE_MAIL, 0, "timeout"},
        {"closed at RCPT", SMTP_END_CLOSED, STAGE_RCPT, NONE, false, false, NONE, false, false, false,
         "connection closed by server", ATTEMPT_NEXT_ADDRESS, RANK_NO_REPLY, OUTCOME_TEMPFAIL, 0, STAGE_RCPT,
         0, "connection closed by server"},
};

/* parse - a reply from '\n'-separated lines through the real parser */
static bool parse(const char *text, struct smtp_reply *out)
{
	struct smtp_reply_parser p;
	enum smtp_reply_status st = SMTP_REPLY_ERROR;
	smtp_reply_init(&p);
	for (const char *line = text; line != NULL;) {
		const char *nl = strchr(line, '\n');
		size_t len = nl != NULL ? (size_t)(nl - line) : strlen(line);
		st = smtp_reply_line(&p, line, len);
		line = nl != NULL ? nl + 1 : NULL;
	}
	ck_assert_msg(st == SMTP_REPLY_DONE, "test reply \"%s\" does not parse: %s", text, p.error);
	*out = p.reply;
	return true;
}

START_TEST(table)
{
	const struct row *r = &rows[_i];
	struct smtp_reply reply, ca;
	struct attempt a = {
	        .end = r->end,
	        .stage = r->stage,
	        .reply = r->reply != NULL && parse(r->reply, &reply) ? &reply : NULL,
	        .catchall_asked = r->ca_asked,
	        .catchall_pending = r->ca_pending,
	        .catchall_reply = r->ca_reply != NULL && parse(r->ca_reply, &ca) ? &ca : NULL,
	        .catchall_rcpt = "r@x.test",
	        .fallback_used = r->fb_used,
	        .fallback_possible = r->fb_possible,
	        .tls_retry_possible = r->tls_retry,
	        .error = r->error,
	};
	struct judgement j;
	memset(&j, 0x5a, sizeof(j)); /* nothing may be left unset */
	classify_attempt(&a, &j);
	ck_assert_msg(j.next == r->next, "%s: next %d, want %d", r->name, j.next, r->next);
	if (r->next == ATTEMPT_RETRY_PLAIN)
		return; /* nothing to remember */
	ck_assert_msg(j.rank == r->rank, "%s: rank %d, want %d", r->name, j.rank, r->rank);
	ck_assert_msg(j.outcome.kind == r->kind, "%s: %s, want %s", r->name, outcome_name(j.outcome.kind),
	              outcome_name(r->kind));
	ck_assert_msg(j.outcome.flags == r->flags, "%s: flags %#x, want %#x", r->name, j.outcome.flags,
	              r->flags);
	ck_assert_msg(j.outcome.stage == r->want_stage, "%s: stage %s, want %s", r->name,
	              probe_stage_name(j.outcome.stage), probe_stage_name(r->want_stage));
	ck_assert_msg(j.outcome.code == r->want_code, "%s: code %d, want %d", r->name, j.outcome.code,
	              r->want_code);
	ck_assert_msg(strstr(j.outcome.reason, r->reason) != NULL, "%s: reason \"%s\", want \"%s\" in it",
	              r->name, j.outcome.reason, r->reason);
	ck_assert_msg(j.outcome.mx_host[0] == '\0' && j.outcome.ttl_cap_ms == 0, "%s: fields not cleared",
	              r->name);
	/* Only servers' definite answers are final, plus the mail loop and
	 * our own failures (which are never kept). */
	if (j.next == ATTEMPT_FINAL)
		ck_assert_msg(j.outcome.kind == OUTCOME_VALID || j.outcome.kind == OUTCOME_INVALID ||
		                      j.outcome.kind == OUTCOME_CATCH_ALL ||
		                      (j.outcome.flags & OUTCOME_F_LOOP) || classify_outcome_ours(&j.outcome),
		              "%s: final but not definite", r->name);
	/* Our own failure is flagged as such, and nothing else is. */
	ck_assert_msg(classify_outcome_ours(&j.outcome) == (r->end == SMTP_END_NO_RESOURCES),
	              "%s: classify_outcome_ours wrong", r->name);
	/* A protocol error is never an answer. */
	if (j.outcome.flags & OUTCOME_F_PROTOCOL)
		ck_assert_msg(j.outcome.kind == OUTCOME_TEMPFAIL && j.next != ATTEMPT_FINAL, "%s", r->name);
}
END_TEST

/* The order "most telling failure wins" relies on. */
START_TEST(ranks)
{
	ck_assert_int_lt(RANK_NONE, RANK_NO_REPLY);
	ck_assert_int_lt(RANK_NO_REPLY, RANK_PROTOCOL); /* a desync is reported over "no reply" */
	ck_assert_int_lt(RANK_PROTOCOL, RANK_TEMP_REPLY);
	ck_assert_int_lt(RANK_TEMP_REPLY, RANK_BLOCKED);
	ck_assert_int_lt(RANK_BLOCKED, RANK_UNVERIFIABLE);
}
END_TEST

START_TEST(catchall_fact)
{
	struct smtp_reply r;
	struct outcome f;
	parse("250 2.1.5 ok", &r);
	ck_assert(classify_catchall_fact(&r, &f));
	ck_assert_int_eq(f.kind, OUTCOME_CATCH_ALL);
	ck_assert_uint_eq(f.flags, 0);
	ck_assert_int_eq(f.stage, STAGE_CATCHALL);
	parse("550 5.1.1 no such user", &r);
	ck_assert(classify_catchall_fact(&r, &f));
	ck_assert_int_eq(f.kind, OUTCOME_VALID);
	ck_assert_uint_eq(f.flags, OUTCOME_F_NOT_CATCHALL);
	ck_assert_int_eq(f.code, 550);
	parse("550 5.7.1 relaying denied", &r); /* about us, not the address */
	ck_assert(!classify_catchall_fact(&r, &f));
	parse("554 blocked by a DNSBL", &r);
	ck_assert(!classify_catchall_fact(&r, &f));
	parse("550 5.1.0 <>: Sender address rejected: not here", &r); /* about our sender */
	ck_assert(!classify_catchall_fact(&r, &f));
	parse("553 5.1.8 sender domain unknown", &r);
	ck_assert(!classify_catchall_fact(&r, &f));
	parse("450 4.7.1 greylisted", &r); /* 4xx: nothing learned */
	ck_assert(!classify_catchall_fact(&r, &f));
	parse("421 4.3.0 bye", &r);
	ck_assert(!classify_catchall_fact(&r, &f));
	ck_assert(!classify_catchall_fact(NULL, &f)); /* no answer */
}
END_TEST

START_TEST(names_host)
{
	struct smtp_reply r;
	parse("220 probe.vemilter.test ESMTP Postfix", &r);
	ck_assert(classify_names_host(&r, "probe.vemilter.test"));
	ck_assert(classify_names_host(&r, "PROBE.Vemilter.Test"));
	ck_assert(classify_names_host(&r, "probe.vemilter.test."));
	ck_assert(!classify_names_host(&r, "vemilter.test"));
	ck_assert(!classify_names_host(&r, "probe.vemilter.test.example"));
	ck_assert(!classify_names_host(&r, ""));
	parse("220 probe.vemilter.test.", &r);
	ck_assert(classify_names_host(&r, "probe.vemilter.test"));
	parse("220-probe.vemilter.test first line\n220 second", &r);
	ck_assert(classify_names_host(&r, "probe.vemilter.test"));
	parse("220 2.0.0 probe.vemilter.test ready", &r); /* the enhanced code is not the name */
	ck_assert(classify_names_host(&r, "probe.vemilter.test"));
	parse("220 mx.example.org ESMTP probe.vemilter.test", &r); /* only the first word counts */
	ck_assert(!classify_names_host(&r, "probe.vemilter.test"));
	parse("220", &r);
	ck_assert(!classify_names_host(&r, "probe.vemilter.test"));
}
END_TEST

START_TEST(greylisting)
{
	struct smtp_reply r;
	parse("421 4.7.1 greylisted", &r); /* 421 is closing, not greylisting */
	ck_assert(!classify_is_greylisting(&r));
	parse("550 5.7.1 greylisted", &r);
	ck_assert(!classify_is_greylisting(&r));
	parse("451 4.4.1 no answer from host", &r);
	ck_assert(!classify_is_greylisting(&r));
	parse("451 4.7.0 Greylisting in action", &r);
	ck_assert(classify_is_greylisting(&r));
	ck_assert(!classify_is_greylisting(NULL));
}
END_TEST

/* names_blocklist: what the circuit breaker remembers from a RCPT refusal
 * (a blocklist named, "listed", "client host"), not a refusal about the
 * address or its domain ("relay access denied") */
START_TEST(names_blocklist)
{
	struct smtp_reply r;
	parse("554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org", &r);
	ck_assert(classify_names_blocklist(&r));
	parse("550 5.7.1 your address is listed", &r);
	ck_assert(classify_names_blocklist(&r));
	parse("554 your IP is on our DNSBL", &r);
	ck_assert(classify_names_blocklist(&r));
	parse("554 5.7.1 <x@example.com>: Relay access denied", &r);
	ck_assert(!classify_names_blocklist(&r));
	parse("550 5.1.1 no such user", &r);
	ck_assert(!classify_names_blocklist(&r));
	parse("450 4.7.1 Client host rejected: cannot find your hostname", &r); /* temporary */
	ck_assert(!classify_names_blocklist(&r));
	ck_assert(!classify_names_blocklist(NULL));
}
END_TEST

/* check_matters - catch-all matters for domain under conf text? */
static bool matters(const char *text, const char *domain)
{
	struct conf *c = conf_load_text("t.conf", text, NULL, NULL);
	ck_assert_ptr_nonnull(c);
	bool m = classify_catchall_matters(c, domain);
	conf_unref(c);
	return m;
}

START_TEST(catchall_matters)
{
	/* by default valid and catch_all are both accepted: it does not matter */
	ck_assert(!matters("", "example.org"));
	ck_assert(matters("catch_all_action = tempfail\n", "example.org"));
	ck_assert(matters("valid_action = tempfail\n", "example.org"));
	ck_assert(!matters("valid_action = tempfail\ncatch_all_action = tempfail\n", "example.org"));
	/* per-domain overrides count */
	const char *o = "domain_overrides = strict.example catch_all=reject\n";
	ck_assert(matters(o, "strict.example"));
	ck_assert(matters(o, "sub.strict.example"));
	ck_assert(!matters(o, "other.example"));
	/* dry_run changes what is done, not what is decided */
	ck_assert(matters("dry_run = yes\ncatch_all_action = tempfail\n", "example.org"));
}
END_TEST

START_TEST(flags_text)
{
	char buf[64];
	outcome_flags_text(0, buf, sizeof(buf));
	ck_assert_str_eq(buf, "");
	outcome_flags_text(OUTCOME_F_PROTOCOL, buf, sizeof(buf));
	ck_assert_str_eq(buf, "protocol");
	outcome_flags_text(OUTCOME_F_NOT_CATCHALL | OUTCOME_F_FALLBACK_SENDER | OUTCOME_F_LOOP, buf,
	                   sizeof(buf));
	ck_assert_str_eq(buf, "not_catchall,fallback_sender,loop");
	outcome_flags_text(OUTCOME_F_GREYLIST | OUTCOME_F_TAGGED, buf, sizeof(buf));
	ck_assert_str_eq(buf, "greylist,tagged");
	outcome_flags_text(OUTCOME_F_NOT_CATCHALL | OUTCOME_F_FALLBACK_SENDER, buf, 16); /* cut, terminated */
	ck_assert_str_eq(buf, "not_catchall");
}
END_TEST

/* bogus - classify_address_bogus of a text address */
static bool bogus(const char *text)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	if (strchr(text, ':') != NULL) {
		ss.ss_family = AF_INET6;
		ck_assert_int_eq(inet_pton(AF_INET6, text, &((struct sockaddr_in6 *)&ss)->sin6_addr), 1);
	} else {
		ss.ss_family = AF_INET;
		ck_assert_int_eq(inet_pton(AF_INET, text, &((struct sockaddr_in *)&ss)->sin_addr), 1);
	}
	return classify_address_bogus((const struct sockaddr *)&ss);
}

/* Which errno values are our failure, not the server's. */
START_TEST(errno_ours)
{
	ck_assert_str_eq(classify_errno_ours(EMFILE), CLASSIFY_NO_FDS);
	ck_assert_str_eq(classify_errno_ours(ENFILE), CLASSIFY_NO_FDS);
	ck_assert_str_eq(classify_errno_ours(ENOBUFS), CLASSIFY_NO_MEMORY);
	ck_assert_str_eq(classify_errno_ours(ENOMEM), CLASSIFY_NO_MEMORY);
	static const int theirs[] = {0,          ECONNREFUSED,  ETIMEDOUT, EHOSTUNREACH, ENETUNREACH,
	                             ECONNRESET, EADDRNOTAVAIL, EACCES,    EPERM,        EINVAL};
	for (size_t i = 0; i < sizeof(theirs) / sizeof(theirs[0]); i++)
		ck_assert_msg(classify_errno_ours(theirs[i]) == NULL, "errno %d is not ours", theirs[i]);
}
END_TEST

/* An outcome is ours only when flagged limited AND saying why it is ours. */
START_TEST(outcome_ours)
{
	struct outcome o;
	memset(&o, 0, sizeof(o));
	outcome_set(&o, OUTCOME_TEMPFAIL, STAGE_DNS, 0, NULL, NULL,
	            "out of file descriptors: MX a.test not asked");
	ck_assert(!classify_outcome_ours(&o)); /* not flagged */
	o.flags = OUTCOME_F_LIMITED;
	ck_assert(classify_outcome_ours(&o));
	outcome_set(&o, OUTCOME_TEMPFAIL, STAGE_CONNECT, 0, NULL, NULL, "out of memory or socket buffers");
	o.flags = OUTCOME_F_LIMITED;
	ck_assert(classify_outcome_ours(&o));
	outcome_set(&o, OUTCOME_TEMPFAIL, STAGE_CONNECT, 0, NULL, NULL,
	            "host_session_rate: 5 sessions to 192.0.2.1 this minute");
	o.flags = OUTCOME_F_LIMITED; /* our limit, but no failure */
	ck_assert(!classify_outcome_ours(&o));
}
END_TEST

/* Which refused addresses make a domain no_domain (bogus) and which only
 * unverifiable (real on a split horizon: refusing them is our policy). */
START_TEST(address_bogus)
{
	static const char *const yes[] = {
	        "127.0.0.1",     "127.1.2.3",    "0.0.0.0",       "0.1.2.3",
	        "224.0.0.1",     "239.1.1.1",    "240.0.0.1",     "255.255.255.255",
	        "192.0.2.7",     "198.51.100.1", "203.0.113.200", "::",
	        "::1",           "ff02::1",      "2001:db8::25",  "::ffff:127.0.0.1",
	        "::ffff:0.0.0.0"};
	static const char *const no[] = {"10.1.2.3",       "172.16.0.1", "172.31.255.254", "192.168.7.7",
	                                 "169.254.1.1",    "100.64.0.1", "fd00::25",       "fc00::1",
	                                 "fe80::1",        "8.8.8.8",    "2001:4860::1",   "::ffff:10.0.0.1",
	                                 "198.18.0.1",     "192.0.3.1",  "2001:db9::1",    "128.0.0.1",
	                                 "223.255.255.255"};
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
		ck_assert_msg(bogus(yes[i]), "%s should be bogus", yes[i]);
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		ck_assert_msg(!bogus(no[i]), "%s should not be bogus", no[i]);
	ck_assert(!classify_address_bogus(NULL));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("classify");
	TCase *tc = tcase_create("classify");
	tcase_add_loop_test(tc, table, 0, (int)(sizeof(rows) / sizeof(rows[0])));
	tcase_add_test(tc, ranks);
	tcase_add_test(tc, catchall_fact);
	tcase_add_test(tc, names_host);
	tcase_add_test(tc, greylisting);
	tcase_add_test(tc, names_blocklist);
	tcase_add_test(tc, catchall_matters);
	tcase_add_test(tc, flags_text);
	tcase_add_test(tc, address_bogus);
	tcase_add_test(tc, errno_ours);
	tcase_add_test(tc, outcome_ours);
	suite_add_tcase(s, tc);
	return unit_run(s);
}
