/*
 * check.c - vemilter-check: verify addresses from the command line with the
 * daemon's own engine and configuration, and show why.
 *
 * Addresses are probed concurrently on one event loop (-j bounds how many). Each resolves
 * its domain itself (callout_start without hints.mx): no lookups are shared or kept, so
 * every address's -v transcript shows its own DNS queries (a diagnostic must show what
 * DNS says now), and repeats cost the local resolver's cache, not the domain's servers.
 * One result line per address, in the order given; -v also prints the whole dialogue (DNS
 * answers, connections, every command and reply, when each verdict came)
 * as it happens. The result lines come once every verdict is in and what
 * goes on after the verdicts (QUIT, late catch-all answers, which are shown
 * as fact=) has ended, so servers are left politely; SIGINT or SIGTERM
 * during that wait cuts it short. Owns the
 * configuration, the engine and one struct job per address.
 */
#include "config.h"

#include <event2/event.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "addr.h"
#include "callout.h"
#include "classify.h"
#include "clock.h"
#include "conf.h"
#include "engine.h"
#include "explain.h"
#include "log.h"
#include "outcome.h"
#include "redisurl.h"

/* Exit statuses, worst wins; documented in vemilter-check(1). */
enum exit_code {
	EXIT_ALL_VALID = 0,
	EXIT_UNKNOWN = 1,   /* catch_all, unverifiable */
	EXIT_TEMPORARY = 2, /* tempfail, blocked */
	EXIT_NEGATIVE = 3,  /* invalid, no_domain, bad syntax */
	EXIT_USAGE = 64,
	EXIT_CONFIG = 78,
};

struct job {
	const char *input; /* as given on the command line */
	struct addr address;
	bool parsed;
	char syntax_error[160];
	struct outcome outcome;
	int64_t verdict_ms; /* from the start of the run to the verdict */
	const char *fact;   /* a late fact: "catch_all", "not_catch_all" (the domain), "retracted"
	                     * (this verdict was taken back: out of step); NULL: none. Set from
	                     * the two below once the run is over (settle_facts). */
	bool retracted;
	unsigned long started_seq; /* facts before this one's start are not about its probe */
	size_t group;              /* the first job of its domain in run.by_domain order */
	/* on a group's first job: the domain's latest fact and when it came */
	const char *domain_fact;
	unsigned long domain_fact_seq;
	struct run *run;
};

struct run {
	struct engine *engine;
	bool verbose;
	struct job *jobs;
	size_t job_count;
	size_t next_job;   /* first job not started yet */
	size_t in_flight;  /* callouts running */
	size_t max_flight; /* -j: at most this many at once */
	bool failed;       /* a callout could not start */
	int64_t started_ms;
	unsigned long fact_seq; /* facts so far */
	size_t *by_domain;      /* the parsed jobs' indexes, by domain: a fact finds its domain's
	                         * jobs without a walk over all of them (-j in the thousands) */
	size_t by_domain_count;
	struct event *linger_poll; /* after the verdicts: ends the loop when nothing lingers */
	int64_t linger_until_ms;   /* ... or at this time, whatever still lingers */
};

/* usage - the synopsis */
static void usage(FILE *out)
{
	fprintf(out,
	        "usage: vemilter-check [-c FILE] [-v] [-j N] ADDRESS...\n"
	        "       vemilter-check [-c FILE] --explain ADDRESS...\n"
	        "  -c FILE  configuration (default %s, or built-in defaults if it does not exist)\n"
	        "  -v       print the whole dialogue: DNS answers, connections, commands, replies\n"
	        "  -j N     verify up to N addresses at once (default 100)\n"
	        "  -e, --explain  probe nothing: say what the daemon would answer now and why\n"
	        "           (its configuration and cache, read only)\n"
	        "  -V, --version  print the version and exit\n"
	        "  -h, --help     print this help and exit\n",
	        CONF_DEFAULT_PATH);
}

/* on_trace - one transcript line, prefixed with its address */
static void on_trace(void *arg, const char *line)
{
	struct job *job = arg;
	printf("%s: %s\n", job->input, line);
	fflush(stdout);
}

static void start_more(struct run *run);

