/*
 * netguard.c - the networks a probe never connects to (netguard.h).
 *
 * Two fixed tables (IPv4, IPv6) of special-purpose blocks, each with its
 * class (bogus or private), a short reason naming its RFC, and for the
 * IPv6 forms that carry an IPv4 address at a known place, where. The first
 * entry that contains an address decides, so a block inside a larger one
 * comes first. The operator's allow list (probe_allow_networks) overrides
 * them. Sources: the IANA IPv4 and IPv6 Special-Purpose Address Registries
 * (the blocks whose "Globally Reachable" is False or N/A), RFC 5771
 * (multicast), RFC 3879 (site-local), RFC 2765 (SIIT). Pure: owns nothing,
 * no state.
 */
#include "netguard.h"

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define B NETGUARD_BOGUS
#define P NETGUARD_PRIVATE

/* Where an IPv6 block carries an IPv4 address, judged first. */
enum embed {
	EMBED_NONE,
	EMBED_LOW32, /* the last 32 bits: IPv4-mapped, NAT64 64:ff9b::/96 (RFC 6052 /96) */
	EMBED_6TO4,  /* bits 16..47: 2002:AABB:CCDD::/48 (RFC 3056) */
};

struct block {
	uint8_t net[16];
	unsigned prefix;
	enum netguard_class
	        cls; /* NETGUARD_GLOBAL only with an embedded address: allowed unless it is denied */
	const char *why;
	enum embed embed;
};

static const struct block blocks4[] = {
        {{0, 0, 0, 0}, 8, B, "this network (RFC 1122)", EMBED_NONE},
        {{10, 0, 0, 0}, 8, P, "private (RFC 1918)", EMBED_NONE},
        {{100, 64, 0, 0}, 10, P, "shared address space (RFC 6598)", EMBED_NONE},
        {{127, 0, 0, 0}, 8, B, "loopback (RFC 1122)", EMBED_NONE},
        {{169, 254, 0, 0}, 16, P, "link-local (RFC 3927)", EMBED_NONE},
        {{172, 16, 0, 0}, 12, P, "private (RFC 1918)", EMBED_NONE},
        /* 192.0.0.0/24 and its entries; its globally reachable ones (PCP and
         * TURN anycast, 192.0.0.9 and .10) are service addresses, never a
         * mail server: denied with the rest of the /24 */
        {{192, 0, 0, 0}, 29, P, "IPv4 service continuity (RFC 7335)", EMBED_NONE},
        {{192, 0, 0, 8}, 32, B, "IPv4 dummy address (RFC 7600)", EMBED_NONE},
        {{192, 0, 0, 170}, 31, B, "NAT64/DNS64 discovery (RFC 8880)", EMBED_NONE},
        {{192, 0, 0, 0}, 24, P, "IETF protocol assignments (RFC 6890)", EMBED_NONE},
        {{192, 0, 2, 0}, 24, B, "documentation (RFC 5737)", EMBED_NONE},
        {{192, 88, 99, 0}, 24, P, "6to4 relay anycast (RFC 7526)", EMBED_NONE},
        {{192, 168, 0, 0}, 16, P, "private (RFC 1918)", EMBED_NONE},
        {{198, 18, 0, 0}, 15, P, "benchmarking (RFC 2544)", EMBED_NONE},
        {{198, 51, 100, 0}, 24, B, "documentation (RFC 5737)", EMBED_NONE},
        {{203, 0, 113, 0}, 24, B, "documentation (RFC 5737)", EMBED_NONE},
        {{224, 0, 0, 0}, 4, B, "multicast (RFC 5771)", EMBED_NONE},
        {{255, 255, 255, 255}, 32, B, "limited broadcast (RFC 919)", EMBED_NONE},
        {{240, 0, 0, 0}, 4, B, "reserved (RFC 1112)", EMBED_NONE},
};

