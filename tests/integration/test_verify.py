#!/usr/bin/python3
"""test_verify - the daemon verifying senders, at the milter-protocol level.

This is the MTA-neutral test (Sendmail speaks exactly this protocol; the
Postfix end-to-end tests are in test_postfix_verify.py): the real vemilter
with its engine and LMDB cache, a fake DNS server and a fake SMTP farm,
driven by our milter client. Each outcome class gets its verdict at RCPT;
the budget, the cache, shared probes, one DNS resolution for the
probes of a new domain, exemptions, dry run, the result
header, overrides and the blocklist are checked from the replies, the log
and the farm's record of what it was asked. Then the verdict rules of issue
7 with short lifetimes: a greylisting server is asked again in the
background (at most 3 times), a server that greylists and then accepts is
answered from the cache at the sender's retry, and a stale 550 is never
served (its refresh's answer is: tempfail while the domain is down, valid
once the user exists).

TAP on stdout; loopback only; every wait bounded.
"""

import os
import re
import sys
import threading
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

FARM = {
    "127.0.0.41": ("normal", {"users": ["alice", "burst", "late"]}),
    "127.0.0.42": ("catchall", {}),
    "127.0.0.43": ("greylist", {}),
    "127.0.0.44": ("banner_554", {}),
    "127.0.0.45": ("normal", {}),
    "127.0.0.46": ("slow_banner", {"delay": 2.5}),
    "127.0.0.47": ("normal", {"users": ["skipme"]}),
    "127.0.0.48": ("slow_banner", {"delay": 0.7}),
    "127.0.0.49": ("greylist", {}),
    "127.0.0.50": ("normal", {"users": ["carol", "nobody"]}),
    "127.0.0.51": ("greylist", {}),
    "127.0.0.52": ("normal", {"users": ["alice"]}),
    "127.0.0.53": ("catchall", {}),
    "127.0.0.54": ("normal", {"users": ["u%d" % i for i in range(20)]}),
    "127.0.0.55": ("slow_banner", {"delay": 7}),
}
DOWN = "127.0.0.60"  # nothing listens there: every connection is refused

ZONE = {
    "ok.test": {"MX": [[10, "mx.ok.test"]]}, "mx.ok.test": {"A": ["127.0.0.41"]},
    "all.test": {"MX": [[10, "mx.all.test"]]}, "mx.all.test": {"A": ["127.0.0.42"]},
    "grey.test": {"MX": [[10, "mx.grey.test"]]}, "mx.grey.test": {"A": ["127.0.0.43"]},
    "block.test": {"MX": [[10, "mx.block.test"]]}, "mx.block.test": {"A": ["127.0.0.44"]},
    "plain.test": {"MX": [[10, "mx.plain.test"]]}, "mx.plain.test": {"A": ["127.0.0.45"]},
    "slow.test": {"MX": [[10, "mx.slow.test"]]}, "mx.slow.test": {"A": ["127.0.0.46"]},
    "slower.test": {"MX": [[10, "mx.slower.test"]]}, "mx.slower.test": {"A": ["127.0.0.55"]},
    "partner.test": {"MX": [[10, "mx.partner.test"]]}, "mx.partner.test": {"A": ["127.0.0.47"]},
    "limit.test": {"MX": [[10, "mx.limit.test"]]}, "mx.limit.test": {"A": ["127.0.0.48"]},
    "grey2.test": {"MX": [[10, "mx.grey2.test"]]}, "mx.grey2.test": {"A": ["127.0.0.49"]},
    "flip.test": {"MX": [[10, "mx.flip.test"]]}, "mx.flip.test": {"A": ["127.0.0.51"]},
    "neg.test": {"MX": [[10, "mx.neg.test"]]}, "mx.neg.test": {"A": ["127.0.0.52"]},
    "flood.test": {"MX": [[10, "mx.flood.test"]]}, "mx.flood.test": {"A": ["127.0.0.53"]},
    "twenty.test": {"MX": [[10, "mx.twenty.test"]]}, "mx.twenty.test": {"A": ["127.0.0.54"]},
}


