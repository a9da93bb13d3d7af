/*
 * log.c - logging to syslog or stderr, and key=value formatting.
 *
 * Owns the process's log settings. They are written by log_open() in main
 * before any other thread exists and only read afterwards; log_set_level()
 * is the one later writer and stores an atomic.
 */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static struct {
	char ident[32];
	bool to_stderr;
	atomic_int max_priority;
} log_settings = {"vemilter", true, LOG_INFO};

static const struct {
	const char *name;
	int priority;
} level_names[] = {
        {"error", LOG_ERR}, {"warning", LOG_WARNING}, {"notice", LOG_NOTICE},
        {"info", LOG_INFO}, {"debug", LOG_DEBUG},
};

static const struct {
	const char *name;
	int facility;
} facility_names[] = {
        {"mail", LOG_MAIL},     {"daemon", LOG_DAEMON}, {"user", LOG_USER},     {"local0", LOG_LOCAL0},
        {"local1", LOG_LOCAL1}, {"local2", LOG_LOCAL2}, {"local3", LOG_LOCAL3}, {"local4", LOG_LOCAL4},
        {"local5", LOG_LOCAL5}, {"local6", LOG_LOCAL6}, {"local7", LOG_LOCAL7},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* log_open - choose the sink and the threshold; call before threads start */
void log_open(const char *ident, int facility, bool to_stderr, int max_priority)
{
	snprintf(log_settings.ident, sizeof(log_settings.ident), "%s", ident);
	log_settings.to_stderr = to_stderr;
	atomic_store(&log_settings.max_priority, max_priority);
	if (!to_stderr)
		openlog(log_settings.ident, LOG_PID | LOG_NDELAY, facility);
}

/* log_set_level - change the threshold (e.g. -d after the config is read) */
void log_set_level(int max_priority)
{
	atomic_store(&log_settings.max_priority, max_priority);
}

/* log_close - release the syslog connection */
void log_close(void)
{
	if (!log_settings.to_stderr)
		closelog();
}

/* log_msg - one message; never more than one line */
void log_msg(int priority, const char *fmt, ...)
{
	if (priority > atomic_load(&log_settings.max_priority))
		return;
	char text[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	for (char *p = text; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	if (log_settings.to_stderr)
		/* One fprintf per line: stdio locks the stream, lines never interleave. */
		fprintf(stderr, "%s[%ld]: %s: %s\n", log_settings.ident, (long)getpid(),
		        log_level_name(priority), text);
	else
		syslog(priority, "%s", text);
}

/* log_level_from_name - "info" -> LOG_INFO */
bool log_level_from_name(const char *name, int *priority)
{
	for (size_t i = 0; i < COUNT(level_names); i++) {
		if (strcasecmp(name, level_names[i].name) == 0) {
			*priority = level_names[i].priority;
			return true;
		}
	}
	return false;
}

/* log_level_name - LOG_INFO -> "info"; priorities above error read "error" */
const char *log_level_name(int priority)
{
	for (size_t i = 0; i < COUNT(level_names); i++)
		if (level_names[i].priority == priority)
			return level_names[i].name;
	return priority < LOG_ERR ? "error" : "debug";
}

/* log_facility_from_name - "mail" -> LOG_MAIL */
bool log_facility_from_name(const char *name, int *facility)
{
	for (size_t i = 0; i < COUNT(facility_names); i++) {
		if (strcasecmp(name, facility_names[i].name) == 0) {
			*facility = facility_names[i].facility;
			return true;
		}
	}
	return false;
}

/* put - append one octet if room remains (one octet kept for the NUL) */
static void put(char *buf, size_t size, size_t *len, char c)
{
	if (*len + 1 < size)
		buf[(*len)++] = c;
}

/* puts_raw - append a string verbatim */
static void puts_raw(char *buf, size_t size, size_t *len, const char *s)
{
	while (*s)
		put(buf, size, len, *s++);
}

/* needs_quotes - a value that would be ambiguous bare */
static bool needs_quotes(const char *value)
{
	if (*value == '\0')
		return true;
	for (const unsigned char *p = (const unsigned char *)value; *p; p++)
		if (*p <= ' ' || *p >= 0x7f || *p == '"' || *p == '\\' || *p == '=')
			return true;
	return false;
}

/* kv_add - append " key=value", quoting and escaping as log.h describes */
void kv_add(char *buf, size_t size, size_t *len, const char *key, const char *value)
{
	if (size == 0)
		return;
	if (*len > 0)
		put(buf, size, len, ' ');
	puts_raw(buf, size, len, key);
	put(buf, size, len, '=');
	if (value == NULL) {
		put(buf, size, len, '-');
	} else if (!needs_quotes(value)) {
		puts_raw(buf, size, len, value);
	} else {
		put(buf, size, len, '"');
		for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
			if (*p == '"' || *p == '\\') {
				put(buf, size, len, '\\');
				put(buf, size, len, (char)*p);
			} else if (*p < ' ' || *p >= 0x7f) {
				char hex[5];
				snprintf(hex, sizeof(hex), "\\x%02X", *p);
				puts_raw(buf, size, len, hex);
			} else {
				put(buf, size, len, (char)*p);
			}
		}
		put(buf, size, len, '"');
	}
	buf[*len] = '\0';
}
