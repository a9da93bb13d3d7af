/*
 * cache_bench.c - puts and gets per second of the LMDB cache (cache.h), in
 * one run, on a scratch file, for each way of syncing:
 *   put    one thread, new keys, for -t seconds (or -n puts)
 *   get    one thread, random keys of those, for -t seconds
 *   mixed  one writer putting (new records over random keys; pausing -w
 *          microseconds between puts, as an engine with other work; 0:
 *          none) while -r
 *          readers get random keys (each pausing -g microseconds between
 *          gets, as milter threads do; 0: none), for -t seconds: puts/s,
 *          gets/s (all readers) and the readers' latency (p50, p99, p99.9,
 *          max, and the share over 1 ms), which shows whether a read waits
 *          for a write (and its sync)
 * The ways: "sync each" (cache_sync_interval = 0: LMDB syncs every commit)
 * and "sync 1000ms" (cache_sync_every(): commits not synced, a thread
 * syncs each second). Linked against an older cache.c that has no
 * cache_sync_every (bench/cache_bench_old.sh builds one from any commit,
 * such as the one-mutex store before the rwlock), only "sync each" runs:
 * that is the comparison of the locking.
 *
 * Usage: bench/cache_bench [-d DIR] [-n MAXPUTS] [-t SECONDS] [-r READERS]
 *        [-g GAP_US] [-w PUT_GAP_US] [-s SYNC_MS] [-q]
 * DIR (default: a new directory under $TMPDIR or /var/tmp) must be on the
 * disk the cache would live on: a sync's cost is the disk's. -s runs only
 * that way (0: sync each). -q: a smoke run (0.2 s phases, 2 readers) whose
 * output make check looks at (tests/cache_bench_smoke.sh).
 * Output: one line per phase and way, "key=value" fields, then nothing
 * else; timings are noisy on a shared machine: repeat, take medians.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "log.h"

/* an older cache.c (and its cache.h) has no cache_sync_every: then this
 * is NULL */
extern bool cache_sync_every(struct cache *cache, int64_t interval_ms) __attribute__((weak));

#define NOW_MS     INT64_C(1700000000000)
#define DAY_MS     INT64_C(86400000)
#define LAT_BUCKET 100000 /* latency histogram: 1 us buckets up to 100 ms */

struct opts {
	char dir[512];
	long max_puts;
	double seconds;
	int readers;
	long gap_us;     /* a reader's pause between gets */
	long put_gap_us; /* the writer's pause between puts */
	long sync_ms;    /* -1: both ways */
};

/* now_s - monotonic seconds */
static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* now_us - monotonic microseconds */
static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* rng - xorshift64*, one state per thread */
static uint64_t rng(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * UINT64_C(2685821657736338717);
}

/* record - a valid answer probed at probed_ms, living a day */
static void record(struct cache_record *rec, int64_t probed_ms)
{
	memset(rec, 0, sizeof(*rec));
	outcome_set(&rec->outcome, OUTCOME_VALID, STAGE_RCPT, 250, "2.1.5", "ok", "bench");
	snprintf(rec->outcome.mx_host, sizeof(rec->outcome.mx_host), "mx1.example.org");
	rec->probed_at_ms = probed_ms;
	rec->refresh_at_ms = probed_ms + DAY_MS;
	rec->expires_at_ms = probed_ms + 2 * DAY_MS;
}

/* key - the i-th address's key */
static void key(long i, char *buf, size_t size)
{
	snprintf(buf, size, "a:user%ld@domain%ld.example.org", i, i % 997);
}

struct shared {
	struct cache *cache;
	long gap_us, put_gap_us;
	long keys;          /* keys 0..keys-1 exist */
	atomic_int stop;    /* the phase is over */
	atomic_long probed; /* the writer's next probed_at offset: always newer */
};

struct reader {
	pthread_t thread;
	struct shared *sh;
	uint64_t seed;
	long gets, misses;
	uint32_t *hist; /* LAT_BUCKET + 1 buckets */
	int64_t max_us;
};

/* reader_run - random gets until stop, each timed */
static void *reader_run(void *arg)
{
	struct reader *r = arg;
	struct cache_record out;
	char k[CACHE_KEY_MAX];
	while (!atomic_load(&r->sh->stop)) {
		key((long)(rng(&r->seed) % (uint64_t)r->sh->keys), k, sizeof(k));
		int64_t t0 = now_us();
		enum cache_status st = cache_get(r->sh->cache, k, NOW_MS, &out);
		int64_t dt = now_us() - t0;
		r->hist[dt < LAT_BUCKET ? dt : LAT_BUCKET]++;
		r->max_us = dt > r->max_us ? dt : r->max_us;
		r->gets++;
		r->misses += st == CACHE_MISS;
		if (r->sh->gap_us > 0)
			usleep((useconds_t)r->sh->gap_us);
	}
	return NULL;
}

