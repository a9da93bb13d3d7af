#!/usr/bin/python3
"""test_postfix_verify - sender verification end to end: a real Postfix
(Debian's 3.7) with vemilter as its milter, vemilter probing the fake DNS
server and the farm of fake SMTP servers. Every verdict is asserted through
the SMTP reply Postfix gives a client on 127.0.0.1, plus vemilter's verdict
line and what the farm saw.

Set-up
  - One Postfix instance (tests/lib/postfixinst.py) for the whole file.
    smtpd_milters names the "main" vemilter; smtpd_milter_maps
    (texthash, keyed by client IP) sends clients bound to 127.0.0.3 to the
    "aux" vemilter and 127.0.0.4 to the "dry" one, so three configurations
    run side by side behind one Postfix and nothing needs a Postfix reload:
      main  (127.0.0.1)  verify_budget 5s, result header, per-domain skip,
                         domain blocklist; restarted for the cache tests
      aux   (127.0.0.3)  verify_budget 1s (budget test) and
                         positive_refresh 2s / positive_ttl 1h (refresh test)
      dry   (127.0.0.4)  dry_run = yes
    Each daemon has its own LMDB cache file. trusted_networks is
    192.0.2.0/24 only: loopback clients are checked.
  - Every scenario is its own sender domain whose MX is its own farm
    address (127.0.0.1x/2x), so farm counts belong to one scenario.
  - smtpd_client_connection_count_limit = 0 so the 50-session burst is not
    cut by anvil (its default limit is exactly 50).
  - The result header is checked on a message Postfix really delivered: a
    transport_maps entry sends deliver@test.example to a pipe(8) transport
    ("filedump", running as nobody) whose script writes the message to a
    file in the temp dir. This sees the header after Postfix's cleanup has
    applied the milter's edits, i.e. what a mailbox would get; checking
    SMFIR_ADDHEADER at the milter-protocol level would not prove that
    Postfix applied it, nor that the client's forged copy was removed.

TAP on stdout; exit 0 only if every case passed. Loopback only; every wait
is bounded; the whole file runs in well under a minute.
"""

import os
import re
import signal
import smtplib
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree clean
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "fakes"))

import vmtest  # noqa: E402
from vmtest import Daemon, TempDir, probe_conf  # noqa: E402
import postfixinst  # noqa: E402
from fakedns import FakeDNS  # noqa: E402
from smtpfarm import SmtpFarm  # noqa: E402

BIN = vmtest.vemilter_binary()
CACHETOOL = os.path.join(vmtest.builddir(), "vemilter-cache")
SMTP_TIMEOUT = 20
HEADER = "X-Sender-Verification"
AUX_SOURCE = "127.0.0.3"
DRY_SOURCE = "127.0.0.4"

# farm address -> (behaviour, options)
FARM = {
    "127.0.0.11": ("normal", {"users": ["alice"]}),             # valid.test
    "127.0.0.12": ("normal", {"users": ["alice"]}),             # invalid.test
    "127.0.0.13": ("catchall", {}),                             # catchall.test
    "127.0.0.14": ("greylist", {}),                             # grey.test
    "127.0.0.15": ("banner_554", {}),                           # b554.test
    "127.0.0.16": ("normal", {"users": ["alice"]}),             # utf8.test (no SMTPUTF8)
    "127.0.0.17": ("normal", {"users": ["alice"]}),             # skip.test
    "127.0.0.18": ("normal", {"users": ["alice"]}),             # blocked.test
    "127.0.0.19": ("normal", {"users": ["alice"]}),             # dry.test
    "127.0.0.20": ("slow_banner", {"delay": 1, "users": ["burst"]}),   # burst.test
    "127.0.0.21": ("normal", {"users": ["alice"]}),             # fresh.test
    "127.0.0.22": ("slow_banner", {"delay": 3, "users": ["slowpoke"]}),  # slow.test
    "127.0.0.23": ("normal", {"users": ["alice", "carol"]}),    # after.test
    "127.0.0.24": ("normal", {"users": ["alice"]}),             # header.test
}

