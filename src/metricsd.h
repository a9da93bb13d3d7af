/*
 * metricsd.h - serve a metrics registry over HTTP (GET /metrics).
 *
 * libevent's HTTP server on the caller's event_base (the engine loop, so a
 * scrape never needs a thread of its own, and the registry's collector runs
 * where the state it reads lives). Only GET and HEAD of /metrics are
 * answered (200, the text format of metrics.h); any other path is 404 and
 * any other method 405. Requests are small and bounded (header and body
 * size limits, a timeout), so a scraper cannot hold the loop.
 *
 * Owns the HTTP server and its listening socket; not the registry.
 */
#ifndef VEMILTER_METRICSD_H
#define VEMILTER_METRICSD_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct metrics;
struct metricsd;

/* metricsd_start - listen on listen ("HOST:PORT", "[V6]:PORT"; HOST an
 * address literal) and serve m. NULL with a reason in why. */
struct metricsd *metricsd_start(struct event_base *base, const char *listen, struct metrics *m, char *why,
                                size_t why_size);

/* metricsd_stop - close the socket and free the server; NULL is fine */
void metricsd_stop(struct metricsd *d);

#endif
