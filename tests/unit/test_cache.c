/*
 * test_cache.c - the verification cache: lifetimes per outcome class, the
 * replace rule, the record format (round trip, damage, fuzzing), and the
 * LMDB store in a scratch directory: get/put/stale/expired/del/sweep/purge/
 * foreach/stats, a full map that evicts, a map another process grows, corrupt
 * files, a replaced file, and several threads and processes at once.
 * Damage (cache.c's checks and guard): a file truncated to half, one page
 * or nothing, pages zeroed or overwritten, a meta page damaged, each before
 * the open and while open (each ends with the cache working and the log
 * line naming the problem); a SIGBUS inside a call caught, one elsewhere
 * still fatal; damage again within a minute turning the cache off; a
 * churned file the check accepts; and 100 writers killed with SIGKILL at
 * random moments, every committed record surviving (and 50 more whose
 * commits the sync thread had not synced yet). The sync thread: it syncs
 * what was committed, and only then; 0 keeps LMDB's sync of each commit.
 * Concurrency: a write and a read go through while a reader keeps its
 * transaction open.
 * Every time is explicit: nothing sleeps, but for the killed writers (a
 * random moment each), the wait for the file clock to tick (see
 * next_tick()), the sync thread's intervals and the held reader (bounded
 * waits).
 */
#include <dirent.h>
#include <fcntl.h>
#include <lmdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "log.h"
#include "mdbcheck.h"
#include "unit.h"

#define NOW    INT64_C(1700000000000)
#define SECOND INT64_C(1000)
#define MINUTE (60 * SECOND)
#define HOUR   (60 * MINUTE)
#define DAY    (24 * HOUR)

static const char conf_text[] = "positive_ttl = 10d\npositive_refresh = 2d\nnegative_ttl = 3d\n"
                                "negative_refresh = 3h\ninconclusive_ttl = 1d\ntemporary_ttl = 5m\n";

static struct conf *conf;
static char dir[64];
static char path[128];

/* print_error - conf errors, should there be any */
static void print_error(void *arg, const char *message)
{
	fprintf(stderr, "%s\n", message);
}

/* setup - a config and an empty scratch directory for each test */
static void setup(void)
{
	log_open("test_cache", LOG_USER, true, LOG_ERR);
	conf = conf_load_text("test", conf_text, print_error, NULL);
	ck_assert_ptr_nonnull(conf);
	snprintf(dir, sizeof(dir), "/tmp/test_cache.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/cache.lmdb", dir);
}

/* teardown - remove the scratch directory and all in it */
static void teardown(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char name[512];
	while (d != NULL && (e = readdir(d)) != NULL) {
		snprintf(name, sizeof(name), "%s/%s", dir, e->d_name);
		if (e->d_name[0] != '.')
			unlink(name);
	}
	if (d != NULL)
		closedir(d);
	rmdir(dir);
	conf_unref(conf);
}

/* count_files - files in the scratch directory whose name contains part */
static int count_files(const char *part)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;
	while (d != NULL && (e = readdir(d)) != NULL)
		n += strstr(e->d_name, part) != NULL;
	if (d != NULL)
		closedir(d);
	return n;
}

/* make - a record of kind probed at now, with a reply */
static void make(struct cache_record *rec, enum outcome_kind kind, int64_t now)
{
	struct outcome o;
	memset(&o, 0, sizeof(o));
	outcome_set(&o, kind, STAGE_RCPT, 250, "2.1.5", "recipient ok", "test");
	snprintf(o.mx_host, sizeof(o.mx_host), "mx1.example.org");
	cache_record_make(conf, &o, now, rec);
}

/* open_cache - cache_open that must succeed */
static struct cache *open_cache(int max_mb)
{
	char why[300] = "";
	struct cache *c = cache_open(path, max_mb, why, sizeof(why));
	ck_assert_msg(c != NULL, "cache_open: %s", why);
	return c;
}

/* ---- lifetimes and the replace rule ---- */

START_TEST(lifetimes_by_class)
{
	static const struct {
		enum outcome_kind kind;
		int64_t refresh, ttl;
	} want[] = {
	        {OUTCOME_VALID, 2 * DAY, 10 * DAY},        {OUTCOME_INVALID, 3 * HOUR, 3 * DAY},
	        {OUTCOME_NO_DOMAIN, 3 * HOUR, 3 * DAY},    {OUTCOME_CATCH_ALL, DAY, DAY},
	        {OUTCOME_UNVERIFIABLE, DAY, DAY},          {OUTCOME_TEMPFAIL, 5 * MINUTE, 5 * MINUTE},
	        {OUTCOME_BLOCKED, 5 * MINUTE, 5 * MINUTE},
	};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		struct cache_record rec;
		make(&rec, want[i].kind, NOW);
		ck_assert_int_eq(rec.outcome.kind, want[i].kind);
		ck_assert_str_eq(rec.outcome.text, "recipient ok");
		ck_assert_int_eq(rec.probed_at_ms, NOW);
		ck_assert_int_eq(rec.refresh_at_ms, NOW + want[i].refresh);
		ck_assert_int_eq(rec.expires_at_ms, NOW + want[i].ttl);
	}
}
END_TEST

START_TEST(refresh_never_after_expiry)
{
	struct conf *odd =
	        conf_load_text("odd", "positive_ttl = 1d\npositive_refresh = 5d\n", print_error, NULL);
	struct outcome o;
	struct cache_record rec;
	memset(&o, 0, sizeof(o));
	o.kind = OUTCOME_VALID;
	cache_record_make(odd, &o, NOW, &rec);
	ck_assert_int_eq(rec.refresh_at_ms, NOW + DAY);
	ck_assert_int_eq(rec.expires_at_ms, NOW + DAY);
	cache_record_make(odd, &o, INT64_MAX - 5, &rec); /* saturates, never wraps */
	ck_assert_int_eq(rec.expires_at_ms, INT64_MAX);
	ck_assert_int_eq(rec.refresh_at_ms, INT64_MAX);
	conf_unref(odd);
}
END_TEST

START_TEST(may_replace_table)
{
	for (int o = 0; o < OUTCOME_KIND_COUNT; o++) {
		for (int f = 0; f < OUTCOME_KIND_COUNT; f++) {
			struct cache_record old, fresh;
			make(&old, (enum outcome_kind)o, NOW);
			make(&fresh, (enum outcome_kind)f, NOW + MINUTE);
			bool temporary = f == OUTCOME_TEMPFAIL || f == OUTCOME_BLOCKED;
			bool answer = o == OUTCOME_VALID || o == OUTCOME_INVALID || o == OUTCOME_NO_DOMAIN ||
			              o == OUTCOME_CATCH_ALL;
			ck_assert_msg(cache_record_may_replace(&old, &fresh, NOW + SECOND) ==
			                      !(temporary && answer),
			              "old %s fresh %s", outcome_name(o), outcome_name(f));
			/* past its refresh time a negative is never served: the
			 * temporary outcome of its refresh replaces it; a stale
			 * positive answer is still served and stays */
			bool negative = o == OUTCOME_INVALID || o == OUTCOME_NO_DOMAIN;
			if (old.refresh_at_ms < old.expires_at_ms)
				ck_assert_msg(cache_record_may_replace(&old, &fresh, old.refresh_at_ms) ==
				                      !(temporary && answer && !negative),
				              "stale old %s fresh %s", outcome_name(o), outcome_name(f));
			/* an expired record always gives way */
			ck_assert(cache_record_may_replace(&old, &fresh, old.expires_at_ms));
		}
	}
}
END_TEST

/* ---- the record format ---- */

static uint64_t rng_state = 0x9E3779B97F4A7C15u;

/* rng - xorshift64*, deterministic */
static uint64_t rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1Du;
}

/* random_text - up to size-1 octets, printable ASCII or 8-bit, never control */
static void random_text(char *buf, size_t size)
{
	size_t n = rng() % size;
	for (size_t i = 0; i < n; i++) {
		unsigned c = (unsigned)(rng() % 190);
		buf[i] = (char)(c < 95 ? 0x20 + c : 0x80 + (c - 95));
	}
	buf[n] = '\0';
}

/* random_record - every field random within its bounds; zero elsewhere */
static void random_record(struct cache_record *rec)
{
	memset(rec, 0, sizeof(*rec));
	rec->outcome.kind = (enum outcome_kind)(rng() % OUTCOME_KIND_COUNT);
	rec->outcome.stage = (enum probe_stage)(rng() % (STAGE_QUIT + 1));
	rec->outcome.code = (int)(rng() % 1000);
	random_text(rec->outcome.ecode, sizeof(rec->outcome.ecode));
	random_text(rec->outcome.text, sizeof(rec->outcome.text));
	random_text(rec->outcome.reason, sizeof(rec->outcome.reason));
	random_text(rec->outcome.mx_host, sizeof(rec->outcome.mx_host));
	random_text(rec->outcome.mx_addr, sizeof(rec->outcome.mx_addr));
	rec->probed_at_ms = (int64_t)rng();
	rec->refresh_at_ms = (int64_t)rng();
	rec->expires_at_ms = (int64_t)rng();
}

