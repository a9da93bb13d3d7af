#!/usr/bin/python3
"""domains_rss - the daemon's memory under a flood of distinct sender domains.

Runs the real vemilter (its engine, its LMDB cache unless --no-cache) in
front of the fake DNS server, and sends it --domains messages over the
milter protocol, each from a random address at a random, never repeated
domain, from --threads milter connections at once (one message after the
other on each: MAIL, RCPT, ABORT). The fake answers NXDOMAIN for every one
of them (its negative TTL 60 s), so each sender costs a DNS resolution, a
domain record (kept dns_cache_time), a probe and a cache record.

Reports the daemon's VmRSS, VmHWM and RssAnon (from /proc) before the
flood, after each checkpoint (--checkpoints, default 10000,50000,100000)
and once the entries have expired (--settle seconds after the flood: the
domain records live dns_cache_time and a rate minute, the tidy timer runs
every minute), with the messages per second and the DNS queries the fake
received; with --again, after one more flood as large (freed records' memory
is reused: the daemon stays about where it was). Also, first: 20 concurrent senders at one new domain, and how
many DNS queries that domain cost.

Budgets that would stop the flood from probing (client_probe_rate: every
message comes from one client address) are switched off; the rest are the
defaults.

Usage: bench/domains_rss.py [--domains 100000] [--threads 8]
       [--checkpoints 10000,50000,100000] [--settle 150] [--no-cache]
       [--again] [--binary PATH]
Needs a built tree: VEMILTER_BUILDDIR (default: the source dir). Loopback
only.
"""

import argparse
import os
import random
import string
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(HERE, "..", "tests", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fakes"))

import vmtest  # noqa: E402
from vmtest import Daemon, TempDir, base_conf  # noqa: E402
from milterclient import MilterClient  # noqa: E402
from fakedns import FakeDNS  # noqa: E402


def status_kib(pid, fields=("VmRSS", "VmHWM", "RssAnon")):
    """Fields of /proc/PID/status in KiB."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key = line.split(":")[0]
            if key in fields:
                out[key] = int(line.split()[1])
    return out


def word(rng, n):
    return "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(n))


class Flood:
    """N milter connections sending messages from fresh random domains."""

    def __init__(self, sock, threads, seed):
        self.sock = sock
        self.threads = threads
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.sent = 0
        self.replies = {}
        self.errors = 0

    def next_sender(self):
        with self.lock:
            self.sent += 1
            return "<%s@%s-%d.rss.test>" % (word(self.rng, 8), word(self.rng, 10), self.sent)

    def worker(self, count):
        c = MilterClient(self.sock, timeout=60)
        try:
            c.open()
            c.session(client_addr="198.51.100.9")
            for _ in range(count):
                m = c.mail(self.next_sender())
                code = m.code
                if code == "c":
                    r = c.rcpt("<bob@local.test>")
                    code = r.smtp_code or r.code
                c.abort()
                with self.lock:
                    self.replies[code] = self.replies.get(code, 0) + 1
            c.quit()
        except Exception as e:  # a broken connection: counted, the run goes on
            with self.lock:
                self.errors += 1
            print("# worker: %r" % (e,), file=sys.stderr)
        finally:
            c.close()

    def run(self, total):
        per = [total // self.threads + (1 if i < total % self.threads else 0) for i in range(self.threads)]
        ts = [threading.Thread(target=self.worker, args=(n,)) for n in per if n > 0]
        for t in ts:
            t.start()
        for t in ts:
            t.join(3600)


def concurrent_one_domain(d, dns, n=20):
    """n senders at one new domain at once; the DNS queries it cost."""
    dns.clear_queries()
    barrier = threading.Barrier(n)

    def one(i):
        c = MilterClient(d.socket, timeout=30)
        try:
            c.open()
            c.session(client_addr="198.51.100.8")
            barrier.wait(10)
            c.mail("<user%d@twenty.rss.test>" % i)
            c.rcpt("<bob@local.test>")
            c.quit()
        finally:
            c.close()

    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    q = list(dns.queries)
    mine = [x for x in q if x[0].lower().endswith("twenty.rss.test")]
    return len(mine), sum(1 for x in mine if x[1] == "MX")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--domains", type=int, default=100000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--checkpoints", default="10000,50000,100000")
    ap.add_argument("--settle", type=float, default=150.0)
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("--again", action="store_true", help="after the idle time, flood once more")
    ap.add_argument("--binary", default=None)
    ap.add_argument("--seed", type=int, default=8)
    args = ap.parse_args()

    zone = {"twenty.rss.test": {"MX": [[10, "mx.twenty.rss.test"]]},
            "mx.twenty.rss.test": {"A": ["127.0.0.1"]}}
    tmp = TempDir()
    dns = FakeDNS(zone)
    d = None
    try:
        port = dns.start()
        conf = base_conf(tmp, "rss.sock", **{
            "dns_servers": "127.0.0.1:%d" % port, "dns_timeout": "2s",
            "helo_name": "probe.vemilter.test", "probe_port": 1,
            "probe_allow_networks": "127.0.0.0/8", "connect_timeout": "1s",
            "verify_budget": "5s", "client_probe_rate": 0, "log_level": "warning",
            "cache": "" if args.no_cache else tmp.join("cache.lmdb"),
        })
        d = Daemon(tmp, conf, name="rss", binary=args.binary)
        d.start()
        pid = d.pid
        print("daemon pid %d; domains %d, threads %d, %s, cache %s" % (
            pid, args.domains, args.threads, "NXDOMAIN",
            "off" if args.no_cache else "LMDB"))
        print("%-28s %10s %10s %10s %10s %12s" % ("point", "VmRSS KiB", "VmHWM KiB", "RssAnon", "msgs/s",
                                                  "DNS queries"))

        def report(label, rate=None):
            s = status_kib(pid)
            print("%-28s %10d %10d %10d %10s %12d" % (label, s.get("VmRSS", 0), s.get("VmHWM", 0),
                                                       s.get("RssAnon", 0),
                                                       "%.0f" % rate if rate is not None else "-",
                                                       len(dns.queries)), flush=True)

        total_q, mx_q = concurrent_one_domain(d, dns)
        print("20 concurrent senders at one new domain: %d DNS queries for it (%d MX)" % (total_q, mx_q),
              flush=True)
        dns.clear_queries()
        report("0 (before the flood)")
        flood = Flood(d.socket, args.threads, args.seed)
        done = 0
        for cp in [int(x) for x in args.checkpoints.split(",") if x]:
            if cp > args.domains:
                break
            t0 = time.monotonic()
            flood.run(cp - done)
            rate = (cp - done) / max(time.monotonic() - t0, 1e-6)
            done = cp
            report("%d domains" % cp, rate)
        print("replies: %r; broken connections: %d" % (flood.replies, flood.errors))
        deadline = time.monotonic() + args.settle
        while time.monotonic() < deadline:
            time.sleep(min(5.0, deadline - time.monotonic()))
        report("after %.0f s idle" % args.settle)
        # Once the records are gone their memory is reused: a second flood
        # as large as the first leaves the daemon about where it was.
        if args.again:
            t0 = time.monotonic()
            flood.run(args.domains)
            report("another %d domains" % args.domains, args.domains / max(time.monotonic() - t0, 1e-6))
        if not d.running():
            print("the daemon died", file=sys.stderr)
            return 1
    finally:
        if d is not None:
            d.stop()
        dns.stop()
        tmp.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
