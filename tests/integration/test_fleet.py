#!/usr/bin/python3
"""test_fleet - a fleet of two MX hosts sharing one verification cache on
Redis (issue 12), end to end: two throw-away Postfix instances, each with
its own vemilter, both daemons on one redis-server of the test's own
(`cache = redis://...`, each with its own local LMDB tier in
cache_fallback), probing the fake DNS server and the fake SMTP farm.

What is asserted, through the SMTP replies the clients get, the farm's
record of every line it received, the records in Redis and the daemons'
logs:
  - one probe for the fleet: 50 concurrent messages from one new sender,
    split over both MTAs, make exactly one RCPT for that sender at the farm
    (one connection), and every message gets 250;
  - a sender verified on host A is answered on host B with no probe;
  - a catch-all fact learned on A (d:) answers on B without any probe, and
    a "not catch-all" hint learned on A (h:) saves B its random RCPT;
  - faults: Redis killed in the middle of a burst (every message still
    250, nothing stuck: a new sender afterwards is answered at once, each
    daemon logs that Redis is down); Redis restarted (both daemons connect
    again within their backoff, say so in their log, and share again: a
    sender verified on A is answered on B with no probe); Redis made slow
    with DEBUG SLEEP (every message still answered, within its budget);
    a wrong password (`vemilter -n` exits non-zero and says why, the daemon
    says so at start, the password itself never shown).

Each scenario has its own sender domain on its own farm address, so farm
counts belong to one scenario. TAP on stdout; exit 0 only if every case
passed. Loopback only; every wait is bounded.
"""

import os
import re
import signal
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree clean
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "fakes"))

import cacherecord as cr  # noqa: E402
import postfixinst  # noqa: E402
import redisserver  # noqa: E402
import vmtest  # noqa: E402
from fakedns import FakeDNS  # noqa: E402
from smtpfarm import SmtpFarm  # noqa: E402
from vmtest import Daemon, TempDir, probe_conf  # noqa: E402

BIN = vmtest.vemilter_binary()
SMTP_TIMEOUT = 20
RANDOM_RCPT = re.compile(r"(?i)RCPT TO:<[a-z0-9]{16}@")  # vemilter's catch-all question
# What a daemon logs when the shared cache goes away and comes back: the
# wording is the daemon's; these ask only that the line names Redis and the
# change. (The daemon side: src/shared.c on branch redis.)
LOG_DOWN = r"(?i)\b(warning|error)\b.*redis.*\b(down|unreachable|lost|unavailable|fail|error|timed? ?out)"
LOG_UP = r"(?i)\b(notice|info)\b.*redis.*\b(up|back|connected|reconnected|available)\b"

FLOW_USERS = ["k%03d" % i for i in range(200)]
# farm address -> (behaviour, options)
FARM = {
    "127.0.0.31": ("slow_banner", {"delay": 1, "users": ["burst"]}),  # burst.test
    "127.0.0.32": ("normal", {"users": ["alice", "bob"]}),           # shared.test
    "127.0.0.33": ("catchall", {}),                                  # catchall.test
    "127.0.0.34": ("normal", {"users": ["alice", "bob"]}),           # notcatch.test
    "127.0.0.35": ("slow_banner", {"delay": 0.3, "users": FLOW_USERS}),  # killed.test
    "127.0.0.36": ("normal", {"users": FLOW_USERS}),                 # restart.test
    "127.0.0.37": ("normal", {"users": FLOW_USERS}),                 # slow.test
    "127.0.0.38": ("normal", {"users": FLOW_USERS}),                 # fast.test
}
DOMAINS = {"burst.test": "127.0.0.31", "shared.test": "127.0.0.32", "catchall.test": "127.0.0.33",
           "notcatch.test": "127.0.0.34", "killed.test": "127.0.0.35", "restart.test": "127.0.0.36",
           "slow.test": "127.0.0.37", "fast.test": "127.0.0.38"}


class G:
    tmp = None
    dns = None
    dns_port = None
    farm = None
    farm_port = None
    redis = None
    rc = None  # our client on it
    a = b = None  # the daemons
    pa = pb = None  # their Postfix instances
    ptmp = []


def make_zone():
    return vmtest.mx_zone(DOMAINS)


