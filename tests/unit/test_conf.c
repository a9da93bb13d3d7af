/*
 * test_conf.c - vemilter.conf parsing: defaults, good files, every kind of bad
 * line with its file:line message, list files, durations, integers,
 * reference counting, and the shipped sample and man page naming every
 * directive.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "conf.h"
#include "unit.h"

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Collected error messages of one load. */
struct errs {
	int n;
	char msg[16][1200];
};

static char tmpdir[256]; /* made by the unchecked fixture, in the parent */

/* collect - conf_error_fn that keeps the messages */
static void collect(void *arg, const char *message)
{
	struct errs *e = arg;
	if (e->n < N(e->msg))
		snprintf(e->msg[e->n], sizeof(e->msg[0]), "%s", message);
	e->n++;
}

/* load - conf_load_text named "t.conf", errors into e */
static struct conf *load(const char *text, struct errs *e)
{
	memset(e, 0, sizeof(*e));
	return conf_load_text("t.conf", text, collect, e);
}

/* tmp_path - a path inside the test directory */
static const char *tmp_path(const char *name, char *buf, size_t size)
{
	snprintf(buf, size, "%s/%s", tmpdir, name);
	return buf;
}

/* write_file - create name in the test directory with text; returns its path */
static const char *write_file(const char *name, const char *text, char *buf, size_t size)
{
	FILE *f = fopen(tmp_path(name, buf, size), "w");
	ck_assert_msg(f != NULL, "%s: %s", buf, strerror(errno));
	ck_assert_int_eq(fputs(text, f) >= 0, 1);
	ck_assert_int_eq(fclose(f), 0);
	return buf;
}

/* make_tmpdir - unchecked fixture: a fresh directory for list files */
static void make_tmpdir(void)
{
	const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(tmpdir, sizeof(tmpdir), "%s/test_conf.XXXXXX", base);
	if (mkdtemp(tmpdir) == NULL) {
		perror(tmpdir);
		exit(EXIT_FAILURE);
	}
}

/* remove_tmpdir - unchecked fixture: delete the directory and its files */
static void remove_tmpdir(void)
{
	DIR *d = opendir(tmpdir);
	char path[512];

	for (struct dirent *de; d != NULL && (de = readdir(d)) != NULL;)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			unlink(tmp_path(de->d_name, path, sizeof(path)));
	if (d != NULL)
		closedir(d);
	rmdir(tmpdir);
}

/* sa - an AF_INET or AF_INET6 sockaddr for a literal */
static const struct sockaddr *sa(const char *text, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, text, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
	} else {
		ck_assert_int_eq(inet_pton(AF_INET6, text, &sin6->sin6_addr), 1);
		sin6->sin6_family = AF_INET6;
	}
	return (const struct sockaddr *)ss;
}

START_TEST(defaults)
{
	struct errs e;
	struct sockaddr_storage ss;
	struct conf *c;

	memset(&e, 0, sizeof(e));
	c = conf_load_text("defaults", "", collect, &e);
	ck_assert_msg(c != NULL, "%s", e.msg[0]);
	ck_assert_int_eq(e.n, 0);
	ck_assert_str_eq(c->path, "defaults");
	ck_assert_str_eq(c->socket, "unix:/run/vemilter/vemilter.sock");
	ck_assert_uint_eq(c->socket_mode, 0660);
	ck_assert_str_eq(c->socket_group, "");
	ck_assert_str_eq(c->user, "vemilter");
	ck_assert_str_eq(c->pid_file, "/run/vemilter/vemilter.pid");
	ck_assert_int_eq(c->syslog_facility, LOG_MAIL);
	ck_assert_int_eq(c->log_level, LOG_INFO);
	ck_assert_uint_eq(c->trusted_networks.count, 2);
	ck_assert(cidr_list_contains(&c->trusted_networks, sa("127.0.0.1", &ss)));
	ck_assert(cidr_list_contains(&c->trusted_networks, sa("::ffff:127.1.2.3", &ss)));
	ck_assert(cidr_list_contains(&c->trusted_networks, sa("::1", &ss)));
	ck_assert(!cidr_list_contains(&c->trusted_networks, sa("192.0.2.1", &ss)));
	ck_assert(c->skip_authenticated);
	ck_assert_uint_eq(c->allow_sender_domains.count, 0);
	ck_assert_uint_eq(c->allow_senders.count, 0);
	ck_assert_uint_eq(c->exempt_recipients.count, 2);
	ck_assert_str_eq(c->exempt_recipients.items[0], "postmaster");
	ck_assert_str_eq(c->exempt_recipients.items[1], "abuse");
	ck_assert_str_eq(c->bad_syntax_reply.code, "553");
	ck_assert_str_eq(c->bad_syntax_reply.ecode, "5.1.7");
	ck_assert_str_eq(c->bad_syntax_reply.text, "Sender address rejected: %r");
	conf_unref(c);
}
END_TEST

START_TEST(policy_defaults)
{
	struct errs e;
	struct conf *c = load("", &e);

	ck_assert_msg(c != NULL, "%s", e.msg[0]);
	ck_assert_int_eq(c->outcome_action[OUTCOME_VALID], CONF_ACCEPT);
	ck_assert_int_eq(c->outcome_action[OUTCOME_INVALID], CONF_REJECT);
	ck_assert_int_eq(c->outcome_action[OUTCOME_NO_DOMAIN], CONF_REJECT);
	ck_assert_int_eq(c->outcome_action[OUTCOME_CATCH_ALL], CONF_ACCEPT);
	/* a remote temporary failure defers (Postfix's defer_if_permit), for
	 * at most defer_limit; a failure on our side (blocked) accepts */
	ck_assert_int_eq(c->outcome_action[OUTCOME_TEMPFAIL], CONF_TEMPFAIL);
	ck_assert_int_eq(c->outcome_action[OUTCOME_BLOCKED], CONF_ACCEPT);
	ck_assert_int_eq(c->outcome_action[OUTCOME_UNVERIFIABLE], CONF_ACCEPT);
	ck_assert_int_eq(c->budget_action, CONF_TEMPFAIL);
	ck_assert_int_eq(c->defer_limit_ms, 2 * 3600 * 1000);
	ck_assert_str_eq(c->invalid_reply.code, "550");
	ck_assert_str_eq(c->invalid_reply.ecode, "5.1.0");
	ck_assert_str_eq(c->no_domain_reply.ecode, "5.1.8");
	ck_assert_str_eq(c->reject_reply.ecode, "5.7.1");
	ck_assert_str_eq(c->tempfail_reply.code, "451");
	ck_assert_str_eq(c->budget_reply.code, "451");
	ck_assert_str_eq(c->blocklist_reply.code, "550");
	ck_assert_uint_eq(c->domain_overrides.count, 0);
	ck_assert_uint_eq(c->sender_domain_blocklist.count, 0);
	ck_assert(!c->dry_run);
	ck_assert_str_eq(c->result_header, "");
	conf_unref(c);
}
END_TEST

