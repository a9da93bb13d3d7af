/*
 * cacheredis.c - the shared Redis cache for vemilter-cache (see
 * cacheredis.h): a synchronous hiredis connection with timeouts, and the
 * record layout of issue 12 (HASH "vemilter:<key>", field "r").
 */
#include "cacheredis.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "redisurl.h"

#define PREFIX_LEN  (sizeof(CACHEREDIS_PREFIX) - 1)
#define RECORD_SCAN CACHEREDIS_PREFIX "[adht]:*" /* the four record kinds; never a lease */
#define ALL_SCAN    CACHEREDIS_PREFIX "*"
#define LEASE_SCAN  CACHEREDIS_LEASE_PREFIX "*"
#define SCAN_COUNT  "1000"
#define BATCH       1000 /* keys per pipelined batch */

struct cacheredis {
	redisContext *c;
	int64_t timeout_ms;
	char url[600];
	char why[400];
};

/* A growing list of keys (each malloc'd, owned by the list). */
struct keys {
	char **items;
	size_t count, cap;
};

/* fail - set the reason; returns false for "return fail(...)" */
static bool fail(struct cacheredis *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool fail(struct cacheredis *r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->why, sizeof(r->why), fmt, ap);
	va_end(ap);
	return false;
}

/* io_failed - the context's error in words: a timeout says how long */
static bool io_failed(struct cacheredis *r, const char *what)
{
	if (r->c->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINPROGRESS))
		return fail(r, "%s: no answer within %lld ms (cache_redis_timeout)", what,
		            (long long)r->timeout_ms);
	if (r->c->err == REDIS_ERR_EOF)
		return fail(r, "%s: the server closed the connection", what);
	return fail(r, "%s: %s", what, r->c->errstr[0] ? r->c->errstr : "connection error");
}

/* take_reply - the next pipelined reply; NULL (reason set) on an I/O error
 * or an error reply */
static redisReply *take_reply(struct cacheredis *r, const char *what)
{
	void *v = NULL;
	if (r->c->err != 0) {
		io_failed(r, what);
		return NULL;
	}
	if (redisGetReply(r->c, &v) != REDIS_OK || v == NULL) {
		io_failed(r, what);
		return NULL;
	}
	redisReply *reply = v;
	if (reply->type == REDIS_REPLY_ERROR) {
		fail(r, "%s: %s", what, reply->str);
		freeReplyObject(reply);
		return NULL;
	}
	return reply;
}

/* command - one round trip with argv (argc strings of their own lengths,
 * or NUL-terminated when lens is NULL) */
static redisReply *command(struct cacheredis *r, const char *what, int argc, const char **argv,
                           const size_t *lens)
{
	if (r->c->err != 0) {
		io_failed(r, what);
		return NULL;
	}
	if (redisAppendCommandArgv(r->c, argc, argv, lens) != REDIS_OK) {
		io_failed(r, what);
		return NULL;
	}
	return take_reply(r, what);
}

/* full_key - "vemilter:" + key into buf; false if it does not fit */
static bool full_key(const char *key, char *buf, size_t size)
{
	int n = snprintf(buf, size, "%s%s", CACHEREDIS_PREFIX, key);
	return n > 0 && (size_t)n < size;
}

/* authenticate - AUTH [user] password; the reply's text (WRONGPASS ...)
 * holds no secret */
static bool authenticate(struct cacheredis *r, const struct redis_url *url, const char *password_file)
{
	char password[REDIS_PASSWORD_MAX];
	if (password_file == NULL || password_file[0] == '\0') {
		if (url->user[0] != '\0')
			return fail(r, "user %s needs a password: set cache_password_file", url->user);
		return true;
	}
	char why[300];
	if (!redis_password_read(password_file, password, sizeof(password), why, sizeof(why)))
		return fail(r, "%s", why);
	const char *argv[3] = {"AUTH", url->user, password};
	int argc = 3;
	if (url->user[0] == '\0') {
		argv[1] = password;
		argc = 2;
	}
	redisReply *reply = command(r, "AUTH", argc, argv, NULL);
	explicit_bzero(password, sizeof(password));
	if (reply == NULL)
		return false;
	freeReplyObject(reply);
	return true;
}

