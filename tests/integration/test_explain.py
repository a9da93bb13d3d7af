#!/usr/bin/python3
"""test_explain - vemilter-check --explain: what the daemon would answer
now, and why, from its configuration and cache, without probing.

The real daemon verifies a valid and an invalid sender against a fake DNS
server and a fake SMTP farm and is stopped; then --explain, with the same
configuration, must name for each sender the record that answers, its
times, the verdict and the reply, and probe nothing (the farm sees no new
session); a never-seen sender is "would probe"; a sender of a skipped or
blocklisted domain and a bad-syntax sender are explained without the
cache; the cache file is not changed. TAP on stdout; loopback only.
"""

import hashlib
import os
import subprocess
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "fakes"))

import vmtest  # noqa: E402
from vmtest import Daemon, TempDir, probe_conf  # noqa: E402
from milterclient import one_message  # noqa: E402
from fakedns import FakeDNS  # noqa: E402
from smtpfarm import SmtpFarm  # noqa: E402

ZONE = {"ok.test": {"MX": [[10, "mx.ok.test"]]}, "mx.ok.test": {"A": ["127.0.0.41"]}}
CHECK = vmtest.vemilter_binary().replace("/vemilter", "/vemilter-check")


def message(d, sender):
    return one_message(d.socket, sender, qid="QE")


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    tap = vmtest.Tap()
    tmp = TempDir()
    dns = FakeDNS(ZONE)
    farm = SmtpFarm()
    d = None
    try:
        dns_port = dns.start()
        farm.add("127.0.0.41", "normal", users=["alice"])
        farm_port = farm.start()
        conf = probe_conf(tmp, "explain.sock", dns_port, farm_port, **{
            "verify_budget": "8s",
            "cache": tmp.join("cache.lmdb"), "domain_overrides": "skipped.test skip",
            "sender_domain_blocklist": "banned.test",
        })
        d = Daemon(tmp, conf, name="explain", debug=True)
        d.start()
        codes = [message(d, s).code for s in ("<alice@ok.test>", "<nobody@ok.test>")]
        tap.check("the daemon verified alice (valid) and nobody (invalid)", codes[0] in ("c", "a")
                  and codes[1] == "y", repr(codes))
        tap.equal("the daemon stops", d.stop(), 0, d.diag)
        sessions = farm.connections("127.0.0.41")
        before = digest(tmp.join("cache.lmdb"))

        def explain(*addresses):
            return subprocess.run([CHECK, "-c", d.conf_path, "--explain"] + list(addresses),
                                  capture_output=True, text=True, timeout=60)

        p = explain("alice@ok.test")
        out = p.stdout
        tap.check("valid: the address's record answers: valid, probed ago, fresh, its expiry; verdict accept",
                  p.returncode == 0 and "alice@ok.test: record: a:alice@ok.test: valid" in out and " ago" in out
                  and "fresh" in out and "expires in" in out
                  and "alice@ok.test: answer: valid, from the address's record" in out
                  and "alice@ok.test: verdict: accept" in out, out + p.stderr)
        p = explain("nobody@ok.test")
        out = p.stdout
        tap.check("invalid: the record with the server's 550; verdict reject with the reply (exit 3)",
                  p.returncode == 3 and "a:nobody@ok.test: invalid" in out and "550" in out
                  and "nobody@ok.test: verdict: reject" in out and "nobody@ok.test: reply: 5" in out,
                  out + p.stderr)
        p = explain("new@ok.test")
        tap.check("never seen: the daemon would probe (exit 1)",
                  p.returncode == 1 and "would probe" in p.stdout, p.stdout + p.stderr)
        p = explain("x@skipped.test", "y@banned.test", "a..b@ok.test", "<>")
        out = p.stdout
        tap.check("override, blocklist, bad syntax and the null sender are explained from the config",
                  "x@skipped.test: domain: skipped.test: skipped by domain_overrides" in out
                  and "y@banned.test: domain: banned.test: in sender_domain_blocklist" in out
                  and "y@banned.test: verdict: reject" in out
                  and "a..b@ok.test: precheck: bad syntax" in out
                  and "<>: precheck: accepted without verification: null_sender" in out, out + p.stderr)
        tap.equal("nothing was probed (the farm saw no new session)", farm.connections("127.0.0.41"), sessions)
        tap.equal("the cache file is unchanged", digest(tmp.join("cache.lmdb")), before)
        nocache = dict(conf, cache=tmp.join("absent", "c.lmdb"))
        path = tmp.join("nocache.conf")
        with open(path, "w") as f:
            f.write(vmtest.format_conf(nocache))
        p = subprocess.run([CHECK, "-c", path, "--explain", "alice@ok.test"], capture_output=True, text=True,
                           timeout=60)
        tap.check("no cache file: said so, and the daemon would probe",
                  "no cache file" in p.stdout and "would probe" in p.stdout and p.returncode == 1,
                  p.stdout + p.stderr)
    finally:
        vmtest.tear_down(servers=(farm, dns), daemons=(d,), tmp=tmp)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
