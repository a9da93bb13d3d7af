/*
 * pool.c - SMTP sessions shared per MX host address (pool.h).
 *
 * Three kinds of object, all owned here: a line (one MX host address and
 * the session needs of its jobs: our sender, the fallback sender, TLS,
 * SMTPUTF8), its sessions (each an smtp.c probe in session mode, on the
 * pool's linger list), and jobs (one address each: queued in a line, the
 * one asked now in a session, or answered there and waiting for the
 * session's sync proof). smtp.c calls back with the session as its arg;
 * the session knows which job is asked now (cur), which one still owes a
 * late catch-all answer (late_job) and which wait for the sync report
 * (answered). A job cancelled by its owner is only unlinked: the session
 * goes on, and whatever smtp.c says about it is dropped.
 *
 * Every callback into a job's owner runs with the job marked in_callback:
 * a cancel from inside it (the owner's own, or its linger list closing)
 * is carried out when the callback returns, so no code here touches a
 * freed job, and lines are not freed while they are being walked (busy).
 */
#include "pool.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "classify.h"
#include "clock.h"
#include "hosts.h"
#include "linger.h"

#define DOMAIN_MEMOS 16 /* catch-all answers remembered per session (domains) */
/* How long a session in a burst (it asked more than one address, or its
 * line had more than one job while it was open) stays open, idle, when no
 * job waits, for the next one of the burst: the next sender's DNS answer
 * is milliseconds away, a new session is a greeting more for the server.
 * A probe on its own never waits: it ends as it always did. */
#define IDLE_MS 100
/* How long a line outlives its last job and session: a job within this
 * time after the last one is part of the same burst (submitted counts it),
 * so the burst's sessions wait IDLE_MS for the next. Empty lines older
 * than this are swept at each submit: the pool holds no more than the
 * lines active within the last LINE_KEEP_MS. */
#define LINE_KEEP_MS 1000

enum job_state { JOB_QUEUED, JOB_CURRENT, JOB_ANSWERED, JOB_DETACHED };

struct pool_job {
	struct pool *pool;            /* NULL once the pool is gone */
	struct pool_line *line;       /* QUEUED */
	struct pool_session *session; /* CURRENT, ANSWERED */
	enum job_state state;
	struct pool_job *prev, *next; /* the line's queue, or the session's answered list */
	char *rcpt;                   /* these three in one block, owned */
	char *catchall_rcpt;          /* "": not asked */
	char *domain;                 /* the catch-all question's domain; "" if none */
	char *server_name;            /* the MX host name it was reached by: a session it opens uses it */
	bool report_at_rcpt;
	bool retried; /* went back to the line once after a drop */
	unsigned nth; /* the how-manieth address of its session (pool_job_hurry) */
	bool in_callback, cancelled;
	smtp_trace_fn trace;
	void *trace_arg;
	pool_done_fn done;
	pool_late_fn late;
	pool_sync_fn sync;
	void *arg;
	struct linger_list *owner_list;
	bool lingering;
	struct linger_item linger_item;
};

/* Made when a catch-all answer comes (malloc'd to the domain's length):
 * thousands of sessions may be open, most asking about one domain. */
struct domain_memo {
	struct smtp_reply reply;
	char domain[]; /* shorter than DOMAIN_MEMO_NAME_MAX */
};
#define DOMAIN_MEMO_NAME_MAX 256

struct pool_session {
	struct pool_session *prev, *next;
	struct pool_line *line;
	struct smtp_probe *probe;
	struct pool_job *cur;      /* asked now; NULL: none, or cancelled */
	bool cur_patch;            /* cur's domain was answered in this session: no random RCPT */
	struct smtp_reply *patch;  /* ... that answer (made at the first: only shared sessions need it) */
	struct pool_job *late_job; /* reported with the catch-all answer pending */
	struct pool_job *answered; /* waiting for the sync report */
	unsigned jobs;             /* addresses asked in this session */
	bool idle;                 /* waiting for a job (SMTP_NEXT_WAIT); idle_timer bounds it */
	bool idle_over;            /* ... and that wait ran out: QUIT when asked next */
	bool closing;              /* pool_job_hurry: no more addresses, QUIT when asked next */
	int64_t started_ms;        /* max_age_ms counts from here */
	struct event *idle_timer;
	bool reached_rcpt; /* some address got to RCPT */
	/* The first address ended before RCPT: how (made then, as most
	 * sessions never need it); NULL: it did not (or no memory: the jobs
	 * waiting then get sessions of their own, fill) */
	struct smtp_result *early;
	struct domain_memo *memos[DOMAIN_MEMOS]; /* NULL: none yet */
	size_t memo_next;
};

