/*
 * shared.c - the Redis client of the shared cache tier (see shared.h).
 *
 * Owns struct shared: the hiredis async context (NULL while down), every
 * request in flight (a list, each with its own timeout timer), the queue of
 * writes other threads handed over (under queue_lock; the only state
 * touched off the engine thread), the reconnection timer, the password
 * and the counters.
 *
 * A request lives until hiredis calls back for the last command it sent:
 * with a reply, or with NULL when the connection is freed. Its caller's
 * callback runs at most once, the first of: the reply, its timer, the
 * connection dropped, shared_cancel (then never). A timer that fires drops
 * the whole connection: Redis that does not answer one command in time is
 * not trusted with the next, and the replies still due would arrive out of
 * anyone's wait.
 *
 * The breaker channel (shared.h): a second context, sub, in SUBSCRIBE mode,
 * opened once the main connection is up and dropped with it (either one's
 * loss drops both: one state, one reconnection). Its callbacks get s as
 * privdata and check that their context is still s->sub (hiredis calls
 * the subscription's callback once more, with NULL, when it is freed).
 * Breaker records to publish go through the write queue, in order with the
 * cache's writes; each is a SET and a PUBLISH on the main connection.
 *
 * The fleet's budgets (fleetrate.h): the table, under budgets_lock (takes
 * come from the engine thread, host_session_rate and domain_probe_rate,
 * and from milter threads, client_probe_rate); a take wakes pump, which on
 * the engine thread sends one SHARED_LUA_RATE report per key with spending
 * owed (one in flight per key); its reply (rate_done) gives the table the
 * fleet's total. Nothing is sent while down; what was owed goes once the
 * connection is set up again.
 */
#include "shared.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "clock.h"
#include "fleetrate.h"
#include "log.h"
#include "redisurl.h"
#include "sharedrule.h"

#define RECONNECT_FIRST_MS 1000
#define RECONNECT_MAX_MS   30000
#define SHA_MAX            41
/* The SCAN for breaker records walks the whole db: COUNT is keys examined
 * per step and MATCH filters after, so the steps grow with every key there
 * (the cache's records: millions in a fleet), not with the few breaker
 * records. The cap only stops a cursor that never comes back to 0: 10^8
 * keys. (It was 1000 steps of 500: past 500000 keys, records went unread.) */
#define SCAN_COUNT      "1000"
#define SCAN_ROUNDS_MAX 100000

enum script { SCRIPT_PUT, SCRIPT_FETCH, SCRIPT_RELEASE, SCRIPT_RATE, SCRIPT_COUNT };

static const char *const script_text[SCRIPT_COUNT] = {SHARED_LUA_PUT, SHARED_LUA_FETCH, SHARED_LUA_RELEASE,
                                                      SHARED_LUA_RATE};

enum req_kind {
	REQ_SETUP,
	REQ_LOAD,
	REQ_PUT,
	REQ_DEL,
	REQ_FETCH,
	REQ_LEASE,
	REQ_RELEASE,
	REQ_HOSTSET,  /* SET of a breaker record (queued) */
	REQ_PUBLISH,  /* ... and its PUBLISH */
	REQ_SCAN,     /* one SCAN step over the breaker records */
	REQ_HOSTSGET, /* MGET of the breaker records a SCAN step found */
	REQ_RATE,     /* a fleet budget's report (fleetrate.h) */
};

struct request {
	struct shared *s;
	struct request *prev, *next; /* s->requests */
	enum req_kind kind;
	struct event *timer;
	bool finished;       /* the caller's callback ran (or was cancelled) */
	shared_done_fn done; /* NULL: none (writes) or cancelled */
	void *arg;
	int script; /* REQ_LOAD: which one; scripts: which one, for a NOSCRIPT retry */
	bool retried;
	/* the command, kept for a retry with EVAL */
	int argc;
	char **argv;
	size_t *argvlen;
	int64_t now_ms; /* REQ_FETCH: the time records are judged at */
	size_t nkeys;
	char keys[SHARED_FETCH_MAX][CACHE_KEY_MAX];
	struct fleetrate_report rate; /* REQ_RATE: what it reports */
};

/* A write handed over by another thread (or this one): sent in order. */
struct queued {
	struct queued *next;
	enum req_kind kind;      /* REQ_PUT, REQ_DEL, REQ_RELEASE, REQ_HOSTSET */
	char key[CACHE_KEY_MAX]; /* REQ_HOSTSET: the address */
	struct cache_record rec;
	int64_t now_ms; /* REQ_HOSTSET: the wall-clock end of the record's window */
	char *blob;     /* REQ_HOSTSET: the encoded breaker record (owned) */
};

struct shared {
	struct event_base *base;
	const struct conf *conf;
	struct cache *local;
	struct redis_url url;
	char url_text[REDIS_URL_HOST_MAX + REDIS_URL_USER_MAX + 32];
	char addr[REDIS_URL_HOST_MAX]; /* url.host resolved at start and reload (resolve_into) */
	char password[REDIS_PASSWORD_MAX];
	char id[SHARED_ID_MAX];
	redisAsyncContext *ac; /* NULL: down (or connecting not begun) */
	bool up;               /* the setup succeeded on ac */
	bool logged_down;      /* the last state logged was "down" */
	bool logged_any;       /* a state was logged */
	int setup_left;        /* setup replies still due on ac */
	char sha[SCRIPT_COUNT][SHA_MAX];
	struct event *reconnect;
	int64_t reconnect_ms; /* the last backoff; 0: none yet */
	struct event *flush;
	struct request *requests;
	pthread_mutex_t queue_lock;
	struct queued *queue_head, *queue_tail;
	size_t queue_len;
	bool queue_up;          /* up, as other threads may read it (under queue_lock) */
	uint64_t queue_dropped; /* writes enqueue() dropped (under queue_lock) */
	struct shared_stats st;
	/* the breaker channel */
	redisAsyncContext *sub; /* NULL: not open */
	bool subscribed;        /* the SUBSCRIBE was confirmed on sub */
	struct event *sub_timer;
	char channel[64]; /* SHARED_HOST_CHANNEL + db */
	int scan_rounds;  /* SCAN steps sent on this connection */
	shared_host_fn host_fn;
	void *host_arg;
	/* the fleet's budgets (fleetrate.h): what we know and owe; reports go
	 * out from pump, one loop turn after the spending */
	struct fleetrate *budgets; /* under budgets_lock: takes come from milter threads too */
	pthread_mutex_t budgets_lock;
	uint64_t rate_refused, rate_refused_fleet; /* under budgets_lock */
	struct event *pump;
};

static void drop(struct shared *s, const char *why);
static void on_reply(redisAsyncContext *ac, void *reply, void *privdata);
static void sub_open(struct shared *s);
static void sub_close(struct shared *s);
static void scan_step(struct shared *s, const char *cursor);
static void scan_reply(struct shared *s, const redisReply *rep);
static void hosts_reply(struct shared *s, const struct request *r, const redisReply *rep);

/* ---- requests ---- */

/* finish - the caller's callback, once */
static void finish(struct request *r, int result)
{
	if (r->finished)
		return;
	r->finished = true;
	if (result == SHARED_FAILED && r->kind != REQ_SETUP && r->kind != REQ_LOAD)
		r->s->st.failures++;
	if (r->done != NULL)
		r->done(r->arg, result);
}

