#!/usr/bin/python3
"""test_smtp - the SMTP probe (src/smtp.c) against the fake SMTP farm.

Runs tests/tools/smtpprobe once per case against tests/fakes/smtpfarm.py
(one behaviour per 127.0.0.x address) and checks what the probe reported
(end, stage, codes, TLS) and what the fake server saw: DATA is never sent,
QUIT is sent whenever the connection was still open at the end (and never
after a 421 or a close), and the exact command sequence where it matters.
TAP output; standard library only; loopback only; every wait is bounded.
"""

import os
import re
import resource
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("VEMILTER_SRCDIR") or os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SRCDIR, "tests", "lib"))
sys.path.insert(0, os.path.join(SRCDIR, "tests", "fakes"))

import vmtest  # noqa: E402

BUILDDIR = os.environ.get("VEMILTER_BUILDDIR") or SRCDIR
SMTPPROBE = os.path.join(BUILDDIR, "tests", "tools", "smtpprobe")
HELO = "probe.example"
RANDOM = "rnd-7f3a9c@x.test"   # the catch-all test address
REFUSED = "127.0.0.250"        # never added: connections are refused
PROBE_TIMEOUT = 30             # seconds for one smtpprobe run

# address -> (behaviour, options)
SERVERS = {
    "127.0.0.2": ("normal", {}),
    "127.0.0.3": ("catchall", {}),
    "127.0.0.4": ("catchall_452", {}),
    "127.0.0.5": ("greylist", {}),
    "127.0.0.6": ("banner_421", {}),
    "127.0.0.7": ("banner_554", {}),
    "127.0.0.8": ("mail_refused", {}),
    "127.0.0.9": ("ehlo_refused", {}),
    "127.0.0.10": ("starttls", {}),
    "127.0.0.11": ("tls_broken", {}),
    "127.0.0.12": ("slow_banner", {"delay": 1.0}),
    "127.0.0.13": ("drop_after_mail", {}),
    "127.0.0.14": ("multiline", {}),
    "127.0.0.15": ("endless_line", {}),
    "127.0.0.16": ("garbage", {}),
    "127.0.0.17": ("silent_after_rcpt", {}),
    "127.0.0.18": ("normal", {"smtputf8": True}),
    "127.0.0.19": ("normal", {"replies": {"RCPT": "421 4.3.0 shutting down"}}),
    "127.0.0.20": ("normal", {"replies": {"MAIL": "250-2.1.0 ok\n251 2.1.0 code changed"}}),
    "127.0.0.21": ("normal", {"replies": {"RCPT": "550 5.1.1 bad\x1b[31m\xe9\x7f user"}}),
    "127.0.0.22": ("normal", {"replies": {"EHLO": "450 4.3.2 busy, later"}}),
    "127.0.0.23": ("catchall", {"replies": {"MAIL": "451 4.3.0 local problem"}}),
    "127.0.0.24": ("early_reply", {"users": ["alice"]}),                   # when="banner"
    "127.0.0.25": ("early_reply", {"when": "ehlo", "users": ["alice"]}),
    "127.0.0.26": ("early_reply", {"when": "mail", "users": ["alice"]}),
    "127.0.0.27": ("hang_quit", {"users": ["alice"]}),
    "127.0.0.28": ("hang_catchall", {"users": ["alice"]}),
    "127.0.0.29": ("null_sender_refused", {"users": ["alice"]}),
    "127.0.0.30": ("null_sender_refused", {"users": ["alice"],
                                           "replies": {"RSET": "502 5.5.2 no RSET here"}}),
    "127.0.0.31": ("multiline_mismatch", {}),
    "127.0.0.32": ("normal", {"hostname": HELO}),
    "127.0.0.33": ("normal", {"replies": {"EHLO": "250-PROBE.example. greets you\n250 8BITMIME"}}),
    "127.0.0.34": ("lagging_reply", {"users": ["alice"]}),
    "127.0.0.35": ("normal", {"users": ["alice"], "pipelining": False}),
    "127.0.0.36": ("normal", {"users": ["alice"], "stray_mail": True}),
    "127.0.0.37": ("normal", {"users": ["alice"], "drop_after": 0}),
    "127.0.0.38": ("null_sender_refused_at_rcpt", {"users": ["alice"]}),
}
PIPE = ["--pipelining"]
FALLBACK = "probe@vemilter.test"

farm = None


def normal_commands(rcpt, catchall=None, helo=HELO, mail="MAIL FROM:<>"):
    cmds = ["EHLO " + helo, mail, "RCPT TO:<%s>" % rcpt]
    if catchall:
        cmds.append("RCPT TO:<%s>" % catchall)
    return cmds + ["QUIT"]


