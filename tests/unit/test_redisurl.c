/*
 * test_redisurl.c - redis:// cache URLs: what is accepted, what is refused
 * and why (a password in the URL, TLS, bad ports and databases); the
 * password file's first line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "redisurl.h"
#include "unit.h"

static const struct {
	const char *in;
	const char *user, *host;
	int port, db;
	const char *formatted;
} good[] = {
        {"redis://127.0.0.1", "", "127.0.0.1", 6379, 0, "redis://127.0.0.1:6379/0"},
        {"redis://127.0.0.1:6380/2", "", "127.0.0.1", 6380, 2, "redis://127.0.0.1:6380/2"},
        {"REDIS://cache.example.net/", "", "cache.example.net", 6379, 0, "redis://cache.example.net:6379/0"},
        {"redis://vemilter@10.0.0.5:7000/15", "vemilter", "10.0.0.5", 7000, 15,
         "redis://vemilter@10.0.0.5:7000/15"},
        {"redis://[::1]:6379/1", "", "::1", 6379, 1, "redis://[::1]:6379/1"},
        {"redis://[2001:db8::7]", "", "2001:db8::7", 6379, 0, "redis://[2001:db8::7]:6379/0"},
};

static const struct {
	const char *in;
	const char *why; /* a word the reason must hold */
} bad[] = {
        {"rediss://127.0.0.1", "TLS"},
        {"redis://user:secret@127.0.0.1", "password"},
        {"redis://:secret@127.0.0.1", "password"},
        {"redis://", "host"},
        {"redis://:6379", "host"},
        {"redis://127.0.0.1:0", "port"},
        {"redis://127.0.0.1:65536", "port"},
        {"redis://127.0.0.1:63x9", "port"},
        {"redis://127.0.0.1:", "port"},
        {"redis://127.0.0.1/16", "database"},
        {"redis://127.0.0.1/-1", "database"},
        {"redis://127.0.0.1/1/2", "database"},
        {"redis://127.0.0.1?db=1", "query"},
        {"redis://[::1", "["},
        {"redis://[]:6379", "IPv6"},
        {"redis://[nothost]", "IPv6"},
        {"redis://bad host", "host"},
        {"redis://@127.0.0.1", "user"},
        {"/var/lib/vemilter/cache.lmdb", "redis://"},
};

START_TEST(parse_good)
{
	struct redis_url url;
	char why[300] = "", buf[400];

	ck_assert_msg(redis_url_parse(good[_i].in, &url, why, sizeof(why)), "%s: %s", good[_i].in, why);
	ck_assert_str_eq(url.user, good[_i].user);
	ck_assert_str_eq(url.host, good[_i].host);
	ck_assert_int_eq(url.port, good[_i].port);
	ck_assert_int_eq(url.db, good[_i].db);
	ck_assert_str_eq(redis_url_format(&url, buf, sizeof(buf)), good[_i].formatted);
}
END_TEST

START_TEST(parse_bad)
{
	struct redis_url url;
	char why[300] = "";

	ck_assert_msg(!redis_url_parse(bad[_i].in, &url, why, sizeof(why)), "%s accepted", bad[_i].in);
	ck_assert_msg(strstr(why, bad[_i].why) != NULL, "%s: reason \"%s\" lacks \"%s\"", bad[_i].in, why,
	              bad[_i].why);
}
END_TEST

START_TEST(is_url)
{
	ck_assert(redis_url_is("redis://x"));
	ck_assert(redis_url_is("Rediss://x"));
	ck_assert(!redis_url_is("/var/lib/vemilter/cache.lmdb"));
	ck_assert(!redis_url_is("redis:/x"));
	ck_assert(!redis_url_is(""));
	ck_assert(!redis_url_is(NULL));
}
END_TEST

/* write_file - text into a fresh temporary file; its path into path */
static void write_file(char *path, size_t size, const char *text, size_t len)
{
	snprintf(path, size, "/tmp/vm-redispw-XXXXXX");
	int fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, text, len), (ssize_t)len);
	close(fd);
}

START_TEST(password_file)
{
	char path[64], buf[REDIS_PASSWORD_MAX], why[300];
	static const struct {
		const char *text;
		bool ok;
		const char *want; /* the password, or a word of the reason */
	} cases[] = {
	        {"s3cret\n", true, "s3cret"},
	        {"s3cret", true, "s3cret"},
	        {"s3cret\r\nother\n", true, "s3cret"},
	        {"", false, "empty"},
	        {"\nsecond\n", false, "first line is empty"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		write_file(path, sizeof(path), cases[i].text, strlen(cases[i].text));
		why[0] = '\0';
		bool ok = redis_password_read(path, buf, sizeof(buf), why, sizeof(why));
		unlink(path);
		ck_assert_msg(ok == cases[i].ok, "case %zu: %s", i, why);
		if (ok)
			ck_assert_str_eq(buf, cases[i].want);
		else
			ck_assert_msg(strstr(why, cases[i].want) && !strstr(why, "second"), "case %zu: %s", i,
			              why);
	}
	/* a line longer than the buffer is refused, not cut */
	char small[8];
	write_file(path, sizeof(path), "0123456789\n", 11);
	ck_assert(!redis_password_read(path, small, sizeof(small), why, sizeof(why)));
	ck_assert_ptr_nonnull(strstr(why, "longer"));
	ck_assert_ptr_null(strstr(why, "0123"));
	unlink(path);
	/* no file named: no password; a missing file: a reason with the path */
	ck_assert(redis_password_read("", buf, sizeof(buf), why, sizeof(why)));
	ck_assert_str_eq(buf, "");
	ck_assert(!redis_password_read("/nonexistent/vm-pw", buf, sizeof(buf), why, sizeof(why)));
	ck_assert_ptr_nonnull(strstr(why, "/nonexistent/vm-pw"));
}
END_TEST

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

int main(void)
{
	Suite *s = suite_create("redisurl");
	TCase *tc = tcase_create("redisurl");

	tcase_add_loop_test(tc, parse_good, 0, N(good));
	tcase_add_loop_test(tc, parse_bad, 0, N(bad));
	tcase_add_test(tc, is_url);
	tcase_add_test(tc, password_file);
	suite_add_tcase(s, tc);
	return unit_run(s);
}