START_TEST(policy_values)
{
	struct errs e;
	struct conf *c = load("valid_action = Tempfail\n"
	                      "invalid_action = accept\n"
	                      "catch_all_action = REJECT\n"
	                      "tempfail_action = tempfail\n"
	                      "blocked_action = tempfail\n"
	                      "unverifiable_action = reject\n"
	                      "budget_action = accept\n"
	                      "invalid_reply = 554 5.7.1 <%a>: %m\n"
	                      "tempfail_reply = 450 4.1.0 later (%o)\n"
	                      "domain_overrides = a.example skip, B.Example. verify,"
	                      " c.example catch_all=reject valid=Tempfail  INVALID=accept\n"
	                      "sender_domain_blocklist = Mailinator.COM, bücher.example\n"
	                      "dry_run = yes\n"
	                      "result_header = X-Sender-Verification\n",
	                      &e);

	ck_assert_msg(c != NULL, "%s", e.msg[0]);
	ck_assert_int_eq(c->outcome_action[OUTCOME_VALID], CONF_TEMPFAIL);
	ck_assert_int_eq(c->outcome_action[OUTCOME_INVALID], CONF_ACCEPT);
	ck_assert_int_eq(c->outcome_action[OUTCOME_NO_DOMAIN], CONF_REJECT);
	ck_assert_int_eq(c->outcome_action[OUTCOME_CATCH_ALL], CONF_REJECT);
	ck_assert_int_eq(c->outcome_action[OUTCOME_TEMPFAIL], CONF_TEMPFAIL);
	ck_assert_int_eq(c->outcome_action[OUTCOME_BLOCKED], CONF_TEMPFAIL);
	ck_assert_int_eq(c->outcome_action[OUTCOME_UNVERIFIABLE], CONF_REJECT);
	ck_assert_int_eq(c->budget_action, CONF_ACCEPT);
	ck_assert_str_eq(c->invalid_reply.code, "554");
	ck_assert_str_eq(c->invalid_reply.text, "<%a>: %m");
	ck_assert_str_eq(c->tempfail_reply.ecode, "4.1.0");
	ck_assert_uint_eq(c->domain_overrides.count, 3);
	const struct conf_override *o = c->domain_overrides.items;
	ck_assert_str_eq(o[0].domain, "a.example");
	ck_assert(o[0].skip);
	ck_assert_str_eq(o[1].domain, "b.example");
	ck_assert(!o[1].skip);
	ck_assert_str_eq(o[2].domain, "c.example");
	ck_assert(!o[2].skip);
	for (int k = 0; k < OUTCOME_KIND_COUNT; k++) {
		ck_assert(!o[0].has_action[k] && !o[1].has_action[k]);
		ck_assert(o[2].has_action[k] ==
		          (k == OUTCOME_CATCH_ALL || k == OUTCOME_VALID || k == OUTCOME_INVALID));
	}
	ck_assert_int_eq(o[2].action[OUTCOME_CATCH_ALL], CONF_REJECT);
	ck_assert_int_eq(o[2].action[OUTCOME_VALID], CONF_TEMPFAIL);
	ck_assert_int_eq(o[2].action[OUTCOME_INVALID], CONF_ACCEPT);
	ck_assert_uint_eq(c->sender_domain_blocklist.count, 2);
	ck_assert_str_eq(c->sender_domain_blocklist.items[0], "mailinator.com");
	ck_assert_str_eq(c->sender_domain_blocklist.items[1], "xn--bcher-kva.example");
	ck_assert(c->dry_run);
	ck_assert_str_eq(c->result_header, "X-Sender-Verification");
	conf_unref(c);
}
END_TEST

/* The directives of the verdict issue: defer_limit, greylist_retry,
 * probe_sender_fallback, tagged_senders. */
START_TEST(verdict_directives)
{
	struct errs e;
	struct conf *c = load("", &e);

	ck_assert_msg(c != NULL, "%s", e.msg[0]);
	ck_assert_int_eq(c->defer_limit_ms, INT64_C(7200000));
	ck_assert_int_eq(c->greylist_retry_ms, 300000);
	ck_assert_str_eq(c->probe_sender_fallback, "");
	ck_assert_uint_eq(c->tagged_senders.count, 3);
	ck_assert(conf_strings_contains(&c->tagged_senders, "batv"));
	ck_assert(conf_strings_contains(&c->tagged_senders, "srs"));
	ck_assert(conf_strings_contains(&c->tagged_senders, "verp"));
	conf_unref(c);

	c = load("defer_limit = 0\n"
	         "greylist_retry = 90s\n"
	         "probe_sender_fallback = verify-probe@mx.example.org\n"
	         "tagged_senders = SRS, batv srs\n",
	         &e);
	ck_assert_msg(c != NULL, "%s", e.msg[0]);
	ck_assert_int_eq(c->defer_limit_ms, 0);
	ck_assert_int_eq(c->greylist_retry_ms, 90000);
	ck_assert_str_eq(c->probe_sender_fallback, "verify-probe@mx.example.org");
	ck_assert_uint_eq(c->tagged_senders.count, 2); /* once each, lower case */
	ck_assert_str_eq(c->tagged_senders.items[0], "srs");
	ck_assert_str_eq(c->tagged_senders.items[1], "batv");
	conf_unref(c);

	c = load("defer_limit = 30d\ngreylist_retry = 1h\ntagged_senders =\n", &e);
	ck_assert_msg(c != NULL, "%s", e.msg[0]);
	ck_assert_int_eq(c->defer_limit_ms, INT64_C(2592000000));
	ck_assert_int_eq(c->greylist_retry_ms, 3600000);
	ck_assert_uint_eq(c->tagged_senders.count, 0);
	conf_unref(c);
}
END_TEST

static const char good_text[] = "# a full configuration\n"
                                "\n"
                                "socket = inet:8891@127.0.0.1\n"
                                "   socket_mode=0600   \n"
                                "socket_group\t=\tpostfix\r\n"
                                "user =\n"
                                "pid_file = \n"
                                "    # an indented comment\n"
                                "syslog_facility = local3\n"
                                "log_level = DEBUG\n"
                                "trusted_networks = 10.0.0.0/8,192.0.2.1 , 2001:db8::/32,\n"
                                "skip_authenticated = off\n"
                                "allow_sender_domains = Example.COM, bücher.example., xn--caf-dma.example\n"
                                "allow_senders = <Bob@Example.COM>, alice@example.net\n"
                                "exempt_recipients = PostMaster, Hostmaster@Example.ORG\n"
                                "bad_syntax_reply = 550 5.1.7 #1 <%a> rejected: %r (100%%)\n";

START_TEST(good_file)
{
	struct errs e;
	struct sockaddr_storage ss;
	struct conf *c = load(good_text, &e);

	ck_assert_msg(c != NULL, "%d errors, first: %s", e.n, e.msg[0]);
	ck_assert_str_eq(c->socket, "inet:8891@127.0.0.1");
	ck_assert_uint_eq(c->socket_mode, 0600);
	ck_assert_str_eq(c->socket_group, "postfix");
	ck_assert_str_eq(c->user, "");
	ck_assert_str_eq(c->pid_file, "");
	ck_assert_int_eq(c->syslog_facility, LOG_LOCAL3);
	ck_assert_int_eq(c->log_level, LOG_DEBUG);
	ck_assert_uint_eq(c->trusted_networks.count, 3);
	ck_assert(cidr_list_contains(&c->trusted_networks, sa("10.9.8.7", &ss)));
	ck_assert(cidr_list_contains(&c->trusted_networks, sa("::ffff:192.0.2.1", &ss)));
	ck_assert(!cidr_list_contains(&c->trusted_networks, sa("192.0.2.2", &ss)));
	ck_assert(!cidr_list_contains(&c->trusted_networks, sa("127.0.0.1", &ss)));
	ck_assert(!c->skip_authenticated);
	ck_assert_uint_eq(c->allow_sender_domains.count, 3);
	ck_assert_str_eq(c->allow_sender_domains.items[0], "example.com");
	ck_assert_str_eq(c->allow_sender_domains.items[1], "xn--bcher-kva.example");
	ck_assert_str_eq(c->allow_sender_domains.items[2], "xn--caf-dma.example");
	ck_assert_uint_eq(c->allow_senders.count, 2);
	ck_assert(conf_strings_contains(&c->allow_senders, "bob@example.com"));
	ck_assert(conf_strings_contains(&c->allow_senders, "ALICE@example.net"));
	ck_assert(!conf_strings_contains(&c->allow_senders, "<bob@example.com>"));
	ck_assert_uint_eq(c->exempt_recipients.count, 2);
	ck_assert_str_eq(c->exempt_recipients.items[0], "postmaster");
	ck_assert_str_eq(c->exempt_recipients.items[1], "hostmaster@example.org");
	ck_assert_str_eq(c->bad_syntax_reply.code, "550");
	ck_assert_str_eq(c->bad_syntax_reply.text, "#1 <%a> rejected: %r (100%%)"); /* "#" kept */
	conf_unref(c);
}
END_TEST

