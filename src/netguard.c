/*
 * netguard.c - the networks a probe never connects to.
 *
 * Two fixed tables (IPv4, IPv6) of denied prefixes with a short reason
 * each; the operator's allow list (probe_allow_networks) overrides them.
 * IPv4-mapped (::ffff:0:0/96), IPv4-compatible (::/96, deprecated) and
 * NAT64 (64:ff9b::/96) addresses are refused as such rather than judged by
 * the IPv4 address inside: a mail server is never published that way.
 * Pure: owns nothing, no state.
 */
#include "netguard.h"

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct denied {
	uint8_t net[16];
	unsigned prefix;
	const char *why;
};

static const struct denied denied4[] = {
        {{0, 0, 0, 0}, 8, "this network (RFC 1122)"},
        {{10, 0, 0, 0}, 8, "private (RFC 1918)"},
        {{100, 64, 0, 0}, 10, "shared address space (RFC 6598)"},
        {{127, 0, 0, 0}, 8, "loopback"},
        {{169, 254, 0, 0}, 16, "link-local"},
        {{172, 16, 0, 0}, 12, "private (RFC 1918)"},
        {{192, 0, 0, 0}, 24, "IETF protocol assignments"},
        {{192, 0, 2, 0}, 24, "documentation"},
        {{192, 88, 99, 0}, 24, "6to4 relay anycast"},
        {{192, 168, 0, 0}, 16, "private (RFC 1918)"},
        {{198, 18, 0, 0}, 15, "benchmarking (RFC 2544)"},
        {{198, 51, 100, 0}, 24, "documentation"},
        {{203, 0, 113, 0}, 24, "documentation"},
        {{224, 0, 0, 0}, 4, "multicast"},
        {{240, 0, 0, 0}, 4, "reserved"},
};

static const struct denied denied6[] = {
        {{0}, 128, "unspecified"},
        {{[15] = 1}, 128, "loopback"},
        {{0}, 96, "IPv4-compatible (deprecated)"},
        {{[10] = 0xff, [11] = 0xff}, 96, "IPv4-mapped"},
        {{0x00, 0x64, 0xff, 0x9b}, 96, "NAT64 (RFC 6052): not a mail server's own address"},
        {{0x01, 0x00}, 64, "discard-only (RFC 6666)"},
        {{0x20, 0x01, 0x0d, 0xb8}, 32, "documentation"},
        {{0x20, 0x01}, 32, "Teredo"},
        {{0x20, 0x01}, 23, "IETF protocol assignments"},
        {{0x20, 0x02}, 16, "6to4"},
        {{0xfc}, 7, "unique local (RFC 4193)"},
        {{0xfe, 0x80}, 10, "link-local"},
        {{0xff}, 8, "multicast"},
};

/* prefix_match - do the first prefix bits of addr equal those of net? */
static bool prefix_match(const uint8_t *addr, const uint8_t *net, unsigned prefix)
{
	unsigned whole = prefix / 8, rest = prefix % 8;
	if (memcmp(addr, net, whole) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - rest));
	return (addr[whole] & mask) == (net[whole] & mask);
}

/* lookup - the reason of the first table entry containing addr, or NULL */
static const char *lookup(const struct denied *table, size_t n, const uint8_t *addr)
{
	for (size_t i = 0; i < n; i++)
		if (prefix_match(addr, table[i].net, table[i].prefix))
			return table[i].why;
	return NULL;
}

/* denied_reason - why sa is denied, NULL if it is not; non-IP: "not an IP address" */
static const char *denied_reason(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
		return lookup(denied4, sizeof(denied4) / sizeof(denied4[0]), (const uint8_t *)&sin->sin_addr);
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
		return lookup(denied6, sizeof(denied6) / sizeof(denied6[0]), sin6->sin6_addr.s6_addr);
	}
	return "not an IP address";
}

/* netguard_allows - see netguard.h */
bool netguard_allows(const struct sockaddr *sa, const struct cidr_list *allow, const char **why)
{
	const char *reason = sa != NULL ? denied_reason(sa) : "no address";
	if (reason == NULL)
		return true;
	if (sa != NULL && allow != NULL && cidr_list_contains(allow, sa))
		return true;
	if (why != NULL)
		*why = reason;
	return false;
}