def moved(zone, name, address):
    """zone with name's A record pointing elsewhere (the domain moves its MX)."""
    z = {k: dict(v) for k, v in zone.items()}
    z[name] = {"A": [address]}
    return z


def session(d, sender, rcpts, client="198.51.100.7", headers=None):
    """One message over a fresh milter connection; returns (mail reply,
    [rcpt replies], eom reply or None, transcript)."""
    c = MilterClient(d.socket, timeout=20)
    try:
        c.session(client_addr=client)
        m = c.mail(sender, macros={"i": "Q1"})
        replies = []
        eom = None
        if m.code == "c":
            for r in rcpts:
                replies.append(c.rcpt(r))
            if headers is not None and all(r.code == "c" for r in replies):
                c.data()
                for name, value in headers:
                    c.header(name, value)
                c.eoh()
                c.body("hello\r\n")
                eom = c.eom()
        c.quit()
        return m, replies, eom, c.transcript_text()
    finally:
        c.close()


def verdicts(d, sender):
    return [l for l in d.log_lines(r"verdict ") if "sender=%s" % sender in l]


def rcpt_code(d, sender):
    """One message; the RCPT reply's first digit ('2' for continue/accept),
    and the last verdict line for the sender."""
    m, r, _, t = session(d, sender, ["<bob@local.test>"])
    got = r[0] if r else m
    digit = "2" if got.code in ("c", "a") else (got.smtp_code or "?")[0]
    lines = verdicts(d, sender)
    return digit, (lines[-1] if lines else ""), t


def issue7(tap, tmp, conf, dns, farm, daemons):
    """Greylist re-probes and stale negatives, with lifetimes of a second."""
    short = dict(conf, cache=tmp.join("cache7.lmdb"), verify_budget="3s", greylist_retry="1s",
                 temporary_ttl="1s", negative_refresh="1s", negative_ttl="1h", dns_cache_time="0")
    d = Daemon(tmp, short, name="issue7", debug=True)
    daemons.append(d)
    d.start()

    # A server that greylists for ever: the sender gets 4xx; the verifier asks
    # again after greylist_retry, three times at most.
    digit, line, t = rcpt_code(d, "<g@grey2.test>")
    tap.check("greylisted sender: 4xx on the first try", digit == "4", t + "\n" + line)
    first = d.wait_log(r"probe g@grey2\.test: .*", 5)
    if first is None or "greylist" not in first.group(0):
        # The callout flags greylisting (OUTCOME_F_GREYLIST); without it there
        # is nothing to ask again.
        tap.skip("greylist re-probes: at most 3, greylist_retry apart",
                 "the callout does not flag greylisting: %s" % (first.group(0) if first else "no probe line"))
    else:
        t0 = time.monotonic()
        saw = vmtest.wait_until(lambda: farm.count("127.0.0.49", "RCPT TO:<g@grey2.test>") >= 4, 15)
        took = time.monotonic() - t0
        time.sleep(2.5)  # room for a fourth re-probe, which must not come
        n = farm.count("127.0.0.49", "RCPT TO:<g@grey2.test>")
        retries = d.log_lines(r"probe g@grey2\.test: .*\(greylist retry\)")
        tap.check("greylist re-probes: the farm saw 1 probe + 3 re-probes, no more (saw %d in %.1f s)" % (n, took),
                  saw and n == 4 and len(retries) == 3, lambda: "\n".join(d.log_lines(r"grey2")))
        tap.check("greylist re-probes: about greylist_retry (1 s) apart", took >= 2.5, "took %.1f s" % took)

    # A server that greylists, then accepts: the background re-probe fills the
    # cache, so the sender's retry is answered at once.
    digit, line, t = rcpt_code(d, "<carol@flip.test>")
    tap.check("greylist then accept: 4xx on the first try", digit == "4", t + "\n" + line)
    dns.set_zone(moved(ZONE, "mx.flip.test", "127.0.0.50"))
    flagged = "greylist" in (d.wait_log(r"probe carol@flip\.test: .*", 5) or [""])[0]
    if not flagged:
        tap.skip("greylist then accept: the re-probe fills the cache", "the callout does not flag greylisting")
    else:
        reprobed = vmtest.wait_until(lambda: d.wait_log(r"probe carol@flip\.test: valid .*greylist retry", 0.1), 5)
        digit, line, t = rcpt_code(d, "<carol@flip.test>")
        tap.check("greylist then accept: the retry is accepted from the cache (no probe of its own)",
                  reprobed and digit == "2" and "source=cached" in line, t + "\n" + line + "\n" + d.diag())

    # A stale 550 is never served: past negative_refresh the address is asked
    # again and the client gets that answer, tempfail while the MX is down.
    digit, line, t = rcpt_code(d, "<nobody@neg.test>")
    tap.check("invalid sender: 5xx", digit == "5", t + "\n" + line)
    digit, line, t = rcpt_code(d, "<nobody@neg.test>")
    tap.check("invalid again at once: 5xx from the cache", digit == "5" and "source=cached" in line, line)
    time.sleep(1.3)
    dns.set_zone(moved(ZONE, "mx.neg.test", DOWN))
    before = len(d.log_lines(r"probe nobody@neg\.test: "))
    digit, line, t = rcpt_code(d, "<nobody@neg.test>")
    tap.check("stale 550, MX now down: the client gets 4xx (the refresh's tempfail), not the stale 550",
              digit == "4" and "source=probed" in line and len(d.log_lines(r"probe nobody@neg\.test: ")) == before + 1,
              t + "\n" + line)
    time.sleep(1.3)
    dns.set_zone(moved(ZONE, "mx.neg.test", "127.0.0.50"))
    digit, line, t = rcpt_code(d, "<nobody@neg.test>")
    tap.check("the user exists now: accepted (probed again, not the stale 550)",
              digit == "2" and "source=probed" in line, t + "\n" + line)
    dns.set_zone(ZONE)
    tap.equal("issue 7: clean stop", d.stop(), 0, d.diag)


