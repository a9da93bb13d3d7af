#!/usr/bin/python3
"""postfix_bench - sender verification through a real Postfix on loopback:
vemilter against Postfix's own reject_unverified_sender, on the same fakes.

One throw-away Postfix instance (tests/lib/postfixinst.py, plus an smtp(8)
service for Postfix's verify probes), one vemilter, the fake DNS server and
the fake SMTP farm (every reply delayed by --latency). The load generator is
this script (asyncio, --concurrency sessions at once, one SMTP session per
message: EHLO, MAIL, RCPT, DATA, QUIT), because smtp-source cannot vary the
sender; smtp-source's rate with one sender is printed as a cross-check of
the generator where it applies.

Scenarios (all accepted mail ends in Postfix's discard: transport)
  plain          no milter, no restriction: Postfix alone
  vemilter/cached   vemilter, every sender already in its cache
  vemilter/fresh    vemilter, never-seen senders: a probe per sender at
                    the farm, within verify_budget (8s)
  postfix/cached    smtpd_sender_restrictions = reject_unverified_sender,
                    every sender already in address_verify_map
  postfix/fresh     the same with never-seen senders (address_verify_poll_count
                    3, Postfix's default: smtpd waits up to 2 x 3 s)
  postfix/fresh-p1  address_verify_poll_count = 1: the first try of a new
                    sender gets 450 "address verification in progress" at once
A client that gets a 4xx at RCPT retries the same sender every
--retry seconds (a real MTA waits minutes), until a final answer or 60 s.
So for postfix/fresh-p1 the time to a verdict is at least --retry and its
messages/s counts cheap 450s plus quick retries: in real life each of those
senders waits a whole retry interval (Postfix: minimal_backoff_time, 300s).

Postfix's verify probes go to the farm through transport_maps (texthash:
each sender domain -> smtp:[127.0.1.N]:PORT), so the system resolver is not
touched; address_verify_map = btree:$data_directory/verify_cache (this
Debian build has no lmdb map type), unverified_sender_reject_code = 550.

Reported per scenario: messages/s (accepted messages over wall time, all
retries included), the ratio to plain, the share of senders decided (2xx or
5xx) on the first attempt, the time from the first MAIL FROM to the final
verdict (median, 90th percentile, max), the RCPT commands the farm saw, and
vemilter's CPU time. Numbers are ratios within one run on one machine, not
absolute promises.

Usage: bench/postfix_bench.py [--messages 2000] [--fresh 200] [--concurrency 20]
       [--latency 0.02] [--domains 50] [--servers 10] [--retry 1.0] [--quick]
Needs root, Debian's postfix package, and a built tree (VEMILTER_BUILDDIR,
default: the source dir). Not part of make check.
"""

