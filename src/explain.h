/*
 * explain.h - what the daemon would answer for a sender now, and why,
 * without probing: vemilter-check --explain.
 *
 * It walks the daemon's own path with the daemon's own functions: the
 * precheck (null sender, syntax, allow lists; as an untrusted,
 * unauthenticated client, since the tool has no MTA session), the domain's
 * override or blocklist entry, then vstore_lookup on the cache read-only
 * (the record that would answer, its age, refresh time and expiry, or why
 * none may), and the policy's action and reply for that answer. One
 * "ADDRESS: key: text" line per step to out.
 *
 * Read-only: the cache is only read (vstore in read_only mode), nothing is
 * probed, nothing written. Owns nothing.
 */
#ifndef VEMILTER_EXPLAIN_H
#define VEMILTER_EXPLAIN_H

#include <stdint.h>
#include <stdio.h>

#include "cache.h"
#include "conf.h"

/* The verdict explained, for the caller's exit status. */
enum explain_result {
	EXPLAIN_ACCEPT,
	EXPLAIN_TEMPFAIL,
	EXPLAIN_REJECT,
	EXPLAIN_PROBE, /* nothing may answer: the daemon would probe */
};

/* explain_sender - input as an admin types it (with or without <>);
 * cache may be NULL (none configured or none there). now_ms: wall clock. */
enum explain_result explain_sender(const struct conf *conf, struct cache *cache, const char *input,
                                   int64_t now_ms, FILE *out);

#endif