static const struct block blocks6[] = {
        {{0}, 128, B, "unspecified (RFC 4291)", EMBED_NONE},
        {{[15] = 1}, 128, B, "loopback (RFC 4291)", EMBED_NONE},
        {{[10] = 0xff, [11] = 0xff}, 96, P, "IPv4-mapped (RFC 4291)", EMBED_LOW32},
        {{[8] = 0xff, [9] = 0xff}, 96, P, "SIIT IPv4-translated (RFC 2765)", EMBED_NONE},
        {{0}, 96, B, "IPv4-compatible, deprecated (RFC 4291)", EMBED_NONE},
        {{0x00, 0x64, 0xff, 0x9b, 0x00, 0x01}, 48, P, "local-use NAT64 (RFC 8215)", EMBED_NONE},
        {{0x00, 0x64, 0xff, 0x9b}, 96, NETGUARD_GLOBAL, "NAT64 (RFC 6052)", EMBED_LOW32},
        {{0x01, 0x00}, 64, B, "discard-only (RFC 6666)", EMBED_NONE},
        {{0x01, 0x00, 0, 0, 0, 0, 0, 0x01}, 64, B, "dummy prefix (RFC 9780)", EMBED_NONE},
        /* 2001::/23 and its entries; its globally reachable ones (anycast
         * services, AMT, AS112, ORCHIDv2, DETs) are never a mail server:
         * denied with the rest of the /23 */
        {{0x20, 0x01}, 32, P, "Teredo (RFC 4380)", EMBED_NONE},
        {{0x20, 0x01, 0x00, 0x02}, 48, P, "benchmarking (RFC 5180)", EMBED_NONE},
        {{0x20, 0x01, 0x00, 0x10}, 28, B, "ORCHID, deprecated (RFC 4843)", EMBED_NONE},
        {{0x20, 0x01}, 23, P, "IETF protocol assignments (RFC 2928)", EMBED_NONE},
        {{0x20, 0x01, 0x0d, 0xb8}, 32, B, "documentation (RFC 3849)", EMBED_NONE},
        {{0x20, 0x02}, 16, P, "6to4 (RFC 3056)", EMBED_6TO4},
        {{0x3f, 0xff}, 20, B, "documentation (RFC 9637)", EMBED_NONE},
        {{0x5f, 0x00}, 16, P, "SRv6 SIDs (RFC 9602)", EMBED_NONE},
        {{0xfc}, 7, P, "unique local (RFC 4193)", EMBED_NONE},
        {{0xfe, 0x80}, 10, P, "link-local (RFC 4291)", EMBED_NONE},
        {{0xfe, 0xc0}, 10, P, "site-local, deprecated (RFC 3879)", EMBED_NONE},
        {{0xff}, 8, B, "multicast (RFC 4291)", EMBED_NONE},
};

#undef B
#undef P

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

/* find - the first block of table containing addr, or NULL */
static const struct block *find(const struct block *table, size_t n, const uint8_t *addr)
{
	for (size_t i = 0; i < n; i++)
		if (prefix_match(addr, table[i].net, table[i].prefix))
			return &table[i];
	return NULL;
}

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* judge4 - the class of an IPv4 address (4 bytes) */
static enum netguard_class judge4(const uint8_t *v4, const char **why)
{
	const struct block *b = find(blocks4, COUNT(blocks4), v4);
	if (b == NULL)
		return NETGUARD_GLOBAL;
	if (why != NULL)
		*why = b->why;
	return b->cls;
}

/* judge6 - the class of an IPv6 address (16 bytes): an embedded IPv4
 * address that is denied decides (the block could lead there); else the
 * block's own */
static enum netguard_class judge6(const uint8_t *v6, const char **why)
{
	const struct block *b = find(blocks6, COUNT(blocks6), v6);
	if (b == NULL)
		return NETGUARD_GLOBAL;
	if (b->embed != EMBED_NONE) {
		enum netguard_class inner = judge4(b->embed == EMBED_LOW32 ? v6 + 12 : v6 + 2, why);
		if (inner != NETGUARD_GLOBAL)
			return inner;
	}
	if (b->cls != NETGUARD_GLOBAL && why != NULL)
		*why = b->why;
	return b->cls;
}

/* netguard_judge - see netguard.h */
enum netguard_class netguard_judge(const struct sockaddr *sa, const char **why)
{
	const char *reason = NULL;
	enum netguard_class cls;
	if (sa == NULL) {
		cls = NETGUARD_PRIVATE;
		reason = "no address";
	} else if (sa->sa_family == AF_INET) {
		cls = judge4((const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr, &reason);
	} else if (sa->sa_family == AF_INET6) {
		cls = judge6(((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr, &reason);
	} else {
		cls = NETGUARD_PRIVATE;
		reason = "not an IP address";
	}
	if (cls != NETGUARD_GLOBAL && why != NULL)
		*why = reason;
	return cls;
}

/* netguard_allows - see netguard.h */
bool netguard_allows(const struct sockaddr *sa, const struct cidr_list *allow, const char **why)
{
	const char *reason = NULL;
	if (netguard_judge(sa, &reason) == NETGUARD_GLOBAL)
		return true;
	if (sa != NULL && allow != NULL && cidr_list_contains(allow, sa))
		return true;
	if (why != NULL)
		*why = reason;
	return false;
}
