"""vmtest - shared helpers for vemilter's integration tests.

Standard library only; runs with Debian's /usr/bin/python3 (3.11).

- Tap: a tiny TAP producer (one "ok N - name" line per check, "# ..."
  diagnostics, the plan "1..N" at the end) whose done() gives the exit code.
- run_tests(): runs test functions one by one, turns an exception into a
  failed case with its traceback, cleans up after each one and is bounded by
  a watchdog, so a hanging daemon can never hang "make check".
- TempDir, free_port(): scratch space and loopback ports.
- Daemon: writes a vemilter.conf, starts "vemilter -f -c CONF", captures its
  stderr, waits (bounded) until the milter socket listens, stops it with a
  signal and returns the exit code.
- Sanitizer reports (a --enable-sanitizers build, VEMILTER_SANITIZE=yes):
  every process a test starts writes its ASan/LSan/UBSan report into one
  directory (log_path, set here in the environment children inherit), and
  a daemon's log is searched for one too (a test may hand a child its own
  environment); run_tests() fails the test during which a report appeared.
  valgrind_skip_reason() says why a valgrind case does not run.

Everything talks to loopback only, and every wait has a timeout.
"""

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import traceback

# Default bounds (seconds).
START_TIMEOUT = 10.0
STOP_TIMEOUT = 40.0  # the daemon may wait ~30 s for in-flight sessions
LOG_TAIL_LINES = 40


# ---------------------------------------------------------------- sanitizers

SANITIZED = os.environ.get("VEMILTER_SANITIZE") == "yes"
# ASan+UBSan make our binaries several times slower: the budgets of whole
# tests, of start-up and of short commands stretch by this much (what a
# test asserts about time inside a run does not).
TIME_SCALE = 3 if SANITIZED else 1
# What a sanitizer report starts with, in a log that is not its own file.
SANITIZER_REPORT = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer)"
                              r"|^\S+:\d+:\d+: runtime error: ", re.M)
_report_dir = None
_daemon_logs = {}  # log path -> characters already searched


def _setup_sanitizer_reports():
    """Point every sanitized child at one report directory (created here,
    removed at the end of run_tests if it stayed empty)."""
    global _report_dir
    if not SANITIZED or _report_dir is not None:
        return
    _report_dir = tempfile.mkdtemp(prefix="vemilter-sanitizer-")
    os.chmod(_report_dir, 0o1777)  # a daemon that switched user writes here too
    for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
        old = os.environ.get(var, "")
        os.environ[var] = (old + ":" if old else "") + "log_path=" + os.path.join(_report_dir, "report")


def sanitizer_reports():
    """New sanitizer reports since the last call: [(where, text), ...]."""
    found = []
    if _report_dir is not None:
        for name in sorted(os.listdir(_report_dir)):
            if name.endswith(".seen"):
                continue
            path = os.path.join(_report_dir, name)
            found.append((path, read_file(path)))
            try:
                os.rename(path, path + ".seen")  # reported once
            except OSError:
                pass
    if SANITIZED:
        for path, done in list(_daemon_logs.items()):
            text = read_file(path)
            m = SANITIZER_REPORT.search(text, done)
            _daemon_logs[path] = len(text)
            if m:
                found.append((path, text[m.start():]))
    return found


def valgrind_skip_reason():
    """Why a valgrind case does not run here; None if it does."""
    if SANITIZED:
        return "a sanitizer build (valgrind cannot run ASan binaries)"
    if not os.environ.get("VEMILTER_VALGRIND") or not shutil.which("valgrind"):
        return "set VEMILTER_VALGRIND=1 (and install valgrind) to run"
    return None


# ---------------------------------------------------------------- paths

def srcdir():
    d = os.environ.get("VEMILTER_SRCDIR")
    if d:
        return d
    return os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def builddir():
    d = os.environ.get("VEMILTER_BUILDDIR")
    if d:
        return d
    return srcdir()


