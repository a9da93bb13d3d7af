/*
 * test_smtpreply.c - the SMTP reply parser: codes, enhanced codes, multi-line
 * replies, EHLO keywords, and every limit a hostile server could push.
 */
#include <string.h>

#include "smtpreply.h"
#include "unit.h"

#define MAXL 6

static const struct {
	const char *lines[MAXL];       /* NULL-terminated; every line but the last gives MORE */
	enum smtp_reply_status status; /* after the last line */
	int code;
	const char *ecode;
	const char *text; /* DONE: the joined text; ERROR: a substring of the error */
	unsigned caps;
} cases[] = {
        /* single lines */
        {{"250 OK"}, SMTP_REPLY_DONE, 250, "", "OK", 0},
        {{"220 mx.example ESMTP Postfix"}, SMTP_REPLY_DONE, 220, "", "mx.example ESMTP Postfix", 0},
        {{"250"}, SMTP_REPLY_DONE, 250, "", "", 0},
        {{"221 "}, SMTP_REPLY_DONE, 221, "", "", 0},
        {{"250 trailing   "}, SMTP_REPLY_DONE, 250, "", "trailing", 0},
        {{"421 4.3.2 Service shutting down"}, SMTP_REPLY_DONE, 421, "4.3.2", "Service shutting down", 0},
        /* enhanced codes */
        {{"550 5.1.1 <x@y>: Recipient address rejected"},
         SMTP_REPLY_DONE,
         550,
         "5.1.1",
         "<x@y>: Recipient address rejected",
         0},
        {{"250 2.1.0 Ok"}, SMTP_REPLY_DONE, 250, "2.1.0", "Ok", 0},
        {{"451 4.7.1 Greylisted"}, SMTP_REPLY_DONE, 451, "4.7.1", "Greylisted", 0},
        {{"550 5.1.1"}, SMTP_REPLY_DONE, 550, "5.1.1", "", 0},
        {{"550 5.123.456 wide"}, SMTP_REPLY_DONE, 550, "5.123.456", "wide", 0},
        {{"550 5.0.0   spaced"}, SMTP_REPLY_DONE, 550, "5.0.0", "spaced", 0},
        {{"550  5.1.1 two spaces"}, SMTP_REPLY_DONE, 550, "5.1.1", "two spaces", 0},
        {{"550 4.1.1 class mismatch"}, SMTP_REPLY_DONE, 550, "", "4.1.1 class mismatch", 0},
        {{"250 5.1.1 class mismatch"}, SMTP_REPLY_DONE, 250, "", "5.1.1 class mismatch", 0},
        {{"354 3.0.0 no class 3"}, SMTP_REPLY_DONE, 354, "", "3.0.0 no class 3", 0},
        {{"550 5.1.1.1 four parts"}, SMTP_REPLY_DONE, 550, "", "5.1.1.1 four parts", 0},
        {{"550 5.1234.1 wide subject"}, SMTP_REPLY_DONE, 550, "", "5.1234.1 wide subject", 0},
        {{"550 5.1.1234 wide detail"}, SMTP_REPLY_DONE, 550, "", "5.1.1234 wide detail", 0},
        {{"550 5..1 empty"}, SMTP_REPLY_DONE, 550, "", "5..1 empty", 0},
        {{"550 5.1. empty"}, SMTP_REPLY_DONE, 550, "", "5.1. empty", 0},
        {{"550 5.1.1x glued"}, SMTP_REPLY_DONE, 550, "", "5.1.1x glued", 0},
        {{"550 5.1 short"}, SMTP_REPLY_DONE, 550, "", "5.1 short", 0},
        {{"550 55.1.1 wide class"}, SMTP_REPLY_DONE, 550, "", "55.1.1 wide class", 0},
        /* multi-line */
        {{"550-5.1.1 first", "550 5.1.1 second"}, SMTP_REPLY_DONE, 550, "5.1.1", "first second", 0},
        {{"550-5.7.1 blocked", "550 see https://x.example"},
         SMTP_REPLY_DONE,
         550,
         "5.7.1",
         "blocked see https://x.example",
         0},
        {{"550-blocked", "550 5.7.1 see"}, SMTP_REPLY_DONE, 550, "", "blocked see", 0},
        {{"550-", "550 end"}, SMTP_REPLY_DONE, 550, "", "end", 0},
        {{"250-first", "250"}, SMTP_REPLY_DONE, 250, "", "first", 0},
        {{"250-", "250-", "250"}, SMTP_REPLY_DONE, 250, "", "", 0},
        /* EHLO keywords */
        {{"250-mx.example", "250-PIPELINING", "250-STARTTLS", "250 8BITMIME"},
         SMTP_REPLY_DONE,
         250,
         "",
         "mx.example PIPELINING STARTTLS 8BITMIME",
         SMTP_CAP_PIPELINING | SMTP_CAP_STARTTLS | SMTP_CAP_8BITMIME},
        {{"250-mx.example", "250-starttls", "250 SmtpUtf8"},
         SMTP_REPLY_DONE,
         250,
         "",
         "mx.example starttls SmtpUtf8",
         SMTP_CAP_STARTTLS | SMTP_CAP_SMTPUTF8},
        {{"250-x", "250-SIZE 10240000", "250-STARTTLSX", "250-8BITMIMES", "250 SMTPUTF8 extra"},
         SMTP_REPLY_DONE,
         250,
         "",
         "x SIZE 10240000 STARTTLSX 8BITMIMES SMTPUTF8 extra",
         SMTP_CAP_SMTPUTF8},
        {{"250 STARTTLS"}, SMTP_REPLY_DONE, 250, "", "STARTTLS", 0},
        {{"250-STARTTLS", "250 SIZE"}, SMTP_REPLY_DONE, 250, "", "STARTTLS SIZE", 0},
        {{"220-x", "220 STARTTLS"}, SMTP_REPLY_DONE, 220, "", "x STARTTLS", 0},
        {{"250-x", "250  STARTTLS"}, SMTP_REPLY_DONE, 250, "", "x STARTTLS", 0},
        /* hostile text: controls and 8-bit become '?' */
        {{"550 bad\x01\x1b[31mred\x7f"}, SMTP_REPLY_DONE, 550, "", "bad??[31mred?", 0},
        {{"550 caf\xc3\xa9"}, SMTP_REPLY_DONE, 550, "", "caf??", 0},
        {{"550 a\tb\rc"}, SMTP_REPLY_DONE, 550, "", "a?b?c", 0},
        {{"550-5.1.1 \x80", "550 \xff"}, SMTP_REPLY_DONE, 550, "5.1.1", "? ?", 0},
        /* malformed */
        {{""}, SMTP_REPLY_ERROR, 0, "", "3-digit code", 0},
        {{"25"}, SMTP_REPLY_ERROR, 0, "", "3-digit code", 0},
        {{"2x0 OK"}, SMTP_REPLY_ERROR, 0, "", "3-digit code", 0},
        {{"abc"}, SMTP_REPLY_ERROR, 0, "", "3-digit code", 0},
        {{" 250 OK"}, SMTP_REPLY_ERROR, 0, "", "3-digit code", 0},
        {{"650 OK"}, SMTP_REPLY_ERROR, 0, "", "3-digit code", 0},
        {{"150 OK"}, SMTP_REPLY_ERROR, 0, "", "3-digit code", 0},
        {{"HTTP/1.1 400 Bad Request"}, SMTP_REPLY_ERROR, 0, "", "3-digit code", 0},
        {{"250x OK"}, SMTP_REPLY_ERROR, 0, "", "bad separator", 0},
        {{"250\tOK"}, SMTP_REPLY_ERROR, 0, "", "bad separator", 0},
        {{"2500 OK"}, SMTP_REPLY_ERROR, 0, "", "bad separator", 0},
        {{"250_OK"}, SMTP_REPLY_ERROR, 0, "", "bad separator", 0},
        {{"250-a", "251 b"}, SMTP_REPLY_ERROR, 0, "", "changed from 250 to 251", 0},
        {{"250-a", "550-b"}, SMTP_REPLY_ERROR, 0, "", "changed from 250 to 550", 0},
        /* a reply whose lines disagree: neither code may count (the farm's multiline_mismatch) */
        {{"250-2.1.5 ok", "550 5.1.1 no"}, SMTP_REPLY_ERROR, 0, "", "changed from 250 to 550", 0},
        {{"550-5.1.1 no", "250 2.1.5 ok"}, SMTP_REPLY_ERROR, 0, "", "changed from 550 to 250", 0},
        {{"250-a", "250-b", "251 c"}, SMTP_REPLY_ERROR, 0, "", "changed from 250 to 251", 0},
        {{"250-a", "25"}, SMTP_REPLY_ERROR, 0, "", "3-digit code", 0},
        {{"250-a", "250+b"}, SMTP_REPLY_ERROR, 0, "", "bad separator", 0},
        {{"250-a", "garbage"}, SMTP_REPLY_ERROR, 0, "", "3-digit code", 0},
};

