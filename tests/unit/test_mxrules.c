/*
 * test_mxrules.c - mx_host_overrides entries (mxrules.h): parsing and
 * canonical text, bad entries, wildcard and exact names (case, final dot,
 * a wildcard not matching its own suffix), networks against the address,
 * the most specific entry winning (verify carving an exception out of a
 * skip) and the order among equals.
 */
#include <stdio.h>
#include <string.h>

#include "mxrules.h"
#include "unit.h"

static const struct sockaddr *sa(const char *text)
{
	static struct sockaddr_storage ss[4];
	static int next;
	return unit_sockaddr(text, &ss[next++ % 4]);
}

/* match - the action for host/addr under the entries, which are parsed
 * and normalized as conftable.c does; *pattern_out gets the winner */
static enum mxrule_action match(const char *const *entries, size_t n, const char *host, const char *addr,
                                char *pattern, size_t size)
{
	static char texts[16][300];
	char *items[16];
	char why[300];
	struct mxrule r;
	ck_assert_uint_le(n, 16);
	for (size_t i = 0; i < n; i++) {
		ck_assert_msg(mxrules_parse(entries[i], &r, texts[i], sizeof(texts[i]), why, sizeof(why)),
		              "%s: %s", entries[i], why);
		items[i] = texts[i];
	}
	struct conf_strings list = {.count = n, .items = items};
	struct mxrule_set set;
	ck_assert(mxrules_compile(&list, &set));
	ck_assert_uint_eq(set.count, n);
	enum mxrule_action a = mxrules_match(&set, host, addr != NULL ? sa(addr) : NULL, pattern, size);
	mxrules_set_free(&set);
	return a;
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

START_TEST(parse_and_normalize)
{
	struct mxrule r;
	char text[300], why[300];
	ck_assert(mxrules_parse("*.Mail.Protection.Outlook.COM.  SKIP", &r, text, sizeof(text), why,
	                        sizeof(why)));
	ck_assert_int_eq(r.kind, MXRULE_WILDCARD);
	ck_assert_int_eq(r.action, MXRULE_SKIP);
	ck_assert_str_eq(r.name, "mail.protection.outlook.com");
	ck_assert_str_eq(text, "*.mail.protection.outlook.com skip");
	ck_assert(mxrules_parse("\tmx1.Example.net verify", &r, text, sizeof(text), why, sizeof(why)));
	ck_assert_int_eq(r.kind, MXRULE_EXACT);
	ck_assert_str_eq(text, "mx1.example.net verify");
	ck_assert(mxrules_parse("192.0.2.0/24 skip", &r, text, sizeof(text), why, sizeof(why)));
	ck_assert_int_eq(r.kind, MXRULE_NETWORK);
	ck_assert_str_eq(text, "192.0.2.0/24 skip");
	ck_assert(mxrules_parse("2001:DB8::/32 skip", &r, text, sizeof(text), why, sizeof(why)));
	ck_assert_str_eq(text, "2001:db8::/32 skip");
	ck_assert(
	        mxrules_parse("192.0.2.7 skip", &r, text, sizeof(text), why, sizeof(why))); /* one address */
	ck_assert_str_eq(text, "192.0.2.7/32 skip");
}
END_TEST

START_TEST(bad_entries)
{
	static const char *const bad[] = {
	        "",                          /* nothing */
	        "*.outlook.com",             /* no action */
	        "*.outlook.com reject",      /* unknown action */
	        "*.outlook.com skip please", /* too much */
	        "*outlook.com skip",         /* '*' not as "*." */
	        "mx.*.example skip",         /* '*' inside */
	        "*. skip",                   /* nothing after "*." */
	        "mx..example skip",          /* empty label */
	        "mx_exa mple skip",          /* three words */
	        "192.0.2.1/24 skip",         /* host bits set */
	        "192.0.2.0/33 skip",         /* prefix too long */
	        "300.1.2.3 skip",            /* not an address */
	        "mx.example.com=skip",       /* one word */
	        "mx.exa!mple.com skip",      /* a character no host name has */
	};
	struct mxrule r;
	char why[300];
	for (size_t i = 0; i < N(bad); i++) {
		why[0] = '\0';
		ck_assert_msg(!mxrules_parse(bad[i], &r, NULL, 0, why, sizeof(why)), "accepted \"%s\"",
		              bad[i]);
		ck_assert_msg(why[0] != '\0', "no reason for \"%s\"", bad[i]);
	}
	char longname[400];
	memset(longname, 'a', 300);
	snprintf(longname + 300, sizeof(longname) - 300, ".example skip");
	ck_assert(!mxrules_parse(longname, &r, NULL, 0, why, sizeof(why)));
}
END_TEST

START_TEST(names_case_and_final_dot)
{
	static const char *const e[] = {"*.mail.protection.outlook.com skip", "mx.example.net skip"};
	char p[300];
	ck_assert_int_eq(match(e, N(e), "example-com.mail.protection.outlook.com", NULL, p, sizeof(p)),
	                 MXRULE_SKIP);
	ck_assert_str_eq(p, "*.mail.protection.outlook.com");
	ck_assert_int_eq(match(e, N(e), "EXAMPLE-COM.Mail.Protection.Outlook.Com.", NULL, p, sizeof(p)),
	                 MXRULE_SKIP);
	ck_assert_int_eq(match(e, N(e), "a.b.mail.protection.outlook.com", NULL, p, sizeof(p)), MXRULE_SKIP);
	/* a wildcard is for subdomains: not the name itself, not a look-alike */
	ck_assert_int_eq(match(e, N(e), "mail.protection.outlook.com", NULL, p, sizeof(p)), MXRULE_NONE);
	ck_assert_str_eq(p, "");
	ck_assert_int_eq(match(e, N(e), "evilmail.protection.outlook.com", NULL, p, sizeof(p)), MXRULE_NONE);
	ck_assert_int_eq(match(e, N(e), "mail.protection.outlook.com.evil", NULL, p, sizeof(p)), MXRULE_NONE);
	/* exact names: exactly, in any case, with or without a final dot */
	ck_assert_int_eq(match(e, N(e), "MX.Example.NET.", NULL, p, sizeof(p)), MXRULE_SKIP);
	ck_assert_str_eq(p, "mx.example.net");
	ck_assert_int_eq(match(e, N(e), "mx2.example.net", NULL, p, sizeof(p)), MXRULE_NONE);
	ck_assert_int_eq(match(e, N(e), "a.mx.example.net", NULL, p, sizeof(p)), MXRULE_NONE);
	ck_assert_int_eq(match(e, N(e), NULL, NULL, p, sizeof(p)), MXRULE_NONE);
	ck_assert_int_eq(mxrules_match(NULL, "mx.example.net", NULL, p, sizeof(p)), MXRULE_NONE);
}
END_TEST

START_TEST(networks)
{
	static const char *const e[] = {"192.0.2.0/24 skip", "2001:db8::/32 skip"};
	char p[300];
	ck_assert_int_eq(match(e, N(e), "mx.example", "192.0.2.77", p, sizeof(p)), MXRULE_SKIP);
	ck_assert_str_eq(p, "192.0.2.0/24");
	ck_assert_int_eq(match(e, N(e), "mx.example", "::ffff:192.0.2.77", p, sizeof(p)), MXRULE_SKIP);
	ck_assert_int_eq(match(e, N(e), "mx.example", "2001:db8:1::25", p, sizeof(p)), MXRULE_SKIP);
	ck_assert_str_eq(p, "2001:db8::/32");
	ck_assert_int_eq(match(e, N(e), "mx.example", "192.0.3.1", p, sizeof(p)), MXRULE_NONE);
	ck_assert_int_eq(match(e, N(e), "mx.example", "2001:db9::1", p, sizeof(p)), MXRULE_NONE);
	ck_assert_int_eq(match(e, N(e), "mx.example", NULL, p, sizeof(p)), MXRULE_NONE);
}
END_TEST

START_TEST(most_specific_wins)
{
	char p[300];
	/* verify carves an exception out of a broader skip, in either order */
	static const char *const a[] = {"*.outlook.com skip", "*.eur.outlook.com verify"};
	static const char *const b[] = {"*.eur.outlook.com verify", "*.outlook.com skip"};
	ck_assert_int_eq(match(a, N(a), "x.eur.outlook.com", NULL, p, sizeof(p)), MXRULE_VERIFY);
	ck_assert_str_eq(p, "*.eur.outlook.com");
	ck_assert_int_eq(match(b, N(b), "x.eur.outlook.com", NULL, p, sizeof(p)), MXRULE_VERIFY);
	ck_assert_int_eq(match(a, N(a), "x.nam.outlook.com", NULL, p, sizeof(p)), MXRULE_SKIP);
	ck_assert_str_eq(p, "*.outlook.com");
	/* an exact name beats any wildcard; a name beats a network */
	static const char *const c[] = {"mx1.eur.outlook.com verify", "*.eur.outlook.com skip",
	                                "192.0.2.0/24 skip", "192.0.2.128/25 verify"};
	ck_assert_int_eq(match(c, N(c), "mx1.eur.outlook.com", "192.0.2.1", p, sizeof(p)), MXRULE_VERIFY);
	ck_assert_str_eq(p, "mx1.eur.outlook.com");
	ck_assert_int_eq(match(c, N(c), "mx2.eur.outlook.com", "192.0.2.200", p, sizeof(p)), MXRULE_SKIP);
	ck_assert_str_eq(p, "*.eur.outlook.com");
	/* among networks the longer prefix */
	ck_assert_int_eq(match(c, N(c), "mx.other", "192.0.2.200", p, sizeof(p)), MXRULE_VERIFY);
	ck_assert_str_eq(p, "192.0.2.128/25");
	ck_assert_int_eq(match(c, N(c), "mx.other", "192.0.2.1", p, sizeof(p)), MXRULE_SKIP);
	ck_assert_str_eq(p, "192.0.2.0/24");
	/* among equals, the later entry */
	static const char *const d[] = {"192.0.2.0/24 skip", "192.0.2.0/24 verify"};
	ck_assert_int_eq(match(d, N(d), "mx.other", "192.0.2.1", p, sizeof(p)), MXRULE_VERIFY);
}
END_TEST

START_TEST(unparsable_items_ignored)
{
	char *items[] = {"nonsense", "*.example.net skip"};
	struct conf_strings list = {.count = 2, .items = items};
	struct mxrule_set set;
	char p[300];
	ck_assert(mxrules_compile(&list, &set));
	ck_assert_uint_eq(set.count, 1); /* the entry that does not parse is left out */
	ck_assert_int_eq(mxrules_match(&set, "mx.example.net", NULL, p, sizeof(p)), MXRULE_SKIP);
	mxrules_set_free(&set);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("mxrules");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, parse_and_normalize);
	tcase_add_test(tc, bad_entries);
	tcase_add_test(tc, names_case_and_final_dot);
	tcase_add_test(tc, networks);
	tcase_add_test(tc, most_specific_wins);
	tcase_add_test(tc, unparsable_items_ignored);
	suite_add_tcase(s, tc);
	return unit_run(s);
}
