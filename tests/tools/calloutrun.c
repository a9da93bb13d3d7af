/*
 * calloutrun.c - run one callout (src/callout.c) with the hints the
 * verifier would give it, and print what it reported.
 *
 * Test driver for tests/integration/test_callout.py (vemilter-check always
 * probes without hints):
 *
 *   calloutrun -c CONF [-v] [--skip-catchall] [--fallback-hint] ADDRESS
 *
 * prints, after the loop has run dry (the verdict, late facts, QUIT),
 *
 *   outcome=valid stage=rcpt flags=fallback_sender facts=not_catch_all verdict_ms=12
 *   finished=1 finished_ms=15
 *
 * (one line) preceded, with -v, by the transcript. facts lists the late
 * facts, in order (comma-separated, "-" for none): catch_all and
 * not_catch_all about the domain, retracted when the verdict was taken back
 * (the session proved out of step after it); finished counts the
 * on_finished calls (the last connection gone), finished_ms says when. Owns its configuration and engine.
 * Exit 0 once a verdict came; 1 otherwise; 2 on a usage or setup error.
 */
#include <event2/event.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "callout.h"
#include "classify.h"
#include "clock.h"
#include "conf.h"
#include "engine.h"

struct run {
	struct engine *engine;
	bool verbose;
	bool done;
	struct outcome outcome;
	int64_t started_ms;
	int64_t verdict_ms;
	int finished;        /* on_finished calls */
	int64_t finished_ms; /* when the last connection was gone */
	char facts[128];
	struct event *poll;
};

static void usage(void)
{
	fprintf(stderr, "usage: calloutrun -c CONF [-v] [--skip-catchall] [--fallback-hint] ADDRESS\n");
	exit(2);
}

static void on_trace(void *arg, const char *line)
{
	struct run *run = arg;
	if (run->verbose)
		printf("%s\n", line);
}

static void on_done(void *arg, const struct outcome *o)
{
	struct run *run = arg;
	run->done = true;
	run->outcome = *o;
	run->verdict_ms = clock_mono_ms() - run->started_ms;
}

static void on_fact(void *arg, const struct addr *address, const struct outcome *fact)
{
	struct run *run = arg;
	size_t len = strlen(run->facts);
	const char *name = fact->kind == OUTCOME_CATCH_ALL ? "catch_all"
	                   : fact->kind == OUTCOME_VALID && (fact->flags & OUTCOME_F_NOT_CATCHALL)
	                           ? "not_catch_all"
	                   : (fact->flags & OUTCOME_F_PROTOCOL) ? "retracted"
	                                                        : "other";
	snprintf(run->facts + len, sizeof(run->facts) - len, "%s%s", len ? "," : "", name);
	if (run->verbose)
		printf("* fact: %s (%s)\n", name, fact->reason);
}

static void on_finished(void *arg, const char *domain)
{
	struct run *run = arg;
	run->finished++;
	run->finished_ms = clock_mono_ms() - run->started_ms;
}

/* on_poll - stop once the verdict is in and nothing lingers */
static void on_poll(evutil_socket_t fd, short what, void *arg)
{
	struct run *run = arg;
	if (run->done && engine_lingering(run->engine) == 0)
		event_base_loopexit(run->engine->env.base, NULL);
}

static void print_error(void *arg, const char *message)
{
	fprintf(stderr, "%s\n", message);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	        {"skip-catchall", no_argument, NULL, 's'},
	        {"fallback-hint", no_argument, NULL, 'f'},
	        {NULL, 0, NULL, 0},
	};
	struct callout_hints hints = {0};
	struct run run = {0};
	const char *conf_path = NULL;
	int c;
	while ((c = getopt_long(argc, argv, "c:v", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			conf_path = optarg;
			break;
		case 'v':
			run.verbose = true;
			break;
		case 's':
			hints.skip_catchall = true;
			break;
		case 'f':
			hints.use_fallback_sender = true;
			break;
		default:
			usage();
		}
	}
	if (conf_path == NULL || argc - optind != 1)
		usage();
	struct addr address;
	char why[300];
	if (!addr_parse(argv[optind], strlen(argv[optind]), &address, why, sizeof(why)) || address.is_null) {
		fprintf(stderr, "calloutrun: not an address to verify: %s\n", argv[optind]);
		return 2;
	}
	struct conf *conf = conf_load(conf_path, print_error, NULL);
	if (conf == NULL)
		return 2;
	run.engine = engine_new(conf, why, sizeof(why));
	if (run.engine == NULL) {
		fprintf(stderr, "calloutrun: %s\n", why);
		conf_unref(conf);
		return 2;
	}
	run.engine->env.on_fact = on_fact;
	run.engine->env.on_finished = on_finished;
	run.engine->env.fact_arg = &run;
	run.poll = event_new(run.engine->env.base, -1, EV_PERSIST, on_poll, &run);
	struct timeval tick = {0, 20 * 1000};
	run.started_ms = clock_mono_ms();
	if (run.poll == NULL || event_add(run.poll, &tick) != 0 ||
	    callout_start(&run.engine->env, &address, &hints, on_trace, &run, on_done, &run) == NULL) {
		fprintf(stderr, "calloutrun: cannot start\n");
		return 2;
	}
	event_base_dispatch(run.engine->env.base);
	if (run.done) {
		char flags[120];
		outcome_flags_text(run.outcome.flags, flags, sizeof(flags));
		printf("outcome=%s stage=%s flags=%s facts=%s verdict_ms=%lld finished=%d finished_ms=%lld\n",
		       outcome_name(run.outcome.kind), probe_stage_name(run.outcome.stage),
		       flags[0] ? flags : "-", run.facts[0] ? run.facts : "-", (long long)run.verdict_ms,
		       run.finished, (long long)run.finished_ms);
	}
	event_free(run.poll);
	engine_free(run.engine);
	conf_unref(conf);
	return run.done ? 0 : 1;
}
