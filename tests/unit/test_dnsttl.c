/*
 * test_dnsttl.c - the TTLs read from DNS responses in wire form (dnsttl.c),
 * on packets built here byte by byte: negative TTLs from the authority
 * section's SOA (RFC 2308), answer TTLs, compressed and looping names,
 * truncation at every length, bad lengths, huge TTLs, and random damage.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dnsttl.h"
#include "unit.h"

#define PKT_MAX 1024

struct pkt {
	unsigned char b[PKT_MAX];
	size_t n;
};

static void raw(struct pkt *p, const void *data, size_t len)
{
	ck_assert_uint_le(p->n + len, PKT_MAX);
	memcpy(p->b + p->n, data, len);
	p->n += len;
}

static void u8(struct pkt *p, unsigned v)
{
	unsigned char c = (unsigned char)v;
	raw(p, &c, 1);
}

static void u16(struct pkt *p, unsigned v)
{
	u8(p, v >> 8);
	u8(p, v & 0xff);
}

static void u32(struct pkt *p, uint32_t v)
{
	u16(p, v >> 16);
	u16(p, v & 0xffff);
}

/* name - "a.b" as labels and the root label; "" is the root */
static void name(struct pkt *p, const char *text)
{
	while (*text != '\0') {
		const char *dot = strchr(text, '.');
		size_t len = dot != NULL ? (size_t)(dot - text) : strlen(text);
		u8(p, (unsigned)len);
		raw(p, text, len);
		text += len + (dot != NULL);
	}
	u8(p, 0);
}

/* header - ID 0x1234, QR AA and rcode, the section counts */
static void header(struct pkt *p, unsigned rcode, unsigned qd, unsigned an, unsigned ns, unsigned ar)
{
	p->n = 0;
	u16(p, 0x1234);
	u16(p, 0x8400 | rcode);
	u16(p, qd);
	u16(p, an);
	u16(p, ns);
	u16(p, ar);
}

/* question - QNAME at offset 12, type, class IN */
static void question(struct pkt *p, const char *qname, unsigned type)
{
	name(p, qname);
	u16(p, type);
	u16(p, 1);
}

/* rr_head - owner (a pointer to the question name when NULL), type, class, ttl, rdlength */
static void rr_head(struct pkt *p, const char *owner, unsigned type, unsigned class, uint32_t ttl,
                    unsigned rdlen)
{
	if (owner == NULL)
		u16(p, 0xC00C);
	else
		name(p, owner);
	u16(p, type);
	u16(p, class);
	u32(p, ttl);
	u16(p, rdlen);
}

/* soa - an SOA record with compressed MNAME and RNAME (pointers to the question) */
static void soa(struct pkt *p, uint32_t ttl, uint32_t minimum)
{
	rr_head(p, NULL, 6, 1, ttl, 2 + 2 + 20);
	u16(p, 0xC00C);
	u16(p, 0xC00C);
	u32(p, 2024010101); /* serial */
	u32(p, 3600);       /* refresh */
	u32(p, 600);        /* retry */
	u32(p, 86400);      /* expire */
	u32(p, minimum);
}

/* soa_long - an SOA with uncompressed MNAME and RNAME */
static void soa_long(struct pkt *p, const char *owner, uint32_t ttl, uint32_t minimum)
{
	struct pkt rd = {.n = 0};
	name(&rd, "ns1.example.test");
	name(&rd, "hostmaster.example.test");
	for (int i = 0; i < 4; i++)
		u32(&rd, 1000 + i);
	u32(&rd, minimum);
	rr_head(p, owner, 6, 1, ttl, (unsigned)rd.n);
	raw(p, rd.b, rd.n);
}

/* mx - an MX record for the question name */
static void mx(struct pkt *p, uint32_t ttl, unsigned pref, const char *host)
{
	struct pkt rd = {.n = 0};
	u16(&rd, pref);
	name(&rd, host);
	rr_head(p, NULL, 15, 1, ttl, (unsigned)rd.n);
	raw(p, rd.b, rd.n);
}

/* nxdomain - NXDOMAIN for MX nope.example.test with one SOA in authority */
static void nxdomain(struct pkt *p, uint32_t ttl, uint32_t minimum)
{
	header(p, 3, 1, 0, 1, 0);
	question(p, "nope.example.test", 15);
	soa(p, ttl, minimum);
}

static struct dnsttl scan_ok(const struct pkt *p)
{
	struct dnsttl t;
	ck_assert_msg(dnsttl_scan(p->b, p->n, &t), "packet of %zu octets refused", p->n);
	return t;
}

