/*
 * cachetool.c - vemilter-cache: an administrator's view of the verification
 * cache: list, get, del, purge, stats, and put (for tests and emergencies).
 * Address records ("a:"), domain facts ("d:") and probe hints ("h:") are
 * shown and edited alike: an argument with "@" names an address (and, for
 * get and del --domain, its domain's records), one without names a domain
 * (its facts and hints), and "a:", "d:" or "h:" names one key; a key of
 * another kind ("x:...") is taken exactly as given. An address that is a
 * tagged sender (tags.h, as tagged_senders enables) also names its stable
 * form's record ("t:"), which answers for every address of that sender.
 *
 * Reads the daemon's configuration for the cache path and cache_max_mb and
 * opens the same LMDB file, safely alongside a running daemon. Warnings from
 * the store (e.g. a corrupt file moved aside) go to stderr. When `cache` is
 * a redis:// URL (issue 12's shared cache), the same commands work on Redis
 * through cacheredis.h (cache_password_file, cache_redis_timeout), with the
 * same output; the tool_* functions below pick the back end. Owns the
 * loaded configuration and the open cache or connection for the length of
 * one command.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "addr.h"
#include "cache.h"
#include "cacheredis.h"
#include "clock.h"
#include "conf.h"
#include "log.h"
#include "outcome.h"
#include "redisurl.h"
#include "tags.h"

/* Exit statuses, documented in vemilter-cache(8). */
enum exit_code {
	EXIT_OK = 0,
	EXIT_FAIL = 1, /* not found, or an error */
	EXIT_USAGE = 64,
	EXIT_CONFIG = 78,
};

/* The least time vemilter-cache waits for each Redis call, whatever
 * cache_redis_timeout says: that bound is for the mail path, and an
 * administrator's command on a busy server should not fail for 200 ms. */
#define REDIS_TIMEOUT_MIN_MS 2000

/* The keys one argument names: an address's (and its stable form's, a
 * tagged sender), its domain's facts and hints, or a single key. Unused
 * slots are "". */
enum { KEY_ADDRESS, KEY_TAGGED, KEY_DOMAIN, KEY_HINTS, KEY_SLOTS };

struct tool {
	struct conf *conf;
	struct cache *cache;      /* the LMDB file, or NULL when redis is set */
	struct cacheredis *redis; /* the shared cache, or NULL */
	int64_t now_ms;
	int argc;             /* the command's arguments, options removed */
	char **argv;          /* argv[0] is the command */
	bool expired, domain; /* --expired, --domain */
	/* put's options */
	unsigned flags;              /* --flags: enum outcome_flag bits */
	int64_t deferred_for_ms;     /* --deferred-for; -1: not given */
	int64_t tries;               /* --tries */
	FILE *out;                   /* where list writes */
	size_t hints, hints_expired; /* stats: "h:" records (cache_stats counts a: and d:) */
	struct cache_stats *st;      /* stats on Redis: what cache_stats counts on LMDB */
};

/* usage - the synopsis */
static void usage(FILE *out)
{
	fprintf(out,
	        "usage: vemilter-cache [-c FILE] COMMAND\n"
	        "  list                  every record, one a line (a: address, d: domain facts,\n"
	        "                        h: domain hints, t: a tagged sender's stable form)\n"
	        "  get ADDRESS|DOMAIN|KEY\n"
	        "                        the address's record (and its stable form's, a tagged\n"
	        "                        sender) and its domain's records, a domain's records,\n"
	        "                        or one key\n"
	        "  del [--domain] ADDRESS|DOMAIN|KEY\n"
	        "                        delete the address's record and its stable form's\n"
	        "                        (--domain: its domain's too), a domain's records, or\n"
	        "                        one key\n"
	        "  purge [--expired]     delete every record (--expired: only expired ones)\n"
	        "  stats                 counts, map size and use\n"
	        "  put [--flags LIST] [--deferred-for DURATION] [--tries N]\n"
	        "      ADDRESS|DOMAIN|KEY OUTCOME [CODE ECODE TEXT]\n"
	        "                        store a record (for tests and emergencies)\n"
	        "  -c FILE  configuration (default %s)\n"
	        "  -V, --version  print the version and exit\n"
	        "  -h, --help     print this help and exit\n",
	        CONF_DEFAULT_PATH);
}

