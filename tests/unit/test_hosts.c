/*
 * test_hosts.c - the circuit breaker's table (hosts.h) with explicit times:
 * a refusal remembered for its ttl and then forgotten, backoff that doubles
 * per failure in a row up to the cap, an answer that ends a backoff but not
 * a refusal, first-contact claims (one prober, the others wait; released
 * by any note, lapsing on their own), IPv4-mapped addresses, "off"
 * settings, the bound and LRU eviction, host_session_rate's minute; the
 * catch-all memory: need distinct domains within the ttl, remembered for
 * the ttl, ended and held off by a not-catch-all answer whatever the order,
 * kept while it matters and freed with its record.
 */
#include <stdio.h>
#include <string.h>

#include "hosts.h"
#include "unit.h"

static const struct sockaddr *sa(const char *text)
{
	static struct sockaddr_storage ss[4];
	static int next;
	return unit_sockaddr(text, &ss[next++ % 4]);
}

static struct outcome refusal(void)
{
	struct outcome o;
	memset(&o, 0, sizeof(o));
	outcome_set(&o, OUTCOME_BLOCKED, STAGE_BANNER, 554, "5.7.1", "your address is listed",
	            "refused at banner");
	return o;
}

START_TEST(blocked_remembered_then_expires)
{
	struct hosts *h = hosts_new(16);
	ck_assert_ptr_nonnull(h);
	struct outcome o = refusal();
	struct host_memo m;
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.7"), 1000, &m), HOST_OK);
	ck_assert(hosts_note_blocked(h, sa("192.0.2.7"), 1000, 3600000, "mx.example", &o, NULL, NULL));
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.7"), 1000 + 3599999, &m), HOST_BLOCKED);
	ck_assert_int_eq(m.stage, STAGE_BANNER);
	ck_assert_int_eq(m.code, 554);
	ck_assert_str_eq(m.ecode, "5.7.1");
	ck_assert_str_eq(m.text, "your address is listed");
	ck_assert_str_eq(m.host, "mx.example");
	ck_assert_int_eq(m.since_ms, 1000);
	ck_assert_int_eq(m.until_ms, 3601000);
	ck_assert_str_eq(m.source, ""); /* none given */
	ck_assert_str_eq(m.from, "");
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.8"), 2000, NULL), HOST_OK); /* another address */
	/* an answer (from a session begun before) does not end a refusal */
	hosts_note_answer(h, sa("192.0.2.7"), 2000);
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.7"), 5000, NULL), HOST_BLOCKED);
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.7"), 3601000, &m), HOST_OK); /* ttl over */
	ck_assert_int_eq(hosts_count(h), 0);                                      /* and forgotten */
	hosts_free(h);
}
END_TEST

/* A refusal keeps the source address of the refused session (ours: the
 * fleet is told it) and, when learned, the fleet host it came from; a
 * later note replaces both. */
START_TEST(blocked_keeps_source_and_origin)
{
	struct hosts *h = hosts_new(16);
	struct outcome o = refusal();
	struct host_memo m;
	ck_assert(
	        hosts_note_blocked(h, sa("192.0.2.7"), 1000, 60000, "mx.example", &o, "198.51.100.2", NULL));
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.7"), 2000, &m), HOST_BLOCKED);
	ck_assert_str_eq(m.source, "198.51.100.2");
	ck_assert_str_eq(m.from, "");
	ck_assert(hosts_note_blocked(h, sa("192.0.2.7"), 3000, 60000, "mx.example", &o, "2001:db8::5",
	                             "mx2.example:4242"));
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.7"), 4000, &m), HOST_BLOCKED);
	ck_assert_str_eq(m.source, "2001:db8::5");
	ck_assert_str_eq(m.from, "mx2.example:4242");
	ck_assert(hosts_note_blocked(h, sa("192.0.2.7"), 5000, 60000, "mx.example", &o, "", "fleet:1"));
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.7"), 6000, &m), HOST_BLOCKED);
	ck_assert_str_eq(m.source, "");
	ck_assert_str_eq(m.from, "fleet:1");
	ck_assert(hosts_note_blocked(h, sa("192.0.2.7"), 7000, 60000, "mx.example", &o, NULL, NULL));
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.7"), 8000, &m), HOST_BLOCKED);
	ck_assert_str_eq(m.source, "");
	ck_assert_str_eq(m.from, "");
	hosts_free(h);
}
END_TEST

START_TEST(census_counts_what_is_in_force)
{
	struct hosts *h = hosts_new(16);
	struct outcome o = refusal();
	struct hosts_census c;
	hosts_census(h, 0, &c);
	ck_assert_uint_eq(c.records, 0);
	ck_assert(hosts_note_blocked(h, sa("192.0.2.7"), 1000, 60000, "mx.example", &o, NULL, NULL));
	ck_assert_int_gt(hosts_note_failure(h, sa("192.0.2.8"), 1000, 10000), 0);
	hosts_note_answer(h, sa("192.0.2.9"), 1000);
	hosts_census(h, 2000, &c);
	ck_assert_uint_eq(c.records, 3);
	ck_assert_uint_eq(c.blocked, 1);
	ck_assert_uint_eq(c.backed_off, 1);
	ck_assert_uint_eq(c.catch_all, 0);
	hosts_census(h, 20000, &c); /* the backoff is over, the refusal is not */
	ck_assert_uint_eq(c.blocked, 1);
	ck_assert_uint_eq(c.backed_off, 0);
	hosts_census(NULL, 0, &c);
	ck_assert_uint_eq(c.records, 0);
	hosts_free(h);
}
END_TEST

