#!/usr/bin/python3
"""test_fdguard - descriptors and timeouts: milter_timeout closes silent MTA
sessions; running out of descriptors is our failure (tempfail "out of file
descriptors"), never cached against the domain. Runs the default
transport (native); test_fdguard_libmilter.py runs it against libmilter.

TAP on stdout; exit 0 only if every case passed. Loopback only; every wait
is bounded.
"""

import os
import re
import resource
import signal
import struct
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import vmtest  # noqa: E402
from vmtest import Daemon, TempDir, base_conf, probe_conf  # noqa: E402
from milterclient import MilterClient  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fakes"))
from fakedns import FakeDNS  # noqa: E402
from smtpfarm import SmtpFarm  # noqa: E402

BIN = vmtest.vemilter_binary()


def _session_start(spec, n):
    """An MTA session left after CONNECT (what an idle MTA connection looks like)."""
    c = MilterClient(spec, timeout=10)
    c.optneg()
    c.connect("idle%d.example" % n, "4", 41000 + n, "198.51.100.%d" % (20 + n))
    return c


def t_milter_timeout(tap, cleanup):
    """milter_timeout = 2s: an MTA that stops in the middle of a packet
    (half a length header, or a command announced longer than what came)
    is cut off after about 2 s (the native loop's read timeout, or
    libmilter's); a session that keeps talking with pauses shorter than
    that is not; the cut sessions are freed, so a stop has nothing to wait
    for.

    A session silent *between* packets: native closes it at milter_timeout
    too (checked here); with libmilter it is Debian libmilter's worker
    pool controller's, which closes those past milter_timeout only in a
    sweep every 600 s (worker.c, DT_CHECK_OLD_SESSIONS), too long for a
    test; see vemilter.conf(5)."""
    tmp = TempDir()
    cleanup.add(tmp.remove)
    conf = base_conf(tmp, "t.sock", milter_timeout="2s")
    native = conf.get("milter_transport", "native") == "native"
    d = Daemon(tmp, conf, name="timeout")
    cleanup.add(d.kill)
    d.start()

    half = _session_start(d.socket, 1)
    cleanup.add(half.close)
    half.sock.sendall(struct.pack(">I", 64) + b"M<a@b")  # 5 of 64 bytes
    header = _session_start(d.socket, 2)
    cleanup.add(header.close)
    header.sock.sendall(b"\0\0")  # half a length header
    busy = _session_start(d.socket, 3)
    cleanup.add(busy.close)
    quiet = _session_start(d.socket, 4)  # silent after a whole packet
    cleanup.add(quiet.close)

    t0 = time.monotonic()
    busy_ok = True
    for i in range(4):  # 4 x 0.9 s of talking, each pause shorter than 2 s
        time.sleep(0.9)
        try:
            r = busy.mail("<>", macros={"i": "BUSY%d" % i})
            busy_ok = busy_ok and r.code == "a"
            busy.abort()
        except Exception as e:
            busy_ok = False
            tap.diag("busy session: %r" % e)
            break
    tap.check("a session that keeps talking stays open past milter_timeout", busy_ok,
              busy.transcript_text() + "\n" + d.diag())

    for name, c in (("a packet cut short", half), ("half a length header", header)):
        closed = c.expect_closed(max(0.1, t0 + 8 - time.monotonic()))
        took = time.monotonic() - t0
        tap.check("%s: the session is closed after milter_timeout (2s)" % name, closed,
                  "still open after %.1fs\n%s" % (took, d.diag()))
        tap.diag("%s: found closed %.1fs after it stalled" % (name, took))
    if native:
        closed = quiet.expect_closed(max(0.1, t0 + 8 - time.monotonic()))
        took = time.monotonic() - t0
        tap.check("silent between packets: native closes the session after milter_timeout (2s)",
                  closed, "still open after %.1fs\n%s" % (took, d.diag()))
        # One line for each of the three sessions cut (two inside a packet).
        silent = r"milter connection silent for milter_timeout: closed"
        tap.check("the three closes are logged",
                  vmtest.wait_until(lambda: len(d.log_lines(silent)) >= 3, 3), d.diag)
    else:
        tap.diag("libmilter closes a session silent between packets only in its 10-minute sweep: not checked")
    quiet.close()
    try:
        busy.quit()
    except Exception:
        pass
    busy.close()

    # The cut sessions were freed (on_close ran): the stop does not wait the
    # whole drain (30 s) for them. (The busy one may still be closing.)
    t1 = time.monotonic()
    rc = d.stop()
    took = time.monotonic() - t1
    tap.equal("the daemon stops with 0", rc, 0, d.diag)
    tap.check("the cut sessions were freed: the stop did not wait for them (%.1fs)" % took,
              took < 20 and not d.log_lines(r"stopping with \d+ milter session\(s\) still open"),
              d.diag)


class LimitedDaemon(Daemon):
    """A Daemon started with the open-file limit soft:hard, set by
    prlimit(1) before exec (vemilter raises the soft one to the hard one)."""

    def __init__(self, tmp, conf, soft, hard, **kw):
        Daemon.__init__(self, tmp, conf, **kw)
        self.soft, self.hard = soft, hard

    def argv(self):
        return ["/usr/bin/prlimit", "--nofile=%d:%d" % (self.soft, self.hard), "--"] + \
            Daemon.argv(self)


def _open_fds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return -1


def _one_message(d, sender, qid):
    """MAIL + one RCPT on a new milter session: (rcpt reply, transcript)."""
    c = MilterClient(d.socket, timeout=20)
    try:
        c.optneg()
        c.connect("client.example", "4", 40500, "198.51.100.77")
        m = c.mail(sender, macros={"i": qid})
        r = c.rcpt("<bob@local.test>") if m.code == "c" else m
        c.abort()
        c.quit()
        return r, c.transcript_text()
    finally:
        c.close()


