/*
 * outcome.c - names of outcome classes and probe stages, and filling an
 * outcome safely. Owns nothing; pure.
 */
#include "outcome.h"

#include <stdio.h>
#include <string.h>

static const char *const kind_names[OUTCOME_KIND_COUNT] = {
        [OUTCOME_VALID] = "valid",
        [OUTCOME_INVALID] = "invalid",
        [OUTCOME_NO_DOMAIN] = "no_domain",
        [OUTCOME_CATCH_ALL] = "catch_all",
        [OUTCOME_TEMPFAIL] = "tempfail",
        [OUTCOME_BLOCKED] = "blocked",
        [OUTCOME_UNVERIFIABLE] = "unverifiable",
};

static const char *const stage_names[] = {
        [STAGE_NONE] = "none",       [STAGE_DNS] = "dns",           [STAGE_GUARD] = "guard",
        [STAGE_CONNECT] = "connect", [STAGE_BANNER] = "banner",     [STAGE_EHLO] = "ehlo",
        [STAGE_HELO] = "helo",       [STAGE_STARTTLS] = "starttls", [STAGE_TLS] = "tls",
        [STAGE_MAIL] = "mail",       [STAGE_RCPT] = "rcpt",         [STAGE_CATCHALL] = "catchall",
        [STAGE_QUIT] = "quit",
};

/* outcome_name - "valid", "invalid", ... */
const char *outcome_name(enum outcome_kind kind)
{
	if ((unsigned)kind < OUTCOME_KIND_COUNT)
		return kind_names[kind];
	return "unknown";
}

/* outcome_from_name - the reverse of outcome_name */
bool outcome_from_name(const char *name, enum outcome_kind *kind)
{
	for (unsigned i = 0; i < OUTCOME_KIND_COUNT; i++) {
		if (strcmp(name, kind_names[i]) == 0) {
			*kind = (enum outcome_kind)i;
			return true;
		}
	}
	return false;
}

/* probe_stage_name - "banner", "rcpt", ... */
const char *probe_stage_name(enum probe_stage stage)
{
	if ((unsigned)stage < sizeof(stage_names) / sizeof(stage_names[0]))
		return stage_names[stage];
	return "unknown";
}

/* outcome_is_definite - only these may reject mail by default */
bool outcome_is_definite(enum outcome_kind kind)
{
	return kind == OUTCOME_INVALID || kind == OUTCOME_NO_DOMAIN;
}

/* copy_printable - bounded copy; control and 8-bit octets become '?' */
static void copy_printable(char *dst, size_t size, const char *src)
{
	size_t n = 0;
	for (; src != NULL && *src != '\0' && n + 1 < size; src++) {
		unsigned char c = (unsigned char)*src;
		dst[n++] = c >= ' ' && c < 0x7f ? (char)c : '?';
	}
	dst[n] = '\0';
}

/* outcome_set - see outcome.h; mx_host and mx_addr are left as they are */
void outcome_set(struct outcome *o, enum outcome_kind kind, enum probe_stage stage, int code,
                 const char *ecode, const char *text, const char *reason)
{
	o->kind = kind;
	o->stage = stage;
	o->code = code >= 0 && code <= 999 ? code : 0;
	copy_printable(o->ecode, sizeof(o->ecode), ecode);
	copy_printable(o->text, sizeof(o->text), text);
	copy_printable(o->reason, sizeof(o->reason), reason);
}