START_TEST(blocked_off)
{
	struct hosts *h = hosts_new(16);
	struct outcome o = refusal();
	ck_assert(!hosts_note_blocked(h, sa("192.0.2.7"), 1000, 0, "mx.example", &o, NULL, NULL));
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.7"), 1000, NULL), HOST_OK);
	ck_assert_int_eq(hosts_note_failure(h, sa("192.0.2.7"), 1000, 0), 0);
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.7"), 1000, NULL), HOST_OK);
	ck_assert_int_eq(hosts_count(h), 0);
	/* NULL table: everything is OK, nothing crashes */
	ck_assert_int_eq(hosts_lookup(NULL, sa("192.0.2.7"), 1, NULL), HOST_OK);
	ck_assert_int_eq(hosts_note_failure(NULL, sa("192.0.2.7"), 1, 1000), 0);
	hosts_note_answer(NULL, sa("192.0.2.7"), 1);
	ck_assert(hosts_claim(NULL, sa("192.0.2.7"), 1, 1000, NULL));
	hosts_free(h);
}
END_TEST

START_TEST(learned_backoff_window)
{
	struct hosts *h = hosts_new(16);
	struct host_memo m;
	/* a window already over, or an unusable address: nothing */
	ck_assert(!hosts_note_backoff_until(h, sa("192.0.2.30"), 1000, 1000));
	struct sockaddr unix_family = {.sa_family = AF_UNIX};
	ck_assert(!hosts_note_backoff_until(h, &unix_family, 1000, 5000));
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.30"), 1000, NULL), HOST_OK);
	/* learned: backed off until exactly then, one failure, not doubled */
	ck_assert(hosts_note_backoff_until(h, sa("192.0.2.30"), 1000, 90000));
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.30"), 89999, &m), HOST_BACKED_OFF);
	ck_assert_int_eq(m.until_ms, 90000);
	ck_assert_int_eq(m.failures, 1);
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.30"), 90000, NULL), HOST_OK);
	/* a shorter learned window leaves a longer one of ours */
	ck_assert_int_eq(hosts_note_failure(h, sa("192.0.2.31"), 1000, 600000), 600000);
	ck_assert(hosts_note_backoff_until(h, sa("192.0.2.31"), 2000, 30000));
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.31"), 2000, &m), HOST_BACKED_OFF);
	ck_assert_int_eq(m.until_ms, 601000);
	/* a refusal still tells more than silence */
	struct outcome o;
	outcome_set(&o, OUTCOME_BLOCKED, STAGE_BANNER, 554, "", "no", "test");
	ck_assert(hosts_note_blocked(h, sa("192.0.2.32"), 1000, 60000, "mx", &o, NULL, NULL));
	ck_assert(hosts_note_backoff_until(h, sa("192.0.2.32"), 1000, 90000));
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.32"), 2000, NULL), HOST_BLOCKED);
	/* a first contact under way stays claimed by its prober */
	bool claimed = false;
	ck_assert(hosts_claim(h, sa("192.0.2.33"), 1000, 5000, &claimed));
	ck_assert(claimed);
	ck_assert(hosts_note_backoff_until(h, sa("192.0.2.33"), 1000, 2000));
	ck_assert(!hosts_claim(h, sa("192.0.2.33"), 2500, 5000, &claimed));
	hosts_free(h);
}
END_TEST

START_TEST(backoff_grows_and_caps)
{
	struct hosts *h = hosts_new(16);
	const int64_t base = 300000; /* 5m */
	int64_t now = 10000;
	struct host_memo m;
	int64_t expect[] = {300000, 600000, 1200000, 2400000, 3600000, 3600000};
	for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
		int64_t ms = hosts_note_failure(h, sa("2001:db8::25"), now, base);
		ck_assert_int_eq(ms, expect[i]);
		ck_assert_int_eq(hosts_lookup(h, sa("2001:db8::25"), now + ms - 1, &m), HOST_BACKED_OFF);
		ck_assert_int_eq(m.failures, i + 1);
		ck_assert_int_eq(m.since_ms, 10000); /* the streak's first failure */
		/* a failure reported while backed off (an attempt begun before) does not grow it */
		ck_assert_int_eq(hosts_note_failure(h, sa("2001:db8::25"), now + 1, base), ms - 1);
		now += ms;
		ck_assert_int_eq(hosts_lookup(h, sa("2001:db8::25"), now, NULL),
		                 HOST_OK); /* over: try again */
	}
	/* an answer ends the streak: the next failure starts again at base */
	hosts_note_answer(h, sa("2001:db8::25"), now);
	ck_assert_int_eq(hosts_lookup(h, sa("2001:db8::25"), now, &m), HOST_OK);
	ck_assert_int_eq(m.failures, 0);
	ck_assert_int_eq(hosts_note_failure(h, sa("2001:db8::25"), now, base), base);
	/* a streak left alone for HOSTS_FORGET_MS starts again too */
	now += HOSTS_FORGET_MS;
	ck_assert_int_eq(hosts_note_failure(h, sa("2001:db8::25"), now, base), base);
	/* a base above the cap is kept as it is */
	ck_assert_int_eq(hosts_note_failure(h, sa("192.0.2.9"), now, 2 * HOSTS_BACKOFF_CAP_MS),
	                 2 * HOSTS_BACKOFF_CAP_MS);
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.9"), now + HOSTS_BACKOFF_CAP_MS, NULL), HOST_BACKED_OFF);
	hosts_free(h);
}
END_TEST

