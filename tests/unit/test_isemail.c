/*
 * test_isemail.c - addr_parse() against the isemail test vectors
 * (tests/testdata/isemail/tests.xml and tests-original.xml, BSD-3-Clause, see its README.md).
 *
 * Expected envelope verdict: accept exactly the categories that RFC 5321
 * allows (ISEMAIL_VALID_CATEGORY, ISEMAIL_DNSWARN, ISEMAIL_RFC5321), reject
 * everything else (ISEMAIL_ERR, _CFWS, _DEPREC, _RFC5322), except for the few
 * entries of the exceptions table below. All cases of one file run in one
 * Check test; each disagreement is printed to stderr (stdout is TAP) with the
 * figure "isemail FILE: N/M cases agree", and any disagreement fails the test.
 *
 * The XML is read by a small extractor (no XML library): the data files are
 * a fixed snapshot with one element per line, no CDATA, and only the
 * entities decoded in xml_decode().
 */
#include "addr.h"
#include "unit.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define MAX_FIELD 2048

/*
 * Verdicts that differ from the category rule, keyed by diagnosis or by
 * file and test id. accept is the expected envelope verdict.
 */
/* clang-format off */
static const struct exception {
	const char *file;      /* NULL: any file */
	int id;                /* 0: any id */
	const char *diagnosis; /* NULL: any diagnosis */
	bool accept;
	const char *reason;
} exceptions[] = {
	{NULL, 0, "ISEMAIL_RFC5321_TLDNUMERIC", false,
	 "an all-numeric top-level label is rejected; an IP address must be written as an address literal "
	 "[192.0.2.1]"},
	{NULL, 0, "ISEMAIL_RFC5321_IPV6DEPRECATED", false,
	 "RFC 5321 4.1.3 IPv6-comp: \"::\" stands for at least two zero groups; meta.xml 3.05 moved this "
	 "diagnosis to ISEMAIL_DEPREC, tests-original.xml (3.04) still files it under ISEMAIL_RFC5321"},
	{"tests-original.xml", 279, NULL, false,
	 "test@xn--example.com: xn--example is not a valid A-label (it decodes to an upper-case U-label "
	 "that IDNA2008 disallows), and an invalid A-label is rejected"},
};
/* clang-format on */

/* The counts documented in isemail/README.md: a check on the extractor. */
/* clang-format off */
static const struct {
	const char *file;
	int tests;
} files[] = {
	{"tests.xml", 164},
	{"tests-original.xml", 279},
};
/* clang-format on */

struct xcase {
	int id;
	char address[MAX_FIELD];
	size_t address_len;
	char category[128];
	char diagnosis[128];
};