DOMAINS = {
    "valid.test": "127.0.0.11", "invalid.test": "127.0.0.12", "catchall.test": "127.0.0.13",
    "grey.test": "127.0.0.14", "b554.test": "127.0.0.15", "utf8.test": "127.0.0.16",
    "skip.test": "127.0.0.17", "blocked.test": "127.0.0.18", "dry.test": "127.0.0.19",
    "burst.test": "127.0.0.20", "fresh.test": "127.0.0.21", "slow.test": "127.0.0.22",
    "after.test": "127.0.0.23", "header.test": "127.0.0.24",
}


def make_zone():
    return vmtest.mx_zone(DOMAINS)  # nxdomain.test is absent: NXDOMAIN


# Directive names of the policy part of vemilter.conf (src/conf.c).
D_OVERRIDES = "domain_overrides"
D_BLOCKLIST = "sender_domain_blocklist"
D_DRY_RUN = "dry_run"
D_RESULT_HEADER = "result_header"


class G:
    tmp = None
    dns = None
    farm = None
    farm_port = None
    main = None
    aux = None
    dry = None
    postfix = None
    outdir = None


class PostfixWithPipe(postfixinst.PostfixInstance):
    """The test instance plus one pipe(8) transport that writes each message
    it gets to OUTDIR/<queue id>.eml (run as nobody: pipe refuses root and
    the mail owner)."""

    def __init__(self, tmp, script, **kw):
        super().__init__(tmp, **kw)
        self.script = script

    def master_cf(self):
        return super().master_cf() + (
            "filedump  unix  -       n       n       -       -       pipe\n"
            "  flags=q user=nobody argv=%s ${queue_id}\n" % self.script)


# ---------------------------------------------------------------- helpers

def smtp(source="127.0.0.1"):
    return postfixinst.smtp_client(G.postfix.port, source, SMTP_TIMEOUT)


close = postfixinst.smtp_close


def cmd(s, line):
    """One command (str or raw bytes) -> (code, text, seconds taken)."""
    t0 = time.monotonic()
    if isinstance(line, bytes):
        s.send(line + b"\r\n")
        code, msg = s.getreply()
    else:
        code, msg = s.docmd(line)
    return code, msg.decode("utf-8", errors="replace"), time.monotonic() - t0


def transaction(sender, rcpts, source="127.0.0.1", mail_args=""):
    """One SMTP session: MAIL FROM:<sender> then each RCPT; returns
    (mail reply, [rcpt replies]). A non-ASCII sender is sent as UTF-8 bytes."""
    s = smtp(source)
    try:
        line = "MAIL FROM:<%s>%s" % (sender, (" " + mail_args) if mail_args else "")
        try:
            line.encode("ascii")
        except UnicodeEncodeError:
            line = line.encode("utf-8")
        m = cmd(s, line)
        rs = [cmd(s, "RCPT TO:<%s>" % r) for r in rcpts]
        return m, rs
    finally:
        close(s)


def farm_count(addr, prefix):
    return G.farm.count(addr, prefix)


def rcpt_count(sender):
    return farm_count(DOMAINS[sender.rsplit("@", 1)[1]], "RCPT TO:<%s>" % sender)


def verdicts(daemon, sender, n=1, timeout=5.0, start=0):
    """Verdict lines of daemon for sender (from log offset start), after
    waiting (bounded) until there are at least n."""
    want = "<%s>" % sender

    def get():
        return [v for v in vmtest.parse_verdicts(daemon.log()[start:]) if v.get("sender") == want]
    vmtest.wait_until(lambda: len(get()) >= n, timeout)
    return get()


def diag(daemon, sender=None, replies=None):
    def f():
        parts = []
        if replies is not None:
            parts.append("SMTP replies: %r" % (replies,))
        if sender is not None and "@" in sender:
            dom = sender.rsplit("@", 1)[1]
            addr = DOMAINS.get(dom)
            if addr:
                parts.append("farm %s (%s) sessions:" % (addr, FARM[addr][0]))
                for sess in G.farm.sessions(addr):
                    parts.append("  %r closed_by=%s" % (sess.commands, sess.closed_by))
        parts.append(daemon.diag())
        parts.append(G.postfix.diag())
        return "\n".join(parts)
    return f


def cachetool(daemon, *args, timeout=10):
    return vmtest.run([CACHETOOL, "-c", daemon.conf_path] + list(args), timeout=timeout)


