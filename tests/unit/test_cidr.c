/*
 * test_cidr.c - cidr_parse, cidr_format and matching, including IPv4-mapped
 * IPv6 client addresses.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "cidr.h"
#include "unit.h"

static const struct {
	const char *in;
	const char *formatted;
	int family;
} good[] = {
        {"192.0.2.0/24", "192.0.2.0/24", AF_INET},
        {"192.0.2.1", "192.0.2.1/32", AF_INET},
        {"0.0.0.0/0", "0.0.0.0/0", AF_INET},
        {"10.0.0.0/8", "10.0.0.0/8", AF_INET},
        {"192.0.2.128/25", "192.0.2.128/25", AF_INET},
        {"127.0.0.1/32", "127.0.0.1/32", AF_INET},
        {"2001:db8::/32", "2001:db8::/32", AF_INET6},
        {"2001:DB8:0:0::/64", "2001:db8::/64", AF_INET6},
        {"::1", "::1/128", AF_INET6},
        {"::/0", "::/0", AF_INET6},
        {"::ffff:192.0.2.0/120", "::ffff:192.0.2.0/120", AF_INET6},
        {"fe80::/10", "fe80::/10", AF_INET6},
};

START_TEST(parse_good)
{
	struct cidr net;
	char why[200] = "", buf[64];

	ck_assert_msg(cidr_parse(good[_i].in, &net, why, sizeof(why)), "%s: %s", good[_i].in, why);
	ck_assert_int_eq(net.family, good[_i].family);
	ck_assert_str_eq(cidr_format(&net, buf, sizeof(buf)), good[_i].formatted);
}
END_TEST

static const struct {
	const char *in;
	const char *why; /* a substring of the reason */
} bad[] = {
        {"192.0.2.1/24", "192.0.2.1/24 has host bits set; did you mean 192.0.2.0/24?"},
        {"2001:db8::1/32", "did you mean 2001:db8::/32?"},
        {"10.1.0.0/8", "did you mean 10.0.0.0/8?"},
        {"192.0.2.0/33", "bad prefix length (want 0..32)"},
        {"2001:db8::/129", "bad prefix length (want 0..128)"},
        {"192.0.2.0/", "bad prefix length"},
        {"192.0.2.0/-1", "bad prefix length"},
        {"192.0.2.0/+24", "bad prefix length"},
        {"192.0.2.0/24/24", "bad prefix length"},
        {"192.0.2.0/0024", "bad prefix length"},
        {"192.0.2.0/ 24", "bad prefix length"},
        {"", "has no address"},
        {"/24", "has no address"},
        {"example.com", "not an IPv4 or IPv6 address"},
        {"192.0.2", "not an IPv4 or IPv6 address"},
        {"10/8", "not an IPv4 or IPv6 address"},
        {"256.0.0.0/8", "not an IPv4 or IPv6 address"},
        {"fe80::1%eth0", "not an IPv4 or IPv6 address"},
        {" 192.0.2.0/24", "not an IPv4 or IPv6 address"},
        {"1234567890123456789012345678901234567890123456789012345678901234567890/8",
         "not an IPv4 or IPv6 address"},
};

START_TEST(parse_bad)
{
	struct cidr net;
	char why[200] = "";

	ck_assert_msg(!cidr_parse(bad[_i].in, &net, why, sizeof(why)), "%s accepted", bad[_i].in);
	ck_assert_msg(strstr(why, bad[_i].why) != NULL, "%s: got \"%s\", want \"%s\"", bad[_i].in, why,
	              bad[_i].why);
}
END_TEST

START_TEST(parse_small_why)
{
	struct cidr net;
	char why[8];

	ck_assert(!cidr_parse("192.0.2.1/24", &net, why, sizeof(why)));
	ck_assert_uint_eq(strlen(why), 7);
}
END_TEST

