/*
 * addr.c - envelope address parsing (RFC 5321 4.1.2 Mailbox, RFC 6531).
 *
 * Owns the grammar of the envelope sender: angle brackets, the null sender,
 * source routes (checked, then dropped), Dot-string and Quoted-string local
 * parts (UTF-8 allowed), domain names (U-labels turned into A-labels with
 * libidn2, A-labels checked) and IPv4/IPv6 address literals. It writes only
 * into the caller's struct addr and why buffer: no global state, and every
 * libidn2 result is freed before returning.
 */
#include "addr.h"

#include <arpa/inet.h>
#include <idn2.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/*
 * RFC 5321 4.1.3: an IPv6 literal has 8 groups, 6 before an IPv4 part; "::"
 * stands for at least two zero groups, so at most 6 (4 with IPv4) others.
 */
#define IPV6_GROUPS    8
#define IPV6_V4_GROUPS 6

/* fail - write a printf-style reason into why, forced to printable ASCII; returns false */
__attribute__((format(printf, 3, 4))) static bool fail(char *why, size_t size, const char *fmt, ...)
{
	va_list ap;

	if (why == NULL || size == 0)
		return false;
	va_start(ap, fmt);
	int n = vsnprintf(why, size, fmt, ap);
	va_end(ap);
	if (n < 0)
		snprintf(why, size, "invalid address");
	for (char *p = why; *p != '\0'; p++)
		if (*p < 0x20 || *p > 0x7e)
			*p = '?';
	return false;
}

/* fail_char - reject byte c found in the part named where, without echoing raw bytes */
static bool fail_char(char *why, size_t size, unsigned char c, const char *where)
{
	if (c == '\r' || c == '\n')
		return fail(why, size, "CR or LF in %s", where);
	if (c == '(')
		return fail(why, size, "comments are not allowed in an envelope address");
	if (c >= 0x80)
		return fail(why, size, "non-ASCII character in %s", where);
	if (c > 0x20 && c < 0x7f && c != '\'')
		return fail(why, size, "unexpected character '%c' in %s", c, where);
	return fail(why, size, "unexpected character 0x%02x in %s", c, where);
}

/* is_ws - true for the white space an envelope must not have around it */
static bool is_ws(unsigned char c)
{
	return c == ' ' || c == '\t';
}