def daemon_conf(name, **over):
    conf = probe_conf(G.tmp, name + ".sock", G.dns_port, G.farm_port, socket_mode="0666")
    conf.update({
        "dns_timeout": "500ms",
        "helo_name": "probe-%s.test" % name,
        "connect_timeout": "2s",
        "banner_timeout": "10s",
        "command_timeout": "5s",
        "probe_timeout": "20s",
        "verify_budget": "6s",
        "client_probe_rate": 0,
        # the budgets are not under test: 100 new senders of one domain in a few seconds
        "host_session_rate": 0,
        "domain_probe_rate": 0,
        "cache": G.redis.url(),
        "cache_fallback": G.tmp.join(name + ".lmdb"),
        "cache_redis_timeout": "200ms",
    })
    conf.update(over)
    return conf


# ---------------------------------------------------------------- helpers

def cmd(s, line):
    code, msg = s.docmd(line)
    return code, msg.decode("utf-8", errors="replace")


def transaction(pf, sender, rcpt="user@test.example"):
    """One SMTP session through Postfix pf: (MAIL reply, RCPT reply, seconds for RCPT)."""
    s = postfixinst.smtp_client(pf.port, "127.0.0.1", SMTP_TIMEOUT)
    try:
        m = cmd(s, "MAIL FROM:<%s>" % sender)
        t0 = time.monotonic()
        r = cmd(s, "RCPT TO:<%s>" % rcpt)
        return m, r, time.monotonic() - t0
    finally:
        postfixinst.smtp_close(s)


def concurrent(jobs, timeout=45, barrier=True):
    """Run jobs = [(pf, sender), ...] at once (a barrier lines them up after
    EHLO unless barrier is False); returns [(mail code, rcpt code, rcpt s) or
    ("error", text)] in order."""
    n = len(jobs)
    bar = threading.Barrier(n, timeout=30) if barrier else None
    results = [None] * n

    def one(i):
        pf, sender = jobs[i]
        s = None
        try:
            s = postfixinst.smtp_client(pf.port, "127.0.0.1", SMTP_TIMEOUT)
            if bar is not None:
                bar.wait()
            m = cmd(s, "MAIL FROM:<%s>" % sender)
            t0 = time.monotonic()
            r = cmd(s, "RCPT TO:<user@test.example>")
            results[i] = (m[0], r[0], time.monotonic() - t0)
        except Exception as e:
            results[i] = ("error", repr(e))
            if bar is not None:
                try:
                    bar.abort()
                except Exception:
                    pass
        finally:
            if s is not None:
                postfixinst.smtp_close(s)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.1, timeout - (time.monotonic() - t0)))
    return results


def rcpts(domain, sender=None):
    """RCPTs the farm saw at domain's MX: for sender, or (None) every RCPT but the random one."""
    addr = DOMAINS[domain]
    if sender is not None:
        return G.farm.count(addr, "RCPT TO:<%s>" % sender)
    return sum(1 for c in G.farm.commands(addr) if c.upper().startswith("RCPT TO:<") and not RANDOM_RCPT.match(c))


def random_rcpts(domain):
    return sum(1 for c in G.farm.commands(DOMAINS[domain]) if RANDOM_RCPT.match(c))


def verdicts(daemon, sender, n=1, timeout=5.0):
    want = "<%s>" % sender

    def get():
        return [v for v in vmtest.parse_verdicts(daemon.log()) if v.get("sender") == want]
    vmtest.wait_until(lambda: len(get()) >= n, timeout)
    return get()


def redis_clients():
    """Connections on the server other than ours (the daemons')."""
    try:
        text = G.rc.command("CLIENT", "LIST").decode()
        me = G.rc.command("CLIENT", "ID")
    except (OSError, redisserver.RedisError):
        return -1
    return sum(1 for line in text.splitlines() if line and not line.startswith("id=%d " % me))


def reconnect_ours():
    if G.rc is not None:
        G.rc.close()
    G.rc = G.redis.client()


def diag(*extra):
    def f():
        parts = [repr(x) for x in extra]
        for d in (G.a, G.b):
            if d is not None:
                parts.append(d.diag())
        for pf in (G.pa, G.pb):
            if pf is not None:
                parts.append(pf.diag())
        if G.redis is not None:
            parts.append("redis log:\n" + G.redis.diag())
        return "\n".join(parts)
    return f


def all_250(results):
    return sum(1 for r in results if r[:2] == (250, 250))


# ---------------------------------------------------------------- set-up

