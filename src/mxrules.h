/*
 * mxrules.h - mx_host_overrides: rules by MX host, not by domain.
 *
 * Thousands of domains sit behind a few providers whose servers accept
 * every RCPT and bounce later, or refuse only after DATA, so a callout
 * there proves nothing and costs the provider a session. An entry
 * "PATTERN ACTION" names such hosts by the MX host name or by network:
 *
 *   *.mail.protection.outlook.com skip   any subdomain (not the name itself)
 *   mx.example.net verify                exactly that name
 *   192.0.2.0/24 skip                    the MX address is in that network
 *
 * Names compare without regard to case or a final dot. ACTION is skip (no
 * session: the callout ends unverifiable) or verify (probe as usual: an
 * exception carved out of a broader skip). The most specific entry that
 * matches wins: an exact name over any wildcard, a longer wildcard suffix
 * over a shorter one, any name over any network, a longer prefix over a
 * shorter one; among equals the later entry.
 *
 * Entries are kept in conf as normalized text ("pattern action", lower
 * case, no final dot); mxrules_parse is the one parser, used by conftable.c
 * to validate and by mxrules_compile, which the engine runs once so that
 * matching a target parses nothing. Pure: no globals, no I/O.
 */
#ifndef VEMILTER_MXRULES_H
#define VEMILTER_MXRULES_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "cidr.h"
#include "conf.h"

#define MXRULES_PATTERN_MAX 255

enum mxrule_action {
	MXRULE_NONE,   /* no entry matches: probe as usual */
	MXRULE_SKIP,   /* do not connect: unverifiable */
	MXRULE_VERIFY, /* probe as usual (an exception to a skip) */
};

enum mxrule_kind {
	MXRULE_EXACT,    /* the name itself */
	MXRULE_WILDCARD, /* "*.suffix": any name below suffix */
	MXRULE_NETWORK,  /* a CIDR the address is in */
};

struct mxrule {
	enum mxrule_kind kind;
	enum mxrule_action action;
	char name[MXRULES_PATTERN_MAX + 1]; /* EXACT: the name; WILDCARD: the suffix, without "*." */
	struct cidr net;                    /* NETWORK */
};

/* mxrules_parse - one entry "PATTERN ACTION" (white space between) into
 * *out; normalized (may be NULL, size bytes) gets its canonical text
 * "pattern action". False with a reason in why. */
bool mxrules_parse(const char *entry, struct mxrule *out, char *normalized, size_t size, char *why,
                   size_t why_size);

/* The parsed entries, in list order; owns items. */
struct mxrule_set {
	size_t count;
	struct mxrule *items;
};

/* mxrules_compile - parse list (normalized entries; one that does not
 * parse is left out) into *out, which mxrules_set_free releases. False
 * when out of memory (*out is then empty). */
bool mxrules_compile(const struct conf_strings *list, struct mxrule_set *out);
void mxrules_set_free(struct mxrule_set *set);

/* mxrules_match - the action of the most specific entry of set (may be
 * NULL) matching the MX host name host (may be NULL) or its address sa
 * (may be NULL). pattern (may be NULL, size bytes) gets the winning entry's
 * pattern in its canonical form ("*.mail.protection.outlook.com",
 * "192.0.2.0/24"). */
enum mxrule_action mxrules_match(const struct mxrule_set *set, const char *host, const struct sockaddr *sa,
                                 char *pattern, size_t size);

#endif
