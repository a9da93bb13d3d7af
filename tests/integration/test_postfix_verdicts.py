#!/usr/bin/python3
"""test_postfix_verdicts - the right verdict when sender verification goes
wrong in the field: a real Postfix with vemilter as its milter, vemilter
probing the fake DNS server and the farm of misbehaving fake SMTP servers.

Each scenario is one sender domain with its own farm address (so farm
counts belong to it alone). For each the client's verdict is asserted on
the first try and on a retry, with the number of probes the farm saw and,
where it matters, the time to the verdict.

Scenarios
  early_banner/ehlo/mail  a server sends an unsolicited 250 before the
                          command it would answer: an unknown user must come
                          out tempfail (4xx), never valid, and the domain is
                          not cached as a fact (a second unknown user is
                          probed on its own)
  lagging_reply           one unsolicited line, then every reply a little
                          late: the client stays one reply behind without
                          ever finding data waiting. An unknown user must not
                          be accepted from the cache, a real user must never
                          get a 5xx (the QUIT reply gives the lag away)
  null_sender_refused_at_rcpt  Postfix-style "554 5.7.1 <>: Sender address
                          rejected" at RCPT: about us, never invalid; with
                          the fallback sender the real answers come through
  hang_quit               RCPT answered, QUIT never: the verdict must not
                          wait for command_timeout
  hang_catchall           the random RCPT is never answered; catch_all and
                          valid have the same action, so the verdict comes
                          after the real RCPT
  greylist_for            450 for 3 s: the first try is deferred, a
                          background re-probe after greylist_retry fills the
                          cache, the retry is accepted from it
  null_sender_refused     MAIL FROM:<> refused, probe_sender_fallback set: a
                          known user 250, an unknown one 5xx; the next probe
                          of the domain starts with the fallback sender
  down (every MX refuses) 4xx on the first try and the retry (remote
                          temporary failures defer by default), then after
                          defer_limit the sender is accepted (reason
                          defer_limit)
  servfail                DNS SERVFAIL: 4xx, never 5xx
  self (MX = 127.0.0.1)   "mx is this host": 4xx, no probe through ourselves
  selfname                the MX greets with our helo_name: 4xx
  appears                 NXDOMAIN with a negative TTL of 2 s, then the
                          domain is created: a new sender is verified (250)
                          once the negative TTL has passed
  storm                   a stale valid record whose refresh keeps failing:
                          100 messages start at most one refresh per window
  tagged (BATV, VERP)     20 senders with per-message tags cost one probe:
                          the first is probed as given, the rest are
                          answered from the stable form

Two vemilters behind one Postfix, chosen by client address through
smtpd_milter_maps: "main" (127.0.0.1) with the defaults but short timeouts;
"aux" (127.0.0.3) with defer_limit 3s, positive_refresh 3s and
dns_cache_time 1s for the time-driven cases.

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
from vmtest import Daemon, TempDir, probe_conf  # noqa: E402
import postfixinst  # noqa: E402
from fakedns import FakeDNS  # noqa: E402
from smtpfarm import SmtpFarm  # noqa: E402

BIN = vmtest.vemilter_binary()
SMTP_TIMEOUT = 30
AUX_SOURCE = "127.0.0.3"
HELO = "probe.test"
FALLBACK = "probe-fallback@test.example"

# farm address -> (behaviour, options)
FARM = {
    "127.0.0.41": ("early_reply", {"when": "banner", "users": ["alice"]}),
    "127.0.0.42": ("early_reply", {"when": "ehlo", "users": ["alice"]}),
    "127.0.0.43": ("early_reply", {"when": "mail", "users": ["alice"]}),
    "127.0.0.44": ("hang_quit", {"users": ["alice"]}),
    "127.0.0.45": ("hang_catchall", {"users": ["alice"]}),
    "127.0.0.46": ("greylist_for", {"seconds": 3, "users": ["alice"]}),
    "127.0.0.47": ("null_sender_refused", {"users": ["alice"]}),
    "127.0.0.48": ("normal", {"users": ["alice"], "hostname": HELO}),
    "127.0.0.49": ("normal", {"users": ["alice"]}),    # appears.test, once it exists
    "127.0.0.50": ("normal", {"users": ["alice"]}),    # storm.test before the outage
    "127.0.0.51": ("banner_421", {}),                  # storm.test during the outage
    # tagged senders: only the first tag is known to the server (a BATV
    # server checks the tag; ours checks nothing, so the others would 550)
    "127.0.0.52": ("normal", {"users": ["prvs=0001aaaa=alice"]}),
    "127.0.0.53": ("normal", {"users": ["list-bounces+bob=example.org"]}),
    "127.0.0.54": ("lagging_reply", {"users": ["alice"]}),
    "127.0.0.55": ("lagging_reply", {"users": ["alice"], "refuse_null": True}),
    "127.0.0.56": ("null_sender_refused_at_rcpt", {"users": ["alice"]}),
}

# domain -> MX address (None: no server there, connections are refused)
DOMAINS = {
    "early-banner.test": "127.0.0.41", "early-ehlo.test": "127.0.0.42",
    "early-mail.test": "127.0.0.43", "hangquit.test": "127.0.0.44",
    "hangca.test": "127.0.0.45", "greyfor.test": "127.0.0.46",
    "nullref.test": "127.0.0.47", "selfname.test": "127.0.0.48",
    "storm.test": "127.0.0.50", "batv.test": "127.0.0.52", "lists.test": "127.0.0.53",
    "lag.test": "127.0.0.54", "lagnull.test": "127.0.0.55", "nullrcpt.test": "127.0.0.56",
    "down.test": "127.0.0.60", "down2.test": "127.0.0.61",
    "self.test": "127.0.0.1",
}


def make_zone(appears=False, storm_addr="127.0.0.50"):
    zone = vmtest.mx_zone(DOMAINS)
    zone["mx.storm.test"] = {"A": [storm_addr]}
    zone["servfail.test"] = {"rcode": "SERVFAIL"}
    # every NXDOMAIN under test. says: believe it for 2 s (RFC 2308 negative TTL)
    zone["test"] = {"soa": {"ttl": 2, "minimum": 2}}
    if appears:
        zone.update(vmtest.mx_zone({"appears.test": "127.0.0.49"}))
    return zone


class G:
    tmp = None
    dns = None
    dns_port = None
    farm = None
    farm_port = None
    main = None
    aux = None
    postfix = None


# ---------------------------------------------------------------- helpers

def smtp(source="127.0.0.1"):
    return postfixinst.smtp_client(G.postfix.port, source, SMTP_TIMEOUT)


def transaction(sender, rcpt="user@test.example", source="127.0.0.1"):
    """One session: MAIL FROM, one RCPT; returns ((mail code, text),
    (rcpt code, text), seconds the RCPT reply took)."""
    s = smtp(source)
    try:
        code, msg = s.docmd("MAIL FROM:<%s>" % sender)
        m = (code, msg.decode("utf-8", "replace"))
        t0 = time.monotonic()
        code, msg = s.docmd("RCPT TO:<%s>" % rcpt)
        return m, (code, msg.decode("utf-8", "replace")), time.monotonic() - t0
    finally:
        postfixinst.smtp_close(s)


def verdicts(daemon, sender, n=1, timeout=5.0, start=0):
    want = "<%s>" % sender

    def get():
        return [v for v in vmtest.parse_verdicts(daemon.log()[start:]) if v.get("sender") == want]
    vmtest.wait_until(lambda: len(get()) >= n, timeout)
    return get()


def rcpts(addr, sender):
    return G.farm.count(addr, "RCPT TO:<%s>" % sender)


def diag(daemon, addr=None, *extra):
    def f():
        parts = ["%r" % (x,) for x in extra]
        if addr is not None:
            parts.append("farm %s (%s) sessions:" % (addr, FARM.get(addr, ("none",))[0]))
            for sess in G.farm.sessions(addr):
                parts.append("  %r closed_by=%s" % (sess.commands, sess.closed_by))
        parts.append(daemon.diag())
        parts.append(G.postfix.diag())
        return "\n".join(parts)
    return f


def klass(r):
    return r[0] // 100


def conf_for(name, **over):
    conf = probe_conf(G.tmp, name + ".sock", G.dns_port, G.farm_port, socket_mode="0666")
    conf.update({
        "log_level": "debug",
        "dns_timeout": "500ms",
        "helo_name": HELO,
        "connect_timeout": "2s",
        "banner_timeout": "5s",
        "command_timeout": "10s",
        "probe_timeout": "20s",
        "verify_budget": "5s",
        "greylist_retry": "2s",
        "probe_sender_fallback": FALLBACK,
        "cache": G.tmp.join(name + ".lmdb"),
    })
    conf.update(over)
    return conf


# ---------------------------------------------------------------- set-up

def t_start(tap, cleanup):
    G.tmp = TempDir()
    G.dns = FakeDNS(make_zone())
    G.dns_port = G.dns.start()
    G.farm = SmtpFarm(latency=0)
    for addr, (behaviour, opts) in FARM.items():
        G.farm.add(addr, behaviour, **opts)
    G.farm_port = G.farm.start()
    G.main = Daemon(G.tmp, conf_for("main"), name="main")
    G.aux = Daemon(G.tmp, conf_for("aux", defer_limit="3s", positive_refresh="3s", positive_ttl="1h",
                                   dns_cache_time="1s"), name="aux")
    for d in (G.main, G.aux):
        d.start()
        tap.check("vemilter %s starts" % d.name, d.running(), d.diag)
    milter_map = G.tmp.write("milter_map", "%s %s\n" % (AUX_SOURCE, G.aux.socket))
    G.postfix = postfixinst.PostfixInstance(G.tmp, milter=G.main.socket, extra_main={
        "smtpd_milter_maps": "texthash:" + milter_map,
        "smtpd_client_connection_count_limit": "0",
    })
    try:
        G.postfix.start()
        tap.check("Postfix instance starts on 127.0.0.1:%d" % G.postfix.port, True)
    except postfixinst.PostfixError as e:
        tap.check("Postfix instance starts", False, str(e))
        raise


# ---------------------------------------------------------------- scenarios

def first_and_retry(tap, name, sender, want_class, reason, addr=None, daemon=None, source="127.0.0.1",
                    detail=None):
    """Send sender twice; both RCPTs must be in want_class with the verdict
    reason; returns the two RCPT replies and the farm's RCPT count."""
    daemon = daemon or G.main
    start = len(daemon.log())
    _, r1, t1 = transaction(sender, source=source)
    _, r2, t2 = transaction(sender, source=source)
    d = diag(daemon, addr, r1, r2)
    tap.check("%s: first try %dxx, retry %dxx" % (name, want_class, want_class),
              klass(r1) == want_class and klass(r2) == want_class, d)
    v = verdicts(daemon, sender, 2, start=start)
    tap.check("%s: both verdicts reason=%s" % (name, reason),
              len(v) >= 2 and all(x.get("reason") == reason for x in v[:2]), d)
    if detail is not None:
        tap.check("%s: the verdict says why (%s)" % (name, detail),
                  bool(v) and re.search(detail, v[0].get("detail", "")) is not None, d)
    probes = None
    if addr is not None:
        G.farm.wait_idle(addr, timeout=3)
        probes = G.farm.connections(addr)
    tap.diag("%s: first try %d (%.2fs), retry %d (%.2fs), farm connections %s"
             % (name, r1[0], t1, r2[0], t2, probes))
    return r1, r2, probes


