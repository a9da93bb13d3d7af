/*
 * cidr.c - parse IPv4/IPv6 networks in CIDR notation and match socket
 * addresses against them.
 *
 * Owns nothing: every function works on caller-provided values. A network is
 * stored with its host bits cleared; text with host bits set is rejected
 * rather than silently masked, since "192.0.2.1/24" is almost always a typo.
 * An IPv4-mapped IPv6 client address (::ffff:192.0.2.1, as a dual-stack socket
 * reports an IPv4 peer) matches IPv4 networks; an IPv4 client matches an IPv6
 * network only when that network lies inside ::ffff:0:0/96.
 */
#include "cidr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#define CIDR_TEXT_MAX (INET6_ADDRSTRLEN + 4) /* address "/" prefix */

static const uint8_t mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* addr_len - octets of an address of this family */
static size_t addr_len(int family)
{
	return family == AF_INET ? 4 : 16;
}

/* max_prefix - longest prefix of this family */
static unsigned max_prefix(int family)
{
	return family == AF_INET ? 32 : 128;
}

/* prefix_equal - do a and b agree in their first bits bits? */
static bool prefix_equal(const uint8_t *a, const uint8_t *b, unsigned bits)
{
	size_t whole = bits / 8;
	unsigned rest = bits % 8;

	if (memcmp(a, b, whole) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - rest));
	return (a[whole] & mask) == (b[whole] & mask);
}

/* clear_host_bits - zero every bit of addr below prefix */
static void clear_host_bits(uint8_t *addr, size_t len, unsigned prefix)
{
	for (size_t i = 0; i < len; i++) {
		unsigned first = (unsigned)i * 8;
		if (first >= prefix)
			addr[i] = 0;
		else if (prefix - first < 8)
			addr[i] &= (uint8_t)(0xff << (8 - (prefix - first)));
	}
}

/* parse_prefix - decimal prefix length 0..max; false on anything else */
static bool parse_prefix(const char *s, unsigned max, unsigned *out)
{
	unsigned v = 0;
	size_t n = 0;

	for (; s[n] != '\0'; n++) {
		if (s[n] < '0' || s[n] > '9' || n >= 3)
			return false;
		v = v * 10 + (unsigned)(s[n] - '0');
	}
	if (n == 0 || v > max)
		return false;
	*out = v;
	return true;
}

/* parse_address - an IPv4 or IPv6 address (no prefix) into out */
static bool parse_address(const char *s, struct cidr *out)
{
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, s, out->addr) == 1) {
		out->family = AF_INET;
		return true;
	}
	if (inet_pton(AF_INET6, s, out->addr) == 1) {
		out->family = AF_INET6;
		return true;
	}
	return false;
}

/* cidr_parse - "192.0.2.0/24", "2001:db8::/32" or a bare address */
bool cidr_parse(const char *text, struct cidr *out, char *why, size_t why_size)
{
	char addr[CIDR_TEXT_MAX + 1];
	const char *slash = strchr(text, '/');
	size_t alen = slash ? (size_t)(slash - text) : strlen(text);

	if (alen == 0) {
		snprintf(why, why_size, "\"%s\" has no address", text);
		return false;
	}
	if (alen > CIDR_TEXT_MAX) {
		snprintf(why, why_size, "\"%.40s...\" is not an IPv4 or IPv6 address", text);
		return false;
	}
	memcpy(addr, text, alen);
	addr[alen] = '\0';

	struct cidr net;
	if (!parse_address(addr, &net)) {
		snprintf(why, why_size, "\"%s\" is not an IPv4 or IPv6 address", addr);
		return false;
	}
	net.prefix = max_prefix(net.family);
	if (slash && !parse_prefix(slash + 1, max_prefix(net.family), &net.prefix)) {
		snprintf(why, why_size, "\"%s\" has a bad prefix length (want 0..%u)", text,
		         max_prefix(net.family));
		return false;
	}

	struct cidr masked = net;
	clear_host_bits(masked.addr, addr_len(net.family), net.prefix);
	if (memcmp(masked.addr, net.addr, sizeof(net.addr)) != 0) {
		char fixed[CIDR_TEXT_MAX + 1];
		snprintf(why, why_size, "%s has host bits set; did you mean %s?", text,
		         cidr_format(&masked, fixed, sizeof(fixed)));
		return false;
	}
	*out = net;
	return true;
}

/* cidr_contains - does net contain the address sa (AF_INET or AF_INET6)? */
bool cidr_contains(const struct cidr *net, const struct sockaddr *sa)
{
	uint8_t a[16];

	if (sa == NULL)
		return false;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
		if (net->family == AF_INET)
			return prefix_equal(net->addr, (const uint8_t *)&sin->sin_addr, net->prefix);
		if (net->prefix < 96 || memcmp(net->addr, mapped_prefix, sizeof(mapped_prefix)) != 0)
			return false; /* an IPv4 client is only inside ::ffff:0:0/96 */
		memcpy(a, mapped_prefix, sizeof(mapped_prefix));
		memcpy(a + 12, &sin->sin_addr, 4);
		return prefix_equal(net->addr, a, net->prefix);
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
		memcpy(a, &sin6->sin6_addr, 16);
		if (net->family == AF_INET6)
			return prefix_equal(net->addr, a, net->prefix);
		if (memcmp(a, mapped_prefix, sizeof(mapped_prefix)) != 0)
			return false;
		return prefix_equal(net->addr, a + 12, net->prefix);
	}
	return false;
}

/* cidr_list_contains - does any network in list contain sa? */
bool cidr_list_contains(const struct cidr_list *list, const struct sockaddr *sa)
{
	if (list == NULL || sa == NULL)
		return false;
	for (size_t i = 0; i < list->count; i++)
		if (cidr_contains(&list->items[i], sa))
			return true;
	return false;
}

/* cidr_format - "192.0.2.0/24" into buf; returns buf */
const char *cidr_format(const struct cidr *net, char *buf, size_t size)
{
	char text[INET6_ADDRSTRLEN];

	if (size == 0)
		return buf;
	if (inet_ntop(net->family, net->addr, text, sizeof(text)) == NULL)
		snprintf(buf, size, "?/%u", net->prefix);
	else
		snprintf(buf, size, "%s/%u", text, net->prefix);
	return buf;
}
