#!/usr/bin/python3
"""test_milter - vemilter's decisions over its real milter socket, spoken to
by tests/lib/milterclient.py the way Postfix speaks (protocol version 6).

Three daemons run side by side:
  main:   trusted_networks 192.0.2.0/24 and 2001:db8:1::/48 (loopback is
          NOT trusted, so test clients are checked), an allow-listed domain,
          allow-listed senders (one from a file:), default exemptions,
          replies and policy. Its DNS server is 127.0.0.1:1, where nothing
          listens: every probe ends in tempfail at once, which the default
          policy defers (451 at RCPT).
  custom: skip_authenticated = no, exempt_recipients = hostmaster, and a
          custom bad_syntax_reply.
  dry:    dry_run = yes, a blocklisted domain, and a fake DNS server: an
          unknown domain is NXDOMAIN (no_domain, a reject), servfail.test
          fails (tempfail), silent.test is never answered (verify_budget
          runs out). Every one of them, and bad syntax, is logged as what it
          would have been, and accepted.

TAP on stdout; exit 0 only if every case passed. Loopback only; every wait
is bounded.
"""

import itertools
import os
import re
import signal
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "fakes"))

import vmtest  # noqa: E402
from vmtest import Daemon, TempDir, base_conf  # noqa: E402
from milterclient import MilterClient, SMFIM_ENVFROM  # noqa: E402
from fakedns import FakeDNS  # noqa: E402

BIN = vmtest.vemilter_binary()
REPLY_PREFIX = "553 5.1.7 Sender address rejected: "
# tempfail_reply's default, for a sender whose probe failed for now
DEFER_PREFIX = "451 4.7.1 Sender address <%s> could not be verified ("

# Senders that do not parse (each for its own reason).
BAD_SENDERS = [
    "<a..b@example.com>",            # consecutive dots in the local part
    "<user@-bad.example>",           # domain label starts with a hyphen
    '<"unterminated@example.com>',   # unterminated quoted string
    "<.lead@example.com>",           # local part starts with a dot
    "<trail.@example.com>",          # local part ends with a dot
    "<user@exa..mple.com>",          # empty domain label
    "<user>",                        # no domain at all
]


class G:
    """Shared state: the daemons, the fake DNS server and the temp dir."""
    tmp = None
    main = None
    custom = None
    dry = None
    dns = None
    qids = itertools.count(1)


def qid():
    return "TQ%05d" % next(G.qids)


def session(daemon, client="127.0.0.1", helo="client.example", timeout=5):
    """optneg + CONNECT (+ HELO) from client; returns the MilterClient."""
    c = MilterClient(daemon.socket, timeout=timeout)
    c.optneg()
    fam = "6" if ":" in client else "4"
    r = c.connect("client.example", fam, 40000, client,
                  macros={"j": "mx.test.example", "{daemon_name}": "smtpd",
                          "_": "client.example [%s]" % client})
    if getattr(r, "code", None) not in ("c", "SKIPPED", "NOREPLY"):
        raise AssertionError("CONNECT answered %r" % (r,))
    c.helo(helo)
    return c


def verdicts(daemon, q, n, timeout=3.0):
    """The verdict lines with queue_id=q, after waiting (bounded) for n."""
    def get():
        return [v for v in vmtest.parse_verdicts(daemon.log()) if v.get("queue_id") == q]
    vmtest.wait_until(lambda: len(get()) >= n, timeout)
    return get()


def diag_for(daemon, c=None):
    def f():
        parts = []
        if c is not None:
            parts.append("milter transcript:\n" + c.transcript_text())
        parts.append(daemon.diag())
        return "\n".join(parts)
    return f


def check_accept_at_mail(tap, name, sender, reason, client="127.0.0.1", macros=None,
                         daemon=None, mail_args=None):
    """One message whose MAIL must be accepted with the given reason: MAIL
    gets accept, and one verdict line action=accept reason=REASON."""
    d = daemon or G.main
    q = qid()
    m = {"i": q}
    m.update(macros or {})
    c = session(d, client)
    try:
        r = c.mail(mail_args or [sender], macros=m)
        tap.check("%s: MAIL %s accepted ('a')" % (name, sender), r == "a",
                  lambda: "reply %r\n%s" % (r, diag_for(d, c)()))
        c.abort()
        c.quit()
    finally:
        c.close()
    v = verdicts(d, q, 1)
    ok = (len(v) == 1 and v[0].get("action") == "accept" and v[0].get("reason") == reason
          and v[0].get("sender") == sender and v[0].get("client") == client)
    tap.check("%s: one verdict line action=accept reason=%s client=%s" % (name, reason, client), ok,
              lambda: "verdicts for %s: %r\n%s" % (q, [x["_line"] for x in v], d.diag()))