def t_early_reply(tap, cleanup):
    for when in ("banner", "ehlo", "mail"):
        dom = "early-%s.test" % when
        addr = DOMAINS[dom]
        _, _, probes = first_and_retry(tap, "reply before command (after %s)" % when, "nobody@" + dom, 4,
                                       "tempfail", addr, detail=r"reply before command")
        tap.equal("early reply after %s: one probe, the retry is answered from the cache" % when,
                  probes, 1, diag(G.main, addr))
        # Not cached as a domain fact: another unknown user is probed on its own
        _, r, _ = transaction("other@" + dom)
        G.farm.wait_idle(addr, timeout=3)
        tap.check("early reply after %s: another unknown user is probed too, and deferred" % when,
                  klass(r) == 4 and rcpts(addr, "other@" + dom) <= 1
                  and G.farm.connections(addr) == 2, diag(G.main, addr, r))


def t_lagging_reply(tap, cleanup):
    addr = DOMAINS["lag.test"]
    _, r1, t1 = transaction("nobody@lag.test")
    tap.check("one reply behind: an unknown user is never rejected on a lagging dialogue's word",
              klass(r1) != 5, diag(G.main, addr, r1))
    G.farm.wait_idle(addr, timeout=5)
    vmtest.wait_until(lambda: re.search(r"retract|protocol", G.main.log()), 3)
    _, r2, _ = transaction("nobody@lag.test")
    v = verdicts(G.main, "nobody@lag.test", 2)
    d = diag(G.main, addr, r1, r2)
    tap.check("one reply behind: the retry is not accepted as valid from the cache",
              len(v) >= 2 and v[-1].get("reason") != "valid" and klass(r2) != 5, d)
    addr = DOMAINS["lagnull.test"]
    _, r3, t3 = transaction("alice@lagnull.test")
    tap.check("one reply behind, <> refused: a real user never gets 5xx", klass(r3) != 5,
              diag(G.main, addr, r3))
    _, r4, _ = transaction("alice@lagnull.test")
    tap.check("one reply behind, <> refused: nor on the retry", klass(r4) != 5, diag(G.main, addr, r4))
    tap.diag("lagging reply: unknown user %d then %d (%.2f s); real user with <> refused %d then %d (%.2f s)"
             % (r1[0], r2[0], t1, r3[0], r4[0], t3))


