/*
 * test_outcome.c - outcome names, definiteness and safe filling.
 */
#include <string.h>

#include "outcome.h"
#include "unit.h"

START_TEST(names_round_trip)
{
	for (int k = 0; k < OUTCOME_KIND_COUNT; k++) {
		enum outcome_kind back;
		ck_assert(outcome_from_name(outcome_name((enum outcome_kind)k), &back));
		ck_assert_int_eq(back, k);
	}
	enum outcome_kind unused;
	ck_assert(!outcome_from_name("maybe", &unused));
	ck_assert_str_eq(outcome_name((enum outcome_kind)99), "unknown");
	ck_assert_str_eq(probe_stage_name(STAGE_CATCHALL), "catchall");
	ck_assert_str_eq(probe_stage_name((enum probe_stage)99), "unknown");
}
END_TEST

START_TEST(flag_names_round_trip)
{
	char buf[200];
	unsigned all = 0;
	for (unsigned bit = 1; bit <= OUTCOME_F_LIMITED; bit <<= 1) {
		unsigned back = 0;
		outcome_flags_text(bit, buf, sizeof(buf));
		ck_assert_msg(buf[0] != '\0' && strchr(buf, ',') == NULL, "bit 0x%x: \"%s\"", bit, buf);
		ck_assert_msg(outcome_flag_from_name(buf, &back) && back == bit, "%s", buf);
		all |= bit;
	}
	unsigned back = 0;
	ck_assert(!outcome_flag_from_name("nonsense", &back));
	outcome_flags_text(all | 0x100, buf, sizeof(buf)); /* an unnamed bit is shown, not hidden */
	ck_assert_str_eq(buf, "not_catchall,fallback_sender,greylist,protocol,loop,tagged,limited,0x100");
	outcome_flags_text(0, buf, sizeof(buf));
	ck_assert_str_eq(buf, "");
}
END_TEST

START_TEST(only_invalid_and_no_domain_are_definite)
{
	for (int k = 0; k < OUTCOME_KIND_COUNT; k++)
		ck_assert_int_eq(outcome_is_definite((enum outcome_kind)k),
		                 k == OUTCOME_INVALID || k == OUTCOME_NO_DOMAIN);
}
END_TEST

START_TEST(set_sanitizes_and_bounds)
{
	struct outcome o;
	memset(&o, 0, sizeof(o));
	char long_text[1000];
	memset(long_text, 'x', sizeof(long_text) - 1);
	long_text[sizeof(long_text) - 1] = '\0';
	long_text[3] = '\r';
	long_text[4] = '\n';
	long_text[5] = (char)0xC3;
	outcome_set(&o, OUTCOME_INVALID, STAGE_RCPT, 550, "5.1.1", long_text, NULL);
	ck_assert_int_eq(o.kind, OUTCOME_INVALID);
	ck_assert_int_eq(o.code, 550);
	ck_assert_str_eq(o.ecode, "5.1.1");
	ck_assert_uint_eq(strlen(o.text), OUTCOME_TEXT_MAX);
	ck_assert(strncmp(o.text, "xxx???x", 7) == 0);
	ck_assert_str_eq(o.reason, "");
	outcome_set(&o, OUTCOME_TEMPFAIL, STAGE_DNS, 12345, NULL, NULL, "SERVFAIL");
	ck_assert_int_eq(o.code, 0);
	ck_assert_str_eq(o.reason, "SERVFAIL");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("outcome");
	TCase *tc = tcase_create("outcome");
	tcase_add_test(tc, names_round_trip);
	tcase_add_test(tc, flag_names_round_trip);
	tcase_add_test(tc, only_invalid_and_no_domain_are_definite);
	tcase_add_test(tc, set_sanitizes_and_bounds);
	suite_add_tcase(s, tc);
	return unit_run(s);
}
