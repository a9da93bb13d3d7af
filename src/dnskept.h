/*
 * dnskept.h - a domain's DNS answer (dns.h) kept in compact form.
 *
 * A struct dns_answer is built for handing out: every host has room for
 * DNS_HOST_ADDRS_MAX full socket addresses (about 2.3 KB a host). The
 * verifier keeps one answer per domain for its TTL, for thousands of
 * domains, so it keeps this instead: only the hosts, their preference and
 * the addresses they have, in one block. dns_kept_answer() makes a fresh
 * answer from it for each probe, with its own shuffle of equal preferences
 * (RFC 5321 5.1) and what is left of its TTL.
 *
 * Owns nothing beyond each struct dns_kept (the caller's, freed with
 * dns_kept_free). No state, no threads of its own: pure functions.
 */
#ifndef VEMILTER_DNSKEPT_H
#define VEMILTER_DNSKEPT_H

#include <stdbool.h>
#include <stdint.h>

#include "dns.h"

struct dns_kept; /* opaque */

/* dns_keep - a compact copy of answer (its status, detail, TTL and the
 * hosts that have an address); NULL if out of memory */
struct dns_kept *dns_keep(const struct dns_answer *answer);

/* dns_kept_free - NULL is fine */
void dns_kept_free(struct dns_kept *kept);

/* dns_kept_status - what the kept answer says */
enum dns_status dns_kept_status(const struct dns_kept *kept);

/* dns_kept_ttl_ms - how long DNS said it holds when it was made (0: unknown) */
int64_t dns_kept_ttl_ms(const struct dns_kept *kept);

/* dns_kept_answer - an answer made from a kept one into out, out->hosts
 * allocated (free with dns_answer_clear), equal preferences in an order of
 * its own; out->ttl_ms: ttl_left_ms, at least 1 (0 when the TTL is
 * unknown). false if out of memory (out then holds no hosts). */
bool dns_kept_answer(const struct dns_kept *kept, int64_t ttl_left_ms, struct dns_answer *out);

/* dns_answer_clear - free the hosts of an answer made by dns_kept_answer */
void dns_answer_clear(struct dns_answer *answer);

#endif
