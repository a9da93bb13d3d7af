/*
 * milter_floor.c - what the milter transport alone costs per cached message
 * without libmilter: a thread per MTA connection, blocking reads into a
 * buffer (one read takes every packet the MTA has sent so far), one write
 * per reply. It answers OPTNEG as vemilter does (CONNECT, HELO, DATA,
 * headers and body skipped; {client_addr} asked with MAIL) and accepts
 * every MAIL FROM: no cache, no verdict, no log line. A measuring stick
 * for bench/cached_cpu.py (--floor), not part of vemilter. With "epoll",
 * one thread serves every connection from an epoll loop instead: no thread
 * made per session, none handed a session.
 *
 *     cc -O2 -pthread -o milter_floor bench/milter_floor.c
 *     ./milter_floor /path/to/socket [threads|epoll]   # serves until killed
 */
#define _GNU_SOURCE /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define NOCONNECT 0x1
#define NOHELO    0x2
#define NOBODY    0x10
#define NOHDRS    0x20
#define NOEOH     0x40
#define NOUNKNOWN 0x100
#define NODATA    0x200

/* put - one packet: length, command, data */
static int put(int fd, char cmd, const void *data, uint32_t len)
{
	char buf[256];
	uint32_t n = htonl(len + 1);
	memcpy(buf, &n, 4);
	buf[4] = cmd;
	memcpy(buf + 5, data, len);
	return write(fd, buf, 5 + len) == (ssize_t)(5 + len) ? 0 : -1;
}

/* handle - answer every whole packet in buf[0..*have); -1: end the session */
static int handle(int fd, char *buf, size_t *have, size_t size)
{
	size_t off = 0;
	int rc = 0;
	while (*have - off >= 5) {
		uint32_t len;
		memcpy(&len, buf + off, 4);
		len = ntohl(len);
		if (len == 0 || len > size - 4)
			return -1;
		if (*have - off < 4 + len)
			break;
		char cmd = buf[off + 4];
		if (cmd == 'O') {
			char reply[12 + 4 + 32];
			uint32_t v[3] = {
			        htonl(6), htonl(0x100),
			        htonl(NOCONNECT | NOHELO | NOBODY | NOHDRS | NOEOH | NOUNKNOWN | NODATA)};
			memcpy(reply, v, 12);
			uint32_t stage = htonl(2);
			memcpy(reply + 12, &stage, 4);
			static const char list[] = "i {auth_authen} {client_addr}";
			memcpy(reply + 16, list, sizeof(list));
			if (put(fd, 'O', reply, 16 + sizeof(list)) != 0)
				return -1;
		} else if (cmd == 'M') {
			if (put(fd, 'a', "", 0) != 0)
				return -1;
		} else if (cmd == 'R') {
			if (put(fd, 'c', "", 0) != 0)
				return -1;
		} else if (cmd == 'Q') {
			rc = -1;
		}
		off += 4 + len;
	}
	memmove(buf, buf + off, *have - off);
	*have -= off;
	return rc;
}

/* session - thread mode: one thread per connection, blocking reads */
static void *session(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[65536];
	size_t have = 0;
	for (;;) {
		ssize_t r = read(fd, buf + have, sizeof(buf) - have);
		if (r <= 0)
			break;
		have += (size_t)r;
		if (handle(fd, buf, &have, sizeof(buf)) != 0)
			break;
	}
	close(fd);
	return NULL;
}

struct conn {
	int fd;
	size_t have;
	char buf[8192];
};

/* event_loop - epoll mode: one thread, every connection, no thread made
 * per session and none woken but this one */
static int event_loop(int ls)
{
	int ep = epoll_create1(0);
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev) != 0) {
		perror("epoll");
		return 1;
	}
	struct epoll_event events[64];
	for (;;) {
		int n = epoll_wait(ep, events, 64, -1);
		for (int i = 0; i < n; i++) {
			struct conn *c = events[i].data.ptr;
			if (c == NULL) {
				int fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
				if (fd < 0)
					continue;
				c = calloc(1, sizeof(*c));
				c->fd = fd;
				struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
				epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
				continue;
			}
			ssize_t r = read(c->fd, c->buf + c->have, sizeof(c->buf) - c->have);
			if (r == 0 || (r < 0 && errno != EAGAIN) ||
			    (r > 0 &&
			     (c->have += (size_t)r, handle(c->fd, c->buf, &c->have, sizeof(c->buf)) != 0))) {
				close(c->fd); /* leaves the epoll set with its last descriptor */
				free(c);
			}
		}
	}
}

int main(int argc, char **argv)
{
	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: milter_floor SOCKET_PATH [threads|epoll]\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", argv[1]);
	unlink(argv[1]);
	int ls = socket(AF_UNIX, SOCK_STREAM, 0);
	if (ls < 0 || bind(ls, (struct sockaddr *)&sun, sizeof(sun)) != 0 || listen(ls, 128) != 0) {
		perror("listen");
		return 1;
	}
	if (argc == 3 && strcmp(argv[2], "epoll") == 0)
		return event_loop(ls);
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	for (;;) {
		int fd = accept(ls, NULL, NULL);
		if (fd < 0) {
			if (errno == EINTR)
				continue;
			perror("accept");
			return 1;
		}
		pthread_t t;
		if (pthread_create(&t, &attr, session, (void *)(intptr_t)fd) != 0)
			close(fd);
	}
}