START_TEST(blocked_beats_backoff_and_mapped_is_ipv4)
{
	struct hosts *h = hosts_new(16);
	struct outcome o = refusal();
	ck_assert_int_eq(hosts_note_failure(h, sa("198.51.100.1"), 0, 1000), 1000);
	ck_assert_int_eq(hosts_lookup(h, sa("::ffff:198.51.100.1"), 10, NULL), HOST_BACKED_OFF);
	/* a refusal is an answer: the silence is over, the refusal is remembered */
	ck_assert(hosts_note_blocked(h, sa("::ffff:198.51.100.1"), 20, 5000, "mx", &o, NULL, NULL));
	struct host_memo m;
	ck_assert_int_eq(hosts_lookup(h, sa("198.51.100.1"), 30, &m), HOST_BLOCKED);
	ck_assert_int_eq(m.failures, 0);
	ck_assert_int_eq(hosts_count(h), 1);
	/* unusable addresses */
	struct sockaddr unix_family = {.sa_family = AF_UNIX};
	ck_assert_int_eq(hosts_lookup(h, &unix_family, 0, NULL), HOST_OK);
	ck_assert(!hosts_note_blocked(h, &unix_family, 0, 1000, "x", &o, NULL, NULL));
	ck_assert_int_eq(hosts_lookup(h, NULL, 0, NULL), HOST_OK);
	hosts_free(h);
}
END_TEST

START_TEST(bounded_lru_eviction)
{
	enum { MAX = 64 };
	struct hosts *h = hosts_new(MAX);
	char text[32];
	for (int i = 0; i < 3 * MAX; i++) {
		snprintf(text, sizeof(text), "10.0.%d.%d", i / 256, i % 256);
		ck_assert_int_eq(hosts_note_failure(h, sa(text), i, 60000), 60000);
		ck_assert_uint_le(hosts_count(h), MAX);
		if (i == MAX / 2) /* touch the first: it is the newest now */
			ck_assert_int_eq(hosts_note_failure(h, sa("10.0.0.0"), i, 60000), 60000 - i);
	}
	ck_assert_int_eq(hosts_count(h), MAX);
	/* the last MAX are kept, the older ones were evicted */
	snprintf(text, sizeof(text), "10.0.%d.%d", (3 * MAX - 1) / 256, (3 * MAX - 1) % 256);
	ck_assert_int_eq(hosts_lookup(h, sa(text), 3 * MAX, NULL), HOST_BACKED_OFF);
	snprintf(text, sizeof(text), "10.0.%d.%d", (2 * MAX) / 256, (2 * MAX) % 256);
	ck_assert_int_eq(hosts_lookup(h, sa(text), 3 * MAX, NULL), HOST_BACKED_OFF);
	snprintf(text, sizeof(text), "10.0.%d.%d", (2 * MAX - 1) / 256, (2 * MAX - 1) % 256);
	ck_assert_int_eq(hosts_lookup(h, sa(text), 3 * MAX, NULL), HOST_OK);
	ck_assert_int_eq(hosts_lookup(h, sa("10.0.0.1"), 3 * MAX, NULL), HOST_OK);
	ck_assert_int_eq(hosts_count(h), MAX);
	hosts_free(h);
	ck_assert_ptr_null(hosts_new(0));
}
END_TEST

START_TEST(eviction_spares_the_recently_touched)
{
	struct hosts *h = hosts_new(3);
	struct outcome o = refusal();
	ck_assert(hosts_note_blocked(h, sa("192.0.2.1"), 1, 60000, "a", &o, NULL, NULL));
	ck_assert_int_eq(hosts_note_failure(h, sa("192.0.2.2"), 2, 60000), 60000);
	ck_assert_int_eq(hosts_note_failure(h, sa("192.0.2.3"), 3, 60000), 60000);
	/* .1 is the oldest; a new failure there makes it the newest */
	ck_assert_int_eq(hosts_note_failure(h, sa("192.0.2.1"), 4, 60000), 60000);
	ck_assert_int_eq(hosts_note_failure(h, sa("192.0.2.4"), 5, 60000), 60000);
	ck_assert_int_eq(hosts_count(h), 3);
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.2"), 6, NULL), HOST_OK); /* evicted */
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.1"), 6, NULL), HOST_BLOCKED);
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.3"), 6, NULL), HOST_BACKED_OFF);
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.4"), 6, NULL), HOST_BACKED_OFF);
	hosts_free(h);
}
END_TEST

