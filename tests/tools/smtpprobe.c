/*
 * smtpprobe.c - run one SMTP probe (src/smtp.c) and print what it reported.
 *
 * Test driver for tests/integration/test_smtp.py and for poking at a server
 * by hand:
 *
 *   smtpprobe [-v] [--helo NAME] [--from ADDR] [--fallback ADDR] [--catchall ADDR]
 *             [--early] [--catchall-wait-ms N] [--abandon] [--server NAME] [--tls]
 *             [--utf8] [--connect-ms N] [--banner-ms N] [--command-ms N]
 *             [--more RCPT ...] [--max-errors N] [--pipelining] IP PORT RCPT
 *
 * prints, once the probe has ended (QUIT answered or given up), one line
 *
 *   end=done stage=rcpt code=250 ecode=2.1.5 text="Ok" catchall_code=0 tls=0
 *   pending=0 late=none fallback=0 fallback_retry=0 report_ms=12 end_ms=14 error=""
 *   sync=proved sync_why=""
 *
 * (one line; wrapped here) preceded, with -v, by the transcript, in which
 * "* reported" and "* late catch-all answer" mark when the result and a late
 * catch-all answer were handed over. report_ms is when the result came,
 * end_ms when the probe was gone (both from the start); late is the code of
 * a catch-all answer handed over after the result, "none" when it was due
 * and none came, "-" when none was due; sync is what the session proved
 * after the result (smtp_sync_fn: proved, broken, unknown; "-": no report,
 * as with --abandon), sync_why how it broke. --abandon stops at the result and
 * closes whatever still lingers (as an engine that stops does). Owns its
 * event_base, the linger
 * list the probe finishes on and, with --tls, its SSL_CTX (no certificate
 * verification, as the daemon's opportunistic TLS). Exit 0 whatever the
 * probe found; 2 on a usage error.
 *
 * Session mode (smtp.h, what pool.c drives): each --more RCPT is asked
 * after the one before in the same session (no random-address RCPT after
 * a 5xx, as for a session's later addresses), --max-errors its
 * max_rcpt_errors. Each address's result is printed when it comes, as
 * "job RCPT end=... (the fields above; sync=- there)", and the session's
 * sync report last, as "session sync=... sync_why=\"...\"".
 *
 * --pipelining: params.pipelining (smtp.h): the last address's RCPT, the
 * random RCPT and QUIT as one group when the server offers PIPELINING.
 */
#include <arpa/inet.h>
#include <event2/event.h>
#include <getopt.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "linger.h"
#include "smtp.h"

static const char *const end_names[] = {
        [SMTP_END_DONE] = "done",
        [SMTP_END_REPLY] = "reply",
        [SMTP_END_CONNECT_FAILED] = "connect_failed",
        [SMTP_END_TIMEOUT] = "timeout",
        [SMTP_END_CLOSED] = "closed",
        [SMTP_END_PROTOCOL] = "protocol",
        [SMTP_END_TLS_FAILED] = "tls_failed",
        [SMTP_END_NO_SMTPUTF8] = "no_smtputf8",
        [SMTP_END_LOOP] = "loop",
        [SMTP_END_NO_RESOURCES] = "no_resources",
};

struct run {
	bool verbose;
	bool finished;
	struct smtp_result result;
	int64_t started_ms;
	int64_t report_ms; /* when done ran, from started_ms */
	bool late_ran;
	int late_code;    /* 0: late ran without a reply */
	const char *sync; /* the sync report: "proved", "broken", "unknown"; "-": none came */
	char sync_why[160];
	bool abandon; /* --abandon: stop the loop as soon as the result is in */
	struct event_base *base;
	const char *rcpts[64]; /* session mode: the operand RCPT, then each --more */
	size_t rcpt_count, asked;
};

static void print_result(const struct run *run, int64_t end_ms);

/* on_next - session mode: the next --more address, or none (QUIT) */
static enum smtp_next on_next(void *arg, struct smtp_job *job)
{
	struct run *run = arg;

	if (run->asked >= run->rcpt_count)
		return SMTP_NEXT_NONE;
	job->rcpt = run->rcpts[run->asked++];
	job->skip_catchall_after_5xx = true;
	return SMTP_NEXT_JOB;
}

/* on_last - session mode: is the address about to be asked the last? */
static bool on_last(void *arg)
{
	struct run *run = arg;

	return run->asked >= run->rcpt_count;
}

/* usage - print the synopsis and exit 2 */
static void usage(void)
{
	fprintf(stderr,
	        "usage: smtpprobe [-v] [--helo NAME] [--from ADDR] [--fallback ADDR] [--catchall ADDR]\n"
	        "                 [--early] [--catchall-wait-ms N] [--abandon] [--server NAME] [--tls] "
	        "[--utf8]\n"
	        "                 [--connect-ms N] [--banner-ms N] [--command-ms N] IP PORT RCPT\n");
	exit(2);
}

