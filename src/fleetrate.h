/*
 * fleetrate.h - budgets shared by a fleet (issue 12): how many sessions
 * (or probes) one key (an MX host address, ...) got this minute from
 * every host that shares a Redis cache, as this host knows it, and the
 * bookkeeping of what it still owes Redis. Pure: no I/O, no clock, no
 * globals (times are the caller's wall clock, so tests move them by hand);
 * shared.c sends the reports and feeds the replies back. Owns its table.
 * Not thread-safe: its owner serializes the calls (shared.c, under a lock
 * of its own: host sessions and domain probes are taken on the engine
 * thread, client probes in milter threads).
 *
 * Design (docs/DESIGN.md, "Redis"): fixed windows of one wall-clock
 * minute, the same on every host (clocks within seconds: NTP), counted in
 * Redis at "vemilter:r:<kind>:<name>:<window>" (fleetrate_key; window =
 * wall ms / 60000) by SHARED_LUA_RATE: INCRBY of what one host spent, a
 * PEXPIRE of two windows so nothing is left behind, the new total back.
 *
 * The decision never waits for Redis: fleetrate_take judges at once from
 *   spent = seen + in_flight + unreported
 * seen: the fleet's total for this window in Redis's last reply to us (our
 * reported spending included); in_flight: spent by us and sent, not yet
 * answered; unreported: spent by us and not yet sent. A take is allowed
 * while spent < rate, and then counted in unreported. The caller sends a
 * report as soon as it can (fleetrate_next_report: everything unreported
 * of one key, one report in flight per key) and hands the reply's total
 * to fleetrate_reported. A failed report goes back to unreported: sent
 * again once Redis is back (within the window; it may then count twice,
 * which only makes the fleet stricter).
 *
 * Redis down or never answering: seen stays what it was (0 for a key we
 * never reported), and spent is our own spending (plus the fleet's as
 * last seen, this window): each host keeps its own local budget, as
 * without a fleet; nothing waits, nothing fails for it.
 *
 * The bound: a host learns the others' spending only from the replies to
 * its own reports, so what it decides between a spend and that spend's
 * reply is blind to what the others spent since their last report. Per
 * window, the fleet begins at most rate + sum over hosts of the spends
 * each made while a report of its own for the key was unanswered (one
 * report round trip: ~1 ms on a LAN), and never more than hosts * rate
 * (each host's own budget). Sessions spread out: the rate, or one more per
 * other host when they coincide; a burst that reaches all hosts within one
 * round trip: up to hosts * rate, as without sharing.
 *
 * Bounded: at most max entries (the least recently used one goes when
 * full: its budget is forgotten, a reply for it is ignored); an entry is
 * about 90 bytes plus its key.
 */
#ifndef VEMILTER_FLEETRATE_H
#define VEMILTER_FLEETRATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FLEETRATE_WINDOW_MS INT64_C(60000)
#define FLEETRATE_TTL_MS    (2 * FLEETRATE_WINDOW_MS) /* the Redis key outlives its window by one */
#define FLEETRATE_PREFIX    "vemilter:r:"
#define FLEETRATE_NAME_MAX  256 /* a key (an address, a domain) at most, NUL included */
#define FLEETRATE_KEY_MAX   (sizeof(FLEETRATE_PREFIX) + 3 * FLEETRATE_NAME_MAX + 32)

/* What is counted (the <kind> of the Redis key). */
enum fleetrate_kind {
	FLEETRATE_HOST_SESSIONS = 's', /* host_session_rate: new SMTP sessions to one MX address */
	FLEETRATE_DOMAIN_PROBES = 'd', /* domain_probe_rate: new probes of one domain (its ASCII name) */
	FLEETRATE_CLIENT_PROBES = 'c', /* client_probe_rate: new probes for one client address */
};

/* fleetrate_window - the window (minute number) wall_ms falls in; a time
 * before the epoch is window 0 */
int64_t fleetrate_window(int64_t wall_ms);

/* fleetrate_turn_ms - the wall-clock time wall_ms's window ends */
int64_t fleetrate_turn_ms(int64_t wall_ms);

/* fleetrate_key - "vemilter:r:<kind>:<name>:<window>" into buf, the name
 * escaped: bytes other than [A-Za-z0-9.-_] (an IPv6 address's ':', a
 * space, ...) as %XX, so no name can reach into another's key. "" when
 * name is empty, longer than FLEETRATE_NAME_MAX - 1 or buf too small. */
void fleetrate_key(enum fleetrate_kind kind, const char *name, int64_t window, char *buf, size_t size);

/* fleetrate_allows - the decision: may one more begin, with seen (the
 * fleet's total last seen), in_flight and unreported (ours, not in seen)
 * at rate? rate 0: no limit. */
bool fleetrate_allows(unsigned seen, unsigned in_flight, unsigned unreported, unsigned rate);

struct fleetrate;

/* fleetrate_new - an empty table of at most max entries; NULL without memory */
struct fleetrate *fleetrate_new(size_t max);
void fleetrate_free(struct fleetrate *fr); /* NULL is fine */
size_t fleetrate_count(const struct fleetrate *fr);

/* What a take saw. */
struct fleetrate_said {
	unsigned spent; /* begun this window as far as we know (the fleet's and ours), this one included if
	                   allowed */
	unsigned own;   /* ... of them by this host */
	bool fleet;     /* spent counts other hosts' spending (spent > own) */
};

/* fleetrate_take - may one more of kind begin for name at wall_ms, at most
 * rate a minute across the fleet? True: yes, and it is counted (owed to
 * Redis). False: spent >= rate; nothing is counted. rate 0 (no limit), an
 * unusable name or no memory: true, nothing kept. said may be NULL. */
bool fleetrate_take(struct fleetrate *fr, enum fleetrate_kind kind, const char *name, int64_t wall_ms,
                    unsigned rate, struct fleetrate_said *said);

/* fleetrate_peek - fleetrate_take without counting: would one more be
 * allowed? (For a caller that decides now and begins a moment later, on
 * the same thread: it takes then.) */
bool fleetrate_peek(struct fleetrate *fr, enum fleetrate_kind kind, const char *name, int64_t wall_ms,
                    unsigned rate, struct fleetrate_said *said);

/* A report: what one host spent on one key in one window and has not yet
 * told Redis. */
struct fleetrate_report {
	enum fleetrate_kind kind;
	int64_t window;
	unsigned amount;
	char name[FLEETRATE_NAME_MAX];
};

/* fleetrate_next_report - the next key with spending to report and no
 * report in flight, oldest first: out filled, its amount now in flight
 * (the caller sends it, then calls fleetrate_reported). Keys whose window
 * is over at wall_ms are passed (nothing is owed for them). False: none. */
bool fleetrate_next_report(struct fleetrate *fr, int64_t wall_ms, struct fleetrate_report *out);

/* fleetrate_reported - Redis answered rep with the fleet's total (our
 * amount included); total < 0: the report failed (its amount is owed
 * again). A reply for a key forgotten or a window gone is ignored. */
void fleetrate_reported(struct fleetrate *fr, const struct fleetrate_report *rep, int64_t total);

#endif
