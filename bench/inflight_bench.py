#!/usr/bin/python3
"""inflight_bench - memory per probe with thousands of probes in flight on
the one engine thread, and whether the engine keeps up.

Runs vemilter-check (the daemon's engine: callout, pool, smtp, c-ares on one
event loop) with host_sessions = 0 (one connection per probe) against the C
fake SMTP server (bench/fakesmtp, "make bench") on --servers loopback
addresses, every reply --latency-ms late, and the fake DNS server
(tests/fakes/fakedns.py; --dns literal: address literals, no DNS at all).
The fake accepts local parts starting with "user" and refuses the rest (so
the catch-all RCPT's 16 random letters get 550, as from a real server, and
no MX host is taken for catch-all).

Per round:
  idle:  vemilter-check with the same configuration and addresses, -j 1:
         its VmRSS once the one probe is under way (after two replies'
         latency), then it is stopped. Everything but the probes in flight.
  peak:  -j JOBS over ADDRESSES addresses (default 3 x JOBS, so the engine
         refills as verdicts come): VmHWM, the most probe sockets open at
         once in vemilter-check (/proc/PID/fd, sampled) and the fake's most
         connections open at once (its own count), probes/s in the middle
         of the run (connections the fake accepted per second between 25 %
         and 75 % of them) against the ideal (JOBS / the time one probe's
         slot is held: greeting, EHLO, MAIL, RCPT at --latency-ms, each),
         CPU seconds of vemilter-check (wait4) and of the fake (/proc).
  KiB per probe = (VmHWM(peak) - VmRSS(idle)) / sockets in flight at the peak:
  a probe is an SMTP conversation with its connection, whether before its
  verdict or after it (the catch-all answer and QUIT go on after the verdict,
  and -j, like the daemon's max_probes_in_flight, counts a probe only until
  its verdict). KiB per -j slot = the same over JOBS: what the limit costs,
  those conversations after the verdict included.

--daemon: the same through the daemon instead of vemilter-check: vemilter
with milter_transport = native (one milter loop, no thread per session),
driven from this (separate) process by cached_cpu.py's Postfix-like milter
client. Per round, a fresh daemon:
  warm:     one session per domain, answered, probes done (the domains' MX
            answers and the hosts' first contact are then known, as on a
            running server); idle = VmRSS.
  sessions: --jobs milter sessions opened and negotiated (OPTNEG), no MAIL
            yet; sessions = VmRSS: what the open sessions cost.
  probes:   on each session MAIL FROM a distinct fresh sender (answered at
            once: the probe starts) and RCPT (parks until the verdict), all
            before the first verdict can come (--latency-ms large enough);
            sampled meanwhile: the daemon's vemilter_probes_in_flight gauge
            (/metrics), its VmHWM, its open descriptors, and the fake's most
            connections open at once. Then every RCPT answer is read.
  KiB per probe = (VmHWM - sessions) / most probes in flight (the probe
  alone), and (VmHWM - idle) / the same (probe and its milter session).
  CPU per probe = the daemon's utime+stime over the probes phase / probes
  (its milter session's MAIL, RCPT, wake-up, ABORT and QUIT included).
Descriptors: the daemon holds --jobs milter connections plus the probes'
(under the container's hard nofile limit, reported); the fake SMTP server
and fake DNS are other processes. The daemon lowers max_probes_in_flight to
its share of the descriptors (verify.c's fd_share: 4,992 at nofile 20,000),
so a few of 5,000 probes wait for a place and are answered one probe later.

--rounds N repeats and prints the medians. The open-file limit of
vemilter-check is raised to --nofile (prlimit-like, before exec; it lifts
its soft limit to the hard one itself) and reported.

Usage: bench/inflight_bench.py [--jobs 5000] [--addresses N] [--latency-ms 1000]
       [--servers 8] [--domains 50] [--dns fake|literal] [--rounds 3]
       [--nofile 65536] [--set 'DIRECTIVE = VALUE' ...] [--binary PATH ...]
       bench/inflight_bench.py --daemon [--jobs 5000] [--latency-ms 2000] ...
       (--binary: a vemilter; default the build's)
Needs a built tree and "make bench": VEMILTER_BUILDDIR (default: the
source dir). Loopback only.
"""

import argparse
import http.client
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fakes"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "lib"))
sys.path.insert(0, HERE)

