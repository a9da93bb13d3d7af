/*
 * test_addr.c - table-driven tests of addr_parse() and addr_domain_within().
 *
 * Each table row is one Check loop iteration, so each row is one TAP line.
 * Every rejected address must come with a non-empty, printable reason.
 */
#include "addr.h"
#include "unit.h"

#include <stdio.h>
#include <string.h>

/* Accepted addresses: what addr_parse must put in struct addr. */
struct good {
	const char *in;
	const char *local;
	const char *domain_ascii;
	enum addr_domain_kind kind;
	bool utf8;
	bool quoted;
};

/* clang-format off */
static const struct good goods[] = {
	{"<user@example.com>", "user", "example.com", ADDR_DOMAIN_NAME, false, false},
	{"user@example.com", "user", "example.com", ADDR_DOMAIN_NAME, false, false},
	{"<User.Name+tag@EXAMPLE.Com>", "User.Name+tag", "example.com", ADDR_DOMAIN_NAME, false, false},
	{"<@a.example,@b.example:user@c.example>", "user", "c.example", ADDR_DOMAIN_NAME, false, false},
	{"<@a.example:user@c.example>", "user", "c.example", ADDR_DOMAIN_NAME, false, false},
	{"<@b\xc3\xbc" "cher.example:user@c.example>", "user", "c.example", ADDR_DOMAIN_NAME, false, false},
	{"!#$%&'*+-/=?^_`{|}~@example.com", "!#$%&'*+-/=?^_`{|}~", "example.com", ADDR_DOMAIN_NAME, false,
	 false},
	{"a.b.c@example.com", "a.b.c", "example.com", ADDR_DOMAIN_NAME, false, false},
	{"xn--test@example.com", "xn--test", "example.com", ADDR_DOMAIN_NAME, false, false},
	{"\"quoted\"@example.com", "\"quoted\"", "example.com", ADDR_DOMAIN_NAME, false, true},
	{"\"\"@example.com", "\"\"", "example.com", ADDR_DOMAIN_NAME, false, true},
	{"<\"a b\"@example.com>", "\"a b\"", "example.com", ADDR_DOMAIN_NAME, false, true},
	{"\"a\\\"b\"@example.com", "\"a\\\"b\"", "example.com", ADDR_DOMAIN_NAME, false, true},
	{"\"a\\\\b\"@example.com", "\"a\\\\b\"", "example.com", ADDR_DOMAIN_NAME, false, true},
	{"\"a\\ b\\x\"@example.com", "\"a\\ b\\x\"", "example.com", ADDR_DOMAIN_NAME, false, true},
	{"\"first@last\"@example.com", "\"first@last\"", "example.com", ADDR_DOMAIN_NAME, false, true},
	{"\"a..b.\"@example.com", "\"a..b.\"", "example.com", ADDR_DOMAIN_NAME, false, true},
	{"\"(not a comment)\"@example.com", "\"(not a comment)\"", "example.com", ADDR_DOMAIN_NAME, false,
	 true},
	{"j\xc3\xb6ran@example.com", "j\xc3\xb6ran", "example.com", ADDR_DOMAIN_NAME, true, false},
	{"\xe7\x94\xa8\xe6\x88\xb7@example.com", "\xe7\x94\xa8\xe6\x88\xb7", "example.com", ADDR_DOMAIN_NAME,
	 true, false},
	{"\xf0\x9f\x98\x80@example.com", "\xf0\x9f\x98\x80", "example.com", ADDR_DOMAIN_NAME, true, false},
	{"\xc2\xa0@example.com", "\xc2\xa0", "example.com", ADDR_DOMAIN_NAME, true, false},
	{"\"\xc3\xbc ser\"@example.com", "\"\xc3\xbc ser\"", "example.com", ADDR_DOMAIN_NAME, true, true},
	{"user@b\xc3\xbc" "cher.example", "user", "xn--bcher-kva.example", ADDR_DOMAIN_NAME, false, false},
	{"user@B\xc3\x9c" "CHER.Example", "user", "xn--bcher-kva.example", ADDR_DOMAIN_NAME, false, false},
	{"user@xn--bcher-kva.example", "user", "xn--bcher-kva.example", ADDR_DOMAIN_NAME, false, false},
	{"user@XN--BCHER-KVA.EXAMPLE", "user", "xn--bcher-kva.example", ADDR_DOMAIN_NAME, false, false},
	{"user@stra\xc3\x9f" "e.de", "user", "xn--strae-oqa.de", ADDR_DOMAIN_NAME, false, false},
	{"\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe6\xb5\x8b\xe8\xaf\x95",
	 "\xe7\x94\xa8\xe6\x88\xb7", "xn--fsqu00a.xn--0zwm56d", ADDR_DOMAIN_NAME, true, false},
	{"user@localhost", "user", "localhost", ADDR_DOMAIN_NAME, false, false},
	{"user@123.example", "user", "123.example", ADDR_DOMAIN_NAME, false, false},
	{"user@3com.com", "user", "3com.com", ADDR_DOMAIN_NAME, false, false},
	{"user@c--n.com", "user", "c--n.com", ADDR_DOMAIN_NAME, false, false},
	{"user@a-b.example", "user", "a-b.example", ADDR_DOMAIN_NAME, false, false},
	{"<user@[192.0.2.1]>", "user", "[192.0.2.1]", ADDR_DOMAIN_IPV4, false, false},
	{"user@[0.0.0.0]", "user", "[0.0.0.0]", ADDR_DOMAIN_IPV4, false, false},
	{"user@[255.255.255.255]", "user", "[255.255.255.255]", ADDR_DOMAIN_IPV4, false, false},
	{"user@[IPv6:2001:db8::1]", "user", "[ipv6:2001:db8::1]", ADDR_DOMAIN_IPV6, false, false},
	{"user@[ipv6:2001:DB8::1]", "user", "[ipv6:2001:db8::1]", ADDR_DOMAIN_IPV6, false, false},
	{"user@[IPv6:::]", "user", "[ipv6:::]", ADDR_DOMAIN_IPV6, false, false},
	{"user@[IPv6:1::]", "user", "[ipv6:1::]", ADDR_DOMAIN_IPV6, false, false},
	{"user@[IPv6:1:2:3:4:5:6:7:8]", "user", "[ipv6:1:2:3:4:5:6:7:8]", ADDR_DOMAIN_IPV6, false, false},
	{"user@[IPv6:1:2:3::6:7:8]", "user", "[ipv6:1:2:3::6:7:8]", ADDR_DOMAIN_IPV6, false, false},
	{"user@[IPv6:::ffff:192.0.2.1]", "user", "[ipv6:::ffff:192.0.2.1]", ADDR_DOMAIN_IPV6, false, false},
	{"user@[IPv6:1:2:3:4:5:6:192.0.2.1]", "user", "[ipv6:1:2:3:4:5:6:192.0.2.1]", ADDR_DOMAIN_IPV6, false,
	 false},
	{"user@[IPv6:1:2:3:4::192.0.2.1]", "user", "[ipv6:1:2:3:4::192.0.2.1]", ADDR_DOMAIN_IPV6, false,
	 false},
};
/* clang-format on */

