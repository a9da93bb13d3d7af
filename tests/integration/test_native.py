#!/usr/bin/python3
"""test_native - the native milter transport (milter_transport = native)
against a hostile MTA and a slow probe.

Hostile: a packet length of 0 or over 65535, an unknown command, macros
without their NUL, a MAIL without its NUL, a command before OPTNEG: each
closes that one connection with a log line; a packet cut short by an MTA
that hangs up is forgotten; the daemon keeps answering everyone else.
Slow probe (the MX answers each command after 0.4 s): a RCPT waiting for
its verdict is parked, not blocking: another session is answered at once
meanwhile, and the parked one gets its verdict when the probe ends; a MX
slower than verify_budget gets the budget's tempfail at about the budget;
a session that hangs up while parked does no harm; QUIT_NC starts a new
session on the same connection; SIGTERM stops with exit status 0.
Packets longer than the connection's inline input buffer, whole or cut
in pieces, are read whole and answered. Refusals on one connection each
carry their reply text; sessions one after another (descriptor numbers
reused at once) are all answered.

TAP on stdout; loopback only; every wait bounded.
"""
import os
import struct
import sys
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

ZONE = {
    "slow.test": {"MX": [[10, "mx.slow.test"]]}, "mx.slow.test": {"A": ["127.0.0.71"]},
    "stuck.test": {"MX": [[10, "mx.stuck.test"]]}, "mx.stuck.test": {"A": ["127.0.0.72"]},
}


class G:
    tmp = dns = farm = d = None


def null_sender_ok(tap, name):
    """A message from <> over a fresh connection is accepted at MAIL."""
    c = MilterClient(G.d.socket, timeout=5)
    try:
        c.session(client_addr="198.51.100.9")
        t0 = time.monotonic()
        m = c.mail("<>", macros={"i": "OK1"})
        took = time.monotonic() - t0
        c.quit()
        tap.check(name, m.code == "a", "%r\n%s" % (m, c.transcript_text()))
        return took
    finally:
        c.close()


def hostile(tap, name, raw, log_re, negotiate=True):
    """Send raw bytes after OPTNEG: the milter must close, and log log_re."""
    start = len(G.d.log_lines())
    c = MilterClient(G.d.socket, timeout=5)
    try:
        if negotiate:
            c.optneg()
        c.sock.sendall(raw) if c.sock is not None else c.open().sock.sendall(raw)
        closed = c.expect_closed(timeout=5)
    finally:
        c.close()
    tap.check(name + ": connection closed", closed, c.transcript_text())
    m = G.d.wait_log(log_re, timeout=3, start=start)
    tap.check(name + ": logged", m is not None, G.d.diag())
    tap.check(name + ": the daemon still serves", G.d.running() and null_sender_ok(tap, name + ": next session") is not None)


def pkt(cmd, data=b""):
    return struct.pack(">I", len(data) + 1) + cmd + data


def t_hostile(tap, cleanup):
    hostile(tap, "length 0", b"\0\0\0\0", r"packet length of 0 or over")
    hostile(tap, "length 2^32-1", b"\xff\xff\xff\xffM<a@b>", r"packet length of 0 or over")
    hostile(tap, "length 65536", struct.pack(">I", 65536) + b"M", r"packet length of 0 or over")
    hostile(tap, "unknown command", pkt(b"Z", b"junk"), r"unknown command \(command 0x5a\)")
    hostile(tap, "macros without NUL", pkt(b"D", b"Mi\0Q1"), r"malformed macro packet")
    hostile(tap, "macro name alone", pkt(b"D", b"Mi"), r"malformed macro packet")
    hostile(tap, "MAIL without NUL", pkt(b"M", b"<a@b.example>"), r"malformed MAIL packet")
    hostile(tap, "RCPT empty", pkt(b"R"), r"malformed RCPT packet")
    hostile(tap, "short OPTNEG", pkt(b"O", b"\0\0\0\6"), r"malformed option negotiation",
            negotiate=False)
    hostile(tap, "MAIL before OPTNEG", pkt(b"M", b"<a@b>\0"), r"before option negotiation",
            negotiate=False)
    # Cut short, then gone: nothing to log, nothing left behind.
    c = MilterClient(G.d.socket, timeout=5)
    c.optneg()
    c.sock.sendall(struct.pack(">I", 64) + b"M<a@b")
    c.close()
    tap.check("a packet cut short by a hang-up: the daemon still serves",
              null_sender_ok(tap, "after a cut packet") is not None)


def t_not_reading(tap, cleanup):
    """An MTA that sends 100,000 packets before reading a single answer:
    the answers that do not fit the socket are queued, reading stops while
    too many are (bounded memory), and every answer arrives, in order."""
    import threading
    c = MilterClient(G.d.socket, timeout=20)
    cleanup.add(c.close)
    c.optneg()
    n = 100000
    blob = pkt(b"H", b"client.example\0") * n
    err = []

    def sender():
        try:
            c.sock.sendall(blob)
        except OSError as e:
            err.append(e)
    th = threading.Thread(target=sender, daemon=True)
    th.start()
    time.sleep(1.0)  # let both socket buffers fill
    got = b""
    want = pkt(b"c") * n
    deadline = time.monotonic() + 30
    while len(got) < len(want) and time.monotonic() < deadline:
        chunk = c.sock.recv(65536)
        if not chunk:
            break
        got += chunk
    th.join(10)
    tap.check("an MTA not reading: all %d answers, in order" % n, got == want and not err,
              "got %d of %d octets, %r" % (len(got), len(want), err))
    c.quit()