/* cacheredis_open - see cacheredis.h */
struct cacheredis *cacheredis_open(const char *url_text, const char *password_file, int64_t timeout_ms,
                                   char *why, size_t why_size)
{
	struct redis_url url;
	char reason[300];
	if (!redis_url_parse(url_text, &url, reason, sizeof(reason))) {
		snprintf(why, why_size, "%s", reason);
		return NULL;
	}
	struct cacheredis *r = calloc(1, sizeof(*r));
	if (r == NULL) {
		snprintf(why, why_size, "out of memory");
		return NULL;
	}
	redis_url_format(&url, r->url, sizeof(r->url));
	r->timeout_ms = timeout_ms > 0 ? timeout_ms : 1;
	struct timeval tv = {(time_t)(r->timeout_ms / 1000), (suseconds_t)(r->timeout_ms % 1000 * 1000)};
	r->c = redisConnectWithTimeout(url.host, url.port, tv);
	bool ok = r->c != NULL;
	if (!ok)
		fail(r, "connect: out of memory");
	else if (r->c->err != 0)
		ok = io_failed(r, "connect");
	else if (redisSetTimeout(r->c, tv) != REDIS_OK)
		ok = io_failed(r, "set timeout");
	ok = ok && authenticate(r, &url, password_file);
	if (ok && url.db != 0) {
		char db[8];
		snprintf(db, sizeof(db), "%d", url.db);
		const char *argv[2] = {"SELECT", db};
		redisReply *reply = command(r, "SELECT", 2, argv, NULL);
		ok = reply != NULL;
		freeReplyObject(reply);
	}
	if (ok) { /* a server that wants a password says so here (NOAUTH) */
		const char *argv[1] = {"PING"};
		redisReply *reply = command(r, "PING", 1, argv, NULL);
		ok = reply != NULL;
		freeReplyObject(reply);
		if (!ok && strstr(r->why, "NOAUTH") != NULL)
			fail(r, "Redis requires a password: set cache_password_file");
	}
	if (!ok) {
		snprintf(why, why_size, "%s: %s", r->url, r->why);
		cacheredis_close(r);
		return NULL;
	}
	return r;
}

/* cacheredis_close - see cacheredis.h */
void cacheredis_close(struct cacheredis *r)
{
	if (r == NULL)
		return;
	if (r->c != NULL)
		redisFree(r->c);
	free(r);
}

const char *cacheredis_error(const struct cacheredis *r)
{
	return r->why;
}

const char *cacheredis_url(const struct cacheredis *r)
{
	return r->url;
}

/* record_of - decode a reply to HGET key r; false if absent or damaged */
static bool record_of(const redisReply *reply, struct cache_record *out)
{
	return reply->type == REDIS_REPLY_STRING &&
	       cache_record_decode((const unsigned char *)reply->str, reply->len, out);
}

/* cacheredis_get - see cacheredis.h */
int cacheredis_get(struct cacheredis *r, const char *key, struct cache_record *out)
{
	char k[PREFIX_LEN + CACHE_KEY_MAX];
	if (!full_key(key, k, sizeof(k)))
		return 0;
	const char *argv[3] = {"HGET", k, "r"};
	redisReply *reply = command(r, "HGET", 3, argv, NULL);
	if (reply == NULL)
		return -1;
	int found = record_of(reply, out) ? 1 : 0;
	freeReplyObject(reply);
	return found;
}

/* cacheredis_put - see cacheredis.h */
bool cacheredis_put(struct cacheredis *r, const char *key, const struct cache_record *rec)
{
	char k[PREFIX_LEN + CACHE_KEY_MAX], at[24];
	unsigned char buf[CACHE_RECORD_MAX];
	size_t len = cache_record_encode(rec, buf, sizeof(buf));
	if (!full_key(key, k, sizeof(k)) || len == 0)
		return fail(r, "%s: cannot be stored", key);
	snprintf(at, sizeof(at), "%lld", (long long)rec->expires_at_ms);
	const char *multi[] = {"MULTI"}, *del[] = {"DEL", k}, *hset[] = {"HSET", k, "r", (const char *)buf},
	           *expire[] = {"PEXPIREAT", k, at}, *exec[] = {"EXEC"};
	const size_t hset_lens[] = {4, strlen(k), 1, len};
	bool ok = redisAppendCommandArgv(r->c, 1, multi, NULL) == REDIS_OK &&
	          redisAppendCommandArgv(r->c, 2, del, NULL) == REDIS_OK &&
	          redisAppendCommandArgv(r->c, 4, hset, hset_lens) == REDIS_OK &&
	          redisAppendCommandArgv(r->c, 3, expire, NULL) == REDIS_OK &&
	          redisAppendCommandArgv(r->c, 1, exec, NULL) == REDIS_OK;
	if (!ok)
		return io_failed(r, "put");
	/* MULTI, three QUEUED and EXEC's array: read all five, keep the first failure */
	for (int i = 0; i < 5; i++) {
		redisReply *reply = take_reply(r, "put");
		if (reply == NULL) {
			if (r->c->err != 0)
				return false;
			ok = false;
			continue;
		}
		if (i == 4 && reply->type != REDIS_REPLY_ARRAY)
			ok = fail(r, "put: transaction aborted");
		freeReplyObject(reply);
	}
	return ok;
}

