/*
 * test_metrics.c - the metrics registry (metrics.h): every render is checked
 * line by line against the text format's grammar (a small strict parser
 * here), then the values: counters, gauges, cumulative histogram buckets,
 * label escaping, the bound on series, the collector, refused
 * declarations, and adds from several threads summing exactly.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "unit.h"

static bool name_char(char c, bool first)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
	       (!first && c >= '0' && c <= '9');
}

/* parse_name - advance *p over a metric or label name */
static bool parse_name(const char **p)
{
	if (!name_char(**p, true))
		return false;
	while (name_char(**p, false))
		(*p)++;
	return true;
}

/* valid_sample - NAME[{l="v",...}] VALUE, nothing else */
static bool valid_sample(const char *line)
{
	const char *p = line;
	if (!parse_name(&p))
		return false;
	if (*p == '{') {
		p++;
		for (;;) {
			const char *label = p;
			if (!parse_name(&p) || p == label || *p++ != '=' || *p++ != '"')
				return false;
			while (*p != '"') {
				if (*p == '\0' || *p == '\n')
					return false;
				if (*p == '\\') {
					p++;
					if (*p != '\\' && *p != '"' && *p != 'n')
						return false;
				}
				p++;
			}
			p++;
			if (*p == ',') {
				p++;
				continue;
			}
			if (*p++ != '}')
				return false;
			break;
		}
	}
	if (*p++ != ' ')
		return false;
	if (strcmp(p, "+Inf") == 0 || strcmp(p, "-Inf") == 0 || strcmp(p, "NaN") == 0)
		return true;
	char *end;
	strtod(p, &end);
	return end != p && *end == '\0';
}

/* valid_exposition - every line a HELP, a TYPE (before its samples, one
 * per family) or a sample of the family typed last */
static bool valid_exposition(const char *text, char *why, size_t size)
{
	char *copy = strdup(text);
	ck_assert_ptr_nonnull(copy);
	bool ok = true;
	char family[256] = "";
	char *save = NULL;
	if (text[0] != '\0' && text[strlen(text) - 1] != '\n') {
		snprintf(why, size, "text does not end with a newline");
		free(copy);
		return false;
	}
	for (char *line = strtok_r(copy, "\n", &save); line != NULL && ok;
	     line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, "# HELP ", 7) == 0)
			continue;
		if (strncmp(line, "# TYPE ", 7) == 0) {
			const char *p = line + 7;
			const char *start = p;
			if (!parse_name(&p) || *p != ' ' ||
			    (strcmp(p + 1, "counter") != 0 && strcmp(p + 1, "gauge") != 0 &&
			     strcmp(p + 1, "histogram") != 0)) {
				ok = false;
			} else {
				snprintf(family, sizeof(family), "%.*s", (int)(p - start), start);
			}
		} else if (!valid_sample(line) || family[0] == '\0' ||
		           strncmp(line, family, strlen(family)) != 0) {
			ok = false;
		}
		if (!ok)
			snprintf(why, size, "bad line: %s", line);
	}
	free(copy);
	return ok;
}

static char *render_checked(struct metrics *m)
{
	char *text = metrics_render(m);
	ck_assert_ptr_nonnull(text);
	char why[512] = "";
	ck_assert_msg(valid_exposition(text, why, sizeof(why)), "%s\n%s", why, text);
	return text;
}

static void assert_has(const char *text, const char *line)
{
	char want[512];
	snprintf(want, sizeof(want), "%s\n", line);
	ck_assert_msg(strstr(text, want) != NULL, "missing \"%s\" in:\n%s", line, text);
}