START_TEST(good_values)
{
	static const char *const ok[] = {
	        "socket = unix:/var/spool/postfix/vemilter/sock",
	        "socket = local:/run/v.sock",
	        "socket = inet:1",
	        "socket = inet:65535@localhost",
	        "socket = inet6:8891@[::1]",
	        "probe_source_address = 192.0.2.25",
	        "probe_source_address = 2001:db8::25",
	        "probe_source_address =",
	        "socket_mode = 0",
	        "socket_mode = 777",
	        "socket_mode = 0777",
	        "skip_authenticated = YES",
	        "skip_authenticated = 0",
	        "skip_authenticated = True",
	        "syslog_facility = daemon",
	        "syslog_facility = local7",
	        "log_level = error",
	        "trusted_networks =",
	        "trusted_networks = 0.0.0.0/0, ::/0",
	        "exempt_recipients =",
	        "exempt_recipients = , ,",
	        "allow_sender_domains = a.example",
	        "bad_syntax_reply = 451 4.7.1 Try later",
	        "blocked_action = tempfail",
	        "budget_action = ACCEPT",
	        "tempfail_action = tempfail",
	        "unverifiable_action = reject",
	        "reject_reply = 554 5.7.1 %o: %r %%",
	        "budget_reply = 421 4.3.2 busy",
	        "domain_overrides =",
	        "domain_overrides = example.com\tverify",
	        "domain_overrides = example.com tempfail=tempfail blocked=tempfail",
	        "sender_domain_blocklist = example.com.",
	        "result_header = X-Vemilter!#$%&'*+-.^_`{|}~0",
	        "result_header =",
	};
	struct errs e;

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct conf *c = load(ok[i], &e);
		ck_assert_msg(c != NULL && e.n == 0, "\"%s\": %s", ok[i], e.msg[0]);
		conf_unref(c);
	}
}
END_TEST