def check_verified(tap, name, sender, client="127.0.0.1", daemon=None, mail_args=None,
                   rcpt="<user@test.example>"):
    """A sender no rule vouches for is verified. main's DNS server is dead, so
    the probe ends in tempfail at once, which the default policy defers: MAIL
    gets continue, RCPT the 451 tempfail_reply naming the sender, and one
    verdict line action=tempfail reason=tempfail rcpt=RCPT source=probed
    stage=dns deferred_for=0s (the first deferral; no cache here)."""
    d = daemon or G.main
    q = qid()
    c = session(d, client)
    bare = sender[1:-1] if sender.startswith("<") and sender.endswith(">") else sender
    try:
        r = c.mail(mail_args or [sender], macros={"i": q})
        rr = c.rcpt(rcpt) if r == "c" else None
        text = getattr(rr, "text", None) or ""
        tap.check("%s: MAIL %s continues to verification, RCPT deferred with 451 4.7.1" % (name, sender),
                  r == "c" and getattr(rr, "code", None) == "y" and text.startswith(DEFER_PREFIX % bare),
                  lambda: "reply %r/%r\n%s" % (r, rr, diag_for(d, c)()))
        c.abort()
        c.quit()
    finally:
        c.close()
    v = verdicts(d, q, 1)
    ok = (len(v) == 1 and v[0].get("action") == "tempfail" and v[0].get("reason") == "tempfail"
          and v[0].get("rcpt") == rcpt and v[0].get("sender") == sender and v[0].get("client") == client
          and v[0].get("source") == "probed" and v[0].get("stage") == "dns"
          and "dry_run" not in v[0] and "outcome" not in v[0])
    tap.check("%s: one verdict line action=tempfail reason=tempfail rcpt=%s source=probed stage=dns"
              % (name, rcpt), ok,
              lambda: "verdicts for %s: %r\n%s" % (q, [x["_line"] for x in v], d.diag()))


def check_bad_syntax(tap, name, sender, client="127.0.0.1", macros=None, daemon=None,
                     rejected=("<user@test.example>",), exempt=("<postmaster@test.example>",),
                     prefix=REPLY_PREFIX, reply_code="553"):
    """MAIL gets continue; each non-exempt RCPT a reply 'y' with prefix, each
    exempt RCPT continue; one verdict line per RCPT."""
    d = daemon or G.main
    q = qid()
    m = {"i": q}
    m.update(macros or {})
    c = session(d, client)
    replies = []
    try:
        r = c.mail(sender, macros=m)
        tap.check("%s: MAIL %s gets continue ('c')" % (name, sender), r == "c",
                  lambda: "reply %r\n%s" % (r, diag_for(d, c)()))
        if r != "c":
            c.abort()
            c.quit()
            return
        order = [(x, False) for x in rejected] + [(x, True) for x in exempt]
        # interleave: rejected, exempt, rejected again (state must hold)
        if rejected and exempt:
            order = [(rejected[0], False), (exempt[0], True)] + \
                    [(x, False) for x in rejected[1:]] + [(x, True) for x in exempt[1:]] + \
                    [(rejected[0], False)]
        for rcpt, is_exempt in order:
            rr = c.rcpt(rcpt, macros={"{rcpt_addr}": rcpt.strip("<>")})
            replies.append((rcpt, is_exempt, rr))
            if is_exempt:
                tap.check("%s: RCPT %s (exempt) gets continue" % (name, rcpt), rr == "c",
                          lambda rr=rr: "reply %r\n%s" % (rr, diag_for(d, c)()))
            else:
                text = rr.text if getattr(rr, "code", None) == "y" else None
                good = (text is not None and text.startswith(prefix)
                        and len(text) > len(prefix) and text[:3] == reply_code)
                tap.check("%s: RCPT %s gets '%s...<reason>'" % (name, rcpt, prefix.strip()), good,
                          lambda rr=rr: "reply %r\n%s" % (rr, diag_for(d, c)()))
                if getattr(rr, "code", None) == "y":
                    raw = rr.raw_text
                    tap.check("%s: reply text has no CR/LF/NUL" % name,
                              b"\r" not in raw and b"\n" not in raw and b"\0" not in raw,
                              "raw reply %r" % raw)
        c.abort()
        c.quit()
    finally:
        c.close()
    # A refusal is logged for the first refused recipient; the others that
    # got it are counted in one repeated_rcpts= line at the message's end.
    # Every exempt recipient gets its own line.
    refused = [r for r, e, _ in replies if not e]
    want = []
    for r, e, _ in replies:
        if e:
            want.append(("accept", "exempt_recipient", r))
        elif not any(w[0] == "reject" for w in want):
            want.append(("reject", "bad_syntax", r))
    if len(refused) > 1:
        want.append(("reject", "bad_syntax", "repeated_rcpts=%d" % (len(refused) - 1)))
    v = verdicts(d, q, len(want))
    got = [(x.get("action"), x.get("reason"),
            x.get("rcpt") or ("repeated_rcpts=" + x["repeated_rcpts"] if "repeated_rcpts" in x else None))
           for x in v]
    tap.check("%s: one verdict line per exempt RCPT, one for the refusal, one counting its repeats" % name,
              got == want and all(x.get("sender") == sender and x.get("client") == client
                                  for x in v),
              lambda: "want %r\ngot  %r\nlines:\n%s\n%s" % (
                  want, got, "\n".join(x["_line"] for x in v), d.diag()))