# name, address, smtpprobe options, rcpt, expected result fields,
# quit (True: QUIT was the last command; False: never sent; None: not checked),
# commands (the exact lines the server got, or None)
CASES = [
    ("normal, known user", "127.0.0.2", [], "alice@x.test",
     {"end": "done", "stage": "rcpt", "code": "250", "ecode": "2.1.5", "tls": "0", "sync": "proved"},
     True, normal_commands("alice@x.test")),
    ("normal, unknown user", "127.0.0.2", [], "nobody@x.test",
     {"end": "done", "stage": "rcpt", "code": "550", "ecode": "5.1.1", "catchall_code": "0", "sync": "proved"},
     True, normal_commands("nobody@x.test")),
    # one reply behind: nothing waits when a command goes out, so the result
    # is MAIL's 250; the QUIT reply (RCPT's 550) shows it after the result
    ("lagging_reply: the QUIT reply proves the session out of step", "127.0.0.34", [], "nobody@x.test",
     {"end": "done", "stage": "rcpt", "code": "250", "ecode": "2.1.0", "sync": "broken",
      "sync_why": "reply before command (found after the verdict: QUIT got 550)"},
     True, normal_commands("nobody@x.test")),
    ("lagging_reply, known user: data after the 2xx QUIT reply", "127.0.0.34", [], "alice@x.test",
     {"end": "done", "stage": "rcpt", "code": "250", "sync": "broken",
      "sync_why": "reply before command (found after the verdict: data after the QUIT reply)"},
     True, normal_commands("alice@x.test")),
    ("lagging_reply, catch-all: the catch-all reply is RCPT's", "127.0.0.34", ["--catchall", RANDOM],
     "alice@x.test",
     {"end": "done", "stage": "catchall", "code": "250", "catchall_code": "250", "sync": "broken",
      "sync_why": "reply before command (found after the verdict: QUIT got 550)"},
     True, normal_commands("alice@x.test", RANDOM)),
    ("normal, catch-all check", "127.0.0.2", ["--catchall", RANDOM], "alice@x.test",
     {"end": "done", "stage": "catchall", "code": "250", "catchall_code": "550"},
     True, normal_commands("alice@x.test", RANDOM)),
    # after a 5xx the random address cannot change the verdict: reported at
    # once, its answer comes late (a fact about the domain)
    ("normal, 5xx reported before the catch-all answer", "127.0.0.2", ["--catchall", RANDOM], "nobody@x.test",
     {"end": "done", "stage": "rcpt", "code": "550", "catchall_code": "0", "pending": "1", "late": "550"},
     True, normal_commands("nobody@x.test", RANDOM)),
    ("normal, --early: 250 reported before the catch-all answer", "127.0.0.2",
     ["--catchall", RANDOM, "--early"], "alice@x.test",
     {"end": "done", "stage": "rcpt", "code": "250", "pending": "1", "late": "550"},
     True, normal_commands("alice@x.test", RANDOM)),
    ("catchall, --early: the late answer is the 250", "127.0.0.3", ["--catchall", RANDOM, "--early"],
     "whoever@x.test",
     {"end": "done", "stage": "rcpt", "code": "250", "pending": "1", "late": "250"},
     True, normal_commands("whoever@x.test", RANDOM)),
    ("normal, sender given", "127.0.0.2", ["--from", "probe@vemilter.test"], "bob@x.test",
     {"end": "done", "stage": "rcpt", "code": "250"},
     True, normal_commands("bob@x.test", mail="MAIL FROM:<probe@vemilter.test>")),
    ("catchall", "127.0.0.3", ["--catchall", RANDOM], "whoever@x.test",
     {"end": "done", "stage": "catchall", "code": "250", "catchall_code": "250"},
     True, normal_commands("whoever@x.test", RANDOM)),
    # --pipelining (RFC 2920): the farm offers PIPELINING (not .35) and
    # answers a group in one write; RCPT, the random RCPT and QUIT go out
    # as one group, their replies fill the slots in order
    ("pipelining, unknown user: one group, the 5xx reported before the catch-all slot", "127.0.0.2",
     PIPE + ["--catchall", RANDOM], "nobody@x.test",
     {"end": "done", "stage": "rcpt", "code": "550", "pending": "1", "late": "550", "sync": "proved"},
     True, normal_commands("nobody@x.test", RANDOM)),
    ("pipelining, known user: the catch-all answer from its slot", "127.0.0.2",
     PIPE + ["--catchall", RANDOM], "alice@x.test",
     {"end": "done", "stage": "catchall", "code": "250", "catchall_code": "550", "pending": "0",
      "sync": "proved"},
     True, normal_commands("alice@x.test", RANDOM)),
    ("pipelining, no random address: RCPT and QUIT", "127.0.0.2", PIPE, "nobody@x.test",
     {"end": "done", "stage": "rcpt", "code": "550", "pending": "0", "sync": "proved"},
     True, normal_commands("nobody@x.test")),
    ("pipelining not offered: one command at a time", "127.0.0.35", PIPE + ["--catchall", RANDOM],
     "nobody@x.test",
     {"end": "done", "stage": "rcpt", "code": "550", "pending": "1", "late": "550", "sync": "proved"},
     True, normal_commands("nobody@x.test", RANDOM)),
    # MAIL answered twice, the second held back until the group came: every
    # reply one slot late, so the QUIT slot holds the random RCPT's 550
    ("pipelining, a stray MAIL reply: the QUIT slot shows it, no answer", "127.0.0.36",
     PIPE + ["--catchall", RANDOM], "nobody@x.test",
     {"end": "protocol", "stage": "quit", "code": "0", "sync": "broken",
      "sync_why": "reply before command (found in the group's replies: QUIT got 550)"},
     True, normal_commands("nobody@x.test", RANDOM)),
    ("pipelining, a stray MAIL reply, no random address: QUIT slot has RCPT's 550", "127.0.0.36", PIPE,
     "nobody@x.test",
     {"end": "protocol", "stage": "quit", "code": "0", "sync": "broken",
      "sync_why": "reply before command (found in the group's replies: QUIT got 550)"},
     True, normal_commands("nobody@x.test")),
    ("pipelining, the server closes on the group: no answer", "127.0.0.37", PIPE + ["--catchall", RANDOM],
     "nobody@x.test",
     {"end": "closed", "stage": "rcpt", "code": "0", "sync": "unknown"},
     None, ["EHLO " + HELO, "MAIL FROM:<>", "RCPT TO:<nobody@x.test>"]),
    ("pipelining, 421 at RCPT: the slots after it are not read", "127.0.0.19", PIPE + ["--catchall", RANDOM],
     "alice@x.test",
     {"end": "reply", "stage": "rcpt", "code": "421", "sync": "unknown"},
     None, None),
    # blocked at RCPT: the random address cannot change it; its slot is read only for its place
    ("pipelining, blocked at RCPT: the random RCPT's slot read for its place only", "127.0.0.38",
     PIPE + ["--catchall", RANDOM], "alice@x.test",
     {"end": "done", "stage": "rcpt", "code": "554", "catchall_code": "0", "pending": "0", "late": "-",
      "sync": "proved"},
     True, normal_commands("alice@x.test", RANDOM)),
    ("pipelining after STARTTLS", "127.0.0.10", PIPE + ["--tls", "--catchall", RANDOM], "bob@x.test",
     {"end": "done", "stage": "catchall", "code": "250", "catchall_code": "550", "tls": "1", "sync": "proved"},
     None, None),
    ("catchall_452", "127.0.0.4", ["--catchall", RANDOM], "alice@x.test",
     {"end": "done", "stage": "catchall", "code": "250", "catchall_code": "452"},
     True, normal_commands("alice@x.test", RANDOM)),
    ("greylist", "127.0.0.5", ["--catchall", RANDOM], "alice@x.test",
     {"end": "done", "stage": "rcpt", "code": "450", "ecode": "4.7.1", "catchall_code": "0"},
     True, normal_commands("alice@x.test")),
    ("banner_421", "127.0.0.6", [], "alice@x.test",
     {"end": "reply", "stage": "banner", "code": "421", "ecode": "4.3.2"},
     False, []),
    ("banner_554", "127.0.0.7", [], "alice@x.test",
     {"end": "reply", "stage": "banner", "code": "554", "ecode": "5.7.1"},
     True, ["QUIT"]),
    ("mail_refused", "127.0.0.8", [], "alice@x.test",
     {"end": "reply", "stage": "mail", "code": "550", "ecode": "5.7.1"},
     True, ["EHLO " + HELO, "MAIL FROM:<>", "QUIT"]),
    ("ehlo_refused falls back to HELO", "127.0.0.9", [], "alice@x.test",
     {"end": "done", "stage": "rcpt", "code": "250"},
     True, ["EHLO " + HELO, "HELO " + HELO, "MAIL FROM:<>", "RCPT TO:<alice@x.test>", "QUIT"]),
    ("starttls", "127.0.0.10", ["--tls", "--server", "mx.test"], "alice@x.test",
     {"end": "done", "stage": "rcpt", "code": "250", "tls": "1"},
     True, ["EHLO " + HELO, "STARTTLS"] + normal_commands("alice@x.test")),
    ("starttls offered, not asked for", "127.0.0.10", [], "alice@x.test",
     {"end": "done", "stage": "rcpt", "code": "250", "tls": "0"},
     True, normal_commands("alice@x.test")),
    ("tls_broken", "127.0.0.11", ["--tls"], "alice@x.test",
     {"end": "tls_failed", "stage": "tls", "code": "0", "tls": "0"},
     False, ["EHLO " + HELO, "STARTTLS"]),
    ("tls_broken, plain retry", "127.0.0.11", [], "alice@x.test",
     {"end": "done", "stage": "rcpt", "code": "250", "tls": "0"},
     True, normal_commands("alice@x.test")),
    # our QUIT races the fake's late banner, so it may or may not be recorded
    ("slow_banner, banner timeout", "127.0.0.12", ["--banner-ms", "300"], "alice@x.test",
     {"end": "timeout", "stage": "banner", "code": "0"},
     None, None),
    ("slow_banner, patient", "127.0.0.12", ["--banner-ms", "5000"], "alice@x.test",
     {"end": "done", "stage": "rcpt", "code": "250"},
     True, normal_commands("alice@x.test")),
    ("drop_after_mail", "127.0.0.13", [], "alice@x.test",
     {"end": "closed", "stage": "rcpt", "code": "0"},
     False, ["EHLO " + HELO, "MAIL FROM:<>", "RCPT TO:<alice@x.test>"]),
    ("multiline, unknown user", "127.0.0.14", [], "nobody@x.test",
     {"end": "done", "stage": "rcpt", "code": "550", "ecode": "5.1.1",
      "text": "<nobody@x.test>: no such user here check the address user unknown"},
     True, normal_commands("nobody@x.test")),
    ("multiline, catch-all check", "127.0.0.14", ["--catchall", RANDOM], "alice@x.test",
     {"end": "done", "stage": "catchall", "code": "250", "ecode": "2.1.5", "catchall_code": "550"},
     True, normal_commands("alice@x.test", RANDOM)),
    # the fake stops reading while it streams the line, so QUIT is not recorded
    ("endless_line", "127.0.0.15", ["--command-ms", "5000"], "alice@x.test",
     {"end": "protocol", "stage": "ehlo", "code": "0", "error": "line too long"},
     None, None),
    ("garbage", "127.0.0.16", [], "alice@x.test",
     {"end": "protocol", "stage": "banner", "code": "0"},
     True, ["QUIT"]),
    ("silent_after_rcpt", "127.0.0.17", ["--command-ms", "500"], "alice@x.test",
     {"end": "timeout", "stage": "rcpt", "code": "0"},
     True, normal_commands("alice@x.test")),
    ("connection refused", REFUSED, [], "alice@x.test",
     {"end": "connect_failed", "stage": "connect", "code": "0"},
     None, None),
    ("SMTPUTF8 needed, not offered", "127.0.0.2", ["--utf8"], "j\u00f6rg@x.test",
     {"end": "no_smtputf8", "stage": "ehlo", "code": "0"},
     True, ["EHLO " + HELO, "QUIT"]),
    ("SMTPUTF8 needed and offered", "127.0.0.18", ["--utf8"], "alice@x.test",
     {"end": "done", "stage": "rcpt", "code": "250"},
     True, normal_commands("alice@x.test", mail="MAIL FROM:<> SMTPUTF8")),
    ("421 at RCPT: no QUIT", "127.0.0.19", ["--catchall", RANDOM], "alice@x.test",
     {"end": "reply", "stage": "rcpt", "code": "421", "ecode": "4.3.0", "catchall_code": "0"},
     False, ["EHLO " + HELO, "MAIL FROM:<>", "RCPT TO:<alice@x.test>"]),
    ("reply code changes within a reply", "127.0.0.20", [], "alice@x.test",
     {"end": "protocol", "stage": "mail", "code": "0", "error": "changed from 250 to 251"},
     True, ["EHLO " + HELO, "MAIL FROM:<>", "QUIT"]),
    ("control characters and 8-bit in a reply", "127.0.0.21", [], "alice@x.test",
     {"end": "done", "stage": "rcpt", "code": "550", "ecode": "5.1.1", "text": "bad?[31m?? user"},
     True, normal_commands("alice@x.test")),
    ("4xx to EHLO", "127.0.0.22", [], "alice@x.test",
     {"end": "reply", "stage": "ehlo", "code": "450", "ecode": "4.3.2", "text": "busy, later"},
     True, ["EHLO " + HELO, "QUIT"]),
    ("4xx to MAIL", "127.0.0.23", ["--catchall", RANDOM], "alice@x.test",
     {"end": "reply", "stage": "mail", "code": "451"},
     True, ["EHLO " + HELO, "MAIL FROM:<>", "QUIT"]),
    # desync: a line waiting when a command is due is a protocol error, never
    # the next command's reply (an unknown user here would otherwise pass)
    ("early_reply after the banner", "127.0.0.24", [], "nobody@x.test",
     {"end": "protocol", "stage": "ehlo", "code": "0", "error": "reply before command (before EHLO)"},
     True, ["QUIT"]),
    ("early_reply after EHLO", "127.0.0.25", [], "nobody@x.test",
     {"end": "protocol", "stage": "mail", "code": "0", "error": "reply before command (before MAIL)"},
     True, ["EHLO " + HELO, "QUIT"]),
    ("early_reply after MAIL", "127.0.0.26", ["--catchall", RANDOM], "nobody@x.test",
     {"end": "protocol", "stage": "rcpt", "code": "0", "error": "reply before command (before RCPT)"},
     True, ["EHLO " + HELO, "MAIL FROM:<>", "QUIT"]),
    ("multi-line reply with two codes", "127.0.0.31", [], "alice@x.test",
     {"end": "protocol", "stage": "rcpt", "code": "0", "error": "changed from 250 to 550"},
     True, ["EHLO " + HELO, "MAIL FROM:<>", "RCPT TO:<alice@x.test>", "QUIT"]),
    # fallback sender
    ("null sender refused, fallback accepted: known user", "127.0.0.29", ["--fallback", FALLBACK],
     "alice@x.test",
     {"end": "done", "stage": "rcpt", "code": "250", "fallback": "1", "fallback_retry": "0"},
     True, ["EHLO " + HELO, "MAIL FROM:<>", "RSET", "MAIL FROM:<%s>" % FALLBACK,
            "RCPT TO:<alice@x.test>", "QUIT"]),
    ("null sender refused, fallback accepted: unknown user", "127.0.0.29", ["--fallback", FALLBACK],
     "nobody@x.test",
     {"end": "done", "stage": "rcpt", "code": "550", "ecode": "5.1.1", "fallback": "1"},
     True, ["EHLO " + HELO, "MAIL FROM:<>", "RSET", "MAIL FROM:<%s>" % FALLBACK,
            "RCPT TO:<nobody@x.test>", "QUIT"]),
    ("null sender refused, no fallback", "127.0.0.29", [], "alice@x.test",
     {"end": "reply", "stage": "mail", "code": "550", "ecode": "5.7.1", "fallback": "0"},
     True, ["EHLO " + HELO, "MAIL FROM:<>", "QUIT"]),
    ("null sender refused, RSET refused: a new connection is up to the caller", "127.0.0.30",
     ["--fallback", FALLBACK], "alice@x.test",
     {"end": "reply", "stage": "mail", "code": "550", "fallback": "0", "fallback_retry": "1"},
     True, ["EHLO " + HELO, "MAIL FROM:<>", "RSET", "QUIT"]),
    ("starting with the fallback sender", "127.0.0.29", ["--from", FALLBACK], "alice@x.test",
     {"end": "done", "stage": "rcpt", "code": "250"},
     True, normal_commands("alice@x.test", mail="MAIL FROM:<%s>" % FALLBACK)),
    ("a fallback set, MAIL not refused: never used", "127.0.0.2", ["--fallback", FALLBACK], "alice@x.test",
     {"end": "done", "stage": "rcpt", "code": "250", "fallback": "0"},
     True, normal_commands("alice@x.test")),
    # this host
    ("greeting names our helo name", "127.0.0.32", [], "alice@x.test",
     {"end": "loop", "stage": "banner", "code": "220", "error": "greeting names this host"},
     True, ["QUIT"]),
    ("EHLO reply names our helo name (case, final dot)", "127.0.0.33", [], "alice@x.test",
     {"end": "loop", "stage": "ehlo", "code": "250", "error": "EHLO reply names this host"},
     True, ["EHLO " + HELO, "QUIT"]),
]

