/*
 * milterloop.h - the native milter transport: one thread, one libevent
 * loop, every MTA connection a socket read and written on it.
 *
 * The loop reads packets (milterwire.c), runs the session rules
 * (msession.c) and writes the answers. An answer that needs a probe does
 * not block the loop: the session is parked on its verification ticket
 * (verify_notify) and resumed when the answer comes or verify_budget ends.
 * A connection silent for milter_timeout is closed; a malformed packet
 * or QUIT ends its connection (with a log line for the packet) once the
 * answers already given are written, within milter_timeout.
 *
 * Owns the listening descriptor handed to milterloop_start and every MTA
 * connection. Start/stop from one thread (main's).
 */
#ifndef VEMILTER_MILTERLOOP_H
#define VEMILTER_MILTERLOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct milterloop;

/* milterloop_listen - a listening socket for spec (unix:/path, local:/path,
 * /path, inet:PORT[@HOST], inet6:PORT[@HOST]); -1 with the reason logged.
 * EADDRINUSE is left in errno. */
int milterloop_listen(const char *spec);

/* milterloop_start - serve listen_fd on a new thread; on_exit(arg) is called
 * on that thread if the loop ends by itself. NULL (logged) on failure. */
struct milterloop *milterloop_start(int listen_fd, int64_t timeout_ms, void (*on_exit)(void *arg), void *arg);

/* milterloop_running - the loop thread has not ended */
bool milterloop_running(struct milterloop *loop);

/* milterloop_stop - stop the loop (connections still open are closed:
 * the MTA applies its milter_default_action), join it, free everything. */
void milterloop_stop(struct milterloop *loop);

#endif