/* on_done - one address is settled; start the next, stop after the last */
static void on_done(void *arg, const struct outcome *outcome)
{
	struct job *job = arg;
	struct run *run = job->run;
	job->outcome = *outcome;
	job->verdict_ms = clock_mono_ms() - run->started_ms;
	if (run->verbose) {
		printf("%s: * verdict after %lld ms: %s\n", job->input, (long long)job->verdict_ms,
		       outcome_name(outcome->kind));
		fflush(stdout);
	}
	run->in_flight--;
	start_more(run);
	if (run->in_flight == 0)
		event_base_loopexit(run->engine->env.base, NULL);
}

/* by_domain_order - qsort_r over job indexes (arg: the jobs): by domain, then index */
static int by_domain_order(const void *a, const void *b, void *arg)
{
	const struct job *jobs = arg;
	size_t x = *(const size_t *)a, y = *(const size_t *)b;
	int d = strcmp(jobs[x].address.domain_ascii, jobs[y].address.domain_ascii);
	return d != 0 ? d : (x > y) - (x < y);
}

/* group_jobs - run.by_domain and every parsed job's group; false without memory */
static bool group_jobs(struct run *run)
{
	run->by_domain = calloc(run->job_count + 1, sizeof(*run->by_domain));
	if (run->by_domain == NULL)
		return false;
	for (size_t i = 0; i < run->job_count; i++)
		if (run->jobs[i].parsed && !run->jobs[i].address.is_null)
			run->by_domain[run->by_domain_count++] = i;
	qsort_r(run->by_domain, run->by_domain_count, sizeof(size_t), by_domain_order, run->jobs);
	for (size_t k = 0; k < run->by_domain_count; k++) {
		struct job *job = &run->jobs[run->by_domain[k]];
		struct job *prev = k > 0 ? &run->jobs[run->by_domain[k - 1]] : NULL;
		job->group =
		        prev != NULL && strcmp(prev->address.domain_ascii, job->address.domain_ascii) == 0
		                ? prev->group
		                : run->by_domain[k];
	}
	return true;
}

/* domain_group - the first job of domain's group, or NULL */
static struct job *domain_group(struct run *run, const char *domain)
{
	size_t lo = 0, hi = run->by_domain_count;
	while (lo < hi) { /* the first index whose domain is not below domain */
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(run->jobs[run->by_domain[mid]].address.domain_ascii, domain) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == run->by_domain_count ||
	    strcmp(run->jobs[run->by_domain[lo]].address.domain_ascii, domain) != 0)
		return NULL;
	return &run->jobs[run->jobs[run->by_domain[lo]].group];
}

/* settle_facts - each job's fact: retracted, or its domain's latest fact
 * if that came after the job started */
static void settle_facts(struct run *run)
{
	for (size_t i = 0; i < run->job_count; i++) {
		struct job *job = &run->jobs[i];
		if (!job->parsed || job->address.is_null)
			continue;
		const struct job *group = &run->jobs[job->group];
		if (job->retracted)
			job->fact = "retracted";
		else if (group->domain_fact != NULL && group->domain_fact_seq > job->started_seq)
			job->fact = group->domain_fact;
	}
}

/* on_fact - a fact learned after a verdict: about the domain (noted on
 * its group, for every job of it started by then), or a retraction */
static void on_fact(void *arg, const struct addr *address, const struct outcome *fact)
{
	const char *domain = address->domain_ascii;
	struct run *run = arg;
	/* A retraction (the session proved out of step after the verdict) is
	 * about this address's verdict only; the others about the domain. */
	bool retraction = fact->kind == OUTCOME_TEMPFAIL && (fact->flags & OUTCOME_F_PROTOCOL);
	const char *name = retraction                        ? "retracted"
	                   : fact->kind == OUTCOME_CATCH_ALL ? "catch_all"
	                                                     : "not_catch_all";
	run->fact_seq++;
	if (retraction) { /* rare: a walk is fine */
		for (size_t i = 0; i < run->job_count; i++) {
			struct job *job = &run->jobs[i];
			if (job->parsed && !job->address.is_null && job->started_seq < run->fact_seq &&
			    strcmp(job->address.normalized, address->normalized) == 0)
				job->retracted = true;
		}
	} else {
		struct job *group = domain_group(run, domain);
		if (group != NULL) {
			group->domain_fact = name;
			group->domain_fact_seq = run->fact_seq;
		}
	}
	if (run->verbose) {
		printf("vemilter-check: %s %s: %s%s%s\n", retraction ? "verdict for" : "fact about",
		       retraction ? address->normalized : domain, name, retraction ? ": " : "",
		       retraction ? fact->reason : "");
		fflush(stdout);
	}
}

