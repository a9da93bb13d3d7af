#!/usr/bin/python3
"""test_catchhost - an MX host address remembered as catch-all
(catchall_host_domains, catchall_host_ttl; hosts.h), seen from outside: the
real vemilter-check against a fake DNS server and a farm of fake SMTP
servers. Each run of vemilter-check has its own host table, so each case is
one run, its senders one after another (-j1).

CATCH is a farm address that accepts every local part at c1..c8.test and
only its users at n1.test; every domain has its own MX name on CATCH.
SLOW (a 0.7 s greeting) answers spacer.test: its probe lets the sessions
before it end (QUIT, the sync proof that a catch-all answer needs before
it counts) before the next domain is looked at.

- catchall_host_domains = 3, the policy's defaults (catch_all and valid
  both accept: the catch-all answer comes after the verdict, as a fact):
  c1, c2, c3 are probed (3 sessions, fact=catch_all); then, after the
  spacer, c4 and c6 cost no session and are catch_all with "remembered:
  mx.c4.test (CATCH) accepted random addresses for 3 domains", flags
  limited (never cached); c5, whose host has an explicit verify entry in
  mx_host_overrides, is probed all the same. The log names the host and
  the three domains, once.
- the same with catch_all_action = tempfail (the verdict waits for the
  catch-all answer): c1..c3 are catch_all from their sessions, c4 from the
  memory without a session.
- reset: c1, c2, then n1 (its random address refused: not catch-all), then
  c3, c4, spacer, c5: every one has a session (7 at CATCH); none is
  "remembered", and nothing is logged as remembered.
- control: catchall_host_domains = 0: c1..c4 and c6 all probed.

The numbers measured are printed as TAP diagnostics. Loopback only; every
wait bounded.
"""

import os
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "fakes"))

import vmtest  # noqa: E402
from vmtest import TempDir  # noqa: E402
from fakedns import FakeDNS  # noqa: E402
from smtpfarm import SmtpFarm  # noqa: E402
import checkrun  # noqa: E402

CHECK = os.path.join(vmtest.builddir(), "vemilter-check")
HELO = "probe.vemilter.test"
CATCH = "127.0.0.90"  # catchall at c1..c8.test, normal (user alice) at n1.test
SLOW = "127.0.0.91"   # slow_banner: the spacer
CATCH_DOMAINS = ["c%d.test" % i for i in range(1, 9)]
NEED = 3
LOGGED = "catch-all host: "


def zone():
    return vmtest.mx_zone([(d, CATCH) for d in CATCH_DOMAINS + ["n1.test"]] + [("spacer.test", SLOW)])


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
        "banner_timeout = 3s",
        "command_timeout = 3s",
        "probe_timeout = 15s",
        "catchall_host_domains = %d" % NEED,
        "catchall_host_ttl = 1h",
        # one session per probe, so that sessions at CATCH count probes (the
        # pool would let one session ask c1..c3 in turn; what the table
        # learns is the same)
        "host_sessions = 0",
    ], *extra)


def run(farm, conf, senders):
    """One vemilter-check run, one sender after another: (results, stdout,
    stderr, sessions at CATCH, seconds)"""
    farm.reset()
    status, out, err, results, secs, seen = checkrun.run_check(CHECK, conf, senders, jobs=1, timeout=90)
    farm.wait_idle(timeout=5)
    return results, out, err, farm.connections(CATCH), secs


def remembered(result):
    """Was this result the host table's memory rather than a session?"""
    return result[0] == "catch_all" and result[1].get("reason", "").startswith("remembered: ")