# ---------------------------------------------------------------- tests

def t_start(tap, cleanup):
    G.tmp = TempDir()
    senders = G.tmp.write("senders.txt", "# allowed senders, one a line\nboss@elsewhere.example\n")
    G.main = Daemon(G.tmp, base_conf(
        G.tmp, "main.sock",
        trusted_networks="192.0.2.0/24, 2001:db8:1::/48",
        allow_sender_domains="partner.example",
        allow_senders="file:%s, friend@other.example" % senders,
    ), name="main")
    G.custom = Daemon(G.tmp, base_conf(
        G.tmp, "custom.sock",
        skip_authenticated="no",
        exempt_recipients="hostmaster",
        bad_syntax_reply="550 5.7.1 Go away (%r)",
    ), name="custom")
    G.dns = FakeDNS({
        "servfail.test": {"rcode": "SERVFAIL"},
        "silent.test": {"timeout": True},
    })
    port = G.dns.start()
    G.dry = Daemon(G.tmp, base_conf(
        G.tmp, "dry.sock",
        dry_run="yes",
        sender_domain_blocklist="blocked.example",
        dns_servers="127.0.0.1:%d" % port,
        verify_budget="1s",
    ), name="dry")
    for d in (G.main, G.custom, G.dry):
        try:
            d.start()
            tap.check("%s daemon starts" % d.name, True)
        except vmtest.DaemonError as e:
            tap.check("%s daemon starts" % d.name, False, str(e))
            raise


def t_negotiation(tap, cleanup):
    c = MilterClient(G.main.socket, timeout=5)
    cleanup.add(c.close)
    version, actions, protocol = c.optneg()
    tap.equal("OPTNEG: milter speaks protocol version 6", version, 6)
    tap.check("OPTNEG: milter does not disable MAIL or RCPT",
              protocol & 0x4 == 0 and protocol & 0x8 == 0, "protocol %#x" % protocol)
    # The client address comes with CONNECT, or (an MTA that lets milters
    # choose macros) as {client_addr} with MAIL, the CONNECT step skipped:
    # one packet less per session.
    tap.check("OPTNEG: CONNECT skipped only for {client_addr} with MAIL",
              protocol & 0x1 != 0 and "{client_addr}" in c.symlists.get(SMFIM_ENVFROM, "").split(),
              "protocol %#x symlists %r" % (protocol, c.symlists))
    c.quit()
    # An MTA that does not offer SETSYMLIST: CONNECT is kept (no reply).
    c = MilterClient(G.main.socket, timeout=5)
    cleanup.add(c.close)
    version, actions, protocol = c.optneg(actions=0x1FF & ~0x100)
    tap.check("OPTNEG without SETSYMLIST: CONNECT kept, without a reply",
              protocol & 0x1 == 0 and protocol & 0x1000 != 0 and not c.symlists,
              "protocol %#x symlists %r" % (protocol, c.symlists))
    c.quit()


def t_null_sender(tap, cleanup):
    check_accept_at_mail(tap, "null sender", "<>", "null_sender")
    # null sender wins over trusted network (precedence)
    check_accept_at_mail(tap, "null sender from a trusted client", "<>", "null_sender",
                         client="192.0.2.10")


