/*
 * cacherec.c - the pure part of the cache: how long a record lives, when a
 * fresh record may overwrite an old one, the on-disk record format, and the
 * key names. No LMDB, no clock (every time is an argument), no state.
 *
 * Record format, version 2. All integers little-endian; the strings follow
 * the fixed header in this order, without terminators; the record is exactly
 * 50 + the five lengths long (no trailing bytes). Version 1 records (header
 * of 40 octets, flags 0, no deferral fields) are still read.
 *
 *   offset size field          meaning
 *        0    1 version        2
 *        1    1 kind           enum outcome_kind, < OUTCOME_KIND_COUNT
 *        2    1 stage          enum probe_stage, a stage with a name
 *        3    1 flags          enum outcome_flag bits (unknown bits: damaged)
 *        4    2 code           SMTP reply code, 0..999 (0: none)
 *        6    2 ecode_len      0..15   enhanced status code
 *        8    2 text_len       0..300  remote reply text (OUTCOME_TEXT_MAX)
 *       10    2 reason_len     0..199  our explanation
 *       12    2 mx_host_len    0..255  MX host that answered
 *       14    2 mx_addr_len    0..63   its address
 *       16    8 probed_at_ms   int64, ms since the epoch
 *       24    8 refresh_at_ms  int64
 *       32    8 expires_at_ms  int64
 *       40    8 deferred_since int64 (v2 only)
 *       48    1 tries          greylist re-probes (v2 only)
 *       49    1 reserved       0 (v2 only)
 *       50    . ecode, text, reason, mx_host, mx_addr (v1: at 40)
 *
 * A string never holds a NUL or a control octet (< 0x20, 0x7f); encode turns
 * such octets into '?', decode rejects them. Decode also rejects another
 * version, a short or long buffer, a length past its bound, an unknown kind,
 * stage or flag, and a code over 999: a damaged record is a miss.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "cache.h"

#define FORMAT_VERSION 2
#define HEADER_SIZE    50
#define V1_HEADER_SIZE 40
#define KNOWN_FLAGS                                                                                          \
	(OUTCOME_F_NOT_CATCHALL | OUTCOME_F_FALLBACK_SENDER | OUTCOME_F_GREYLIST | OUTCOME_F_PROTOCOL |      \
	 OUTCOME_F_LOOP | OUTCOME_F_TAGGED | OUTCOME_F_LIMITED)
#define STRING_COUNT 5

#define FIELD(name)                                                                                          \
	{                                                                                                    \
		offsetof(struct outcome, name), sizeof(((struct outcome *)0)->name)                          \
	}

/* The strings of a record, in format order: where in struct outcome, capacity. */
static const struct {
	size_t offset, capacity;
} string_fields[STRING_COUNT] = {
        FIELD(ecode), FIELD(text), FIELD(reason), FIELD(mx_host), FIELD(mx_addr),
};

/* add_ms - now + span, saturating instead of overflowing */
static int64_t add_ms(int64_t now_ms, int64_t span_ms)
{
	if (span_ms < 0)
		span_ms = 0;
	if (now_ms > INT64_MAX - span_ms)
		return INT64_MAX;
	return now_ms + span_ms;
}

/* lifetimes - ttl and refresh for an outcome class; refresh == ttl: none */
static void lifetimes(const struct conf *conf, enum outcome_kind kind, int64_t *ttl_ms, int64_t *refresh_ms)
{
	switch (kind) {
	case OUTCOME_VALID:
		*ttl_ms = conf->positive_ttl_ms;
		*refresh_ms = conf->positive_refresh_ms;
		break;
	case OUTCOME_INVALID:
	case OUTCOME_NO_DOMAIN:
		*ttl_ms = conf->negative_ttl_ms;
		*refresh_ms = conf->negative_refresh_ms;
		break;
	case OUTCOME_CATCH_ALL:
	case OUTCOME_UNVERIFIABLE:
		*ttl_ms = *refresh_ms = conf->inconclusive_ttl_ms;
		break;
	default: /* tempfail, blocked, and anything unknown: the shortest */
		*ttl_ms = *refresh_ms = conf->temporary_ttl_ms;
		break;
	}
	if (*refresh_ms > *ttl_ms)
		*refresh_ms = *ttl_ms;
}

/* cache_record_make - see cache.h */
void cache_record_make(const struct conf *conf, const struct outcome *outcome, int64_t now_ms,
                       struct cache_record *out)
{
	int64_t ttl_ms, refresh_ms;
	lifetimes(conf, outcome->kind, &ttl_ms, &refresh_ms);
	if (outcome->ttl_cap_ms > 0 && outcome->ttl_cap_ms < ttl_ms)
		ttl_ms = outcome->ttl_cap_ms;
	if (refresh_ms > ttl_ms)
		refresh_ms = ttl_ms;
	memset(out, 0, sizeof(*out));
	out->outcome = *outcome;
	out->outcome.ttl_cap_ms = 0;
	out->probed_at_ms = now_ms;
	out->refresh_at_ms = add_ms(now_ms, refresh_ms);
	out->expires_at_ms = add_ms(now_ms, ttl_ms);
}