def common_conf(name, **over):
    conf = probe_conf(G.tmp, name + ".sock", G.dns_port, G.farm_port, socket_mode="0666")
    conf.update({
        "dns_timeout": "500ms",
        "helo_name": "probe.test",
        "connect_timeout": "2s",
        "banner_timeout": "10s",
        "command_timeout": "5s",
        "probe_timeout": "20s",
        "cache": G.tmp.join(name + ".lmdb"),
    })
    conf.update(over)
    return conf


def is5xx(r):
    return 500 <= r[0] < 600


def is4xx(r):
    return 400 <= r[0] < 500


# ---------------------------------------------------------------- set-up

def t_start(tap, cleanup):
    G.tmp = TempDir()
    G.dns = FakeDNS(make_zone())
    G.dns_port = G.dns.start()
    G.farm = SmtpFarm(latency=0)
    for addr, (behaviour, opts) in FARM.items():
        G.farm.add(addr, behaviour, **opts)
    G.farm_port = G.farm.start()

    G.main = Daemon(G.tmp, common_conf("main", verify_budget="5s", **{
        D_RESULT_HEADER: HEADER,
        D_OVERRIDES: "skip.test skip",
        D_BLOCKLIST: "blocked.test",
    }), name="main")
    G.aux = Daemon(G.tmp, common_conf("aux", verify_budget="1s", positive_refresh="2s",
                                      positive_ttl="1h"), name="aux")
    G.dry = Daemon(G.tmp, common_conf("dry", **{D_DRY_RUN: "yes"}), name="dry")
    for d in (G.main, G.aux, G.dry):
        d.start()
        tap.check("vemilter %s starts" % d.name, d.running(), d.diag)

    # pipe transport for the result-header test
    G.outdir = G.tmp.join("delivered")
    os.makedirs(G.outdir)
    os.chmod(G.outdir, 0o777)
    script = G.tmp.write("filedump.sh", '#!/bin/sh\nexec cat > "%s/$1.eml"\n' % G.outdir, mode=0o755)
    milter_map = G.tmp.write("milter_map", "%s %s\n%s %s\n" % (AUX_SOURCE, G.aux.socket,
                                                               DRY_SOURCE, G.dry.socket))
    transports = G.tmp.write("transport", "deliver@test.example filedump:\n")
    G.postfix = PostfixWithPipe(G.tmp, script, milter=G.main.socket, extra_main={
        "smtpd_milter_maps": "texthash:" + milter_map,
        "transport_maps": "texthash:" + transports,
        "smtpd_client_connection_count_limit": "0",
        "smtputf8_enable": "yes",
        "filedump_destination_recipient_limit": "1",
    })
    try:
        G.postfix.start()
        tap.check("Postfix instance starts on 127.0.0.1:%d" % G.postfix.port, True)
    except postfixinst.PostfixError as e:
        tap.check("Postfix instance starts", False, str(e))
        raise


# ---------------------------------------------------------------- one outcome each

def outcome_case(tap, sender, want_code, outcome, action, source="127.0.0.1", daemon=None,
                 mail_args="", want_reply=None):
    """Send sender to user@test.example; check the RCPT class, the verdict line
    and that the farm was (or was not) asked."""
    daemon = daemon or G.main
    m, rs = transaction(sender, ["user@test.example"], source=source, mail_args=mail_args)
    r = rs[0]
    d = diag(daemon, sender, (m, rs))
    ok_mail = m[0] == 250
    if want_code == 2:
        ok = ok_mail and r[0] == 250
    else:
        ok = ok_mail and r[0] // 100 == want_code
    tap.check("%s (%s): MAIL 250, RCPT %dxx" % (sender, outcome, want_code), ok, d)
    if want_reply is not None:
        text = "%d %s" % (r[0], r[1])
        tap.check("%s: the default reply, %r" % (sender, want_reply),
                  re.match(want_reply, text) is not None, d)
    v = verdicts(daemon, sender)
    last = v[-1] if v else {}
    tap.check("%s: verdict action=%s reason=%s source=probed" % (sender, action, outcome),
              last.get("action") == action and last.get("reason") == outcome
              and last.get("source") == "probed" and "elapsed_ms" in last, d)
    return m, rs, v


def t_valid(tap, cleanup):
    _, _, v = outcome_case(tap, "alice@valid.test", 2, "valid", "accept")
    tap.check("valid: the farm was asked RCPT TO:<alice@valid.test> once",
              rcpt_count("alice@valid.test") == 1, diag(G.main, "alice@valid.test"))
    tap.check("valid: verdict names the MX and its reply",
              bool(v) and v[-1].get("mx") == "mx.valid.test" and v[-1].get("reply", "").startswith("250"),
              diag(G.main, "alice@valid.test"))