START_TEST(round_trip_random)
{
	for (int i = 0; i < 20000; i++) {
		struct cache_record rec, back;
		unsigned char buf[CACHE_RECORD_MAX];
		random_record(&rec);
		size_t len = cache_record_encode(&rec, buf, sizeof(buf));
		ck_assert_uint_gt(len, 0);
		ck_assert(cache_record_decode(buf, len, &back));
		ck_assert_msg(memcmp(&rec, &back, sizeof(rec)) == 0, "record %d differs", i);
	}
}
END_TEST

START_TEST(encode_sanitizes_and_bounds)
{
	struct cache_record rec, back;
	unsigned char buf[CACHE_RECORD_MAX];
	make(&rec, OUTCOME_INVALID, NOW);
	snprintf(rec.outcome.reason, sizeof(rec.outcome.reason),
	         "a\tb\x7f"
	         "c");
	memset(rec.outcome.mx_host, 'h', sizeof(rec.outcome.mx_host)); /* no terminator */
	size_t len = cache_record_encode(&rec, buf, sizeof(buf));
	ck_assert(cache_record_decode(buf, len, &back));
	ck_assert_str_eq(back.outcome.reason, "a?b?c");
	ck_assert_uint_eq(strlen(back.outcome.mx_host), sizeof(rec.outcome.mx_host) - 1);
	ck_assert_uint_eq(cache_record_encode(&rec, buf, len - 1), 0); /* too small */
	rec.outcome.kind = (enum outcome_kind)OUTCOME_KIND_COUNT;
	ck_assert_uint_eq(cache_record_encode(&rec, buf, sizeof(buf)), 0);
	/* the largest record fits CACHE_RECORD_MAX */
	memset(&rec, 'x', sizeof(rec.outcome));
	rec.outcome.kind = OUTCOME_VALID;
	rec.outcome.stage = STAGE_RCPT;
	rec.outcome.code = 250;
	ck_assert_uint_gt(cache_record_encode(&rec, buf, sizeof(buf)), 0);
}
END_TEST

/* valid_record - a known record, encoded; returns its length */
static size_t valid_record(unsigned char *buf)
{
	struct cache_record rec;
	make(&rec, OUTCOME_VALID, NOW);
	size_t len = cache_record_encode(&rec, buf, CACHE_RECORD_MAX);
	ck_assert_uint_gt(len, 40);
	return len;
}

START_TEST(decode_rejects_damage)
{
	unsigned char good[CACHE_RECORD_MAX], buf[CACHE_RECORD_MAX + 1];
	struct cache_record out;
	size_t len = valid_record(good);
	static const struct {
		size_t offset;
		unsigned char value;
		const char *what;
	} edits[] = {
	        {0, 3, "version 3"},
	        {0, 1, "version 1 with a v2 header"},
	        {0, 0, "version 0"},
	        {1, OUTCOME_KIND_COUNT, "kind"},
	        {2, 200, "stage"},
	        {3, 0x80, "unknown flag"},
	        {4, 0xe8, "code 1000 (low byte)"},
	        {6, 16, "ecode too long"},
	        {8, 0xff, "text length"},
	        {49, 1, "reserved octet"},
	        {50, '\n', "control in ecode"},
	        {51, 0, "NUL in ecode"},
	        {52, 0x7f, "DEL in ecode"},
	};
	ck_assert(cache_record_decode(good, len, &out));
	for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
		memcpy(buf, good, len);
		buf[edits[i].offset] = edits[i].value;
		if (edits[i].offset == 4)
			buf[5] = 0x03; /* 0x03e8 = 1000 */
		ck_assert_msg(!cache_record_decode(buf, len, &out), "%s accepted", edits[i].what);
		ck_assert_int_eq(out.outcome.kind, 0); /* a rejected record leaves nothing behind */
		ck_assert_str_eq(out.outcome.text, "");
	}
	memcpy(buf, good, len);
	buf[len] = 'x';
	ck_assert(!cache_record_decode(buf, len + 1, &out)); /* trailing octet */
	ck_assert(!cache_record_decode(NULL, 0, &out));
}
END_TEST

START_TEST(v2_fields_round_trip_and_v1_still_read)
{
	unsigned char buf[CACHE_RECORD_MAX], v1[CACHE_RECORD_MAX];
	struct cache_record rec, out;
	make(&rec, OUTCOME_TEMPFAIL, NOW);
	rec.outcome.flags = OUTCOME_F_GREYLIST | OUTCOME_F_NOT_CATCHALL;
	rec.deferred_since_ms = NOW - 5000;
	rec.tries = 2;
	size_t len = cache_record_encode(&rec, buf, sizeof(buf));
	ck_assert_uint_gt(len, 50);
	ck_assert(cache_record_decode(buf, len, &out));
	ck_assert_uint_eq(out.outcome.flags, OUTCOME_F_GREYLIST | OUTCOME_F_NOT_CATCHALL);
	ck_assert_int_eq(out.deferred_since_ms, NOW - 5000);
	ck_assert_uint_eq(out.tries, 2);
	/* The same record as version 1 wrote it: 40-octet header, no flags. */
	memcpy(v1, buf, 40);
	v1[0] = 1;
	v1[3] = 0;
	memcpy(v1 + 40, buf + 50, len - 50);
	ck_assert(cache_record_decode(v1, len - 10, &out));
	ck_assert_int_eq(out.outcome.kind, OUTCOME_TEMPFAIL);
	ck_assert_uint_eq(out.outcome.flags, 0);
	ck_assert_int_eq(out.deferred_since_ms, 0);
	ck_assert_str_eq(out.outcome.reason, rec.outcome.reason);
	v1[3] = OUTCOME_F_GREYLIST; /* version 1 had no flags */
	ck_assert(!cache_record_decode(v1, len - 10, &out));
}
END_TEST

START_TEST(ttl_cap_shortens_lifetime)
{
	struct conf *conf = conf_load_text("test", "", NULL, NULL);
	ck_assert_ptr_nonnull(conf);
	struct outcome o = {0};
	outcome_set(&o, OUTCOME_NO_DOMAIN, STAGE_DNS, 0, NULL, NULL, "NXDOMAIN");
	o.ttl_cap_ms = 60000;
	struct cache_record rec;
	cache_record_make(conf, &o, NOW, &rec);
	ck_assert_int_eq(rec.expires_at_ms, NOW + 60000);
	ck_assert_int_le(rec.refresh_at_ms, rec.expires_at_ms);
	ck_assert_int_eq(rec.outcome.ttl_cap_ms, 0);
	o.ttl_cap_ms = 0;
	cache_record_make(conf, &o, NOW, &rec);
	ck_assert_int_eq(rec.expires_at_ms, NOW + conf->negative_ttl_ms);
	conf_unref(conf);
}
END_TEST

START_TEST(deferral_continues)
{
	struct conf *c2 = conf_load_text("t", "temporary_ttl = 5m\ndefer_limit = 2h\n", print_error, NULL);
	struct conf *nolimit =
	        conf_load_text("t", "temporary_ttl = 5m\ndefer_limit = 0\n", print_error, NULL);
	ck_assert_ptr_nonnull(c2);
	ck_assert_ptr_nonnull(nolimit);
	struct outcome temp = {0}, valid = {0};
	outcome_set(&temp, OUTCOME_TEMPFAIL, STAGE_RCPT, 450, NULL, NULL, "test");
	outcome_set(&valid, OUTCOME_VALID, STAGE_RCPT, 250, NULL, NULL, "test");
	struct cache_record first, second, answer;
	/* the first temporary outcome starts the deferral and outlives defer_limit */
	cache_record_make(c2, &temp, NOW, &first);
	cache_record_continue_deferral(c2, &first, NULL, NOW);
	ck_assert_int_eq(first.deferred_since_ms, NOW);
	ck_assert_int_eq(first.refresh_at_ms, NOW + 5 * MINUTE);
	ck_assert_int_eq(first.expires_at_ms, NOW + 2 * HOUR + CACHE_DEFER_MARGIN_MS);
	/* the next one carries start and greylist tries over */
	first.tries = 2;
	cache_record_make(c2, &temp, NOW + HOUR, &second);
	cache_record_continue_deferral(c2, &second, &first, NOW + HOUR);
	ck_assert_int_eq(second.deferred_since_ms, NOW);
	ck_assert_uint_eq(second.tries, 2);
	ck_assert_int_eq(second.refresh_at_ms, NOW + HOUR + 5 * MINUTE);
	ck_assert_int_eq(second.expires_at_ms, NOW + 2 * HOUR + CACHE_DEFER_MARGIN_MS);
	/* past the limit and the margin it lives its normal life */
	cache_record_make(c2, &temp, NOW + 5 * HOUR, &second);
	cache_record_continue_deferral(c2, &second, &first, NOW + 5 * HOUR);
	ck_assert_int_eq(second.expires_at_ms, NOW + 5 * HOUR + 5 * MINUTE);
	/* an old record of v1 (no start) counts from when it was probed */
	first.deferred_since_ms = 0;
	cache_record_continue_deferral(c2, &second, &first, NOW + 5 * HOUR);
	ck_assert_int_eq(second.deferred_since_ms, NOW);
	/* after an answer, a new deferral starts */
	cache_record_make(c2, &valid, NOW, &answer);
	cache_record_continue_deferral(c2, &answer, &first, NOW);
	ck_assert_int_eq(answer.deferred_since_ms, 0);
	ck_assert_uint_eq(answer.tries, 0);
	cache_record_make(c2, &temp, NOW + MINUTE, &second);
	cache_record_continue_deferral(c2, &second, &answer, NOW + MINUTE);
	ck_assert_int_eq(second.deferred_since_ms, NOW + MINUTE);
	/* a start in the future (the clock went back) is never kept */
	first.deferred_since_ms = NOW + DAY;
	cache_record_continue_deferral(c2, &second, &first, NOW + MINUTE);
	ck_assert_int_eq(second.deferred_since_ms, NOW + MINUTE);
	/* defer_limit 0: the stamp is kept, the lifetime is not stretched */
	cache_record_make(nolimit, &temp, NOW, &first);
	cache_record_continue_deferral(nolimit, &first, NULL, NOW);
	ck_assert_int_eq(first.deferred_since_ms, NOW);
	ck_assert_int_eq(first.expires_at_ms, NOW + 5 * MINUTE);
	conf_unref(c2);
	conf_unref(nolimit);
}
END_TEST