def t_null_sender_refused_at_rcpt(tap, cleanup):
    addr = DOMAINS["nullrcpt.test"]
    _, r1, _ = transaction("alice@nullrcpt.test")
    _, r2, _ = transaction("nobody@nullrcpt.test")
    d = diag(G.main, addr, r1, r2)
    tap.check("<> refused at RCPT (Postfix style), fallback set: known user 250, unknown user 5xx",
              r1[0] == 250 and klass(r2) == 5, d)
    tap.check("<> refused at RCPT: the fallback sender was used",
              G.farm.saw(addr, "MAIL FROM:<%s>" % FALLBACK), d)


def t_hang_quit(tap, cleanup):
    addr = DOMAINS["hangquit.test"]
    _, r, took = transaction("alice@hangquit.test")
    tap.check("hang at QUIT: valid sender 250 in under 2 s (command_timeout 10 s), took %.2f s" % took,
              r[0] == 250 and took < 2.0, diag(G.main, addr, r))
    _, r, took2 = transaction("nobody@hangquit.test")
    tap.check("hang at QUIT: unknown sender 5xx in under 2 s, took %.2f s" % took2,
              klass(r) == 5 and took2 < 2.0, diag(G.main, addr, r))
    _, r, took3 = transaction("alice@hangquit.test")
    tap.check("hang at QUIT: retry 250 from the cache", r[0] == 250 and rcpts(addr, "alice@hangquit.test") == 1,
              diag(G.main, addr, r))
    tap.diag("time to verdict, hang at QUIT: %.3f s valid, %.3f s invalid, %.3f s cached"
             % (took, took2, took3))