RESULT_RE = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_result(stdout):
    """The key=value fields of smtpprobe's last "end=" line ({} if none)."""
    lines = [l for l in stdout.splitlines() if l.startswith("end=")]
    if not lines:
        return {}
    fields = {}
    for key, value in RESULT_RE.findall(lines[-1]):
        if value.startswith('"'):
            value = re.sub(r'\\(.)', r'\1', value[1:-1])
        fields[key] = value
    return fields


def probe(args, timeout=PROBE_TIMEOUT):
    """Run smtpprobe -v args; (fields, CompletedProcess, seconds)."""
    t = time.monotonic()
    r = vmtest.run([SMTPPROBE, "-v"] + args, timeout=timeout)
    return parse_result(r.stdout or ""), r, time.monotonic() - t


def diag_of(r, sessions=None):
    def d():
        text = "stdout:\n%s\nstderr:\n%s" % (vmtest.tail(r.stdout or ""), vmtest.tail(r.stderr or ""))
        if sessions is not None:
            text += "\nsessions: %r" % (sessions,)
        return text
    return d


def subset(fields, want):
    return {k: fields.get(k) for k in want}


def run_case(tap, name, addr, opts, rcpt, want, quit, commands):
    before = len(farm.sessions(addr))
    args = ["--helo", HELO] + opts + [addr, str(farm.port), rcpt]
    fields, r, secs = probe(args)
    farm.wait_idle(addr, timeout=5)
    new = farm.sessions(addr)[before:]
    tap.equal("%s: exit status 0" % name, r.returncode, 0, diag_of(r))
    if "error" in want:
        want = dict(want)
        substring = want.pop("error")
        tap.check("%s: error mentions %r" % (name, substring), substring in fields.get("error", ""),
                  diag_of(r))
    tap.equal("%s: result" % name, subset(fields, want), want, diag_of(r, new))
    if addr == REFUSED:
        return
    tap.check("%s: DATA never sent" % name,
              not any(c.upper().startswith("DATA") for s in new for c in s.commands), diag_of(r, new))
    if commands is not None:
        tap.equal("%s: one connection, exact commands" % name, [s.commands for s in new], [commands],
                  diag_of(r, new))
    if quit is True:
        tap.check("%s: QUIT sent last, once" % name,
                  len(new) == 1 and new[0].commands[-1:] == ["QUIT"]
                  and new[0].commands.count("QUIT") == 1, diag_of(r, new))
    elif quit is False:
        tap.check("%s: no QUIT after the server closed or failed" % name,
                  len(new) == 1 and "QUIT" not in new[0].commands, diag_of(r, new))


