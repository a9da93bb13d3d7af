/*
 * conf.c - vemilter.conf: the parser, the loader and the lifetime of the
 * parsed result.
 *
 * A load starts from an empty struct conf, applies each "key = value" line of
 * the file, then applies the default text of every directive the file did not
 * set through the very same code, so a default can never be invalid silently.
 * What each directive is and accepts comes from the table in conftable.c;
 * here are the line reader, "file:" list files, the parsers by type (integer,
 * octal mode, duration, boolean, syslog names, reply, action) and the error
 * reporting. Every error is reported as "file:line: message" and parsing goes
 * on to find the next one; any error fails the whole load.
 *
 * Owns the struct conf it returns and everything reachable from it; the last
 * conf_unref() frees it all, guided by the same table. No global mutable
 * state: the only statics are constant tables.
 */
#include "conf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conftable.h"
#include "log.h"
#include "redisurl.h"

#define CONF_MSG_MAX 1024 /* one error message */
#define DEFAULT_SITE "built-in default"

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

/* Everything one load needs; lives on the stack of conf_load*(). */
struct loader {
	struct conf *conf;
	char *dir; /* for relative file: paths */
	conf_error_fn on_error;
	void *arg;
	unsigned errors;
	unsigned set_on[CONF_DIRECTIVE_COUNT]; /* line that set it; 0: not yet */
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
		if (!conf_action_from_name(value, field)) {
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

/* find_directive - index of name in the table, or CONF_DIRECTIVE_COUNT */
static size_t find_directive(const char *name)
{
	size_t i = 0;

	while (i < CONF_DIRECTIVE_COUNT && strcmp(conf_directives[i].name, name) != 0)
		i++;
	return i;
}

/* unknown_directive - report name, suggesting the nearest within 2 edits */
static void unknown_directive(struct loader *ld, const struct site *at, const char *name)
{
	size_t best = 3, pick = CONF_DIRECTIVE_COUNT;

	for (size_t i = 0; i < CONF_DIRECTIVE_COUNT; i++) {
		size_t dist = edit_distance(name, conf_directives[i].name);
		if (dist < best) {
			best = dist;
			pick = i;
		}
	}
	if (pick < CONF_DIRECTIVE_COUNT)
		report(ld, at, "unknown directive \"%s\" (did you mean \"%s\"?)", name,
		       conf_directives[pick].name);
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
	if (i == CONF_DIRECTIVE_COUNT) {
		unknown_directive(ld, at, key);
		return;
	}
	if (ld->set_on[i] != 0) {
		report(ld, at, "duplicate directive \"%s\", first set on line %u", key, ld->set_on[i]);
		return;
	}
	ld->set_on[i] = at->line;
	apply(ld, at, &conf_directives[i], value);
}

/* apply_defaults - the default text of every directive the file left unset */
static void apply_defaults(struct loader *ld)
{
	const struct site at = {DEFAULT_SITE, 0};

	for (size_t i = 0; i < CONF_DIRECTIVE_COUNT; i++)
		if (ld->set_on[i] == 0)
			apply(ld, &at, &conf_directives[i], conf_directives[i].def);
}

/* conf_free - release c and everything it owns */
static void conf_free(struct conf *c)
{
	for (size_t i = 0; i < CONF_DIRECTIVE_COUNT; i++) {
		void *field = field_of(c, &conf_directives[i]);
		if (conf_directives[i].type == T_STRING) {
			free(*(char **)field);
		} else if (conf_directives[i].type == T_LIST) {
			struct conf_strings *l = field;
			for (size_t j = 0; j < l->count; j++)
				free(l->items[j]);
			free(l->items);
		} else if (conf_directives[i].type == T_CIDRS) {
			free(((struct cidr_list *)field)->items);
		} else if (conf_directives[i].type == T_OVERRIDE) {
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

/* check_together - what no single directive can say: a Redis user in the
 * cache URL needs a password (vemilter-cache refuses it too; without one the
 * daemon would connect as the default user, not the one named) */
static void check_together(struct loader *ld, const struct site *at)
{
	struct redis_url url;
	char why[200];
	if (ld->conf->cache != NULL && redis_url_is(ld->conf->cache) &&
	    redis_url_parse(ld->conf->cache, &url, why, sizeof(why)) && url.user[0] != '\0' &&
	    (ld->conf->cache_password_file == NULL || ld->conf->cache_password_file[0] == '\0'))
		report(ld, at, "cache: the Redis user %s needs a password: set cache_password_file",
		       url.user);
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
		if (ld.errors == 0)
			check_together(&ld, &at);
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
	return CONF_DIRECTIVE_COUNT;
}

/* conf_directive_name - name of directive i; NULL past the end */
const char *conf_directive_name(size_t i)
{
	return i < CONF_DIRECTIVE_COUNT ? conf_directives[i].name : NULL;
}

/* conf_directive_restart - see conf.h */
bool conf_directive_restart(size_t i)
{
	return i < CONF_DIRECTIVE_COUNT && conf_directives[i].restart;
}

/* conf_directive_changed - see conf.h */
bool conf_directive_changed(const struct conf *a, const struct conf *b, size_t i)
{
	if (i >= CONF_DIRECTIVE_COUNT)
		return false;
	const struct directive *d = &conf_directives[i];
	const char *fa = (const char *)a + d->offset, *fb = (const char *)b + d->offset;
	switch (d->type) {
	case T_STRING:
		return strcmp(*(char *const *)fa, *(char *const *)fb) != 0;
	case T_BOOL:
		return *(const bool *)fa != *(const bool *)fb;
	case T_INT:
	case T_FACILITY:
	case T_LEVEL:
		return *(const int *)fa != *(const int *)fb;
	case T_MODE:
		return *(const unsigned *)fa != *(const unsigned *)fb;
	case T_DURATION:
		return *(const int64_t *)fa != *(const int64_t *)fb;
	default:
		return false; /* no such directive needs a restart */
	}
}

/* conf_directive_default - default text of directive i; NULL past the end */
const char *conf_directive_default(size_t i)
{
	return i < CONF_DIRECTIVE_COUNT ? conf_directives[i].def : NULL;
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
