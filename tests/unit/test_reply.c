/*
 * test_reply.c - reply_parse strictness and reply_expand safety: values are
 * attacker data and must never add a line or a control character.
 */
#include <string.h>

#include "reply.h"
#include "unit.h"

static const struct {
	const char *spec;
	const char *code, *ecode, *text;
} good[] = {
        {"553 5.1.7 Sender address rejected: %r", "553", "5.1.7", "Sender address rejected: %r"},
        {"450 4.1.8 Try again later", "450", "4.1.8", "Try again later"},
        {"550   5.1.1   spaced out", "550", "5.1.1", "spaced out"},
        {"451 4.123.456 long subject and detail", "451", "4.123.456", "long subject and detail"},
        {"554 5.7.1 100%% sure: %a is %o (%m)", "554", "5.7.1", "100%% sure: %a is %o (%m)"},
        {"421 4.3.0 x", "421", "4.3.0", "x"},
        {"559 5.0.0 ~!@#$^&*()_+{}|:<>?`-=[]\\;',./", "559", "5.0.0", "~!@#$^&*()_+{}|:<>?`-=[]\\;',./"},
};

START_TEST(parse_good)
{
	struct reply_template t;
	char why[200] = "";

	ck_assert_msg(reply_parse(good[_i].spec, &t, why, sizeof(why)), "%s: %s", good[_i].spec, why);
	ck_assert_str_eq(t.code, good[_i].code);
	ck_assert_str_eq(t.ecode, good[_i].ecode);
	ck_assert_str_eq(t.text, good[_i].text);
}
END_TEST

static const struct {
	const char *spec;
	const char *why; /* a substring of the reason */
} bad[] = {
        {"250 2.0.0 OK", "not 4xx or 5xx"},
        {"354 3.0.0 go on", "not 4xx or 5xx"},
        {"650 6.0.0 no", "not 4xx or 5xx"},
        {"590 5.0.0 no", "second digit"},
        {"55 5.1.7 short", "3-digit code"},
        {"5530 5.1.7 long", "3-digit code"},
        {"abc 5.1.7 letters", "3-digit code"},
        {"", "3-digit code"},
        {"553", "enhanced status code"},
        {"553 Sender rejected", "enhanced status code"},
        {"553 5.1 short", "enhanced status code"},
        {"553 5.1.7.1 long", "enhanced status code"},
        {"553 5..7 empty", "enhanced status code"},
        {"553 5.1234.7 wide", "enhanced status code"},
        {"553 5.1.7x text", "enhanced status code"},
        {"553 55.1.7 text", "enhanced status code"},
        {"553 4.1.7 mismatch", "does not match reply code 553"},
        {"451 5.1.7 mismatch", "does not match reply code 451"},
        {"553 2.1.7 mismatch", "does not match"},
        {"553 5.1.7", "reply text is empty"},
        {"553 5.1.7   ", "reply text is empty"},
        {"553 5.1.7 bad %x escape", "unknown escape %x"},
        {"553 5.1.7 bad %A escape", "unknown escape %A"},
        {"553 5.1.7 trailing %", "lone %"},
        {"553 5.1.7 tab\there", "non-printable"},
        {"553 5.1.7 cr\rlf\n", "non-printable"},
        {"553 5.1.7 caf\xc3\xa9", "non-ASCII"},
        {"553 5.1.7 del\x7f", "non-printable"},
        {"553\t5.1.7 tab", "3-digit code"},
};

START_TEST(parse_bad)
{
	struct reply_template t;
	char why[200] = "";

	ck_assert_msg(!reply_parse(bad[_i].spec, &t, why, sizeof(why)), "%s accepted", bad[_i].spec);
	ck_assert_msg(strstr(why, bad[_i].why) != NULL, "%s: got \"%s\", want \"%s\"", bad[_i].spec, why,
	              bad[_i].why);
}
END_TEST

START_TEST(parse_length)
{
	struct reply_template t;
	char spec[REPLY_TEXT_MAX + 20], why[200];

	memcpy(spec, "550 5.1.1 ", 10);
	memset(spec + 10, 'x', REPLY_TEXT_MAX);
	spec[10 + REPLY_TEXT_MAX] = '\0';
	ck_assert(reply_parse(spec, &t, why, sizeof(why)));
	ck_assert_uint_eq(strlen(t.text), REPLY_TEXT_MAX);
	strcat(spec, "y");
	ck_assert(!reply_parse(spec, &t, why, sizeof(why)));
	ck_assert(strstr(why, "more than") != NULL);
}
END_TEST

static const struct {
	const char *text;
	struct reply_vars vars;
	const char *want;
} expand[] = {
        {"Sender address rejected: %r",
         {"a@b", "no domain", NULL, NULL},
         "Sender address rejected: no domain"},
        {"<%a> is %o: %m",
         {"a@b.example", NULL, "invalid", "550 5.1.1 no such user"},
         "<a@b.example> is invalid: 550 5.1.1 no such user"},
        {"100%% sure", {NULL, NULL, NULL, NULL}, "100% sure"},
        {"%%a is not %a", {"x@y", NULL, NULL, NULL}, "%a is not x@y"},
        {"empty [%a][%r][%o][%m]", {NULL, NULL, NULL, NULL}, "empty [][][][]"},
        {"%a%a", {"ab", NULL, NULL, NULL}, "abab"},
        /* injection attempts: CR/LF, NUL-free controls, non-ASCII */
        {"<%a>", {"evil@x\r\n250 2.0.0 OK", NULL, NULL, NULL}, "<evil@x??250 2.0.0 OK>"},
        {"%m",
         {NULL, NULL, NULL, "550-5.1.1 first\r\n550 5.1.1 second"},
         "550-5.1.1 first??550 5.1.1 second"},
        {"%r", {NULL, "tab\there\x1b[31m\x7f", NULL, NULL}, "tab?here?[31m?"},
        {"%a", {"j\xc3\xb6rg@example.com", NULL, NULL, NULL}, "j??rg@example.com"},
        {"%a", {"\n", NULL, NULL, NULL}, "?"},
        /* a value's percent signs are not escapes */
        {"%a", {"%r%%@x", "REASON", NULL, NULL}, "%r%%@x"},
};

