/*
 * test_netguard.c - netguard_judge and netguard_allows: every block with its
 * source, at its first and last address and just outside it (class and
 * reason), IPv4 addresses inside IPv6 ones judged by the IPv4 address, and
 * the allow list overriding the lot.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/un.h>

#include "cidr.h"
#include "netguard.h"
#include "unit.h"

#define B NETGUARD_BOGUS
#define P NETGUARD_PRIVATE
#define G NETGUARD_GLOBAL

/* What an address is expected to be: allowed (G), or denied with a class
 * and reason; SAME: what the block of its row says; NONE: no such address
 * (before 0.0.0.0, after the last address) */
struct expect {
	int cls; /* enum netguard_class, or SAME_CLS / NONE_CLS */
	const char *why;
};
#define SAME_CLS (-1)
#define NONE_CLS (-2)
#define SAME                                                                                                 \
	{                                                                                                    \
		SAME_CLS, NULL                                                                               \
	}
#define NONE                                                                                                 \
	{                                                                                                    \
		NONE_CLS, NULL                                                                               \
	}
#define GLOBAL                                                                                               \
	{                                                                                                    \
		G, NULL                                                                                      \
	}
#define X(cls, why)                                                                                          \
	{                                                                                                    \
		cls, why                                                                                     \
	}

#define THIS_NET   "this network (RFC 1122)"
#define PRIVATE    "private (RFC 1918)"
#define SHARED     "shared address space (RFC 6598)"
#define LOOPBACK4  "loopback (RFC 1122)"
#define LINKLOCAL4 "link-local (RFC 3927)"
#define CONTINUITY "IPv4 service continuity (RFC 7335)"
#define DUMMY4     "IPv4 dummy address (RFC 7600)"
#define NAT64DISC  "NAT64/DNS64 discovery (RFC 8880)"
#define IETF4      "IETF protocol assignments (RFC 6890)"
#define DOC4       "documentation (RFC 5737)"
#define RELAY      "6to4 relay anycast (RFC 7526)"
#define BENCH4     "benchmarking (RFC 2544)"
#define MCAST4     "multicast (RFC 5771)"
#define BCAST      "limited broadcast (RFC 919)"
#define RESERVED   "reserved (RFC 1112)"
#define UNSPEC     "unspecified (RFC 4291)"
#define LOOPBACK6  "loopback (RFC 4291)"
#define COMPAT     "IPv4-compatible, deprecated (RFC 4291)"
#define MAPPED     "IPv4-mapped (RFC 4291)"
#define SIIT       "SIIT IPv4-translated (RFC 2765)"
#define NAT64      "NAT64 (RFC 6052)"
#define NAT64LOCAL "local-use NAT64 (RFC 8215)"
#define DISCARD    "discard-only (RFC 6666)"
#define DUMMY6     "dummy prefix (RFC 9780)"
#define TEREDO     "Teredo (RFC 4380)"
#define BENCH6     "benchmarking (RFC 5180)"
#define ORCHID     "ORCHID, deprecated (RFC 4843)"
#define IETF6      "IETF protocol assignments (RFC 2928)"
#define DOC6       "documentation (RFC 3849)"
#define SIX2FOUR   "6to4 (RFC 3056)"
#define DOC6NEW    "documentation (RFC 9637)"
#define SRV6       "SRv6 SIDs (RFC 9602)"
#define ULA        "unique local (RFC 4193)"
#define LINKLOCAL6 "link-local (RFC 4291)"
#define SITELOCAL  "site-local, deprecated (RFC 3879)"
#define MCAST6     "multicast (RFC 4291)"

/* Every block the guard knows, with its source: the IANA IPv4 and IPv6
 * Special-Purpose Address Registries (entries not globally reachable),
 * and the others named in netguard.h. The test computes each block's first
 * and last address and its neighbours just outside, and checks what each
 * is: the block's own class and reason unless a more specific block (or
 * the IPv4 address inside) decides. */
