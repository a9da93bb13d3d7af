/*
 * precheck.h - what can be decided about a sender without asking anyone.
 *
 * At MAIL FROM the MTA gives us the sender, the client address and, for an
 * authenticated session, the login name. precheck_sender() decides from those
 * facts and the config alone: accept (null sender, trusted network,
 * authenticated, allow-listed), reject (bad syntax), or "verify" (a real
 * address nobody vouches for). Pure: no I/O, no allocation.
 */
#ifndef VEMILTER_PRECHECK_H
#define VEMILTER_PRECHECK_H

#include <stdbool.h>
#include <sys/socket.h>

#include "addr.h"
#include "conf.h"

enum precheck_verdict { PRECHECK_ACCEPT, PRECHECK_REJECT, PRECHECK_VERIFY };

struct precheck_result {
	enum precheck_verdict verdict;
	const char *reason; /* static, log-friendly: "null_sender", "trusted_network", ... */
	char detail[160];   /* human text: why a syntax check failed, which list matched */
	struct addr sender; /* parsed sender (valid when reason is not "bad_syntax") */
};

/* precheck_sender - sender as the MTA gave it; client may be NULL (unknown);
 * auth_authen NULL or "" when the client did not authenticate. */
void precheck_sender(const struct conf *conf, const char *sender, const struct sockaddr *client,
                     const char *auth_authen, struct precheck_result *out);

/* precheck_recipient_exempt - is this recipient (as the MTA gave it) always
 * reachable whatever the sender, e.g. postmaster@ (RFC 5321 4.5.1)? */
bool precheck_recipient_exempt(const struct conf *conf, const char *recipient);

#endif
