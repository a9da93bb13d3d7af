/*
 * fuzz_dnsttl.c - dnsttl_scan() on arbitrary bytes (src/dnsttl.h).
 *
 * The input is taken as a DNS response. Checked: a refused input leaves
 * both TTLs DNSTTL_NONE; an accepted one gives TTLs of 0..2^31-1 seconds
 * or DNSTTL_NONE; the same input scans the same twice; octets appended
 * after an accepted input change nothing (the scan stops at the first
 * SOA or at the end of the authority section), and cutting the last
 * octet off a refused input never makes it accepted (the scan only moves
 * forward). A violation aborts.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dnsttl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond)                                                                                          \
	do {                                                                                                 \
		if (!(cond)) {                                                                               \
			fprintf(stderr, "fuzz_dnsttl: invariant failed: %s (line %d)\n", #cond, __LINE__);   \
			abort();                                                                             \
		}                                                                                            \
	} while (0)

#define TAIL 16

static int in_range(int64_t s)
{
	return s == DNSTTL_NONE || (s >= 0 && s <= INT32_MAX);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dnsttl first, again;
	memset(&first, 0x5a, sizeof(first));
	int ok = dnsttl_scan(data, size, &first);
	if (!ok) {
		check(first.answer_s == DNSTTL_NONE && first.negative_s == DNSTTL_NONE);
		if (size > 0)
			check(!dnsttl_scan(data, size - 1, &again));
		return 0;
	}
	check(in_range(first.answer_s) && in_range(first.negative_s));
	check(dnsttl_scan(data, size, &again));
	check(again.answer_s == first.answer_s && again.negative_s == first.negative_s);

	unsigned char *longer = malloc(size + TAIL);
	check(longer != NULL);
	memcpy(longer, data, size);
	memset(longer + size, 0xC0, TAIL);
	check(dnsttl_scan(longer, size + TAIL, &again));
	check(again.answer_s == first.answer_s && again.negative_s == first.negative_s);
	free(longer);
	return 0;
}