def vemilter_binary():
    return os.path.join(builddir(), "vemilter")


# ---------------------------------------------------------------- TAP

def _diag_lines(text):
    out = []
    for line in str(text).splitlines() or [""]:
        out.append("# " + line if line else "#")
    return out


class Tap:
    """Minimal TAP producer.

    check(name, cond, diag) prints "ok N - name" or "not ok N - name" and,
    on failure, diag (a string or a callable returning one) as "# " lines.
    done() prints the plan and returns the process exit code (0 = all ok).
    """

    def __init__(self, out=None):
        self.out = out or sys.stdout
        self.count = 0
        self.failed = 0
        self.failed_names = []
        self._finished = False

    def _emit(self, line):
        self.out.write(line + "\n")
        self.out.flush()

    def _name(self, name):
        # "#" would start a directive in TAP; keep names plain and one-line.
        return " ".join(str(name).replace("#", "No.").split())

    def check(self, name, cond, diag=None):
        self.count += 1
        name = self._name(name)
        if cond:
            self._emit("ok %d - %s" % (self.count, name))
            return True
        self.failed += 1
        self.failed_names.append(name)
        self._emit("not ok %d - %s" % (self.count, name))
        if diag is not None:
            try:
                text = diag() if callable(diag) else diag
            except Exception as e:  # diagnostics must never break the run
                text = "(diagnostics failed: %r)" % (e,)
            self.diag(text)
        return False

    def equal(self, name, got, want, diag=None):
        """check(name, got == want) with got/want printed on failure."""
        def d():
            parts = ["got:  %r" % (got,), "want: %r" % (want,)]
            if diag is not None:
                parts.append(diag() if callable(diag) else str(diag))
            return "\n".join(parts)
        return self.check(name, got == want, d)

    def skip(self, name, reason):
        self.count += 1
        self._emit("ok %d - %s # SKIP %s" % (self.count, self._name(name), reason))

    def diag(self, text):
        for line in _diag_lines(text):
            self._emit(line)

    def bail(self, reason):
        self._emit("Bail out! %s" % " ".join(str(reason).split()))

    def done(self):
        if not self._finished:
            self._finished = True
            self._emit("1..%d" % self.count)
            if self.failed:
                self.diag("%d of %d failed: %s" % (self.failed, self.count,
                                                   ", ".join(self.failed_names)))
        return 0 if self.failed == 0 and self.count > 0 else 1


class Watchdog(Exception):
    """Raised in the main thread by the SIGALRM watchdog."""


def _alarm(signum, frame):
    raise Watchdog("watchdog: test took too long")


class Cleanup:
    """A LIFO list of cleanup callables, each run once and errors reported."""

    def __init__(self):
        self.items = []

    def add(self, fn, *args):
        self.items.append((fn, args))
        return fn

    def run(self, tap=None):
        while self.items:
            fn, args = self.items.pop()
            try:
                fn(*args)
            except Exception:
                if tap:
                    tap.diag("cleanup %r failed:\n%s" % (fn, traceback.format_exc()))


