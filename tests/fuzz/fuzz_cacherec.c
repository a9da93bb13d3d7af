/*
 * fuzz_cacherec.c - cache_record_decode() on arbitrary bytes (src/cache.h).
 *
 * A record that decodes must encode again (same length, same bytes: the
 * format has a single encoding; a version 1 record comes out as version 2,
 * its 40-octet header grown to 50 and the strings the same), and decode
 * again into an equal record, compared field by field. Decoded strings must be NUL-terminated, within
 * their capacity and free of control octets. A violation aborts.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond)                                                                                          \
	do {                                                                                                 \
		if (!(cond)) {                                                                               \
			fprintf(stderr, "fuzz_cacherec: invariant failed: %s (line %d)\n", #cond, __LINE__); \
			abort();                                                                             \
		}                                                                                            \
	} while (0)

/* clean - s is NUL-terminated within size and has no control octet */
static int clean(const char *s, size_t size)
{
	const char *end = memchr(s, '\0', size);
	if (end == NULL)
		return 0;
	for (; s < end; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f)
			return 0;
	return 1;
}

static void check_record(const struct cache_record *r)
{
	const struct outcome *o = &r->outcome;
	check((unsigned)o->kind < OUTCOME_KIND_COUNT);
	check(strcmp(probe_stage_name(o->stage), "unknown") != 0);
	check(o->code >= 0 && o->code <= 999);
	check(clean(o->ecode, sizeof(o->ecode)));
	check(clean(o->text, sizeof(o->text)));
	check(clean(o->reason, sizeof(o->reason)));
	check(clean(o->mx_host, sizeof(o->mx_host)));
	check(clean(o->mx_addr, sizeof(o->mx_addr)));
}

/* same - a and b hold the same record (fields, not padding) */
static int same(const struct cache_record *a, const struct cache_record *b)
{
	const struct outcome *x = &a->outcome, *y = &b->outcome;
	return x->kind == y->kind && x->stage == y->stage && x->code == y->code &&
	       strcmp(x->ecode, y->ecode) == 0 && strcmp(x->text, y->text) == 0 &&
	       strcmp(x->reason, y->reason) == 0 && strcmp(x->mx_host, y->mx_host) == 0 &&
	       strcmp(x->mx_addr, y->mx_addr) == 0 && a->probed_at_ms == b->probed_at_ms &&
	       a->refresh_at_ms == b->refresh_at_ms && a->expires_at_ms == b->expires_at_ms &&
	       x->flags == y->flags && a->deferred_since_ms == b->deferred_since_ms && a->tries == b->tries;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cache_record first, second;
	unsigned char buf[CACHE_RECORD_MAX];

	memset(&first, 0x5a, sizeof(first));
	if (!cache_record_decode(data, size, &first))
		return 0;
	check(size <= CACHE_RECORD_MAX);
	check_record(&first);

	size_t n = cache_record_encode(&first, buf, sizeof(buf));
	if (data[0] == 1) { /* version 1: re-encoded as version 2 */
		check(n == size + 10);
		check(buf[0] == 2 && memcmp(buf + 1, data + 1, 39) == 0);
		check(memcmp(buf + 50, data + 40, size - 40) == 0);
	} else {
		check(n == size);
		check(memcmp(buf, data, n) == 0);
	}
	/* a buffer one octet short must be refused, not overrun */
	check(cache_record_encode(&first, buf, n - 1) == 0);

	memset(&second, 0xa5, sizeof(second));
	check(cache_record_decode(buf, n, &second));
	check_record(&second);
	check(same(&first, &second));
	/* one octet less or more is a bad length */
	check(!cache_record_decode(buf, n - 1, &second));
	return 0;
}