/* print_conf_error - config errors as file:line: message */
static void print_conf_error(void *arg, const char *message)
{
	fprintf(stderr, "%s\n", message);
}

/* iso_time - ms since the epoch as 2024-05-01T10:00:00Z ("@ms" if out of range) */
static void iso_time(int64_t ms, char *buf, size_t size)
{
	struct tm tm;
	time_t t = (time_t)(ms / 1000 - (ms % 1000 < 0));
	if (ms > INT64_MIN && gmtime_r(&t, &tm) != NULL && tm.tm_year >= -1900 && tm.tm_year <= 8099)
		strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
	else
		snprintf(buf, size, "@%lld", (long long)ms);
}

/* print_key - the key, quoted with escapes if it holds a space, quote or
 * non-ASCII octet, so the first word of a line is always the key */
static void print_key(FILE *out, const char *key)
{
	const unsigned char *p = (const unsigned char *)key;
	if (strpbrk(key, " \"\\") == NULL) {
		for (; *p > ' ' && *p < 0x7f; p++)
			;
		if (*p == '\0') {
			fputs(key, out);
			return;
		}
	}
	putc('"', out);
	for (p = (const unsigned char *)key; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(out, "\\%c", *p);
		else if (*p < ' ' || *p >= 0x7f)
			fprintf(out, "\\x%02X", *p);
		else
			putc(*p, out);
	}
	putc('"', out);
}

/* flags_text - enum outcome_flag bits as "name,name", or NULL for none */
static const char *flags_text(unsigned flags, char *buf, size_t size)
{
	outcome_flags_text(flags, buf, size);
	return buf[0] != '\0' ? buf : NULL;
}

/* print_record - one line: key, outcome, fields, times, and a mark */
static void print_record(FILE *out, const char *key, const struct cache_record *rec, int64_t now_ms)
{
	const struct outcome *o = &rec->outcome;
	char line[2048], reply[400], when[40], flags[128], tries[16];
	size_t len = 0;
	line[0] = '\0';
	kv_add(line, sizeof(line), &len, "flags", flags_text(o->flags, flags, sizeof(flags)));
	kv_add(line, sizeof(line), &len, "stage", probe_stage_name(o->stage));
	snprintf(reply, sizeof(reply), "%.0d%s%s%s%s", o->code, o->code && o->ecode[0] ? " " : "", o->ecode,
	         (o->code || o->ecode[0]) && o->text[0] ? " " : "", o->text);
	kv_add(line, sizeof(line), &len, "reply", reply[0] ? reply : NULL);
	kv_add(line, sizeof(line), &len, "mx", o->mx_host[0] ? o->mx_host : NULL);
	kv_add(line, sizeof(line), &len, "addr", o->mx_addr[0] ? o->mx_addr : NULL);
	iso_time(rec->probed_at_ms, when, sizeof(when));
	kv_add(line, sizeof(line), &len, "probed", when);
	iso_time(rec->refresh_at_ms, when, sizeof(when));
	kv_add(line, sizeof(line), &len, "refresh", when);
	iso_time(rec->expires_at_ms, when, sizeof(when));
	kv_add(line, sizeof(line), &len, "expires", when);
	iso_time(rec->deferred_since_ms, when, sizeof(when));
	kv_add(line, sizeof(line), &len, "deferred_since", rec->deferred_since_ms != 0 ? when : NULL);
	snprintf(tries, sizeof(tries), "%u", rec->tries);
	kv_add(line, sizeof(line), &len, "tries", tries);
	kv_add(line, sizeof(line), &len, "reason", o->reason[0] ? o->reason : NULL);
	print_key(out, key);
	fprintf(out, " %s %s%s\n", outcome_name(o->kind), line,
	        now_ms >= rec->expires_at_ms   ? " expired"
	        : now_ms >= rec->refresh_at_ms ? " stale"
	                                       : "");
}