/* Rejected addresses: len is explicit so that embedded NULs count; why must contain why_has. */
struct bad {
	const char *in;
	size_t len;
	const char *why_has;
};

/* clang-format off */
#define BAD(s, w) {s, sizeof(s) - 1, w}

static const struct bad bads[] = {
	BAD("user", "missing @"),
	BAD("<user@example.com", "missing >"),
	BAD("<", "missing >"),
	BAD("user@example.com>", "missing <"),
	BAD(">", "missing <"),
	BAD("<<>>", "'<'"),
	BAD(" <user@example.com>", "leading white space"),
	BAD("\t<user@example.com>", "leading white space"),
	BAD("<user@example.com> ", "trailing white space"),
	BAD("< user@example.com>", "inside the angle brackets"),
	BAD("<user@example.com >", "inside the angle brackets"),
	BAD("< >", "white space"),
	BAD("@example.com", "missing local part"),
	BAD("<@example.com>", "missing local part"),
	BAD("<user@>", "missing domain"),
	BAD(".user@example.com", "local part starts with a dot"),
	BAD("user.@example.com", "local part ends with a dot"),
	BAD("us..er@example.com", "consecutive dots"),
	BAD("\"a\".b@example.com", "quoted string must be the whole local part"),
	BAD("a.\"b\"@example.com", "quoted string must be the whole local part"),
	BAD("\"a\"b@example.com", "after the quoted string"),
	BAD("\"abc@example.com", "unterminated quoted string"),
	BAD("\"a\\\"@example.com", "unterminated quoted string"),
	BAD("\"a\\", "unterminated quoted string"),
	BAD("\"a\x07\"@example.com", "0x07"),
	BAD("\"a\\\x07\"@example.com", "quoted pair"),
	BAD("\"\\\xc3\xbc\"@example.com", "quoted pair"),
	BAD("us\x07" "er@example.com", "unexpected character 0x07 in local part"),
	BAD("user(comment)@example.com", "comments"),
	BAD("(comment)user@example.com", "comments"),
	BAD("user@example.com(comment)", "comments"),
	BAD("us er@example.com", "0x20"),
	BAD("user @example.com", "0x20"),
	BAD("user@ example.com", "0x20"),
	BAD("user@exa mple.com", "0x20"),
	BAD("user\\@example.com", "'\\'"),
	BAD("user@example.com\r\n", "CR or LF"),
	BAD("us\rer@example.com", "CR or LF"),
	BAD("\"a\r\n b\"@example.com", "CR or LF"),
	BAD("user@example.com\n", "CR or LF"),
	BAD("us\0er@example.com", "0x00"),
	BAD("\"us\0er\"@example.com", "0x00"),
	BAD("user@exam\0ple.com", "0x00"),
	BAD("user@example.com\0", "0x00"),
	BAD("<user@example.com>\0", NULL),
	BAD("\x7f@example.com", "0x7f"),
	BAD("\xc3(@example.com", "invalid UTF-8 in local part"),
	BAD("\xc3", "invalid UTF-8 in local part"),
	BAD("\xc0\xaf@example.com", "invalid UTF-8"),
	BAD("\xe0\x80\xaf@example.com", "invalid UTF-8"),
	BAD("\xf0\x80\x80\xaf@example.com", "invalid UTF-8"),
	BAD("\xed\xa0\x80@example.com", "invalid UTF-8"),
	BAD("\xf4\x90\x80\x80@example.com", "invalid UTF-8"),
	BAD("\xf5\x80\x80\x80@example.com", "invalid UTF-8"),
	BAD("\x80@example.com", "invalid UTF-8"),
	BAD("\xff@example.com", "invalid UTF-8"),
	BAD("\xc2\x85@example.com", "invalid UTF-8"),
	BAD("\"\xc2\x9f\"@example.com", "invalid UTF-8"),
	BAD("\"\xff\"@example.com", "invalid UTF-8"),
	BAD("user@b\xfc" "cher.example", "invalid UTF-8 in domain"),
	BAD("user@-example.com", "domain label starts with a hyphen"),
	BAD("user@example-.com", "domain label ends with a hyphen"),
	BAD("user@.example.com", "domain starts with a dot"),
	BAD("user@example..com", "domain has consecutive dots"),
	BAD("user@example.com.", "domain ends with a dot"),
	BAD("user@exa_mple.com", "'_'"),
	BAD("user@example.com@example.com", "'@'"),
	BAD("user@@example.com", "'@'"),
	BAD("user@xn--example.com", "internationalized domain"),
	BAD("user@xn--.com", "ends with a hyphen"),
	BAD("user@xn--a.com", "internationalized domain"),
	BAD("user@\xe2\x98\x83.com", "internationalized domain"),
	BAD("user@a\xe2\x80\x8d" "b.com", "internationalized domain"),
	BAD("user@-b\xc3\xbc" "cher.example", "internationalized domain"),
	BAD("user@1.2.3.4", "use an address literal [1.2.3.4]"),
	BAD("user@example.123", "top-level domain label is all-numeric"),
	BAD("user@123", "all-numeric"),
	BAD("user@1.2.3.456", "all-numeric"),
	BAD("user@[192.0.2.256]", "invalid IPv4 address literal"),
	BAD("user@[192.0.2]", "invalid IPv4 address literal"),
	BAD("user@[192.0.2.1.5]", "invalid IPv4 address literal"),
	BAD("user@[192.0.02.1]", "invalid IPv4 address literal"),
	BAD("user@[192.0.2.1 ]", "invalid IPv4 address literal"),
	BAD("user@[1.2.3.4", "unterminated address literal"),
	BAD("user@[1.2.3.4]x", "after the address literal"),
	BAD("user@[1.2.3.4].com", "after the address literal"),
	BAD("user@[IPv6:2001:db8::1::2]", "invalid IPv6"),
	BAD("user@[IPv6:1:2:3:4:5:6:7]", "invalid IPv6"),
	BAD("user@[IPv6:1:2:3:4:5:6:7:8:9]", "invalid IPv6"),
	BAD("user@[IPv6:1:2:3::4:5:6:7]", "invalid IPv6"),
	BAD("user@[IPv6:1:2:3:4:5::6:1.2.3.4]", "invalid IPv6"),
	BAD("user@[IPv6:12345::]", "invalid IPv6"),
	BAD("user@[IPv6:g::]", "invalid IPv6"),
	BAD("user@[IPv6:1:2:3:4:5:6:7:1.2.3.4]", "invalid IPv6"),
	BAD("user@[IPv6:::1.2.3.256]", "invalid IPv6"),
	BAD("user@[IPv6:::1.2.3.04]", "invalid IPv6"),
	BAD("user@[IPv6::1]", "invalid IPv6"),
	BAD("user@[IPv6:1:]", "invalid IPv6"),
	BAD("user@[IPv6:1:2:3:4:5:6:7:8:]", "invalid IPv6"),
	BAD("user@[IPv6:]", "invalid IPv6"),
	BAD("user@[IPv6:1.2.3.4]", "invalid IPv6"),
	BAD("user@[2001:db8::1]", "IPv6:"),
	BAD("user@[x-tag:content]", "general address literals are not supported"),
	BAD("user@[example.com]", "not an IPv4 or IPv6 address literal"),
	BAD("user@[]", "not an IPv4 or IPv6 address literal"),
	BAD("user@[\x07]", "not an IPv4 or IPv6 address literal"),
	BAD("<@a.example,user@b.example>", "missing local part"),
	BAD("<@a.example,:user@b.example>", "source route"),
	BAD("<@:user@b.example>", "missing source route domain"),
	BAD("<@-a.example:user@b.example>", "source route domain label starts with a hyphen"),
	BAD("<@[192.0.2.1]:user@b.example>", "source route domain"),
	BAD("<@a.example:>", "missing @"),
	BAD("<@a.example:@b.example>", "missing local part"),
};
/* clang-format on */

