/*
 * log.h - logging to syslog or to stderr, and key=value formatting.
 *
 * log_open() is called by main before any other thread starts; after that the
 * settings are only read, so logging is safe from every thread. Priorities are
 * syslog's (LOG_ERR ... LOG_DEBUG).
 */
#ifndef VEMILTER_LOG_H
#define VEMILTER_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <syslog.h>

/* log_open - to_stderr: write "vemilter[pid]: level: message" lines to
 * stderr instead of syslog. max_priority: messages above it are dropped. */
void log_open(const char *ident, int facility, bool to_stderr, int max_priority);
void log_set_level(int max_priority);
void log_close(void);

void log_msg(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* log_line - a line already made (kv_add): written as log_msg writes
 * "%s", without formatting it again */
void log_line(int priority, const char *line);
/* log_enabled - a message at priority would be written: callers that build
 * a line piece by piece (kv_add) skip the work when it would be dropped */
bool log_enabled(int priority);

/* Log-level names ("error", "warning", "notice", "info", "debug"). */
bool log_level_from_name(const char *name, int *priority);
const char *log_level_name(int priority);
/* Syslog facility names ("mail", "daemon", "local0".."local7", "user"). */
bool log_facility_from_name(const char *name, int *facility);

/*
 * kv_add - append " key=value" to buf (length *len, capacity size). A value
 * that is empty or holds a space, quote, backslash or '=' is written in double
 * quotes with \" and \\ escaped; control and non-ASCII octets become \xHH, so
 * one verdict is always one line. NULL value: "-". Truncates safely.
 */
void kv_add(char *buf, size_t size, size_t *len, const char *key, const char *value);

#endif