struct pool_line {
	struct pool_line *prev, *next;
	struct pool *pool;
	struct sockaddr_storage addr;
	struct smtp_params params; /* the session's part; strings in strings */
	char *strings;
	struct pool_job *head, *tail; /* waiting jobs, in order */
	size_t queued;
	struct pool_session *sessions;
	unsigned session_count;
	unsigned busy;      /* being walked: not freed even when empty */
	unsigned submitted; /* jobs since the line began: more than one is a burst */
	int64_t last_ms;    /* the last job submitted or session ended (LINE_KEEP_MS) */
};

struct pool {
	struct event_base *base;
	struct pool_limits limits;
	struct pool_line *lines;
	struct linger_list probes; /* the sessions' smtp probes */
	size_t session_count;
};

static bool open_session(struct pool_line *line, struct pool_job *first);

/* job_trace - one line to the job's transcript */
__attribute__((format(printf, 2, 3))) static void job_trace(struct pool_job *j, const char *fmt, ...)
{
	char line[600];
	va_list ap;
	if (j->trace == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	j->trace(j->trace_arg, line);
}

/* addr_text - "192.0.2.1:25" or "[2001:db8::1]:25", for transcripts */
static void addr_text(const struct sockaddr_storage *ss, char *buf, size_t size)
{
	char ip[64] = "?";
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
		snprintf(buf, size, "[%s]:%u", ip, ntohs(a->sin6_port));
	} else {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
		snprintf(buf, size, "%s:%u", ip, ntohs(a->sin_port));
	}
}

/* ---- lines */

