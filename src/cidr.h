/*
 * cidr.h - IPv4/IPv6 networks in CIDR notation and matching addresses to them.
 *
 * Pure values: a struct cidr holds the network in network byte order; lists
 * are arrays owned by whoever built them (conf.c frees its own). An
 * IPv4-mapped IPv6 address (::ffff:192.0.2.1) matches IPv4 networks.
 */
#ifndef VEMILTER_CIDR_H
#define VEMILTER_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct cidr {
	int family;       /* AF_INET or AF_INET6 */
	uint8_t addr[16]; /* network address, host bits cleared; 4 bytes used for AF_INET */
	unsigned prefix;  /* 0..32 or 0..128 */
};

struct cidr_list {
	size_t count;
	struct cidr *items; /* owned by the list's builder */
};

/* cidr_parse - "192.0.2.0/24", "2001:db8::/32", or a bare address (host
 * prefix). Host bits set below the prefix are an error ("192.0.2.1/24" is
 * almost always a typo). On failure writes a reason into why. */
bool cidr_parse(const char *text, struct cidr *out, char *why, size_t why_size);

/* cidr_contains - does net contain the address sa (AF_INET or AF_INET6)? */
bool cidr_contains(const struct cidr *net, const struct sockaddr *sa);

/* cidr_list_contains - does any network in list contain sa? NULL sa: false. */
bool cidr_list_contains(const struct cidr_list *list, const struct sockaddr *sa);

/* cidr_format - "192.0.2.0/24" into buf; returns buf. */
const char *cidr_format(const struct cidr *net, char *buf, size_t size);

#endif