def t_start(tap, cleanup):
    G.tmp = TempDir(prefix="vemilter-fleet-")
    G.dns = FakeDNS(make_zone())
    G.dns_port = G.dns.start()
    G.farm = SmtpFarm(latency=0)
    for addr, (behaviour, opts) in FARM.items():
        G.farm.add(addr, behaviour, **opts)
    G.farm_port = G.farm.start()
    G.redis = redisserver.RedisServer(G.tmp.path).start()
    reconnect_ours()
    G.a = Daemon(G.tmp, daemon_conf("a"), name="a")
    G.b = Daemon(G.tmp, daemon_conf("b"), name="b")
    for d in (G.a, G.b):
        d.start()
        tap.check("vemilter %s starts on the shared cache" % d.name, d.running(), d.diag)
    ok = vmtest.wait_until(lambda: redis_clients() >= 2, 10)
    tap.check("both daemons are connected to Redis", ok, diag("clients %d" % redis_clients()))
    for name, d in (("a", G.a), ("b", G.b)):
        t = TempDir(prefix="vemilter-fleet-pf%s-" % name)
        G.ptmp.append(t)
        pf = postfixinst.PostfixInstance(t, milter=d.socket, hostname="mx-%s.test.example" % name,
                                         extra_main={"smtpd_client_connection_count_limit": "0"})
        try:
            pf.start()
        except postfixinst.PostfixError as e:
            tap.check("Postfix %s starts" % name, False, str(e))
            raise
        tap.check("Postfix %s starts on 127.0.0.1:%d" % (name, pf.port), True)
        if name == "a":
            G.pa = pf
        else:
            G.pb = pf


# ---------------------------------------------------------------- sharing

