/*
 * test_tags.c - the stable form of tagged senders: every documented pattern
 * (BATV prvs/msprvs1/btv1, SRS0, SRS1, VERP), case, malformed look-alikes,
 * kinds switched off, quoted local parts, and what the configuration
 * enables.
 */
#include <stdio.h>
#include <string.h>

#include "tags.h"
#include "unit.h"

/* parse - an address that must parse */
static struct addr parse(const char *text)
{
	struct addr a;
	char why[200];
	ck_assert_msg(addr_parse(text, strlen(text), &a, why, sizeof(why)), "%s: %s", text, why);
	return a;
}

static const struct {
	const char *address;
	enum tag_kind kind;
	const char *stable;
} table[] = {
        /* BATV */
        {"prvs=1234abcdef=alice@example.org", TAG_BATV, "alice@example.org"},
        {"PRVS=0017a3f2c9=Bob.Smith@Example.ORG", TAG_BATV, "Bob.Smith@example.org"},
        {"msprvs1=19036BqKl7Xc1=bounces-1234@bounce.example.net", TAG_BATV,
         "bounces-1234@bounce.example.net"},
        {"btv1==23478b7b2ea==user@example.com", TAG_BATV, "user@example.com"},
        {"prvs=tag-with-dash=u@example.com", TAG_BATV, "u@example.com"},
        {"prvs==alice@example.org", TAG_NONE, ""},           /* empty tag */
        {"prvs=1234abcdef=@example.org", TAG_NONE, ""},      /* no base (does not even parse) */
        {"prvs=12.34=alice@example.org", TAG_NONE, ""},      /* tag with a dot */
        {"prvs=1234abcdef@example.org", TAG_NONE, ""},       /* no base local part */
        {"btv1=23478b7b2ea=user@example.com", TAG_NONE, ""}, /* btv1 needs "==" */
        /* SRS0 */
        {"SRS0=HHH1=TT=orig.example=alice@fwd.example", TAG_SRS, "SRS0=orig.example=alice@fwd.example"},
        {"srs0=x9Zq=2B=Orig.Example=Alice.B@fwd.example", TAG_SRS, "SRS0=orig.example=Alice.B@fwd.example"},
        {"SRS0+HHH1=TT=orig.example=alice@fwd.example", TAG_SRS, "SRS0=orig.example=alice@fwd.example"},
        {"SRS0-HHH1=TT=orig.example=a=b@fwd.example", TAG_SRS, "SRS0=orig.example=a=b@fwd.example"},
        {"SRS0=HHH1=TT=orig.example@fwd.example", TAG_NONE, ""}, /* no original local part */
        {"SRS0=HHH1=orig.example@fwd.example", TAG_NONE, ""},
        /* SRS1 */
        {"SRS1=HHH2=fwd1.example==HHH1=TT=orig.example=alice@fwd2.example", TAG_SRS,
         "SRS1=fwd1.example==orig.example=alice@fwd2.example"},
        {"SRS1=HHH2=Fwd1.Example=+HHH1=TT=orig.example=alice@fwd2.example", TAG_SRS,
         "SRS1=fwd1.example==orig.example=alice@fwd2.example"},
        {"SRS1=HHH2=fwd1.example=opaque@fwd2.example", TAG_SRS, "SRS1=fwd1.example=opaque@fwd2.example"},
        {"SRS1=HHH2=fwd1.example@fwd2.example", TAG_NONE, ""},
        /* VERP */
        {"list-bounces+bob=example.org@lists.example.net", TAG_VERP, "list-bounces@lists.example.net"},
        {"owner-x+M123=bob=example.org@lists.example.net", TAG_VERP, "owner-x@lists.example.net"},
        {"alice+news@example.org", TAG_NONE, ""}, /* subaddress without '=': not VERP */
        {"+bob=example.org@lists.example.net", TAG_NONE, ""},
        {"alice=bob@example.org", TAG_NONE, ""},
        /* plain */
        {"alice@example.org", TAG_NONE, ""},
        {"srs0@example.org", TAG_NONE, ""},
        {"prvsx=a=b@example.org", TAG_NONE, ""},
};

