/*
 * mxrules.c - mx_host_overrides entries: parsing and matching (mxrules.h).
 */
#include "mxrules.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* name_ok - letters, digits, '-', '_' and dots between non-empty labels */
static bool name_ok(const char *s)
{
	size_t label = 0;
	if (*s == '\0')
		return false;
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
		if (*p == '.') {
			if (label == 0)
				return false;
			label = 0;
		} else if (isalnum(*p) || *p == '-' || *p == '_') {
			if (++label > 63)
				return false;
		} else
			return false;
	}
	return label > 0;
}

/* mxrules_parse - see mxrules.h */
bool mxrules_parse(const char *entry, struct mxrule *out, char *normalized, size_t size, char *why,
                   size_t why_size)
{
	char copy[MXRULES_PATTERN_MAX + 64];
	memset(out, 0, sizeof(*out));
	if (strlen(entry) >= sizeof(copy)) {
		snprintf(why, why_size, "\"%.40s...\": entry longer than %zu characters", entry,
		         sizeof(copy) - 1);
		return false;
	}
	snprintf(copy, sizeof(copy), "%s", entry);
	char *save = NULL;
	char *pat = strtok_r(copy, " \t", &save);
	char *act = pat != NULL ? strtok_r(NULL, " \t", &save) : NULL;
	if (act == NULL) {
		snprintf(why, why_size, "\"%s\": an entry is \"PATTERN ACTION\" (ACTION: skip or verify)",
		         entry);
		return false;
	}
	if (strtok_r(NULL, " \t", &save) != NULL) {
		snprintf(why, why_size, "\"%s\": more than a pattern and an action", entry);
		return false;
	}
	if (strlen(pat) > MXRULES_PATTERN_MAX) {
		snprintf(why, why_size, "\"%.40s...\": pattern longer than %d characters", pat,
		         MXRULES_PATTERN_MAX);
		return false;
	}
	if (strcasecmp(act, "skip") == 0)
		out->action = MXRULE_SKIP;
	else if (strcasecmp(act, "verify") == 0)
		out->action = MXRULE_VERIFY;
	else {
		snprintf(why, why_size, "%s: unknown action \"%s\" (skip or verify)", pat, act);
		return false;
	}
	if (strchr(pat, ':') != NULL || strchr(pat, '/') != NULL ||
	    strspn(pat, "0123456789.") == strlen(pat)) { /* an address or a network */
		char reason[200];
		if (!cidr_parse(pat, &out->net, reason, sizeof(reason))) {
			snprintf(why, why_size, "%s: not a network: %s", pat, reason);
			return false;
		}
		out->kind = MXRULE_NETWORK;
		cidr_format(&out->net, out->name, sizeof(out->name));
	} else {
		for (char *p = pat; *p != '\0'; p++)
			*p = (char)tolower((unsigned char)*p);
		size_t len = strlen(pat);
		if (len > 1 && pat[len - 1] == '.')
			pat[--len] = '\0';
		const char *name = pat;
		out->kind = MXRULE_EXACT;
		if (strncmp(pat, "*.", 2) == 0) {
			out->kind = MXRULE_WILDCARD;
			name = pat + 2;
		}
		if (!name_ok(name)) {
			snprintf(why, why_size,
			         "%s: not a host name pattern (a name, or \"*.\" and a name for any "
			         "subdomain)",
			         pat);
			return false;
		}
		snprintf(out->name, sizeof(out->name), "%s", name);
	}
	if (normalized != NULL)
		snprintf(normalized, size, "%s%s %s", out->kind == MXRULE_WILDCARD ? "*." : "", out->name,
		         out->action == MXRULE_SKIP ? "skip" : "verify");
	return true;
}

/* specificity - how specific r's match is (higher wins); -1: no match.
 * Names rank above networks: a name says which provider, a network only
 * where it is. */
static long specificity(const struct mxrule *r, const char *host, size_t host_len, const struct sockaddr *sa)
{
	size_t len = strlen(r->name);
	switch (r->kind) {
	case MXRULE_EXACT:
		return host != NULL && host_len == len && strncasecmp(host, r->name, len) == 0 ? 3000 : -1;
	case MXRULE_WILDCARD:
		if (host == NULL || host_len <= len + 1 || host[host_len - len - 1] != '.' ||
		    strncasecmp(host + host_len - len, r->name, len) != 0)
			return -1;
		return 1000 + (long)len;
	case MXRULE_NETWORK:
		return sa != NULL && cidr_contains(&r->net, sa) ? (long)r->net.prefix : -1;
	}
	return -1;
}

/* mxrules_match - see mxrules.h */
/* mxrules_compile - see mxrules.h */
bool mxrules_compile(const struct conf_strings *list, struct mxrule_set *out)
{
	out->count = 0;
	out->items = NULL;
	if (list == NULL || list->count == 0)
		return true;
	out->items = calloc(list->count, sizeof(*out->items));
	if (out->items == NULL)
		return false;
	for (size_t i = 0; i < list->count; i++) {
		char why[300];
		if (mxrules_parse(list->items[i], &out->items[out->count], NULL, 0, why, sizeof(why)))
			out->count++;
	}
	return true;
}

/* mxrules_set_free - see mxrules.h */
void mxrules_set_free(struct mxrule_set *set)
{
	free(set->items);
	set->items = NULL;
	set->count = 0;
}

enum mxrule_action mxrules_match(const struct mxrule_set *set, const char *host, const struct sockaddr *sa,
                                 char *pattern, size_t size)
{
	enum mxrule_action best = MXRULE_NONE;
	long best_rank = -1;
	size_t host_len = host != NULL ? strlen(host) : 0;
	if (pattern != NULL && size > 0)
		pattern[0] = '\0';
	if (host_len > 0 && host[host_len - 1] == '.')
		host_len--; /* a final dot names the same host */
	if (set == NULL)
		return MXRULE_NONE;
	for (size_t i = 0; i < set->count; i++) {
		const struct mxrule *r = &set->items[i];
		long rank = specificity(r, host, host_len, sa);
		if (rank < 0 || rank < best_rank)
			continue;
		best_rank = rank;
		best = r->action;
		if (pattern != NULL)
			snprintf(pattern, size, "%s%s", r->kind == MXRULE_WILDCARD ? "*." : "", r->name);
	}
	return best;
}