/* printable - true when s is non-empty printable ASCII (what an SMTP reply can carry) */
static bool printable(const char *s)
{
	if (s[0] == '\0')
		return false;
	for (; *s != '\0'; s++)
		if (*s < 0x20 || *s > 0x7e)
			return false;
	return true;
}

/* escape - s[0..n) with non-printable bytes as \xNN, for failure messages */
static const char *escape(const char *s, size_t n, char *buf, size_t size)
{
	size_t o = 0;

	for (size_t i = 0; i < n && o + 5 < size; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c < 0x7f && c != '\\')
			buf[o++] = (char)c;
		else
			o += (size_t)snprintf(buf + o, size - o, "\\x%02x", c);
	}
	buf[o] = '\0';
	return buf;
}

/* check_reject - s[0..n) must be rejected with a printable reason containing why_has */
static void check_reject(const char *s, size_t n, const char *why_has)
{
	struct addr a;
	char why[128] = "untouched";
	char esc[1200];

	escape(s, n, esc, sizeof(esc));
	ck_assert_msg(!addr_parse(s, n, &a, why, sizeof(why)), "accepted \"%s\"", esc);
	ck_assert_msg(printable(why), "reason for \"%s\" is empty or not printable", esc);
	ck_assert_msg(strcmp(why, "untouched") != 0, "no reason for \"%s\"", esc);
	if (why_has != NULL)
		ck_assert_msg(strstr(why, why_has) != NULL, "\"%s\": reason \"%s\" lacks \"%s\"", esc, why,
		              why_has);
	ck_assert_msg(!a.is_null && a.local[0] == '\0' && a.normalized[0] == '\0',
	              "\"%s\": result not cleared on failure", esc);
}