def t_invalid(tap, cleanup):
    outcome_case(tap, "bob@invalid.test", 5, "invalid", "reject",
                 want_reply=r"^550 5\.1\.0 Sender address <bob@invalid\.test> rejected: mailbox does not exist")
    m, rs = transaction("bob@invalid.test", ["user@test.example"])
    tap.check("invalid: a second try is refused from the cache without a probe",
              is5xx(rs[0]) and rcpt_count("bob@invalid.test") == 1,
              diag(G.main, "bob@invalid.test", (m, rs)))
    v = verdicts(G.main, "bob@invalid.test", 2)
    tap.check("invalid: second verdict source=cached", len(v) >= 2 and v[1].get("source") == "cached",
              diag(G.main, "bob@invalid.test"))
    # the reject reply comes from vemilter, through Postfix
    tap.check("invalid: Postfix logs milter-reject for the RCPT",
              bool(G.postfix.wait_log(r"milter-reject: RCPT from \S+: 5\d\d .*from=<bob@invalid\.test>")),
              G.postfix.diag)


def t_no_domain(tap, cleanup):
    outcome_case(tap, "x@nxdomain.test", 5, "no_domain", "reject",
                 want_reply=r"^550 5\.1\.8 Sender address <x@nxdomain\.test> rejected: ")


def t_catch_all(tap, cleanup):
    # catch_all_action = valid_action (accept): the verdict comes right after
    # the real RCPT; the random RCPT's 250 then makes the domain a catch-all
    # fact, which answers the domain's next sender without a probe.
    outcome_case(tap, "x@catchall.test", 2, "valid", "accept")
    G.farm.wait_idle("127.0.0.13", timeout=3)
    tap.check("catch-all: the random address was asked after the verdict",
              farm_count("127.0.0.13", "RCPT TO:") == 2, diag(G.main, "x@catchall.test"))
    m, rs = transaction("y@catchall.test", ["user@test.example"])
    v = verdicts(G.main, "y@catchall.test")
    d = diag(G.main, "y@catchall.test", (m, rs))
    tap.check("catch-all: the next sender is accepted as catch_all from the domain fact, unprobed",
              rs[0][0] == 250 and bool(v) and v[-1].get("reason") == "catch_all"
              and v[-1].get("source") == "domain" and farm_count("127.0.0.13", "RCPT TO:<y@") == 0, d)


def t_tempfail(tap, cleanup):
    # default policy (src/conftable.c): a greylisted probe (450 at RCPT) is
    # tempfail, deferred with tempfail_reply (tempfail_action = tempfail)
    outcome_case(tap, "x@grey.test", 4, "tempfail", "tempfail",
                 want_reply=r"^451 4\.7\.1 Sender address <x@grey\.test> could not be verified")


def t_blocked(tap, cleanup):
    outcome_case(tap, "x@b554.test", 2, "blocked", "accept")


def t_unverifiable(tap, cleanup):
    # A UTF-8 local part needs SMTPUTF8; the farm's server does not offer it.
    sender = "j\u00f6rg@utf8.test"
    m, rs = transaction(sender, ["user@test.example"], mail_args="SMTPUTF8")
    d = diag(G.main, sender, (m, rs))
    tap.check("unverifiable (UTF-8 local part, no SMTPUTF8 at the MX): MAIL 250, RCPT 250",
              m[0] == 250 and rs[0][0] == 250, d)
    def utf8_verdicts():
        return [x for x in vmtest.parse_verdicts(G.main.log()) if "utf8.test" in x.get("sender", "")]
    vmtest.wait_until(utf8_verdicts, 5)
    v = utf8_verdicts()
    tap.check("unverifiable: verdict action=accept reason=unverifiable",
              bool(v) and v[-1].get("action") == "accept" and v[-1].get("reason") == "unverifiable", d)
    tap.check("unverifiable: RCPT never sent to the MX",
              farm_count("127.0.0.16", "RCPT") == 0 and farm_count("127.0.0.16", "EHLO") >= 1, d)


# ---------------------------------------------------------------- exemptions, lists

