/*
 * cache.c - the LMDB store behind cache.h: one file (MDB_NOSUBDIR, plus its
 * "-lock" file) that several processes share, and any thread of each.
 *
 * Owns struct cache: the LMDB environment, the main database handle, its
 * locks and the sync thread. Locking: env_lock (a rwlock) is held shared
 * by every transaction, so reads run beside each other and beside the one
 * write (LMDB's MVCC: a reader never waits for a writer); this process's
 * writes take write_lock first, one at a time. Whatever replaces or
 * remaps the environment takes env_lock exclusive: a resize
 * (mdb_env_set_mapsize needs no open transaction in the process), closing
 * a damaged environment and opening it again (no reader of ours can be
 * inside the old map), going off and coming back. Such a thread lets its
 * shared hold go first and then finds out (by the environment's
 * generation) whether another thread replaced the environment meanwhile:
 * then that was the recovery, and it goes on with the new one. MDB_NOTLS:
 * a read transaction takes a reader slot for its own duration, from
 * whatever thread. LMDB's own lock file serializes writers across
 * processes. Open the cache once per process, after any fork().
 *
 * Syncing: by default LMDB syncs every commit (an fdatasync on the
 * writer's thread). After cache_sync_every() the environment is
 * MDB_NOSYNC (LMDB 0.9 has no such flag per transaction) and a thread of ours syncs the file every interval,
 * on a descriptor of its own, holding no lock while it waits for the disk; a commit is in the OS's page cache
 * when it returns (no MDB_WRITEMAP), so a killed process loses nothing committed. A power loss can lose the
 * last interval; should the disk have written pages out of order, the check at the next open (below) finds
 * the broken tree and the file is moved aside: a damaged file is never used.
 *
 * Recoverable LMDB conditions are hidden from the caller:
 *  - MDB_MAP_FULL: the map doubles (from min(64 MiB, soft limit)) up to a
 *    soft limit: cache_max_mb less a reserve (1/16; 256 KiB to 1/4). LMDB
 *    copies on write and reuses a freed page only two transactions later,
 *    so a full map cannot even delete. At the soft limit the reserve is
 *    opened for the write; then free_up() sweeps expired records, or else
 *    evicts the oldest eighth by probed_at, one record a transaction (each
 *    reusing what the one two before it freed), under an exclusive flock()
 *    on the data file that every write holds shared, so that no other
 *    process's writes take those pages; then the map is closed down to the
 *    pages in use. Each round uses up a few reserve pages for good (about
 *    four); should the reserve ever be gone, the file is deleted and
 *    started afresh (logged).
 *  - MDB_MAP_RESIZED: another process grew the map: adopt its size, retry.
 *  - a replaced file (another process moved a damaged one aside): a write
 *    first checks the path still names our file, else reopens it.
 *
 * Damage: LMDB trusts its file. It maps it, so a page past the file's end
 * raises SIGBUS; a zeroed or overwritten page gives MDB_CORRUPTED or
 * MDB_PAGE_NOTFOUND, fails an assertion (abort) or, in a write, shifts
 * nodes by sizes read from garbage. So the file is checked before LMDB
 * reads it (mdbcheck.h: by pread(), never through the map):
 *  - at open: the meta pages and the file's size, then both B-trees walked
 *    (up to CHECK_BUDGET pages) in a read transaction that pins them;
 *  - before every transaction: fstat(); a file shorter than the pages LMDB
 *    last said it uses is damage; a file changed since our last look is
 *    looked at again: its meta pages, and the trees walked when no
 *    transaction was committed (the change was not LMDB's: a writer killed
 *    mid-commit, or someone else's bytes). Our own commits are looked at
 *    right after they finish, so that only others' changes remain.
 *  - during every call into LMDB, a guard (one per thread, armed only
 *    around our own calls) turns a SIGBUS (the file truncated in the
 *    microseconds between the check and the read) and LMDB's assertion
 *    callback into an error of the call, instead of the death of the
 *    process; the environment is then abandoned.
 * Damage found by a check, a guard or LMDB (MDB_PAGE_NOTFOUND,
 * MDB_CORRUPTED, MDB_INVALID; MDB_BAD_TXN and MDB_PANIC reopen and let the
 * check decide): the file is moved aside to PATH.corrupt.<unix-time> (its
 * lock file removed), one line logged naming the problem, and a fresh file
 * opened, at most once a minute. Damage again within that minute, or a
 * fresh file that cannot be opened: the cache is off for OFF_RETRY (one
 * line logged; every lookup misses, every store does nothing), then tried
 * again. Every other failure is a miss (reads) or false (writes), logged.
 * What is not survivable is in vemilter(8).
 */
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "clock.h"
#include "log.h"
#include "mdbcheck.h"

#define MIB             ((size_t)1 << 20)
#define INITIAL_MAP     (64 * MIB)
#define MAX_READERS     256   /* slots: one per read in flight (MDB_NOTLS), of every process */
#define WRITE_ATTEMPTS  16    /* grow, sweep, evict rounds for one write */
#define BATCH           2048  /* deletions per transaction of a sweep */
#define MIN_EVICT       16    /* records evicted per round, at least */
#define SAMPLE          65536 /* records looked at to find the oldest eighth */
#define RESERVE_MIN     (256 * 1024)
#define RECOVER_SPACING 60000
#define OFF_RETRY       600000   /* ms without a cache after recovery failed */
#define CHECK_BUDGET    65536    /* pages a check reads: 256 MiB of 4 KiB pages */
#define CACHE_DAMAGED   (-30700) /* not LMDB's: doing.problem says what */
#define CACHE_OFF       (-30701) /* not LMDB's: running without a cache */

struct cache {
	/* shared: any use of env (a transaction, a look); exclusive: changing
	 * it (open, close, recovery, the map's size). Writer-preferring, so a
	 * recovery is not starved by a stream of readers. */
	pthread_rwlock_t env_lock;
	pthread_mutex_t write_lock; /* this process's writes, one at a time (taken before env_lock) */
	pthread_mutex_t look_lock;  /* the "seen" fields below; look() */
	uint64_t generation;        /* bumped when env closes (exclusive): an environment's identity */
	MDB_env *env;               /* NULL while off (recovery failed): every call misses */
	MDB_dbi dbi;
	char *path;
	/* the mirror (cache_set_mirror), set before other threads use the cache */
	struct cache_mirror mirror;
	size_t max_bytes;        /* cache_max_mb: the hard limit */
	size_t soft_bytes;       /* the map's limit outside free_up(); the rest is a reserve */
	int64_t last_recover_ms; /* monotonic; reopen at most once a minute */
	bool recovered_once;     /* last_recover_ms is meaningful */
	bool reserve_open;       /* the map is at max_bytes until free_up() (write_lock) */
	int64_t off_until_ms;    /* monotonic: while off, no reopen before this */
	/* the file at our last look (look(), look_lock): a change since is looked at */
	bool seen;
	struct timespec seen_mtime;
	off_t seen_size;
	uint64_t seen_txnid;
	off_t need_bytes; /* the pages LMDB said it uses: the file is never shorter */
	/* our own commits, for look(): begun (ever) and in flight now */
	atomic_uint_fast64_t commits_begun;
	atomic_int commits_in_flight;
	/* the sync (cache_sync_every): commits are not synced (MDB_NOSYNC);
	 * a thread of ours syncs the file every sync_interval_ms */
	bool nosync;              /* set once, before other threads use the cache */
	int64_t sync_interval_ms; /* 0: every commit synced by LMDB */
	pthread_mutex_t sync_lock;
	pthread_cond_t sync_cond; /* CLOCK_MONOTONIC: wakes the syncer to stop */
	pthread_t syncer;
	bool syncer_running, stopping; /* sync_lock */
	int sync_fd;                   /* the syncer's own descriptor of the file; -1: none */
	uint64_t sync_generation;      /* the environment sync_fd belongs to */
	atomic_uint_fast64_t commits;  /* committed by this process */
	atomic_uint_fast64_t synced;   /* commits covered by the last sync */
	atomic_uint_fast64_t syncs;    /* syncs done */
};

/* What this thread is doing in the cache: the lock it holds, the open
 * transaction and a read transaction's cursor for a guard that fires to
 * clean up (a write transaction's cursors are its own), and what damage it
 * found. Per thread, like the guard, because readers run concurrently;
 * each entry point sets it up and leaves it clear. */