/* check_accept - s must parse; returns the result for further checks */
static struct addr check_accept(const char *s, size_t n)
{
	struct addr a;
	char why[128];
	char esc[1200];

	escape(s, n, esc, sizeof(esc));
	ck_assert_msg(addr_parse(s, n, &a, why, sizeof(why)), "rejected \"%s\": %s", esc, why);
	return a;
}

START_TEST(test_good)
{
	const struct good *g = &goods[_i];
	struct addr a = check_accept(g->in, strlen(g->in));
	char norm[ADDR_PATH_MAX + 64];

	ck_assert(!a.is_null);
	ck_assert_str_eq(a.local, g->local);
	ck_assert_str_eq(a.domain_ascii, g->domain_ascii);
	ck_assert_int_eq(a.domain_kind, g->kind);
	ck_assert_int_eq(a.local_utf8, g->utf8);
	ck_assert_int_eq(a.local_quoted, g->quoted);
	snprintf(norm, sizeof(norm), "%s@%s", g->local, g->domain_ascii);
	ck_assert_str_eq(a.normalized, norm);
	/* domain is kept as given: the text after the last '@', minus a closing '>' */
	const char *at = strrchr(g->in, '@');
	size_t dn = strlen(at + 1) - (g->in[0] == '<');
	ck_assert_uint_eq(strlen(a.domain), dn);
	ck_assert(strncmp(a.domain, at + 1, dn) == 0);
}
END_TEST

