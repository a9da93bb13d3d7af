/*
 * test_sharedrule.c - the shared cache's pure part (sharedrule.h): key
 * names, backoff, expiry cap; and its Lua scripts run by a real
 * redis-server that each test case starts on a free loopback port with a
 * data directory of its own (killed at the end). The replace script is
 * checked against cache_record_may_replace() on every pair of outcome
 * kinds, fresh, stale and expired, so the rule cannot drift between the
 * local tier and Redis; then what only Redis adds (an older probe never
 * replaces a newer one, the expiry, damaged and foreign values), the
 * lease release and the fetch.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "clock.h"
#include "localaddr.h"
#include "log.h"
#include "sharedrule.h"
#include "unit.h"

#define SECOND INT64_C(1000)
#define MINUTE (60 * SECOND)
#define DAY    (24 * 60 * MINUTE)

static const char conf_text[] = "positive_ttl = 10d\npositive_refresh = 2d\nnegative_ttl = 3d\n"
                                "negative_refresh = 3h\ninconclusive_ttl = 1d\ntemporary_ttl = 5m\n";

static struct conf *conf;
static char dir[64];
static pid_t server = -1;
static redisContext *rc;
static int64_t base_ms; /* now, when the case started: Redis expires by the real clock */

static void print_error(void *arg, const char *message)
{
	fprintf(stderr, "%s\n", message);
}

/* free_port - a loopback port nobody listens on (the kernel's choice) */
static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_storage ss;
	socklen_t len = sizeof(struct sockaddr_in);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, unit_sockaddr("127.0.0.1", &ss), len), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
	int port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	close(fd);
	return port;
}

/* setup - a config, a scratch directory and a redis-server answering PING
 * (within 10 s) */
