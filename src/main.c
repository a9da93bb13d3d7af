/*
 * main.c - vemilter: command line, configuration, daemon life cycle.
 *
 * Order of start-up, and why: read and check the config (errors go to the
 * terminal); detach; open the milter socket while still root; only then
 * write the pid file (a second instance that cannot listen never touches
 * the running one's pid file or socket); drop to the configured user;
 * serve. At exit the pid file is removed only if it still names this
 * process, and the unix socket only if it is still the one we created.
 * Owns the loaded configuration and the pid file.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cache.h"
#include "conf.h"
#include "engine.h"
#include "log.h"
#include "milter.h"
#include "redisurl.h"
#include "shared.h"
#include "verify.h"

#define EXIT_USAGE 2

/* How long a stop lets in-flight sessions finish: Postfix's default
 * milter_command_timeout, after which the MTA gives up on us anyway. */
#define DRAIN_SECONDS 30

struct options {
	const char *conf_path;
	bool foreground;
	bool check_only;
	bool debug;
};

/* usage - the synopsis, to out */
static void usage(FILE *out)
{
	fprintf(out,
	        "usage: vemilter [-c FILE] [-f] [-n] [-d] [-V|--version] [-h|--help]\n"
	        "  -c FILE  configuration file (default %s)\n"
	        "  -f       stay in the foreground and log to stderr\n"
	        "  -n       check the configuration, the user and the cache, and exit\n"
	        "  -d       log debug messages\n"
	        "  -V, --version  print the version and exit\n"
	        "  -h, --help     print this help and exit\n",
	        CONF_DEFAULT_PATH);
}

/* parse_options - argv into opts; exits for -V, -h and usage errors */
static void parse_options(int argc, char **argv, struct options *opts)
{
	static const struct option longopts[] = {
	        {"help", no_argument, NULL, 'h'}, {"version", no_argument, NULL, 'V'}, {NULL, 0, NULL, 0}};
	int c;
	opts->conf_path = CONF_DEFAULT_PATH;
	while ((c = getopt_long(argc, argv, "c:fndVh", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			opts->conf_path = optarg;
			break;
		case 'f':
			opts->foreground = true;
			break;
		case 'n':
			opts->check_only = true;
			break;
		case 'd':
			opts->debug = true;
			break;
		case 'V':
			printf("vemilter %s\n", PACKAGE_VERSION);
			exit(EXIT_SUCCESS);
		case 'h':
			usage(stdout);
			exit(EXIT_SUCCESS);
		default:
			usage(stderr);
			exit(EXIT_USAGE);
		}
	}
	if (optind < argc) {
		fprintf(stderr, "vemilter: unexpected argument \"%s\"\n", argv[optind]);
		usage(stderr);
		exit(EXIT_USAGE);
	}
}

/* print_conf_error - conf_load's callback: one "file:line: message" a line */
static void print_conf_error(void *arg, const char *message)
{
	int *count = arg;
	(*count)++;
	fprintf(stderr, "%s\n", message);
}

/* lookup_ids - uid/gid for the run user and the socket group; each that
 * does not exist is logged (the start and -n both name all of them) */
static bool lookup_ids(const struct conf *conf, uid_t *uid, gid_t *user_gid, gid_t *socket_gid)
{
	bool ok = true;
	*uid = (uid_t)-1;
	*user_gid = (gid_t)-1;
	*socket_gid = (gid_t)-1;
	if (conf->user[0] != '\0') {
		struct passwd *pw = getpwnam(conf->user);
		if (pw == NULL) {
			log_msg(LOG_ERR,
			        "%s: user \"%s\" does not exist: create it (adduser --system --group %s) or "
			        "set \"user\"",
			        conf->path, conf->user, conf->user);
			ok = false;
		} else {
			*uid = pw->pw_uid;
			*user_gid = pw->pw_gid;
		}
	}
	if (conf->socket_group[0] != '\0') {
		struct group *gr = getgrnam(conf->socket_group);
		if (gr == NULL) {
			log_msg(LOG_ERR, "%s: socket_group \"%s\" does not exist", conf->path,
			        conf->socket_group);
			ok = false;
		} else {
			*socket_gid = gr->gr_gid;
		}
	}
	return ok;
}

/* prepare_socket_dir - create a missing unix socket directory for the user */
static bool prepare_socket_dir(const char *path, uid_t uid, gid_t gid)
{
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash == NULL || slash == dir)
		return true;
	*slash = '\0';
	if (mkdir(dir, 0755) != 0) {
		if (errno == EEXIST)
			return true;
		log_msg(LOG_ERR, "cannot create socket directory %s: %s", dir, strerror(errno));
		return false;
	}
	if (geteuid() == 0 && uid != (uid_t)-1 && chown(dir, uid, gid) != 0) {
		log_msg(LOG_ERR, "chown %s: %s", dir, strerror(errno));
		return false;
	}
	return true;
}

