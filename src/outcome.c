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

/* The names of enum outcome_flag bits, in logs, vemilter-check and vemilter-cache. */
static const struct {
	unsigned bit;
	const char *name;
} flag_names[] = {
        {OUTCOME_F_NOT_CATCHALL, "not_catchall"},
        {OUTCOME_F_FALLBACK_SENDER, "fallback_sender"},
        {OUTCOME_F_GREYLIST, "greylist"},
        {OUTCOME_F_PROTOCOL, "protocol"},
        {OUTCOME_F_LOOP, "loop"},
        {OUTCOME_F_TAGGED, "tagged"},
        {OUTCOME_F_LIMITED, "limited"},
};

/* append - ",name" (or "name" first) to buf of size at *len; false when it does not fit */
static bool append(char *buf, size_t size, size_t *len, const char *name)
{
	int n = snprintf(buf + *len, size - *len, "%s%s", *len == 0 ? "" : ",", name);
	if (n < 0 || (size_t)n >= size - *len) {
		buf[*len] = '\0';
		return false;
	}
	*len += (size_t)n;
	return true;
}

/* outcome_flags_text - see outcome.h */
void outcome_flags_text(unsigned flags, char *buf, size_t size)
{
	size_t len = 0;
	if (size == 0)
		return;
	buf[0] = '\0';
	for (size_t i = 0; i < sizeof(flag_names) / sizeof(flag_names[0]); i++) {
		if (!(flags & flag_names[i].bit))
			continue;
		flags &= ~flag_names[i].bit;
		if (!append(buf, size, &len, flag_names[i].name))
			return;
	}
	if (flags != 0) { /* a bit without a name: show it, never hide it */
		char hex[16];
		snprintf(hex, sizeof(hex), "0x%x", flags);
		append(buf, size, &len, hex);
	}
}

/* outcome_flag_from_name - see outcome.h */
bool outcome_flag_from_name(const char *name, unsigned *bit)
{
	for (size_t i = 0; i < sizeof(flag_names) / sizeof(flag_names[0]); i++) {
		if (strcmp(name, flag_names[i].name) == 0) {
			*bit = flag_names[i].bit;
			return true;
		}
	}
	return false;
}
