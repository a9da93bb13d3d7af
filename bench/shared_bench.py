#!/usr/bin/python3
"""shared_bench - the shared Redis cache (issue 12) through a real Postfix on
loopback: the cached path on Redis against LMDB, and probes per new sender
with 1, 2 and 4 daemons sharing one Redis.

Built on bench/postfix_bench.py (imported): its Bench (the fakes and the
bench Postfix started, phase bookkeeping, priming, scenario and CPU
accounting), its BenchPostfix (one Postfix, one smtpd listener per phase),
load generator and summary; the options both take, a vemilter's config
behind the bench Postfix and the run around the bench: bench/benchlib.py.
Only setup(), the run and the report are this file's. One run:

  plain              Postfix's main listener, no milter: the baseline
  lmdb/cached        vemilter with its LMDB file, every sender in it
  redis/cached       vemilter "r0" on Redis, every sender in its local tier
                     (the LMDB file in cache_fallback) and in Redis: what a
                     host sees for the senders it verified itself
  redis/shared       another vemilter on the same Redis whose local tier has
                     never seen the senders (r1 in round 1, r2 in round 2,
                     ...): every sender was verified by r0, so each message
                     is answered from Redis (a shared hit), none is probed
  fleet/N            N daemons on one Redis (r0..rN-1), each behind its own
                     smtpd listener; every new sender's message arrives at
                     all N listeners at once (the worst case for a fleet);
                     counted: the RCPTs for the senders at the fake MX, i.e.
                     probes per new sender (1 is the goal; N without sharing)

The four cached phases run --rounds times, each round's in a rotated order
(so a drift of the shared machine does not always hit the same phase); each
listener is primed with untimed messages (postfix_bench's prime, from the
phase's first sender) before it is timed. Reported: msgs/s per round, the
median of the per-round ratios to plain (with their range), vemilter's CPU
per message, the senders probed again and the times the shared cache was
logged unavailable (from the daemon's log); for fleet/N the probes per new
sender, the distinct addresses probed and the share decided on the first
try. Numbers are ratios within one run on one machine (2 shared cores
here), not promises.

Usage: bench/shared_bench.py [--messages 2000] [--fresh 200] [--concurrency 20]
       [--latency 0.02] [--procs 2] [--rounds 5] [--quick]
--quick: 200 messages, 20 fresh senders, 2 rounds (39 s measured at load 3;
under 3 minutes). Defaults: 329 s measured at load averages up to 21.
Needs root, postfix, redis-server and a built tree (VEMILTER_BUILDDIR,
default: the source dir). Not part of make check.
"""

import os
import re
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fakes"))

import benchlib  # noqa: E402
import postfix_bench as pb  # noqa: E402
import redisserver  # noqa: E402
import vmtest  # noqa: E402

RANDOM_RCPT = re.compile(r"(?i)RCPT TO:<[a-z0-9]{16}@")  # vemilter's catch-all question
FLEET_SIZES = (1, 2, 4)
CACHED = ("plain", "lmdb/cached", "redis/cached", "redis/shared")


def log_facts(daemon, start):
    """From daemon's log since offset start: verdicts by reason, and how
    often the shared cache was logged unavailable (a timeout, say)."""
    text = daemon.log()[start:]
    reasons = {}
    for v in vmtest.parse_verdicts(text):
        reasons[v.get("reason", "-")] = reasons.get(v.get("reason", "-"), 0) + 1
    down = re.findall(r"shared cache \S+: unavailable \(([^)]*)\)", text)
    return {"reasons": ", ".join("%s %d" % kv for kv in sorted(reasons.items())) or "-", "down": len(down),
            "why": sorted(set(down))[:3]}


