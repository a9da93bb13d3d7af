/*
 * test_health.c - self-health (health.h) at explicit times: how outcomes are
 * classified, and table-driven scenarios of probe results (host, class,
 * time) with the state expected after each: too few hosts, one dead host
 * probed many times, the threshold exactly, a flapping share between the
 * two thresholds (no change either way), recovery needing answers from
 * several hosts, the window forgetting old hosts, the host table's bound;
 * then the log lines and helo_name's form.
 */
#include <stdio.h>
#include <string.h>

#include "health.h"
#include "unit.h"

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

enum { A = HEALTH_ANSWERED, F = HEALTH_OUR_SIDE, Z = HEALTH_NEUTRAL };
enum { SAME = HEALTH_SAME, SICK = HEALTH_BECAME_UNHEALTHY, WELL = HEALTH_BECAME_HEALTHY };

/* One probe result and what must follow from it. */
struct step {
	const char *host;
	int class;
	int64_t at_ms;
	int change;     /* expected health_note result */
	bool unhealthy; /* expected state after it */
};

struct scenario {
	const char *name;
	struct step steps[24];
};

#define MIN (60 * 1000)

static const struct scenario scenarios[] = {
        {"four failing hosts are too few",
         {{"10.0.0.1", F, 1000, SAME, false},
          {"10.0.0.2", F, 2000, SAME, false},
          {"10.0.0.3", F, 3000, SAME, false},
          {"10.0.0.4", F, 4000, SAME, false},
          {NULL}}},
        {"five failing hosts: unhealthy once, not again",
         {{"10.0.0.1", F, 1000, SAME, false},
          {"10.0.0.2", F, 2000, SAME, false},
          {"10.0.0.3", F, 3000, SAME, false},
          {"10.0.0.4", F, 4000, SAME, false},
          {"10.0.0.5", F, 5000, SICK, true},
          {"10.0.0.6", F, 6000, SAME, true},
          {"10.0.0.1", F, 7000, SAME, true},
          {NULL}}},
        {"one dead host probed often is not our outage",
         {{"10.0.0.9", F, 1000, SAME, false},
          {"10.0.0.9", F, 2000, SAME, false},
          {"10.0.0.9", F, 3000, SAME, false},
          {"10.0.0.9", F, 4000, SAME, false},
          {"10.0.0.9", F, 5000, SAME, false},
          {"10.0.0.9", F, 6000, SAME, false},
          {"10.0.0.9", F, 7000, SAME, false},
          {NULL}}},
        {"neutral results and results without a host count for nothing",
         {{"10.0.0.1", Z, 1000, SAME, false},
          {"10.0.0.2", Z, 2000, SAME, false},
          {"", F, 3000, SAME, false},
          {NULL, F, 3500, SAME, false},
          {"10.0.0.3", F, 4000, SAME, false},
          {"10.0.0.4", F, 5000, SAME, false},
          {"10.0.0.5", Z, 6000, SAME, false},
          {NULL}}},
        {"exactly 80 %: 4 of 5 failing",
         {{"10.0.0.1", A, 1000, SAME, false},
          {"10.0.0.2", F, 2000, SAME, false},
          {"10.0.0.3", F, 3000, SAME, false},
          {"10.0.0.4", F, 4000, SAME, false},
          {"10.0.0.5", F, 5000, SICK, true},
          {NULL}}},
        {"under 80 %: 7 of 9 failing stays healthy",
         {{"10.0.0.1", A, 1000, SAME, false},
          {"10.0.0.2", A, 1500, SAME, false},
          {"10.0.0.3", F, 2000, SAME, false},
          {"10.0.0.4", F, 3000, SAME, false},
          {"10.0.0.5", F, 4000, SAME, false},
          {"10.0.0.6", F, 5000, SAME, false},
          {"10.0.0.7", F, 6000, SAME, false},
          {"10.0.0.8", F, 7000, SAME, false},
          {"10.0.0.9", F, 8000, SAME, false},
          {NULL}}},
        {"a host's latest result counts: answers that turn to failures",
         {{"10.0.0.1", A, 1000, SAME, false},
          {"10.0.0.2", A, 2000, SAME, false},
          {"10.0.0.3", A, 3000, SAME, false},
          {"10.0.0.4", A, 4000, SAME, false},
          {"10.0.0.5", A, 5000, SAME, false},
          {"10.0.0.1", F, 6000, SAME, false},
          {"10.0.0.2", F, 7000, SAME, false},
          {"10.0.0.3", F, 8000, SAME, false},
          {"10.0.0.4", F, 9000, SICK, true},
          {NULL}}},
        {"flapping between the thresholds changes nothing",
         {{"10.0.0.1", F, 1000, SAME, false},
          {"10.0.0.2", F, 2000, SAME, false},
          {"10.0.0.3", F, 3000, SAME, false},
          {"10.0.0.4", F, 4000, SAME, false},
          {"10.0.0.5", F, 5000, SICK, true},
          /* one host answers, fails, answers: 4/5 and 5/5 failing */
          {"10.0.0.1", A, 6000, SAME, true},
          {"10.0.0.1", F, 7000, SAME, true},
          {"10.0.0.1", A, 8000, SAME, true},
          /* two answer: 3 of 5 failing (60 %), between 50 and 80: stays */
          {"10.0.0.2", A, 9000, SAME, true},
          {"10.0.0.2", F, 10000, SAME, true},
          {"10.0.0.2", A, 11000, SAME, true},
          /* a third: 2 of 5 (40 %): healthy again, once */
          {"10.0.0.3", A, 12000, WELL, false},
          /* back to 3 of 5 failing (60 %): between the thresholds, healthy stays */
          {"10.0.0.3", F, 13000, SAME, false},
          {"10.0.0.3", A, 14000, SAME, false},
          {"10.0.0.3", F, 15000, SAME, false},
          /* 4 of 5 (80 %): unhealthy again */
          {"10.0.0.2", F, 16000, SICK, true},
          {NULL}}},
        {"recovery needs answers from two hosts",
         {{"10.0.0.1", F, 1000, SAME, false},
          {"10.0.0.2", F, 2000, SAME, false},
          {"10.0.0.3", F, 3000, SAME, false},
          {"10.0.0.4", F, 4000, SAME, false},
          {"10.0.0.5", F, 5000, SICK, true},
          /* the failures age out; one host answers: 0 of 1 failing, but one
           * answering host is not enough evidence */
          {"10.0.0.7", A, 5000 + HEALTH_WINDOW_MS + 1, SAME, true},
          {"10.0.0.8", A, 5000 + HEALTH_WINDOW_MS + 2, WELL, false},
          {NULL}}},
        {"an empty window changes nothing",
         {{"10.0.0.1", F, 1000, SAME, false},
          {"10.0.0.2", F, 2000, SAME, false},
          {"10.0.0.3", F, 3000, SAME, false},
          {"10.0.0.4", F, 4000, SAME, false},
          {"10.0.0.5", F, 5000, SICK, true},
          {"10.0.0.6", F, 60 * MIN, SAME, true},
          {NULL}}},
        {"old failures leave the window: spread-out failures never add up",
         {{"10.0.0.1", F, 0, SAME, false},
          {"10.0.0.2", F, 2 * MIN, SAME, false},
          {"10.0.0.3", F, 4 * MIN, SAME, false},
          {"10.0.0.4", F, 6 * MIN, SAME, false},
          {"10.0.0.5", F, 8 * MIN, SAME, false},
          {"10.0.0.6", F, 10 * MIN, SAME, false},
          {NULL}}},
        {"inside the window they do",
         {{"10.0.0.1", F, 0, SAME, false},
          {"10.0.0.2", F, 1 * MIN, SAME, false},
          {"10.0.0.3", F, 2 * MIN, SAME, false},
          {"10.0.0.4", F, 3 * MIN, SAME, false},
          {"10.0.0.5", F, 4 * MIN, SICK, true},
          {NULL}}},
};