/* A record in use (its first contact under way) is never evicted: the
 * least recently touched one not in use goes instead; a table whose
 * oldest records are all claimed holds one more until a claim lapses */
START_TEST(eviction_spares_a_claimed_host)
{
	struct hosts *h = hosts_new(3);
	bool claimed = false;
	ck_assert(hosts_claim(h, sa("192.0.2.1"), 1, 60000, &claimed));
	ck_assert(claimed);
	ck_assert_int_eq(hosts_note_failure(h, sa("192.0.2.2"), 2, 60000), 60000);
	ck_assert_int_eq(hosts_note_failure(h, sa("192.0.2.3"), 3, 60000), 60000);
	ck_assert_int_eq(hosts_note_failure(h, sa("192.0.2.4"), 4, 60000), 60000);
	ck_assert_int_eq(hosts_count(h), 3);
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.2"), 5, NULL), HOST_OK); /* evicted instead */
	ck_assert(!hosts_claim(h, sa("192.0.2.1"), 5, 60000, &claimed));      /* still claimed */
	/* every record claimed: one more is held */
	struct hosts *full = hosts_new(2);
	ck_assert(hosts_claim(full, sa("198.51.100.1"), 1, 1000, &claimed) && claimed);
	ck_assert(hosts_claim(full, sa("198.51.100.2"), 1, 1000, &claimed) && claimed);
	ck_assert(hosts_claim(full, sa("198.51.100.3"), 1, 1000, &claimed) && claimed);
	ck_assert_int_eq(hosts_count(full), 3);
	ck_assert(!hosts_claim(full, sa("198.51.100.1"), 2, 1000, &claimed));
	/* the claims lapsed: the next new record evicts, back to the bound */
	ck_assert_int_eq(hosts_note_failure(full, sa("198.51.100.4"), 2000, 60000), 60000);
	ck_assert_int_eq(hosts_count(full), 2);
	ck_assert_int_eq(hosts_lookup(full, sa("198.51.100.4"), 2001, NULL), HOST_BACKED_OFF);
	hosts_free(full);
	hosts_free(h);
}
END_TEST

START_TEST(first_contact_claims)
{
	struct hosts *h = hosts_new(16);
	struct outcome o = refusal();
	/* nobody heard from it: the first claimant connects, the others wait */
	ck_assert(hosts_claim(h, sa("192.0.2.1"), 0, 4000, NULL));
	ck_assert(!hosts_claim(h, sa("192.0.2.1"), 10, 4000, NULL));
	ck_assert(!hosts_claim(h, sa("::ffff:192.0.2.1"), 3999, 4000, NULL));
	ck_assert(hosts_claim(h, sa("192.0.2.2"), 10, 4000, NULL)); /* another host: its own claim */
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.1"), 10, NULL), HOST_OK);
	/* the claim lapses: the next one takes it over */
	ck_assert(hosts_claim(h, sa("192.0.2.1"), 4000, 4000, NULL));
	ck_assert(!hosts_claim(h, sa("192.0.2.1"), 4001, 4000, NULL));
	/* it answered: everyone may connect at once, for HOSTS_ANSWERED_MS */
	hosts_note_answer(h, sa("192.0.2.1"), 5000);
	ck_assert(hosts_claim(h, sa("192.0.2.1"), 5001, 4000, NULL));
	ck_assert(hosts_claim(h, sa("192.0.2.1"), 5002, 4000, NULL));
	ck_assert(hosts_claim(h, sa("192.0.2.1"), 5000 + HOSTS_ANSWERED_MS - 1, 4000, NULL));
	int64_t later = 5000 + HOSTS_ANSWERED_MS;
	ck_assert(hosts_claim(h, sa("192.0.2.1"), later, 4000, NULL)); /* first contact again */
	ck_assert(!hosts_claim(h, sa("192.0.2.1"), later + 1, 4000, NULL));
	/* silence releases the claim: the waiters find the backoff */
	ck_assert_int_eq(hosts_note_failure(h, sa("192.0.2.1"), later + 2, 1000), 1000);
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.1"), later + 3, NULL), HOST_BACKED_OFF);
	ck_assert(hosts_claim(h, sa("192.0.2.1"), later + 1002, 4000, NULL)); /* after it: one tries again */
	ck_assert(!hosts_claim(h, sa("192.0.2.1"), later + 1003, 4000, NULL));
	/* a refusal releases it too: the waiters find the refusal */
	ck_assert(hosts_note_blocked(h, sa("192.0.2.1"), later + 1004, 60000, "mx", &o, NULL, NULL));
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.1"), later + 1005, NULL), HOST_BLOCKED);
	/* who holds the claim; a cancelled first contact releases it */
	bool held = true;
	ck_assert(hosts_claim(h, sa("192.0.2.4"), 0, 4000, &held));
	ck_assert(held);
	ck_assert(!hosts_claim(h, sa("192.0.2.4"), 1, 4000, &held));
	ck_assert(!held);
	hosts_release(h, sa("192.0.2.4"));
	ck_assert(hosts_claim(h, sa("192.0.2.4"), 2, 4000, &held));
	ck_assert(held);
	hosts_note_answer(h, sa("192.0.2.4"), 3);
	ck_assert(hosts_claim(h, sa("192.0.2.4"), 4, 4000, &held));
	ck_assert(!held); /* answering: nothing to hold */
	hosts_release(NULL, sa("192.0.2.4"));
	/* with backoff off, silence still releases the claim */
	ck_assert(hosts_claim(h, sa("192.0.2.3"), 0, 4000, NULL));
	ck_assert(!hosts_claim(h, sa("192.0.2.3"), 1, 4000, NULL));
	ck_assert_int_eq(hosts_note_failure(h, sa("192.0.2.3"), 2, 0), 0);
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.3"), 3, NULL), HOST_OK);
	ck_assert(hosts_claim(h, sa("192.0.2.3"), 3, 4000, NULL));
	/* silence after an answer ends the answering mark: first contact again */
	hosts_note_answer(h, sa("192.0.2.2"), 100);
	ck_assert_int_eq(hosts_note_failure(h, sa("192.0.2.2"), 200, 1000), 1000);
	ck_assert(hosts_claim(h, sa("192.0.2.2"), 1200, 4000, NULL));
	ck_assert(!hosts_claim(h, sa("192.0.2.2"), 1201, 4000, NULL));
	hosts_free(h);
}
END_TEST

