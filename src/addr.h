/*
 * addr.h - envelope address parsing (RFC 5321 Mailbox, RFC 6531 SMTPUTF8).
 *
 * addr_parse() takes the sender exactly as the MTA hands it to the milter
 * (with or without angle brackets, possibly with an RFC 5321 source route)
 * and fills a caller-provided struct addr. Nothing is allocated: every field
 * is fixed-size storage inside struct addr, bounded by the RFC limits.
 *
 * Accepted: dot-atom and quoted-string local parts (UTF-8 allowed, RFC 6531),
 * domain names (LDH labels, or U-labels converted to A-labels with libidn2,
 * IDNA2008), address literals [192.0.2.1] and [IPv6:2001:db8::1].
 * Rejected: comments, folding white space, obsolete syntax, control
 * characters, general address literals, over-long parts.
 */
#ifndef VEMILTER_ADDR_H
#define VEMILTER_ADDR_H

#include <stdbool.h>
#include <stddef.h>

#define ADDR_LOCAL_MAX  64  /* octets, RFC 5321 4.5.3.1.1 */
#define ADDR_DOMAIN_MAX 255 /* octets, RFC 5321 4.5.3.1.2 */
#define ADDR_PATH_MAX   256 /* octets incl. "<" and ">", RFC 5321 4.5.3.1.3 */

enum addr_domain_kind {
	ADDR_DOMAIN_NAME, /* a host name */
	ADDR_DOMAIN_IPV4, /* [192.0.2.1] */
	ADDR_DOMAIN_IPV6  /* [IPv6:2001:db8::1] */
};

struct addr {
	bool is_null;                           /* "<>" or "": the null sender */
	char local[ADDR_LOCAL_MAX + 1];         /* as given, quotes kept */
	char domain[ADDR_DOMAIN_MAX + 1];       /* as given (U-labels kept) */
	char domain_ascii[ADDR_DOMAIN_MAX + 1]; /* lower case, A-labels; literal: "[..]" lower case */
	char normalized[ADDR_PATH_MAX];         /* local "@" domain_ascii: cache key */
	enum addr_domain_kind domain_kind;
	bool local_utf8;   /* local part has non-ASCII: needs SMTPUTF8 */
	bool local_quoted; /* local part is a quoted-string */
};

/*
 * addr_parse - parse one envelope address of length len (need not be
 * NUL-terminated). On success fills *out and returns true. On failure returns
 * false and writes a short human-readable reason (no CR/LF, printable ASCII,
 * suitable for an SMTP reply and a log line) into why[0..why_size-1].
 */
bool addr_parse(const char *input, size_t len, struct addr *out, char *why, size_t why_size);

/* addr_domain_within - true when domain equals parent or is a subdomain of it
 * (both A-label, any case). Used by allow-lists: "example.com" covers
 * "mail.example.com" but not "badexample.com". */
bool addr_domain_within(const char *domain, const char *parent);

#endif