START_TEST(test_bad)
{
	check_reject(bads[_i].in, bads[_i].len, bads[_i].why_has);
}
END_TEST

START_TEST(test_null_sender)
{
	static const char *const nulls[] = {"", "<>"};
	struct addr a;
	char why[64];

	for (size_t i = 0; i < 2; i++) {
		memset(&a, 0x55, sizeof(a));
		ck_assert(addr_parse(nulls[i], strlen(nulls[i]), &a, why, sizeof(why)));
		ck_assert(a.is_null);
		ck_assert_str_eq(a.local, "");
		ck_assert_str_eq(a.domain, "");
		ck_assert_str_eq(a.domain_ascii, "");
		ck_assert_str_eq(a.normalized, "");
	}
	ck_assert(addr_parse(NULL, 0, &a, why, sizeof(why)));
	ck_assert(a.is_null);
	/* only len counts: a longer buffer cut to "<>" is the null sender */
	ck_assert(addr_parse("<>junk", 2, &a, why, sizeof(why)));
	ck_assert(a.is_null);
}
END_TEST

START_TEST(test_why_buffer)
{
	struct addr a;
	char small[8];

	ck_assert(!addr_parse("user", 4, &a, small, sizeof(small)));
	ck_assert_uint_eq(strlen(small), sizeof(small) - 1);
	ck_assert(!addr_parse("user", 4, &a, NULL, 0));
	ck_assert(!addr_parse("user", 4, &a, small, 0));
	ck_assert(!addr_parse("user", 4, NULL, small, sizeof(small)));
	ck_assert(printable(small));
}
END_TEST

/* fill - append n copies of c at *p */
static void fill(char **p, char c, size_t n)
{
	memset(*p, c, n);
	*p += n;
}

/* put - append the string s at *p */
static void put(char **p, const char *s)
{
	size_t n = strlen(s);

	memcpy(*p, s, n);
	*p += n;
}

/*
 * build - "<" (if bracket) local_len 'a's "@" domain ">", where the domain is
 * labels of the given lengths ('b's) and then suffix. Returns the length.
 */
static size_t build(char *buf, bool bracket, size_t local_len, const size_t *labels, size_t nlabels,
                    const char *suffix)
{
	char *p = buf;

	if (bracket)
		put(&p, "<");
	fill(&p, 'a', local_len);
	put(&p, "@");
	for (size_t i = 0; i < nlabels; i++) {
		fill(&p, 'b', labels[i]);
		if (i + 1 < nlabels || suffix[0] != '\0')
			put(&p, ".");
	}
	put(&p, suffix);
	if (bracket)
		put(&p, ">");
	*p = '\0';
	return (size_t)(p - buf);
}

