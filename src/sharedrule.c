/*
 * sharedrule.c - key names, the Lua scripts and backoffs of the shared
 * Redis cache (see sharedrule.h). Pure: no state, no I/O (but
 * shared_host_applies, through localaddr.c, may reread this host's
 * addresses when its list is old).
 *
 * The scripts read a record's header the way cacherec.c writes it
 * (versions 1 and 2): octet 1 the version, octet 2 the kind (enum
 * outcome_kind: 0 valid, 1 invalid, 2 no_domain, 3 catch_all, 4 tempfail,
 * 5 blocked, 6 unverifiable), then from octet 17 (1-based) probed_at,
 * refresh_at and expires_at as little-endian int64 (struct.unpack "<i8",
 * read into Lua numbers: exact up to 2^53 ms, far past any real time).
 * A test checks the kind numbers and offsets against cacherec.c's output.
 *
 * Breaker records (shared_host_*): plain text, so a person reading Redis
 * (or vemilter-cache) sees what a host learned without a decoder.
 */
#include "sharedrule.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "localaddr.h"

/* Keep in step with cache_record_may_replace() (cacherec.c); the unit test
 * compares the two on every pair of kinds and times. */
const char SHARED_LUA_PUT[] = "local function hdr(r)\n"
                              "  if type(r) ~= 'string' or #r < 40 then return nil end\n"
                              "  local v = string.byte(r, 1)\n"
                              "  if v ~= 1 and v ~= 2 then return nil end\n"
                              "  local p, f, x = struct.unpack('<i8i8i8', r, 17)\n"
                              "  return string.byte(r, 2), p, f, x\n"
                              "end\n"
                              "local now = tonumber(ARGV[2])\n"
                              "local fk, fp, ff, fx = hdr(ARGV[1])\n"
                              "if not fk then return redis.error_reply('vemilter: unreadable record') end\n"
                              "if fx <= now then return 0 end\n"
                              "local k, p, f, x = hdr(redis.pcall('HGET', KEYS[1], 'r'))\n"
                              "if k and now < x then\n"
                              "  if fp < p then return 0 end\n"
                              "  local temporary = fk == 4 or fk == 5\n"
                              "  local answer = k <= 3\n"
                              "  local negative = k == 1 or k == 2\n"
                              "  if temporary and answer and not (negative and now >= f) then return 0 end\n"
                              "end\n"
                              "redis.call('DEL', KEYS[1])\n"
                              "redis.call('HSET', KEYS[1], 'r', ARGV[1], 'w', ARGV[4])\n"
                              "redis.call('PEXPIREAT', KEYS[1], ARGV[3])\n"
                              "return 1\n";

const char SHARED_LUA_FETCH[] = "local out = {}\n"
                                "for i, k in ipairs(KEYS) do\n"
                                "  local r = redis.pcall('HGET', k, 'r')\n"
                                "  if type(r) == 'string' then out[i] = r else out[i] = false end\n"
                                "end\n"
                                "return out\n";

