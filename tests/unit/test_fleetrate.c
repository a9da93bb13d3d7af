/*
 * test_fleetrate.c - the fleet's budgets as one host knows them
 * (fleetrate.h): windows, key names, the decision, the report bookkeeping,
 * and a fleet of tables sharing one counter in place of Redis (a plain
 * integer per key here; the Lua script itself runs against a real
 * redis-server in test_sharedrule) to check the stated bound on what the
 * fleet can spend.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "fleetrate.h"
#include "unit.h"

#define MIN     FLEETRATE_WINDOW_MS
#define T0      (INT64_C(1764500000) * 1000) /* a wall clock in 2025 */
#define HOST    FLEETRATE_HOST_SESSIONS
#define ADDRESS "192.0.2.25"

START_TEST(windows)
{
	ck_assert_int_eq(fleetrate_window(0), 0);
	ck_assert_int_eq(fleetrate_window(-5), 0);
	ck_assert_int_eq(fleetrate_window(MIN - 1), 0);
	ck_assert_int_eq(fleetrate_window(MIN), 1);
	ck_assert_int_eq(fleetrate_window(T0), T0 / MIN);
	ck_assert_int_eq(fleetrate_window(T0 + MIN), fleetrate_window(T0) + 1);
}
END_TEST

START_TEST(keys)
{
	char k[FLEETRATE_KEY_MAX];
	fleetrate_key(HOST, "192.0.2.25", 29408333, k, sizeof(k));
	ck_assert_str_eq(k, "vemilter:r:s:192.0.2.25:29408333");
	/* ':' and anything outside [A-Za-z0-9.-_] escaped: no name reaches into another key */
	fleetrate_key(HOST, "2001:db8::1", 7, k, sizeof(k));
	ck_assert_str_eq(k, "vemilter:r:s:2001%3Adb8%3A%3A1:7");
	fleetrate_key(HOST, "a b%\xff", 7, k, sizeof(k));
	ck_assert_str_eq(k, "vemilter:r:s:a%20b%25%FF:7");
	fleetrate_key(HOST, "", 7, k, sizeof(k));
	ck_assert_str_eq(k, "");
	char longname[FLEETRATE_NAME_MAX + 1];
	memset(longname, 'x', FLEETRATE_NAME_MAX);
	longname[FLEETRATE_NAME_MAX] = '\0';
	fleetrate_key(HOST, longname, 7, k, sizeof(k));
	ck_assert_str_eq(k, "");
	longname[FLEETRATE_NAME_MAX - 1] = '\0'; /* the longest name: fits, escaped at worst 3 x */
	memset(longname, ':', FLEETRATE_NAME_MAX - 1);
	fleetrate_key(HOST, longname, INT64_MAX, k, sizeof(k));
	ck_assert_uint_eq(strlen(k), strlen("vemilter:r:s::") + 3 * (FLEETRATE_NAME_MAX - 1) + 19);
	char small[20];
	fleetrate_key(HOST, "192.0.2.25", 29408333, small, sizeof(small));
	ck_assert_str_eq(small, "");
}
END_TEST

START_TEST(decision)
{
	ck_assert(fleetrate_allows(0, 0, 0, 3));
	ck_assert(fleetrate_allows(2, 0, 0, 3));
	ck_assert(fleetrate_allows(0, 1, 1, 3));
	ck_assert(!fleetrate_allows(1, 1, 1, 3));
	ck_assert(!fleetrate_allows(3, 0, 0, 3));
	ck_assert(!fleetrate_allows(0, 0, 3, 3));
	ck_assert(fleetrate_allows(100, 100, 100, 0));          /* 0: no limit */
	ck_assert(!fleetrate_allows(UINT_MAX, UINT_MAX, 2, 5)); /* no wrap into "allowed" */
}
END_TEST

