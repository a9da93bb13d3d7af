/*
 * milter.h - the milter transports: libmilter (the one module that
 * includes it) or, with milter_transport = native, vemilter's own loop
 * (milterloop.h); main sees one interface for both.
 *
 * milter_open() checks the socket (and registers with libmilter),
 * milter_listen() opens it (as root, before privileges are dropped);
 * milter_start() serves on a thread of its own until milter_stop(), which
 * lets in-flight sessions finish first. The session rules are msession.h's.
 */
#ifndef VEMILTER_MILTER_H
#define VEMILTER_MILTER_H

#include <stdbool.h>

#include "conf.h"

/* milter_open - pick the transport (conf->milter_transport); for
 * libmilter register, give it milter_timeout (smfi_settimeout); check
 * conf->socket: a stale unix socket is removed
 * only when nothing listens on it; another live listener is an error.
 * Takes its own reference to conf. Logs and returns false on failure. */
bool milter_open(struct conf *conf);

/* milter_listen - open the socket milter_open checked, with socket_mode;
 * an address in use is logged as "is vemilter already running?". */
bool milter_listen(const struct conf *conf);

/* milter_socket_path - the unix socket's path inside spec, or NULL for inet. */
const char *milter_socket_path(const char *spec);

/* milter_start - serve on a thread of its own (smfi_main). Call with the
 * stop signals blocked, from the thread that will sigwait() for them: it is
 * sent SIGTERM if libmilter stops by itself. */
bool milter_start(void);

/* milter_stop - wait up to drain_seconds for open sessions to finish (still
 * serving them), then stop libmilter; returns 0 on a clean stop. */
int milter_stop(int drain_seconds);

/* milter_idle - no session is open (after milter_stop: all finished). */
bool milter_idle(void);

/* milter_set_conf - new sessions use conf from now on (reload); running
 * sessions keep the one they started with. */
void milter_set_conf(struct conf *conf);

struct verifier;
/* milter_set_verifier - sessions verify senders with it from now on; NULL:
 * syntax and lists only. Call before milter_start(); it must outlive
 * milter_stop(). */
void milter_set_verifier(struct verifier *verifier);

/* milter_close - drop the glue's configuration reference. */
void milter_close(void);

#endif
