/*
 * unit.h - the one way unit tests run: a Check suite, reported as TAP.
 *
 * make check sets CK_TAP_LOG_FILE_NAME=- so each case is one TAP line that
 * the automake TAP driver counts. Run a test binary by hand to see Check's
 * usual report.
 */
#ifndef VEMILTER_UNIT_H
#define VEMILTER_UNIT_H

#include <check.h>
#include <stdlib.h>

/* unit_run - run every case in s; exit status 0 only if all passed. */
static inline int unit_run(Suite *s)
{
	SRunner *runner = srunner_create(s);
	srunner_run_all(runner, CK_ENV);
	int failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

#endif