START_TEST(stamp_refresh_moves_one_window)
{
	struct cache_record rec;
	make(&rec, OUTCOME_VALID, NOW);
	cache_record_stamp_refresh(conf, &rec, NOW + 3 * DAY);
	ck_assert_int_eq(rec.refresh_at_ms, NOW + 5 * DAY); /* positive_refresh 2d on */
	ck_assert_int_eq(rec.expires_at_ms, NOW + 10 * DAY);
	cache_record_stamp_refresh(conf, &rec, NOW + 9 * DAY);
	ck_assert_int_eq(rec.refresh_at_ms, NOW + 10 * DAY); /* never after it expires */
	make(&rec, OUTCOME_INVALID, NOW);
	cache_record_stamp_refresh(conf, &rec, NOW + 4 * HOUR);
	ck_assert_int_eq(rec.refresh_at_ms, NOW + 7 * HOUR); /* negative_refresh 3h */
	ck_assert_int_eq(rec.probed_at_ms, NOW);             /* what was found and when stays */
}
END_TEST

/* check_sane - a record decode accepted keeps every invariant */
static void check_sane(const struct cache_record *r)
{
	const char *strings[] = {r->outcome.ecode, r->outcome.text, r->outcome.reason, r->outcome.mx_host,
	                         r->outcome.mx_addr};
	const size_t caps[] = {sizeof(r->outcome.ecode), sizeof(r->outcome.text), sizeof(r->outcome.reason),
	                       sizeof(r->outcome.mx_host), sizeof(r->outcome.mx_addr)};
	ck_assert_uint_lt((unsigned)r->outcome.kind, OUTCOME_KIND_COUNT);
	ck_assert_str_ne(probe_stage_name(r->outcome.stage), "unknown");
	ck_assert(r->outcome.code >= 0 && r->outcome.code <= 999);
	for (int i = 0; i < 5; i++) {
		size_t n = strnlen(strings[i], caps[i]);
		ck_assert_uint_lt(n, caps[i]);
		for (size_t j = 0; j < n; j++)
			ck_assert((unsigned char)strings[i][j] >= 0x20 && strings[i][j] != 0x7f);
	}
}

START_TEST(decode_survives_truncation_and_flips)
{
	unsigned char good[CACHE_RECORD_MAX], buf[CACHE_RECORD_MAX];
	struct cache_record out;
	size_t len = valid_record(good);
	for (size_t n = 0; n < len; n++)
		ck_assert_msg(!cache_record_decode(good, n, &out), "truncated to %zu accepted", n);
	int accepted = 0;
	/* 50,000 mangled records: tests/fuzz/fuzz_cacherec goes further */
	for (int i = 0; i < 50000; i++) {
		memcpy(buf, good, len);
		for (int flips = 1 + (int)(rng() % 4); flips > 0; flips--)
			buf[rng() % len] = (unsigned char)rng();
		size_t cut = rng() % 4 == 0 ? rng() % (len + 1) : len;
		if (cache_record_decode(buf, cut, &out)) {
			check_sane(&out);
			accepted++;
		}
	}
	ck_assert_int_gt(accepted, 0); /* flips in times and text are fine */
}
END_TEST

START_TEST(key_names)
{
	char key[CACHE_KEY_MAX], big[400];
	cache_key_address("bob@example.org", key, sizeof(key));
	ck_assert_str_eq(key, "a:bob@example.org");
	cache_key_domain("example.org", key, sizeof(key));
	ck_assert_str_eq(key, "d:example.org");
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	cache_key_address(big, key, sizeof(key));
	ck_assert_str_eq(key, ""); /* never a cut key */
	cache_key_domain("", key, sizeof(key));
	ck_assert_str_eq(key, "");
	cache_key_hints("example.org", key, sizeof(key));
	ck_assert_str_eq(key, "h:example.org");
	cache_key_tagged("alice@example.org", key, sizeof(key));
	ck_assert_str_eq(key, "t:alice@example.org");
	cache_key_tagged(big, key, sizeof(key));
	ck_assert_str_eq(key, "");
}
END_TEST

/* ---- the store ---- */