/* own_socket - give the socket to the run user and the socket group */
static bool own_socket(const char *path, uid_t uid, gid_t socket_gid)
{
	if (uid == (uid_t)-1 && socket_gid == (gid_t)-1)
		return true;
	if (geteuid() != 0)
		uid = (uid_t)-1; /* only root can give files away; a group we are in still works */
	if (chown(path, uid, socket_gid) != 0) {
		log_msg(LOG_ERR, "cannot set owner/group of %s: %s", path, strerror(errno));
		return false;
	}
	return true;
}

/* become_user - as root: switch for good to uid/gid (with the user's
 * groups); false, logged, when that fails or root could be regained */
static bool become_user(const struct conf *conf, uid_t uid, gid_t gid)
{
	if (initgroups(conf->user, gid) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
		log_msg(LOG_ERR, "cannot switch to user \"%s\": %s", conf->user, strerror(errno));
		return false;
	}
	if (setuid(0) == 0) {
		log_msg(LOG_ERR, "privileges could be regained after switching to \"%s\"", conf->user);
		return false;
	}
	return true;
}

/* drop_privileges - become the configured user, if we are root */
static bool drop_privileges(const struct conf *conf, uid_t uid, gid_t gid)
{
	if (geteuid() != 0) {
		if (uid != (uid_t)-1 && uid != geteuid())
			log_msg(LOG_NOTICE, "not started as root: staying uid %ld, not user \"%s\"",
			        (long)geteuid(), conf->user);
		return true;
	}
	if (uid == (uid_t)-1) {
		log_msg(LOG_WARNING, "running as root: set \"user\" in %s", conf->path);
		return true;
	}
	if (!become_user(conf, uid, gid))
		return false;
	log_msg(LOG_INFO, "running as user %s", conf->user);
	return true;
}

/* write_pid_file - our pid into path; "" means no pid file */
static bool write_pid_file(const char *path)
{
	if (path[0] == '\0')
		return true;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0) {
		log_msg(LOG_ERR, "cannot write pid file %s: %s", path, strerror(errno));
		return false;
	}
	char text[32];
	int len = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
	bool ok = write(fd, text, (size_t)len) == len;
	if (close(fd) != 0)
		ok = false;
	if (!ok)
		log_msg(LOG_ERR, "cannot write pid file %s", path);
	return ok;
}

/* read_pid_file - the pid a pid file names; 0 if none can be read */
static long read_pid_file(const char *path)
{
	char text[32] = "";
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	text[n] = '\0';
	char *end;
	long pid = strtol(text, &end, 10);
	return pid > 0 && (*end == '\n' || *end == '\0') ? pid : 0;
}

/* remove_file - best-effort clean-up at exit */
static void remove_file(const char *what, const char *path)
{
	if (path != NULL && path[0] != '\0' && unlink(path) != 0 && errno != ENOENT)
		log_msg(LOG_NOTICE, "could not remove %s %s: %s", what, path, strerror(errno));
}

/* remove_pid_file - remove path only while it names this process: after a
 * restart raced us, the file is the new daemon's */
