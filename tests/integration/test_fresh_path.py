#!/usr/bin/python3
"""test_fresh_path - issue 10's fresh path, end to end through the daemon:
the verdict for a new sender is handed to the client the moment it is known,
and what the cache knows about a domain spares the server a question.

vemilter (default policy: catch_all_action = accept, the valid action) is
driven by our milter client; the fake DNS server sends each test domain to
its own farm address; the farm answers every line (the greeting included)
after LATENCY seconds, so each reply in a probe's dialogue is a step of
LATENCY in time.

The farm records each reply line when it writes it (after its delay). A
snapshot of a session's replies taken right after the client got its verdict
therefore says how far the probe's dialogue had gone: with LATENCY 0.8 s a
reply written later than the verdict is at least 0.8 s away, so the check
does not depend on this machine's speed.

The farm offers PIPELINING (except at nopipe.test) and answers a pipelined
group in one write after one LATENCY (smtpfarm.py); a probe whose session
ends after its address sends the real RCPT, the random RCPT and QUIT as one
group (smtp.h), so the verdict, and the QUIT reply that proves a negative
one, come one LATENCY after MAIL's reply.

Cases
  accept.test   alice, a new sender at a domain not known to be catch-all:
                accepted; the real RCPT, the random (catch-all) RCPT and
                QUIT went out as one group and were answered in one write,
                so at the verdict the farm had written them all, within
                half a LATENCY of the protocol floor
  matters.test  domain_overrides catch_all=tempfail (the catch-all answer
                can change the action): the verdict waits for the random
                RCPT's answer. The contrast that shows the snapshot measures
                what it claims.
  accept.test   bob, after alice's probe taught that the domain is not
                catch-all (its random address got 550): no random RCPT at all,
                the session is EHLO, MAIL, RCPT, QUIT (RCPT and QUIT grouped)
  accept.test   nobody (unknown user): rejected at the protocol floor: the
                negative verdict waits for the QUIT reply that proves the
                session was in step (docs/DESIGN.md, "One verification"),
                which came in the same write as the RCPT's 550 (one command
                at a time, it came one LATENCY later: this check fails then)
  nopipe.test   nobody, at a server that does not offer PIPELINING: rejected,
                one command at a time (the random RCPT and QUIT each one
                LATENCY more: at least floor + LATENCY)
  stray.test    nobody, at a server that answers MAIL twice, the second
                reply held back until our group came (every reply one slot
                late, nothing waiting when the group went out): the QUIT slot
                holds a 550, so the session is out of step: never rejected
  drop.test     nobody, at a server that offers PIPELINING and closes on the
                group without a reply: never rejected
The time from MAIL FROM to the verdict is printed next to the protocol floor
(greeting + EHLO + MAIL + RCPT = 4 x LATENCY, plus connecting).

TAP on stdout; loopback only; every wait bounded.
"""

import os
import re
import sys
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "fakes"))

import vmtest  # noqa: E402
from vmtest import Daemon, TempDir, base_conf  # noqa: E402
from milterclient import MilterClient  # noqa: E402
from fakedns import FakeDNS  # noqa: E402
from smtpfarm import SmtpFarm  # noqa: E402

LATENCY = 0.8
HELO = "probe.vemilter.test"
ACCEPT = "127.0.0.61"    # normal: alice, bob; the random address gets 550
MATTERS = "127.0.0.62"   # normal: carol; catch_all=tempfail for its domain
NOPIPE = "127.0.0.63"    # normal, no PIPELINING
STRAY = "127.0.0.64"     # normal, a second MAIL reply held back until the group
DROP = "127.0.0.65"      # normal, closes at the first RCPT without a reply
RANDOM_RCPT = re.compile(r"^RCPT TO:<[a-z0-9]{16}@", re.I)


def zone():
    return vmtest.mx_zone({"accept.test": ACCEPT, "matters.test": MATTERS, "nopipe.test": NOPIPE,
                           "stray.test": STRAY, "drop.test": DROP})


def ask(d, farm, sender, farm_addr, qid):
    """One message from sender: MAIL, then RCPT unless MAIL decided. Returns
    (decisive reply, seconds from MAIL to it, the replies the farm had
    written in the probe's session at that moment, the session's commands at
    that moment)."""
    before = len(farm.sessions(farm_addr))
    c = MilterClient(d.socket, timeout=20)
    try:
        c.session(client_addr="198.51.100.7")
        t0 = time.monotonic()
        r = c.mail("<%s>" % sender, macros={"i": qid})
        if r.code == "c":
            r = c.rcpt("<user@local.test>")
        took = time.monotonic() - t0
        now = farm.sessions(farm_addr)[before:]
        c.quit()
    finally:
        c.close()
    return r, took, (now[0].replies if now else None), (now[0].commands if now else None)