/* run - scenario i, step by step */
START_TEST(scenario_steps)
{
	const struct scenario *s = &scenarios[_i];
	static struct health h;
	health_init(&h);
	ck_assert(!health_unhealthy(&h));
	for (int k = 0; k < N(s->steps) && (s->steps[k].host != NULL || s->steps[k].at_ms != 0); k++) {
		const struct step *st = &s->steps[k];
		enum health_change got = health_note(&h, st->host, (enum health_class)st->class,
		                                     "timeout connecting", false, st->at_ms);
		ck_assert_msg((int)got == st->change, "%s, step %d (%s at %lld): change %d, want %d", s->name,
		              k, st->host ? st->host : "NULL", (long long)st->at_ms, got, st->change);
		ck_assert_msg(health_unhealthy(&h) == st->unhealthy, "%s, step %d: unhealthy %d, want %d",
		              s->name, k, health_unhealthy(&h), st->unhealthy);
	}
}
END_TEST

/* outcome - a probe result */
static struct outcome outcome(enum outcome_kind kind, enum probe_stage stage, int code, unsigned flags)
{
	struct outcome o;
	outcome_set(&o, kind, stage, code, code ? "5.7.1" : NULL, code ? "listed" : NULL, "r");
	o.flags = flags;
	snprintf(o.mx_addr, sizeof(o.mx_addr), "192.0.2.1");
	return o;
}