/* on_linger_poll - stop the loop once nothing lingers (or time is up) */
static void on_linger_poll(evutil_socket_t fd, short what, void *arg)
{
	struct run *run = arg;
	if (engine_lingering(run->engine) == 0 || clock_mono_ms() >= run->linger_until_ms)
		event_base_loopexit(run->engine->env.base, NULL);
}

/* on_linger_interrupt - SIGINT or SIGTERM while only goodbyes are left */
static void on_linger_interrupt(evutil_socket_t sig, short what, void *arg)
{
	struct run *run = arg;
	event_base_loopexit(run->engine->env.base, NULL);
}

/* linger - run the loop while callouts and probes finish after their
 * verdicts; each of them is bounded by command_timeout, and so is this */
static void linger(struct run *run, const struct conf *conf)
{
	if (engine_lingering(run->engine) == 0)
		return;
	struct event_base *base = run->engine->env.base;
	run->linger_until_ms = clock_mono_ms() + 2 * conf->command_timeout_ms + 1000;
	run->linger_poll = event_new(base, -1, EV_PERSIST, on_linger_poll, run);
	/* Every verdict is in: an interrupt now only cuts the goodbyes short
	 * (the results are printed, what lingers is closed). */
	struct event *sigint = evsignal_new(base, SIGINT, on_linger_interrupt, run);
	struct event *sigterm = evsignal_new(base, SIGTERM, on_linger_interrupt, run);
	struct timeval tick = {0, 20 * 1000};
	if (run->linger_poll != NULL && event_add(run->linger_poll, &tick) == 0) {
		if (sigint != NULL)
			event_add(sigint, NULL);
		if (sigterm != NULL)
			event_add(sigterm, NULL);
		event_base_dispatch(base);
	} /* else engine_free closes what lingers */
	if (sigint != NULL)
		event_free(sigint);
	if (sigterm != NULL)
		event_free(sigterm);
	if (run->linger_poll != NULL)
		event_free(run->linger_poll);
	run->linger_poll = NULL;
}

/* severity - the exit status one result asks for */
static enum exit_code severity(const struct job *job)
{
	if (!job->parsed)
		return EXIT_NEGATIVE;
	if (job->address.is_null)
		return EXIT_ALL_VALID;
	if (job->fact != NULL && strcmp(job->fact, "retracted") == 0)
		return EXIT_TEMPORARY; /* taken back: the answer came from a session out of step */
	switch (job->outcome.kind) {
	case OUTCOME_VALID: /* a yes from a server that says yes to anything means little */
		return job->fact != NULL && strcmp(job->fact, "catch_all") == 0 ? EXIT_UNKNOWN
		                                                                : EXIT_ALL_VALID;
	case OUTCOME_CATCH_ALL:
	case OUTCOME_UNVERIFIABLE:
		return EXIT_UNKNOWN;
	case OUTCOME_TEMPFAIL:
	case OUTCOME_BLOCKED:
		return EXIT_TEMPORARY;
	case OUTCOME_INVALID:
	case OUTCOME_NO_DOMAIN:
		return EXIT_NEGATIVE;
	}
	return EXIT_TEMPORARY;
}

/* print_result - "ADDRESS OUTCOME stage=.. mx=.. addr=.. reply=".." reason=".."
 * [flags=a,b] [fact=catch_all]" */