def session_after(farm, farm_addr, index):
    """The farm's session number index at farm_addr once no connection is
    open there (bounded wait), or None."""
    farm.wait_idle(farm_addr, timeout=10)
    s = farm.sessions(farm_addr)
    return s[index] if len(s) > index else None


def main():
    tap = vmtest.Tap()
    tmp = TempDir()
    dns = FakeDNS(zone())
    farm = SmtpFarm(latency=LATENCY)
    d = None
    try:
        dns_port = dns.start()
        farm.add(ACCEPT, "normal", users=["alice", "bob"])
        farm.add(MATTERS, "normal", users=["carol"])
        farm.add(NOPIPE, "normal", users=["alice"], pipelining=False)
        farm.add(STRAY, "normal", users=["alice"], stray_mail=True)
        farm.add(DROP, "normal", users=["alice"], drop_after=0)
        farm_port = farm.start()
        conf = base_conf(tmp, cache=tmp.join("cache.lmdb"), dns_servers="127.0.0.1:%d" % dns_port,
                         helo_name=HELO, probe_port=farm_port, probe_allow_networks="127.0.0.0/8",
                         verify_budget="8s", command_timeout="5s",
                         domain_overrides="matters.test catch_all=tempfail")
        d = Daemon(tmp, conf)
        d.start()

        # 1. a verdict the catch-all answer cannot change: right after the real RCPT
        r, took, at_verdict, cmds = ask(d, farm, "alice@accept.test", ACCEPT, "Q1")
        s = session_after(farm, ACCEPT, 0)
        full = s.replies if s else []
        tap.check("alice@accept.test: accepted (%r)" % r, r.code in ("a", "c"), d.diag())
        tap.check("alice's probe: one session, the real RCPT, then the random RCPT, then QUIT",
                  s is not None and len(s.commands) >= 4 and s.commands[-3] == "RCPT TO:<alice@accept.test>"
                  and RANDOM_RCPT.match(s.commands[-2]) is not None and s.commands[-1] == "QUIT",
                  "%r" % s)
        tap.check("alice: RCPT, the random RCPT and QUIT answered in one write: at the verdict the farm had "
                  "written them all (250, 550, 221)",
                  at_verdict is not None and len(full) >= 3 and at_verdict == full
                  and full[-3].startswith("250") and full[-2].startswith("550") and full[-1].startswith("221"),
                  "at the verdict: %r\nwhole session: %r\n%s" % (at_verdict, full, d.diag()))
        floor = 4 * LATENCY
        tap.check("alice: verdict within half a LATENCY of the floor (%.3f s, floor %.1f s)" % (took, floor),
                  took < floor + LATENCY / 2, d.diag())
        tap.diag("alice: MAIL FROM to verdict %.3f s; protocol floor (greeting + EHLO + MAIL + RCPT) %.1f s; "
                 "one command at a time the random RCPT would add %.1f s, QUIT %.1f s more"
                 % (took, floor, LATENCY, LATENCY))

        # 2. the contrast: catch_all=tempfail, so the random address's answer decides
        r, took2, at_verdict, _ = ask(d, farm, "carol@matters.test", MATTERS, "Q2")
        s = session_after(farm, MATTERS, 0)
        full = s.replies if s else []
        tap.check("carol@matters.test (catch_all=tempfail, random address refused): accepted (%r)" % r,
                  r.code in ("a", "c"), d.diag())
        tap.check("carol: the verdict waited for the random RCPT's answer (it had been written; %.3f s)" % took2,
                  at_verdict is not None and len(full) >= 2 and len(at_verdict) >= len(full) - 1
                  and any(l.startswith("550") for l in at_verdict),
                  "at the verdict: %r\nwhole session: %r" % (at_verdict, full))

        # 3. the domain is now known not to be catch-all: no random RCPT
        r, took3, at_verdict, _ = ask(d, farm, "bob@accept.test", ACCEPT, "Q3")
        s = session_after(farm, ACCEPT, 1)
        tap.check("bob@accept.test: accepted (%r)" % r, r.code in ("a", "c"), d.diag())
        tap.equal("bob's probe (accept.test known not catch-all): EHLO, MAIL, RCPT, QUIT, no random RCPT",
                  s.commands if s else None,
                  ["EHLO " + HELO, "MAIL FROM:<>", "RCPT TO:<bob@accept.test>", "QUIT"], d.diag())
        full = s.replies if s else []
        tap.check("bob: RCPT and QUIT answered in one write, written at the verdict",
                  at_verdict is not None and len(full) >= 2 and at_verdict == full
                  and full[-2].startswith("250") and full[-1].startswith("221"),
                  "at the verdict: %r\nwhole session: %r" % (at_verdict, full))
        tap.diag("bob: MAIL FROM to verdict %.3f s (floor %.1f s)" % (took3, floor))

        # 4. an unknown user: refused, after the QUIT proof, which came with the 550. (A job
        # within 1 s of the line's last one is part of a burst, pool.c LINE_KEEP_MS: its
        # session would wait for the next address, so it asks one command at a time.)
        time.sleep(1.2)
        r, took4, at_verdict, _ = ask(d, farm, "nobody@accept.test", ACCEPT, "Q4")
        tap.check("nobody@accept.test: rejected (%r)" % r, r.code in ("r", "y") and
                  (r.code == "r" or (r.smtp_code or "").startswith("5")), d.diag())
        tap.check("nobody: rejected at the floor, not a round trip later (%.3f s < floor %.1f s + %.1f s): "
                  "the QUIT reply that proves it came with the 550" % (took4, floor, LATENCY / 2),
                  took4 < floor + LATENCY / 2, d.diag())
        tap.diag("nobody (invalid): MAIL FROM to verdict %.3f s (floor %.1f s): a negative verdict waits for "
                 "QUIT's reply (the session proved in step), %d of the session's replies written at the verdict"
                 % (took4, floor, len(at_verdict or [])))

        # 5. no PIPELINING: one command at a time, the proof a round trip (or two) later
        r, took5, _, _ = ask(d, farm, "nobody@nopipe.test", NOPIPE, "Q5")
        s = session_after(farm, NOPIPE, 0)
        tap.check("nobody@nopipe.test (no PIPELINING): rejected (%r)" % r, r.code in ("r", "y") and
                  (r.code == "r" or (r.smtp_code or "").startswith("5")), d.diag())
        tap.check("nopipe: one command at a time: the verdict at least a LATENCY after the floor (%.3f s)"
                  % took5, took5 >= floor + LATENCY, d.diag())
        tap.check("nopipe: EHLO, MAIL, RCPT, the random RCPT, QUIT",
                  s is not None and [c.split(":")[0] for c in s.commands]
                  == ["EHLO " + HELO, "MAIL FROM", "RCPT TO", "RCPT TO", "QUIT"], "%r" % s)
        tap.diag("nobody at nopipe.test: MAIL FROM to verdict %.3f s" % took5)

        # 6. a stray reply shifts the group's slots: out of step, no reject
        log_at = d.log_size()
        r, took6, _, _ = ask(d, farm, "nobody@stray.test", STRAY, "Q6")
        s = session_after(farm, STRAY, 0)
        tap.check("nobody@stray.test (MAIL answered twice): not rejected (%r)" % r,
                  r.code not in ("r",) and not (r.code == "y" and (r.smtp_code or "").startswith("5")),
                  d.diag())
        tap.check("stray: the group went out (RCPT, the random RCPT, QUIT) and the farm sent 4 replies to it",
                  s is not None and s.commands[-1] == "QUIT" and len(s.replies) >= 4
                  and s.replies[-4].startswith("250 2.1.0"), "%r %r" % (s, s.replies if s else None))
        tap.check("stray: logged as out of step (the QUIT slot got the 550)",
                  d.wait_log(r"sender=<nobody@stray\.test>.*reply before command \(found in the group's replies: "
                             r"QUIT got 550\)", timeout=5, start=log_at) is not None, d.diag())

        # 7. PIPELINING offered, the connection dropped on the group: no reject
        r, took7, _, _ = ask(d, farm, "nobody@drop.test", DROP, "Q7")
        tap.check("nobody@drop.test (closed on the group): not rejected (%r)" % r,
                  r.code not in ("r",) and not (r.code == "y" and (r.smtp_code or "").startswith("5")),
                  d.diag())
    finally:
        vmtest.tear_down(servers=(farm, dns), daemons=(d,), tmp=tmp)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