static const struct {
	const char *block;
	const char *source;
	enum netguard_class cls; /* G: a block allowed unless the IPv4 address inside is denied */
	const char *why;
	struct expect first, last, before, after;
} blocks[] = {
        {"0.0.0.0/8", "RFC 791, RFC 1122 3.2.1.3", B, THIS_NET, SAME, SAME, NONE, GLOBAL},
        {"10.0.0.0/8", "RFC 1918", P, PRIVATE, SAME, SAME, GLOBAL, GLOBAL},
        {"100.64.0.0/10", "RFC 6598", P, SHARED, SAME, SAME, GLOBAL, GLOBAL},
        {"127.0.0.0/8", "RFC 1122 3.2.1.3", B, LOOPBACK4, SAME, SAME, GLOBAL, GLOBAL},
        {"169.254.0.0/16", "RFC 3927", P, LINKLOCAL4, SAME, SAME, GLOBAL, GLOBAL},
        {"172.16.0.0/12", "RFC 1918", P, PRIVATE, SAME, SAME, GLOBAL, GLOBAL},
        {"192.0.0.0/29", "RFC 7335", P, CONTINUITY, SAME, SAME, GLOBAL, X(B, DUMMY4)},
        {"192.0.0.8/32", "RFC 7600", B, DUMMY4, SAME, SAME, X(P, CONTINUITY), X(P, IETF4)},
        {"192.0.0.170/31", "RFC 8880, RFC 7050", B, NAT64DISC, SAME, SAME, X(P, IETF4), X(P, IETF4)},
        {"192.0.0.0/24", "RFC 6890", P, IETF4, X(P, CONTINUITY), SAME, GLOBAL, GLOBAL},
        {"192.0.2.0/24", "RFC 5737 (TEST-NET-1)", B, DOC4, SAME, SAME, GLOBAL, GLOBAL},
        {"192.88.99.0/24", "RFC 7526 (deprecated 6to4 relay anycast)", P, RELAY, SAME, SAME, GLOBAL, GLOBAL},
        {"192.168.0.0/16", "RFC 1918", P, PRIVATE, SAME, SAME, GLOBAL, GLOBAL},
        {"198.18.0.0/15", "RFC 2544", P, BENCH4, SAME, SAME, GLOBAL, GLOBAL},
        {"198.51.100.0/24", "RFC 5737 (TEST-NET-2)", B, DOC4, SAME, SAME, GLOBAL, GLOBAL},
        {"203.0.113.0/24", "RFC 5737 (TEST-NET-3)", B, DOC4, SAME, SAME, GLOBAL, GLOBAL},
        {"224.0.0.0/4", "RFC 5771", B, MCAST4, SAME, SAME, GLOBAL, X(B, RESERVED)},
        {"240.0.0.0/4", "RFC 1112 4", B, RESERVED, SAME, X(B, BCAST), X(B, MCAST4), NONE},
        {"255.255.255.255/32", "RFC 919 7, RFC 8190", B, BCAST, SAME, SAME, X(B, RESERVED), NONE},

        {"::/128", "RFC 4291 2.5.2", B, UNSPEC, SAME, SAME, NONE, X(B, LOOPBACK6)},
        {"::1/128", "RFC 4291 2.5.3", B, LOOPBACK6, SAME, SAME, X(B, UNSPEC), X(B, COMPAT)},
        {"::/96", "RFC 4291 2.5.5.1", B, COMPAT, X(B, UNSPEC), SAME, NONE, GLOBAL},
        {"::ffff:0:0/96", "RFC 4291 2.5.5.2", P, MAPPED, X(B, THIS_NET), X(B, BCAST), GLOBAL, GLOBAL},
        {"::ffff:0:0:0/96", "RFC 2765 2.1", P, SIIT, SAME, SAME, GLOBAL, GLOBAL},
        {"64:ff9b::/96", "RFC 6052", G, NAT64, X(B, THIS_NET), X(B, BCAST), GLOBAL, GLOBAL},
        {"64:ff9b:1::/48", "RFC 8215", P, NAT64LOCAL, SAME, SAME, GLOBAL, GLOBAL},
        {"100::/64", "RFC 6666", B, DISCARD, SAME, SAME, GLOBAL, X(B, DUMMY6)},
        {"100:0:0:1::/64", "RFC 9780", B, DUMMY6, SAME, SAME, X(B, DISCARD), GLOBAL},
        {"2001::/32", "RFC 4380, RFC 8190", P, TEREDO, SAME, SAME, GLOBAL, X(P, IETF6)},
        {"2001:2::/48", "RFC 5180, RFC Errata 1752", P, BENCH6, SAME, SAME, X(P, IETF6), X(P, IETF6)},
        {"2001:10::/28", "RFC 4843 (deprecated ORCHID)", B, ORCHID, SAME, SAME, X(P, IETF6), X(P, IETF6)},
        {"2001::/23", "RFC 2928", P, IETF6, X(P, TEREDO), SAME, GLOBAL, GLOBAL},
        {"2001:db8::/32", "RFC 3849", B, DOC6, SAME, SAME, GLOBAL, GLOBAL},
        {"2002::/16", "RFC 3056", P, SIX2FOUR, X(B, THIS_NET), X(B, BCAST), GLOBAL, GLOBAL},
        {"3fff::/20", "RFC 9637", B, DOC6NEW, SAME, SAME, GLOBAL, GLOBAL},
        {"5f00::/16", "RFC 9602", P, SRV6, SAME, SAME, GLOBAL, GLOBAL},
        {"fc00::/7", "RFC 4193, RFC 8190", P, ULA, SAME, SAME, GLOBAL, GLOBAL},
        {"fe80::/10", "RFC 4291 2.5.6", P, LINKLOCAL6, SAME, SAME, GLOBAL, X(P, SITELOCAL)},
        {"fec0::/10", "RFC 3879 (deprecated site-local)", P, SITELOCAL, SAME, SAME, X(P, LINKLOCAL6),
         X(B, MCAST6)},
        {"ff00::/8", "RFC 4291 2.7", B, MCAST6, SAME, SAME, X(P, SITELOCAL), NONE},
};

