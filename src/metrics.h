/*
 * metrics.h - counters, gauges and histograms, rendered in the Prometheus
 * text exposition format (version 0.0.4, which Prometheus, promtool and
 * OpenMetrics scrapers all read).
 *
 * A registry owns metric families, each with a fixed name, type and help
 * text declared once (metrics_family), and each family's series, one per
 * distinct label set, made on first use. Label sets are passed as one
 * preformatted text (`outcome="valid",stage="rcpt"`; metrics_label builds
 * one value safely), so a family's series are found by that text. Values
 * change from any thread: one mutex guards the registry, held only for a
 * lookup and an add. Series per family are bounded (METRICS_SERIES_MAX):
 * a label set beyond that is counted in the family's series with the
 * label `overflow="yes"`, so no input can grow the registry without bound.
 *
 * Gauges that are cheaper to read than to keep up to date (probes in
 * flight, cache entries) come from a collector: a callback the owner
 * registers, called by metrics_render just before rendering (outside the
 * registry's lock, so it may call metrics_set).
 *
 * Pure: no I/O, no clock; the HTTP side is elsewhere (metricsd.c). Owns
 * every family, series and string in it.
 */
#ifndef VEMILTER_METRICS_H
#define VEMILTER_METRICS_H

#include <stdbool.h>
#include <stddef.h>

#define METRICS_SERIES_MAX  256 /* distinct label sets per family */
#define METRICS_BUCKETS_MAX 16  /* histogram buckets, +Inf not counted */

struct metrics;

enum metric_type {
	METRIC_COUNTER,   /* only goes up; rendered NAME_total */
	METRIC_GAUGE,     /* set to a value */
	METRIC_HISTOGRAM, /* observations in cumulative buckets, _sum and _count */
};

typedef void (*metrics_collect_fn)(void *arg, struct metrics *m);

/* metrics_new - an empty registry; NULL without memory */
struct metrics *metrics_new(void);
void metrics_free(struct metrics *m); /* NULL is fine */

/* metrics_family - declare a family: name ([a-zA-Z_:][a-zA-Z0-9_:]*,
 * without _total for a counter), help (one line), and for a histogram its
 * upper bounds, ascending (at most METRICS_BUCKETS_MAX). Returns its id,
 * or -1 (bad name, bad buckets, no memory, or the name is taken). */
int metrics_family(struct metrics *m, const char *name, enum metric_type type, const char *help,
                   const double *buckets, size_t n_buckets);

/* Change a series of family id with the given labels ("" or NULL: none).
 * A wrong id or type is ignored (a programming error, never a crash). */
void metrics_add(struct metrics *m, int id, const char *labels, double delta); /* counter, gauge */
/* gauge; or a counter kept elsewhere, set to its absolute value (which must
 * never go down: a collector copying the verifier's statistics) */
void metrics_set(struct metrics *m, int id, const char *labels, double value);
void metrics_observe(struct metrics *m, int id, const char *labels, double value); /* histogram */

/* metrics_set_collector - fn(arg, m) runs at the start of every render */
void metrics_set_collector(struct metrics *m, metrics_collect_fn fn, void *arg);

/* metrics_label - append name="value" to buf (size bytes, NUL-terminated,
 * with a comma first when buf is not empty), the value escaped as the
 * format asks (\\, \", \n). False when it does not fit (buf unchanged). */
bool metrics_label(char *buf, size_t size, const char *name, const char *value);

/* metrics_render - every family, in declaration order, as exposition text.
 * Returns a string the caller frees, or NULL without memory. */
char *metrics_render(struct metrics *m);

/* metrics_parse_listen - split "HOST:PORT" / "[V6]:PORT" into host (an
 * address literal, copied into host, host_size bytes) and port 1..65535;
 * false with nothing changed when it is not that. */
bool metrics_parse_listen(const char *listen, char *host, size_t host_size, unsigned *port);

#endif