/* put_utf8 - append code point cp as UTF-8; false if it does not fit */
static bool put_utf8(char *out, size_t size, size_t *o, uint32_t cp)
{
	unsigned char b[4];
	size_t n;

	if (cp < 0x80) {
		b[0] = (unsigned char)cp;
		n = 1;
	} else if (cp < 0x800) {
		b[0] = (unsigned char)(0xc0 | cp >> 6);
		b[1] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		b[0] = (unsigned char)(0xe0 | cp >> 12);
		b[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
		b[2] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		b[0] = (unsigned char)(0xf0 | cp >> 18);
		b[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
		b[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
		b[3] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	if (*o + n >= size)
		return false;
	memcpy(out + *o, b, n);
	*o += n;
	return true;
}

/* put_cp - append code point cp; U+2400..U+241F (control pictures) become bytes 0x00..0x1F */
static bool put_cp(char *out, size_t size, size_t *o, uint32_t cp)
{
	if (cp >= 0x2400 && cp <= 0x241f) {
		if (*o + 1 >= size)
			return false;
		out[(*o)++] = (char)(cp - 0x2400);
		return true;
	}
	return put_utf8(out, size, o, cp);
}

/* char_ref - decode the entity at s[0..n) (after '&', before ';') into *cp */
static bool char_ref(const char *s, size_t n, uint32_t *cp)
{
	static const struct {
		const char *name;
		char c;
	} named[] = {{"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}, {"apos", '\''}};
	unsigned long v = 0;
	int base = 10;
	size_t i = 1;

	for (size_t k = 0; k < sizeof(named) / sizeof(named[0]); k++)
		if (strlen(named[k].name) == n && memcmp(s, named[k].name, n) == 0) {
			*cp = (uint32_t)named[k].c;
			return true;
		}
	if (n < 2 || s[0] != '#')
		return false;
	if (s[1] == 'x' || s[1] == 'X') {
		base = 16;
		i = 2;
	}
	if (i == n)
		return false;
	for (; i < n; i++) {
		int d = s[i] >= '0' && s[i] <= '9'   ? s[i] - '0'
		        : s[i] >= 'a' && s[i] <= 'f' ? s[i] - 'a' + 10
		        : s[i] >= 'A' && s[i] <= 'F' ? s[i] - 'A' + 10
		                                     : 99;
		if (d >= base || v > 0x10ffff)
			return false;
		v = v * (unsigned long)base + (unsigned long)d;
	}
	if (v > 0x10ffff)
		return false;
	*cp = (uint32_t)v;
	return true;
}

/*
 * xml_decode - decode XML text s[0..n) into out (NUL-terminated, *len bytes,
 * may contain NULs): entities, then control pictures, literal or as entities.
 */
static bool xml_decode(const char *s, size_t n, char *out, size_t size, size_t *len)
{
	size_t o = 0;

	for (size_t i = 0; i < n;) {
		const unsigned char *u = (const unsigned char *)s + i;
		if (s[i] == '&') {
			const char *semi = memchr(s + i, ';', n - i);
			uint32_t cp;
			if (semi == NULL || !char_ref(s + i + 1, (size_t)(semi - s - i - 1), &cp) ||
			    !put_cp(out, size, &o, cp))
				return false;
			i = (size_t)(semi - s) + 1;
		} else if (n - i >= 3 && u[0] == 0xe2 && u[1] == 0x90 && u[2] >= 0x80 && u[2] <= 0x9f) {
			if (!put_cp(out, size, &o, 0x2400 + (uint32_t)(u[2] - 0x80)))
				return false;
			i += 3;
		} else if (s[i] == '<') {
			return false; /* markup inside a text field: the extractor is lost */
		} else {
			if (o + 1 >= size)
				return false;
			out[o++] = s[i++];
		}
	}
	out[o] = '\0';
	*len = o;
	return true;
}

/*
 * element - decode the text of <name>..</name> (or the empty <name/>) found in
 * block[0..n) into out. False if the element is missing or undecodable.
 */
static bool element(const char *block, size_t n, const char *name, char *out, size_t size, size_t *len)
{
	char open[64], empty[64], close[64];
	const char *p, *q;

	snprintf(open, sizeof(open), "<%s>", name);
	snprintf(empty, sizeof(empty), "<%s/>", name);
	snprintf(close, sizeof(close), "</%s>", name);
	if (memmem(block, n, empty, strlen(empty)) != NULL) {
		out[0] = '\0';
		*len = 0;
		return true;
	}
	p = memmem(block, n, open, strlen(open));
	if (p == NULL)
		return false;
	p += strlen(open);
	q = memmem(p, n - (size_t)(p - block), close, strlen(close));
	if (q == NULL)
		return false;
	return xml_decode(p, (size_t)(q - p), out, size, len);
}

/* parse_case - fill *c from one <test id="N"> ... </test> block */
static bool parse_case(const char *block, size_t n, struct xcase *c)
{
	size_t len;
	char *end;

	errno = 0;
	long id = strtol(block + strlen("<test id=\""), &end, 10);
	if (errno != 0 || id <= 0 || *end != '"')
		return false;
	c->id = (int)id;
	return element(block, n, "address", c->address, sizeof(c->address), &c->address_len) &&
	       element(block, n, "category", c->category, sizeof(c->category), &len) &&
	       element(block, n, "diagnosis", c->diagnosis, sizeof(c->diagnosis), &len);
}

/* expected - the envelope verdict for c; *exc is set when an exception decided it */
static bool expected(const char *file, const struct xcase *c, const struct exception **exc)
{
	*exc = NULL;
	for (size_t i = 0; i < sizeof(exceptions) / sizeof(exceptions[0]); i++) {
		const struct exception *e = &exceptions[i];
		if ((e->file == NULL || strcmp(e->file, file) == 0) && (e->id == 0 || e->id == c->id) &&
		    (e->diagnosis == NULL || strcmp(e->diagnosis, c->diagnosis) == 0)) {
			*exc = e;
			return e->accept;
		}
	}
	return strcmp(c->category, "ISEMAIL_VALID_CATEGORY") == 0 ||
	       strcmp(c->category, "ISEMAIL_DNSWARN") == 0 || strcmp(c->category, "ISEMAIL_RFC5321") == 0;
}

/*
 * verdict - what addr_parse says about c as an envelope mailbox. The empty
 * address is the null sender to addr_parse (a success), but isemail asks
 * whether it is a mailbox, and the null sender is not one: count it as reject.
 */
static bool verdict(const struct xcase *c, char *why, size_t size)
{
	struct addr a;

	why[0] = '\0';
	if (!addr_parse(c->address, c->address_len, &a, why, size))
		return false;
	if (a.is_null) {
		snprintf(why, size, "null sender, not a mailbox");
		return false;
	}
	return true;
}

/* escape - s[0..n) with non-printable bytes as \xNN */
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

/* read_all - the whole file at path, NUL-terminated, malloc'd; NULL with errno on failure */
static char *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t cap = 0, n = 0;
	int err = 0;

	if (f == NULL)
		return NULL;
	while (err == 0) {
		if (n + 4096 + 1 > cap) {
			char *nb = realloc(buf, (cap + 4096) * 2);
			if (nb == NULL) {
				err = ENOMEM;
				break;
			}
			buf = nb;
			cap = (cap + 4096) * 2;
		}
		size_t r = fread(buf + n, 1, cap - n - 1, f);
		n += r;
		if (r == 0)
			err = ferror(f) ? EIO : -1;
	}
	if (fclose(f) != 0 && err <= 0)
		err = errno;
	if (err > 0) {
		free(buf);
		errno = err;
		return NULL;
	}
	buf[n] = '\0';
	*len = n;
	return buf;
}

/*
 * open_testdata - read isemail/FILE from $VEMILTER_TESTDATA (make check sets
 * it to tests/testdata in the source tree), or when that is unset from
 * tests/testdata relative to the working directory. Failure to read fails the
 * test: the conformance check must never be skipped silently.
 */
static char *open_testdata(const char *file, size_t *len)
{
	const char *env = getenv("VEMILTER_TESTDATA");
	const char *dirs[1] = {"tests/testdata"};
	size_t ndirs = 1;
	char path[4096], tried[8192] = "";

	if (env != NULL && env[0] != '\0') {
		dirs[0] = env; /* set: use it alone, so a wrong setting shows */
		ndirs = 1;
	}
	for (size_t i = 0; i < ndirs; i++) {
		snprintf(path, sizeof(path), "%s/isemail/%s", dirs[i], file);
		char *buf = read_all(path, len);
		if (buf != NULL)
			return buf;
		size_t t = strlen(tried);
		snprintf(tried + t, sizeof(tried) - t, " %s (%s)", path, strerror(errno));
	}
	ck_abort_msg("cannot read isemail test data%s; set VEMILTER_TESTDATA to the tests/testdata directory",
	             tried);
	return NULL;
}

/* run_file - check every case of one file; prints mismatches and the figure to stderr */
static void run_file(const char *file, int want_tests)
{
	size_t len;
	char *xml = open_testdata(file, &len);
	struct xcase c;
	char why[256], esc[MAX_FIELD * 4 + 8];
	int total = 0, agree = 0, by_exception = 0, broken = 0;
	const char *p = xml;

	while ((p = strstr(p, "<test id=\"")) != NULL) {
		const char *end = strstr(p, "</test>");
		if (end == NULL || !parse_case(p, (size_t)(end - p), &c)) {
			fprintf(stderr, "isemail %s: cannot parse the <test> at offset %zu\n", file,
			        (size_t)(p - xml));
			broken++;
			p += strlen("<test id=\"");
			continue;
		}
		p = end;
		total++;
		const struct exception *exc;
		bool want = expected(file, &c, &exc);
		bool got = verdict(&c, why, sizeof(why));
		by_exception += exc != NULL;
		if (want == got) {
			agree++;
			continue;
		}
		fprintf(stderr, "isemail %s id %d: \"%s\" %s %s: expected %s, got %s (%s)%s%s\n", file, c.id,
		        escape(c.address, c.address_len, esc, sizeof(esc)), c.category, c.diagnosis,
		        want ? "accept" : "reject", got ? "accept" : "reject", got ? "-" : why,
		        exc ? "; exception: " : "", exc ? exc->reason : "");
	}
	free(xml);
	fprintf(stderr, "isemail %s: %d/%d cases agree (%d verdicts set by the exception table)\n", file,
	        agree, total, by_exception);
	ck_assert_msg(broken == 0, "isemail %s: %d <test> entries could not be parsed", file, broken);
	ck_assert_msg(total == want_tests, "isemail %s: read %d tests, README.md says %d", file, total,
	              want_tests);
	ck_assert_msg(agree == total, "isemail %s: %d of %d cases disagree (see stderr)", file, total - agree,
	              total);
}

START_TEST(test_file)
{
	run_file(files[_i].file, files[_i].tests);
}
END_TEST

/* The extractor itself: entities, control pictures, the empty element. */
START_TEST(test_decode)
{
	static const char xml[] = "<address>a&amp;b&lt;&gt;&quot;&apos;&#65;&#x42;&#xA9;"
	                          "\xe2\x90\x80\xe2\x90\x8d&#x240A;&#x2407;</address>";
	static const char want[] = "a&b<>\"'AB\xc2\xa9\0\r\n\a";
	char out[64];
	size_t len;

	ck_assert(element(xml, sizeof(xml) - 1, "address", out, sizeof(out), &len));
	ck_assert_uint_eq(len, sizeof(want) - 1);
	ck_assert(memcmp(out, want, len) == 0);
	ck_assert(element("<address/>", 10, "address", out, sizeof(out), &len));
	ck_assert_uint_eq(len, 0);
	ck_assert(!element("<address>&bogus;</address>", 26, "address", out, sizeof(out), &len));
	ck_assert(!element("<address>&#x110000;</address>", 29, "address", out, sizeof(out), &len));
	ck_assert(!element("<category>x</category>", 22, "address", out, sizeof(out), &len));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("isemail");
	TCase *tc = tcase_create("isemail");

	tcase_add_test(tc, test_decode);
	tcase_add_loop_test(tc, test_file, 0, (int)(sizeof(files) / sizeof(files[0])));
	suite_add_tcase(s, tc);
	return unit_run(s);
}