START_TEST(expand_vars)
{
	struct reply_template t;
	char buf[256];

	memset(&t, 0, sizeof(t));
	strcpy(t.text, expand[_i].text);
	size_t n = reply_expand(&t, &expand[_i].vars, buf, sizeof(buf));
	ck_assert_str_eq(buf, expand[_i].want);
	ck_assert_uint_eq(n, strlen(buf));
}
END_TEST

START_TEST(expand_parsed)
{
	struct reply_template t;
	struct reply_vars v = {"bob@example.com", "bad syntax", NULL, NULL};
	char why[200], buf[256];

	ck_assert(reply_parse("553 5.1.7 Sender address rejected: %r", &t, why, sizeof(why)));
	reply_expand(&t, &v, buf, sizeof(buf));
	ck_assert_str_eq(buf, "Sender address rejected: bad syntax");
	reply_expand(&t, NULL, buf, sizeof(buf));
	ck_assert_str_eq(buf, "Sender address rejected: ");
}
END_TEST

START_TEST(expand_truncates)
{
	struct reply_template t;
	char value[2000], buf[64];

	memset(&t, 0, sizeof(t));
	strcpy(t.text, "addr <%a> end");
	memset(value, 'A', sizeof(value) - 1);
	value[sizeof(value) - 1] = '\0';
	struct reply_vars v = {value, NULL, NULL, NULL};
	memset(buf, '#', sizeof(buf));
	ck_assert_uint_eq(reply_expand(&t, &v, buf, sizeof(buf)), sizeof(buf) - 1);
	ck_assert_uint_eq(strlen(buf), sizeof(buf) - 1);
	ck_assert(strncmp(buf, "addr <AAA", 9) == 0);

	for (size_t size = 1; size < 20; size++) {
		char small[20];
		memset(small, '#', sizeof(small));
		ck_assert_uint_eq(reply_expand(&t, &v, small, size), size - 1);
		ck_assert_uint_eq(strlen(small), size - 1);
		ck_assert(small[size] == '#'); /* nothing written past size */
	}
	ck_assert_uint_eq(reply_expand(&t, &v, buf, 0), 0);
}
END_TEST

START_TEST(expand_escape_at_edge)
{
	struct reply_template t;
	struct reply_vars v = {"a", NULL, NULL, NULL};
	char buf[4];

	memset(&t, 0, sizeof(t));
	strcpy(t.text, "xy%%z");
	ck_assert_uint_eq(reply_expand(&t, &v, buf, sizeof(buf)), 3);
	ck_assert_str_eq(buf, "xy%");
	strcpy(t.text, "ab%"); /* not parseable, but expansion must stay safe */
	reply_expand(&t, &v, buf, sizeof(buf));
	ck_assert_str_eq(buf, "ab");
}
END_TEST

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

START_TEST(bare_address_strips_one_pair)
{
	char out[16];
	reply_bare_address("<a@b.example>", out, sizeof(out));
	ck_assert_str_eq(out, "a@b.example");
	reply_bare_address("a@b.example", out, sizeof(out));
	ck_assert_str_eq(out, "a@b.example");
	reply_bare_address("<>", out, sizeof(out));
	ck_assert_str_eq(out, "");
	reply_bare_address("<", out, sizeof(out));
	ck_assert_str_eq(out, "<");
	reply_bare_address("<verylongaddress@example.org>", out, sizeof(out));
	ck_assert_str_eq(out, "verylongaddress");
}
END_TEST

START_TEST(double_percent_never_splits_a_pair)
{
	char out[8];
	reply_double_percent("a%b", out, sizeof(out));
	ck_assert_str_eq(out, "a%%b");
	/* room for "abcde" + NUL but not for a whole "%%" after it */
	reply_double_percent("abcde%", out, 7);
	ck_assert_str_eq(out, "abcde");
	reply_double_percent("%%%%", out, sizeof(out));
	ck_assert_str_eq(out, "%%%%%%");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("reply");
	TCase *tc = tcase_create("reply");

	tcase_add_loop_test(tc, parse_good, 0, N(good));
	tcase_add_loop_test(tc, parse_bad, 0, N(bad));
	tcase_add_test(tc, parse_length);
	tcase_add_loop_test(tc, expand_vars, 0, N(expand));
	tcase_add_test(tc, expand_parsed);
	tcase_add_test(tc, expand_truncates);
	tcase_add_test(tc, expand_escape_at_edge);
	tcase_add_test(tc, bare_address_strips_one_pair);
	tcase_add_test(tc, double_percent_never_splits_a_pair);
	suite_add_tcase(s, tc);
	return unit_run(s);
}