/* print_quoted - key="value" with " and \ escaped */
static void print_quoted(const char *key, const char *value)
{
	printf(" %s=\"", key);
	for (const char *c = value; *c != '\0'; c++) {
		if (*c == '"' || *c == '\\')
			putchar('\\');
		putchar(*c);
	}
	putchar('"');
}

/* on_trace - transcript line, printed with -v */
static void on_trace(void *arg, const char *line)
{
	struct run *run = arg;

	if (run->verbose)
		printf("%s\n", line);
}

/* on_done - keep the result and when it came */
static void on_done(void *arg, const struct smtp_result *result)
{
	struct run *run = arg;

	run->result = *result;
	run->finished = true;
	run->report_ms = clock_mono_ms() - run->started_ms;
	if (run->rcpt_count > 1) { /* session mode: each address's line as it comes */
		printf("job %s ", run->rcpts[run->asked - 1]);
		print_result(run, run->report_ms);
	}
	if (run->verbose)
		printf("* reported after %lld ms\n", (long long)run->report_ms);
	if (run->abandon)
		event_base_loopbreak(run->base);
}

/* on_late - the catch-all answer after the result */
static void on_late(void *arg, const struct smtp_reply *reply)
{
	struct run *run = arg;

	run->late_ran = true;
	run->late_code = reply != NULL ? reply->code : 0;
	if (run->verbose)
		printf("* late catch-all answer: %d\n", run->late_code);
}

/* on_sync - whether the session proved to be in step, once it is over */
static void on_sync(void *arg, struct smtp_probe *probe, const struct smtp_sync_report *report)
{
	struct run *run = arg;
	static const char *const names[] = {[SMTP_SYNC_UNKNOWN] = "unknown",
	                                    [SMTP_SYNC_PROVED] = "proved",
	                                    [SMTP_SYNC_BROKEN] = "broken"};
	run->sync = names[report->sync];
	snprintf(run->sync_why, sizeof(run->sync_why), "%s", report->why);
	if (run->verbose)
		printf("* sync %s%s%s\n", run->sync, report->why[0] ? ": " : "", report->why);
}

/* print_result - the one result line */
static void print_result(const struct run *run, int64_t end_ms)
{
	const struct smtp_result *r = &run->result;
	const char *end =
	        (unsigned)r->end < sizeof(end_names) / sizeof(end_names[0]) ? end_names[r->end] : "?";
	const char *stage = probe_stage_name(r->stage);

	printf("end=%s stage=%s code=%d ecode=%s", end, stage, r->reply.code, r->reply.ecode);
	print_quoted("text", r->reply.text);
	printf(" catchall_code=%d tls=%d", r->catchall_asked ? r->catchall_reply.code : 0,
	       r->tls_active ? 1 : 0);
	printf(" pending=%d", r->catchall_pending ? 1 : 0);
	if (!r->catchall_pending)
		printf(" late=-");
	else if (run->late_ran && run->late_code != 0)
		printf(" late=%d", run->late_code);
	else
		printf(" late=none");
	printf(" fallback=%d fallback_retry=%d report_ms=%lld end_ms=%lld", r->fallback_used ? 1 : 0,
	       r->fallback_retry ? 1 : 0, (long long)run->report_ms, (long long)end_ms);
	print_quoted("error", r->error);
	printf(" sync=%s", run->sync);
	print_quoted("sync_why", run->sync_why);
	putchar('\n');
}

/* parse_addr - IP and PORT into a sockaddr; false if malformed */
static bool parse_addr(const char *ip, const char *port, struct sockaddr_storage *ss)
{
	char *end;
	long n = strtol(port, &end, 10);

	if (*port == '\0' || *end != '\0' || n < 1 || n > 65535)
		return false;
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, ip, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)n);
		return true;
	}
	if (inet_pton(AF_INET6, ip, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)n);
		return true;
	}
	return false;
}

/* parse_ms - a timeout option */
static int64_t parse_ms(const char *s)
{
	char *end;
	long long n = strtoll(s, &end, 10);

	if (*s == '\0' || *end != '\0' || n < 1 || n > 3600 * 1000)
		usage();
	return n;
}