def t_hang_catchall(tap, cleanup):
    addr = DOMAINS["hangca.test"]
    _, r, took = transaction("alice@hangca.test")
    tap.check("hang at the catch-all RCPT: valid sender 250 in under 2 s, took %.2f s" % took,
              r[0] == 250 and took < 2.0, diag(G.main, addr, r))
    tap.diag("time to verdict, hang at the catch-all RCPT: %.3f s" % took)


def t_greylist(tap, cleanup):
    addr = DOMAINS["greyfor.test"]
    _, r1, _ = transaction("alice@greyfor.test")
    tap.check("greylisting: first try deferred (4xx)", klass(r1) == 4, diag(G.main, addr, r1))
    # greylisted for 3 s, greylist_retry 2 s: the re-probes after 2 s and 4 s
    # find the server open; bounded wait for the background answer
    ok = vmtest.wait_until(lambda: any(l.startswith("RCPT") for s in G.farm.sessions(addr)[1:]
                                       for l in s.commands) and G.farm.connections(addr) >= 2
                           and re.search(r"probe alice@greyfor\.test: valid", G.main.log()), 12)
    tap.check("greylisting: a background re-probe found the address valid", bool(ok), diag(G.main, addr))
    _, r2, _ = transaction("alice@greyfor.test")
    v = verdicts(G.main, "alice@greyfor.test", 2)
    tap.check("greylisting: the retry is accepted from the cache (no new probe)",
              r2[0] == 250 and len(v) >= 2 and v[-1].get("source") == "cached", diag(G.main, addr, r2))
    tap.check("greylisting: at most 3 re-probes", G.farm.connections(addr) <= 4, diag(G.main, addr))
    tap.diag("greylisting: %d probes in all" % G.farm.connections(addr))