def make_case(case):
    def fn(tap, cleanup):
        run_case(tap, *case)
    fn.__name__ = "case_" + re.sub(r"\W+", "_", case[0])
    return fn


def test_starttls_session(tap, cleanup):
    """After STARTTLS the fake saw a TLS session and SNI did not break it."""
    before = len(farm.sessions("127.0.0.10"))
    fields, r, _ = probe(["--tls", "--server", "mx.test.", "127.0.0.10", str(farm.port), "bob@x.test"])
    farm.wait_idle("127.0.0.10", timeout=5)
    new = farm.sessions("127.0.0.10")[before:]
    tap.equal("starttls: fake saw TLS", [s.tls for s in new], [True], diag_of(r, new))
    tap.check("starttls: transcript shows the handshake",
              re.search(r"^\* TLS established \(TLSv1\.[23], ", r.stdout or "", re.M) is not None,
              diag_of(r))
    tap.check("starttls: transcript shows commands and replies",
              "> STARTTLS" in (r.stdout or "") and "< 220 2.0.0 ready to start TLS" in (r.stdout or ""),
              diag_of(r))


def test_transcript(tap, cleanup):
    """The -v transcript has the documented shapes."""
    fields, r, _ = probe(["--helo", HELO, "--server", "mx.test", "127.0.0.2", str(farm.port),
                         "alice@x.test"])
    out = (r.stdout or "").splitlines()
    tap.equal("transcript: first line", out[:2],
              ["* connecting to 127.0.0.2:%d (mx.test)" % farm.port, "* connected"], diag_of(r))
    tap.check("transcript: EHLO and reply lines", "> EHLO " + HELO in out
              and "< 250-mx.test greets " + HELO in out and "< 221 2.0.0 bye" in out, diag_of(r))
    fields, r, _ = probe(["--command-ms", "300", "127.0.0.17", str(farm.port), "alice@x.test"])
    tap.check("transcript: timeout line", "* timeout waiting for RCPT reply" in (r.stdout or ""), diag_of(r))
    fields, r, _ = probe(["127.0.0.13", str(farm.port), "alice@x.test"])
    tap.check("transcript: closed line", "* connection closed by server" in (r.stdout or ""), diag_of(r))