from fakedns import FakeDNS  # noqa: E402

PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")


def status_kib(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid):
    """utime + stime of a running process, from /proc/PID/stat"""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def socket_count(pid):
    n = 0
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                if os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("socket:"):
                    n += 1
            except OSError:
                pass
    except OSError:
        pass
    return n


def nofile_of(pid):
    try:
        with open("/proc/%d/limits" % pid) as f:
            for line in f:
                if line.startswith("Max open files"):
                    return int(line.split()[3])
    except (OSError, ValueError):
        pass
    return 0


class Fake:
    """bench/fakesmtp as a child; its counters read with SIGUSR1."""

    def __init__(self, binary, servers, latency_ms):
        self.addrs = ["127.0.1.%d" % (i + 1) for i in range(servers)]
        argv = [binary, "--port", "0", "--latency-ms", str(latency_ms), "--accept-prefix", "user"]
        for a in self.addrs:
            argv += ["--addr", a]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
        self.lock = threading.Lock()
        self.last = None
        self.cond = threading.Condition(self.lock)
        first = self.proc.stdout.readline()
        if "listening on port" not in first:
            raise RuntimeError("fakesmtp did not start: %r" % first)
        self.port = int(first.split()[-1])
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith("fakesmtp: connections="):
                counts = dict(kv.split("=") for kv in line.split()[1:])
                with self.cond:
                    self.last = {k: int(v) for k, v in counts.items()}
                    self.cond.notify_all()

    def counters(self, timeout=2.0):
        """the fake's counters now (asks with SIGUSR1, waits for the line)"""
        with self.cond:
            self.last = None
            self.proc.send_signal(signal.SIGUSR1)
            self.cond.wait_for(lambda: self.last is not None, timeout)
            return self.last or {}

    def reset_peak(self):
        self.proc.send_signal(signal.SIGUSR2)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def build_zone(domains, servers):
    zone = {}
    for d in range(domains):
        name = "d%03d.bench" % d
        zone[name] = {"MX": [[10, "mx.%s" % name]], "ttl": 3600}
        zone["mx." + name] = {"A": ["127.0.1.%d" % (d % servers + 1)], "ttl": 3600}
    return zone


def addresses_for(args, count):
    out = []
    for i in range(count):
        if args.dns == "literal":
            out.append("user%05d@[127.0.1.%d]" % (i, i % args.servers + 1))
        else:
            out.append("user%05d@d%03d.bench" % (i, i % args.domains))
    return out


def start_check(binary, conf, jobs, addresses, nofile):
    def limits():
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        except (ValueError, OSError):  # not root: as far as the hard limit goes
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(nofile, hard), hard))

    out = tempfile.TemporaryFile()
    p = subprocess.Popen([binary, "-c", conf, "-j", str(jobs)] + addresses, stdout=out,
                         stderr=subprocess.STDOUT, preexec_fn=limits)
    return p, out


def wait_rusage(p):
    """reap p; its own CPU seconds (user + system) from wait4"""
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return ru.ru_utime + ru.ru_stime


def idle_round(args, binary, conf, addresses):
    """VmRSS with one probe under way: everything but the probes in flight"""
    p, out = start_check(binary, conf, 1, addresses, args.nofile)
    time.sleep(2.5 * args.latency_ms / 1000 + 0.3)
    rss = status_kib(p.pid, "VmRSS")
    limit = nofile_of(p.pid)
    p.terminate()
    wait_rusage(p)
    out.close()
    return rss, limit