static void scan_refused(const struct pkt *p)
{
	struct dnsttl t = {.answer_s = 42, .negative_s = 42};
	ck_assert_msg(!dnsttl_scan(p->b, p->n, &t), "bad packet of %zu octets accepted", p->n);
	ck_assert_int_eq(t.answer_s, DNSTTL_NONE);
	ck_assert_int_eq(t.negative_s, DNSTTL_NONE);
}

START_TEST(nxdomain_min_of_ttl_and_minimum)
{
	struct pkt p;
	nxdomain(&p, 300, 60);
	struct dnsttl t = scan_ok(&p);
	ck_assert_int_eq(t.negative_s, 60);
	ck_assert_int_eq(t.answer_s, DNSTTL_NONE);
	nxdomain(&p, 30, 3600);
	ck_assert_int_eq(scan_ok(&p).negative_s, 30);
	nxdomain(&p, 0, 3600);
	ck_assert_int_eq(scan_ok(&p).negative_s, 0);
	nxdomain(&p, 77, 77);
	ck_assert_int_eq(scan_ok(&p).negative_s, 77);
}
END_TEST

START_TEST(nodata_uncompressed_soa_after_other_authority)
{
	struct pkt p;
	header(&p, 0, 1, 0, 3, 0);
	question(&p, "example.test", 28);
	/* an NS record first: skipped */
	rr_head(&p, "example.test", 2, 1, 10, 2);
	u16(&p, 0xC00C);
	soa_long(&p, "example.test", 120, 900);
	soa_long(&p, "example.test", 5, 5); /* only the first SOA counts */
	struct dnsttl t = scan_ok(&p);
	ck_assert_int_eq(t.negative_s, 120);
	ck_assert_int_eq(t.answer_s, DNSTTL_NONE);
}
END_TEST

START_TEST(no_soa_no_negative_ttl)
{
	struct pkt p;
	header(&p, 3, 1, 0, 0, 0);
	question(&p, "nope.test", 15);
	struct dnsttl t = scan_ok(&p);
	ck_assert_int_eq(t.negative_s, DNSTTL_NONE);
	ck_assert_int_eq(t.answer_s, DNSTTL_NONE);

	/* authority with an NS only */
	header(&p, 3, 1, 0, 1, 0);
	question(&p, "nope.test", 15);
	rr_head(&p, "test", 2, 1, 10, 2);
	u16(&p, 0xC00C);
	ck_assert_int_eq(scan_ok(&p).negative_s, DNSTTL_NONE);

	/* an SOA of another class does not count */
	header(&p, 3, 1, 0, 1, 0);
	question(&p, "nope.test", 15);
	rr_head(&p, NULL, 6, 3 /* CH */, 300, 24);
	u16(&p, 0xC00C);
	u16(&p, 0xC00C);
	for (int i = 0; i < 5; i++)
		u32(&p, 60);
	ck_assert_int_eq(scan_ok(&p).negative_s, DNSTTL_NONE);

	/* an SOA in the answer or additional section is not an authority SOA */
	header(&p, 0, 1, 1, 0, 1);
	question(&p, "example.test", 6);
	soa(&p, 300, 60);
	soa(&p, 300, 60);
	struct dnsttl t2 = scan_ok(&p);
	ck_assert_int_eq(t2.negative_s, DNSTTL_NONE);
	ck_assert_int_eq(t2.answer_s, 300);
}
END_TEST

START_TEST(answer_ttl_smallest)
{
	struct pkt p;
	header(&p, 0, 1, 3, 0, 0);
	question(&p, "example.test", 15);
	mx(&p, 200, 10, "mx1.example.test");
	mx(&p, 120, 20, "mx2.example.test");
	mx(&p, 3600, 0, "");
	struct dnsttl t = scan_ok(&p);
	ck_assert_int_eq(t.answer_s, 120);
	ck_assert_int_eq(t.negative_s, DNSTTL_NONE);

	/* a null MX */
	header(&p, 0, 1, 1, 0, 0);
	question(&p, "nullmx.test", 15);
	mx(&p, 120, 0, "");
	ck_assert_int_eq(scan_ok(&p).answer_s, 120);

	/* a CNAME and a NODATA SOA together: both read */
	header(&p, 0, 1, 1, 1, 0);
	question(&p, "alias.test", 15);
	rr_head(&p, NULL, 5, 1, 40, 2);
	u16(&p, 0xC00C);
	soa(&p, 90, 100);
	struct dnsttl t2 = scan_ok(&p);
	ck_assert_int_eq(t2.answer_s, 40);
	ck_assert_int_eq(t2.negative_s, 90);
}
END_TEST