/* edges - first and last address of net, and the neighbours outside it
 * (have_before/have_after false at either end of the address space) */
static void edges(const struct cidr *net, struct sockaddr_storage ss[4], bool *have_before, bool *have_after)
{
	size_t len = net->family == AF_INET ? 4 : 16;
	uint8_t first[16], last[16], before[16], after[16];
	memcpy(first, net->addr, len);
	memcpy(last, net->addr, len);
	for (size_t bit = net->prefix; bit < len * 8; bit++)
		last[bit / 8] |= (uint8_t)(0x80 >> (bit % 8));
	memcpy(before, first, len);
	memcpy(after, last, len);
	*have_before = *have_after = false;
	for (size_t i = len; i-- > 0;) /* before = first - 1 */
		if (before[i]-- != 0) {
			*have_before = true;
			break;
		}
	for (size_t i = len; i-- > 0;) /* after = last + 1 */
		if (++after[i] != 0) {
			*have_after = true;
			break;
		}
	const uint8_t *bytes[4] = {first, last, before, after};
	for (int k = 0; k < 4; k++) {
		memset(&ss[k], 0, sizeof(ss[k]));
		ss[k].ss_family = (sa_family_t)net->family;
		if (net->family == AF_INET)
			memcpy(&((struct sockaddr_in *)&ss[k])->sin_addr, bytes[k], 4);
		else
			memcpy(((struct sockaddr_in6 *)&ss[k])->sin6_addr.s6_addr, bytes[k], 16);
	}
}