/* is_alnum - ASCII letter or digit, locale-independent */
static bool is_alnum(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* is_atext - RFC 5322 atext, ASCII part */
static bool is_atext(unsigned char c)
{
	return is_alnum(c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* to_lower - ASCII lower case, locale-independent */
static char to_lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/*
 * utf8_seq - length (2-4) of the well-formed UTF-8 sequence at s (RFC 3629:
 * no overlongs, no surrogates, nothing above U+10FFFF), 0 if ill-formed or if
 * it encodes a C1 control (U+0080-U+009F).
 */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	unsigned char lo = 0x80, hi = 0xbf;
	size_t len;

	if (c >= 0xc2 && c <= 0xdf)
		len = 2;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4;
	else
		return 0;
	if (len > n)
		return 0;
	if (c == 0xc2)
		lo = 0xa0; /* C1 controls */
	else if (c == 0xe0)
		lo = 0xa0; /* overlong */
	else if (c == 0xed)
		hi = 0x9f; /* surrogates */
	else if (c == 0xf0)
		lo = 0x90; /* overlong */
	else if (c == 0xf4)
		hi = 0x8f; /* above U+10FFFF */
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return len;
}

/* scan_dot_string - RFC 5321 Dot-string (atext may be UTF-8) up to '@'; sets *end */
static bool scan_dot_string(const unsigned char *s, size_t n, size_t *end, bool *utf8, char *why, size_t wsz)
{
	size_t i = 0;

	while (i < n && s[i] != '@') {
		if (s[i] == '.') {
			if (i == 0)
				return fail(why, wsz, "local part starts with a dot");
			if (s[i - 1] == '.')
				return fail(why, wsz, "local part has consecutive dots");
			i++;
		} else if (is_atext(s[i])) {
			i++;
		} else if (s[i] == '"') {
			return fail(why, wsz, "a quoted string must be the whole local part");
		} else if (s[i] >= 0x80) {
			size_t k = utf8_seq(s + i, n - i);
			if (k == 0)
				return fail(why, wsz, "invalid UTF-8 in local part");
			*utf8 = true;
			i += k;
		} else {
			return fail_char(why, wsz, s[i], "local part");
		}
	}
	if (i == n)
		return fail(why, wsz, "missing @");
	if (i == 0)
		return fail(why, wsz, "missing local part");
	if (s[i - 1] == '.')
		return fail(why, wsz, "local part ends with a dot");
	*end = i;
	return true;
}

/* scan_quoted - RFC 5321 Quoted-string (qtextSMTP may be UTF-8) plus the '@'; sets *end */
static bool scan_quoted(const unsigned char *s, size_t n, size_t *end, bool *utf8, char *why, size_t wsz)
{
	size_t i = 1;

	for (;;) {
		if (i >= n)
			return fail(why, wsz, "unterminated quoted string");
		unsigned char c = s[i];
		if (c == '"')
			break;
		if (c == '\\') {
			if (i + 1 >= n)
				return fail(why, wsz, "unterminated quoted string");
			if (s[i + 1] < 0x20 || s[i + 1] > 0x7e)
				return fail(why, wsz, "invalid quoted pair in local part");
			i += 2;
		} else if (c >= 0x20 && c <= 0x7e) {
			i++;
		} else if (c >= 0x80) {
			size_t k = utf8_seq(s + i, n - i);
			if (k == 0)
				return fail(why, wsz, "invalid UTF-8 in local part");
			*utf8 = true;
			i += k;
		} else {
			return fail_char(why, wsz, c, "quoted local part");
		}
	}
	i++;
	if (i == n)
		return fail(why, wsz, "missing @");
	if (s[i] == '.')
		return fail(why, wsz, "a quoted string must be the whole local part");
	if (s[i] != '@')
		return fail_char(why, wsz, s[i], "local part after the quoted string");
	*end = i;
	return true;
}

/* ipv4_literal - strict dotted quad: four 0-255 numbers, no leading zeros */
static bool ipv4_literal(const char *s, size_t n)
{
	size_t i = 0;

	for (int part = 0; part < 4; part++) {
		unsigned v = 0;

		if (part > 0 && (i >= n || s[i++] != '.'))
			return false;
		size_t start = i;
		while (i < n && s[i] >= '0' && s[i] <= '9' && i - start < 3)
			v = v * 10 + (unsigned)(s[i++] - '0');
		if (i == start || v > 255 || (s[start] == '0' && i - start > 1))
			return false;
	}
	return i == n;
}

/* check_label - one A-label-form domain label: length, LDH, no leading/trailing hyphen */
static bool check_label(const char *l, size_t n, const char *what, char *why, size_t wsz)
{
	if (n == 0)
		return fail(why, wsz, "%s has an empty label", what);
	if (n > 63)
		return fail(why, wsz, "%s label is longer than 63 octets", what);
	if (l[0] == '-')
		return fail(why, wsz, "%s label starts with a hyphen", what);
	if (l[n - 1] == '-')
		return fail(why, wsz, "%s label ends with a hyphen", what);
	for (size_t i = 0; i < n; i++)
		if (!is_alnum((unsigned char)l[i]) && l[i] != '-')
			return fail_char(why, wsz, (unsigned char)l[i], what);
	return true;
}

/* check_labels - every label of the NUL-terminated A-label form d, and the numeric-TLD rule */
static bool check_labels(const char *d, const char *what, char *why, size_t wsz)
{
	size_t len = strlen(d), start = 0;

	if (len > ADDR_DOMAIN_MAX)
		return fail(why, wsz, "%s is longer than 255 octets", what);
	for (size_t i = 0; i <= len; i++) {
		if (i < len && d[i] != '.')
			continue;
		if (!check_label(d + start, i - start, what, why, wsz))
			return false;
		start = i + 1;
	}
	for (size_t i = len; i > 0 && d[i - 1] != '.'; i--)
		if (d[i - 1] < '0' || d[i - 1] > '9')
			return true;
	if (ipv4_literal(d, len))
		return fail(why, wsz, "numeric domain: use an address literal [%s]", d);
	return fail(why, wsz, "top-level %s label is all-numeric", what);
}

/* has_alabel - true when some label of the NUL-terminated d starts with "xn--" */
static bool has_alabel(const char *d)
{
	for (const char *p = d; p != NULL; p = strchr(p, '.')) {
		if (*p == '.')
			p++;
		if (strncmp(p, "xn--", 4) == 0)
			return true;
	}
	return false;
}

/*
 * to_alabels - the A-label form of the NUL-terminated domain d into out[256].
 * IDNA2008 with UTS #46 non-transitional mapping: U-labels are NFC-normalized
 * and case-folded, A-labels are decoded and must round-trip. No fallback to
 * transitional processing: it maps e.g. "ß" to "ss" and drops ZWJ/ZWNJ, which
 * names a different domain than the one the sender used.
 */
static bool to_alabels(const char *d, char *out, const char *what, char *why, size_t wsz)
{
	uint8_t *res = NULL;
	int rc = idn2_lookup_u8((const uint8_t *)d, &res, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);

	if (rc != IDN2_OK) {
		idn2_free(res);
		return fail(why, wsz, "invalid internationalized %s: %s", what, idn2_strerror(rc));
	}
	size_t len = strlen((const char *)res);
	if (len > ADDR_DOMAIN_MAX) {
		idn2_free(res);
		return fail(why, wsz, "%s is longer than 255 octets", what);
	}
	for (size_t i = 0; i <= len; i++)
		out[i] = to_lower((char)res[i]);
	idn2_free(res);
	return true;
}

/*
 * domain_name - check the sub-domain *("." sub-domain) s[0..n) and write its
 * lower-case A-label form into ascii[ADDR_DOMAIN_MAX + 1].
 */
static bool domain_name(const unsigned char *s, size_t n, char *ascii, const char *what, char *why,
                        size_t wsz)
{
	char buf[ADDR_DOMAIN_MAX + 1];
	bool utf8 = false;

	if (n == 0)
		return fail(why, wsz, "missing %s", what);
	if (n > ADDR_DOMAIN_MAX)
		return fail(why, wsz, "%s is longer than 255 octets", what);
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '.') {
			if (i == 0)
				return fail(why, wsz, "%s starts with a dot", what);
			if (s[i - 1] == '.')
				return fail(why, wsz, "%s has consecutive dots", what);
			if (i == n - 1)
				return fail(why, wsz, "%s ends with a dot", what);
		} else if (s[i] >= 0x80) {
			size_t k = utf8_seq(s + i, n - i);
			if (k == 0)
				return fail(why, wsz, "invalid UTF-8 in %s", what);
			utf8 = true;
			i += k - 1;
		} else if (!is_alnum(s[i]) && s[i] != '-') {
			return fail_char(why, wsz, s[i], what);
		}
	}
	for (size_t i = 0; i < n; i++)
		buf[i] = to_lower((char)s[i]); /* ASCII only; idn2 folds the rest */
	buf[n] = '\0';
	if (!utf8 && !check_labels(buf, what, why, wsz))
		return false;
	if (utf8 || has_alabel(buf)) {
		if (!to_alabels(buf, ascii, what, why, wsz))
			return false;
	} else {
		memcpy(ascii, buf, n + 1);
	}
	return check_labels(ascii, what, why, wsz);
}

