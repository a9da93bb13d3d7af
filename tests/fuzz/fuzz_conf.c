/*
 * fuzz_conf.c - conf_load_text() on arbitrary text (src/conf.h).
 *
 * The input (cut at its first NUL) is parsed as "fuzz.conf". Every error
 * message must start with "fuzz.conf:" and hold no CR or LF; a load fails
 * exactly when an error was reported. Inputs containing "file:" are
 * skipped: a list item "file:PATH" would read arbitrary files.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NAME "fuzz.conf"

#define check(cond)                                                                                          \
	do {                                                                                                 \
		if (!(cond)) {                                                                               \
			fprintf(stderr, "fuzz_conf: invariant failed: %s (line %d)\n", #cond, __LINE__);     \
			abort();                                                                             \
		}                                                                                            \
	} while (0)

static void on_error(void *arg, const char *message)
{
	unsigned *errors = arg;
	(*errors)++;
	check(strncmp(message, NAME ":", strlen(NAME ":")) == 0);
	check(strchr(message, '\n') == NULL);
	check(strchr(message, '\r') == NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned errors = 0;

	if (size > 64 * 1024)
		return 0;
	char *text = malloc(size + 1);
	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	if (strstr(text, "file:") != NULL) {
		free(text);
		return 0;
	}
	struct conf *c = conf_load_text(NAME, text, on_error, &errors);
	check((c == NULL) == (errors > 0));
	if (c != NULL) {
		check(c->path != NULL && strcmp(c->path, NAME) == 0);
		check(conf_ref(c) == c);
		conf_unref(c);
	}
	conf_unref(c);
	free(text);
	return 0;
}