/* cacheredis_del - see cacheredis.h */
int cacheredis_del(struct cacheredis *r, const char *key)
{
	char k[PREFIX_LEN + CACHE_KEY_MAX];
	if (!full_key(key, k, sizeof(k)))
		return 0;
	const char *argv[2] = {"UNLINK", k};
	redisReply *reply = command(r, "UNLINK", 2, argv, NULL);
	if (reply == NULL)
		return -1;
	int n = reply->type == REDIS_REPLY_INTEGER && reply->integer > 0;
	freeReplyObject(reply);
	return n;
}

/* keys_add - a copy of s (n octets) onto the list; false if out of memory */
static bool keys_add(struct keys *list, const char *s, size_t n)
{
	if (list->count == list->cap) {
		size_t cap = list->cap ? list->cap * 2 : 256;
		char **items = realloc(list->items, cap * sizeof(*items));
		if (items == NULL)
			return false;
		list->items = items;
		list->cap = cap;
	}
	char *copy = strndup(s, n);
	if (copy == NULL)
		return false;
	list->items[list->count++] = copy;
	return true;
}

static void keys_free(struct keys *list)
{
	for (size_t i = 0; i < list->count; i++)
		free(list->items[i]);
	free(list->items);
	memset(list, 0, sizeof(*list));
}