static void remove_pid_file(const char *path)
{
	long pid = read_pid_file(path);
	if (pid == (long)getpid())
		remove_file("pid file", path);
	else if (pid != 0)
		log_msg(LOG_NOTICE, "pid file %s now names pid %ld: left alone", path, pid);
}

/* Which unix socket file we created: at exit it is removed only if the
 * path still leads to it (an admin may have started another instance on
 * the same path since). */
struct socket_id {
	bool known;
	dev_t dev;
	ino_t ino;
};

/* socket_id_of - remember the file at path */
static void socket_id_of(const char *path, struct socket_id *id)
{
	struct stat st;
	id->known = path != NULL && lstat(path, &st) == 0 && S_ISSOCK(st.st_mode);
	if (id->known) {
		id->dev = st.st_dev;
		id->ino = st.st_ino;
	}
}

/* remove_socket - remove the unix socket at path if it is still ours */
static void remove_socket(const char *path, const struct socket_id *id)
{
	struct socket_id now;
	if (path == NULL)
		return;
	socket_id_of(path, &now);
	if (!id->known || !now.known)
		return;
	if (now.dev != id->dev || now.ino != id->ino) {
		log_msg(LOG_NOTICE, "socket %s is no longer ours: left alone", path);
		return;
	}
	remove_file("socket", path);
}

/*
 * detach_begin - fork into the background, keeping the terminal until ready.
 * The original process waits on a pipe and exits 0 only when the daemon
 * reports that it is serving (so systemd's Type=forking, or an admin's
 * shell, sees start-up errors as a failed start), 1 otherwise. Returns the
 * pipe's write end in the daemon, -1 on failure.
 */
static int detach_begin(void)
{
	int ready[2];
	if (pipe(ready) != 0) {
		log_msg(LOG_ERR, "pipe: %s", strerror(errno));
		return -1;
	}
	pid_t pid = fork();
	if (pid < 0) {
		log_msg(LOG_ERR, "fork: %s", strerror(errno));
		return -1;
	}
	if (pid > 0) {
		close(ready[1]);
		char ok = 0;
		ssize_t n;
		while ((n = read(ready[0], &ok, 1)) < 0 && errno == EINTR)
			;
		_exit(n == 1 && ok == '1' ? EXIT_SUCCESS : EXIT_FAILURE);
	}
	close(ready[0]);
	if (setsid() < 0)
		log_msg(LOG_WARNING, "setsid: %s", strerror(errno));
	pid = fork(); /* never reacquire a controlling terminal */
	if (pid < 0) {
		log_msg(LOG_ERR, "fork: %s", strerror(errno));
		return -1;
	}
	if (pid > 0)
		_exit(EXIT_SUCCESS); /* the waiting parent holds the read end */
	if (chdir("/") != 0)
		log_msg(LOG_WARNING, "chdir /: %s", strerror(errno));
	return ready[1];
}

/* detach_finish - tell the waiting parent we serve; let go of the terminal */
static void detach_finish(int ready_fd, const struct conf *conf, const struct options *opts)
{
	if (write(ready_fd, "1", 1) != 1)
		log_msg(LOG_WARNING, "could not report readiness: %s", strerror(errno));
	close(ready_fd);
	int null = open("/dev/null", O_RDWR);
	if (null >= 0) {
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		if (null > STDERR_FILENO)
			close(null);
	}
	log_open("vemilter", conf->syslog_facility, false, opts->debug ? LOG_DEBUG : conf->log_level);
}

/* log_reload_error - conf_load's callback during a reload */
static void log_reload_error(void *arg, const char *message)
{
	log_msg(LOG_ERR, "reload: %s", message);
}

