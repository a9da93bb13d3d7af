/*
 * conftable.c - vemilter.conf: what each directive accepts.
 *
 * The one constant table, conf_directives[], names every directive with its
 * type, default text, bounds, place in struct conf and help line, and points
 * to the value checkers and list-item normalizers here: milter socket
 * notation, user and group names, absolute paths, host names, domains (to
 * lower-case A-labels), addresses, DNS servers, networks, actions that may not
 * reject, reply classes, header field names and domain_overrides rules. Each
 * one judges a single value or item and says why not in a reason; conf.c
 * parses the typed values (numbers, durations, booleans, replies ...) itself
 * and turns a reason into "file:line: directive: reason".
 *
 * Owns no state: the table is constant, and an item's normalized copy is
 * appended to the list field of the struct conf being loaded, which owns it.
 */
#include "conftable.h"
#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <idn2.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "addr.h"
#include "mxrules.h"
#include "redisurl.h"

#define DNS_NAME_BUF 256 /* a host name and its NUL */

/* lower - ASCII lower-case s in place */
static void lower(char *s)
{
	for (; *s != '\0'; s++)
		if (*s >= 'A' && *s <= 'Z')
			*s = (char)(*s - 'A' + 'a');
}

/* grow - make room for element count in *items (capacity doubles) */
static bool grow(void **items, size_t count, size_t elem)
{
	if (count != 0 && (count & (count - 1)) != 0)
		return true; /* capacity is the next power of two >= count */
	size_t cap = count == 0 ? 1 : count * 2;
	void *p = reallocarray(*items, cap, elem);
	if (p == NULL)
		return false;
	*items = p;
	return true;
}

/* strings_add - append owned s (may be NULL: out of memory) to l */
static bool strings_add(struct conf_strings *l, char *s, char *why, size_t why_size)
{
	if (s == NULL || !grow((void **)&l->items, l->count, sizeof(*l->items))) {
		free(s);
		snprintf(why, why_size, "out of memory");
		return false;
	}
	l->items[l->count++] = s;
	return true;
}
/* check_socket - libmilter notation: unix:/path, local:/path, inet[6]:PORT[@HOST] */
static bool check_socket(const char *value, char *why, size_t why_size)
{
	const char *rest = strchr(value, ':');
	size_t scheme = rest ? (size_t)(rest - value) : 0;

	if (rest != NULL && ((scheme == 4 && strncmp(value, "unix", 4) == 0) ||
	                     (scheme == 5 && strncmp(value, "local", 5) == 0))) {
		if (rest[1] == '/')
			return true;
		snprintf(why, why_size,
		         "\"%s\" needs an absolute socket path, such as unix:/run/vemilter/vemilter.sock",
		         value);
		return false;
	}
	if (rest == NULL || !((scheme == 4 && strncmp(value, "inet", 4) == 0) ||
	                      (scheme == 5 && strncmp(value, "inet6", 5) == 0))) {
		snprintf(why, why_size,
		         "\"%s\" is not unix:/path, local:/path, inet:PORT@HOST or inet6:PORT@HOST", value);
		return false;
	}
	long port = 0;
	const char *p = rest + 1;
	for (; *p >= '0' && *p <= '9' && port <= 65535; p++)
		port = port * 10 + (*p - '0');
	if (p == rest + 1 || port < 1 || port > 65535 || (*p != '\0' && *p != '@')) {
		snprintf(why, why_size, "\"%s\" needs a port 1..65535, such as inet:8891@127.0.0.1", value);
		return false;
	}
	if (*p == '@' && p[1] == '\0') {
		snprintf(why, why_size, "\"%s\" has an empty host after \"@\"", value);
		return false;
	}
	return true;
}

/* check_transport - milter_transport: libmilter or native */
static bool check_transport(const char *value, char *why, size_t why_size)
{
	if (strcmp(value, "libmilter") == 0 || strcmp(value, "native") == 0)
		return true;
	snprintf(why, why_size, "\"%s\" is not a milter transport (libmilter or native)", value);
	return false;
}

/* check_name - a user or group name: no blanks, ':' or control characters */
static bool check_name(const char *value, char *why, size_t why_size)
{
	for (const unsigned char *p = (const unsigned char *)value; *p != '\0'; p++) {
		if (*p <= ' ' || *p == ':' || *p == 0x7f) {
			snprintf(why, why_size, "\"%s\" is not a valid user or group name", value);
			return false;
		}
	}
	return true;
}

/* check_path - empty, or an absolute path */
static bool check_path(const char *value, char *why, size_t why_size)
{
	if (value[0] == '\0' || value[0] == '/')
		return true;
	snprintf(why, why_size, "\"%s\" is not an absolute path", value);
	return false;
}

/* check_cache - the cache: empty, an absolute LMDB path, or a Redis URL
 * (redisurl.h says which and what it accepts) */
static bool check_cache(const char *value, char *why, size_t why_size)
{
	if (!redis_url_is(value))
		return check_path(value, why, why_size);
	struct redis_url url;
	return redis_url_parse(value, &url, why, why_size);
}

