/*
 * metrics.c - the registry of metrics.h and its text rendering.
 *
 * Families are an array in declaration order; each holds its series in an
 * array searched by label text (a family has a handful of series, at most
 * METRICS_SERIES_MAX, so a linear search under the lock is cheaper than a
 * hash). Rendering copies nothing: it formats under the lock into a
 * growing buffer.
 */
#include "metrics.h"

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OVERFLOW_LABELS "overflow=\"yes\""

struct series {
	char *labels;                                    /* preformatted, "" for none */
	double value;                                    /* counter, gauge; histogram: the sum */
	unsigned long long count;                        /* histogram: observations */
	unsigned long long buckets[METRICS_BUCKETS_MAX]; /* histogram: per bucket, not cumulative */
};

struct family {
	char *name;
	char *help;
	enum metric_type type;
	double bounds[METRICS_BUCKETS_MAX];
	size_t n_bounds;
	struct series *series;
	size_t n_series, cap_series;
};

struct metrics {
	pthread_mutex_t lock;
	struct family *families;
	size_t n_families, cap_families;
	metrics_collect_fn collect;
	void *collect_arg;
};

struct metrics *metrics_new(void)
{
	struct metrics *m = calloc(1, sizeof(*m));
	if (m == NULL)
		return NULL;
	if (pthread_mutex_init(&m->lock, NULL) != 0) {
		free(m);
		return NULL;
	}
	return m;
}

