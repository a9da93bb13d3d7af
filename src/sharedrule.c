/*
 * sharedrule.c - key names, the Lua scripts and backoffs of the shared
 * Redis cache (see sharedrule.h). Pure: no state, no I/O.
 *
 * The scripts read a record's header the way cacherec.c writes it
 * (versions 1 and 2): octet 1 the version, octet 2 the kind (enum
 * outcome_kind: 0 valid, 1 invalid, 2 no_domain, 3 catch_all, 4 tempfail,
 * 5 blocked, 6 unverifiable), then from octet 17 (1-based) probed_at,
 * refresh_at and expires_at as little-endian int64 (struct.unpack "<i8",
 * read into Lua numbers: exact up to 2^53 ms, far past any real time).
 * A test checks the kind numbers and offsets against cacherec.c's output.
 */
#include "sharedrule.h"

#include <stdio.h>
#include <string.h>

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