def peak_round(args, binary, conf, addresses, fake):
    fake.reset_peak()
    before = fake.counters()
    fake_cpu0 = cpu_seconds(fake.proc.pid)
    t0 = time.monotonic()
    p, out = start_check(binary, conf, args.jobs, addresses, args.nofile)
    max_sockets, max_rss, hwm = 0, 0, 0
    timeline = []  # (seconds, connections the fake accepted)
    last_ask = 0.0
    cpu = None
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid != 0:  # reaped here: its own CPU seconds from wait4
            p.returncode = os.waitstatus_to_exitcode(status)
            cpu = ru.ru_utime + ru.ru_stime
            break
        rss = status_kib(p.pid, "VmRSS")
        try:
            nfd = len(os.listdir("/proc/%d/fd" % p.pid))
        except OSError:
            nfd = 0
        if nfd > max_sockets:  # readlink only when it may be a new peak
            max_sockets = max(max_sockets, socket_count(p.pid))
        if rss > max_rss:
            max_rss = rss
        now = time.monotonic()
        if now - last_ask >= 0.25:
            c = fake.counters()
            timeline.append((now - t0, c.get("connections", 0) - before.get("connections", 0)))
            last_ask = now
        hwm = max(hwm, status_kib(p.pid, "VmHWM"))
        time.sleep(0.05)
    elapsed = time.monotonic() - t0
    after = fake.counters()
    fake_cpu = cpu_seconds(fake.proc.pid) - fake_cpu0
    out.seek(0)
    text = out.read().decode("utf-8", "replace")
    out.close()
    lines = text.splitlines()
    valid = sum(1 for line in lines if " valid " in line)
    invalid = sum(1 for line in lines if " invalid " in line)
    other = len(addresses) - valid - invalid
    conns = after.get("connections", 0) - before.get("connections", 0)
    # the middle of the run: from 25 % to 75 % of the connections
    rate = 0.0
    lo = next(((t, c) for t, c in timeline if c >= conns * 0.25), None)
    hi = next(((t, c) for t, c in timeline if c >= conns * 0.75), None)
    if lo and hi and hi[0] > lo[0]:
        rate = (hi[1] - lo[1]) / (hi[0] - lo[0])
    return {"hwm": hwm, "max_rss": max_rss, "sockets": max_sockets,
            "fake_max_open": after.get("max_open", 0), "elapsed": elapsed, "rate": rate,
            "overall": len(addresses) / elapsed, "cpu": cpu, "fake_cpu": fake_cpu,
            "valid": valid, "invalid": invalid, "other": other, "connections": conns,
            "rc": p.returncode, "sample": [line for line in lines if " valid " not in line][:3]}


# ---- --daemon: the same through vemilter (native milter transport) ----