/* ---- the back end: LMDB (cache.h) or Redis (cacheredis.h) ---- */

/* redis_failed - a Redis call failed: say why on stderr; returns false */
static bool redis_failed(struct tool *t)
{
	fprintf(stderr, "vemilter-cache: %s: %s\n", cacheredis_url(t->redis), cacheredis_error(t->redis));
	return false;
}

/* tool_get - the record under key, expired or not: 1 found, 0 absent, -1 error */
static int tool_get(struct tool *t, const char *key, struct cache_record *out)
{
	if (t->redis != NULL) {
		int found = cacheredis_get(t->redis, key, out);
		if (found < 0)
			redis_failed(t);
		return found;
	}
	/* At the earliest possible "now" nothing has expired: the raw record. */
	return cache_get(t->cache, key, INT64_MIN, out) != CACHE_MISS;
}

/* tool_del - 1 deleted, 0 absent, -1 error */
static int tool_del(struct tool *t, const char *key)
{
	if (t->redis != NULL) {
		int deleted = cacheredis_del(t->redis, key);
		if (deleted < 0)
			redis_failed(t);
		return deleted;
	}
	return cache_del(t->cache, key);
}

/* tool_foreach - every record in key order */
static bool tool_foreach(struct tool *t, cache_visit_fn fn, void *arg)
{
	if (t->redis != NULL)
		return cacheredis_foreach(t->redis, fn, arg) || redis_failed(t);
	return cache_foreach(t->cache, fn, arg);
}

/* list_one - cache_foreach visitor for list */
static bool list_one(void *arg, const char *key, const struct cache_record *rec)
{
	struct tool *t = arg;
	print_record(t->out, key, rec, t->now_ms);
	return true;
}

/* cmd_list - every record; written to a temporary file first, so that the
 * read snapshot is not held while a slow reader (a pager) takes its time */
static int cmd_list(struct tool *t)
{
	char buf[65536];
	size_t n;
	FILE *tmp = tmpfile();
	t->out = tmp != NULL ? tmp : stdout;
	bool ok = tool_foreach(t, list_one, t);
	if (tmp != NULL) {
		rewind(tmp);
		while ((n = fread(buf, 1, sizeof(buf), tmp)) > 0)
			fwrite(buf, 1, n, stdout);
		fclose(tmp);
	}
	return ok ? EXIT_OK : EXIT_FAIL;
}

/* keys_for - the keys arg names (see the header comment): "a:", "d:" and
 * "h:" for an address, and "t:" for its stable form when it is a sender
 * tagged by one of the kinds tags enables; "d:" and "h:" for a domain, or
 * the one key given, normalized as the daemon writes it (the domain in
 * lower-case A-labels). A key that does not parse is taken as given unless
 * strict (put), so that get and del still reach whatever is stored. False
 * (with a message) if arg is none of these. */