/* feed - run a NULL-terminated list of lines through p; the last status */
static enum smtp_reply_status feed(struct smtp_reply_parser *p, const char *const *lines)
{
	enum smtp_reply_status st = SMTP_REPLY_ERROR;

	for (int i = 0; i < MAXL && lines[i] != NULL; i++) {
		st = smtp_reply_line(p, lines[i], strlen(lines[i]));
		if (i + 1 < MAXL && lines[i + 1] != NULL)
			ck_assert_msg(st == SMTP_REPLY_MORE, "line %d \"%s\": status %d", i, lines[i], st);
	}
	return st;
}

START_TEST(table)
{
	struct smtp_reply_parser p;

	smtp_reply_init(&p);
	enum smtp_reply_status st = feed(&p, cases[_i].lines);
	ck_assert_msg(st == cases[_i].status, "\"%s\": status %d, want %d (%s)", cases[_i].lines[0], st,
	              cases[_i].status, p.error);
	if (st == SMTP_REPLY_ERROR) {
		ck_assert_msg(strstr(p.error, cases[_i].text) != NULL, "\"%s\": error \"%s\", want \"%s\"",
		              cases[_i].lines[0], p.error, cases[_i].text);
		return;
	}
	ck_assert_int_eq(p.reply.code, cases[_i].code);
	ck_assert_str_eq(p.reply.ecode, cases[_i].ecode);
	ck_assert_str_eq(p.reply.text, cases[_i].text);
	ck_assert_uint_eq(p.reply.caps, cases[_i].caps);
	ck_assert_str_eq(p.error, "");
}
END_TEST