const char SHARED_LUA_RELEASE[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                                  "  return redis.call('DEL', KEYS[1])\n"
                                  "end\n"
                                  "return 0\n";

const char SHARED_LUA_RATE[] = "local n = redis.call('INCRBY', KEYS[1], ARGV[1])\n"
                               "if redis.call('PTTL', KEYS[1]) < 0 then\n"
                               "  redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
                               "end\n"
                               "return n\n";

/* prefixed - prefix + key into buf; "" if key is empty or it does not fit */
static void prefixed(const char *prefix, const char *key, char *buf, size_t size)
{
	if (size == 0)
		return;
	buf[0] = '\0';
	if (key == NULL || key[0] == '\0')
		return;
	int n = snprintf(buf, size, "%s%s", prefix, key);
	if (n < 0 || (size_t)n >= size)
		buf[0] = '\0';
}

/* shared_key - see sharedrule.h */
void shared_key(const char *cache_key, char *buf, size_t size)
{
	prefixed(SHARED_PREFIX, cache_key, buf, size);
}

/* shared_lease_key - see sharedrule.h */
void shared_lease_key(const char *cache_key, char *buf, size_t size)
{
	prefixed(SHARED_LEASE_PREFIX, cache_key, buf, size);
}

/* shared_backoff_ms - see sharedrule.h */
int64_t shared_backoff_ms(int64_t prev, int64_t first, int64_t max)
{
	if (prev <= 0)
		return first < max ? first : max;
	return prev >= max / 2 ? max : prev * 2;
}

/* The last millisecond of year 9999: Redis keeps expiry times in ms as a
 * signed 64-bit number and refuses one that overflows when it adds. */
#define EXPIRY_MAX INT64_C(253402300799999)

/* shared_redis_expiry - see sharedrule.h */
int64_t shared_redis_expiry(int64_t expires_at_ms)
{
	return expires_at_ms > EXPIRY_MAX ? EXPIRY_MAX : expires_at_ms;
}

/* shared_host_key - see sharedrule.h */
void shared_host_key(const char *address, char *buf, size_t size)
{
	prefixed(SHARED_HOST_PREFIX, address, buf, size);
}

/* control - a byte no field holds: C0 controls (tab, CR and LF among
 * them) and DEL. A record is one line, and its host name and writer go
 * into log lines and probe transcripts as they are. */
static bool control(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

/* clean - s without control characters (a field must not end early; the
 * text is sanitized printable ASCII already, this is a guard) into a
 * bounded copy */
static void clean(const char *s, char *out, size_t size)
{
	size_t n = 0;
	for (; s != NULL && *s != '\0' && n + 1 < size; s++)
		out[n++] = control((unsigned char)*s) ? ' ' : *s;
	out[n] = '\0';
}

/* shared_host_encode - see sharedrule.h */
size_t shared_host_encode(const struct shared_host_rec *rec, char *buf, size_t size)
{
	char ecode[sizeof(rec->ecode)], writer[sizeof(rec->writer)], host[sizeof(rec->host)];
	char source[sizeof(rec->source)], text[sizeof(rec->text)];
	bool blocked = rec->state == SHARED_HOST_BLOCKED;
	if (!blocked && rec->state != SHARED_HOST_BACKED_OFF)
		return 0;
	clean(blocked ? rec->ecode : "", ecode, sizeof(ecode));
	clean(rec->writer, writer, sizeof(writer));
	clean(rec->source, source, sizeof(source));
	clean(blocked ? rec->host : "", host, sizeof(host));
	clean(blocked ? rec->text : "", text, sizeof(text));
	int n = snprintf(buf, size, "2\t%c\t%lld\t%d\t%d\t%s\t%s\t%s\t%s\t%s", (char)rec->state,
	                 (long long)rec->until_ms, blocked ? rec->stage : 0, blocked ? rec->code : 0, ecode,
	                 writer, source, host, text);
	if (n < 0 || (size_t)n >= size) {
		if (size > 0)
			buf[0] = '\0';
		return 0;
	}
	return (size_t)n;
}

/* field - the next tab-separated field of [*p, end) into out (size
 * bytes); last: up to the end, tabs and all. False when missing, too long,
 * or holding a control character other than the last field's tabs (encode
 * writes none: a record from Redis is not trusted to be ours). */
static bool field(const char **p, const char *end, bool last, char *out, size_t size)
{
	if (*p == NULL || *p > end)
		return false;
	const char *stop = last ? end : memchr(*p, '\t', (size_t)(end - *p));
	if (stop == NULL)
		return false;
	size_t n = (size_t)(stop - *p);
	if (n >= size)
		return false;
	for (size_t i = 0; i < n; i++)
		if (control((unsigned char)(*p)[i]) && (*p)[i] != '\t')
			return false;
	memcpy(out, *p, n);
	out[n] = '\0';
	*p = last ? NULL : stop + 1;
	return true;
}

/* number - a decimal field (an optional '-', then digits) within [lo, hi] */
static bool number(const char *s, long long lo, long long hi, long long *out)
{
	char *end;
	if (s[0] == '\0' || (s[0] != '-' && (s[0] < '0' || s[0] > '9')))
		return false;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

/* shared_host_decode - see sharedrule.h */
bool shared_host_decode(const char *buf, size_t len, struct shared_host_rec *out)
{
	char version[4], state[4], until[24], stage[8], code[8];
	long long u, st, c;
	const char *p = buf, *end = buf + len;
	memset(out, 0, sizeof(*out));
	if (buf == NULL || len > SHARED_HOST_REC_MAX || !field(&p, end, false, version, sizeof(version)) ||
	    (strcmp(version, "1") != 0 && strcmp(version, "2") != 0) ||
	    !field(&p, end, false, state, sizeof(state)) || !field(&p, end, false, until, sizeof(until)) ||
	    !field(&p, end, false, stage, sizeof(stage)) || !field(&p, end, false, code, sizeof(code)) ||
	    !field(&p, end, false, out->ecode, sizeof(out->ecode)) ||
	    !field(&p, end, false, out->writer, sizeof(out->writer)) ||
	    (version[0] == '2' && !field(&p, end, false, out->source, sizeof(out->source))) ||
	    !field(&p, end, false, out->host, sizeof(out->host)) ||
	    !field(&p, end, true, out->text, sizeof(out->text)))
		goto bad;
	if ((strcmp(state, "B") != 0 && strcmp(state, "O") != 0) || !number(until, 0, INT64_MAX / 2, &u) ||
	    !number(stage, 0, 64, &st) || !number(code, 0, 999, &c))
		goto bad;
	out->state = state[0] == 'B' ? SHARED_HOST_BLOCKED : SHARED_HOST_BACKED_OFF;
	out->until_ms = u;
	out->stage = (int)st;
	out->code = (int)c;
	return true;
bad:
	memset(out, 0, sizeof(*out));
	return false;
}

/* shared_host_applies - see sharedrule.h */
bool shared_host_applies(const struct shared_host_rec *rec, struct local_addrs *mine, int64_t now_ms)
{
	if (rec->state == SHARED_HOST_BACKED_OFF)
		return true;
	if (rec->state != SHARED_HOST_BLOCKED || rec->source[0] == '\0' || mine == NULL)
		return false;
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, rec->source, &in4->sin_addr) == 1)
		in4->sin_family = AF_INET;
	else if (inet_pton(AF_INET6, rec->source, &in6->sin6_addr) == 1)
		in6->sin6_family = AF_INET6;
	else
		return false;
	return local_addrs_is_mine(mine, (const struct sockaddr *)&ss, now_ms);
}