static void request_free(struct request *r)
{
	struct shared *s = r->s;
	if (r->prev != NULL)
		r->prev->next = r->next;
	else if (s->requests == r)
		s->requests = r->next;
	if (r->next != NULL)
		r->next->prev = r->prev;
	if (r->timer != NULL)
		event_free(r->timer);
	for (int i = 0; i < r->argc; i++)
		free(r->argv[i]);
	free(r->argv);
	free(r->argvlen);
	free(r);
}

/* on_timeout - a command was not answered within cache_redis_timeout */
static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct request *r = arg;
	struct shared *s = r->s;
	char why[96];
	snprintf(why, sizeof(why), "no answer within %lld ms", (long long)s->conf->cache_redis_timeout_ms);
	finish(r, SHARED_FAILED);
	drop(s, why); /* hiredis calls back for r (NULL reply): freed there */
}

/* request_new - a request with its argv copied (binary-safe); NULL: no memory */
static struct request *request_new(struct shared *s, enum req_kind kind, int argc, const char *const *argv,
                                   const size_t *argvlen)
{
	struct request *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return NULL;
	r->s = s;
	r->kind = kind;
	r->argc = 0;
	r->argv = calloc((size_t)argc, sizeof(*r->argv));
	r->argvlen = calloc((size_t)argc, sizeof(*r->argvlen));
	r->timer = evtimer_new(s->base, on_timeout, r);
	r->next = s->requests;
	if (s->requests != NULL)
		s->requests->prev = r;
	s->requests = r;
	if (r->argv == NULL || r->argvlen == NULL || r->timer == NULL) {
		request_free(r);
		return NULL;
	}
	for (int i = 0; i < argc; i++) {
		r->argv[i] = malloc(argvlen[i] + 1);
		if (r->argv[i] == NULL) {
			request_free(r);
			return NULL;
		}
		memcpy(r->argv[i], argv[i], argvlen[i]);
		r->argv[i][argvlen[i]] = '\0';
		r->argvlen[i] = argvlen[i];
		r->argc++;
	}
	return r;
}

/* request_send - send r's command (from argv[from]) on the connection,
 * its timer started; false (r freed) when it cannot be sent */
static bool request_send(struct shared *s, struct request *r, int from)
{
	int64_t ms = s->conf->cache_redis_timeout_ms;
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
	if (s->ac == NULL ||
	    redisAsyncCommandArgv(s->ac, on_reply, r, r->argc - from, (const char **)r->argv + from,
	                          r->argvlen + from) != REDIS_OK) {
		request_free(r);
		return false;
	}
	evtimer_add(r->timer, &tv);
	return true;
}

/* send_cmd - a request for argv, sent; NULL when it cannot be */
static struct request *send_cmd(struct shared *s, enum req_kind kind, int argc, const char *const *argv,
                                const size_t *argvlen)
{
	if (s->ac == NULL)
		return NULL;
	struct request *r = request_new(s, kind, argc, argv, argvlen);
	if (r == NULL || !request_send(s, r, 0))
		return NULL;
	return r;
}

/* send_script - EVALSHA of script with keys and args; argv[0..1] are kept
 * "EVAL" and the script's text for a NOSCRIPT retry, sent from argv[2]:
 * EVALSHA sha numkeys keys... args... */
static struct request *send_script(struct shared *s, enum req_kind kind, enum script which, int nkeys,
                                   const char *const *keys, const size_t *keylens, int nargs,
                                   const char *const *args, const size_t *arglens)
{
	const char *argv[5 + SHARED_FETCH_MAX + 8];
	size_t len[5 + SHARED_FETCH_MAX + 8];
	char numkeys[16];
	if (nkeys > SHARED_FETCH_MAX || nargs > 8 || s->ac == NULL)
		return NULL;
	snprintf(numkeys, sizeof(numkeys), "%d", nkeys);
	int n = 0;
	argv[n] = "EVAL";
	len[n++] = 4;
	argv[n] = script_text[which];
	len[n++] = strlen(script_text[which]);
	argv[n] = "EVALSHA";
	len[n++] = 7;
	argv[n] = s->sha[which];
	len[n++] = strlen(s->sha[which]);
	/* EVALSHA and the sha are sent; a retry sends EVAL, the text and the rest */
	argv[n] = numkeys;
	len[n++] = strlen(numkeys);
	for (int i = 0; i < nkeys; i++) {
		argv[n] = keys[i];
		len[n++] = keylens[i];
	}
	for (int i = 0; i < nargs; i++) {
		argv[n] = args[i];
		len[n++] = arglens[i];
	}
	struct request *r = request_new(s, kind, n, argv, len);
	if (r == NULL)
		return NULL;
	r->script = which;
	if (!request_send(s, r, 2))
		return NULL;
	return r;
}

/* retry_eval - NOSCRIPT (Redis lost its scripts: SCRIPT FLUSH, a failover):
 * send the text with EVAL (which caches it again); true if sent */
static bool retry_eval(struct shared *s, struct request *r)
{
	if (r->retried || s->ac == NULL)
		return false;
	r->retried = true;
	/* argv: EVAL text EVALSHA sha numkeys ...: EVAL text numkeys ... */
	free(r->argv[2]);
	free(r->argv[3]);
	memmove(&r->argv[2], &r->argv[4], (size_t)(r->argc - 4) * sizeof(*r->argv));
	memmove(&r->argvlen[2], &r->argvlen[4], (size_t)(r->argc - 4) * sizeof(*r->argvlen));
	r->argc -= 2;
	event_del(r->timer);
	int64_t ms = s->conf->cache_redis_timeout_ms;
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
	if (redisAsyncCommandArgv(s->ac, on_reply, r, r->argc, (const char **)r->argv, r->argvlen) !=
	    REDIS_OK)
		return false;
	evtimer_add(r->timer, &tv);
	return true;
}

/* ---- state ---- */

/* set_up - the state changes: logged once per change */
static void set_up(struct shared *s, bool up, const char *why)
{
	s->up = up;
	pthread_mutex_lock(&s->queue_lock);
	s->queue_up = up;
	pthread_mutex_unlock(&s->queue_lock);
	if (up) {
		s->st.connects++;
		s->reconnect_ms = 0;
		if (!s->logged_any || s->logged_down)
			log_msg(LOG_NOTICE, "shared cache %s: connected; results are shared again",
			        s->url_text);
		s->logged_any = true;
		s->logged_down = false;
		return;
	}
	if (!s->logged_any || !s->logged_down)
		log_msg(LOG_WARNING,
		        "shared cache %s: unavailable (%s); verifying with the local cache alone, "
		        "reconnecting in the background",
		        s->url_text, why);
	s->logged_any = true;
	s->logged_down = true;
}

static void connect_now(struct shared *s);

static void on_reconnect(evutil_socket_t fd, short what, void *arg)
{
	connect_now(arg);
}

/* schedule_reconnect - after 1 s, doubling to 30 s */
static void schedule_reconnect(struct shared *s)
{
	if (s->reconnect == NULL || evtimer_pending(s->reconnect, NULL))
		return;
	s->reconnect_ms = shared_backoff_ms(s->reconnect_ms, RECONNECT_FIRST_MS, RECONNECT_MAX_MS);
	struct timeval tv = {.tv_sec = s->reconnect_ms / 1000, .tv_usec = (s->reconnect_ms % 1000) * 1000};
	evtimer_add(s->reconnect, &tv);
}