def t_trusted(tap, cleanup):
    check_accept_at_mail(tap, "trusted IPv4 client, bad sender", "<a..b@example.com>",
                         "trusted_network", client="192.0.2.10")
    check_accept_at_mail(tap, "trusted IPv6 client, bad sender", "<a..b@example.com>",
                         "trusted_network", client="2001:db8:1::25")
    # trusted wins over authenticated
    check_accept_at_mail(tap, "trusted and authenticated client", "<user@example.com>",
                         "trusted_network", client="192.0.2.11", macros={"{auth_authen}": "alice"})
    # {client_addr} with MAIL (CONNECT skipped), as Sendmail writes IPv6
    check_accept_at_mail(tap, "trusted IPv6 client as IPv6:ADDRESS", "<a..b@example.com>",
                         "trusted_network", client="2001:db8:1::25",
                         macros={"{client_addr}": "IPv6:2001:db8:1::25"})
    # a {client_addr} that is no address: the client is unknown, so not trusted
    c = session(G.main, "192.0.2.10")
    cleanup.add(c.close)
    q = qid()
    r = c.mail(["<a..b@example.com>"], macros={"i": q, "{client_addr}": "not-an-address"})
    rr = c.rcpt("<user@test.example>")
    v = verdicts(G.main, q, 1)
    tap.check("{client_addr} that does not parse: not trusted, checked, client=unknown",
              r == "c" and getattr(rr, "code", None) == "y" and len(v) == 1 and v[0].get("client") == "unknown",
              lambda: "MAIL %r RCPT %r verdicts %r\n%s" % (r, rr, v, c.transcript_text()))
    c.abort()
    c.quit()


def t_untrusted_checked(tap, cleanup):
    # Loopback is not in this daemon's trusted_networks: it is checked.
    check_bad_syntax(tap, "untrusted IPv4 loopback client", "<a..b@example.com>", client="127.0.0.1")
    check_bad_syntax(tap, "untrusted IPv6 client", "<a..b@example.com>", client="2001:db8:2::25")
    check_bad_syntax(tap, "untrusted ::1 client", "<a..b@example.com>", client="::1")
    check_bad_syntax(tap, "client just outside a trusted /24", "<a..b@example.com>",
                     client="192.0.3.1")


def t_authenticated(tap, cleanup):
    check_accept_at_mail(tap, "authenticated client, bad sender", "<a..b@example.com>",
                         "authenticated", macros={"{auth_authen}": "alice", "{auth_type}": "PLAIN"})
    check_bad_syntax(tap, "empty {auth_authen} is not authenticated", "<a..b@example.com>",
                     macros={"{auth_authen}": ""})
    check_bad_syntax(tap, "skip_authenticated = no checks authenticated clients",
                     "<a..b@example.com>", daemon=G.custom,
                     macros={"{auth_authen}": "alice"}, rejected=("<user@test.example>",),
                     exempt=("<hostmaster@test.example>",),
                     prefix="550 5.7.1 Go away (", reply_code="550")


def t_bad_syntax(tap, cleanup):
    for s in BAD_SENDERS:
        check_bad_syntax(tap, "bad syntax", s,
                         rejected=("<user@test.example>", "<other@elsewhere.example>"),
                         exempt=("<postmaster@test.example>", "<abuse@other.example>"))
    check_bad_syntax(tap, "postmaster is exempt whatever its case", "<a..b@example.com>",
                     exempt=("<POSTMASTER@test.example>", "<Abuse@Test.Example>"))
    # syntax is checked before the allow-lists
    check_bad_syntax(tap, "bad sender in an allow-listed domain", "<a..b@partner.example>")


def t_crlf_injection(tap, cleanup):
    """Attacker data in the sender never puts CR/LF into the SMTP reply."""
    for s in ("<a\r\n550 5.0.0 injected@example.com>", "<a..b\r\nX: y@example.com>",
              "<a..b@exa\nmple.com>"):
        c = session(G.main)
        try:
            r = c.mail(s, macros={"i": qid()})
            if r == "c":
                rr = c.rcpt("<user@test.example>")
                raw = rr.raw_text if getattr(rr, "code", None) == "y" else b""
                tap.check("sender %r: rejected at RCPT with a 553 5.1.7 reply" % s,
                          getattr(rr, "code", None) == "y" and raw.startswith(REPLY_PREFIX.encode()),
                          lambda: "reply %r\n%s" % (rr, c.transcript_text()))
                tap.check("sender %r: reply has no CR/LF" % s,
                          b"\r" not in raw and b"\n" not in raw, "raw %r" % raw)
            else:
                tap.check("sender %r: not accepted as a valid sender" % s, r != "a",
                          lambda: "reply %r\n%s" % (r, c.transcript_text()))
            c.abort()
            c.quit()
        finally:
            c.close()
    tap.check("daemon still running after hostile senders", G.main.running(), G.main.diag)