def _verdict(d, qid):
    lines = d.log_lines(r"verdict queue_id=%s " % qid)
    return lines[-1] if lines else ""


def t_out_of_fds(tap, cleanup):
    """The daemon under an open-file limit of 24:64, every descriptor taken by
    idle MTA sessions: a probe that cannot get a socket (SMTP connection for
    an address literal, DNS query for a domain) is tempfail "out of file
    descriptors", logged as our failure (one warning), and not cached: once
    descriptors are free again, the same senders are probed afresh and
    found valid. (Before: "Too many open files" and "connection refused, or
    SERVFAIL/REFUSED from every server", each cached against the domain.)"""
    nofile = 64
    tmp = TempDir()
    cleanup.add(tmp.remove)
    dns = FakeDNS({"fd.test": {"MX": [[10, "mx.fd.test"]]}, "mx.fd.test": {"A": ["127.0.0.71"]}})
    cleanup.add(dns.stop)
    farm = SmtpFarm()
    cleanup.add(farm.stop)
    farm.add("127.0.0.71", "normal", users=["alice", "bob"])
    dns_port = dns.start()
    farm_port = farm.start()
    conf = probe_conf(tmp, "fd.sock", dns_port, farm_port, **{
        "connect_timeout": "2s",
        "banner_timeout": "5s", "command_timeout": "5s", "probe_timeout": "10s",
        "verify_budget": "3s", "cache": tmp.join("cache.lmdb"), "self_health": "no",
    })
    d = LimitedDaemon(tmp, conf, 24, nofile, name="fd", debug=True)
    cleanup.add(d.kill)
    d.start()
    # Started with a soft limit of 24: raised to the hard one, 64. Headroom:
    # probes get a quarter of what is left after the reserve.
    tap.check("the soft open-file limit is raised to the hard one (24 -> 64); "
              "max_probes_in_flight lowered to 8",
              bool(d.wait_log(r"notice: max_probes_in_flight lowered to 8 by the open-file limit \(64\)",
                              5)), d.diag)

    # The start-up check of helo_name (a lookup on the engine's resolver)
    # holds a socket until it is answered: let it finish first.
    tap.check("the helo_name check is over",
              bool(d.wait_log(r"warning: helo_name \S+ does not resolve", 30)), d.diag)
    # The session that carries the messages, set up while descriptors last.
    active = MilterClient(d.socket, timeout=20)
    cleanup.add(active.close)
    active.optneg()
    active.connect("client.example", "4", 40501, "198.51.100.78")
    # Take every other descriptor: idle MTA sessions, one descriptor each,
    # and a few more waiting in the listen backlog, so that a descriptor
    # freed for a moment goes to one of them (both transports accept at
    # once).
    idle = []
    for n in range(nofile - _open_fds(d.pid) + 3):
        c = MilterClient(d.socket, timeout=10)
        c.open()
        cleanup.add(c.close)
        idle.append(c)
    full = vmtest.wait_until(lambda: _open_fds(d.pid) >= nofile, 10)
    tap.check("idle sessions hold every descriptor (%d of %d)" % (_open_fds(d.pid), nofile), full,
              "open: %d\n%s" % (_open_fds(d.pid), d.diag()))
    results = {}
    for sender, qid in (("<alice@[127.0.0.71]>", "FDLIT1"), ("<alice@fd.test>", "FDDNS1")):
        m = active.mail(sender, macros={"i": qid})
        r = active.rcpt("<bob@local.test>") if m.code == "c" else m
        active.abort()
        results[qid] = r
    for qid, what in (("FDLIT1", "no socket for the SMTP connection (address literal)"),
                      ("FDDNS1", "no socket for the DNS query")):
        r, line = results[qid], _verdict(d, qid)
        tap.check("%s: the sender gets a 4xx" % what,
                  r.code == "y" and (r.smtp_code or "").startswith("4"), "%r\n%s" % (r, line))
        tap.check("%s: outcome tempfail, \"out of file descriptors\"" % what,
                  "outcome" not in line and "reason=tempfail" in line
                  and 'detail="out of file descriptors' in line, line + "\n" + d.diag())
    warnings = d.log_lines(r"warning: our failure, not the sender's: out of file descriptors")
    tap.equal("one warning for both (rate-limited)", len(warnings), 1, d.diag)

    # Give the descriptors back; the same senders are probed again, not
    # answered from the cache.
    active.quit()
    active.close()
    for c in idle:
        c.close()
    vmtest.wait_until(lambda: _open_fds(d.pid) < nofile // 2, 10)
    before = farm.count("127.0.0.71", "RCPT TO:<alice@")
    for sender, qid in (("<alice@[127.0.0.71]>", "FDLIT2"), ("<alice@fd.test>", "FDDNS2")):
        r, tr = _one_message(d, sender, qid)
        line = _verdict(d, qid)
        tap.check("%s afterwards: accepted" % sender, r.code in ("c", "a"), tr + "\n" + line)
        tap.check("%s afterwards: probed again (not from the cache), valid" % sender,
                  "source=probed" in line and "reason=valid" in line, line + "\n" + d.diag())
    tap.equal("both were asked at the MX again", farm.count("127.0.0.71", "RCPT TO:<alice@") - before, 2,
              d.diag)
    tap.check("the daemon stops cleanly", d.stop() == 0, d.diag)


TESTS = [t_milter_timeout, t_out_of_fds]


setup = vmtest.require_binary(BIN, "vemilter")


if __name__ == "__main__":
    vmtest.run_tests(TESTS, per_test_timeout=90, total_timeout=170, setup=setup)
