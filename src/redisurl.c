/*
 * redisurl.c - parse and format redis:// cache URLs (see redisurl.h).
 */
#include "redisurl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define SCHEME     "redis://"
#define SCHEME_TLS "rediss://"

bool redis_url_is(const char *text)
{
	return text && (strncasecmp(text, SCHEME, strlen(SCHEME)) == 0 ||
	                strncasecmp(text, SCHEME_TLS, strlen(SCHEME_TLS)) == 0);
}

/* parse_number - all of [s, end) as a decimal in [min, max] */
static bool parse_number(const char *s, const char *end, int min, int max, int *out)
{
	if (s == end || end - s > 5)
		return false;
	int v = 0;
	for (const char *p = s; p < end; p++) {
		if (*p < '0' || *p > '9')
			return false;
		v = v * 10 + (*p - '0');
	}
	if (v < min || v > max)
		return false;
	*out = v;
	return true;
}

/* host_ok - a DNS name or an IPv4 address: letters, digits, '-', '.', '_' */
static bool host_ok(const char *s, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '.' || c == '_'))
			return false;
	}
	return true;
}

bool redis_url_parse(const char *text, struct redis_url *out, char *why, size_t why_size)
{
	memset(out, 0, sizeof(*out));
	out->port = 6379;
	if (!text || strncasecmp(text, SCHEME_TLS, strlen(SCHEME_TLS)) == 0) {
		snprintf(why, why_size,
		         "rediss:// (TLS) is not supported: Debian's hiredis has no TLS; reach Redis over a "
		         "private "
		         "network or a local TLS tunnel (stunnel) and use redis://");
		return false;
	}
	if (strncasecmp(text, SCHEME, strlen(SCHEME)) != 0) {
		snprintf(why, why_size, "a Redis cache URL starts with redis://");
		return false;
	}
	const char *p = text + strlen(SCHEME);
	const char *end = p + strcspn(p, "/?#");
	if (*end == '?' || *end == '#' || strpbrk(end, "?#")) {
		snprintf(why, why_size, "no query or fragment is accepted in a Redis URL");
		return false;
	}
	const char *at = memchr(p, '@', (size_t)(end - p));
	if (at) {
		size_t n = (size_t)(at - p);
		if (memchr(p, ':', n)) {
			snprintf(why, why_size,
			         "no password in the URL (it would show in logs): put it in "
			         "cache_password_file");
			return false;
		}
		if (n == 0 || n >= sizeof(out->user) || !host_ok(p, n)) {
			snprintf(why, why_size, "bad user name before '@'");
			return false;
		}
		memcpy(out->user, p, n);
		p = at + 1;
	}
	const char *host_end;
	const char *after;
	if (*p == '[') {
		host_end = memchr(p, ']', (size_t)(end - p));
		if (!host_end) {
			snprintf(why, why_size, "unclosed '[' in the host");
			return false;
		}
		size_t n = (size_t)(host_end - p - 1);
		unsigned char a6[16];
		if (n == 0 || n >= sizeof(out->host)) {
			snprintf(why, why_size, "bad IPv6 address in brackets");
			return false;
		}
		memcpy(out->host, p + 1, n);
		out->host[n] = '\0';
		if (inet_pton(AF_INET6, out->host, a6) != 1) {
			snprintf(why, why_size, "bad IPv6 address in brackets: %s", out->host);
			return false;
		}
		after = host_end + 1;
	} else {
		host_end = memchr(p, ':', (size_t)(end - p));
		if (!host_end)
			host_end = end;
		size_t n = (size_t)(host_end - p);
		if (n == 0) {
			snprintf(why, why_size, "no host in the Redis URL");
			return false;
		}
		if (n >= sizeof(out->host) || !host_ok(p, n)) {
			snprintf(why, why_size, "bad host in the Redis URL");
			return false;
		}
		memcpy(out->host, p, n);
		out->host[n] = '\0';
		after = host_end;
	}
	if (after < end) {
		if (*after != ':' || !parse_number(after + 1, end, 1, 65535, &out->port)) {
			snprintf(why, why_size, "bad port (1..65535) in the Redis URL");
			return false;
		}
	}
	if (*end == '/' && end[1] != '\0') {
		if (!parse_number(end + 1, end + strlen(end), 0, 15, &out->db)) {
			snprintf(why, why_size, "bad database number (0..15) after '/'");
			return false;
		}
	}
	return true;
}

const char *redis_url_format(const struct redis_url *url, char *buf, size_t size)
{
	bool v6 = strchr(url->host, ':') != NULL;
	snprintf(buf, size, "redis://%s%s%s%s%s:%d/%d", url->user, url->user[0] ? "@" : "", v6 ? "[" : "",
	         url->host, v6 ? "]" : "", url->port, url->db);
	return buf;
}

bool redis_password_read(const char *path, char *buf, size_t size, char *why, size_t why_size)
{
	buf[0] = '\0';
	if (path == NULL || path[0] == '\0')
		return true;
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		snprintf(why, why_size, "cannot read cache_password_file %s: %s", path, strerror(errno));
		return false;
	}
	bool got = fgets(buf, (int)size, f) != NULL;
	bool error = ferror(f) != 0;
	fclose(f);
	if (error || !got) {
		snprintf(why, why_size, "cache_password_file %s: %s", path, error ? "read error" : "empty");
		buf[0] = '\0';
		return false;
	}
	size_t line = strcspn(buf, "\r\n");
	if (buf[line] == '\0' && line == size - 1) {
		snprintf(why, why_size, "cache_password_file %s: the first line is longer than %zu octets",
		         path, size - 1);
		explicit_bzero(buf, size);
		return false;
	}
	buf[line] = '\0';
	if (line == 0) {
		snprintf(why, why_size, "cache_password_file %s: the first line is empty", path);
		return false;
	}
	return true;
}