/* same_addr - one host address and port */
static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr *b)
{
	if (a->ss_family != b->sa_family)
		return false;
	if (b->sa_family == AF_INET) {
		const struct sockaddr_in *x = (const struct sockaddr_in *)a,
		                         *y = (const struct sockaddr_in *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a, *y = (const struct sockaddr_in6 *)b;
	return x->sin6_port == y->sin6_port &&
	       memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
}

/* same_text - two optional strings ("" and NULL alike) */
static bool same_text(const char *a, const char *b)
{
	return strcmp(a != NULL ? a : "", b != NULL ? b : "") == 0;
}

/* line_find - the line for (addr, the session needs of params), or NULL */
static struct pool_line *line_find(struct pool *pool, const struct sockaddr *addr,
                                   const struct smtp_params *pp)
{
	for (struct pool_line *l = pool->lines; l != NULL; l = l->next) {
		if (same_addr(&l->addr, addr) && same_text(l->params.mail_from, pp->mail_from) &&
		    same_text(l->params.fallback_from, pp->fallback_from) &&
		    l->params.try_tls == pp->try_tls && l->params.needs_smtputf8 == pp->needs_smtputf8 &&
		    l->params.pipelining == pp->pipelining && same_text(l->params.helo_name, pp->helo_name) &&
		    memcmp(&l->params.bind_addr, &pp->bind_addr, sizeof(pp->bind_addr)) == 0)
			return l;
	}
	return NULL;
}

/* line_new - a line for addr with the session part of pp (strings copied) */
static struct pool_line *line_new(struct pool *pool, const struct sockaddr *addr,
                                  const struct smtp_params *pp)
{
	socklen_t len =
	        addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	const char *src[4] = {pp->helo_name, pp->mail_from, pp->fallback_from, pp->server_name};
	size_t total = 0;
	if (addr->sa_family != AF_INET && addr->sa_family != AF_INET6)
		return NULL;
	struct pool_line *l = calloc(1, sizeof(*l));
	if (l == NULL)
		return NULL;
	for (int i = 0; i < 4; i++)
		total += (src[i] != NULL ? strlen(src[i]) : 0) + 1;
	l->strings = malloc(total);
	if (l->strings == NULL) {
		free(l);
		return NULL;
	}
	char *at = l->strings;
	const char *dst[4];
	for (int i = 0; i < 4; i++) {
		size_t n = src[i] != NULL ? strlen(src[i]) : 0;
		memcpy(at, src[i] != NULL ? src[i] : "", n);
		at[n] = '\0';
		dst[i] = at;
		at += n + 1;
	}
	l->pool = pool;
	memcpy(&l->addr, addr, len);
	l->params = *pp;
	l->params.helo_name = dst[0];
	l->params.mail_from = dst[1];
	l->params.fallback_from = pp->fallback_from != NULL ? dst[2] : NULL;
	l->params.server_name = dst[3];
	l->params.rcpt = l->params.catchall_rcpt = NULL; /* per job */
	l->params.linger = &pool->probes;
	l->next = pool->lines;
	if (pool->lines != NULL)
		pool->lines->prev = l;
	pool->lines = l;
	return l;
}

/* line_maybe_free - a line with neither jobs nor sessions, and no job for
 * LINE_KEEP_MS, goes (lines_sweep finds it later if it must stay now) */
static void line_maybe_free(struct pool_line *l)
{
	if (l->busy > 0 || l->queued > 0 || l->session_count > 0 ||
	    clock_mono_ms() - l->last_ms < LINE_KEEP_MS)
		return;
	if (l->prev != NULL)
		l->prev->next = l->next;
	else
		l->pool->lines = l->next;
	if (l->next != NULL)
		l->next->prev = l->prev;
	free(l->strings);
	free(l);
}

/* lines_sweep - free the lines that stayed empty past LINE_KEEP_MS */
static void lines_sweep(struct pool *pool)
{
	struct pool_line *l = pool->lines;
	while (l != NULL) {
		struct pool_line *next = l->next;
		line_maybe_free(l);
		l = next;
	}
}

/* queue_push - job waits at the tail (or, put back after a drop, the head) */
static void queue_push(struct pool_line *l, struct pool_job *j, bool front)
{
	j->state = JOB_QUEUED;
	j->line = l;
	j->session = NULL;
	j->prev = j->next = NULL;
	if (front) {
		j->next = l->head;
		if (l->head != NULL)
			l->head->prev = j;
		else
			l->tail = j;
		l->head = j;
	} else {
		j->prev = l->tail;
		if (l->tail != NULL)
			l->tail->next = j;
		else
			l->head = j;
		l->tail = j;
	}
	l->queued++;
}

/* queue_pop - the job waiting longest, or NULL */
static struct pool_job *queue_pop(struct pool_line *l)
{
	struct pool_job *j = l->head;
	if (j == NULL)
		return NULL;
	l->head = j->next;
	if (l->head != NULL)
		l->head->prev = NULL;
	else
		l->tail = NULL;
	l->queued--;
	j->prev = j->next = NULL;
	j->line = NULL;
	return j;
}

/* ---- jobs */

/* detach - take j out of wherever it is in the pool */
static void detach(struct pool_job *j)
{
	struct pool_session *s = j->session;
	switch (j->state) {
	case JOB_QUEUED: {
		struct pool_line *l = j->line;
		if (j->prev != NULL)
			j->prev->next = j->next;
		else
			l->head = j->next;
		if (j->next != NULL)
			j->next->prev = j->prev;
		else
			l->tail = j->prev;
		l->queued--;
		j->line = NULL;
		line_maybe_free(l);
		break;
	}
	case JOB_CURRENT:
		if (s->cur == j)
			s->cur = NULL; /* the session goes on; its answer about j is dropped */
		break;
	case JOB_ANSWERED:
		if (j->prev != NULL)
			j->prev->next = j->next;
		else
			s->answered = j->next;
		if (j->next != NULL)
			j->next->prev = j->prev;
		if (s->late_job == j)
			s->late_job = NULL;
		break;
	case JOB_DETACHED:
		break;
	}
	j->prev = j->next = NULL;
	j->session = NULL;
	j->state = JOB_DETACHED;
}

/* job_free - off its owner's list (which may end the owner), and gone */
static void job_free(struct pool_job *j)
{
	detach(j);
	if (j->lingering) {
		j->lingering = false;
		linger_remove(j->owner_list, &j->linger_item);
	}
	free(j->rcpt);
	free(j);
}

/* job_linger_close - the owner's list closes j: as pool_job_cancel */
static void job_linger_close(struct linger_item *item)
{
	struct pool_job *j = (struct pool_job *)((char *)item - offsetof(struct pool_job, linger_item));
	j->lingering = false; /* linger_close_all took it off already */
	pool_job_cancel(j);
}

enum job_call { CALL_DONE, CALL_LATE, CALL_SYNC };

/* job_call - one callback to j's owner; false if it cancelled j (then freed) */
static bool job_call(struct pool_job *j, enum job_call which, const struct smtp_result *r,
                     const struct smtp_reply *late, const struct smtp_sync_report *report)
{
	j->in_callback = true;
	if (which == CALL_DONE)
		j->done(j->arg, r);
	else if (which == CALL_LATE)
		j->late(j->arg, late);
	else if (j->sync != NULL)
		j->sync(j->arg, j, report);
	j->in_callback = false;
	if (j->cancelled) {
		job_free(j);
		return false;
	}
	return true;
}

/* ---- sessions (smtp.c's callbacks; arg is the session) */

/* memo_find - this session's catch-all answer for domain, or NULL */
static const struct smtp_reply *memo_find(const struct pool_session *s, const char *domain)
{
	for (size_t i = 0; i < DOMAIN_MEMOS && domain[0] != '\0'; i++)
		if (s->memos[i] != NULL && strcasecmp(s->memos[i]->domain, domain) == 0)
			return &s->memos[i]->reply;
	return NULL;
}

/* memo_keep - remember domain's catch-all answer for the rest of the session */
static void memo_keep(struct pool_session *s, const char *domain, const struct smtp_reply *reply)
{
	size_t len = strlen(domain);
	/* Only a session that may ask another address reads it (smtp.c's
	 * session mode): one session per job keeps none. */
	if (s->line->pool->limits.max_sessions == 0 || domain[0] == '\0' || len >= DOMAIN_MEMO_NAME_MAX ||
	    reply == NULL || reply->code == 0 || memo_find(s, domain) != NULL)
		return;
	struct domain_memo *m = malloc(sizeof(*m) + len + 1);
	if (m == NULL)
		return; /* not remembered: the next address of the domain asks the random RCPT again */
	m->reply = *reply;
	memcpy(m->domain, domain, len + 1);
	free(s->memos[s->memo_next]);
	s->memos[s->memo_next] = m;
	s->memo_next = (s->memo_next + 1) % DOMAIN_MEMOS;
}

/* s_trace - a transcript line: to the job asked now (or owed its late
 * catch-all answer), else (QUIT, the greeting of a session whose first job
 * went) to every job waiting for the proof */
static void s_trace(void *arg, const char *line)
{
	struct pool_session *s = arg;
	struct pool_job *due = s->cur != NULL ? s->cur : s->late_job; /* whose reply is awaited */
	if (due != NULL) {
		if (due->trace != NULL)
			due->trace(due->trace_arg, line);
		return;
	}
	for (struct pool_job *j = s->answered; j != NULL; j = j->next)
		if (j->trace != NULL)
			j->trace(j->trace_arg, line);
}

/* is_drop - the server went away instead of answering (closed, 421) */
static bool is_drop(const struct smtp_result *r)
{
	return r->end == SMTP_END_CLOSED || (r->end == SMTP_END_REPLY && r->reply.code == 421);
}

/* s_done - the address asked now has its result */
static void s_done(void *arg, const struct smtp_result *result)
{
	struct pool_session *s = arg;
	struct pool_job *j = s->cur;
	bool first = s->jobs == 1;
	struct smtp_result r = *result;
	bool late_now = false;

	s->cur = NULL;
	if (r.stage >= STAGE_RCPT)
		s->reached_rcpt = true;
	else if (!s->reached_rcpt && r.end != SMTP_END_DONE) {
		if (s->early == NULL)
			s->early = malloc(sizeof(*s->early));
		if (s->early != NULL)
			*s->early = r; /* about the host: for the jobs waiting behind it (s_sync) */
	}
	if (r.catchall_asked && !r.catchall_pending && j != NULL)
		memo_keep(s, j->domain, &r.catchall_reply);
	if (j == NULL)
		return; /* cancelled meanwhile */
	if (is_drop(&r) && !j->retried && (r.stage >= STAGE_RCPT || !first)) {
		j->retried = true;
		job_trace(j,
		          "* the session ended before this address was answered (%s): it waits for "
		          "another session",
		          r.error[0] ? r.error : "421");
		queue_push(s->line, j, true);
		return; /* s_sync opens the next session */
	}
	if (s->cur_patch && r.end == SMTP_END_DONE && r.stage == STAGE_RCPT && r.reply.code / 100 == 2) {
		/* what the random address at this domain got earlier in this session */
		r.catchall_asked = true;
		if (j->report_at_rcpt) {
			r.catchall_pending = true;
			late_now = true;
		} else {
			r.stage = STAGE_CATCHALL;
			r.catchall_reply = *s->patch;
		}
	}
	s->cur_patch = false;
	j->state = JOB_ANSWERED;
	j->session = s;
	j->prev = NULL;
	j->next = s->answered;
	if (s->answered != NULL)
		s->answered->prev = j;
	s->answered = j;
	if (r.catchall_pending && !late_now)
		s->late_job = j;
	if (!job_call(j, CALL_DONE, &r, NULL, NULL))
		return;
	if (late_now && r.catchall_pending)
		job_call(j, CALL_LATE, NULL, s->patch, NULL);
}

/* s_late - the catch-all answer of the job reported before it */
static void s_late(void *arg, const struct smtp_reply *reply)
{
	struct pool_session *s = arg;
	struct pool_job *j = s->late_job;
	s->late_job = NULL;
	if (j == NULL)
		return;
	memo_keep(s, j->domain, reply);
	job_call(j, CALL_LATE, NULL, reply, NULL);
}

/* s_next - the next address for this session: the line's oldest job;
 * none waiting: QUIT, or after a burst wait IDLE_MS for one */
static enum smtp_next s_next(void *arg, struct smtp_job *next)
{
	struct pool_session *s = arg;
	struct pool_line *l = s->line;
	if (s->closing)
		return SMTP_NEXT_NONE; /* the line waits for the next session (s_sync fills) */
	if (l->pool->limits.max_age_ms > 0 && clock_mono_ms() - s->started_ms >= l->pool->limits.max_age_ms) {
		for (struct pool_job *a = s->answered; a != NULL; a = a->next)
			job_trace(a, "* the session is %lld ms old: QUIT (a new one takes the rest)",
			          (long long)(clock_mono_ms() - s->started_ms));
		return SMTP_NEXT_NONE;
	}
	struct pool_job *j = queue_pop(l);
	char where[80];
	if (j == NULL) {
		if (s->idle)
			return SMTP_NEXT_WAIT;
		if (s->idle_over || (s->jobs < 2 && l->submitted < 2) || s->idle_timer == NULL)
			return SMTP_NEXT_NONE;
		struct timeval tv = {.tv_sec = 0, .tv_usec = IDLE_MS * 1000};
		if (evtimer_add(s->idle_timer, &tv) != 0)
			return SMTP_NEXT_NONE;
		s->idle = true;
		return SMTP_NEXT_WAIT;
	}
	s->idle = s->idle_over = false;
	if (s->idle_timer != NULL)
		evtimer_del(s->idle_timer);
	s->cur = j;
	s->jobs++;
	j->nth = s->jobs;
	j->state = JOB_CURRENT;
	j->session = s;
	const struct smtp_reply *known = memo_find(s, j->domain);
	if (known != NULL && s->patch == NULL)
		s->patch = malloc(sizeof(*s->patch)); /* NULL: the random RCPT is asked again */
	s->cur_patch = known != NULL && s->patch != NULL && j->catchall_rcpt[0] != '\0';
	if (s->cur_patch)
		*s->patch = *known;
	addr_text(&l->addr, where, sizeof(where));
	job_trace(j, "* asking in the session already open to %s (address %u in it)", where, s->jobs);
	if (s->cur_patch)
		job_trace(j, "* the random address at %s got %d in this session already: not asked again",
		          j->domain, known->code);
	next->rcpt = j->rcpt;
	next->catchall_rcpt = j->catchall_rcpt[0] != '\0' && !s->cur_patch ? j->catchall_rcpt : NULL;
	next->report_at_rcpt = j->report_at_rcpt;
	next->skip_catchall_after_5xx = true;
	return SMTP_NEXT_JOB;
}

/* s_last - will the session ask nothing after the address about to be
 * asked (smtp_last_fn)? Only when s_next, asked now, would say NONE rather
 * than hand over a job or wait idle for one: the session is closing or too
 * old, or no job waits and the line is no burst. Then the address's RCPT
 * may go out grouped with QUIT (smtp.h, pipelining), and a job that comes
 * meanwhile waits for the next session, as after any QUIT. */
static bool s_last(void *arg)
{
	struct pool_session *s = arg;
	struct pool_line *l = s->line;
	if (s->closing)
		return true;
	if (l->pool->limits.max_age_ms > 0 && clock_mono_ms() - s->started_ms >= l->pool->limits.max_age_ms)
		return true;
	return l->queued == 0 && (s->jobs < 2 && l->submitted < 2);
}

/* on_idle - no job came within IDLE_MS: the session says QUIT */
static void on_idle(evutil_socket_t fd, short what, void *arg)
{
	struct pool_session *s = arg;
	(void)fd;
	(void)what;
	s->idle = false;
	s->idle_over = true;
	smtp_probe_resume(s->probe);
}

/* idle_session - a session of l waiting for a job, or NULL (a closing one
 * never waits) */
static struct pool_session *idle_session(const struct pool_line *l)
{
	if (l->pool->limits.max_sessions == 0)
		return NULL; /* one session per job never waits for another: no walk over thousands */
	for (struct pool_session *s = l->sessions; s != NULL; s = s->next)
		if (s->idle)
			return s;
	return NULL;
}

/* session_free - a session whose probe is gone or going */
static void session_free(struct pool_session *s)
{
	if (s->idle_timer != NULL)
		event_free(s->idle_timer);
	for (size_t i = 0; i < DOMAIN_MEMOS; i++)
		free(s->memos[i]);
	free(s->early);
	free(s->patch);
	free(s);
}

/* answer_waiting - every job waiting on l gets r as its result, why (if
 * any) in its trace first. report: the proof of the session whose early
 * failure r is (each job gets it after r), or NULL when nothing was asked
 * for them and no proof follows */
static void answer_waiting(struct pool_line *l, const struct smtp_result *r, const char *why,
                           const struct smtp_sync_report *report)
{
	size_t n = l->queued;
	for (size_t i = 0; i < n; i++) {
		struct pool_job *j = queue_pop(l);
		if (j == NULL)
			break;
		j->state = JOB_DETACHED;
		if (why != NULL)
			job_trace(j, "%s", why);
		if (!job_call(j, CALL_DONE, r, NULL, NULL))
			continue; /* cancelled: freed */
		if (report == NULL || job_call(j, CALL_SYNC, NULL, NULL, report))
			job_free(j);
	}
}

/* limited - host_session_rate allows no new session to l: every job
 * waiting hears it (not a word from the server), unless a session of l
 * is still open to take them */
static void limited(struct pool_line *l, unsigned count, bool fleet)
{
	char where[80];
	struct smtp_result r = {.end = SMTP_END_CONNECT_FAILED, .stage = STAGE_CONNECT, .limited = true};
	if (l->session_count > 0)
		return;
	addr_text(&l->addr, where, sizeof(where));
	snprintf(r.error, sizeof(r.error), "host_session_rate: %u sessions to %s this minute%s", count, where,
	         fleet ? " across the fleet" : "");
	answer_waiting(l, &r, NULL, NULL);
}

/* fill - open sessions for waiting jobs, up to the limit */
static void fill(struct pool_line *l)
{
	struct pool *pool = l->pool;
	while (l->queued > 0 &&
	       (pool->limits.max_sessions == 0 || l->session_count < pool->limits.max_sessions)) {
		unsigned count = 0;
		bool fleet = false;
		if (pool->limits.hosts != NULL && pool->limits.session_rate > 0 &&
		    !hosts_session_take(pool->limits.hosts, (const struct sockaddr *)&l->addr,
		                        clock_mono_ms(), pool->limits.session_rate, &count, &fleet)) {
			limited(l, count, fleet);
			return;
		}
		struct pool_job *j = queue_pop(l);
		if (!open_session(l, j)) {
			/* our trouble (no memory: open_session fails for nothing
			 * else), never the host's or the domain's: every waiting
			 * job hears it */
			struct smtp_result r = {.end = SMTP_END_NO_RESOURCES, .stage = STAGE_CONNECT};
			snprintf(r.error, sizeof(r.error), "%s", CLASSIFY_NO_MEMORY);
			queue_push(l, j, true);
			answer_waiting(l, &r, NULL, NULL);
			return;
		}
	}
}

/* s_sync - the session's connection is over: its proof to every job
 * answered in it; jobs waiting behind an early failure get a copy of it;
 * then new sessions for whatever waits */
static void s_sync(void *arg, struct smtp_probe *probe, const struct smtp_sync_report *report)
{
	struct pool_session *s = arg;
	struct pool_line *l = s->line;
	struct pool *pool = l->pool;
	(void)probe;

	l->busy++;
	if (s->cur != NULL) /* cannot happen (every path reports first); never lose a job */
		queue_push(l, s->cur, true), s->cur = NULL;
	while (s->answered != NULL) {
		struct pool_job *j = s->answered;
		detach(j);
		if (job_call(j, CALL_SYNC, NULL, NULL, report))
			job_free(j);
	}
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		l->sessions = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	l->session_count--;
	pool->session_count--;
	if (s->idle_timer != NULL)
		evtimer_del(s->idle_timer);
	if (s->early != NULL) { /* about the host: the jobs waiting now share it */
		struct smtp_result r = *s->early;
		r.shared = true;
		answer_waiting(l, &r,
		               "* the session to this host ended before any RCPT: its result is this "
		               "address's too",
		               report);
	}
	session_free(s);
	l->last_ms = clock_mono_ms();
	fill(l);
	l->busy--;
	line_maybe_free(l);
}

/* open_session - a new session for line l, asking first (the session rate
 * is the caller's). False if it cannot start. */
static bool open_session(struct pool_line *l, struct pool_job *first)
{
	struct pool *pool = l->pool;
	struct pool_session *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return false;
	/* Only a session that may ask more than one address waits idle for the
	 * next (s_next); NULL: no idle wait, that is all */
	if (pool->limits.max_sessions > 0)
		s->idle_timer = evtimer_new(pool->base, on_idle, s);
	s->line = l;
	s->started_ms = clock_mono_ms();
	s->cur = first;
	s->jobs = 1;
	first->nth = 1;
	first->state = JOB_CURRENT;
	first->session = s;
	struct smtp_params params = l->params;
	params.rcpt = first->rcpt;
	params.server_name = first->server_name; /* SNI and transcripts: the name this job knows it by */
	params.catchall_rcpt = first->catchall_rcpt[0] != '\0' ? first->catchall_rcpt : NULL;
	params.report_at_rcpt = first->report_at_rcpt;
	params.skip_catchall_after_5xx = false; /* a session's first address: as one probe alone */
	params.next = pool->limits.max_sessions > 0 ? s_next : NULL;
	params.last = pool->limits.max_sessions > 0 ? s_last : NULL;
	params.max_rcpt_errors = pool->limits.max_errors;
	s->next = l->sessions;
	if (l->sessions != NULL)
		l->sessions->prev = s;
	l->sessions = s;
	l->session_count++;
	pool->session_count++;

	s->probe = smtp_probe_start(pool->base, (const struct sockaddr *)&l->addr, &params, s_trace, s,
	                            s_done, s_late, s_sync, s);
	if (s->probe == NULL) {
		if (s->prev != NULL)
			s->prev->next = s->next;
		else
			l->sessions = s->next;
		if (s->next != NULL)
			s->next->prev = s->prev;
		l->session_count--;
		pool->session_count--;
		first->session = NULL;
		first->state = JOB_DETACHED;
		session_free(s);
		return false;
	}
	return true;
}

/* ---- the API */

/* pool_new - see pool.h */
struct pool *pool_new(struct event_base *base, const struct pool_limits *limits)
{
	struct pool *pool = calloc(1, sizeof(*pool));
	if (pool == NULL)
		return NULL;
	pool->base = base;
	pool->limits = *limits;
	return pool;
}

/* pool_free - see pool.h */
void pool_free(struct pool *pool)
{
	if (pool == NULL)
		return;
	linger_close_all(&pool->probes); /* the sessions' probes: no callbacks any more */
	while (pool->lines != NULL) {
		struct pool_line *l = pool->lines;
		struct pool_job *j;
		while ((j = queue_pop(l)) != NULL) {
			j->state = JOB_DETACHED; /* its owner's list still has it; closing it frees it */
			j->pool = NULL;
		}
		while (l->sessions != NULL) {
			struct pool_session *s = l->sessions;
			if (s->cur != NULL)
				s->cur->state = JOB_DETACHED, s->cur->session = NULL, s->cur->pool = NULL;
			while ((j = s->answered) != NULL) {
				s->answered = j->next;
				j->prev = j->next = NULL;
				j->state = JOB_DETACHED;
				j->session = NULL;
				j->pool = NULL;
			}
			l->sessions = s->next;
			session_free(s);
		}
		pool->lines = l->next;
		free(l->strings);
		free(l);
	}
	free(pool);
}

/* pool_would_open - see pool.h */
bool pool_would_open(struct pool *pool, const struct sockaddr *addr, const struct smtp_params *params)
{
	struct pool_line *l = line_find(pool, addr, params);
	return l == NULL || pool->limits.max_sessions == 0 ||
	       (idle_session(l) == NULL && l->session_count < pool->limits.max_sessions);
}

/* pool_submit - see pool.h */
struct pool_job *pool_submit(struct pool *pool, const struct sockaddr *addr, const struct smtp_params *params,
                             smtp_trace_fn trace, void *trace_arg, pool_done_fn done, pool_late_fn late,
                             pool_sync_fn sync, void *arg)
{
	if (params->linger == NULL || params->rcpt == NULL)
		return NULL;
	struct pool_job *j = calloc(1, sizeof(*j));
	if (j == NULL)
		return NULL;
	j->pool = pool;
	j->state = JOB_DETACHED;
	const char *ca = params->catchall_rcpt != NULL ? params->catchall_rcpt : "";
	const char *at = strrchr(ca, '@');
	size_t rn = strlen(params->rcpt), cn = strlen(ca);
	const char *sn = params->server_name != NULL ? params->server_name : "";
	size_t sl = strlen(sn);
	j->rcpt = malloc(rn + 1 + 2 * (cn + 1) + sl + 1);
	if (j->rcpt == NULL) {
		free(j);
		return NULL;
	}
	memcpy(j->rcpt, params->rcpt, rn + 1);
	j->catchall_rcpt = j->rcpt + rn + 1;
	memcpy(j->catchall_rcpt, ca, cn + 1);
	j->domain = j->catchall_rcpt + cn + 1;
	snprintf(j->domain, cn + 1, "%s", at != NULL ? at + 1 : "");
	j->server_name = j->domain + cn + 1;
	memcpy(j->server_name, sn, sl + 1);
	j->report_at_rcpt = params->report_at_rcpt;
	j->trace = trace;
	j->trace_arg = trace_arg;
	j->done = done;
	j->late = late;
	j->sync = sync;
	j->arg = arg;
	lines_sweep(pool);
	struct pool_line *l = line_find(pool, addr, params);
	bool fresh = l == NULL;
	if (fresh && (l = line_new(pool, addr, params)) == NULL) {
		free(j->rcpt);
		free(j);
		return NULL;
	}
	l->submitted++;
	l->last_ms = clock_mono_ms();
	struct pool_session *idle = idle_session(l);
	if (idle != NULL) { /* a session of the burst is waiting for it */
		queue_push(l, j, false);
		smtp_probe_resume(idle->probe);
	} else if (pool->limits.max_sessions == 0 || l->session_count < pool->limits.max_sessions) {
		if (!open_session(l, j)) {
			line_maybe_free(l);
			free(j->rcpt);
			free(j);
			return NULL;
		}
	} else {
		char where[80];
		queue_push(l, j, false);
		addr_text(&l->addr, where, sizeof(where));
		job_trace(j, "* waiting for one of the %u sessions to %s (%zu waiting)", l->session_count,
		          where, l->queued);
	}
	j->owner_list = params->linger;
	linger_add(params->linger, &j->linger_item, job_linger_close);
	j->lingering = true;
	return j;
}

/* pool_job_cancel - see pool.h */
void pool_job_cancel(struct pool_job *job)
{
	if (job == NULL)
		return;
	if (job->in_callback) {
		job->cancelled = true;
		return;
	}
	if (job->pool == NULL) /* the pool went first: only our own memory is left */
		job->state = JOB_DETACHED;
	job_free(job);
}

/* pool_job_hurry - see pool.h */
bool pool_job_hurry(struct pool_job *job)
{
	if (job == NULL || job->pool == NULL || job->pool->limits.max_sessions == 0 ||
	    (job->state != JOB_ANSWERED && job->state != JOB_CURRENT) || job->session == NULL)
		return false; /* one session per job: it ends after the job anyway */
	struct pool_session *s = job->session;
	if (smtp_probe_ending(s->probe))
		/* QUIT said: nothing to hurry, but if other addresses were asked
		 * after this one it came later than for a probe alone */
		return s->jobs > job->nth;
	s->closing = true;
	if (s->idle) { /* waiting for a job of the burst: none now, QUIT */
		s->idle = false;
		if (s->idle_timer != NULL)
			evtimer_del(s->idle_timer);
		smtp_probe_resume(s->probe);
	}
	return true;
}

/* pool_sessions - see pool.h */
size_t pool_sessions(const struct pool *pool)
{
	return pool->session_count;
}

/* pool_set_limits - see pool.h */
void pool_set_limits(struct pool *pool, const struct pool_limits *limits)
{
	pool->limits = *limits;
}