/* parse_options - fill params and run from argv; returns the first operand index */
static int parse_options(int argc, char **argv, struct smtp_params *params, struct run *run)
{
	static const struct option longopts[] = {
	        {"helo", required_argument, NULL, 'h'},
	        {"from", required_argument, NULL, 'f'},
	        {"fallback", required_argument, NULL, 'F'},
	        {"early", no_argument, NULL, 'e'},
	        {"abandon", no_argument, NULL, 'a'},
	        {"catchall-wait-ms", required_argument, NULL, 4},
	        {"catchall", required_argument, NULL, 'c'},
	        {"server", required_argument, NULL, 's'},
	        {"tls", no_argument, NULL, 't'},
	        {"utf8", no_argument, NULL, 'u'},
	        {"connect-ms", required_argument, NULL, 1},
	        {"banner-ms", required_argument, NULL, 2},
	        {"command-ms", required_argument, NULL, 3},
	        {"more", required_argument, NULL, 5},
	        {"max-errors", required_argument, NULL, 6},
	        {"pipelining", no_argument, NULL, 7},
	        {NULL, 0, NULL, 0},
	};
	int c;

	while ((c = getopt_long(argc, argv, "v", longopts, NULL)) != -1) {
		switch (c) {
		case 'v':
			run->verbose = true;
			break;
		case 'h':
			params->helo_name = optarg;
			break;
		case 'f':
			params->mail_from = optarg;
			break;
		case 'F':
			params->fallback_from = optarg;
			break;
		case 'e':
			params->report_at_rcpt = true;
			break;
		case 'a':
			run->abandon = true;
			break;
		case 4:
			params->catchall_wait_ms = parse_ms(optarg);
			break;
		case 'c':
			params->catchall_rcpt = optarg;
			break;
		case 's':
			params->server_name = optarg;
			break;
		case 't':
			params->try_tls = true;
			break;
		case 'u':
			params->needs_smtputf8 = true;
			break;
		case 1:
			params->connect_timeout_ms = parse_ms(optarg);
			break;
		case 2:
			params->banner_timeout_ms = parse_ms(optarg);
			break;
		case 3:
			params->command_timeout_ms = parse_ms(optarg);
			break;
		case 5:
			if (run->rcpt_count + 1 >= sizeof(run->rcpts) / sizeof(run->rcpts[0]))
				usage();
			run->rcpts[++run->rcpt_count] = optarg; /* [0] is the operand */
			break;
		case 6:
			params->max_rcpt_errors = (int)parse_ms(optarg);
			break;
		case 7:
			params->pipelining = true;
			break;
		default:
			usage();
		}
	}
	if (argc - optind != 3)
		usage();
	return optind;
}

int main(int argc, char **argv)
{
	struct smtp_params params = {
	        .helo_name = "smtpprobe.test",
	        .mail_from = "",
	        .server_name = "",
	        .connect_timeout_ms = 5000,
	        .banner_timeout_ms = 10000,
	        .command_timeout_ms = 10000,
	};
	struct run run = {.sync = "-"};
	struct linger_list linger = {0};
	struct sockaddr_storage ss;

	int i = parse_options(argc, argv, &params, &run);
	if (!parse_addr(argv[i], argv[i + 1], &ss))
		usage();
	params.rcpt = argv[i + 2];
	run.rcpts[0] = params.rcpt;
	run.rcpt_count++;
	run.asked = 1;
	if (run.rcpt_count > 1) {
		params.next = on_next;
		params.last = on_last;
		params.linger = &linger; /* a session needs one */
	}

	struct event_base *base = event_base_new();
	SSL_CTX *ctx = NULL;
	if (base == NULL) {
		fprintf(stderr, "smtpprobe: cannot create an event base\n");
		return 1;
	}
	if (params.try_tls) {
		ctx = SSL_CTX_new(TLS_client_method());
		if (ctx == NULL) {
			fprintf(stderr, "smtpprobe: cannot create an SSL_CTX\n");
			return 1;
		}
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
		params.ssl_ctx = ctx;
	}
	params.linger = &linger;
	run.base = base;
	run.started_ms = clock_mono_ms();
	struct smtp_probe *probe = smtp_probe_start(base, (struct sockaddr *)&ss, &params, on_trace, &run,
	                                            on_done, on_late, on_sync, &run);
	if (probe == NULL) {
		fprintf(stderr, "smtpprobe: cannot start the probe\n");
		return 1;
	}
	/* The loop runs until the probe is gone: the result, a late catch-all
	 * answer, then QUIT on the linger until answered or timed out. With
	 * --abandon it stops at the result, and what is left is closed below,
	 * as a daemon's engine does when it stops. */
	event_base_dispatch(base);
	int64_t end_ms = clock_mono_ms() - run.started_ms;
	if (run.rcpt_count > 1) {
		printf("session sync=%s", run.sync);
		print_quoted("sync_why", run.sync_why);
		putchar('\n');
	} else if (run.finished)
		print_result(&run, end_ms);
	else
		printf("end=none error=\"the probe never reported\"\n");
	fflush(stdout);
	if (run.finished && run.result.catchall_pending && !run.late_ran)
		smtp_probe_cancel(probe); /* still ours: the late answer was due */
	if (run.verbose)
		printf("* closing %zu lingering\n", linger.count);
	linger_close_all(&linger);
	event_base_free(base);
	SSL_CTX_free(ctx);
	libevent_global_shutdown();
	return 0;
}