enum held { HELD_NONE, HELD_SHARED, HELD_EXCLUSIVE };
struct doing {
	enum held held;
	uint64_t generation;        /* of the environment this thread is using */
	pthread_mutex_t *look_held; /* look_lock, while held (released if a guard fires) */
	MDB_txn *txn;
	MDB_cursor *cursor;
	bool txn_rdonly;
	bool committing;   /* inside txn_commit: counted in commits_in_flight */
	bool fired;        /* a guard fired: the environment is dead */
	char problem[300]; /* what CACHE_DAMAGED was */
};
static __thread struct doing doing;

/* shared - take env_lock shared (entry points; or back from exclusive);
 * true when the environment is still the one this thread was using */
static bool shared(struct cache *c)
{
	if (doing.held == HELD_EXCLUSIVE)
		pthread_rwlock_unlock(&c->env_lock);
	if (doing.held != HELD_SHARED)
		pthread_rwlock_rdlock(&c->env_lock);
	bool same = doing.held == HELD_NONE || doing.generation == c->generation;
	doing.held = HELD_SHARED;
	doing.generation = c->generation;
	return same;
}

/* exclusive - take env_lock exclusive (from shared: let go, then take;
 * meanwhile another thread may have replaced the environment); true when
 * the environment is still the one this thread was using */
static bool exclusive(struct cache *c)
{
	if (doing.held == HELD_EXCLUSIVE)
		return true;
	if (doing.held == HELD_SHARED)
		pthread_rwlock_unlock(&c->env_lock);
	pthread_rwlock_wrlock(&c->env_lock);
	bool same = doing.held == HELD_NONE || doing.generation == c->generation;
	doing.held = HELD_EXCLUSIVE;
	doing.generation = c->generation;
	return same;
}

/* release - let env_lock go, whichever way it is held */
static void release(struct cache *c)
{
	if (doing.held != HELD_NONE)
		pthread_rwlock_unlock(&c->env_lock);
	doing.held = HELD_NONE;
}

/* One step inside a transaction; a write step may return STEP_NOTHING to
 * abort cleanly. */
typedef int (*txn_step)(struct cache *c, MDB_txn *txn, void *arg);
#define STEP_NOTHING 1

/* is_damage - an error that means the file (or LMDB's state of it) is bad */
static bool is_damage(int rc)
{
	return rc == MDB_INVALID || rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND || rc == MDB_BAD_TXN ||
	       rc == MDB_VERSION_MISMATCH || rc == MDB_PANIC || rc == CACHE_DAMAGED;
}

/* proves_damage - an error only a damaged file gives: it is moved aside
 * without asking the check (MDB_BAD_TXN and MDB_PANIC can follow an I/O
 * error: the reopen's check decides) */
static bool proves_damage(int rc)
{
	return is_damage(rc) && rc != MDB_BAD_TXN && rc != MDB_PANIC;
}

/* describe - an error as text, doing.problem for CACHE_DAMAGED */
static const char *describe(const struct cache *c, int rc)
{
	if (rc == CACHE_DAMAGED)
		return doing.problem;
	if (rc == CACHE_OFF)
		return "running without a cache";
	return mdb_strerror(rc);
}

/* ---- the guard: SIGBUS and LMDB's assertions inside our own calls ----
 *
 * A signal handler finds its context only through static storage: the
 * previous SIGBUS action (to hand other faults on to) and, per thread, the
 * innermost armed guard. A SIGBUS raised by the hardware in a thread with
 * a guard armed jumps back to it; any other (another thread's, a fault
 * outside our calls, one sent by kill) goes to the previous action, the
 * default one killing the process as before. Installed once, at the first
 * cache_open(). */
struct guard {
	sigjmp_buf jmp;
	struct guard *outer;
	volatile int fired; /* SIGBUS, or 0 for an assertion */
	char text[200];     /* the assertion's */
};

static pthread_once_t guard_once = PTHREAD_ONCE_INIT;
static struct sigaction guard_prev_bus;
static __thread struct guard *guard_top;

/* on_bus - the SIGBUS handler */
static void on_bus(int sig, siginfo_t *si, void *ctx)
{
	struct guard *g = guard_top;
	if (g != NULL && si->si_code > 0) {
		g->fired = sig;
		siglongjmp(g->jmp, 1);
	}
	if (guard_prev_bus.sa_flags & SA_SIGINFO) {
		guard_prev_bus.sa_sigaction(sig, si, ctx);
	} else if (guard_prev_bus.sa_handler != SIG_DFL && guard_prev_bus.sa_handler != SIG_IGN) {
		guard_prev_bus.sa_handler(sig);
	} else {
		/* the default action: a fault happens again on return, a sent
		 * signal is raised again (delivered when the handler returns) */
		struct sigaction dfl = {.sa_handler = SIG_DFL};
		sigemptyset(&dfl.sa_mask);
		sigaction(sig, &dfl, NULL);
		if (si->si_code <= 0)
			raise(sig);
	}
}

/* on_assert - LMDB's assertion callback: inside a guard, jump back to it
 * (LMDB would abort() on return) */
static void on_assert(MDB_env *env, const char *msg)
{
	struct guard *g = guard_top;
	if (g == NULL)
		return;
	snprintf(g->text, sizeof(g->text), "%s", msg);
	g->fired = 0;
	siglongjmp(g->jmp, 1);
}

/* guard_install - the SIGBUS handler, once per process */
static void guard_install(void)
{
	struct sigaction sa = {.sa_sigaction = on_bus, .sa_flags = SA_SIGINFO};
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, &guard_prev_bus) != 0)
		log_msg(LOG_WARNING, "cache: cannot catch SIGBUS: %s", strerror(errno));
}

/* unblock_bus - after a jump out of the SIGBUS handler, which ran with
 * SIGBUS blocked: sigsetjmp(, 0) does not save the mask (saving it costs a
 * system call on every call into the cache), so it is restored here, on
 * the rare path (a fault while blocked would kill the process) */
static void unblock_bus(void)
{
	sigset_t bus;
	sigemptyset(&bus);
	sigaddset(&bus, SIGBUS);
	pthread_sigmask(SIG_UNBLOCK, &bus, NULL);
}

/* abandon - after a guard fired: end the open transaction if that can be
 * done (a write transaction holds LMDB's writer lock), under a guard of
 * its own; the environment is then closed by the caller's recovery */
static void abandon(struct cache *c)
{
	struct guard g = {.outer = guard_top};
	MDB_txn *txn = doing.txn;
	MDB_cursor *cursor = doing.cursor;
	doing.txn = NULL;
	doing.cursor = NULL;
	if (sigsetjmp(g.jmp, 0) == 0) {
		guard_top = &g;
		if (cursor != NULL)
			mdb_cursor_close(cursor);
		if (txn != NULL)
			mdb_txn_abort(txn);
	} else {
		unblock_bus();
	}
	guard_top = g.outer;
}

typedef int (*guarded_fn)(struct cache *c, void *arg);

/* guarded - fn(c, arg) with a guard armed; CACHE_DAMAGED (and doing.problem)
 * if it fired */
static int guarded(struct cache *c, guarded_fn fn, void *arg)
{
	struct guard g = {.outer = guard_top};
	int rc;
	if (sigsetjmp(g.jmp, 0) == 0) {
		guard_top = &g;
		rc = fn(c, arg);
	} else {
		guard_top = g.outer;
		unblock_bus();
		if (g.fired == SIGBUS)
			snprintf(doing.problem, sizeof(doing.problem),
			         "SIGBUS reading the file through LMDB's map (truncated while open?)");
		else
			snprintf(doing.problem, sizeof(doing.problem), "LMDB assertion: %s", g.text);
		if (doing.look_held != NULL) /* jumped out of look() */
			pthread_mutex_unlock(doing.look_held);
		doing.look_held = NULL;
		if (doing.committing) /* jumped out of a commit: it is in flight no more (else
		                       * every look() after it would return at once) */
			atomic_fetch_sub(&c->commits_in_flight, 1);
		doing.committing = false;
		abandon(c);
		doing.fired = true;
		return CACHE_DAMAGED;
	}
	guard_top = g.outer;
	return rc;
}

/* parent_dir - the directory part of path ("." if none) into buf */
static void parent_dir(const char *path, char *buf, size_t size)
{
	const char *slash = strrchr(path, '/');
	if (slash == NULL)
		snprintf(buf, size, ".");
	else if (slash == path)
		snprintf(buf, size, "/");
	else
		snprintf(buf, size, "%.*s", (int)(slash - path), path);
}