def t_parked(tap, cleanup):
    """A RCPT waiting for a probe does not block the loop."""
    a = MilterClient(G.d.socket, timeout=15)
    cleanup.add(a.close)
    a.session(client_addr="198.51.100.20")
    m = a.mail("<alice@slow.test>", macros={"i": "PARK1"})
    tap.check("slow sender: MAIL continues", m.code == "c", a.transcript_text())
    t0 = time.monotonic()
    a.send_packet("R", b"<bob@local.test>\0")
    time.sleep(0.2)
    took = null_sender_ok(tap, "while a RCPT is parked: another session is answered")
    tap.check("... at once (%.3f s, the probe takes about 2 s)" % took, took < 0.5)
    r = a.read_reply()
    waited = time.monotonic() - t0
    tap.check("the parked RCPT gets the probe's verdict (valid: accept) after %.2f s" % waited,
              r.code == "a" and 0.8 < waited < 8, "%r\n%s\n%s" % (r, a.transcript_text(), G.d.diag()))
    a.quit()


def t_budget(tap, cleanup):
    """A MX slower than verify_budget: the budget's answer at the budget,
    though milter_timeout (2 s) is shorter: the MTA is silent while it
    waits for our answer, which is no reason to hang up on it (libmilter
    does not time a callback either)."""
    a = MilterClient(G.d.socket, timeout=15)
    cleanup.add(a.close)
    a.session(client_addr="198.51.100.21")
    a.mail("<carol@stuck.test>", macros={"i": "BUDGET1"})
    t0 = time.monotonic()
    r = a.rcpt("<bob@local.test>")
    waited = time.monotonic() - t0
    tap.check("past verify_budget (3 s), milter_timeout 2 s: tempfail after %.2f s" % waited,
              r.code == "y" and r.smtp_code.startswith("4") and 2.5 < waited < 6,
              "%r\n%s" % (r, a.transcript_text()))
    a.quit()


def t_gone_while_parked(tap, cleanup):
    a = MilterClient(G.d.socket, timeout=15)
    a.session(client_addr="198.51.100.22")
    a.mail("<dave@stuck.test>", macros={"i": "GONE1"})
    a.send_packet("R", b"<bob@local.test>\0")
    time.sleep(0.3)
    a.close()
    time.sleep(0.3)
    tap.check("a session gone while parked: the daemon still serves",
              null_sender_ok(tap, "after a parked session hung up") is not None)


def t_quit_nc(tap, cleanup):
    c = MilterClient(G.d.socket, timeout=5)
    cleanup.add(c.close)
    c.session(client_addr="198.51.100.23")
    m1 = c.mail("<>", macros={"i": "NC1"})
    c.quit_nc()
    c.connect("client.example", "4", 40001, "198.51.100.24",
              macros={"{client_addr}": "198.51.100.24"})
    m2 = c.mail("<bad..syntax@x.example>", macros={"i": "NC2"})
    r2 = c.rcpt("<bob@local.test>")
    tap.check("QUIT_NC: a new session on the same connection", m1.code == "a" and m2.code == "c" and
              r2.code == "y" and r2.smtp_code.startswith("5"), c.transcript_text())
    lines = G.d.log_lines(r"queue_id=NC2 ")
    tap.check("QUIT_NC: the new session's client is the new one",
              any("client=198.51.100.24" in l for l in lines), "\n".join(lines))
    c.quit()


def t_order(tap, cleanup):
    """An MTA that sends a command behind a parked RCPT (none should, but
    one may): its answer must not overtake the RCPT's, which comes first,
    when the probe ends, then the later command's."""
    a = MilterClient(G.d.socket, timeout=15)
    cleanup.add(a.close)
    a.session(client_addr="198.51.100.25")
    a.mail("<erin@slow.test>", macros={"i": "ORDER1"})  # not cached yet: probed
    t0 = time.monotonic()
    a.send_packet("R", b"<bob@local.test>\0")
    a.send_packet("U", b"NOOP\0")
    first = a.read_reply()
    waited = time.monotonic() - t0
    second = a.read_reply()
    tap.check("a command behind a parked RCPT: the RCPT's answer first (%r after %.2f s), then "
              "the command's (%r)" % (first, waited, second),
              first.code in ("a", "c", "y", "r", "t") and second.code == "c" and waited > 0.3,
              a.transcript_text())
    a.quit()


