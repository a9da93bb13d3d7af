#!/usr/bin/python3
"""test_breaker - the circuit breaker (hosts.h) seen from outside: the real
vemilter-check against a fake DNS server and a farm of fake SMTP servers.

- 30 domains whose MX (each its own name) is one farm address that refuses
  us at the greeting (banner_554): probed one after another (-j1), the farm
  sees 1 session and every sender gets blocked, 29 of them from memory with
  the same stage, code and text. The same run with blocked_ttl = 0 (and
  host_sessions = 0: no session shared by the pool) costs 30 sessions (the
  control: the count can fail). All 30 at once (-j100): still
  1 session (the others wait for the first contact).
- 20 domains whose MX is an address no server listens on (refused
  connections): 1 connection attempt over the 20 senders with
  host_backoff = 1s, counted from the -v transcript's "* connecting" lines;
  a 21st domain whose MX lookup is delayed past the backoff gets a new
  attempt, and a 22nd, after that second failure, is skipped again (the
  backoff doubled). All 20 at once: 1 attempt. With host_backoff = 0: 20.
- A domain whose first MX is backed off and whose second answers is valid:
  a backoff only moves the walk on.
- Neither state ever becomes a reject: every outcome is blocked or tempfail.
- The same in the daemon, behind the milter protocol: 30 senders at once
  behind the refusing host -> 1 session, all accepted (blocked); 100 at once
  behind the dead host -> 1 connection attempt (the verdict log), the rest backed
  off or over client_probe_rate, all 4xx.

The numbers measured are printed as TAP diagnostics. Loopback only; every
wait bounded.
"""

import os
import re
import sys
import threading
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "fakes"))

import vmtest  # noqa: E402
from vmtest import Daemon, TempDir, probe_conf  # noqa: E402
from milterclient import MilterClient  # noqa: E402
from fakedns import FakeDNS  # noqa: E402
from smtpfarm import SmtpFarm  # noqa: E402
import checkrun  # noqa: E402
from checkrun import transcript  # noqa: E402

CHECK = os.path.join(vmtest.builddir(), "vemilter-check")
HELO = "probe.vemilter.test"
BLOCKING = "127.0.0.60"  # banner_554
DEAD = "127.0.0.61"      # never added to the farm: connections refused
GOOD = "127.0.0.62"      # normal, user alice
N_BLOCKED = 30
N_DEAD = 100



def zone():
    z = vmtest.mx_zone([("b%d.test" % i, BLOCKING) for i in range(1, N_BLOCKED + 1)]
                       + [("d%d.test" % i, DEAD) for i in range(1, N_DEAD + 3)])
    # looked up after the backoff (1 s) has passed, one after the other (-j1)
    z["d%d.test" % (N_DEAD + 1)]["delay"] = {"MX": 1.5}
    z["d%d.test" % (N_DEAD + 2)]["delay"] = {"MX": 1.5}
    z["second.test"] = {"MX": [[10, "mx1.second.test"], [20, "mx2.second.test"]]}
    z["mx1.second.test"] = {"A": [DEAD]}
    z["mx2.second.test"] = {"A": [GOOD]}
    return z


def write_conf(tmp, name, dns_port, farm_port, *extra):
    """A vemilter-check configuration (checkrun.write_conf)."""
    return checkrun.write_conf(tmp, name, [
        "dns_servers = 127.0.0.1:%d" % dns_port,
        "dns_timeout = 3s",
        "dns_cache_time = 0",
        "helo_name = %s" % HELO,
        "probe_port = %d" % farm_port,
        "probe_allow_networks = 127.0.0.0/8, ::1/128",
        "connect_timeout = 2s",
        "banner_timeout = 2s",
        "command_timeout = 3s",
        "probe_timeout = 15s",
    ], *extra)


def run_check(conf, addresses, jobs=1, timeout=90):
    """vemilter-check -c conf -v -jN addresses (checkrun.run_check)."""
    return checkrun.run_check(CHECK, conf, addresses, jobs=jobs, timeout=timeout)[:5]


def connects(out, addr):
    """The "* connecting to ADDR" lines of a -v transcript."""
    return len(re.findall(r"^\S+: \* connecting to %s\b" % re.escape(addr), out, re.M))


