#!/usr/bin/python3
"""test_postfix - vemilter behind a real Postfix (Debian's 3.7), end to end.

A throw-away Postfix instance (tests/lib/postfixinst.py) listens on
127.0.0.1:FREEPORT, relays test.example (any local part) to discard: and
uses vemilter as its only milter with milter_default_action = tempfail.

vemilter listens on a unix socket with socket_mode 0666 in a 0755 temp dir:
Postfix's smtpd runs as the postfix user (no chroot), so it must be able to
connect to the socket; a unix socket is what a real installation uses, and
it proves socket_mode reaches the MTA. (inet:PORT@127.0.0.1 would avoid the
permission question but test less.)

trusted_networks = 127.0.0.2/32: clients from 127.0.0.1 are checked, a
client bound to 127.0.0.2 is trusted.

Postfix rejects some malformed senders itself with "501 5.1.7 Bad sender
address syntax" before any milter sees them (seen with 3.7.11):
  <user@-bad.example>, <"unterminated@example.com>, <user@exa..mple.com>,
  <user@>, <a b@example.com>, <user@[300.1.1.1]>, <user@-example.com>,
  <user@example-.com>
These reach the milter and are rejected by vemilter at RCPT:
  <a..b@example.com>, <.lead@example.com>, <trail.@example.com>, <user>,
  <@example.com>, <user@exa_mple.com>
(Postfix logs such senders re-quoted, e.g. from=<"a..b"@example.com>, but
hands the milter the address as the client sent it.)

TAP on stdout; exit 0 only if every case passed. Loopback only; nothing is
ever delivered anywhere but discard:; every wait is bounded.
"""

import os
import re
import signal
import smtplib
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import vmtest  # noqa: E402
from vmtest import Daemon, TempDir, base_conf  # noqa: E402
import postfixinst  # noqa: E402

BIN = vmtest.vemilter_binary()
BAD_SENDERS_REACHING_MILTER = ["<a..b@example.com>", "<.lead@example.com>", "<trail.@example.com>",
                               "<user@exa_mple.com>"]
SMTP_TIMEOUT = 20  # > nothing here should take more than a second


class G:
    tmp = None
    milter = None
    postfix = None


def smtp(source="127.0.0.1"):
    return postfixinst.smtp_client(G.postfix.port, source, SMTP_TIMEOUT)


close = postfixinst.smtp_close


def cmd(s, line):
    code, msg = s.docmd(line)
    return code, msg.decode("utf-8", errors="replace")


def diag():
    return "%s\n%s" % (G.milter.diag(), G.postfix.diag())


def verdicts_for(sender, n=1, timeout=5.0):
    def get():
        return [v for v in vmtest.parse_verdicts(G.milter.log()) if v.get("sender") == sender]
    vmtest.wait_until(lambda: len(get()) >= n, timeout)
    return get()


# ---------------------------------------------------------------- tests

def t_start(tap, cleanup):
    G.tmp = TempDir()
    # No DNS here: a verified sender ends in tempfail, deferred by default;
    # the full message's sender is allow-listed so that it gets through.
    G.milter = Daemon(G.tmp, base_conf(G.tmp, "milter.sock", socket_mode="0666",
                                       trusted_networks="127.0.0.2/32",
                                       allow_senders="e2e@example.com"), name="vemilter")
    G.milter.start()
    tap.check("vemilter starts", G.milter.running(), G.milter.diag)
    G.postfix = postfixinst.PostfixInstance(G.tmp, milter=G.milter.socket)
    try:
        G.postfix.start()
        tap.check("Postfix instance starts on 127.0.0.1:%d" % G.postfix.port, True)
    except postfixinst.PostfixError as e:
        tap.check("Postfix instance starts", False, str(e))
        raise


def t_null_sender(tap, cleanup):
    s = smtp()
    cleanup.add(close, s)
    r1 = cmd(s, "MAIL FROM:<>")
    r2 = cmd(s, "RCPT TO:<user@test.example>")
    tap.check("null sender: MAIL 250 and RCPT 250", r1[0] == 250 and r2[0] == 250,
              lambda: "MAIL %r RCPT %r\n%s" % (r1, r2, diag()))
    v = verdicts_for("<>")
    tap.check("null sender: vemilter logged reason=null_sender",
              bool(v) and v[-1].get("reason") == "null_sender" and v[-1].get("action") == "accept",
              diag)


def t_valid_sender(tap, cleanup):
    s = smtp()
    cleanup.add(close, s)
    r1 = cmd(s, "MAIL FROM:<valid.sender@example.com>")
    r2 = cmd(s, "RCPT TO:<user@test.example>")
    r3 = cmd(s, "RCPT TO:<other@test.example>")
    tap.check("well-formed sender, no DNS here: MAIL 250, RCPT 451, RCPT 451 (tempfail is deferred)",
              (r1[0], r2[0], r3[0]) == (250, 451, 451),
              lambda: "MAIL %r RCPT %r RCPT %r\n%s" % (r1, r2, r3, diag()))
    # One line for the first RCPT; the second, with the same verdict, is
    # counted in a repeated_rcpts=1 line when the message ends (here: QUIT).
    cmd(s, "QUIT")
    v = verdicts_for("<valid.sender@example.com>", n=2)
    tap.check("well-formed sender: a verdict action=tempfail reason=tempfail for the first RCPT, "
              "then repeated_rcpts=1, client=127.0.0.1",
              len(v) == 2 and all(x.get("action") == "tempfail" and x.get("reason") == "tempfail"
                                  and x.get("client") == "127.0.0.1" for x in v)
              and v[0].get("rcpt") == "<user@test.example>" and v[1].get("repeated_rcpts") == "1",
              lambda: "%r\n%s" % ([x["_line"] for x in v], diag()))