START_TEST(huge_ttls)
{
	struct pkt p;
	nxdomain(&p, 0x7fffffff, 0x7fffffff);
	ck_assert_int_eq(scan_ok(&p).negative_s, 2147483647);
	/* the top bit set: 0 (RFC 2181 section 8), in the TTL or the MINIMUM */
	nxdomain(&p, 0xffffffff, 60);
	ck_assert_int_eq(scan_ok(&p).negative_s, 0);
	nxdomain(&p, 300, 0x80000000);
	ck_assert_int_eq(scan_ok(&p).negative_s, 0);
	header(&p, 0, 1, 2, 0, 0);
	question(&p, "example.test", 15);
	mx(&p, 0x80000001, 10, "mx.example.test");
	mx(&p, 100, 20, "mx2.example.test");
	ck_assert_int_eq(scan_ok(&p).answer_s, 0);
}
END_TEST

START_TEST(truncated_at_every_length)
{
	struct pkt full;
	nxdomain(&full, 300, 60);
	for (size_t n = 0; n < full.n; n++) {
		struct pkt p = full;
		p.n = n;
		scan_refused(&p);
	}
	/* the same with an answer section and uncompressed names */
	header(&full, 0, 1, 1, 1, 0);
	question(&full, "alias.example.test", 15);
	mx(&full, 10, 10, "mx.example.test");
	soa_long(&full, "example.test", 300, 60);
	ck_assert_int_eq(scan_ok(&full).negative_s, 60);
	for (size_t n = 0; n < full.n; n++) {
		struct pkt p = full;
		p.n = n;
		scan_refused(&p);
	}
	struct dnsttl t;
	ck_assert(!dnsttl_scan(NULL, 0, &t));
	ck_assert_int_eq(t.negative_s, DNSTTL_NONE);
}
END_TEST

START_TEST(trailing_records_not_read)
{
	/* what follows the SOA (here: an additional record cut short) is not read */
	struct pkt p;
	nxdomain(&p, 300, 60);
	p.b[11] = 1; /* ARCOUNT 1, and nothing there */
	ck_assert_int_eq(scan_ok(&p).negative_s, 60);
}
END_TEST

START_TEST(bad_rdlength)
{
	struct pkt p;
	/* RDLENGTH past the end of the packet */
	nxdomain(&p, 300, 60);
	size_t rdlen_at = p.n - 24 - 2;
	p.b[rdlen_at] = 0;
	p.b[rdlen_at + 1] = 25;
	scan_refused(&p);
	/* RDLENGTH too short for the names and the five numbers */
	nxdomain(&p, 300, 60);
	p.b[rdlen_at + 1] = 23;
	scan_refused(&p);
	/* RDLENGTH longer than the SOA (trailing octets inside the RDATA) */
	nxdomain(&p, 300, 60);
	p.b[rdlen_at + 1] = 25;
	u8(&p, 0);
	scan_refused(&p);
	/* RDLENGTH 0 */
	header(&p, 3, 1, 0, 1, 0);
	question(&p, "nope.test", 15);
	rr_head(&p, NULL, 6, 1, 300, 0);
	scan_refused(&p);
	/* a name inside the RDATA that runs past RDLENGTH (but not past the packet) */
	header(&p, 3, 1, 0, 1, 0);
	question(&p, "nope.test", 15);
	rr_head(&p, NULL, 6, 1, 300, 3);
	name(&p, "ns1.example.test");
	name(&p, "x");
	for (int i = 0; i < 5; i++)
		u32(&p, 60);
	scan_refused(&p);
}
END_TEST

START_TEST(bad_names)
{
	struct pkt p;
	/* reserved label types 0x40 and 0x80 in the question, the owner, the MNAME */
	for (unsigned bits = 0x40; bits <= 0x80; bits += 0x40) {
		nxdomain(&p, 300, 60);
		p.b[12] = (unsigned char)(bits | 4);
		scan_refused(&p);
		nxdomain(&p, 300, 60);
		p.b[p.n - 36] = (unsigned char)bits; /* the owner's pointer */
		scan_refused(&p);
		nxdomain(&p, 300, 60);
		p.b[p.n - 24] = (unsigned char)bits; /* the MNAME's pointer */
		scan_refused(&p);
	}
	/* a name over 255 octets */
	header(&p, 3, 1, 0, 1, 0);
	for (int i = 0; i < 5; i++) {
		u8(&p, 63);
		for (int j = 0; j < 63; j++)
			u8(&p, 'a');
	}
	u8(&p, 0);
	u16(&p, 15);
	u16(&p, 1);
	soa(&p, 300, 60);
	scan_refused(&p);
	/* exactly 255 octets is fine: 3 x 63 + 62 labels + the root */
	header(&p, 3, 1, 0, 1, 0);
	for (int i = 0; i < 4; i++) {
		unsigned len = i < 3 ? 63 : 61;
		u8(&p, len);
		for (unsigned j = 0; j < len; j++)
			u8(&p, 'b');
	}
	u8(&p, 0);
	u16(&p, 15);
	u16(&p, 1);
	soa(&p, 300, 60);
	ck_assert_int_eq(scan_ok(&p).negative_s, 60);
}
END_TEST