/* drop - give the connection up: every pending request fails (hiredis
 * calls back with NULL, maybe later when inside a callback), Redis is down */
static void drop(struct shared *s, const char *why)
{
	redisAsyncContext *ac = s->ac;
	s->ac = NULL;
	sub_close(s);
	if (s->up || !s->logged_down)
		set_up(s, false, why);
	s->up = false;
	/* Fail the callers now: hiredis may defer the free (inside a callback). */
	for (struct request *r = s->requests; r != NULL; r = r->next)
		finish(r, SHARED_FAILED);
	if (ac != NULL) {
		ac->data = NULL;
		redisAsyncFree(ac);
	}
	schedule_reconnect(s);
}

/* on_connect - hiredis: the TCP connection is made, or failed (then hiredis
 * frees the context itself) */
static void on_connect(const redisAsyncContext *ac, int status)
{
	struct shared *s = ac->data;
	if (s == NULL || status == REDIS_OK)
		return; /* the setup's replies decide */
	char why[160];
	snprintf(why, sizeof(why), "cannot connect: %s", ac->errstr[0] ? ac->errstr : "error");
	if (s->ac == ac) {
		s->ac = NULL; /* hiredis frees it */
		sub_close(s);
		for (struct request *r = s->requests; r != NULL; r = r->next)
			finish(r, SHARED_FAILED);
		if (s->up || !s->logged_down)
			set_up(s, false, why);
		s->up = false;
		schedule_reconnect(s);
	}
}

/* on_disconnect - hiredis: the connection ended (the server closed it, an
 * I/O error, or our own free) */
static void on_disconnect(const redisAsyncContext *ac, int status)
{
	struct shared *s = ac->data;
	if (s == NULL || s->ac != ac)
		return; /* dropped by us: handled */
	s->ac = NULL;
	sub_close(s);
	for (struct request *r = s->requests; r != NULL; r = r->next)
		finish(r, SHARED_FAILED);
	if (s->up || !s->logged_down)
		set_up(s, false, ac->errstr[0] ? ac->errstr : "the server closed the connection");
	s->up = false;
	schedule_reconnect(s);
}

/* setup_done - one setup reply (AUTH, SELECT, SCRIPT LOAD) was right */
static void setup_done(struct shared *s)
{
	if (--s->setup_left == 0) {
		set_up(s, true, NULL);
		if (s->pump != NULL) /* what was spent while down is owed: reported now */
			event_active(s->pump, EV_READ, 0);
		sub_open(s); /* after the state is logged: a failure here is a change of its own */
	}
}

/* resolve_into - host as a numeric address into addr, looked up now
 * (start, and a reload's preparation off the engine thread) so that a
 * reconnection on the engine thread never waits for DNS (hiredis resolves
 * with a blocking getaddrinfo, and a partition that cuts Redis off may cut
 * the resolver off too). A name that does not resolve now is kept as it is
 * and resolved at connect. */
static void resolve_into(const char *url_text, const char *host, char *addr, size_t size)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	struct addrinfo *res = NULL;
	snprintf(addr, size, "%s", host);
	int err = getaddrinfo(host, NULL, &hints, &res);
	if (err != 0 || res == NULL) {
		log_msg(LOG_WARNING, "shared cache %s: cannot resolve %s now (%s): resolving at each connect",
		        url_text, host, gai_strerror(err));
	} else if (getnameinfo(res->ai_addr, res->ai_addrlen, addr, size, NULL, 0, NI_NUMERICHOST) != 0) {
		snprintf(addr, size, "%s", host);
	}
	if (res != NULL)
		freeaddrinfo(res);
}

/* keepalive - TCP keepalive on a new connection (hiredis: probes after
 * 15 s idle, the peer given up after 3 unanswered): the channel waits
 * without a timeout and may be silent for hours, so only this finds it
 * dead (a host gone without a RST) and keeps a firewall's or NAT's state
 * for it; the main connection, idle between mails, keeps its state too.
 * A failure costs only that. */
static void keepalive(redisAsyncContext *ac)
{
	if (redisEnableKeepAlive(&ac->c) != REDIS_OK) {
		log_msg(LOG_DEBUG, "shared cache: no TCP keepalive: %s", ac->c.errstr);
		ac->c.err = 0; /* hiredis marked the context failed: it is not */
		ac->c.errstr[0] = '\0';
	}
}

/* connect_now - a new connection and its setup, pipelined */
static void connect_now(struct shared *s)
{
	if (s->ac != NULL)
		return;
	redisAsyncContext *ac = redisAsyncConnect(s->addr, s->url.port);
	if (ac == NULL || ac->err) {
		char why[160];
		snprintf(why, sizeof(why), "cannot connect: %s", ac != NULL ? ac->errstr : "out of memory");
		if (ac != NULL)
			redisAsyncFree(ac);
		if (s->up || !s->logged_down)
			set_up(s, false, why);
		schedule_reconnect(s);
		return;
	}
	ac->data = s;
	keepalive(ac);
	if (redisLibeventAttach(ac, s->base) != REDIS_OK) {
		redisAsyncFree(ac);
		schedule_reconnect(s);
		return;
	}
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	s->ac = ac;
	s->setup_left = 0;
	if (s->password[0] != '\0') {
		const char *argv[3] = {"AUTH", s->url.user, s->password};
		size_t len[3] = {4, strlen(s->url.user), strlen(s->password)};
		int skip = s->url.user[0] == '\0' ? 1 : 0; /* no user: AUTH password */
		if (skip) {
			argv[1] = s->password;
			len[1] = len[2];
		}
		if (send_cmd(s, REQ_SETUP, 3 - skip, argv, len) == NULL) {
			drop(s, "out of memory");
			return;
		}
		s->setup_left++;
	}
	if (s->url.db != 0) {
		char db[8];
		snprintf(db, sizeof(db), "%d", s->url.db);
		const char *argv[2] = {"SELECT", db};
		size_t len[2] = {6, strlen(db)};
		if (send_cmd(s, REQ_SETUP, 2, argv, len) == NULL) {
			drop(s, "out of memory");
			return;
		}
		s->setup_left++;
	}
	for (int i = 0; i < SCRIPT_COUNT; i++) {
		const char *argv[3] = {"SCRIPT", "LOAD", script_text[i]};
		size_t len[3] = {6, 4, strlen(script_text[i])};
		struct request *r = request_new(s, REQ_LOAD, 3, argv, len);
		if (r == NULL) {
			drop(s, "out of memory");
			return;
		}
		r->script = i;
		if (!request_send(s, r, 0)) {
			drop(s, "out of memory");
			return;
		}
		s->setup_left++;
	}
}

/* ---- replies ---- */

/* copy_in - one fetched record into the local tier: not over a local
 * record probed later, and under the local replace rule; true if put */
static bool copy_in(struct shared *s, const char *key, const redisReply *e, int64_t now)
{
	struct cache_record rec, mine;
	if (e == NULL || e->type != REDIS_REPLY_STRING ||
	    !cache_record_decode((const unsigned char *)e->str, e->len, &rec) || now >= rec.expires_at_ms)
		return false;
	if (s->local == NULL)
		return false;
	if (cache_get(s->local, key, now, &mine) != CACHE_MISS && mine.probed_at_ms > rec.probed_at_ms)
		return false;
	return cache_put_local(s->local, key, &rec, now);
}