def blocked_runs(tap, tmp, dns_port, farm, farm_port):
    senders = ["u%d@b%d.test" % (i, i) for i in range(1, N_BLOCKED + 1)]
    conf = write_conf(tmp, "blocked.conf", dns_port, farm_port, "blocked_ttl = 1h")
    farm.reset()
    status, out, err, results, secs = run_check(conf, senders)
    farm.wait_idle(BLOCKING, timeout=5)
    sessions = farm.connections(BLOCKING)
    tap.diag("%d domains behind one host refusing at the greeting: %d session(s), %d connect line(s), %.2f s"
             % (N_BLOCKED, sessions, connects(out, BLOCKING), secs))
    tap.equal("banner_554 host shared by %d domains: 1 session" % N_BLOCKED, sessions, 1,
              "stderr:\n%s\n%s" % (err, out[-3000:]))
    tap.equal("... 1 connection attempt in the transcript", connects(out, BLOCKING), 1)
    all_blocked = all(results.get(s, ("?",))[0] == "blocked" for s in senders)
    tap.check("... all %d senders blocked (never a reject)" % N_BLOCKED,
              all_blocked and len(results) == N_BLOCKED, "%r" % results)
    tap.equal("... exit status 2 (temporary)", status, 2)
    first = results.get(senders[0], ("?", {}))[1]
    same = all(results.get(s, ("?", {}))[1].get(k) == first.get(k)
               for s in senders[1:] for k in ("stage", "reply"))
    tap.check("... every sender has the first one's stage and reply (banner, 554 5.7.1 ...)",
              same and first.get("stage") == "banner"
              and first.get("reply", "").startswith("554 5.7.1 "),
              "first: %r\nothers: %r" % (first, [results.get(s) for s in senders[1:3]]))
    remembered = [s for s in senders
                  if re.match(r"^remembered: mx\.b1\.test \[%s\] refused us at banner 0 minutes ago$"
                              % re.escape(BLOCKING), results.get(s, ("?", {}))[1].get("reason", ""))]
    tap.equal("... %d of them from memory, with the reason naming host, stage and age" % (N_BLOCKED - 1),
              len(remembered), N_BLOCKED - 1, transcript(out, senders[1]))
    tap.check("... the first one's reason is the real refusal",
              first.get("reason", "").startswith("refused at banner"), "%r" % first)

    # control: off
    # host_session_rate = 0: the control counts one session per domain to
    # the one address; its session budget (20 a minute) would cut it short.
    # host_sessions = 0: one session per probe, none shared. -j1 starts the
    # next sender at the verdict, while the session still says QUIT; under
    # load two such sessions filled host_sessions (2), the next probe waited
    # in the pool's line, and took the 554 greeting of the session it waited
    # for (pool.h: a failure before any RCPT is the host's): 29 sessions,
    # the pool's sharing, not the breaker's memory this control measures.
    conf = write_conf(tmp, "blocked-off.conf", dns_port, farm_port, "blocked_ttl = 0", "host_session_rate = 0",
                      "host_sessions = 0")
    farm.reset()
    status, out, err, results, secs = run_check(conf, senders)
    farm.wait_idle(BLOCKING, timeout=5)
    sessions = farm.connections(BLOCKING)
    tap.diag("blocked_ttl = 0: %d sessions" % sessions)
    tap.equal("blocked_ttl = 0: %d sessions, one per domain" % N_BLOCKED, sessions, N_BLOCKED)
    tap.check("... all blocked", all(results.get(s, ("?",))[0] == "blocked" for s in senders), "%r" % results)

    # all at once (-j100): one probe makes first contact, the others wait for it
    conf = write_conf(tmp, "blocked-j.conf", dns_port, farm_port)
    farm.reset()
    status, out, err, results, secs = run_check(conf, senders, jobs=100)
    farm.wait_idle(BLOCKING, timeout=5)
    sessions = farm.connections(BLOCKING)
    tap.diag("concurrent (-j100), default blocked_ttl: %d session(s) for %d domains, %.2f s"
             % (sessions, N_BLOCKED, secs))
    tap.equal("concurrent (-j100): 1 session for %d domains" % N_BLOCKED, sessions, 1, out[-3000:])
    tap.check("concurrent: all blocked, none rejected",
              all(results.get(s, ("?",))[0] == "blocked" for s in senders), "%r" % results)