/* lock_path - PATH-lock, LMDB's lock file for a MDB_NOSUBDIR environment */
static void lock_path(const char *path, char *buf, size_t size)
{
	snprintf(buf, size, "%s-lock", path);
}

/* adopt_dir_owner - root created these files: give them to the directory's
 * owner (the daemon's StateDirectory), so the daemon can still open them */
static void adopt_dir_owner(const char *path, bool data_new, bool lock_new)
{
	char dir[4096], lock[4096];
	struct stat st;
	parent_dir(path, dir, sizeof(dir));
	if (geteuid() != 0 || stat(dir, &st) != 0 || (st.st_uid == 0 && st.st_gid == 0))
		return;
	lock_path(path, lock, sizeof(lock));
	if (data_new && chown(path, st.st_uid, st.st_gid) != 0)
		log_msg(LOG_WARNING, "cache %s: chown: %s", path, strerror(errno));
	if (lock_new && chown(lock, st.st_uid, st.st_gid) != 0)
		log_msg(LOG_WARNING, "cache %s: chown: %s", lock, strerror(errno));
}

/* settle_map - from the current size to one between the initial size and
 * the soft limit (never below the pages in use: LMDB sees to that) */
static int settle_map(struct cache *c, MDB_env *env, size_t current)
{
	size_t initial = c->soft_bytes < INITIAL_MAP ? c->soft_bytes : INITIAL_MAP;
	if (current < initial)
		return mdb_env_set_mapsize(env, initial);
	if (current > c->soft_bytes)
		return mdb_env_set_mapsize(env, c->soft_bytes);
	return 0;
}

/* check_env - a first read of the main database, to catch a broken root */
static int check_env(MDB_env *env, MDB_dbi *dbi)
{
	MDB_txn *txn;
	MDB_cursor *cursor;
	MDB_val k, v;
	int rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
	if (rc != 0)
		return rc;
	rc = mdb_dbi_open(txn, NULL, 0, dbi);
	if (rc == 0)
		rc = mdb_cursor_open(txn, *dbi, &cursor);
	if (rc == 0) {
		rc = mdb_cursor_get(cursor, &k, &v, MDB_FIRST);
		mdb_cursor_close(cursor);
		if (rc == MDB_NOTFOUND)
			rc = 0;
	}
	if (rc == 0)
		return mdb_txn_commit(txn);
	mdb_txn_abort(txn);
	return rc;
}

/* remember - the file as looked at: st (taken before the look) and the
 * meta page LMDB uses */
static void remember(struct cache *c, const struct stat *st, const struct mdbcheck_meta *m)
{
	c->seen = true;
	c->seen_mtime = st->st_mtim;
	c->seen_size = st->st_size;
	c->seen_txnid = m->txnid;
	c->need_bytes = (off_t)((m->last_pg + 1) * m->psize);
}

/* walk - both trees of the snapshot a read transaction pins (its pages are
 * not reused while it is open); damage only when found twice in a row (a
 * meta page can be read while a writer rewrites it) */
static int walk(struct cache *c, int fd)
{
	struct mdbcheck_meta m[2];
	int newest, damaged = 0;
	for (int tries = 0; tries < 3 && damaged < 2; tries++) {
		MDB_txn *txn;
		int rc = mdb_txn_begin(c->env, NULL, MDB_RDONLY, &txn);
		if (rc != 0)
			return rc;
		doing.txn = txn;
		doing.txn_rdonly = true;
		uint64_t id = mdb_txn_id(txn);
		enum mdbcheck_status st =
		        mdbcheck_metas(fd, m, &newest, doing.problem, sizeof(doing.problem));
		int k = st != MDBCHECK_OK ? -1 : m[0].txnid == id ? 0 : m[1].txnid == id ? 1 : -1;
		if (k >= 0)
			st = mdbcheck_trees(fd, &m[k], CHECK_BUDGET, NULL, doing.problem,
			                    sizeof(doing.problem));
		doing.txn = NULL;
		mdb_txn_abort(txn);
		if (st == MDBCHECK_IOERR)
			return EIO;
		if (st == MDBCHECK_OK && k >= 0)
			return 0;
		damaged = st == MDBCHECK_DAMAGED ? damaged + 1 : 0; /* else writers moved on: again */
	}
	return damaged >= 2 ? CACHE_DAMAGED : 0;
}

/* look - the file before a transaction (see the header comment): 0, or
 * CACHE_DAMAGED with doing.problem, or an error. One fstat() when nothing
 * changed; the meta pages when something did; the trees when it was not a
 * commit, or with walk_always. */
static int look_at(struct cache *c, bool walk_always)
{
	struct stat st;
	struct mdbcheck_meta m[2];
	int fd, newest;
	if (mdb_env_get_fd(c->env, &fd) != 0 || fstat(fd, &st) != 0)
		return EIO;
	if (st.st_size < c->need_bytes) {
		snprintf(doing.problem, sizeof(doing.problem),
		         "file is %lld bytes but LMDB uses %lld (truncated while open?)",
		         (long long)st.st_size, (long long)c->need_bytes);
		return CACHE_DAMAGED;
	}
	if (!walk_always && c->seen && st.st_size == c->seen_size &&
	    st.st_mtim.tv_sec == c->seen_mtime.tv_sec && st.st_mtim.tv_nsec == c->seen_mtime.tv_nsec)
		return 0;
	/* a commit of ours under way: its writer looks right after it (a
	 * look now could read the meta pages before the commit writes them
	 * and walk both trees for nothing) */
	uint64_t begun = atomic_load(&c->commits_begun);
	if (!walk_always && atomic_load(&c->commits_in_flight) > 0)
		return 0;
	enum mdbcheck_status ms = mdbcheck_metas(fd, m, &newest, doing.problem, sizeof(doing.problem));
	if (ms == MDBCHECK_DAMAGED) /* once more: a meta page being rewritten reads torn */
		ms = mdbcheck_metas(fd, m, &newest, doing.problem, sizeof(doing.problem));
	if (ms != MDBCHECK_OK)
		return ms == MDBCHECK_DAMAGED ? CACHE_DAMAGED : EIO;
	if (walk_always || !c->seen || m[newest].txnid == c->seen_txnid) {
		if (!walk_always &&
		    (atomic_load(&c->commits_in_flight) > 0 || atomic_load(&c->commits_begun) != begun))
			return 0; /* as above: the meta pages were read before our commit wrote them */
		int rc = walk(c, fd);
		if (rc != 0)
			return rc;
	}
	remember(c, &st, &m[newest]);
	return 0;
}

/* look - look_at under look_lock (readers look concurrently; the lock is
 * held for an fstat() when nothing changed, a few pread()s when something
 * did); a guard that fires inside it lets it go */
static int look(struct cache *c, bool walk_always)
{
	pthread_mutex_lock(&c->look_lock);
	doing.look_held = &c->look_lock;
	int rc = look_at(c, walk_always);
	doing.look_held = NULL;
	pthread_mutex_unlock(&c->look_lock);
	return rc;
}

/* meta_damage - LMDB could not open the file: is that its meta pages
 * (doing.problem says what)? A page size or map size it cannot use gives
 * EINVAL or ENOMEM, not MDB_INVALID. */