static bool keys_for(const char *arg, bool strict, unsigned tags, char keys[KEY_SLOTS][CACHE_KEY_MAX])
{
	/* "t:" keys are taken as given, as any other kind: no prefix here */
	static const char prefixes[KEY_SLOTS] = {[KEY_ADDRESS] = 'a', [KEY_DOMAIN] = 'd', [KEY_HINTS] = 'h'};
	struct addr a;
	char why[200], probe[CACHE_KEY_MAX + 16];
	int slot = -1;
	for (int i = 0; i < KEY_SLOTS; i++) {
		keys[i][0] = '\0';
		if (prefixes[i] != '\0' && arg[0] == prefixes[i] && arg[1] == ':')
			slot = i;
	}
	if (slot < 0 && arg[0] >= 'a' && arg[0] <= 'z' && arg[1] == ':') {
		/* a kind of key this tool does not know: exactly as given */
		if (arg[2] == '\0' || strlen(arg) >= CACHE_KEY_MAX) {
			fprintf(stderr, "vemilter-cache: %s: not a valid key\n", arg);
			return false;
		}
		snprintf(keys[KEY_ADDRESS], CACHE_KEY_MAX, "%s", arg);
		return true;
	}
	const char *name = slot >= 0 ? arg + 2 : arg;
	if (slot >= 0 && (name[0] == '\0' || strlen(arg) >= CACHE_KEY_MAX)) {
		fprintf(stderr, "vemilter-cache: %s: not a valid key\n", arg);
		return false;
	}
	bool address =
	        slot >= 0 ? slot == KEY_ADDRESS : strchr(arg, '@') != NULL || arg[0] == '<' || arg[0] == '\0';
	/* A domain is checked and normalized as the domain of an address is. */
	size_t n = strlen(name);
	if (!address && n > 1 && name[n - 1] == '.')
		n--; /* a fully qualified "example.org." */
	snprintf(probe, sizeof(probe), "%s%.*s", address ? "" : "postmaster@", (int)n, name);
	bool null = false, parsed = addr_parse(probe, strlen(probe), &a, why, sizeof(why));
	if (parsed && a.is_null) {
		null = true;
		parsed = false;
	}
	if (!parsed && slot >= 0 && !strict) {
		snprintf(keys[slot], CACHE_KEY_MAX, "%s", arg);
		return true;
	}
	if (!parsed) {
		fprintf(stderr, "vemilter-cache: %s: %s%s\n", arg,
		        slot >= 0 ? "not a valid key: "
		        : address ? ""
		                  : "not an address or a domain: ",
		        null ? "the null sender is never cached" : why);
		return false;
	}
	if (address && (slot < 0 || slot == KEY_ADDRESS))
		cache_key_address(a.normalized, keys[KEY_ADDRESS], CACHE_KEY_MAX);
	if (address && slot < 0) {
		char stable[ADDR_PATH_MAX];
		if (tags_stable_form(&a, tags, stable, sizeof(stable)) != TAG_NONE)
			cache_key_tagged(stable, keys[KEY_TAGGED], CACHE_KEY_MAX);
	}
	if (slot < 0 || slot == KEY_DOMAIN)
		cache_key_domain(a.domain_ascii, keys[KEY_DOMAIN], CACHE_KEY_MAX);
	if (slot < 0 || slot == KEY_HINTS)
		cache_key_hints(a.domain_ascii, keys[KEY_HINTS], CACHE_KEY_MAX);
	return true;
}

/* show_key - print one record, expired ones too: 1 shown, 0 absent, -1 error */
static int show_key(struct tool *t, const char *key)
{
	struct cache_record rec;
	if (key[0] == '\0')
		return 0;
	int found = tool_get(t, key, &rec);
	if (found < 0)
		return -1;
	if (found == 0) {
		print_key(stdout, key);
		printf(" not cached\n");
		return 0;
	}
	print_record(stdout, key, &rec, t->now_ms);
	return 1;
}

/* cmd_get - the records the argument names */
static int cmd_get(struct tool *t)
{
	char keys[KEY_SLOTS][CACHE_KEY_MAX];
	int found = 0;
	if (!keys_for(t->argv[1], false, tags_enabled(t->conf), keys))
		return EXIT_FAIL;
	for (int i = 0; i < KEY_SLOTS; i++) {
		int shown = show_key(t, keys[i]);
		if (shown < 0)
			return EXIT_FAIL;
		found += shown;
	}
	return found ? EXIT_OK : EXIT_FAIL;
}