def t_bad_sender(tap, cleanup):
    s = smtp()
    cleanup.add(close, s)
    for sender in BAD_SENDERS_REACHING_MILTER:
        r1 = cmd(s, "MAIL FROM:%s" % sender)
        r2 = cmd(s, "RCPT TO:<user@test.example>")
        r3 = cmd(s, "RCPT TO:<postmaster@test.example>")
        r4 = cmd(s, "RCPT TO:<abuse@test.example>")
        r5 = cmd(s, "RCPT TO:<another@test.example>")
        tap.check("bad sender %s: MAIL 250 (Postfix lets it through to the milter)" % sender,
                  r1[0] == 250, lambda: "MAIL %r\n%s" % (r1, diag()))
        for rcpt, r in (("user", r2), ("another", r5)):
            ok = r[0] == 553 and r[1].startswith("5.1.7 Sender address rejected: ") \
                and len(r[1]) > len("5.1.7 Sender address rejected: ")
            tap.check("bad sender %s: RCPT %s@test.example gets 553 5.1.7 with a reason" % (sender, rcpt),
                      ok, lambda r=r: "RCPT %r\n%s" % (r, diag()))
        tap.check("bad sender %s: RCPT postmaster@test.example gets 250" % sender, r3[0] == 250,
                  lambda: "RCPT %r\n%s" % (r3, diag()))
        tap.check("bad sender %s: RCPT abuse@test.example gets 250" % sender, r4[0] == 250,
                  lambda: "RCPT %r\n%s" % (r4, diag()))
        cmd(s, "RSET")
    m = G.postfix.wait_log(r"milter-reject: RCPT from \S+: 553 5\.1\.7 Sender address rejected: ")
    tap.check("Postfix logs the milter-reject with 553 5.1.7", bool(m), diag)


def t_trusted_client(tap, cleanup):
    s = smtp(source="127.0.0.2")
    cleanup.add(close, s)
    r1 = cmd(s, "MAIL FROM:<x..y@example.com>")
    r2 = cmd(s, "RCPT TO:<user@test.example>")
    tap.check("trusted client 127.0.0.2, bad sender: MAIL 250, RCPT 250",
              r1[0] == 250 and r2[0] == 250, lambda: "MAIL %r RCPT %r\n%s" % (r1, r2, diag()))
    v = verdicts_for("<x..y@example.com>")
    tap.check("trusted client: verdict reason=trusted_network client=127.0.0.2",
              len(v) == 1 and v[0].get("reason") == "trusted_network" and v[0].get("client") == "127.0.0.2",
              lambda: "%r\n%s" % ([x["_line"] for x in v], diag()))
    # the same sender from 127.0.0.1 is rejected (only 127.0.0.2/32 is trusted)
    s2 = smtp(source="127.0.0.1")
    cleanup.add(close, s2)
    cmd(s2, "MAIL FROM:<x..y@example.com>")
    r3 = cmd(s2, "RCPT TO:<user@test.example>")
    tap.check("same bad sender from untrusted 127.0.0.1: RCPT 553", r3[0] == 553,
              lambda: "RCPT %r\n%s" % (r3, diag()))


def t_two_transactions(tap, cleanup):
    s = smtp()
    cleanup.add(close, s)
    steps = [
        ("MAIL FROM:<p..q@example.com>", 250), ("RCPT TO:<user@test.example>", 553), ("RSET", 250),
        ("MAIL FROM:<good.one@example.com>", 250), ("RCPT TO:<user@test.example>", 451), ("RSET", 250),
        ("MAIL FROM:<r..s@example.com>", 250), ("RCPT TO:<user@test.example>", 553),
        ("RCPT TO:<postmaster@test.example>", 250), ("RSET", 250),
        ("MAIL FROM:<>", 250), ("RCPT TO:<user@test.example>", 250),
    ]
    got = [(line, cmd(s, line)) for line, _ in steps]
    bad = [(line, want, r) for (line, want), (_, r) in zip(steps, got) if r[0] != want]
    tap.check("one connection, four transactions with RSET: bad, deferred, bad, null",
              not bad, lambda: "unexpected replies: %r\n%s" % (bad, diag()))