import argparse
import asyncio
import multiprocessing
import os
import re
import resource
import signal
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(HERE, "..", "tests", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fakes"))

import vmtest  # noqa: E402
import postfixinst  # noqa: E402
from fakedns import FakeDNS  # noqa: E402
from smtpfarm import SmtpFarm  # noqa: E402

SMTP_SOURCE = "/usr/sbin/smtp-source"
RETRY_LIMIT = 60.0        # a sender still undecided after this counts as undecided
SESSION_TIMEOUT = 30.0    # one SMTP command


class BenchPostfix(postfixinst.PostfixInstance):
    """The test instance plus the smtp(8) client that Postfix's verify(8)
    service needs to send its probes (to the farm only, via transport_maps)."""

    def master_cf(self):
        return super().master_cf() + \
            "smtp      unix  -       -       n       -       -       smtp\n"


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


async def one_message(port, rec, body):
    """One SMTP session for rec.sender; returns the RCPT code."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.1", 0)), SESSION_TIMEOUT)
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

def cpu_seconds(pid):
    """utime + stime of a process, in seconds (0 if gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def pct(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


def summarize(name, records, wall, farm_rcpts, cpu):
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
        "v_med": statistics.median(verdict) if verdict else float("nan"),
        "v_p90": pct(verdict, 90), "v_max": max(verdict) if verdict else float("nan"),
        "attempts": sum(r.attempts for r in records), "farm_rcpts": farm_rcpts, "cpu": cpu,
        "errors": errors[:3], "n_errors": len(errors),
    }


def smtp_source_rate(port, n, concurrency, sender):
    """Messages/s of Postfix's smtp-source with one fixed sender (a cross-check
    of the Python generator), or None."""
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
    return n / wall


# ---------------------------------------------------------------- the run

class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = vmtest.TempDir(prefix="vemilter-pfbench-")
        self.dns = None
        self.farm = None
        self.milter = None
        self.postfix = None
        self.results = []
        self.cross = {}

    def domain(self, i):
        return "d%03d.bench" % (i % self.args.domains)

    def server(self, i):
        return "127.0.1.%d" % (i % self.args.servers + 1)

    def senders(self, prefix, n):
        return ["%s%05d@%s" % (prefix, i, self.domain(i)) for i in range(n)]

    def setup(self):
        a = self.args
        zone = {}
        for d in range(a.domains):
            zone[self.domain(d)] = {"MX": [[10, "mx." + self.domain(d)]]}
            zone["mx." + self.domain(d)] = {"A": [self.server(d)]}
        self.dns = FakeDNS(zone)
        dns_port = self.dns.start()
        # every local part used below exists at the farm
        users = ["%s%05d" % (p, i) for p in ("vc", "vf", "pc", "pf", "pg", "xx")
                 for i in range(max(a.messages, a.fresh))]
        self.farm = SmtpFarm(latency=a.latency)
        for s in range(a.servers):
            self.farm.add("127.0.1.%d" % (s + 1), "normal", users=users)
        self.farm_port = self.farm.start()

        conf = vmtest.base_conf(self.tmp, "milter.sock", socket_mode="0666", trusted_networks="192.0.2.0/24")
        conf.update({
            "dns_servers": "127.0.0.1:%d" % dns_port, "helo_name": "probe.bench",
            "probe_port": self.farm_port, "probe_allow_networks": "127.0.0.0/8",
            "verify_budget": "8s", "cache": self.tmp.join("cache.lmdb"),
            # throughput, not politeness: thousands of probes to 20 fake
            # servers would otherwise meet the per-host session budget, and
            # thousands of new senders from the one load generator the
            # per-client budget (client_probe_rate, 60 a minute)
            "host_session_rate": 0, "client_probe_rate": 0,
        })
        self.milter = vmtest.Daemon(self.tmp, conf, name="vemilter")
        self.milter.start()

        transport = self.tmp.write("transport", "".join(
            "%s smtp:[%s]:%d\n" % (self.domain(d), self.server(d), self.farm_port) for d in range(a.domains)))
        self.base_main = {
            "smtpd_client_connection_count_limit": "0",
            "default_process_limit": str(max(100, 2 * a.concurrency)),
            "transport_maps": "texthash:" + transport,
            "address_verify_map": "btree:$data_directory/verify_cache",
            "unverified_sender_reject_code": "550",
            "smtp_connect_timeout": "10s",
        }
        self.postfix = BenchPostfix(self.tmp, extra_main=dict(self.base_main))

    def configure(self, milter=False, verify=False, poll_count=None):
        """(Re)start Postfix with this configuration (the data directory and
        its verify cache survive)."""
        if self.postfix.started:
            self.postfix.stop()
        main = dict(self.base_main)
        if verify:
            main["smtpd_sender_restrictions"] = "reject_unverified_sender"
        if poll_count is not None:
            main["address_verify_poll_count"] = str(poll_count)
        self.postfix.extra_main = main
        self.postfix.milter = self.milter.socket if milter else None
        self.postfix.start()
        return self.postfix.port

    def scenario(self, name, senders, retry=None):
        a = self.args
        self.farm.reset()
        c0 = cpu_seconds(self.milter.pid)
        records, wall = load(self.postfix.port, senders, a.concurrency, retry or a.retry, a.procs)
        cpu = cpu_seconds(self.milter.pid) - c0
        self.farm.wait_idle(timeout=10)
        rcpts = sum(1 for c in self.farm.commands() if c.upper().startswith("RCPT TO:<")
                    and not re.match(r"(?i)RCPT TO:<[a-z0-9]{16}@", c))  # vemilter's catch-all question
        r = summarize(name, records, wall, rcpts, cpu)
        self.results.append(r)
        print("  %-18s %5d msgs %6.2f s  %7.1f msgs/s  first-try decided %5.1f%%  undecided %d%s"
              % (name, r["n"], r["wall"], r["rate"], 100 * r["first_share"], r["undecided"],
                 "  errors %d e.g. %s" % (r["n_errors"], r["errors"][0]) if r["n_errors"] else ""))
        sys.stdout.flush()
        return r

    def run(self):
        a = self.args
        print("postfix bench: %d cached / %d fresh senders, %d sessions at once, farm latency %.0f ms a reply,"
              " %d domains on %d servers" % (a.messages, a.fresh, a.concurrency, a.latency * 1000,
                                            a.domains, a.servers))
        # (a) Postfix alone
        port = self.configure()
        self.scenario("plain", self.senders("xx", a.messages))
        self.cross["plain"] = smtp_source_rate(port, a.messages, a.concurrency, "xx00000@d000.bench")

        # (b, c) vemilter
        self.configure(milter=True)
        warm = self.senders("vc", a.messages)
        self.scenario("vemilter/warm-up", warm)
        self.scenario("vemilter/cached", warm)
        self.cross["vemilter/cached"] = smtp_source_rate(self.postfix.port, a.messages, a.concurrency,
                                                         "vc00000@d000.bench")
        self.scenario("vemilter/fresh", self.senders("vf", a.fresh))

        # (b', c') Postfix's reject_unverified_sender. The warm-up runs with
        # address_verify_poll_count = 1 (450 at once, probe in the
        # background, the client retries): with the default 3 each new
        # sender holds its session ~3 s and warming thousands takes minutes.
        self.configure(verify=True, poll_count=1)
        self.scenario("postfix/fresh-p1", self.senders("pg", a.fresh))
        warm = self.senders("pc", a.messages)
        self.scenario("postfix/warm-up", warm, retry=0.5)
        self.configure(verify=True)
        self.scenario("postfix/cached", warm)
        self.cross["postfix/cached"] = smtp_source_rate(self.postfix.port, a.messages, a.concurrency,
                                                        "pc00000@d000.bench")
        self.scenario("postfix/fresh", self.senders("pf", a.fresh))

    def report(self):
        plain = next((r["rate"] for r in self.results if r["name"] == "plain"), 0) or float("nan")
        print()
        print("%-18s %6s %9s %7s %9s %8s %8s %8s %8s %7s %8s" % (
            "scenario", "msgs", "msgs/s", "x plain", "1st try", "med s", "p90 s", "max s", "attempts",
            "farm", "cpu s"))
        for r in self.results:
            if r["name"].endswith("warm-up"):
                continue
            print("%-18s %6d %9.1f %7.2f %8.1f%% %8.3f %8.3f %8.3f %8d %7d %8.2f" % (
                r["name"], r["n"], r["rate"], r["rate"] / plain, 100 * r["first_share"], r["v_med"],
                r["v_p90"], r["v_max"], r["attempts"], r["farm_rcpts"], r["cpu"]))
        by = {r["name"]: r for r in self.results}
        print()
        for a, b in (("vemilter/cached", "postfix/cached"), ("vemilter/fresh", "postfix/fresh"),
                     ("vemilter/fresh", "postfix/fresh-p1")):
            if a in by and b in by and by[b]["rate"] > 0:
                print("%s vs %s: %.2fx the throughput, median verdict %.3f s vs %.3f s, "
                      "first-try decided %.0f%% vs %.0f%%"
                      % (a, b, by[a]["rate"] / by[b]["rate"], by[a]["v_med"], by[b]["v_med"],
                         100 * by[a]["first_share"], 100 * by[b]["first_share"]))
        print("(postfix/fresh-p1: its verdict time is bounded below by the client's --retry %.1f s)"
              % self.args.retry)
        cross = ", ".join("%s %.1f msgs/s" % (k, v) for k, v in self.cross.items() if v)
        if cross:
            print("smtp-source (one fixed sender, same concurrency) cross-check: " + cross)
        print("cpu s = vemilter's CPU time in that scenario; farm = RCPT commands for the senders at the"
              " fake MX (vemilter's random catch-all RCPT not counted)")

    def teardown(self):
        if self.postfix is not None:
            try:
                self.postfix.stop()
            except Exception:
                pass
        if self.milter is not None:
            self.milter.stop(signal.SIGTERM, timeout=40)
        for x in (self.farm, self.dns):
            if x is not None:
                try:
                    x.stop()
                except Exception:
                    pass
        self.tmp.remove()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=2000, help="cached-sender and plain messages")
    ap.add_argument("--fresh", type=int, default=200, help="never-seen senders per fresh scenario")
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--latency", type=float, default=0.02, help="seconds before each farm reply")
    ap.add_argument("--domains", type=int, default=50)
    ap.add_argument("--servers", type=int, default=10)
    ap.add_argument("--retry", type=float, default=1.0, help="seconds before a 4xx'd sender tries again")
    ap.add_argument("--procs", type=int, default=4, help="load generator processes")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    args = ap.parse_args()
    if args.quick:
        args.messages, args.fresh = 200, 40
    why = postfixinst.available()
    if why:
        print("cannot run: %s" % why)
        return 2
    if not os.access(vmtest.vemilter_binary(), os.X_OK):
        print("no vemilter binary at %s (set VEMILTER_BUILDDIR)" % vmtest.vemilter_binary())
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    b = Bench(args)
    try:
        b.setup()
        b.run()
        b.report()
    except postfixinst.PostfixError as e:
        print("Postfix failed: %s" % e)
        return 1
    except BaseException:
        if b.postfix is not None:
            sys.stderr.write("Postfix log tail:\n%s\n" % vmtest.tail(b.postfix.log(), 20))
        if b.milter is not None:
            sys.stderr.write("vemilter log tail:\n%s\n" % vmtest.tail(b.milter.log(), 20))
        raise
    finally:
        b.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