/* on_reply - hiredis: a reply (NULL: the connection is gone) */
static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct request *r = privdata;
	struct shared *s = r->s;
	redisReply *rep = reply;
	if (rep == NULL) {
		finish(r, SHARED_FAILED);
		request_free(r);
		return;
	}
	event_del(r->timer);
	if (rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0 && r->kind != REQ_LOAD &&
	    retry_eval(s, r))
		return;
	bool error = rep->type == REDIS_REPLY_ERROR;
	switch (r->kind) {
	case REQ_SETUP:
	case REQ_LOAD:
		if (error) {
			char why[300];
			bool auth = strncasecmp(r->argv[0], "AUTH", 4) == 0;
			snprintf(why, sizeof(why), "%s refused: %s", r->argv[0], rep->str);
			if (auth && (!s->logged_any || !s->logged_down))
				log_msg(LOG_ERR,
				        "shared cache %s: AUTH refused (%s): check cache_password_file",
				        s->url_text, rep->str);
			finish(r, SHARED_FAILED);
			request_free(r);
			drop(s, why);
			return;
		}
		if (r->kind == REQ_LOAD && rep->type == REDIS_REPLY_STRING)
			snprintf(s->sha[r->script], SHA_MAX, "%s", rep->str);
		finish(r, 0);
		request_free(r);
		if (s->ac == ac)
			setup_done(s);
		return;
	case REQ_PUT:
		if (rep->type == REDIS_REPLY_INTEGER && rep->integer == 0)
			s->st.writes_kept++;
		finish(r, error ? SHARED_FAILED : 0);
		break;
	case REQ_DEL:
	case REQ_RELEASE:
	case REQ_HOSTSET:
	case REQ_PUBLISH:
		finish(r, error ? SHARED_FAILED : 0);
		break;
	case REQ_RATE: /* the fleet's total, or a failure */
		finish(r, error || rep->type != REDIS_REPLY_INTEGER || rep->integer < 0 ? SHARED_FAILED
		          : rep->integer > INT32_MAX                                    ? INT32_MAX
		                                                                        : (int)rep->integer);
		break;
	case REQ_SCAN:
		finish(r, error ? SHARED_FAILED : 0);
		if (!error)
			scan_reply(s, rep);
		break;
	case REQ_HOSTSGET:
		finish(r, error ? SHARED_FAILED : 0);
		if (!error)
			hosts_reply(s, r, rep);
		break;
	case REQ_FETCH: {
		int found = 0;
		if (!error && rep->type == REDIS_REPLY_ARRAY) {
			for (size_t i = 0; i < rep->elements && i < r->nkeys; i++)
				if (copy_in(s, r->keys[i], rep->element[i], r->now_ms))
					found++;
			s->st.fetched += (uint64_t)found;
		}
		finish(r, error || rep->type != REDIS_REPLY_ARRAY ? SHARED_FAILED : found);
		break;
	}
	case REQ_LEASE:
		if (error) {
			finish(r, SHARED_FAILED);
		} else if (rep->type == REDIS_REPLY_STATUS) {
			s->st.leases_taken++;
			finish(r, SHARED_LEASE_OURS);
		} else {
			s->st.leases_held++;
			finish(r, SHARED_LEASE_HELD);
		}
		break;
	}
	if (error)
		log_msg(LOG_DEBUG, "shared cache: %s", rep->str);
	request_free(r);
}

/* ---- the breaker channel (engine thread) ---- */

/* learn - one breaker record read from Redis (a message or the SCAN):
 * to the hook, unless it is ours, unreadable or over */
static void learn(struct shared *s, const char *address, const char *buf, size_t len)
{
	struct shared_host_rec rec;
	if (s->host_fn == NULL || address[0] == '\0' || !shared_host_decode(buf, len, &rec) ||
	    strcmp(rec.writer, s->id) == 0 || rec.until_ms <= clock_now_ms())
		return;
	s->st.hosts_learned++;
	s->host_fn(s->host_arg, address, &rec);
}

/* scan_step - SCAN from cursor for the breaker records */
static void scan_step(struct shared *s, const char *cursor)
{
	if (s->scan_rounds >= SCAN_ROUNDS_MAX)
		return;
	s->scan_rounds++;
	const char *argv[6] = {"SCAN", cursor, "MATCH", SHARED_HOST_PREFIX "*", "COUNT", SCAN_COUNT};
	size_t len[6];
	for (int i = 0; i < 6; i++)
		len[i] = strlen(argv[i]);
	send_cmd(s, REQ_SCAN, 6, argv, len); /* NULL: down, or no memory: what was missed stays missed */
}

/* scan_reply - a SCAN step's keys: MGET them; then the next step */
static void scan_reply(struct shared *s, const redisReply *rep)
{
	if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
	    rep->element[0]->type != REDIS_REPLY_STRING || rep->element[1]->type != REDIS_REPLY_ARRAY)
		return;
	const redisReply *keys = rep->element[1];
	if (keys->elements > 0) {
		const char **argv = calloc(keys->elements + 1, sizeof(*argv));
		size_t *len = calloc(keys->elements + 1, sizeof(*len));
		int n = 0;
		if (argv != NULL && len != NULL) {
			argv[n] = "MGET";
			len[n++] = 4;
			for (size_t i = 0; i < keys->elements; i++) {
				if (keys->element[i]->type != REDIS_REPLY_STRING)
					continue;
				argv[n] = keys->element[i]->str;
				len[n++] = keys->element[i]->len;
			}
			if (n > 1)
				send_cmd(s, REQ_HOSTSGET, n, argv, len);
		}
		free(argv);
		free(len);
	}
	if (strcmp(rep->element[0]->str, "0") != 0)
		scan_step(s, rep->element[0]->str);
}

/* hosts_reply - the records an MGET of r's keys found */
static void hosts_reply(struct shared *s, const struct request *r, const redisReply *rep)
{
	size_t prefix = strlen(SHARED_HOST_PREFIX);
	if (rep->type != REDIS_REPLY_ARRAY)
		return;
	for (size_t i = 0; i < rep->elements && (int)i + 1 < r->argc; i++) {
		const char *key = r->argv[i + 1];
		const redisReply *e = rep->element[i];
		if (e->type == REDIS_REPLY_STRING && strncmp(key, SHARED_HOST_PREFIX, prefix) == 0)
			learn(s, key + prefix, e->str, e->len);
	}
}

/* sub_live - ac is the channel's context now (not one we let go) */
static struct shared *sub_live(const redisAsyncContext *ac)
{
	struct shared *s = ac->data;
	return s != NULL && s->sub == ac ? s : NULL;
}

/* on_sub_message - the channel: the SUBSCRIBE confirmed (then the SCAN
 * for what was missed), or a record another host published */
static void on_sub_message(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct shared *s = sub_live(ac);
	const redisReply *rep = reply;
	if (s == NULL || rep == NULL) /* NULL: freed; its loss is on_sub_disconnect's */
		return;
	if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 ||
	    rep->element[0]->type != REDIS_REPLY_STRING)
		return;
	const char *what = rep->element[0]->str;
	if (strcmp(what, "subscribe") == 0 && !s->subscribed) {
		s->subscribed = true;
		event_del(s->sub_timer);
		s->scan_rounds = 0;
		scan_step(s, "0");
		return;
	}
	const redisReply *msg = rep->element[2];
	if (strcmp(what, "message") != 0 || msg->type != REDIS_REPLY_STRING)
		return;
	/* "<address> <record>" */
	const char *space = memchr(msg->str, ' ', msg->len);
	char address[64];
	size_t alen = space != NULL ? (size_t)(space - msg->str) : 0;
	if (space == NULL || alen == 0 || alen >= sizeof(address))
		return;
	memcpy(address, msg->str, alen);
	address[alen] = '\0';
	learn(s, address, space + 1, msg->len - alen - 1);
}