START_TEST(store_get_put_stale_expired)
{
	struct cache *c = open_cache(4);
	struct cache_record rec, out;
	make(&rec, OUTCOME_VALID, NOW);
	ck_assert_int_eq(cache_get(c, "a:bob@example.org", NOW, &out), CACHE_MISS);
	ck_assert(cache_put(c, "a:bob@example.org", &rec, NOW));
	ck_assert_int_eq(cache_get(c, "a:bob@example.org", NOW + SECOND, &out), CACHE_HIT);
	ck_assert(memcmp(&out, &rec, sizeof(rec)) == 0);
	ck_assert_int_eq(cache_get(c, "a:bob@example.org", NOW + 2 * DAY, &out), CACHE_STALE);
	ck_assert_int_eq(cache_get(c, "a:bob@example.org", NOW + 10 * DAY, &out), CACHE_MISS);
	ck_assert_int_eq(cache_get(c, "a:other@example.org", NOW, &out), CACHE_MISS);
	/* bad keys and no cache are misses and failures, never crashes */
	ck_assert_int_eq(cache_get(c, "", NOW, &out), CACHE_MISS);
	ck_assert_int_eq(cache_get(c, NULL, NOW, &out), CACHE_MISS);
	char big[CACHE_KEY_MAX + 10];
	memset(big, 'k', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	ck_assert(!cache_put(c, big, &rec, NOW));
	ck_assert_int_eq(cache_get(NULL, "a:x@y", NOW, &out), CACHE_MISS);
	ck_assert(!cache_put(NULL, "a:x@y", &rec, NOW));
	ck_assert(!cache_del(NULL, "a:x@y"));
	cache_close(c);
	/* it persists */
	c = open_cache(4);
	ck_assert_int_eq(cache_get(c, "a:bob@example.org", NOW + SECOND, &out), CACHE_HIT);
	cache_close(c);
	cache_close(NULL);
}
END_TEST

START_TEST(store_replace_rule)
{
	struct cache *c = open_cache(4);
	struct cache_record valid, tempfail, invalid, out;
	make(&valid, OUTCOME_VALID, NOW);
	make(&tempfail, OUTCOME_TEMPFAIL, NOW + HOUR);
	make(&invalid, OUTCOME_INVALID, NOW + HOUR);
	ck_assert(cache_put(c, "a:k", &valid, NOW));
	ck_assert(cache_put(c, "a:k", &tempfail, NOW + HOUR)); /* true: nothing to do */
	ck_assert_int_eq(cache_get(c, "a:k", NOW + HOUR, &out), CACHE_HIT);
	ck_assert_int_eq(out.outcome.kind, OUTCOME_VALID);
	ck_assert(cache_put(c, "a:k", &invalid, NOW + HOUR)); /* a definite answer replaces */
	ck_assert_int_eq(cache_get(c, "a:k", NOW + HOUR, &out), CACHE_HIT);
	ck_assert_int_eq(out.outcome.kind, OUTCOME_INVALID);
	make(&tempfail, OUTCOME_TEMPFAIL, NOW + 4 * DAY); /* invalid has expired by then */
	ck_assert(cache_put(c, "a:k", &tempfail, NOW + 4 * DAY));
	ck_assert_int_eq(cache_get(c, "a:k", NOW + 4 * DAY, &out), CACHE_HIT);
	ck_assert_int_eq(out.outcome.kind, OUTCOME_TEMPFAIL);
	cache_close(c);
}
END_TEST

/* collect_keys - foreach visitor: keys joined by spaces, stops after 3 if asked */
struct collected {
	char keys[512];
	int n, stop_after;
};

static bool collect_keys(void *arg, const char *key, const struct cache_record *rec)
{
	struct collected *col = arg;
	size_t len = strlen(col->keys);
	snprintf(col->keys + len, sizeof(col->keys) - len, "%s%s", len ? " " : "", key);
	return ++col->n != col->stop_after;
}

START_TEST(store_del_sweep_purge_foreach_stats)
{
	struct cache *c = open_cache(4);
	struct cache_record rec, out;
	struct cache_stats st;
	const char *keys[] = {"a:c@x", "a:a@x", "d:x", "a:b@x", "d:y"};
	for (int i = 0; i < 5; i++) {
		make(&rec, i < 2 ? OUTCOME_TEMPFAIL : OUTCOME_VALID, NOW);
		ck_assert(cache_put(c, keys[i], &rec, NOW));
	}
	struct collected col = {.stop_after = 0};
	ck_assert(cache_foreach(c, collect_keys, &col));
	ck_assert_str_eq(col.keys, "a:a@x a:b@x a:c@x d:x d:y"); /* key order */
	struct collected three = {.stop_after = 3};
	ck_assert(cache_foreach(c, collect_keys, &three));
	ck_assert_str_eq(three.keys, "a:a@x a:b@x a:c@x");
	ck_assert(cache_stats(c, NOW + HOUR, &st));
	ck_assert_uint_eq(st.addresses, 3);
	ck_assert_uint_eq(st.domains, 2);
	ck_assert_uint_eq(st.expired, 2); /* the tempfails, after 5 minutes */
	ck_assert_uint_eq(st.by_outcome[OUTCOME_TEMPFAIL], 2);
	ck_assert_uint_eq(st.by_outcome[OUTCOME_VALID], 3);
	ck_assert_uint_eq(st.map_bytes, 4 * 1024 * 1024 - 256 * 1024); /* less the reserve */
	ck_assert_uint_gt(st.used_bytes, 0);
	ck_assert_uint_lt(st.used_bytes, st.map_bytes);
	ck_assert(cache_del(c, "d:y"));
	ck_assert(!cache_del(c, "d:y"));
	ck_assert_uint_eq(cache_sweep(c, NOW + HOUR), 2);
	ck_assert_uint_eq(cache_sweep(c, NOW + HOUR), 0);
	ck_assert_int_eq(cache_get(c, "a:b@x", NOW + HOUR, &out), CACHE_HIT);
	ck_assert_uint_eq(cache_purge(c), 2);
	ck_assert_uint_eq(cache_purge(c), 0);
	ck_assert_int_eq(cache_get(c, "a:b@x", NOW + HOUR, &out), CACHE_MISS);
	ck_assert(cache_stats(c, NOW, &st));
	ck_assert_uint_eq(st.addresses + st.domains, 0);
	cache_close(c);
}
END_TEST

START_TEST(store_sweep_many)
{
	struct cache *c = open_cache(16);
	struct cache_record rec;
	char key[64];
	for (int i = 0; i < 5000; i++) { /* more than one sweep batch */
		make(&rec, i % 2 ? OUTCOME_TEMPFAIL : OUTCOME_VALID, NOW);
		snprintf(key, sizeof(key), "a:user%05d@example.org", i);
		ck_assert(cache_put(c, key, &rec, NOW));
	}
	ck_assert_uint_eq(cache_sweep(c, NOW + HOUR), 2500);
	ck_assert_uint_eq(cache_purge(c), 2500);
	cache_close(c);
}
END_TEST

START_TEST(store_missing_directory)
{
	char why[300] = "", missing[200];
	snprintf(missing, sizeof(missing), "%s/nope/cache.lmdb", dir);
	ck_assert_ptr_null(cache_open(missing, 4, why, sizeof(why)));
	ck_assert_msg(strstr(why, "/nope is missing") != NULL, "why: %s", why);
}
END_TEST

START_TEST(store_full_evicts_oldest)
{
	struct cache *c = open_cache(1);
	struct cache_record rec, out;
	struct cache_stats st;
	char key[64];
	const int n = 4000;
	for (int i = 0; i < n; i++) {
		make(&rec, OUTCOME_VALID, NOW + i);
		memset(rec.outcome.text, 't', 200); /* about 300 octets a record */
		snprintf(key, sizeof(key), "a:%08x@example.org", (unsigned)i * 2654435761u);
		ck_assert_msg(cache_put(c, key, &rec, NOW + i), "put %d failed", i);
	}
	int old = 0, recent = 0;
	for (int i = 0; i < 100; i++) {
		snprintf(key, sizeof(key), "a:%08x@example.org", (unsigned)i * 2654435761u);
		old += cache_get(c, key, NOW + n, &out) != CACHE_MISS;
		snprintf(key, sizeof(key), "a:%08x@example.org", (unsigned)(n - 1 - i) * 2654435761u);
		recent += cache_get(c, key, NOW + n, &out) != CACHE_MISS;
	}
	ck_assert_int_eq(old, 0);
	ck_assert_int_eq(recent, 100);
	ck_assert(cache_stats(c, NOW + n, &st));
	ck_assert_uint_le(st.map_bytes, 1024 * 1024);
	ck_assert_uint_gt(st.addresses, 500);
	ck_assert_uint_lt(st.addresses, (size_t)n);
	cache_close(c);
}
END_TEST

/* with the sync thread, a full map's eviction syncs nothing on the
 * writer's thread (the engine's loop): its removals are commits like any
 * other, which the thread syncs within its interval. Here the interval is
 * a minute, so nothing may be synced at all while the puts run. */
START_TEST(store_full_with_sync_thread_syncs_on_the_thread)
{
	struct cache *c = open_cache(1);
	struct cache_record rec;
	struct cache_sync_stats st;
	char key[64];
	const int n = 4000;
	ck_assert(cache_sync_every(c, 60000));
	for (int i = 0; i < n; i++) {
		make(&rec, OUTCOME_VALID, NOW + i);
		memset(rec.outcome.text, 't', 200); /* about 300 octets a record: evictions */
		snprintf(key, sizeof(key), "a:%08x@example.org", (unsigned)i * 2654435761u);
		ck_assert_msg(cache_put(c, key, &rec, NOW + i), "put %d failed", i);
		cache_sync_stats(c, &st);
		ck_assert_msg(st.unsynced > 0 && st.syncs == 0,
		              "put %d: %llu of %llu commits unsynced, %llu syncs by the thread", i,
		              (unsigned long long)st.unsynced, (unsigned long long)st.commits,
		              (unsigned long long)st.syncs);
	}
	cache_sync_stats(c, &st);
	ck_assert_uint_gt(st.commits, (uint64_t)n); /* the evictions' commits too: it was full */
	cache_close(c);
}
END_TEST

/* raw_fill - with LMDB itself, fill a new file whose map is mib MiB until
 * not even a small value fits (keys "x:...", not cache records) */
static void raw_fill(size_t mib)
{
	static char value[65536];
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	char key[32];
	int seq = 0;
	ck_assert_int_eq(mdb_env_create(&env), 0);
	ck_assert_int_eq(mdb_env_set_mapsize(env, mib << 20), 0);
	ck_assert_int_eq(mdb_env_open(env, path, MDB_NOSUBDIR | MDB_NOSYNC, 0640), 0);
	for (size_t size = sizeof(value); size >= 64; size /= 8) {
		for (int rc = 0; rc == 0;) {
			ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
			ck_assert_int_eq(mdb_dbi_open(txn, NULL, 0, &dbi), 0);
			for (int i = 0; i < 16 && rc == 0; i++) {
				snprintf(key, sizeof(key), "x:%08d", seq++);
				MDB_val k = {strlen(key), key}, v = {size, value};
				rc = mdb_put(txn, dbi, &k, &v, 0);
			}
			if (rc == 0)
				rc = mdb_txn_commit(txn);
			else
				mdb_txn_abort(txn);
			ck_assert(rc == 0 || rc == MDB_MAP_FULL);
		}
	}
	mdb_env_close(env);
}

/* put_until_grown - in a child: write until the map is past 64 MiB, then
 * 300 records more (well past the parent's map); exit status 0 if so */
static int put_until_grown(void)
{
	char why[300], key[64];
	struct cache_stats st = {0};
	struct cache_record rec;
	struct cache *c = cache_open(path, 256, why, sizeof(why));
	int more = 300;
	for (int i = 0; c != NULL && i < 2000 && more > 0; i++) {
		make(&rec, OUTCOME_VALID, NOW);
		snprintf(key, sizeof(key), "a:child%d@example.org", i);
		if (!cache_put(c, key, &rec, NOW) || !cache_stats(c, NOW, &st))
			break;
		if (st.map_bytes > (64u << 20))
			more--;
	}
	cache_close(c);
	return st.map_bytes == (128u << 20) && more == 0 ? 0 : 1;
}

START_TEST(store_grows_and_follows_growth)
{
	struct cache_stats st;
	struct cache_record out;
	raw_fill(64);
	struct cache *c = open_cache(256);
	ck_assert(cache_stats(c, NOW, &st));
	ck_assert_uint_eq(st.map_bytes, 64u << 20);
	pid_t pid = fork(); /* another process grows the map */
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(put_until_grown());
	int status;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child did not grow the map");
	ck_assert_int_eq(cache_get(c, "a:child0@example.org", NOW, &out), CACHE_HIT); /* MDB_MAP_RESIZED */
	ck_assert(cache_stats(c, NOW, &st));
	ck_assert_uint_eq(st.map_bytes, 128u << 20);
	ck_assert_uint_ge(st.addresses, 300); /* all of the child's records, read */
	cache_close(c);
}
END_TEST

/* write_file - replace a file's bytes from offset on with n octets of fill
 * (or random ones for fill < 0) */
static void write_file(const char *name, off_t offset, size_t n, int fill)
{
	unsigned char buf[4096];
	int fd = open(name, O_WRONLY | O_CREAT, 0640);
	ck_assert_int_ge(fd, 0);
	for (size_t done = 0; done < n; done += sizeof(buf)) {
		for (size_t i = 0; i < sizeof(buf); i++)
			buf[i] = fill < 0 ? (unsigned char)rng() : (unsigned char)fill;
		ck_assert_int_eq(pwrite(fd, buf, sizeof(buf), offset + (off_t)done), (ssize_t)sizeof(buf));
	}
	close(fd);
}

/* works - a fresh cache stores and finds */
static void works(struct cache *c)
{
	struct cache_record rec, out;
	make(&rec, OUTCOME_INVALID, NOW);
	ck_assert(cache_put(c, "a:after@example.org", &rec, NOW));
	ck_assert_int_eq(cache_get(c, "a:after@example.org", NOW, &out), CACHE_HIT);
}

START_TEST(store_garbage_file_moved_aside)
{
	char lock[200];
	snprintf(lock, sizeof(lock), "%s-lock", path);
	write_file(path, 0, 3 * 4096, -1);
	write_file(lock, 0, 4096, -1);
	struct cache *c = open_cache(4);
	ck_assert_int_eq(count_files(".corrupt."), 1);
	works(c);
	cache_close(c);
}
END_TEST

/* fill_and_close - a cache holding a few records, closed; its file size */
static off_t fill_and_close(void)
{
	struct cache *c = open_cache(4);
	struct cache_record rec;
	struct stat st;
	char key[64];
	for (int i = 0; i < 200; i++) {
		make(&rec, OUTCOME_VALID, NOW);
		snprintf(key, sizeof(key), "a:user%d@example.org", i);
		ck_assert(cache_put(c, key, &rec, NOW));
	}
	cache_close(c);
	ck_assert_int_eq(stat(path, &st), 0);
	return st.st_size;
}

START_TEST(store_corrupt_pages_at_open)
{
	off_t size = fill_and_close();
	write_file(path, 2 * 4096, (size_t)size - 2 * 4096, 0); /* all but the meta pages */
	struct cache *c = open_cache(4);
	ck_assert_int_eq(count_files(".corrupt."), 1);
	works(c);
	cache_close(c);
}
END_TEST

START_TEST(store_corrupt_pages_while_open)
{
	struct cache_record out;
	off_t size = fill_and_close();
	struct cache *c = open_cache(4);
	ck_assert_int_eq(cache_get(c, "a:user1@example.org", NOW, &out), CACHE_HIT);
	write_file(path, 2 * 4096, (size_t)size - 2 * 4096, 0);
	ck_assert_int_eq(cache_get(c, "a:user1@example.org", NOW, &out), CACHE_MISS);
	ck_assert_int_eq(count_files(".corrupt."), 1);
	works(c);
	cache_close(c);
}
END_TEST

/* ---- damage: before the open, while open, and inside a call ---- */

enum damage {
	TRUNC_HALF,
	TRUNC_ONE_PAGE,
	TRUNC_ZERO,
	PAGES_ZEROED,
	PAGES_GARBAGE,
	META_GARBAGE,   /* the newer meta page's fields overwritten */
	META_ROOT_META, /* the newer meta page's main root pointing at a meta page (an LMDB assertion) */
	META_LAST_PAGE, /* the newer meta page's last page far past the file's end */
	DAMAGE_KINDS,
};

static const char *const damage_name[DAMAGE_KINDS] = {"truncated to half",
                                                      "truncated to one page",
                                                      "truncated to zero",
                                                      "pages zeroed",
                                                      "pages overwritten with garbage",
                                                      "meta page garbage",
                                                      "meta root at a meta page",
                                                      "meta last page past the end"};

/* newer_meta - the offset of the meta page LMDB uses */
static off_t newer_meta(void)
{
	unsigned char m[2][160];
	int fd = open(path, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, m[0], sizeof(m[0]), 0), (ssize_t)sizeof(m[0]));
	ck_assert_int_eq(pread(fd, m[1], sizeof(m[1]), 4096), (ssize_t)sizeof(m[1]));
	close(fd);
	uint64_t t0, t1;
	memcpy(&t0, m[0] + 16 + 128, 8);
	memcpy(&t1, m[1] + 16 + 128, 8);
	return t1 > t0 ? 4096 : 0;
}

