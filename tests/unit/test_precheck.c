/*
 * test_precheck.c - the decisions made at MAIL FROM without a probe.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "precheck.h"
#include "unit.h"

static void on_error(void *arg, const char *message)
{
	fprintf(stderr, "config error: %s\n", message);
}

static const char *conf_text = "trusted_networks = 192.0.2.0/24, 2001:db8:1::/48\n"
                               "allow_sender_domains = partner.example, B\xc3\xbc"
                               "cher.example\n"
                               "allow_senders = Boss@Corp.Example\n"
                               "exempt_recipients = postmaster, abuse, hostmaster@our.example\n";

static struct conf *conf;

static void setup(void)
{
	conf = conf_load_text("precheck.conf", conf_text, on_error, NULL);
	ck_assert_ptr_nonnull(conf);
}

static void teardown(void)
{
	conf_unref(conf);
}

static const struct {
	const char *sender;
	const char *client; /* NULL: unknown client */
	const char *auth;
	enum precheck_verdict verdict;
	const char *reason;
} cases[] = {
        {"<>", "198.51.100.7", NULL, PRECHECK_ACCEPT, "null_sender"},
        {"", "198.51.100.7", NULL, PRECHECK_ACCEPT, "null_sender"},
        {"<a..b@x.example>", "192.0.2.9", NULL, PRECHECK_ACCEPT, "trusted_network"},
        {"<user@x.example>", "2001:db8:1:2::5", NULL, PRECHECK_ACCEPT, "trusted_network"},
        {"<user@x.example>", "::ffff:192.0.2.200", NULL, PRECHECK_ACCEPT, "trusted_network"},
        {"<a..b@x.example>", "198.51.100.7", "alice", PRECHECK_ACCEPT, "authenticated"},
        {"<user@x.example>", "198.51.100.7", "", PRECHECK_VERIFY, "needs_verification"},
        {"<a..b@x.example>", "198.51.100.7", NULL, PRECHECK_REJECT, "bad_syntax"},
        {"<user@-x.example>", NULL, NULL, PRECHECK_REJECT, "bad_syntax"},
        {"<user@partner.example>", "198.51.100.7", NULL, PRECHECK_ACCEPT, "allowlisted_domain"},
        {"<user@Mail.PARTNER.example>", "198.51.100.7", NULL, PRECHECK_ACCEPT, "allowlisted_domain"},
        {"<user@notpartner.example>", "198.51.100.7", NULL, PRECHECK_VERIFY, "needs_verification"},
        {"<user@xn--bcher-kva.example>", "198.51.100.7", NULL, PRECHECK_ACCEPT, "allowlisted_domain"},
        {"<user@b\xc3\xbc"
         "cher.example>",
         "198.51.100.7", NULL, PRECHECK_ACCEPT, "allowlisted_domain"},
        {"<Boss@corp.example>", "198.51.100.7", NULL, PRECHECK_ACCEPT, "allowlisted_sender"},
        {"<boss@CORP.example>", "198.51.100.7", NULL, PRECHECK_ACCEPT, "allowlisted_sender"},
        {"<boss2@corp.example>", "198.51.100.7", NULL, PRECHECK_VERIFY, "needs_verification"},
        {"<user@x.example>", NULL, NULL, PRECHECK_VERIFY, "needs_verification"},
};

START_TEST(sender_decisions)
{
	struct sockaddr_storage ss;
	const struct sockaddr *client =
	        cases[_i].client != NULL ? unit_sockaddr(cases[_i].client, &ss) : NULL;
	struct precheck_result r;
	precheck_sender(conf, cases[_i].sender, client, cases[_i].auth, &r);
	ck_assert_msg(r.verdict == cases[_i].verdict && strcmp(r.reason, cases[_i].reason) == 0,
	              "sender %s: got verdict %d reason %s (%s), want %d %s", cases[_i].sender, r.verdict,
	              r.reason, r.detail, cases[_i].verdict, cases[_i].reason);
	if (r.verdict == PRECHECK_REJECT)
		ck_assert_msg(r.detail[0] != '\0', "a syntax rejection must say why");
}
END_TEST

START_TEST(authenticated_checked_when_configured)
{
	struct conf *strict = conf_load_text("strict.conf", "skip_authenticated = no\n", on_error, NULL);
	ck_assert_ptr_nonnull(strict);
	struct precheck_result r;
	struct sockaddr_storage ss;
	precheck_sender(strict, "<a..b@x.example>", unit_sockaddr("198.51.100.7", &ss), "alice", &r);
	ck_assert_str_eq(r.reason, "bad_syntax");
	conf_unref(strict);
}
END_TEST

START_TEST(auth_name_in_detail_is_printable)
{
	struct conf *defaults = conf_load_text("defaults", "", on_error, NULL);
	ck_assert_ptr_nonnull(defaults);
	struct precheck_result r;
	struct sockaddr_storage ss;
	precheck_sender(defaults, "<u@x.example>", unit_sockaddr("198.51.100.7", &ss), "al\x01ice\xff\x1b[2J",
	                &r);
	ck_assert_str_eq(r.reason, "authenticated");
	ck_assert_str_eq(r.detail, "authenticated as al?ice??[2J");
	conf_unref(defaults);
}
END_TEST

START_TEST(default_trust_is_loopback)
{
	struct conf *defaults = conf_load_text("defaults", "", on_error, NULL);
	ck_assert_ptr_nonnull(defaults);
	struct precheck_result r;
	struct sockaddr_storage ss;
	precheck_sender(defaults, "<u@x.example>", unit_sockaddr("127.0.0.1", &ss), NULL, &r);
	ck_assert_str_eq(r.reason, "trusted_network");
	precheck_sender(defaults, "<u@x.example>", unit_sockaddr("::1", &ss), NULL, &r);
	ck_assert_str_eq(r.reason, "trusted_network");
	precheck_sender(defaults, "<u@x.example>", unit_sockaddr("10.1.2.3", &ss), NULL, &r);
	ck_assert_str_eq(r.reason, "needs_verification");
	conf_unref(defaults);
}
END_TEST

static const struct {
	const char *rcpt;
	bool exempt;
} rcpts[] = {
        {"<postmaster@our.example>", true},
        {"<Postmaster@other.example>", true},
        {"postmaster", true},
        {"<abuse@our.example>", true},
        {"<hostmaster@our.example>", true},
        {"<hostmaster@x.example>", false},
        {"<user@our.example>", false},
        {"<postmaster2@our.example>", false},
        {"<post@our.example>", false},
        {"", false},
};

START_TEST(recipient_exemptions)
{
	ck_assert_msg(precheck_recipient_exempt(conf, rcpts[_i].rcpt) == rcpts[_i].exempt, "recipient %s",
	              rcpts[_i].rcpt);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("precheck");
	TCase *tc = tcase_create("precheck");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_loop_test(tc, sender_decisions, 0, (int)(sizeof(cases) / sizeof(cases[0])));
	tcase_add_loop_test(tc, recipient_exemptions, 0, (int)(sizeof(rcpts) / sizeof(rcpts[0])));
	tcase_add_test(tc, authenticated_checked_when_configured);
	tcase_add_test(tc, auth_name_in_detail_is_printable);
	tcase_add_test(tc, default_trust_is_loopback);
	suite_add_tcase(s, tc);
	return unit_run(s);
}