def flood(tap, tmp, conf, farm, daemons):
    """Issue 8's forged flood: 200 random local parts at one domain from one
    client, 20 at a time, with the default budgets (client_probe_rate 60,
    domain_probe_rate 60, domain_probe_limit 5). The server accepts every
    RCPT and the catch-all probe is off, so each probe is a real "valid" and
    nothing is answered from a domain fact: what bounds the probes is the
    budgets alone. Then, after the rate window turns, a sender that was
    tempfailed is probed at its retry (no stuck "verification in progress")."""
    import random
    # host_session_rate = 0: this measures the client and domain budgets
    # alone; every probe goes to the one farm address, whose own budget
    # (20 sessions a minute) would otherwise be what bounds them
    fc = dict(conf, verify_budget="8s", catchall_probe="no", cache=tmp.join("flood.lmdb"),
              host_session_rate="0")
    d5 = Daemon(tmp, fc, name="flood", debug=True)
    daemons.append(d5)
    d5.start()
    rnd = random.Random(8)
    senders = ["<%s@flood.test>" % "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz0123456789")
                                           for _ in range(12)) for _ in range(200)]
    results = {}
    lock = threading.Lock()
    queue = list(senders)

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                sender = queue.pop()
            t0 = time.monotonic()
            try:
                m, r, _, _ = session(d5, sender, ["<x@local.test>"], client="203.0.113.9")
                got = r[0] if r else m
                code = "2" if got.code in ("c", "a") else (got.smtp_code or "?")[0]
            except Exception as e:  # noqa: BLE001 - reported below
                code = repr(e)
            with lock:
                results[sender] = (code, time.monotonic() - t0)
    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(20)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    took = time.monotonic() - t0
    probes = farm.count("127.0.0.53", "RCPT TO:")
    sessions = farm.connections("127.0.0.53")
    codes = [c for c, _ in results.values()]
    slowest = max((e for _, e in results.values()), default=0)
    accepted, tempfailed, rejected = codes.count("2"), codes.count("4"), codes.count("5")
    print("# flood: 200 senders in %.1f s: %d probes (RCPT) in %d sessions; %d accepted, "
               "%d tempfailed, %d rejected; slowest answer %.2f s" %
               (took, probes, sessions, accepted, tempfailed, rejected, slowest), flush=True)
    tap.check("flood: every one of 200 messages answered (%d)" % len(results),
              len(results) == 200 and accepted + tempfailed == 200, repr(sorted(set(codes))))
    tap.check("flood: none rejected (%d)" % rejected, rejected == 0, d5.diag)
    tap.check("flood: probes within the budgets (%d <= 60), each probed sender accepted (%d)" %
              (probes, accepted), 1 <= probes <= 60 and accepted == probes, d5.diag)
    tap.check("flood: each answered within verify_budget (slowest %.2f s)" % slowest,
              slowest <= 8 + 2, d5.diag)
    over = d5.log_lines(r"over budget: ")
    tap.check("flood: the budget is logged once per party a minute (%d lines)" % len(over),
              1 <= len(over) <= 3, "\n".join(over))
    # After the window turns, a tempfailed sender's retry is probed.
    late = [s for s in senders if results.get(s, ("",))[0] == "4"][0]
    time.sleep(61)
    digit, line, t = rcpt_code_from(d5, late, "203.0.113.9")
    tap.check("flood: after the window turns, a tempfailed sender's retry gets a real answer",
              digit == "2" and "source=probed" in line and
              farm.count("127.0.0.53", "RCPT TO:" + late) == 1, t + "\n" + line)
    tap.equal("flood: clean stop", d5.stop(), 0, d5.diag)