/* put_u64 - one 64-bit field of the file */
static void put_u64(off_t offset, uint64_t value)
{
	int fd = open(path, O_WRONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, &value, 8, offset), 8);
	close(fd);
}

/* next_tick - wait (bounded) until the file system's clock has moved on
 * from the file's last change: a change within the same tick as the
 * cache's last look leaves the file's mtime as it was (cache.c) */
static void next_tick(void)
{
	struct stat st;
	struct timespec now;
	ck_assert_int_eq(stat(path, &st), 0);
	for (int i = 0; i < 1000; i++) {
		clock_gettime(CLOCK_REALTIME_COARSE, &now);
		if (now.tv_sec > st.st_mtim.tv_sec ||
		    (now.tv_sec == st.st_mtim.tv_sec && now.tv_nsec > st.st_mtim.tv_nsec))
			return;
		usleep(1000);
	}
	ck_abort_msg("the clock did not tick");
}

/* damage_file - one kind of damage to a closed or open cache of size octets */
static void damage_file(enum damage kind, off_t size)
{
	off_t meta = newer_meta() + 16; /* the meta fields, after the page header */
	next_tick();
	switch (kind) {
	case TRUNC_HALF:
		ck_assert_int_eq(truncate(path, size / 2), 0);
		break;
	case TRUNC_ONE_PAGE:
		ck_assert_int_eq(truncate(path, 4096), 0);
		break;
	case TRUNC_ZERO:
		ck_assert_int_eq(truncate(path, 0), 0);
		break;
	case PAGES_ZEROED:
		write_file(path, 2 * 4096, (size_t)size - 2 * 4096, 0);
		break;
	case PAGES_GARBAGE:
		write_file(path, 2 * 4096, (size_t)size - 2 * 4096, -1);
		break;
	case META_GARBAGE:
		for (off_t at = meta + 24; at < meta + 128; at += 8)
			put_u64(at, rng());
		break;
	case META_ROOT_META:
		put_u64(meta + 72 + 40, 1);
		break;
	case META_LAST_PAGE:
		put_u64(meta + 120, (uint64_t)size / 4096 * 1000);
		break;
	default:
		ck_abort();
	}
}

/* capture - stderr (where the log goes) into a file, from on to off; the
 * text captured into buf */
