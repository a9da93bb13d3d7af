/*
 * fuzz_smtpreply.c - smtp_reply_line() on arbitrary lines (src/smtpreply.h).
 *
 * The input is split into lines on '\n' (a '\r' stays in the line, as a
 * hostile server could send it) and fed to one parser until DONE or ERROR.
 * After DONE one more line must be an ERROR; then the parser is initialized
 * again and the remaining lines form the next reply. Checked after every
 * line: text and ecode NUL-terminated printable ASCII within their bounds,
 * lines within SMTP_REPLY_MAX_LINES, error "" unless ERROR and non-empty
 * printable when ERROR, and a code of 100..599 when DONE.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtpreply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond)                                                                                          \
	do {                                                                                                 \
		if (!(cond)) {                                                                               \
			fprintf(stderr, "fuzz_smtpreply: invariant failed: %s (line %d)\n", #cond,           \
			        __LINE__);                                                                   \
			abort();                                                                             \
		}                                                                                            \
	} while (0)

/* printable - s (NUL within size) is printable ASCII; empty allowed */
static int printable(const char *s, size_t size)
{
	const char *end = memchr(s, '\0', size);
	if (end == NULL)
		return 0;
	for (; s < end; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			return 0;
	return 1;
}

static void check_state(const struct smtp_reply_parser *p, enum smtp_reply_status st)
{
	const struct smtp_reply *r = &p->reply;

	check(st == SMTP_REPLY_MORE || st == SMTP_REPLY_DONE || st == SMTP_REPLY_ERROR);
	check(printable(r->text, sizeof(r->text)));
	check(strlen(r->text) <= SMTP_REPLY_TEXT_MAX);
	check(printable(r->ecode, sizeof(r->ecode)));
	check(printable(p->error, sizeof(p->error)));
	check((r->caps & ~(unsigned)(SMTP_CAP_STARTTLS | SMTP_CAP_SMTPUTF8 | SMTP_CAP_PIPELINING |
	                             SMTP_CAP_8BITMIME)) == 0);
	if (st == SMTP_REPLY_ERROR) {
		check(p->error[0] != '\0');
		return;
	}
	check(p->error[0] == '\0');
	check(r->lines >= 1 && r->lines <= SMTP_REPLY_MAX_LINES);
	check(r->code >= 100 && r->code <= 999);
	if (st == SMTP_REPLY_DONE) {
		check(r->code >= 100 && r->code <= 599);
		check(p->complete);
		if (r->ecode[0] != '\0')
			check(r->ecode[0] == (char)('0' + r->code / 100));
	} else {
		check(!p->complete);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_reply_parser p;
	const char *s = (const char *)data, *end = s + size;
	int replies = 0;

	smtp_reply_init(&p);
	while (s < end && replies < 16) {
		const char *nl = memchr(s, '\n', (size_t)(end - s));
		size_t len = nl != NULL ? (size_t)(nl - s) : (size_t)(end - s);
		/* an exact-size copy: an over-read past the line is caught by ASan */
		char *line = malloc(len > 0 ? len : 1);
		if (line == NULL)
			return 0;
		memcpy(line, s, len);
		enum smtp_reply_status st = smtp_reply_line(&p, line, len);
		check_state(&p, st);
		if (st == SMTP_REPLY_DONE) {
			/* the reply is complete: another line is an error */
			struct smtp_reply_parser after = p;
			check(smtp_reply_line(&after, line, len) == SMTP_REPLY_ERROR);
			check(after.error[0] != '\0');
		}
		free(line);
		s = nl != NULL ? nl + 1 : end;
		if (st == SMTP_REPLY_ERROR)
			break;
		if (st == SMTP_REPLY_DONE) {
			replies++;
			smtp_reply_init(&p);
		}
	}
	return 0;
}
