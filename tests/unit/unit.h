/*
 * unit.h - the one way unit tests run: a Check suite, reported as TAP.
 *
 * make check sets CK_TAP_LOG_FILE_NAME=- so each case is one TAP line that
 * the automake TAP driver counts. Run a test binary by hand to see Check's
 * usual report.
 */
#ifndef VEMILTER_UNIT_H
#define VEMILTER_UNIT_H

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* unit_run - run every case in s; exit status 0 only if all passed. */
static inline int unit_run(Suite *s)
{
	SRunner *runner = srunner_create(s);
	srunner_run_all(runner, CK_ENV);
	int failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* unit_sockaddr - an AF_INET or AF_INET6 sockaddr for a literal address
 * (the test fails on anything else); ss is the storage */
static inline const struct sockaddr *unit_sockaddr(const char *text, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, text, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
	} else {
		ck_assert_msg(inet_pton(AF_INET6, text, &sin6->sin6_addr) == 1, "bad test address %s", text);
		sin6->sin6_family = AF_INET6;
	}
	return (const struct sockaddr *)ss;
}

#endif