def test_pipelining_transcript(tap, cleanup):
    """--pipelining: the transcript shows the group going out before any of
    its replies; without PIPELINING offered, one command at a time."""
    fields, r, _ = probe(PIPE + ["--helo", HELO, "--catchall", RANDOM, "127.0.0.2", str(farm.port),
                                 "nobody@x.test"])
    out = [l for l in (r.stdout or "").splitlines() if l[:2] in ("> ", "< ", "* ")]
    at = out.index("> MAIL FROM:<>") if "> MAIL FROM:<>" in out else -1
    tap.equal("pipelining transcript: the group, then its replies in order", out[at + 2:at + 9] if at >= 0 else None,
              ["* PIPELINING: RCPT, the random RCPT and QUIT in one group (the session ends after this address)",
               "> RCPT TO:<nobody@x.test>", "> RCPT TO:<%s>" % RANDOM, "> QUIT",
               "< 550 5.1.1 <nobody@x.test>: user unknown", "< 550 5.1.1 <%s>: user unknown" % RANDOM,
               "< 221 2.0.0 bye"], diag_of(r))
    fields, r, _ = probe(PIPE + ["--helo", HELO, "--catchall", RANDOM, "127.0.0.35", str(farm.port),
                                 "nobody@x.test"])
    out = [l for l in (r.stdout or "").splitlines() if l[:2] in ("> ", "< ")]
    at = out.index("> MAIL FROM:<>") if "> MAIL FROM:<>" in out else -1
    tap.equal("no PIPELINING offered: RCPT, its reply, the random RCPT, its reply, QUIT, its reply",
              out[at + 2:at + 8] if at >= 0 else None,
              ["> RCPT TO:<nobody@x.test>", "< 550 5.1.1 <nobody@x.test>: user unknown",
               "> RCPT TO:<%s>" % RANDOM, "< 550 5.1.1 <%s>: user unknown" % RANDOM, "> QUIT",
               "< 221 2.0.0 bye"], diag_of(r))
    tap.check("no PIPELINING offered: no group", "* PIPELINING" not in (r.stdout or ""), diag_of(r))