START_TEST(full_table_of_default_size)
{
	struct hosts *h = hosts_new(HOSTS_MAX);
	struct sockaddr_in6 s6 = {.sin6_family = AF_INET6};
	s6.sin6_addr.s6_addr[0] = 0x20;
	s6.sin6_addr.s6_addr[1] = 0x01;
	for (uint32_t i = 0; i < HOSTS_MAX + 1000; i++) {
		memcpy(&s6.sin6_addr.s6_addr[12], &i, 4);
		ck_assert_int_gt(hosts_note_failure(h, (struct sockaddr *)&s6, 1, 1000), 0);
	}
	ck_assert_int_eq(hosts_count(h), HOSTS_MAX);
	hosts_free(h);
}
END_TEST

START_TEST(session_rate_per_minute)
{
	struct hosts *h = hosts_new(16);
	unsigned n;
	/* 3 a minute: the first three sessions at 1000.. are counted, the fourth refused */
	for (unsigned i = 1; i <= 3; i++) {
		ck_assert(hosts_session_take(h, sa("192.0.2.9"), 1000 + i, 3, &n, NULL));
		ck_assert_uint_eq(n, i);
	}
	ck_assert(!hosts_session_take(h, sa("192.0.2.9"), 1010, 3, &n, NULL));
	ck_assert_uint_eq(n, 3);
	ck_assert(!hosts_session_take(h, sa("192.0.2.9"), 1000 + 59999, 3, &n, NULL)); /* still that minute */
	/* another address has its own count; a mapped address is its IPv4 one */
	ck_assert(hosts_session_take(h, sa("192.0.2.10"), 1010, 3, &n, NULL));
	ck_assert_uint_eq(n, 1);
	ck_assert(!hosts_session_take(h, sa("::ffff:192.0.2.9"), 1010, 3, NULL, NULL));
	/* the record stays while its minute runs, even with nothing else in it */
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.9"), 30000, NULL), HOST_OK);
	ck_assert_uint_eq(hosts_count(h), 2);
	/* a new minute: counted afresh */
	ck_assert(hosts_session_take(h, sa("192.0.2.9"), 61001, 3, &n, NULL));
	ck_assert_uint_eq(n, 1);
	/* after the minute it is forgotten when met */
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.9"), 61001 + 60000, NULL), HOST_OK);
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.10"), 61001 + 60000, NULL), HOST_OK);
	ck_assert_uint_eq(hosts_count(h), 0);
	/* 0: no limit, nothing kept; no table: never refused */
	for (int i = 0; i < 100; i++)
		ck_assert(hosts_session_take(h, sa("192.0.2.11"), 200000, 0, &n, NULL));
	ck_assert_uint_eq(hosts_count(h), 0);
	ck_assert(hosts_session_take(NULL, sa("192.0.2.11"), 200000, 1, NULL, NULL));
	hosts_free(h);
}
END_TEST

/* a session hook (the fleet's count, shared.h) decides instead of the table */
struct hook_state {
	unsigned calls, allow;
	const struct sockaddr *last;
};

static bool hook_take(void *arg, const struct sockaddr *sa, unsigned rate, unsigned *count, bool *fleet)
{
	struct hook_state *st = arg;
	st->calls++;
	st->last = sa;
	*count = rate + 7;
	*fleet = true;
	return st->calls <= st->allow;
}