/* is_ldh_name - lower-case LDH labels of 1..63 octets, 253 in all */
static bool is_ldh_name(const char *s)
{
	size_t label = 0, total = strlen(s);

	if (total == 0 || total > 253)
		return false;
	for (size_t i = 0; i <= total; i++) {
		char c = s[i];
		if (c == '.' || c == '\0') {
			if (label == 0 || label > 63 || s[i - 1] == '-' || s[i - label] == '-')
				return false;
			label = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-') {
			label++;
		} else {
			return false;
		}
	}
	return true;
}

/* normal_domain - a new copy of domain item in lower-case A-labels (libidn2,
 * IDNA2008/TR46); NULL with why */
static char *normal_domain(const char *item, char *why, size_t why_size)
{
	char name[CONF_LINE_MAX + 1];
	uint8_t *ascii = NULL;

	snprintf(name, sizeof(name), "%s", item);
	size_t n = strlen(name);
	if (n > 1 && name[n - 1] == '.')
		name[n - 1] = '\0'; /* fully qualified "example.com." */
	int rc = idn2_lookup_u8((const uint8_t *)name, &ascii, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
	if (rc == IDN2_OK)
		lower((char *)ascii);
	if (rc != IDN2_OK || !is_ldh_name((char *)ascii)) {
		snprintf(why, why_size, "\"%s\" is not a valid domain name%s", item,
		         item[0] == '.' || item[0] == '*' ? " (write example.com: it covers the subdomains)"
		                                          : "");
		idn2_free(ascii);
		return NULL;
	}
	char *copy = strdup((char *)ascii);
	idn2_free(ascii);
	if (copy == NULL)
		snprintf(why, why_size, "out of memory");
	return copy;
}

/* item_domain - a domain to lower-case A-labels, appended to a string list */
static bool item_domain(void *field, const char *item, char *why, size_t why_size)
{
	char *copy = normal_domain(item, why, why_size);

	return copy != NULL && strings_add(field, copy, why, why_size);
}

/* full_address - addr_parse() item into a new normalized copy; NULL with why */
static char *full_address(const char *item, char *why, size_t why_size)
{
	struct addr a;
	char reason[CONF_WHY_MAX / 2];
	char *copy;

	if (!addr_parse(item, strlen(item), &a, reason, sizeof(reason)))
		snprintf(why, why_size, "\"%s\" is not a valid address: %s", item, reason);
	else if (a.is_null)
		snprintf(why, why_size, "\"%s\" is not a full address (local@domain)", item);
	else if ((copy = strdup(a.normalized)) == NULL)
		snprintf(why, why_size, "out of memory");
	else
		return copy;
	return NULL;
}

/* item_tag - one kind of per-message sender tag (batv, srs, verp), or
 * several separated by white space; appended in lower case, once each */
static bool item_tag(void *field, const char *item, char *why, size_t why_size)
{
	static const char *const kinds[] = {"batv", "srs", "verp"};
	char copy[64];
	snprintf(copy, sizeof(copy), "%s", item);
	for (char *save = NULL, *word = strtok_r(copy, " \t", &save); word != NULL;
	     word = strtok_r(NULL, " \t", &save)) {
		lower(word);
		size_t k = 0;
		while (k < sizeof(kinds) / sizeof(kinds[0]) && strcmp(word, kinds[k]) != 0)
			k++;
		if (k == sizeof(kinds) / sizeof(kinds[0])) {
			snprintf(why, why_size, "unknown sender tag \"%s\" (batv, srs or verp)", word);
			return false;
		}
		if (conf_strings_contains(field, word))
			continue;
		if (!strings_add(field, strdup(word), why, why_size))
			return false;
	}
	return true;
}

/* item_sender - a full address, stored as addr_parse() normalizes it */
static bool item_sender(void *field, const char *item, char *why, size_t why_size)
{
	char *copy = full_address(item, why, why_size);

	return copy != NULL && strings_add(field, copy, why, why_size);
}

/* is_local_part - no blanks, control characters or address specials */
static bool is_local_part(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
		if (*p <= ' ' || *p == 0x7f || strchr("\"(),:;<>[\\]", *p) != NULL)
			return false;
	return true;
}

/* item_recipient - "postmaster" (local part, any domain) or a full address; lower case */
static bool item_recipient(void *field, const char *item, char *why, size_t why_size)
{
	char *copy = NULL;

	if (strchr(item, '@') != NULL)
		copy = full_address(item, why, why_size);
	else if (!is_local_part(item))
		snprintf(why, why_size, "\"%s\" is not a valid local part", item);
	else if ((copy = strdup(item)) == NULL)
		snprintf(why, why_size, "out of memory");
	if (copy == NULL)
		return false;
	lower(copy);
	return strings_add(field, copy, why, why_size);
}

/* check_host_name - "" or an LDH host name (the EHLO argument) */
/* check_metrics_listen - "" or ADDRESS:PORT with an address literal */
static bool check_metrics_listen(const char *value, char *why, size_t why_size)
{
	char host[64];
	unsigned port;
	if (value[0] == '\0' || metrics_parse_listen(value, host, sizeof(host), &port))
		return true;
	snprintf(why, why_size, "not ADDRESS:PORT with an IP address (127.0.0.1:9469, [::1]:9469)");
	return false;
}

static bool check_host_name(const char *value, char *why, size_t why_size)
{
	char name[DNS_NAME_BUF];

	snprintf(name, sizeof(name), "%s", value);
	lower(name);
	if (value[0] == '\0' ||
	    (strlen(value) < sizeof(name) && is_ldh_name(name) && strchr(name, '.') != NULL))
		return true;
	snprintf(why, why_size,
	         "\"%s\" is not a fully qualified host name (receiving servers judge us by it)", value);
	return false;
}

/* check_source_address - "" or a numeric IPv4 or IPv6 address (no port) */
static bool check_source_address(const char *value, char *why, size_t why_size)
{
	struct in6_addr a6;
	struct in_addr a4;
	if (value[0] == '\0' || inet_pton(AF_INET, value, &a4) == 1 || inet_pton(AF_INET6, value, &a6) == 1)
		return true;
	snprintf(why, why_size, "\"%s\" is not a numeric IPv4 or IPv6 address (192.0.2.25, 2001:db8::25)",
	         value);
	return false;
}

/* check_probe_sender - "" (the null sender) or a full address */
static bool check_probe_sender(const char *value, char *why, size_t why_size)
{
	if (value[0] == '\0')
		return true;
	char *copy = full_address(value, why, why_size);
	free(copy);
	return copy != NULL;
}

/* item_dns_server - "IP", "IP:PORT" or "[IPv6]:PORT", kept as written */
static bool item_dns_server(void *field, const char *item, char *why, size_t why_size)
{
	char host[64];
	const char *port = NULL;
	unsigned char buf[sizeof(struct in6_addr)];
	size_t n = strlen(item);

	if (item[0] == '[') {
		const char *end = strchr(item, ']');
		if (end == NULL || (size_t)(end - item - 1) >= sizeof(host) ||
		    (end[1] != '\0' && end[1] != ':'))
			goto bad;
		snprintf(host, sizeof(host), "%.*s", (int)(end - item - 1), item + 1);
		port = end[1] == ':' ? end + 2 : NULL;
	} else {
		const char *colon = strchr(item, ':');
		if (colon != NULL && strchr(colon + 1, ':') == NULL) {
			snprintf(host, sizeof(host), "%.*s", (int)(colon - item), item);
			port = colon + 1;
		} else if (n < sizeof(host)) {
			snprintf(host, sizeof(host), "%s", item);
		} else {
			goto bad;
		}
	}
	if (inet_pton(AF_INET, host, buf) != 1 && inet_pton(AF_INET6, host, buf) != 1)
		goto bad;
	if (port != NULL) {
		char *end;
		errno = 0;
		long value = strtol(port, &end, 10);
		if (*port == '\0' || *end != '\0' || errno != 0 || value < 1 || value > 65535)
			goto bad;
	}
	char *copy = strdup(item);
	return strings_add(field, copy, why, why_size);
bad:
	snprintf(why, why_size, "\"%s\" is not a DNS server address (IP, IP:PORT or [IPv6]:PORT)", item);
	return false;
}

/* item_cidr - one network for a CIDR list */
static bool item_cidr(void *field, const char *item, char *why, size_t why_size)
{
	struct cidr_list *l = field;
	struct cidr net;

	if (!cidr_parse(item, &net, why, why_size))
		return false;
	if (!grow((void **)&l->items, l->count, sizeof(*l->items))) {
		snprintf(why, why_size, "out of memory");
		return false;
	}
	l->items[l->count++] = net;
	return true;
}

/* conf_action_from_name - "accept", "tempfail" or "reject", any case */
bool conf_action_from_name(const char *name, enum conf_action *out)
{
	static const char *const names[] = {
	        [CONF_ACCEPT] = "accept", [CONF_TEMPFAIL] = "tempfail", [CONF_REJECT] = "reject"};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcasecmp(name, names[i]) == 0) {
			*out = (enum conf_action)i;
			return true;
		}
	}
	return false;
}