def t_long_packets(tap, cleanup):
    """Packets longer than a connection's inline input buffer (4 KiB): one
    of the largest size (65535 octets) with a MAIL right behind it in one
    write, and one of 20,000 octets cut in pieces (one cut inside its length
    prefix) sent apart: each is read whole (its queue id reaches the verdict
    line), the MAIL behind it is answered, and the small packets after them
    still are (the buffer goes back to the inline one)."""
    start = len(G.d.log())  # wait_log's start: a character offset
    start_line = len(G.d.log_lines())
    c = MilterClient(G.d.socket, timeout=10)
    cleanup.add(c.close)
    c.session(client_addr="198.51.100.26")

    def long_macros(qid, size):
        head = b"Mi\0" + qid + b"\0{x}\0"
        return pkt(b"D", head + b"v" * (size - 1 - len(head) - 1) + b"\0")
    big = long_macros(b"QLONG1", 65535)
    c.sock.sendall(big + pkt(b"M", b"<>\0"))
    r1 = c.read_reply()
    cut = long_macros(b"QLONG2", 20000)
    for piece in (cut[:2], cut[2:3000], cut[3000:12000], cut[12000:] + pkt(b"M", b"<>\0")):
        c.sock.sendall(piece)
        time.sleep(0.1)
    r2 = c.read_reply()
    r3 = c.mail("<>", macros={"i": "QSHORT3"})
    c.quit()
    ok = [G.d.wait_log(r"queue_id=%s " % q, timeout=3, start=start) is not None
          for q in ("QLONG1", "QLONG2", "QSHORT3")]
    tap.check("a 65535-octet packet and a MAIL behind it in one write: read whole, answered",
              len(big) == 65539 and r1.code == "a" and ok[0], "%r\n%s" % (r1, G.d.diag()))
    tap.check("a 20,000-octet packet in four pieces: read whole, answered", r2.code == "a" and ok[1],
              "%r\n%s" % (r2, G.d.diag()))
    tap.check("small packets after the long ones: answered", r3.code == "a" and ok[2],
              "%r\n%s" % (r3, G.d.diag()))
    tap.check("long packets: no connection closed",
              not any("closing it" in l for l in G.d.log_lines()[start_line:]), G.d.diag())


def t_refusals_and_reuse(tap, cleanup):
    """The refusal's reply packet is made for each refusal and let go once
    sent: on one connection a bad sender's recipients are refused with the
    reply text each time, a good sender in between accepted. Then sessions
    one after another, each ended by QUIT: the next accept reuses the
    descriptor number the last close freed (its read event was deleted
    after the close), and every one is answered."""
    c = MilterClient(G.d.socket, timeout=5)
    cleanup.add(c.close)
    c.session(client_addr="198.51.100.9")
    texts = []
    for sender in ("<bad@@x>", "<>", "<also bad@@x>"):
        m = c.mail(sender, macros={"i": "RF1"})
        if sender == "<>":
            tap.check("refusals: a good sender between them accepted", m.code == "a",
                      "%r\n%s" % (m, c.transcript_text()))
            continue
        for rcpt in ("<bob@local.test>", "<carol@local.test>"):
            r = c.rcpt(rcpt)
            texts.append((r.code, r.text if r.code == "y" else None))
        c.abort()
    c.quit()
    tap.check("refusals: each refused recipient gets the reply text",
              len(texts) == 4 and all(code == "y" and t and t.startswith("5") for code, t in texts),
              "%r\n%s" % (texts, c.transcript_text()))
    ok = 0
    for i in range(100):
        d = MilterClient(G.d.socket, timeout=5)
        try:
            d.session(client_addr="198.51.100.9")
            if d.mail("<>", macros={"i": "RU%d" % i}).code == "a":
                ok += 1
            d.quit()
        finally:
            d.close()
    tap.check("100 sessions one after another: all answered", ok == 100, "%d of 100\n%s" % (ok, G.d.diag()))


def t_stop(tap, cleanup):
    code = G.d.stop()
    tap.check("SIGTERM: exit status 0", code == 0, G.d.diag())


TESTS = [t_hostile, t_not_reading, t_long_packets, t_parked, t_budget, t_gone_while_parked, t_quit_nc, t_order,
         t_refusals_and_reuse, t_stop]


def setup(tap):
    G.tmp = TempDir()
    G.dns = FakeDNS(ZONE)
    dns_port = G.dns.start()
    G.farm = SmtpFarm()
    G.farm.add("127.0.0.71", "normal", users=["alice"], reply_delay=0.4)
    G.farm.add("127.0.0.72", "slow_banner", delay=20)
    farm_port = G.farm.start()
    conf = probe_conf(G.tmp, "native.sock", dns_port, farm_port, **{
        "milter_transport": "native", "connect_timeout": "2s",
        "banner_timeout": "10s", "command_timeout": "5s", "probe_timeout": "20s",
        "verify_budget": "3s", "cache": G.tmp.join("cache.lmdb"),
        "milter_timeout": "2s",  # shorter than verify_budget: t_budget
    })
    G.d = Daemon(G.tmp, conf, name="native", debug=True)
    G.d.start()
    return None


def teardown():
    if G.d is not None:
        G.d.kill()
    for x in (G.farm, G.dns):
        if x is not None:
            x.stop()
    if G.tmp is not None:
        G.tmp.remove()


if __name__ == "__main__":
    try:
        vmtest.run_tests(TESTS, per_test_timeout=40, total_timeout=170, setup=setup)
    finally:
        teardown()