/* sub_refused - Redis answered the channel with a refusal (AUTH, or a
 * SUBSCRIBE this user may not make: NOPERM; or maxclients): the cache
 * stays up without the channel (dropping it would make the whole tier
 * flap at every reconnection), logged once per connection; what other
 * hosts write is read by the SCAN, now and at each reconnection. free_it:
 * the context is ours to free (not one hiredis is freeing). */
static void sub_refused(struct shared *s, const char *why, bool free_it)
{
	if (free_it) {
		sub_close(s);
	} else {
		s->sub = NULL;
		s->subscribed = false;
		event_del(s->sub_timer);
	}
	log_msg(LOG_WARNING,
	        "shared cache %s: the breaker channel %s was refused (%s): other hosts' breaker records are "
	        "read only when connecting (the user needs the channel: &%s*)",
	        s->url_text, s->channel, why, SHARED_HOST_CHANNEL);
	s->scan_rounds = 0;
	scan_step(s, "0");
}

/* on_sub_auth - the channel's AUTH */
static void on_sub_auth(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct shared *s = sub_live(ac);
	const redisReply *rep = reply;
	if (s != NULL && rep != NULL && rep->type == REDIS_REPLY_ERROR) {
		char why[300];
		snprintf(why, sizeof(why), "AUTH: %s", rep->str);
		sub_refused(s, why, true);
	}
}

static void on_sub_connect(const redisAsyncContext *ac, int status)
{
	struct shared *s = sub_live(ac);
	if (s == NULL || status == REDIS_OK)
		return;
	s->sub = NULL; /* hiredis frees it */
	s->subscribed = false;
	drop(s, "breaker channel: cannot connect");
}

static void on_sub_disconnect(const redisAsyncContext *ac, int status)
{
	struct shared *s = sub_live(ac);
	if (s == NULL)
		return;
	if (ac->err == REDIS_ERR_OTHER && ac->errstr[0] != '\0') {
		/* hiredis drops a subscribed context on an error reply (to the
		 * SUBSCRIBE): a refusal, not a lost server */
		sub_refused(s, ac->errstr, false);
		return;
	}
	s->sub = NULL;
	s->subscribed = false;
	drop(s, "breaker channel: the server closed the connection");
}

/* on_sub_timeout - no SUBSCRIBE confirmation in time */
static void on_sub_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct shared *s = arg;
	char why[96];
	snprintf(why, sizeof(why), "breaker channel: no answer within %lld ms",
	         (long long)s->conf->cache_redis_timeout_ms);
	drop(s, why);
}

/* sub_open - the channel's connection: AUTH and SUBSCRIBE, pipelined */
static void sub_open(struct shared *s)
{
	if (s->sub != NULL || s->sub_timer == NULL)
		return;
	redisAsyncContext *ac = redisAsyncConnect(s->addr, s->url.port);
	if (ac == NULL || ac->err) {
		if (ac != NULL)
			redisAsyncFree(ac);
		drop(s, "breaker channel: cannot connect");
		return;
	}
	ac->data = s;
	keepalive(ac);
	if (redisLibeventAttach(ac, s->base) != REDIS_OK) {
		ac->data = NULL;
		redisAsyncFree(ac);
		drop(s, "breaker channel: out of memory");
		return;
	}
	redisAsyncSetConnectCallback(ac, on_sub_connect);
	redisAsyncSetDisconnectCallback(ac, on_sub_disconnect);
	s->sub = ac;
	s->subscribed = false;
	bool sent = true;
	if (s->password[0] != '\0') {
		const char *argv[3] = {"AUTH", s->url.user, s->password};
		size_t len[3] = {4, strlen(s->url.user), strlen(s->password)};
		int skip = s->url.user[0] == '\0' ? 1 : 0;
		if (skip) {
			argv[1] = s->password;
			len[1] = len[2];
		}
		sent = redisAsyncCommandArgv(ac, on_sub_auth, s, 3 - skip, argv, len) == REDIS_OK;
	}
	const char *argv[2] = {"SUBSCRIBE", s->channel};
	size_t len[2] = {9, strlen(s->channel)};
	if (!sent || redisAsyncCommandArgv(ac, on_sub_message, s, 2, argv, len) != REDIS_OK) {
		drop(s, "breaker channel: cannot subscribe");
		return;
	}
	int64_t ms = s->conf->cache_redis_timeout_ms;
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
	evtimer_add(s->sub_timer, &tv);
}

/* sub_close - let the channel go (with the main connection) */
static void sub_close(struct shared *s)
{
	redisAsyncContext *ac = s->sub;
	s->sub = NULL;
	s->subscribed = false;
	if (s->sub_timer != NULL)
		event_del(s->sub_timer);
	if (ac != NULL) {
		ac->data = NULL;
		redisAsyncFree(ac);
	}
}

/* shared_set_host_hook - see shared.h */
void shared_set_host_hook(struct shared *s, shared_host_fn fn, void *arg)
{
	if (s == NULL)
		return;
	s->host_fn = fn;
	s->host_arg = arg;
}

/* send_host - a queued breaker record: SET with what is left of its
 * window, then PUBLISH "<address> <record>" */
static bool send_host(struct shared *s, const struct queued *q)
{
	char key[SHARED_KEY_MAX], px[24];
	int64_t left = q->now_ms - clock_now_ms();
	shared_host_key(q->key, key, sizeof(key));
	if (key[0] == '\0' || q->blob == NULL || left <= 0)
		return true; /* over already: nothing to say */
	snprintf(px, sizeof(px), "%lld", (long long)left);
	size_t blen = strlen(q->blob);
	const char *set[5] = {"SET", key, q->blob, "PX", px};
	size_t setlen[5] = {3, strlen(key), blen, 2, strlen(px)};
	if (send_cmd(s, REQ_HOSTSET, 5, set, setlen) == NULL)
		return false;
	char msg[sizeof(q->key) + SHARED_HOST_REC_MAX + 2];
	int n = snprintf(msg, sizeof(msg), "%s %s", q->key, q->blob);
	if (n < 0 || (size_t)n >= sizeof(msg))
		return true;
	const char *pub[3] = {"PUBLISH", s->channel, msg};
	size_t publen[3] = {7, strlen(s->channel), (size_t)n};
	send_cmd(s, REQ_PUBLISH, 3, pub, publen); /* lost: the others find the SET at their next SCAN */
	s->st.hosts_sent++;
	return true;
}

/* ---- writes (any thread hands them over; the engine thread sends) ---- */