void metrics_free(struct metrics *m)
{
	if (m == NULL)
		return;
	for (size_t i = 0; i < m->n_families; i++) {
		struct family *f = &m->families[i];
		for (size_t j = 0; j < f->n_series; j++)
			free(f->series[j].labels);
		free(f->series);
		free(f->name);
		free(f->help);
	}
	free(m->families);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

static bool valid_name(const char *name)
{
	if (name == NULL || *name == '\0')
		return false;
	for (const char *p = name; *p != '\0'; p++) {
		char c = *p;
		bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
		if (!alpha && !(p != name && c >= '0' && c <= '9'))
			return false;
	}
	return true;
}

/* metrics_family - see metrics.h */
int metrics_family(struct metrics *m, const char *name, enum metric_type type, const char *help,
                   const double *buckets, size_t n_buckets)
{
	if (m == NULL || !valid_name(name) || help == NULL || strchr(help, '\n') != NULL)
		return -1;
	if (type == METRIC_HISTOGRAM) {
		if (buckets == NULL || n_buckets == 0 || n_buckets > METRICS_BUCKETS_MAX)
			return -1;
		for (size_t i = 0; i < n_buckets; i++)
			if (!isfinite(buckets[i]) || (i > 0 && buckets[i] <= buckets[i - 1]))
				return -1;
	} else if (n_buckets != 0) {
		return -1;
	}
	pthread_mutex_lock(&m->lock);
	int id = -1;
	for (size_t i = 0; i < m->n_families; i++)
		if (strcmp(m->families[i].name, name) == 0)
			goto out;
	if (m->n_families == m->cap_families) {
		size_t cap = m->cap_families ? m->cap_families * 2 : 16;
		struct family *grown = realloc(m->families, cap * sizeof(*grown));
		if (grown == NULL)
			goto out;
		m->families = grown;
		m->cap_families = cap;
	}
	struct family *f = &m->families[m->n_families];
	memset(f, 0, sizeof(*f));
	f->name = strdup(name);
	f->help = strdup(help);
	if (f->name == NULL || f->help == NULL) {
		free(f->name);
		free(f->help);
		goto out;
	}
	f->type = type;
	f->n_bounds = n_buckets;
	if (n_buckets > 0)
		memcpy(f->bounds, buckets, n_buckets * sizeof(*buckets));
	id = (int)m->n_families++;
out:
	pthread_mutex_unlock(&m->lock);
	return id;
}

/* series_of - the series of f with labels, made if new; the overflow
 * series when f is full; NULL without memory. Under the lock. */
static struct series *series_of(struct family *f, const char *labels)
{
	if (labels == NULL)
		labels = "";
	for (size_t i = 0; i < f->n_series; i++)
		if (strcmp(f->series[i].labels, labels) == 0)
			return &f->series[i];
	/* Full: every further label set shares one extra series. */
	bool overflow = strcmp(labels, OVERFLOW_LABELS) == 0;
	if (f->n_series >= METRICS_SERIES_MAX && !overflow)
		return series_of(f, OVERFLOW_LABELS);
	if (f->n_series >= METRICS_SERIES_MAX + 1)
		return NULL;
	if (f->n_series == f->cap_series) {
		size_t cap = f->cap_series ? f->cap_series * 2 : 8;
		if (cap > METRICS_SERIES_MAX + 1)
			cap = METRICS_SERIES_MAX + 1;
		struct series *grown = realloc(f->series, cap * sizeof(*grown));
		if (grown == NULL)
			return NULL;
		f->series = grown;
		f->cap_series = cap;
	}
	struct series *s = &f->series[f->n_series];
	memset(s, 0, sizeof(*s));
	s->labels = strdup(labels);
	if (s->labels == NULL)
		return NULL;
	f->n_series++;
	return s;
}

/* change - the one path every update takes */
static void change(struct metrics *m, int id, const char *labels, double v, enum metric_type want, char op)
{
	if (m == NULL || !isfinite(v))
		return;
	pthread_mutex_lock(&m->lock);
	if (id >= 0 && (size_t)id < m->n_families) {
		struct family *f = &m->families[id];
		/* A gauge also takes adds; a counter also takes a set: the absolute
		 * value of a count kept elsewhere (a collector's). */
		bool type_ok = f->type == want || (op == '+' && f->type == METRIC_GAUGE) ||
		               (op == '=' && f->type == METRIC_COUNTER);
		struct series *s = type_ok ? series_of(f, labels) : NULL;
		if (s != NULL) {
			if (op == '+')
				s->value += v;
			else if (op == '=')
				s->value = v;
			else {
				s->value += v;
				s->count++;
				size_t b = 0;
				while (b < f->n_bounds && v > f->bounds[b])
					b++;
				if (b < f->n_bounds)
					s->buckets[b]++;
			}
		}
	}
	pthread_mutex_unlock(&m->lock);
}

void metrics_add(struct metrics *m, int id, const char *labels, double delta)
{
	if (delta < 0) {
		/* only a gauge may go down */
		pthread_mutex_lock(&m->lock);
		bool gauge = id >= 0 && (size_t)id < m->n_families && m->families[id].type == METRIC_GAUGE;
		pthread_mutex_unlock(&m->lock);
		if (!gauge)
			return;
	}
	change(m, id, labels, delta, METRIC_COUNTER, '+');
}

void metrics_set(struct metrics *m, int id, const char *labels, double value)
{
	change(m, id, labels, value, METRIC_GAUGE, '=');
}

void metrics_observe(struct metrics *m, int id, const char *labels, double value)
{
	change(m, id, labels, value, METRIC_HISTOGRAM, 'o');
}

void metrics_set_collector(struct metrics *m, metrics_collect_fn fn, void *arg)
{
	pthread_mutex_lock(&m->lock);
	m->collect = fn;
	m->collect_arg = arg;
	pthread_mutex_unlock(&m->lock);
}

/* metrics_label - see metrics.h */
bool metrics_label(char *buf, size_t size, const char *name, const char *value)
{
	size_t len = strlen(buf);
	size_t start = len;
	if (value == NULL)
		value = "";
#define PUT(c)                                                                                               \
	do {                                                                                                 \
		if (len + 1 >= size)                                                                         \
			goto full;                                                                           \
		buf[len++] = (c);                                                                            \
	} while (0)
	if (len > 0)
		PUT(',');
	for (const char *p = name; *p != '\0'; p++)
		PUT(*p);
	PUT('=');
	PUT('"');
	for (const char *p = value; *p != '\0'; p++) {
		if (*p == '\\' || *p == '"') {
			PUT('\\');
			PUT(*p);
		} else if (*p == '\n') {
			PUT('\\');
			PUT('n');
		} else {
			PUT(*p);
		}
	}
	PUT('"');
	buf[len] = '\0';
	return true;
full:
	buf[start] = '\0';
	return false;
#undef PUT
}

/* a growing output buffer; on failure it drops its text and stays failed */
struct out {
	char *text;
	size_t len, cap;
	bool failed;
};

static void __attribute__((format(printf, 2, 3))) put(struct out *o, const char *fmt, ...)
{
	if (o->failed)
		return;
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(o->text + o->len, o->cap - o->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			o->failed = true;
			return;
		}
		if ((size_t)n < o->cap - o->len) {
			o->len += (size_t)n;
			return;
		}
		size_t cap = (o->cap + (size_t)n + 1) * 2;
		char *grown = realloc(o->text, cap);
		if (grown == NULL) {
			o->failed = true;
			return;
		}
		o->text = grown;
		o->cap = cap;
	}
}

