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

int main(void)
{
	Suite *s = suite_create("conf");
	TCase *parse = tcase_create("parse");
	TCase *files = tcase_create("files");
	TCase *values = tcase_create("values");
	TCase *docs = tcase_create("docs");

	tcase_add_test(parse, defaults);
	tcase_add_test(parse, good_file);
	tcase_add_test(parse, good_values);
	tcase_add_loop_test(parse, bad_line, 0, N(bad));
	tcase_add_test(parse, overlong_line);
	tcase_add_test(parse, keeps_going);
	tcase_add_test(parse, no_callback);
	tcase_add_test(parse, refcount);
	tcase_add_test(parse, directive_table);
	suite_add_tcase(s, parse);

	tcase_add_unchecked_fixture(files, make_tmpdir, remove_tmpdir);
	tcase_add_test(files, nul_in_file);
	tcase_add_test(files, list_files);
	tcase_add_test(files, list_file_errors);
	tcase_add_test(files, list_file_overlong);
	tcase_add_test(files, unreadable_config);
	suite_add_tcase(s, files);

	tcase_add_test(values, strings_contains);
	tcase_add_loop_test(values, duration_good, 0, N(durations));
	tcase_add_loop_test(values, duration_bad, 0, N(bad_durations));
	tcase_add_test(values, duration_null);
	tcase_add_loop_test(values, integer, 0, N(integers));
	suite_add_tcase(s, values);

	tcase_add_test(docs, documented_in_man_page);
	tcase_add_test(docs, documented_in_sample);
	suite_add_tcase(s, docs);
	return unit_run(s);
}