struct writer {
	pthread_t thread;
	struct shared *sh;
	uint64_t seed;
	long puts, failed;
};

/* writer_run - puts of newer records over random keys until stop */
static void *writer_run(void *arg)
{
	struct writer *w = arg;
	struct cache_record rec;
	char k[CACHE_KEY_MAX];
	while (!atomic_load(&w->sh->stop)) {
		key((long)(rng(&w->seed) % (uint64_t)w->sh->keys), k, sizeof(k));
		record(&rec, NOW_MS + atomic_fetch_add(&w->sh->probed, 1));
		w->failed += !cache_put(w->sh->cache, k, &rec, NOW_MS);
		w->puts++;
		if (w->sh->put_gap_us > 0)
			usleep((useconds_t)w->sh->put_gap_us);
	}
	return NULL;
}

/* percentile - the latency (us) below which share of the samples fall */
static long percentile(const uint64_t *hist, uint64_t total, double share)
{
	uint64_t want = (uint64_t)((double)total * share), seen = 0;
	for (long us = 0; us <= LAT_BUCKET; us++) {
		seen += hist[us];
		if (seen > want)
			return us;
	}
	return LAT_BUCKET;
}

/* one_way - the three phases on a fresh file, syncing every sync_ms (0:
 * each commit); false when the cache cannot be opened */
static bool one_way(const struct opts *o, long sync_ms, const char *label)
{
	char path[600], why[300], k[CACHE_KEY_MAX];
	struct cache_record rec, out;
	snprintf(path, sizeof(path), "%s/bench-%ld.lmdb", o->dir, sync_ms);
	unlink(path);
	struct shared sh = {.gap_us = o->gap_us, .put_gap_us = o->put_gap_us};
	sh.cache = cache_open(path, 1024, why, sizeof(why));
	if (sh.cache == NULL) {
		fprintf(stderr, "cache_bench: %s\n", why);
		return false;
	}
	if (sync_ms > 0 && !cache_sync_every(sh.cache, sync_ms)) {
		fprintf(stderr, "cache_bench: cannot start the sync thread\n");
		cache_close(sh.cache);
		return false;
	}

	/* put: new keys, one thread */
	long n = 0, failed = 0;
	double t0 = now_s(), t1 = t0;
	while (n < o->max_puts && t1 - t0 < o->seconds) {
		key(n, k, sizeof(k));
		record(&rec, NOW_MS);
		failed += !cache_put(sh.cache, k, &rec, NOW_MS);
		n++;
		if (n % 16 == 0)
			t1 = now_s();
	}
	t1 = now_s();
	sh.keys = n;
	printf("phase=put way=%s threads=1 puts=%ld failed=%ld secs=%.3f puts_per_s=%.0f\n", label, n, failed,
	       t1 - t0, (double)n / (t1 - t0));

	/* get: one thread, random keys */
	uint64_t seed = 88172645463325252ULL;
	long gets = 0, misses = 0;
	t0 = now_s();
	do {
		for (int i = 0; i < 256; i++, gets++) {
			key((long)(rng(&seed) % (uint64_t)sh.keys), k, sizeof(k));
			misses += cache_get(sh.cache, k, NOW_MS, &out) == CACHE_MISS;
		}
		t1 = now_s();
	} while (t1 - t0 < o->seconds);
	printf("phase=get way=%s threads=1 gets=%ld misses=%ld secs=%.3f gets_per_s=%.0f\n", label, gets,
	       misses, t1 - t0, (double)gets / (t1 - t0));

	/* mixed: one writer, o->readers readers */
	struct writer w = {.sh = &sh, .seed = 0x9E3779B97F4A7C15ULL};
	struct reader *r = calloc((size_t)o->readers, sizeof(*r));
	uint64_t *hist = calloc(LAT_BUCKET + 1, sizeof(*hist));
	if (r == NULL || hist == NULL) {
		fprintf(stderr, "cache_bench: out of memory\n");
		exit(1);
	}
	atomic_store(&sh.stop, 0);
	t0 = now_s();
	for (int i = 0; i < o->readers; i++) {
		r[i] = (struct reader){.sh = &sh, .seed = 0x2545F4914F6CDD1DULL + (uint64_t)i * 7919};
		r[i].hist = calloc(LAT_BUCKET + 1, sizeof(*r[i].hist));
		if (r[i].hist == NULL || pthread_create(&r[i].thread, NULL, reader_run, &r[i]) != 0) {
			fprintf(stderr, "cache_bench: cannot start a reader\n");
			exit(1);
		}
	}
	if (pthread_create(&w.thread, NULL, writer_run, &w) != 0) {
		fprintf(stderr, "cache_bench: cannot start the writer\n");
		exit(1);
	}
	usleep((useconds_t)(o->seconds * 1e6));
	atomic_store(&sh.stop, 1);
	pthread_join(w.thread, NULL);
	gets = misses = 0;
	int64_t max_us = 0;
	for (int i = 0; i < o->readers; i++) {
		pthread_join(r[i].thread, NULL);
		gets += r[i].gets;
		misses += r[i].misses;
		max_us = r[i].max_us > max_us ? r[i].max_us : max_us;
		for (long b = 0; b <= LAT_BUCKET; b++)
			hist[b] += r[i].hist[b];
		free(r[i].hist);
	}
	t1 = now_s();
	uint64_t slow = 0;
	for (long b = 1000; b <= LAT_BUCKET; b++)
		slow += hist[b];
	printf("phase=mixed way=%s readers=%d gap_us=%ld put_gap_us=%ld puts=%ld failed=%ld puts_per_s=%.0f "
	       "gets=%ld "
	       "misses=%ld gets_per_s=%.0f get_p50_us=%ld get_p99_us=%ld get_p999_us=%ld get_max_us=%lld "
	       "get_over_1ms_pct=%.2f secs=%.3f\n",
	       label, o->readers, o->gap_us, o->put_gap_us, w.puts, w.failed, (double)w.puts / (t1 - t0),
	       gets, misses, (double)gets / (t1 - t0), percentile(hist, (uint64_t)gets, 0.5),
	       percentile(hist, (uint64_t)gets, 0.99), percentile(hist, (uint64_t)gets, 0.999),
	       (long long)max_us, gets > 0 ? 100.0 * (double)slow / (double)gets : 0.0, t1 - t0);
	free(hist);
	free(r);
	fflush(stdout);
	cache_close(sh.cache);
	char lock[700];
	snprintf(lock, sizeof(lock), "%s-lock", path);
	unlink(path);
	unlink(lock);
	return true;
}