/* loop_packet - NXDOMAIN whose SOA owner is a pointer to itself (self) or
 * whose MNAME and RNAME point at each other (!self) */
static void loop_packet(struct pkt *p, bool self)
{
	header(p, 3, 1, 0, 1, 0);
	question(p, "nope.test", 15);
	size_t owner = p->n;
	rr_head(p, NULL, 6, 1, 300, 24);
	size_t mname = p->n;
	if (self) {
		p->b[owner] = (unsigned char)(0xC0 | owner >> 8);
		p->b[owner + 1] = (unsigned char)(owner & 0xff);
		u16(p, 0xC00C);
		u16(p, 0xC00C);
	} else {
		u16(p, 0xC000 | (unsigned)(mname + 2)); /* MNAME -> RNAME, forward */
		u16(p, 0xC000 | (unsigned)mname);       /* RNAME -> MNAME */
	}
	for (int i = 0; i < 4; i++)
		u32(p, 1);
	u32(p, 45);
}

START_TEST(compression_loops_refused)
{
	/* names are skipped, never followed, so nothing can loop; a pointer
	 * to itself or forward (what a loop needs) marks the packet malformed */
	struct pkt p;
	loop_packet(&p, true);
	scan_refused(&p);
	loop_packet(&p, false);
	scan_refused(&p);
	/* a backward pointer chain is fine: RNAME -> MNAME -> the question */
	loop_packet(&p, false);
	size_t mname = p.n - 24;
	p.b[mname] = 0xC0;
	p.b[mname + 1] = 0x0C;
	ck_assert_int_eq(scan_ok(&p).negative_s, 45);
	/* a pointer cut in half at the end of the packet */
	header(&p, 3, 1, 0, 0, 0);
	u8(&p, 0xC0);
	scan_refused(&p);
}
END_TEST

/* xorshift - a fixed sequence, so a failure can be replayed */
static uint32_t xorshift(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

START_TEST(random_damage_is_harmless)
{
	struct pkt base;
	header(&base, 0, 1, 2, 1, 0);
	question(&base, "example.test", 15);
	mx(&base, 500, 10, "mx1.example.test");
	mx(&base, 400, 20, "mx2.example.test");
	soa_long(&base, "example.test", 300, 60);
	uint32_t seed = 0x9e3779b9u;
	size_t accepted = 0;
	for (int round = 0; round < 20000; round++) {
		struct pkt p = base;
		int flips = 1 + (int)(xorshift(&seed) % 4);
		for (int i = 0; i < flips; i++)
			p.b[xorshift(&seed) % p.n] = (unsigned char)xorshift(&seed);
		if (xorshift(&seed) % 4 == 0)
			p.n = xorshift(&seed) % p.n;
		/* an exact-size copy: an over-read shows up under valgrind/ASan */
		unsigned char *copy = malloc(p.n > 0 ? p.n : 1);
		ck_assert_ptr_nonnull(copy);
		memcpy(copy, p.b, p.n);
		struct dnsttl t;
		bool ok = dnsttl_scan(copy, p.n, &t);
		free(copy);
		if (!ok) {
			ck_assert_int_eq(t.answer_s, DNSTTL_NONE);
			ck_assert_int_eq(t.negative_s, DNSTTL_NONE);
			continue;
		}
		accepted++;
		ck_assert(t.answer_s == DNSTTL_NONE || (t.answer_s >= 0 && t.answer_s <= INT32_MAX));
		ck_assert(t.negative_s == DNSTTL_NONE || (t.negative_s >= 0 && t.negative_s <= INT32_MAX));
	}
	/* the damage is not all fatal: some packets still scan */
	ck_assert_uint_gt(accepted, 100);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("dnsttl");
	TCase *tc = tcase_create("dnsttl");
	tcase_add_test(tc, nxdomain_min_of_ttl_and_minimum);
	tcase_add_test(tc, nodata_uncompressed_soa_after_other_authority);
	tcase_add_test(tc, no_soa_no_negative_ttl);
	tcase_add_test(tc, answer_ttl_smallest);
	tcase_add_test(tc, huge_ttls);
	tcase_add_test(tc, truncated_at_every_length);
	tcase_add_test(tc, trailing_records_not_read);
	tcase_add_test(tc, bad_rdlength);
	tcase_add_test(tc, bad_names);
	tcase_add_test(tc, compression_loops_refused);
	tcase_add_test(tc, random_damage_is_harmless);
	suite_add_tcase(s, tc);
	return unit_run(s);
}
