/*
 * netguard.h - which addresses a probe may connect to, and what a refused
 * one is.
 *
 * A hostile sender domain can point its MX at our own network or at
 * addresses that are never mail servers; we never connect there. Denied:
 * every block of the IANA IPv4 and IPv6 Special-Purpose Address Registries
 * that is not globally reachable (loopback, RFC 1918 private, CGNAT,
 * link-local, "this network", documentation, benchmarking, IETF protocol
 * assignments, ULA, discard-only, dummy prefixes, local-use NAT64, SRv6
 * SIDs ...), plus multicast, the reserved 240/4, the deprecated IPv6
 * site-local (fec0::/10), IPv4-compatible (::/96) and SIIT (::ffff:0:0:0/96)
 * forms, Teredo, and 6to4: unless the address is in the allow list
 * (probe_allow_networks; tests allow 127.0.0.0/8). An address that embeds
 * an IPv4 address at a known place (IPv4-mapped ::ffff:a.b.c.d, the NAT64
 * well-known prefix 64:ff9b::/96, 6to4 2002:AABB:CCDD::/48) is judged by
 * that IPv4 address when it is denied; otherwise an IPv4-mapped or 6to4
 * address is denied as such, and a NAT64 one (what DNS64 makes of a
 * public IPv4 address on an IPv6-only network) is allowed, as its IPv4
 * address would be.
 *
 * A denied address is one of two kinds, for the callout's verdict when the
 * guard refuses every address of a domain (classify_address_bogus):
 * bogus, where no mail server of any domain can be, whatever network we
 * are on (loopback, unspecified, "this network", multicast, reserved,
 * broadcast, documentation, discard-only and dummy prefixes): no_domain;
 * or private, which may be a real server on some network (RFC 1918, CGNAT,
 * link-local, ULA, site-local, local-use NAT64, SIIT, 6to4, ...): refusing
 * it is our policy, so unverifiable, never no_domain. Pure.
 */
#ifndef VEMILTER_NETGUARD_H
#define VEMILTER_NETGUARD_H

#include <stdbool.h>
#include <sys/socket.h>

#include "cidr.h"

enum netguard_class {
	NETGUARD_GLOBAL,  /* may be probed */
	NETGUARD_PRIVATE, /* denied, but may be a real server on some network (or not an IP address) */
	NETGUARD_BOGUS,   /* denied: no mail server can be there */
};

/* netguard_judge - the class of sa, whatever the allow list; *why (may be
 * NULL) names the block of a denied one ("private (RFC 1918)", ...) and is
 * left alone for a global one. NULL or non-IP: NETGUARD_PRIVATE ("no
 * address", "not an IP address"). */
enum netguard_class netguard_judge(const struct sockaddr *sa, const char **why);

/* netguard_allows - true if sa may be probed: global, or in allow (may be
 * NULL); otherwise *why (may be NULL) names the block. */
bool netguard_allows(const struct sockaddr *sa, const struct cidr_list *allow, const char **why);

#endif