/* is_temporary - a non-answer: the probe could not find out this time */
static bool is_temporary(enum outcome_kind kind)
{
	return kind == OUTCOME_TEMPFAIL || kind == OUTCOME_BLOCKED;
}

/* is_answer - an answer worth keeping over a temporary failure */
static bool is_answer(enum outcome_kind kind)
{
	return kind == OUTCOME_VALID || kind == OUTCOME_INVALID || kind == OUTCOME_NO_DOMAIN ||
	       kind == OUTCOME_CATCH_ALL;
}

/* is_negative - an answer that rejects mail */
static bool is_negative(enum outcome_kind kind)
{
	return kind == OUTCOME_INVALID || kind == OUTCOME_NO_DOMAIN;
}

/* cache_record_may_replace - see cache.h */
bool cache_record_may_replace(const struct cache_record *old, const struct cache_record *fresh,
                              int64_t now_ms)
{
	if (now_ms >= old->expires_at_ms)
		return true;
	if (!is_temporary(fresh->outcome.kind) || !is_answer(old->outcome.kind))
		return true;
	/* A stale negative is never served (stale evidence never rejects):
	 * the temporary outcome of its refresh is what is true now. */
	return is_negative(old->outcome.kind) && now_ms >= old->refresh_at_ms;
}

/* cache_record_continue_deferral - see cache.h */
void cache_record_continue_deferral(const struct conf *conf, struct cache_record *rec,
                                    const struct cache_record *prev, int64_t now_ms)
{
	if (!is_temporary(rec->outcome.kind)) {
		rec->deferred_since_ms = 0;
		rec->tries = 0;
		return;
	}
	int64_t since = now_ms;
	unsigned tries = 0;
	if (prev != NULL && is_temporary(prev->outcome.kind)) {
		since = prev->deferred_since_ms > 0 ? prev->deferred_since_ms : prev->probed_at_ms;
		tries = prev->tries;
	}
	if (since > now_ms) /* the wall clock went back: never a start in the future */
		since = now_ms;
	rec->deferred_since_ms = since;
	rec->tries = tries;
	if (conf->defer_limit_ms > 0) {
		int64_t keep = add_ms(add_ms(since, conf->defer_limit_ms), CACHE_DEFER_MARGIN_MS);
		if (keep > rec->expires_at_ms)
			rec->expires_at_ms = keep;
	}
}

/* cache_record_stamp_refresh - see cache.h */
void cache_record_stamp_refresh(const struct conf *conf, struct cache_record *rec, int64_t now_ms)
{
	int64_t ttl_ms, refresh_ms;
	lifetimes(conf, rec->outcome.kind, &ttl_ms, &refresh_ms);
	int64_t next = add_ms(now_ms, refresh_ms);
	rec->refresh_at_ms = next < rec->expires_at_ms ? next : rec->expires_at_ms;
}

/* put_u16 / put_i64 - little-endian stores */
static void put_u16(unsigned char *p, unsigned v)
{
	p[0] = (unsigned char)(v & 0xff);
	p[1] = (unsigned char)((v >> 8) & 0xff);
}

static void put_i64(unsigned char *p, int64_t v)
{
	uint64_t u = (uint64_t)v;
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)((u >> (8 * i)) & 0xff);
}

/* get_u16 / get_i64 - little-endian loads */
static unsigned get_u16(const unsigned char *p)
{
	return (unsigned)p[0] | (unsigned)p[1] << 8;
}

static int64_t get_i64(const unsigned char *p)
{
	uint64_t u = 0;
	for (int i = 0; i < 8; i++)
		u |= (uint64_t)p[i] << (8 * i);
	return (int64_t)u;
}

