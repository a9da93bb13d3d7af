#!/usr/bin/python3
"""shared_bench - the shared Redis cache (issue 12) through a real Postfix on
loopback: the cached path on Redis against LMDB, and probes per new sender
with 1, 2 and 4 daemons sharing one Redis.

Built on bench/postfix_bench.py (imported, not changed): its Postfix
instance, load generator, fakes and summary. One run:

  plain              Postfix alone, no milter: the baseline
  lmdb/cached        vemilter with its LMDB file, every sender in it
  redis/cached       vemilter on Redis, every sender in its local tier (the
                     LMDB file in cache_fallback) and in Redis: what a host
                     sees for the senders it verified itself
  redis/shared       a second vemilter on the same Redis whose local tier is
                     empty: every sender was verified by the first one, so
                     each first message is answered from Redis (a shared
                     hit: the pipeline fetch on the engine thread), none is
                     probed
  fleet/N            N daemons on one Redis, each behind its own Postfix;
                     every new sender's message arrives at all N MTAs at
                     once (the worst case for a fleet); counted: the RCPTs
                     for the senders at the fake MX, i.e. probes per new
                     sender (1 is the goal; N without sharing)

The four cached scenarios run in turn, --rounds times (each round's
redis/shared on a daemon whose local tier is still empty), so that a drift
in the machine's load hits them alike. Reported: messages/s per round and
their median, the median of the per-round ratios to plain, the senders
probed again and the times the shared cache was logged unavailable (the
daemon's log); for fleet/N the probes per new sender and the share
answered on the first try. Numbers are ratios within one run on one
machine (2 shared cores here), not promises.

Usage: bench/shared_bench.py [--messages 1000] [--fresh 100] [--concurrency 20]
       [--latency 0.02] [--procs 2] [--rounds 3] [--quick]
Needs root, postfix, redis-server and a built tree. Not part of make check.
"""

import argparse
import os
import re
import resource
import signal
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "lib"))

import postfix_bench as pb  # noqa: E402
import postfixinst  # noqa: E402
import redisserver  # noqa: E402
import vmtest  # noqa: E402

RANDOM_RCPT = re.compile(r"(?i)RCPT TO:<[a-z0-9]{16}@")  # vemilter's catch-all question
FLEET_SIZES = (1, 2, 4)


def log_facts(daemon, start):
    """From daemon's log since offset start: verdicts by source, and how
    often the shared cache was logged unavailable (a timeout, say)."""
    text = daemon.log()[start:]
    sources = {}
    for v in vmtest.parse_verdicts(text):
        sources[v.get("source", "-")] = sources.get(v.get("source", "-"), 0) + 1
    reasons = re.findall(r"shared cache \S+: unavailable \(([^)]*)\)", text)
    return {"sources": ", ".join("%s %d" % kv for kv in sorted(sources.items())) or "-", "down": len(reasons),
            "why": sorted(set(reasons))[:3]}


