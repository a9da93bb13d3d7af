/*
 * conf.c - vemilter.conf: the directive table, the parser and the lifetime of
 * the parsed result.
 *
 * One static table names every directive with its type, default text, bounds
 * and place in struct conf. A load starts from an empty struct conf, applies
 * each "key = value" line of the file, then applies the default text of every
 * directive the file did not set through the very same code, so a default can
 * never be invalid silently. Every error is reported as "file:line: message"
 * and parsing goes on to find the next one; any error fails the whole load.
 *
 * Owns the struct conf it returns and everything reachable from it; the last
 * conf_unref() frees it all, guided by the same table. No global mutable
 * state: the only statics are constant tables.
 */
#include "conf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <idn2.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "addr.h"
#include "log.h"

#define CONF_LINE_MAX 4096 /* octets in a line, newline excluded */
#define CONF_MSG_MAX  1024 /* one error message */
#define CONF_WHY_MAX  512  /* one reason inside a message */
#define DEFAULT_SITE  "built-in default"
#define DNS_NAME_BUF  256 /* a host name and its NUL */

enum conf_type {
	T_STRING,   /* char *; optional check */
	T_BOOL,     /* bool */
	T_INT,      /* int, min..max */
	T_MODE,     /* unsigned, octal, min..max */
	T_DURATION, /* int64_t milliseconds, min..max */
	T_FACILITY, /* int, syslog facility */
	T_LEVEL,    /* int, syslog priority */
	T_LIST,     /* struct conf_strings; item normalizes and appends */
	T_CIDRS,    /* struct cidr_list; item parses and appends */
	T_REPLY,    /* struct reply_template; optional check after parsing */
	T_ACTION,   /* enum conf_action; optional check */
	T_OVERRIDE, /* struct conf_overrides; item parses and appends */
};

/* Validates a string value; false with a reason in why. */
typedef bool (*check_fn)(const char *value, char *why, size_t why_size);
/* Normalizes one list item and appends it to the field; false with a reason. */
typedef bool (*item_fn)(void *field, const char *item, char *why, size_t why_size);

struct directive {
	const char *name;
	enum conf_type type;
	const char *def;     /* default, parsed like a value from the file */
	int64_t min, max;    /* T_INT, T_MODE, T_DURATION (milliseconds) */
	size_t offset;       /* of the field in struct conf */
	check_fn check;      /* T_STRING, T_REPLY, T_ACTION: optional */
	item_fn item;        /* T_LIST, T_CIDRS, T_OVERRIDE */
	const char *choices; /* T_FACILITY, T_LEVEL: names, for messages */
	const char *help;
};

/* A place in a file, for messages; line 0 is a built-in default. */
struct site {
	const char *file;
	unsigned line;
};

