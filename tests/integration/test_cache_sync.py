#!/usr/bin/python3
"""test_cache_sync - cache_sync_interval in the running daemon.

The real vemilter with a fake DNS server and a fake SMTP farm; a valid
sender is probed and its answer stored in the cache:
  - cache_sync_interval = 200ms: the sync thread syncs the new entries (its
    debug line "synced up to commit N") within a few intervals, and once
    nothing new is written it stops syncing;
  - cache_sync_interval = 1m and the daemon killed with SIGKILL long before
    any sync: the entry is in the file all the same (vemilter-cache get),
    and the file is not damaged (no .corrupt. file, the tool exits 0);
  - cache_sync_interval = 0: no sync thread (no such line), the entry there
    after a clean stop, as before the directive existed.
TAP on stdout; loopback only; every wait bounded.
"""

import os
import re
import signal
import sys
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "fakes"))

import vmtest  # noqa: E402
from vmtest import Daemon, TempDir, probe_conf, run  # noqa: E402
from milterclient import one_message  # noqa: E402
from fakedns import FakeDNS  # noqa: E402
from smtpfarm import SmtpFarm  # noqa: E402

ZONE = {
    "ok.test": {"MX": [[10, "mx.ok.test"]]}, "mx.ok.test": {"A": ["127.0.0.41"]},
}
SYNCED = r"cache \S+: synced up to commit (\d+)"
TOOL = os.path.join(vmtest.builddir(), "vemilter-cache")


def daemon(tmp, name, dns_port, farm_port, interval):
    conf = probe_conf(tmp, name + ".sock", dns_port, farm_port, **{
        "verify_budget": "8s",
        "cache": tmp.join(name + ".lmdb"), "cache_sync_interval": interval,
        "log_level": "debug",
    })
    return Daemon(tmp, conf, name=name, debug=True)


def cached(tmp, d, address):
    """vemilter-cache get address on d's cache file: the process result"""
    conf = tmp.write(d.name + "-tool.conf", vmtest.format_conf({"cache": d.conf["cache"]}))
    return run([TOOL, "-c", conf, "get", address], timeout=20)


def main():
    tap = vmtest.Tap()
    tmp = TempDir()
    dns = FakeDNS(ZONE)
    farm = SmtpFarm()
    daemons = []
    try:
        dns_port = dns.start()
        farm.add("127.0.0.41", "normal", users=["alice", "carol", "dave"])
        farm_port = farm.start()

        # 200 ms: synced by the thread, then quiet
        d = daemon(tmp, "every200", dns_port, farm_port, "200ms")
        daemons.append(d)
        d.start()
        r = one_message(d.socket, "<alice@ok.test>", qid="QS1")
        tap.check("200ms: a valid sender, probed", r.code in ("c", "a"), repr(r))
        m = d.wait_log(SYNCED, timeout=10 * vmtest.TIME_SCALE)
        tap.check("200ms: the sync thread synced the new entries", m is not None, d.diag)
        # nothing new is written (the answer is cached): no more syncs
        time.sleep(0.3)
        before = len(d.log_lines(SYNCED))
        time.sleep(1.0)
        after = len(d.log_lines(SYNCED))
        tap.equal("200ms: nothing new, no sync", after, before, d.diag)
        tap.equal("200ms: clean stop", d.stop(), 0, d.diag)
        p = cached(tmp, d, "alice@ok.test")
        tap.check("200ms: the entry is in the file", p.returncode == 0 and " valid " in p.stdout,
                  "%r %r %r" % (p.returncode, p.stdout, p.stderr))

        # 1 minute, killed: nothing committed is lost, nothing damaged
        d = daemon(tmp, "killed", dns_port, farm_port, "1m")
        daemons.append(d)
        d.start()
        r = one_message(d.socket, "<carol@ok.test>", qid="QS2")
        tap.check("1m: a valid sender, probed", r.code in ("c", "a"), repr(r))
        # the answer is stored once the milter has it: a second message is
        # answered from the cache, so the put has returned
        r = one_message(d.socket, "<carol@ok.test>", qid="QS3")
        tap.check("1m: answered again", r.code in ("c", "a"), repr(r))
        d.stop(sig=signal.SIGKILL)
        tap.check("1m: killed before any sync", not d.log_lines(SYNCED), d.diag)
        p = cached(tmp, d, "carol@ok.test")
        tap.check("1m: after kill -9 the entry is in the file", p.returncode == 0 and " valid " in p.stdout,
                  "%r %r %r" % (p.returncode, p.stdout, p.stderr))
        tap.check("1m: the file is not damaged",
                  not [f for f in os.listdir(tmp.join()) if ".corrupt." in f], repr(os.listdir(tmp.join())))

        # 0: every write synced by LMDB, no thread
        d = daemon(tmp, "each", dns_port, farm_port, "0")
        daemons.append(d)
        d.start()
        r = one_message(d.socket, "<dave@ok.test>", qid="QS4")
        tap.check("0: a valid sender, probed", r.code in ("c", "a"), repr(r))
        time.sleep(1.5)  # past a tick of the default (1s), were the directive not applied
        tap.check("0: no sync thread", not d.log_lines(SYNCED), d.diag)
        tap.equal("0: clean stop", d.stop(), 0, d.diag)
        p = cached(tmp, d, "dave@ok.test")
        tap.check("0: the entry is in the file", p.returncode == 0 and " valid " in p.stdout,
                  "%r %r %r" % (p.returncode, p.stdout, p.stderr))
    finally:
        vmtest.tear_down(servers=(farm, dns), daemons=daemons, tmp=tmp)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