/* reload - SIGHUP: read the config again; keep the old one if it is bad */
static void reload(const struct conf *running, const struct options *opts, struct verifier *verifier)
{
	struct conf *fresh = conf_load(opts->conf_path, log_reload_error, NULL);
	if (fresh == NULL) {
		log_msg(LOG_ERR, "reload: %s has errors; keeping the running configuration", opts->conf_path);
		return;
	}
	/* The directives read once at start, each named when it changed. */
	char restart[512] = "";
	size_t len = 0;
	for (size_t i = 0; i < conf_directive_count(); i++)
		if (conf_directive_restart(i) && conf_directive_changed(running, fresh, i))
			len += (size_t)snprintf(restart + len,
			                        len < sizeof(restart) ? sizeof(restart) - len : 0, "%s%s",
			                        len > 0 ? ", " : "", conf_directive_name(i));
	if (len > 0)
		log_msg(LOG_WARNING, "reload: %s changed: %s take%s effect only after a restart", restart,
		        strchr(restart, ',') != NULL ? "they" : "it",
		        strchr(restart, ',') != NULL ? "" : "s");
	char why[300];
	if (verifier != NULL && !verify_reload(verifier, fresh, why, sizeof(why))) {
		log_msg(LOG_ERR, "reload: %s; keeping the running configuration", why);
		conf_unref(fresh);
		return;
	}
	milter_set_conf(fresh);
	log_set_level(opts->debug ? LOG_DEBUG : fresh->log_level);
	log_msg(LOG_NOTICE,
	        "reloaded configuration from %s: new sessions and probes use it (limits, lifetimes, budgets, "
	        "timeouts, probe settings, helo_name, dns_servers, policy)",
	        opts->conf_path);
	conf_unref(fresh);
}

/* block_stop_signals - block SIGHUP, SIGTERM and SIGINT in this thread
 * (and so in every thread it creates from now on); *set gets them, for
 * sigwait. False, logged, when the mask cannot be set. */
static bool block_stop_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	int err = pthread_sigmask(SIG_BLOCK, set, NULL);
	if (err != 0)
		log_msg(LOG_ERR, "cannot block the stop signals: %s", strerror(err));
	return err == 0;
}

/*
 * run_until_stopped - serve; SIGHUP reloads, SIGTERM/SIGINT stop.
 * This thread takes the signals with sigwait() so that a stop can let
 * in-flight sessions finish (see milter.c). Under libmilter
 * (milter_transport = libmilter) its own signal thread waits for the same
 * signals; Linux hands a process-directed signal to the main thread when
 * it is waiting for it, so that thread only sees signals that arrive while
 * this one is busy, and then stops at once: a second SIGTERM during the
 * drain means "now".
 */