START_TEST(session_rate_hook_decides)
{
	struct hosts *h = hosts_new(16);
	struct hook_state st = {.allow = 1};
	unsigned n;
	bool fleet = false;
	hosts_set_session_hook(h, hook_take, &st);
	ck_assert(hosts_session_take(h, sa("192.0.2.13"), 1000, 5, &n, &fleet));
	ck_assert(!hosts_session_take(h, sa("192.0.2.13"), 1001, 5, &n, &fleet));
	ck_assert_uint_eq(n, 12);
	ck_assert(fleet);
	ck_assert_uint_eq(st.calls, 2);
	ck_assert_int_eq(st.last->sa_family, AF_INET);
	ck_assert_uint_eq(hosts_count(h), 0); /* the table counted nothing */
	/* rate 0: no limit, the hook is not asked */
	ck_assert(hosts_session_take(h, sa("192.0.2.13"), 1002, 0, &n, &fleet));
	ck_assert(!fleet);
	ck_assert_uint_eq(st.calls, 2);
	/* no hook: the table again */
	hosts_set_session_hook(h, NULL, NULL);
	ck_assert(hosts_session_take(h, sa("192.0.2.13"), 1003, 1, &n, &fleet));
	ck_assert(!hosts_session_take(h, sa("192.0.2.13"), 1004, 1, &n, &fleet));
	ck_assert(!fleet);
	hosts_free(h);
}
END_TEST

START_TEST(session_rate_with_breaker_notes)
{
	/* the minute's count survives the other notes about the address */
	struct hosts *h = hosts_new(16);
	ck_assert(hosts_session_take(h, sa("192.0.2.12"), 1000, 1, NULL, NULL));
	hosts_note_answer(h, sa("192.0.2.12"), 1100);
	ck_assert_int_gt(hosts_note_failure(h, sa("192.0.2.12"), 1200, 1000), 0);
	ck_assert(!hosts_session_take(h, sa("192.0.2.12"), 2500, 1, NULL, NULL));
	ck_assert(hosts_session_take(h, sa("192.0.2.12"), 61000, 1, NULL, NULL));
	hosts_free(h);
}
END_TEST

#define DAY INT64_C(86400000)

/* ca - note a catch-all answer of domain at 192.0.2.20 (need 3, a day) */
static bool ca(struct hosts *h, const char *domain, int64_t now, struct host_catchall *became)
{
	return hosts_note_catchall(h, sa("192.0.2.20"), now, domain, 3, DAY, became);
}

START_TEST(catchall_after_need_distinct_domains)
{
	struct hosts *h = hosts_new(16);
	struct host_catchall m;
	ck_assert(!ca(h, "a.example", 1000, &m));
	ck_assert(!ca(h, "A.Example", 2000, &m)); /* the same domain again, any case: still one */
	ck_assert(!ca(h, "b.example", 3000, &m));
	ck_assert(!hosts_catchall(h, sa("192.0.2.20"), 3000, &m)); /* two are not enough */
	ck_assert_int_eq(m.since_ms, 0);
	ck_assert(ca(h, "c.example", 4000, &m)); /* the third: remembered, once */
	ck_assert_uint_eq(m.domains, 3);
	ck_assert_str_eq(m.list, "A.Example, b.example, c.example");
	ck_assert_int_eq(m.since_ms, 4000);
	ck_assert_int_eq(m.until_ms, 4000 + DAY);
	ck_assert(!ca(h, "d.example", 5000, NULL)); /* already remembered: not again */
	ck_assert(hosts_catchall(h, sa("192.0.2.20"), 5000, &m));
	ck_assert_uint_eq(m.domains, 3);
	ck_assert_str_eq(m.list, "A.Example, b.example, c.example");
	ck_assert(hosts_catchall(h, sa("::ffff:192.0.2.20"), 5000, NULL)); /* mapped: the same host */
	ck_assert(!hosts_catchall(h, sa("192.0.2.21"), 5000, NULL));       /* another address */
	ck_assert(!hosts_catchall(h, sa("2001:db8::20"), 5000, NULL));
	/* the breaker's view of the address is untouched, and lookups keep the record */
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.20"), 4000 + DAY - 1, NULL), HOST_OK);
	ck_assert(hosts_catchall(h, sa("192.0.2.20"), 4000 + DAY - 1, NULL));
	ck_assert(!hosts_catchall(h, sa("192.0.2.20"), 4000 + DAY, NULL)); /* its lifetime is over */
	/* over: it must be learned afresh from need new answers */
	ck_assert(!ca(h, "e.example", 4000 + DAY, NULL));
	ck_assert(!ca(h, "f.example", 4000 + DAY, NULL));
	ck_assert(ca(h, "g.example", 4000 + DAY, &m));
	ck_assert_str_eq(m.list, "e.example, f.example, g.example");
	hosts_free(h);
}
END_TEST