static void print_result(const struct job *job)
{
	char line[2048];
	size_t len = 0;
	line[0] = '\0';
	if (!job->parsed) {
		kv_add(line, sizeof(line), &len, "reason", job->syntax_error);
		printf("%s bad_syntax %s\n", job->input, line);
		return;
	}
	if (job->address.is_null) {
		printf("%s null_sender reason=\"the null sender is never verified\"\n", job->input);
		return;
	}
	const struct outcome *o = &job->outcome;
	char reply[OUTCOME_TEXT_MAX + 32] = "";
	if (o->code != 0)
		snprintf(reply, sizeof(reply), "%d%s%s %s", o->code, o->ecode[0] ? " " : "", o->ecode,
		         o->text);
	kv_add(line, sizeof(line), &len, "stage", probe_stage_name(o->stage));
	kv_add(line, sizeof(line), &len, "mx", o->mx_host[0] ? o->mx_host : NULL);
	kv_add(line, sizeof(line), &len, "addr", o->mx_addr[0] ? o->mx_addr : NULL);
	kv_add(line, sizeof(line), &len, "reply", reply[0] ? reply : NULL);
	kv_add(line, sizeof(line), &len, "reason", o->reason);
	char flags[120];
	outcome_flags_text(o->flags, flags, sizeof(flags));
	if (flags[0] != '\0') /* both only when there is something to say: older lines stay as they were */
		kv_add(line, sizeof(line), &len, "flags", flags);
	if (job->fact != NULL)
		kv_add(line, sizeof(line), &len, "fact", job->fact);
	printf("%s %s %s\n", job->input, outcome_name(o->kind), line);
}

/* print_conf_error - config errors as file:line: message */
static void print_conf_error(void *arg, const char *message)
{
	fprintf(stderr, "%s\n", message);
}

/* load_conf - -c FILE, else /etc/vemilter.conf, else built-in defaults */
static struct conf *load_conf(const char *path)
{
	if (path == NULL) {
		if (access(CONF_DEFAULT_PATH, F_OK) == 0)
			path = CONF_DEFAULT_PATH;
		else
			return conf_load_text("built-in defaults", "", print_conf_error, NULL);
	}
	return conf_load(path, print_conf_error, NULL);
}

/* start_more - start callouts until -j of them run or none is left */
static void start_more(struct run *run)
{
	while (run->in_flight < run->max_flight && run->next_job < run->job_count && !run->failed) {
		struct job *job = &run->jobs[run->next_job++];
		job->run = run;
		if (!job->parsed || job->address.is_null)
			continue;
		job->started_seq = run->fact_seq;
		if (callout_start(&run->engine->env, &job->address, NULL, run->verbose ? on_trace : NULL, job,
		                  on_done, job) == NULL) {
			fprintf(stderr, "vemilter-check: out of memory\n");
			run->failed = true;
			return;
		}
		run->in_flight++;
	}
}

/* explain_all - --explain: the daemon's answer for each address from its
 * configuration and cache, nothing probed; the exit status as for probes
 * (a sender the daemon would probe counts as unknown) */
static int explain_all(const char *conf_path, int count, char **inputs)
{
	struct conf *conf = load_conf(conf_path);
	if (conf == NULL)
		return EXIT_CONFIG;
	struct cache *cache = NULL;
	/* A Redis cache: its local tier (what this host's milter threads read) */
	const char *path = redis_url_is(conf->cache) ? conf->cache_fallback : conf->cache;
	if (path[0] == '\0') {
		printf("vemilter-check: no cache configured: every sender is probed\n");
	} else if (access(path, F_OK) != 0) {
		printf("vemilter-check: no cache file at %s (yet): every sender is probed\n", path);
	} else {
		char why[300];
		cache = cache_open(path, conf->cache_max_mb, why, sizeof(why));
		if (cache == NULL)
			printf("vemilter-check: cache %s unusable (%s): the daemon probes every sender\n",
			       path, why);
	}
	int status = EXIT_ALL_VALID;
	for (int i = 0; i < count; i++) {
		enum exit_code e = EXIT_ALL_VALID;
		switch (explain_sender(conf, cache, inputs[i], clock_now_ms(), stdout)) {
		case EXPLAIN_ACCEPT:
			break;
		case EXPLAIN_PROBE:
			e = EXIT_UNKNOWN;
			break;
		case EXPLAIN_TEMPFAIL:
			e = EXIT_TEMPORARY;
			break;
		case EXPLAIN_REJECT:
			e = EXIT_NEGATIVE;
			break;
		}
		if ((int)e > status)
			status = e;
	}
	if (cache != NULL)
		cache_close(cache);
	conf_unref(conf);
	return status;
}

