/*
 * log.c - logging to syslog or stderr, and key=value formatting.
 *
 * Owns the process's log settings. They are written by log_open() in main
 * before any other thread exists and only read afterwards; log_set_level()
 * is the one later writer and stores an atomic.
 *
 * The process id in every line is read once (log_open) and again in a
 * forked child (pthread_atfork), not asked of the kernel per line: on the
 * cached path a verdict line is most of the system calls that are ours.
 * For syslog the tag is "ident[pid]" itself (openlog keeps the pointer),
 * which is what LOG_PID writes, without its getpid() per message. A
 * stderr line is put together once and written with one write() (emit);
 * a line already made with kv_add (a verdict) is not formatted again
 * (log_line).
 */
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static struct {
	char ident[32];
	char tag[64]; /* "ident[pid]": syslog's tag (openlog keeps the pointer) */
	bool to_stderr;
	atomic_int max_priority;
	long pid; /* this process's: set by log_open and in a forked child */
} log_settings = {"vemilter", "vemilter", true, LOG_INFO, 0};

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

/* set_tag - "ident[pid]" into the tag, with async-signal-safe steps only
 * (it also runs in a forked child) */
static void set_tag(void)
{
	char digits[24];
	size_t n = 0, len = 0;
	for (long pid = log_settings.pid; n == 0 || pid > 0; pid /= 10)
		digits[n++] = (char)('0' + pid % 10);
	for (const char *p = log_settings.ident; *p != '\0' && len + n + 3 < sizeof(log_settings.tag); p++)
		log_settings.tag[len++] = *p;
	log_settings.tag[len++] = '[';
	while (n > 0)
		log_settings.tag[len++] = digits[--n];
	log_settings.tag[len++] = ']';
	log_settings.tag[len] = '\0';
}

/* after_fork - a child has a process id of its own */
static void after_fork(void)
{
	log_settings.pid = (long)getpid();
	set_tag();
}

/* log_open - choose the sink and the threshold; call before threads start */
void log_open(const char *ident, int facility, bool to_stderr, int max_priority)
{
	static bool fork_handler;
	if (!fork_handler)
		fork_handler = pthread_atfork(NULL, NULL, after_fork) == 0;
	snprintf(log_settings.ident, sizeof(log_settings.ident), "%s", ident);
	log_settings.pid = (long)getpid();
	set_tag();
	log_settings.to_stderr = to_stderr;
	atomic_store(&log_settings.max_priority, max_priority);
	if (!to_stderr)
		openlog(log_settings.tag, LOG_NDELAY, facility);
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

/* log_enabled - see log.h */
bool log_enabled(int priority)
{
	return priority <= atomic_load(&log_settings.max_priority);
}

/* The text of one line, at most (longer ones are cut). */
#define LOG_TEXT_MAX 2047

/* emit - write one line of text (cut to LOG_TEXT_MAX octets, a CR or LF
 * made a space: never more than one line) to the sink. To stderr it is
 * assembled once, "tag: level: text\n", and written with one write(): no
 * stdio formatting on the verdict path, and one write keeps lines from
 * interleaving as one fprintf on the unbuffered stream did. */
static void emit(int priority, const char *text)
{
	char line[sizeof(log_settings.tag) + 16 + LOG_TEXT_MAX + 2];
	size_t len = 0;
	if (log_settings.to_stderr && log_settings.pid != 0) {
		for (const char *p = log_settings.tag; *p != '\0'; p++)
			line[len++] = *p;
		line[len++] = ':';
		line[len++] = ' ';
		for (const char *p = log_level_name(priority); *p != '\0'; p++)
			line[len++] = *p;
		line[len++] = ':';
		line[len++] = ' ';
	}
	size_t start = len;
	for (const char *p = text; *p != '\0' && len - start < LOG_TEXT_MAX; p++)
		line[len++] = *p == '\n' || *p == '\r' ? ' ' : *p;
	if (!log_settings.to_stderr) {
		line[len] = '\0';
		syslog(priority, "%s", line);
	} else if (log_settings.pid != 0) {
		line[len++] = '\n';
		for (size_t done = 0; done < len;) {
			ssize_t w = write(STDERR_FILENO, line + done, len - done);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				break; /* nowhere to say so */
			done += (size_t)w;
		}
	} else { /* before log_open (unit tests, early errors) */
		line[len] = '\0';
		fprintf(stderr, "%s[%ld]: %s: %s\n", log_settings.ident, (long)getpid(),
		        log_level_name(priority), line);
	}
}

/* log_msg - one message; never more than one line */
void log_msg(int priority, const char *fmt, ...)
{
	if (priority > atomic_load(&log_settings.max_priority))
		return;
	char text[LOG_TEXT_MAX + 1];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	emit(priority, text);
}

/* log_line - see log.h */
void log_line(int priority, const char *line)
{
	if (priority > atomic_load(&log_settings.max_priority))
		return;
	emit(priority, line);
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