static int run_until_stopped(const struct conf *running, const struct options *opts,
                             struct verifier *verifier)
{
	sigset_t stop_signals;
	if (!block_stop_signals(&stop_signals) || !milter_start())
		return EXIT_FAILURE;
	for (;;) {
		int sig = 0;
		if (sigwait(&stop_signals, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			reload(running, opts, verifier);
			continue;
		}
		log_msg(LOG_NOTICE, "received %s: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
		return milter_stop(DRAIN_SECONDS);
	}
}

/* What start_serving() got done, so a failure undoes only its own work. */
struct startup {
	bool pid_written;
	bool listening;
	struct socket_id socket; /* the unix socket file we created */
	struct verifier *verifier;
};

/* start_serving - from a known-good config to a listening, verifying
 * daemon; false (logged) on failure. The pid file is written only once the
 * socket listens: a second instance fails before it, so it never
 * overwrites (or, failing, removes) the running daemon's pid file. A
 * supervisor that waits for the pid file finds the socket ready. */
static bool start_serving(struct conf *conf, struct startup *up)
{
	uid_t uid;
	gid_t user_gid, socket_gid;
	const char *socket_path = milter_socket_path(conf->socket);

	if (!lookup_ids(conf, &uid, &user_gid, &socket_gid))
		return false;
	if (socket_path != NULL && !prepare_socket_dir(socket_path, uid, user_gid))
		return false;
	if (!milter_open(conf))
		return false; /* e.g. another vemilter is running: touch nothing of its */
	if (!(up->listening = milter_listen(conf))) {
		long other = conf->pid_file[0] != '\0' ? read_pid_file(conf->pid_file) : 0;
		if (other > 0 && other != (long)getpid() && (kill((pid_t)other, 0) == 0 || errno == EPERM))
			log_msg(LOG_ERR, "%s names pid %ld, which is running: is vemilter already running?",
			        conf->pid_file, other);
		return false;
	}
	socket_id_of(socket_path, &up->socket);
	/* The pid file says "ready": write it once the socket is the socket
	 * group's, so whoever waits for it finds a socket the MTA may use. */
	if (socket_path != NULL && !own_socket(socket_path, uid, socket_gid))
		return false;
	if (!(up->pid_written = write_pid_file(conf->pid_file)) || !drop_privileges(conf, uid, user_gid))
		return false;
	/* After the fork and the user switch: the engine thread must live in
	 * the final process, and the cache file belongs to the user. */
	char why[300];
	up->verifier = verifier_new(conf, why, sizeof(why));
	if (up->verifier == NULL) {
		log_msg(LOG_ERR, "cannot start verification: %s", why);
		return false;
	}
	milter_set_verifier(up->verifier);
	return true;
}

/* log_engine_stats - what the verifier did in this run, for the admin */
static void log_engine_stats(struct verifier *verifier)
{
	if (verifier == NULL)
		return;
	struct verify_stats st;
	verify_get_stats(verifier, &st);
	log_msg(LOG_INFO,
	        "engine: %llu probes (%llu refreshes), %llu requests joined a probe, %llu cache hits, %llu "
	        "stale answers, %llu domain facts, %llu answered from the shared cache, %llu probes "
	        "waited for another host's",
	        (unsigned long long)st.probes, (unsigned long long)st.refreshes,
	        (unsigned long long)st.joined, (unsigned long long)st.cache_hits,
	        (unsigned long long)st.stale_hits, (unsigned long long)st.domain_facts,
	        (unsigned long long)st.shared_hits, (unsigned long long)st.shared_waits);
}

/* serve - everything after the config is known good; returns the exit status */
static int serve(struct conf *conf, const struct options *opts)
{
	int ready_fd = -1;
	if (!opts->foreground && (ready_fd = detach_begin()) < 0)
		return EXIT_FAILURE;
	struct startup up = {0};
	int status = EXIT_FAILURE;
	/* Before start_serving makes the first thread (the engine's, the
	 * helo_name check's): threads inherit the mask, and a SIGHUP that one
	 * without it took would end the process by its default action, as a
	 * reload right after start did under the sanitizers. Blocked, it waits
	 * for run_until_stopped's sigwait. */
	sigset_t stop_signals;
	if (block_stop_signals(&stop_signals) && start_serving(conf, &up)) {
		if (ready_fd >= 0)
			detach_finish(ready_fd, conf, opts);
		log_msg(LOG_NOTICE, "vemilter %s started (config %s)", PACKAGE_VERSION, conf->path);
		status = run_until_stopped(conf, opts, up.verifier);
	} else if (ready_fd >= 0) {
		close(ready_fd); /* the waiting parent exits 1 */
	}
	/* Sessions cut off by the drain's deadline may still hold tickets: the
	 * process is about to exit, so leave the verifier to it rather than
	 * free what those threads may touch. */
	/* Probes still running (the budget answered their senders 4xx) get the
	 * time they need to finish, within the probe timeout: a retry after a
	 * restart is then answered from the cache instead of probing again. */
	if (up.verifier != NULL && milter_idle()) {
		int64_t bound = conf->probe_timeout_ms + 2000;
		verify_drain(up.verifier, bound < DRAIN_SECONDS * 1000 ? bound : DRAIN_SECONDS * 1000);
	}
	log_engine_stats(up.verifier);
	if (milter_idle())
		verifier_free(up.verifier);
	if (up.listening)
		remove_socket(milter_socket_path(conf->socket), &up.socket);
	if (up.pid_written)
		remove_pid_file(conf->pid_file);
	log_msg(LOG_NOTICE, "vemilter stopped");
	return status;
}

/* open_cache_as - in a child process that has become the run user (when
 * we are root), open the cache the way the daemon will: 1 if it opens, 0
 * if not, -1 when a Redis cache refuses us (AUTH or SELECT refused, its
 * password file unreadable: a configuration error; one that does not
 * answer now is only a warning).
 * A child, so that neither the privilege switch nor a file the open
 * creates is ours. */
static int open_cache_as(const struct conf *conf, uid_t uid, gid_t gid)
{
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		fprintf(stderr, "vemilter: cannot fork to check the cache: %s\n", strerror(errno));
		return false;
	}
	if (pid == 0) {
		if (geteuid() == 0 && uid != (uid_t)-1 && !become_user(conf, uid, gid))
			_exit(1);
		char why[300];
		if (redis_url_is(conf->cache)) {
			/* The shared Redis cache: reachable, and the password right
			 * (read as the daemon reads it: as the run user). An error. */
			int checked = shared_check(conf, why, sizeof(why));
			if (checked == SHARED_CHECK_REFUSED) {
				fprintf(stderr, "vemilter: %s: %s\n", conf->path, why);
				_exit(2);
			}
			/* Not answering now is no reason to refuse a start: the
			 * daemon verifies alone and reconnects (mail flows). */
			if (checked == SHARED_CHECK_UNREACHABLE)
				fprintf(stderr,
				        "vemilter: warning: %s: %s: the daemon would verify with the local "
				        "cache "
				        "alone until Redis answers\n",
				        conf->path, why);
			if (conf->cache_fallback[0] == '\0')
				_exit(0);
		}
		const char *path = redis_url_is(conf->cache) ? conf->cache_fallback : conf->cache;
		struct cache *cache = cache_open(path, conf->cache_max_mb, why, sizeof(why));
		if (cache == NULL) {
			fprintf(stderr,
			        "vemilter: the cache does not open as user \"%s\" (%s): the daemon would run "
			        "without it\n",
			        conf->user[0] != '\0' ? conf->user : "(the current one)", why);
			_exit(1);
		}
		cache_close(cache);
		_exit(0);
	}
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 2)
		return -1;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 1 : 0;
}

