/*
 * fuzzcheck.h - how the fuzz targets stop on a broken invariant: FAIL()
 * prints where (file and line, to stderr, unbuffered) and aborts, so that
 * libFuzzer and the replay both report the input and the reason.
 */
#ifndef VEMILTER_FUZZCHECK_H
#define VEMILTER_FUZZCHECK_H

#include <stdio.h>
#include <stdlib.h>

#define FAIL()                                                                                               \
	do {                                                                                                 \
		fprintf(stderr, "%s:%d: invariant failed\n", __FILE__, __LINE__);                            \
		abort();                                                                                     \
	} while (0)

#endif