START_TEST(classify)
{
	static const struct {
		enum outcome_kind kind;
		enum probe_stage stage;
		int code;
		unsigned flags;
		enum health_class want;
	} cases[] = {
	        {OUTCOME_VALID, STAGE_RCPT, 250, 0, HEALTH_ANSWERED},
	        {OUTCOME_INVALID, STAGE_RCPT, 550, 0, HEALTH_ANSWERED},
	        {OUTCOME_CATCH_ALL, STAGE_CATCHALL, 250, 0, HEALTH_ANSWERED},
	        {OUTCOME_TEMPFAIL, STAGE_RCPT, 450, OUTCOME_F_GREYLIST, HEALTH_ANSWERED},
	        {OUTCOME_TEMPFAIL, STAGE_RCPT, 0, 0, HEALTH_NEUTRAL}, /* a timeout after RCPT */
	        {OUTCOME_BLOCKED, STAGE_BANNER, 554, 0, HEALTH_OUR_SIDE},
	        {OUTCOME_BLOCKED, STAGE_MAIL, 550, 0, HEALTH_OUR_SIDE},
	        {OUTCOME_BLOCKED, STAGE_RCPT, 550, 0, HEALTH_OUR_SIDE},
	        {OUTCOME_TEMPFAIL, STAGE_CONNECT, 0, 0, HEALTH_OUR_SIDE},
	        {OUTCOME_TEMPFAIL, STAGE_BANNER, 0, 0, HEALTH_OUR_SIDE},
	        {OUTCOME_TEMPFAIL, STAGE_BANNER, 421, 0, HEALTH_NEUTRAL}, /* busy */
	        {OUTCOME_TEMPFAIL, STAGE_EHLO, 421, 0, HEALTH_NEUTRAL},
	        {OUTCOME_TEMPFAIL, STAGE_TLS, 0, 0, HEALTH_NEUTRAL},
	        {OUTCOME_TEMPFAIL, STAGE_DNS, 0, 0, HEALTH_NEUTRAL},
	        {OUTCOME_TEMPFAIL, STAGE_GUARD, 0, 0, HEALTH_NEUTRAL},
	        {OUTCOME_TEMPFAIL, STAGE_NONE, 0, 0, HEALTH_NEUTRAL}, /* our limits */
	        {OUTCOME_TEMPFAIL, STAGE_CONNECT, 0, OUTCOME_F_LOOP, HEALTH_NEUTRAL},
	        {OUTCOME_TEMPFAIL, STAGE_CONNECT, 0, OUTCOME_F_LIMITED,
	         HEALTH_NEUTRAL}, /* host_session_rate */
	        {OUTCOME_TEMPFAIL, STAGE_BANNER, 0, OUTCOME_F_PROTOCOL, HEALTH_NEUTRAL},
	        {OUTCOME_BLOCKED, STAGE_RCPT, 550, OUTCOME_F_PROTOCOL, HEALTH_NEUTRAL},
	        {OUTCOME_NO_DOMAIN, STAGE_DNS, 0, 0, HEALTH_NEUTRAL},
	        {OUTCOME_UNVERIFIABLE, STAGE_EHLO, 0, 0, HEALTH_NEUTRAL},
	};
	for (int i = 0; i < N(cases); i++) {
		struct outcome o = outcome(cases[i].kind, cases[i].stage, cases[i].code, cases[i].flags);
		ck_assert_msg(health_classify(&o) == cases[i].want, "case %d (%s at %s): %d, want %d", i,
		              outcome_name(cases[i].kind), probe_stage_name(cases[i].stage),
		              health_classify(&o), cases[i].want);
	}
}
END_TEST