/* is_control - octets a stored string may not hold */
static bool is_control(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

/* stage_known - a stage with a name (keeps in step with outcome.c) */
static bool stage_known(unsigned stage)
{
	return strcmp(probe_stage_name((enum probe_stage)stage), "unknown") != 0;
}

/* cache_record_encode - see cache.h and the format above */
size_t cache_record_encode(const struct cache_record *rec, unsigned char *buf, size_t size)
{
	const struct outcome *o = &rec->outcome;
	size_t lens[STRING_COUNT], total = HEADER_SIZE;
	if ((unsigned)o->kind >= OUTCOME_KIND_COUNT || !stage_known((unsigned)o->stage))
		return 0;
	for (int i = 0; i < STRING_COUNT; i++) {
		const char *s = (const char *)o + string_fields[i].offset;
		lens[i] = strnlen(s, string_fields[i].capacity - 1);
		total += lens[i];
	}
	if (total > size)
		return 0;
	buf[0] = FORMAT_VERSION;
	buf[1] = (unsigned char)o->kind;
	buf[2] = (unsigned char)o->stage;
	buf[3] = (unsigned char)(o->flags & KNOWN_FLAGS);
	put_u16(buf + 4, o->code >= 0 && o->code <= 999 ? (unsigned)o->code : 0);
	for (int i = 0; i < STRING_COUNT; i++)
		put_u16(buf + 6 + 2 * i, (unsigned)lens[i]);
	put_i64(buf + 16, rec->probed_at_ms);
	put_i64(buf + 24, rec->refresh_at_ms);
	put_i64(buf + 32, rec->expires_at_ms);
	put_i64(buf + 40, rec->deferred_since_ms);
	buf[48] = (unsigned char)(rec->tries > 255 ? 255 : rec->tries);
	buf[49] = 0;
	unsigned char *p = buf + HEADER_SIZE;
	for (int i = 0; i < STRING_COUNT; i++) {
		const char *s = (const char *)o + string_fields[i].offset;
		for (size_t j = 0; j < lens[i]; j++)
			*p++ = is_control((unsigned char)s[j]) ? '?' : (unsigned char)s[j];
	}
	return total;
}

/* decode_strings - the five strings after the header; false if any is bad */
static bool decode_strings(const unsigned char *buf, size_t len, size_t header, struct outcome *o)
{
	size_t offset = header;
	for (int i = 0; i < STRING_COUNT; i++) {
		size_t n = get_u16(buf + 6 + 2 * i);
		char *s = (char *)o + string_fields[i].offset;
		if (n >= string_fields[i].capacity || n > len - offset)
			return false;
		for (size_t j = 0; j < n; j++) {
			if (is_control(buf[offset + j]))
				return false;
			s[j] = (char)buf[offset + j];
		}
		s[n] = '\0';
		offset += n;
	}
	return offset == len;
}

/* cache_record_decode - see cache.h and the format above */
bool cache_record_decode(const unsigned char *buf, size_t len, struct cache_record *out)
{
	memset(out, 0, sizeof(*out));
	if (buf == NULL || len < V1_HEADER_SIZE || (buf[0] != FORMAT_VERSION && buf[0] != 1))
		return false;
	size_t header = buf[0] == 1 ? V1_HEADER_SIZE : HEADER_SIZE;
	unsigned allowed_flags = buf[0] == 1 ? 0 : KNOWN_FLAGS;
	if (len < header)
		return false;
	unsigned code = get_u16(buf + 4);
	if (buf[1] >= OUTCOME_KIND_COUNT || !stage_known(buf[2]) || (buf[3] & ~allowed_flags) != 0 ||
	    code > 999 || (header == HEADER_SIZE && buf[49] != 0))
		return false;
	out->outcome.kind = (enum outcome_kind)buf[1];
	out->outcome.flags = buf[3];
	out->outcome.stage = (enum probe_stage)buf[2];
	out->outcome.code = (int)code;
	out->probed_at_ms = get_i64(buf + 16);
	out->refresh_at_ms = get_i64(buf + 24);
	out->expires_at_ms = get_i64(buf + 32);
	if (header == HEADER_SIZE) {
		out->deferred_since_ms = get_i64(buf + 40);
		out->tries = buf[48];
	}
	if (!decode_strings(buf, len, header, &out->outcome)) {
		memset(out, 0, sizeof(*out));
		return false;
	}
	return true;
}

/* make_key - prefix + name, or "" when it does not fit (never a cut key) */
static void make_key(const char *prefix, const char *name, char *buf, size_t size)
{
	if (size == 0)
		return;
	int n = snprintf(buf, size, "%s%s", prefix, name != NULL ? name : "");
	if (n < 0 || (size_t)n >= size || name == NULL || name[0] == '\0')
		buf[0] = '\0';
}

/* cache_key_address - "a:" + normalized address */
void cache_key_address(const char *normalized, char *buf, size_t size)
{
	make_key("a:", normalized, buf, size);
}

/* cache_key_domain - "d:" + A-label domain */
void cache_key_domain(const char *domain_ascii, char *buf, size_t size)
{
	make_key("d:", domain_ascii, buf, size);
}

/* cache_key_hints - "h:" + A-label domain */
void cache_key_hints(const char *domain_ascii, char *buf, size_t size)
{
	make_key("h:", domain_ascii, buf, size);
}

/* cache_key_tagged - "t:" + a tagged sender's stable form (tags.h) */
void cache_key_tagged(const char *stable, char *buf, size_t size)
{
	make_key("t:", stable, buf, size);
}
