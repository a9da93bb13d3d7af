/*
 * netguard.h - which addresses a probe may connect to.
 *
 * A hostile sender domain can point its MX at our own network or at
 * addresses that are never mail servers; we never connect there. Denied:
 * loopback, RFC 1918 private, CGNAT (100.64/10), link-local, multicast,
 * reserved and "this network" ranges, unspecified, documentation (TEST-NET,
 * 2001:db8::/32), benchmarking, IPv6 ULA, loopback, link-local, IPv4-mapped
 * and other transition forms, unless the address is in the allow list
 * (probe_allow_networks; tests allow 127.0.0.0/8). Pure.
 */
#ifndef VEMILTER_NETGUARD_H
#define VEMILTER_NETGUARD_H

#include <stdbool.h>
#include <sys/socket.h>

#include "cidr.h"

/* netguard_allows - true if sa may be probed; otherwise *why names the range
 * ("loopback", "private (RFC 1918)", ...). allow may be NULL. */
bool netguard_allows(const struct sockaddr *sa, const struct cidr_list *allow, const char **why);

#endif