/* put_sample - one line: NAME SUFFIX, then "{labels}", "{labels,extra}"
 * or nothing, then the value */
static void put_sample(struct out *o, const char *name, const char *suffix, const char *labels,
                       const char *extra, double value)
{
	bool any = labels[0] != '\0' || extra != NULL;
	put(o, "%s%s%s%s%s%s%s %.15g\n", name, suffix, any ? "{" : "", labels,
	    labels[0] != '\0' && extra != NULL ? "," : "", extra != NULL ? extra : "", any ? "}" : "", value);
}

static void render_family(struct out *o, const struct family *f)
{
	const char *suffix = f->type == METRIC_COUNTER ? "_total" : "";
	const char *type = f->type == METRIC_COUNTER ? "counter"
	                   : f->type == METRIC_GAUGE ? "gauge"
	                                             : "histogram";
	put(o, "# HELP %s%s %s\n# TYPE %s%s %s\n", f->name, suffix, f->help, f->name, suffix, type);
	for (size_t i = 0; i < f->n_series; i++) {
		const struct series *s = &f->series[i];
		if (f->type != METRIC_HISTOGRAM) {
			put_sample(o, f->name, suffix, s->labels, NULL, s->value);
			continue;
		}
		unsigned long long cumulative = 0;
		char le[64];
		for (size_t b = 0; b < f->n_bounds; b++) {
			cumulative += s->buckets[b];
			snprintf(le, sizeof(le), "le=\"%.15g\"", f->bounds[b]);
			put_sample(o, f->name, "_bucket", s->labels, le, (double)cumulative);
		}
		put_sample(o, f->name, "_bucket", s->labels, "le=\"+Inf\"", (double)s->count);
		put_sample(o, f->name, "_sum", s->labels, NULL, s->value);
		put_sample(o, f->name, "_count", s->labels, NULL, (double)s->count);
	}
}

/* metrics_render - see metrics.h */
char *metrics_render(struct metrics *m)
{
	pthread_mutex_lock(&m->lock);
	metrics_collect_fn collect = m->collect;
	void *arg = m->collect_arg;
	pthread_mutex_unlock(&m->lock);
	if (collect != NULL)
		collect(arg, m);
	struct out o = {.text = malloc(4096), .cap = 4096};
	if (o.text == NULL)
		return NULL;
	o.text[0] = '\0';
	pthread_mutex_lock(&m->lock);
	for (size_t i = 0; i < m->n_families; i++)
		render_family(&o, &m->families[i]);
	pthread_mutex_unlock(&m->lock);
	if (o.failed) {
		free(o.text);
		return NULL;
	}
	return o.text;
}

/* metrics_parse_listen - see metrics.h */
bool metrics_parse_listen(const char *listen, char *host, size_t host_size, unsigned *port)
{
	if (listen == NULL)
		return false;
	const char *colon;
	char addr[64];
	if (listen[0] == '[') {
		const char *close = strchr(listen, ']');
		if (close == NULL || close[1] != ':' || (size_t)(close - listen - 1) >= sizeof(addr))
			return false;
		snprintf(addr, sizeof(addr), "%.*s", (int)(close - listen - 1), listen + 1);
		colon = close + 1;
		struct in6_addr a6;
		if (inet_pton(AF_INET6, addr, &a6) != 1)
			return false;
	} else {
		colon = strrchr(listen, ':');
		if (colon == NULL || (size_t)(colon - listen) >= sizeof(addr))
			return false;
		snprintf(addr, sizeof(addr), "%.*s", (int)(colon - listen), listen);
		struct in_addr a4;
		if (inet_pton(AF_INET, addr, &a4) != 1)
			return false;
	}
	const char *digits = colon + 1;
	if (*digits == '\0' || strlen(digits) > 5)
		return false;
	unsigned value = 0;
	for (const char *p = digits; *p != '\0'; p++) {
		if (*p < '0' || *p > '9')
			return false;
		value = value * 10 + (unsigned)(*p - '0');
	}
	if (value == 0 || value > 65535 || strlen(addr) >= host_size)
		return false;
	snprintf(host, host_size, "%s", addr);
	*port = value;
	return true;
}