def t_postmaster(tap, cleanup):
    sender = "bob@invalid.test"  # invalid, cached by t_invalid
    m, rs = transaction(sender, ["postmaster@test.example", "user@test.example",
                                 "postmaster@test.example", "abuse@test.example"])
    tap.check("invalid sender: RCPT postmaster 250, user 5xx, postmaster again 250, abuse 250",
              m[0] == 250 and rs[0][0] == 250 and is5xx(rs[1]) and rs[2][0] == 250 and rs[3][0] == 250,
              diag(G.main, sender, (m, rs)))
    v = [x for x in verdicts(G.main, sender, 4) if x.get("rcpt") == "<postmaster@test.example>"]
    tap.check("postmaster: verdict reason=exempt_recipient action=accept",
              bool(v) and v[0].get("reason") == "exempt_recipient" and v[0].get("action") == "accept",
              diag(G.main, sender))


def t_skip(tap, cleanup):
    sender = "anyone@skip.test"
    m, rs = transaction(sender, ["user@test.example"])
    d = diag(G.main, sender, (m, rs))
    tap.check("%s skip.test: MAIL 250, RCPT 250" % D_OVERRIDES, m[0] == 250 and rs[0][0] == 250, d)
    v = verdicts(G.main, sender)
    tap.check("skip: verdict action=accept reason=domain_override",
              bool(v) and v[-1].get("action") == "accept" and v[-1].get("reason") == "domain_override", d)
    G.farm.wait_idle(timeout=2)
    tap.equal("skip: no connection to the domain's MX", G.farm.connections("127.0.0.17"), 0, d)


def t_blocklist(tap, cleanup):
    sender = "alice@blocked.test"   # would be valid at its MX
    m, rs = transaction(sender, ["user@test.example", "postmaster@test.example"])
    d = diag(G.main, sender, (m, rs))
    tap.check("%s blocked.test: RCPT 550 5.7.1 ... not accepted here (postmaster still 250)" % D_BLOCKLIST,
              m[0] == 250 and rs[0][0] == 550 and rs[0][1].startswith("5.7.1 ")
              and "not accepted here" in rs[0][1] and rs[1][0] == 250, d)
    v = [x for x in verdicts(G.main, sender, 2) if x.get("rcpt") == "<user@test.example>"]
    tap.check("blocklist: verdict action=reject reason=blocklisted",
              bool(v) and v[0].get("action") == "reject" and v[0].get("reason") == "blocklisted", d)
    G.farm.wait_idle(timeout=2)
    tap.equal("blocklist: no connection to the domain's MX", G.farm.connections("127.0.0.18"), 0, d)


def t_dry_run(tap, cleanup):
    sender = "nobody@dry.test"      # invalid at its MX
    m, rs = transaction(sender, ["user@test.example"], source=DRY_SOURCE)
    d = diag(G.dry, sender, (m, rs))
    tap.check("dry_run: invalid sender gets RCPT 250", m[0] == 250 and rs[0][0] == 250, d)
    v = verdicts(G.dry, sender)
    last = v[-1] if v else {}
    tap.check("dry_run: verdict action=accept reason=invalid dry_run=yes intended=reject",
              last.get("action") == "accept" and last.get("reason") == "invalid"
              and last.get("dry_run") == "yes" and last.get("intended") == "reject", d)
    tap.check("dry_run: the probe really asked the MX", rcpt_count(sender) == 1, d)
    tap.check("dry_run: nothing in the main daemon's log for it",
              not verdicts(G.main, sender, timeout=0), d)


# ---------------------------------------------------------------- budget