def t_allow_lists(tap, cleanup):
    check_accept_at_mail(tap, "allow-listed domain", "<someone@partner.example>", "allowlisted_domain")
    check_accept_at_mail(tap, "subdomain of an allow-listed domain", "<someone@mail.partner.example>",
                         "allowlisted_domain")
    check_accept_at_mail(tap, "allow-listed domain in upper case", "<Someone@PARTNER.Example>",
                         "allowlisted_domain")
    check_verified(tap, "domain merely ending in an allow-listed name", "<someone@notpartner.example>")
    check_accept_at_mail(tap, "allow-listed sender from a file: list", "<boss@elsewhere.example>",
                         "allowlisted_sender")
    check_accept_at_mail(tap, "allow-listed sender given inline", "<friend@other.example>",
                         "allowlisted_sender")
    check_verified(tap, "another sender at an allow-listed sender's domain", "<intern@elsewhere.example>")


def t_verified_sender(tap, cleanup):
    """Well-formed senders nobody vouches for are verified; with DNS down the
    answer is tempfail, deferred by default (tempfail_action = tempfail)."""
    check_verified(tap, "well-formed sender", "<user@example.com>")
    check_verified(tap, "well-formed sender with ESMTP args", "<user@example.com>",
                   mail_args=["<user@example.com>", "SIZE=1000", "BODY=8BITMIME"])
    check_verified(tap, "well-formed sender with a quoted local part", '<"john doe"@example.com>')
    check_verified(tap, "well-formed sender over IPv6", "<user@example.com>", client="2001:db8:2::25")


def t_custom_daemon(tap, cleanup):
    check_bad_syntax(tap, "custom reply and exemptions", "<a..b@example.com>", daemon=G.custom,
                     rejected=("<user@test.example>", "<postmaster@test.example>"),
                     exempt=("<hostmaster@test.example>",),
                     prefix="550 5.7.1 Go away (", reply_code="550")


def t_two_messages(tap, cleanup):
    """State never leaks between two messages on one connection."""
    d = G.main
    c = session(d)
    cleanup.add(c.close)
    q1, q2, q3, q4 = qid(), qid(), qid(), qid()
    r = c.mail("<a..b@example.com>", macros={"i": q1})
    tap.check("1st message: bad sender gets continue", r == "c", lambda: "%r\n%s" % (r, c.transcript_text()))
    r = c.rcpt("<user@test.example>")
    tap.check("1st message: RCPT rejected", getattr(r, "code", None) == "y",
              lambda: "%r\n%s" % (r, c.transcript_text()))
    c.abort()
    r = c.mail("<good@example.com>", macros={"i": q2})
    rr = c.rcpt("<user@test.example>") if r == "c" else None
    tap.check("2nd message (after ABORT): good sender verified, deferred (DNS down here)",
              r == "c" and getattr(rr, "smtp_code", None) == "451",
              lambda: "%r/%r\n%s" % (r, rr, c.transcript_text()))
    c.abort()
    r = c.mail("<c..d@example.com>", macros={"i": q3})
    tap.check("3rd message: bad sender after a good one gets continue", r == "c",
              lambda: "%r\n%s" % (r, c.transcript_text()))
    r = c.rcpt("<user@test.example>")
    tap.check("3rd message: RCPT rejected", getattr(r, "code", None) == "y",
              lambda: "%r\n%s" % (r, c.transcript_text()))
    c.abort()
    r = c.mail("<>", macros={"i": q4})
    tap.check("4th message: null sender accepted after a bad one", r == "a",
              lambda: "%r\n%s" % (r, c.transcript_text()))
    c.abort()
    c.quit()
    v1, v2, v3, v4 = (verdicts(d, q, 1) for q in (q1, q2, q3, q4))
    tap.check("verdicts name each message's own sender and queue id",
              [x.get("sender") for x in v1 + v2 + v3 + v4]
              == ["<a..b@example.com>", "<good@example.com>", "<c..d@example.com>", "<>"],
              lambda: "\n".join(x["_line"] for x in v1 + v2 + v3 + v4) + "\n" + d.diag())
    tap.check("verdicts per message: reject bad_syntax, tempfail tempfail (DNS down here), "
              "reject bad_syntax, accept null_sender",
              [(x.get("action"), x.get("reason")) for x in v1 + v2 + v3 + v4]
              == [("reject", "bad_syntax"), ("tempfail", "tempfail"), ("reject", "bad_syntax"),
                  ("accept", "null_sender")],
              lambda: "\n".join(x["_line"] for x in v1 + v2 + v3 + v4))