/* no_reject_why - why an outcome may never reject, or NULL if it may */
static const char *no_reject_why(enum outcome_kind kind)
{
	if (kind == OUTCOME_BLOCKED)
		return "blocked means the sender's mail server refuses our probe, not the address";
	if (kind == OUTCOME_TEMPFAIL)
		return "tempfail means the probe failed for now (4xx, timeout, DNS), which says nothing "
		       "about the address";
	return NULL;
}

/* not_reject - false with why when value is reject: because */
static bool not_reject(const char *value, const char *because, char *why, size_t why_size)
{
	if (strcasecmp(value, "reject") != 0)
		return true;
	snprintf(why, why_size, "reject is not allowed: %s (use accept or tempfail)", because);
	return false;
}

/* check_tempfail_action - tempfail_action may not reject */
static bool check_tempfail_action(const char *value, char *why, size_t why_size)
{
	return not_reject(value, no_reject_why(OUTCOME_TEMPFAIL), why, why_size);
}

/* check_blocked_action - blocked_action may not reject */
static bool check_blocked_action(const char *value, char *why, size_t why_size)
{
	return not_reject(value, no_reject_why(OUTCOME_BLOCKED), why, why_size);
}

/* check_budget_action - budget_action may not reject */
static bool check_budget_action(const char *value, char *why, size_t why_size)
{
	return not_reject(value, "an unfinished probe says nothing about the address", why, why_size);
}