def t_budget(tap, cleanup):
    sender = "slowpoke@slow.test"   # valid, but the MX greets after 3 s
    start = G.aux.log_size()
    m, rs = transaction(sender, ["user@test.example"], source=AUX_SOURCE)
    r = rs[0]
    d = diag(G.aux, sender, (m, rs))
    tap.check("budget 1s, banner after 3s: RCPT 451 4.7.1 verification in progress",
              m[0] == 250 and r[0] == 451 and r[1].startswith("4.7.1 Sender address verification in progress"), d)
    tap.check("budget: the 4xx came after about the budget (0.8 s to 2.5 s), not the probe's end",
              0.8 <= r[2] <= 2.5, d)
    v = verdicts(G.aux, sender, start=start)
    tap.check("budget: verdict action=tempfail reason=budget_exceeded",
              bool(v) and v[0].get("action") == "tempfail" and v[0].get("reason") == "budget_exceeded", d)

    def cached():
        p = cachetool(G.aux, "get", sender)
        return p if p.returncode == 0 and "valid" in p.stdout else None
    p = vmtest.wait_until(cached, 10, interval=0.2)
    tap.check("budget: the probe went on and filled the cache (vemilter-cache get shows valid)",
              bool(p), lambda: "%r\n%s" % (cachetool(G.aux, "get", sender), d()))
    start = G.aux.log_size()
    m, rs = transaction(sender, ["user@test.example"], source=AUX_SOURCE)
    r = rs[0]
    d = diag(G.aux, sender, (m, rs))
    tap.check("budget: the retry gets RCPT 250 at once (< 0.9 s, under the 1 s budget)", r[0] == 250 and r[2] < 0.9, d)
    v = verdicts(G.aux, sender, start=start)
    tap.check("budget: retry verdict reason=valid source=cached",
              bool(v) and v[-1].get("reason") == "valid" and v[-1].get("source") == "cached", d)
    tap.equal("budget: one connection to the slow MX in all", G.farm.connections("127.0.0.22"), 1, d)


# ---------------------------------------------------------------- result header

def deliver_with_forged_header(sender, tag):
    """Send a message carrying a forged result header to deliver@test.example;
    return (accepted?, detail, delivered text or None, queue id)."""
    s = smtp()
    try:
        msg = ("From: <%s>\r\nTo: <deliver@test.example>\r\nSubject: %s\r\n"
               "%s: valid (forged by the client)\r\n"
               "Message-ID: <%s-%d@test.example>\r\n\r\nhello\r\n" % (sender or "nobody@x.test", tag, HEADER,
                                                                        tag, os.getpid()))
        try:
            refused = s.sendmail(sender, ["deliver@test.example"], msg)
            ok, detail = not refused, "refused %r" % (refused,)
        except smtplib.SMTPException as e:
            ok, detail = False, repr(e)
    finally:
        close(s)
    m = G.postfix.wait_log(r"postfix/cleanup\[\d+\]: ([0-9A-Za-z]+): message-id=<%s-%d@test\.example>"
                           % (tag, os.getpid()), 10)
    qid = m.group(1) if m else None
    path = os.path.join(G.outdir, "%s.eml" % qid)
    got = vmtest.wait_until(lambda: qid and G.postfix.wait_log(
        r"%s: to=<deliver@test\.example>.*status=sent" % qid, 0) and vmtest.read_file(path), 15)
    return ok, detail, got or None, qid


def t_result_header(tap, cleanup):
    sender = "alice@header.test"   # valid at its MX, probed now
    ok, detail, text, qid = deliver_with_forged_header(sender, "verified")
    tap.check("result header: message from a valid sender accepted and delivered to the file transport",
              ok and text is not None,
              lambda: "%s queue id %r files %r\n%s" % (detail, qid, os.listdir(G.outdir),
                                                       diag(G.main, sender)()))
    head = (text or "").split("\n\n", 1)[0]
    values = re.findall(r"(?im)^%s:[ \t]*(.*)$" % re.escape(HEADER), head)
    tap.check("result header: exactly one %s header, naming the outcome valid" % HEADER,
              len(values) == 1 and values[0].startswith("valid"),
              lambda: "headers:\n%s" % head)
    tap.check("result header: the client's forged header was removed",
              text is not None and not any("forged" in v for v in values), lambda: "headers:\n%s" % head)


def t_forged_header_unverified(tap, cleanup):
    """A message accepted without verification (here the null sender) must not
    keep a client's forged result header either: vemilter removes the
    client's copies in on_eom whatever the state, which it can only do if it
    does not accept the whole message at MAIL FROM."""
    ok, detail, text, qid = deliver_with_forged_header("", "nullsender")
    tap.check("null sender with a forged %s: message delivered" % HEADER, ok and text is not None,
              lambda: "%s queue id %r\n%s" % (detail, qid, G.postfix.diag()))
    head = (text or "").split("\n\n", 1)[0]
    values = re.findall(r"(?im)^%s:[ \t]*(.*)$" % re.escape(HEADER), head)
    tap.check("null sender: the client's forged %s header was removed" % HEADER,
              text is not None and not any("forged" in v for v in values),
              lambda: "headers:\n%s\n%s" % (head, G.main.diag()))