/* send_write - one queued write on the connection (engine thread) */
static void send_write(struct shared *s, const struct queued *q)
{
	char key[SHARED_KEY_MAX];
	struct request *r = NULL;
	if (q->kind == REQ_HOSTSET) {
		if (send_host(s, q))
			s->st.writes++;
		else
			s->st.writes_dropped++;
		return;
	}
	if (q->kind == REQ_RELEASE)
		shared_lease_key(q->key, key, sizeof(key));
	else
		shared_key(q->key, key, sizeof(key));
	if (key[0] == '\0')
		return;
	const char *keys[1] = {key};
	size_t keylens[1] = {strlen(key)};
	if (q->kind == REQ_PUT) {
		unsigned char buf[CACHE_RECORD_MAX];
		size_t n = cache_record_encode(&q->rec, buf, sizeof(buf));
		char now[24], exp[24];
		snprintf(now, sizeof(now), "%lld", (long long)q->now_ms);
		snprintf(exp, sizeof(exp), "%lld", (long long)shared_redis_expiry(q->rec.expires_at_ms));
		const char *args[4] = {(const char *)buf, now, exp, s->id};
		size_t arglens[4] = {n, strlen(now), strlen(exp), strlen(s->id)};
		if (n > 0)
			r = send_script(s, REQ_PUT, SCRIPT_PUT, 1, keys, keylens, 4, args, arglens);
	} else if (q->kind == REQ_DEL) {
		const char *argv[2] = {"DEL", key};
		size_t len[2] = {3, strlen(key)};
		r = send_cmd(s, REQ_DEL, 2, argv, len);
	} else {
		const char *args[1] = {s->id};
		size_t arglens[1] = {strlen(s->id)};
		r = send_script(s, REQ_RELEASE, SCRIPT_RELEASE, 1, keys, keylens, 1, args, arglens);
	}
	if (r != NULL)
		s->st.writes++;
	else
		s->st.writes_dropped++;
}

/* on_flush - engine thread: send what was queued, in order */
static void on_flush(evutil_socket_t fd, short what, void *arg)
{
	struct shared *s = arg;
	pthread_mutex_lock(&s->queue_lock);
	struct queued *q = s->queue_head;
	s->queue_head = s->queue_tail = NULL;
	s->queue_len = 0;
	pthread_mutex_unlock(&s->queue_lock);
	while (q != NULL) {
		struct queued *next = q->next;
		if (s->up)
			send_write(s, q);
		else
			s->st.writes_dropped++;
		free(q->blob);
		free(q);
		q = next;
	}
}

/* enqueue - hand a write to the engine thread; dropped while down or
 * full. blob (REQ_HOSTSET: a breaker record) is copied. */
static void enqueue(struct shared *s, enum req_kind kind, const char *key, const struct cache_record *rec,
                    int64_t now_ms, const char *blob)
{
	struct queued *q = calloc(1, sizeof(*q));
	if (q != NULL && blob != NULL && (q->blob = strdup(blob)) == NULL) {
		free(q);
		q = NULL;
	}
	if (q == NULL) {
		pthread_mutex_lock(&s->queue_lock);
		s->queue_dropped++;
		pthread_mutex_unlock(&s->queue_lock);
		return;
	}
	q->kind = kind;
	snprintf(q->key, sizeof(q->key), "%s", key);
	if (rec != NULL)
		q->rec = *rec;
	q->now_ms = now_ms;
	bool wake = false;
	pthread_mutex_lock(&s->queue_lock);
	if (!s->queue_up || s->queue_len >= SHARED_QUEUE_MAX) {
		s->queue_dropped++; /* this thread's count: st is the engine thread's */
		pthread_mutex_unlock(&s->queue_lock);
		free(q->blob);
		free(q);
		return;
	}
	if (s->queue_tail != NULL)
		s->queue_tail->next = q;
	else
		s->queue_head = q;
	s->queue_tail = q;
	wake = s->queue_len++ == 0;
	pthread_mutex_unlock(&s->queue_lock);
	if (wake)
		event_active(s->flush, EV_READ, 0);
}

/* shared_mirror_put - see shared.h */
void shared_mirror_put(void *arg, const char *key, const struct cache_record *rec, int64_t now_ms)
{
	enqueue(arg, REQ_PUT, key, rec, now_ms, NULL);
}

/* shared_mirror_del - see shared.h */
void shared_mirror_del(void *arg, const char *key)
{
	enqueue(arg, REQ_DEL, key, NULL, 0, NULL);
}

/* shared_release - see shared.h */
void shared_release(struct shared *s, const char *key)
{
	enqueue(s, REQ_RELEASE, key, NULL, 0, NULL);
}

/* shared_host_publish - see shared.h */
void shared_host_publish(struct shared *s, const char *address, const struct shared_host_rec *rec)
{
	if (s == NULL || address == NULL || address[0] == '\0')
		return;
	struct shared_host_rec mine = *rec;
	char buf[SHARED_HOST_REC_MAX];
	snprintf(mine.writer, sizeof(mine.writer), "%s", s->id);
	if (shared_host_encode(&mine, buf, sizeof(buf)) == 0)
		return;
	enqueue(s, REQ_HOSTSET, address, NULL, rec->until_ms, buf);
}

/* ---- lookups and leases (engine thread) ---- */

/* shared_fetch - see shared.h */
void *shared_fetch(struct shared *s, const char *const *keys, size_t n, int64_t now_ms, shared_done_fn done,
                   void *arg)
{
	if (s == NULL || !s->up || n == 0 || n > SHARED_FETCH_MAX)
		return NULL;
	char full[SHARED_FETCH_MAX][SHARED_KEY_MAX];
	const char *kv[SHARED_FETCH_MAX];
	size_t kl[SHARED_FETCH_MAX];
	size_t used = 0;
	char kept[SHARED_FETCH_MAX][CACHE_KEY_MAX];
	for (size_t i = 0; i < n; i++) {
		shared_key(keys[i], full[used], sizeof(full[used]));
		if (full[used][0] == '\0')
			continue;
		snprintf(kept[used], sizeof(kept[used]), "%s", keys[i]);
		kv[used] = full[used];
		kl[used] = strlen(full[used]);
		used++;
	}
	if (used == 0)
		return NULL;
	struct request *r = send_script(s, REQ_FETCH, SCRIPT_FETCH, (int)used, kv, kl, 0, NULL, NULL);
	if (r == NULL)
		return NULL;
	r->done = done;
	r->arg = arg;
	r->now_ms = now_ms;
	r->nkeys = used;
	memcpy(r->keys, kept, sizeof(kept));
	s->st.fetches++;
	return r;
}

/* shared_lease - see shared.h */
void *shared_lease(struct shared *s, const char *key, int64_t ttl_ms, shared_done_fn done, void *arg)
{
	if (s == NULL || !s->up)
		return NULL;
	char lease[SHARED_KEY_MAX], px[24];
	shared_lease_key(key, lease, sizeof(lease));
	if (lease[0] == '\0')
		return NULL;
	snprintf(px, sizeof(px), "%lld", (long long)(ttl_ms > 0 ? ttl_ms : 1));
	const char *argv[6] = {"SET", lease, s->id, "NX", "PX", px};
	size_t len[6] = {3, strlen(lease), strlen(s->id), 2, 2, strlen(px)};
	struct request *r = send_cmd(s, REQ_LEASE, 6, argv, len);
	if (r == NULL)
		return NULL;
	r->done = done;
	r->arg = arg;
	return r;
}

/* shared_cancel - see shared.h */
void shared_cancel(struct shared *s, void *request)
{
	struct request *r = request;
	if (r == NULL)
		return;
	r->done = NULL;
	r->finished = true;
}

/* ---- the fleet's budgets (fleetrate.h; engine thread) ---- */

static void on_pump(evutil_socket_t fd, short what, void *arg);

/* rate_done - Redis answered a report with the fleet's total (or it
 * failed: owed again, sent once Redis is back); what is owed meanwhile
 * goes next */