int main(int argc, char **argv)
{
	const char *conf_path = NULL;
	struct run run = {0};
	int c;
	run.max_flight = 100;
	bool explain = false;
	static const struct option longopts[] = {{"help", no_argument, NULL, 'h'},
	                                         {"version", no_argument, NULL, 'V'},
	                                         {"explain", no_argument, NULL, 'e'},
	                                         {NULL, 0, NULL, 0}};
	while ((c = getopt_long(argc, argv, "c:vj:eVh", longopts, NULL)) != -1) {
		switch (c) {
		case 'e':
			explain = true;
			break;
		case 'j':
			run.max_flight = strtoul(optarg, NULL, 10);
			if (run.max_flight == 0 || run.max_flight > 100000) {
				fprintf(stderr, "vemilter-check: -j wants a number from 1 to 100000\n");
				return EXIT_USAGE;
			}
			break;
		case 'c':
			conf_path = optarg;
			break;
		case 'v':
			run.verbose = true;
			break;
		case 'V':
			printf("vemilter-check %s\n", PACKAGE_VERSION);
			return EXIT_ALL_VALID;
		case 'h':
			usage(stdout);
			return EXIT_ALL_VALID;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (explain)
		return explain_all(conf_path, argc - optind, argv + optind);
	/* A server closing while we write must not kill us. */
	signal(SIGPIPE, SIG_IGN);
	unsigned long fd_limit = engine_raise_fd_limit();
	if (fd_limit > 64 && run.max_flight > fd_limit - 32)
		run.max_flight = fd_limit - 32; /* one socket a probe, and some to spare */

	struct conf *conf = load_conf(conf_path);
	if (conf == NULL)
		return EXIT_CONFIG;
	char why[300];
	run.engine = engine_new(conf, why, sizeof(why));
	if (run.engine == NULL) {
		fprintf(stderr, "vemilter-check: %s\n", why);
		conf_unref(conf);
		return EXIT_CONFIG;
	}
	if (run.verbose)
		printf("vemilter-check: helo_name %s, probe port %d\n", run.engine->helo_name,
		       conf->probe_port);

	size_t count = (size_t)(argc - optind);
	struct job *jobs = calloc(count, sizeof(*jobs));
	if (jobs == NULL) {
		fprintf(stderr, "vemilter-check: out of memory\n");
		return EXIT_CONFIG;
	}
	for (size_t i = 0; i < count; i++) {
		struct job *job = &jobs[i];
		job->input = argv[optind + (int)i];
		job->parsed = addr_parse(job->input, strlen(job->input), &job->address, job->syntax_error,
		                         sizeof(job->syntax_error));
		job->started_seq = ULONG_MAX; /* not started: no fact is about it */
		/* what a job never started (a callout could not start) says */
		job->outcome.kind = OUTCOME_TEMPFAIL;
		snprintf(job->outcome.reason, sizeof(job->outcome.reason), "not probed: out of memory");
	}

	run.jobs = jobs;
	run.job_count = count;
	if (!group_jobs(&run)) {
		fprintf(stderr, "vemilter-check: out of memory\n");
		return EXIT_CONFIG;
	}
	run.engine->env.on_fact = on_fact;
	run.engine->env.fact_arg = &run;
	int status = EXIT_ALL_VALID;
	run.started_ms = clock_mono_ms();
	start_more(&run);
	if (run.in_flight > 0)
		event_base_dispatch(run.engine->env.base);
	linger(&run, conf);
	if (run.failed)
		status = EXIT_CONFIG;
	settle_facts(&run);
	for (size_t i = 0; i < count; i++) {
		print_result(&jobs[i]);
		enum exit_code e = severity(&jobs[i]);
		if ((int)e > status)
			status = e;
	}
	engine_free(run.engine); /* before the jobs: lingering work may still trace to them */
	free(jobs);
	free(run.by_domain);
	conf_unref(conf);
	return status;
}