def t_two_connections(tap, cleanup):
    """Two sessions at once: a bad sender on one does not touch the other."""
    d = G.main
    a = session(d, client="127.0.0.1")
    cleanup.add(a.close)
    b = session(d, client="127.0.0.2")
    cleanup.add(b.close)
    ra = a.mail("<a..b@example.com>", macros={"i": qid()})
    rb = b.mail("<fine@example.com>", macros={"i": qid()})
    rbr = b.rcpt("<user@test.example>") if rb == "c" else None
    tap.check("concurrent sessions: bad sender continue, good sender verified and deferred",
              ra == "c" and rb == "c" and getattr(rbr, "smtp_code", None) == "451",
              "a %r, b %r/%r" % (ra, rb, rbr))
    rr = a.rcpt("<user@test.example>")
    tap.check("concurrent sessions: bad sender's RCPT rejected", getattr(rr, "code", None) == "y",
              lambda: a.transcript_text())
    a.abort()
    b.abort()
    a.quit()
    b.quit()


def t_full_message_exempt(tap, cleanup):
    """A bad sender writing to postmaster gets the whole message through."""
    d = G.main
    c = session(d)
    cleanup.add(c.close)
    q = qid()
    r = c.mail("<a..b@example.com>", macros={"i": q})
    r1 = c.rcpt("<postmaster@test.example>")
    r2 = c.data()
    c.header("Subject", " test")
    c.header("From", " <a..b@example.com>")
    c.eoh()
    c.body(b"hello\r\n")
    r3 = c.eom()
    ok = (r == "c" and r1 == "c" and getattr(r2, "code", r2) in ("c", "SKIPPED", "NOREPLY")
          and getattr(r3, "code", None) in ("c", "a"))
    tap.check("bad sender to postmaster: DATA through end of message not rejected", ok,
              lambda: "MAIL %r RCPT %r DATA %r EOM %r\n%s" % (r, r1, r2, r3, c.transcript_text()))
    c.quit()


def t_queue_id_unknown(tap, cleanup):
    d = G.main
    c = session(d, client="127.0.0.3")
    cleanup.add(c.close)
    sender = "<noqid-%d@example.com>" % os.getpid()
    r = c.mail(sender)  # no "i" macro, as Postfix before the queue file exists
    rr = c.rcpt("<user@test.example>") if r == "c" else None
    tap.check("MAIL without a queue id verified (deferred: DNS down here)",
              r == "c" and getattr(rr, "smtp_code", None) == "451", lambda: "%r/%r" % (r, rr))
    c.abort()
    c.quit()
    got = vmtest.wait_until(lambda: [v for v in vmtest.parse_verdicts(d.log())
                                     if v.get("sender") == sender], 3)
    tap.check("verdict without a queue id says queue_id=-",
              bool(got) and got[0].get("queue_id") == "-",
              lambda: "%r\n%s" % ([g["_line"] for g in got or []], d.diag()))


def dry_message(tap, name, sender, rcpts, data=False):
    """One message to the dry_run daemon: MAIL and every RCPT must get
    continue or accept, never a reply code; with data, the message is sent
    whole and must not be refused either. Returns the verdict lines."""
    d = G.dry
    q = qid()
    c = session(d)
    try:
        replies = [c.mail(sender, macros={"i": q})]
        for rcpt in rcpts:
            if replies[-1] == "a":
                break  # accepted for the whole message
            replies.append(c.rcpt(rcpt, macros={"{rcpt_addr}": rcpt.strip("<>")}))
        if data and replies[-1] != "a":
            c.data()
            c.header("Subject", " dry run")
            c.eoh()
            c.body(b"hello\r\n")
            replies.append(c.eom())
        tap.check("dry_run, %s: nothing refused (%d replies, all continue/accept)" % (name, len(replies)),
                  all(getattr(r, "code", r) in ("c", "a") for r in replies),
                  lambda: "replies %r\n%s" % (replies, diag_for(d, c)()))
        c.abort()
        c.quit()
    finally:
        c.close()
    return q