/* check_reply_5xx - a reject reply (already parsed) is a permanent failure */
static bool check_reply_5xx(const char *value, char *why, size_t why_size)
{
	if (value[0] == '5')
		return true;
	snprintf(why, why_size, "reply code %.3s is not 5xx: a reject reply is a permanent failure", value);
	return false;
}

/* check_reply_4xx - a tempfail reply (already parsed) is a temporary failure */
static bool check_reply_4xx(const char *value, char *why, size_t why_size)
{
	if (value[0] == '4')
		return true;
	snprintf(why, why_size, "reply code %.3s is not 4xx: a tempfail reply is a temporary failure", value);
	return false;
}

/* check_header_name - "" or an RFC 5322 field name: printable ASCII, no ":" */
static bool check_header_name(const char *value, char *why, size_t why_size)
{
	for (const unsigned char *p = (const unsigned char *)value; *p != '\0'; p++) {
		if (*p <= ' ' || *p >= 0x7f || *p == ':') {
			snprintf(why, why_size,
			         "\"%s\" is not a header field name (printable ASCII without blanks or "
			         "\":\", such as X-Sender-Verification)",
			         value);
			return false;
		}
	}
	return true;
}

/* override_pair - one "OUTCOME=ACTION" of an override rule into o */
static bool override_pair(struct conf_override *o, char *word, char *why, size_t why_size)
{
	char *eq = strchr(word, '=');
	enum outcome_kind kind;
	enum conf_action action;

	if (eq == NULL) {
		snprintf(why, why_size, "\"%s\" is not skip, verify or OUTCOME=ACTION", word);
		return false;
	}
	*eq = '\0';
	lower(word);
	if (!outcome_from_name(word, &kind)) {
		snprintf(why, why_size,
		         "\"%s\" is not an outcome (valid, invalid, no_domain, catch_all, tempfail, blocked, "
		         "unverifiable)",
		         word);
		return false;
	}
	if (!conf_action_from_name(eq + 1, &action)) {
		snprintf(why, why_size, "%s: \"%s\" is not an action (accept, tempfail or reject)", word,
		         eq + 1);
		return false;
	}
	if (action == CONF_REJECT && no_reject_why(kind) != NULL) {
		snprintf(why, why_size, "%s=reject is not allowed: %s", word, no_reject_why(kind));
		return false;
	}
	if (o->has_action[kind]) {
		snprintf(why, why_size, "%s is given twice", word);
		return false;
	}
	o->has_action[kind] = true;
	o->action[kind] = action;
	return true;
}

/* override_rule - "skip", "verify" or OUTCOME=ACTION words (commas or blanks
 * between them) into o */
static bool override_rule(struct conf_override *o, char *rule, char *why, size_t why_size)
{
	size_t words = 0;
	bool keyword = false;
	char *save = NULL;

	for (char *w = strtok_r(rule, ", \t", &save); w != NULL; w = strtok_r(NULL, ", \t", &save)) {
		words++;
		if (strcasecmp(w, "skip") == 0 || strcasecmp(w, "verify") == 0) {
			keyword = true;
			o->skip = strcasecmp(w, "skip") == 0;
		} else if (!override_pair(o, w, why, why_size)) {
			return false;
		}
	}
	if (words == 0) {
		snprintf(why, why_size, "needs a rule after the domain: skip, verify or OUTCOME=ACTION");
		return false;
	}
	if (keyword && words > 1) {
		snprintf(why, why_size, "%s stands alone: it cannot be combined with other rules",
		         o->skip ? "skip" : "verify");
		return false;
	}
	return true;
}

/* find_override - the entry for exactly domain in l, or NULL */
static const struct conf_override *find_override(const struct conf_overrides *l, const char *domain)
{
	for (size_t i = 0; i < l->count; i++)
		if (strcmp(l->items[i].domain, domain) == 0)
			return &l->items[i];
	return NULL;
}

/* item_override - "DOMAIN RULE" for domain_overrides */
static bool item_override(void *field, const char *item, char *why, size_t why_size)
{
	struct conf_overrides *l = field;
	struct conf_override o = {0};
	char copy[CONF_LINE_MAX + 1], reason[CONF_WHY_MAX / 2];

	snprintf(copy, sizeof(copy), "%s", item);
	size_t n = strcspn(copy, " \t");
	char *rule = copy + n + strspn(copy + n, " \t");
	copy[n] = '\0';
	if (strchr(copy, '=') != NULL) {
		snprintf(why, why_size,
		         "\"%s\" names no domain (in vemilter.conf commas separate entries: write "
		         "\"example.com catch_all=accept valid=accept\", or use a list file)",
		         copy);
		return false;
	}
	if (*rule == '\0') {
		snprintf(why, why_size,
		         "\"%s\" needs a rule after the domain: skip, verify or OUTCOME=ACTION", copy);
		return false;
	}
	if ((o.domain = normal_domain(copy, why, why_size)) == NULL)
		return false;
	if (!override_rule(&o, rule, reason, sizeof(reason)))
		snprintf(why, why_size, "%s: %s", copy, reason);
	else if (find_override(l, o.domain) != NULL)
		snprintf(why, why_size, "%s: a second entry for this domain (one entry a domain)", copy);
	else if (!grow((void **)&l->items, l->count, sizeof(*l->items)))
		snprintf(why, why_size, "out of memory");
	else {
		l->items[l->count++] = o;
		return true;
	}
	free(o.domain);
	return false;
}
/* item_mx_host - "PATTERN skip|verify" for mx_host_overrides (mxrules.h),
 * kept in its canonical text; one entry a pattern */
