/*
 * fuzzcheck.h - how the fuzz targets stop on a broken invariant: FAIL()
 * prints where (file and line, to stderr, unbuffered) and aborts, so that
 * libFuzzer and the replay both report the input and the reason; and the
 * checks more than one target makes.
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

#include <string.h>

/* fuzz_check_printable - s ends within max bytes and holds printable ASCII
 * only: what may go into an SMTP reply line */
static inline void fuzz_check_printable(const char *s, size_t max)
{
	size_t n = strnlen(s, max + 1);
	if (n > max)
		FAIL();
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			FAIL();
}

#endif