/* alone, never answered (Redis down from the start): the local budget */
START_TEST(alone_is_the_local_budget)
{
	struct fleetrate *fr = fleetrate_new(16);
	struct fleetrate_said said;
	for (unsigned i = 1; i <= 3; i++) {
		ck_assert(fleetrate_take(fr, HOST, ADDRESS, T0 + i, 3, &said));
		ck_assert_uint_eq(said.spent, i);
		ck_assert_uint_eq(said.own, i);
		ck_assert(!said.fleet);
	}
	ck_assert(!fleetrate_take(fr, HOST, ADDRESS, T0 + 10, 3, &said));
	ck_assert_uint_eq(said.spent, 3);
	ck_assert(!said.fleet);
	/* another key, another budget; rate 0 and unusable names: allowed, nothing kept */
	ck_assert(fleetrate_take(fr, HOST, "192.0.2.26", T0 + 10, 3, NULL));
	ck_assert(fleetrate_take(fr, HOST, "192.0.2.27", T0 + 10, 0, NULL));
	ck_assert(fleetrate_take(fr, HOST, "", T0 + 10, 1, NULL));
	ck_assert(fleetrate_take(NULL, HOST, ADDRESS, T0 + 10, 1, NULL));
	ck_assert_uint_eq(fleetrate_count(fr), 2);
	/* the next wall-clock minute starts afresh */
	int64_t next = (fleetrate_window(T0) + 1) * MIN;
	ck_assert(fleetrate_take(fr, HOST, ADDRESS, next, 3, &said));
	ck_assert_uint_eq(said.spent, 1);
	fleetrate_free(fr);
}
END_TEST

/* reports: one in flight per key, everything unreported goes at once, a
 * failure is owed again, a reply teaches the fleet's total */
START_TEST(reports)
{
	struct fleetrate *fr = fleetrate_new(16);
	struct fleetrate_report r1, r2, r3;
	struct fleetrate_said said;
	ck_assert(!fleetrate_next_report(fr, T0, &r1));
	ck_assert(fleetrate_take(fr, HOST, ADDRESS, T0, 10, NULL));
	ck_assert(fleetrate_take(fr, HOST, ADDRESS, T0, 10, NULL));
	ck_assert(fleetrate_take(fr, HOST, "192.0.2.26", T0, 10, NULL));
	ck_assert(fleetrate_next_report(fr, T0, &r1));
	ck_assert_str_eq(r1.name, ADDRESS);
	ck_assert_uint_eq(r1.amount, 2);
	ck_assert_int_eq(r1.window, fleetrate_window(T0));
	ck_assert(fleetrate_next_report(fr, T0, &r2));
	ck_assert_str_eq(r2.name, "192.0.2.26");
	ck_assert_uint_eq(r2.amount, 1);
	ck_assert(!fleetrate_next_report(fr, T0, &r3));
	/* spent while r1 is in flight: waits for its reply */
	ck_assert(fleetrate_take(fr, HOST, ADDRESS, T0, 10, &said));
	ck_assert_uint_eq(said.spent, 3);
	ck_assert(!fleetrate_next_report(fr, T0, &r3));
	/* the fleet had spent 5 more: the reply says 7 */
	fleetrate_reported(fr, &r1, 7);
	ck_assert(fleetrate_take(fr, HOST, ADDRESS, T0, 10, &said));
	ck_assert_uint_eq(said.spent, 9); /* 7 seen + 2 ours since */
	ck_assert_uint_eq(said.own, 4);
	ck_assert(said.fleet);
	ck_assert(!fleetrate_take(fr, HOST, ADDRESS, T0, 9, &said)); /* at 9 a minute: spent */
	ck_assert(said.fleet);
	ck_assert(fleetrate_next_report(fr, T0, &r3));
	ck_assert_uint_eq(r3.amount, 2);
	/* a failure: owed again, with what was spent meanwhile */
	fleetrate_reported(fr, &r3, -1);
	ck_assert(fleetrate_take(fr, HOST, ADDRESS, T0, 20, NULL));
	ck_assert(fleetrate_next_report(fr, T0, &r3));
	ck_assert_uint_eq(r3.amount, 3);
	/* a reply never lowers the total seen below what we knew and sent
	 * (Redis restarted empty: 7 seen + 3 of ours) */
	fleetrate_reported(fr, &r3, 3);
	ck_assert(!fleetrate_take(fr, HOST, ADDRESS, T0, 10, &said));
	ck_assert_uint_eq(said.spent, 10);
	fleetrate_reported(fr, &r2, 1);
	fleetrate_free(fr);
}
END_TEST