class SharedBench(pb.Bench):
    """postfix_bench's Bench plus a Redis server and the daemons on it."""

    def __init__(self, args):
        super().__init__(args)
        self.redis = None
        self.lmdb_milter = None
        self.rmilters = []  # vemilters on Redis, as many as the largest fleet
        self.fleet = []     # extra Postfix instances of a fleet run: (TempDir, instance)
        self.fleet_results = []

    def setup(self):
        super().setup()  # fakes, the LMDB vemilter (self.milter), the Postfix instance
        self.lmdb_milter = self.milter
        self.redis = redisserver.RedisServer(self.tmp.path).start()
        base = dict(self.lmdb_milter.conf)
        for i in range(max(FLEET_SIZES)):
            conf = dict(base)
            conf.update({"socket": "unix:" + self.tmp.join("r%d.sock" % i), "cache": self.redis.url(),
                         "cache_fallback": self.tmp.join("r%d.lmdb" % i), "cache_redis_timeout": "200ms"})
            d = vmtest.Daemon(self.tmp, conf, name="r%d" % i)
            d.start()
            self.rmilters.append(d)

    def scenario(self, name, senders, retry=None):
        """postfix_bench's scenario, plus what the daemon's log says about
        it: verdicts by source, and the shared cache going down."""
        start = self.milter.log_size() if self.milter is not None else 0
        r = super().scenario(name, senders, retry)
        r["round"] = getattr(self, "round", 0)
        if self.milter is not None and self.postfix.milter:
            r.update(log_facts(self.milter, start))
            print("  %-18s verdicts by source: %s; shared cache down %d time(s)%s"
                  % ("", r["sources"], r["down"], " (%s)" % "; ".join(r["why"]) if r["why"] else ""))
        return r

    def use(self, daemon):
        """Run the next scenarios through daemon (Postfix restarted on it)."""
        self.milter = daemon
        self.configure(milter=True)

    def run(self):
        a = self.args
        print("shared bench: %d cached / %d fresh senders, %d sessions at once, farm latency %.0f ms a reply,"
              " %d domains on %d servers, Redis %s" % (a.messages, a.fresh, a.concurrency, a.latency * 1000,
                                                      a.domains, a.servers, self.redis.url()))
        lmdb_warm, redis_warm = self.senders("vc", a.messages), self.senders("pc", a.messages)
        self.use(self.lmdb_milter)
        self.scenario("lmdb/warm-up", lmdb_warm)
        self.use(self.rmilters[0])
        self.scenario("redis/warm-up", redis_warm)
        # The machine's load drifts: the four cached scenarios run in turn,
        # --rounds times, and each round's ratios are taken within it.
        for k in range(a.rounds):
            self.round = k
            self.configure()
            self.scenario("plain", self.senders("xx", a.messages))
            self.use(self.lmdb_milter)
            self.scenario("lmdb/cached", lmdb_warm)
            self.use(self.rmilters[0])
            self.scenario("redis/cached", redis_warm)
            self.use(self.rmilters[1 + k])  # a local tier that has never seen these senders
            self.scenario("redis/shared", redis_warm)
        self.postfix.stop()
        fresh = self.senders("vf", a.fresh * len(FLEET_SIZES))
        for k, n in enumerate(FLEET_SIZES):
            self.fleet_run(n, fresh[k * a.fresh:(k + 1) * a.fresh])

    def fleet_run(self, n, senders):
        """n daemons, each behind its own Postfix; every sender sent through all n at once."""
        a = self.args
        instances = []
        try:
            for i in range(n):
                t = vmtest.TempDir(prefix="vemilter-shbench-pf%d-" % i)
                pf = pb.BenchPostfix(t, milter=self.rmilters[i].socket, extra_main=dict(self.base_main))
                instances.append((t, pf))
                pf.start()
            self.farm.reset()
            starts = [d.log_size() for d in self.rmilters[:n]]
            out = [None] * n

            def one(i):
                out[i] = pb.load(instances[i][1].port, senders, max(1, a.concurrency // n), a.retry, 1)
            threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
            t0 = time.monotonic()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            wall = time.monotonic() - t0
            self.farm.wait_idle(timeout=10)
            probes = sum(1 for c in self.farm.commands() if c.upper().startswith("RCPT TO:<")
                         and not RANDOM_RCPT.match(c))
            records = [r for part in out if part for r in part[0]]
            r = pb.summarize("fleet/%d" % n, records, wall, probes, 0.0)
            r["daemons"] = n
            r["per_sender"] = probes / len(senders)
            facts = [log_facts(d, s0) for d, s0 in zip(self.rmilters[:n], starts)]
            r["down"] = sum(f["down"] for f in facts)
            self.fleet_results.append(r)
            print("  fleet/%d  %d senders x %d MTAs: %d probes at the farm, %.2f a sender; accepted %d of %d,"
                  " first try decided %.1f%%, %.2f s" % (n, len(senders), n, probes, r["per_sender"], r["accepted"],
                                                          r["n"], 100 * r["first_share"], wall))
            for d, f in zip(self.rmilters[:n], facts):
                print("    %s: verdicts by source: %s; shared cache down %d time(s)" % (d.name, f["sources"], f["down"]))
            sys.stdout.flush()
        finally:
            for t, pf in instances:
                try:
                    pf.stop()
                except Exception:
                    pass
                t.remove()

    def report(self):
        med = statistics.median
        rounds = {}
        for r in self.results:
            if not r["name"].endswith("warm-up"):
                rounds.setdefault(r["round"], {})[r["name"]] = r
        names = ("plain", "lmdb/cached", "redis/cached", "redis/shared")
        print()
        print("%-14s %s %9s %8s %8s %8s %8s" % ("scenario", " ".join("%8s" % ("r%d msg/s" % (k + 1))
                                                                     for k in sorted(rounds)),
                                            "median", "x plain", "med s", "probed", "down"))
        ratio = {}
        for name in names:
            rs = [rounds[k][name] for k in sorted(rounds) if name in rounds[k]]
            if not rs:
                continue
            # the ratio to plain within each round, then the median of those
            ratio[name] = med([rounds[r["round"]][name]["rate"] / rounds[r["round"]]["plain"]["rate"]
                               for r in rs if rounds[r["round"]].get("plain", {}).get("rate")] or [float("nan")])
            print("%-14s %s %9.1f %8.2f %8.3f %8d %8d" % (
                name, " ".join("%8.1f" % r["rate"] for r in rs), med([r["rate"] for r in rs]), ratio[name],
                med([r["v_med"] for r in rs]), sum(r["farm_rcpts"] for r in rs), sum(r.get("down", 0) for r in rs)))
        for name in ("redis/cached", "redis/shared"):
            if name in ratio and "lmdb/cached" in ratio:
                print("%s vs lmdb/cached: %.2f vs %.2f of plain (medians of the per-round ratios over %d rounds)"
                      % (name, ratio[name], ratio["lmdb/cached"], len(rounds)))
        print("probed = RCPTs at the fake MX in all rounds (a cached sender probed again); down = times the"
              " shared cache was logged unavailable")
        print()
        print("%-9s %7s %8s %10s %12s %9s %9s" % ("fleet", "daemons", "senders", "probes", "per sender", "1st try",
                                                 "Redis down"))
        for r in self.fleet_results:
            print("%-9s %7d %8d %10d %12.2f %8.1f%% %9d" % (r["name"], r["daemons"], r["n"] // r["daemons"],
                                                            r["farm_rcpts"], r["per_sender"], 100 * r["first_share"],
                                                            r["down"]))
        print("farm = RCPT commands for the senders at the fake MX (vemilter's random catch-all RCPT not"
              " counted); fleet: every sender's message through each MTA at once")

    def teardown(self):
        for d in self.rmilters:
            d.stop(signal.SIGTERM, timeout=40)
        self.milter = self.lmdb_milter
        super().teardown()
        if self.redis is not None:
            self.redis.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=1000, help="cached-sender and plain messages")
    ap.add_argument("--fresh", type=int, default=100, help="new senders per fleet size")
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--latency", type=float, default=0.02, help="seconds before each farm reply")
    ap.add_argument("--domains", type=int, default=50)
    ap.add_argument("--servers", type=int, default=10)
    ap.add_argument("--retry", type=float, default=1.0, help="seconds before a 4xx'd sender tries again")
    ap.add_argument("--procs", type=int, default=2, help="load generator processes")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the cached scenarios (at most 3)")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    args = ap.parse_args()
    if args.quick:
        args.messages, args.fresh, args.rounds = 200, 20, 1
    args.rounds = max(1, min(args.rounds, max(FLEET_SIZES) - 1))  # one fresh local tier a round
    args.fresh = min(args.fresh, max(args.messages, args.fresh) // len(FLEET_SIZES))  # farm users per prefix
    why = postfixinst.available() or redisserver.available()
    if why:
        print("cannot run: %s" % why)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    b = SharedBench(args)
    try:
        b.setup()
        b.run()
        b.report()
    except postfixinst.PostfixError as e:
        print("Postfix failed: %s" % e)
        return 1
    except BaseException:
        for d in [b.lmdb_milter] + b.rmilters:
            if d is not None:
                sys.stderr.write("%s log tail:\n%s\n" % (d.name, vmtest.tail(d.log(), 20)))
        raise
    finally:
        b.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