START_TEST(line_count)
{
	struct smtp_reply_parser p;

	smtp_reply_init(&p);
	ck_assert_uint_eq(feed(&p, (const char *[]){"250-a", "250-b", "250 c", NULL}), SMTP_REPLY_DONE);
	ck_assert_uint_eq(p.reply.lines, 3);
}
END_TEST

/* line_of - a line "CODE<sep>" followed by x up to len octets */
static void line_of(char *buf, size_t len, const char *start)
{
	memset(buf, 'x', len);
	memcpy(buf, start, strlen(start));
	buf[len] = '\0';
}

START_TEST(line_length)
{
	static char buf[SMTP_LINE_MAX + 2];
	struct smtp_reply_parser p;

	line_of(buf, SMTP_LINE_MAX, "250 ");
	smtp_reply_init(&p);
	ck_assert_int_eq(smtp_reply_line(&p, buf, SMTP_LINE_MAX), SMTP_REPLY_DONE);
	ck_assert_uint_eq(strlen(p.reply.text), SMTP_REPLY_TEXT_MAX);

	line_of(buf, SMTP_LINE_MAX + 1, "250 ");
	smtp_reply_init(&p);
	ck_assert_int_eq(smtp_reply_line(&p, buf, SMTP_LINE_MAX + 1), SMTP_REPLY_ERROR);
	ck_assert(strstr(p.error, "too long") != NULL);

	/* a too long continuation line ends the reply too */
	smtp_reply_init(&p);
	ck_assert_int_eq(smtp_reply_line(&p, "250-ok", 6), SMTP_REPLY_MORE);
	line_of(buf, SMTP_LINE_MAX + 1, "250-");
	ck_assert_int_eq(smtp_reply_line(&p, buf, SMTP_LINE_MAX + 1), SMTP_REPLY_ERROR);
}
END_TEST

