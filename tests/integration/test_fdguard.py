#!/usr/bin/python3
"""test_fdguard - descriptors and timeouts: milter_timeout closes silent MTA
sessions; running out of descriptors is our failure (tempfail "out of file
descriptors"), never cached against the domain.

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
from vmtest import Daemon, TempDir, base_conf  # noqa: E402
from milterclient import MilterClient  # noqa: E402

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
    is cut off after about 2 s (libmilter's read timeout); a session that
    keeps talking with pauses shorter than that is not; the cut sessions
    are freed, so a stop has nothing to wait for.

    A session silent *between* packets is Debian libmilter's worker pool
    controller's: it closes those past milter_timeout only in a sweep every
    600 s (worker.c, DT_CHECK_OLD_SESSIONS), too long for a test; see
    vemilter.conf(5)."""
    tmp = TempDir()
    cleanup.add(tmp.remove)
    d = Daemon(tmp, base_conf(tmp, "t.sock", milter_timeout="2s"), name="timeout")
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
    try:
        busy.quit()
    except Exception:
        pass
    busy.close()

    # The cut sessions were freed (on_close ran): a stop has nothing to wait for.
    rc = d.stop()
    tap.equal("the daemon stops with 0", rc, 0, d.diag)
    tap.check("no session was left to drain at the stop",
              not d.log_lines(r"waiting up to \d+ s for"), d.diag)


TESTS = [t_milter_timeout]


setup = vmtest.require_binary(BIN, "vemilter")


if __name__ == "__main__":
    vmtest.run_tests(TESTS, per_test_timeout=90, total_timeout=170, setup=setup)