START_TEST(counters_and_gauges)
{
	struct metrics *m = metrics_new();
	int verdicts = metrics_family(m, "vemilter_verdicts", METRIC_COUNTER, "Verdicts by action.", NULL, 0);
	int inflight =
	        metrics_family(m, "vemilter_probes_in_flight", METRIC_GAUGE, "Probes running.", NULL, 0);
	ck_assert_int_ge(verdicts, 0);
	ck_assert_int_ge(inflight, 0);
	metrics_add(m, verdicts, "action=\"accept\"", 1);
	metrics_add(m, verdicts, "action=\"accept\"", 2);
	metrics_add(m, verdicts, "action=\"reject\"", 1);
	metrics_add(m, verdicts, "action=\"reject\"", -5);    /* a counter never goes down */
	metrics_set(m, verdicts, "action=\"tempfail\"", 100); /* a count kept elsewhere */
	metrics_set(m, inflight, NULL, 7);
	metrics_add(m, inflight, NULL, -2);
	char *text = render_checked(m);
	assert_has(text, "# TYPE vemilter_verdicts_total counter");
	assert_has(text, "vemilter_verdicts_total{action=\"accept\"} 3");
	assert_has(text, "vemilter_verdicts_total{action=\"reject\"} 1");
	assert_has(text, "vemilter_probes_in_flight 5");
	assert_has(text, "vemilter_verdicts_total{action=\"tempfail\"} 100");
	free(text);
	metrics_free(m);
}
END_TEST

START_TEST(histogram_buckets_are_cumulative)
{
	struct metrics *m = metrics_new();
	const double bounds[] = {0.1, 1, 10};
	int h = metrics_family(m, "vemilter_probe_duration_seconds", METRIC_HISTOGRAM, "Probe time.", bounds,
	                       3);
	ck_assert_int_ge(h, 0);
	const double obs[] = {0.05, 0.1, 0.5, 2, 20, 30};
	for (size_t i = 0; i < sizeof(obs) / sizeof(obs[0]); i++)
		metrics_observe(m, h, "outcome=\"valid\"", obs[i]);
	char *text = render_checked(m);
	assert_has(text, "vemilter_probe_duration_seconds_bucket{outcome=\"valid\",le=\"0.1\"} 2");
	assert_has(text, "vemilter_probe_duration_seconds_bucket{outcome=\"valid\",le=\"1\"} 3");
	assert_has(text, "vemilter_probe_duration_seconds_bucket{outcome=\"valid\",le=\"10\"} 4");
	assert_has(text, "vemilter_probe_duration_seconds_bucket{outcome=\"valid\",le=\"+Inf\"} 6");
	assert_has(text, "vemilter_probe_duration_seconds_sum{outcome=\"valid\"} 52.65");
	assert_has(text, "vemilter_probe_duration_seconds_count{outcome=\"valid\"} 6");
	free(text);
	/* unlabelled: le is the only label */
	metrics_observe(m, h, "", 0.2);
	text = render_checked(m);
	assert_has(text, "vemilter_probe_duration_seconds_bucket{le=\"1\"} 1");
	assert_has(text, "vemilter_probe_duration_seconds_count 1");
	free(text);
	metrics_free(m);
}
END_TEST

START_TEST(labels_are_escaped)
{
	char labels[128] = "";
	ck_assert(metrics_label(labels, sizeof(labels), "reason", "a \"quoted\" back\\slash\nnewline"));
	ck_assert(metrics_label(labels, sizeof(labels), "stage", "rcpt"));
	ck_assert_str_eq(labels, "reason=\"a \\\"quoted\\\" back\\\\slash\\nnewline\",stage=\"rcpt\"");
	char small[16] = "";
	ck_assert(!metrics_label(small, sizeof(small), "reason", "far too long for this buffer"));
	ck_assert_str_eq(small, "");
	struct metrics *m = metrics_new();
	int c = metrics_family(m, "x", METRIC_COUNTER, "x", NULL, 0);
	metrics_add(m, c, labels, 1);
	char *text = render_checked(m);
	free(text);
	metrics_free(m);
}
END_TEST

START_TEST(series_are_bounded)
{
	struct metrics *m = metrics_new();
	int c = metrics_family(m, "many", METRIC_COUNTER, "Many label values.", NULL, 0);
	char labels[64];
	for (int i = 0; i < METRICS_SERIES_MAX * 4; i++) {
		labels[0] = '\0';
		char value[16];
		snprintf(value, sizeof(value), "v%d", i);
		metrics_label(labels, sizeof(labels), "k", value);
		metrics_add(m, c, labels, 1);
	}
	char *text = render_checked(m);
	int lines = 0;
	for (const char *p = text; (p = strstr(p, "many_total{")) != NULL; p++)
		lines++;
	ck_assert_int_eq(lines, METRICS_SERIES_MAX + 1);
	char want[64];
	snprintf(want, sizeof(want), "many_total{overflow=\"yes\"} %d", METRICS_SERIES_MAX * 3);
	assert_has(text, want);
	free(text);
	metrics_free(m);
}
END_TEST