def test_timeouts_bounded(tap, cleanup):
    """A timeout ends the probe about when it should, not much later."""
    fields, r, secs = probe(["--command-ms", "400", "127.0.0.17", str(farm.port), "alice@x.test"])
    tap.check("silent_after_rcpt with 400 ms: ends within 3 s (took %.2f s)" % secs,
              fields.get("end") == "timeout" and secs < 3.0, diag_of(r))
    fields, r, secs = probe(["--command-ms", "400", "127.0.0.15", str(farm.port), "alice@x.test"])
    tap.check("endless_line: stops at once (took %.2f s)" % secs,
              fields.get("end") == "protocol" and secs < 3.0, diag_of(r))
    maxrss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    tap.check("no probe grew large (max RSS %d KiB)" % maxrss_kb, maxrss_kb < 64 * 1024)


def test_connect_timeout(tap, cleanup):
    """A SYN that is never answered: the listen queue of a socket is full."""
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    cleanup.add(lsock.close)
    lsock.bind(("127.0.0.240", 0))
    lsock.listen(0)
    port = lsock.getsockname()[1]
    for _ in range(3):  # fill the accept queue; later SYNs are dropped
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        cleanup.add(c.close)
        c.setblocking(False)
        try:
            c.connect(("127.0.0.240", port))
        except (BlockingIOError, OSError):
            pass
    time.sleep(0.1)
    fields, r, secs = probe(["--connect-ms", "400", "127.0.0.240", str(port), "alice@x.test"])
    tap.equal("connect timeout: result", subset(fields, ["end", "stage"]),
              {"end": "timeout", "stage": "connect"}, diag_of(r))
    tap.check("connect timeout: within 3 s (took %.2f s)" % secs, secs < 3.0)