/* the window turns: counts start afresh, nothing owed for the old one, its
 * late reply ignored */
START_TEST(window_turns)
{
	struct fleetrate *fr = fleetrate_new(16);
	struct fleetrate_report old, r;
	struct fleetrate_said said;
	int64_t w0 = fleetrate_window(T0) * MIN, w1 = w0 + MIN;
	ck_assert(fleetrate_take(fr, HOST, ADDRESS, w0 + 10, 2, NULL));
	ck_assert(fleetrate_next_report(fr, w0 + 10, &old));
	ck_assert(fleetrate_take(fr, HOST, ADDRESS, w0 + 20, 2, NULL));
	ck_assert(!fleetrate_take(fr, HOST, ADDRESS, w0 + 30, 2, NULL));
	/* the old window's spending is not reported once it is over */
	ck_assert(!fleetrate_next_report(fr, w1, &r));
	ck_assert(fleetrate_take(fr, HOST, ADDRESS, w1, 2, &said));
	ck_assert_uint_eq(said.spent, 1);
	fleetrate_reported(fr, &old, 50); /* late, for the old window */
	ck_assert(fleetrate_take(fr, HOST, ADDRESS, w1 + 1, 2, &said));
	ck_assert_uint_eq(said.spent, 2);
	ck_assert(fleetrate_next_report(fr, w1 + 1, &r));
	ck_assert_uint_eq(r.amount, 2);
	ck_assert_int_eq(r.window, fleetrate_window(w1));
	fleetrate_free(fr);
}
END_TEST

START_TEST(peek_counts_nothing)
{
	struct fleetrate *fr = fleetrate_new(16);
	struct fleetrate_report r;
	struct fleetrate_said said;
	ck_assert_int_eq(fleetrate_turn_ms(T0), (fleetrate_window(T0) + 1) * MIN);
	ck_assert(fleetrate_peek(fr, FLEETRATE_DOMAIN_PROBES, "example.org", T0, 1, &said));
	ck_assert_uint_eq(said.spent, 0);
	ck_assert(!fleetrate_next_report(fr, T0, &r)); /* nothing owed */
	ck_assert(fleetrate_take(fr, FLEETRATE_DOMAIN_PROBES, "example.org", T0, 1, NULL));
	ck_assert(!fleetrate_peek(fr, FLEETRATE_DOMAIN_PROBES, "example.org", T0, 1, &said));
	ck_assert_uint_eq(said.spent, 1);
	/* kinds are apart: a session budget of the same name is another one */
	ck_assert(fleetrate_peek(fr, HOST, "example.org", T0, 1, NULL));
	ck_assert(fleetrate_next_report(fr, T0, &r));
	ck_assert_int_eq(r.kind, FLEETRATE_DOMAIN_PROBES);
	ck_assert_uint_eq(r.amount, 1);
	char k[FLEETRATE_KEY_MAX];
	fleetrate_key(r.kind, r.name, r.window, k, sizeof(k));
	ck_assert_ptr_nonnull(strstr(k, "vemilter:r:d:example.org:"));
	fleetrate_free(fr);
}
END_TEST

START_TEST(bounded)
{
	struct fleetrate *fr = fleetrate_new(4);
	struct fleetrate_report r;
	char name[32];
	for (int i = 0; i < 6; i++) {
		snprintf(name, sizeof(name), "192.0.2.%d", i);
		ck_assert(fleetrate_take(fr, HOST, name, T0, 1, NULL));
	}
	ck_assert_uint_eq(fleetrate_count(fr), 4);
	/* the two oldest were forgotten (their budget with them); the others report */
	int n = 0;
	while (fleetrate_next_report(fr, T0, &r)) {
		ck_assert(strcmp(r.name, "192.0.2.0") != 0 && strcmp(r.name, "192.0.2.1") != 0);
		n++;
	}
	ck_assert_int_eq(n, 4);
	ck_assert(!fleetrate_take(fr, HOST, "192.0.2.5", T0, 1, NULL));
	ck_assert(fleetrate_take(fr, HOST, "192.0.2.0", T0, 1, NULL)); /* forgotten: afresh */
	fleetrate_reported(fr, &r, 1); /* a reply for an entry gone: ignored */
	fleetrate_free(fr);
}
END_TEST

