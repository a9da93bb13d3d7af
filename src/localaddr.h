/*
 * localaddr.h - the addresses of this host, to spot an MX that is ourselves.
 *
 * A domain whose MX resolves to one of our own addresses would be probed
 * through ourselves (a mail loop); callout.c defers it instead, as Postfix
 * does ("mail for ... loops back to myself"). "Ours" means every address
 * getifaddrs() reports for an interface, plus 127.0.0.1, ::1 and the
 * unspecified addresses 0.0.0.0 and :: (connecting there reaches this host).
 * Other loopback addresses (127.0.0.2 and up) are not ours unless an
 * interface carries them. An IPv4-mapped IPv6 address counts as its IPv4
 * address. Ports are ignored.
 *
 * Owns its address list. Interfaces come and go (DHCP, VPNs), so the list
 * is read again when older than LOCAL_ADDRS_REFRESH_MS; a failed reread
 * keeps the old list. No libevent, c-ares or OpenSSL: core.
 */
#ifndef VEMILTER_LOCALADDR_H
#define VEMILTER_LOCALADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define LOCAL_ADDRS_REFRESH_MS 60000

struct local_addrs {
	struct sockaddr_storage *addrs; /* port 0; IPv4-mapped stored as IPv4 */
	size_t count;
	int64_t loaded_ms; /* monotonic time of the last successful read; 0: never */
};

/* local_addrs_load - read the interface addresses now (now_ms: monotonic,
 * stamped on success). False with a reason when getifaddrs or memory fails;
 * the previous list, if any, is kept then. */
bool local_addrs_load(struct local_addrs *l, int64_t now_ms, char *why, size_t why_size);

/* local_addrs_has - is addr (AF_INET or AF_INET6) one of the listed ones, or
 * one that is always ours (127.0.0.1, ::1, 0.0.0.0, ::)? */
bool local_addrs_has(const struct local_addrs *l, const struct sockaddr *addr);

/* local_addrs_is_mine - local_addrs_has, after rereading a list older than
 * LOCAL_ADDRS_REFRESH_MS */
bool local_addrs_is_mine(struct local_addrs *l, const struct sockaddr *addr, int64_t now_ms);

/* local_addrs_clear - free the list; l is empty (and reusable) after */
void local_addrs_clear(struct local_addrs *l);

#endif
