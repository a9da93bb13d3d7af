#!/usr/bin/python3
"""postfix_bench - sender verification through a real Postfix on loopback:
vemilter against Postfix's own reject_unverified_sender, on the same fakes,
reported as issue 10 asks, all rows from one run.

One throw-away Postfix instance (tests/lib/postfixinst.py, plus an smtp(8)
service for Postfix's verify probes), five vemilters sharing one LMDB cache
file (libmilter transport on a unix socket and on an inet socket, the
native transport (milter_transport = native) on a unix and an inet socket,
and one for the fresh path without shared sessions), the fake DNS server and
the fake SMTP farm (every reply, the greeting included, delayed by
--latency). The load generator is this script (asyncio, --concurrency
sessions at once over --procs processes, one SMTP session per message:
EHLO, MAIL, RCPT, DATA, QUIT), because smtp-source cannot vary the sender;
Postfix's smtp-source (one fixed, cached sender) gives a second row.

Cached path (throughput), each phase --repeat times, the phases of one
repetition back to back and in a rotated order (so a drift of the shared
machine does not always hit the same phase); each phase's ratio is taken
against the no-check baseline of the SAME repetition, and the median of
those ratios is reported (with their range):
  plain            no milter, no restriction: Postfix alone (the baseline)
  postfix          smtpd_sender_restrictions = reject_unverified_sender,
                   every sender already in address_verify_map
  vemilter-inet    vemilter (libmilter) on inet:127.0.0.1, every sender already cached
  vemilter-unix    vemilter (libmilter) on a unix socket, every sender already cached
  native-inet      vemilter, milter_transport = native, on inet:127.0.0.1
  native-unix      vemilter, milter_transport = native, on a unix socket
  milter-floor     bench/milter_floor.c (epoll) on a unix socket: answers the
                   same milter packets as vemilter and accepts every MAIL
                   FROM with no cache, no verdict, no log: what the milter
                   protocol alone costs behind Postfix (built with cc here)
Postfix is started once: each phase has its own smtpd listener in master.cf
(-o smtpd_milters=..., -o smtpd_sender_restrictions=...), the main one
with nothing added is the baseline; before each timed phase its listener is
primed with 2 x --concurrency untimed messages, so no phase pays for smtpd
processes being spawned. Each vemilter phase also reports the daemon's
CPU time per message: utime + stime from /proc/PID/stat before and after.
Every phase also reports the whole machine's busy CPU per message
(/proc/stat, every process: Postfix, the load generator, the milter), and
its "cost ratio", the baseline's machine CPU per message divided by the
phase's: the throughput ratio of a machine that is short of CPU and of
nothing else. Every phase starts with Postfix's queue empty and its
machine CPU is counted until its own messages are delivered (discard:),
so no phase pays for the one before. On a shared machine it moves less than msgs/s, which a
neighbour's burst during one phase moves; it means nothing when anything
else runs on the machine (run the bench alone). --phases runs only the
cached phases named (the baseline always), so that more and shorter
repetitions fit in the same time.

Fresh path (once, --fresh never-seen senders each, all real users at the farm):
  floor            the protocol floor, measured here: a plain client opening a
                   new session to the farm for each address and doing
                   greeting + EHLO + MAIL + RCPT (time from connect to the
                   RCPT reply), same concurrency, same latency
  vemilter-*/fresh time from the client's MAIL FROM to the RCPT reply
  native-unix/fresh the same through the native transport
  postfix/fresh    reject_unverified_sender, address_verify_poll_count 3
                   (Postfix's default: smtpd waits up to 2 x 3 s)
  postfix/fresh-p1 address_verify_poll_count = 1: the first try of a new
                   sender gets 450 "address verification in progress" at once;
                   its time to verdict is bounded below by --retry
A client that gets a 4xx at RCPT retries the same sender every --retry
seconds (a real MTA waits minutes), until a final answer or 60 s.
vemilter shares SMTP sessions between probes to one MX (pool.c), so a
fresh sender may be asked in a session that is already open: its time can
be below the floor, which counts a new session per address. So one more
daemon, vemilter-solo (unix socket, host_sessions = 0: a new session for
every probe), runs the fresh path only: that is the row to hold against the
floor. The farm is Python in this process: on a loaded machine its own
delays show in the floor's tail (p95) as much as in vemilter's.

Postfix's verify probes go to the farm through transport_maps (texthash:
each sender domain -> smtp:[127.0.1.N]:PORT), so the system resolver is not
touched; address_verify_map = btree:$data_directory/verify_cache (this
Debian build has no lmdb map type), unverified_sender_reject_code = 550.

Output: a progress line per phase, a detail table, then a Markdown table in
the shape of issue 10's, and with --json FILE one JSON object on one line
(appended to FILE) with every number. Numbers are ratios within one run on
one machine, not absolute promises. Run time, default sizes: about 10
minutes on a shared 2-core machine before the native phases were added,
17.5 minutes with them at a load average of 20; --quick (200 messages, 20
fresh, 2 repetitions, no postfix/fresh-p1) took 131 s with them at a load
average of 11 (87-110 s without them at 10-14).

Usage: bench/postfix_bench.py [--messages 2000] [--fresh 200] [--concurrency 20]
       [--latency 0.1] [--domains 50] [--servers 10] [--retry 1.0] [--repeat 3]
       [--procs 4] [--no-smtp-source] [--json FILE] [--quick]
       [--phases plain,postfix,native-unix,...]
Needs root, Debian's postfix package, and a built tree (VEMILTER_BUILDDIR,
default: the source dir). Not part of make check.
"""