# ---------------------------------------------------------------- burst

def t_burst(tap, cleanup):
    sender = "burst@burst.test"     # MX greets after 1 s: every session joins one probe
    n = 50
    barrier = threading.Barrier(n, timeout=30)
    results = [None] * n

    def one(i):
        s = None
        try:
            s = smtp()
            barrier.wait()
            m = cmd(s, "MAIL FROM:<%s>" % sender)
            r = cmd(s, "RCPT TO:<user@test.example>")
            results[i] = (m[0], r[0])
        except Exception as e:
            results[i] = ("error", repr(e))
            try:
                barrier.abort()
            except Exception:
                pass
        finally:
            if s is not None:
                close(s)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.1, 45 - (time.monotonic() - t0)))
    d = diag(G.main, sender, results)
    good = sum(1 for r in results if r == (250, 250))
    tap.equal("burst: 50 concurrent sessions, all MAIL 250 and RCPT 250", good, n, d)
    G.farm.wait_idle(timeout=5)
    tap.equal("burst: exactly one RCPT TO:<%s> at the farm" % sender, rcpt_count(sender), 1, d)
    tap.equal("burst: exactly one connection to the MX", G.farm.connections("127.0.0.20"), 1, d)
    v = verdicts(G.main, sender, n)
    tap.check("burst: 50 verdicts, all accept reason=valid",
              len(v) == n and all(x.get("action") == "accept" and x.get("reason") == "valid" for x in v), d)


# ---------------------------------------------------------------- refresh

def t_refresh(tap, cleanup):
    sender = "alice@fresh.test"     # aux: positive_refresh 2s, positive_ttl 1h
    m, rs = transaction(sender, ["user@test.example"], source=AUX_SOURCE)
    tap.check("refresh: first try RCPT 250 (probed)", rs[0][0] == 250 and rcpt_count(sender) == 1,
              diag(G.aux, sender, (m, rs)))
    time.sleep(2.5)
    start = G.aux.log_size()
    m, rs = transaction(sender, ["user@test.example"], source=AUX_SOURCE)
    d = diag(G.aux, sender, (m, rs))
    tap.check("refresh: after 2.5 s RCPT 250 at once (< 2 s; the log says source=stale)", rs[0][0] == 250 and rs[0][2] < 2.0, d)
    v = verdicts(G.aux, sender, start=start)
    tap.check("refresh: verdict reason=valid source=stale",
              bool(v) and v[-1].get("reason") == "valid" and v[-1].get("source") == "stale", d)
    again = vmtest.wait_until(lambda: rcpt_count(sender) >= 2, 5)
    tap.check("refresh: one background probe asked the MX again", bool(again), d)
    time.sleep(0.5)
    G.farm.wait_idle(timeout=3)
    tap.equal("refresh: exactly one more probe (2 RCPT TO in all)", rcpt_count(sender), 2, d)
    start = G.aux.log_size()
    m, rs = transaction(sender, ["user@test.example"], source=AUX_SOURCE)
    v = verdicts(G.aux, sender, start=start)
    tap.check("refresh: then served fresh: RCPT 250, source=cached, no further probe",
              rs[0][0] == 250 and bool(v) and v[-1].get("source") == "cached" and rcpt_count(sender) == 2,
              diag(G.aux, sender, (m, rs)))


# ---------------------------------------------------------------- restarts

def restart_main(tap, what, before=None):
    rc = G.main.stop(signal.SIGTERM, timeout=35)
    tap.check("%s: vemilter main stops with exit 0" % what, rc == 0, G.main.diag)
    if before is not None:
        before()
    start = G.main.log_size()
    G.main.start()
    tap.check("%s: vemilter main starts again" % what, G.main.running(), G.main.diag)
    return start


def t_restart(tap, cleanup):
    counts = {s: rcpt_count(s) for s in ("alice@valid.test", "bob@invalid.test")}
    start = restart_main(tap, "restart")
    m, rs = transaction("alice@valid.test", ["user@test.example"])
    m2, rs2 = transaction("bob@invalid.test", ["user@test.example"])
    d = diag(G.main, "alice@valid.test", (m, rs, m2, rs2))
    tap.check("after restart: valid sender RCPT 250, invalid sender RCPT 5xx",
              rs[0][0] == 250 and is5xx(rs2[0]), d)
    G.farm.wait_idle(timeout=2)
    new = {s: rcpt_count(s) - c for s, c in counts.items()}
    tap.equal("after restart: no new probe (the LMDB cache survived)", new,
              {"alice@valid.test": 0, "bob@invalid.test": 0}, d)
    v = verdicts(G.main, "alice@valid.test", start=start) + verdicts(G.main, "bob@invalid.test", start=start)
    tap.check("after restart: both verdicts source=cached",
              len(v) == 2 and all(x.get("source") == "cached" for x in v), d)


