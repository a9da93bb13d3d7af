/*
 * test_localaddr.c - this host's addresses: what counts as ours (always
 * 127.0.0.1, ::1, 0.0.0.0, ::; every interface address getifaddrs lists;
 * IPv4-mapped forms), what does not (127.0.0.2, documentation ranges), and
 * that the list is read again once stale.
 */
#include <ifaddrs.h>
#include <stdio.h>
#include <string.h>

#include "localaddr.h"
#include "unit.h"

static bool mine(struct local_addrs *l, const char *text)
{
	struct sockaddr_storage ss;
	return local_addrs_has(l, unit_sockaddr(text, &ss));
}

START_TEST(always_ours)
{
	struct local_addrs none = {0}; /* nothing read: only the fixed ones */
	ck_assert(mine(&none, "127.0.0.1"));
	ck_assert(mine(&none, "::1"));
	ck_assert(mine(&none, "0.0.0.0"));
	ck_assert(mine(&none, "::"));
	ck_assert(mine(&none, "::ffff:127.0.0.1"));
	ck_assert(!mine(&none, "127.0.0.2")); /* the test farm lives there: not an interface address */
	ck_assert(!mine(&none, "127.1.2.3"));
	ck_assert(!mine(&none, "192.0.2.1"));
	ck_assert(!mine(&none, "2001:db8::1"));
	ck_assert(!mine(&none, "::2"));
	ck_assert(!local_addrs_has(&none, NULL));
	struct sockaddr unix_family = {.sa_family = AF_UNIX};
	ck_assert(!local_addrs_has(&none, &unix_family));
}
END_TEST

START_TEST(interfaces)
{
	struct local_addrs l = {0};
	char why[80] = "";
	ck_assert_msg(local_addrs_load(&l, 1000, why, sizeof(why)), "%s", why);
	ck_assert_int_eq(l.loaded_ms, 1000);
	/* every address getifaddrs reports is ours, ports ignored */
	struct ifaddrs *list = NULL;
	ck_assert_int_eq(getifaddrs(&list), 0);
	int checked = 0;
	for (struct ifaddrs *i = list; i != NULL; i = i->ifa_next) {
		if (i->ifa_addr == NULL ||
		    (i->ifa_addr->sa_family != AF_INET && i->ifa_addr->sa_family != AF_INET6))
			continue;
		struct sockaddr_storage ss;
		memcpy(&ss, i->ifa_addr,
		       i->ifa_addr->sa_family == AF_INET ? sizeof(struct sockaddr_in)
		                                         : sizeof(struct sockaddr_in6));
		if (ss.ss_family == AF_INET)
			((struct sockaddr_in *)&ss)->sin_port = htons(25);
		else
			((struct sockaddr_in6 *)&ss)->sin6_port = htons(25);
		ck_assert(local_addrs_has(&l, (struct sockaddr *)&ss));
		checked++;
	}
	freeifaddrs(list);
	ck_assert_int_gt(checked, 0); /* at least lo */
	ck_assert(!mine(&l, "192.0.2.1"));
	ck_assert(!mine(&l, "127.0.0.2"));
	local_addrs_clear(&l);
	ck_assert_ptr_null(l.addrs);
	ck_assert_uint_eq(l.count, 0);
}
END_TEST

START_TEST(ipv4_mapped)
{
	struct local_addrs l = {0};
	struct sockaddr_storage ss;
	char why[80];
	ck_assert(local_addrs_load(&l, 5, why, sizeof(why)));
	/* an interface address in its IPv4-mapped IPv6 form counts too */
	for (size_t i = 0; i < l.count; i++) {
		if (l.addrs[i].ss_family != AF_INET)
			continue;
		char text[64];
		unsigned char *b = (unsigned char *)&((struct sockaddr_in *)&l.addrs[i])->sin_addr;
		snprintf(text, sizeof(text), "::ffff:%u.%u.%u.%u", b[0], b[1], b[2], b[3]);
		ck_assert_msg(local_addrs_has(&l, unit_sockaddr(text, &ss)), "%s", text);
	}
	local_addrs_clear(&l);
}
END_TEST

START_TEST(refresh)
{
	struct local_addrs l = {0};
	struct sockaddr_storage ss;
	/* the first question reads the list */
	ck_assert(local_addrs_is_mine(&l, unit_sockaddr("127.0.0.1", &ss), 10));
	ck_assert_int_eq(l.loaded_ms, 10);
	/* within the refresh time it is not read again */
	ck_assert(!local_addrs_is_mine(&l, unit_sockaddr("192.0.2.1", &ss), 10 + LOCAL_ADDRS_REFRESH_MS - 1));
	ck_assert_int_eq(l.loaded_ms, 10);
	/* after it, it is */
	ck_assert(!local_addrs_is_mine(&l, unit_sockaddr("192.0.2.1", &ss), 10 + LOCAL_ADDRS_REFRESH_MS));
	ck_assert_int_eq(l.loaded_ms, 10 + LOCAL_ADDRS_REFRESH_MS);
	local_addrs_clear(&l);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("localaddr");
	TCase *tc = tcase_create("localaddr");
	tcase_add_test(tc, always_ours);
	tcase_add_test(tc, interfaces);
	tcase_add_test(tc, ipv4_mapped);
	tcase_add_test(tc, refresh);
	suite_add_tcase(s, tc);
	return unit_run(s);
}