def test_bad_input(tap, cleanup):
    """CR/LF in a parameter: refused before connecting."""
    before = farm.connections("127.0.0.2")
    for label, args in (("rcpt", ["127.0.0.2", str(farm.port), "a@x.test\r\nDATA"]),
                        ("helo", ["--helo", "x\ny", "127.0.0.2", str(farm.port), "a@x.test"]),
                        ("from", ["--from", "a@b\rQUIT", "127.0.0.2", str(farm.port), "a@x.test"])):
        fields, r, _ = probe(args)
        tap.equal("CR/LF in %s: protocol error" % label, subset(fields, ["end", "stage"]),
                  {"end": "protocol", "stage": "none"}, diag_of(r))
    time.sleep(0.1)
    tap.equal("CR/LF: no connection made", farm.connections("127.0.0.2"), before)


def test_hang_quit(tap, cleanup):
    """A server that never answers QUIT: the result comes at once, the
    probe itself ends when the QUIT wait times out."""
    before = len(farm.sessions("127.0.0.27"))
    fields, r, secs = probe(["--helo", HELO, "--command-ms", "2000", "--catchall", RANDOM, "127.0.0.27",
                             str(farm.port), "alice@x.test"])
    farm.wait_idle("127.0.0.27", timeout=5)
    new = farm.sessions("127.0.0.27")[before:]
    report, end = int(fields.get("report_ms", "99999")), int(fields.get("end_ms", "0"))
    tap.diag("hang_quit: result after %d ms, probe gone after %d ms (command timeout 2000 ms)" % (report, end))
    tap.equal("hang_quit: result; no QUIT reply, so no proof either way (sync=unknown)",
              subset(fields, ["end", "stage", "code", "catchall_code", "sync"]),
              {"end": "done", "stage": "catchall", "code": "250", "catchall_code": "550", "sync": "unknown"},
              diag_of(r, new))
    tap.check("hang_quit: reported within 1 s (%d ms), before QUIT timed out" % report, report < 1000,
              diag_of(r))
    tap.check("hang_quit: the probe lingered until the QUIT wait ended (%d ms)" % end, 1900 <= end < 4000,
              diag_of(r))
    tap.check("hang_quit: QUIT sent, the client closed",
              len(new) == 1 and new[0].commands[-1:] == ["QUIT"] and new[0].closed_by == "client",
              diag_of(r, new))


def test_hang_catchall(tap, cleanup):
    """A server that never answers the random RCPT: the wait for it is
    bounded (catchall_wait), or skipped (--early), and the result says the
    answer is pending; without a bound the command timeout ends it as an
    unanswered catch-all question (not a failure)."""
    args = ["--helo", HELO, "--catchall", RANDOM, "127.0.0.28", str(farm.port), "alice@x.test"]
    fields, r, secs = probe(["--command-ms", "2000", "--catchall-wait-ms", "300"] + args)
    report = int(fields.get("report_ms", "99999"))
    tap.diag("hang_catchall, wait bound 300 ms: result after %d ms" % report)
    tap.equal("hang_catchall bounded: result", subset(fields, ["end", "stage", "code", "pending", "late"]),
              {"end": "done", "stage": "rcpt", "code": "250", "pending": "1", "late": "none"}, diag_of(r))
    tap.check("hang_catchall bounded: reported after the bound, well before the timeout (%d ms)" % report,
              250 <= report < 1500, diag_of(r))
    fields, r, secs = probe(["--command-ms", "2000", "--early"] + args)
    report = int(fields.get("report_ms", "99999"))
    tap.diag("hang_catchall, --early: result after %d ms" % report)
    tap.equal("hang_catchall early: result", subset(fields, ["end", "stage", "code", "pending", "late"]),
              {"end": "done", "stage": "rcpt", "code": "250", "pending": "1", "late": "none"}, diag_of(r))
    tap.check("hang_catchall early: reported at once (%d ms)" % report, report < 500, diag_of(r))
    fields, r, secs = probe(["--command-ms", "500"] + args)
    tap.equal("hang_catchall, no bound: the command timeout leaves the question open",
              subset(fields, ["end", "stage", "code", "catchall_code", "pending"]),
              {"end": "done", "stage": "catchall", "code": "250", "catchall_code": "0", "pending": "0"},
              diag_of(r))
    farm.wait_idle("127.0.0.28", timeout=5)
    sessions = farm.sessions("127.0.0.28")
    tap.check("hang_catchall: every session asked the random address and then said QUIT",
              len(sessions) == 3 and all(s.commands[-2:] == ["RCPT TO:<%s>" % RANDOM, "QUIT"] for s in sessions),
              "%r" % [s.commands for s in sessions])


