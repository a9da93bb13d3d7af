/*
 * fuzz_addr.c - addr_parse() on arbitrary bytes (src/addr.h).
 *
 * On success: normalized == local "@" domain_ascii (or "" for the null
 * sender), every field NUL-terminated within its RFC bound, domain_ascii
 * lower-case ASCII, why untouched or empty. On failure: why is non-empty printable
 * ASCII. A violation aborts.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define WHY_SIZE 200

/* check - abort with a message when cond is false */
#define check(cond)                                                                                          \
	do {                                                                                                 \
		if (!(cond)) {                                                                               \
			fprintf(stderr, "fuzz_addr: invariant failed: %s (line %d)\n", #cond, __LINE__);     \
			abort();                                                                             \
		}                                                                                            \
	} while (0)

/* printable - s is non-empty printable ASCII */
static int printable(const char *s)
{
	if (*s == '\0')
		return 0;
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			return 0;
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct addr a;
	char why[WHY_SIZE];
	char expect[ADDR_LOCAL_MAX + 1 + ADDR_DOMAIN_MAX + 1];

	memset(&a, 0x5a, sizeof(a));
	memset(why, 0x5a, sizeof(why));
	why[sizeof(why) - 1] = '\0';

	if (!addr_parse((const char *)data, size, &a, why, sizeof(why))) {
		check(memchr(why, '\0', sizeof(why)) != NULL);
		check(printable(why));
		return 0;
	}
	/* why untouched, cleared, or at most a printable string */
	check(memchr(why, '\0', sizeof(why)) != NULL);
	check(why[0] == 0x5a || why[0] == '\0' || printable(why));

	check(memchr(a.local, '\0', sizeof(a.local)) != NULL);
	check(memchr(a.domain, '\0', sizeof(a.domain)) != NULL);
	check(memchr(a.domain_ascii, '\0', sizeof(a.domain_ascii)) != NULL);
	check(memchr(a.normalized, '\0', sizeof(a.normalized)) != NULL);
	check(strlen(a.local) <= ADDR_LOCAL_MAX);
	check(strlen(a.domain) <= ADDR_DOMAIN_MAX);
	check(strlen(a.domain_ascii) <= ADDR_DOMAIN_MAX);
	check(strlen(a.normalized) < ADDR_PATH_MAX);

	if (a.is_null) {
		check(a.normalized[0] == '\0');
		return 0;
	}
	check(a.local[0] != '\0');
	check(a.domain[0] != '\0');
	check(a.domain_ascii[0] != '\0');
	check(a.domain_kind == ADDR_DOMAIN_NAME || a.domain_kind == ADDR_DOMAIN_IPV4 ||
	      a.domain_kind == ADDR_DOMAIN_IPV6);
	for (const char *p = a.domain_ascii; *p != '\0'; p++) {
		unsigned char c = (unsigned char)*p;
		check(c > 0x20 && c < 0x7f);
		check(!(c >= 'A' && c <= 'Z'));
	}
	if (a.domain_kind != ADDR_DOMAIN_NAME)
		check(a.domain_ascii[0] == '[' && a.domain_ascii[strlen(a.domain_ascii) - 1] == ']');
	/* the local part: no control octets; local_utf8 iff non-ASCII */
	int non_ascii = 0;
	for (const char *p = a.local; *p != '\0'; p++) {
		unsigned char c = (unsigned char)*p;
		check(c >= 0x20 && c != 0x7f);
		if (c >= 0x80)
			non_ascii = 1;
	}
	check(non_ascii == (a.local_utf8 ? 1 : 0));
	check(a.local_quoted == (a.local[0] == '"'));

	snprintf(expect, sizeof(expect), "%s@%s", a.local, a.domain_ascii);
	check(strcmp(a.normalized, expect) == 0);
	return 0;
}
