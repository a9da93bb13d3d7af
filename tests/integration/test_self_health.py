#!/usr/bin/python3
"""test_self_health - the daemon when every probe fails on OUR side.

Fake DNS points six domains' MX hosts at six loopback addresses where
nothing listens (every connection refused: what a blocked outbound port 25
looks like). The daemon must notice that most probes to many distinct hosts
fail on our side: one warning saying what to check (port 25, blocklist,
reverse DNS vs helo_name), and from then on a tempfail outcome, and the
budget's tempfail, is accepted with reason=self_health, while a definite
answer (invalid) still rejects. Then servers come up on those six
addresses (a second farm on the same port): once answers come back from
enough of them, one notice says so, and tempfail outcomes defer again.
Also: a helo_name that does not resolve is warned about at start-up.

TAP on stdout; loopback only; every wait bounded.
"""

import os
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "fakes"))

import vmtest  # noqa: E402
from vmtest import Daemon, TempDir, probe_conf  # noqa: E402
from milterclient import MilterClient  # noqa: E402
from fakedns import FakeDNS  # noqa: E402
from smtpfarm import SmtpFarm  # noqa: E402

DOWN = ["127.0.0.%d" % n for n in range(71, 77)]  # no server until the second farm
DEAD = "127.0.0.77"                                 # never a server
OK = "127.0.0.90"                                   # a normal server all along
SLOW = "127.0.0.91"                                 # answers after verify_budget
HELO = "probe.vemilter.invalid"                     # .invalid never resolves (RFC 6761)

ZONE = {"ok.test": {"MX": [[10, "mx.ok.test"]]}, "mx.ok.test": {"A": [OK]},
        "slow.test": {"MX": [[10, "mx.slow.test"]]}, "mx.slow.test": {"A": [SLOW]},
        "dead.test": {"MX": [[10, "mx.dead.test"]]}, "mx.dead.test": {"A": [DEAD]}}
for i, address in enumerate(DOWN, 1):
    ZONE["d%d.test" % i] = {"MX": [[10, "mx.d%d.test" % i]]}
    ZONE["mx.d%d.test" % i] = {"A": [address]}

UNHEALTHY = r"self-health: unhealthy: .*"
HEALTHY = r"self-health: healthy again: .*"


def rcpt(d, sender):
    """One message; the RCPT reply's first digit ('2': accepted) and the
    sender's last verdict line."""
    c = MilterClient(d.socket, timeout=20)
    try:
        c.session(client_addr="198.51.100.7")
        m = c.mail(sender, macros={"i": "Q1"})
        got = c.rcpt("<bob@local.test>") if m.code == "c" else m
        c.quit()
    finally:
        c.close()
    digit = "2" if got.code in ("c", "a") else (got.smtp_code or "?")[0]
    lines = [l for l in d.log_lines(r"verdict ") if "sender=%s" % sender in l]
    return digit, lines[-1] if lines else "(no verdict line)"