static const struct {
	const char *net;
	const char *client;
	bool inside;
} match[] = {
        {"192.0.2.0/24", "192.0.2.1", true},
        {"192.0.2.0/24", "192.0.2.255", true},
        {"192.0.2.0/24", "192.0.3.0", false},
        {"192.0.2.128/25", "192.0.2.127", false},
        {"192.0.2.128/25", "192.0.2.128", true},
        {"192.0.2.1", "192.0.2.1", true},
        {"192.0.2.1", "192.0.2.2", false},
        {"0.0.0.0/0", "203.0.113.9", true},
        {"127.0.0.0/8", "127.255.255.255", true},
        /* IPv4-mapped IPv6 clients match IPv4 networks */
        {"127.0.0.0/8", "::ffff:127.0.0.1", true},
        {"192.0.2.0/24", "::ffff:192.0.2.77", true},
        {"192.0.2.0/24", "::ffff:192.0.3.77", false},
        {"0.0.0.0/0", "::ffff:198.51.100.1", true},
        /* ... but not IPv4-compatible or other IPv6 addresses */
        {"192.0.2.0/24", "::192.0.2.1", false},
        {"0.0.0.0/0", "2001:db8::1", false},
        {"0.0.0.0/0", "::1", false},
        /* IPv6 networks */
        {"2001:db8::/32", "2001:db8:ffff::1", true},
        {"2001:db8::/32", "2001:db9::1", false},
        {"::1/128", "::1", true},
        {"::1/128", "::2", false},
        {"fe80::/10", "febf::1", true},
        {"fe80::/10", "fec0::1", false},
        /* an IPv4 client is inside an IPv6 network only within ::ffff:0:0/96 */
        {"::ffff:192.0.2.0/120", "192.0.2.5", true},
        {"::ffff:192.0.2.0/120", "192.0.3.5", false},
        {"::ffff:0:0/96", "10.0.0.1", true},
        {"::/0", "192.0.2.1", false},
        {"::/0", "2001:db8::1", true},
        {"::/0", "::ffff:192.0.2.1", true},
        {"::1/128", "127.0.0.1", false},
        {"2001:db8::/32", "192.0.2.1", false},
};

START_TEST(contains)
{
	struct cidr net;
	struct sockaddr_storage ss;
	char why[200] = "";

	ck_assert_msg(cidr_parse(match[_i].net, &net, why, sizeof(why)), "%s: %s", match[_i].net, why);
	ck_assert_msg(cidr_contains(&net, unit_sockaddr(match[_i].client, &ss)) == match[_i].inside,
	              "%s in %s: want %d", match[_i].client, match[_i].net, match[_i].inside);
}
END_TEST

START_TEST(contains_odd_family)
{
	struct cidr net;
	struct sockaddr sa;
	char why[200];

	ck_assert(cidr_parse("0.0.0.0/0", &net, why, sizeof(why)));
	memset(&sa, 0, sizeof(sa));
	sa.sa_family = AF_UNIX;
	ck_assert(!cidr_contains(&net, &sa));
	ck_assert(!cidr_contains(&net, NULL));
}
END_TEST

START_TEST(list)
{
	struct cidr items[2];
	struct cidr_list l = {2, items};
	struct cidr_list empty = {0, NULL};
	struct sockaddr_storage ss;
	char why[200];

	ck_assert(cidr_parse("10.0.0.0/8", &items[0], why, sizeof(why)));
	ck_assert(cidr_parse("2001:db8::/32", &items[1], why, sizeof(why)));
	ck_assert(cidr_list_contains(&l, unit_sockaddr("10.1.2.3", &ss)));
	ck_assert(cidr_list_contains(&l, unit_sockaddr("::ffff:10.1.2.3", &ss)));
	ck_assert(cidr_list_contains(&l, unit_sockaddr("2001:db8::25", &ss)));
	ck_assert(!cidr_list_contains(&l, unit_sockaddr("11.1.2.3", &ss)));
	ck_assert(!cidr_list_contains(&l, NULL));
	ck_assert(!cidr_list_contains(&empty, unit_sockaddr("10.1.2.3", &ss)));
	ck_assert(!cidr_list_contains(NULL, unit_sockaddr("10.1.2.3", &ss)));
}
END_TEST

START_TEST(format_truncates)
{
	struct cidr net;
	char why[200], buf[8];

	ck_assert(cidr_parse("192.0.2.0/24", &net, why, sizeof(why)));
	ck_assert_str_eq(cidr_format(&net, buf, sizeof(buf)), "192.0.2");
	ck_assert_ptr_eq(cidr_format(&net, buf, 0), buf);
}
END_TEST

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

int main(void)
{
	Suite *s = suite_create("cidr");
	TCase *tc = tcase_create("cidr");

	tcase_add_loop_test(tc, parse_good, 0, N(good));
	tcase_add_loop_test(tc, parse_bad, 0, N(bad));
	tcase_add_test(tc, parse_small_why);
	tcase_add_loop_test(tc, contains, 0, N(match));
	tcase_add_test(tc, contains_odd_family);
	tcase_add_test(tc, list);
	tcase_add_test(tc, format_truncates);
	suite_add_tcase(s, tc);
	return unit_run(s);
}