def run_tests(tests, per_test_timeout=60, total_timeout=170, setup=None):
    """Run test functions tests = [fn(tap, cleanup), ...] and exit.

    Each function gets the Tap and a Cleanup list; the list is run after the
    function whatever happens. An exception becomes a failed case with its
    traceback (and the function's own diagnostics hook: if it raises an
    exception having an attribute "diag", that text is shown too).
    setup(tap) may return a reason string to skip everything (plan 1..0).
    """
    tap = Tap()
    _setup_sanitizer_reports()
    per_test_timeout *= TIME_SCALE
    total_timeout *= TIME_SCALE

    def check_reports(what):
        for where, text in sanitizer_reports():
            tap.check("no sanitizer report during %s (%s)" % (what, where), False, tail(text, 80))
    signal.signal(signal.SIGALRM, _alarm)
    deadline = time.monotonic() + total_timeout
    exit_code = 1
    try:
        if setup is not None:
            reason = setup(tap)
            if reason:
                print("1..0 # SKIP %s" % reason)
                sys.stdout.flush()
                sys.exit(0)
        for fn in tests:
            remaining = deadline - time.monotonic()
            if remaining <= 1:
                tap.check("%s (not run: total time budget exhausted)" % fn.__name__, False)
                continue
            cleanup = Cleanup()
            signal.alarm(int(min(per_test_timeout, remaining)) or 1)
            try:
                fn(tap, cleanup)
            except Watchdog:
                tap.check("%s finished within its time limit" % fn.__name__, False,
                          traceback.format_exc())
            except Exception:
                tap.check("%s raised no exception" % fn.__name__, False,
                          traceback.format_exc())
            finally:
                signal.alarm(0)
                # Cleanup gets its own bound.
                signal.alarm(int(STOP_TIMEOUT) + 20)
                try:
                    cleanup.run(tap)
                except Watchdog:
                    tap.diag("cleanup of %s timed out" % fn.__name__)
                finally:
                    signal.alarm(0)
                check_reports(fn.__name__)
        exit_code = tap.done()
    finally:
        signal.alarm(0)
        if not tap._finished:
            exit_code = tap.done() or 1
        if _report_dir is not None and not os.listdir(_report_dir):
            shutil.rmtree(_report_dir, ignore_errors=True)
    sys.exit(exit_code)


# ---------------------------------------------------------------- scratch space

class TempDir:
    """A temp dir, world-traversable (0755) so a daemon or Postfix running as
    another user can reach sockets inside it. remove() deletes it unless the
    environment variable VEMILTER_KEEP_TMP is set (for debugging)."""

    def __init__(self, prefix="vemilter-test-"):
        self.path = tempfile.mkdtemp(prefix=prefix)
        os.chmod(self.path, 0o755)

    def join(self, *parts):
        return os.path.join(self.path, *parts)

    def write(self, name, text, mode=0o644):
        p = self.join(name)
        with open(p, "w") as f:
            f.write(text)
        os.chmod(p, mode)
        return p

    def remove(self):
        if os.environ.get("VEMILTER_KEEP_TMP"):
            sys.stdout.write("# kept temp dir %s\n" % self.path)
            return
        shutil.rmtree(self.path, ignore_errors=True)


