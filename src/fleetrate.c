/*
 * fleetrate.c - the fleet's budgets as one host knows them (see
 * fleetrate.h). Owns struct fleetrate: a hash table of entries (chained),
 * an LRU list over them (the oldest goes when the table is full) and the
 * list of entries with spending to report, in the order it was spent.
 */
#include "fleetrate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct entry {
	struct entry *chain;               /* next in the bucket */
	struct entry *newer, *older;       /* LRU list: fr->newest is the head */
	struct entry *due_next, *due_prev; /* the report list, when due */
	bool due;
	enum fleetrate_kind kind;
	int64_t window;
	unsigned seen, in_flight, unreported, own;
	char name[]; /* NUL-terminated */
};

struct fleetrate {
	struct entry **buckets;
	size_t bucket_count; /* a power of two */
	size_t count, max;
	struct entry *newest, *oldest;
	struct entry *due_head, *due_tail;
};

int64_t fleetrate_window(int64_t wall_ms)
{
	return wall_ms <= 0 ? 0 : wall_ms / FLEETRATE_WINDOW_MS;
}

int64_t fleetrate_turn_ms(int64_t wall_ms)
{
	return (fleetrate_window(wall_ms) + 1) * FLEETRATE_WINDOW_MS;
}

void fleetrate_key(enum fleetrate_kind kind, const char *name, int64_t window, char *buf, size_t size)
{
	if (size == 0)
		return;
	buf[0] = '\0';
	if (name == NULL || name[0] == '\0' || strlen(name) >= FLEETRATE_NAME_MAX)
		return;
	char escaped[3 * FLEETRATE_NAME_MAX];
	size_t n = 0;
	for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; p++) {
		unsigned char ch = *p;
		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		    ch == '.' || ch == '-' || ch == '_') {
			escaped[n++] = (char)ch;
		} else {
			snprintf(escaped + n, 4, "%%%02X", ch);
			n += 3;
		}
	}
	escaped[n] = '\0';
	int w = snprintf(buf, size, "%s%c:%s:%lld", FLEETRATE_PREFIX, (char)kind, escaped, (long long)window);
	if (w < 0 || (size_t)w >= size)
		buf[0] = '\0';
}

bool fleetrate_allows(unsigned seen, unsigned in_flight, unsigned unreported, unsigned rate)
{
	if (rate == 0)
		return true;
	/* in 64 bits: three counters near UINT_MAX must not wrap into "allowed" */
	return (uint64_t)seen + in_flight + unreported < rate;
}

/* ---- the table ---- */

static uint64_t hash_of(enum fleetrate_kind kind, const char *name)
{
	uint64_t x = 1469598103934665603ULL ^ (unsigned char)kind;
	x *= 1099511628211ULL;
	for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; p++) {
		x ^= *p;
		x *= 1099511628211ULL;
	}
	return x;
}

struct fleetrate *fleetrate_new(size_t max)
{
	struct fleetrate *fr = calloc(1, sizeof(*fr));
	if (fr == NULL)
		return NULL;
	fr->max = max > 0 ? max : 1;
	fr->bucket_count = 64;
	while (fr->bucket_count < fr->max && fr->bucket_count < ((size_t)1 << 20))
		fr->bucket_count <<= 1;
	fr->buckets = calloc(fr->bucket_count, sizeof(*fr->buckets));
	if (fr->buckets == NULL) {
		free(fr);
		return NULL;
	}
	return fr;
}

void fleetrate_free(struct fleetrate *fr)
{
	if (fr == NULL)
		return;
	struct entry *e = fr->newest;
	while (e != NULL) {
		struct entry *next = e->older;
		free(e);
		e = next;
	}
	free(fr->buckets);
	free(fr);
}

size_t fleetrate_count(const struct fleetrate *fr)
{
	return fr != NULL ? fr->count : 0;
}

static struct entry **bucket(struct fleetrate *fr, enum fleetrate_kind kind, const char *name)
{
	return &fr->buckets[hash_of(kind, name) & (fr->bucket_count - 1)];
}

static struct entry *find(struct fleetrate *fr, enum fleetrate_kind kind, const char *name)
{
	for (struct entry *e = *bucket(fr, kind, name); e != NULL; e = e->chain)
		if (e->kind == kind && strcmp(e->name, name) == 0)
			return e;
	return NULL;
}

static void lru_unlink(struct fleetrate *fr, struct entry *e)
{
	if (e->newer != NULL)
		e->newer->older = e->older;
	else
		fr->newest = e->older;
	if (e->older != NULL)
		e->older->newer = e->newer;
	else
		fr->oldest = e->newer;
	e->newer = e->older = NULL;
}

static void lru_push(struct fleetrate *fr, struct entry *e)
{
	e->older = fr->newest;
	e->newer = NULL;
	if (fr->newest != NULL)
		fr->newest->newer = e;
	fr->newest = e;
	if (fr->oldest == NULL)
		fr->oldest = e;
}

static void due_unlink(struct fleetrate *fr, struct entry *e)
{
	if (!e->due)
		return;
	if (e->due_prev != NULL)
		e->due_prev->due_next = e->due_next;
	else
		fr->due_head = e->due_next;
	if (e->due_next != NULL)
		e->due_next->due_prev = e->due_prev;
	else
		fr->due_tail = e->due_prev;
	e->due_next = e->due_prev = NULL;
	e->due = false;
}