def t_one_probe_for_the_fleet(tap, cleanup):
    sender = "burst@burst.test"  # the MX greets after 1 s: everyone asks while the probe runs
    n = 50
    jobs = [(G.pa if i % 2 == 0 else G.pb, sender) for i in range(n)]
    t0 = time.monotonic()
    results = concurrent(jobs)
    took = time.monotonic() - t0
    d = diag(results)
    tap.equal("50 concurrent messages from one new sender, 25 through each MTA: all MAIL 250, RCPT 250 "
              "(%.1f s)" % took, all_250(results), n, d)
    G.farm.wait_idle(timeout=5)
    tap.equal("exactly 1 probe for the fleet: one RCPT TO:<%s> at the farm" % sender, rcpts("burst.test", sender),
              1, d)
    tap.equal("... over one connection to the MX", G.farm.connections(DOMAINS["burst.test"]), 1, d)
    va, vb = verdicts(G.a, sender, n // 2), verdicts(G.b, sender, n // 2)
    tap.check("25 verdicts on each host, all accept reason=valid",
              len(va) == n // 2 and len(vb) == n // 2
              and all(v.get("action") == "accept" and v.get("reason") == "valid" for v in va + vb), d)
    rec = cr.redis_get(G.rc, "a:" + sender)
    tap.check("the record is in Redis (HASH vemilter:a:..., field r): valid",
              rec is not None and rec["kind"] == "valid", d)
    tap.equal("no lease left behind", G.rc.scan_keys("vemilter:lease:*"), [], d)


def t_verified_on_a_answered_on_b(tap, cleanup):
    sender = "alice@shared.test"
    m, r, _ = transaction(G.pa, sender)
    d = diag(m, r)
    tap.check("host A: new sender, probed: RCPT 250", m[0] == 250 and r[0] == 250, d)
    G.farm.wait_idle(timeout=5)
    tap.equal("host A probed once", rcpts("shared.test", sender), 1, d)
    conns = G.farm.connections(DOMAINS["shared.test"])
    m, r, took = transaction(G.pb, sender)
    d = diag(m, r)
    tap.check("host B: the same sender: RCPT 250 (%.3f s)" % took, m[0] == 250 and r[0] == 250, d)
    G.farm.wait_idle(timeout=2)
    tap.equal("host B answered from the shared cache: 0 probes (no new RCPT, no connection)",
              (rcpts("shared.test", sender), G.farm.connections(DOMAINS["shared.test"])), (1, conns), d)
    v = verdicts(G.b, sender)
    tap.check("host B's verdict: accept reason=valid, not probed",
              v and v[-1].get("action") == "accept" and v[-1].get("reason") == "valid"
              and v[-1].get("source") != "probed", d)
    # and the other way round, with a negative answer
    nobody = "nobody@shared.test"
    m, r, _ = transaction(G.pb, nobody)
    m2, r2, _ = transaction(G.pa, nobody)
    G.farm.wait_idle(timeout=2)
    tap.check("an invalid sender learned on B is rejected on A with no probe of its own",
              r[0] == 550 and r2[0] // 100 == 5 and rcpts("shared.test", nobody) == 1, diag(r, r2))


def t_catch_all_shared(tap, cleanup):
    m, r, _ = transaction(G.pa, "someone@catchall.test")
    G.farm.wait_idle(timeout=5)
    d = diag(m, r)
    tap.check("host A: a catch-all domain: RCPT 250, one random RCPT asked",
              r[0] == 250 and random_rcpts("catchall.test") == 1, d)
    rec = cr.redis_get(G.rc, "d:catchall.test")
    tap.check("the domain fact is in Redis: d:catchall.test catch_all",
              rec is not None and rec["kind"] == "catch_all", d)
    conns = G.farm.connections(DOMAINS["catchall.test"])
    m, r, _ = transaction(G.pb, "other@catchall.test")
    G.farm.wait_idle(timeout=2)
    d = diag(m, r)
    tap.check("host B: another address at the domain: RCPT 250, answered by A's fact: no connection, "
              "no random RCPT", r[0] == 250 and G.farm.connections(DOMAINS["catchall.test"]) == conns
              and random_rcpts("catchall.test") == 1, d)

    m, r, _ = transaction(G.pa, "alice@notcatch.test")
    G.farm.wait_idle(timeout=5)
    d = diag(m, r)
    tap.check("host A: a domain that refuses a random address: RCPT 250, random RCPT asked once",
              r[0] == 250 and random_rcpts("notcatch.test") == 1, d)
    hint = cr.redis_get(G.rc, "h:notcatch.test")
    tap.check("the hint is in Redis: h:notcatch.test flags not_catchall",
              hint is not None and hint["flags"] & cr.FLAGS["not_catchall"], d)
    m, r, _ = transaction(G.pb, "bob@notcatch.test")
    G.farm.wait_idle(timeout=5)
    d = diag(m, r)
    tap.check("host B: a new address there is probed (RCPT bob) without the random RCPT",
              r[0] == 250 and rcpts("notcatch.test", "bob@notcatch.test") == 1
              and random_rcpts("notcatch.test") == 1, d)


def t_fast_probes_once(tap, cleanup):
    """Probes that take milliseconds: 100 new senders, each through both
    MTAs at once (10 sessions at a time on each)."""
    senders = ["k%03d@fast.test" % i for i in range(100)]
    results = [[None] * len(senders) for _ in range(2)]

    def feed(k, pf):
        for i in range(0, len(senders), 10):
            batch = concurrent([(pf, s) for s in senders[i:i + 10]], barrier=False)
            results[k][i:i + 10] = batch
    threads = [threading.Thread(target=feed, args=(k, pf), daemon=True) for k, pf in enumerate((G.pa, G.pb))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    flat = results[0] + results[1]
    tap.equal("fast probes: 200 messages, all MAIL 250, RCPT 250", all_250(flat), 200,
              lambda: "not 250: %r" % [(s, r) for s, r in zip(senders + senders, flat) if not r or r[:2] != (250, 250)])
    G.farm.wait_idle(timeout=5)
    n = rcpts("fast.test")
    twice = [s for s in senders if rcpts("fast.test", s) > 1]
    # The window this closes: the fetch finds nothing, the other host
    # stores its answer and gives its lease back, then this host's SET NX
    # succeeds; vcore looks once more after taking the lease.
    tap.check("fast probes: one probe a sender across the fleet (%d RCPTs for 100 senders, %d probed twice)"
              % (n, len(twice)), n == 100,
              "probed twice: %s" % ", ".join(twice[:10]))


# ---------------------------------------------------------------- faults

def t_redis_killed_mid_burst(tap, cleanup):
    """40 new senders, 20 through each MTA, started 50 ms apart (the MX
    greets after 0.3 s); Redis is killed after the first second."""
    n = 40
    senders = ["k%03d@killed.test" % i for i in range(n)]
    a0, b0 = G.a.log_size(), G.b.log_size()
    results = [None] * n

    def one(i):
        time.sleep(0.05 * i)
        try:
            m, r, took = transaction(G.pa if i % 2 == 0 else G.pb, senders[i])
            results[i] = (m[0], r[0], took)
        except Exception as e:
            results[i] = ("error", repr(e))
    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    G.redis.kill()
    t0 = time.monotonic()
    for t in threads:
        t.join(max(0.1, 45 - (time.monotonic() - t0)))
    d = diag(results)
    tap.equal("Redis killed mid-burst: all %d messages MAIL 250, RCPT 250 (no 4xx, no 5xx)" % n,
              all_250(results), n, d)
    slowest = max((r[2] for r in results if len(r) == 3), default=99)
    tap.check("... each answered within its budget, no milter thread stuck on Redis (slowest RCPT %.2f s)"
              % slowest, slowest < 7 * vmtest.TIME_SCALE, d)
    G.farm.wait_idle(timeout=5)
    tap.equal("every sender probed once, by the host it reached (%d senders)" % n, rcpts("killed.test"), n, d)
    for name, d_, start in (("a", G.a, a0), ("b", G.b, b0)):
        tap.check("vemilter %s logs that Redis is down" % name,
                  d_.wait_log(LOG_DOWN, timeout=5, start=start), d)
    # nothing stuck: a new sender on each host is answered at once
    for name, pf in (("a", G.pa), ("b", G.pb)):
        m, r, took = transaction(pf, "k1%02d@killed.test" % (0 if name == "a" else 1))
        tap.check("host %s answers a new sender at once with Redis down (RCPT 250 in %.2f s)" % (name, took),
                  r[0] == 250 and took < 3 * vmtest.TIME_SCALE, diag(m, r))
    before = rcpts("killed.test", senders[0])
    m, r, took = transaction(G.pb, senders[0])
    G.farm.wait_idle(timeout=5)
    v = verdicts(G.b, senders[0])
    tap.check("host B verifies a sender only host A had seen by a probe of its own (Redis down): RCPT 250, "
              "source=%s" % (v[-1].get("source") if v else None),
              r[0] == 250 and rcpts("killed.test", senders[0]) - before == 1, diag(m, r))
    m, r, took = transaction(G.pa, senders[2])
    tap.check("host A answers a sender it verified before from its local tier: RCPT 250 (%.3f s)" % took,
              r[0] == 250 and rcpts("killed.test", senders[2]) == 1, diag(m, r))


def t_redis_restarted(tap, cleanup):
    if G.redis.running():
        G.redis.kill()
    a0, b0 = G.a.log_size(), G.b.log_size()
    G.redis.restart()
    reconnect_ours()
    t0 = time.monotonic()
    ok = vmtest.wait_until(lambda: redis_clients() >= 2, 45, interval=0.2)
    took = time.monotonic() - t0
    tap.check("Redis restarted: both daemons connect again within their backoff (%.1f s)" % took, ok,
              diag("clients %d" % redis_clients()))
    for name, d_, start in (("a", G.a, a0), ("b", G.b, b0)):
        # the notice comes once AUTH, SELECT and the scripts are through: up
        tap.check("vemilter %s logs that Redis is back" % name, d_.wait_log(LOG_UP, timeout=15, start=start),
                  d_.diag)
    sender = "k150@restart.test"
    m, r, _ = transaction(G.pa, sender)
    G.farm.wait_idle(timeout=5)
    ok = vmtest.wait_until(lambda: cr.redis_get(G.rc, "a:" + sender) is not None, 3)
    tap.check("host A: a new sender, probed, and its record goes to Redis again", r[0] == 250 and ok, diag(m, r))
    m, r, _ = transaction(G.pb, sender)
    G.farm.wait_idle(timeout=2)
    tap.check("host B answers it with 0 probes: sharing again", r[0] == 250 and rcpts("restart.test", sender) == 1,
              diag(m, r))


def t_redis_slow(tap, cleanup):
    """DEBUG SLEEP 3: every Redis call of the daemons times out (200 ms);
    10 new senders, 5 through each MTA, meanwhile."""
    a0, b0 = G.a.log_size(), G.b.log_size()
    sleeper = G.redis.debug_sleep(3)
    time.sleep(0.2)
    senders = ["k%03d@slow.test" % i for i in range(10)]
    t0 = time.monotonic()
    results = concurrent([(G.pa if i % 2 == 0 else G.pb, s) for i, s in enumerate(senders)], barrier=False)
    took = time.monotonic() - t0
    d = diag(results)
    tap.equal("Redis asleep: all 10 messages MAIL 250, RCPT 250 (%.1f s in all)" % took, all_250(results), 10, d)
    slowest = max((r[2] for r in results if len(r) == 3), default=99)
    tap.check("... none waited on Redis past its budget (slowest RCPT %.2f s)" % slowest,
              slowest < 6 * vmtest.TIME_SCALE, d)
    sleeper.join(10)
    tap.check("the daemons noticed (a timeout logged)",
              G.a.wait_log(LOG_DOWN, timeout=3, start=a0) or G.b.wait_log(LOG_DOWN, timeout=3, start=b0), d)
    reconnect_ours()
    # connected again: the notice comes once AUTH, SELECT and the scripts are through
    ok = all(d_.wait_log(LOG_UP, timeout=45, start=s0) for d_, s0 in ((G.a, a0), (G.b, b0)))
    tap.check("awake again: both daemons back on Redis (logged)", ok and redis_clients() >= 2,
              diag("clients %d" % redis_clients()))
    sender = "k190@slow.test"
    m, r, _ = transaction(G.pa, sender)
    vmtest.wait_until(lambda: cr.redis_get(G.rc, "a:" + sender) is not None, 3)
    m2, r2, _ = transaction(G.pb, sender)
    G.farm.wait_idle(timeout=2)
    tap.check("and sharing: a sender verified on A is answered on B with 0 probes",
              r[0] == 250 and r2[0] == 250 and rcpts("slow.test", sender) == 1, diag(r, r2))


def t_wrong_password(tap, cleanup):
    secret, wrong = "fleet-Secret-7", "not-the-Secret-8"
    srv = redisserver.RedisServer(G.tmp.path, password=secret).start()
    cleanup.add(srv.kill)
    good = G.tmp.write("good.pw", secret + "\n", mode=0o600)
    bad = G.tmp.write("bad.pw", wrong + "\n", mode=0o600)
    conf_bad = daemon_conf("wp", cache=srv.url(), cache_password_file=bad)
    d = Daemon(G.tmp, conf_bad, name="wp")
    d.write_conf()
    p = vmtest.run([BIN, "-n", "-c", d.conf_path], timeout=20)
    out = (p.stdout or "") + (p.stderr or "")
    tap.check("vemilter -n with a wrong Redis password: exits non-zero and says why",
              p.returncode not in (0, None) and re.search(r"(?i)(auth|password|WRONGPASS)", out)
              and wrong not in out, "exit %r\n%s" % (p.returncode, out))
    good_conf = Daemon(G.tmp, daemon_conf("wpok", cache=srv.url(), cache_password_file=good), name="wpok")
    good_conf.write_conf()
    p = vmtest.run([BIN, "-n", "-c", good_conf.conf_path], timeout=20)
    tap.check("vemilter -n with the right password: exit 0", p.returncode == 0,
              "exit %r\n%s%s" % (p.returncode, p.stdout, p.stderr))
    cleanup.add(d.kill)
    try:
        d.start()
    except vmtest.DaemonError:
        pass
    said = vmtest.wait_until(lambda: re.search(r"(?i)\b(error|warning)\b.*(auth|password|WRONGPASS)", d.log()), 5)
    tap.check("the daemon with a wrong password says so at start (%s)" % ("running" if d.running() else "exited"),
              said and wrong not in d.log(), d.diag)


def t_stop(tap, cleanup):
    for name, pf in (("a", G.pa), ("b", G.pb)):
        if pf is not None:
            pf.stop()
    codes = vmtest.stop_all([(G.a, signal.SIGTERM), (G.b, signal.SIGTERM)])
    tap.equal("both vemilters exit 0", codes, [0, 0])
    for d in (G.a, G.b):
        leaked = [s for s in ("fleet-Secret-7",) if s in d.log()]
        tap.check("no password in vemilter %s's log" % d.name, not leaked)


TESTS = [t_start, t_one_probe_for_the_fleet, t_verified_on_a_answered_on_b, t_catch_all_shared, t_fast_probes_once,
         t_redis_killed_mid_burst, t_redis_restarted, t_redis_slow, t_wrong_password, t_stop]


def setup(tap):
    if not os.access(BIN, os.X_OK):
        tap.check("%s exists (set VEMILTER_BUILDDIR)" % BIN, False)
        tap.done()
        sys.exit(1)
    return redisserver.available() or postfixinst.available()


def teardown():
    vmtest.tear_down(servers=(G.pa, G.pb), daemons=(G.a, G.b))
    if G.rc is not None:
        G.rc.close()
    if G.redis is not None:
        G.redis.kill()
    vmtest.tear_down(servers=(G.farm, G.dns), tmp=G.tmp)
    for t in G.ptmp:
        t.remove()


if __name__ == "__main__":
    try:
        vmtest.run_tests(TESTS, per_test_timeout=90, total_timeout=400, setup=setup)
    finally:
        teardown()