/* delete_key - delete one key and say so: 1 deleted, 0 absent, -1 error */
static int delete_key(struct tool *t, const char *key)
{
	if (key[0] == '\0')
		return 0;
	int deleted = tool_del(t, key);
	if (deleted < 0)
		return -1;
	print_key(stdout, key);
	printf(deleted ? " deleted\n" : " not cached\n");
	return deleted;
}

/* cmd_del - an address's record and its stable form's (--domain: its
 * domain's records too), a domain's records, or one key */
static int cmd_del(struct tool *t)
{
	char keys[KEY_SLOTS][CACHE_KEY_MAX];
	int deleted = 0;
	if (!keys_for(t->argv[1], false, tags_enabled(t->conf), keys))
		return EXIT_FAIL;
	if (keys[KEY_ADDRESS][0] != '\0' && !t->domain)
		keys[KEY_DOMAIN][0] = keys[KEY_HINTS][0] = '\0';
	for (int i = 0; i < KEY_SLOTS; i++) {
		int n = delete_key(t, keys[i]);
		if (n < 0)
			return EXIT_FAIL;
		deleted += n;
	}
	return deleted ? EXIT_OK : EXIT_FAIL;
}

/* cmd_purge - everything, or (--expired) what has expired */
static int cmd_purge(struct tool *t)
{
	size_t n;
	if (t->redis != NULL) {
		/* Redis drops an expired record itself; --expired finds only those
		 * whose expires_at has passed by this host's clock and not the server's */
		long removed =
		        t->expired ? cacheredis_sweep(t->redis, t->now_ms) : cacheredis_purge(t->redis);
		if (removed < 0)
			return redis_failed(t), EXIT_FAIL;
		n = (size_t)removed;
	} else {
		n = t->expired ? cache_sweep(t->cache, t->now_ms) : cache_purge(t->cache);
	}
	printf("removed %zu %srecord%s\n", n, t->expired ? "expired " : "", n == 1 ? "" : "s");
	return EXIT_OK;
}

/* count_hints - cache_foreach visitor: "h:" records, and the expired ones */
static bool count_hints(void *arg, const char *key, const struct cache_record *rec)
{
	struct tool *t = arg;
	if (strncmp(key, "h:", 2) == 0) {
		t->hints++;
		t->hints_expired += t->now_ms >= rec->expires_at_ms;
	}
	return true;
}

/* count_redis - cacheredis_foreach visitor: cache_stats's counts (a: and
 * d:, expired, by outcome) and the hints */
static bool count_redis(void *arg, const char *key, const struct cache_record *rec)
{
	struct tool *t = arg;
	if (strncmp(key, "a:", 2) == 0)
		t->st->addresses++;
	else if (strncmp(key, "d:", 2) == 0)
		t->st->domains++;
	else
		return count_hints(arg, key, rec);
	t->st->expired += t->now_ms >= rec->expires_at_ms;
	t->st->by_outcome[rec->outcome.kind]++;
	return true;
}

/* stats_redis - cmd_stats on the shared cache: the same counts, then the
 * server's memory and the probe leases held now */
static int stats_redis(struct tool *t)
{
	struct cache_stats st;
	uint64_t used = 0;
	size_t leases = 0;
	memset(&st, 0, sizeof(st));
	t->st = &st;
	if (!cacheredis_foreach(t->redis, count_redis, t) || !cacheredis_info(t->redis, &used, &leases))
		return redis_failed(t), EXIT_FAIL;
	printf("server: %s\n", cacheredis_url(t->redis));
	printf("records: %zu\naddresses: %zu\ndomains: %zu\nhints: %zu\nexpired: %zu\n",
	       st.addresses + st.domains + t->hints, st.addresses, st.domains, t->hints,
	       st.expired + t->hints_expired);
	for (int k = 0; k < OUTCOME_KIND_COUNT; k++)
		printf("%s: %zu\n", outcome_name((enum outcome_kind)k), st.by_outcome[k]);
	printf("leases: %zu\nused_memory: %llu (%.1f MiB)\n", leases, (unsigned long long)used,
	       used / 1048576.0);
	return EXIT_OK;
}