def main():
    tap = vmtest.Tap()
    tmp = TempDir()
    dns = FakeDNS(ZONE)
    farm = SmtpFarm()
    farm2 = SmtpFarm()
    d = None
    try:
        dns_port = dns.start()
        farm.add(OK, "normal", users=["alice"])
        farm.add(SLOW, "slow_banner", delay=2.0)
        port = farm.start()
        conf = probe_conf(tmp, "health.sock", dns_port, port, **{
            "helo_name": HELO, "connect_timeout": "2s",
            "banner_timeout": "5s", "command_timeout": "5s", "probe_timeout": "10s",
            "verify_budget": "1s", "log_level": "debug", "dns_cache_time": "0",
            # The hosts come back within seconds here; the breaker would keep
            # them backed off for minutes (test_breaker covers that).
            "host_backoff": "0",
        })
        d = Daemon(tmp, conf, name="health", debug=True)
        d.start()

        warned = d.wait_log(r"helo_name %s does not resolve" % HELO.replace(".", r"\."), 30)
        tap.check("start-up: a helo_name that does not resolve is warned about", warned is not None, d.diag)

        # Every probe refused: the first four senders are deferred as usual
        # (too few hosts to judge), the fifth host makes us unhealthy, and
        # from then on tempfail is accepted.
        results = [rcpt(d, "<a@d%d.test>" % i) for i in range(1, 7)]
        for i, (digit, line) in enumerate(results[:4], 1):
            tap.check("host %d of 6 refused: still deferred (4xx, reason=tempfail)" % i,
                      digit == "4" and "reason=tempfail" in line, line)
        probes = d.log_lines(r"probe a@d\d\.test: tempfail at connect")
        tap.check("every probe failed at connect (refused): %d probe lines" % len(probes), len(probes) == 6,
                  lambda: "\n".join(d.log_lines(r"probe ")))
        warnings = d.log_lines(UNHEALTHY)
        tap.check("one self-health warning", len(warnings) == 1, d.diag)
        w = warnings[0] if warnings else ""
        tap.check("the warning counts the hosts and names a sample host",
                  "5 of 5 mail hosts" in w and "127.0.0.75" in w, w)
        tap.check("the warning says what to check: port 25, blocklist, reverse DNS vs helo_name",
                  "port 25" in w and "blocklist" in w and "reverse DNS" in w and "helo_name " + HELO in w, w)
        for i, (digit, line) in enumerate(results[4:], 5):
            tap.check("host %d of 6 refused, unhealthy: accepted (reason=self_health outcome=tempfail)" % i,
                      digit == "2" and "action=accept reason=self_health" in line and "outcome=tempfail" in line,
                      line)

        # Definite answers still apply; the budget's tempfail is accepted too.
        digit, line = rcpt(d, "<nobody@ok.test>")
        tap.check("unhealthy: an invalid sender is still rejected (5xx)", digit == "5" and "reason=invalid" in line,
                  line)
        digit, line = rcpt(d, "<alice@ok.test>")
        tap.check("unhealthy: a valid sender is accepted (reason=valid)", digit == "2" and "reason=valid" in line,
                  line)
        digit, line = rcpt(d, "<x@slow.test>")
        tap.check("unhealthy: no answer within verify_budget: accepted (reason=self_health outcome=budget_exceeded)",
                  digit == "2" and "reason=self_health" in line and "outcome=budget_exceeded" in line, line)
        # Two hosts answered (ok, slow), six failed: 75 %, between the
        # thresholds: still unhealthy (no flapping), still one warning.
        vmtest.wait_until(lambda: d.log_lines(r"probe x@slow\.test: "), 10)
        digit, line = rcpt(d, "<b@dead.test>")
        tap.check("two hosts answering of nine is not recovery: a refused probe is still accepted",
                  digit == "2" and "reason=self_health" in line, line)
        tap.check("still one warning, no notice yet", len(d.log_lines(UNHEALTHY)) == 1
                  and not d.log_lines(HEALTHY), lambda: "\n".join(d.log_lines(r"self-health")))

        # The six hosts come up: once enough answer, healthy again.
        for address in DOWN:
            farm2.add(address, "normal", users=["b"])
        farm2.port = port
        farm2.start()
        recovered_at = None
        for i in range(1, 7):
            digit, line = rcpt(d, "<b@d%d.test>" % i)
            tap.check("host %d is back: b@d%d.test accepted (reason=valid)" % (i, i),
                      digit == "2" and "reason=valid" in line, line)
            if recovered_at is None and d.log_lines(HEALTHY):
                recovered_at = i
        notices = d.log_lines(HEALTHY)
        tap.check("one self-health notice once answers came back (after host %s)" % recovered_at,
                  len(notices) == 1 and recovered_at is not None and recovered_at >= 3,
                  lambda: "\n".join(d.log_lines(r"self-health")))
        digit, line = rcpt(d, "<c@dead.test>")
        tap.check("healthy again: a refused probe defers again (4xx, reason=tempfail)",
                  digit == "4" and "reason=tempfail" in line, line)
        tap.check("in all: one warning, one notice", len(d.log_lines(UNHEALTHY)) == 1
                  and len(d.log_lines(HEALTHY)) == 1, lambda: "\n".join(d.log_lines(r"self-health")))
        for l in d.log_lines(r"self-health|helo_name .* not a fully"):
            tap.diag("logged: " + l)
        tap.equal("clean stop", d.stop(), 0, d.diag)

        # self_health = no: the same refusals are deferred, nothing is logged.
        off = Daemon(tmp, dict(conf, self_health="no", socket="unix:" + tmp.join("off.sock")), name="off", debug=True)
        d = off
        off.start()
        digits = [rcpt(off, "<e@d%d.test>" % i)[0] for i in range(1, 7)]
        dns.set_zone(dict(ZONE, **{"mx.d%d.test" % i: {"A": ["127.0.0.%d" % (80 + i)]} for i in range(1, 7)}))
        digits += [rcpt(off, "<f@d%d.test>" % i)[0] for i in range(1, 7)]
        dns.set_zone(ZONE)
        tap.check("self_health = no: hosts answering then refused: no self-health line, refusals deferred",
                  digits[6:] == ["4"] * 6 and not off.log_lines(r"self-health"),
                  lambda: repr(digits) + "\n" + off.diag())
        tap.equal("self_health = no: clean stop", off.stop(), 0, off.diag)
        d = None
    finally:
        if d is not None:
            d.stop()
        farm2.stop()
        farm.stop()
        dns.stop()
        tmp.remove()
    tap.done()


if __name__ == "__main__":
    main()
