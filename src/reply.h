/*
 * reply.h - SMTP reply templates: "CODE X.Y.Z text with %a and %r".
 *
 * A template is parsed once from the config and expanded per verdict into
 * caller-provided storage. Expansion never lets a value inject CR, LF or other
 * control characters into the reply (the sender address is attacker data).
 *
 * Escapes: %a address, %r reason, %o outcome, %m remote server's reply,
 * %% a literal percent sign. A variable with no value expands to "".
 */
#ifndef VEMILTER_REPLY_H
#define VEMILTER_REPLY_H

#include <stdbool.h>
#include <stddef.h>

#define REPLY_TEXT_MAX 400 /* keeps a reply line well under RFC 5321's 512 octets */

struct reply_template {
	char code[4];                  /* "553": 4xx or 5xx */
	char ecode[16];                /* "5.1.7": class digit matches code */
	char text[REPLY_TEXT_MAX + 1]; /* unexpanded text */
};

struct reply_vars {
	const char *address;
	const char *reason;
	const char *outcome;
	const char *remote;
};

/* reply_parse - parse "CODE X.Y.Z text". On failure writes a reason into why. */
bool reply_parse(const char *spec, struct reply_template *out, char *why, size_t why_size);

/* reply_expand - expand t->text with vars into buf (always NUL-terminated,
 * truncated to fit). Control characters and non-ASCII octets in values become
 * '?'. Returns the length written. */
size_t reply_expand(const struct reply_template *t, const struct reply_vars *vars, char *buf, size_t size);

/* reply_bare_address - the sender as the MTA gave it, without its angle
 * brackets (templates write "<%a>" themselves), cut to fit out (size > 0). */
void reply_bare_address(const char *sender, char *out, size_t size);

/* reply_double_percent - libmilter treats reply text as a format, so every
 * "%" of in becomes "%%" in out (size > 0; cut to fit, never in the middle
 * of a "%%"). Used on the expanded text just before smfi_setreply. */
void reply_double_percent(const char *in, char *out, size_t size);

#endif