def test_abandon(tap, cleanup):
    """What lingers when the loop's owner stops is closed at once: a probe
    saying QUIT (on the linger) or one still owing its late answer."""
    fields, r, secs = probe(["-v", "--command-ms", "5000", "--abandon", "127.0.0.27", str(farm.port),
                             "alice@x.test"])
    tap.check("abandon at a hanging QUIT: result, then one lingering probe closed (%.2f s)" % secs,
              fields.get("end") == "done" and "* closing 1 lingering" in (r.stdout or "") and secs < 3,
              diag_of(r))
    fields, r, secs = probe(["-v", "--command-ms", "5000", "--abandon", "--early", "--catchall", RANDOM,
                             "127.0.0.28", str(farm.port), "alice@x.test"])
    tap.check("abandon with the catch-all answer due: cancelled, nothing left on the linger (%.2f s)" % secs,
              fields.get("pending") == "1" and fields.get("late") == "none"
              and "* closing 0 lingering" in (r.stdout or "") and secs < 3, diag_of(r))


def test_no_data_anywhere(tap, cleanup):
    """Over the whole run, no server ever saw DATA."""
    farm.wait_idle(timeout=5)
    tap.check("DATA never sent to any fake server",
              not any(c.upper().startswith("DATA") for c in farm.commands()))


def test_valgrind(tap, cleanup):
    """Optional (VEMILTER_VALGRIND=1): the driver is leak- and error-free."""
    reason = vmtest.valgrind_skip_reason()
    if reason:
        tap.skip("valgrind", reason)
        return
    for label, args in (("normal", ["127.0.0.2", str(farm.port), "alice@x.test"]),
                        ("starttls", ["--tls", "127.0.0.10", str(farm.port), "alice@x.test"]),
                        ("tls_broken", ["--tls", "127.0.0.11", str(farm.port), "alice@x.test"]),
                        ("endless_line", ["--command-ms", "500", "127.0.0.15", str(farm.port), "a@x.test"]),
                        ("silent", ["--command-ms", "300", "127.0.0.17", str(farm.port), "a@x.test"]),
                        ("early_reply", ["127.0.0.24", str(farm.port), "a@x.test"]),
                        ("lagging_reply", ["--catchall", RANDOM, "127.0.0.34", str(farm.port), "nobody@x.test"]),
                        ("hang_quit", ["--command-ms", "300", "127.0.0.27", str(farm.port), "alice@x.test"]),
                        ("hang_catchall late", ["--command-ms", "300", "--early", "--catchall", RANDOM,
                                                "127.0.0.28", str(farm.port), "alice@x.test"]),
                        ("late 550", ["--catchall", RANDOM, "127.0.0.2", str(farm.port), "nobody@x.test"]),
                        ("fallback", ["--fallback", FALLBACK, "127.0.0.29", str(farm.port), "alice@x.test"]),
                        ("abandon at QUIT", ["--abandon", "127.0.0.27", str(farm.port), "alice@x.test"]),
                        ("abandon with the catch-all due", ["--abandon", "--early", "--catchall", RANDOM,
                                                            "127.0.0.28", str(farm.port), "alice@x.test"]),
                        ("pipelined group", PIPE + ["--catchall", RANDOM, "127.0.0.2", str(farm.port),
                                                    "nobody@x.test"]),
                        ("pipelined group, stray reply", PIPE + ["--catchall", RANDOM, "127.0.0.36",
                                                                 str(farm.port), "nobody@x.test"]),
                        ("refused", [REFUSED, str(farm.port), "a@x.test"])):
        r = vmtest.run(["valgrind", "-q", "--leak-check=full", "--error-exitcode=9",
                        "--errors-for-leak-kinds=definite,indirect,possible", SMTPPROBE] + args,
                       timeout=60)
        tap.equal("valgrind %s: clean" % label, r.returncode, 0, diag_of(r))


def setup(tap):
    global farm
    if not os.access(SMTPPROBE, os.X_OK):
        return "%s not built" % SMTPPROBE
    try:
        import smtpfarm
    except ImportError as e:
        return "tests/fakes/smtpfarm.py not available: %s" % e
    farm = smtpfarm.SmtpFarm(port=0, latency=0.0)
    for addr, (behaviour, options) in SERVERS.items():
        farm.add(addr, behaviour, **options)
    farm.start()
    return None


def main():
    tests = [make_case(c) for c in CASES] + [
        test_starttls_session, test_transcript, test_pipelining_transcript, test_timeouts_bounded, test_connect_timeout,
        test_hang_quit, test_hang_catchall, test_abandon,
        test_bad_input, test_no_data_anywhere, test_valgrind,
    ]
    try:
        vmtest.run_tests(tests, per_test_timeout=60, total_timeout=170, setup=setup)
    finally:
        if farm is not None:
            farm.stop()


if __name__ == "__main__":
    main()