/* One bad config text and the single message it must produce. */
static const struct {
	const char *text;
	const char *want; /* exact message, or prefix when it ends in "..." */
} bad[] = {
        /* line structure */
        {"sokcet = unix:/x", "t.conf:1: unknown directive \"sokcet\" (did you mean \"socket\"?)"},
        {"\n\nlog-level = info", "t.conf:3: unknown directive \"log-level\" (did you mean \"log_level\"?)"},
        {"frobnicate = 1", "t.conf:1: unknown directive \"frobnicate\""},
        {"Socket_Mode = 0600", "t.conf:1: unknown directive \"Socket_Mode\" (did you mean \"socket_mode\"?)"},
        {"socket unix:/x", "t.conf:1: missing \"=\" in \"socket unix:/x\" (expected \"name = value\")"},
        {"# ok\n = 5", "t.conf:2: missing directive name before \"=\""},
        {"socket_mode = 0600\n\nsocket_mode = 0640",
         "t.conf:3: duplicate directive \"socket_mode\", first set on line 1"},
        {"user = a\bb", "t.conf:1: control character 0x08 in line"},
        {"probe_source_address = mx.example",
         "t.conf:1: probe_source_address: \"mx.example\" is not a numeric IPv4 or IPv6 address ..."},
        {"probe_source_address = 192.0.2.25:25",
         "t.conf:1: probe_source_address: \"192.0.2.25:25\" is not a numeric IPv4 or IPv6 address ..."},
        /* booleans, enums, modes */
        {"skip_authenticated = maybe",
         "t.conf:1: skip_authenticated: \"maybe\" is not a boolean (yes, no, true, false, on, off, 1, 0)"},
        {"skip_authenticated =", "t.conf:1: skip_authenticated: \"\" is not a boolean..."},
        {"log_level = loud",
         "t.conf:1: log_level: \"loud\" is not one of error, warning, notice, info, debug"},
        {"syslog_facility = local8",
         "t.conf:1: syslog_facility: \"local8\" is not one of mail, daemon, user, local0, ..., local7"},
        {"socket_mode = 01777", "t.conf:1: socket_mode: 01777 is out of range 0000..0777"},
        {"socket_mode = 77777777777777777777777",
         "t.conf:1: socket_mode: 77777777777777777777777 is out of range..."},
        {"socket_mode = 0689", "t.conf:1: socket_mode: \"0689\" is not an octal mode such as 0660"},
        {"socket_mode = rw-rw----", "t.conf:1: socket_mode: \"rw-rw----\" is not an octal mode such as 0660"},
        {"socket_mode =", "t.conf:1: socket_mode: \"\" is not an octal mode such as 0660"},
        /* strings with a shape */
        {"socket = tcp:8891",
         "t.conf:1: socket: \"tcp:8891\" is not unix:/path, local:/path, inet:PORT@HOST or..."},
        {"socket = /run/v.sock", "t.conf:1: socket: \"/run/v.sock\" is not unix:/path..."},
        {"socket =", "t.conf:1: socket: \"\" is not unix:/path..."},
        {"socket = unix:", "t.conf:1: socket: \"unix:\" needs an absolute socket path..."},
        {"socket = local:run/v.sock",
         "t.conf:1: socket: \"local:run/v.sock\" needs an absolute socket path..."},
        {"socket = inet:0@127.0.0.1", "t.conf:1: socket: \"inet:0@127.0.0.1\" needs a port 1..65535..."},
        {"socket = inet:65536", "t.conf:1: socket: \"inet:65536\" needs a port 1..65535..."},
        {"socket = inet6:@::1", "t.conf:1: socket: \"inet6:@::1\" needs a port 1..65535..."},
        {"socket = inet:smtp@localhost",
         "t.conf:1: socket: \"inet:smtp@localhost\" needs a port 1..65535..."},
        {"socket = inet:8891@", "t.conf:1: socket: \"inet:8891@\" has an empty host after \"@\""},
        {"user = mail man", "t.conf:1: user: \"mail man\" is not a valid user or group name"},
        {"socket_group = a:b", "t.conf:1: socket_group: \"a:b\" is not a valid user or group name"},
        {"pid_file = run/v.pid", "t.conf:1: pid_file: \"run/v.pid\" is not an absolute path"},
        /* CIDR lists */
        {"trusted_networks = 127.0.0.1/8",
         "t.conf:1: trusted_networks: 127.0.0.1/8 has host bits set; did you mean 127.0.0.0/8?"},
        {"trusted_networks = 10.0.0.0/8, localhost",
         "t.conf:1: trusted_networks: \"localhost\" is not an IPv4 or IPv6 address"},
        {"trusted_networks = ::1/129",
         "t.conf:1: trusted_networks: \"::1/129\" has a bad prefix length (want 0..128)"},
        /* address and domain lists */
        {"allow_sender_domains = exa mple.com",
         "t.conf:1: allow_sender_domains: \"exa mple.com\" is not a valid domain name"},
        {"allow_sender_domains = *.example.com", "t.conf:1: allow_sender_domains: \"*.example.com\" is not a "
                                                 "valid domain name (write example.com: it "
                                                 "covers the subdomains)"},
        {"allow_sender_domains = .example.com",
         "t.conf:1: allow_sender_domains: \".example.com\" is not a valid..."},
        {"allow_sender_domains = -bad.example",
         "t.conf:1: allow_sender_domains: \"-bad.example\" is not a valid..."},
        {"allow_sender_domains = under_score.example",
         "t.conf:1: allow_sender_domains: \"under_score.example\"..."},
        {"allow_sender_domains = a..example",
         "t.conf:1: allow_sender_domains: \"a..example\" is not a valid..."},
        {"allow_senders = not an address",
         "t.conf:1: allow_senders: \"not an address\" is not a valid address: ..."},
        {"allow_senders = bob@", "t.conf:1: allow_senders: \"bob@\" is not a valid address: ..."},
        {"allow_senders = bob", "t.conf:1: allow_senders: \"bob\" is not a valid address: ..."},
        {"allow_senders = <>", "t.conf:1: allow_senders: \"<>\" is not a full address (local@domain)"},
        {"exempt_recipients = post master",
         "t.conf:1: exempt_recipients: \"post master\" is not a valid local part"},
        {"exempt_recipients = <abuse>", "t.conf:1: exempt_recipients: \"<abuse>\" is not a valid local part"},
        {"exempt_recipients = abuse@", "t.conf:1: exempt_recipients: \"abuse@\" is not a valid address: ..."},
        {"allow_senders = file:", "t.conf:1: allow_senders: \"file:\" needs a path"},
        /* replies */
        {"bad_syntax_reply = 250 2.0.0 OK", "t.conf:1: bad_syntax_reply: reply code 250 is not 4xx or 5xx"},
        {"bad_syntax_reply = 553 4.1.7 no",
         "t.conf:1: bad_syntax_reply: enhanced status code 4.1.7 does not..."},
        {"bad_syntax_reply = 553 5.1.7 %s", "t.conf:1: bad_syntax_reply: unknown escape %s in reply text..."},
        {"bad_syntax_reply = 553 5.1.7", "t.conf:1: bad_syntax_reply: reply text is empty"},
        /* policy actions */
        {"invalid_action = deny",
         "t.conf:1: invalid_action: \"deny\" is not an action (accept, tempfail or reject)"},
        {"valid_action =", "t.conf:1: valid_action: \"\" is not an action (accept, tempfail or reject)"},
        {"blocked_action = reject",
         "t.conf:1: blocked_action: reject is not allowed: blocked means the sender's mail server refuses "
         "our probe, not the address (use accept or tempfail)"},
        {"blocked_action = Reject", "t.conf:1: blocked_action: reject is not allowed: blocked means..."},
        {"tempfail_action = reject",
         "t.conf:1: tempfail_action: reject is not allowed: tempfail means the probe failed for now (4xx, "
         "timeout, DNS), which says nothing about the address (use accept or tempfail)"},
        {"budget_action = reject",
         "t.conf:1: budget_action: reject is not allowed: an unfinished probe says nothing about the address "
         "(use accept or tempfail)"},
        {"budget_action = later",
         "t.conf:1: budget_action: \"later\" is not an action (accept, tempfail or reject)"},
        /* the verdict issue's directives */
        {"defer_limit = 31d", "t.conf:1: defer_limit: 31d is out of range..."},
        {"defer_limit = -1h", "t.conf:1: defer_limit: \"-1h\" is not a duration such as 30s, 5m or 1h30m"},
        {"defer_limit = soon", "t.conf:1: defer_limit: \"soon\" is not a duration..."},
        {"greylist_retry = 0", "t.conf:1: greylist_retry: 0 is out of range 1s..1h"},
        {"greylist_retry = 2h", "t.conf:1: greylist_retry: 2h is out of range..."},
        {"probe_sender_fallback = postmaster",
         "t.conf:1: probe_sender_fallback: \"postmaster\" is not a valid address: ..."},
        {"tagged_senders = batv, dkim",
         "t.conf:1: tagged_senders: unknown sender tag \"dkim\" (batv, srs or verp)"},
        /* policy replies: reject replies are 5xx, tempfail replies 4xx */
        {"invalid_reply = 451 4.1.0 later",
         "t.conf:1: invalid_reply: reply code 451 is not 5xx: a reject reply is a permanent failure"},
        {"no_domain_reply = 450 4.1.8 later", "t.conf:1: no_domain_reply: reply code 450 is not 5xx..."},
        {"reject_reply = 421 4.7.0 later", "t.conf:1: reject_reply: reply code 421 is not 5xx..."},
        {"blocklist_reply = 451 4.7.1 later", "t.conf:1: blocklist_reply: reply code 451 is not 5xx..."},
        {"tempfail_reply = 550 5.1.0 no",
         "t.conf:1: tempfail_reply: reply code 550 is not 4xx: a tempfail reply is a temporary failure"},
        {"budget_reply = 554 5.7.1 no", "t.conf:1: budget_reply: reply code 554 is not 4xx..."},
        {"budget_reply = 451 5.7.1 no",
         "t.conf:1: budget_reply: enhanced status code 5.7.1 does not match..."},
        {"invalid_reply = 550 5.1.0 %d", "t.conf:1: invalid_reply: unknown escape %d in reply text..."},
        /* domain_overrides */
        {"domain_overrides = example.com",
         "t.conf:1: domain_overrides: \"example.com\" needs a rule after the domain: skip, verify or "
         "OUTCOME=ACTION"},
        {"domain_overrides = example.com catchall=accept",
         "t.conf:1: domain_overrides: example.com: \"catchall\" is not an outcome (valid, invalid, "
         "no_domain, "
         "catch_all, tempfail, blocked, unverifiable)"},
        {"domain_overrides = example.com catch_all=deny",
         "t.conf:1: domain_overrides: example.com: catch_all: \"deny\" is not an action (accept, tempfail or "
         "reject)"},
        {"domain_overrides = example.com valid=",
         "t.conf:1: domain_overrides: example.com: valid: \"\" is not an action..."},
        {"domain_overrides = example.com blocked=reject",
         "t.conf:1: domain_overrides: example.com: blocked=reject is not allowed: blocked means the sender's "
         "mail server refuses our probe, not the address"},
        {"domain_overrides = example.com tempfail=REJECT",
         "t.conf:1: domain_overrides: example.com: tempfail=reject is not allowed: tempfail means..."},
        {"domain_overrides = example.com accept",
         "t.conf:1: domain_overrides: example.com: \"accept\" is not skip, verify or OUTCOME=ACTION"},
        {"domain_overrides = example.com skip valid=accept",
         "t.conf:1: domain_overrides: example.com: skip stands alone: it cannot be combined with other "
         "rules"},
        {"domain_overrides = example.com verify invalid=accept",
         "t.conf:1: domain_overrides: example.com: verify stands alone..."},
        {"domain_overrides = example.com valid=accept valid=reject",
         "t.conf:1: domain_overrides: example.com: valid is given twice"},
        {"domain_overrides = exa_mple.com skip",
         "t.conf:1: domain_overrides: \"exa_mple.com\" is not a valid domain name"},
        {"domain_overrides = *.example.com skip",
         "t.conf:1: domain_overrides: \"*.example.com\" is not a valid domain name (write example.com: it "
         "covers the subdomains)"},
        {"domain_overrides = example.com skip, Example.COM. verify",
         "t.conf:1: domain_overrides: Example.COM.: a second entry for this domain (one entry a domain)"},
        {"domain_overrides = example.com catch_all=accept,valid=accept invalid=accept",
         "t.conf:1: domain_overrides: \"valid=accept\" names no domain..."},
        {"domain_overrides = outlook.com catch_all=accept,valid=accept",
         "t.conf:1: domain_overrides: \"valid=accept\" names no domain (in vemilter.conf commas separate "
         "entries: write \"example.com catch_all=accept valid=accept\", or use a list file)"},
        /* blocklist, header name */
        {"sender_domain_blocklist = spam example",
         "t.conf:1: sender_domain_blocklist: \"spam example\" is not a valid domain name"},
        {"result_header = X-Verified: yes",
         "t.conf:1: result_header: \"X-Verified: yes\" is not a header field name (printable ASCII without "
         "blanks or \":\", such as X-Sender-Verification)"},
        {"result_header = X Verified",
         "t.conf:1: result_header: \"X Verified\" is not a header field name..."},
        {"result_header = X-Vérifié", "t.conf:1: result_header: \"X-Vérifié\" is not a header field name..."},
        {"dry_run = perhaps", "t.conf:1: dry_run: \"perhaps\" is not a boolean..."},
};