static int captured_fd = -1;
static void capture_on(void)
{
	char name[200];
	snprintf(name, sizeof(name), "%s/stderr.txt", dir);
	fflush(stderr);
	captured_fd = dup(2);
	int fd = open(name, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_ge(fd, 0);
	dup2(fd, 2);
	close(fd);
	log_set_level(LOG_DEBUG);
}

static void capture_off(char *buf, size_t size)
{
	char name[200];
	fflush(stderr);
	dup2(captured_fd, 2);
	close(captured_fd);
	log_set_level(LOG_ERR);
	snprintf(name, sizeof(name), "%s/stderr.txt", dir);
	int fd = open(name, O_RDONLY);
	ssize_t n = fd >= 0 ? read(fd, buf, size - 1) : -1;
	buf[n > 0 ? n : 0] = '\0';
	if (fd >= 0)
		close(fd);
	unlink(name);
}

/* count_lines - lines of text containing part */
static int count_lines(const char *text, const char *part)
{
	int n = 0;
	for (const char *line = text; *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : "")
		n += strstr(line, part) != NULL &&
		     strstr(line, part) < (strchr(line, '\n') ? strchr(line, '\n') : line + strlen(line));
	return n;
}

/* copy_file - from into to, replaced; and no lock file or moved-aside
 * file left (a fresh start for the next case) */
static void copy_file(const char *from, const char *to)
{
	char buf[65536], lock[200];
	ssize_t n;
	DIR *d = opendir(dir);
	struct dirent *e;
	while (d != NULL && (e = readdir(d)) != NULL)
		if (strstr(e->d_name, ".corrupt.") != NULL) {
			snprintf(lock, sizeof(lock), "%s/%s", dir, e->d_name);
			unlink(lock);
		}
	if (d != NULL)
		closedir(d);
	snprintf(lock, sizeof(lock), "%s-lock", path);
	unlink(lock);
	int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0640);
	ck_assert(in >= 0 && out >= 0);
	while ((n = read(in, buf, sizeof(buf))) > 0)
		ck_assert_int_eq(write(out, buf, (size_t)n), n);
	close(in);
	close(out);
}

START_TEST(store_damage_before_open)
{
	char log[8192], good[200];
	off_t size = fill_and_close();
	snprintf(good, sizeof(good), "%s/good", dir);
	copy_file(path, good);
	for (int kind = 0; kind < DAMAGE_KINDS; kind++) {
		copy_file(good, path);
		damage_file(kind, size);
		capture_on();
		struct cache *c = open_cache(4);
		capture_off(log, sizeof(log));
		bool empty = kind == TRUNC_ZERO; /* LMDB starts afresh in it: nothing to move */
		ck_assert_msg(count_files(".corrupt.") == (empty ? 0 : 1), "%s: %d moved aside",
		              damage_name[kind], count_files(".corrupt."));
		ck_assert_msg(count_lines(log, empty ? "was empty (0 bytes" : "moved aside to") == 1,
		              "%s: log:\n%s", damage_name[kind], log);
		works(c);
		cache_close(c);
	}
}
END_TEST

START_TEST(store_damage_while_open)
{
	char log[8192], good[200];
	struct cache_record out;
	off_t size = fill_and_close();
	snprintf(good, sizeof(good), "%s/good", dir);
	copy_file(path, good);
	for (int kind = 0; kind < DAMAGE_KINDS; kind++) {
		copy_file(good, path);
		struct cache *c = open_cache(4);
		ck_assert_int_eq(cache_get(c, "a:user1@example.org", NOW, &out), CACHE_HIT);
		damage_file(kind, size);
		capture_on();
		enum cache_status got = cache_get(c, "a:user1@example.org", NOW, &out);
		capture_off(log, sizeof(log));
		ck_assert_msg(got == CACHE_MISS, "%s: still a hit", damage_name[kind]);
		ck_assert_msg(count_files(".corrupt.") == 1, "%s: %d moved aside", damage_name[kind],
		              count_files(".corrupt."));
		ck_assert_msg(count_lines(log, "moved aside to") == 1 && count_lines(log, "cache ") == 1,
		              "%s: log:\n%s", damage_name[kind], log);
		works(c);
		cache_close(c);
	}
}
END_TEST

/* truncate_midway - a foreach visitor that truncates the file under the
 * cursor at the first record: the next page read faults */
static bool truncate_midway(void *arg, const char *key, const struct cache_record *rec)
{
	int *n = arg;
	if ((*n)++ == 0)
		ck_assert_int_eq(truncate(path, 2 * 4096), 0);
	return true;
}

START_TEST(store_sigbus_inside_a_call_is_caught)
{
	char log[8192];
	int n = 0;
	fill_and_close();
	struct cache *c = open_cache(4);
	capture_on();
	bool ok = cache_foreach(c, truncate_midway, &n);
	capture_off(log, sizeof(log));
	ck_assert(!ok);
	ck_assert_int_lt(n, 200);
	ck_assert_msg(count_lines(log, "SIGBUS") == 1 && count_lines(log, "moved aside to") == 1, "log:\n%s",
	              log);
	ck_assert_int_eq(count_files(".corrupt."), 1);
	works(c);
	cache_close(c);
}
END_TEST

START_TEST(store_assertion_inside_a_call_is_caught)
{
	char log[8192];
	struct cache_record out;
	struct stat st;
	off_t size = fill_and_close();
	struct cache *c = open_cache(4);
	ck_assert_int_eq(cache_get(c, "a:user1@example.org", NOW, &out), CACHE_HIT);
	ck_assert_int_eq(stat(path, &st), 0);
	damage_file(META_ROOT_META, size);
	/* the change unnoticed (as when made within the clock tick of the
	 * cache's last look): LMDB reads the root and fails an assertion */
	struct timespec times[2] = {st.st_atim, st.st_mtim};
	ck_assert_int_eq(utimensat(AT_FDCWD, path, times, 0), 0);
	capture_on();
	enum cache_status got = cache_get(c, "a:user1@example.org", NOW, &out);
	capture_off(log, sizeof(log));
	ck_assert_int_eq(got, CACHE_MISS);
	ck_assert_msg(count_lines(log, "LMDB assertion") == 1 && count_lines(log, "moved aside to") == 1,
	              "log:\n%s", log);
	ck_assert_int_eq(count_files(".corrupt."), 1);
	works(c);
	cache_close(c);
}
END_TEST

/* bus_elsewhere - in a child with the cache's handler installed: a SIGBUS
 * outside the cache's calls, from a map of its own file; never returns */
static void bus_elsewhere(void)
{
	char name[200];
	struct rlimit none = {0, 0};
	setrlimit(RLIMIT_CORE, &none); /* the death is expected: no core file */
	struct cache *c = open_cache(4);
	snprintf(name, sizeof(name), "%s/other", dir);
	int fd = open(name, O_RDWR | O_CREAT, 0600);
	if (fd < 0 || ftruncate(fd, 8192) != 0)
		_exit(2);
	volatile char *p = mmap(NULL, 8192, PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED || ftruncate(fd, 0) != 0)
		_exit(3);
	char x = p[4096];
	(void)x;
	cache_close(c);
	_exit(0);
}

START_TEST(store_sigbus_elsewhere_still_kills)
{
	int status;
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		bus_elsewhere();
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS, "status %#x", status);
	pid = fork(); /* one sent with kill(2) too */
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct rlimit none = {0, 0};
		setrlimit(RLIMIT_CORE, &none);
		struct cache *c = open_cache(4);
		raise(SIGBUS);
		cache_close(c);
		_exit(0);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS, "status %#x", status);
}
END_TEST

START_TEST(store_damage_again_turns_the_cache_off)
{
	char log[8192];
	struct cache_record rec, out;
	off_t size = fill_and_close();
	struct cache *c = open_cache(4);
	damage_file(PAGES_GARBAGE, size);
	ck_assert_int_eq(cache_get(c, "a:user1@example.org", NOW, &out), CACHE_MISS);
	ck_assert_int_eq(count_files(".corrupt."), 1);
	works(c); /* the fresh file */
	struct stat st;
	ck_assert_int_eq(stat(path, &st), 0);
	damage_file(TRUNC_HALF, st.st_size);
	capture_on();
	ck_assert_int_eq(cache_get(c, "a:after@example.org", NOW, &out), CACHE_MISS);
	make(&rec, OUTCOME_VALID, NOW);
	ck_assert(!cache_put(c, "a:other@example.org", &rec, NOW));
	ck_assert_int_eq(cache_get(c, "a:other@example.org", NOW, &out), CACHE_MISS);
	capture_off(log, sizeof(log));
	ck_assert_int_eq(count_files(".corrupt."), 1); /* not moved again within the minute */
	ck_assert_msg(count_lines(log, "running without a cache") == 1 && count_lines(log, "cache ") == 1,
	              "log:\n%s", log);
	cache_close(c);
}
END_TEST

START_TEST(store_check_accepts_a_churned_file)
{
	struct cache *c = open_cache(1); /* full: grows, sweeps, evicts */
	struct cache_record rec;
	char key[100], why[300];
	for (int round = 0; round < 12; round++) {
		for (int i = 0; i < 400; i++) {
			snprintf(key, sizeof(key), "a:user%d-%s@example.org", (int)(rng() % 5000),
			         i % 3 ? "with-a-longer-local-part-to-fill-pages" : "x");
			make(&rec, OUTCOME_VALID, NOW - (int64_t)(rng() % DAY));
			if (rng() % 5 == 0)
				cache_del(c, key);
			else
				cache_put(c, key, &rec, NOW);
		}
		if (round % 4 == 3)
			cache_sweep(c, NOW + 20 * DAY);
		struct mdbcheck_meta m[2];
		int newest, fd = open(path, O_RDONLY);
		ck_assert_int_ge(fd, 0);
		enum mdbcheck_status st = mdbcheck_metas(fd, m, &newest, why, sizeof(why));
		if (st == MDBCHECK_OK)
			st = mdbcheck_trees(fd, &m[newest], SIZE_MAX, NULL, why, sizeof(why));
		close(fd);
		ck_assert_msg(st == MDBCHECK_OK, "round %d: %s", round, why);
	}
	ck_assert_int_eq(count_files(".corrupt."), 0);
	cache_close(c);
}
END_TEST