import asyncio
import multiprocessing
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(HERE, "..", "tests", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fakes"))

import benchlib  # noqa: E402
import vmtest  # noqa: E402
import postfixinst  # noqa: E402
from fakedns import FakeDNS  # noqa: E402
from smtpfarm import SmtpFarm  # noqa: E402

SMTP_SOURCE = "/usr/sbin/smtp-source"
RETRY_LIMIT = 60.0        # a sender still undecided after this counts as undecided
SESSION_TIMEOUT = 30.0    # one SMTP command


class BenchPostfix(postfixinst.PostfixInstance):
    """The test instance plus the smtp(8) client that Postfix's verify(8)
    service needs to send its probes (to the farm only, via transport_maps),
    and one more smtpd listener per phase, each with its own -o overrides
    (services: name -> list of "-o name=value"), so one Postfix, started
    once, serves every phase: the main listener (self.port) is the plain
    baseline with nothing added, and no phase pays for a restart."""

    def __init__(self, tmp, services, **kw):
        super().__init__(tmp, **kw)
        self.services = services
        self.ports = {}

    def master_cf(self):
        text = super().master_cf() + "smtp      unix  -       -       n       -       -       smtp\n"
        self.ports = {"plain": self.port}
        for name, overrides in self.services.items():
            self.ports[name] = vmtest.free_port("127.0.0.1")
            text += "127.0.0.1:%d inet n  -       n       -       -       smtpd %s\n" % (
                self.ports[name], " ".join("-o " + o for o in overrides))
        return text


# ---------------------------------------------------------------- load generator

class Record:
    __slots__ = ("sender", "first_mail", "first_code", "final_code", "final_at", "attempts", "error")

    def __init__(self, sender):
        self.sender = sender
        self.first_mail = None
        self.first_code = None
        self.final_code = None
        self.final_at = None
        self.attempts = 0
        self.error = None


async def read_reply(reader):
    lines = []
    while True:
        line = await asyncio.wait_for(reader.readline(), SESSION_TIMEOUT)
        if not line:
            raise ConnectionError("server closed the connection")
        line = line.decode("latin-1").rstrip("\r\n")
        lines.append(line)
        if len(line) < 4 or line[3] != "-":
            return int(line[:3]), lines


async def connect(host, port):
    """(reader, writer) for a TCP connection from 127.0.0.1 to host:port on a
    socket of our own: open_connection(host, port) would first run
    getaddrinfo in a thread of the executor, a delay no MTA has."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.bind(("127.0.0.1", 0))
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), SESSION_TIMEOUT)
        return await asyncio.open_connection(sock=sock)
    except BaseException:
        sock.close()
        raise


async def one_message(port, rec, body):
    """One SMTP session for rec.sender; returns the RCPT code."""
    reader, writer = await connect("127.0.0.1", port)
    try:
        async def cmd(line):
            writer.write(line.encode() + b"\r\n")
            await writer.drain()
            return await read_reply(reader)
        code, _ = await read_reply(reader)
        if code != 220:
            raise RuntimeError("banner %d" % code)
        code, _ = await cmd("EHLO load.example")
        t_mail = time.monotonic()
        code, _ = await cmd("MAIL FROM:<%s>" % rec.sender)
        if code != 250:
            raise RuntimeError("MAIL %d" % code)
        code, text = await cmd("RCPT TO:<user@test.example>")
        t_rcpt = time.monotonic()
        rec.attempts += 1
        if rec.first_mail is None:
            rec.first_mail = t_mail
            rec.first_code = code
        if code == 250:
            c, _ = await cmd("DATA")
            if c == 354:
                writer.write(body)
                await writer.drain()
                c, _ = await read_reply(reader)
            if c != 250:
                raise RuntimeError("DATA/end of data %d" % c)
        if code // 100 in (2, 5):
            rec.final_code = code
            rec.final_at = t_rcpt
        writer.write(b"QUIT\r\n")
        await writer.drain()
        try:
            await asyncio.wait_for(reader.read(), 5)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        return code
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 5)
        except Exception:
            pass


async def run_load(port, senders, concurrency, retry, limit=RETRY_LIMIT):
    """Send one message per sender, concurrency sessions at once; a sender
    answered 4xx at RCPT is tried again after retry seconds. Returns
    (records, wall seconds)."""
    body = (b"From: <load@bench.example>\r\nTo: <user@test.example>\r\nSubject: bench\r\n\r\n"
            + b"x" * 1000 + b"\r\n.\r\n")
    queue = asyncio.Queue()
    records = [Record(s) for s in senders]
    for r in records:
        queue.put_nowait(r)
    left = [len(records)]
    done = asyncio.Event()
    t0 = time.monotonic()
    loop = asyncio.get_running_loop()

    def finish():
        left[0] -= 1
        if left[0] == 0:
            done.set()

    async def worker():
        while True:
            rec = await queue.get()
            try:
                code = await one_message(port, rec, body)
            except Exception as e:  # a broken session: count it, retry like a 4xx
                rec.error = repr(e)
                code = 421
            if code // 100 in (2, 5):
                finish()
            elif rec.first_mail is not None and time.monotonic() - rec.first_mail > limit:
                finish()
            else:
                loop.call_later(retry, queue.put_nowait, rec)

    workers = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    try:
        await asyncio.wait_for(done.wait(), limit + 120)
    except asyncio.TimeoutError:
        pass
    wall = time.monotonic() - t0
    for w in workers:
        w.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    return records, wall


def _load_part(job):
    port, senders, concurrency, retry = job
    t0 = time.monotonic()
    records, wall = asyncio.run(run_load(port, senders, concurrency, retry))
    return t0, t0 + wall, [(r.sender, r.first_mail, r.first_code, r.final_code, r.final_at, r.attempts,
                            r.error) for r in records]


def load(port, senders, concurrency, retry, procs=1):
    """run_load() split over procs forked processes (one Python process is
    the bottleneck well before Postfix is); returns (records, wall seconds).
    Timestamps are CLOCK_MONOTONIC, comparable across the processes."""
    procs = max(1, min(procs, concurrency, len(senders)))
    if procs == 1:
        return asyncio.run(run_load(port, senders, concurrency, retry))
    jobs = [(port, senders[i::procs], concurrency // procs + (1 if i < concurrency % procs else 0), retry)
            for i in range(procs)]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(procs) as pool:
        parts = pool.map(_load_part, jobs)
    # from the first process's start to the last one's end (pool start-up not counted)
    wall = max(p[1] for p in parts) - min(p[0] for p in parts)
    records = []
    for _start, _end, part in parts:
        for t in part:
            r = Record(t[0])
            r.first_mail, r.first_code, r.final_code, r.final_at, r.attempts, r.error = t[1:]
            records.append(r)
    return records, wall


# ---------------------------------------------------------------- measurements

# ---------------------------------------------------------------- the protocol floor

async def floor_one(host, port, address):
    """Greeting, EHLO, MAIL FROM:<>, RCPT TO:<address> in a new session at
    one farm server: seconds from connect to the RCPT reply (then QUIT,
    untimed), or None if the dialogue failed."""
    t0 = time.monotonic()
    reader, writer = await connect(host, port)
    try:
        async def cmd(line):
            writer.write(line.encode() + b"\r\n")
            await writer.drain()
            return (await read_reply(reader))[0]
        if (await read_reply(reader))[0] != 220:
            return None
        if await cmd("EHLO floor.bench") != 250 or await cmd("MAIL FROM:<>") != 250:
            return None
        code = await cmd("RCPT TO:<%s>" % address)
        took = time.monotonic() - t0
        writer.write(b"QUIT\r\n")
        await writer.drain()
        return took if code == 250 else None
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 5)
        except Exception:
            pass


async def run_floor(port, targets, concurrency):
    queue = list(targets)
    times = []

    async def worker():
        while queue:
            host, address = queue.pop()
            try:
                t = await floor_one(host, port, address)
            except Exception:
                t = None
            times.append(t)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return times


def _floor_part(job):
    port, targets, concurrency = job
    return asyncio.run(run_floor(port, targets, concurrency))


def floor(port, targets, concurrency, procs):
    """run_floor() over procs forked processes (as load()); the list of
    per-address seconds (None for a failed dialogue)."""
    procs = max(1, min(procs, concurrency, len(targets)))
    jobs = [(port, targets[i::procs], concurrency // procs + (1 if i < concurrency % procs else 0))
            for i in range(procs)]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(procs) as pool:
        parts = pool.map(_floor_part, jobs)
    return [t for part in parts for t in part]


# ---------------------------------------------------------------- measurements

def cpu_seconds(pid):
    """utime + stime of a process, in seconds (0 if gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def machine_busy():
    """Seconds of CPU the whole machine spent busy so far (/proc/stat: all
    but idle and iowait, every core): what a phase cost the machine, the
    load generator and Postfix included, whoever ran."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def pct(values, p):
    """The p-th percentile (nearest rank on the sorted values), nan if none."""
    if not values:
        return float("nan")
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


def summarize(name, records, wall, farm_rcpts, cpu, machine=0.0):
    accepted = sum(1 for r in records if r.final_code == 250)
    rejected = sum(1 for r in records if r.final_code is not None and r.final_code // 100 == 5)
    undecided = sum(1 for r in records if r.final_code is None)
    first = sum(1 for r in records if r.first_code is not None and r.first_code // 100 in (2, 5))
    verdict = [r.final_at - r.first_mail for r in records if r.final_at is not None]
    errors = [r.error for r in records if r.error]
    return {
        "name": name, "n": len(records), "wall": wall, "rate": accepted / wall if wall > 0 else 0.0,
        "accepted": accepted, "rejected": rejected, "undecided": undecided,
        "first_share": first / len(records) if records else 0.0,
        "v_p50": pct(verdict, 50), "v_p90": pct(verdict, 90), "v_p95": pct(verdict, 95),
        "v_max": max(verdict) if verdict else float("nan"),
        "attempts": sum(r.attempts for r in records), "farm_rcpts": farm_rcpts, "cpu": cpu,
        "cpu_us_per_msg": 1e6 * cpu / accepted if accepted else float("nan"),
        "machine_us_per_msg": 1e6 * machine / accepted if accepted else float("nan"),
        "errors": errors[:3], "n_errors": len(errors),
    }


def smtp_source(port, n, concurrency, sender):
    """(messages/s, wall seconds) of Postfix's smtp-source with one fixed
    sender, or None."""
    if not os.access(SMTP_SOURCE, os.X_OK):
        return None
    argv = [SMTP_SOURCE, "-4", "-s", str(concurrency), "-m", str(n), "-l", "1000", "-M", "load.example",
            "-f", sender, "-t", "user@test.example", "127.0.0.1:%d" % port]
    t0 = time.monotonic()
    p = vmtest.run(argv, timeout=300)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        sys.stderr.write("smtp-source exited %r: %s%s\n" % (p.returncode, p.stdout[-500:], p.stderr[-500:]))
        return None
    return n / wall, wall


def median_range(values):
    """(median, min, max) of the finite values, nans if none."""
    v = [x for x in values if x == x]
    if not v:
        return float("nan"), float("nan"), float("nan")
    return statistics.median(v), min(v), max(v)


# ---------------------------------------------------------------- the run

CACHED_PHASES = ("plain", "postfix", "vemilter-inet", "vemilter-unix", "native-inet", "native-unix", "milter-floor")
MILTER_PHASES = ("vemilter-inet", "vemilter-unix", "native-inet", "native-unix")  # the table's columns


class FloorMilter:
    """bench/milter_floor.c in epoll mode on a unix socket, built here; .pid
    for the CPU count and .stop() like a vmtest.Daemon."""

    def __init__(self, tmp, sock_path):
        binary = tmp.join("milter_floor")
        src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "milter_floor.c")
        subprocess.run(["cc", "-O2", "-pthread", "-o", binary, src], check=True)
        self.proc = subprocess.Popen([binary, sock_path, "epoll"], stdout=subprocess.DEVNULL)
        self.pid = self.proc.pid
        if not vmtest.wait_until(lambda: os.path.exists(sock_path) or self.proc.poll() is not None, 10) or \
                self.proc.poll() is not None:
            raise RuntimeError("milter_floor did not start on %s" % sock_path)
        os.chmod(sock_path, 0o666)  # Postfix's smtpd connects as postfix

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = vmtest.TempDir(prefix="vemilter-pfbench-")
        self.dns = None
        self.farm = None
        self.milters = {}          # "vemilter-unix", "native-inet", ... -> vmtest.Daemon
        self.postfix = None
        self.results = []          # every scenario's summary, in run order
        self.reps = []             # per repetition: {phase: {"rate", "cpu", "src_rate", "src_cpu", ...}}
        self.fresh = {}            # name -> summary (plus "floor")
        self.t_start = time.monotonic()
        self.load = [os.getloadavg()[0]]  # 1-minute load average at the start and after each phase
        # the cached phases to run (--phases), in CACHED_PHASES order; the baseline always
        self.phases = tuple(p for p in CACHED_PHASES if p == "plain" or p in args.phases)

    def domain(self, i):
        return "d%03d.bench" % (i % self.args.domains)

    def server(self, i):
        return "127.0.1.%d" % (i % self.args.servers + 1)

    def senders(self, prefix, n):
        return ["%s%05d@%s" % (prefix, i, self.domain(i)) for i in range(n)]

    def start_fakes(self, users):
        """The fake DNS server (each of --domains domains with one MX, at one
        of the --servers farm addresses) and the farm (every one knowing
        users, each reply after --latency); the DNS server's port. Also for
        shared_bench's setup."""
        a = self.args
        self.dns = FakeDNS(vmtest.mx_zone((self.domain(d), self.server(d)) for d in range(a.domains)))
        dns_port = self.dns.start()
        self.farm = SmtpFarm(latency=a.latency)
        for s in range(a.servers):
            self.farm.add("127.0.1.%d" % (s + 1), "normal", users=users)
        self.farm_port = self.farm.start()
        return dns_port

    def start_postfix(self, services, **main):
        """The bench Postfix: a listener per service besides the main one
        (BenchPostfix), mail to the sender domains (its verify probes) sent
        to the farm by transport_maps, no connection or process limit in
        the way; main: more main.cf settings. Waits (bounded) until every
        listener listens. Also for shared_bench's setup."""
        a = self.args
        transport = self.tmp.write("transport", "".join(
            "%s smtp:[%s]:%d\n" % (self.domain(d), self.server(d), self.farm_port) for d in range(a.domains)))
        self.postfix = BenchPostfix(self.tmp, services, extra_main=dict({
            "smtpd_client_connection_count_limit": "0",
            "default_process_limit": str(max(100, 2 * a.concurrency)),
            "transport_maps": "texthash:" + transport,
            "smtp_connect_timeout": "10s",
        }, **main))
        self.postfix.start()
        for name, port in self.postfix.ports.items():
            if not vmtest.wait_until(lambda: vmtest.socket_listening("inet:%d@127.0.0.1" % port), 30):
                raise postfixinst.PostfixError("the %s smtpd does not listen on 127.0.0.1:%d" % (name, port))

    def setup(self):
        a = self.args
        # every local part used below exists at the farm
        users = ["%s%05d" % (p, i) for p in ("vc", "vf", "vg", "vs", "vn", "pc", "pf", "pg", "xx", "fl")
                 for i in range(max(a.messages, a.fresh))]
        dns_port = self.start_fakes(users)

        inet_port = vmtest.free_port()
        native_port = vmtest.free_port()
        services = {
            "postfix": ["smtpd_sender_restrictions=reject_unverified_sender"],
            # 450 at once for a new sender, the probe in the background
            "postfix-p1": ["smtpd_sender_restrictions=reject_unverified_sender", "address_verify_poll_count=1"],
        }
        solo = "unix:" + self.tmp.join("solo.sock")
        native = "unix:" + self.tmp.join("native.sock")
        libmilter = {"milter_transport": "libmilter"}
        for name, sock, postfix_side, extra in (
                ("vemilter-unix", "unix:" + self.tmp.join("milter.sock"), "unix:" + self.tmp.join("milter.sock"),
                 libmilter),
                ("vemilter-inet", "inet:%d@127.0.0.1" % inet_port, "inet:127.0.0.1:%d" % inet_port, libmilter),
                ("native-unix", native, native, {"milter_transport": "native"}),
                ("native-inet", "inet:%d@127.0.0.1" % native_port, "inet:127.0.0.1:%d" % native_port,
                 {"milter_transport": "native"}),
                # fresh path only: a new session for every probe, as the floor
                ("vemilter-solo", solo, solo, dict(libmilter, host_sessions=0))):
            # one cache file for all daemons (LMDB, several processes):
            # what one learns the other answers from
            self.milters[name] = benchlib.start_milter(self.tmp, name, sock, dns_port, self.farm_port,
                                                       cache=self.tmp.join("cache.lmdb"), **extra)
            services[name] = ["smtpd_milters=" + postfix_side]

        floor_sock = self.tmp.join("floor.sock")
        self.milters["milter-floor"] = FloorMilter(self.tmp, floor_sock)
        services["milter-floor"] = ["smtpd_milters=unix:" + floor_sock]

        self.start_postfix(services, address_verify_map="btree:$data_directory/verify_cache",
                           unverified_sender_reject_code="550")

    def prime(self, phase, sender):
        """2 x concurrency untimed messages (--quick: 1 x) from sender to the
        phase's smtpd, so its processes exist before anything is timed."""
        load(self.postfix.ports[phase], [sender] * ((1 if self.args.quick else 2) * self.args.concurrency),
             self.args.concurrency,
             self.args.retry, self.args.procs)

    def farm_rcpts(self):
        """(RCPT commands for senders at the farm since its last reset,
        distinct addresses among them); vemilter's random catch-all address
        not counted."""
        self.farm.wait_idle(timeout=10)
        rcpts = [c.lower() for c in self.farm.commands() if c.upper().startswith("RCPT TO:<")
                 and not re.match(r"(?i)RCPT TO:<[a-z0-9]{16}@", c)]
        return len(rcpts), len(set(rcpts))

    def drain(self, bound=60.0):
        """Wait (at most bound seconds) until Postfix's queue is empty: every
        message accepted so far delivered (to discard:), so that one phase's
        deliveries neither run into the next phase's time nor escape this
        one's machine CPU. False if the bound came first."""
        return vmtest.wait_until(lambda: not self.postfix.queue_files(), bound, interval=0.05)

    def scenario(self, name, phase, senders, retry=None, milter=None, quiet=False):
        """One load run of senders against the phase's smtpd (milter: the
        daemon whose CPU time is counted)."""
        a = self.args
        self.farm.reset()
        pid = self.milters[milter].pid if milter else None
        self.drain()
        c0 = cpu_seconds(pid) if pid else 0.0
        m0 = machine_busy()
        records, wall = load(self.postfix.ports[phase], senders, a.concurrency, retry or a.retry, a.procs)
        self.drain()  # the machine's CPU counts this phase's deliveries too
        machine = machine_busy() - m0
        cpu = cpu_seconds(pid) - c0 if pid else 0.0
        rcpts, distinct = self.farm_rcpts()
        r = summarize(name, records, wall, rcpts, cpu, machine)
        self.load.append(os.getloadavg()[0])
        r["farm_distinct"] = distinct
        self.results.append(r)
        if not quiet:
            print("  %-24s %5d msgs %6.2f s %7.1f msgs/s  machine %4.0f us/msg  1st try %5.1f%%  undecided %d"
                  "  farm RCPTs %d%s%s%s"
                  % (name, r["n"], r["wall"], r["rate"], r["machine_us_per_msg"], 100 * r["first_share"],
                     r["undecided"], r["farm_rcpts"],
                     " (%d addresses)" % distinct if distinct != rcpts else "",
                     "  cpu %.0f us/msg" % r["cpu_us_per_msg"] if milter else "",
                     "  errors %d e.g. %s" % (r["n_errors"], r["errors"][0]) if r["n_errors"] else ""))
            sys.stdout.flush()
        return r

    def source_row(self, name, phase, sender, milter=None):
        """The smtp-source measurement for the current configuration."""
        if self.args.no_smtp_source:
            return None
        pid = self.milters[milter].pid if milter else None
        self.drain()
        c0 = cpu_seconds(pid) if pid else 0.0
        m0 = machine_busy()
        got = smtp_source(self.postfix.ports[phase], self.args.messages, self.args.concurrency, sender)
        if got is None:
            return None
        self.drain()
        machine = 1e6 * (machine_busy() - m0) / self.args.messages
        cpu = cpu_seconds(pid) - c0 if pid else 0.0
        rate, wall = got
        print("  %-24s %5d msgs %6.2f s %7.1f msgs/s  machine %4.0f us/msg%s"
              % (name + " (smtp-source)", self.args.messages, wall, rate, machine,
                 "  cpu %.0f us/msg" % (1e6 * cpu / self.args.messages) if milter else ""))
        return {"rate": rate, "cpu_us_per_msg": 1e6 * cpu / self.args.messages if milter else None,
                "machine_us_per_msg": machine}

    def warm(self):
        """Fill both caches: vemilter's (probing through the unix daemon, then
        a pass through the inet one, which must find everything cached: the
        two share one cache file) and Postfix's address_verify_map. The
        Postfix warm-up goes through the address_verify_poll_count = 1
        listener (450 at once, probe in the background, the client retries):
        with the default 3 each new sender holds its session ~3 s and warming
        thousands takes minutes."""
        a = self.args
        self.scenario("warm-up vemilter", "vemilter-unix", self.senders("vc", a.messages), milter="vemilter-unix")
        r = self.scenario("warm-up vemilter (inet)", "vemilter-inet", self.senders("vc", a.messages),
                          milter="vemilter-inet")
        if r["farm_rcpts"]:
            print("  note: the inet daemon probed %d senders the unix one had cached" % r["farm_rcpts"])
        for name in ("native-unix", "native-inet"):
            r = self.scenario("warm-up %s" % name, name, self.senders("vc", a.messages), milter=name)
            if r["farm_rcpts"]:
                print("  note: %s probed %d senders the unix one had cached" % (name, r["farm_rcpts"]))
        if not a.quick:  # not in issue 10's table; --quick must stay under 2 minutes
            self.fresh["postfix/fresh-p1"] = self.scenario("postfix/fresh-p1", "postfix-p1",
                                                           self.senders("pg", a.fresh))
        self.scenario("warm-up postfix", "postfix-p1", self.senders("pc", a.messages), retry=0.5)

    def fresh_path(self):
        a = self.args
        # the floor: a new session per address, straight to the farm
        self.farm.reset()
        targets = [(self.server(i), "fl%05d@%s" % (i, self.domain(i))) for i in range(a.fresh)]
        # one client process: 20 sessions are nothing for one event loop, and
        # processes forked one after another only spread the start
        times = floor(self.farm_port, targets, a.concurrency, 1)
        ok = [t for t in times if t is not None]
        self.fresh["floor"] = {"name": "floor", "n": len(times), "ok": len(ok), "v_p50": pct(ok, 50),
                               "v_p90": pct(ok, 90), "v_p95": pct(ok, 95), "v_max": max(ok) if ok else float("nan")}
        print("  %-24s %5d sessions, %d complete  p50 %.3f s  p95 %.3f s"
              % ("floor (direct to farm)", len(times), len(ok), self.fresh["floor"]["v_p50"],
                 self.fresh["floor"]["v_p95"]))
        for milter, prefix in (("vemilter-unix", "vf"), ("vemilter-inet", "vg"), ("native-unix", "vn"),
                               ("vemilter-solo", "vs")):
            self.prime(milter, "vc00000@d000.bench")
            self.fresh[milter + "/fresh"] = self.scenario(milter + "/fresh", milter, self.senders(prefix, a.fresh),
                                                          milter=milter)
        self.prime("postfix", "pc00000@d000.bench")
        self.fresh["postfix/fresh"] = self.scenario("postfix/fresh", "postfix", self.senders("pf", a.fresh))

    def cached_path(self):
        a = self.args
        setups = {
            "plain": dict(sender="xx", src="xx00000@d000.bench"),
            "postfix": dict(sender="pc", src="pc00000@d000.bench"),
            "vemilter-inet": dict(sender="vc", src="vc00000@d000.bench", milter="vemilter-inet"),
            "vemilter-unix": dict(sender="vc", src="vc00000@d000.bench", milter="vemilter-unix"),
            "native-inet": dict(sender="vc", src="vc00000@d000.bench", milter="native-inet"),
            "native-unix": dict(sender="vc", src="vc00000@d000.bench", milter="native-unix"),
            "milter-floor": dict(sender="xx", src="xx00000@d000.bench", milter="milter-floor"),
        }
        phases = self.phases
        for rep in range(a.repeat):
            order = phases[rep % len(phases):] + phases[:rep % len(phases)]
            print(" repetition %d of %d: %s" % (rep + 1, a.repeat, ", ".join(order)))
            got = {}
            for phase in order:
                s = setups[phase]
                self.prime(phase, s["src"])
                r = self.scenario("%s #%d" % (phase, rep + 1), phase, self.senders(s["sender"], a.messages),
                                  milter=s.get("milter"))
                got[phase] = {"rate": r["rate"], "cpu_us_per_msg": r["cpu_us_per_msg"] if s.get("milter") else None,
                              "machine_us_per_msg": r["machine_us_per_msg"],
                              "farm_rcpts": r["farm_rcpts"], "undecided": r["undecided"], "rejected": r["rejected"],
                              "source": self.source_row("%s #%d" % (phase, rep + 1), phase, s["src"],
                                                        s.get("milter"))}
            self.reps.append(got)

    def run(self):
        a = self.args
        print("postfix bench: %d cached / %d fresh senders, %d sessions at once, farm latency %.0f ms a reply,"
              " %d domains on %d servers, %d repetitions" % (a.messages, a.fresh, a.concurrency, a.latency * 1000,
                                                            a.domains, a.servers, a.repeat))
        self.warm()
        self.fresh_path()
        self.cached_path()

    # ------------------------------------------------------------ report

    def numbers(self):
        """Everything the report prints, as one dict (the --json line)."""
        out = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "args": {k: v for k, v in vars(self.args).items() if k != "json"},
               "runtime_s": round(time.monotonic() - self.t_start, 1), "cached": {}, "fresh": {},
               "cores": os.cpu_count(), "load_avg": median_range(self.load)}
        nan3 = (float("nan"),) * 3
        for phase in CACHED_PHASES:
            if phase not in self.phases:  # not run (--phases): every list empty
                out["cached"][phase] = {"rates": [], "ratios": [], "ratio": nan3, "smtp_source_ratios": [],
                                        "smtp_source_ratio": nan3, "cpu_us_per_msg": [], "cpu_us": nan3,
                                        "smtp_source_cpu_us": nan3, "machine_us_per_msg": [], "machine_us": nan3,
                                        "cost_ratios": [], "cost_ratio": nan3, "smtp_source_cost_ratios": [],
                                        "smtp_source_cost_ratio": nan3, "farm_rcpts": 0, "undecided": 0,
                                        "rejected": 0}
                continue
            ratios = [rep[phase]["rate"] / rep["plain"]["rate"] for rep in self.reps if rep["plain"]["rate"]]
            # what the phase cost the whole machine per message, the baseline's
            # cost divided by it: the throughput ratio of a machine that is
            # short of CPU and of nothing else (less noisy than msgs/s on a
            # shared machine, where a neighbour's burst moves one phase's rate)
            costs = [rep["plain"]["machine_us_per_msg"] / rep[phase]["machine_us_per_msg"] for rep in self.reps
                     if rep[phase]["machine_us_per_msg"] > 0]
            machine = [rep[phase]["machine_us_per_msg"] for rep in self.reps]
            src_costs = [rep["plain"]["source"]["machine_us_per_msg"] / rep[phase]["source"]["machine_us_per_msg"]
                         for rep in self.reps if rep[phase]["source"] and rep["plain"]["source"]
                         and rep[phase]["source"]["machine_us_per_msg"] > 0]
            src = [rep[phase]["source"]["rate"] / rep["plain"]["source"]["rate"] for rep in self.reps
                   if rep[phase]["source"] and rep["plain"]["source"] and rep["plain"]["source"]["rate"]]
            cpu = [rep[phase]["cpu_us_per_msg"] for rep in self.reps if rep[phase]["cpu_us_per_msg"] is not None]
            src_cpu = [rep[phase]["source"]["cpu_us_per_msg"] for rep in self.reps
                       if rep[phase]["source"] and rep[phase]["source"]["cpu_us_per_msg"] is not None]
            out["cached"][phase] = {
                "rates": [round(rep[phase]["rate"], 1) for rep in self.reps],
                "ratios": [round(x, 3) for x in ratios], "ratio": median_range(ratios),
                "machine_us_per_msg": [round(x, 1) for x in machine], "machine_us": median_range(machine),
                "cost_ratios": [round(x, 3) for x in costs], "cost_ratio": median_range(costs),
                "smtp_source_cost_ratios": [round(x, 3) for x in src_costs],
                "smtp_source_cost_ratio": median_range(src_costs),
                "smtp_source_ratios": [round(x, 3) for x in src], "smtp_source_ratio": median_range(src),
                "cpu_us_per_msg": [round(x, 1) for x in cpu], "cpu_us": median_range(cpu),
                "smtp_source_cpu_us": median_range(src_cpu),
                "farm_rcpts": sum(rep[phase]["farm_rcpts"] for rep in self.reps),
                "undecided": sum(rep[phase]["undecided"] for rep in self.reps),
                "rejected": sum(rep[phase]["rejected"] for rep in self.reps)}
        floor_p50 = self.fresh.get("floor", {}).get("v_p50", float("nan"))
        for name, r in self.fresh.items():
            f = {k: r.get(k) for k in ("n", "v_p50", "v_p90", "v_p95", "v_max", "first_share", "undecided",
                                       "attempts", "farm_rcpts", "farm_distinct", "rate", "cpu_us_per_msg", "ok")
                 if r.get(k) is not None}
            if name != "floor" and floor_p50 == floor_p50 and floor_p50 > 0:
                f["p50_over_floor"] = r["v_p50"] / floor_p50
            out["fresh"][name] = f
        return out

    def report(self):
        n = self.numbers()
        c, f = n["cached"], n["fresh"]
        print()
        print("%-16s %s   %-20s %-20s %-22s %s" % ("phase", "msgs/s per repetition", "ratio median (range)",
                                                   "cost ratio", "smtp-source ratio",
                                                   "vemilter CPU us/msg (median)"))
        for phase in self.phases:
            x = c[phase]
            print("%-16s %-24s %-20s %-20s %-22s %s" % (
                phase, " ".join("%.1f" % v for v in x["rates"]), "%.2f (%.2f-%.2f)" % x["ratio"],
                "%.2f (%.2f-%.2f)" % x["cost_ratio"] if x["cost_ratios"] else "-",
                "%.2f (%.2f-%.2f)" % x["smtp_source_ratio"] if x["smtp_source_ratios"] else "-",
                "%.0f (%.0f-%.0f); smtp-source %.0f" % (x["cpu_us"] + (x["smtp_source_cpu_us"][0],))
                if x["cpu_us_per_msg"] else "-"))
        print("(cost ratio: the machine's busy CPU per message in the baseline ÷ in the phase, /proc/stat,"
              " every process; the machine's share per message: %s)"
              % ", ".join("%s %.0f us" % (p, c[p]["machine_us"][0]) for p in self.phases))
        print()
        print("%-22s %6s %8s %8s %8s %8s %8s %9s" % ("fresh", "n", "p50 s", "p90 s", "p95 s", "max s", "1st try",
                                                  "p50/floor"))
        for name in ("floor", "vemilter-unix/fresh", "vemilter-inet/fresh", "native-unix/fresh", "vemilter-solo/fresh",
                     "postfix/fresh",
                     "postfix/fresh-p1"):
            if name not in f:
                continue
            x = f[name]
            print("%-22s %6d %8.3f %8.3f %8.3f %8.3f %8s %9s" % (
                name, x["n"], x["v_p50"], x["v_p90"], x["v_p95"], x["v_max"],
                "%.1f%%" % (100 * x["first_share"]) if "first_share" in x else "-",
                "%.2f" % x["p50_over_floor"] if "p50_over_floor" in x else "-"))
        for phase in ("postfix",) + MILTER_PHASES:
            if c[phase]["farm_rcpts"] or c[phase]["undecided"] or c[phase]["rejected"]:
                print("WARNING: %s was not all cached/accepted: %d farm RCPTs, %d undecided, %d rejected"
                      % (phase, c[phase]["farm_rcpts"], c[phase]["undecided"], c[phase]["rejected"]))

        a = self.args
        fl = f.get("floor", {})

        def fr(name, key, fmt="%.2f s"):
            x = f.get(name)
            return fmt % x[key] if x and key in x and x[key] == x[key] else "-"

        def ratio(phase, key):
            x = c[phase]
            if not x[key + "s"]:
                return "-"
            return "%.2f (%.2f–%.2f)" % x[key]
        print()
        print("Markdown (one run, %s, %d repetitions of %d messages per cached phase, %d sessions at once, "
              "fake MX at %.0f ms per reply, %d fresh senders; bench ran %.0f s; %d cores, 1-minute load average "
              "%.1f (%.1f-%.1f) over the phases):"
              % ((n["when"], a.repeat, a.messages, a.concurrency, a.latency * 1000, a.fresh, n["runtime_s"],
                  n["cores"]) + tuple(n["load_avg"])))
        print()
        fresh_of = {p: p + "/fresh" for p in MILTER_PHASES}  # native-inet has no fresh scenario: "-"

        def row(label, cells):
            print("| %s | %s |" % (label, " | ".join(cells)))
        print("| path | Postfix verify | vemilter libmilter, inet | vemilter libmilter, unix | vemilter native, inet"
              " | vemilter native, unix |")
        print("|---|---|---|---|---|---|")
        row("cached senders, msgs/s ÷ no-check baseline (custom client), median (range)",
            [ratio(p, "ratio") for p in ("postfix",) + MILTER_PHASES])
        if any(c[p]["smtp_source_ratios"] for p in CACHED_PHASES):
            row("cached senders, `smtp-source` ÷ no-check, median (range)",
                [ratio(p, "smtp_source_ratio") for p in ("postfix",) + MILTER_PHASES])
        row("cached senders, the machine's CPU per message: no-check's ÷ this path's (custom client), median (range)",
            [ratio(p, "cost_ratio") for p in ("postfix",) + MILTER_PHASES])
        row("vemilter CPU per cached message (custom client / smtp-source), median",
            ["–"] + ["%.0f µs / %s" % (c[p]["cpu_us"][0], "%.0f µs" % c[p]["smtp_source_cpu_us"][0]
                                        if c[p]["smtp_source_cpu_us"][0] == c[p]["smtp_source_cpu_us"][0] else "-")
                     if c[p]["cpu_us_per_msg"] else "-" for p in MILTER_PHASES])
        row("fresh sender, time to verdict p50 / p90 / p95 (MX at %.0f ms per reply)" % (a.latency * 1000),
            [" / ".join(fr(nm, k) for k in ("v_p50", "v_p90", "v_p95"))
             for nm in ["postfix/fresh"] + [fresh_of[p] for p in MILTER_PHASES]])
        row("protocol floor p50 (new session: greeting + EHLO + MAIL + RCPT, same bench)",
            [("%.2f s" % fl["v_p50"]) if fl else "-"] * 5)
        row("fresh p50 ÷ floor", [fr(nm, "p50_over_floor", "%.2f")
                                  for nm in ["postfix/fresh"] + [fresh_of[p] for p in MILTER_PHASES]])
        row("fresh senders decided on the first attempt",
            ["%.0f %%" % (100 * f[nm]["first_share"]) if nm in f else "-"
             for nm in ["postfix/fresh"] + [fresh_of[p] for p in MILTER_PHASES]])
        row("the same, one new session per probe (host_sessions = 0, libmilter, unix socket): p50 ÷ floor",
            ["–", "–", "%s (p50 %s, p95 %s)" % (fr("vemilter-solo/fresh", "p50_over_floor", "%.2f"),
                                               fr("vemilter-solo/fresh", "v_p50"), fr("vemilter-solo/fresh", "v_p95")),
             "–", "–"])
        fl_c = c["milter-floor"]
        if fl_c["ratios"]:
            print()
            print("The milter protocol's own floor behind this Postfix (bench/milter_floor.c, epoll, unix socket: "
                  "accepts every MAIL FROM, no work): custom client %s, smtp-source %s of the no-check baseline, "
                  "cost ratio %s, %s µs CPU per message (smtp-source %s µs)."
                  % (ratio("milter-floor", "ratio"), ratio("milter-floor", "smtp_source_ratio"),
                     ratio("milter-floor", "cost_ratio"),
                     "%.0f" % fl_c["cpu_us"][0], "%.0f" % fl_c["smtp_source_cpu_us"][0]))
        print()
        if "postfix/fresh-p1" in f:
            print("(postfix/fresh-p1, address_verify_poll_count 1: p50 %s, first attempt %.0f %%; bounded below by"
                  " the client's --retry %.1f s)" % (fr("postfix/fresh-p1", "v_p50"),
                                                    100 * f["postfix/fresh-p1"]["first_share"], a.retry))
        if a.json:
            import json

            def clean(x):
                if isinstance(x, float):
                    return None if x != x else round(x, 6)
                if isinstance(x, dict):
                    return {k: clean(v) for k, v in x.items()}
                if isinstance(x, (list, tuple)):
                    return [clean(v) for v in x]
                return x
            with open(a.json, "a") as fh:
                fh.write(json.dumps(clean(n), sort_keys=True) + "\n")
            print("JSON line appended to %s" % a.json)

    def teardown(self):
        if self.postfix is not None:
            try:
                self.postfix.stop()
            except Exception:
                pass
        for d in self.milters.values():
            d.stop(signal.SIGTERM, timeout=40)
        for x in (self.farm, self.dns):
            if x is not None:
                try:
                    x.stop()
                except Exception:
                    pass
        self.tmp.remove()


def main():
    ap = benchlib.arg_parser(__doc__, latency=0.1, procs=4,
                             messages_help="messages per cached phase (and cached senders)",
                             fresh_help="never-seen senders per fresh scenario",
                             quick_help="small sizes (< 2 minutes), for a smoke test")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions of each cached phase (median reported)")
    ap.add_argument("--no-smtp-source", action="store_true", help="skip the smtp-source rows")
    ap.add_argument("--phases", default=",".join(CACHED_PHASES),
                    help="cached phases to run, comma-separated (plain always; default all: %(default)s)")
    ap.add_argument("--json", metavar="FILE", help="append every number as one JSON line to FILE")
    args = ap.parse_args()
    if args.quick:
        args.messages, args.fresh, args.repeat = 200, 20, 2
    args.repeat = max(1, args.repeat)
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = [p for p in args.phases if p not in CACHED_PHASES]
    if unknown:
        ap.error("unknown phase %s (known: %s)" % (", ".join(unknown), ", ".join(CACHED_PHASES)))
    return benchlib.run(Bench, args)


if __name__ == "__main__":
    sys.exit(main())