/* Duration units, largest first; a duration names them in this order. */
static const struct {
	const char *name;
	int64_t ms;
} units[] = {{"w", 604800000}, {"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};

#define UNIT_COUNT (sizeof(units) / sizeof(units[0]))

/* is_blank - white space that is trimmed around keys, values and items */
static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* trim - strip blanks at both ends of s in place; returns the new start */
static char *trim(char *s)
{
	while (is_blank(*s))
		s++;
	size_t n = strlen(s);
	while (n > 0 && is_blank(s[n - 1]))
		s[--n] = '\0';
	return s;
}

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

/* parse_action - "accept", "tempfail" or "reject", any case */
static bool parse_action(const char *s, enum conf_action *out)
{
	static const char *const names[] = {
	        [CONF_ACCEPT] = "accept", [CONF_TEMPFAIL] = "tempfail", [CONF_REJECT] = "reject"};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcasecmp(s, names[i]) == 0) {
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
	if (!parse_action(eq + 1, &action)) {
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

#define F(member) offsetof(struct conf, member)

/* clang-format off */
static const struct directive directives[] = {
	{.name = "socket", .type = T_STRING, .def = "unix:/run/vemilter/vemilter.sock", .offset = F(socket),
	 .check = check_socket, .help = "where the MTA connects: unix:/path, inet:PORT@HOST, inet6:PORT@HOST"},
	{.name = "socket_mode", .type = T_MODE, .def = "0660", .min = 0, .max = 0777, .offset = F(socket_mode),
	 .help = "permissions of a unix socket"},
	{.name = "socket_group", .type = T_STRING, .def = "", .offset = F(socket_group), .check = check_name,
	 .help = "group of a unix socket; empty: leave as created"},
	{.name = "user", .type = T_STRING, .def = "vemilter", .offset = F(user), .check = check_name,
	 .help = "run as this user after setup; empty: do not switch"},
	{.name = "pid_file", .type = T_STRING, .def = "/run/vemilter/vemilter.pid", .offset = F(pid_file),
	 .check = check_path, .help = "write the process id here; empty: none"},
	{.name = "syslog_facility", .type = T_FACILITY, .def = "mail", .offset = F(syslog_facility),
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
	{.name = "helo_name", .type = T_STRING, .def = "", .offset = F(helo_name), .check = check_host_name,
	 .help = "name probes give in EHLO/HELO; empty: this host's fully qualified name"},
	{.name = "probe_sender", .type = T_STRING, .def = "", .offset = F(probe_sender),
	 .check = check_probe_sender, .help = "MAIL FROM address of probes; empty: the null sender <>"},
	{.name = "probe_port", .type = T_INT, .def = "25", .min = 1, .max = 65535, .offset = F(probe_port),
	 .help = "TCP port of probed mail servers"},
	{.name = "probe_tls", .type = T_BOOL, .def = "yes", .offset = F(probe_tls),
	 .help = "use STARTTLS when a server offers it (no certificate check)"},
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
	{.name = "verify_budget", .type = T_DURATION, .def = "8s", .min = 100, .max = 25000,
	 .offset = F(verify_budget_ms), .help = "longest wait for a verdict at RCPT; then 4xx, and the probe goes on"},
	{.name = "cache", .type = T_STRING, .def = "/var/lib/vemilter/cache.lmdb", .offset = F(cache),
	 .check = check_path, .help = "LMDB cache file; empty: no cache"},
	{.name = "cache_max_mb", .type = T_INT, .def = "256", .min = 1, .max = 65536, .offset = F(cache_max_mb),
	 .help = "the cache grows up to this many MiB, then evicts the oldest entries"},
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
	{.name = "tempfail_action", .type = T_ACTION, .def = "accept",
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
	{.name = "result_header", .type = T_STRING, .def = "", .offset = F(result_header),
	 .check = check_header_name,
	 .help = "header naming the outcome, added to accepted mail; empty: none"},
};
/* clang-format on */

#define DIRECTIVE_COUNT (sizeof(directives) / sizeof(directives[0]))

/* Everything one load needs; lives on the stack of conf_load*(). */
struct loader {
	struct conf *conf;
	char *dir; /* for relative file: paths */
	conf_error_fn on_error;
	void *arg;
	unsigned errors;
	unsigned set_on[DIRECTIVE_COUNT]; /* line that set it; 0: not yet */
};

/* A list directive being filled from a list file. */
struct list_target {
	const struct directive *d;
	void *field;
};

typedef void (*line_fn)(struct loader *ld, const struct site *at, char *line, void *ctx);

/* report - one "file:line: message" to the caller; counts the error */
static void __attribute__((format(printf, 3, 4)))
report(struct loader *ld, const struct site *at, const char *fmt, ...)
{
	char msg[CONF_MSG_MAX], full[CONF_MSG_MAX + 64];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (at->line > 0)
		snprintf(full, sizeof(full), "%s:%u: %s", at->file, at->line, msg);
	else
		snprintf(full, sizeof(full), "%s: %s", at->file, msg);
	ld->errors++;
	if (ld->on_error != NULL)
		ld->on_error(ld->arg, full);
}

/* field_of - where directive d stores its value in c */
static void *field_of(struct conf *c, const struct directive *d)
{
	return (char *)c + d->offset;
}

/* bad_octet - first control character other than tab in s, or 0 */
static unsigned char bad_octet(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
		if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
			return *p;
	return 0;
}

/* for_each_line - hand each non-blank, non-comment line of f, trimmed, to fn;
 * returns 0, or the errno of a read error */
static int for_each_line(struct loader *ld, const char *file, FILE *f, line_fn fn, void *ctx)
{
	struct site at = {file, 0};
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;

	for (errno = 0; (n = getline(&line, &cap, f)) >= 0; errno = 0) {
		at.line++;
		if (n > 0 && line[n - 1] == '\n')
			line[--n] = '\0';
		bool nul = memchr(line, '\0', (size_t)n) != NULL;
		char *s = trim(line);
		if (n > CONF_LINE_MAX)
			report(ld, &at, "line is longer than %d octets", CONF_LINE_MAX);
		else if (nul)
			report(ld, &at, "line contains a NUL octet");
		else if (*s == '\0' || *s == '#')
			continue;
		else if (bad_octet(s) != 0)
			report(ld, &at, "control character 0x%02x in line", bad_octet(s));
		else
			fn(ld, &at, s, ctx);
	}
	int err = ferror(f) ? (errno != 0 ? errno : EIO) : 0;
	free(line);
	return err;
}

/* add_item - one list item through the directive's item function */
static void add_item(struct loader *ld, const struct site *at, const struct directive *d, void *field,
                     const char *item)
{
	char why[CONF_WHY_MAX];

	if (!d->item(field, item, why, sizeof(why)))
		report(ld, at, "%s: %s", d->name, why);
}

/* list_file_line - one entry of a list file */
static void list_file_line(struct loader *ld, const struct site *at, char *line, void *ctx)
{
	struct list_target *t = ctx;

	if (strncmp(line, "file:", 5) == 0)
		report(ld, at, "%s: list files do not nest: \"%s\"", t->d->name, line);
	else
		add_item(ld, at, t->d, t->field, line);
}

/* read_list_file - add every entry of the list file named by path */
static void read_list_file(struct loader *ld, const struct site *at, const struct directive *d, void *field,
                           const char *path)
{
	char *full = NULL;

	if (*path == '\0') {
		report(ld, at, "%s: \"file:\" needs a path", d->name);
		return;
	}
	if (path[0] == '/')
		full = strdup(path);
	else if (asprintf(&full, "%s/%s", ld->dir, path) < 0)
		full = NULL;
	if (full == NULL) {
		report(ld, at, "%s: out of memory", d->name);
		return;
	}
	FILE *f = fopen(full, "re");
	struct list_target t = {d, field};
	int err = f != NULL ? for_each_line(ld, full, f, list_file_line, &t) : errno;
	if (err != 0)
		report(ld, at, "%s: cannot read %s: %s", d->name, full, strerror(err));
	if (f != NULL)
		fclose(f);
	free(full);
}

/* parse_list - comma-separated items; "file:PATH" adds a file's lines */
static void parse_list(struct loader *ld, const struct site *at, const struct directive *d, const char *value)
{
	char copy[CONF_LINE_MAX + 1];
	void *field = field_of(ld->conf, d);

	snprintf(copy, sizeof(copy), "%s", value);
	for (char *next = copy; next != NULL;) {
		char *item = next, *comma = strchr(next, ',');
		if (comma != NULL)
			*comma = '\0';
		next = comma ? comma + 1 : NULL;
		item = trim(item);
		if (*item == '\0')
			continue;
		if (strncmp(item, "file:", 5) == 0)
			read_list_file(ld, at, d, field, trim(item + 5));
		else
			add_item(ld, at, d, field, item);
	}
}

/* parse_bool - yes/no/true/false/on/off/1/0, any case */
static bool parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = {"yes", "true", "on", "1"}, *const no[] = {"no", "false", "off",
	                                                                            "0"};

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(s, yes[i]) == 0 || strcasecmp(s, no[i]) == 0) {
			*out = strcasecmp(s, yes[i]) == 0;
			return true;
		}
	}
	return false;
}

/* parse_mode - octal digits within min..max; why names the problem */
static bool parse_mode(const char *s, int64_t min, int64_t max, unsigned *out, char *why, size_t why_size)
{
	int64_t v = 0;
	const char *p = s;

	for (; *p >= '0' && *p <= '7'; p++)
		if (v <= max)
			v = v * 8 + (*p - '0');
	if (p == s || *p != '\0') {
		snprintf(why, why_size, "\"%s\" is not an octal mode such as 0660", s);
		return false;
	}
	if (v < min || v > max) {
		snprintf(why, why_size, "%s is out of range %04llo..%04llo", s, (unsigned long long)min,
		         (unsigned long long)max);
		return false;
	}
	*out = (unsigned)v;
	return true;
}

/* format_duration - ms as "1h30m" (or "250ms", "0s") into buf */
static const char *format_duration(int64_t ms, char *buf, size_t size)
{
	size_t len = 0;

	snprintf(buf, size, "0s");
	for (size_t i = 0; i < UNIT_COUNT && len < size; i++) {
		if (ms / units[i].ms != 0)
			len += (size_t)snprintf(buf + len, size - len, "%lld%s",
			                        (long long)(ms / units[i].ms), units[i].name);
		ms %= units[i].ms;
	}
	return buf;
}

/* parse_duration - a duration within min..max milliseconds */
static bool parse_duration(const char *s, int64_t min, int64_t max, int64_t *out, char *why, size_t why_size)
{
	char lo[32], hi[32];

	if (!conf_parse_duration_ms(s, out)) {
		snprintf(why, why_size, "\"%s\" is not a duration such as 30s, 5m or 1h30m", s);
		return false;
	}
	if (*out < min || *out > max) {
		snprintf(why, why_size, "%s is out of range %s..%s", s, format_duration(min, lo, sizeof(lo)),
		         format_duration(max, hi, sizeof(hi)));
		return false;
	}
	return true;
}

/* set_string - a string value, checked, copied into the field */
static bool set_string(const struct directive *d, const char *value, char **field, char *why, size_t why_size)
{
	if (d->check != NULL && !d->check(value, why, why_size))
		return false;
	char *copy = strdup(value);
	if (copy == NULL) {
		snprintf(why, why_size, "out of memory");
		return false;
	}
	free(*field);
	*field = copy;
	return true;
}

/* set_reply - a reply value, parsed, checked, copied into the field */
static bool set_reply(const struct directive *d, const char *value, struct reply_template *field, char *why,
                      size_t why_size)
{
	struct reply_template t;

	if (!reply_parse(value, &t, why, why_size) || (d->check != NULL && !d->check(value, why, why_size)))
		return false;
	*field = t;
	return true;
}

/* set_scalar - parse a non-list value into its field; false with why */
static bool set_scalar(const struct directive *d, const char *value, void *field, char *why, size_t why_size)
{
	int64_t v;

	switch (d->type) {
	case T_STRING:
		return set_string(d, value, field, why, why_size);
	case T_BOOL:
		if (parse_bool(value, field))
			return true;
		snprintf(why, why_size, "\"%s\" is not a boolean (yes, no, true, false, on, off, 1, 0)",
		         value);
		return false;
	case T_INT:
		if (!conf_parse_integer(value, d->min, d->max, &v, why, why_size))
			return false;
		*(int *)field = (int)v;
		return true;
	case T_MODE:
		return parse_mode(value, d->min, d->max, field, why, why_size);
	case T_DURATION:
		return parse_duration(value, d->min, d->max, field, why, why_size);
	case T_FACILITY:
	case T_LEVEL:
		if (d->type == T_FACILITY ? log_facility_from_name(value, field)
		                          : log_level_from_name(value, field))
			return true;
		snprintf(why, why_size, "\"%s\" is not one of %s", value, d->choices);
		return false;
	case T_REPLY:
		return set_reply(d, value, field, why, why_size);
	case T_ACTION:
		if (!parse_action(value, field)) {
			snprintf(why, why_size, "\"%s\" is not an action (accept, tempfail or reject)",
			         value);
			return false;
		}
		return d->check == NULL || d->check(value, why, why_size);
	default:
		snprintf(why, why_size, "internal error: type %d is not a scalar", (int)d->type);
		return false;
	}
}

/* apply - set directive d from value (a file line or its default) */
static void apply(struct loader *ld, const struct site *at, const struct directive *d, const char *value)
{
	char why[CONF_WHY_MAX];

	if (d->type == T_LIST || d->type == T_CIDRS || d->type == T_OVERRIDE)
		parse_list(ld, at, d, value);
	else if (!set_scalar(d, value, field_of(ld->conf, d), why, sizeof(why)))
		report(ld, at, "%s: %s", d->name, why);
}

/* edit_distance - Levenshtein distance, for "did you mean"; big if too long */
static size_t edit_distance(const char *a, const char *b)
{
	enum { MAXLEN = 63 };
	size_t la = strlen(a), lb = strlen(b), row[MAXLEN + 1];

	if (la > MAXLEN || lb > MAXLEN)
		return (size_t)-1;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			diag = up;
			row[j] = best;
		}
	}
	return row[lb];
}

/* find_directive - index of name in the table, or DIRECTIVE_COUNT */
static size_t find_directive(const char *name)
{
	size_t i = 0;

	while (i < DIRECTIVE_COUNT && strcmp(directives[i].name, name) != 0)
		i++;
	return i;
}

/* unknown_directive - report name, suggesting the nearest within 2 edits */
static void unknown_directive(struct loader *ld, const struct site *at, const char *name)
{
	size_t best = 3, pick = DIRECTIVE_COUNT;

	for (size_t i = 0; i < DIRECTIVE_COUNT; i++) {
		size_t dist = edit_distance(name, directives[i].name);
		if (dist < best) {
			best = dist;
			pick = i;
		}
	}
	if (pick < DIRECTIVE_COUNT)
		report(ld, at, "unknown directive \"%s\" (did you mean \"%s\"?)", name,
		       directives[pick].name);
	else
		report(ld, at, "unknown directive \"%s\"", name);
}

/* config_line - one "key = value" line of the config file */
static void config_line(struct loader *ld, const struct site *at, char *line, void *ctx)
{
	char *eq = strchr(line, '=');

	if (eq == NULL) {
		report(ld, at, "missing \"=\" in \"%.60s\" (expected \"name = value\")", line);
		return;
	}
	*eq = '\0';
	char *key = trim(line), *value = trim(eq + 1);
	if (*key == '\0') {
		report(ld, at, "missing directive name before \"=\"");
		return;
	}
	size_t i = find_directive(key);
	if (i == DIRECTIVE_COUNT) {
		unknown_directive(ld, at, key);
		return;
	}
	if (ld->set_on[i] != 0) {
		report(ld, at, "duplicate directive \"%s\", first set on line %u", key, ld->set_on[i]);
		return;
	}
	ld->set_on[i] = at->line;
	apply(ld, at, &directives[i], value);
}

/* apply_defaults - the default text of every directive the file left unset */
static void apply_defaults(struct loader *ld)
{
	const struct site at = {DEFAULT_SITE, 0};

	for (size_t i = 0; i < DIRECTIVE_COUNT; i++)
		if (ld->set_on[i] == 0)
			apply(ld, &at, &directives[i], directives[i].def);
}

/* conf_free - release c and everything it owns */
static void conf_free(struct conf *c)
{
	for (size_t i = 0; i < DIRECTIVE_COUNT; i++) {
		void *field = field_of(c, &directives[i]);
		if (directives[i].type == T_STRING) {
			free(*(char **)field);
		} else if (directives[i].type == T_LIST) {
			struct conf_strings *l = field;
			for (size_t j = 0; j < l->count; j++)
				free(l->items[j]);
			free(l->items);
		} else if (directives[i].type == T_CIDRS) {
			free(((struct cidr_list *)field)->items);
		} else if (directives[i].type == T_OVERRIDE) {
			struct conf_overrides *l = field;
			for (size_t j = 0; j < l->count; j++)
				free(l->items[j].domain);
			free(l->items);
		}
	}
	free(c->path);
	free(c);
}

/* dir_of - the directory part of path ("." if none), newly allocated */
static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (slash == NULL)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}