/* cmd_stats - counts by kind and outcome, and the map */
static int cmd_stats(struct tool *t)
{
	if (t->redis != NULL)
		return stats_redis(t);
	struct cache_stats st;
	if (!cache_stats(t->cache, t->now_ms, &st) || !cache_foreach(t->cache, count_hints, t))
		return EXIT_FAIL;
	printf("file: %s\n", t->conf->cache);
	printf("records: %zu\naddresses: %zu\ndomains: %zu\nhints: %zu\nexpired: %zu\n",
	       st.addresses + st.domains + t->hints, st.addresses, st.domains, t->hints,
	       st.expired + t->hints_expired);
	for (int k = 0; k < OUTCOME_KIND_COUNT; k++)
		printf("%s: %zu\n", outcome_name((enum outcome_kind)k), st.by_outcome[k]);
	printf("map_bytes: %llu (%.1f MiB)\nused_bytes: %llu (%.1f MiB)\nmax_bytes: %llu (%d MiB)\n",
	       (unsigned long long)st.map_bytes, st.map_bytes / 1048576.0, (unsigned long long)st.used_bytes,
	       st.used_bytes / 1048576.0, (unsigned long long)t->conf->cache_max_mb << 20,
	       t->conf->cache_max_mb);
	return EXIT_OK;
}

/* cmd_put - store a record, replacing whatever was there */
static int cmd_put(struct tool *t)
{
	char keys[KEY_SLOTS][CACHE_KEY_MAX], why[200];
	struct outcome o;
	struct cache_record rec;
	enum outcome_kind kind;
	int64_t code = 0;
	if (!outcome_from_name(t->argv[2], &kind)) {
		fprintf(stderr, "vemilter-cache: %s: not an outcome (valid, invalid, no_domain, ...)\n",
		        t->argv[2]);
		return EXIT_USAGE;
	}
	if (t->argc == 6 && !conf_parse_integer(t->argv[3], 0, 999, &code, why, sizeof(why))) {
		fprintf(stderr, "vemilter-cache: reply code %s: %s\n", t->argv[3], why);
		return EXIT_USAGE;
	}
	if (!keys_for(t->argv[1], true, tags_enabled(t->conf), keys))
		return EXIT_FAIL;
	/* an address's own record, a domain's facts, or the one key given */
	const char *key = keys[KEY_ADDRESS][0] != '\0'  ? keys[KEY_ADDRESS]
	                  : keys[KEY_DOMAIN][0] != '\0' ? keys[KEY_DOMAIN]
	                                                : keys[KEY_HINTS];
	memset(&o, 0, sizeof(o));
	outcome_set(&o, kind, STAGE_NONE, (int)code, t->argc == 6 ? t->argv[4] : NULL,
	            t->argc == 6 ? t->argv[5] : NULL, "set by vemilter-cache");
	o.flags = t->flags;
	cache_record_make(t->conf, &o, t->now_ms, &rec);
	rec.tries = (unsigned)t->tries;
	if (t->deferred_for_ms >= 0) {
		rec.deferred_since_ms = t->now_ms - t->deferred_for_ms;
		/* A temporary record lives as the daemon keeps a deferred address's:
		 * past defer_limit, for the sender's retry to find its start. */
		struct cache_record prev = rec;
		if (kind == OUTCOME_TEMPFAIL || kind == OUTCOME_BLOCKED)
			cache_record_continue_deferral(t->conf, &rec, &prev, t->now_ms);
	}
	if (t->redis != NULL) { /* replaces anything, in one transaction */
		if (!cacheredis_put(t->redis, key, &rec))
			return redis_failed(t), EXIT_FAIL;
	} else {
		cache_del(t->cache, key); /* an administrator's word replaces anything */
		if (!cache_put(t->cache, key, &rec, t->now_ms))
			return EXIT_FAIL;
	}
	print_record(stdout, key, &rec, t->now_ms);
	return EXIT_OK;
}