/* check_run_environment - for -n: what the daemon checks at start beyond
 * the file: the run user and socket group exist (errors: the daemon
 * would refuse to start), and the cache opens as that user (a warning).
 * Each is printed; returns the number of errors. */
static int check_run_environment(const struct conf *conf)
{
	uid_t uid;
	gid_t gid, socket_gid;
	int problems = lookup_ids(conf, &uid, &gid, &socket_gid) ? 0 : 1;
	/* The daemon starts without a cache it cannot open (every sender is
	 * then probed): a warning, not an error. */
	int opened = problems == 0 && conf->cache[0] != '\0' ? open_cache_as(conf, uid, gid) : 1;
	if (opened == 0)
		fprintf(stderr, "vemilter: warning: %s: the cache is not usable (see above)\n", conf->path);
	if (opened < 0)
		problems++;
	return problems;
}

int main(int argc, char **argv)
{
	struct options opts = {0};
	parse_options(argc, argv, &opts);

	int errors = 0;
	struct conf *conf = conf_load(opts.conf_path, print_conf_error, &errors);
	if (conf == NULL) {
		if (errors == 0)
			fprintf(stderr, "vemilter: %s: cannot load configuration\n", opts.conf_path);
		return EXIT_FAILURE;
	}
	if (opts.check_only) {
		int problems = check_run_environment(conf);
		if (problems == 0)
			printf("vemilter: %s: no errors\n", opts.conf_path);
		conf_unref(conf);
		return problems == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
	}
	signal(SIGPIPE, SIG_IGN); /* a peer closing while we write must not kill us */
	engine_raise_fd_limit();  /* one socket per probe in flight */
	/* Until detached, messages go to the terminal where an admin sees them. */
	log_open("vemilter", conf->syslog_facility, true, opts.debug ? LOG_DEBUG : conf->log_level);
	int status = serve(conf, &opts);
	milter_close();
	conf_unref(conf);
	log_close();
	return status;
}