static void rate_done(void *arg, int result)
{
	struct request *r = arg;
	struct shared *s = r->s;
	pthread_mutex_lock(&s->budgets_lock);
	fleetrate_reported(s->budgets, &r->rate, result >= 0 ? result : -1);
	pthread_mutex_unlock(&s->budgets_lock);
	if (result >= 0)
		s->st.rate_reports++;
	if (s->up)
		event_active(s->pump, EV_READ, 0);
}

/* on_pump - send every report owed (one in flight per key) */
static void on_pump(evutil_socket_t fd, short what, void *arg)
{
	struct shared *s = arg;
	struct fleetrate_report rep;
	for (;;) {
		if (!s->up)
			return;
		pthread_mutex_lock(&s->budgets_lock);
		bool any = fleetrate_next_report(s->budgets, clock_now_ms(), &rep);
		pthread_mutex_unlock(&s->budgets_lock);
		if (!any)
			return;
		char key[FLEETRATE_KEY_MAX], amount[16], ttl[24];
		fleetrate_key(rep.kind, rep.name, rep.window, key, sizeof(key));
		snprintf(amount, sizeof(amount), "%u", rep.amount);
		snprintf(ttl, sizeof(ttl), "%lld", (long long)FLEETRATE_TTL_MS);
		const char *keys[1] = {key};
		size_t keylens[1] = {strlen(key)};
		const char *args[2] = {amount, ttl};
		size_t arglens[2] = {strlen(amount), strlen(ttl)};
		struct request *r = key[0] != '\0' ? send_script(s, REQ_RATE, SCRIPT_RATE, 1, keys, keylens,
		                                                 2, args, arglens)
		                                   : NULL;
		if (r == NULL) { /* not sent: owed again, with the next connection */
			pthread_mutex_lock(&s->budgets_lock);
			fleetrate_reported(s->budgets, &rep, -1);
			pthread_mutex_unlock(&s->budgets_lock);
			return;
		}
		r->rate = rep;
		r->done = rate_done;
		r->arg = r;
	}
}

/* rate_ask - shared_rate_take (take) or shared_rate_peek: the fleet's
 * budget for name as this host knows it. Only a refused take counts in
 * the stats (a waiting caller peeks again and again), and only an allowed
 * one wakes the pump (sent once this loop turn is over, takes made in it
 * together; on_pump sends nothing while Redis is down). */
static bool rate_ask(struct shared *s, enum fleetrate_kind kind, const char *name, unsigned rate,
                     struct fleetrate_said *said, bool take)
{
	struct fleetrate_said mine;
	if (said == NULL)
		said = &mine;
	if (s == NULL) {
		memset(said, 0, sizeof(*said));
		return true;
	}
	pthread_mutex_lock(&s->budgets_lock);
	int64_t now = clock_now_ms();
	bool ok = take ? fleetrate_take(s->budgets, kind, name, now, rate, said)
	               : fleetrate_peek(s->budgets, kind, name, now, rate, said);
	if (take && !ok) {
		s->rate_refused++;
		if (said->fleet)
			s->rate_refused_fleet++;
	}
	pthread_mutex_unlock(&s->budgets_lock);
	if (take && ok && rate > 0)
		event_active(s->pump, EV_READ, 0);
	return ok;
}

/* shared_rate_take - see shared.h */
bool shared_rate_take(struct shared *s, enum fleetrate_kind kind, const char *name, unsigned rate,
                      struct fleetrate_said *said)
{
	return rate_ask(s, kind, name, rate, said, true);
}

/* shared_rate_peek - see shared.h */
bool shared_rate_peek(struct shared *s, enum fleetrate_kind kind, const char *name, unsigned rate,
                      struct fleetrate_said *said)
{
	return rate_ask(s, kind, name, rate, said, false);
}

/* shared_session_take - see shared.h */
bool shared_session_take(void *arg, const struct sockaddr *sa, unsigned rate, unsigned *count, bool *fleet)
{
	char text[INET6_ADDRSTRLEN] = "";
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, text, sizeof(text));
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, text, sizeof(text));
	struct fleetrate_said said;
	bool ok = shared_rate_take(arg, FLEETRATE_HOST_SESSIONS, text, rate, &said);
	if (count != NULL)
		*count = said.spent;
	if (fleet != NULL)
		*fleet = said.fleet;
	return ok;
}

/* ---- life cycle ---- */

/* host_id - "hostname:pid": what a lease holds */
static void host_id(char *buf, size_t size)
{
	char host[256];
	if (gethostname(host, sizeof(host)) != 0)
		snprintf(host, sizeof(host), "unknown");
	host[sizeof(host) - 1] = '\0';
	snprintf(buf, size, "%s:%ld", host, (long)getpid());
}

/* shared_new - see shared.h */
struct shared *shared_new(struct event_base *base, const struct conf *conf, struct cache *local, char *why,
                          size_t why_size)
{
	struct shared *s = calloc(1, sizeof(*s));
	if (s == NULL) {
		snprintf(why, why_size, "out of memory");
		return NULL;
	}
	s->base = base;
	s->conf = conf;
	s->local = local;
	pthread_mutex_init(&s->queue_lock, NULL);
	pthread_mutex_init(&s->budgets_lock, NULL);
	if (!redis_url_parse(conf->cache, &s->url, why, why_size) ||
	    !redis_password_read(conf->cache_password_file, s->password, sizeof(s->password), why, why_size))
		goto fail;
	redis_url_format(&s->url, s->url_text, sizeof(s->url_text));
	resolve_into(s->url_text, s->url.host, s->addr, sizeof(s->addr));
	host_id(s->id, sizeof(s->id));
	s->reconnect = evtimer_new(base, on_reconnect, s);
	s->flush = event_new(base, -1, 0, on_flush, s);
	s->sub_timer = evtimer_new(base, on_sub_timeout, s);
	s->pump = event_new(base, -1, 0, on_pump, s);
	s->budgets = fleetrate_new(SHARED_BUDGETS_MAX);
	snprintf(s->channel, sizeof(s->channel), "%s%d", SHARED_HOST_CHANNEL, s->url.db);
	if (s->reconnect == NULL || s->flush == NULL || s->sub_timer == NULL || s->pump == NULL ||
	    s->budgets == NULL) {
		snprintf(why, why_size, "out of memory");
		goto fail;
	}
	connect_now(s);
	return s;
fail:
	shared_free(s);
	return NULL;
}

/* shared_prepare - see shared.h */
void shared_prepare(const struct conf *conf, struct shared_prepared *out)
{
	memset(out, 0, sizeof(*out));
	struct redis_url url;
	char text[REDIS_URL_HOST_MAX + REDIS_URL_USER_MAX + 32];
	if (conf->cache == NULL || !redis_url_parse(conf->cache, &url, out->why, sizeof(out->why)))
		return;
	redis_url_format(&url, text, sizeof(text));
	resolve_into(text, url.host, out->addr, sizeof(out->addr));
	out->password_ok = redis_password_read(conf->cache_password_file, out->password,
	                                       sizeof(out->password), out->why, sizeof(out->why));
}