class SharedBench(pb.Bench):
    """postfix_bench's Bench with its own daemons: one on LMDB, the rest on
    one Redis server; one Postfix listener per daemon."""

    def __init__(self, args):
        super().__init__(args)
        self.redis = None
        self.rdaemons = max(max(FLEET_SIZES), 1 + args.rounds)  # r0 + a fresh local tier per round
        self.cached = []        # per round: {phase: summary}
        self.fleet_results = []

    def setup(self):
        a = self.args
        users = ["%s%05d" % (p, i) for p in ("vc", "pc", "xx", "vf")
                 for i in range(max(a.messages, a.fresh * len(FLEET_SIZES)))]
        dns_port = self.start_fakes(users)
        self.redis = redisserver.RedisServer(self.tmp.path).start()

        services = {}
        daemons = [("lmdb", {"cache": self.tmp.join("cache.lmdb")})]
        for i in range(self.rdaemons):
            daemons.append(("r%d" % i, {"cache": self.redis.url(), "cache_fallback": self.tmp.join("r%d.lmdb" % i),
                                        "cache_redis_timeout": "200ms"}))
        for name, extra in daemons:
            sock = "unix:" + self.tmp.join(name + ".sock")
            self.milters[name] = benchlib.start_milter(self.tmp, name, sock, dns_port, self.farm_port, **extra)
            services[name] = ["smtpd_milters=" + sock]

        self.start_postfix(services)

    def phase(self, name, listener, senders, milter=None):
        """postfix_bench's scenario (primed first), plus what the daemon's
        log says about it: verdicts by reason, the shared cache going down."""
        self.prime(listener, senders[0])
        start = self.milters[milter].log_size() if milter else 0
        r = self.scenario(name, listener, senders, milter=milter)
        if milter:
            r.update(log_facts(self.milters[milter], start))
            print("  %-24s %s: verdicts by reason: %s; shared cache down %d time(s)%s"
                  % ("", milter, r["reasons"], r["down"], " (%s)" % "; ".join(r["why"]) if r["why"] else ""))
        return r

    def run(self):
        a = self.args
        print("shared bench: %d cached / %d fresh senders, %d sessions at once, farm latency %.0f ms a reply,"
              " %d domains on %d servers, Redis %s, %d rounds" % (a.messages, a.fresh, a.concurrency,
                                                                 a.latency * 1000, a.domains, a.servers,
                                                                 self.redis.url(), a.rounds))
        lmdb_warm, redis_warm = self.senders("vc", a.messages), self.senders("pc", a.messages)
        self.scenario("warm-up lmdb", "lmdb", lmdb_warm, milter="lmdb")
        self.scenario("warm-up redis (r0)", "r0", redis_warm, milter="r0")
        for k in range(a.rounds):
            setups = {
                "plain": ("plain", self.senders("xx", a.messages), None),
                "lmdb/cached": ("lmdb", lmdb_warm, "lmdb"),
                "redis/cached": ("r0", redis_warm, "r0"),
                # a local tier that has never seen these senders
                "redis/shared": ("r%d" % (1 + k), redis_warm, "r%d" % (1 + k)),
            }
            order = CACHED[k % len(CACHED):] + CACHED[:k % len(CACHED)]
            print(" round %d of %d: %s" % (k + 1, a.rounds, ", ".join(order)))
            got = {}
            for name in order:
                listener, senders, milter = setups[name]
                got[name] = self.phase("%s #%d" % (name, k + 1), listener, senders, milter)
            self.cached.append(got)
        fresh = self.senders("vf", a.fresh * len(FLEET_SIZES))
        for k, n in enumerate(FLEET_SIZES):
            self.fleet_run(n, fresh[k * a.fresh:(k + 1) * a.fresh])

    def fleet_run(self, n, senders):
        """r0..rn-1, each behind its own listener; every sender sent through
        all n listeners at once (one load thread per listener)."""
        a = self.args
        names = ["r%d" % i for i in range(n)]
        self.farm.reset()
        starts = [self.milters[m].log_size() for m in names]
        out = [None] * n

        def one(i):
            out[i] = pb.load(self.postfix.ports[names[i]], senders, max(1, a.concurrency // n), a.retry, 1)
        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        t0 = time.monotonic()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.monotonic() - t0
        probes, distinct = self.farm_rcpts()
        records = [r for part in out if part for r in part[0]]
        r = pb.summarize("fleet/%d" % n, records, wall, probes, 0.0)
        self.load.append(os.getloadavg()[0])
        r.update({"daemons": n, "senders": len(senders), "distinct": distinct,
                  "per_sender": probes / len(senders) if senders else float("nan")})
        facts = [log_facts(self.milters[m], s0) for m, s0 in zip(names, starts)]
        r["down"] = sum(f["down"] for f in facts)
        self.fleet_results.append(r)
        print("  fleet/%d  %d senders x %d listeners: %d probes at the farm (%d addresses), %.2f a sender;"
              " accepted %d of %d, undecided %d, first try decided %.1f%%, %.2f s"
              % (n, len(senders), n, probes, distinct, r["per_sender"], r["accepted"], r["n"], r["undecided"],
                 100 * r["first_share"], wall))
        for m, f in zip(names, facts):
            print("    %s: verdicts by reason: %s; shared cache down %d time(s)" % (m, f["reasons"], f["down"]))
        sys.stdout.flush()

    def report(self):
        a = self.args
        print()
        print("%-14s %-26s %9s %-20s %-16s %7s %5s" % ("phase", "msgs/s per round", "median", "x plain median (range)",
                                                      "CPU us/msg med", "probed", "down"))
        ratios = {}
        for name in CACHED:
            rs = [rnd[name] for rnd in self.cached]
            ratios[name] = pb.median_range([rnd[name]["rate"] / rnd["plain"]["rate"] for rnd in self.cached
                                            if rnd["plain"]["rate"]])
            cpu = pb.median_range([r["cpu_us_per_msg"] for r in rs]) if name != "plain" else None
            print("%-14s %-26s %9.1f %-20s %-16s %7d %5d" % (
                name, " ".join("%.1f" % r["rate"] for r in rs), pb.median_range([r["rate"] for r in rs])[0],
                "%.2f (%.2f-%.2f)" % ratios[name], "%.0f" % cpu[0] if cpu else "-",
                sum(r["farm_rcpts"] for r in rs), sum(r.get("down", 0) for r in rs)))
            bad = sum(r["undecided"] + r["rejected"] for r in rs)
            if bad:
                print("WARNING: %s: %d messages undecided or rejected" % (name, bad))
        print("probed = RCPTs at the fake MX for the senders in all rounds (a cached sender probed again);"
              " down = times the shared cache was logged unavailable")
        print()
        print("%-9s %7s %8s %8s %10s %11s %9s %9s" % ("fleet", "daemons", "senders", "probes", "addresses",
                                                      "per sender", "1st try", "Redis down"))
        for r in self.fleet_results:
            print("%-9s %7d %8d %8d %10d %11.2f %8.1f%% %9d" % (r["name"], r["daemons"], r["senders"],
                                                                 r["farm_rcpts"], r["distinct"], r["per_sender"],
                                                                 100 * r["first_share"], r["down"]))
        print("probes = RCPT commands for the senders at the fake MX (vemilter's random catch-all RCPT not"
              " counted); fleet: every sender's message through each listener at once")
        load = pb.median_range(self.load)
        print()
        print("Markdown (one run, %s, %d rounds of %d messages per cached phase, %d sessions at once, fake MX at"
              " %.0f ms per reply; %.0f s from start to report; %d cores, 1-minute load average %.1f"
              " (%.1f-%.1f) over the phases):"
              % ((time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), a.rounds, a.messages, a.concurrency,
                  a.latency * 1000, time.monotonic() - self.t_start, os.cpu_count()) + tuple(load)))
        print()
        print("| cached path | msgs/s (median) | ÷ no-check baseline, median (range) |")
        print("|---|---|---|")
        for name in CACHED:
            print("| %s | %.1f | %.2f (%.2f–%.2f) |" % ((name, pb.median_range(
                [rnd[name]["rate"] for rnd in self.cached])[0]) + tuple(ratios[name])))
        print()
        print("| daemons sharing one Redis | new senders | probes | probes per new sender |")
        print("|---|---|---|---|")
        for r in self.fleet_results:
            print("| %d | %d | %d | %.2f |" % (r["daemons"], r["senders"], r["farm_rcpts"], r["per_sender"]))

    def teardown(self):
        if self.redis is not None:  # before the temp dir (its data dir) goes
            try:
                self.redis.kill()
            except Exception:
                pass
        super().teardown()


def main():
    ap = benchlib.arg_parser(__doc__, latency=0.02, procs=2,
                             messages_help="cached-sender and plain messages per phase",
                             fresh_help="new senders per fleet size",
                             quick_help="small sizes (< 3 minutes), for a smoke test")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of the cached phases (median reported)")
    args = ap.parse_args()
    if args.quick:
        args.messages, args.fresh, args.rounds = 200, 20, 2
    args.rounds = max(1, args.rounds)
    return benchlib.run(SharedBench, args, needs=(redisserver.available,))


if __name__ == "__main__":
    sys.exit(main())
