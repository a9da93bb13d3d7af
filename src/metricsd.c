/*
 * metricsd.c - GET /metrics over libevent's evhttp (see metricsd.h).
 */
#include "metricsd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct metricsd {
	struct evhttp *http;
	struct metrics *metrics;
};

/* is_head - a HEAD request: its reply carries no body (RFC 9110 9.3.2).
 * libevent sends whatever body it is given, HEAD or not; on a kept-alive
 * connection the client would read that body as the next response. */
static bool is_head(struct evhttp_request *req)
{
	return evhttp_request_get_command(req) == EVHTTP_REQ_HEAD;
}

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *text)
{
	struct evbuffer *body = is_head(req) ? NULL : evbuffer_new();
	if (body != NULL)
		evbuffer_add(body, text, strlen(text));
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	                  "text/plain; charset=utf-8");
	evhttp_send_reply(req, code, reason, body);
	if (body != NULL)
		evbuffer_free(body);
}

static void free_text(const void *data, size_t len, void *arg)
{
	(void)len;
	(void)arg;
	free((void *)data);
}

static void on_request(struct evhttp_request *req, void *arg)
{
	struct metricsd *d = arg;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
	if (path == NULL || strcmp(path, "/metrics") != 0) {
		reply_text(req, HTTP_NOTFOUND, "Not Found", "not found: try /metrics\n");
		return;
	}
	if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
		reply_text(req, HTTP_BADMETHOD, "Method Not Allowed", "only GET /metrics\n");
		return;
	}
	if (cmd == EVHTTP_REQ_HEAD) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", CONTENT_TYPE);
		evhttp_send_reply(req, HTTP_OK, "OK", NULL);
		return;
	}
	char *text = metrics_render(d->metrics);
	if (text == NULL) {
		reply_text(req, HTTP_INTERNAL, "Internal Server Error", "out of memory\n");
		return;
	}
	/* The text is handed over without a copy: the connection's buffer frees
	 * it (free_text) once it is sent. */
	struct evbuffer *body = evbuffer_new();
	if (body == NULL || evbuffer_add_reference(body, text, strlen(text), free_text, NULL) != 0) {
		if (body != NULL)
			evbuffer_free(body);
		free(text);
		reply_text(req, HTTP_INTERNAL, "Internal Server Error", "out of memory\n");
		return;
	}
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", CONTENT_TYPE);
	evhttp_send_reply(req, HTTP_OK, "OK", body);
	evbuffer_free(body);
}

/* metricsd_start - see metricsd.h */
struct metricsd *metricsd_start(struct event_base *base, const char *listen, struct metrics *m, char *why,
                                size_t why_size)
{
	char host[64];
	unsigned port;
	if (!metrics_parse_listen(listen, host, sizeof(host), &port)) {
		snprintf(why, why_size, "metrics_listen \"%s\": not ADDRESS:PORT", listen);
		return NULL;
	}
	struct metricsd *d = calloc(1, sizeof(*d));
	if (d == NULL) {
		snprintf(why, why_size, "out of memory");
		return NULL;
	}
	d->metrics = m;
	d->http = evhttp_new(base);
	if (d->http == NULL) {
		snprintf(why, why_size, "cannot create the metrics HTTP server");
		free(d);
		return NULL;
	}
	/* A scrape is a few hundred bytes in and some KiB out. */
	evhttp_set_max_headers_size(d->http, 8192);
	evhttp_set_max_body_size(d->http, 1024);
	evhttp_set_timeout(d->http, 10);
	evhttp_set_allowed_methods(d->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST);
	evhttp_set_gencb(d->http, on_request, d);
	if (evhttp_bind_socket(d->http, host, (ev_uint16_t)port) != 0) {
		snprintf(why, why_size, "metrics_listen %s: cannot listen there: %s", listen,
		         strerror(errno));
		evhttp_free(d->http);
		free(d);
		return NULL;
	}
	return d;
}

/* metricsd_stop - see metricsd.h */
void metricsd_stop(struct metricsd *d)
{
	if (d == NULL)
		return;
	evhttp_free(d->http);
	free(d);
}