/* load_stream - parse and close f, the config named name (NULL f: errno says why) */
static struct conf *load_stream(const char *name, FILE *f, conf_error_fn on_error, void *arg)
{
	struct loader ld = {.on_error = on_error, .arg = arg};
	const struct site at = {name, 0};

	if (f == NULL) {
		report(&ld, &at, "cannot read: %s", strerror(errno));
		return NULL;
	}
	ld.conf = calloc(1, sizeof(*ld.conf));
	ld.dir = dir_of(name);
	if (ld.conf == NULL || ld.dir == NULL || (ld.conf->path = strdup(name)) == NULL) {
		report(&ld, &at, "out of memory");
	} else {
		atomic_init(&ld.conf->refs, 1);
		int err = for_each_line(&ld, name, f, config_line, NULL);
		if (err != 0)
			report(&ld, &at, "cannot read: %s", strerror(err));
		apply_defaults(&ld);
	}
	fclose(f);
	free(ld.dir);
	if (ld.errors == 0)
		return ld.conf;
	if (ld.conf != NULL)
		conf_free(ld.conf);
	return NULL;
}

/* conf_load - read and parse the file at path */
struct conf *conf_load(const char *path, conf_error_fn on_error, void *arg)
{
	return load_stream(path, fopen(path, "re"), on_error, arg);
}