def t_corrupt_cache(tap, cleanup):
    path = G.main.conf["cache"]

    def corrupt():
        with open(path, "wb") as f:
            f.write(b"this is not an LMDB file\n" * 2000)
    counts = rcpt_count("alice@valid.test")
    start = restart_main(tap, "corrupt cache", before=corrupt)
    d = diag(G.main, "alice@valid.test")
    m = G.main.wait_log(r"cache %s is unusable \(.*\): moved aside to (\S+), starting a new one"
                        % re.escape(path), 5, start=start)
    tap.check("corrupt cache: the log says the file was moved aside and recreated", bool(m), d)
    tap.check("corrupt cache: the garbage is kept in the moved-aside file",
              bool(m) and vmtest.read_file(m.group(1)).startswith("this is not an LMDB file"), d)
    tap.check("corrupt cache: no 'verifying without a cache' fallback",
              not re.search(r"verifying without a cache", G.main.log()[start:]), d)
    m1, rs1 = transaction("alice@valid.test", ["user@test.example"])
    m2, rs2 = transaction("carol@after.test", ["user@test.example"])
    m3, rs3 = transaction("dave@after.test", ["user@test.example"])
    d = diag(G.main, "alice@valid.test", (rs1, rs2, rs3))
    tap.check("corrupt cache: mail still flows (250, 250, 5xx for an unknown user)",
              rs1[0][0] == 250 and rs2[0][0] == 250 and is5xx(rs3[0]), d)
    tap.equal("corrupt cache: alice@valid.test probed again (the old answers are gone)",
              rcpt_count("alice@valid.test") - counts, 1, d)
    p = cachetool(G.main, "get", "carol@after.test")
    tap.check("corrupt cache: the new cache file works (vemilter-cache get carol@after.test: valid)",
              p.returncode == 0 and "valid" in p.stdout, lambda: "%r\n%s" % (p, d()))


def t_stop(tap, cleanup):
    procs = G.postfix._postfix_processes()
    G.postfix.stop()
    left = [p for p in procs if vmtest.pid_alive(p)]
    tap.check("Postfix stopped", bool(procs) and not left, G.postfix.diag)
    codes = vmtest.stop_all([(G.main, signal.SIGTERM), (G.aux, signal.SIGTERM), (G.dry, signal.SIGTERM)])
    tap.equal("the three vemilters exit 0", codes, [0, 0, 0])
    for d in (G.main, G.aux, G.dry):
        errors = [l for l in d.log_lines(r"\berror: ")
                  if not re.search(r"(?i)cache.*(corrupt|recreat|moved aside|unreadable)", l)]
        tap.check("no unexpected error lines in vemilter %s's log" % d.name, not errors,
                  lambda errors=errors, d=d: "\n".join(errors) + "\n" + d.diag())


TESTS = [t_start, t_valid, t_invalid, t_no_domain, t_catch_all, t_tempfail, t_blocked, t_unverifiable,
         t_postmaster, t_skip, t_blocklist, t_dry_run, t_budget, t_result_header, t_forged_header_unverified, t_burst, t_refresh,
         t_restart, t_corrupt_cache, t_stop]


def setup(tap):
    for path in (BIN, CACHETOOL):
        if not os.access(path, os.X_OK):
            tap.check("%s exists (set VEMILTER_BUILDDIR)" % path, False)
            tap.done()
            sys.exit(1)
    return postfixinst.available()


def teardown():
    vmtest.tear_down(servers=(G.postfix,), daemons=(G.main, G.aux, G.dry,))
    vmtest.tear_down(servers=(G.farm, G.dns), tmp=G.tmp)


if __name__ == "__main__":
    try:
        vmtest.run_tests(TESTS, per_test_timeout=50, total_timeout=170, setup=setup)
    finally:
        teardown()