/* message_is - exact match, or prefix match when want ends in "..." */
static bool message_is(const char *got, const char *want)
{
	size_t n = strlen(want);
	if (n > 3 && strcmp(want + n - 3, "...") == 0)
		return strncmp(got, want, n - 3) == 0;
	return strcmp(got, want) == 0;
}

START_TEST(bad_line)
{
	struct errs e;
	struct conf *c = load(bad[_i].text, &e);

	ck_assert_msg(c == NULL, "\"%s\" accepted", bad[_i].text);
	ck_assert_msg(e.n == 1, "\"%s\": %d errors, first: %s", bad[_i].text, e.n, e.msg[0]);
	ck_assert_msg(message_is(e.msg[0], bad[_i].want), "\"%s\":\n got  %s\n want %s", bad[_i].text,
	              e.msg[0], bad[_i].want);
}
END_TEST

START_TEST(overlong_line)
{
	char text[6000];
	struct errs e;

	snprintf(text, sizeof(text), "user = vemilter\nallow_senders = ");
	size_t n = strlen(text);
	memset(text + n, 'a', 4096 - 16);
	strcpy(text + n + 4096 - 16, "@example.com\n"); /* 4096 + 12 octets */
	ck_assert_ptr_null(load(text, &e));
	ck_assert_int_eq(e.n, 1);
	ck_assert_str_eq(e.msg[0], "t.conf:2: line is longer than 4096 octets");

	/* exactly 4096 octets is fine (though the value is then checked) */
	memset(text, ' ', 4096);
	memcpy(text, "user = vemilter", 15);
	text[4096] = '\0';
	struct conf *c = load(text, &e);
	ck_assert_msg(c != NULL, "%s", e.msg[0]);
	conf_unref(c);
}
END_TEST

START_TEST(nul_in_file)
{
	char path[512];
	struct errs e = {0};
	FILE *f = fopen(tmp_path("nul.conf", path, sizeof(path)), "w");

	ck_assert_ptr_nonnull(f);
	fwrite("user = a\0b\nlog_level = info\n", 1, 28, f);
	fclose(f);
	ck_assert_ptr_null(conf_load(path, collect, &e));
	ck_assert_int_eq(e.n, 1);
	ck_assert(strstr(e.msg[0], "nul.conf:1: line contains a NUL octet") != NULL);
}
END_TEST

START_TEST(keeps_going)
{
	struct errs e;
	const char *text = "sokcet = x\n"
	                   "log_level = info\n"
	                   "log_level = debug\n"
	                   "socket_mode = 999\n"
	                   "trusted_networks = 1.2.3.4/8, 10.0.0.0/8, nonsense\n"
	                   "no equals here\n";

	ck_assert_ptr_null(load(text, &e));
	ck_assert_int_eq(e.n, 6);
	ck_assert(strncmp(e.msg[0], "t.conf:1: unknown directive", 27) == 0);
	ck_assert(strncmp(e.msg[1], "t.conf:3: duplicate directive", 29) == 0);
	ck_assert(strncmp(e.msg[2], "t.conf:4: socket_mode:", 22) == 0);
	ck_assert(strncmp(e.msg[3], "t.conf:5: trusted_networks: 1.2.3.4/8 has host bits", 51) == 0);
	ck_assert(strncmp(e.msg[4], "t.conf:5: trusted_networks: \"nonsense\"", 38) == 0);
	ck_assert(strncmp(e.msg[5], "t.conf:6: missing \"=\"", 21) == 0);
}
END_TEST

START_TEST(no_callback)
{
	ck_assert_ptr_null(conf_load_text("t.conf", "bogus = 1\n", NULL, NULL));
	struct conf *c = conf_load_text("t.conf", "", NULL, NULL);
	ck_assert_ptr_nonnull(c);
	conf_unref(c);
}
END_TEST

START_TEST(list_files)
{
	char conf_path[512], list_path[512], abs_path[512], text[2048];
	struct errs e = {0};

	write_file("senders.list",
	           "# senders, one a line\n"
	           "\n"
	           "  bob@example.com  \n"
	           "# bob@commented.example\n"
	           "Carol@Example.NET\r\n",
	           list_path, sizeof(list_path));
	write_file("domains.list", "example.org\nbücher.example", abs_path, sizeof(abs_path));
	snprintf(text, sizeof(text),
	         "allow_senders = dave@example.com, file:senders.list\n"
	         "allow_sender_domains = file:%s, example.com\n"
	         "exempt_recipients = file:%s\n",
	         abs_path, tmp_path("empty.list", list_path, sizeof(list_path)));
	write_file("empty.list", "# nothing\n", list_path, sizeof(list_path));
	write_file("lists.conf", text, conf_path, sizeof(conf_path));

	struct conf *c = conf_load(conf_path, collect, &e);
	ck_assert_msg(c != NULL, "%s", e.msg[0]);
	ck_assert_str_eq(c->path, conf_path);
	ck_assert_uint_eq(c->allow_senders.count, 3);
	ck_assert(conf_strings_contains(&c->allow_senders, "dave@example.com"));
	ck_assert(conf_strings_contains(&c->allow_senders, "bob@example.com"));
	ck_assert(conf_strings_contains(&c->allow_senders, "carol@example.net"));
	ck_assert(!conf_strings_contains(&c->allow_senders, "bob@commented.example"));
	ck_assert_uint_eq(c->allow_sender_domains.count, 3);
	ck_assert_str_eq(c->allow_sender_domains.items[0], "example.org");
	ck_assert_str_eq(c->allow_sender_domains.items[1], "xn--bcher-kva.example");
	ck_assert_str_eq(c->allow_sender_domains.items[2], "example.com");
	ck_assert_uint_eq(c->exempt_recipients.count, 0);
	conf_unref(c);
}
END_TEST