def memory_runs(tap, tmp, dns_port, farm, farm_port):
    senders = ["alice@c%d.test" % i for i in (1, 2, 3)] + ["x@spacer.test"] + \
              ["alice@c%d.test" % i for i in (4, 5, 6)]
    conf = write_conf(tmp, "memory.conf", dns_port, farm_port, "mx_host_overrides = mx.c5.test verify")
    results, out, err, sessions, secs = run(farm, conf, senders)
    first = [results.get("alice@c%d.test" % i, ("?", {})) for i in (1, 2, 3)]
    c4, c5, c6 = (results.get("alice@c%d.test" % i, ("?", {})) for i in (4, 5, 6))
    tap.diag("catchall_host_domains = %d, 6 catch-all domains behind %s (one with a verify entry): "
             "%d sessions, %.2f s" % (NEED, CATCH, sessions, secs))
    tap.check("the first %d domains are probed: valid, the catch-all answer as a late fact" % NEED,
              all(r[0] == "valid" and r[1].get("fact") == "catch_all" for r in first),
              "%r\n%s\n%s" % (first, err, out[-4000:]))
    want = "remembered: mx.c4.test (%s) accepted random addresses for %d domains" % (CATCH, NEED)
    tap.check("the next domain: catch_all from the memory, the host and the count in the reason",
              c4[0] == "catch_all" and c4[1].get("reason") == want and c4[1].get("stage") == "catchall"
              and c4[1].get("addr") == CATCH, "%r" % (c4,))
    tap.check("... flagged limited: our inference, never cached", c4[1].get("flags") == "limited", "%r" % (c4,))
    tap.check("another domain after it: the same", remembered(c6), "%r" % (c6,))
    tap.check("a host with an explicit verify entry is probed all the same",
              c5[0] == "valid" and c5[1].get("fact") == "catch_all" and not remembered(c5), "%r" % (c5,))
    tap.equal("sessions at the catch-all host: %d learning + 1 (verify entry), none for the remembered"
              % NEED, sessions, NEED + 1, out[-4000:])
    tap.equal("... each of those sessions asked the random address", farm.count(CATCH, "RCPT TO"), 2 * (NEED + 1))
    logged = [l for l in err.splitlines() if LOGGED in l and "remembered as catch-all" in l]
    tap.equal("the moment it became catch-all is logged once", len(logged), 1, err)
    line = logged[0] if logged else ""
    tap.check("... naming the host and the domains",
              "mx.c3.test (%s)" % CATCH in line and "c1.test, c2.test, c3.test" in line
              and "for %d domains" % NEED in line, line)
    tap.check("never a reject, never an invalid", all(r[0] in ("valid", "catch_all", "tempfail")
                                                    for r in results.values()), "%r" % results)

    # The verdict waits for the catch-all answer when the policy tells them apart.
    senders = ["alice@c%d.test" % i for i in (1, 2, 3)] + ["x@spacer.test", "alice@c4.test"]
    conf = write_conf(tmp, "memory-wait.conf", dns_port, farm_port, "catch_all_action = tempfail")
    results, out, err, sessions, secs = run(farm, conf, senders)
    first = [results.get("alice@c%d.test" % i, ("?", {})) for i in (1, 2, 3)]
    c4 = results.get("alice@c4.test", ("?", {}))
    tap.diag("catch_all_action = tempfail: %d sessions, %.2f s" % (sessions, secs))
    tap.check("catch_all_action = tempfail: the first %d are catch_all from their sessions" % NEED,
              all(r[0] == "catch_all" and not remembered(r) for r in first), "%r\n%s" % (first, out[-4000:]))
    tap.check("... the next one from the memory", remembered(c4), "%r" % (c4,))
    tap.equal("... %d sessions" % NEED, sessions, NEED)

    # Where catch_all is rejected, the memory (a guess) must not answer: the
    # domain's own session does, or a guess would become a reject.
    senders = ["alice@c%d.test" % i for i in (1, 2, 3)] + ["x@spacer.test", "alice@c4.test"]
    conf = write_conf(tmp, "memory-reject.conf", dns_port, farm_port, "catch_all_action = reject")
    results, out, err, sessions, secs = run(farm, conf, senders)
    c4 = results.get("alice@c4.test", ("?", {}))
    tap.diag("catch_all_action = reject: %d sessions, %.2f s" % (sessions, secs))
    tap.check("catch_all_action = reject: the memory never answers (a guess must not reject)",
              not any(remembered(r) for r in results.values()), "%r\n%s" % (results, out[-4000:]))
    tap.check("... the next domain is probed and is catch_all from its own session",
              c4[0] == "catch_all" and not remembered(c4), "%r" % (c4,))
    tap.equal("... %d sessions" % (NEED + 1), sessions, NEED + 1)


def reset_runs(tap, tmp, dns_port, farm, farm_port):
    senders = ["alice@c1.test", "alice@c2.test", "alice@n1.test", "alice@c3.test", "alice@c4.test",
               "x@spacer.test", "alice@c5.test"]
    conf = write_conf(tmp, "reset.conf", dns_port, farm_port)
    results, out, err, sessions, secs = run(farm, conf, senders)
    n1 = results.get("alice@n1.test", ("?", {}))
    tap.diag("reset: 2 catch-all domains, 1 not, 3 catch-all: %d sessions, %.2f s" % (sessions, secs))
    tap.check("the domain in between is not catch-all (its random address refused)",
              n1[0] == "valid" and n1[1].get("fact") == "not_catch_all", "%r\n%s" % (n1, out[-4000:]))
    tap.check("after it, nothing is remembered: every domain probed",
              not any(remembered(r) for r in results.values()), "%r" % results)
    tap.equal("... %d sessions at the host" % 6, sessions, 6)
    tap.check("... and nothing logged as remembered", "remembered as catch-all" not in err, err)

    conf = write_conf(tmp, "off.conf", dns_port, farm_port, "catchall_host_domains = 0")
    senders = ["alice@c%d.test" % i for i in (1, 2, 3)] + ["x@spacer.test"] + \
              ["alice@c%d.test" % i for i in (4, 6)]
    results, out, err, sessions, secs = run(farm, conf, senders)
    tap.diag("catchall_host_domains = 0: %d sessions" % sessions)
    tap.equal("control: catchall_host_domains = 0: every domain has its session", sessions, 5)
    tap.check("... none remembered", not any(remembered(r) for r in results.values()), "%r" % results)


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
        farm.add(CATCH, "catchall", users=["alice"], catchall_domains=CATCH_DOMAINS)
        farm.add(SLOW, "slow_banner", delay=0.7, users=["x"])
        farm_port = farm.start()
        memory_runs(tap, tmp, dns_port, farm, farm_port)
        reset_runs(tap, tmp, dns_port, farm, farm_port)
    finally:
        farm.stop()
        dns.stop()
        tmp.remove()
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