/* shared_set_conf - see shared.h */
void shared_set_conf(struct shared *s, const struct conf *conf, const struct shared_prepared *prepared)
{
	if (s == NULL)
		return;
	s->conf = conf;
	if (prepared->addr[0] != '\0') /* the name may have moved: used from the next connect on */
		snprintf(s->addr, sizeof(s->addr), "%s", prepared->addr);
	if (!prepared->password_ok) {
		log_msg(LOG_ERR, "reload: %s; the shared cache keeps the password it had", prepared->why);
		return;
	}
	if (strcmp(prepared->password, s->password) != 0) {
		memcpy(s->password, prepared->password, sizeof(s->password));
		if (s->ac != NULL)
			drop(s, "the password changed: reconnecting");
		if (s->reconnect != NULL)
			event_del(s->reconnect);
		s->reconnect_ms = 0;
		connect_now(s);
	}
}

/* shared_free - see shared.h */
void shared_free(struct shared *s)
{
	if (s == NULL)
		return;
	for (struct request *r = s->requests; r != NULL; r = r->next) {
		r->done = NULL;
		r->finished = true;
	}
	sub_close(s);
	if (s->ac != NULL) {
		redisAsyncContext *ac = s->ac;
		s->ac = NULL;
		ac->data = NULL;
		redisAsyncFree(ac); /* calls back every pending request: freed there */
	}
	while (s->requests != NULL)
		request_free(s->requests); /* none should be left; a guard */
	while (s->queue_head != NULL) {
		struct queued *q = s->queue_head;
		s->queue_head = q->next;
		free(q->blob);
		free(q);
	}
	if (s->reconnect != NULL)
		event_free(s->reconnect);
	if (s->flush != NULL)
		event_free(s->flush);
	if (s->sub_timer != NULL)
		event_free(s->sub_timer);
	if (s->pump != NULL)
		event_free(s->pump);
	fleetrate_free(s->budgets);
	pthread_mutex_destroy(&s->queue_lock);
	pthread_mutex_destroy(&s->budgets_lock);
	explicit_bzero(s->password, sizeof(s->password));
	free(s);
}

/* shared_is_up - see shared.h */
bool shared_is_up(const struct shared *s)
{
	return s != NULL && s->up;
}

/* shared_get_stats - see shared.h */
void shared_get_stats(const struct shared *s, struct shared_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (s == NULL)
		return;
	*out = s->st;
	out->up = s->up;
	out->subscribed = s->subscribed;
	/* the drops other threads counted; the lock is not the struct's state */
	pthread_mutex_t *lock = (pthread_mutex_t *)&s->queue_lock;
	pthread_mutex_lock(lock);
	out->writes_dropped += s->queue_dropped;
	pthread_mutex_unlock(lock);
	lock = (pthread_mutex_t *)&s->budgets_lock;
	pthread_mutex_lock(lock);
	out->rate_refused = s->rate_refused;
	out->rate_refused_fleet = s->rate_refused_fleet;
	pthread_mutex_unlock(lock);
}

/* shared_check - see shared.h */
int shared_check(const struct conf *conf, char *why, size_t why_size)
{
	struct redis_url url;
	char password[REDIS_PASSWORD_MAX], text[REDIS_URL_HOST_MAX + REDIS_URL_USER_MAX + 32];
	if (!redis_url_parse(conf->cache, &url, why, why_size) ||
	    !redis_password_read(conf->cache_password_file, password, sizeof(password), why, why_size))
		return SHARED_CHECK_REFUSED;
	redis_url_format(&url, text, sizeof(text));
	int64_t ms = conf->cache_redis_timeout_ms < 1000 ? 1000 : conf->cache_redis_timeout_ms;
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
	redisContext *c = redisConnectWithTimeout(url.host, url.port, tv);
	if (c == NULL || c->err) {
		snprintf(why, why_size, "cache %s: cannot connect: %s", text,
		         c != NULL ? c->errstr : "out of memory");
		if (c != NULL)
			redisFree(c);
		explicit_bzero(password, sizeof(password));
		return SHARED_CHECK_UNREACHABLE;
	}
	redisSetTimeout(c, tv);
	bool ok = true, answered = true; /* answered: a refusal, not silence */
	redisReply *rep = NULL;
	if (password[0] != '\0') {
		if (url.user[0] != '\0')
			rep = redisCommand(c, "AUTH %s %s", url.user, password);
		else
			rep = redisCommand(c, "AUTH %s", password);
		if (rep == NULL) {
			/* silence (a timeout, a reset) is no refusal: the daemon lives with it */
			snprintf(why, why_size, "cache %s: no answer to AUTH: %s", text, c->errstr);
			ok = false;
			answered = false;
		} else if (rep->type == REDIS_REPLY_ERROR) {
			snprintf(why, why_size, "cache %s: AUTH refused: %s (check cache_password_file)",
			         text, rep->str);
			ok = false;
		}
		freeReplyObject(rep);
		rep = NULL;
	}
	if (ok && url.db != 0) {
		rep = redisCommand(c, "SELECT %d", url.db);
		if (rep == NULL || rep->type == REDIS_REPLY_ERROR) {
			snprintf(why, why_size, "cache %s: SELECT %d refused: %s", text, url.db,
			         rep != NULL ? rep->str : c->errstr);
			ok = false;
			answered = rep != NULL;
		}
		freeReplyObject(rep);
		rep = NULL;
	}
	if (ok) {
		rep = redisCommand(c, "PING");
		if (rep == NULL || rep->type == REDIS_REPLY_ERROR) {
			snprintf(why, why_size, "cache %s: PING refused: %s", text,
			         rep != NULL ? rep->str : c->errstr);
			ok = false;
			answered = rep != NULL;
		}
		freeReplyObject(rep);
		rep = NULL;
	}
	/* What the daemon sends is all scripts (writes, fetches, releases): a
	 * user or server that refuses them leaves the daemon without the tier. */
	char sha[SHA_MAX] = "";
	for (int i = 0; ok && i < SCRIPT_COUNT; i++) {
		const char *argv[3] = {"SCRIPT", "LOAD", script_text[i]};
		size_t len[3] = {6, 4, strlen(script_text[i])};
		rep = redisCommandArgv(c, 3, argv, len);
		if (rep == NULL || rep->type != REDIS_REPLY_STRING) {
			snprintf(why, why_size,
			         "cache %s: SCRIPT LOAD refused: %s (the user needs SCRIPT and EVALSHA)",
			         text,
			         rep == NULL                      ? c->errstr
			         : rep->type == REDIS_REPLY_ERROR ? rep->str
			                                          : "no sha");
			ok = false;
			answered = rep != NULL;
		} else if (i == SCRIPT_FETCH) {
			snprintf(sha, sizeof(sha), "%s", rep->str);
		}
		freeReplyObject(rep);
		rep = NULL;
	}
	if (ok) { /* the fetch with no keys: an empty answer, nothing touched */
		const char *argv[3] = {"EVALSHA", sha, "0"};
		size_t len[3] = {7, strlen(sha), 1};
		rep = redisCommandArgv(c, 3, argv, len);
		if (rep == NULL || rep->type == REDIS_REPLY_ERROR) {
			snprintf(why, why_size,
			         "cache %s: EVALSHA refused: %s (the user needs SCRIPT and EVALSHA)", text,
			         rep != NULL ? rep->str : c->errstr);
			ok = false;
			answered = rep != NULL;
		}
		freeReplyObject(rep);
	}
	redisFree(c);
	explicit_bzero(password, sizeof(password));
	return ok ? SHARED_CHECK_OK : answered ? SHARED_CHECK_REFUSED : SHARED_CHECK_UNREACHABLE;
}