START_TEST(catchall_counts_within_the_ttl)
{
	struct hosts *h = hosts_new(16);
	struct host_catchall m;
	ck_assert(!ca(h, "a.example", 1000, NULL));
	ck_assert(!ca(h, "b.example", 1000 + DAY / 2, NULL));
	ck_assert(!ca(h, "c.example", 1000 + DAY, NULL)); /* a.example's answer is a day old: gone */
	ck_assert(!hosts_catchall(h, sa("192.0.2.20"), 1000 + DAY, NULL));
	ck_assert(ca(h, "d.example", 1000 + DAY, &m));
	ck_assert_str_eq(m.list, "b.example, c.example, d.example");
	/* a domain seen again counts from its latest answer */
	ck_assert(!hosts_note_catchall(h, sa("192.0.2.30"), 0, "a.example", 3, DAY, NULL));
	ck_assert(!hosts_note_catchall(h, sa("192.0.2.30"), DAY - 10, "b.example", 3, DAY, NULL));
	ck_assert(!hosts_note_catchall(h, sa("192.0.2.30"), DAY - 5, "a.example", 3, DAY, NULL));
	ck_assert(hosts_note_catchall(h, sa("192.0.2.30"), DAY + 1, "c.example", 3, DAY, &m));
	ck_assert_str_eq(m.list, "b.example, a.example, c.example");
	hosts_free(h);
}
END_TEST

START_TEST(catchall_ended_by_not_catchall)
{
	struct hosts *h = hosts_new(16);
	struct host_catchall m;
	ca(h, "a.example", 1000, NULL);
	ca(h, "b.example", 1000, NULL);
	ck_assert(ca(h, "c.example", 1000, NULL));
	/* a 5xx to the random address of any domain there (a session begun before) */
	ck_assert(hosts_note_not_catchall(h, sa("192.0.2.20"), 2000, "x.example", DAY, &m));
	ck_assert_str_eq(m.list, "a.example, b.example, c.example");
	ck_assert_uint_eq(m.domains, 3);
	ck_assert(!hosts_catchall(h, sa("192.0.2.20"), 2000, NULL));
	/* not uniformly catch-all: nothing forms again for the ttl */
	ck_assert(!ca(h, "d.example", 3000, NULL));
	ck_assert(!ca(h, "e.example", 3000, NULL));
	ck_assert(!ca(h, "f.example", 3000, NULL));
	ck_assert(!hosts_catchall(h, sa("192.0.2.20"), 3000, NULL));
	ck_assert(!hosts_note_not_catchall(h, sa("192.0.2.20"), 4000, "x.example", DAY, &m)); /* none ended */
	ck_assert_str_eq(m.list, "");
	/* the hold-off runs from the latest not-catch-all answer; after it, need fresh answers */
	ck_assert(!ca(h, "d.example", 4000 + DAY, NULL));
	ck_assert(!ca(h, "e.example", 4000 + DAY, NULL));
	ck_assert(ca(h, "f.example", 4000 + DAY, NULL));
	hosts_free(h);
}
END_TEST

START_TEST(catchall_held_off_whatever_the_order)
{
	/* a not-catch-all answer before any catch-all one holds off all the same */
	struct hosts *h = hosts_new(16);
	ck_assert(!hosts_note_not_catchall(h, sa("192.0.2.20"), 1000, "x.example", DAY, NULL));
	ck_assert_uint_eq(hosts_count(h), 1); /* kept, although nothing else is known */
	ck_assert(!ca(h, "a.example", 2000, NULL));
	ck_assert(!ca(h, "b.example", 2000, NULL));
	ck_assert(!ca(h, "c.example", 2000, NULL));
	ck_assert(!hosts_catchall(h, sa("192.0.2.20"), 2000, NULL));
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.20"), 1000 + DAY - 1, NULL), HOST_OK);
	ck_assert_uint_eq(hosts_count(h), 1);
	/* once the hold-off is over the idle record is forgotten when met */
	ck_assert_int_eq(hosts_lookup(h, sa("192.0.2.20"), 1000 + DAY, NULL), HOST_OK);
	ck_assert_uint_eq(hosts_count(h), 0);
	hosts_free(h);
}
END_TEST