/* The host table is bounded: HEALTH_HOSTS_MAX + 50 hosts, the oldest forgotten. */
START_TEST(table_bound)
{
	static struct health h;
	health_init(&h);
	char host[32];
	for (int i = 0; i < HEALTH_HOSTS_MAX + 50; i++) {
		snprintf(host, sizeof(host), "10.1.%d.%d", i / 250, i % 250);
		health_note(&h, host, HEALTH_ANSWERED, NULL, false, 1000 + i);
	}
	ck_assert_uint_eq(h.judged, HEALTH_HOSTS_MAX);
	ck_assert_uint_eq(h.failing, 0);
	/* The first host was evicted, the last is there. */
	bool first = false, last = false;
	for (int i = 0; i < HEALTH_HOSTS_MAX; i++) {
		first |= strcmp(h.hosts[i].key, "10.1.0.0") == 0;
		snprintf(host, sizeof(host), "10.1.%d.%d", (HEALTH_HOSTS_MAX + 49) / 250,
		         (HEALTH_HOSTS_MAX + 49) % 250);
		last |= strcmp(h.hosts[i].key, host) == 0;
	}
	ck_assert(!first);
	ck_assert(last);
}
END_TEST

/* The log lines: the warning says what to check and quotes a reply. */
START_TEST(messages)
{
	static struct health h;
	health_init(&h);
	char buf[1024];
	struct outcome o = outcome(OUTCOME_BLOCKED, STAGE_BANNER, 554, 0);
	snprintf(o.text, sizeof(o.text), "your address 198.51.100.7 is listed at bl.example");
	for (int i = 0; i < HEALTH_MIN_HOSTS; i++) {
		snprintf(o.mx_addr, sizeof(o.mx_addr), "192.0.2.%d", i + 1);
		enum health_change c = health_record(&h, &o, 1000 + i);
		ck_assert_int_eq(c, i + 1 == HEALTH_MIN_HOSTS ? HEALTH_BECAME_UNHEALTHY : HEALTH_SAME);
	}
	health_message(&h, HEALTH_BECAME_UNHEALTHY, "mx.example.org", buf, sizeof(buf));
	ck_assert_msg(strstr(buf, "self-health: unhealthy: 5 of 5 mail hosts") == buf, "%s", buf);
	ck_assert_msg(strstr(buf, "port 25") != NULL, "%s", buf);
	ck_assert_msg(strstr(buf, "blocklist") != NULL, "%s", buf);
	ck_assert_msg(strstr(buf, "\"554 5.7.1 your address 198.51.100.7 is listed at bl.example\"") != NULL,
	              "%s", buf);
	ck_assert_msg(strstr(buf, "reverse DNS") != NULL && strstr(buf, "helo_name mx.example.org") != NULL,
	              "%s", buf);
	ck_assert_msg(strstr(buf, "reason=self_health") != NULL, "%s", buf);

	/* Without a reply, the reason is the sample. */
	health_init(&h);
	struct outcome refused = outcome(OUTCOME_TEMPFAIL, STAGE_CONNECT, 0, 0);
	snprintf(refused.reason, sizeof(refused.reason), "Connection refused");
	for (int i = 0; i < HEALTH_MIN_HOSTS; i++) {
		snprintf(refused.mx_addr, sizeof(refused.mx_addr), "192.0.2.%d", i + 1);
		health_record(&h, &refused, 1000 + i);
	}
	ck_assert(health_unhealthy(&h));
	health_message(&h, HEALTH_BECAME_UNHEALTHY, "mx.example.org", buf, sizeof(buf));
	ck_assert_msg(strstr(buf, "e.g. 192.0.2.5: Connection refused") != NULL, "%s", buf);

	struct outcome valid = outcome(OUTCOME_VALID, STAGE_RCPT, 250, 0);
	enum health_change c = HEALTH_SAME;
	for (int i = 0; i < HEALTH_MIN_HOSTS && c == HEALTH_SAME; i++) {
		snprintf(valid.mx_addr, sizeof(valid.mx_addr), "192.0.2.%d", i + 1);
		c = health_record(&h, &valid, 2000 + i);
	}
	ck_assert_int_eq(c, HEALTH_BECAME_HEALTHY);
	health_message(&h, c, "mx.example.org", buf, sizeof(buf));
	ck_assert_msg(strstr(buf, "self-health: healthy again: 3 of 5 mail hosts") == buf, "%s", buf);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("health");
	TCase *tc = tcase_create("health");
	tcase_add_loop_test(tc, scenario_steps, 0, N(scenarios));
	tcase_add_test(tc, classify);
	tcase_add_test(tc, table_bound);
	tcase_add_test(tc, messages);
	suite_add_tcase(s, tc);
	return unit_run(s);
}
