/*
 * reply.c - SMTP reply templates: parse "CODE X.Y.Z text" once, expand per
 * verdict.
 *
 * Owns nothing: templates and output buffers belong to the caller. Parsing is
 * strict (4xx/5xx code, RFC 3463 enhanced code whose class matches the code,
 * printable ASCII text, known escapes only) so that a bad reply is a config
 * error, never a surprise in front of a client. Expansion treats every value
 * as hostile: control characters and non-ASCII octets become '?', so an
 * address can never add a line to the reply.
 */
#include "reply.h"

#include <stdio.h>
#include <string.h>

/* is_digit - ASCII decimal digit? */
static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* is_safe - printable ASCII, the only octets a reply may carry */
static bool is_safe(unsigned char c)
{
	return c >= 0x20 && c < 0x7f;
}

/* parse_code - "550": [45][0-5][0-9]; advances *s */
static bool parse_code(const char **s, struct reply_template *out, char *why, size_t why_size)
{
	const char *p = *s;

	if (!is_digit(p[0]) || !is_digit(p[1]) || !is_digit(p[2]) || (p[3] != ' ' && p[3] != '\0')) {
		snprintf(why, why_size, "reply must start with a 3-digit code such as 550");
		return false;
	}
	if (p[0] != '4' && p[0] != '5') {
		snprintf(why, why_size, "reply code %.3s is not 4xx or 5xx", p);
		return false;
	}
	if (p[1] > '5') {
		snprintf(why, why_size, "reply code %.3s: second digit must be 0..5", p);
		return false;
	}
	memcpy(out->code, p, 3);
	out->code[3] = '\0';
	*s = p + 3;
	return true;
}

/* digits - length of a run of 1..3 digits at s, or 0 */
static size_t digits(const char *s)
{
	size_t n = 0;

	while (is_digit(s[n]))
		n++;
	return n <= 3 ? n : 0;
}

/* parse_ecode - RFC 3463 "class.subject.detail", class equal to code[0] */
static bool parse_ecode(const char **s, struct reply_template *out, char *why, size_t why_size)
{
	const char *p = *s;
	size_t n1 = digits(p);
	size_t n2 = n1 == 1 && p[1] == '.' ? digits(p + 2) : 0;
	size_t n3 = n2 && p[2 + n2] == '.' ? digits(p + 3 + n2) : 0;
	size_t len = n3 ? 3 + n2 + n3 : 0;

	if (len == 0 || (p[len] != ' ' && p[len] != '\0')) {
		snprintf(why, why_size,
		         "reply code %s must be followed by an enhanced status code such as %c.1.7",
		         out->code, out->code[0]);
		return false;
	}
	if (p[0] != out->code[0]) {
		snprintf(why, why_size,
		         "enhanced status code %.*s does not match reply code %s (class must be %c)",
		         (int)len, p, out->code, out->code[0]);
		return false;
	}
	memcpy(out->ecode, p, len);
	out->ecode[len] = '\0';
	*s = p + len;
	return true;
}

/* check_text - non-empty, printable ASCII, bounded, known escapes only */
static bool check_text(const char *text, char *why, size_t why_size)
{
	size_t len = strlen(text);

	if (len == 0) {
		snprintf(why, why_size, "reply text is empty");
		return false;
	}
	if (len > REPLY_TEXT_MAX) {
		snprintf(why, why_size, "reply text is %zu octets, more than %d", len, REPLY_TEXT_MAX);
		return false;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)text[i];
		if (!is_safe(c)) {
			snprintf(why, why_size, "reply text has a non-printable or non-ASCII octet 0x%02x",
			         c);
			return false;
		}
		if (c != '%')
			continue;
		char e = text[++i];
		if (e == '\0') {
			snprintf(why, why_size,
			         "reply text ends in a lone %%; write %%%% for a percent sign");
			return false;
		}
		if (strchr("aorm%", e) == NULL) {
			snprintf(why, why_size,
			         "unknown escape %%%c in reply text (use %%a, %%r, %%o, %%m or %%%%)",
			         is_safe((unsigned char)e) ? e : '?');
			return false;
		}
	}
	return true;
}

/* reply_parse - parse "CODE X.Y.Z text" into out */
bool reply_parse(const char *spec, struct reply_template *out, char *why, size_t why_size)
{
	struct reply_template t;
	const char *p = spec;

	memset(&t, 0, sizeof(t));
	if (!parse_code(&p, &t, why, why_size))
		return false;
	while (*p == ' ')
		p++;
	if (!parse_ecode(&p, &t, why, why_size))
		return false;
	while (*p == ' ')
		p++;
	if (!check_text(p, why, why_size))
		return false;
	memcpy(t.text, p, strlen(p) + 1);
	*out = t;
	return true;
}

/* put - append c to buf if room remains (one octet kept for the NUL) */
static void put(char *buf, size_t size, size_t *len, char c)
{
	if (*len + 1 < size)
		buf[(*len)++] = c;
}

/* put_value - append a hostile value, unsafe octets as '?' */
static void put_value(char *buf, size_t size, size_t *len, const char *value)
{
	if (value == NULL)
		return;
	for (const unsigned char *v = (const unsigned char *)value; *v != '\0' && *len + 1 < size; v++)
		put(buf, size, len, is_safe(*v) ? (char)*v : '?');
}

/* escape_value - the variable an escape letter names; NULL for none */
static const char *escape_value(char e, const struct reply_vars *vars)
{
	if (vars == NULL)
		return NULL;
	switch (e) {
	case 'a':
		return vars->address;
	case 'r':
		return vars->reason;
	case 'o':
		return vars->outcome;
	case 'm':
		return vars->remote;
	default:
		return NULL;
	}
}

/* reply_expand - expand t->text with vars into buf, truncating to fit */
size_t reply_expand(const struct reply_template *t, const struct reply_vars *vars, char *buf, size_t size)
{
	size_t len = 0;

	if (size == 0)
		return 0;
	for (const char *p = t->text; *p != '\0' && len + 1 < size; p++) {
		if (*p != '%') {
			put(buf, size, &len, is_safe((unsigned char)*p) ? *p : '?');
			continue;
		}
		p++;
		if (*p == '\0')
			break;
		if (*p == '%')
			put(buf, size, &len, '%');
		else
			put_value(buf, size, &len, escape_value(*p, vars));
	}
	buf[len] = '\0';
	return len;
}

/* reply_bare_address - the sender without its angle brackets */
void reply_bare_address(const char *sender, char *out, size_t size)
{
	size_t len = strlen(sender);
	if (len >= 2 && sender[0] == '<' && sender[len - 1] == '>')
		snprintf(out, size, "%.*s", (int)(len - 2), sender + 1);
	else
		snprintf(out, size, "%s", sender);
}

/* reply_double_percent - libmilter treats reply text as a format */
void reply_double_percent(const char *in, char *out, size_t size)
{
	size_t n = 0;
	for (; *in != '\0' && n + 2 < size; in++) {
		if (*in == '%')
			out[n++] = '%';
		out[n++] = *in;
	}
	out[n] = '\0';
}
