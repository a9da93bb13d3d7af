/*
 * health.c - self-health (see health.h): classify probe outcomes, keep the
 * latest judged result per MX host address, and decide with hysteresis.
 *
 * Owns nothing outside struct health (a fixed-size table, scanned once per
 * result: HEALTH_HOSTS_MAX entries, cheap next to a probe).
 */
#include "health.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

/* health_init - see health.h */
void health_init(struct health *h)
{
	memset(h, 0, sizeof(*h));
}

/* health_classify - see health.h */
enum health_class health_classify(const struct outcome *o)
{
	/* Our own machinery (loops, broken servers, our own limits) says nothing
	 * about our reach. */
	if (o->flags & (OUTCOME_F_LOOP | OUTCOME_F_PROTOCOL | OUTCOME_F_LIMITED))
		return HEALTH_NEUTRAL;
	switch (o->kind) {
	case OUTCOME_VALID:
	case OUTCOME_INVALID:
	case OUTCOME_CATCH_ALL:
		return HEALTH_ANSWERED;
	case OUTCOME_BLOCKED:
		/* The server refused us, not the address: a blocklist, our rDNS,
		 * our HELO name. */
		return HEALTH_OUR_SIDE;
	case OUTCOME_TEMPFAIL:
		if (o->stage == STAGE_RCPT || o->stage == STAGE_CATCHALL)
			return o->code != 0 ? HEALTH_ANSWERED : HEALTH_NEUTRAL;
		/* Refused, timed out, or connected and never greeted (port 25
		 * intercepted or dropped on the way): no server heard us. A 4xx
		 * greeting is a busy server, not a verdict on us. */
		if ((o->stage == STAGE_CONNECT || o->stage == STAGE_BANNER) && o->code == 0)
			return HEALTH_OUR_SIDE;
		return HEALTH_NEUTRAL;
	case OUTCOME_NO_DOMAIN:    /* the sender's DNS */
	case OUTCOME_UNVERIFIABLE: /* the server's features */
		break;
	}
	return HEALTH_NEUTRAL;
}

/* slot_for - host's entry, or a free one, or the least recently seen */
static struct health_host *slot_for(struct health *h, const char *host)
{
	struct health_host *free_slot = NULL, *oldest = &h->hosts[0];
	for (size_t i = 0; i < HEALTH_HOSTS_MAX; i++) {
		struct health_host *e = &h->hosts[i];
		if (e->key[0] == '\0') {
			if (free_slot == NULL)
				free_slot = e;
			continue;
		}
		if (strcmp(e->key, host) == 0)
			return e;
		if (e->seen_ms < oldest->seen_ms || oldest->key[0] == '\0')
			oldest = e;
	}
	struct health_host *e = free_slot != NULL ? free_slot : oldest;
	snprintf(e->key, sizeof(e->key), "%s", host);
	return e;
}

/* count - hosts judged in the window ending at now_ms, and how many failed
 * on our side; entries out of the window are freed */
static void count(struct health *h, int64_t now_ms, unsigned *judged, unsigned *failing)
{
	*judged = *failing = 0;
	for (size_t i = 0; i < HEALTH_HOSTS_MAX; i++) {
		struct health_host *e = &h->hosts[i];
		if (e->key[0] == '\0')
			continue;
		if (now_ms - e->seen_ms > HEALTH_WINDOW_MS) {
			e->key[0] = '\0';
			continue;
		}
		(*judged)++;
		if (e->class == HEALTH_OUR_SIDE)
			(*failing)++;
	}
}

/* health_note - see health.h */
enum health_change health_note(struct health *h, const char *host, enum health_class class,
                               const char *sample, bool reply, int64_t now_ms)
{
	if (host == NULL || host[0] == '\0' || class == HEALTH_NEUTRAL)
		return HEALTH_SAME;
	struct health_host *e = slot_for(h, host);
	e->seen_ms = now_ms;
	e->class = class;
	if (class == HEALTH_OUR_SIDE) {
		snprintf(h->sample_host, sizeof(h->sample_host), "%s", host);
		snprintf(h->sample, sizeof(h->sample), "%s", sample != NULL ? sample : "");
		h->sample_is_reply = reply && sample != NULL && sample[0] != '\0';
	}
	unsigned judged, failing;
	count(h, now_ms, &judged, &failing);
	h->judged = judged;
	h->failing = failing;
	unsigned answered = judged - failing;
	enum health_change change = HEALTH_SAME;
	if (!h->unhealthy && judged >= HEALTH_MIN_HOSTS && failing * 100 >= HEALTH_SICK_PERCENT * judged)
		change = HEALTH_BECAME_UNHEALTHY;
	else if (h->unhealthy && answered >= HEALTH_RECOVER_HOSTS &&
	         failing * 100 < HEALTH_WELL_PERCENT * judged)
		change = HEALTH_BECAME_HEALTHY;
	if (change != HEALTH_SAME) {
		h->unhealthy = change == HEALTH_BECAME_UNHEALTHY;
		h->since_ms = now_ms;
	}
	return change;
}

/* health_record - see health.h */
enum health_change health_record(struct health *h, const struct outcome *o, int64_t now_ms)
{
	char sample[sizeof(h->sample)];
	bool reply = o->code != 0;
	if (reply)
		snprintf(sample, sizeof(sample), "%d%s%s %s", o->code, o->ecode[0] ? " " : "", o->ecode,
		         o->text);
	else
		snprintf(sample, sizeof(sample), "%s", o->reason);
	return health_note(h, o->mx_addr, health_classify(o), sample, reply, now_ms);
}

/* health_unhealthy - see health.h */
bool health_unhealthy(const struct health *h)
{
	return h->unhealthy;
}

/* health_message - see health.h */
void health_message(const struct health *h, enum health_change change, const char *helo_name, char *buf,
                    size_t size)
{
	unsigned minutes = HEALTH_WINDOW_MS / 60000;
	if (change == HEALTH_BECAME_HEALTHY) {
		snprintf(
		        buf, size,
		        "self-health: healthy again: %u of %u mail hosts probed in the last %u min answered; "
		        "tempfail outcomes apply again",
		        h->judged - h->failing, h->judged, minutes);
		return;
	}
	if (change != HEALTH_BECAME_UNHEALTHY) {
		snprintf(buf, size, "self-health: %s", h->unhealthy ? "unhealthy" : "healthy");
		return;
	}
	char sample[sizeof(h->sample) + sizeof(h->sample_host) + 32];
	if (h->sample_is_reply)
		snprintf(sample, sizeof(sample), "; %s replied \"%s\"", h->sample_host, h->sample);
	else
		snprintf(sample, sizeof(sample), "; e.g. %s: %s", h->sample_host, h->sample);
	snprintf(buf, size,
	         "self-health: unhealthy: %u of %u mail hosts probed in the last %u min failed on our "
	         "side%s; check that outbound port 25 to the Internet is open, whether our address is "
	         "on a blocklist%s, and that the reverse DNS of our address matches helo_name %s; until "
	         "probes are answered again, tempfail outcomes are accepted (reason=self_health)",
	         h->failing, h->judged, minutes, sample, h->sample_is_reply ? " (see that reply)" : "",
	         helo_name != NULL && helo_name[0] != '\0' ? helo_name : "(unset)");
}