/* text - an address for messages */
static const char *text(const struct sockaddr_storage *ss, char *buf, size_t size)
{
	const void *raw = ss->ss_family == AF_INET
	                          ? (const void *)&((const struct sockaddr_in *)ss)->sin_addr
	                          : (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
	return inet_ntop(ss->ss_family, raw, buf, (socklen_t)size);
}

/* check_one - sa is what e says (SAME: the row's class and reason) */
static void check_one(const struct sockaddr_storage *ss, struct expect e, int row, const char *edge)
{
	char buf[INET6_ADDRSTRLEN];
	const char *block = blocks[row].block;
	if (e.cls == SAME_CLS) {
		e.cls = blocks[row].cls;
		e.why = blocks[row].cls == G ? NULL : blocks[row].why;
	}
	const char *why = "untouched", *why2 = "untouched";
	int cls = (int)netguard_judge((const struct sockaddr *)ss, &why);
	bool allowed = netguard_allows((const struct sockaddr *)ss, NULL, &why2);
	text(ss, buf, sizeof(buf));
	ck_assert_msg(cls == e.cls, "%s (%s of %s, %s): class %d, want %d (%s)", buf, edge, block,
	              blocks[row].source, cls, e.cls, why);
	if (e.cls == G) {
		ck_assert_msg(allowed, "%s (%s of %s): denied (%s)", buf, edge, block, why2);
		ck_assert_msg(strcmp(why, "untouched") == 0 && strcmp(why2, "untouched") == 0,
		              "%s: why set to \"%s\"/\"%s\" for an allowed address", buf, why, why2);
	} else {
		ck_assert_msg(!allowed, "%s (%s of %s): allowed, want denied as %s", buf, edge, block, e.why);
		ck_assert_msg(strcmp(why, e.why) == 0 && strcmp(why2, e.why) == 0,
		              "%s (%s of %s): why \"%s\"/\"%s\", want \"%s\"", buf, edge, block, why, why2,
		              e.why);
	}
}

START_TEST(every_block_at_its_edges)
{
	struct cidr net;
	char err[200] = "";
	struct sockaddr_storage ss[4];
	bool have_before, have_after;
	ck_assert_msg(cidr_parse(blocks[_i].block, &net, err, sizeof(err)), "%s: %s", blocks[_i].block, err);
	ck_assert_msg(blocks[_i].source[0] != '\0', "%s has no source", blocks[_i].block);
	edges(&net, ss, &have_before, &have_after);
	check_one(&ss[0], blocks[_i].first, _i, "first");
	check_one(&ss[1], blocks[_i].last, _i, "last");
	ck_assert_msg(have_before == (blocks[_i].before.cls != NONE_CLS), "%s: before", blocks[_i].block);
	ck_assert_msg(have_after == (blocks[_i].after.cls != NONE_CLS), "%s: after", blocks[_i].block);
	if (have_before)
		check_one(&ss[2], blocks[_i].before, _i, "just before");
	if (have_after)
		check_one(&ss[3], blocks[_i].after, _i, "just after");
}
END_TEST

/* IPv4 inside IPv6: judged by the IPv4 address when it is denied */
static const struct {
	const char *addr;
	int cls;
	const char *why;
} embedded[] = {
        {"::ffff:10.0.0.1", P, PRIVATE},
        {"::ffff:127.0.0.1", B, LOOPBACK4},
        {"::ffff:192.0.2.1", B, DOC4},
        {"::ffff:100.64.0.1", P, SHARED},
        {"::ffff:8.8.8.8", P, MAPPED}, /* a public one: still not published that way */
        {"64:ff9b::10.1.2.3", P, PRIVATE},
        {"64:ff9b::127.0.0.1", B, LOOPBACK4},
        {"64:ff9b::192.168.1.1", P, PRIVATE},
        {"64:ff9b::169.254.169.254", P, LINKLOCAL4}, /* a cloud's metadata service */
        {"64:ff9b::100.64.0.1", P, SHARED},
        {"64:ff9b::192.0.2.9", B, DOC4},
        {"64:ff9b::224.0.0.1", B, MCAST4},
        {"64:ff9b::8.8.8.8", G, NULL}, /* DNS64 on an IPv6-only network: as 8.8.8.8 */
        {"64:ff9b::193.0.0.1", G, NULL},
        {"2002:a00:1::1", P, PRIVATE},        /* 10.0.0.1 */
        {"2002:7f00:1::1", B, LOOPBACK4},     /* 127.0.0.1 */
        {"2002:c0a8:101::", P, PRIVATE},      /* 192.168.1.1 */
        {"2002:a9fe:a9fe::1", P, LINKLOCAL4}, /* 169.254.169.254 */
        {"2002:808:808::1", P, SIX2FOUR},     /* 8.8.8.8: a 6to4 address as such */
        /* the local-use NAT64 prefix may embed anywhere: judged as a block */
        {"64:ff9b:1::808:808", P, NAT64LOCAL},
        {"64:ff9b:1::a00:1", P, NAT64LOCAL},
        {"::ffff:0:808:808", P, SIIT},
        {"::ffff:0:a00:1", P, SIIT},
        {"::808:808", B, COMPAT},
        {"fec0::1", P, SITELOCAL},
        /* globally reachable entries of the registries, outside the blocks
         * above, and ordinary addresses */
        {"192.31.196.1", G, NULL},    /* AS112-v4 (RFC 7535) */
        {"192.52.193.1", G, NULL},    /* AMT (RFC 7450) */
        {"192.175.48.1", G, NULL},    /* AS112 direct delegation (RFC 7534) */
        {"2620:4f:8000::1", G, NULL}, /* AS112 direct delegation (RFC 7534) */
        {"8.8.8.8", G, NULL},
        {"193.0.0.1", G, NULL},
        {"2001:4860:4860::8888", G, NULL},
        {"2a00:1450:4001::1a", G, NULL},
};

START_TEST(embedded_ipv4)
{
	struct sockaddr_storage ss;
	const char *why = "untouched";
	unit_sockaddr(embedded[_i].addr, &ss);
	int cls = (int)netguard_judge((const struct sockaddr *)&ss, &why);
	ck_assert_msg(cls == embedded[_i].cls, "%s: class %d, want %d (%s)", embedded[_i].addr, cls,
	              embedded[_i].cls, why);
	ck_assert_msg(netguard_allows((const struct sockaddr *)&ss, NULL, NULL) == (embedded[_i].cls == G),
	              "%s: allowed?", embedded[_i].addr);
	if (embedded[_i].cls == G)
		ck_assert_str_eq(why, "untouched");
	else
		ck_assert_msg(strcmp(why, embedded[_i].why) == 0, "%s: why \"%s\", want \"%s\"",
		              embedded[_i].addr, why, embedded[_i].why);
}
END_TEST

#define OK NULL /* allowed: no reason */

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
        {"127.0.0.0/8", "::1", LOOPBACK6},
        {"127.0.0.0/8", "10.0.0.1", PRIVATE},
        {"127.0.0.0/8", "::ffff:10.0.0.1", PRIVATE},  /* judged by the IPv4 address inside */
        {"10.0.0.0/8", "::ffff:10.0.0.1", OK},        /* ... which the allow list matches */
        {"10.0.0.0/8", "64:ff9b::10.0.0.1", PRIVATE}, /* a NAT64 form is not that network */
        {"64:ff9b::/96", "64:ff9b::10.0.0.1", OK},
        {"fec0::/10", "fec0::25", OK},
        {"64:ff9b:1::/48", "64:ff9b:1::a00:1", OK},
        {"10.1.0.0/16", "10.1.2.3", OK},
        {"10.1.0.0/16", "10.2.0.1", PRIVATE},
        {"10.1.0.0/16", "10.0.255.255", PRIVATE},
        {"::1", "::1", OK},
        {"::1", "::2", COMPAT},
        {"::1", "127.0.0.1", LOOPBACK4},
        {"fd00::/8", "fd12::25", OK},
        {"fd00::/8", "fc00::25", ULA},
        {"2001:db8::/32", "2001:db8::25", OK},
        {"192.0.2.0/24", "192.0.2.25", OK},
        {"192.0.2.0/24", "198.51.100.25", DOC4},
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
	ck_assert_str_eq(why, LOOPBACK4);
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

	tcase_add_loop_test(tc, every_block_at_its_edges, 0, N(blocks));
	tcase_add_loop_test(tc, embedded_ipv4, 0, N(embedded));
	tcase_add_loop_test(tc, allow_list, 0, N(overrides));
	tcase_add_test(tc, empty_allow_list);
	tcase_add_test(tc, why_may_be_null);
	tcase_add_test(tc, not_ip);
	tcase_add_test(tc, port_ignored);
	suite_add_tcase(s, tc);
	return unit_run(s);
}