def t_dry_run(tap, cleanup):
    """dry_run = yes refuses nothing, bad syntax included, and logs what would
    have been done: action=accept dry_run=yes intended=reject|tempfail."""
    rcpts = ["<user@test.example>", "<postmaster@test.example>", "<other@test.example>"]
    q = dry_message(tap, "bad syntax", "<a..b@example.com>", rcpts, data=True)
    v = verdicts(G.dry, q, 3)
    got = [(x.get("action"), x.get("reason"), x.get("rcpt") or "repeated_rcpts=%s" % x.get("repeated_rcpts"),
            x.get("dry_run"), x.get("intended")) for x in v]
    # the third recipient repeats the first one's verdict: counted at the end
    want = [("accept", "bad_syntax", rcpts[0], "yes", "reject"),
            ("accept", "exempt_recipient", rcpts[1], None, None),
            ("accept", "bad_syntax", "repeated_rcpts=1", "yes", "reject")]
    tap.check("dry_run, bad syntax: action=accept reason=bad_syntax dry_run=yes intended=reject per "
              "recipient (postmaster: exempt_recipient)",
              got == want and v[0].get("detail") == "local part has consecutive dots",
              lambda: "want %r\ngot  %r\n%s" % (want, got, "\n".join(x["_line"] for x in v)))

    q = dry_message(tap, "blocklisted", "<x@mail.blocked.example>", rcpts[:1])
    v = verdicts(G.dry, q, 1)
    tap.check("dry_run, blocklisted: action=accept reason=blocklisted dry_run=yes intended=reject",
              len(v) == 1 and (v[0].get("action"), v[0].get("reason"), v[0].get("dry_run"),
                               v[0].get("intended"), v[0].get("detail"))
              == ("accept", "blocklisted", "yes", "reject", "blocked.example"),
              lambda: "\n".join(x["_line"] for x in v) + "\n" + G.dry.diag())

    for sender, reason, intended, what in (
            ("<x@nowhere.test>", "no_domain", "reject", "NXDOMAIN"),
            ("<x@servfail.test>", "tempfail", "tempfail", "SERVFAIL"),
            ("<x@silent.test>", "budget_exceeded", "tempfail", "DNS silent past verify_budget")):
        t0 = time.monotonic()
        q = dry_message(tap, "%s (%s)" % (reason, what), sender, rcpts[:1])
        took = time.monotonic() - t0
        v = verdicts(G.dry, q, 1)
        tap.check("dry_run, %s: action=accept reason=%s dry_run=yes intended=%s"
                  % (what, reason, intended),
                  len(v) == 1 and (v[0].get("action"), v[0].get("reason"), v[0].get("dry_run"),
                                   v[0].get("intended")) == ("accept", reason, "yes", intended),
                  lambda: "\n".join(x["_line"] for x in v) + "\n" + G.dry.diag())
        if reason == "budget_exceeded":
            tap.check("dry_run, budget: the verdict waited verify_budget (1 s), not the probe "
                      "(%.2f s)" % took, 0.9 <= took < 5, G.dry.diag)


def t_budget_defer_limit(tap, cleanup):
    """defer_limit applies to the budget's tempfail too: a sender whose probes
    always outlast verify_budget (here: DNS never answers) and who has been
    deferred for 3 hours (a stale temporary record seeded with vemilter-cache
    put --deferred-for 3h) is accepted at RCPT, logged reason=defer_limit
    outcome=budget_exceeded deferred_for=...; one never deferred gets the
    budget 4xx."""
    cache = G.tmp.join("slow-cache.lmdb")
    slow = Daemon(G.tmp, base_conf(G.tmp, "slow.sock", cache=cache, temporary_ttl="1s",
                                   dns_servers="127.0.0.1:%d" % G.dns.port, verify_budget="1s"),
                  name="slow")
    cleanup.add(slow.kill)
    tool_conf = G.tmp.write("slow-tool.conf", vmtest.format_conf({"cache": cache, "temporary_ttl": "1s"}))
    p = vmtest.run([os.path.join(vmtest.builddir(), "vemilter-cache"), "-c", tool_conf, "put",
                    "--deferred-for", "3h", "late@silent.test", "tempfail"], timeout=20)
    tap.check("seed a temporary record deferred 3h ago", p.returncode == 0, p.stdout + p.stderr)
    slow.start()
    time.sleep(1.2)  # the seeded record is stale now: withheld, the address probed
    for sender, want in (("<late@silent.test>", "accept"), ("<new@silent.test>", "tempfail")):
        q = qid()
        c = session(slow)
        try:
            t0 = time.monotonic()
            r = c.mail([sender], macros={"i": q})
            rr = c.rcpt("<user@test.example>") if r == "c" else None
            took = time.monotonic() - t0
            c.abort()
            c.quit()
        finally:
            c.close()
        v = verdicts(slow, q, 1)
        got = v[0] if len(v) == 1 else {}
        if want == "accept":
            deferred = int(got.get("deferred_for", "0s").rstrip("s") or 0)
            tap.check("deferred 3h, no answer within verify_budget: RCPT accepted, reason=defer_limit "
                      "outcome=budget_exceeded deferred_for=~10800s (%.2f s)" % took,
                      r == "c" and rr == "a" and got.get("action") == "accept"
                      and got.get("reason") == "defer_limit" and got.get("outcome") == "budget_exceeded"
                      and 10790 <= deferred <= 10830 and 0.9 <= took < 5,
                      lambda: "reply %r/%r\n%r\n%s" % (r, rr, got, slow.diag()))
        else:
            tap.check("never deferred, no answer within verify_budget: RCPT 4xx, reason=budget_exceeded",
                      r == "c" and getattr(rr, "code", None) == "y" and got.get("action") == "tempfail"
                      and got.get("reason") == "budget_exceeded" and "deferred_for" not in got,
                      lambda: "reply %r/%r\n%r\n%s" % (r, rr, got, slow.diag()))
    codes = vmtest.stop_all([(slow, signal.SIGTERM)])
    tap.check("slow daemon exits 0 on SIGTERM", codes[0] == 0, slow.diag)