START_TEST(list_file_errors)
{
	char conf_path[512], list_path[512], want[1200], text[1024];
	struct errs e = {0};

	write_file("bad.list", "good@example.com\n# comment\nnot an address\nfile:other.list\n", list_path,
	           sizeof(list_path));
	write_file("nets.list", "10.0.0.0/8\n\n192.0.2.1/24\n", list_path, sizeof(list_path));
	snprintf(text, sizeof(text),
	         "log_level = info\n"
	         "allow_senders = file:bad.list\n"
	         "trusted_networks = file:nets.list\n"
	         "allow_sender_domains = file:missing.list\n"
	         "exempt_recipients = file:%s\n",
	         tmpdir);
	write_file("errors.conf", text, conf_path, sizeof(conf_path));

	ck_assert_ptr_null(conf_load(conf_path, collect, &e));
	ck_assert_int_eq(e.n, 5);
	snprintf(want, sizeof(want),
	         "%s/bad.list:3: allow_senders: \"not an address\" is not a valid address: ", tmpdir);
	ck_assert_msg(strncmp(e.msg[0], want, strlen(want)) == 0, "got %s", e.msg[0]);
	snprintf(want, sizeof(want),
	         "%s/bad.list:4: allow_senders: list files do not nest: \"file:other.list\"", tmpdir);
	ck_assert_str_eq(e.msg[1], want);
	snprintf(want, sizeof(want),
	         "%s/nets.list:3: trusted_networks: 192.0.2.1/24 has host bits set; did you mean "
	         "192.0.2.0/24?",
	         tmpdir);
	ck_assert_str_eq(e.msg[2], want);
	snprintf(want, sizeof(want),
	         "%s:4: allow_sender_domains: cannot read %s/missing.list: No such file or directory",
	         conf_path, tmpdir);
	ck_assert_str_eq(e.msg[3], want);
	snprintf(want, sizeof(want), "%s:5: exempt_recipients: cannot read %s: Is a directory", conf_path,
	         tmpdir);
	ck_assert_str_eq(e.msg[4], want);
}
END_TEST

START_TEST(override_files)
{
	char conf_path[512], list_path[512];
	struct errs e = {0};

	write_file("overrides.list",
	           "# per-domain rules\n"
	           "outlook.com catch_all=accept,valid=accept\n"
	           "  example.net\tskip  \n"
	           "bücher.example   verify\n",
	           list_path, sizeof(list_path));
	write_file("overrides.conf", "domain_overrides = file:overrides.list, example.org skip\n", conf_path,
	           sizeof(conf_path));

	struct conf *c = conf_load(conf_path, collect, &e);
	ck_assert_msg(c != NULL, "%s", e.msg[0]);
	ck_assert_uint_eq(c->domain_overrides.count, 4);
	const struct conf_override *o = c->domain_overrides.items;
	ck_assert_str_eq(o[0].domain, "outlook.com");
	ck_assert(o[0].has_action[OUTCOME_CATCH_ALL] && o[0].has_action[OUTCOME_VALID]);
	ck_assert(!o[0].has_action[OUTCOME_INVALID] && !o[0].skip);
	ck_assert_int_eq(o[0].action[OUTCOME_CATCH_ALL], CONF_ACCEPT);
	ck_assert_str_eq(o[1].domain, "example.net");
	ck_assert(o[1].skip);
	ck_assert_str_eq(o[2].domain, "xn--bcher-kva.example");
	ck_assert(!o[2].skip);
	ck_assert_str_eq(o[3].domain, "example.org");
	ck_assert(o[3].skip);
	conf_unref(c);
}
END_TEST

START_TEST(mx_host_override_files)
{
	char conf_path[512], list_path[512], want[1200];
	struct errs e = {0};

	write_file("mxhosts.list",
	           "# by MX host\n"
	           "*.Mail.Protection.Outlook.com. SKIP\n"
	           "  mx1.eur.mail.protection.outlook.com\tverify \n"
	           "192.0.2.0/24 skip\n",
	           list_path, sizeof(list_path));
	write_file("mxhosts.conf",
	           "mx_host_overrides = file:mxhosts.list, 2001:db8::/32 skip\nhost_session_rate = 3\n",
	           conf_path, sizeof(conf_path));
	struct conf *c = conf_load(conf_path, collect, &e);
	ck_assert_msg(c != NULL, "%s", e.msg[0]);
	ck_assert_int_eq(c->host_session_rate, 3);
	ck_assert_uint_eq(c->mx_host_overrides.count, 4);
	ck_assert_str_eq(c->mx_host_overrides.items[0], "*.mail.protection.outlook.com skip");
	ck_assert_str_eq(c->mx_host_overrides.items[1], "mx1.eur.mail.protection.outlook.com verify");
	ck_assert_str_eq(c->mx_host_overrides.items[2], "192.0.2.0/24 skip");
	ck_assert_str_eq(c->mx_host_overrides.items[3], "2001:db8::/32 skip");
	conf_unref(c);

	write_file("badmx.list",
	           "*.yahoodns.net skip\nmx.example reject\n*.YAHOODNS.net verify\n10.0.0.1/8 skip\n",
	           list_path, sizeof(list_path));
	write_file("badmx.conf", "host_session_rate = -1\nmx_host_overrides = file:badmx.list\n", conf_path,
	           sizeof(conf_path));
	memset(&e, 0, sizeof(e));
	ck_assert_ptr_null(conf_load(conf_path, collect, &e));
	ck_assert_int_eq(e.n, 4);
	snprintf(want, sizeof(want), "%s:1: host_session_rate", conf_path);
	ck_assert_msg(strncmp(e.msg[0], want, strlen(want)) == 0, "got %s", e.msg[0]);
	snprintf(want, sizeof(want),
	         "%s/badmx.list:2: mx_host_overrides: mx.example: unknown action \"reject\" (skip or verify)",
	         tmpdir);
	ck_assert_str_eq(e.msg[1], want);
	snprintf(want, sizeof(want),
	         "%s/badmx.list:3: mx_host_overrides: *.yahoodns.net: a second entry for this pattern (one "
	         "entry a "
	         "pattern)",
	         tmpdir);
	ck_assert_str_eq(e.msg[2], want);
	snprintf(want, sizeof(want),
	         "%s/badmx.list:4: mx_host_overrides: 10.0.0.1/8: not a network: ", tmpdir);
	ck_assert_msg(strncmp(e.msg[3], want, strlen(want)) == 0, "got %s", e.msg[3]);
}
END_TEST

START_TEST(override_file_errors)
{
	char conf_path[512], list_path[512], want[1200];
	struct errs e = {0};
	static const char *const wants[] = {
	        ":3: domain_overrides: example.org: \"catchall\" is not an outcome (valid, invalid, ...",
	        ":4: domain_overrides: example.com: blocked=reject is not allowed: blocked means ...",
	        ":5: domain_overrides: \"example.edu\" needs a rule after the domain: skip, verify or "
	        "OUTCOME=ACTION",
	        ":6: domain_overrides: \"bad_domain.example\" is not a valid domain name",
	        ":7: domain_overrides: example.info: valid: \"maybe\" is not an action (accept, tempfail or "
	        "reject)",
	        ":8: domain_overrides: Outlook.com: a second entry for this domain (one entry a domain)",
	};

	write_file("bad-overrides.list",
	           "outlook.com catch_all=accept,valid=accept\n"
	           "# comment\n"
	           "example.org catchall=accept\n"
	           "example.com blocked=reject\n"
	           "example.edu\n"
	           "bad_domain.example skip\n"
	           "example.info valid=maybe\n"
	           "Outlook.com skip\n",
	           list_path, sizeof(list_path));
	write_file("bad-overrides.conf", "log_level = info\ndomain_overrides = file:bad-overrides.list\n",
	           conf_path, sizeof(conf_path));

	ck_assert_ptr_null(conf_load(conf_path, collect, &e));
	ck_assert_int_eq(e.n, N(wants));
	for (int i = 0; i < N(wants); i++) {
		snprintf(want, sizeof(want), "%s%s", list_path, wants[i]);
		ck_assert_msg(message_is(e.msg[i], want), "got  %s\nwant %s", e.msg[i], want);
	}
}
END_TEST

START_TEST(list_file_overlong)
{
	char conf_path[512], list_path[512], text[6000];
	struct errs e = {0};

	memset(text, 'a', 5000);
	strcpy(text + 5000, "@example.com\nok@example.com\n");
	write_file("long.list", text, list_path, sizeof(list_path));
	write_file("long.conf", "allow_senders = file:long.list\n", conf_path, sizeof(conf_path));
	ck_assert_ptr_null(conf_load(conf_path, collect, &e));
	ck_assert_int_eq(e.n, 1);
	snprintf(text, sizeof(text), "%s:1: line is longer than 4096 octets", list_path);
	ck_assert_str_eq(e.msg[0], text);
}
END_TEST