static bool meta_damage(struct cache *c)
{
	struct mdbcheck_meta m[2];
	int newest, fd = open(c->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	bool damaged =
	        mdbcheck_metas(fd, m, &newest, doing.problem, sizeof(doing.problem)) == MDBCHECK_DAMAGED;
	close(fd);
	return damaged;
}

/* env_open_body - env_open under a guard: open, look at the whole file
 * before LMDB reads a page of it, settle the map, a first read */
static int env_open_body(struct cache *c, void *unused)
{
	MDB_envinfo info;
	MDB_env *env;
	int rc = mdb_env_create(&env);
	if (rc != 0)
		return rc;
	c->env = env;
	c->seen = false;
	c->need_bytes = 0;
	mdb_env_set_assert(env, on_assert);
	rc = mdb_env_set_maxreaders(env, MAX_READERS);
	if (rc == 0)
		rc = mdb_env_open(env, c->path, MDB_NOSUBDIR | MDB_NOTLS | (c->nosync ? MDB_NOSYNC : 0),
		                  0640);
	if (rc != 0 && !is_damage(rc) && meta_damage(c))
		rc = CACHE_DAMAGED;
	if (rc == 0)
		rc = look(c, true);
	if (rc == 0)
		rc = mdb_env_info(env, &info);
	if (rc == 0)
		rc = settle_map(c, env, info.me_mapsize);
	if (rc == 0)
		rc = check_env(env, &c->dbi);
	return rc;
}

/* env_open - open (or create) c->path into c->env; an LMDB error code, or
 * CACHE_DAMAGED with doing.problem */
static int env_open(struct cache *c)
{
	char lock[4096];
	struct stat st;
	lock_path(c->path, lock, sizeof(lock));
	bool data_new = access(c->path, F_OK) != 0, lock_new = access(lock, F_OK) != 0;
	bool empty = !data_new && stat(c->path, &st) == 0 && st.st_size == 0;
	int rc = guarded(c, env_open_body, NULL);
	if (rc != 0) {
		if (c->env != NULL)
			mdb_env_close(c->env);
		c->env = NULL;
		doing.fired = false; /* a guard that fired here was about this environment, now gone */
		return rc;
	}
	mdb_reader_check(c->env, NULL); /* free slots of readers that died */
	adopt_dir_owner(c->path, data_new, lock_new);
	/* LMDB starts a new file in an empty one: nothing is left to move aside */
	if (empty)
		log_msg(LOG_WARNING, "cache %s was empty (0 bytes: truncated?): starting a new one", c->path);
	return 0;
}

/* move_aside - rename a bad file to PATH.corrupt.<unix-time> (".N" added
 * should that name be taken), drop its lock file; one line logged either way */
static bool move_aside(const char *path, const char *problem)
{
	char moved[4200], lock[4096];
	long long now = (long long)time(NULL);
	snprintf(moved, sizeof(moved), "%s.corrupt.%lld", path, now);
	for (int n = 1; access(moved, F_OK) == 0 && n < 100; n++)
		snprintf(moved, sizeof(moved), "%s.corrupt.%lld.%d", path, now, n);
	lock_path(path, lock, sizeof(lock));
	if (rename(path, moved) != 0) {
		log_msg(LOG_ERR, "cache %s is unusable (%s) and cannot be moved aside: %s", path, problem,
		        strerror(errno));
		return false;
	}
	if (unlink(lock) != 0 && errno != ENOENT)
		log_msg(LOG_WARNING, "cache %s: cannot remove %s: %s", path, lock, strerror(errno));
	log_msg(LOG_WARNING, "cache %s is unusable (%s): moved aside to %s, starting a new one", path,
	        problem, moved);
	return true;
}

/* open_or_recreate - env_open, and once more after moving a bad file aside */
static int open_or_recreate(struct cache *c)
{
	int rc = env_open(c);
	if (is_damage(rc)) {
		move_aside(c->path, describe(c, rc));
		rc = env_open(c);
	}
	return rc;
}

/* cache_open - see cache.h */
struct cache *cache_open(const char *path, int max_mb, char *why, size_t why_size)
{
	char dir[4096];
	struct stat st;
	parent_dir(path, dir, sizeof(dir));
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
		snprintf(why, why_size,
		         "cache %s: directory %s is missing (create it, owned by the daemon's user)", path,
		         dir);
		log_msg(LOG_ERR, "%s", why);
		return NULL;
	}
	struct cache *c = calloc(1, sizeof(*c));
	if (c == NULL || (c->path = strdup(path)) == NULL) {
		free(c);
		snprintf(why, why_size, "cache %s: out of memory", path);
		return NULL;
	}
	pthread_once(&guard_once, guard_install);
	c->max_bytes = (size_t)(max_mb > 0 ? max_mb : 1) * MIB;
	size_t reserve = c->max_bytes / 16 > RESERVE_MIN ? c->max_bytes / 16 : RESERVE_MIN;
	c->soft_bytes = c->max_bytes - (reserve < c->max_bytes / 4 ? reserve : c->max_bytes / 4);
	pthread_rwlockattr_t attr;
	pthread_rwlockattr_init(&attr);
#ifdef __GLIBC__
	/* glibc prefers readers by default: a recovery would wait for a gap */
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
#endif
	pthread_rwlock_init(&c->env_lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	pthread_mutex_init(&c->write_lock, NULL);
	pthread_mutex_init(&c->look_lock, NULL);
	pthread_mutex_init(&c->sync_lock, NULL);
	pthread_condattr_t cattr;
	pthread_condattr_init(&cattr);
	pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
	pthread_cond_init(&c->sync_cond, &cattr);
	pthread_condattr_destroy(&cattr);
	c->sync_fd = -1;
	exclusive(c);
	int rc = open_or_recreate(c);
	release(c);
	if (rc != 0) {
		snprintf(why, why_size, "cache %s: %s", path, describe(c, rc));
		log_msg(LOG_ERR, "%s", why);
		cache_close(c);
		return NULL;
	}
	return c;
}

/* close_env - let the environment go (after a guard fired too: closing
 * reads nothing of the data file) */
static void close_env(struct cache *c)
{
	if (c->env != NULL)
		mdb_env_close(c->env);
	c->env = NULL;
	doing.generation = ++c->generation; /* this thread goes on with whatever comes next */
	c->seen = false;
	c->need_bytes = 0;
	c->reserve_open = false;
	doing.txn = NULL;
	doing.cursor = NULL;
}

/* cache_close - see cache.h; NULL is fine. The syncer stops first, then
 * what it has not synced yet is, so that a clean stop loses nothing even
 * to a power loss. */
void cache_close(struct cache *c)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&c->sync_lock);
	c->stopping = true;
	pthread_cond_signal(&c->sync_cond);
	bool running = c->syncer_running;
	c->syncer_running = false;
	pthread_mutex_unlock(&c->sync_lock);
	if (running)
		pthread_join(c->syncer, NULL);
	exclusive(c);
	if (c->env != NULL && atomic_load(&c->commits) != atomic_load(&c->synced) &&
	    mdb_env_sync(c->env, 1) == 0)
		atomic_store(&c->synced, atomic_load(&c->commits));
	close_env(c);
	release(c);
	if (c->sync_fd >= 0)
		close(c->sync_fd);
	pthread_rwlock_destroy(&c->env_lock);
	pthread_mutex_destroy(&c->write_lock);
	pthread_mutex_destroy(&c->look_lock);
	pthread_mutex_destroy(&c->sync_lock);
	pthread_cond_destroy(&c->sync_cond);
	free(c->path);
	free(c);
}

/* sync_now - the commits not synced yet, if any, onto the disk: the
 * syncer's own descriptor of the file (a dup of LMDB's, taken anew after
 * the environment changed) is synced outside env_lock, so that a sync that
 * takes milliseconds holds up no reader, no write and no recovery.
 * mdb_env_sync() does the same fdatasync() on LMDB's descriptor. */
static void sync_now(struct cache *c)
{
	uint64_t commits = atomic_load(&c->commits);
	if (commits == atomic_load(&c->synced))
		return;
	int64_t t0 = clock_mono_ms();
	shared(c);
	if (c->env != NULL && (c->sync_fd < 0 || c->sync_generation != c->generation)) {
		int fd;
		if (c->sync_fd >= 0)
			close(c->sync_fd);
		c->sync_fd = mdb_env_get_fd(c->env, &fd) == 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
		c->sync_generation = c->generation;
	}
	int fd = c->env != NULL ? c->sync_fd : -1;
	release(c);
	if (fd < 0)
		return; /* off, or no descriptor: nothing to sync (logged when it went off) */
	if (fdatasync(fd) != 0) {
		log_msg(LOG_ERR, "cache %s: sync: %s", c->path, strerror(errno));
		return;
	}
	atomic_store(&c->synced, commits);
	atomic_fetch_add(&c->syncs, 1);
	log_msg(LOG_DEBUG, "cache %s: synced up to commit %llu in %lld ms", c->path,
	        (unsigned long long)commits, (long long)(clock_mono_ms() - t0));
}

/* syncer_run - the syncer thread: sync_now every sync_interval_ms until
 * cache_close() stops it */