static int compare_keys(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* scan - every key matching pattern into list, sorted, each once (SCAN may
 * return a key twice); keys holding a NUL (not ours) are left out */
static bool scan(struct cacheredis *r, const char *pattern, struct keys *list)
{
	char cursor[32] = "0";
	do {
		const char *argv[6] = {"SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT};
		redisReply *reply = command(r, "SCAN", 6, argv, NULL);
		if (reply == NULL)
			return false;
		bool ok = reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
		          reply->element[0]->type == REDIS_REPLY_STRING &&
		          reply->element[0]->len < sizeof(cursor) &&
		          reply->element[1]->type == REDIS_REPLY_ARRAY;
		if (!ok) {
			freeReplyObject(reply);
			return fail(r, "SCAN: unexpected reply");
		}
		snprintf(cursor, sizeof(cursor), "%s", reply->element[0]->str);
		redisReply *batch = reply->element[1];
		for (size_t i = 0; ok && i < batch->elements; i++) {
			const redisReply *k = batch->element[i];
			if (k->type == REDIS_REPLY_STRING && memchr(k->str, '\0', k->len) == NULL)
				ok = keys_add(list, k->str, k->len);
		}
		freeReplyObject(reply);
		if (!ok)
			return fail(r, "SCAN: out of memory");
	} while (strcmp(cursor, "0") != 0);
	if (list->count > 1) {
		qsort(list->items, list->count, sizeof(*list->items), compare_keys);
		size_t n = 1;
		for (size_t i = 1; i < list->count; i++) {
			if (strcmp(list->items[i], list->items[n - 1]) == 0)
				free(list->items[i]);
			else
				list->items[n++] = list->items[i];
		}
		list->count = n;
	}
	return true;
}

/* cacheredis_foreach - see cacheredis.h */
bool cacheredis_foreach(struct cacheredis *r, cache_visit_fn fn, void *arg)
{
	struct keys list = {0};
	bool ok = scan(r, RECORD_SCAN, &list), go_on = true;
	for (size_t start = 0; ok && go_on && start < list.count; start += BATCH) {
		size_t end = start + BATCH < list.count ? start + BATCH : list.count;
		for (size_t i = start; ok && i < end; i++) {
			const char *argv[3] = {"HGET", list.items[i], "r"};
			ok = redisAppendCommandArgv(r->c, 3, argv, NULL) == REDIS_OK;
		}
		if (!ok) {
			io_failed(r, "HGET");
			break;
		}
		/* every reply of the batch is read, even after fn said stop */
		for (size_t i = start; i < end; i++) {
			struct cache_record rec;
			redisReply *reply = take_reply(r, "HGET");
			if (reply == NULL) {
				if (r->c->err != 0) {
					ok = false;
					break;
				}
				continue; /* not a hash (WRONGTYPE): not a record of ours */
			}
			if (go_on && record_of(reply, &rec))
				go_on = fn(arg, list.items[i] + PREFIX_LEN, &rec);
			freeReplyObject(reply);
		}
	}
	keys_free(&list);
	return ok;
}

/* unlink_keys - UNLINK the keys in batches; how many were there, -1 on error */
static long unlink_keys(struct cacheredis *r, char **keys, size_t count)
{
	long removed = 0;
	const char *argv[BATCH + 1];
	argv[0] = "UNLINK";
	for (size_t start = 0; start < count; start += BATCH) {
		size_t n = count - start < BATCH ? count - start : BATCH;
		memcpy(argv + 1, keys + start, n * sizeof(*keys));
		redisReply *reply = command(r, "UNLINK", (int)n + 1, argv, NULL);
		if (reply == NULL)
			return -1;
		removed += reply->type == REDIS_REPLY_INTEGER ? (long)reply->integer : 0;
		freeReplyObject(reply);
	}
	return removed;
}

/* cacheredis_purge - see cacheredis.h */
long cacheredis_purge(struct cacheredis *r)
{
	struct keys all = {0};
	long records = -1;
	if (scan(r, ALL_SCAN, &all)) {
		/* records to the front, leases to the back: only records are counted */
		size_t n = 0;
		for (size_t i = 0; i < all.count; i++) {
			if (strncmp(all.items[i], CACHEREDIS_LEASE_PREFIX,
			            sizeof(CACHEREDIS_LEASE_PREFIX) - 1) != 0) {
				char *k = all.items[i];
				all.items[i] = all.items[n];
				all.items[n++] = k;
			}
		}
		records = unlink_keys(r, all.items, n);
		if (records >= 0 && unlink_keys(r, all.items + n, all.count - n) < 0)
			records = -1;
	}
	keys_free(&all);
	return records;
}

struct sweep_arg {
	int64_t now_ms;
	struct keys expired;
	bool oom;
};

/* collect_expired - cacheredis_foreach visitor for sweep */
static bool collect_expired(void *varg, const char *key, const struct cache_record *rec)
{
	struct sweep_arg *a = varg;
	char k[PREFIX_LEN + CACHE_KEY_MAX];
	if (a->now_ms >= rec->expires_at_ms && full_key(key, k, sizeof(k)) &&
	    !keys_add(&a->expired, k, strlen(k)))
		a->oom = true;
	return !a->oom;
}

/* cacheredis_sweep - see cacheredis.h */
long cacheredis_sweep(struct cacheredis *r, int64_t now_ms)
{
	struct sweep_arg a = {.now_ms = now_ms};
	long n = -1;
	if (!cacheredis_foreach(r, collect_expired, &a))
		;
	else if (a.oom)
		fail(r, "sweep: out of memory");
	else
		n = unlink_keys(r, a.expired.items, a.expired.count);
	keys_free(&a.expired);
	return n;
}

/* cacheredis_info - see cacheredis.h */
bool cacheredis_info(struct cacheredis *r, uint64_t *used_memory, size_t *leases)
{
	struct keys list = {0};
	const char *argv[2] = {"INFO", "memory"};
	redisReply *reply = command(r, "INFO", 2, argv, NULL);
	if (reply == NULL)
		return false;
	const char *at = reply->type == REDIS_REPLY_STRING ? strstr(reply->str, "used_memory:") : NULL;
	*used_memory = at != NULL ? strtoull(at + strlen("used_memory:"), NULL, 10) : 0;
	freeReplyObject(reply);
	bool ok = scan(r, LEASE_SCAN, &list);
	*leases = list.count;
	keys_free(&list);
	return ok;
}