def dead_runs(tap, tmp, dns_port, farm, farm_port):
    senders = ["u%d@d%d.test" % (i, i) for i in range(1, N_DEAD + 1)]
    late = ["u%d@d%d.test" % (i, i) for i in (N_DEAD + 1, N_DEAD + 2)]
    conf = write_conf(tmp, "dead.conf", dns_port, farm_port, "host_backoff = 1s")
    status, out, err, results, secs = run_check(conf, senders + late)
    head = "\n".join(l for l in out.splitlines() if any(l.startswith(s + ": ") for s in senders))
    n_head = connects(head, DEAD)
    tap.diag("dead host shared by %d domains: %d connect attempt(s) over %d senders; %d over all %d"
             % (N_DEAD, n_head, N_DEAD, connects(out, DEAD), N_DEAD + 2))
    tap.equal("dead host shared by %d domains: 1 connect attempt over %d senders" % (N_DEAD, N_DEAD),
              n_head, 1, "stderr:\n%s\n%s" % (err, head[-3000:]))
    tap.check("... all %d tempfail at connect (never a reject)" % N_DEAD,
              all(results.get(s, ("?", {}))[0] == "tempfail"
                  and results[s][1].get("stage") == "connect" for s in senders), "%r" % results)
    backed = [s for s in senders[1:]
              if re.match(r"^backed off: no answer from %s since \d+ s ago \(1 in a row; next try in 1 s\)$"
                          % re.escape(DEAD), results.get(s, ("?", {}))[1].get("reason", ""))]
    tap.equal("... %d of them skipped with the backed-off reason" % (N_DEAD - 1), len(backed), N_DEAD - 1,
              "%r" % [results.get(s) for s in senders[1:3]])
    t21, t22 = transcript(out, late[0]), transcript(out, late[1])
    tap.equal("after host_backoff (1 s) passed: a new attempt", connects(t21, DEAD), 1, t21)
    tap.check("... which failed again: backoff doubled, the next sender skipped (2 in a row)",
              connects(t22, DEAD) == 0 and re.search(r"\(2 in a row; next try in [12] s\)",
                                                      results.get(late[1], ("?", {}))[1].get("reason", "")),
              t22 + "\n%r" % (results.get(late[1]),))

    # all at once (-j100): one connect attempt too
    conf = write_conf(tmp, "dead-j.conf", dns_port, farm_port)
    status, out, err, results, secs = run_check(conf, senders, jobs=100)
    tap.diag("concurrent (-j100), default host_backoff: %d connect attempt(s) over %d senders, %.2f s"
             % (connects(out, DEAD), N_DEAD, secs))
    tap.equal("concurrent (-j100): 1 connect attempt over %d senders" % N_DEAD, connects(out, DEAD), 1,
              out[-3000:])
    tap.check("... all tempfail", all(results.get(s, ("?",))[0] == "tempfail" for s in senders),
              "%r" % results)

    # host_session_rate = 0 too: the control measures the breaker alone (at
    # its default of 20 a minute, the rate would stop the walk at 20)
    conf = write_conf(tmp, "dead-off.conf", dns_port, farm_port, "host_backoff = 0", "host_session_rate = 0")
    status, out, err, results, secs = run_check(conf, senders)
    tap.diag("host_backoff = 0: %d connect attempts over %d senders" % (connects(out, DEAD), N_DEAD))
    tap.equal("host_backoff = 0: %d connect attempts" % N_DEAD, connects(out, DEAD), N_DEAD)

    # A backed-off first MX moves the walk on to the second, which answers.
    conf = write_conf(tmp, "second.conf", dns_port, farm_port, "host_backoff = 1m")
    status, out, err, results, secs = run_check(conf, ["u1@d1.test", "alice@second.test"])
    t = transcript(out, "alice@second.test")
    tap.check("second MX after a backed-off first: valid, without connecting to the first",
              results.get("alice@second.test", ("?",))[0] == "valid" and connects(t, DEAD) == 0
              and re.search(r"not connecting to mx1\.second\.test \[%s\]: backed off" % re.escape(DEAD), t),
              t + "\n%r" % results)


def milter_rcpt(d, sender):
    """One message over a fresh milter connection: the RCPT reply's code
    ("c"/"a" accepted, "t" tempfail, "r"/"y" reply) and SMTP code."""
    c = MilterClient(d.socket, timeout=30)
    try:
        c.session(client_addr="198.51.100.7")
        m = c.mail(sender, macros={"i": "Q1"})
        got = c.rcpt("<bob@local.test>") if m.code == "c" else m
        c.quit()
        return got.code, got.smtp_code
    finally:
        c.close()


