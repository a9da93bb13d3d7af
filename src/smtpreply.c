/*
 * smtpreply.c - parse SMTP replies one line at a time (RFC 5321 4.2) and
 * pick out RFC 3463 enhanced status codes and the EHLO keywords we use.
 *
 * Owns nothing: the parser state lives in the caller's struct. Pure and
 * bounded: every limit (line length, number of lines, kept text) is checked
 * before it matters, nothing is allocated, and the kept text is printable
 * ASCII only, so a hostile server cannot smuggle control characters into
 * logs or replies.
 */
#include "smtpreply.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* is_digit - ASCII decimal digit? */
static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* fail - record why the reply is malformed; sticky until the next init */
static enum smtp_reply_status fail(struct smtp_reply_parser *p, const char *why)
{
	snprintf(p->error, sizeof(p->error), "%s", why);
	return SMTP_REPLY_ERROR;
}

/* smtp_reply_init - an empty parser, ready for the first line */
void smtp_reply_init(struct smtp_reply_parser *p)
{
	memset(p, 0, sizeof(*p));
}

/* parse_code - the 3-digit reply code at the start of line, or -1 */
static int parse_code(const char *line, size_t len)
{
	if (len < 3 || !is_digit(line[0]) || !is_digit(line[1]) || !is_digit(line[2]))
		return -1;
	if (line[0] < '2' || line[0] > '5')
		return -1;
	return (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
}

/* digit_run - length of the run of 1..3 digits at s (n octets), 0 if none or longer */
static size_t digit_run(const char *s, size_t n)
{
	size_t i = 0;

	while (i < n && is_digit(s[i]))
		i++;
	return i <= 3 ? i : 0;
}

/* parse_ecode - length of an enhanced code "c.sss.ddd" at text whose class is
 * the reply code's first digit (and 2, 4 or 5), followed by a space or the end;
 * 0 if there is none */
static size_t parse_ecode(const char *text, size_t n, char code_class)
{
	if (n < 5 || text[0] != code_class || text[1] != '.')
		return 0;
	if (code_class != '2' && code_class != '4' && code_class != '5')
		return 0;
	size_t i = 2, d = digit_run(text + i, n - i);
	if (d == 0 || i + d >= n || text[i + d] != '.')
		return 0;
	i += d + 1;
	d = digit_run(text + i, n - i);
	if (d == 0)
		return 0;
	i += d;
	if (i < n && text[i] != ' ')
		return 0;
	return i;
}

/* append_text - add one line's text to the joined text, sanitized and bounded */
static void append_text(struct smtp_reply *r, const char *text, size_t n)
{
	size_t have = strlen(r->text);

	if (n == 0)
		return;
	if (have > 0 && have < SMTP_REPLY_TEXT_MAX)
		r->text[have++] = ' ';
	for (size_t i = 0; i < n && have < SMTP_REPLY_TEXT_MAX; i++) {
		unsigned char c = (unsigned char)text[i];
		r->text[have++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	r->text[have] = '\0';
}

/* note_keyword - an EHLO line's first word, if it is a keyword we track */
static void note_keyword(struct smtp_reply *r, const char *text, size_t n)
{
	static const struct {
		const char *name;
		unsigned cap;
	} keywords[] = {
	        {"STARTTLS", SMTP_CAP_STARTTLS},
	        {"SMTPUTF8", SMTP_CAP_SMTPUTF8},
	        {"PIPELINING", SMTP_CAP_PIPELINING},
	        {"8BITMIME", SMTP_CAP_8BITMIME},
	};
	size_t word = 0;

	while (word < n && text[word] != ' ')
		word++;
	for (size_t i = 0; i < sizeof(keywords) / sizeof(keywords[0]); i++) {
		if (strlen(keywords[i].name) == word && strncasecmp(text, keywords[i].name, word) == 0)
			r->caps |= keywords[i].cap;
	}
}

/* take_text - the text after "ddd-"/"ddd ": enhanced code noted and removed,
 * surrounding spaces trimmed, then appended */
static void take_text(struct smtp_reply *r, const char *text, size_t n, bool first)
{
	if (r->code == 250 && !first)
		note_keyword(r, text, n);
	while (n > 0 && text[0] == ' ')
		text++, n--;
	size_t e = parse_ecode(text, n, (char)('0' + r->code / 100));
	if (e > 0) {
		if (first)
			snprintf(r->ecode, sizeof(r->ecode), "%.*s", (int)e, text);
		text += e, n -= e;
		while (n > 0 && text[0] == ' ')
			text++, n--;
	}
	while (n > 0 && (text[n - 1] == ' ' || text[n - 1] == '\t'))
		n--;
	append_text(r, text, n);
}

/* smtp_reply_line - feed one line; see smtpreply.h */
enum smtp_reply_status smtp_reply_line(struct smtp_reply_parser *p, const char *line, size_t len)
{
	struct smtp_reply *r = &p->reply;
	char why[80];

	if (p->error[0] != '\0')
		return SMTP_REPLY_ERROR;
	if (p->complete)
		return fail(p, "line after the end of the reply");
	if (len > SMTP_LINE_MAX) {
		snprintf(why, sizeof(why), "line too long (%zu octets, at most %d)", len, SMTP_LINE_MAX);
		return fail(p, why);
	}
	if (r->lines >= SMTP_REPLY_MAX_LINES)
		return fail(p, "reply has too many lines");
	int code = parse_code(line, len);
	if (code < 0)
		return fail(p, "reply does not start with a 3-digit code 2xx..5xx");
	if (r->lines > 0 && code != r->code) {
		snprintf(why, sizeof(why), "reply code changed from %d to %d within a reply", r->code, code);
		return fail(p, why);
	}
	if (len > 3 && line[3] != ' ' && line[3] != '-')
		return fail(p, "bad separator after the reply code");
	r->code = code;
	bool first = r->lines == 0;
	r->lines++;
	if (len > 4)
		take_text(r, line + 4, len - 4, first);
	if (len > 3 && line[3] == '-')
		return SMTP_REPLY_MORE;
	p->complete = true;
	return SMTP_REPLY_DONE;
}