START_TEST(unreadable_config)
{
	char path[512], want[700];
	struct errs e = {0};

	ck_assert_ptr_null(conf_load(tmp_path("absent.conf", path, sizeof(path)), collect, &e));
	ck_assert_int_eq(e.n, 1);
	snprintf(want, sizeof(want), "%s: cannot read: No such file or directory", path);
	ck_assert_str_eq(e.msg[0], want);
}
END_TEST

START_TEST(refcount)
{
	struct errs e;
	struct conf *c = load("", &e);

	ck_assert_ptr_nonnull(c);
	ck_assert_ptr_eq(conf_ref(c), c);
	ck_assert_ptr_eq(conf_ref(c), c);
	ck_assert_int_eq(atomic_load(&c->refs), 3);
	conf_unref(c);
	conf_unref(c);
	ck_assert_str_eq(c->socket, "unix:/run/vemilter/vemilter.sock"); /* still alive */
	conf_unref(c);
	conf_unref(NULL);
	ck_assert_ptr_null(conf_ref(NULL));
}
END_TEST

/* The directives a reload does not apply: exactly these, and a change to
 * each of them is seen (and none when nothing changed). */
START_TEST(restart_directives)
{
	static const char *const want[] = {
	        "socket",         "socket_mode",     "socket_group",    "user",         "pid_file",
	        "milter_timeout", "syslog_facility", "cache",           "cache_max_mb", "cache_sync_interval",
	        "metrics_listen", "cache_fallback",  "milter_transport"};
	static const char *const other[] = {"unix:/tmp/other.sock",
	                                    "0600",
	                                    "mail",
	                                    "nobody",
	                                    "/tmp/other.pid",
	                                    "7m",
	                                    "local3",
	                                    "/tmp/other.lmdb",
	                                    "99",
	                                    "5s",
	                                    "127.0.0.1:9999",
	                                    "/tmp/other-fallback.lmdb",
	                                    "libmilter"};
	struct errs e;
	struct conf *base = conf_load_text("t.conf", "", collect, &e);
	ck_assert_ptr_nonnull(base);
	size_t found = 0;
	for (size_t i = 0; i < conf_directive_count(); i++) {
		ck_assert(!conf_directive_changed(base, base, i));
		if (!conf_directive_restart(i))
			continue;
		size_t k = 0;
		while (k < sizeof(want) / sizeof(want[0]) && strcmp(want[k], conf_directive_name(i)) != 0)
			k++;
		ck_assert_msg(k < sizeof(want) / sizeof(want[0]), "%s needs a restart?",
		              conf_directive_name(i));
		found++;
		char text[256];
		snprintf(text, sizeof(text), "%s = %s\n", want[k], other[k]);
		struct conf *changed = conf_load_text("t.conf", text, collect, &e);
		ck_assert_msg(changed != NULL, "%s", text);
		ck_assert_msg(conf_directive_changed(base, changed, i), "%s not seen as changed", want[k]);
		conf_unref(changed);
	}
	ck_assert_uint_eq(found, sizeof(want) / sizeof(want[0]));
	conf_unref(base);
}
END_TEST

START_TEST(directive_table)
{
	size_t n = conf_directive_count();
	struct errs e;

	ck_assert_uint_ge(n, 13);
	ck_assert_ptr_null(conf_directive_name(n));
	ck_assert_ptr_null(conf_directive_default(n));
	for (size_t i = 0; i < n; i++) {
		char text[512];
		ck_assert_ptr_nonnull(conf_directive_name(i));
		ck_assert_ptr_nonnull(conf_directive_default(i));
		for (size_t j = 0; j < i; j++)
			ck_assert_str_ne(conf_directive_name(i), conf_directive_name(j));
		/* stating the default explicitly is accepted */
		snprintf(text, sizeof(text), "%s = %s\n", conf_directive_name(i), conf_directive_default(i));
		struct conf *c = load(text, &e);
		ck_assert_msg(c != NULL, "%s: %s", text, e.msg[0]);
		conf_unref(c);
	}
}
END_TEST

START_TEST(strings_contains)
{
	char *items[] = {"postmaster", "abuse@example.com"};
	struct conf_strings l = {2, items};
	struct conf_strings empty = {0, NULL};

	ck_assert(conf_strings_contains(&l, "postmaster"));
	ck_assert(conf_strings_contains(&l, "PostMaster"));
	ck_assert(conf_strings_contains(&l, "Abuse@Example.com"));
	ck_assert(!conf_strings_contains(&l, "abuse"));
	ck_assert(!conf_strings_contains(&l, "postmaste"));
	ck_assert(!conf_strings_contains(&empty, "postmaster"));
	ck_assert(!conf_strings_contains(NULL, "postmaster"));
	ck_assert(!conf_strings_contains(&l, NULL));
}
END_TEST

static const struct {
	const char *text;
	int64_t ms;
} durations[] = {
        {"0", 0},
        {"30", 30000},
        {"250ms", 250},
        {"1s", 1000},
        {"5m", 300000},
        {"2h", 7200000},
        {"7d", 604800000},
        {"1w", 604800000},
        {"1h30m", 5400000},
        {"1w2d3h4m5s6ms", 604800000LL + 2 * 86400000LL + 3 * 3600000LL + 4 * 60000LL + 5000 + 6},
        {"1m30s", 90000},
        {"2m500ms", 120500},
        {"0s", 0},
        {"007s", 7000},
        {"9223372036854775807ms", INT64_MAX},
        {"9223372036854775s", 9223372036854775000LL},
        {"15250284452w", 15250284452LL * 604800000LL},
};

START_TEST(duration_good)
{
	int64_t ms = -1;

	ck_assert_msg(conf_parse_duration_ms(durations[_i].text, &ms), "%s rejected", durations[_i].text);
	ck_assert_msg(ms == durations[_i].ms, "%s: %lld", durations[_i].text, (long long)ms);
}
END_TEST

static const char *const bad_durations[] = {
        "",
        "-5s",
        "-1",
        "+5s",
        "5x",
        "5 m",
        " 5m",
        "5m ",
        "1.5h",
        "h",
        "m30",
        "1h30",
        "30m1h",
        "1m1m",
        "1s1m",
        "5M",
        "5S",
        "1hour",
        "1mss",
        "5msm",
        "9223372036854775808ms",
        "9223372036854776s",
        "15250284453w",
        "99999999999999999999",
        "9223372036854775807ms1ms" /* ms after ms */,
        "9223372036854775s807ms1",
        "106751991167d500m",
};

START_TEST(duration_bad)
{
	int64_t ms = 42;

	ck_assert_msg(!conf_parse_duration_ms(bad_durations[_i], &ms), "\"%s\" accepted", bad_durations[_i]);
	ck_assert_int_eq(ms, 42);
}
END_TEST

START_TEST(duration_null)
{
	int64_t ms;
	ck_assert(!conf_parse_duration_ms(NULL, &ms));
}
END_TEST