def free_port(host="127.0.0.1"):
    """A TCP port that was free a moment ago on host (loopback)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def tail(text, n=LOG_TAIL_LINES):
    lines = text.splitlines()
    if len(lines) > n:
        return "\n".join(["... (%d lines before)" % (len(lines) - n)] + lines[-n:])
    return "\n".join(lines)


def read_file(path, default=""):
    try:
        with open(path, "r", errors="replace") as f:
            return f.read()
    except OSError:
        return default


def wait_until(pred, timeout, interval=0.05):
    """Poll pred() until it returns a true value or timeout; return that value
    (or the last false one)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def run(argv, timeout=20, input=None, env=None):
    """Run a short command; return CompletedProcess with text stdout/stderr.
    A timeout gives returncode None and whatever was printed."""
    try:
        return subprocess.run(argv, input=input, capture_output=True, text=True,
                              timeout=timeout * TIME_SCALE, env=env,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        def s(x):
            return x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
        return subprocess.CompletedProcess(argv, None, s(e.stdout), s(e.stderr))


# ---------------------------------------------------------------- sockets

def parse_socket_spec(spec):
    """libmilter notation -> (family, address) for socket.connect()."""
    if spec.startswith("unix:") or spec.startswith("local:"):
        return socket.AF_UNIX, spec.split(":", 1)[1]
    if spec.startswith("/"):
        return socket.AF_UNIX, spec
    m = re.match(r"^(inet6?):(\d+)@\[?([^\]]*)\]?$", spec)
    if not m:
        raise ValueError("cannot parse socket spec %r" % spec)
    fam = socket.AF_INET6 if m.group(1) == "inet6" else socket.AF_INET
    return fam, (m.group(3), int(m.group(2)))


def _proc_net_listening(family, address):
    """True/False if /proc/net says something listens on address; None if it
    cannot tell. Used as a probe that opens no connection to the daemon."""
    try:
        if family == socket.AF_UNIX:
            with open("/proc/net/unix") as f:
                next(f)
                for line in f:
                    parts = line.split()
                    # Num RefCount Protocol Flags Type St Inode Path
                    if len(parts) >= 8 and parts[7] == address:
                        if int(parts[3], 16) & 0x10000:  # __SO_ACCEPTCON
                            return True
            return False
        fname = "/proc/net/tcp6" if family == socket.AF_INET6 else "/proc/net/tcp"
        port = address[1]
        with open(fname) as f:
            next(f)
            for line in f:
                parts = line.split()
                if len(parts) > 3 and parts[3] == "0A":
                    if int(parts[1].rsplit(":", 1)[1], 16) == port:
                        return True
        return False
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def socket_listening(spec, probe_connect=False):
    """Does something listen on spec? Uses /proc/net (no connection) unless
    that cannot tell or probe_connect is set, then a connect() probe."""
    family, address = parse_socket_spec(spec)
    if not probe_connect:
        v = _proc_net_listening(family, address)
        if v is not None:
            return v
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(address)
        return True
    except OSError:
        return False
    finally:
        s.close()


def is_socket_file(path):
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


# ---------------------------------------------------------------- processes

def proc_status(pid):
    """/proc/PID/status as a dict, {} if gone."""
    d = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                d[k.strip()] = v.strip()
    except OSError:
        pass
    return d


def pid_alive(pid):
    """True if pid exists and is not a zombie."""
    st = proc_status(pid)
    return bool(st) and not st.get("State", "").startswith("Z")


def children_of(pid):
    """Direct children of pid (from /proc/*/stat)."""
    kids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                data = f.read()
            # pid (comm) state ppid ...; comm may contain spaces/parens
            rest = data[data.rindex(")") + 2:].split()
            if int(rest[1]) == pid:
                kids.append(int(name))
        except (OSError, ValueError, IndexError):
            continue
    return kids


# ---------------------------------------------------------------- the daemon

def format_conf(conf):
    """dict -> 'key = value' lines (None values are left out; lists joined
    with ', ')."""
    lines = ["# written by the vemilter integration tests"]
    for k, v in conf.items():
        if v is None:
            continue
        if isinstance(v, (list, tuple)):
            v = ", ".join(str(x) for x in v)
        lines.append("%s = %s" % (k, v))
    return "\n".join(lines) + "\n"


class DaemonError(Exception):
    pass


class Daemon:
    """One vemilter process in the foreground (-f), stderr to a file.

    d = Daemon(tmpdir, {"socket": "unix:/...", ...}, debug=True)
    d.start()            # raises DaemonError (with the log) if it never listens
    code = d.stop()      # SIGTERM; returns the exit code (None if it had to
                         # be killed with SIGKILL after the timeout)
    """

    def __init__(self, tmp, conf, debug=False, name="vemilter", extra_args=(),
                 binary=None):
        self.tmp = tmp
        self.conf = dict(conf)
        self.debug = debug
        self.name = name
        self.extra_args = list(extra_args)
        self.binary = binary or vemilter_binary()
        self.conf_path = tmp.join(name + ".conf")
        self.log_path = tmp.join(name + ".log")
        self.proc = None
        self.returncode = None
        self._logf = None

    @property
    def socket(self):
        return self.conf.get("socket")

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def argv(self):
        a = [self.binary, "-f", "-c", self.conf_path]
        if self.debug:
            a.append("-d")
        return a + self.extra_args

    def write_conf(self):
        with open(self.conf_path, "w") as f:
            f.write(format_conf(self.conf))
        os.chmod(self.conf_path, 0o644)

    def spawn(self):
        """Start the process without waiting for anything."""
        self.write_conf()
        self._logf = open(self.log_path, "ab")
        _daemon_logs.setdefault(self.log_path, 0)
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                     stdout=self._logf, stderr=subprocess.STDOUT,
                                     close_fds=True)
        return self

    def start(self, timeout=START_TIMEOUT, probe_connect=False):
        """Spawn and wait until the socket listens; DaemonError otherwise."""
        self.spawn()
        deadline = time.monotonic() + timeout * TIME_SCALE
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self.returncode = rc
                raise DaemonError("vemilter exited with %s before listening\n%s"
                                  % (rc, self.diag()))
            if self.socket and socket_listening(self.socket, probe_connect):
                # The pid file is written just after the socket listens: a
                # test that reads it right after start() would race that
                # write on a slow (sanitizer) build. Bounded: a daemon that
                # could not write it is the test's to judge.
                pid_file = self.conf.get("pid_file") if isinstance(self.conf, dict) else None
                if pid_file:
                    wait_until(lambda: read_file(pid_file).endswith("\n") or self.proc.poll() is not None,
                               5 * TIME_SCALE)
                return self
            time.sleep(0.05)
        raise DaemonError("vemilter did not listen on %s within %.0fs\n%s"
                          % (self.socket, timeout, self.diag()))

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout):
        """Wait for exit; return the exit code or None on timeout."""
        if self.proc is None:
            return None
        try:
            self.returncode = self.proc.wait(timeout=timeout)
            return self.returncode
        except subprocess.TimeoutExpired:
            return None

    def send_signal(self, sig):
        if self.running():
            self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """Send sig and wait; SIGKILL after timeout (then returns None)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            rc = self.wait(timeout)
            if rc is None:
                self.kill()
                return None
        self.returncode = self.proc.returncode
        self._close_log()
        return self.returncode

    def kill(self):
        """Cleanup: SIGKILL if still running; never raises."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)
        except Exception:
            pass
        self._close_log()

    def _close_log(self):
        if self._logf is not None:
            try:
                self._logf.close()
            except OSError:
                pass
            self._logf = None

    def log(self):
        return read_file(self.log_path)

    def log_lines(self, regex=None):
        lines = self.log().splitlines()
        if regex is None:
            return lines
        r = re.compile(regex)
        return [l for l in lines if r.search(l)]

    def wait_log(self, regex, timeout=5.0, start=0):
        """Wait until a log line (from character offset start) matches regex;
        return the re.Match or None."""
        r = re.compile(regex, re.M)

        def probe():
            return r.search(self.log(), start)
        return wait_until(probe, timeout)

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def diag(self):
        parts = ["command: %s" % " ".join(self.argv()),
                 "config %s:" % self.conf_path,
                 read_file(self.conf_path).rstrip(),
                 "log %s (tail):" % self.log_path,
                 tail(self.log()) or "(empty)"]
        if self.proc is not None:
            parts.insert(1, "pid %s, exit code %s" % (self.proc.pid, self.proc.poll()))
        return "\n".join(parts)


