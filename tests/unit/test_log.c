/*
 * test_log.c - key=value formatting, level/facility names, and the
 * "ident[pid]: level: text" line on stderr (a forked child writes its own
 * pid: log.c reads it once and again after a fork, not per line), and a
 * line made with kv_add written by log_line as log_msg writes it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "unit.h"

static const struct {
	const char *value;
	const char *expect;
} kv_cases[] = {
        {"plain", " k=plain"},
        {"<a@b.example>", " k=<a@b.example>"},
        {"", " k=\"\""},
        {NULL, " k=-"},
        {"two words", " k=\"two words\""},
        {"say \"hi\"", " k=\"say \\\"hi\\\"\""},
        {"back\\slash", " k=\"back\\\\slash\""},
        {"a=b", " k=\"a=b\""},
        {"cr\r\nlf", " k=\"cr\\x0D\\x0Alf\""},
        {"caf\xc3\xa9", " k=\"caf\\xC3\\xA9\""},
};

START_TEST(kv_quotes_and_escapes)
{
	char buf[128] = "x";
	size_t len = 1;
	kv_add(buf, sizeof(buf), &len, "k", kv_cases[_i].value);
	ck_assert_str_eq(buf + 1, kv_cases[_i].expect);
	ck_assert_uint_eq(len, strlen(buf));
}
END_TEST

START_TEST(kv_first_pair_has_no_leading_space)
{
	char buf[64];
	size_t len = 0;
	kv_add(buf, sizeof(buf), &len, "a", "1");
	kv_add(buf, sizeof(buf), &len, "b", "2");
	ck_assert_str_eq(buf, "a=1 b=2");
}
END_TEST

START_TEST(kv_truncates_without_overflow)
{
	char buf[12];
	memset(buf, 'Z', sizeof(buf));
	size_t len = 0;
	kv_add(buf, 8, &len, "key", "a long value that does not fit");
	ck_assert_uint_lt(len, 8);
	ck_assert_uint_eq(strlen(buf), len);
	ck_assert_int_eq(buf[8], 'Z'); /* nothing written past size */
}
END_TEST

START_TEST(level_and_facility_names)
{
	int p = -1;
	ck_assert(log_level_from_name("debug", &p));
	ck_assert_int_eq(p, LOG_DEBUG);
	ck_assert(log_level_from_name("WARNING", &p));
	ck_assert_int_eq(p, LOG_WARNING);
	ck_assert(!log_level_from_name("loud", &p));
	ck_assert_str_eq(log_level_name(LOG_NOTICE), "notice");
	ck_assert(log_facility_from_name("local3", &p));
	ck_assert_int_eq(p, LOG_LOCAL3);
	ck_assert(log_facility_from_name("mail", &p));
	ck_assert_int_eq(p, LOG_MAIL);
	ck_assert(!log_facility_from_name("kern", &p));
}
END_TEST

/* logged_by - run fn with stderr sent to a temporary file; what it wrote */
static void logged_by(void (*fn)(void), char *out, size_t size)
{
	FILE *tmp = tmpfile();
	ck_assert_ptr_nonnull(tmp);
	int saved = dup(STDERR_FILENO);
	ck_assert_int_ge(saved, 0);
	ck_assert_int_ge(dup2(fileno(tmp), STDERR_FILENO), 0);
	fn();
	fflush(stderr);
	ck_assert_int_ge(dup2(saved, STDERR_FILENO), 0);
	close(saved);
	rewind(tmp);
	size_t n = fread(out, 1, size - 1, tmp);
	out[n] = '\0';
	fclose(tmp);
}

static void parent_then_child(void)
{
	log_open("vemilter", LOG_MAIL, true, LOG_INFO);
	log_msg(LOG_INFO, "from the parent");
	log_msg(LOG_DEBUG, "dropped");
	fflush(stderr);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		log_msg(LOG_WARNING, "from the child");
		fflush(stderr);
		_exit(0);
	}
	int status;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	char line[64];
	snprintf(line, sizeof(line), "child=%ld", (long)pid);
	log_msg(LOG_INFO, "%s", line);
}

START_TEST(line_carries_the_writers_pid)
{
	char out[1024], want[256];
	logged_by(parent_then_child, out, sizeof(out));
	long parent = (long)getpid();
	snprintf(want, sizeof(want), "vemilter[%ld]: info: from the parent\n", parent);
	ck_assert_msg(strncmp(out, want, strlen(want)) == 0, "got \"%s\"", out);
	ck_assert_msg(strstr(out, "dropped") == NULL, "got \"%s\"", out);
	ck_assert(log_enabled(LOG_INFO) && log_enabled(LOG_ERR) && !log_enabled(LOG_DEBUG));
	const char *child = strstr(out, "child=");
	ck_assert_ptr_nonnull(child);
	long child_pid = strtol(child + 6, NULL, 10);
	ck_assert_int_ne(child_pid, parent);
	snprintf(want, sizeof(want), "vemilter[%ld]: warning: from the child\n", child_pid);
	ck_assert_msg(strstr(out, want) != NULL, "want \"%s\" in \"%s\"", want, out);
}
END_TEST

static void same_line_both_ways(void)
{
	log_open("vemilter", LOG_MAIL, true, LOG_INFO);
	char line[64] = "";
	size_t len = 0;
	kv_add(line, sizeof(line), &len, "verdict sender", "<a@b.example>");
	kv_add(line, sizeof(line), &len, "action", "accept");
	log_msg(LOG_INFO, "%s", line);
	log_line(LOG_INFO, line);
	log_line(LOG_DEBUG, "dropped");
	log_line(LOG_WARNING, "two\nlines\r");
	static char longer[3000];
	memset(longer, 'x', sizeof(longer) - 1);
	log_line(LOG_INFO, longer);
}

/* log_line writes a made line as log_msg("%s") does, one line each: the
 * threshold holds, a CR or LF becomes a space, and a line is cut at 2047
 * octets of text. */
START_TEST(made_line_as_formatted)
{
	static char out[8192];
	char want[256];
	logged_by(same_line_both_ways, out, sizeof(out));
	snprintf(want, sizeof(want), "vemilter[%ld]: info: verdict sender=<a@b.example> action=accept\n",
	         (long)getpid());
	ck_assert_msg(strncmp(out, want, strlen(want)) == 0, "got \"%s\"", out);
	ck_assert_msg(strncmp(out + strlen(want), want, strlen(want)) == 0, "got \"%s\"", out);
	ck_assert_msg(strstr(out, "dropped") == NULL, "got \"%s\"", out);
	snprintf(want, sizeof(want), "vemilter[%ld]: warning: two lines \n", (long)getpid());
	ck_assert_msg(strstr(out, want) != NULL, "want \"%s\" in \"%s\"", want, out);
	const char *x = strstr(out, ": info: x");
	ck_assert_ptr_nonnull(x);
	x += strlen(": info: ");
	ck_assert_int_eq(strspn(x, "x"), 2047);
	ck_assert_str_eq(x + 2047, "\n");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("log");
	TCase *tc = tcase_create("log");
	tcase_add_loop_test(tc, kv_quotes_and_escapes, 0, (int)(sizeof(kv_cases) / sizeof(kv_cases[0])));
	tcase_add_test(tc, kv_first_pair_has_no_leading_space);
	tcase_add_test(tc, kv_truncates_without_overflow);
	tcase_add_test(tc, level_and_facility_names);
	tcase_add_test(tc, line_carries_the_writers_pid);
	tcase_add_test(tc, made_line_as_formatted);
	suite_add_tcase(s, tc);
	return unit_run(s);
}