static void setup(void)
{
	log_open("test_sharedrule", LOG_USER, true, LOG_ERR);
	conf = conf_load_text("test", conf_text, print_error, NULL);
	ck_assert_ptr_nonnull(conf);
	snprintf(dir, sizeof(dir), "/tmp/test_sharedrule.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	int port = free_port();
	char port_text[16];
	snprintf(port_text, sizeof(port_text), "%d", port);
	server = fork();
	ck_assert_int_ge(server, 0);
	if (server == 0) {
		execlp("redis-server", "redis-server", "--port", port_text, "--bind", "127.0.0.1", "--save",
		       "", "--appendonly", "no", "--dir", dir, "--logfile", "redis.log", (char *)NULL);
		_exit(127);
	}
	struct timeval tv = {.tv_sec = 1};
	for (int i = 0; i < 200 && rc == NULL; i++) {
		redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
		redisReply *r = c != NULL && !c->err ? redisCommand(c, "PING") : NULL;
		if (r != NULL && r->type == REDIS_REPLY_STATUS)
			rc = c;
		else if (c != NULL)
			redisFree(c);
		freeReplyObject(r);
		if (rc == NULL) {
			int status;
			ck_assert_msg(waitpid(server, &status, WNOHANG) == 0,
			              "redis-server did not start (is it installed?)");
			struct timespec pause = {.tv_nsec = 50 * 1000000};
			nanosleep(&pause, NULL);
		}
	}
	ck_assert_msg(rc != NULL, "redis-server does not answer on port %d", port);
	redisSetTimeout(rc, (struct timeval){.tv_sec = 5});
	base_ms = clock_now_ms();
}

static void teardown(void)
{
	if (rc != NULL)
		redisFree(rc);
	rc = NULL;
	if (server > 0) {
		kill(server, SIGKILL);
		waitpid(server, NULL, 0);
	}
	server = -1;
	char name[512];
	DIR *d = opendir(dir);
	struct dirent *e;
	while (d != NULL && (e = readdir(d)) != NULL)
		if (e->d_name[0] != '.') {
			snprintf(name, sizeof(name), "%s/%s", dir, e->d_name);
			unlink(name);
		}
	if (d != NULL)
		closedir(d);
	rmdir(dir);
	conf_unref(conf);
}

static void make(struct cache_record *rec, enum outcome_kind kind, int64_t now)
{
	struct outcome o;
	memset(&o, 0, sizeof(o));
	outcome_set(&o, kind, STAGE_RCPT, 250, "2.1.5", "recipient ok", "test");
	cache_record_make(conf, &o, now, rec);
}

/* put - the replace script on key: 1 written, 0 kept, -1 an error reply */
static long long put(const char *key, const struct cache_record *rec, int64_t now)
{
	unsigned char buf[CACHE_RECORD_MAX];
	size_t n = cache_record_encode(rec, buf, sizeof(buf));
	ck_assert_uint_gt(n, 0);
	char now_text[24], exp_text[24];
	snprintf(now_text, sizeof(now_text), "%lld", (long long)now);
	snprintf(exp_text, sizeof(exp_text), "%lld", (long long)shared_redis_expiry(rec->expires_at_ms));
	const char *argv[] = {"EVAL",   SHARED_LUA_PUT, "1",     key, (const char *)buf,
	                      now_text, exp_text,       "host:1"};
	size_t len[] = {4, strlen(SHARED_LUA_PUT), 1, strlen(key), n, strlen(now_text), strlen(exp_text), 6};
	redisReply *r = redisCommandArgv(rc, 8, argv, len);
	ck_assert_ptr_nonnull(r);
	long long out = r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
	if (r->type == REDIS_REPLY_ERROR)
		fprintf(stderr, "put: %s\n", r->str);
	freeReplyObject(r);
	return out;
}

/* stored - the record under key's "r"; false if none or unreadable */
static bool stored(const char *key, struct cache_record *out)
{
	redisReply *r = redisCommand(rc, "HGET %s r", key);
	ck_assert_ptr_nonnull(r);
	bool ok = r->type == REDIS_REPLY_STRING &&
	          cache_record_decode((const unsigned char *)r->str, r->len, out);
	freeReplyObject(r);
	return ok;
}

static void command_ok(const char *fmt, const char *arg)
{
	redisReply *r = redisCommand(rc, fmt, arg);
	ck_assert_ptr_nonnull(r);
	ck_assert_msg(r->type != REDIS_REPLY_ERROR, "%s: %s", fmt,
	              r->type == REDIS_REPLY_ERROR ? r->str : "");
	freeReplyObject(r);
}

/* command_int - a command's integer reply; any other reply fails the case */
static long long command_int(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = redisvCommand(rc, fmt, ap);
	va_end(ap);
	ck_assert_ptr_nonnull(r);
	ck_assert_msg(r->type == REDIS_REPLY_INTEGER, "%s: not an integer reply (type %d)", fmt, r->type);
	long long n = r->integer;
	freeReplyObject(r);
	return n;
}

/* ---- pure ---- */

START_TEST(key_names)
{
	char buf[SHARED_KEY_MAX];
	shared_key("a:bob@example.org", buf, sizeof(buf));
	ck_assert_str_eq(buf, "vemilter:a:bob@example.org");
	shared_lease_key("a:bob@example.org", buf, sizeof(buf));
	ck_assert_str_eq(buf, "vemilter:lease:a:bob@example.org");
	shared_key("", buf, sizeof(buf));
	ck_assert_str_eq(buf, "");
	char small[12];
	shared_key("d:example.org", small, sizeof(small));
	ck_assert_str_eq(small, ""); /* does not fit: nothing, never a cut key */
	/* every cache key fits */
	char key[CACHE_KEY_MAX];
	memset(key, 'x', sizeof(key) - 1);
	key[sizeof(key) - 1] = '\0';
	shared_lease_key(key, buf, sizeof(buf));
	ck_assert_uint_eq(strlen(buf), strlen(SHARED_LEASE_PREFIX) + CACHE_KEY_MAX - 1);
}
END_TEST

START_TEST(backoff_doubles_to_max)
{
	ck_assert_int_eq(shared_backoff_ms(0, 1000, 30000), 1000);
	ck_assert_int_eq(shared_backoff_ms(1000, 1000, 30000), 2000);
	ck_assert_int_eq(shared_backoff_ms(16000, 1000, 30000), 30000);
	ck_assert_int_eq(shared_backoff_ms(30000, 1000, 30000), 30000);
	ck_assert_int_eq(shared_backoff_ms(0, 50, 20), 20);
	ck_assert_int_eq(shared_redis_expiry(INT64_MAX), INT64_C(253402300799999));
	ck_assert_int_eq(shared_redis_expiry(INT64_C(1700000000000)), INT64_C(1700000000000));
}
END_TEST

/* ---- against redis-server ---- */

/* The script decides as cache_record_may_replace does, for every pair of
 * kinds, at a time the old record is fresh, stale (when it has a refresh
 * time before its expiry) and expired; the stored bytes follow. */
START_TEST(put_rule_matches_c)
{
	int checked = 0;
	for (int o = 0; o < OUTCOME_KIND_COUNT; o++) {
		for (int f = 0; f < OUTCOME_KIND_COUNT; f++) {
			for (int when = 0; when < 3; when++) {
				struct cache_record old, fresh, got;
				make(&old, (enum outcome_kind)o, base_ms);
				int64_t now = when == 0   ? base_ms + SECOND
				              : when == 1 ? old.refresh_at_ms
				                          : old.expires_at_ms;
				if (when == 1 && old.refresh_at_ms >= old.expires_at_ms)
					continue;
				make(&fresh, (enum outcome_kind)f, now);
				fresh.outcome.code = 251; /* told apart from old */
				const char *key = "vemilter:a:rule@example.org";
				command_ok("DEL %s", key);
				ck_assert_int_eq(put(key, &old, base_ms), 1);
				bool want = cache_record_may_replace(&old, &fresh, now);
				long long wrote = put(key, &fresh, now);
				ck_assert_msg(wrote == (want ? 1 : 0),
				              "old %s fresh %s when %d: script %lld, C %d", outcome_name(o),
				              outcome_name(f), when, wrote, want);
				ck_assert(stored(key, &got));
				ck_assert_int_eq(got.outcome.code, want ? 251 : 250);
				checked++;
			}
		}
	}
	ck_assert_int_ge(checked, 7 * 7 * 2);
}
END_TEST

/* What Redis adds: the latest probe stays; a refresh stamp (same probe
 * time, later refresh) replaces its own record; the key expires with the
 * record; an expired fresh record is not written. */
START_TEST(put_latest_probe_and_expiry)
{
	const char *key = "vemilter:a:late@example.org";
	struct cache_record newer, older, stamped, got;
	make(&newer, OUTCOME_INVALID, base_ms);
	make(&older, OUTCOME_VALID, base_ms - MINUTE);
	ck_assert_int_eq(put(key, &newer, base_ms), 1);
	ck_assert_int_eq(put(key, &older, base_ms), 0); /* a late writer's older answer */
	ck_assert(stored(key, &got));
	ck_assert_int_eq(got.outcome.kind, OUTCOME_INVALID);
	stamped = newer;
	cache_record_stamp_refresh(conf, &stamped, newer.refresh_at_ms);
	ck_assert_int_eq(put(key, &stamped, newer.refresh_at_ms), 1);
	ck_assert(stored(key, &got));
	ck_assert_int_eq(got.refresh_at_ms, stamped.refresh_at_ms);
	ck_assert_int_eq(command_int("PEXPIRETIME %s", key), stamped.expires_at_ms);
	/* already expired at the writer's now: nothing written */
	struct cache_record gone;
	make(&gone, OUTCOME_VALID, base_ms);
	ck_assert_int_eq(put("vemilter:a:gone@example.org", &gone, gone.expires_at_ms), 0);
	ck_assert_int_eq(command_int("EXISTS vemilter:a:gone@example.org"), 0);
	/* a record whose expiry is short really goes */
	struct cache_record brief;
	make(&brief, OUTCOME_TEMPFAIL, base_ms);
	brief.expires_at_ms = clock_now_ms() + 300;
	ck_assert_int_eq(put("vemilter:a:brief@example.org", &brief, base_ms), 1);
	struct timespec pause = {.tv_nsec = 600 * 1000000};
	nanosleep(&pause, NULL);
	ck_assert_int_eq(command_int("EXISTS vemilter:a:brief@example.org"), 0);
}
END_TEST

/* A damaged or foreign value gives way; an unreadable fresh record is
 * refused with an error. */
START_TEST(put_over_damage)
{
	struct cache_record rec, got;
	make(&rec, OUTCOME_TEMPFAIL, base_ms);
	command_ok("HSET vemilter:a:x@example.org r %s", "garbage");
	ck_assert_int_eq(put("vemilter:a:x@example.org", &rec, base_ms), 1);
	ck_assert(stored("vemilter:a:x@example.org", &got));
	command_ok("SET vemilter:a:y@example.org %s", "a string, not a hash");
	ck_assert_int_eq(put("vemilter:a:y@example.org", &rec, base_ms), 1);
	ck_assert(stored("vemilter:a:y@example.org", &got));
	const char *argv[] = {"EVAL", SHARED_LUA_PUT, "1", "vemilter:a:z@example.org", "short", "1", "2",
	                      "h"};
	size_t len[8];
	for (int i = 0; i < 8; i++)
		len[i] = strlen(argv[i]);
	redisReply *r = redisCommandArgv(rc, 8, argv, len);
	ck_assert_int_eq(r->type, REDIS_REPLY_ERROR);
	freeReplyObject(r);
}
END_TEST

START_TEST(release_only_ours)
{
	command_ok("SET vemilter:lease:a:l@example.org %s", "host:1");
	ck_assert_int_eq(command_int("EVAL %s 1 vemilter:lease:a:l@example.org host:2", SHARED_LUA_RELEASE),
	                 0);
	ck_assert_int_eq(command_int("EXISTS vemilter:lease:a:l@example.org"), 1);
	ck_assert_int_eq(command_int("EVAL %s 1 vemilter:lease:a:l@example.org host:1", SHARED_LUA_RELEASE),
	                 1);
	ck_assert_int_eq(command_int("EXISTS vemilter:lease:a:l@example.org"), 0);
}
END_TEST

START_TEST(fetch_returns_each_record_or_nil)
{
	struct cache_record rec, got;
	make(&rec, OUTCOME_CATCH_ALL, base_ms);
	ck_assert_int_eq(put("vemilter:d:f.example", &rec, base_ms), 1);
	command_ok("SET vemilter:h:f.example %s", "not a hash");
	redisReply *r =
	        redisCommand(rc, "EVAL %s 3 vemilter:a:n@f.example vemilter:d:f.example vemilter:h:f.example",
	                     SHARED_LUA_FETCH);
	ck_assert_int_eq(r->type, REDIS_REPLY_ARRAY);
	ck_assert_uint_eq(r->elements, 3);
	ck_assert_int_eq(r->element[0]->type, REDIS_REPLY_NIL);
	ck_assert_int_eq(r->element[1]->type, REDIS_REPLY_STRING);
	ck_assert(cache_record_decode((const unsigned char *)r->element[1]->str, r->element[1]->len, &got));
	ck_assert_int_eq(got.outcome.kind, OUTCOME_CATCH_ALL);
	ck_assert_int_eq(got.probed_at_ms, rec.probed_at_ms);
	ck_assert_int_eq(r->element[2]->type, REDIS_REPLY_NIL);
	freeReplyObject(r);
}
END_TEST

/* The fleet's budget counter: totals add up across reporters, the key
 * gets its lifetime once (a later report does not stretch it) and goes. */
START_TEST(rate_counts_and_expires)
{
	const char *key = "vemilter:r:s:192.0.2.25:29408333";
	redisReply *r = redisCommand(rc, "EVAL %s 1 %s 3 120000", SHARED_LUA_RATE, key);
	ck_assert_int_eq(r->type, REDIS_REPLY_INTEGER);
	ck_assert_int_eq(r->integer, 3);
	freeReplyObject(r);
	r = redisCommand(rc, "PEXPIRE %s 5000", key); /* as if time went by */
	freeReplyObject(r);
	r = redisCommand(rc, "EVAL %s 1 %s 2 120000", SHARED_LUA_RATE, key);
	ck_assert_int_eq(r->integer, 5);
	freeReplyObject(r);
	r = redisCommand(rc, "PTTL %s", key);
	ck_assert_int_gt(r->integer, 0);
	ck_assert_int_le(r->integer, 5000); /* not stretched by the second report */
	freeReplyObject(r);
	/* another window, another key, with its own lifetime */
	r = redisCommand(rc, "EVAL %s 1 vemilter:r:s:192.0.2.25:29408334 1 300", SHARED_LUA_RATE);
	ck_assert_int_eq(r->integer, 1);
	freeReplyObject(r);
	r = redisCommand(rc, "PTTL vemilter:r:s:192.0.2.25:29408334");
	ck_assert_int_gt(r->integer, 0);
	ck_assert_int_le(r->integer, 300);
	freeReplyObject(r);
	struct timespec pause = {.tv_nsec = 400 * 1000000L};
	nanosleep(&pause, NULL); /* bounded: the key is gone after its 300 ms */
	r = redisCommand(rc, "EXISTS vemilter:r:s:192.0.2.25:29408334");
	ck_assert_int_eq(r->integer, 0);
	freeReplyObject(r);
}
END_TEST

/* A blocked record and a backoff round-trip field for field. */
START_TEST(host_record_round_trip)
{
	struct shared_host_rec rec = {
	        .state = SHARED_HOST_BLOCKED, .until_ms = INT64_C(1764480000123), .stage = 4, .code = 554};
	snprintf(rec.ecode, sizeof(rec.ecode), "5.7.1");
	snprintf(rec.writer, sizeof(rec.writer), "mx1.example:4242");
	snprintf(rec.source, sizeof(rec.source), "198.51.100.2");
	snprintf(rec.host, sizeof(rec.host), "mx.block.test");
	snprintf(rec.text, sizeof(rec.text), "Service refused\tyour IP 192.0.2.7 is listed");
	char buf[SHARED_HOST_REC_MAX];
	size_t n = shared_host_encode(&rec, buf, sizeof(buf));
	ck_assert_uint_gt(n, 0);
	ck_assert_uint_eq(n, strlen(buf));
	const char *head =
	        "2\tB\t1764480000123\t4\t554\t5.7.1\tmx1.example:4242\t198.51.100.2\tmx.block.test\t";
	ck_assert(strncmp(buf, head, strlen(head)) == 0);
	struct shared_host_rec got;
	ck_assert(shared_host_decode(buf, n, &got));
	ck_assert_int_eq(got.state, SHARED_HOST_BLOCKED);
	ck_assert_int_eq(got.until_ms, rec.until_ms);
	ck_assert_int_eq(got.stage, 4);
	ck_assert_int_eq(got.code, 554);
	ck_assert_str_eq(got.ecode, "5.7.1");
	ck_assert_str_eq(got.writer, "mx1.example:4242");
	ck_assert_str_eq(got.source, "198.51.100.2");
	ck_assert_str_eq(got.host, "mx.block.test");
	ck_assert_str_eq(got.text, "Service refused your IP 192.0.2.7 is listed"); /* the tab cleaned */

	struct shared_host_rec off = {.state = SHARED_HOST_BACKED_OFF, .until_ms = 5, .code = 421};
	snprintf(off.writer, sizeof(off.writer), "b:1");
	snprintf(off.text, sizeof(off.text), "ignored for a backoff");
	n = shared_host_encode(&off, buf, sizeof(buf));
	ck_assert_str_eq(buf, "2\tO\t5\t0\t0\t\tb:1\t\t\t");
	ck_assert(shared_host_decode(buf, n, &got));
	ck_assert_int_eq(got.state, SHARED_HOST_BACKED_OFF);
	ck_assert_int_eq(got.until_ms, 5);
	ck_assert_int_eq(got.code, 0);
	ck_assert_str_eq(got.text, "");
	ck_assert_str_eq(got.source, "");
	/* a backoff carries its source too (for people reading Redis) */
	snprintf(off.source, sizeof(off.source), "2001:db8::25");
	n = shared_host_encode(&off, buf, sizeof(buf));
	ck_assert_str_eq(buf, "2\tO\t5\t0\t0\t\tb:1\t2001:db8::25\t\t");
	ck_assert(shared_host_decode(buf, n, &got));
	ck_assert_str_eq(got.source, "2001:db8::25");

	/* the text is the last field: a tab inside it (another writer's) stays text */
	const char *tabbed = "2\tB\t9\t4\t554\t\tw\t192.0.2.1\th\ta\tb";
	ck_assert(shared_host_decode(tabbed, strlen(tabbed), &got));
	ck_assert_str_eq(got.source, "192.0.2.1");
	ck_assert_str_eq(got.host, "h");
	ck_assert_str_eq(got.text, "a\tb");
	/* version 1 (before the source): read, its source unknown */
	const char *v1 = "1\tB\t9\t4\t554\t\tw\th\ta\tb";
	ck_assert(shared_host_decode(v1, strlen(v1), &got));
	ck_assert_str_eq(got.source, "");
	ck_assert_str_eq(got.writer, "w");
	ck_assert_str_eq(got.host, "h");
	ck_assert_str_eq(got.text, "a\tb");

	/* too small a buffer: nothing */
	ck_assert_uint_eq(shared_host_encode(&rec, buf, 20), 0);
	ck_assert_str_eq(buf, "");
	struct shared_host_rec bad = rec;
	bad.state = 'X';
	ck_assert_uint_eq(shared_host_encode(&bad, buf, sizeof(buf)), 0);
}
END_TEST

/* Anything else is refused, and refused whole. */
START_TEST(host_record_refuses_damage)
{
	static const char *const damaged[] = {
	        "", "3\tB\t9\t4\t554\t\tw\ts\th\tt", /* an unknown version */
	        "0\tB\t9\t4\t554\t\tw\th\tt",        /* ... older than any */
	        "2\tB\t9\t4\t554\t\tw\th\tt",        /* version 2 without its source (a field short) */
	        "2\tB\t9\t4\t554\t\tw\t2001:0db8:0001:0002:0003:0004:0005:0006:0007:0008\th\tt", /* a source
	                                                                                            too long
	                                                                                          */
	        "2\tB\t9\t4\t554\t\tw\t192.0.2.1\n\th\tt",       /* LF in the source */
	        "1\tX\t9\t4\t554\t\tw\th\tt",                    /* an unknown state */
	        "1\tB\t-9\t4\t554\t\tw\th\tt",                   /* a time before the epoch */
	        "1\tB\t9x\t4\t554\t\tw\th\tt",                   /* not a number */
	        "1\tB\t\t4\t554\t\tw\th\tt",                     /* an empty number */
	        "1\tB\t9\t99\t554\t\tw\th\tt",                   /* a stage past any */
	        "1\tB\t9\t4\t1000\t\tw\th\tt",                   /* a code past 999 */
	        "1\tB\t9\t4\t554\t\tw\th",                       /* a field missing */
	        "1\tB\t9\t4\t554\t5.7.1.2.3.4.5.6.7\tw\th\tt",   /* an ecode too long */
	        "1\tB\t99999999999999999999\t4\t554\t\tw\th\tt", /* out of range */
	        /* control characters encode never writes: a line of its own in a
	         * log, transcript or explain output */
	        "1\tB\t9\t4\t554\t\tw\tmx.test\nfake: line\tt", /* LF in the host */
	        "1\tB\t9\t4\t554\t\tw\r\th\tt",                 /* CR in the writer */
	        "1\tB\t9\t4\t554\t5.7\x1b\tw\th\tt",            /* ESC in the ecode */
	        "1\tB\t9\t4\t554\t\tw\th\tgo away\r\n250 ok",   /* CR LF in the text */
	        "1\tB\t9\t4\t554\t\tw\th\tgo\x7f away",         /* DEL in the text */
	};
	for (size_t i = 0; i < sizeof(damaged) / sizeof(damaged[0]); i++) {
		struct shared_host_rec got;
		memset(&got, 0x55, sizeof(got));
		ck_assert_msg(!shared_host_decode(damaged[i], strlen(damaged[i]), &got), "accepted: %s",
		              damaged[i]);
		ck_assert_int_eq(got.until_ms, 0); /* refused whole: nothing half filled */
	}
	/* a NUL inside a field */
	const char nul[] = "1\tB\t9\t4\t554\t\tw\th\x00x\tt";
	struct shared_host_rec got;
	ck_assert(!shared_host_decode(nul, sizeof(nul) - 1, &got));
	/* longer than any record */
	char big[SHARED_HOST_REC_MAX + 10];
	memset(big, 'a', sizeof(big));
	memcpy(big, "1\tB\t9\t4\t554\t\tw\th\t", 17);
	ck_assert(!shared_host_decode(big, sizeof(big), &got));
	char key[40];
	shared_host_key("192.0.2.7", key, sizeof(key));
	ck_assert_str_eq(key, "vemilter:m:192.0.2.7");
	shared_host_key("2001:db8::1", key, 12);
	ck_assert_str_eq(key, "");
}
END_TEST

/* Which learned records a host applies: a backoff always; a refusal only
 * when its source is one of this host's addresses (here a hand-made list
 * of 127.0.0.2 and 2001:db8::5, fresh, so never reread). */
START_TEST(host_record_applies_by_source)
{
	struct sockaddr_storage mine[2];
	memset(mine, 0, sizeof(mine));
	struct sockaddr_in *a4 = (struct sockaddr_in *)&mine[0];
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&mine[1];
	a4->sin_family = AF_INET;
	ck_assert_int_eq(inet_pton(AF_INET, "127.0.0.2", &a4->sin_addr), 1);
	a6->sin6_family = AF_INET6;
	ck_assert_int_eq(inet_pton(AF_INET6, "2001:db8::5", &a6->sin6_addr), 1);
	struct local_addrs l = {.addrs = mine, .count = 2, .loaded_ms = 1000};
	const int64_t now = 2000; /* within LOCAL_ADDRS_REFRESH_MS of the load */

	static const struct {
		char state;
		const char *source;
		bool applies;
	} cases[] = {
	        {'B', "127.0.0.2", true},        /* ours: e.g. two daemons on one host */
	        {'B', "2001:db8::5", true},      /* ours, IPv6 */
	        {'B', "::ffff:127.0.0.2", true}, /* ours, IPv4-mapped */
	        {'B', "127.0.0.1", true},        /* always this host */
	        {'B', "127.0.0.3", false},       /* another host's address: its reputation, not ours */
	        {'B', "2001:db8::6", false},     /* ... IPv6 */
	        {'B', "", false},                /* unknown (a version 1 writer): not applied */
	        {'B', "mx.example", false},      /* not an address */
	        {'O', "127.0.0.3", true},        /* a backoff is about the MX: applied from anyone */
	        {'O', "", true},                 /* ... with a source or not */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct shared_host_rec rec = {.state = (enum shared_host_state)cases[i].state, .until_ms = 9};
		snprintf(rec.source, sizeof(rec.source), "%s", cases[i].source);
		/* through the wire form, as a learner sees it */
		char buf[SHARED_HOST_REC_MAX];
		struct shared_host_rec got;
		size_t n = shared_host_encode(&rec, buf, sizeof(buf));
		ck_assert_uint_gt(n, 0);
		ck_assert(shared_host_decode(buf, n, &got));
		ck_assert_msg(shared_host_applies(&got, &l, now) == cases[i].applies,
		              "%c from \"%s\": expected %d", cases[i].state, cases[i].source,
		              cases[i].applies);
	}
	/* version 1 records: the refusal is not applied, the backoff is */
	struct shared_host_rec got;
	const char *v1b = "1\tB\t9\t4\t554\t\tw\th\tt", *v1o = "1\tO\t9\t0\t0\t\tw\t\t";
	ck_assert(shared_host_decode(v1b, strlen(v1b), &got));
	ck_assert(!shared_host_applies(&got, &l, now));
	ck_assert(shared_host_decode(v1o, strlen(v1o), &got));
	ck_assert(shared_host_applies(&got, &l, now));
	ck_assert_uint_eq(l.loaded_ms, 1000); /* the hand-made list was not reread */
}
END_TEST

int main(void)
{
	Suite *s = suite_create("sharedrule");
	TCase *pure = tcase_create("pure");
	tcase_add_test(pure, key_names);
	tcase_add_test(pure, backoff_doubles_to_max);
	tcase_add_test(pure, host_record_round_trip);
	tcase_add_test(pure, host_record_refuses_damage);
	tcase_add_test(pure, host_record_applies_by_source);
	suite_add_tcase(s, pure);
	TCase *redis = tcase_create("redis");
	tcase_add_checked_fixture(redis, setup, teardown);
	tcase_set_timeout(redis, 60);
	tcase_add_test(redis, put_rule_matches_c);
	tcase_add_test(redis, put_latest_probe_and_expiry);
	tcase_add_test(redis, put_over_damage);
	tcase_add_test(redis, release_only_ours);
	tcase_add_test(redis, fetch_returns_each_record_or_nil);
	tcase_add_test(redis, rate_counts_and_expires);
	suite_add_tcase(s, redis);
	return unit_run(s);
}