/* ipv6_groups - count 1*4HEXDIG groups joined by ':' in s[0..n); last may be IPv4 if v4_ok */
static bool ipv6_groups(const char *s, size_t n, bool v4_ok, int *groups, bool *v4)
{
	size_t i = 0;

	*groups = 0;
	*v4 = false;
	while (i < n) {
		const char *colon = memchr(s + i, ':', n - i);
		size_t end = colon ? (size_t)(colon - s) : n;

		if (v4_ok && end == n && memchr(s + i, '.', n - i) != NULL) {
			*v4 = true;
			return ipv4_literal(s + i, n - i);
		}
		if (end == i || end - i > 4)
			return false;
		for (size_t k = i; k < end; k++)
			if (!is_alnum((unsigned char)s[k]) || to_lower(s[k]) > 'f')
				return false;
		(*groups)++;
		if (colon != NULL && end + 1 == n)
			return false; /* trailing ':' */
		i = end + 1;
	}
	return true;
}

/* ipv6_literal - RFC 5321 IPv6-addr (full, comp, v4-full, v4-comp), confirmed by inet_pton */
static bool ipv6_literal(const char *s, size_t n)
{
	char buf[64];
	struct in6_addr a;
	const char *dc = memmem(s, n, "::", 2);
	int left = 0, right = 0;
	bool v4 = false, left_v4;

	if (n >= sizeof(buf))
		return false;
	if (dc == NULL) {
		if (!ipv6_groups(s, n, true, &right, &v4))
			return false;
		if (right + (v4 ? 2 : 0) != IPV6_GROUPS)
			return false;
	} else {
		size_t off = (size_t)(dc - s) + 2;
		if (memmem(s + off, n - off, "::", 2) != NULL)
			return false;
		if (!ipv6_groups(s, off - 2, false, &left, &left_v4) ||
		    !ipv6_groups(s + off, n - off, true, &right, &v4))
			return false;
		if (left + right > (v4 ? IPV6_V4_GROUPS - 2 : IPV6_V4_GROUPS))
			return false;
	}
	memcpy(buf, s, n);
	buf[n] = '\0';
	return inet_pton(AF_INET6, buf, &a) == 1;
}