def t_null_sender_refused(tap, cleanup):
    addr = DOMAINS["nullref.test"]
    _, r1, _ = transaction("alice@nullref.test")
    _, r2, _ = transaction("nobody@nullref.test")
    d = diag(G.main, addr, r1, r2)
    tap.check("<> refused, fallback sender set: known user 250, unknown user 5xx",
              r1[0] == 250 and klass(r2) == 5, d)
    tap.check("<> refused: the fallback sender was used",
              G.farm.saw(addr, "MAIL FROM:<%s>" % FALLBACK), d)
    G.farm.wait_idle(addr, timeout=3)
    last = G.farm.sessions(addr)[-1].commands
    mails = [c for c in last if c.upper().startswith("MAIL FROM")]
    tap.check("<> refused: the domain's later probe starts with the fallback sender",
              mails and mails[0] == "MAIL FROM:<%s>" % FALLBACK, d)


def t_down(tap, cleanup):
    first_and_retry(tap, "every MX refusing connections", "someone@down.test", 4, "tempfail")


def t_defer_limit(tap, cleanup):
    sender = "someone@down2.test"
    start = len(G.aux.log())
    _, r1, _ = transaction(sender, source=AUX_SOURCE)
    tap.check("defer_limit 3s: first try deferred", klass(r1) == 4, diag(G.aux, None, r1))
    time.sleep(3.5)
    _, r2, _ = transaction(sender, source=AUX_SOURCE)
    v = verdicts(G.aux, sender, 2, start=start)
    d = diag(G.aux, None, r1, r2)
    tap.check("defer_limit 3s: after 3.5 s the sender is accepted", r2[0] == 250, d)
    tap.check("defer_limit: verdict action=accept reason=defer_limit",
              len(v) >= 2 and v[-1].get("action") == "accept" and v[-1].get("reason") == "defer_limit", d)


def t_servfail(tap, cleanup):
    first_and_retry(tap, "SERVFAIL for the sender domain", "someone@servfail.test", 4, "tempfail")


def t_self(tap, cleanup):
    first_and_retry(tap, "MX is 127.0.0.1 (this host)", "someone@self.test", 4, "tempfail",
                    detail=r"mx is this host")
    first_and_retry(tap, "MX greets with our helo_name", "alice@selfname.test", 4, "tempfail",
                    DOMAINS["selfname.test"], detail=r"mx is this host")


def t_appears(tap, cleanup):
    _, r1, _ = transaction("first@appears.test", source=AUX_SOURCE)
    tap.check("NXDOMAIN (negative TTL 2 s): 5xx", klass(r1) == 5, diag(G.aux, None, r1))
    G.dns.set_zone(make_zone(appears=True))
    time.sleep(2.5)
    _, r2, _ = transaction("alice@appears.test", source=AUX_SOURCE)
    d = diag(G.aux, "127.0.0.49", r1, r2)
    tap.check("the domain appears: a new sender is verified (250), not rejected from the old fact",
              r2[0] == 250, d)
    _, r3, _ = transaction("nobody@appears.test", source=AUX_SOURCE)
    tap.check("the domain appears: an unknown user there gets its own 5xx from the MX",
              klass(r3) == 5 and rcpts("127.0.0.49", "nobody@appears.test") == 1, diag(G.aux, "127.0.0.49", r3))


