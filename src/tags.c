/*
 * tags.c - the stable form of senders with per-message tags (tags.h has
 * the patterns). Pure string work on the parsed address: no state.
 */
#include "tags.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* span - a piece of the local part: start and length */
struct span {
	const char *p;
	size_t n;
};

/* tags_kind_name - see tags.h */
const char *tags_kind_name(enum tag_kind kind)
{
	switch (kind) {
	case TAG_BATV:
		return "batv";
	case TAG_SRS:
		return "srs";
	case TAG_VERP:
		return "verp";
	case TAG_NONE:
		break;
	}
	return "none";
}

/* tags_enabled - see tags.h */
unsigned tags_enabled(const struct conf *conf)
{
	unsigned mask = 0;
	if (conf_strings_contains(&conf->tagged_senders, "batv"))
		mask |= 1u << TAG_BATV;
	if (conf_strings_contains(&conf->tagged_senders, "srs"))
		mask |= 1u << TAG_SRS;
	if (conf_strings_contains(&conf->tagged_senders, "verp"))
		mask |= 1u << TAG_VERP;
	return mask;
}

/* has_prefix - local starts with prefix, ignoring case */
static bool has_prefix(const char *local, const char *prefix)
{
	return strncasecmp(local, prefix, strlen(prefix)) == 0;
}

/* is_tag_text - one or more letters, digits or '-' (a BATV tag value) */
static bool is_tag_text(const char *p, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)p[i]) && p[i] != '-')
			return false;
	return true;
}

/* next_field - the text up to the next '=' from *p (advancing past it);
 * false when there is no '=' left */
static bool next_field(const char **p, struct span *out)
{
	const char *eq = strchr(*p, '=');
	if (eq == NULL)
		return false;
	out->p = *p;
	out->n = (size_t)(eq - *p);
	*p = eq + 1;
	return true;
}

/* emit - "<parts>@domain" into out; false when it does not fit */
static bool emit(char *out, size_t size, const char *text, const char *domain)
{
	int n = snprintf(out, size, "%s@%s", text, domain);
	return n > 0 && (size_t)n < size && (size_t)n < ADDR_PATH_MAX;
}

/* lower - copy n octets of p into buf in lower case (domains in SRS) */
static void lower(char *buf, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = (char)tolower((unsigned char)p[i]);
	buf[n] = '\0';
}

/* batv - prvs=TAG=LOCAL, msprvs1=TAG=LOCAL, btv1==TAG==LOCAL; the base
 * local part or NULL */
static const char *batv(const char *local)
{
	static const struct {
		const char *prefix, *separator;
	} forms[] = {{"prvs=", "="}, {"msprvs1=", "="}, {"btv1==", "=="}};
	for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
		if (!has_prefix(local, forms[i].prefix))
			continue;
		const char *tag = local + strlen(forms[i].prefix);
		const char *end = strstr(tag, forms[i].separator);
		if (end == NULL || !is_tag_text(tag, (size_t)(end - tag)))
			return NULL;
		const char *base = end + strlen(forms[i].separator);
		return base[0] != '\0' ? base : NULL;
	}
	return NULL;
}

/* looks_batv - the local part claims to be BATV (whether or not it parses) */
static bool looks_batv(const char *local)
{
	return has_prefix(local, "prvs=") || has_prefix(local, "msprvs1=") || has_prefix(local, "btv1=");
}

/* looks_srs - SRS0 or SRS1 and a separator */
static bool looks_srs(const char *local)
{
	return (has_prefix(local, "srs0") || has_prefix(local, "srs1")) &&
	       (local[4] == '=' || local[4] == '+' || local[4] == '-');
}

/* srs0_fields - "HASH=TT=ODOMAIN=OLOCAL" (after "SRS0<sep>"): the original
 * domain and local part; false if the shape is wrong */
static bool srs0_fields(const char *p, struct span *domain, const char **olocal)
{
	struct span hash, tt;
	if (!next_field(&p, &hash) || !next_field(&p, &tt) || !next_field(&p, domain))
		return false;
	*olocal = p;
	return hash.n > 0 && tt.n > 0 && domain->n > 0 && p[0] != '\0';
}

/* srs - the stable form of an SRS0 or SRS1 local part into text */
static bool srs(const char *local, char *text, size_t size)
{
	const char *p = local + 5;
	char host[ADDR_LOCAL_MAX + 1], fwd[ADDR_LOCAL_MAX + 1];
	struct span domain;
	const char *olocal;
	if (local[3] == '0') {
		if (!srs0_fields(p, &domain, &olocal))
			return false;
		lower(host, domain.p, domain.n);
		return (size_t)snprintf(text, size, "SRS0=%s=%s", host, olocal) < size;
	}
	/* SRS1=HASH=FWD1=<sep>HASH0=TT=ODOMAIN=OLOCAL */
	struct span hash, first;
	if (!next_field(&p, &hash) || !next_field(&p, &first) || hash.n == 0 || first.n == 0 || p[0] == '\0')
		return false;
	lower(fwd, first.p, first.n);
	if ((p[0] == '=' || p[0] == '+' || p[0] == '-') && srs0_fields(p + 1, &domain, &olocal)) {
		lower(host, domain.p, domain.n);
		return (size_t)snprintf(text, size, "SRS1=%s==%s=%s", fwd, host, olocal) < size;
	}
	return (size_t)snprintf(text, size, "SRS1=%s=%s", fwd, p) < size;
}

/* verp - BASE+X where X holds '=': the length of BASE, 0 if not VERP */
static size_t verp(const char *local)
{
	const char *plus = strchr(local, '+');
	if (plus == NULL || plus == local || strchr(plus + 1, '=') == NULL)
		return 0;
	return (size_t)(plus - local);
}

/* tags_stable_form - see tags.h */
enum tag_kind tags_stable_form(const struct addr *address, unsigned enabled, char *out, size_t size)
{
	char text[ADDR_LOCAL_MAX + 1];
	const char *local = address->local;
	if (size == 0)
		return TAG_NONE;
	out[0] = '\0';
	if (address->is_null || address->local_quoted || local[0] == '\0')
		return TAG_NONE;
	if (looks_srs(local)) {
		if (!(enabled & (1u << TAG_SRS)) || !srs(local, text, sizeof(text)) ||
		    !emit(out, size, text, address->domain_ascii))
			goto none;
		return TAG_SRS;
	}
	if (looks_batv(local)) {
		const char *base = batv(local);
		if (!(enabled & (1u << TAG_BATV)) || base == NULL ||
		    !emit(out, size, base, address->domain_ascii))
			goto none;
		return TAG_BATV;
	}
	size_t n = verp(local);
	if (n > 0 && (enabled & (1u << TAG_VERP))) {
		memcpy(text, local, n);
		text[n] = '\0';
		if (emit(out, size, text, address->domain_ascii))
			return TAG_VERP;
	}
none:
	out[0] = '\0';
	return TAG_NONE;
}
