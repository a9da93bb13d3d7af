/*
 * dnsttl.h - how long a DNS response says it holds, read from its wire form.
 *
 * c-ares 1.18 hands its callbacks the raw response but gives no TTL for MX
 * records and reads an SOA only from the answer section, so the negative
 * caching TTL of an NXDOMAIN or NODATA answer (RFC 2308 section 5: the SOA
 * record in the AUTHORITY section, min of its TTL and its MINIMUM field)
 * is found here. Pure: no c-ares, no allocation, no state; every read is
 * bounds-checked and names are skipped, never followed (a compression
 * pointer ends a name; one that does not point backwards is malformed),
 * so no input can loop or read past msg + len.
 *
 * TTLs with the most significant bit set count as 0 (RFC 2181 section 8);
 * the SOA's MINIMUM field is read the same way.
 */
#ifndef VEMILTER_DNSTTL_H
#define VEMILTER_DNSTTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DNSTTL_NONE (-1)

struct dnsttl {
	int64_t answer_s;   /* smallest TTL of the answer section's records (seconds), DNSTTL_NONE if none */
	int64_t negative_s; /* min(TTL, MINIMUM) of the first SOA (class IN) of the authority
	                     * section (seconds), DNSTTL_NONE if there is none */
};

/* dnsttl_scan - read the header, skip the questions, take the smallest TTL
 * of the answer records, then look through the authority records for the
 * first SOA. Stops there: later records and the additional section are not
 * read. false if anything read up to that point is malformed (truncated,
 * a reserved label type, a name over 255 octets, a compression pointer to
 * itself or forward, a record or an SOA RDATA that does not fit exactly):
 * then both fields are DNSTTL_NONE. */
bool dnsttl_scan(const unsigned char *msg, size_t len, struct dnsttl *out);

#endif