def metric(port, name):
    """one unlabelled sample of the daemon's /metrics; None if unreadable"""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/metrics")
        body = conn.getresponse().read().decode("utf-8", "replace")
        conn.close()
    except OSError:
        return None
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def fd_count(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return 0


class Sampler(threading.Thread):
    """the daemon's peaks while probes run: in-flight gauge, VmHWM, fds"""

    def __init__(self, pid, metrics_port, fake):
        super().__init__(daemon=True)
        self.pid, self.port, self.fake = pid, metrics_port, fake
        self.stop_ev = threading.Event()
        self.in_flight = 0
        self.fds = 0
        self.first_verdict = None  # seconds from start to the gauge's first fall

    def run(self):
        t0 = time.monotonic()
        while not self.stop_ev.is_set():
            g = metric(self.port, "vemilter_probes_in_flight")
            if g is not None:
                if g < self.in_flight and self.first_verdict is None:
                    self.first_verdict = time.monotonic() - t0
                self.in_flight = max(self.in_flight, int(g))
            self.fds = max(self.fds, fd_count(self.pid))
            self.stop_ev.wait(0.1)

    def stop(self):
        self.stop_ev.set()
        self.join(10)


def settle(d, port, fake, timeout):
    """bounded wait until no probe runs and the fake has no connection open"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metric(port, "vemilter_probes_in_flight") == 0 and fake.counters().get("open", 1) == 0:
            return True
        time.sleep(0.2)
    return False


def daemon_round(args, r, b, binary, tmp, dns_port, fake):
    """round r of binary number b: its own daemon, cache and senders"""
    import cached_cpu
    import vmtest

    mport = vmtest.free_port()
    name = "round%d-%d" % (r, b)
    conf = vmtest.base_conf(tmp, name + ".sock", **{
        "milter_transport": "native", "log_level": "notice", "metrics_listen": "127.0.0.1:%d" % mport,
        "dns_servers": "127.0.0.1:%d" % dns_port, "dns_timeout": "10s",
        "helo_name": "bench.vemilter.test", "probe_port": fake.port,
        "probe_allow_networks": "127.0.0.0/8", "cache": tmp.join(name + ".lmdb"),
        "probe_timeout": "300s", "command_timeout": "120s", "banner_timeout": "120s",
        "connect_timeout": "60s", "verify_budget": "25s",
        # one connection per probe, no politeness limits: thousands of
        # probes to a few fake servers and domains, from one client address
        "host_sessions": "0", "host_session_rate": "0", "client_probe_rate": "0",
        "domain_probe_limit": "1000", "domain_probe_rate": "0", "domain_invalid_limit": "0",
        "max_probes_in_flight": str(args.jobs),
    })
    for line in args.set:
        k, v = line.split("=", 1)
        conf[k.strip()] = v.strip()
    d = vmtest.Daemon(tmp, conf, name=name, binary=binary)
    d.start()
    try:
        # warm: every domain resolved and every host heard from
        warm = [cached_cpu.PostfixLike(d.socket) for _ in range(args.domains)]
        for i, s in enumerate(warm):
            sender = "<userw%d-%d-%05d@d%03d.bench>" % (r, b, i, i)
            s.start()
            s.mail(sender)
            s.rcpt(sender, wait=False)
        for s in warm:
            s.reply()
            s.end()
        if not settle(d, mport, fake, 30):
            raise SystemExit("the warm-up probes did not finish:\n" + vmtest.tail(vmtest.read_file(d.log_path)))
        time.sleep(0.5)
        idle = status_kib(d.pid, "VmRSS")

        sessions = [cached_cpu.PostfixLike(d.socket, 0.0) for _ in range(args.jobs)]
        for s in sessions:
            s.c.timeout = 60
            s.start()
        time.sleep(0.5)
        with_sessions = status_kib(d.pid, "VmRSS")
        fds_sessions = fd_count(d.pid)

        fake.reset_peak()
        sampler = Sampler(d.pid, mport, fake)
        cpu0 = cpu_seconds(d.pid)
        t0 = time.monotonic()
        sampler.start()
        senders = ["<user%d-%d-%05d@d%03d.bench>" % (r, b, i, i % args.domains) for i in range(args.jobs)]
        mail_codes = {}
        parked = []  # sessions whose RCPT answer is still to read
        for s, sender in zip(sessions, senders):
            m = s.mail(sender)
            code = m.code if m is not None else "none"
            mail_codes[code] = mail_codes.get(code, 0) + 1
            if code == "c" and s.rcpt(sender, wait=False) == cached_cpu.PENDING:
                parked.append(s)
        submitted = time.monotonic() - t0
        codes = {}
        for s in parked:
            try:
                rep = s.reply()
                code = rep.code if rep is not None else "none"
            except OSError as e:
                code = "error:%s" % e.__class__.__name__
            codes[code] = codes.get(code, 0) + 1
        answered = time.monotonic() - t0
        for s in sessions:
            try:
                s.end()
            except OSError:
                pass
        settled = settle(d, mport, fake, 120)
        cpu = cpu_seconds(d.pid) - cpu0
        sampler.stop()
        hwm = status_kib(d.pid, "VmHWM")
        fk = fake.counters()
        limit = nofile_of(d.pid)
        log_tail = [line for line in vmtest.read_file(d.log_path).splitlines()
                    if ("warning" in line.lower() or "error" in line.lower())
                    and "running as root" not in line and "does not resolve" not in line][:3]
    finally:
        d.stop()
    peak = max(sampler.in_flight, 1)
    return {"idle": idle, "sessions": with_sessions, "hwm": hwm, "in_flight": sampler.in_flight,
            "fds": sampler.fds, "fds_sessions": fds_sessions, "fake_max_open": fk.get("max_open", 0),
            "per": (hwm - with_sessions) / peak, "per_all": (hwm - idle) / peak,
            "session_kib": (with_sessions - idle) / args.jobs, "cpu": cpu, "cpu_us": 1e6 * cpu / args.jobs,
            "submitted": submitted, "answered": answered, "first_verdict": sampler.first_verdict,
            "mail": mail_codes, "rcpt": codes, "settled": settled, "limit": limit, "warnings": log_tail}


def daemon_main(args, builddir):
    binaries = args.binary or [os.path.join(builddir, "vemilter")]
    fake_bin = os.path.join(builddir, "bench", "fakesmtp")
    if not os.access(fake_bin, os.X_OK):
        print("inflight_bench: %s is missing: run \"make bench\"" % fake_bin, file=sys.stderr)
        return 2
    # this process holds --jobs milter sessions
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import vmtest
    tmp = vmtest.TempDir("vemilter-inflight-")
    dns = FakeDNS(build_zone(args.domains, args.servers))
    fake = None
    try:
        fake = Fake(fake_bin, args.servers, args.latency_ms)
        dns_port = dns.start()
        print("inflight benchmark, daemon (milter_transport = native): %d milter sessions, one fresh sender "
              "each, %d domains, %d fake servers, %d ms per reply, host_sessions = 0"
              % (args.jobs, args.domains, args.servers, args.latency_ms), flush=True)
        rows = {b: [] for b in binaries}
        for r in range(args.rounds):
            for bi, b in enumerate(binaries):
                row = daemon_round(args, r, bi, b, tmp, dns_port, fake)
                rows[b].append(row)
                print("  round %d %s: idle %.1f MiB, +%d sessions %.1f MiB (%.1f KiB each, %d fds), peak %.1f MiB; "
                      "in flight %d (fake: %d open), fds %d of %d; %.1f KiB/probe (%.1f with its session); "
                      "cpu %.2f s (%.0f us/probe); MAIL sent in %.1f s, first verdict %.1f s, all answered "
                      "%.1f s; MAIL %s RCPT %s%s"
                      % (r + 1, b, row["idle"] / 1024, args.jobs, row["sessions"] / 1024, row["session_kib"],
                         row["fds_sessions"], row["hwm"] / 1024, row["in_flight"], row["fake_max_open"],
                         row["fds"], row["limit"], row["per"], row["per_all"], row["cpu"], row["cpu_us"],
                         row["submitted"], row["first_verdict"] or -1, row["answered"], row["mail"],
                         row["rcpt"], "" if row["settled"] else " (NOT settled)"), flush=True)
                if row["first_verdict"] is not None and row["first_verdict"] < row["submitted"]:
                    print("    note: the first verdict came before every MAIL FROM was sent: not all %d "
                          "were in flight at once (raise --latency-ms)" % args.jobs)
                for line in row["warnings"]:
                    print("    log: %s" % line)
        for b in binaries:
            def med(key):
                return statistics.median(row[key] for row in rows[b])

            print("median of %d, %s: idle RSS %.1f MiB, with %d sessions %.1f MiB (%.1f KiB per session), "
                  "peak RSS %.1f MiB, %d probes in flight, %.1f KiB per probe (%.1f KiB with its milter "
                  "session), %d fds at the peak (limit %d), daemon CPU %.0f us per probe"
                  % (len(rows[b]), b, med("idle") / 1024, args.jobs, med("sessions") / 1024, med("session_kib"),
                     med("hwm") / 1024, med("in_flight"), med("per"), med("per_all"), med("fds"), med("limit"),
                     med("cpu_us")))
        ok = all(row["settled"] and set(row["mail"]) == {"c"} and set(row["rcpt"]) <= {"c", "a"}
                 and row["in_flight"] > 0
                 for rs in rows.values() for row in rs)
        return 0 if ok else 1
    finally:
        if fake:
            fake.stop()
        dns.stop()
        tmp.remove()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=5000, help="probes at once (vemilter-check -j)")
    ap.add_argument("--addresses", type=int, default=0, help="default 3 x jobs")
    ap.add_argument("--latency-ms", type=int, default=None,
                    help="each fake reply's delay (default 1000; with --daemon 2000, so every MAIL FROM "
                         "is sent before the first verdict can come)")
    ap.add_argument("--servers", type=int, default=8)
    ap.add_argument("--domains", type=int, default=50)
    ap.add_argument("--dns", choices=("fake", "literal"), default="fake")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--nofile", type=int, default=65536)
    ap.add_argument("--set", action="append", default=[], metavar="'DIRECTIVE = VALUE'")
    ap.add_argument("--binary", action="append", default=[],
                    help="a vemilter-check to measure (repeatable: e.g. before and after a change, "
                         "interleaved round by round); default the build's")
    ap.add_argument("--daemon", action="store_true",
                    help="through the daemon (native milter transport) instead of vemilter-check")
    args = ap.parse_args()
    if args.addresses <= 0:
        args.addresses = 3 * args.jobs
    if args.latency_ms is None:
        args.latency_ms = 2000 if args.daemon else 1000

    builddir = os.environ.get("VEMILTER_BUILDDIR", os.path.join(HERE, ".."))
    if args.daemon:
        return daemon_main(args, builddir)
    binary = os.path.join(builddir, "vemilter-check")
    fake_bin = os.path.join(builddir, "bench", "fakesmtp")
    if not os.access(fake_bin, os.X_OK):
        print("inflight_bench: %s is missing: run \"make bench\"" % fake_bin, file=sys.stderr)
        return 2

    addresses = addresses_for(args, args.addresses)
    dns = FakeDNS(build_zone(args.domains, args.servers)) if args.dns == "fake" else None
    fake = None
    tmp = tempfile.mkdtemp(prefix="vemilter-inflight-")
    try:
        fake = Fake(fake_bin, args.servers, args.latency_ms)
        dns_port = dns.start() if dns else 9  # literal: never asked
        conf = os.path.join(tmp, "bench.conf")
        with open(conf, "w") as f:
            f.write("dns_servers = 127.0.0.1:%d\nhelo_name = bench.vemilter.test\n"
                    "probe_port = %d\nprobe_allow_networks = 127.0.0.0/8\n"
                    "probe_timeout = 300s\ncommand_timeout = 120s\nbanner_timeout = 120s\n"
                    "connect_timeout = 60s\ndns_timeout = 10s\n"
                    # one connection per probe: every probe in flight holds a socket
                    "host_sessions = 0\n"
                    # throughput, not politeness: thousands of probes to a
                    # few fake servers would meet the per-host session budget
                    "host_session_rate = 0\n"
                    % (dns_port, fake.port))
            for line in args.set:
                f.write(line + "\n")
        floor_ms = 4 * args.latency_ms  # greeting, EHLO, MAIL, RCPT
        ideal = args.jobs / (floor_ms / 1000.0)
        print("inflight benchmark: -j %d over %d addresses (%s), %d fake servers, %d ms per reply, "
              "host_sessions = 0" % (args.jobs, args.addresses,
                                     "%d domains, fake DNS" % args.domains if dns else "address literals",
                                     args.servers, args.latency_ms), flush=True)
        binaries = args.binary or [binary]
        rows = {b: [] for b in binaries}
        for r in range(args.rounds):
            for b in binaries:  # interleaved: each round sees the same machine load
                idle, limit = idle_round(args, b, conf, addresses)
                peak = peak_round(args, b, conf, addresses, fake)
                per = (peak["hwm"] - idle) / max(peak["sockets"], 1)
                row = dict(peak, idle=idle, per=per, per_slot=(peak["hwm"] - idle) / args.jobs,
                           busy=peak["cpu"] / peak["elapsed"], limit=limit)
                rows[b].append(row)
                print("  round %d %s: idle %6.1f MiB  peak %6.1f MiB  in flight %5d sockets "
                      "(fake: %5d open)  %5.1f KiB/probe  %6.0f probes/s mid-run (ideal %.0f, %3.0f%%)  "
                      "%6.1f s  cpu %5.2f s (fake %5.2f s)  valid %d invalid %d other %d  exit %d  "
                      "nofile %d"
                      % (r + 1, b, idle / 1024, peak["hwm"] / 1024, peak["sockets"], peak["fake_max_open"],
                         per, peak["rate"], ideal, 100 * peak["rate"] / ideal, peak["elapsed"], peak["cpu"],
                         peak["fake_cpu"], peak["valid"], peak["invalid"], peak["other"], peak["rc"], limit),
                      flush=True)
                for line in peak["sample"]:
                    print("    e.g. %s" % line)

        for b in binaries:
            def med(key):
                return statistics.median(row[key] for row in rows[b])

            print("median of %d, %s: idle RSS %.1f MiB, peak RSS %.1f MiB, in flight %d, %.1f KiB per "
                  "probe (%.1f KiB per -j slot), %.0f probes/s at %d in flight (%.0f%% of the ideal %.0f), "
                  "vemilter-check CPU %.2f s (%.0f%% of one core over the run), fake CPU %.2f s, "
                  "%.0f us CPU per probe, nofile %d"
                  % (len(rows[b]), b, med("idle") / 1024, med("hwm") / 1024, med("sockets"), med("per"),
                     med("per_slot"), med("rate"), args.jobs, 100 * med("rate") / ideal, ideal, med("cpu"),
                     100 * med("busy"), med("fake_cpu"), 1e6 * med("cpu") / args.addresses, med("limit")))
        ok = all(row["valid"] > 0 and row["other"] == 0 for rs in rows.values() for row in rs)
        return 0 if ok else 1
    finally:
        if fake:
            fake.stop()
        if dns:
            dns.stop()
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    sys.exit(main())
