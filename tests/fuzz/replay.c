/*
 * replay.c - a main() for the fuzz targets without libFuzzer.
 *
 * Each argument is a file or a directory (every regular file in it, sorted by
 * name). Every input goes once through LLVMFuzzerTestOneInput; one TAP line
 * per input ("ok N - <target> <file>"), the plan last. A violated invariant
 * aborts, which the TAP driver reports as a failure. Compiled out with
 * -DVEMILTER_LIBFUZZER, where libFuzzer brings its own main().
 */
#ifndef VEMILTER_LIBFUZZER

#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned tests;
static const char *target = "fuzz";

/* read_all - the whole file at path into a fresh buffer; NULL on error */
static uint8_t *read_all(const char *path, size_t *size)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return NULL;
	size_t cap = 4096, len = 0;
	uint8_t *buf = malloc(cap);
	size_t n;
	while (buf != NULL && (n = fread(buf + len, 1, cap - len, f)) > 0) {
		len += n;
		if (len == cap) {
			uint8_t *bigger = realloc(buf, cap *= 2);
			if (bigger == NULL)
				free(buf);
			buf = bigger;
		}
	}
	if (buf != NULL && ferror(f)) {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	*size = len;
	return buf;
}

/* run_file - one input; false if it cannot be read */
static int run_file(const char *path)
{
	size_t size = 0;
	uint8_t *data = read_all(path, &size);
	if (data == NULL) {
		fprintf(stderr, "%s: %s: %s\n", target, path, strerror(errno));
		printf("not ok %u - %s %s # cannot read\n", ++tests, target, path);
		return 1;
	}
	/* an exact-size copy, so that an over-read is caught by ASan/valgrind */
	uint8_t *exact = malloc(size > 0 ? size : 1);
	if (exact == NULL) {
		free(data);
		return 1;
	}
	memcpy(exact, data, size);
	free(data);
	fflush(stdout);
	LLVMFuzzerTestOneInput(exact, size);
	free(exact);
	printf("ok %u - %s %s\n", ++tests, target, path);
	return 0;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* run_dir - every regular file in dir, sorted; returns the failures */
static int run_dir(const char *dir)
{
	DIR *d = opendir(dir);
	if (d == NULL) {
		fprintf(stderr, "%s: %s: %s\n", target, dir, strerror(errno));
		printf("not ok %u - %s %s # cannot open\n", ++tests, target, dir);
		return 1;
	}
	char **names = NULL;
	size_t count = 0, cap = 0;
	struct dirent *e;
	int failures = 0;
	while ((e = readdir(d)) != NULL) {
		char *path;
		struct stat st;
		if (asprintf(&path, "%s/%s", dir, e->d_name) < 0)
			abort();
		if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
			free(path);
			continue;
		}
		if (count == cap) {
			cap = cap ? cap * 2 : 64;
			names = realloc(names, cap * sizeof(*names));
			if (names == NULL)
				abort();
		}
		names[count++] = path;
	}
	closedir(d);
	if (count > 0)
		qsort(names, count, sizeof(*names), by_name);
	for (size_t i = 0; i < count; i++) {
		failures += run_file(names[i]);
		free(names[i]);
	}
	free(names);
	return failures;
}

int main(int argc, char **argv)
{
	int failures = 0;
	const char *slash = strrchr(argv[0], '/');
	target = slash != NULL ? slash + 1 : argv[0];
	if (strncmp(target, "lt-", 3) == 0)
		target += 3;
	for (int i = 1; i < argc; i++) {
		struct stat st;
		if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode))
			failures += run_dir(argv[i]);
		else
			failures += run_file(argv[i]);
	}
	printf("1..%u\n", tests);
	return failures == 0 ? 0 : 1;
}

#endif