/* conf_load_text - parse text; name stands for the file in messages */
struct conf *conf_load_text(const char *name, const char *text, conf_error_fn on_error, void *arg)
{
	return load_stream(name, fmemopen((void *)text, strlen(text), "r"), on_error, arg);
}

/* conf_ref - take one more reference to c */
struct conf *conf_ref(struct conf *c)
{
	if (c != NULL)
		atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
	return c;
}

/* conf_unref - drop a reference; the last one frees c */
void conf_unref(struct conf *c)
{
	if (c != NULL && atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
		conf_free(c);
}

/* conf_directive_count - number of directives in the table */
size_t conf_directive_count(void)
{
	return DIRECTIVE_COUNT;
}

/* conf_directive_name - name of directive i; NULL past the end */
const char *conf_directive_name(size_t i)
{
	return i < DIRECTIVE_COUNT ? directives[i].name : NULL;
}

/* conf_directive_default - default text of directive i; NULL past the end */
const char *conf_directive_default(size_t i)
{
	return i < DIRECTIVE_COUNT ? directives[i].def : NULL;
}

/* unit_at - index of the unit that p starts with, or UNIT_COUNT */
static size_t unit_at(const char *p)
{
	for (size_t u = 0; u < UNIT_COUNT; u++) {
		size_t len = strlen(units[u].name);
		if (strncmp(p, units[u].name, len) == 0 && !(p[len] >= 'a' && p[len] <= 'z'))
			return u;
	}
	return UNIT_COUNT;
}

/* conf_parse_duration_ms - "1h30m", "250ms", "30" (seconds) to milliseconds */
bool conf_parse_duration_ms(const char *text, int64_t *out_ms)
{
	int64_t total = 0;
	size_t next_unit = 0; /* units go from largest to smallest, each once */

	if (text == NULL || *text == '\0')
		return false;
	for (const char *p = text; *p != '\0';) {
		int64_t n = 0;
		const char *digits = p;
		for (; *p >= '0' && *p <= '9'; p++) {
			if (n > (INT64_MAX - (*p - '0')) / 10)
				return false;
			n = n * 10 + (*p - '0');
		}
		size_t u = *p == '\0' && digits == text ? unit_at("s") /* a bare number is seconds */
		                                        : unit_at(p);
		if (p == digits || u == UNIT_COUNT || u < next_unit || n > (INT64_MAX - total) / units[u].ms)
			return false;
		total += n * units[u].ms;
		next_unit = u + 1;
		if (*p != '\0')
			p += strlen(units[u].name);
	}
	*out_ms = total;
	return true;
}

/* conf_parse_integer - a decimal integer within min..max */
bool conf_parse_integer(const char *text, int64_t min, int64_t max, int64_t *out, char *why, size_t why_size)
{
	const char *first = text[0] == '-' ? text + 1 : text;
	bool digit = *first >= '0' && *first <= '9';
	char *end = NULL;

	errno = 0;
	long long v = digit ? strtoll(text, &end, 10) : 0;
	if (!digit || *end != '\0') {
		snprintf(why, why_size, "\"%s\" is not an integer", text);
		return false;
	}
	if (errno == ERANGE || v < min || v > max) {
		snprintf(why, why_size, "%s is out of range %lld..%lld", text, (long long)min,
		         (long long)max);
		return false;
	}
	*out = v;
	return true;
}

/* conf_strings_contains - exact, case-insensitive membership */
bool conf_strings_contains(const struct conf_strings *list, const char *item)
{
	if (list == NULL || item == NULL)
		return false;
	for (size_t i = 0; i < list->count; i++)
		if (strcasecmp(list->items[i], item) == 0)
			return true;
	return false;
}