static void *syncer_run(void *arg)
{
	struct cache *c = arg;
	pthread_mutex_lock(&c->sync_lock);
	while (!c->stopping) {
		struct timespec at;
		clock_gettime(CLOCK_MONOTONIC, &at);
		at.tv_sec += c->sync_interval_ms / 1000;
		at.tv_nsec += (c->sync_interval_ms % 1000) * 1000000;
		if (at.tv_nsec >= 1000000000) {
			at.tv_sec++;
			at.tv_nsec -= 1000000000;
		}
		while (!c->stopping && pthread_cond_timedwait(&c->sync_cond, &c->sync_lock, &at) != ETIMEDOUT)
			;
		if (c->stopping)
			break;
		pthread_mutex_unlock(&c->sync_lock);
		sync_now(c);
		pthread_mutex_lock(&c->sync_lock);
	}
	pthread_mutex_unlock(&c->sync_lock);
	return NULL;
}

/* cache_sync_every - see cache.h */
bool cache_sync_every(struct cache *c, int64_t interval_ms)
{
	if (c == NULL || interval_ms <= 0)
		return true;
	sigset_t all, old;
	sigfillset(&all);
	pthread_mutex_lock(&c->sync_lock);
	if (c->syncer_running) {
		pthread_mutex_unlock(&c->sync_lock);
		return false;
	}
	c->sync_interval_ms = interval_ms;
	/* the thread takes no signals: they are the daemon's other threads' */
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int rc = pthread_create(&c->syncer, NULL, syncer_run, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	c->syncer_running = rc == 0;
	pthread_mutex_unlock(&c->sync_lock);
	if (rc != 0) {
		log_msg(LOG_ERR, "cache %s: cannot start the sync thread (%s): every commit is synced",
		        c->path, strerror(rc));
		return false;
	}
	exclusive(c);
	c->nosync = true;
	if (c->env != NULL)
		mdb_env_set_flags(c->env, MDB_NOSYNC, 1);
	release(c);
	return true;
}

/* cache_sync_stats - see cache.h */
void cache_sync_stats(struct cache *c, struct cache_sync_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (c == NULL)
		return;
	out->syncs = atomic_load(&c->syncs);
	uint64_t synced = atomic_load(&c->synced);
	out->commits = atomic_load(&c->commits);
	out->unsynced = out->commits - synced;
	out->interval_ms = c->nosync ? c->sync_interval_ms : 0;
}

/* same_file - does the path still name the file our environment has open? */
static bool same_file(struct cache *c)
{
	struct stat mine, named;
	int fd;
	if (c->env == NULL || mdb_env_get_fd(c->env, &fd) != 0 || fstat(fd, &mine) != 0)
		return false;
	return stat(c->path, &named) == 0 && mine.st_ino == named.st_ino && mine.st_dev == named.st_dev;
}

/* go_off - run without a cache until OFF_RETRY has passed: one line */
static void go_off(struct cache *c, int64_t now, const char *why)
{
	close_env(c);
	c->off_until_ms = now + OFF_RETRY;
	log_msg(LOG_ERR,
	        "cache %s: %s: running without a cache for %d minutes (every lookup misses, nothing is "
	        "stored)",
	        c->path, why, OFF_RETRY / 60000);
}

/* usable - is there an environment? While off, the path is opened again
 * once OFF_RETRY has passed (silently when that fails again), under
 * env_lock exclusive; returns with env_lock held as it was. */
static bool usable(struct cache *c)
{
	if (c->env != NULL)
		return true;
	int64_t now = clock_mono_ms();
	if (now < c->off_until_ms)
		return false;
	enum held before = doing.held;
	exclusive(c);
	if (c->env == NULL && now >= c->off_until_ms) { /* else another thread was first */
		if (open_or_recreate(c) == 0)
			log_msg(LOG_NOTICE, "cache %s: usable again", c->path);
		else
			c->off_until_ms = now + OFF_RETRY;
	}
	if (before == HELD_SHARED)
		shared(c);
	return c->env != NULL;
}

/* reopen - close the environment and open the path again; with drop set
 * (and the file still ours) delete it first. env_lock held exclusive, no
 * transaction open. */
static void reopen(struct cache *c, bool drop)
{
	char lock[4096], why[400];
	bool ours = same_file(c);
	close_env(c);
	lock_path(c->path, lock, sizeof(lock));
	if (drop && ours && (unlink(c->path) != 0 || unlink(lock) != 0) && errno != ENOENT)
		log_msg(LOG_ERR, "cache %s: cannot delete: %s", c->path, strerror(errno));
	int rc = open_or_recreate(c);
	if (rc != 0) {
		snprintf(why, sizeof(why), "reopen failed: %s", describe(c, rc));
		go_off(c, clock_mono_ms(), why);
	}
}

/* follow - after another process replaced the file, use the new one */
static void follow(struct cache *c)
{
	if (c->env == NULL || same_file(c))
		return;
	enum held before = doing.held;
	if (exclusive(c) && c->env != NULL && !same_file(c)) { /* else another thread followed */
		log_msg(LOG_NOTICE, "cache %s was replaced by another process: reopening it", c->path);
		reopen(c, false);
	}
	if (before == HELD_SHARED)
		shared(c);
}

/* recover - after damage (rc: see is_damage()) found while doing what:
 * take env_lock exclusive (kept until the caller's release), close the
 * environment, move the file aside if rc proves damage and it
 * is still ours, open the path afresh; at most once a minute, else (or if
 * that fails) run without a cache for a while. One line logged. */
static void recover(struct cache *c, int rc, const char *what)
{
	char problem[400], why[800];
	snprintf(problem, sizeof(problem), "%s, found by a %s", describe(c, rc), what);
	if (!exclusive(c) || c->env == NULL)
		return; /* another thread replaced the environment meanwhile: that was the recovery */
	int64_t now = clock_mono_ms();
	bool ours = same_file(c);
	close_env(c);
	if (c->recovered_once && now - c->last_recover_ms < RECOVER_SPACING) {
		snprintf(why, sizeof(why), "damaged again within a minute of the last recovery (%s)",
		         problem);
		go_off(c, now, why);
		return;
	}
	c->recovered_once = true;
	c->last_recover_ms = now;
	bool moved = ours && proves_damage(rc) && move_aside(c->path, problem);
	int orc = open_or_recreate(c);
	if (orc != 0) {
		snprintf(why, sizeof(why), "%s; a fresh file cannot be opened: %s", problem,
		         describe(c, orc));
		go_off(c, now, why);
	} else if (!moved) {
		log_msg(LOG_WARNING, "cache %s: %s: reopened", c->path, problem);
	}
}

/* report - log an operation's failure; damage triggers a recovery.
 * Nothing while off: that was logged when it went off. */
static void report(struct cache *c, int rc, const char *what)
{
	if (c->env == NULL || rc == CACHE_OFF)
		return;
	if (is_damage(rc))
		recover(c, rc, what);
	else
		log_msg(LOG_ERR, "cache %s: %s: %s", c->path, what, describe(c, rc));
}

/* txn_begin - look at the file (look()), then begin, adopting another
 * process's map growth (again if it grew once more meanwhile) and freeing
 * the reader slots of dead processes; the transaction is noted in c for a
 * guard that fires */
static int txn_begin(struct cache *c, unsigned flags, MDB_txn **txn)
{
	int rc = c->env == NULL ? CACHE_OFF : look(c, false);
	if (rc == 0)
		rc = mdb_txn_begin(c->env, NULL, flags, txn);
	for (int again = 0; rc == MDB_MAP_RESIZED && again < 8; again++) {
		/* the map is remapped: no transaction of this process may be open */
		MDB_envinfo info;
		enum held before = doing.held;
		exclusive(c);
		rc = c->env == NULL ? CACHE_OFF : mdb_env_set_mapsize(c->env, 0);
		if (rc == 0 && (rc = mdb_env_info(c->env, &info)) == 0)
			rc = settle_map(c, c->env, info.me_mapsize);
		/* the environment may have changed meanwhile: begin in whichever is there */
		if (before == HELD_SHARED)
			shared(c);
		if (rc == 0)
			rc = c->env == NULL ? CACHE_OFF : mdb_txn_begin(c->env, NULL, flags, txn);
	}
	if (rc == MDB_READERS_FULL) {
		mdb_reader_check(c->env, NULL);
		rc = mdb_txn_begin(c->env, NULL, flags, txn);
	}
	if (rc == 0) {
		doing.txn = *txn;
		doing.txn_rdonly = (flags & MDB_RDONLY) != 0;
	}
	return rc;
}

/* txn_abort - end a transaction without a trace */
static void txn_abort(struct cache *c, MDB_txn *txn)
{
	doing.txn = NULL;
	mdb_txn_abort(txn);
}

/* txn_commit - commit, then look at the file at once: the change is ours.
 * The transaction stays noted until the commit returns: should a guard
 * fire inside it, it is aborted (freeing LMDB's writer lock). */
static int txn_commit(struct cache *c, MDB_txn *txn)
{
	atomic_fetch_add(&c->commits_begun, 1);
	atomic_fetch_add(&c->commits_in_flight, 1);
	doing.committing = true;
	int rc = mdb_txn_commit(txn);
	doing.committing = false;
	atomic_fetch_sub(&c->commits_in_flight, 1);
	doing.txn = NULL;
	if (rc != 0)
		return rc;
	uint64_t n = atomic_fetch_add(&c->commits, 1) + 1;
	unsigned flags;
	if (mdb_env_get_flags(c->env, &flags) == 0 && !(flags & MDB_NOSYNC))
		atomic_store(&c->synced, n); /* LMDB synced the file: every commit before this one too */
	return look(c, false);
}

/* track - a read transaction's open cursor (NULL: closed), for a guard */
static void track(struct cache *c, MDB_cursor *cursor)
{
	if (doing.txn_rdonly)
		doing.cursor = cursor;
}

/* write_once - one write transaction running step; 0 when committed or
 * when the step had nothing to do */
static int write_once(struct cache *c, txn_step step, void *arg)
{
	MDB_txn *txn;
	int rc = txn_begin(c, 0, &txn);
	if (rc != 0)
		return rc;
	rc = step(c, txn, arg);
	if (rc != 0) {
		txn_abort(c, txn);
		return rc == STEP_NOTHING ? 0 : rc;
	}
	return txn_commit(c, txn);
}

/* Removing records: expired (or damaged) ones, and with oldest_ms also those
 * probed at or before it, up to limit, batch per transaction. A step reads
 * only the inputs and writes only the results, so a retried step is safe. */
struct prune_arg {
	int64_t now_ms, oldest_ms;  /* oldest_ms INT64_MIN: expired ones only */
	size_t batch, limit;        /* per transaction, in all */
	char resume[CACHE_KEY_MAX]; /* first key of the next batch; "" = the start */
	size_t removed;             /* committed so far */
	bool done;
	char next[CACHE_KEY_MAX]; /* results of the last step */
	size_t step_removed;
	bool step_done;
};

/* prunable - does this stored value go? */
static bool prunable(const struct prune_arg *arg, const MDB_val *v)
{
	struct cache_record rec;
	if (!cache_record_decode(v->mv_data, v->mv_size, &rec))
		return true;
	return arg->now_ms >= rec.expires_at_ms || rec.probed_at_ms <= arg->oldest_ms;
}

/* prune_step - one batch of removals from arg->resume on */
static int prune_step(struct cache *c, MDB_txn *txn, void *varg)
{
	struct prune_arg *arg = varg;
	MDB_cursor *cursor;
	MDB_val k = {strlen(arg->resume), arg->resume}, v;
	size_t room = arg->limit - arg->removed, n = 0;
	arg->next[0] = '\0';
	int rc = mdb_cursor_open(txn, c->dbi, &cursor);
	if (rc != 0)
		return rc;
	rc = mdb_cursor_get(cursor, &k, &v, k.mv_size > 0 ? MDB_SET_RANGE : MDB_FIRST);
	for (; rc == 0 && n < room; rc = mdb_cursor_get(cursor, &k, &v, MDB_NEXT)) {
		if (n == arg->batch) {
			snprintf(arg->next, sizeof(arg->next), "%.*s", (int)k.mv_size,
			         (const char *)k.mv_data);
			break;
		}
		if (prunable(arg, &v) && (rc = mdb_cursor_del(cursor, 0)) == 0)
			n++;
		if (rc != 0)
			break;
	}
	mdb_cursor_close(cursor);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return rc;
	arg->step_removed = n;
	arg->step_done = rc == MDB_NOTFOUND || n == room;
	return n == 0 ? STEP_NOTHING : 0;
}

/* prune_apply - count a committed step's results */
static void prune_apply(struct prune_arg *arg)
{
	arg->removed += arg->step_removed;
	arg->done = arg->step_done;
	memcpy(arg->resume, arg->next, sizeof(arg->resume));
}

/* prune_full - prune one record a transaction: in a full map a transaction
 * can only reuse what the one two before it freed, so the transactions
 * stay as small as the first ones must be */
static size_t prune_full(struct cache *c, int64_t now_ms, int64_t oldest_ms, size_t limit)
{
	struct prune_arg arg = {.now_ms = now_ms, .oldest_ms = oldest_ms, .batch = 1, .limit = limit};
	while (!arg.done && write_once(c, prune_step, &arg) == 0)
		prune_apply(&arg);
	return arg.removed;
}

/* cmp_i64 - ascending, for qsort */
static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

/* oldest_eighth - how many records make the oldest eighth (at least
 * MIN_EVICT), and about the probed_at of the last of them, from a sample of
 * at most SAMPLE records; a damaged record counts as the oldest. 0 when
 * empty or on error. */
static size_t oldest_eighth(struct cache *c, int64_t *threshold)
{
	MDB_txn *txn;
	MDB_cursor *cursor;
	MDB_val k, v;
	MDB_stat st;
	struct cache_record rec;
	size_t count = 0, n = 0, seen = 0, stride;
	int64_t *sample = malloc(SAMPLE * sizeof(*sample));
	if (sample == NULL || txn_begin(c, MDB_RDONLY, &txn) != 0) {
		free(sample);
		return 0;
	}
	if (mdb_stat(txn, c->dbi, &st) == 0 && mdb_cursor_open(txn, c->dbi, &cursor) == 0) {
		track(c, cursor);
		stride = st.ms_entries / SAMPLE + 1;
		while (count < SAMPLE && mdb_cursor_get(cursor, &k, &v, MDB_NEXT) == 0)
			if (seen++ % stride == 0)
				sample[count++] = cache_record_decode(v.mv_data, v.mv_size, &rec)
				                          ? rec.probed_at_ms
				                          : INT64_MIN;
		track(c, NULL);
		mdb_cursor_close(cursor);
		n = st.ms_entries / 8 > MIN_EVICT ? st.ms_entries / 8 : MIN_EVICT;
		n = n < st.ms_entries ? n : st.ms_entries;
	}
	txn_abort(c, txn);
	if (count > 0 && n > 0) {
		qsort(sample, count, sizeof(*sample), cmp_i64);
		size_t at = (count * n + st.ms_entries - 1) / st.ms_entries; /* same share of the sample */
		*threshold = sample[at > 0 ? at - 1 : 0];
	}
	free(sample);
	return count > 0 ? n : 0;
}

/* writers - flock() on the data file among processes: every write holds it
 * shared, free_up() exclusive, so no other process's writes take the pages
 * its small transactions free for each other. LMDB locks another file. */
static void writers(struct cache *c, int op)
{
	int fd;
	if (c->env != NULL && mdb_env_get_fd(c->env, &fd) == 0)
		while (flock(fd, op) != 0 && errno == EINTR)
			;
}

/* free_up - after a write went through in the reserve: sweep, or else
 * evict the oldest eighth, then close the reserve; if nothing can be
 * removed, start afresh. Many small transactions, not synced one by one
 * but once at the end. With the sync thread (MDB_NOSYNC) the removals are
 * write transactions beside readers (env_lock shared), synced by that
 * thread like any commit: not here, on the writer's thread (the engine's
 * loop), where a sync of everything written since the last tick would
 * hold up the loop; else the environment's MDB_NOSYNC is set for them,
 * under env_lock exclusive (LMDB reads its flags in every transaction),
 * and the file synced at the end. Closing the reserve resizes the map
 * (exclusive). Returns with env_lock shared. */
static bool free_up(struct cache *c, int64_t now_ms)
{
	const char *what = "expired";
	if (!(c->nosync ? shared(c) : exclusive(c)) || c->env == NULL) {
		shared(c);
		return c->env != NULL; /* replaced meanwhile: the reserve went with the old one */
	}
	writers(c, LOCK_EX);
	if (!c->nosync)
		mdb_env_set_flags(c->env, MDB_NOSYNC, 1);
	size_t removed = prune_full(c, now_ms, INT64_MIN, SIZE_MAX);
	if (removed == 0) {
		int64_t threshold;
		size_t n = oldest_eighth(c, &threshold);
		what = "oldest";
		if (n > 0)
			removed = prune_full(c, now_ms, threshold, n);
	}
	if (c->env != NULL && !c->nosync)
		mdb_env_set_flags(c->env, MDB_NOSYNC, 0);
	if (c->env != NULL && !c->nosync && mdb_env_sync(c->env, 1) == 0)
		atomic_store(&c->synced, atomic_load(&c->commits));
	if (!exclusive(c) || c->env == NULL) {
		shared(c);
		return c->env != NULL; /* as above */
	}
	mdb_env_set_mapsize(c->env, c->soft_bytes); /* LMDB keeps every page in use */
	writers(c, LOCK_SH);
	c->reserve_open = false;
	if (removed > 0) {
		log_msg(LOG_NOTICE, "cache %s: full at %zu KiB: removed %zu %s records", c->path,
		        c->soft_bytes / 1024, removed, what);
	} else {
		log_msg(LOG_ERR, "cache %s: full at %zu MiB and nothing can be removed: starting afresh",
		        c->path, c->max_bytes / MIB);
		reopen(c, true);
	}
	shared(c);
	return c->env != NULL;
}

/* make_room - after MDB_MAP_FULL: double the map up to the soft limit;
 * there, open the reserve for this one write (free_up() follows it: its
 * first transactions can then reuse pages this one freed); with the
 * reserve open already, free up now. False when nothing could be done. */
static bool make_room(struct cache *c, int64_t now_ms)
{
	MDB_envinfo info;
	bool ok = false;
	/* resizing remaps: no transaction of this process may be open */
	if (!exclusive(c)) {
		ok = c->env != NULL; /* replaced meanwhile: write into the new one */
	} else if (c->env != NULL && mdb_env_info(c->env, &info) == 0) {
		int rc = -1;
		if (info.me_mapsize < c->soft_bytes) {
			size_t grown =
			        info.me_mapsize * 2 < c->soft_bytes ? info.me_mapsize * 2 : c->soft_bytes;
			rc = mdb_env_set_mapsize(c->env, grown);
			if (rc == 0)
				log_msg(LOG_INFO, "cache %s: map grown to %zu KiB", c->path, grown / 1024);
			else
				log_msg(LOG_ERR, "cache %s: cannot grow the map: %s", c->path,
				        mdb_strerror(rc));
		}
		if (rc == 0)
			ok = true;
		else if (!c->reserve_open && mdb_env_set_mapsize(c->env, c->max_bytes) == 0)
			ok = c->reserve_open = true;
		else
			return free_up(c, now_ms); /* back to shared itself */
	}
	shared(c);
	return ok;
}

/* write_retry - write_once, hiding MDB_MAP_FULL and damage (once) */
static int write_retry(struct cache *c, txn_step step, void *arg, int64_t now_ms)
{
	int rc = CACHE_OFF;
	for (int attempt = 0; attempt < WRITE_ATTEMPTS && c->env != NULL; attempt++) {
		rc = write_once(c, step, arg);
		if (rc == MDB_MAP_FULL && make_room(c, now_ms))
			continue;
		if (is_damage(rc) && attempt == 0) {
			recover(c, rc, "write");
			rc = CACHE_OFF;
			continue;
		}
		break;
	}
	return rc;
}

struct write_op {
	txn_step step;
	void *arg;
	int64_t now_ms;
};

/* write_body - one write, following a replaced file (under a guard) */
static int write_body(struct cache *c, void *varg)
{
	struct write_op *op = varg;
	follow(c);
	writers(c, LOCK_SH);
	int rc = write_retry(c, op->step, op->arg, op->now_ms);
	if (c->reserve_open && c->env != NULL)
		free_up(c, op->now_ms);
	writers(c, LOCK_UN);
	return rc;
}

/* write_locked - one write under write_lock, env_lock shared and a guard;
 * when the guard fires, recover and write once more; failures other than
 * "not found" are reported */
static int write_locked(struct cache *c, txn_step step, void *arg, int64_t now_ms, const char *what)
{
	struct write_op op = {step, arg, now_ms};
	pthread_mutex_lock(&c->write_lock);
	shared(c);
	int rc = usable(c) ? guarded(c, write_body, &op) : CACHE_OFF;
	if (rc == CACHE_DAMAGED && doing.fired) {
		recover(c, rc, what);
		doing.fired = false;
		rc = c->env != NULL ? guarded(c, write_body, &op) : CACHE_OFF;
	}
	doing.fired = false;
	if (rc != 0 && rc != MDB_NOTFOUND)
		report(c, rc, what);
	release(c);
	pthread_mutex_unlock(&c->write_lock);
	return rc;
}

struct read_op {
	txn_step step;
	void *arg;
};

/* read_body - step in a read transaction (under a guard) */
static int read_body(struct cache *c, void *varg)
{
	struct read_op *op = varg;
	MDB_txn *txn;
	int rc = txn_begin(c, MDB_RDONLY, &txn);
	if (rc == 0) {
		rc = op->step(c, txn, op->arg);
		txn_abort(c, txn);
	}
	return rc;
}

/* read_locked - step in a read transaction under env_lock shared (beside
 * other reads and a write: LMDB's MVCC) and a guard; failures other than
 * "not found" are reported (damage: recovered, and the read is a miss) */
static int read_locked(struct cache *c, txn_step step, void *arg, const char *what)
{
	struct read_op op = {step, arg};
	shared(c);
	int rc = usable(c) ? guarded(c, read_body, &op) : CACHE_OFF;
	doing.fired = false;
	if (rc != 0 && rc != MDB_NOTFOUND)
		report(c, rc, what);
	release(c);
	return rc;
}

/* key_val - a key as an MDB_val; false for an empty or over-long key */
static bool key_val(const char *key, MDB_val *k)
{
	size_t n = key != NULL ? strnlen(key, CACHE_KEY_MAX) : 0;
	k->mv_size = n;
	k->mv_data = (void *)key;
	return n > 0 && n < CACHE_KEY_MAX;
}

struct get_arg {
	MDB_val key;
	struct cache_record *out;
	bool found;
};

/* get_step - look a key up and decode it */
static int get_step(struct cache *c, MDB_txn *txn, void *varg)
{
	struct get_arg *arg = varg;
	MDB_val v;
	int rc = mdb_get(txn, c->dbi, &arg->key, &v);
	arg->found = rc == 0 && cache_record_decode(v.mv_data, v.mv_size, arg->out);
	return rc;
}

/* cache_get - see cache.h */
enum cache_status cache_get(struct cache *c, const char *key, int64_t now_ms, struct cache_record *out)
{
	struct get_arg arg = {.out = out};
	if (c == NULL || !key_val(key, &arg.key) || read_locked(c, get_step, &arg, "read") != 0 ||
	    !arg.found || now_ms >= out->expires_at_ms)
		return CACHE_MISS;
	return now_ms < out->refresh_at_ms ? CACHE_HIT : CACHE_STALE;
}

struct put_arg {
	MDB_val key;
	const struct cache_record *rec;
	int64_t now_ms;
	bool written; /* put_step wrote it (the replace rule let it) */
};

/* put_step - store the record unless the replace rule keeps the old one */
static int put_step(struct cache *c, MDB_txn *txn, void *varg)
{
	struct put_arg *arg = varg;
	unsigned char buf[CACHE_RECORD_MAX];
	struct cache_record old;
	MDB_val v;
	int rc = mdb_get(txn, c->dbi, &arg->key, &v);
	if (rc == 0 && cache_record_decode(v.mv_data, v.mv_size, &old) &&
	    !cache_record_may_replace(&old, arg->rec, arg->now_ms))
		return STEP_NOTHING;
	if (rc != 0 && rc != MDB_NOTFOUND)
		return rc;
	v.mv_size = cache_record_encode(arg->rec, buf, sizeof(buf));
	v.mv_data = buf;
	if (v.mv_size == 0)
		return EINVAL;
	rc = mdb_put(txn, c->dbi, &arg->key, &v, 0);
	arg->written = rc == 0;
	return rc;
}

/* cache_put_local - see cache.h */
bool cache_put_local(struct cache *c, const char *key, const struct cache_record *rec, int64_t now_ms)
{
	struct put_arg arg = {.rec = rec, .now_ms = now_ms};
	return c != NULL && key_val(key, &arg.key) && write_locked(c, put_step, &arg, now_ms, "write") == 0;
}

/* cache_put - see cache.h: cache_put_local, then the mirror (outside the
 * lock) when the record was written */
bool cache_put(struct cache *c, const char *key, const struct cache_record *rec, int64_t now_ms)
{
	struct put_arg arg = {.rec = rec, .now_ms = now_ms};
	bool ok =
	        c != NULL && key_val(key, &arg.key) && write_locked(c, put_step, &arg, now_ms, "write") == 0;
	if (ok && arg.written && c->mirror.put != NULL)
		c->mirror.put(c->mirror.arg, key, rec, now_ms);
	return ok;
}

/* cache_set_mirror - see cache.h */
void cache_set_mirror(struct cache *c, const struct cache_mirror *mirror)
{
	if (c != NULL)
		c->mirror = mirror != NULL ? *mirror : (struct cache_mirror){0};
}

/* del_step - delete one key */
static int del_step(struct cache *c, MDB_txn *txn, void *key)
{
	return mdb_del(txn, c->dbi, key, NULL);
}

/* cache_del - see cache.h */
bool cache_del(struct cache *c, const char *key)
{
	MDB_val k;
	bool ok = c != NULL && key_val(key, &k) && write_locked(c, del_step, &k, 0, "delete") == 0;
	if (c != NULL && c->mirror.del != NULL && key_val(key, &k))
		c->mirror.del(c->mirror.arg, key); /* the other side may hold it when we do not */
	return ok;
}

/* cache_sweep - see cache.h; the lock is released between batches. In a
 * full map, one record a transaction (see prune_full()). */
/* sweep_body - one batch of a sweep (under a guard) */
static int sweep_body(struct cache *c, void *varg)
{
	struct prune_arg *arg = varg;
	follow(c);
	writers(c, LOCK_SH);
	int rc = write_once(c, prune_step, arg);
	if (rc == MDB_MAP_FULL || is_damage(rc)) {
		arg->batch = rc == MDB_MAP_FULL ? 1 : arg->batch;
		rc = write_retry(c, prune_step, arg, arg->now_ms);
	}
	if (rc == 0)
		prune_apply(arg);
	if (c->reserve_open && c->env != NULL)
		free_up(c, arg->now_ms);
	writers(c, LOCK_UN);
	return rc;
}

size_t cache_sweep(struct cache *c, int64_t now_ms)
{
	struct prune_arg arg = {.now_ms = now_ms, .oldest_ms = INT64_MIN, .batch = BATCH, .limit = SIZE_MAX};
	int rc = 0;
	while (c != NULL && !arg.done && rc == 0) {
		pthread_mutex_lock(&c->write_lock);
		shared(c);
		rc = usable(c) ? guarded(c, sweep_body, &arg) : CACHE_OFF;
		doing.fired = false;
		if (rc != 0)
			report(c, rc, "sweep");
		release(c);
		pthread_mutex_unlock(&c->write_lock);
	}
	return arg.removed;
}

/* purge_step - empty the main database, counting what it held */
static int purge_step(struct cache *c, MDB_txn *txn, void *count)
{
	MDB_stat st;
	int rc = mdb_stat(txn, c->dbi, &st);
	if (rc != 0)
		return rc;
	*(size_t *)count = st.ms_entries;
	return st.ms_entries == 0 ? STEP_NOTHING : mdb_drop(txn, c->dbi, 0);
}

/* cache_purge - see cache.h */
size_t cache_purge(struct cache *c)
{
	size_t count = 0;
	return c != NULL && write_locked(c, purge_step, &count, 0, "purge") == 0 ? count : 0;
}

struct visit_arg {
	cache_visit_fn fn;
	void *arg;
};

/* visit_step - fn(arg, key, record) for each decodable record, in key
 * order, until fn returns false */
static int visit_step(struct cache *c, MDB_txn *txn, void *varg)
{
	struct visit_arg *visit = varg;
	MDB_cursor *cursor;
	MDB_val k, v;
	char key[CACHE_KEY_MAX];
	struct cache_record rec;
	int rc = mdb_cursor_open(txn, c->dbi, &cursor);
	if (rc != 0)
		return rc;
	track(c, cursor);
	while ((rc = mdb_cursor_get(cursor, &k, &v, MDB_NEXT)) == 0) {
		if (k.mv_size >= sizeof(key) || !cache_record_decode(v.mv_data, v.mv_size, &rec))
			continue;
		memcpy(key, k.mv_data, k.mv_size);
		key[k.mv_size] = '\0';
		if (!visit->fn(visit->arg, key, &rec))
			break;
	}
	track(c, NULL);
	mdb_cursor_close(cursor);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* cache_foreach - see cache.h. fn runs under the cache's lock and must not
 * call back into the cache. Damaged records are skipped. */
bool cache_foreach(struct cache *c, cache_visit_fn fn, void *arg)
{
	struct visit_arg visit = {fn, arg};
	return c != NULL && read_locked(c, visit_step, &visit, "read") == 0;
}

struct stats_arg {
	struct cache_stats *out;
	int64_t now_ms;
};

/* count_record - one record into the statistics */
static bool count_record(void *varg, const char *key, const struct cache_record *rec)
{
	struct cache_stats *out = ((struct stats_arg *)varg)->out;
	int64_t now_ms = ((struct stats_arg *)varg)->now_ms;
	if (strncmp(key, "a:", 2) == 0)
		out->addresses++;
	else if (strncmp(key, "d:", 2) == 0)
		out->domains++;
	else
		return true;
	if (now_ms >= rec->expires_at_ms)
		out->expired++;
	out->by_outcome[rec->outcome.kind]++;
	return true;
}

/* stats_step - count every record, and measure the map: the pages up to
 * the last one used, less those on LMDB's free list (database 0) */
static int stats_step(struct cache *c, MDB_txn *txn, void *varg)
{
	struct cache_stats *out = ((struct stats_arg *)varg)->out;
	struct visit_arg visit = {count_record, varg};
	MDB_envinfo info;
	MDB_stat st;
	MDB_cursor *cursor;
	MDB_val k, v;
	size_t unused = 0;
	int rc = visit_step(c, txn, &visit);
	if (rc == 0 && (rc = mdb_env_info(c->env, &info)) == 0 && (rc = mdb_env_stat(c->env, &st)) == 0 &&
	    (rc = mdb_cursor_open(txn, 0, &cursor)) == 0) {
		track(c, cursor);
		while (mdb_cursor_get(cursor, &k, &v, MDB_NEXT) == 0)
			unused += v.mv_size >= sizeof(size_t) ? *(const size_t *)v.mv_data : 0;
		track(c, NULL);
		mdb_cursor_close(cursor);
		out->map_bytes = info.me_mapsize;
		out->used_bytes =
		        (uint64_t)(info.me_last_pgno + 1 > unused ? info.me_last_pgno + 1 - unused : 0) *
		        st.ms_psize;
	}
	return rc;
}

/* cache_stats - see cache.h */
bool cache_stats(struct cache *c, int64_t now_ms, struct cache_stats *out)
{
	struct stats_arg arg = {out, now_ms};
	memset(out, 0, sizeof(*out));
	return c != NULL && read_locked(c, stats_step, &arg, "stats") == 0;
}

struct size_arg {
	struct cache_size *out;
};

/* size_step - the records' count and the map's size, from LMDB's own
 * counters (no walk) */
static int size_step(struct cache *c, MDB_txn *txn, void *varg)
{
	struct cache_size *out = ((struct size_arg *)varg)->out;
	MDB_envinfo info;
	MDB_stat st;
	int rc = mdb_stat(txn, c->dbi, &st);
	if (rc == 0 && (rc = mdb_env_info(c->env, &info)) == 0) {
		out->records = st.ms_entries;
		out->map_bytes = info.me_mapsize;
		out->file_pages_bytes = (uint64_t)(info.me_last_pgno + 1) * st.ms_psize;
	}
	return rc;
}

/* cache_size - see cache.h */
bool cache_size(struct cache *c, struct cache_size *out)
{
	struct size_arg arg = {out};
	memset(out, 0, sizeof(*out));
	return c != NULL && read_locked(c, size_step, &arg, "size") == 0;
}