/* Room for every record the killed writers put (tens of thousands when
 * commits are not synced): none is evicted, so a missing one was lost. */
#define KILL_MB 64

/* writer - tell -1 on fd once the cache is open, then put records one
 * after another, telling each committed index; with sync_ms, commits are
 * synced by the sync thread that often */
static void writer(int fd, int run, int64_t sync_ms)
{
	char why[300], key[64];
	struct cache_record rec;
	struct cache *c = cache_open(path, KILL_MB, why, sizeof(why));
	int ready = -1;
	if (c == NULL || !cache_sync_every(c, sync_ms) || write(fd, &ready, sizeof(ready)) != sizeof(ready))
		_exit(2);
	for (int i = 0;; i++) {
		snprintf(key, sizeof(key), "a:run%d-%d@example.org", run, i);
		make(&rec, OUTCOME_VALID, NOW + i);
		if (cache_put(c, key, &rec, NOW) && write(fd, &i, sizeof(i)) != sizeof(i))
			_exit(3);
	}
}

/* kill9_runs - runs writers (syncing every sync_ms; 0: every commit),
 * each killed at a random moment; every record it said was committed must
 * be there, and the file never damaged */
static void kill9_runs(int runs, int64_t sync_ms)
{
	struct cache_record out;
	char key[64];
	int committed = 0, lost = 0;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	fill_and_close();
	for (int run = 0; run < runs; run++) {
		int fds[2], status, i;
		ck_assert_int_eq(pipe(fds), 0);
		pid_t pid = fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0) {
			close(fds[0]);
			writer(fds[1], run, sync_ms);
		}
		close(fds[1]);
		/* once it has opened the cache (a loaded machine can take longer
		 * than the whole window to get there: at most 10 s) */
		struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
		if (poll(&pfd, 1, 10000) == 1)
			ck_assert_int_eq(read(fds[0], &i, sizeof(i)), sizeof(i)); /* -1: ready */
		usleep((useconds_t)(rng() % 60000)); /* a random moment: in a put, a commit, between */
		kill(pid, SIGKILL);
		ck_assert_int_eq(waitpid(pid, &status, 0), pid);
		ck_assert(WIFSIGNALED(status));
		struct cache *c = open_cache(KILL_MB);
		while (read(fds[0], &i, sizeof(i)) == sizeof(i)) {
			snprintf(key, sizeof(key), "a:run%d-%d@example.org", run, i);
			committed++;
			lost += cache_get(c, key, NOW, &out) != CACHE_HIT || out.probed_at_ms != NOW + i;
		}
		close(fds[0]);
		cache_close(c);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	fprintf(stderr, "# kill -9, sync every %lld ms: %d runs, %d committed records, %d lost, %.1f s\n",
	        (long long)sync_ms, runs, committed, lost,
	        (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	ck_assert_int_eq(lost, 0);
	ck_assert_int_eq(count_files(".corrupt."), 0);
	ck_assert_int_gt(committed, 0);
}

START_TEST(store_kill9_writers_lose_nothing)
{
	kill9_runs(100, 0);
}
END_TEST

/* the writers' commits are never synced before the kill (a minute): a
 * killed process's commits are in the page cache, and that is enough */
START_TEST(store_kill9_unsynced_writers_lose_nothing)
{
	kill9_runs(50, 60000);
}
END_TEST

START_TEST(store_follows_a_replaced_file)
{
	struct cache_record rec, out;
	char moved[200], lock[200];
	struct cache *c = open_cache(4);
	make(&rec, OUTCOME_VALID, NOW);
	ck_assert(cache_put(c, "a:before@example.org", &rec, NOW));
	snprintf(moved, sizeof(moved), "%s.gone", path);
	snprintf(lock, sizeof(lock), "%s-lock", path);
	ck_assert_int_eq(rename(path, moved), 0); /* as another process moving it aside */
	ck_assert_int_eq(unlink(lock), 0);
	ck_assert(cache_put(c, "a:after@example.org", &rec, NOW)); /* reopens the path */
	ck_assert_int_eq(cache_get(c, "a:after@example.org", NOW, &out), CACHE_HIT);
	ck_assert_int_eq(cache_get(c, "a:before@example.org", NOW, &out), CACHE_MISS);
	ck_assert_int_eq(access(path, F_OK), 0);
	cache_close(c);
}
END_TEST

/* put_and_read - n records under prefix, each read back; failures */
static int put_and_read(struct cache *c, const char *prefix, int n)
{
	struct cache_record rec, out;
	char key[64];
	int failures = 0;
	for (int i = 0; i < n; i++) {
		make(&rec, OUTCOME_VALID, NOW + i);
		snprintf(key, sizeof(key), "a:%s%d@example.org", prefix, i);
		failures += !cache_put(c, key, &rec, NOW);
		failures += cache_get(c, key, NOW, &out) != CACHE_HIT || out.probed_at_ms != NOW + i;
	}
	return failures;
}

/* count_all - foreach visitor counting records */
static bool count_all(void *arg, const char *key, const struct cache_record *rec)
{
	++*(int *)arg;
	return true;
}

START_TEST(store_two_processes)
{
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) { /* the child opens its own environment */
		char why[300];
		struct cache *mine = cache_open(path, 4, why, sizeof(why));
		int failures = mine == NULL ? 1 : put_and_read(mine, "child", 300);
		cache_close(mine);
		_exit(failures == 0 ? 0 : 1);
	}
	struct cache *c = open_cache(4);
	ck_assert_int_eq(put_and_read(c, "parent", 300), 0);
	int status, n = 0;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ck_assert(cache_foreach(c, count_all, &n));
	ck_assert_int_eq(n, 600);
	cache_close(c);
}
END_TEST

struct worker {
	struct cache *cache;
	char prefix[16];
	int failures;
};

/* worker_run - one thread's share of puts and gets */
static void *worker_run(void *arg)
{
	struct worker *w = arg;
	w->failures = put_and_read(w->cache, w->prefix, 200);
	return NULL;
}

/* four_writers - 4 threads of 200 puts and gets each on c, all read back */
static void four_writers(struct cache *c)
{
	struct worker workers[4];
	pthread_t threads[4];
	int n = 0;
	for (int i = 0; i < 4; i++) {
		workers[i] = (struct worker){.cache = c};
		snprintf(workers[i].prefix, sizeof(workers[i].prefix), "t%d-", i);
		ck_assert_int_eq(pthread_create(&threads[i], NULL, worker_run, &workers[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(threads[i], NULL);
		ck_assert_int_eq(workers[i].failures, 0);
	}
	ck_assert(cache_foreach(c, count_all, &n));
	ck_assert_int_eq(n, 800);
}

START_TEST(store_threads)
{
	struct cache *c = open_cache(4);
	four_writers(c);
	cache_close(c);
}
END_TEST

/* the same with the sync thread: commits not synced one by one */
START_TEST(store_threads_unsynced)
{
	struct cache *c = open_cache(4);
	ck_assert(cache_sync_every(c, 20));
	four_writers(c);
	cache_close(c);
	c = open_cache(4); /* all there after a clean stop */
	int n = 0;
	ck_assert(cache_foreach(c, count_all, &n));
	ck_assert_int_eq(n, 800);
	cache_close(c);
}
END_TEST

/* wait_synced - poll the sync counters until unsynced is 0 and syncs has
 * passed after (at most 5 s); the last counters in out */
static bool wait_synced(struct cache *c, uint64_t after, struct cache_sync_stats *out)
{
	for (int i = 0; i < 500; i++) {
		cache_sync_stats(c, out);
		if (out->unsynced == 0 && out->syncs > after)
			return true;
		usleep(10000);
	}
	return false;
}

START_TEST(store_sync_interval)
{
	struct cache_sync_stats st, before;
	struct cache_record rec;
	make(&rec, OUTCOME_VALID, NOW);
	/* 0 (and by default): LMDB syncs each commit, no thread */
	struct cache *c = open_cache(4);
	ck_assert(cache_sync_every(c, 0));
	ck_assert(cache_put(c, "a:one@example.org", &rec, NOW));
	ck_assert(cache_put(c, "a:two@example.org", &rec, NOW));
	cache_sync_stats(c, &st);
	ck_assert_int_eq(st.interval_ms, 0);
	ck_assert_uint_eq(st.commits, 2);
	ck_assert_uint_eq(st.unsynced, 0);
	usleep(100000);
	cache_sync_stats(c, &st);
	ck_assert_uint_eq(st.syncs, 0);
	cache_close(c);
	/* 200 ms: commits wait for the thread, which syncs them all at once */
	c = open_cache(4);
	ck_assert(cache_sync_every(c, 200));
	ck_assert(!cache_sync_every(c, 200)); /* once */
	cache_sync_stats(c, &before);
	ck_assert_int_eq(before.interval_ms, 200);
	for (int i = 0; i < 5; i++) {
		char key[64];
		snprintf(key, sizeof(key), "a:u%d@example.org", i);
		ck_assert(cache_put(c, key, &rec, NOW));
	}
	cache_sync_stats(c, &st);
	ck_assert_uint_eq(st.commits, 5);
	/* unless the thread's tick fell right between the puts and now */
	ck_assert_msg(st.unsynced == 5 || st.syncs > before.syncs, "unsynced %llu",
	              (unsigned long long)st.unsynced);
	ck_assert_msg(wait_synced(c, before.syncs, &st), "not synced: %llu unsynced, %llu syncs",
	              (unsigned long long)st.unsynced, (unsigned long long)st.syncs);
	/* and again: the thread goes on */
	before = st;
	ck_assert(cache_put(c, "a:later@example.org", &rec, NOW));
	ck_assert(wait_synced(c, before.syncs, &st));
	ck_assert_uint_eq(st.commits, 6);
	/* nothing new: no sync */
	before = st;
	usleep(500000);
	cache_sync_stats(c, &st);
	ck_assert_uint_eq(st.syncs, before.syncs);
	cache_close(c);
}
END_TEST

struct holder {
	struct cache *cache;
	atomic_int put_done, get_done; /* set by the other threads */
	atomic_int waited_ms;          /* how long the visit waited for them */
};

/* hold_visit - a visit that keeps its read transaction open until the
 * other threads' put and get are done (or 5 s) */
static bool hold_visit(void *arg, const char *key, const struct cache_record *rec)
{
	struct holder *h = arg;
	while (!(atomic_load(&h->put_done) && atomic_load(&h->get_done)) &&
	       atomic_load(&h->waited_ms) < 5000) {
		usleep(1000);
		atomic_fetch_add(&h->waited_ms, 1);
	}
	return false;
}

/* hold_run - foreach with hold_visit */
static void *hold_run(void *arg)
{
	struct holder *h = arg;
	cache_foreach(h->cache, hold_visit, h);
	return NULL;
}

/* while a reader keeps a read transaction open, a write and another read
 * go through (with one lock for all, both would wait for the reader) */
START_TEST(store_readers_and_writer_do_not_wait)
{
	struct cache *c = open_cache(4);
	struct cache_record rec, out;
	struct holder h = {.cache = c};
	pthread_t t;
	make(&rec, OUTCOME_VALID, NOW);
	ck_assert(cache_put(c, "a:first@example.org", &rec, NOW));
	ck_assert_int_eq(pthread_create(&t, NULL, hold_run, &h), 0);
	for (int i = 0; atomic_load(&h.waited_ms) == 0 && i < 5000; i++) /* until the visit has begun */
		usleep(1000);
	ck_assert_int_gt(atomic_load(&h.waited_ms), 0);
	ck_assert(cache_put(c, "a:second@example.org", &rec, NOW));
	atomic_store(&h.put_done, 1);
	ck_assert_int_eq(cache_get(c, "a:second@example.org", NOW, &out), CACHE_HIT);
	atomic_store(&h.get_done, 1);
	pthread_join(t, NULL);
	ck_assert_msg(atomic_load(&h.waited_ms) < 5000, "the reader waited %d ms", atomic_load(&h.waited_ms));
	cache_close(c);
}
END_TEST

START_TEST(store_damage_under_threads)
{
	struct cache *c = open_cache(4);
	struct worker workers[4];
	pthread_t threads[4];
	struct stat st;
	for (int i = 0; i < 4; i++) {
		workers[i] = (struct worker){.cache = c};
		snprintf(workers[i].prefix, sizeof(workers[i].prefix), "t%d-", i);
		ck_assert_int_eq(pthread_create(&threads[i], NULL, worker_run, &workers[i]), 0);
	}
	/* once the threads have written a few pages, truncate under them */
	for (int i = 0; i < 10000 && (stat(path, &st) != 0 || st.st_size < 6 * 4096); i++)
		usleep(1000);
	ck_assert_int_ge(st.st_size, 6 * 4096);
	ck_assert_int_eq(truncate(path, 3 * 4096), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(threads[i], NULL);        /* failures allowed: records were lost */
	ck_assert_int_eq(count_files(".corrupt."), 1); /* one recovery for all threads */
	works(c);
	cache_close(c);
}
END_TEST

START_TEST(store_damaged_record_is_a_miss)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = {5, "a:bad"}, v = {7, "garbage"};
	struct cache_record out;
	int n = 0;
	ck_assert_int_eq(mdb_env_create(&env), 0);
	ck_assert_int_eq(mdb_env_open(env, path, MDB_NOSUBDIR, 0640), 0);
	ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, NULL, 0, &dbi), 0);
	ck_assert_int_eq(mdb_put(txn, dbi, &k, &v, 0), 0);
	ck_assert_int_eq(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
	struct cache *c = open_cache(4);
	ck_assert_int_eq(cache_get(c, "a:bad", NOW, &out), CACHE_MISS);
	ck_assert(cache_foreach(c, count_all, &n));
	ck_assert_int_eq(n, 0); /* skipped */
	ck_assert_uint_eq(cache_sweep(c, NOW), 1);
	ck_assert(!cache_del(c, "a:bad"));
	cache_close(c);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("cache");
	TCase *pure = tcase_create("record");
	tcase_add_checked_fixture(pure, setup, teardown);
	tcase_add_test(pure, lifetimes_by_class);
	tcase_add_test(pure, refresh_never_after_expiry);
	tcase_add_test(pure, may_replace_table);
	tcase_add_test(pure, round_trip_random);
	tcase_add_test(pure, encode_sanitizes_and_bounds);
	tcase_add_test(pure, decode_rejects_damage);
	tcase_add_test(pure, v2_fields_round_trip_and_v1_still_read);
	tcase_add_test(pure, ttl_cap_shortens_lifetime);
	tcase_add_test(pure, deferral_continues);
	tcase_add_test(pure, stamp_refresh_moves_one_window);
	tcase_add_test(pure, decode_survives_truncation_and_flips);
	tcase_add_test(pure, key_names);
	tcase_set_timeout(pure, 60);
	suite_add_tcase(s, pure);
	TCase *store = tcase_create("store");
	tcase_add_checked_fixture(store, setup, teardown);
	tcase_set_timeout(store, 60);
	tcase_add_test(store, store_get_put_stale_expired);
	tcase_add_test(store, store_replace_rule);
	tcase_add_test(store, store_del_sweep_purge_foreach_stats);
	tcase_add_test(store, store_sweep_many);
	tcase_add_test(store, store_missing_directory);
	tcase_add_test(store, store_full_evicts_oldest);
	tcase_add_test(store, store_grows_and_follows_growth);
	tcase_add_test(store, store_garbage_file_moved_aside);
	tcase_add_test(store, store_corrupt_pages_at_open);
	tcase_add_test(store, store_corrupt_pages_while_open);
	tcase_add_test(store, store_follows_a_replaced_file);
	tcase_add_test(store, store_two_processes);
	tcase_add_test(store, store_threads);
	tcase_add_test(store, store_threads_unsynced);
	tcase_add_test(store, store_sync_interval);
	tcase_add_test(store, store_full_with_sync_thread_syncs_on_the_thread);
	tcase_add_test(store, store_readers_and_writer_do_not_wait);
	tcase_add_test(store, store_damaged_record_is_a_miss);
	suite_add_tcase(s, store);
	TCase *damage = tcase_create("damage");
	tcase_add_checked_fixture(damage, setup, teardown);
	tcase_set_timeout(damage, 120);
	tcase_add_test(damage, store_damage_before_open);
	tcase_add_test(damage, store_damage_while_open);
	tcase_add_test(damage, store_sigbus_inside_a_call_is_caught);
	tcase_add_test(damage, store_sigbus_elsewhere_still_kills);
	tcase_add_test(damage, store_assertion_inside_a_call_is_caught);
	tcase_add_test(damage, store_damage_under_threads);
	tcase_add_test(damage, store_damage_again_turns_the_cache_off);
	tcase_add_test(damage, store_check_accepts_a_churned_file);
	tcase_add_test(damage, store_kill9_writers_lose_nothing);
	tcase_add_test(damage, store_kill9_unsynced_writers_lose_nothing);
	suite_add_tcase(s, damage);
	return unit_run(s);
}