def require_binary(path, what):
    """A run_tests setup: fail (TAP) and exit when the binary under test is
    not built."""
    def setup(tap):
        if not os.access(path, os.X_OK):
            tap.check("%s binary exists at %s (set VEMILTER_BUILDDIR)" % (what, path), False)
            tap.done()
            sys.exit(1)
        return None
    return setup


def base_conf(tmp, sock_name="milter.sock", **over):
    """A config every test starts from: unix socket in tmp, no user switch, no
    pid file, and trusted_networks set explicitly (192.0.2.0/24, TEST-NET-1,
    which no test client uses) so that loopback clients are checked."""
    conf = {
        "socket": "unix:" + tmp.join(sock_name),
        "user": "",
        "pid_file": "",
        "log_level": "info",
        "trusted_networks": "192.0.2.0/24",
        # This machine's own name may be unqualified; probes need a real one.
        "helo_name": "vemilter.test.example",
        # Tests never reach the real DNS: nothing listens on 127.0.0.1:1, so
        # a probe fails at once (tempfail). Tests that probe set their own
        # fake server. No cache unless a test asks for one.
        "dns_servers": "127.0.0.1:1",
        "cache": "",
    }
    # VEMILTER_TEST_TRANSPORT=libmilter runs a test file against the
    # libmilter transport instead of the default, native
    # (tests/integration/*_libmilter.py set it).
    transport = os.environ.get("VEMILTER_TEST_TRANSPORT")
    if transport:
        conf["milter_transport"] = transport
    conf.update(over)
    return conf