int main(int argc, char **argv)
{
	struct opts o = {.max_puts = 1000000, .seconds = 3, .readers = 4, .sync_ms = -1};
	bool made = false;
	int ch;
	while ((ch = getopt(argc, argv, "d:n:t:r:g:w:s:q")) != -1) {
		switch (ch) {
		case 'd':
			snprintf(o.dir, sizeof(o.dir), "%s", optarg);
			break;
		case 'n':
			o.max_puts = atol(optarg);
			break;
		case 't':
			o.seconds = atof(optarg);
			break;
		case 'r':
			o.readers = atoi(optarg);
			break;
		case 'g':
			o.gap_us = atol(optarg);
			break;
		case 'w':
			o.put_gap_us = atol(optarg);
			break;
		case 's':
			o.sync_ms = atol(optarg);
			break;
		case 'q':
			o.seconds = 0.2;
			o.readers = 2;
			o.max_puts = 2000;
			break;
		default:
			fprintf(stderr, "usage: cache_bench [-d DIR] [-n MAXPUTS] [-t SECONDS] [-r READERS] "
			                "[-g GAP_US] [-w PUT_GAP_US] [-s SYNC_MS] [-q]\n");
			return 2;
		}
	}
	if (o.max_puts < 1 || o.seconds <= 0 || o.readers < 1 || o.readers > 256 || o.gap_us < 0 ||
	    o.gap_us > 1000000 || o.put_gap_us < 0 || o.put_gap_us > 1000000) {
		fprintf(stderr, "cache_bench: bad -n, -t, -r, -g or -w\n");
		return 2;
	}
	log_open("cache_bench", LOG_USER, true, LOG_WARNING);
	if (o.dir[0] == '\0') {
		const char *tmp = getenv("TMPDIR");
		snprintf(o.dir, sizeof(o.dir), "%s/cache_bench.XXXXXX", tmp != NULL ? tmp : "/var/tmp");
		if (mkdtemp(o.dir) == NULL) {
			fprintf(stderr, "cache_bench: %s: %s\n", o.dir, strerror(errno));
			return 1;
		}
		made = true;
	}
	bool ok = true;
	if (o.sync_ms <= 0)
		ok = one_way(&o, 0, "sync_each");
	if (ok && o.sync_ms != 0) {
		char label[32];
		long ms = o.sync_ms > 0 ? o.sync_ms : 1000;
		snprintf(label, sizeof(label), "sync_%ldms", ms);
		if (cache_sync_every == NULL)
			fprintf(stderr, "cache_bench: this cache.c has no cache_sync_every: %s skipped\n",
			        label);
		else
			ok = one_way(&o, ms, label);
	}
	if (made)
		rmdir(o.dir);
	return ok ? 0 : 1;
}
