/*
 * health.h - self-health: are our probes failing on OUR side?
 *
 * When port 25 is blocked on the way out, or our address is on a blocklist,
 * every probe fails, whoever the sender is; answering each of them
 * "tempfail" would defer the whole world's mail for our own trouble. This
 * module watches probe outcomes and says when that is what happens, so the
 * policy can fail open (policy_for_self_health) and the log can say what to
 * check.
 *
 * Each outcome is classified (health_classify):
 *  - answered: a server gave a verdict about an address (valid, invalid,
 *    catch_all, or a 4xx/5xx reply at RCPT): we can reach the world;
 *  - our side: nothing a sender did can explain it: connection refused or
 *    timed out, no greeting, a greeting/EHLO/MAIL refusing us, a 5.7.x or
 *    blocklist text naming our address (outcome blocked);
 *  - neutral: says nothing about us (the sender's DNS, protocol errors,
 *    loops, our own limits, TLS trouble, a 4xx greeting).
 * Answered and our-side results are kept per MX host address (the key), so
 * one dead host, or one sender's domain, never looks like our outage.
 *
 * The rule, over a sliding window (HEALTH_WINDOW_MS) and judging each host
 * by its latest non-neutral result in it (an outage starts now: an answer a
 * host gave four minutes ago must not hide it):
 *  - unhealthy when at least HEALTH_MIN_HOSTS distinct hosts were judged and
 *    at least HEALTH_SICK_PERCENT of them failed on our side;
 *  - healthy again only when answers come back: at least
 *    HEALTH_RECOVER_HOSTS hosts answered and fewer than
 *    HEALTH_WELL_PERCENT failed. Between the two thresholds the state stays
 *    as it is (hysteresis: no flapping around one number), and an empty
 *    window changes nothing (no evidence either way).
 *
 * Pure: a fixed-size value the caller owns (no allocation, no I/O, no
 * clock: time is passed in, monotonic milliseconds), so it is unit-tested
 * with explicit times. Not thread-safe: the verifier feeds it on the engine
 * thread and publishes the state to milter threads itself.
 */
#ifndef VEMILTER_HEALTH_H
#define VEMILTER_HEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "outcome.h"

/* Five minutes: long enough to see many distinct hosts on a small site,
 * short enough that an outage is noticed, and its end, within minutes. */
#define HEALTH_WINDOW_MS (5 * 60 * 1000)
/* Five hosts: one or two dead MX hosts (common: forged domains, stale MX
 * records) must never make us look unhealthy. */
#define HEALTH_MIN_HOSTS 5
/* 80 %: a real outage fails nearly everything; a few hosts may still be
 * reachable (a local relay, a host on an allowed port). */
#define HEALTH_SICK_PERCENT 80
/* Below 50 % failing, with answers from at least two hosts: clearly better,
 * well away from the 80 % that made us unhealthy. */
#define HEALTH_WELL_PERCENT  50
#define HEALTH_RECOVER_HOSTS 2
/* Hosts remembered at once; beyond, the least recently seen is forgotten.
 * Bounds memory and the per-probe cost (one scan). */
#define HEALTH_HOSTS_MAX 256

enum health_class {
	HEALTH_NEUTRAL,
	HEALTH_ANSWERED,
	HEALTH_OUR_SIDE,
};

enum health_change {
	HEALTH_SAME,
	HEALTH_BECAME_UNHEALTHY,
	HEALTH_BECAME_HEALTHY,
};

struct health_host {
	char key[64];            /* MX host address ("" : free) */
	int64_t seen_ms;         /* its latest answered/our-side result */
	enum health_class class; /* that result */
};

struct health {
	bool unhealthy;
	int64_t since_ms;                   /* when the state last changed (0: never) */
	unsigned judged, failing;           /* hosts in the window at the last health_note */
	char sample_host[64];               /* latest our-side failure: the host */
	char sample[OUTCOME_TEXT_MAX + 48]; /* and its reply ("554 5.7.1 ...") or reason */
	bool sample_is_reply;               /* sample quotes a server's reply */
	struct health_host hosts[HEALTH_HOSTS_MAX];
};

/* health_init - healthy, nothing seen */
void health_init(struct health *h);

/* health_classify - what an outcome says about our own health */
enum health_class health_classify(const struct outcome *o);

/* health_note - one probe result of class for host (an MX host address; ""
 * or NULL: ignored) at now_ms; sample, for an our-side failure, is the
 * server's reply or our reason (may be NULL), reply says which. Returns the
 * change of state, if any. */
enum health_change health_note(struct health *h, const char *host, enum health_class class,
                               const char *sample, bool reply, int64_t now_ms);

/* health_record - health_note for a probe's outcome (classified, keyed by
 * its mx_addr, sampled from its reply or reason) */
enum health_change health_record(struct health *h, const struct outcome *o, int64_t now_ms);

bool health_unhealthy(const struct health *h);

/* health_message - the log line for a change of state into buf: what was
 * seen and, when unhealthy, what to check (outbound port 25, our address on
 * a blocklist with the sample reply, reverse DNS of our address against
 * helo_name). */
void health_message(const struct health *h, enum health_change change, const char *helo_name, char *buf,
                    size_t size);

#endif
