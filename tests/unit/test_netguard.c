/*
 * test_netguard.c - netguard_allows: every denied range at its first and
 * last address and just outside it, the reason given, IPv4-mapped and other
 * transition forms, and the allow list overriding the lot.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/un.h>

#include "cidr.h"
#include "netguard.h"
#include "unit.h"

#define OK NULL /* allowed: no reason */

#define THIS_NET  "this network (RFC 1122)"
#define PRIVATE   "private (RFC 1918)"
#define SHARED    "shared address space (RFC 6598)"
#define LOOPBACK  "loopback"
#define LINKLOCAL "link-local"
#define IETF      "IETF protocol assignments"
#define DOC       "documentation"
#define RELAY     "6to4 relay anycast"
#define BENCH     "benchmarking (RFC 2544)"
#define MCAST     "multicast"
#define RESERVED  "reserved"
#define UNSPEC    "unspecified"
#define COMPAT    "IPv4-compatible (deprecated)"
#define MAPPED    "IPv4-mapped"
#define NAT64     "NAT64 (RFC 6052): not a mail server's own address"
#define DISCARD   "discard-only (RFC 6666)"
#define TEREDO    "Teredo"
#define SIX2FOUR  "6to4"
#define ULA       "unique local (RFC 4193)"

/* Each denied range: first and last address inside, the neighbours outside. */
static const struct {
	const char *addr;
	const char *why; /* OK: allowed */
} cases[] = {
        /* 0.0.0.0/8 */
        {"0.0.0.0", THIS_NET},
        {"0.255.255.255", THIS_NET},
        {"1.0.0.0", OK},
        /* 10.0.0.0/8 */
        {"9.255.255.255", OK},
        {"10.0.0.0", PRIVATE},
        {"10.255.255.255", PRIVATE},
        {"11.0.0.0", OK},
        /* 100.64.0.0/10 */
        {"100.63.255.255", OK},
        {"100.64.0.0", SHARED},
        {"100.127.255.255", SHARED},
        {"100.128.0.0", OK},
        /* 127.0.0.0/8 */
        {"126.255.255.255", OK},
        {"127.0.0.0", LOOPBACK},
        {"127.0.0.1", LOOPBACK},
        {"127.255.255.255", LOOPBACK},
        {"128.0.0.0", OK},
        /* 169.254.0.0/16 */
        {"169.253.255.255", OK},
        {"169.254.0.0", LINKLOCAL},
        {"169.254.255.255", LINKLOCAL},
        {"169.255.0.0", OK},
        /* 172.16.0.0/12 */
        {"172.15.255.255", OK},
        {"172.16.0.0", PRIVATE},
        {"172.31.255.255", PRIVATE},
        {"172.32.0.0", OK},
        /* 192.0.0.0/24 */
        {"191.255.255.255", OK},
        {"192.0.0.0", IETF},
        {"192.0.0.255", IETF},
        {"192.0.1.0", OK},
        /* 192.0.2.0/24 */
        {"192.0.1.255", OK},
        {"192.0.2.0", DOC},
        {"192.0.2.255", DOC},
        {"192.0.3.0", OK},
        /* 192.88.99.0/24 */
        {"192.88.98.255", OK},
        {"192.88.99.0", RELAY},
        {"192.88.99.255", RELAY},
        {"192.88.100.0", OK},
        /* 192.168.0.0/16 */
        {"192.167.255.255", OK},
        {"192.168.0.0", PRIVATE},
        {"192.168.255.255", PRIVATE},
        {"192.169.0.0", OK},
        /* 198.18.0.0/15 */
        {"198.17.255.255", OK},
        {"198.18.0.0", BENCH},
        {"198.19.255.255", BENCH},
        {"198.20.0.0", OK},
        /* 198.51.100.0/24 */
        {"198.51.99.255", OK},
        {"198.51.100.0", DOC},
        {"198.51.100.255", DOC},
        {"198.51.101.0", OK},
        /* 203.0.113.0/24 */
        {"203.0.112.255", OK},
        {"203.0.113.0", DOC},
        {"203.0.113.255", DOC},
        {"203.0.114.0", OK},
        /* 224.0.0.0/4, 240.0.0.0/4 */
        {"223.255.255.255", OK},
        {"224.0.0.0", MCAST},
        {"239.255.255.255", MCAST},
        {"240.0.0.0", RESERVED},
        {"255.255.255.255", RESERVED},
        /* global IPv4 */
        {"8.8.8.8", OK},
        {"193.0.0.1", OK},

        /* ::/128, ::1/128, ::/96 */
        {"::", UNSPEC},
        {"::1", LOOPBACK},
        {"::2", COMPAT},
        {"::192.0.2.1", COMPAT},
        {"::ffff:ffff", COMPAT},
        {"::1:0:0", OK},
        /* ::ffff:0:0/96 */
        {"::fffe:ffff:ffff", OK},
        {"::ffff:0.0.0.0", MAPPED},
        {"::ffff:127.0.0.1", MAPPED},
        {"::ffff:8.8.8.8", MAPPED},
        {"::ffff:255.255.255.255", MAPPED},
        {"::1:0:0:0", OK},
        /* 64:ff9b::/96 */
        {"64:ff9a:ffff:ffff:ffff:ffff:ffff:ffff", OK},
        {"64:ff9b::", NAT64},
        {"64:ff9b::8.8.8.8", NAT64},
        {"64:ff9b::ffff:ffff", NAT64},
        {"64:ff9b::1:0:0", OK},
        /* 100::/64 */
        {"ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", OK},
        {"100::", DISCARD},
        {"100::ffff:ffff:ffff:ffff", DISCARD},
        {"100:0:0:1::", OK},
        /* 2001::/23, with Teredo 2001::/32 inside it */
        {"2000:ffff:ffff:ffff:ffff:ffff:ffff:ffff", OK},
        {"2001::", TEREDO},
        {"2001:0:ffff:ffff:ffff:ffff:ffff:ffff", TEREDO},
        {"2001:1::", IETF},
        {"2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", IETF},
        {"2001:200::", OK},
        /* 2001:db8::/32 */
        {"2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", OK},
        {"2001:db8::", DOC},
        {"2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", DOC},
        {"2001:db9::", OK},
        /* 2002::/16 */
        {"2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff", OK},
        {"2002::", SIX2FOUR},
        {"2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff", SIX2FOUR},
        {"2003::", OK},
        /* fc00::/7 */
        {"fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", OK},
        {"fc00::", ULA},
        {"fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", ULA},
        {"fe00::", OK},
        /* fe80::/10 */
        {"fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", OK},
        {"fe80::", LINKLOCAL},
        {"febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", LINKLOCAL},
        {"fec0::", OK},
        /* ff00::/8 */
        {"feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", OK},
        {"ff00::", MCAST},
        {"ff02::1", MCAST},
        {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", MCAST},
        /* global IPv6 */
        {"2001:4860:4860::8888", OK},
        {"2a00:1450:4001::1a", OK},
};

START_TEST(table)
{
	struct sockaddr_storage ss;
	const char *why = "untouched";
	bool allowed = netguard_allows(unit_sockaddr(cases[_i].addr, &ss), NULL, &why);

	if (cases[_i].why == OK) {
		ck_assert_msg(allowed, "%s denied (%s)", cases[_i].addr, why);
		ck_assert_msg(strcmp(why, "untouched") == 0, "%s: why set to \"%s\"", cases[_i].addr, why);
	} else {
		ck_assert_msg(!allowed, "%s allowed, want denied as %s", cases[_i].addr, cases[_i].why);
		ck_assert_msg(strcmp(why, cases[_i].why) == 0, "%s: why \"%s\", want \"%s\"", cases[_i].addr,
		              why, cases[_i].why);
	}
}
END_TEST

/* The allow list overrides every denied range, IPv4-mapped included. */
static const struct {
	const char *allow; /* one network */
	const char *addr;
	const char *why; /* OK: allowed */
} overrides[] = {
        {"127.0.0.0/8", "127.0.0.1", OK},
        {"127.0.0.0/8", "127.255.255.255", OK},
        {"127.0.0.0/8", "::ffff:127.0.0.1", OK}, /* a mapped address matches IPv4 networks */
        {"127.0.0.0/8", "128.0.0.1", OK},        /* not denied anyway */
        {"127.0.0.0/8", "::1", LOOPBACK},
        {"127.0.0.0/8", "10.0.0.1", PRIVATE},
        {"127.0.0.0/8", "::ffff:10.0.0.1", MAPPED},
        {"10.1.0.0/16", "10.1.2.3", OK},
        {"10.1.0.0/16", "10.2.0.1", PRIVATE},
        {"10.1.0.0/16", "10.0.255.255", PRIVATE},
        {"::1", "::1", OK},
        {"::1", "::2", COMPAT},
        {"::1", "127.0.0.1", LOOPBACK},
        {"fd00::/8", "fd12::25", OK},
        {"fd00::/8", "fc00::25", ULA},
        {"2001:db8::/32", "2001:db8::25", OK},
        {"192.0.2.0/24", "192.0.2.25", OK},
        {"192.0.2.0/24", "198.51.100.25", DOC},
        {"::ffff:0:0/96", "::ffff:192.0.2.1", OK},
        {"0.0.0.0/0", "255.255.255.255", OK},
        {"::/0", "ff02::1", OK},
};

START_TEST(allow_list)
{
	struct cidr net;
	struct sockaddr_storage ss;
	char err[200] = "";
	const char *why = "untouched";

	ck_assert_msg(cidr_parse(overrides[_i].allow, &net, err, sizeof(err)), "%s: %s", overrides[_i].allow,
	              err);
	struct cidr_list allow = {1, &net};
	bool allowed = netguard_allows(unit_sockaddr(overrides[_i].addr, &ss), &allow, &why);
	if (overrides[_i].why == OK) {
		ck_assert_msg(allowed, "%s with %s allowed: denied (%s)", overrides[_i].addr,
		              overrides[_i].allow, why);
	} else {
		ck_assert_msg(!allowed, "%s with %s allowed: allowed", overrides[_i].addr,
		              overrides[_i].allow);
		ck_assert_str_eq(why, overrides[_i].why);
	}
}
END_TEST

START_TEST(empty_allow_list)
{
	struct sockaddr_storage ss;
	struct cidr_list empty = {0, NULL};
	const char *why = NULL;

	ck_assert(!netguard_allows(unit_sockaddr("127.0.0.1", &ss), &empty, &why));
	ck_assert_str_eq(why, LOOPBACK);
	ck_assert(netguard_allows(unit_sockaddr("8.8.4.4", &ss), &empty, &why));
}
END_TEST

START_TEST(why_may_be_null)
{
	struct sockaddr_storage ss;

	ck_assert(!netguard_allows(unit_sockaddr("10.0.0.1", &ss), NULL, NULL));
	ck_assert(netguard_allows(unit_sockaddr("8.8.4.4", &ss), NULL, NULL));
}
END_TEST

START_TEST(not_ip)
{
	struct sockaddr_un sun;
	const char *why = NULL;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	ck_assert(!netguard_allows((const struct sockaddr *)&sun, NULL, &why));
	ck_assert_str_eq(why, "not an IP address");
	why = NULL;
	ck_assert(!netguard_allows(NULL, NULL, &why));
	ck_assert_str_eq(why, "no address");
}
END_TEST

START_TEST(port_ignored)
{
	struct sockaddr_storage ss;
	const char *why = NULL;

	unit_sockaddr("10.0.0.1", &ss);
	((struct sockaddr_in *)&ss)->sin_port = htons(25);
	ck_assert(!netguard_allows((const struct sockaddr *)&ss, NULL, &why));
	ck_assert_str_eq(why, PRIVATE);
	unit_sockaddr("2001:4860:4860::8888", &ss);
	((struct sockaddr_in6 *)&ss)->sin6_port = htons(25);
	ck_assert(netguard_allows((const struct sockaddr *)&ss, NULL, &why));
}
END_TEST

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

int main(void)
{
	Suite *s = suite_create("netguard");
	TCase *tc = tcase_create("netguard");

	tcase_add_loop_test(tc, table, 0, N(cases));
	tcase_add_loop_test(tc, allow_list, 0, N(overrides));
	tcase_add_test(tc, empty_allow_list);
	tcase_add_test(tc, why_may_be_null);
	tcase_add_test(tc, not_ip);
	tcase_add_test(tc, port_ignored);
	suite_add_tcase(s, tc);
	return unit_run(s);
}