static const struct {
	const char *name;
	int (*run)(struct tool *t);
	const char *flag;       /* the one flag it takes, or NULL */
	int min_args, max_args; /* the command itself included */
} commands[] = {
        {"list", cmd_list, NULL, 1, 1},     {"get", cmd_get, NULL, 2, 2},
        {"del", cmd_del, "--domain", 2, 2}, {"purge", cmd_purge, "--expired", 1, 1},
        {"stats", cmd_stats, NULL, 1, 1},   {"put", cmd_put, NULL, 3, 6},
};

/* parse_flag_list - "name,name" (outcome_flag_from_name) into *out; false with a message */
static bool parse_flag_list(const char *list, unsigned *out)
{
	char copy[256];
	*out = 0;
	snprintf(copy, sizeof(copy), "%s", list);
	for (char *save = NULL, *name = strtok_r(copy, ", ", &save); name != NULL;
	     name = strtok_r(NULL, ", ", &save)) {
		unsigned bit;
		if (!outcome_flag_from_name(name, &bit)) {
			fprintf(stderr,
			        "vemilter-cache: put: unknown flag %s (not_catchall, fallback_sender, "
			        "greylist, "
			        "protocol, loop, tagged, limited)\n",
			        name);
			return false;
		}
		*out |= bit;
	}
	return true;
}

/* put_option - one of put's options with its value; false with a message */
static bool put_option(struct tool *t, const char *name, const char *value)
{
	char why[200];
	if (strcmp(name, "--flags") == 0)
		return parse_flag_list(value, &t->flags);
	if (strcmp(name, "--deferred-for") == 0) {
		if (conf_parse_duration_ms(value, &t->deferred_for_ms) && t->deferred_for_ms <= t->now_ms)
			return true;
		fprintf(stderr, "vemilter-cache: put: --deferred-for %s: not a duration such as 30m or 2h\n",
		        value);
		return false;
	}
	if (strcmp(name, "--tries") == 0) {
		if (conf_parse_integer(value, 0, 255, &t->tries, why, sizeof(why)))
			return true;
		fprintf(stderr, "vemilter-cache: put: --tries %s: %s\n", value, why);
		return false;
	}
	fprintf(stderr, "vemilter-cache: put: unknown option %s\n", name);
	return false;
}

/* take_put_options - put's options come before its key (its TEXT may start
 * with a dash): "--flags LIST" or "--flags=LIST", and so on; "--" ends them.
 * *i is left at the first argument after them. */
static bool take_put_options(struct tool *t, int argc, char **argv, int *i)
{
	for (; *i < argc && strncmp(argv[*i], "--", 2) == 0; (*i)++) {
		if (argv[*i][2] == '\0') {
			(*i)++;
			break;
		}
		char name[32];
		const char *eq = strchr(argv[*i], '=');
		const char *value = eq != NULL ? eq + 1 : *i + 1 < argc ? argv[*i + 1] : NULL;
		snprintf(name, sizeof(name), "%.*s", eq != NULL ? (int)(eq - argv[*i]) : 31, argv[*i]);
		if (value == NULL) {
			fprintf(stderr, "vemilter-cache: put: %s needs a value\n", name);
			return false;
		}
		if (!put_option(t, name, value))
			return false;
		*i += eq == NULL;
	}
	return true;
}

/* take_flags - move the command's options out of argv; false on another
 * option. put's options come first; then everything is an argument. */