def decided_at_mail(tap, tmp, conf, farm, daemons):
    """Issue 10: without a result header, a sender whose answer is known at
    MAIL FROM and accepted ends the message there (SMFIR_ACCEPT to MAIL): the
    MTA never asks about its recipients. A known answer that refuses still
    waits for each RCPT, so postmaster@ stays reachable; an unknown one is
    probed while the recipients come."""
    plain = dict(conf, result_header="", cache=tmp.join("atmail.lmdb"), verify_budget="5s")
    d = Daemon(tmp, plain, name="atmail", debug=True)
    daemons.append(d)
    d.start()
    m, r, _, t = session(d, "<alice@ok.test>", ["<bob@local.test>"])
    tap.check("at MAIL: an unknown sender continues to RCPT and is accepted there",
              m.code == "c" and len(r) == 1 and r[0].code in ("c", "a"), t)
    m, r, _, t = session(d, "<alice@ok.test>", ["<bob@local.test>"])
    lines = verdicts(d, "<alice@ok.test>")
    tap.check("at MAIL: a cached valid sender is accepted at MAIL FROM, no RCPT asked",
              m.code == "a" and r == [] and lines and "source=cached" in lines[-1]
              and "rcpt=" not in lines[-1], t + "\n" + "\n".join(lines))
    session(d, "<nobody@ok.test>", ["<bob@local.test>"])
    m, r, _, t = session(d, "<nobody@ok.test>", ["<postmaster@local.test>", "<bob@local.test>"])
    tap.check("at MAIL: a cached invalid sender continues; postmaster accepted, others refused at RCPT",
              m.code == "c" and len(r) == 2 and r[0].code == "c" and r[1].code == "y"
              and r[1].smtp_code[0] == "5", t)
    tap.equal("at MAIL: clean stop", d.stop(), 0, d.diag)


