#!/usr/bin/python3
"""test_hostrules - rules by MX host (mx_host_overrides) and the per-host
session budget (host_session_rate), seen from outside: the real
vemilter-check against a fake DNS server and a farm of fake SMTP servers.

- host_session_rate = 3: 10 domains whose MX is one farm address, one
  sender each, one after another (-j1) and all at once (-j10): the farm
  sees 3 sessions, the other 7 senders tempfail at connect with
  "host_session_rate: 3 sessions to ADDR this minute" (never a reject). A
  domain whose first MX is that address and whose second is another one is
  valid through the second. Control: host_session_rate = 0 -> 10 sessions.
  Both with host_sessions = 0 (one session per probe): the rate alone.
- mx_host_overrides = "*.protection.outlook.test skip,
  keep.mail.protection.outlook.test verify, 127.0.0.73 skip": a domain
  whose MX matches the wildcard is unverifiable (stage guard) with the
  rule in the reason and no session; the verify exception is probed
  (valid); an MX address in the skipped network is unverifiable without a
  session. Control: without the directive, the first domain is valid.

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
RATED = "127.0.0.70"   # normal, user alice: shared by r1..r10
OTHER = "127.0.0.71"   # normal: second MX of two.test
HOSTED = "127.0.0.72"  # normal: behind the *.protection.outlook.test names
NETSKIP = "127.0.0.73"  # normal: in a skipped network
N_RATED = 10
RATE = 3

WHY = "(servers that accept every RCPT and bounce later)"


def zone():
    z = vmtest.mx_zone(("r%d.test" % i, RATED) for i in range(1, N_RATED + 1))
    z["two.test"] = {"MX": [[10, "mx1.two.test"], [20, "mx2.two.test"]]}
    z["mx1.two.test"] = {"A": [RATED]}
    z["mx2.two.test"] = {"A": [OTHER]}
    z["o1.test"] = {"MX": [[10, "o1-test.mail.protection.outlook.test"]]}
    z["o1-test.mail.protection.outlook.test"] = {"A": [HOSTED]}
    z["o2.test"] = {"MX": [[10, "keep.mail.protection.outlook.test"]]}
    z["keep.mail.protection.outlook.test"] = {"A": [HOSTED]}
    z.update(vmtest.mx_zone({"o3.test": NETSKIP}))
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


def rate_runs(tap, tmp, dns_port, farm, farm_port):
    senders = ["alice@r%d.test" % i for i in range(1, N_RATED + 1)]
    want = "host_session_rate: %d sessions to %s this minute" % (RATE, RATED)
    # host_sessions = 0: one session per probe, so the rate alone is measured
    # (shared sessions under the rate: test_pool)
    conf = write_conf(tmp, "rate.conf", dns_port, farm_port, "host_session_rate = %d" % RATE, "host_sessions = 0")
    for jobs in (1, N_RATED):
        farm.reset()
        extra = ["alice@two.test"] if jobs == 1 else []  # at once it could take one of the 3 sessions
        status, out, err, results, secs = run_check(conf, senders + extra, jobs=jobs)
        farm.wait_idle(timeout=5)
        sessions = farm.connections(RATED)
        kinds = [results.get(s, ("?",))[0] for s in senders]
        limited = [s for s in senders if results.get(s, ("?", {}))[0] == "tempfail"
                   and results[s][1].get("stage") == "connect" and results[s][1].get("reason") == want]
        tap.diag("-j%d, host_session_rate = %d, %d domains behind %s: %d sessions, %d valid, %d over the rate, "
                 "%.2f s" % (jobs, RATE, N_RATED, RATED, sessions, kinds.count("valid"), len(limited), secs))
        tap.equal("-j%d: %d sessions to the shared host" % (jobs, RATE), sessions, RATE,
                  "stderr:\n%s\n%s" % (err, out[-3000:]))
        tap.equal("-j%d: %d senders valid" % (jobs, RATE), kinds.count("valid"), RATE, "%r" % results)
        tap.equal("-j%d: %d tempfail at connect naming the budget" % (jobs, N_RATED - RATE), len(limited),
                  N_RATED - RATE, "%r" % results)
        tap.check("-j%d: never a reject" % jobs, all(k in ("valid", "tempfail") for k in kinds), "%r" % kinds)
        two = results.get("alice@two.test", ("?", {}))
        if jobs == 1:  # two.test comes after the minute's sessions are used up
            tap.check("-j1: a domain whose first MX is over the rate is valid through its second",
                      two[0] == "valid" and two[1].get("addr") == OTHER, "%r" % (two,))
            tap.equal("-j1: ... 1 session to the second MX", farm.connections(OTHER), 1)
    conf = write_conf(tmp, "rate-off.conf", dns_port, farm_port, "host_session_rate = 0", "host_sessions = 0")
    farm.reset()
    status, out, err, results, secs = run_check(conf, senders)
    farm.wait_idle(timeout=5)
    tap.diag("host_session_rate = 0: %d sessions" % farm.connections(RATED))
    tap.equal("host_session_rate = 0: %d sessions, one per domain" % N_RATED, farm.connections(RATED), N_RATED)
    tap.check("... all valid", all(results.get(s, ("?",))[0] == "valid" for s in senders), "%r" % results)


def override_runs(tap, tmp, dns_port, farm, farm_port):
    senders = ["alice@o1.test", "alice@o2.test", "alice@o3.test"]
    conf = write_conf(tmp, "mx.conf", dns_port, farm_port,
                      "mx_host_overrides = *.protection.outlook.test skip, "
                      "keep.mail.protection.outlook.test verify, %s skip" % NETSKIP)
    farm.reset()
    status, out, err, results, secs = run_check(conf, senders)
    farm.wait_idle(timeout=5)
    o1, o2, o3 = (results.get(s, ("?", {})) for s in senders)
    tap.check("MX under a skipped wildcard: unverifiable at stage guard, the rule in the reason",
              o1[0] == "unverifiable" and o1[1].get("stage") == "guard"
              and o1[1].get("reason") == "mx_host_overrides: *.protection.outlook.test skip " + WHY,
              "%r\n%s\n%s" % (o1, err, out[-3000:]))
    tap.check("the verify exception is probed: valid", o2[0] == "valid", "%r" % (o2,))
    tap.equal("... 1 session to the hosted address (the exception's; none for the skipped)",
              farm.connections(HOSTED), 1)
    tap.check("MX address in a skipped network: unverifiable, the network in the reason",
              o3[0] == "unverifiable" and o3[1].get("reason") == "mx_host_overrides: %s/32 skip %s" % (NETSKIP, WHY),
              "%r" % (o3,))
    tap.equal("... no session to it", farm.connections(NETSKIP), 0)
    conf = write_conf(tmp, "mx-off.conf", dns_port, farm_port)
    farm.reset()
    status, out, err, results, secs = run_check(conf, senders[:1])
    farm.wait_idle(timeout=5)
    tap.check("control: without mx_host_overrides the first domain is probed and valid",
              results.get(senders[0], ("?",))[0] == "valid" and farm.connections(HOSTED) == 1, "%r" % results)


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
        for addr in (RATED, OTHER, HOSTED, NETSKIP):
            farm.add(addr, "normal", users=["alice"])
        farm_port = farm.start()
        rate_runs(tap, tmp, dns_port, farm, farm_port)
        override_runs(tap, tmp, dns_port, farm, farm_port)
    finally:
        farm.stop()
        dns.stop()
        tmp.remove()
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