static const struct {
	const char *text;
	int64_t min, max;
	bool ok;
	int64_t value;
	const char *why;
} integers[] = {
        {"0", 0, 10, true, 0, NULL},
        {"10", 0, 10, true, 10, NULL},
        {"007", 0, 10, true, 7, NULL},
        {"-5", -10, 10, true, -5, NULL},
        {"9223372036854775807", 0, INT64_MAX, true, INT64_MAX, NULL},
        {"-9223372036854775808", INT64_MIN, 0, true, INT64_MIN, NULL},
        {"11", 0, 10, false, 0, "11 is out of range 0..10"},
        {"-1", 0, 10, false, 0, "-1 is out of range 0..10"},
        {"9223372036854775808", 0, INT64_MAX, false, 0,
         "9223372036854775808 is out of range 0..9223372036854775807"},
        {"", 0, 10, false, 0, "\"\" is not an integer"},
        {"-", 0, 10, false, 0, "\"-\" is not an integer"},
        {"+5", 0, 10, false, 0, "\"+5\" is not an integer"},
        {" 5", 0, 10, false, 0, "\" 5\" is not an integer"},
        {"5 ", 0, 10, false, 0, "\"5 \" is not an integer"},
        {"0x10", 0, 100, false, 0, "\"0x10\" is not an integer"},
        {"5s", 0, 10, false, 0, "\"5s\" is not an integer"},
        {"--5", -10, 10, false, 0, "\"--5\" is not an integer"},
};

START_TEST(integer)
{
	int64_t v = 12345;
	char why[200] = "";
	bool ok = conf_parse_integer(integers[_i].text, integers[_i].min, integers[_i].max, &v, why,
	                             sizeof(why));

	ck_assert_msg(ok == integers[_i].ok, "\"%s\": %s", integers[_i].text, why);
	if (ok)
		ck_assert_int_eq(v, integers[_i].value);
	else
		ck_assert_str_eq(why, integers[_i].why);
}
END_TEST

/* read_doc - a documentation file from the source tree; fails clearly if absent */
static char *read_doc(const char *relative)
{
	const char *srcdir = getenv("VEMILTER_SRCDIR") ? getenv("VEMILTER_SRCDIR") : ".";
	char path[1024];
	static char buf[1 << 17];

	snprintf(path, sizeof(path), "%s/%s", srcdir, relative);
	FILE *f = fopen(path, "r");
	ck_assert_msg(f != NULL, "cannot read %s: %s (run from the source tree or set VEMILTER_SRCDIR)", path,
	              strerror(errno));
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	ck_assert_msg(n < sizeof(buf) - 1, "%s is too large for this test", path);
	buf[n] = '\0';
	return buf;
}

/* has_word - name in text, not as part of a longer identifier */
static bool has_word(const char *text, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = strstr(text, name); p != NULL; p = strstr(p + 1, name)) {
		char before = p == text ? ' ' : p[-1], after = p[n];
		bool ident_before = before == '_' || (before >= 'a' && before <= 'z');
		bool ident_after = after == '_' || (after >= 'a' && after <= 'z');
		if (!ident_before && !ident_after)
			return true;
	}
	return false;
}

START_TEST(documented_in_man_page)
{
	const char *man = read_doc("man/vemilter.conf.5");

	for (size_t i = 0; i < conf_directive_count(); i++)
		ck_assert_msg(has_word(man, conf_directive_name(i)),
		              "man/vemilter.conf.5 does not describe %s", conf_directive_name(i));
}
END_TEST

START_TEST(documented_in_sample)
{
	const char *sample = read_doc("etc/vemilter.conf");
	char uncommented[1 << 14] = "", line[4200];
	size_t len = 0;
	struct errs e;

	/* every directive appears once, commented out, showing its default */
	for (size_t i = 0; i < conf_directive_count(); i++) {
		const char *name = conf_directive_name(i);
		int found = 0;
		for (const char *p = sample; *p != '\0';) {
			size_t n = strcspn(p, "\n");
			snprintf(line, sizeof(line), "%.*s", (int)n, p);
			p += n + (p[n] == '\n');
			char *s = line;
			if (*s++ != '#')
				continue;
			s += strspn(s, " ");
			if (strncmp(s, name, strlen(name)) != 0 ||
			    s[strlen(name) + strspn(s + strlen(name), " ")] != '=')
				continue;
			char *value = s + strlen(name) + strspn(s + strlen(name), " ") + 1;
			value += strspn(value, " ");
			ck_assert_msg(strcmp(value, conf_directive_default(i)) == 0,
			              "etc/vemilter.conf shows %s = \"%s\", the default is \"%s\"", name,
			              value, conf_directive_default(i));
			len += (size_t)snprintf(uncommented + len, sizeof(uncommented) - len, "%s\n", s);
			found++;
		}
		ck_assert_msg(found == 1, "etc/vemilter.conf has %d commented-out \"%s = ...\" lines, want 1",
		              found, name);
	}
	/* and uncommenting all of them gives a valid configuration */
	ck_assert_uint_lt(len, sizeof(uncommented));
	struct conf *c = load(uncommented, &e);
	ck_assert_msg(c != NULL, "uncommented sample: %s", e.msg[0]);
	conf_unref(c);
}
END_TEST

/* A Redis user in the cache URL without a password file is an error
 * (the daemon would connect as the default user); with one, or without a
 * user, the URL loads. */
START_TEST(redis_user_needs_password)
{
	struct errs e;
	struct conf *c = load("cache = redis://vemilter@127.0.0.1:6379/1\n", &e);
	ck_assert_ptr_null(c);
	ck_assert_int_eq(e.n, 1);
	ck_assert_msg(strstr(e.msg[0], "cache_password_file") && strstr(e.msg[0], "vemilter"), "%s",
	              e.msg[0]);
	c = load("cache = redis://vemilter@127.0.0.1:6379/1\ncache_password_file = /etc/vemilter/redis.pw\n",
	         &e);
	ck_assert_msg(c != NULL, "%d errors, first: %s", e.n, e.msg[0]);
	conf_unref(c);
	c = load("cache = redis://127.0.0.1:6379/1\n", &e);
	ck_assert_msg(c != NULL, "%d errors, first: %s", e.n, e.msg[0]);
	conf_unref(c);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("conf");
	TCase *parse = tcase_create("parse");
	TCase *files = tcase_create("files");
	TCase *values = tcase_create("values");
	TCase *docs = tcase_create("docs");

	tcase_add_test(parse, defaults);
	tcase_add_test(parse, policy_defaults);
	tcase_add_test(parse, policy_values);
	tcase_add_test(parse, verdict_directives);
	tcase_add_test(parse, good_file);
	tcase_add_test(parse, good_values);
	tcase_add_loop_test(parse, bad_line, 0, N(bad));
	tcase_add_test(parse, overlong_line);
	tcase_add_test(parse, keeps_going);
	tcase_add_test(parse, no_callback);
	tcase_add_test(parse, refcount);
	tcase_add_test(parse, directive_table);
	tcase_add_test(parse, redis_user_needs_password);
	suite_add_tcase(s, parse);

	tcase_add_unchecked_fixture(files, make_tmpdir, remove_tmpdir);
	tcase_add_test(files, nul_in_file);
	tcase_add_test(files, list_files);
	tcase_add_test(files, list_file_errors);
	tcase_add_test(files, list_file_overlong);
	tcase_add_test(files, override_files);
	tcase_add_test(files, override_file_errors);
	tcase_add_test(files, mx_host_override_files);
	tcase_add_test(files, unreadable_config);
	suite_add_tcase(s, files);

	tcase_add_test(values, strings_contains);
	tcase_add_loop_test(values, duration_good, 0, N(durations));
	tcase_add_loop_test(values, duration_bad, 0, N(bad_durations));
	tcase_add_test(values, duration_null);
	tcase_add_loop_test(values, integer, 0, N(integers));
	suite_add_tcase(s, values);

	tcase_add_test(docs, documented_in_man_page);
	tcase_add_test(docs, restart_directives);
	tcase_add_test(docs, documented_in_sample);
	suite_add_tcase(s, docs);
	return unit_run(s);
}