def stop_keeps_probes(tap, tmp, conf, farm, daemons):
    """Issue 11: a stop lets the probes in flight finish and stores their
    answers. A sender whose MX greets after 7 s gets the budget's 4xx at
    1 s; the daemon is stopped at once; it waits for the probe, stores the
    answer, exits 0; after a restart on the same cache the sender's retry is
    answered from it, with no new session at its MX."""
    kept = dict(conf, result_header="", cache=tmp.join("stopkeep.lmdb"), verify_budget="1s")
    d = Daemon(tmp, kept, name="stopkeep", debug=True)
    daemons.append(d)
    d.start()
    before = farm.connections("127.0.0.55")
    m, r, _, t = session(d, "<kept@slower.test>", ["<bob@local.test>"])
    tap.check("stop keeps probes: the first try gets the budget's 4xx",
              r and r[0].code == "y" and r[0].smtp_code[0] == "4", t)
    t0 = time.monotonic()
    rc = d.stop(timeout=30)
    took = time.monotonic() - t0
    tap.check("stop keeps probes: the stop waited for the probe (%.1f s) and exited 0" % took,
              rc == 0 and took >= 0.5 and d.wait_log(r"waiting up to \d+ s for 1 probe", 1) is not None,
              d.diag)
    d2 = Daemon(tmp, kept, name="stopkeep2", debug=True)
    daemons.append(d2)
    d2.start()
    sessions = farm.connections("127.0.0.55")
    m, r, _, t = session(d2, "<kept@slower.test>", ["<bob@local.test>"])
    lines = verdicts(d2, "<kept@slower.test>")
    tap.check("stop keeps probes: after the restart the retry is answered from the cache, no new session",
              farm.connections("127.0.0.55") == sessions == before + 1 and lines
              and "source=cached" in lines[-1], "%s\n%s\nsessions %d -> %d -> %d" % (
                  t, "\n".join(lines), before, sessions, farm.connections("127.0.0.55")))
    tap.equal("stop keeps probes: clean stop", d2.stop(), 0, d2.diag)


def rcpt_code_from(d, sender, client):
    """rcpt_code from a given client address."""
    m, r, _, t = session(d, sender, ["<bob@local.test>"], client=client)
    got = r[0] if r else m
    digit = "2" if got.code in ("c", "a") else (got.smtp_code or "?")[0]
    lines = verdicts(d, sender)
    return digit, (lines[-1] if lines else ""), t