/* address_literal - "[" IPv4 / "IPv6:" IPv6 "]" in s[0..n); general literals are refused */
static bool address_literal(const char *s, size_t n, struct addr *out, char *why, size_t wsz)
{
	const char *close = memchr(s, ']', n);

	if (close == NULL)
		return fail(why, wsz, "unterminated address literal");
	if ((size_t)(close - s) != n - 1)
		return fail(why, wsz, "unexpected text after the address literal");
	const char *c = s + 1;
	size_t cn = n - 2;
	const char *colon = memchr(c, ':', cn);
	if (colon != NULL && colon - c == 4 && strncasecmp(c, "IPv6", 4) == 0) {
		if (!ipv6_literal(c + 5, cn - 5))
			return fail(why, wsz, "invalid IPv6 address literal");
		out->domain_kind = ADDR_DOMAIN_IPV6;
	} else if (colon != NULL && strspn(c, "0123456789abcdefABCDEF") == (size_t)(colon - c)) {
		/* strspn stops at the ':' at the latest, inside the literal */
		return fail(why, wsz, "an IPv6 address literal needs the IPv6: tag");
	} else if (colon != NULL) {
		return fail(why, wsz, "general address literals are not supported in an envelope");
	} else if (cn > 0 && c[0] >= '0' && c[0] <= '9') {
		if (!ipv4_literal(c, cn))
			return fail(why, wsz, "invalid IPv4 address literal");
		out->domain_kind = ADDR_DOMAIN_IPV4;
	} else {
		return fail(why, wsz, "domain literal is not an IPv4 or IPv6 address literal");
	}
	for (size_t i = 0; i < n; i++)
		out->domain_ascii[i] = to_lower(s[i]);
	out->domain_ascii[n] = '\0';
	return true;
}

/* skip_route - check an RFC 5321 A-d-l ":" at the start of s[0..n) and step over it */
static bool skip_route(const unsigned char *s, size_t n, size_t *pos, char *why, size_t wsz)
{
	char scratch[ADDR_DOMAIN_MAX + 1];
	size_t i = 0;

	if (memchr(s, ':', n) == NULL)
		return fail(why, wsz, "missing local part");
	for (;;) {
		if (i >= n || s[i] != '@')
			return fail(why, wsz, "source route domain must start with @");
		size_t start = ++i;
		while (i < n && s[i] != ',' && s[i] != ':')
			i++;
		if (i == n)
			return fail(why, wsz, "unterminated source route");
		if (!domain_name(s + start, i - start, scratch, "source route domain", why, wsz))
			return false;
		if (s[i++] == ':')
			break;
	}
	*pos = i;
	return true;
}