START_TEST(patterns)
{
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		struct addr a;
		char why[200], out[ADDR_PATH_MAX];
		if (!addr_parse(table[i].address, strlen(table[i].address), &a, why, sizeof(why))) {
			/* only look-alikes may fail to parse; they are not tagged then */
			ck_assert_msg(table[i].kind == TAG_NONE, "%s does not parse: %s", table[i].address,
			              why);
			continue;
		}
		enum tag_kind k = tags_stable_form(&a, TAGS_ALL, out, sizeof(out));
		ck_assert_msg(k == table[i].kind, "%s: kind %s, want %s", table[i].address, tags_kind_name(k),
		              tags_kind_name(table[i].kind));
		ck_assert_msg(strcmp(out, table[i].stable) == 0, "%s: stable \"%s\", want \"%s\"",
		              table[i].address, out, table[i].stable);
	}
}
END_TEST

START_TEST(disabled_kinds_never_fall_through)
{
	char out[ADDR_PATH_MAX];
	struct addr srs = parse("SRS0+HHH1=TT=orig.example=alice@fwd.example");
	struct addr batv = parse("prvs=1234abcdef=alice+x=y@example.org");
	struct addr verp = parse("list-bounces+bob=example.org@lists.example.net");
	unsigned only_verp = 1u << TAG_VERP;
	/* an SRS or BATV address with those kinds off is not read as VERP */
	ck_assert_int_eq(tags_stable_form(&srs, only_verp, out, sizeof(out)), TAG_NONE);
	ck_assert_str_eq(out, "");
	ck_assert_int_eq(tags_stable_form(&batv, only_verp, out, sizeof(out)), TAG_NONE);
	ck_assert_int_eq(tags_stable_form(&verp, only_verp, out, sizeof(out)), TAG_VERP);
	ck_assert_int_eq(tags_stable_form(&verp, TAGS_ALL & ~only_verp, out, sizeof(out)), TAG_NONE);
	ck_assert_int_eq(tags_stable_form(&srs, 1u << TAG_SRS, out, sizeof(out)), TAG_SRS);
	ck_assert_int_eq(tags_stable_form(&batv, 1u << TAG_BATV, out, sizeof(out)), TAG_BATV);
	ck_assert_str_eq(out, "alice+x=y@example.org");
	ck_assert_int_eq(tags_stable_form(&batv, 0, out, sizeof(out)), TAG_NONE);
}
END_TEST

START_TEST(quoted_null_and_small_buffers)
{
	char out[ADDR_PATH_MAX];
	struct addr quoted = parse("\"prvs=1234abcdef=alice\"@example.org");
	ck_assert(quoted.local_quoted);
	ck_assert_int_eq(tags_stable_form(&quoted, TAGS_ALL, out, sizeof(out)), TAG_NONE);
	struct addr null = parse("<>");
	ck_assert_int_eq(tags_stable_form(&null, TAGS_ALL, out, sizeof(out)), TAG_NONE);
	struct addr verp = parse("list-bounces+bob=example.org@lists.example.net");
	char small[10];
	ck_assert_int_eq(tags_stable_form(&verp, TAGS_ALL, small, sizeof(small)), TAG_NONE);
	ck_assert_str_eq(small, "");
	ck_assert_int_eq(tags_stable_form(&verp, TAGS_ALL, out, 0), TAG_NONE);
}
END_TEST

START_TEST(enabled_from_conf)
{
	struct conf *all = conf_load_text("t", "", NULL, NULL);
	struct conf *some = conf_load_text("t", "tagged_senders = srs, VERP\n", NULL, NULL);
	struct conf *none = conf_load_text("t", "tagged_senders =\n", NULL, NULL);
	ck_assert_ptr_nonnull(all);
	ck_assert_ptr_nonnull(some);
	ck_assert_ptr_nonnull(none);
	ck_assert_uint_eq(tags_enabled(all), TAGS_ALL);
	ck_assert_uint_eq(tags_enabled(some), (1u << TAG_SRS) | (1u << TAG_VERP));
	ck_assert_uint_eq(tags_enabled(none), 0);
	conf_unref(all);
	conf_unref(some);
	conf_unref(none);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("tags");
	TCase *tc = tcase_create("tags");
	tcase_add_test(tc, patterns);
	tcase_add_test(tc, disabled_kinds_never_fall_through);
	tcase_add_test(tc, quoted_null_and_small_buffers);
	tcase_add_test(tc, enabled_from_conf);
	suite_add_tcase(s, tc);
	return unit_run(s);
}