def main():
    tap = vmtest.Tap()
    tmp = TempDir()
    dns = FakeDNS(ZONE)
    farm = SmtpFarm()
    daemons = []
    try:
        dns_port = dns.start()
        for address, (behaviour, options) in FARM.items():
            farm.add(address, behaviour, **options)
        farm_port = farm.start()
        cache = tmp.join("cache.lmdb")
        conf = probe_conf(tmp, "verify.sock", dns_port, farm_port, **{
            "connect_timeout": "2s",
            "banner_timeout": "10s", "command_timeout": "5s", "probe_timeout": "20s",
            "verify_budget": "1s", "cache": cache, "result_header": "X-Sender-Verification",
            "sender_domain_blocklist": "blocked.test",
        })
        d = Daemon(tmp, conf, name="verify", debug=True)
        daemons.append(d)
        d.start()

        def check(name, sender, want, rcpt="<bob@local.test>"):
            m, r, _, t = session(d, sender, [rcpt])
            got = r[0] if r else m
            ok = (want == "accept" and m.code == "c" and got.code in ("c", "a")) or \
                 (want != "accept" and got.code == "y" and got.smtp_code[0] == want[0])
            tap.check(name, ok, "got %r\n%s\n%s" % (got, t, "\n".join(verdicts(d, sender))))
            return got

        check("valid sender: RCPT accepted", "<alice@ok.test>", "accept")
        tap.check("valid: logged with outcome and source=probed",
                  any("reason=valid" in l and "source=probed" in l for l in verdicts(d, "<alice@ok.test>")),
                  d.diag)
        r = check("invalid sender: 5xx at RCPT", "<nobody@ok.test>", "5")
        tap.check("invalid: the reply names the address", r.text is not None and "nobody@ok.test" in r.text,
                  repr(r))
        check("no_domain sender: 5xx at RCPT", "<x@nxdomain.test>", "5")
        check("catch_all sender: accepted", "<x@all.test>", "accept")
        check("tempfail (greylisted probe): deferred (4xx) by default", "<x@grey.test>", "4")
        check("blocked (554 banner): accepted", "<x@block.test>", "accept")
        check("unverifiable (UTF-8 local part, no SMTPUTF8): accepted", "<j\u00f6rg@plain.test>", "accept")
        m, r, _, t = session(d, "<nobody@ok.test>", ["<postmaster@local.test>", "<bob@local.test>"])
        tap.check("postmaster exempt from an invalid sender's rejection", r[0].code == "c" and r[1].code == "y",
                  t)

        # Cached: the same sender again needs no probe.
        before = farm.count("127.0.0.41", "RCPT TO:<alice@ok.test>")
        check("valid again: accepted", "<alice@ok.test>", "accept")
        tap.check("valid again: answered from the cache (no new probe, source=cached)",
                  farm.count("127.0.0.41", "RCPT TO:<alice@ok.test>") == before
                  and "source=cached" in verdicts(d, "<alice@ok.test>")[-1], d.diag)

        # Budget: a probe slower than verify_budget -> 4xx; it goes on, and
        # the retry is answered from the cache.
        r = check("budget exceeded: 4xx at RCPT", "<user@slow.test>", "4")
        tap.check("budget exceeded: logged as such",
                  any("reason=budget_exceeded" in l for l in verdicts(d, "<user@slow.test>")), d.diag)
        settled = vmtest.wait_until(lambda: d.wait_log(r"probe user@slow\.test: ", 0.1), 15)
        tap.check("budget exceeded: the probe finished in the background", settled, d.diag)
        m, r, _, t = session(d, "<user@slow.test>", ["<bob@local.test>"])
        last = verdicts(d, "<user@slow.test>")[-1]
        tap.check("budget exceeded: the retry is answered at once from the cache",
                  r and r[0].code in ("c", "a") and "source=cached" in last, t + "\n" + last)

        # Fifty simultaneous messages from one new sender: one probe.
        results = []

        def one():
            try:
                code = session(d, "<burst@ok.test>", ["<bob@local.test>"])[1][0].code
                results.append("c" if code == "a" else code)
            except Exception as e:  # noqa: BLE001 - reported below
                results.append(repr(e))
        threads = [threading.Thread(target=one) for _ in range(50)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        probes = farm.count("127.0.0.41", "RCPT TO:<burst@ok.test>")
        tap.check("burst of 50 identical senders: all accepted", results.count("c") == 50, repr(results))
        tap.check("burst of 50 identical senders: exactly 1 probe", probes == 1, "probes: %d" % probes)

        # Twenty simultaneous messages from twenty new senders at one new
        # domain: one resolution, shared by the probes that start at once
        # (domain_probe_limit of them) and kept for the ones that follow.
        dns.clear_queries()
        twenty = []

        def one_of_twenty(i):
            try:
                session(d, "<u%d@twenty.test>" % i, ["<bob@local.test>"])
                twenty.append(i)
            except Exception as e:  # noqa: BLE001 - reported below
                twenty.append(repr(e))
        threads = [threading.Thread(target=one_of_twenty, args=(i,)) for i in range(20)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        probed = vmtest.wait_until(
            lambda: all(farm.count("127.0.0.54", "RCPT TO:<u%d@twenty.test>" % i) == 1 for i in range(20)), 20)
        q = [(n.lower(), t) for n, t, _ in dns.queries]
        tap.check("twenty new senders at one new domain: each probed once", probed and len(twenty) == 20,
                  lambda: "%r\n%s" % (twenty, d.diag()))
        tap.equal("twenty new senders at one new domain: 1 MX query (one resolution)",
                  q.count(("twenty.test", "MX")), 1, "queries: %r" % (q,))
        tap.equal("twenty new senders at one new domain: its host's A and AAAA asked once",
                  (q.count(("mx.twenty.test", "A")), q.count(("mx.twenty.test", "AAAA"))), (1, 1),
                  "queries: %r" % (q,))

        # The result header replaces a client's forged one.
        m, r, eom, t = session(d, "<alice@ok.test>", ["<bob@local.test>"],
                               headers=[("Subject", "hi"), ("X-Sender-Verification", "valid (forged)")])
        mods = [(x.code, x.data) for x in (eom.mods if eom else [])]
        added = [data for code, data in mods if code == "h" and data.startswith(b"X-Sender-Verification\0")]
        removed = [data for code, data in mods if code == "m" and b"X-Sender-Verification" in data]
        tap.check("result header: the client's header removed", len(removed) == 1, "%r\n%s" % (mods, t))
        tap.check("result header: ours added naming the outcome",
                  len(added) == 1 and b"valid (cached" in added[0], "%r" % mods)

        # Every accepted message gets the header, whatever let it through:
        # here an exempt recipient lets a failed sender's message in.
        for name, sender, want in (("bad syntax", "<a..b@ok.test>", b"bad_syntax ("),
                                   ("blocklisted", "<x@blocked.test>", b"blocklisted (blocked.test)")):
            m, r, eom, t = session(d, sender, ["<postmaster@local.test>"], headers=[("Subject", "hi")])
            added = [x.data for x in (eom.mods if eom else [])
                     if x.code == "h" and x.data.startswith(b"X-Sender-Verification\0")]
            tap.check("result header: a %s sender let in by postmaster@ is named" % name,
                      len(added) == 1 and want in added[0], "%r\n%s" % (added, t))

        # A sender whose verification outlasted verify_budget: the ordinary
        # recipient is deferred, postmaster@ lets the message in; the header
        # must say the budget ran out (it was waited for), not that only
        # exempt recipients were given.
        c = MilterClient(d.socket, timeout=20)
        try:
            c.session(client_addr="198.51.100.7")
            m = c.mail("<budget-hdr@slow.test>", macros={"i": "Q1"})
            r = [c.rcpt("<bob@local.test>"), c.rcpt("<postmaster@local.test>")]
            c.data()
            c.header("Subject", "hi")
            c.eoh()
            c.body("hello\r\n")
            eom = c.eom()
            c.quit()
        finally:
            c.close()
        added = [x.data for x in (eom.mods if eom else [])
                 if x.code == "h" and x.data.startswith(b"X-Sender-Verification\0")]
        tap.check("result header: a sender past verify_budget let in by postmaster@ is named as such",
                  m.code == "c" and r[0].code == "y" and r[1].code == "c" and len(added) == 1
                  and b"no answer within verify_budget" in added[0],
                  "%r %r\n%r\n%s" % (m, r, added, c.transcript_text()))

        # One message to 30 recipients from a refused sender: one verdict
        # line, then one with the count of the recipients it repeated for.
        mark = d.log_size()
        m, r, _, t = session(d, "<nobody@ok.test>", ["<u%d@local.test>" % i for i in range(30)])
        summary = d.wait_log(r"sender=<nobody@ok\.test> action=reject reason=invalid repeated_rcpts=(\d+)", 5, mark)
        lines = [l for l in d.log()[mark:].splitlines() if "verdict " in l and "sender=<nobody@ok.test>" in l]
        tap.check("30 refused recipients: 2 verdict lines (first, then repeated_rcpts=29)",
                  len(r) == 30 and all(x.code == "y" for x in r) and summary is not None
                  and summary.group(1) == "29" and len(lines) == 2, "\n".join(lines) + "\n" + t)

        # Restart: the LMDB cache survives, the sender needs no new probe.
        before = farm.count("127.0.0.41", "RCPT TO:<alice@ok.test>")
        tap.equal("restart: clean stop", d.stop(), 0, d.diag)
        stats = [re.search(r"engine: (\d+) probes \((\d+) refreshes\), (\d+) requests joined a probe, "
                           r"(\d+) cache hits", l) for l in d.log_lines(r"engine: ")]
        stats = [m for m in stats if m]
        # The burst's 49 other requests either joined its one probe or, once
        # it had finished, were answered from the cache.
        tap.check("at stop the engine's counters are logged: joined + cache hits cover the burst",
                  len(stats) == 1 and int(stats[0].group(3)) + int(stats[0].group(4)) >= 49,
                  lambda: "%s\n%s" % (d.log_lines(r"engine: "), d.diag()))
        d2 = Daemon(tmp, conf, name="verify2", debug=True)
        daemons.append(d2)
        d2.start()
        m, r, _, t = session(d2, "<alice@ok.test>", ["<bob@local.test>"])
        tap.check("after a restart: accepted from the cache with no new probe",
                  r and r[0].code in ("c", "a") and farm.count("127.0.0.41", "RCPT TO:<alice@ok.test>") == before,
                  t + "\n" + d2.diag())
        tap.equal("restart: clean stop again", d2.stop(), 0, d2.diag)

        # A corrupt cache file is moved aside and mail still flows.
        with open(cache, "wb") as f:
            f.write(b"this is not an LMDB file\n" * 400)
        d3 = Daemon(tmp, conf, name="verify3", debug=True)
        daemons.append(d3)
        d3.start()
        m, r, _, t = session(d3, "<alice@ok.test>", ["<bob@local.test>"])
        tap.check("corrupt cache: mail still flows", r and r[0].code in ("c", "a"), t + "\n" + d3.diag())
        tap.check("corrupt cache: moved aside, logged",
                  any(re.search(r"corrupt", l, re.I) for l in d3.log_lines()) and
                  any(n.startswith("cache.lmdb.corrupt") for n in os.listdir(tmp.path)), d3.diag)
        tap.equal("corrupt cache: clean stop", d3.stop(), 0, d3.diag)

        # Per-domain limits: at most 2 probes to one domain at once, at most
        # 4 started per minute; the rest tempfail (accepted by default).
        limited = dict(conf, domain_probe_limit=2, domain_probe_rate=4, verify_budget="8s", cache="")
        d4 = Daemon(tmp, limited, name="limits", debug=True)
        daemons.append(d4)
        d4.start()
        senders = ["<%s@limit.test>" % u for u in ("alice", "bob", "user", "postmaster")]
        codes = {}

        def send(sender):
            try:
                code = session(d4, sender, ["<x@local.test>"])[1][0].code
                codes[sender] = "c" if code == "a" else code
            except Exception as e:  # noqa: BLE001 - reported below
                codes[sender] = repr(e)
        t0 = time.monotonic()
        threads = [threading.Thread(target=send, args=(x,)) for x in senders]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        took = time.monotonic() - t0
        tap.check("domain_probe_limit: 4 senders at one domain all accepted",
                  all(c == "c" for c in codes.values()) and len(codes) == 4, repr(codes))
        peak = farm.max_concurrent("127.0.0.48")
        tap.check("domain_probe_limit 2: never more than 2 connections to the domain at once (peak %d)" % peak,
                  1 <= peak <= 2, d4.diag)
        tap.check("domain_probe_limit 2: the others waited their turn (%.1f s for 4 probes of 0.7 s)" % took,
                  took >= 1.3, d4.diag)
        m, r, _, t = session(d4, "<fifth@limit.test>", ["<x@local.test>"])
        line = verdicts(d4, "<fifth@limit.test>")
        tap.check("domain_probe_rate 4: the fifth new probe this minute is not made (tempfail: 4xx)",
                  r and r[0].code == "y" and r[0].smtp_code[0] == "4" and line and "reason=tempfail" in line[-1]
                  and "domain_probe_rate" in line[-1] and farm.count("127.0.0.48", "RCPT TO:<fifth@") == 0,
                  t + "\n" + "\n".join(line))
        tap.equal("limits: clean stop", d4.stop(), 0, d4.diag)

        issue7(tap, tmp, conf, dns, farm, daemons)
        flood(tap, tmp, conf, farm, daemons)
        decided_at_mail(tap, tmp, conf, farm, daemons)
        stop_keeps_probes(tap, tmp, conf, farm, daemons)
    finally:
        vmtest.tear_down(servers=(farm, dns), daemons=daemons, tmp=tmp)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
