#!/usr/bin/python3
"""test_reload - SIGHUP applies the new configuration to the verifier and
the engine, not only to the milter side (issue 11).

The real daemon, two fake DNS servers (A and B, each knowing a domain the
other does not) and a fake SMTP farm. Before the reload: helo_name is
probe1, DNS is server A, domain_probe_rate is 1 (a second new address at a
domain in the same minute is not probed: tempfail), positive_ttl is 1h.
The reload changes all four and cache_max_mb (which needs a restart); then
each must show: the next session says EHLO probe2; a domain only server B
knows verifies; the domain's next new address is probed; a new valid
answer's record expires within seconds (vemilter-check --explain reads the
cache); one warning names cache_max_mb; a probe running across the reload
finishes with the configuration it started under. TAP on stdout; loopback
only; every wait bounded.
"""

import os
import re
import signal
import subprocess
import sys
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "fakes"))

import vmtest  # noqa: E402
from vmtest import Daemon, TempDir, probe_conf  # noqa: E402
from milterclient import one_message  # noqa: E402
from fakedns import FakeDNS  # noqa: E402
from smtpfarm import SmtpFarm  # noqa: E402

MX = "127.0.0.41"
SLOW = "127.0.0.42"
ZONE_A = {
    "ok.test": {"MX": [[10, "mx.ok.test"]]}, "mx.ok.test": {"A": [MX]},
    "slow.test": {"MX": [[10, "mx.slow.test"]]}, "mx.slow.test": {"A": [SLOW]},
}
ZONE_B = dict(ZONE_A, **{"onlyb.test": {"MX": [[10, "mx.onlyb.test"]]}, "mx.onlyb.test": {"A": [MX]},
                         "onlyb2.test": {"MX": [[10, "mx.onlyb.test"]]}})
CHECK = vmtest.vemilter_binary().replace("/vemilter", "/vemilter-check")


def rcpt(d, sender):
    """One message; the deciding reply's first digit ('2' also for accept at MAIL)."""
    r = one_message(d.socket, sender, qid="QR")
    return "2" if r.code in ("c", "a") else (r.smtp_code or "?")[0]


def main():
    tap = vmtest.Tap()
    tmp = TempDir()
    dns_a, dns_b = FakeDNS(ZONE_A), FakeDNS(ZONE_B)
    farm = SmtpFarm()
    d = None
    try:
        port_a, port_b = dns_a.start(), dns_b.start()
        farm.add(MX, "normal", users=["alice", "bob", "carol", "dave", "erin", "x"])
        farm.add(SLOW, "slow_banner", delay=3, users=["slowpoke"])
        farm_port = farm.start()
        conf = probe_conf(tmp, "reload.sock", port_a, farm_port, **{
            "dns_cache_time": "0", "helo_name": "probe1.vemilter.test",
            "verify_budget": "8s", "banner_timeout": "10s",
            "cache": tmp.join("cache.lmdb"), "domain_probe_rate": "1", "positive_ttl": "1h",
            "host_session_rate": "0",
        })
        d = Daemon(tmp, conf, name="reload", debug=True)
        d.start()

        tap.equal("before: alice@ok.test verified (the domain's first probe this minute)",
                  rcpt(d, "<alice@ok.test>"), "2")
        tap.check("before: the session said EHLO probe1", farm.count(MX, "EHLO probe1.vemilter.test") >= 1,
                  repr(farm.commands(MX)))
        tap.equal("before: bob@ok.test, the domain's second new address this minute: tempfail (rate 1)",
                  rcpt(d, "<bob@ok.test>"), "4")
        tap.equal("before: x@onlyb.test: server A does not know the domain: rejected (no_domain)",
                  rcpt(d, "<x@onlyb.test>"), "5")

        # A probe that runs across the reload (its MX greets after 3 s).
        import threading
        slow = {}
        th = threading.Thread(target=lambda: slow.update(code=rcpt(d, "<slowpoke@slow.test>")))
        th.start()
        time.sleep(0.5)

        mark = d.log_size()
        d.conf.update({"helo_name": "probe2.vemilter.test", "dns_servers": "127.0.0.1:%d" % port_b,
                       "domain_probe_rate": "0", "positive_ttl": "5s", "positive_refresh": "2s",
                       "cache_max_mb": "128"})
        d.write_conf()
        d.send_signal(signal.SIGHUP)
        tap.check("the reload is logged", d.wait_log(r"notice: reloaded configuration", 10, mark) is not None,
                  d.diag)
        warn = d.wait_log(r"warning: reload: (.*) changed: (it|they) take", 5, mark)
        tap.check("one warning names the directive that needs a restart (cache_max_mb) and no other",
                  warn is not None and warn.group(1) == "cache_max_mb", d.diag)

        th.join(20)
        tap.equal("the probe running across the reload finished (valid)", slow.get("code"), "2")
        ehlo_before = farm.count(MX, "EHLO probe2.vemilter.test")
        tap.equal("after: carol@ok.test is probed at once (domain_probe_rate 0 applies)",
                  rcpt(d, "<carol@ok.test>"), "2")
        tap.check("after: the new session said EHLO probe2 (helo_name applies)",
                  farm.count(MX, "EHLO probe2.vemilter.test") > ehlo_before, repr(farm.commands(MX)[-12:]))
        asked_b = len(dns_b.queries)
        # (onlyb.test's no_domain from server A is a cached domain fact: a
        # reload keeps the cache; onlyb2.test, also known only to B, is new)
        tap.equal("after: erin@onlyb2.test verifies: a domain only server B knows (dns_servers applies)",
                  rcpt(d, "<erin@onlyb2.test>"), "2")
        tap.check("after: server B was asked", len(dns_b.queries) > asked_b, repr(dns_b.queries[-5:]))
        p = subprocess.run([CHECK, "-c", d.conf_path, "--explain", "carol@ok.test"], capture_output=True,
                           text=True, timeout=60)
        m = re.search(r"a:carol@ok\.test: valid.*expires in (\d+)s", p.stdout)
        tap.check("after: carol's record expires within 5 s (positive_ttl applies)",
                  m is not None and int(m.group(1)) <= 5, p.stdout + p.stderr)
        tap.equal("clean stop", d.stop(), 0, d.diag)
    finally:
        if d is not None:
            d.kill()
        farm.stop()
        dns_a.stop()
        dns_b.stop()
        tmp.remove()
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
