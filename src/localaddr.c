/*
 * localaddr.c - this host's addresses (see localaddr.h): read with
 * getifaddrs(), compared without ports, IPv4-mapped IPv6 folded to IPv4.
 *
 * Owns the array in struct local_addrs; nothing else.
 */
#include "localaddr.h"

#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* canonical - addr with port 0, an IPv4-mapped IPv6 address as IPv4; false
 * for any other family */
static bool canonical(const struct sockaddr *addr, struct sockaddr_storage *out)
{
	memset(out, 0, sizeof(*out));
	if (addr == NULL)
		return false;
	if (addr->sa_family == AF_INET) {
		struct sockaddr_in *o = (struct sockaddr_in *)out;
		o->sin_family = AF_INET;
		o->sin_addr = ((const struct sockaddr_in *)addr)->sin_addr;
		return true;
	}
	if (addr->sa_family != AF_INET6)
		return false;
	const struct in6_addr *a6 = &((const struct sockaddr_in6 *)addr)->sin6_addr;
	if (IN6_IS_ADDR_V4MAPPED(a6)) {
		struct sockaddr_in *o = (struct sockaddr_in *)out;
		o->sin_family = AF_INET;
		memcpy(&o->sin_addr, &a6->s6_addr[12], 4);
		return true;
	}
	struct sockaddr_in6 *o = (struct sockaddr_in6 *)out;
	o->sin6_family = AF_INET6;
	o->sin6_addr = *a6;
	return true;
}

/* same - two canonical addresses equal? */
static bool same(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
		       ((const struct sockaddr_in *)b)->sin_addr.s_addr;
	return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
	              &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
}

/* always_ours - 127.0.0.1, 0.0.0.0, ::1, :: */
static bool always_ours(const struct sockaddr_storage *a)
{
	if (a->ss_family == AF_INET) {
		in_addr_t v = ntohl(((const struct sockaddr_in *)a)->sin_addr.s_addr);
		return v == INADDR_LOOPBACK || v == INADDR_ANY;
	}
	const struct in6_addr *a6 = &((const struct sockaddr_in6 *)a)->sin6_addr;
	return IN6_IS_ADDR_LOOPBACK(a6) || IN6_IS_ADDR_UNSPECIFIED(a6);
}

/* local_addrs_load - see localaddr.h */
bool local_addrs_load(struct local_addrs *l, int64_t now_ms, char *why, size_t why_size)
{
	struct ifaddrs *list = NULL;
	if (getifaddrs(&list) != 0) {
		snprintf(why, why_size, "getifaddrs failed");
		return false;
	}
	size_t room = 0;
	for (struct ifaddrs *i = list; i != NULL; i = i->ifa_next)
		room++;
	struct sockaddr_storage *addrs = calloc(room > 0 ? room : 1, sizeof(*addrs));
	if (addrs == NULL) {
		freeifaddrs(list);
		snprintf(why, why_size, "out of memory");
		return false;
	}
	size_t count = 0;
	for (struct ifaddrs *i = list; i != NULL; i = i->ifa_next) {
		struct sockaddr_storage c;
		if (!canonical(i->ifa_addr, &c))
			continue;
		bool dup = false;
		for (size_t k = 0; k < count && !dup; k++)
			dup = same(&addrs[k], &c);
		if (!dup)
			addrs[count++] = c;
	}
	freeifaddrs(list);
	free(l->addrs);
	l->addrs = addrs;
	l->count = count;
	l->loaded_ms = now_ms;
	return true;
}

/* local_addrs_has - see localaddr.h */
bool local_addrs_has(const struct local_addrs *l, const struct sockaddr *addr)
{
	struct sockaddr_storage c;
	if (!canonical(addr, &c))
		return false;
	if (always_ours(&c))
		return true;
	for (size_t i = 0; l != NULL && i < l->count; i++)
		if (same(&l->addrs[i], &c))
			return true;
	return false;
}

/* local_addrs_is_mine - see localaddr.h */
bool local_addrs_is_mine(struct local_addrs *l, const struct sockaddr *addr, int64_t now_ms)
{
	char why[80];
	if (l->loaded_ms == 0 || now_ms - l->loaded_ms >= LOCAL_ADDRS_REFRESH_MS) {
		/* On failure the old list stands, and is not asked about again
		 * before the next refresh time. */
		if (!local_addrs_load(l, now_ms, why, sizeof(why)))
			l->loaded_ms = now_ms;
	}
	return local_addrs_has(l, addr);
}

/* local_addrs_clear - see localaddr.h */
void local_addrs_clear(struct local_addrs *l)
{
	free(l->addrs);
	l->addrs = NULL;
	l->count = 0;
	l->loaded_ms = 0;
}