static bool take_flags(struct tool *t, int i_cmd, int argc, char **argv)
{
	const char *flag = commands[i_cmd].flag;
	int n = 1, i = 1;
	if (commands[i_cmd].run == cmd_put && !take_put_options(t, argc, argv, &i))
		return false;
	for (; i < argc; i++) {
		if (commands[i_cmd].run == cmd_put || argv[i][0] != '-' || argv[i][1] == '\0')
			argv[n++] = argv[i];
		else if (flag != NULL && strcmp(argv[i], flag) == 0)
			*(strcmp(flag, "--expired") == 0 ? &t->expired : &t->domain) = true;
		else {
			fprintf(stderr, "vemilter-cache: %s: unknown option %s\n", argv[0], argv[i]);
			return false;
		}
	}
	t->argc = n;
	t->argv = argv;
	return true;
}

/* parse_command - find the command and check its arguments; -1 if bad */
static int parse_command(struct tool *t, int argc, char **argv)
{
	int found = -1;
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(argv[0], commands[i].name) == 0)
			found = (int)i;
	if (found < 0) {
		fprintf(stderr, "vemilter-cache: unknown command %s\n", argv[0]);
		return -1;
	}
	if (!take_flags(t, found, argc, argv))
		return -1;
	if (t->argc < commands[found].min_args || t->argc > commands[found].max_args ||
	    (commands[found].run == cmd_put && t->argc != 3 && t->argc != 6)) {
		fprintf(stderr, "vemilter-cache: %s: wrong number of arguments\n", argv[0]);
		return -1;
	}
	return found;
}

/* open_all - configuration and cache; an exit code, EXIT_OK when both are open */
static int open_all(struct tool *t, const char *conf_path)
{
	char why[600];
	t->conf = conf_load(conf_path, print_conf_error, NULL);
	if (t->conf == NULL)
		return EXIT_CONFIG;
	if (t->conf->cache[0] == '\0') {
		fprintf(stderr, "vemilter-cache: %s: no cache configured (cache is empty)\n", conf_path);
		return EXIT_CONFIG;
	}
	if (redis_url_is(t->conf->cache)) {
		/* not in the mail path: a slow answer is still worth a second */
		int64_t timeout_ms = t->conf->cache_redis_timeout_ms > REDIS_TIMEOUT_MIN_MS
		                             ? t->conf->cache_redis_timeout_ms
		                             : REDIS_TIMEOUT_MIN_MS;
		t->redis = cacheredis_open(t->conf->cache, t->conf->cache_password_file, timeout_ms, why,
		                           sizeof(why));
		if (t->redis == NULL)
			fprintf(stderr, "vemilter-cache: %s\n", why);
		return t->redis != NULL ? EXIT_OK : EXIT_FAIL;
	}
	t->cache = cache_open(t->conf->cache, t->conf->cache_max_mb, why, sizeof(why));
	return t->cache != NULL ? EXIT_OK : EXIT_FAIL; /* cache_open logged why */
}

int main(int argc, char **argv)
{
	const char *conf_path = CONF_DEFAULT_PATH;
	struct tool t = {0};
	int c;
	static const struct option longopts[] = {
	        {"help", no_argument, NULL, 'h'}, {"version", no_argument, NULL, 'V'}, {NULL, 0, NULL, 0}};
	while ((c = getopt_long(argc, argv, "+c:Vh", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			conf_path = optarg;
			break;
		case 'V':
			printf("vemilter-cache %s\n", PACKAGE_VERSION);
			return EXIT_OK;
		case 'h':
			usage(stdout);
			return EXIT_OK;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	t.now_ms = clock_now_ms();
	t.deferred_for_ms = -1;
	int cmd = optind < argc ? parse_command(&t, argc - optind, argv + optind) : -1;
	if (cmd < 0) {
		usage(stderr);
		return EXIT_USAGE;
	}
	log_open("vemilter-cache", LOG_USER, true, LOG_WARNING);
	int rc = open_all(&t, conf_path);
	if (rc == EXIT_OK) {
		rc = commands[cmd].run(&t);
		if (rc == EXIT_USAGE)
			usage(stderr);
	}
	cache_close(t.cache);
	cacheredis_close(t.redis);
	conf_unref(t.conf);
	return rc;
}