def burst(d, senders):
    """Every sender at once, each over its own milter connection:
    {sender: (code, smtp_code) or an exception's repr}."""
    got = {}

    def one(sender):
        try:
            got[sender] = milter_rcpt(d, sender)
        except Exception as e:  # noqa: BLE001 - reported by the caller
            got[sender] = repr(e)
    threads = [threading.Thread(target=one, args=(x,)) for x in senders]
    for th in threads:
        th.start()
    for th in threads:
        th.join(40)
    return got


def verdict_lines(d, sender):
    return [l for l in d.log_lines(r"verdict ") if "sender=%s" % sender in l]


def daemon_runs(tap, tmp, dns_port, farm, farm_port):
    """The issue's case behind the milter: bursts of senders at domains that
    share one refusing host, and one dead host, all at once."""
    conf = probe_conf(tmp, "breaker.sock", dns_port, farm_port, **{
        "dns_timeout": "3s", "helo_name": HELO, "connect_timeout": "2s",
        "banner_timeout": "2s", "command_timeout": "3s", "probe_timeout": "15s",
        "verify_budget": "5s", "cache": "",
    })
    d = Daemon(tmp, conf, name="breaker", debug=True)
    d.start()
    try:
        farm.reset()
        senders = ["<u%d@b%d.test>" % (i, i) for i in range(1, N_BLOCKED + 1)]
        t0 = time.monotonic()
        got = burst(d, senders)
        took = time.monotonic() - t0
        farm.wait_idle(BLOCKING, timeout=5)
        sessions = farm.connections(BLOCKING)
        tap.diag("daemon: %d senders at once behind the refusing host: %d session(s), %.2f s"
                 % (N_BLOCKED, sessions, took))
        tap.equal("daemon: %d senders at once behind a host refusing at the greeting: 1 session"
                  % N_BLOCKED, sessions, 1, d.diag)
        tap.check("daemon: ... all accepted (blocked_action accept; never a reject)",
                  len(got) == N_BLOCKED and all(isinstance(v, tuple) and v[0] in ("c", "a")
                                                for v in got.values()), "%r" % got)
        lines = [l for x in senders for l in verdict_lines(d, x)]
        remembered = [l for l in lines if "remembered: " in l]
        tap.equal("daemon: ... %d verdicts from the remembered refusal" % (N_BLOCKED - 1),
                  len(remembered), N_BLOCKED - 1, "\n".join(lines[:5]))

        senders = ["<u%d@d%d.test>" % (i, i) for i in range(1, N_DEAD + 1)]
        t0 = time.monotonic()
        got = burst(d, senders)
        took = time.monotonic() - t0
        lines = [l for x in senders for l in verdict_lines(d, x)]
        asked = [l for l in lines if "Connection refused" in l]
        skipped = [l for l in lines if "backed off: no answer from %s" % DEAD in l]
        tap.diag("daemon: %d senders at once behind the dead host: %d connection attempt(s) "
                 "(verdicts saying so), %d backed off, %.2f s" % (N_DEAD, len(asked), len(skipped), took))
        # The others are backed off, or (past client_probe_rate's 60 a
        # minute from this one client) over a budget: none connects.
        budget = [l for l in lines if "client_probe_rate" in l or "domain_probe_rate" in l]
        tap.check("daemon: ... 1 connection attempt for %d senders, the rest backed off or over a budget"
                  % N_DEAD, len(asked) == 1 and len(asked) + len(skipped) + len(budget) == N_DEAD
                  and len(skipped) >= 1, "\n".join(lines))
        tap.check("daemon: ... all tempfailed with 4xx (tempfail_action; never a reject)",
                  len(got) == N_DEAD and all(isinstance(v, tuple) and v[0] == "y"
                                             and (v[1] or "")[:1] == "4" for v in got.values()),
                  "%r" % got)
    finally:
        d.stop()


def main():
    tap = vmtest.Tap()
    if not os.access(CHECK, os.X_OK):
        tap.check("vemilter-check exists at %s (set VEMILTER_BUILDDIR)" % CHECK, False)
        return tap.done()
    tmp = TempDir()
    dns = FakeDNS(zone())
    farm = SmtpFarm()
    try:
        dns_port = dns.start()
        farm.add(BLOCKING, "banner_554")
        farm.add(GOOD, "normal", users=["alice"])
        farm_port = farm.start()
        blocked_runs(tap, tmp, dns_port, farm, farm_port)
        dead_runs(tap, tmp, dns_port, farm, farm_port)
        daemon_runs(tap, tmp, dns_port, farm, farm_port)
    finally:
        vmtest.tear_down(servers=(farm, dns), tmp=tmp)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