/* strip_brackets - find the mailbox inside optional "<" ">"; reject surrounding white space */
static bool strip_brackets(const char *in, size_t len, size_t *start, size_t *end, char *why, size_t wsz)
{
	*start = 0;
	*end = len;
	if (is_ws((unsigned char)in[0]))
		return fail(why, wsz, "leading white space in address");
	if (is_ws((unsigned char)in[len - 1]))
		return fail(why, wsz, "trailing white space in address");
	if (in[0] == '<') {
		if (len < 2 || in[len - 1] != '>')
			return fail(why, wsz, "missing > at the end of the address");
		*start = 1;
		*end = len - 1;
		if (*end > *start && (is_ws((unsigned char)in[1]) || is_ws((unsigned char)in[len - 2])))
			return fail(why, wsz, "white space inside the angle brackets");
	} else if (in[len - 1] == '>') {
		return fail(why, wsz, "missing < at the start of the address");
	}
	return true;
}

/* parse_mailbox - Local-part "@" ( Domain / address-literal ) in s[0..n) into out */
static bool parse_mailbox(const unsigned char *s, size_t n, struct addr *out, char *why, size_t wsz)
{
	size_t at = 0;
	bool ok;

	if (n > 0 && s[0] == '"') {
		out->local_quoted = true;
		ok = scan_quoted(s, n, &at, &out->local_utf8, why, wsz);
	} else {
		ok = scan_dot_string(s, n, &at, &out->local_utf8, why, wsz);
	}
	if (!ok)
		return false;
	if (at > ADDR_LOCAL_MAX)
		return fail(why, wsz, "local part is longer than 64 octets");
	memcpy(out->local, s, at);
	out->local[at] = '\0';

	const unsigned char *d = s + at + 1;
	size_t dn = n - at - 1;
	if (dn == 0)
		return fail(why, wsz, "missing domain");
	if (dn > ADDR_DOMAIN_MAX)
		return fail(why, wsz, "domain is longer than 255 octets");
	memcpy(out->domain, d, dn);
	out->domain[dn] = '\0';
	if (d[0] == '[')
		ok = address_literal((const char *)d, dn, out, why, wsz);
	else
		ok = domain_name(d, dn, out->domain_ascii, "domain", why, wsz);
	if (!ok)
		return false;
	if (n > ADDR_PATH_MAX - 2)
		return fail(why, wsz, "address is longer than 254 octets");
	size_t dan = strlen(out->domain_ascii);
	if (at + 1 + dan > ADDR_PATH_MAX - 2)
		return fail(why, wsz, "address is longer than 254 octets in A-label form");
	memcpy(out->normalized, out->local, at);
	out->normalized[at] = '@';
	memcpy(out->normalized + at + 1, out->domain_ascii, dan + 1);
	return true;
}

bool addr_parse(const char *input, size_t len, struct addr *out, char *why, size_t why_size)
{
	size_t start, end, route = 0;

	if (why != NULL && why_size > 0)
		why[0] = '\0';
	if (out == NULL)
		return fail(why, why_size, "internal error: no result buffer");
	memset(out, 0, sizeof(*out));
	if (len == 0) {
		out->is_null = true;
		return true;
	}
	if (input == NULL)
		return fail(why, why_size, "missing address");
	if (!strip_brackets(input, len, &start, &end, why, why_size))
		return false;
	const unsigned char *s = (const unsigned char *)input + start;
	size_t n = end - start;
	if (n == 0) {
		out->is_null = true;
		return true;
	}
	if (s[0] == '@' && !skip_route(s, n, &route, why, why_size))
		return false;
	if (!parse_mailbox(s + route, n - route, out, why, why_size)) {
		memset(out, 0, sizeof(*out));
		return false;
	}
	/* Length checks come last so that a more specific reason wins. */
	if (n + 2 > ADDR_PATH_MAX) {
		memset(out, 0, sizeof(*out));
		return fail(why, why_size, "path is longer than 256 octets");
	}
	return true;
}

bool addr_domain_within(const char *domain, const char *parent)
{
	size_t dl, pl;

	if (domain == NULL || parent == NULL)
		return false;
	dl = strlen(domain);
	pl = strlen(parent);
	if (dl > 0 && domain[dl - 1] == '.')
		dl--;
	if (pl > 0 && parent[pl - 1] == '.')
		pl--;
	if (pl == 0 || dl < pl)
		return false;
	if (strncasecmp(domain + dl - pl, parent, pl) != 0)
		return false;
	return dl == pl || domain[dl - pl - 1] == '.';
}