def probe_conf(tmp, sock_name, dns_port, farm_port, **over):
    """base_conf for a daemon that probes: the fake DNS server on dns_port
    (1 s timeout), the fake SMTP farm on farm_port at 127.0.0.0/8 (allowed
    by probe_allow_networks, which a real daemon would refuse), a qualified
    helo_name. over: the test's own directives (any of these included)."""
    conf = {
        "dns_servers": "127.0.0.1:%d" % dns_port, "dns_timeout": "1s",
        "helo_name": "probe.vemilter.test", "probe_port": farm_port,
        "probe_allow_networks": "127.0.0.0/8",
    }
    conf.update(over)
    return base_conf(tmp, sock_name, **conf)


def mx_zone(pairs):
    """A zone for tests/fakes/fakedns.py in which each (domain, IPv4
    address) of pairs (a dict, or pairs) has one MX, mx.<domain>, at that
    address: the shape most tests need. The test adds its odd names to the
    dict returned."""
    zone = {}
    for domain, address in (pairs.items() if isinstance(pairs, dict) else pairs):
        zone[domain] = {"MX": [[10, "mx." + domain]]}
        zone["mx." + domain] = {"A": [address]}
    return zone


def metrics_text(port):
    """GET /metrics from a daemon's metrics_listen on 127.0.0.1:port: the body"""
    import urllib.request
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        return r.read().decode()


def tear_down(servers=(), daemons=(), tmp=None):
    """End of a test file, whatever state it is in: stop each server (a
    Postfix instance, fakes: anything with stop(); None entries skipped,
    errors ignored), kill each daemon, remove the temp dir."""
    for x in servers:
        if x is not None:
            try:
                x.stop()
            except Exception:
                pass
    for d in daemons:
        if d is not None:
            d.kill()
    if tmp is not None:
        tmp.remove()


def stop_all(daemons_and_signals, timeout=STOP_TIMEOUT):
    """Signal several daemons at once and wait for them together (libmilter
    takes a few seconds to notice a stop, so doing it in parallel keeps the
    tests fast). daemons_and_signals: [(Daemon, sig), ...]. Returns the exit
    codes (None for one that had to be killed)."""
    for d, sig in daemons_and_signals:
        d.send_signal(sig)
    deadline = time.monotonic() + timeout
    codes = []
    for d, _sig in daemons_and_signals:
        rc = d.wait(max(0.1, deadline - time.monotonic()))
        if rc is None:
            d.kill()
        else:
            d._close_log()
        codes.append(rc)
    return codes


def parse_verdicts(text):
    """Verdict log lines -> list of dicts (key=value pairs; "quoted values"
    unquoted), each with '_line' holding the raw line."""
    out = []
    for line in text.splitlines():
        m = re.search(r"(?:^|[\s:])verdict (.*)$", line)
        if not m:
            continue
        rest = m.group(1)
        d = {"_line": line}
        for m in re.finditer(r'(\w+)=("((?:[^"\\]|\\.)*)"|\S*)', rest):
            if m.group(3) is not None:
                # only \" and \\ are escapes; \xHH (control bytes) stays as logged
                d[m.group(1)] = re.sub(r'\\(["\\])', r"\1", m.group(3))
            else:
                d[m.group(1)] = m.group(2)
        out.append(d)
    return out


def have_root():
    return os.geteuid() == 0