START_TEST(catchall_off_and_bounds)
{
	struct hosts *h = hosts_new(16);
	struct host_catchall m;
	/* need 0 or ttl 0: off, nothing kept */
	for (int i = 0; i < 5; i++) {
		char d[32];
		snprintf(d, sizeof(d), "d%d.example", i);
		ck_assert(!hosts_note_catchall(h, sa("192.0.2.40"), 1000, d, 0, DAY, NULL));
		ck_assert(!hosts_note_catchall(h, sa("192.0.2.40"), 1000, d, 1, 0, NULL));
	}
	ck_assert(!hosts_note_not_catchall(h, sa("192.0.2.40"), 1000, "x.example", 0, NULL));
	ck_assert_uint_eq(hosts_count(h), 0);
	ck_assert(!hosts_catchall(h, sa("192.0.2.40"), 1000, NULL));
	/* no table, no domain: nothing, no crash */
	ck_assert(!hosts_note_catchall(NULL, sa("192.0.2.40"), 1, "a.example", 1, DAY, NULL));
	ck_assert(!hosts_note_catchall(h, sa("192.0.2.40"), 1, "", 1, DAY, NULL));
	ck_assert(!hosts_note_catchall(h, sa("192.0.2.40"), 1, NULL, 1, DAY, NULL));
	ck_assert(!hosts_note_not_catchall(NULL, sa("192.0.2.40"), 1, "a.example", DAY, NULL));
	ck_assert(!hosts_catchall(NULL, sa("192.0.2.40"), 1, &m));
	/* need 1: the first answer makes it */
	ck_assert(hosts_note_catchall(h, sa("192.0.2.41"), 1, "a.example", 1, DAY, &m));
	ck_assert_uint_eq(m.domains, 1);
	/* need above the maximum is the maximum */
	for (int i = 0; i < HOSTS_CATCHALL_DOMAINS_MAX - 1; i++) {
		char d[32];
		snprintf(d, sizeof(d), "d%d.example", i);
		ck_assert(!hosts_note_catchall(h, sa("192.0.2.42"), 1, d, 1000, DAY, NULL));
	}
	ck_assert(hosts_note_catchall(h, sa("192.0.2.42"), 1, "last.example", 1000, DAY, &m));
	ck_assert_uint_eq(m.domains, HOSTS_CATCHALL_DOMAINS_MAX);
	/* need lowered (a reload) with more seen than the new need: the next answer makes it */
	for (int i = 0; i < 4; i++) {
		char d[32];
		snprintf(d, sizeof(d), "d%d.example", i);
		ck_assert(!hosts_note_catchall(h, sa("192.0.2.43"), 1, d, 5, DAY, NULL));
	}
	ck_assert(hosts_note_catchall(h, sa("192.0.2.43"), 2, "e.example", 2, DAY, &m));
	ck_assert_uint_eq(m.domains, 5);
	hosts_free(h);
}
END_TEST

START_TEST(catchall_long_names)
{
	/* names alike in their first 64 characters are still two domains;
	 * the list keeps those 64 */
	struct hosts *h = hosts_new(16);
	struct host_catchall m;
	char a[200], b[200];
	memset(a, 'a', 150);
	a[150] = '\0';
	strcpy(b, a);
	strcat(a, ".one.example");
	strcat(b, ".two.example");
	ck_assert(!hosts_note_catchall(h, sa("192.0.2.50"), 1, a, 2, DAY, NULL));
	ck_assert(hosts_note_catchall(h, sa("192.0.2.50"), 1, b, 2, DAY, &m));
	ck_assert_uint_eq(m.domains, 2);
	ck_assert_uint_eq(strlen(m.list), 2 * HOSTS_CATCHALL_NAME_MAX + 2);
	hosts_free(h);
}
END_TEST

START_TEST(catchall_evicted_with_its_record)
{
	/* a full table of catch-all memories: bounded, the oldest go (valgrind: no leak) */
	struct hosts *h = hosts_new(8);
	struct sockaddr_in s4 = {.sin_family = AF_INET};
	for (uint32_t i = 0; i < 100; i++) {
		s4.sin_addr.s_addr = htonl(0xc6336400u + i); /* 198.51.100.i */
		hosts_note_catchall(h, (struct sockaddr *)&s4, i, "a.example", 2, DAY, NULL);
		ck_assert(hosts_note_catchall(h, (struct sockaddr *)&s4, i, "b.example", 2, DAY, NULL));
	}
	ck_assert_uint_eq(hosts_count(h), 8);
	ck_assert(hosts_catchall(h, (struct sockaddr *)&s4, 100, NULL)); /* the newest stays */
	s4.sin_addr.s_addr = htonl(0xc6336400u);
	ck_assert(!hosts_catchall(h, (struct sockaddr *)&s4, 100, NULL)); /* the oldest went */
	hosts_free(h);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("hosts");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, blocked_remembered_then_expires);
	tcase_add_test(tc, blocked_off);
	tcase_add_test(tc, learned_backoff_window);
	tcase_add_test(tc, blocked_keeps_source_and_origin);
	tcase_add_test(tc, census_counts_what_is_in_force);
	tcase_add_test(tc, backoff_grows_and_caps);
	tcase_add_test(tc, blocked_beats_backoff_and_mapped_is_ipv4);
	tcase_add_test(tc, bounded_lru_eviction);
	tcase_add_test(tc, eviction_spares_the_recently_touched);
	tcase_add_test(tc, eviction_spares_a_claimed_host);
	tcase_add_test(tc, first_contact_claims);
	tcase_add_test(tc, full_table_of_default_size);
	tcase_add_test(tc, session_rate_per_minute);
	tcase_add_test(tc, session_rate_with_breaker_notes);
	tcase_add_test(tc, session_rate_hook_decides);
	tcase_add_test(tc, catchall_after_need_distinct_domains);
	tcase_add_test(tc, catchall_counts_within_the_ttl);
	tcase_add_test(tc, catchall_ended_by_not_catchall);
	tcase_add_test(tc, catchall_held_off_whatever_the_order);
	tcase_add_test(tc, catchall_off_and_bounds);
	tcase_add_test(tc, catchall_long_names);
	tcase_add_test(tc, catchall_evicted_with_its_record);
	suite_add_tcase(s, tc);
	return unit_run(s);
}