static void collect(void *arg, struct metrics *m)
{
	int *calls = arg;
	(*calls)++;
	metrics_set(m, 1, NULL, *calls * 10);
}

START_TEST(collector_runs_before_each_render)
{
	struct metrics *m = metrics_new();
	metrics_family(m, "a", METRIC_COUNTER, "a", NULL, 0);
	ck_assert_int_eq(metrics_family(m, "entries", METRIC_GAUGE, "Cache entries.", NULL, 0), 1);
	int calls = 0;
	metrics_set_collector(m, collect, &calls);
	char *text = render_checked(m);
	assert_has(text, "entries 10");
	free(text);
	text = render_checked(m);
	assert_has(text, "entries 20");
	free(text);
	ck_assert_int_eq(calls, 2);
	metrics_free(m);
}
END_TEST

START_TEST(bad_declarations_are_refused)
{
	struct metrics *m = metrics_new();
	const double bounds[] = {1, 2};
	const double unsorted[] = {2, 1};
	ck_assert_int_eq(metrics_family(m, "9lives", METRIC_COUNTER, "x", NULL, 0), -1);
	ck_assert_int_eq(metrics_family(m, "has space", METRIC_COUNTER, "x", NULL, 0), -1);
	ck_assert_int_eq(metrics_family(m, "", METRIC_GAUGE, "x", NULL, 0), -1);
	ck_assert_int_eq(metrics_family(m, "h", METRIC_HISTOGRAM, "x", NULL, 0), -1);
	ck_assert_int_eq(metrics_family(m, "h", METRIC_HISTOGRAM, "x", unsorted, 2), -1);
	ck_assert_int_eq(metrics_family(m, "c", METRIC_COUNTER, "x", bounds, 2), -1);
	ck_assert_int_eq(metrics_family(m, "c", METRIC_COUNTER, "two\nlines", NULL, 0), -1);
	ck_assert_int_eq(metrics_family(m, "c", METRIC_COUNTER, "ok", NULL, 0), 0);
	ck_assert_int_eq(metrics_family(m, "c", METRIC_GAUGE, "taken", NULL, 0), -1);
	/* updates to ids that do not exist, or of the wrong kind, change nothing */
	metrics_add(m, 7, NULL, 1);
	metrics_add(m, -1, NULL, 1);
	metrics_observe(m, 0, NULL, 1);
	metrics_add(m, 0, NULL, NAN);
	char *text = render_checked(m);
	ck_assert_str_eq(text, "# HELP c_total ok\n# TYPE c_total counter\n");
	free(text);
	metrics_free(m);
	metrics_free(NULL);
}
END_TEST

struct adder {
	struct metrics *m;
	int id;
};

static void *add_many(void *arg)
{
	struct adder *a = arg;
	for (int i = 0; i < 20000; i++)
		metrics_add(a->m, a->id, (i & 1) ? "k=\"odd\"" : "k=\"even\"", 1);
	return NULL;
}

START_TEST(threads_sum_exactly)
{
	struct metrics *m = metrics_new();
	struct adder a = {m, metrics_family(m, "t", METRIC_COUNTER, "t", NULL, 0)};
	pthread_t th[4];
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, add_many, &a), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	char *text = render_checked(m);
	assert_has(text, "t_total{k=\"odd\"} 40000");
	assert_has(text, "t_total{k=\"even\"} 40000");
	free(text);
	metrics_free(m);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("metrics");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, counters_and_gauges);
	tcase_add_test(tc, histogram_buckets_are_cumulative);
	tcase_add_test(tc, labels_are_escaped);
	tcase_add_test(tc, series_are_bounded);
	tcase_add_test(tc, collector_runs_before_each_render);
	tcase_add_test(tc, bad_declarations_are_refused);
	tcase_add_test(tc, threads_sum_exactly);
	suite_add_tcase(s, tc);
	return unit_run(s);
}