static bool item_mx_host(void *field, const char *item, char *why, size_t why_size)
{
	struct conf_strings *l = field;
	struct mxrule r;
	char text[MXRULES_PATTERN_MAX + 16];
	if (!mxrules_parse(item, &r, text, sizeof(text), why, why_size))
		return false;
	size_t pattern_len = strcspn(text, " ");
	for (size_t i = 0; i < l->count; i++)
		if (strncmp(l->items[i], text, pattern_len + 1) == 0) {
			snprintf(why, why_size, "%.*s: a second entry for this pattern (one entry a pattern)",
			         (int)pattern_len, text);
			return false;
		}
	return strings_add(l, strdup(text), why, why_size);
}

#define F(member) offsetof(struct conf, member)

/* clang-format off */
const struct directive conf_directives[] = {
	{.name = "socket", .restart = true, .type = T_STRING, .def = "unix:/run/vemilter/vemilter.sock", .offset = F(socket),
	 .check = check_socket, .help = "where the MTA connects: unix:/path, inet:PORT@HOST, inet6:PORT@HOST"},
	{.name = "socket_mode", .restart = true, .type = T_MODE, .def = "0660", .min = 0, .max = 0777, .offset = F(socket_mode),
	 .help = "permissions of a unix socket"},
	{.name = "socket_group", .restart = true, .type = T_STRING, .def = "", .offset = F(socket_group), .check = check_name,
	 .help = "group of a unix socket; empty: leave as created"},
	{.name = "user", .restart = true, .type = T_STRING, .def = "vemilter", .offset = F(user), .check = check_name,
	 .help = "run as this user after setup; empty: do not switch"},
	{.name = "pid_file", .restart = true, .type = T_STRING, .def = "/run/vemilter/vemilter.pid", .offset = F(pid_file),
	 .check = check_path, .help = "write the process id here; empty: none"},
	{.name = "milter_timeout", .restart = true, .type = T_DURATION, .def = "5m", .min = 1000, .max = 7200000,
	 .offset = F(milter_timeout_ms),
	 .help = "an MTA connection that sends nothing for this long is closed (libmilter's default: 2h)"},
	{.name = "milter_transport", .restart = true, .type = T_STRING, .def = "native", .offset = F(milter_transport),
	 .check = check_transport, .choices = "libmilter, native",
	 .help = "what speaks the milter protocol: vemilter's own event loop (native), or libmilter"},
	{.name = "syslog_facility", .restart = true, .type = T_FACILITY, .def = "mail", .offset = F(syslog_facility),
	 .choices = "mail, daemon, user, local0, ..., local7", .help = "syslog facility"},
	{.name = "log_level", .type = T_LEVEL, .def = "info", .offset = F(log_level),
	 .choices = "error, warning, notice, info, debug", .help = "least important messages logged"},
	{.name = "trusted_networks", .type = T_CIDRS, .def = "127.0.0.0/8, ::1/128", .offset = F(trusted_networks),
	 .item = item_cidr, .help = "clients from these networks are never checked"},
	{.name = "skip_authenticated", .type = T_BOOL, .def = "yes", .offset = F(skip_authenticated),
	 .help = "authenticated (SMTP AUTH) clients are never checked"},
	{.name = "allow_sender_domains", .type = T_LIST, .def = "", .offset = F(allow_sender_domains),
	 .item = item_domain, .help = "sender domains never checked, with their subdomains"},
	{.name = "allow_senders", .type = T_LIST, .def = "", .offset = F(allow_senders), .item = item_sender,
	 .help = "sender addresses never checked"},
	{.name = "exempt_recipients", .type = T_LIST, .def = "postmaster, abuse", .offset = F(exempt_recipients),
	 .item = item_recipient, .help = "recipients always accepted: local parts at any domain, or addresses"},
	{.name = "bad_syntax_reply", .type = T_REPLY, .def = "553 5.1.7 Sender address rejected: %r",
	 .offset = F(bad_syntax_reply), .help = "reply to a sender address that does not parse"},
	{.name = "dns_servers", .type = T_LIST, .def = "", .offset = F(dns_servers), .item = item_dns_server,
	 .help = "DNS servers to ask (IP, IP:PORT, [IPv6]:PORT); empty: those in /etc/resolv.conf"},
	{.name = "dns_timeout", .type = T_DURATION, .def = "5s", .min = 100, .max = 60000,
	 .offset = F(dns_timeout_ms), .help = "time for one DNS query try"},
	{.name = "dns_cache_time", .type = T_DURATION, .def = "30s", .min = 0, .max = 3600000,
	 .offset = F(dns_cache_time_ms), .help = "how long a domain's mail hosts are remembered in memory; 0: not"},
	{.name = "metrics_listen", .restart = true, .type = T_STRING, .def = "", .offset = F(metrics_listen),
	 .check = check_metrics_listen,
	 .help = "ADDRESS:PORT where /metrics is served (Prometheus text format); empty: off"},
	{.name = "helo_name", .type = T_STRING, .def = "", .offset = F(helo_name), .check = check_host_name,
	 .help = "name probes give in EHLO/HELO; empty: this host's fully qualified name"},
	{.name = "probe_sender", .type = T_STRING, .def = "", .offset = F(probe_sender),
	 .check = check_probe_sender, .help = "MAIL FROM address of probes; empty: the null sender <>"},
	{.name = "probe_sender_fallback", .type = T_STRING, .def = "", .offset = F(probe_sender_fallback),
	 .check = check_probe_sender,
	 .help = "MAIL FROM used once more when a server refuses probe_sender with 5xx; empty: off"},
	{.name = "probe_port", .type = T_INT, .def = "25", .min = 1, .max = 65535, .offset = F(probe_port),
	 .help = "TCP port of probed mail servers"},
	{.name = "probe_source_address", .type = T_STRING, .def = "", .offset = F(probe_source_address),
	 .check = check_source_address,
	 .help = "local address probes connect from (same family as the server's); empty: the kernel's "
	         "choice"},
	{.name = "probe_tls", .type = T_BOOL, .def = "yes", .offset = F(probe_tls),
	 .help = "use STARTTLS when a server offers it (no certificate check)"},
	{.name = "probe_pipelining", .type = T_BOOL, .def = "yes", .offset = F(probe_pipelining),
	 .help = "send a session's last RCPT, the random RCPT and QUIT as one group when the server "
	         "offers PIPELINING"},
	{.name = "catchall_probe", .type = T_BOOL, .def = "yes", .offset = F(catchall_probe),
	 .help = "after an accepted address, ask for a random one to detect catch-all domains"},
	{.name = "max_mx", .type = T_INT, .def = "5", .min = 1, .max = 20, .offset = F(max_mx),
	 .help = "MX hosts tried per verification"},
	{.name = "max_mx_addresses", .type = T_INT, .def = "10", .min = 1, .max = 50,
	 .offset = F(max_mx_addresses), .help = "addresses tried per verification, all MX hosts together"},
	{.name = "probe_allow_networks", .type = T_CIDRS, .def = "", .offset = F(probe_allow_networks),
	 .item = item_cidr, .help = "addresses probes may connect to although the network guard denies them"},
	{.name = "connect_timeout", .type = T_DURATION, .def = "10s", .min = 100, .max = 300000,
	 .offset = F(connect_timeout_ms), .help = "time to connect to one mail server address"},
	{.name = "banner_timeout", .type = T_DURATION, .def = "30s", .min = 100, .max = 300000,
	 .offset = F(banner_timeout_ms), .help = "time for a server's greeting"},
	{.name = "command_timeout", .type = T_DURATION, .def = "30s", .min = 100, .max = 300000,
	 .offset = F(command_timeout_ms), .help = "time for the reply to each command"},
	{.name = "probe_timeout", .type = T_DURATION, .def = "60s", .min = 100, .max = 600000,
	 .offset = F(probe_timeout_ms), .help = "time for one whole verification, every MX host included"},
	/* circuit breaker (hosts.h) */
	{.name = "blocked_ttl", .type = T_DURATION, .def = "1h", .min = 0, .max = INT64_C(86400000),
	 .offset = F(blocked_ttl_ms),
	 .help = "an MX host address that refused us (blocked) is not connected to again for this long; "
	         "domains behind it get its refusal; 0: off"},
	{.name = "host_backoff", .type = T_DURATION, .def = "5m", .min = 0, .max = 3600000,
	 .offset = F(host_backoff_ms),
	 .help = "an MX host address that did not answer is skipped this long, doubled per failure in a "
	         "row up to 1h; 0: off"},
	{.name = "host_session_rate", .type = T_INT, .def = "20", .min = 0, .max = 100000,
	 .offset = F(host_session_rate),
	 .help = "new sessions per minute to one MX host address; beyond: that address counts as a "
	         "temporary failure and the next is tried; 0: no limit"},
	{.name = "catchall_host_domains", .type = T_INT, .def = "3", .min = 0, .max = 10,
	 .offset = F(catchall_host_domains),
	 .help = "an MX host address that accepted random addresses for this many distinct domains "
	         "(within catchall_host_ttl) is remembered as catch-all: other domains behind it get "
	         "catch_all without a session; 0: off"},
	{.name = "catchall_host_ttl", .type = T_DURATION, .def = "1d", .min = 1000,
	 .max = INT64_C(604800000), .offset = F(catchall_host_ttl_ms),
	 .help = "the window in which catchall_host_domains are counted, and how long an MX host address "
	         "is then remembered as catch-all"},
	{.name = "host_sessions", .type = T_INT, .def = "2", .min = 0, .max = 1000,
	 .offset = F(host_sessions),
	 .help = "concurrent SMTP sessions to one MX host address, shared by every probe there (one RCPT "
	         "per address); the others wait; 0: one session per probe, no limit"},
	{.name = "host_session_errors", .type = T_INT, .def = "10", .min = 0, .max = 1000,
	 .offset = F(host_session_errors),
	 .help = "failed (5xx) RCPTs after which a shared session ends and a new one takes the rest "
	         "(below Postfix's smtpd_hard_error_limit of 20); 0: no bound"},
	{.name = "mx_host_overrides", .type = T_LIST, .def = "", .offset = F(mx_host_overrides),
	 .item = item_mx_host,
	 .help = "\"PATTERN skip|verify\" entries: MX host names (*.example.net: any subdomain) or networks; "
	         "skip: no session, unverifiable; the most specific entry wins"},
	{.name = "verify_budget", .type = T_DURATION, .def = "8s", .min = 100, .max = 25000,
	 .offset = F(verify_budget_ms), .help = "longest wait for a verdict at RCPT; then 4xx, and the probe goes on"},
	{.name = "cache", .restart = true, .type = T_STRING, .def = "/var/lib/vemilter/cache.lmdb", .offset = F(cache),
	 .check = check_cache, .help = "LMDB cache file, or redis://[user@]host[:port][/db] for a cache shared by a fleet; empty: no cache"},
	{.name = "cache_fallback", .restart = true, .type = T_STRING, .def = "/var/lib/vemilter/cache.lmdb",
	 .offset = F(cache_fallback), .check = check_path,
	 .help = "with a Redis cache: the local LMDB file milter threads read, kept while Redis is unreachable; empty: none"},
	{.name = "cache_password_file", .type = T_STRING, .def = "", .offset = F(cache_password_file),
	 .check = check_path, .help = "with a Redis cache: a file whose first line is its password; empty: none"},
	{.name = "cache_redis_timeout", .type = T_DURATION, .def = "200ms", .min = 10, .max = 10000,
	 .offset = F(cache_redis_timeout_ms), .help = "every Redis call's timeout; past it Redis counts as down"},
	{.name = "cache_max_mb", .restart = true, .type = T_INT, .def = "256", .min = 1, .max = 65536, .offset = F(cache_max_mb),
	 .help = "the cache grows up to this many MiB, then evicts the oldest entries"},
	{.name = "cache_sync_interval", .restart = true, .type = T_DURATION, .def = "1s", .min = 0, .max = 60000,
	 .offset = F(cache_sync_interval_ms),
	 .help = "cache writes reach the disk at least this often (a power loss loses at most this much); 0: every write"},
	{.name = "positive_ttl", .type = T_DURATION, .def = "31d", .min = 1000, .max = INT64_C(31536000000),
	 .offset = F(positive_ttl_ms), .help = "how long a valid address is remembered"},
	{.name = "positive_refresh", .type = T_DURATION, .def = "7d", .min = 1000, .max = INT64_C(31536000000),
	 .offset = F(positive_refresh_ms), .help = "after this a valid answer is still served, and refreshed"},
	{.name = "negative_ttl", .type = T_DURATION, .def = "3d", .min = 1000, .max = INT64_C(31536000000),
	 .offset = F(negative_ttl_ms), .help = "how long invalid and no_domain answers are remembered"},
	{.name = "negative_refresh", .type = T_DURATION, .def = "3h", .min = 1000, .max = INT64_C(31536000000),
	 .offset = F(negative_refresh_ms), .help = "after this a negative answer is still served, and refreshed"},
	{.name = "inconclusive_ttl", .type = T_DURATION, .def = "1d", .min = 1000, .max = INT64_C(31536000000),
	 .offset = F(inconclusive_ttl_ms), .help = "how long catch_all and unverifiable answers are remembered"},
	{.name = "temporary_ttl", .type = T_DURATION, .def = "5m", .min = 1000, .max = INT64_C(86400000),
	 .offset = F(temporary_ttl_ms), .help = "how long tempfail and blocked answers are remembered"},
	{.name = "sweep_interval", .type = T_DURATION, .def = "1h", .min = 1000, .max = INT64_C(86400000),
	 .offset = F(sweep_interval_ms), .help = "how often expired cache entries are removed"},
	{.name = "domain_probe_limit", .type = T_INT, .def = "5", .min = 1, .max = 1000,
	 .offset = F(domain_probe_limit), .help = "probes to one domain at once; more wait their turn"},
	{.name = "domain_probe_rate", .type = T_INT, .def = "60", .min = 0, .max = 100000,
	 .offset = F(domain_probe_rate), .help = "new probes to one domain per minute; beyond: tempfail; 0: no limit"},
	{.name = "client_probe_rate", .type = T_INT, .def = "60", .min = 0, .max = 100000,
	 .offset = F(client_probe_rate),
	 .help = "probes started per minute on behalf of one client address; beyond: tempfail; 0: no limit"},
	{.name = "domain_invalid_limit", .type = T_INT, .def = "20", .min = 0, .max = 100000,
	 .offset = F(domain_invalid_limit),
	 .help = "this many invalid addresses of one domain in a minute: its new addresses tempfail for 5m; 0: off"},
	{.name = "max_probes_in_flight", .type = T_INT, .def = "1000", .min = 1, .max = 100000,
	 .offset = F(max_probes_in_flight),
	 .help = "probes running at once, all domains (also bounded by the open-file limit); beyond: tempfail"},
	{.name = "greylist_retry", .type = T_DURATION, .def = "5m", .min = 1000, .max = 3600000,
	 .offset = F(greylist_retry_ms), .help = "a probe greylisted at RCPT is asked again after this, in the background"},
	{.name = "tagged_senders", .type = T_LIST, .def = "batv, srs, verp", .offset = F(tagged_senders),
	 .item = item_tag, .help = "per-message sender tags cached under the stable address: batv, srs, verp"},
	{.name = "valid_action", .type = T_ACTION, .def = "accept",
	 .offset = F(outcome_action[OUTCOME_VALID]),
	 .help = "what a valid sender gets: accept, tempfail or reject"},
	{.name = "invalid_action", .type = T_ACTION, .def = "reject",
	 .offset = F(outcome_action[OUTCOME_INVALID]),
	 .help = "what a sender gets whose mail server refuses the address"},
	{.name = "no_domain_action", .type = T_ACTION, .def = "reject",
	 .offset = F(outcome_action[OUTCOME_NO_DOMAIN]),
	 .help = "what a sender gets whose domain takes no mail"},
	{.name = "catch_all_action", .type = T_ACTION, .def = "accept",
	 .offset = F(outcome_action[OUTCOME_CATCH_ALL]), .help = "what a sender at a catch-all domain gets"},
	{.name = "tempfail_action", .type = T_ACTION, .def = "tempfail",
	 .offset = F(outcome_action[OUTCOME_TEMPFAIL]), .check = check_tempfail_action,
	 .help = "what a sender gets when the probe failed temporarily; never reject"},
	{.name = "blocked_action", .type = T_ACTION, .def = "accept",
	 .offset = F(outcome_action[OUTCOME_BLOCKED]), .check = check_blocked_action,
	 .help = "what a sender gets when its server refuses our probe; never reject"},
	{.name = "unverifiable_action", .type = T_ACTION, .def = "accept",
	 .offset = F(outcome_action[OUTCOME_UNVERIFIABLE]),
	 .help = "what a sender gets that cannot be asked about"},
	{.name = "budget_action", .type = T_ACTION, .def = "tempfail", .offset = F(budget_action),
	 .check = check_budget_action, .help = "what a sender gets when no answer came within verify_budget"},
	{.name = "defer_limit", .type = T_DURATION, .def = "2h", .min = 0, .max = INT64_C(2592000000),
	 .offset = F(defer_limit_ms),
	 .help = "a sender deferred for longer than this (from its first deferral) is accepted; 0: no limit"},
	{.name = "invalid_reply", .type = T_REPLY,
	 .def = "550 5.1.0 Sender address <%a> rejected: mailbox does not exist (%m)",
	 .offset = F(invalid_reply),
	 .check = check_reply_5xx, .help = "5xx reply rejecting an invalid sender"},
	{.name = "no_domain_reply", .type = T_REPLY, .def = "550 5.1.8 Sender address <%a> rejected: %r",
	 .offset = F(no_domain_reply), .check = check_reply_5xx,
	 .help = "5xx reply rejecting a sender whose domain takes no mail"},
	{.name = "reject_reply", .type = T_REPLY, .def = "550 5.7.1 Sender address <%a> rejected: %o (%r)",
	 .offset = F(reject_reply), .check = check_reply_5xx,
	 .help = "5xx reply rejecting any other outcome"},
	{.name = "tempfail_reply", .type = T_REPLY,
	 .def = "451 4.7.1 Sender address <%a> could not be verified (%r), try again later",
	 .offset = F(tempfail_reply), .check = check_reply_4xx,
	 .help = "4xx reply for any outcome whose action is tempfail"},
	{.name = "budget_reply", .type = T_REPLY,
	 .def = "451 4.7.1 Sender address verification in progress, try again later",
	 .offset = F(budget_reply),
	 .check = check_reply_4xx, .help = "4xx reply when no answer came within verify_budget"},
	{.name = "blocklist_reply", .type = T_REPLY,
	 .def = "550 5.7.1 Sender address <%a> rejected: its domain is not accepted here",
	 .offset = F(blocklist_reply), .check = check_reply_5xx,
	 .help = "5xx reply rejecting a blocklisted sender domain"},
	{.name = "domain_overrides", .type = T_OVERRIDE, .def = "", .offset = F(domain_overrides),
	 .item = item_override,
	 .help = "per-domain rules: DOMAIN skip, DOMAIN verify or DOMAIN OUTCOME=ACTION,..."},
	{.name = "sender_domain_blocklist", .type = T_LIST, .def = "", .offset = F(sender_domain_blocklist),
	 .item = item_domain, .help = "sender domains rejected without a probe, with their subdomains"},
	{.name = "dry_run", .type = T_BOOL, .def = "no", .offset = F(dry_run),
	 .help = "decide and log every verdict, but reject and tempfail nothing"},
	{.name = "self_health", .type = T_BOOL, .def = "yes", .offset = F(self_health),
	 .help = "while most probes to many hosts fail on our side, accept tempfail outcomes"},
	{.name = "result_header", .type = T_STRING, .def = "", .offset = F(result_header),
	 .check = check_header_name,
	 .help = "header naming the outcome, added to accepted mail; empty: none"},
};
/* clang-format on */

_Static_assert(sizeof(conf_directives) / sizeof(conf_directives[0]) == CONF_DIRECTIVE_COUNT,
               "CONF_DIRECTIVE_COUNT in conftable.h must match the table");