def t_log_format(tap, cleanup):
    """Every verdict line has the fields in the documented form (main's and
    dry's: dry_run adds fields, never changes their order)."""
    lines = G.main.log_lines(r"verdict ") + G.dry.log_lines(r"verdict ")
    tap.check("verdict lines were logged", len(lines) > 10, G.main.diag)
    # The order is the documented one:
    # verdict queue_id=Q client=ADDR sender=<...> action=A reason=R [rcpt=<...>] [detail="..."]
    value = r'(?:"[^"\\]*(?:\\.[^"\\]*)*"|[^"\s]\S*)'
    pat = re.compile(
        r'^vemilter\[\d+\]: info: verdict queue_id=\S+ client=\S+ sender=' + value +
        r' action=(?:accept|reject|tempfail) reason=(?:null_sender|trusted_network|authenticated|'
        r'allowlisted_domain|allowlisted_sender|bad_syntax|exempt_recipient|domain_override|'
        r'blocklisted|budget_exceeded|defer_limit|valid|invalid|no_domain|catch_all|tempfail|blocked|'
        r'unverifiable)'
        r'(?: rcpt=' + value + r')?(?: \w+=' + value + r')*$')
    bad = [l for l in lines if not pat.match(l)]
    tap.check("verdict lines match 'verdict queue_id= client= sender= action= reason= [rcpt=] [detail=]'",
              not bad, lambda: "%d of %d lines do not match, e.g.:\n%s" % (
                  len(bad), len(lines), "\n".join(bad[:6])))
    other = [l for d in (G.main, G.dry) for l in d.log().splitlines()
             if not re.match(r"^vemilter\[\d+\]: (error|warning|notice|info|debug): \S", l)]
    tap.check("every log line is 'vemilter[PID]: LEVEL: message' (no line broken by sender data)",
              not other, "other lines:\n" + "\n".join(other))
    for d in (G.main, G.dry):
        tap.check("no error lines in %s's log" % d.name, not d.log_lines(r"^vemilter\[\d+\]: error: "),
                  d.diag)


def t_stop(tap, cleanup):
    codes = vmtest.stop_all([(G.main, signal.SIGTERM), (G.custom, signal.SIGTERM), (G.dry, signal.SIGTERM)])
    tap.check("main daemon exits 0 on SIGTERM", codes[0] == 0, G.main.diag)
    tap.check("custom daemon exits 0 on SIGTERM", codes[1] == 0, G.custom.diag)
    tap.check("dry_run daemon exits 0 on SIGTERM", codes[2] == 0, G.dry.diag)


TESTS = [t_start, t_negotiation, t_null_sender, t_trusted, t_untrusted_checked, t_authenticated,
         t_bad_syntax, t_crlf_injection, t_allow_lists, t_verified_sender, t_custom_daemon,
         t_two_messages, t_two_connections, t_full_message_exempt, t_queue_id_unknown,
         t_dry_run, t_budget_defer_limit, t_log_format, t_stop]


def setup(tap):
    if not os.access(BIN, os.X_OK):
        tap.check("vemilter binary exists at %s (set VEMILTER_BUILDDIR)" % BIN, False)
        tap.done()
        sys.exit(1)
    return None


def teardown():
    for d in (G.main, G.custom, G.dry):
        if d is not None:
            d.kill()
    if G.dns is not None:
        G.dns.stop()
    if G.tmp is not None:
        G.tmp.remove()


if __name__ == "__main__":
    try:
        vmtest.run_tests(TESTS, per_test_timeout=50, total_timeout=150, setup=setup)
    finally:
        teardown()