def t_full_message(tap, cleanup):
    s = smtp()
    cleanup.add(close, s)
    msg = ("From: <e2e@example.com>\r\nTo: <user@test.example>\r\nSubject: vemilter e2e\r\n"
           "Message-ID: <e2e-%d@example.com>\r\n\r\nhello\r\n" % os.getpid())
    try:
        refused = s.sendmail("e2e@example.com", ["user@test.example"], msg)
        ok, detail = not refused, "refused %r" % (refused,)
    except smtplib.SMTPException as e:
        ok, detail = False, repr(e)
    tap.check("full message (MAIL, RCPT, DATA) accepted with 250", ok, lambda: detail + "\n" + diag())
    m = G.postfix.wait_log(r"postfix/qmgr\[\d+\]: ([0-9A-Za-z]+): from=<e2e@example\.com>", 10)
    qid = m.group(1) if m else None
    sent = G.postfix.wait_log(r"postfix/discard\[\d+\]: %s: to=<user@test\.example>.*status=sent"
                              % (qid or "NOQID"), 10) if qid else None
    tap.check("the message went through the queue to discard: (status=sent)", bool(sent),
              lambda: "queue id %r\n%s" % (qid, diag()))
    # a bad sender writing to postmaster gets a whole message through too
    try:
        refused = s.sendmail("m..n@example.com", ["postmaster@test.example"],
                             "Subject: to postmaster\r\n\r\nhi\r\n")
        ok, detail = not refused, "refused %r" % (refused,)
    except smtplib.SMTPException as e:
        ok, detail = False, repr(e)
    tap.check("bad sender to postmaster@test.example: full message accepted", ok,
              lambda: detail + "\n" + diag())


def t_milter_down(tap, cleanup):
    """vemilter stopped: Postfix must not take mail (milter_default_action =
    tempfail), so nothing is silently lost."""
    rc = G.milter.stop(signal.SIGTERM)
    tap.check("vemilter exits 0 on SIGTERM", rc == 0, G.milter.diag)
    tap.check("vemilter socket is gone", not os.path.exists(G.milter.socket.split(":", 1)[1]),
              G.milter.diag)
    before = G.postfix.log_size()
    replies = []
    s = None
    try:
        s = smtplib.SMTP(timeout=SMTP_TIMEOUT, source_address=("127.0.0.1", 0), local_hostname="client.example")
        replies.append(("CONNECT", s.connect("127.0.0.1", G.postfix.port)))
        replies.append(("EHLO", s.ehlo("client.example")))
        for line in ("MAIL FROM:<lost@example.com>", "RCPT TO:<user@test.example>", "DATA"):
            r = s.docmd(line)
            replies.append((line, r))
            if r[0] == 354:
                r = s.docmd("Subject: must not be lost\r\n\r\nbody\r\n.")
                replies.append(("end of DATA", r))
                break
    except smtplib.SMTPServerDisconnected as e:
        replies.append(("disconnect", repr(e)))
    finally:
        if s is not None:
            close(s)
    tap.diag("milter down, Postfix said: %s" % "; ".join(
        "%s -> %s" % (k, ("%d %s" % (v[0], v[1].decode(errors="replace").replace("\n", " "))
                          if isinstance(v, tuple) else v)) for k, v in replies))
    codes = [r[1][0] for r in replies if isinstance(r[1], tuple)]
    temp = [r for r in replies if isinstance(r[1], tuple) and 400 <= r[1][0] < 500]
    accepted = [r for r in replies if r[0] == "end of DATA" and r[1][0] == 250]
    tap.check("milter down: Postfix answers 4xx", bool(temp),
              lambda: "replies %r\n%s" % (replies, G.postfix.diag()))
    tap.check("milter down: no message accepted", not accepted and 354 not in codes,
              lambda: "replies %r\n%s" % (replies, G.postfix.diag()))
    m = G.postfix.wait_log(r"(?i)milter", 5, start=before)
    tap.check("milter down: Postfix logs the milter problem", bool(m), G.postfix.diag)


def t_stop(tap, cleanup):
    procs = G.postfix._postfix_processes()
    G.postfix.stop()
    left = [p for p in procs if vmtest.pid_alive(p)]
    tap.check("Postfix stopped (master and its children gone)", bool(procs) and not left,
              lambda: "processes before %r, left %r\n%s" % (procs, left, G.postfix.diag()))
    errors = G.milter.log_lines(r"^vemilter\[\d+\]: error: ")
    tap.check("no error lines in vemilter's log", not errors, G.milter.diag)


TESTS = [t_start, t_null_sender, t_valid_sender, t_bad_sender, t_trusted_client, t_two_transactions,
         t_full_message, t_milter_down, t_stop]


def setup(tap):
    if not os.access(BIN, os.X_OK):
        tap.check("vemilter binary exists at %s (set VEMILTER_BUILDDIR)" % BIN, False)
        tap.done()
        sys.exit(1)
    reason = postfixinst.available()
    return reason  # a reason skips the whole file (plan 1..0)


def teardown():
    if G.postfix is not None:
        try:
            G.postfix.stop()
        except Exception:
            pass
    if G.milter is not None:
        G.milter.kill()
    if G.tmp is not None:
        G.tmp.remove()


if __name__ == "__main__":
    try:
        vmtest.run_tests(TESTS, per_test_timeout=50, total_timeout=150, setup=setup)
    finally:
        teardown()