/* A fleet: hosts tables, one counter standing in for Redis. Each step one
 * host takes; reports are sent at once and answered `lag` steps later
 * (lag 0: before the next take). Returns the sessions the fleet began. */
static unsigned fleet_run(unsigned hosts, unsigned rate, unsigned takes, unsigned lag)
{
	struct fleetrate *fr[8];
	struct pending {
		unsigned host, due;
		int64_t total; /* what INCRBY returned */
		struct fleetrate_report rep;
	} pend[1024];
	unsigned npend = 0, began = 0, counter = 0;
	ck_assert_uint_le(hosts, 8);
	for (unsigned h = 0; h < hosts; h++)
		fr[h] = fleetrate_new(16);
	for (unsigned step = 0; step < takes; step++) {
		unsigned h = step % hosts;
		if (fleetrate_take(fr[h], HOST, ADDRESS, T0, rate, NULL))
			began++;
		struct fleetrate_report rep;
		while (fleetrate_next_report(fr[h], T0, &rep)) {
			ck_assert_uint_lt(npend, 1024);
			counter += rep.amount; /* INCRBY, in Redis when it arrives */
			pend[npend].host = h;
			pend[npend].due = step + lag;
			pend[npend].rep = rep;
			pend[npend].total = counter;
			npend++;
		}
		/* replies due now, in order */
		unsigned kept = 0;
		for (unsigned i = 0; i < npend; i++) {
			if (pend[i].due <= step)
				fleetrate_reported(fr[pend[i].host], &pend[i].rep, pend[i].total);
			else
				pend[kept++] = pend[i];
		}
		npend = kept;
	}
	for (unsigned h = 0; h < hosts; h++)
		fleetrate_free(fr[h]);
	return began;
}

START_TEST(fleet_bound)
{
	/* A host decides on the total of its own last reply: blind to what the
	 * others began since. Once the budget is spent each host learns it
	 * from its next reply and refuses for the rest of the window, so past
	 * the rate each host adds at most what it begins within one round
	 * trip: here one a step, rate + hosts - 1 at most. */
	for (unsigned lag = 0; lag <= 1; lag++) {
		for (unsigned hosts = 1; hosts <= 4; hosts++) {
			unsigned b = fleet_run(hosts, 10, 100, lag);
			ck_assert_msg(b >= 10 && b <= 10 + hosts - 1, "%u hosts, lag %u: %u began", hosts,
			              lag, b);
		}
	}
	/* one host alone: exactly the rate */
	ck_assert_uint_eq(fleet_run(1, 10, 100, 0), 10);
	/* replies slower than hosts' steps (lag 3 of 2 hosts: two steps of a
	 * host within one round trip): two blind each */
	ck_assert_uint_le(fleet_run(2, 10, 100, 3), 10 + 2 * 2);
	/* never answered within the minute (a burst faster than one round
	 * trip, or Redis down): each host its own budget, never more */
	ck_assert_uint_eq(fleet_run(2, 10, 100, 1000), 20);
	ck_assert_uint_eq(fleet_run(4, 10, 100, 1000), 40);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("fleetrate");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, windows);
	tcase_add_test(tc, keys);
	tcase_add_test(tc, decision);
	tcase_add_test(tc, alone_is_the_local_budget);
	tcase_add_test(tc, reports);
	tcase_add_test(tc, window_turns);
	tcase_add_test(tc, peek_counts_nothing);
	tcase_add_test(tc, bounded);
	tcase_add_test(tc, fleet_bound);
	suite_add_tcase(s, tc);
	return unit_run(s);
}
