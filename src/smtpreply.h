/*
 * smtpreply.h - parse SMTP replies (RFC 5321 4.2, RFC 3463 enhanced codes).
 *
 * Fed one line at a time (without CRLF) by the SMTP client; pure and bounded:
 * a reply longer than SMTP_REPLY_MAX_LINES lines or with a line over
 * SMTP_LINE_MAX octets is an error, never an allocation. Also notes the EHLO
 * keywords the probe cares about.
 */
#ifndef VEMILTER_SMTPREPLY_H
#define VEMILTER_SMTPREPLY_H

#include <stdbool.h>
#include <stddef.h>

#define SMTP_LINE_MAX        1000 /* octets per line without CRLF (RFC 5321 allows 512) */
#define SMTP_REPLY_MAX_LINES 64   /* lines in one multi-line reply */
#define SMTP_REPLY_TEXT_MAX  512  /* joined text kept */

enum smtp_cap {
	SMTP_CAP_STARTTLS = 1 << 0,
	SMTP_CAP_SMTPUTF8 = 1 << 1,
	SMTP_CAP_PIPELINING = 1 << 2,
	SMTP_CAP_8BITMIME = 1 << 3,
};

struct smtp_reply {
	int code;       /* 3 digits, same on every line */
	char ecode[16]; /* from the first line, "" if none */
	/* lines' text joined by " ", enhanced code removed, printable ASCII */
	char text[SMTP_REPLY_TEXT_MAX + 1];
	unsigned lines;
	unsigned caps; /* enum smtp_cap bits seen as EHLO keywords */
};

enum smtp_reply_status {
	SMTP_REPLY_MORE,  /* a continuation line: feed the next */
	SMTP_REPLY_DONE,  /* the last line: reply complete */
	SMTP_REPLY_ERROR, /* malformed or over a limit: see parser->error */
};

struct smtp_reply_parser {
	struct smtp_reply reply;
	char error[120]; /* why SMTP_REPLY_ERROR; "" otherwise */
	bool complete;   /* the last line was seen: more lines are an error */
};

void smtp_reply_init(struct smtp_reply_parser *p);

/* smtp_reply_line - feed one line (len octets, no CRLF, need not be
 * NUL-terminated). An error is sticky; after DONE, init again for the next
 * reply. */
enum smtp_reply_status smtp_reply_line(struct smtp_reply_parser *p, const char *line, size_t len);

#endif
