/*
 * dnsttl.c - the TTLs of a DNS response, from its wire form (see dnsttl.h).
 *
 * Owns nothing: a single pass over the caller's buffer with a cursor that
 * only moves forward and is checked against the end before every read.
 */
#include "dnsttl.h"

#define HEADER_LEN    12
#define RR_FIXED      10 /* TYPE, CLASS, TTL, RDLENGTH after the owner name */
#define SOA_NUMBERS   20 /* SERIAL, REFRESH, RETRY, EXPIRE, MINIMUM */
#define NAME_MAX_WIRE 255
#define TYPE_SOA      6
#define CLASS_IN      1

/* cursor over msg[0 .. end) */
struct cur {
	const unsigned char *msg;
	size_t off, end;
};

static bool has(const struct cur *c, size_t n)
{
	return c->off <= c->end && c->end - c->off >= n;
}

static unsigned u16(const unsigned char *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

static uint32_t u32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* ttl_value - a TTL field as seconds: MSB set counts as 0 (RFC 2181 section 8) */
static int64_t ttl_value(uint32_t raw)
{
	return raw > INT32_MAX ? 0 : (int64_t)raw;
}

/* skip_name - step over a name: labels up to the root label, or up to a
 * compression pointer, which ends the name here. Where it points is not
 * read, but it must point before itself, as every encoder's pointers do
 * (to a name written earlier): a pointer to itself or forward is how
 * compression loops are made, and marks a damaged or hostile packet.
 * false if malformed. */
static bool skip_name(struct cur *c)
{
	size_t wire = 0;
	for (;;) {
		if (!has(c, 1))
			return false;
		unsigned len = c->msg[c->off];
		if ((len & 0xC0) == 0xC0) {
			if (!has(c, 2) || ((size_t)(len & 0x3F) << 8 | c->msg[c->off + 1]) >= c->off)
				return false;
			c->off += 2;
			return true;
		}
		if ((len & 0xC0) != 0)
			return false; /* 0x40 and 0x80: no such label types in use */
		wire += len + 1;
		if (wire > NAME_MAX_WIRE || !has(c, 1 + (size_t)len))
			return false;
		c->off += 1 + (size_t)len;
		if (len == 0)
			return true;
	}
}

/* soa_negative - the SOA RDATA at c, exactly rdlen octets: min(ttl, MINIMUM) */
static bool soa_negative(struct cur c, size_t rdlen, int64_t ttl, int64_t *negative)
{
	c.end = c.off + rdlen; /* names must stay inside the RDATA */
	if (!skip_name(&c) || !skip_name(&c) || !has(&c, SOA_NUMBERS) || c.end - c.off != SOA_NUMBERS)
		return false;
	int64_t minimum = ttl_value(u32(c.msg + c.off + 16));
	*negative = ttl < minimum ? ttl : minimum;
	return true;
}

/* dnsttl_scan - see dnsttl.h */
bool dnsttl_scan(const unsigned char *msg, size_t len, struct dnsttl *out)
{
	out->answer_s = out->negative_s = DNSTTL_NONE;
	struct cur c = {.msg = msg, .off = 0, .end = len};
	if (msg == NULL || !has(&c, HEADER_LEN))
		return false;
	unsigned qd = u16(msg + 4), an = u16(msg + 6), ns = u16(msg + 8);
	c.off = HEADER_LEN;
	for (unsigned i = 0; i < qd; i++) {
		if (!skip_name(&c) || !has(&c, 4))
			return false;
		c.off += 4;
	}
	int64_t answer = DNSTTL_NONE, negative = DNSTTL_NONE;
	for (unsigned i = 0; i < an + ns && negative == DNSTTL_NONE; i++) {
		if (!skip_name(&c) || !has(&c, RR_FIXED))
			return false;
		const unsigned char *rr = msg + c.off;
		unsigned type = u16(rr), class = u16(rr + 2);
		int64_t ttl = ttl_value(u32(rr + 4));
		size_t rdlen = u16(rr + 8);
		c.off += RR_FIXED;
		if (!has(&c, rdlen))
			return false;
		if (i < an) {
			if (answer == DNSTTL_NONE || ttl < answer)
				answer = ttl;
		} else if (type == TYPE_SOA && class == CLASS_IN && !soa_negative(c, rdlen, ttl, &negative)) {
			return false;
		}
		c.off += rdlen;
	}
	out->answer_s = answer;
	out->negative_s = negative;
	return true;
}
