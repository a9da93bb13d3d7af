/*
 * fuzz_reply.c - reply-template expansion (src/reply.c) with a remote
 * server's text, the way a reject carries it to the client.
 *
 * The input is split at the first NUL: before it, a template spec for
 * reply_parse() (when it does not parse, a fixed template that uses every
 * escape stands in); after it, the remote server's reply, lines separated
 * by LF, fed to smtp_reply_line() as smtp.c does, then through
 * outcome_set() as classify.c stores it and formatted "CODE ECODE TEXT" as
 * milter.c's refuse() does; that is %m. %a is the raw remote bytes
 * (attacker data like the sender), %r and %o the outcome's reason and name.
 *
 * Invariants (abort on violation): a template that parses has a 4xx/5xx
 * code, an ecode whose class digit is the code's and printable text; the
 * expansion is NUL-terminated, its length is the return value, at most
 * REPLY_TEXT_MAX octets (whatever the buffer), printable ASCII only (no
 * CR/LF: a value can never add a line), and a buffer of any smaller size
 * gets a prefix of the same expansion; reply_double_percent() leaves no
 * lone "%"; no leak (ASan).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzzcheck.h"
#include "outcome.h"
#include "reply.h"
#include "smtpreply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char fallback_spec[] = "550 5.1.0 Sender <%a> rejected: %r (%o) remote said: %m %%";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 8192)
		return 0;
	char *in = malloc(size + 1);
	if (in == NULL)
		FAIL();
	memcpy(in, data, size);
	in[size] = '\0';
	size_t spec_len = strlen(in); /* up to the first NUL */
	const char *remote_raw = spec_len < size ? in + spec_len + 1 : "";
	size_t remote_len = spec_len < size ? size - spec_len - 1 : 0;

	struct reply_template t;
	char why[160];
	if (reply_parse(in, &t, why, sizeof(why))) {
		if ((t.code[0] != '4' && t.code[0] != '5') || strlen(t.code) != 3)
			FAIL();
		if (t.ecode[0] != '\0' && t.ecode[0] != t.code[0])
			FAIL();
		fuzz_check_printable(t.text, REPLY_TEXT_MAX);
	} else {
		fuzz_check_printable(why, sizeof(why) - 1);
		if (!reply_parse(fallback_spec, &t, why, sizeof(why)))
			FAIL();
	}

	/* the remote reply as smtp.c parses it */
	struct smtp_reply_parser p;
	smtp_reply_init(&p);
	enum smtp_reply_status st = SMTP_REPLY_MORE;
	const char *line = remote_raw, *end = remote_raw + remote_len;
	while (line < end && st == SMTP_REPLY_MORE) {
		const char *nl = memchr(line, '\n', (size_t)(end - line));
		size_t n = nl != NULL ? (size_t)(nl - line) : (size_t)(end - line);
		if (n > 0 && line[n - 1] == '\r')
			n--;
		st = smtp_reply_line(&p, line, n);
		line = nl != NULL ? nl + 1 : end;
	}
	struct outcome o;
	if (st == SMTP_REPLY_DONE)
		outcome_set(&o, OUTCOME_INVALID, STAGE_RCPT, p.reply.code, p.reply.ecode, p.reply.text,
		            "the server refused the address");
	else
		outcome_set(&o, OUTCOME_TEMPFAIL, STAGE_RCPT, 0, NULL, NULL, p.error);
	fuzz_check_printable(o.text, OUTCOME_TEXT_MAX);
	char remote[OUTCOME_TEXT_MAX + 32] = "";
	if (o.code != 0)
		snprintf(remote, sizeof(remote), "%d %s %s", o.code, o.ecode, o.text);

	/* %a: the raw bytes, as hostile as a sender address can be */
	struct reply_vars vars = {
	        .address = remote_raw, .reason = o.reason, .outcome = outcome_name(o.kind), .remote = remote};
	char full[REPLY_TEXT_MAX + 1]; /* as milter.c's reply_with() */
	size_t n = reply_expand(&t, &vars, full, sizeof(full));
	if (n != strlen(full) || n > REPLY_TEXT_MAX)
		FAIL();
	fuzz_check_printable(full, REPLY_TEXT_MAX);
	/* a smaller buffer: a prefix of the same text */
	size_t small_size = 1 + (size > 0 ? data[size - 1] % 64 : 0);
	char small[64];
	size_t m = reply_expand(&t, &vars, small, small_size);
	if (m != strlen(small) || m >= small_size || strncmp(small, full, m) != 0)
		FAIL();

	char escaped[2 * REPLY_TEXT_MAX + 1];
	reply_double_percent(full, escaped, sizeof(escaped));
	for (const char *e = escaped; *e != '\0'; e++)
		if (*e == '%' && *++e != '%')
			FAIL();
	free(in);
	return 0;
}
