/*
 * redisurl.h - the `cache = redis://...` value: where the shared cache lives.
 *
 * Pure: parses text into a struct redis_url the caller owns (no
 * allocation). Accepted: redis://[user@]host[:port][/db], host a name, an
 * IPv4 address or a bracketed IPv6 address; port 1..65535 (default 6379),
 * db 0..15 (default 0). A password is never part of the URL (it would show
 * in logs and `ps`): it comes from cache_password_file, so "user:pass@"
 * is refused with a reason saying so. rediss:// (TLS) is refused: Debian
 * 12's hiredis (0.14) has no TLS; the reason says to reach Redis over a
 * private network or a local TLS tunnel.
 *
 * Also the password file's reading (redis_password_read), shared by the
 * daemon and vemilter-cache so both accept the same files.
 */
#ifndef VEMILTER_REDISURL_H
#define VEMILTER_REDISURL_H

#include <stdbool.h>
#include <stddef.h>

#define REDIS_URL_HOST_MAX 256
#define REDIS_URL_USER_MAX 128
#define REDIS_PASSWORD_MAX 1024 /* the first line of cache_password_file, NUL included */

struct redis_url {
	char user[REDIS_URL_USER_MAX]; /* ACL user (Redis 6+); "": the default user */
	char host[REDIS_URL_HOST_MAX]; /* without brackets */
	int port;
	int db;
};

/* redis_url_is - does text name a Redis cache (starts with "redis://" or
 * "rediss://", any case)? Anything else is an LMDB path. */
bool redis_url_is(const char *text);

/* redis_url_parse - false with a reason in why for anything malformed. */
bool redis_url_parse(const char *text, struct redis_url *out, char *why, size_t why_size);

/* redis_url_format - "redis://user@host:port/db" (IPv6 bracketed) into buf;
 * for logs: it never holds a secret. Returns buf. */
const char *redis_url_format(const struct redis_url *url, char *buf, size_t size);

/* redis_password_read - the first line of path (without its line end)
 * into buf; path NULL or "": no password (buf ""). False with a reason
 * that never holds the file's content: unreadable, empty, or a first line
 * that is empty or longer than size - 1. */
bool redis_password_read(const char *path, char *buf, size_t size, char *why, size_t why_size);

#endif