/* due_push - e has spending to report: at the end of the list */
static void due_push(struct fleetrate *fr, struct entry *e)
{
	if (e->due)
		return;
	e->due = true;
	e->due_next = NULL;
	e->due_prev = fr->due_tail;
	if (fr->due_tail != NULL)
		fr->due_tail->due_next = e;
	else
		fr->due_head = e;
	fr->due_tail = e;
}

static void entry_drop(struct fleetrate *fr, struct entry *e)
{
	struct entry **p = bucket(fr, e->kind, e->name);
	while (*p != NULL && *p != e)
		p = &(*p)->chain;
	if (*p == e)
		*p = e->chain;
	lru_unlink(fr, e);
	due_unlink(fr, e);
	fr->count--;
	free(e);
}

/* obtain - name's entry, made (the oldest dropped when full); NULL: no memory */
static struct entry *obtain(struct fleetrate *fr, enum fleetrate_kind kind, const char *name)
{
	struct entry *e = find(fr, kind, name);
	if (e != NULL) {
		lru_unlink(fr, e);
		lru_push(fr, e);
		return e;
	}
	if (fr->count >= fr->max && fr->oldest != NULL)
		entry_drop(fr, fr->oldest);
	size_t len = strlen(name);
	e = calloc(1, sizeof(*e) + len + 1);
	if (e == NULL)
		return NULL;
	e->kind = kind;
	memcpy(e->name, name, len + 1);
	struct entry **b = bucket(fr, kind, name);
	e->chain = *b;
	*b = e;
	lru_push(fr, e);
	fr->count++;
	return e;
}

/* turn - e's counts belong to window: a new window starts from nothing
 * (a report still in flight for the old one is ignored when it comes) */
static void turn(struct fleetrate *fr, struct entry *e, int64_t window)
{
	if (e->window == window)
		return;
	e->window = window;
	e->seen = e->in_flight = e->unreported = e->own = 0;
	due_unlink(fr, e);
}

/* judge - fleetrate_take (count) or fleetrate_peek */
static bool judge(struct fleetrate *fr, enum fleetrate_kind kind, const char *name, int64_t wall_ms,
                  unsigned rate, struct fleetrate_said *said, bool count)
{
	struct fleetrate_said none = {0};
	if (said == NULL)
		said = &none;
	memset(said, 0, sizeof(*said));
	if (fr == NULL || rate == 0 || name == NULL || name[0] == '\0' || strlen(name) >= FLEETRATE_NAME_MAX)
		return true;
	struct entry *e = obtain(fr, kind, name);
	if (e == NULL)
		return true; /* our trouble never stops a session */
	turn(fr, e, fleetrate_window(wall_ms));
	bool ok = fleetrate_allows(e->seen, e->in_flight, e->unreported, rate);
	if (ok && count) {
		e->unreported++;
		e->own++;
		due_push(fr, e);
	}
	uint64_t spent = (uint64_t)e->seen + e->in_flight + e->unreported;
	said->spent = spent > UINT32_MAX ? UINT32_MAX : (unsigned)spent;
	said->own = e->own;
	said->fleet = said->spent > e->own;
	return ok;
}

bool fleetrate_take(struct fleetrate *fr, enum fleetrate_kind kind, const char *name, int64_t wall_ms,
                    unsigned rate, struct fleetrate_said *said)
{
	return judge(fr, kind, name, wall_ms, rate, said, true);
}

bool fleetrate_peek(struct fleetrate *fr, enum fleetrate_kind kind, const char *name, int64_t wall_ms,
                    unsigned rate, struct fleetrate_said *said)
{
	return judge(fr, kind, name, wall_ms, rate, said, false);
}

bool fleetrate_next_report(struct fleetrate *fr, int64_t wall_ms, struct fleetrate_report *out)
{
	if (fr == NULL)
		return false;
	int64_t now = fleetrate_window(wall_ms);
	struct entry *e = fr->due_head;
	while (e != NULL) {
		struct entry *next = e->due_next;
		if (e->window < now || e->unreported == 0) {
			due_unlink(fr, e); /* a window over owes nothing */
		} else if (e->in_flight == 0) {
			due_unlink(fr, e);
			out->kind = e->kind;
			out->window = e->window;
			out->amount = e->unreported;
			snprintf(out->name, sizeof(out->name), "%s", e->name);
			e->in_flight = e->unreported;
			e->unreported = 0;
			return true;
		}
		e = next; /* in flight: sent again when its reply comes */
	}
	return false;
}

void fleetrate_reported(struct fleetrate *fr, const struct fleetrate_report *rep, int64_t total)
{
	if (fr == NULL)
		return;
	struct entry *e = find(fr, rep->kind, rep->name);
	if (e == NULL || e->window != rep->window)
		return;
	unsigned amount = rep->amount <= e->in_flight ? rep->amount : e->in_flight;
	e->in_flight -= amount;
	if (total < 0) {
		e->unreported += amount; /* owed again */
	} else {
		/* the total holds what we saw before and this amount, unless
		 * Redis lost the key (a restart without persistence): then what
		 * we knew still counts. One report in flight per key: a later
		 * reply never carries an older total. */
		uint64_t known = (uint64_t)e->seen + amount;
		uint64_t t = (uint64_t)total > known ? (uint64_t)total : known;
		e->seen = t > UINT32_MAX ? UINT32_MAX : (unsigned)t;
	}
	if (e->unreported > 0)
		due_push(fr, e);
}