START_TEST(test_lengths)
{
	char buf[1024];
	size_t n;

	/* local part: 64 octets yes, 65 no */
	n = build(buf, true, 64, NULL, 0, "example.com");
	check_accept(buf, n);
	n = build(buf, true, 65, NULL, 0, "example.com");
	check_reject(buf, n, "local part is longer than 64 octets");

	/* a label: 63 octets yes, 64 no */
	n = build(buf, true, 1, (const size_t[]){63}, 1, "example");
	check_accept(buf, n);
	n = build(buf, true, 1, (const size_t[]){64}, 1, "example");
	check_reject(buf, n, "domain label is longer than 63 octets");

	/* domain: 255 octets passes the domain limit (then fails the path
	 * limit, as any 255-octet domain must), 256 fails the domain limit */
	n = build(buf, true, 1, (const size_t[]){63, 63, 63, 63}, 4, "");
	ck_assert_uint_eq(n, 1 + 1 + 1 + 255 + 1);
	check_reject(buf, n, "address is longer than 254 octets");
	n = build(buf, true, 1, (const size_t[]){63, 63, 63, 62, 1}, 5, "");
	ck_assert_uint_eq(n, 1 + 1 + 1 + 256 + 1);
	check_reject(buf, n, "domain is longer than 255 octets");

	/* path incl. "<" ">": 256 yes, 257 no; same mailbox without brackets */
	n = build(buf, true, 64, (const size_t[]){63, 63, 61}, 3, "");
	ck_assert_uint_eq(n, 256);
	check_accept(buf, n);
	check_accept(buf + 1, n - 2);
	n = build(buf, true, 64, (const size_t[]){63, 63, 62}, 3, "");
	ck_assert_uint_eq(n, 257);
	check_reject(buf, n, "address is longer than 254 octets");
	check_reject(buf + 1, n - 2, "address is longer than 254 octets");

	/* a source route counts towards the 256-octet path */
	char *p = buf;
	put(&p, "<@");
	fill(&p, 'r', 10);
	put(&p, ":");
	n = build(p, false, 64, (const size_t[]){63, 63, 49}, 3, "");
	n += (size_t)(p - buf);
	put(&(char *){buf + n}, ">");
	n++;
	ck_assert_uint_eq(n, 256);
	check_accept(buf, n);
	buf[n - 1] = 'b';
	put(&(char *){buf + n}, ">");
	n++;
	check_reject(buf, n, "path is longer than 256 octets");

	/* UTF-8 local part: 64 octets (32 x U+00FC) yes, 65 no */
	p = buf;
	for (int i = 0; i < 32; i++)
		put(&p, "\xc3\xbc");
	put(&p, "@example.com");
	check_accept(buf, (size_t)(p - buf));
	memmove(buf + 1, buf, (size_t)(p - buf));
	buf[0] = 'a';
	check_reject(buf, (size_t)(p - buf) + 1, "local part is longer than 64 octets");

	/* U-labels that only overflow in A-label form: "\xc3\xbc" becomes "xn--tda" */
	p = buf;
	fill(&p, 'a', 64);
	put(&p, "@");
	for (int i = 0; i < 25; i++)
		put(&p, i ? ".\xc3\xbc" : "\xc3\xbc");
	check_reject(buf, (size_t)(p - buf), "in A-label form");
	p = buf;
	put(&p, "a@");
	for (int i = 0; i < 40; i++)
		put(&p, i ? ".\xc3\xbc" : "\xc3\xbc");
	check_reject(buf, (size_t)(p - buf), "255");
}
END_TEST

/* Allow-list matching: domain, parent, expected. */
/* clang-format off */
static const struct {
	const char *domain, *parent;
	bool want;
} withins[] = {
	{"example.com", "example.com", true},
	{"mail.example.com", "example.com", true},
	{"a.b.example.com", "example.com", true},
	{"MAIL.Example.COM", "example.com", true},
	{"mail.example.com", "EXAMPLE.COM", true},
	{"example.com.", "example.com", true},
	{"mail.example.com", "example.com.", true},
	{"example.com.", "example.com.", true},
	{"badexample.com", "example.com", false},
	{"example.com", "mail.example.com", false},
	{"com", "example.com", false},
	{"example.org", "example.com", false},
	{"example.com", "", false},
	{"example.com", ".", false},
	{"", "", false},
	{"", "example.com", false},
};
/* clang-format on */

START_TEST(test_within)
{
	ck_assert_msg(addr_domain_within(withins[_i].domain, withins[_i].parent) == withins[_i].want,
	              "addr_domain_within(\"%s\", \"%s\") != %d", withins[_i].domain, withins[_i].parent,
	              withins[_i].want);
}
END_TEST

START_TEST(test_within_null)
{
	ck_assert(!addr_domain_within(NULL, "example.com"));
	ck_assert(!addr_domain_within("example.com", NULL));
}
END_TEST

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

int main(void)
{
	Suite *s = suite_create("addr");
	TCase *tc = tcase_create("parse");

	tcase_add_loop_test(tc, test_good, 0, COUNT(goods));
	tcase_add_loop_test(tc, test_bad, 0, COUNT(bads));
	tcase_add_test(tc, test_null_sender);
	tcase_add_test(tc, test_why_buffer);
	tcase_add_test(tc, test_lengths);
	suite_add_tcase(s, tc);
	tc = tcase_create("within");
	tcase_add_loop_test(tc, test_within, 0, COUNT(withins));
	tcase_add_test(tc, test_within_null);
	suite_add_tcase(s, tc);
	return unit_run(s);
}