START_TEST(max_lines)
{
	struct smtp_reply_parser p;

	smtp_reply_init(&p);
	for (int i = 0; i < SMTP_REPLY_MAX_LINES - 1; i++)
		ck_assert_int_eq(smtp_reply_line(&p, "250-x", 5), SMTP_REPLY_MORE);
	ck_assert_int_eq(smtp_reply_line(&p, "250 x", 5), SMTP_REPLY_DONE);
	ck_assert_uint_eq(p.reply.lines, SMTP_REPLY_MAX_LINES);

	smtp_reply_init(&p);
	for (int i = 0; i < SMTP_REPLY_MAX_LINES; i++)
		ck_assert_int_eq(smtp_reply_line(&p, "250-x", 5), SMTP_REPLY_MORE);
	ck_assert_int_eq(smtp_reply_line(&p, "250 x", 5), SMTP_REPLY_ERROR);
	ck_assert(strstr(p.error, "too many lines") != NULL);
}
END_TEST

START_TEST(text_truncated)
{
	static char buf[SMTP_LINE_MAX + 1];
	struct smtp_reply_parser p;

	smtp_reply_init(&p);
	line_of(buf, 300, "550-5.1.1 ");
	for (int i = 0; i < 5; i++)
		ck_assert_int_eq(smtp_reply_line(&p, buf, 300), SMTP_REPLY_MORE);
	buf[3] = ' ';
	ck_assert_int_eq(smtp_reply_line(&p, buf, 300), SMTP_REPLY_DONE);
	ck_assert_uint_eq(strlen(p.reply.text), SMTP_REPLY_TEXT_MAX);
	ck_assert_str_eq(p.reply.ecode, "5.1.1");
	for (size_t i = 0; i < SMTP_REPLY_TEXT_MAX; i++)
		ck_assert(p.reply.text[i] == 'x' || p.reply.text[i] == ' ');
	/* exactly at the limit: nothing cut */
	smtp_reply_init(&p);
	line_of(buf, 4 + SMTP_REPLY_TEXT_MAX, "550 ");
	ck_assert_int_eq(smtp_reply_line(&p, buf, 4 + SMTP_REPLY_TEXT_MAX), SMTP_REPLY_DONE);
	ck_assert_uint_eq(strlen(p.reply.text), SMTP_REPLY_TEXT_MAX);
}
END_TEST

START_TEST(not_nul_terminated)
{
	struct smtp_reply_parser p;
	const char buf[] = "550 a\0b and more that is not part of the line";

	smtp_reply_init(&p);
	ck_assert_int_eq(smtp_reply_line(&p, buf, 7), SMTP_REPLY_DONE);
	ck_assert_str_eq(p.reply.text, "a?b");

	smtp_reply_init(&p);
	ck_assert_int_eq(smtp_reply_line(&p, "250 OKAY", 3), SMTP_REPLY_DONE);
	ck_assert_str_eq(p.reply.text, "");
}
END_TEST

START_TEST(after_done_and_error)
{
	struct smtp_reply_parser p;

	smtp_reply_init(&p);
	ck_assert_int_eq(smtp_reply_line(&p, "250 OK", 6), SMTP_REPLY_DONE);
	ck_assert_int_eq(smtp_reply_line(&p, "250 OK", 6), SMTP_REPLY_ERROR);
	ck_assert(strstr(p.error, "after the end") != NULL);

	smtp_reply_init(&p);
	ck_assert_int_eq(smtp_reply_line(&p, "xyz", 3), SMTP_REPLY_ERROR);
	ck_assert_int_eq(smtp_reply_line(&p, "250 OK", 6), SMTP_REPLY_ERROR);

	smtp_reply_init(&p);
	ck_assert_int_eq(smtp_reply_line(&p, "250 OK", 6), SMTP_REPLY_DONE);
	ck_assert_str_eq(p.error, "");
}
END_TEST

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

int main(void)
{
	Suite *s = suite_create("smtpreply");
	TCase *tc = tcase_create("smtpreply");

	tcase_add_loop_test(tc, table, 0, N(cases));
	tcase_add_test(tc, line_count);
	tcase_add_test(tc, line_length);
	tcase_add_test(tc, max_lines);
	tcase_add_test(tc, text_truncated);
	tcase_add_test(tc, not_nul_terminated);
	tcase_add_test(tc, after_done_and_error);
	suite_add_tcase(s, tc);
	return unit_run(s);
}