def t_refresh_storm(tap, cleanup):
    sender = "alice@storm.test"
    _, r, _ = transaction(sender, source=AUX_SOURCE)
    tap.check("storm: the sender is valid", r[0] == 250, diag(G.aux, "127.0.0.50", r))
    # the MX now refuses with 421 at the banner: every refresh fails
    G.dns.set_zone(make_zone(storm_addr="127.0.0.51"))
    time.sleep(3.3)  # past positive_refresh (3 s) and dns_cache_time (1 s)
    s = smtp(AUX_SOURCE)
    codes = []
    t0 = time.monotonic()
    try:
        for _ in range(100):
            s.docmd("MAIL FROM:<%s>" % sender)
            codes.append(s.docmd("RCPT TO:<user@test.example>")[0])
            s.docmd("RSET")
    finally:
        postfixinst.smtp_close(s)
    took = time.monotonic() - t0
    G.farm.wait_idle("127.0.0.51", timeout=3)
    refreshes = G.farm.connections("127.0.0.51")
    allowed = 1 + int(took // 3.0)
    tap.check("storm: 100 messages from a stale valid sender are accepted",
              codes.count(250) == 100, diag(G.aux, "127.0.0.51", codes))
    tap.check("storm: %d refresh probes in %.1f s (at most %d: one per 3 s window)"
              % (refreshes, took, allowed), 1 <= refreshes <= allowed, diag(G.aux, "127.0.0.51"))
    tap.diag("refresh storm: 100 messages in %.2f s -> %d refresh probes" % (took, refreshes))


def t_tagged(tap, cleanup):
    cases = [("BATV", "127.0.0.52", "prvs=0001aaaa=alice@batv.test",
              ["prvs=%04d%s=alice@batv.test" % (i, "bcde"[i % 4] * 4) for i in range(2, 21)]),
             ("VERP", "127.0.0.53", "list-bounces+bob=example.org@lists.test",
              ["list-bounces+user%d=example.net@lists.test" % i for i in range(2, 21)])]
    for kind, addr, first, rest in cases:
        _, r1, _ = transaction(first)
        replies = [transaction(x)[1][0] for x in rest]
        G.farm.wait_idle(addr, timeout=3)
        d = diag(G.main, addr, r1, replies)
        tap.check("%s: 20 tagged senders of one sender accepted" % kind,
                  r1[0] == 250 and replies == [250] * len(rest), d)
        tap.equal("%s: one probe for all of them (the farm saw one session)" % kind,
                  G.farm.connections(addr), 1, d)
        v = verdicts(G.main, rest[-1])
        tap.check("%s: a later tag is answered from the cache" % kind,
                  bool(v) and v[-1].get("source") in ("cached", "stale"), d)


def t_stop(tap, cleanup):
    G.postfix.stop()
    codes = vmtest.stop_all([(G.main, signal.SIGTERM), (G.aux, signal.SIGTERM)])
    tap.equal("both vemilters exit 0", codes, [0, 0])


TESTS = [t_start, t_early_reply, t_lagging_reply, t_null_sender_refused_at_rcpt, t_hang_quit, t_hang_catchall, t_greylist, t_null_sender_refused, t_down,
         t_defer_limit, t_servfail, t_self, t_appears, t_refresh_storm, t_tagged, t_stop]


def setup(tap):
    if not os.access(BIN, os.X_OK):
        tap.check("%s exists (set VEMILTER_BUILDDIR)" % BIN, False)
        tap.done()
        sys.exit(1)
    return postfixinst.available()


def teardown():
    vmtest.tear_down(servers=(G.postfix,), daemons=(G.main, G.aux,))
    vmtest.tear_down(servers=(G.farm, G.dns), tmp=G.tmp)


if __name__ == "__main__":
    try:
        vmtest.run_tests(TESTS, per_test_timeout=60, total_timeout=240, setup=setup)
    finally:
        teardown()
