#!/usr/bin/python3
"""test_pool - sessions shared per MX host address (pool.h) seen from
outside: the real vemilter-check against a fake DNS server and a farm of
fake SMTP servers, counting sessions and RCPTs at each farm address.

- 200 forged senders (random local parts) at 200 domains whose MX names
  all resolve to one address, 20 at a time (-j20): at most 20 sessions
  (host_sessions 2 at once, host_session_errors 10 failed RCPTs each,
  host_session_rate 20), at most 2 at once; no sender valid; every invalid
  carries the 550 naming its own address. Control: host_sessions = 0 (one
  session per probe) opens one session per sender.
- 100 real senders at 100 domains of one provider: all valid, one RCPT
  each, the sessions used reported.
- A server with a recipient limit (452 after 3 RCPTs in a transaction):
  RSET and a new MAIL FROM, every address answered right.
- A server that drops the connection after 3 RCPTs (no random-address
  RCPTs here): the address asked when it drops waits for another session
  and is asked once more; every address answered right.
- 25 unknown senders at one address: no session collects more than 10
  failed RCPTs; the transcript says why the session ended.
- An out-of-step server (lagging_reply) shared by several senders: no
  sender keeps a valid or an invalid that was not retracted.
- smtp.c's session mode alone (tests/tools/smtpprobe --more): one
  session, each address its own reply, QUIT proving all; max_rcpt_errors;
  452 -> RSET; STARTTLS and the fallback sender hold for every later
  address (each result says so); a server one reply behind -> the sync
  report says broken.
- A busy session to a slow server (new senders keep coming): it ends by
  probe_timeout, a new one takes the rest.
- A server that sends a stray line and closes while a session waits
  between addresses: out of step, the invalid does not stand.
- A server that never answers RCPT, host_sessions = 1: the senders
  waiting in line end with their callouts' probe_timeout (tempfail), and
  the farm sees one session.

The numbers measured are printed as TAP diagnostics. Loopback only; every
wait bounded.
"""

import os
import random
import subprocess
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "fakes"))

import vmtest  # noqa: E402
from vmtest import TempDir  # noqa: E402
from fakedns import FakeDNS  # noqa: E402
from smtpfarm import SmtpFarm  # noqa: E402
import checkrun  # noqa: E402

CHECK = os.path.join(vmtest.builddir(), "vemilter-check")
SMTPPROBE = os.path.join(vmtest.builddir(), "tests", "tools", "smtpprobe")
HELO = "probe.vemilter.test"
FORGED = "127.0.0.80"    # normal, user alice: 200 forged senders' domains
PROVIDER = "127.0.0.81"  # normal, user alice: 100 real senders' domains
LIMITED = "127.0.0.82"   # normal, users alice and bob, rcpt_limit=3
DROPPING = "127.0.0.83"  # normal, users alice and bob, drop_after=3
FAILING = "127.0.0.84"   # normal, user alice: 25 unknown senders
LAGGING = "127.0.0.85"   # lagging_reply, user alice
HANGING = "127.0.0.86"   # silent_after_rcpt: RCPT is never answered
SLOWPOKE = "127.0.0.87"  # normal, user alice, every reply 0.1 s late
STRAY = "127.0.0.88"     # normal, user alice, a stray line and a close after the 2nd RCPT
TLSHOST = "127.0.0.89"   # starttls, user alice
NULLREF = "127.0.0.90"   # null_sender_refused, user alice: the fallback sender gets in
MAILREF = "127.0.0.91"   # mail_refused, every reply 0.3 s late: a session ends before any RCPT
N_FORGED, N_PROVIDER, N_SMALL, N_FAILING, N_LAG, N_HANG = 200, 100, 10, 25, 6, 5
N_LAG_LONG = 16
N_AGE = 50
N_MAILREF = 5
GROUPS = (("f", N_FORGED, FORGED), ("p", N_PROVIDER, PROVIDER), ("l", N_SMALL, LIMITED),
          ("d", N_SMALL, DROPPING), ("e", N_FAILING, FAILING), ("g", N_LAG, LAGGING),
          ("s", N_HANG, HANGING), ("h", N_LAG_LONG, LAGGING),
          ("a", N_AGE, SLOWPOKE), ("b", 2, STRAY), ("m", N_MAILREF, MAILREF))


def zone():
    return vmtest.mx_zone(("%s%d.test" % (prefix, i), addr) for prefix, n, addr in GROUPS
                          for i in range(1, n + 1))


def write_conf(tmp, name, dns_port, farm_port, *extra):
    """A vemilter-check configuration (checkrun.write_conf)."""
    return checkrun.write_conf(tmp, name, [
        "dns_servers = 127.0.0.1:%d" % dns_port,
        "dns_timeout = 3s",
        "dns_cache_time = 0",
        "helo_name = %s" % HELO,
        "probe_port = %d" % farm_port,
        "probe_allow_networks = 127.0.0.0/8, ::1/128",
        "connect_timeout = 2s",
        "banner_timeout = 2s",
        "command_timeout = 3s",
        "probe_timeout = 20s",
    ], *extra)


def run_check(conf, addresses, jobs, timeout=120):
    """vemilter-check -c conf -v -jN addresses (checkrun.run_check)."""
    return checkrun.run_check(CHECK, conf, addresses, jobs=jobs, timeout=timeout)[:5]


def own_answer(address, fields, kind):
    """The result is this address's own RCPT answer: valid with a 250, or
    invalid with the 550 that names this very address."""
    reply = fields.get("reply", "")
    if kind == "valid":
        return reply.startswith("250")
    return reply.startswith("550 5.1.1") and ("<%s>" % address.lower()) in reply.lower()


def rcpts_for(farm, addr, address):
    """How many times the farm address was asked RCPT TO:<address>."""
    want = "rcpt to:<%s>" % address.lower()
    return sum(1 for c in farm.commands(addr) if c.lower() == want)


def forged_flood(tap, tmp, dns_port, farm, farm_port):
    rng = random.Random()
    senders = ["%s@f%d.test" % ("".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12)), i)
               for i in range(1, N_FORGED + 1)]
    conf = write_conf(tmp, "forged.conf", dns_port, farm_port)
    farm.reset()
    status, out, err, results, secs = run_check(conf, senders, jobs=20)
    farm.wait_idle(FORGED, timeout=10)
    sessions, rcpts = farm.connections(FORGED), farm.count(FORGED, "RCPT")
    kinds = [results.get(s, ("?",))[0] for s in senders]
    invalid = [s for s in senders if results.get(s, ("?",))[0] == "invalid"]
    tap.diag("%d forged senders at %d domains behind %s, -j20: %d sessions (at most %d at once), %d RCPTs, "
             "%d invalid, %d tempfail, %.2f s"
             % (N_FORGED, N_FORGED, FORGED, sessions, farm.max_concurrent(FORGED), rcpts, len(invalid),
                kinds.count("tempfail"), secs))
    tap.diag("forged flood: RCPTs per session %r, failed %r"
             % ([sum(1 for c in s.commands if c.upper().startswith("RCPT")) for s in farm.sessions(FORGED)],
                farm.replies_per_session(FORGED, "550")))
    tap.check("forged flood: at most 20 sessions to the shared host", 0 < sessions <= 20,
              "%d sessions\nstderr:\n%s\n%s" % (sessions, err, out[-3000:]))
    tap.check("forged flood: at most host_sessions (2) at once", farm.max_concurrent(FORGED) <= 2,
              "%d at once" % farm.max_concurrent(FORGED))
    tap.check("forged flood: no sender valid, every one invalid or tempfail (never anything else)",
              len(results) == N_FORGED and all(k in ("invalid", "tempfail") for k in kinds), "%r" % kinds)
    tap.check("forged flood: most senders answered in shared sessions (invalid)", len(invalid) >= N_FORGED // 2,
              "%d invalid" % len(invalid))
    wrong = [s for s in invalid if not own_answer(s, results[s][1], "invalid")]
    tap.check("forged flood: every invalid carries the 550 naming its own address", not wrong,
              "%r" % [(s, results[s]) for s in wrong[:3]])
    per = farm.replies_per_session(FORGED, "550")
    tap.check("forged flood: no session got more than 10 failed RCPTs", per and max(per) <= 10, "%r" % per)

    # control: no sharing, no session budget: one session per sender
    conf = write_conf(tmp, "forged-off.conf", dns_port, farm_port, "host_sessions = 0", "host_session_rate = 0")
    farm.reset()
    status, out, err, results, secs = run_check(conf, senders[:50], jobs=20)
    farm.wait_idle(FORGED, timeout=10)
    tap.diag("control, host_sessions = 0: 50 forged senders -> %d sessions, %.2f s"
             % (farm.connections(FORGED), secs))
    tap.equal("control host_sessions = 0: one session per sender", farm.connections(FORGED), 50)


def provider_run(tap, tmp, dns_port, farm, farm_port):
    senders = ["alice@p%d.test" % i for i in range(1, N_PROVIDER + 1)]
    conf = write_conf(tmp, "provider.conf", dns_port, farm_port)
    farm.reset()
    status, out, err, results, secs = run_check(conf, senders, jobs=20)
    farm.wait_idle(PROVIDER, timeout=10)
    sessions = farm.connections(PROVIDER)
    valid = [s for s in senders if results.get(s, ("?",))[0] == "valid"]
    tap.diag("%d real senders at %d domains of one provider, -j20: %d sessions, %d RCPTs (random addresses "
             "included), %d valid, %.2f s"
             % (N_PROVIDER, N_PROVIDER, sessions, farm.count(PROVIDER, "RCPT"), len(valid), secs))
    tap.diag("provider: RCPTs per session %r, failed (random address) %r"
             % ([sum(1 for c in s.commands if c.upper().startswith("RCPT")) for s in farm.sessions(PROVIDER)],
                farm.replies_per_session(PROVIDER, "550")))
    tap.equal("provider: every sender valid", len(valid), N_PROVIDER, "%r" % results)
    tap.check("provider: each sender's RCPT sent once", all(rcpts_for(farm, PROVIDER, s) == 1 for s in senders),
              "%r" % [(s, rcpts_for(farm, PROVIDER, s)) for s in senders[:5]])
    tap.check("provider: far fewer sessions than senders (at most 20)", 0 < sessions <= 20, "%d" % sessions)


def mixed(prefix, n):
    """alice (exists) and an unknown user, alternating, one per domain"""
    return [("alice" if i % 2 else "nobody%d" % i) + "@%s%d.test" % (prefix, i) for i in range(1, n + 1)]


def check_mixed(tap, what, senders, results):
    wrong = []
    for s in senders:
        kind, fields = results.get(s, ("?", {}))
        want = "valid" if s.startswith("alice@") else "invalid"
        if kind != want or not own_answer(s, fields, kind):
            wrong.append((s, kind, fields))
    tap.check("%s: every address answered right, with its own reply" % what, not wrong, "%r" % wrong)


def limit_run(tap, tmp, dns_port, farm, farm_port):
    senders = mixed("l", N_SMALL)
    conf = write_conf(tmp, "limit.conf", dns_port, farm_port)
    farm.reset()
    status, out, err, results, secs = run_check(conf, senders, jobs=N_SMALL)
    farm.wait_idle(LIMITED, timeout=10)
    tap.diag("recipient limit 3: %d senders -> %d sessions, %d RCPTs, %d 452s, %d RSETs, %.2f s"
             % (N_SMALL, farm.connections(LIMITED), farm.count(LIMITED, "RCPT"),
                sum(farm.replies_per_session(LIMITED, "452")), farm.count(LIMITED, "RSET"), secs))
    check_mixed(tap, "recipient limit (452)", senders, results)
    tap.check("recipient limit: a 452 was met with RSET and a new MAIL FROM",
              farm.count(LIMITED, "RSET") >= 1 and sum(farm.replies_per_session(LIMITED, "452")) >= 1
              and "452 after" in out, out[-3000:])


def drop_run(tap, tmp, dns_port, farm, farm_port):
    senders = mixed("d", N_SMALL)
    # no random-address RCPTs: every RCPT is a sender's, so the drop always hits one in flight
    conf = write_conf(tmp, "drop.conf", dns_port, farm_port, "catchall_probe = no")
    farm.reset()
    status, out, err, results, secs = run_check(conf, senders, jobs=N_SMALL)
    farm.wait_idle(DROPPING, timeout=10)
    dropped = [s for s in farm.sessions(DROPPING) if s.closed_by == "server" and s.commands
               and s.commands[-1].upper().startswith("RCPT")]
    tap.diag("drop after 3 RCPTs: %d senders -> %d sessions (%d dropped mid-way), %d RCPTs, %.2f s"
             % (N_SMALL, farm.connections(DROPPING), len(dropped), farm.count(DROPPING, "RCPT"), secs))
    tap.check("drop: the server did drop sessions mid-way", len(dropped) >= 1, "%r" % farm.sessions(DROPPING))
    check_mixed(tap, "drop mid-session", senders, results)
    tap.check("drop: the address asked at the drop waited for another session (transcript)",
              "it waits for another session" in out, out[-3000:])
    tap.check("drop: each dropped RCPT was asked again (RCPTs = senders + dropped sessions)",
              farm.count(DROPPING, "RCPT") == N_SMALL + len(dropped),
              "%d RCPTs, %d dropped" % (farm.count(DROPPING, "RCPT"), len(dropped)))


def errors_run(tap, tmp, dns_port, farm, farm_port):
    senders = ["nobody%d@e%d.test" % (i, i) for i in range(1, N_FAILING + 1)]
    conf = write_conf(tmp, "errors.conf", dns_port, farm_port)
    farm.reset()
    status, out, err, results, secs = run_check(conf, senders, jobs=N_FAILING)
    farm.wait_idle(FAILING, timeout=10)
    per = farm.replies_per_session(FAILING, "550")
    tap.diag("%d unknown senders: %d sessions, failed RCPTs per session %r, %.2f s"
             % (N_FAILING, farm.connections(FAILING), per, secs))
    tap.check("errors: no session collected more than 10 failed RCPTs", per and max(per) <= 10, "%r" % per)
    tap.check("errors: a session ended after 10 failed RCPTs, and a new one took the rest",
              10 in per and len(per) >= 3 and "10 failed RCPTs in this session: QUIT" in out, "%r" % per)
    wrong = [s for s in senders if results.get(s, ("?",))[0] != "invalid"
             or not own_answer(s, results[s][1], "invalid")]
    tap.check("errors: every sender invalid with its own 550", not wrong, "%r" % [(s, results.get(s)) for s in wrong])


def lagging_run(tap, tmp, dns_port, farm, farm_port):
    senders = mixed("g", N_LAG)
    conf = write_conf(tmp, "lag.conf", dns_port, farm_port, "verify_budget = 8s")
    farm.reset()
    status, out, err, results, secs = run_check(conf, senders, jobs=N_LAG)
    farm.wait_idle(LAGGING, timeout=10)
    bad = []
    for s in senders:
        kind, fields = results.get(s, ("?", {}))
        retracted = fields.get("fact") == "retracted"
        protocol = kind == "tempfail" and "protocol" in fields.get("flags", "")
        if not (retracted or protocol):
            bad.append((s, kind, fields))
    tap.diag("lagging_reply shared by %d senders: %d sessions, outcomes %r, %.2f s"
             % (N_LAG, farm.connections(LAGGING), sorted(results.get(s, ("?",))[0] for s in senders), secs))
    tap.check("lagging_reply in a shared session: no sender keeps a valid or an invalid (each retracted or "
              "a protocol tempfail)", not bad and len(results) == N_LAG, "%r\n%s" % (bad, out[-4000:]))
    tap.check("lagging_reply: some sessions were shared (fewer sessions than senders)",
              farm.connections(LAGGING) < N_LAG, "%d sessions" % farm.connections(LAGGING))


def lagging_long_run(tap, tmp, dns_port, farm, farm_port):
    """One session (host_sessions = 1) to the lagging server that lasts
    longer than an invalid verdict's hold (verify_budget / 4 = 0.75 s): its
    proof comes only when the session is over. Every 5xx it read was
    another command's reply: not one of them may be reported invalid (in
    the milter that reject would be sent before any retraction)."""
    senders = mixed("h", N_LAG_LONG)
    conf = write_conf(tmp, "laglong.conf", dns_port, farm_port, "verify_budget = 3s", "host_sessions = 1")
    farm.reset()
    status, out, err, results, secs = run_check(conf, senders, jobs=N_LAG_LONG)
    farm.wait_idle(LAGGING, timeout=10)
    invalid = [(s, results[s]) for s in senders if results.get(s, ("?",))[0] == "invalid"]
    tap.diag("lagging_reply, one long session for %d senders: %d sessions, outcomes %r, %.2f s"
             % (N_LAG_LONG, farm.connections(LAGGING),
                sorted(results.get(s, ("?",))[0] for s in senders), secs))
    tap.check("lagging_reply, a session longer than the hold: no sender reported invalid",
              not invalid and len(results) == N_LAG_LONG, "%r\n%s" % (invalid, out[-4000:]))


def age_run(tap, tmp, dns_port, farm, farm_port):
    """A session kept busy must not go on for ever: every job answered in
    it, with its callout and its domain's place (domain_probe_limit), waits
    for its end. host_sessions = 1, a server in step but slow (0.1 s a
    reply, about 0.1 s an address), new senders coming as the earlier ones
    get their verdicts (-j2) for longer than probe_timeout (3 s): the
    session ends by then and a new one takes the rest of the line. No
    random-address RCPT (catchall_probe = no, as for the later senders of
    one domain in a session): no failed RCPT ends the session either."""
    senders = ["alice@a%d.test" % i for i in range(1, N_AGE + 1)]
    conf = write_conf(tmp, "age.conf", dns_port, farm_port, "host_sessions = 1", "probe_timeout = 3s",
                      "catchall_probe = no")
    farm.reset()
    status, out, err, results, secs = run_check(conf, senders, jobs=2)
    farm.wait_idle(SLOWPOKE, timeout=10)
    sessions = farm.sessions(SLOWPOKE)
    per = [sum(1 for c in s.commands if c.upper().startswith("RCPT")) for s in sessions]
    tap.diag("a busy session, %d senders at ~0.1 s each: %d sessions, RCPTs per session %r, %.2f s"
             % (N_AGE, len(sessions), per, secs))
    tap.check("a busy session ends by probe_timeout: none asked more than 3 s / 0.1 s (+ margin) addresses",
              len(sessions) >= 3 and max(per or [0]) <= 40, "%r\n%s" % (per, out[-3000:]))
    tap.check("... every sender valid", len(results) == N_AGE and all(r[0] == "valid" for r in results.values()),
              "%r" % results)


def stray_run(tap, tmp, dns_port, farm, farm_port):
    """A session of two (host_sessions = 1) waits between addresses for a
    third; the server sends one line more than it was asked for and closes
    meanwhile. That unread line shows the replies were out of step: the
    invalid must not stand."""
    senders = ["alice@b1.test", "nobody@b2.test"]
    conf = write_conf(tmp, "stray.conf", dns_port, farm_port, "host_sessions = 1", "catchall_probe = no",
                      "host_backoff = 0", "blocked_ttl = 0")
    farm.reset()
    status, out, err, results, secs = run_check(conf, senders, jobs=2)
    farm.wait_idle(STRAY, timeout=10)
    nobody = results.get("nobody@b2.test", ("?", {}))
    tap.diag("stray line at the close between addresses: %d sessions, %r" % (len(farm.sessions(STRAY)), results))
    tap.check("a line unread at the close between addresses: the session is out of step, no invalid stands",
              len(farm.sessions(STRAY)) == 1 and nobody[0] == "tempfail" and "protocol" in nobody[1].get("flags", ""),
              "%r\n%s" % (results, out[-3000:]))


def hanging_run(tap, tmp, dns_port, farm, farm_port):
    senders = ["alice@s%d.test" % i for i in range(1, N_HANG + 1)]
    # the breaker off: no first-contact wait, so the others queue in the pool at once
    conf = write_conf(tmp, "hang.conf", dns_port, farm_port, "host_sessions = 1", "probe_timeout = 2s",
                      "command_timeout = 5s", "blocked_ttl = 0", "host_backoff = 0")
    farm.reset()
    status, out, err, results, secs = run_check(conf, senders, jobs=N_HANG)
    farm.wait_idle(HANGING, timeout=10)
    kinds = [results.get(s, ("?",))[0] for s in senders]
    tap.diag("a server that never answers RCPT, host_sessions = 1, probe_timeout = 2s: %d senders -> %d "
             "session(s), outcomes %r, %.2f s" % (N_HANG, farm.connections(HANGING), kinds, secs))
    tap.equal("hanging server: one session (the others wait in line)", farm.connections(HANGING), 1)
    tap.check("hanging server: every sender tempfail by probe_timeout, the ones in line too",
              kinds == ["tempfail"] * N_HANG and all("probe_timeout" in results[s][1].get("reason", "")
                                                     for s in senders), "%r" % results)
    tap.check("hanging server: over within probe_timeout and the goodbyes (< 10 s)", secs < 10, "%.2f s" % secs)
    tap.check("hanging server: a job in line says so in its transcript", "waiting for one of the 1 sessions" in out,
              out[-2000:])


def early_run(tap, tmp, dns_port, farm, farm_port):
    """A session that fails before any RCPT (MAIL FROM:<> refused) says
    nothing about one address but about the host: the senders waiting in
    line for it get its result, each with a line in its transcript, and no
    session of their own. host_sessions = 1, the breaker off (no
    first-contact wait: the others queue in the pool); the server's 0.3 s
    per reply keeps the session open until every sender is in line."""
    senders = ["alice@m%d.test" % i for i in range(1, N_MAILREF + 1)]
    conf = write_conf(tmp, "early.conf", dns_port, farm_port, "host_sessions = 1", "blocked_ttl = 0",
                      "host_backoff = 0")
    farm.reset()
    status, out, err, results, secs = run_check(conf, senders, jobs=N_MAILREF)
    farm.wait_idle(MAILREF, timeout=10)
    kinds = [results.get(s, ("?",))[0] for s in senders]
    shared = out.count("the session to this host ended before any RCPT: its result is this address's too")
    tap.diag("MAIL FROM:<> refused, %d senders in line: %d session(s), outcomes %r, %d shared, %.2f s"
             % (N_MAILREF, farm.connections(MAILREF), kinds, shared, secs))
    tap.equal("early failure: one session for all (the ones in line share its result)", farm.connections(MAILREF), 1,
              out[-3000:])
    tap.check("early failure: one outcome for every sender, never invalid or valid",
              len(set(kinds)) == 1 and kinds[0] not in ("invalid", "valid", "?"), "%r" % results)
    tap.equal("early failure: each sender in line says whose result it got", shared, N_MAILREF - 1, out[-3000:])


def smtpprobe(farm, addr, port, rcpts, *opts):
    """smtp.c alone in session mode: smtpprobe --more ... -> ({rcpt: fields}, session fields, sessions)"""
    before = farm.connections(addr)
    argv = [SMTPPROBE] + list(opts)
    for r in rcpts[1:]:
        argv += ["--more", r]
    argv += [addr, str(port), rcpts[0]]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    farm.wait_idle(addr, timeout=5)
    jobs, session = {}, {}
    for line in p.stdout.splitlines():
        kv = dict(k_v for k_v in checkrun.KV.findall(line))
        kv = {k: (v[1:-1] if v.startswith('"') else v) for k, v in kv.items()}
        if line.startswith("job "):
            jobs[line.split()[1]] = kv
        elif line.startswith("session "):
            session = kv
    return jobs, session, farm.sessions(addr)[before:], p.stdout


def session_mode_runs(tap, farm, farm_port):
    """smtp.c's session mode without the pool (tests/tools/smtpprobe)."""
    rcpts = ["alice@x.test", "nobody@x.test", "alice@y.test", "ghost@y.test"]
    jobs, session, sessions, out = smtpprobe(farm, FAILING, farm_port, rcpts)
    ok = len(sessions) == 1 and all(
        jobs.get(r, {}).get("code") == ("250" if r.startswith("alice") else "550") for r in rcpts)
    ok = ok and all(("<%s>" % r) in jobs[r].get("text", "") for r in rcpts if not r.startswith("alice"))
    tap.check("session mode: 4 addresses, one session, each its own RCPT reply; QUIT proves it",
              ok and session.get("sync") == "proved" and sessions[0].commands[-1] == "QUIT", out)
    rcpts = ["n1@x.test", "n2@x.test", "n3@x.test", "n4@x.test"]
    jobs, session, sessions, out = smtpprobe(farm, FAILING, farm_port, rcpts, "--max-errors", "2")
    asked = [c for c in sessions[0].commands if c.upper().startswith("RCPT")] if sessions else []
    tap.check("session mode: max_rcpt_errors 2 -> QUIT after the second 550; the rest never asked",
              sorted(jobs) == ["n1@x.test", "n2@x.test"] and len(asked) == 2
              and sessions[0].commands[-1] == "QUIT", out)
    rcpts = ["alice@x.test", "bob@x.test", "alice@y.test", "bob@y.test", "alice@z.test"]
    jobs, session, sessions, out = smtpprobe(farm, LIMITED, farm_port, rcpts)
    tap.check("session mode: 452 after the recipient limit -> RSET, MAIL, the same address again; all 250",
              all(jobs.get(r, {}).get("code") == "250" for r in rcpts) and len(sessions) == 1
              and sessions[0].commands.count("RSET") == 1 and session.get("sync") == "proved", out)
    # What the session learned stays for its later addresses, each result
    # saying so (smtp.c keeps it on the probe: a result is freed once handed over).
    rcpts = ["alice@x.test", "nobody@x.test", "alice@y.test"]
    jobs, session, sessions, out = smtpprobe(farm, TLSHOST, farm_port, rcpts, "--tls", "--server", "mx.test")
    tap.check("session mode over STARTTLS: one TLS session, every address's result says tls=1",
              len(sessions) == 1 and sessions[0].tls and [jobs.get(r, {}).get("tls") for r in rcpts] == ["1"] * 3
              and [jobs[r].get("code") for r in rcpts] == ["250", "550", "250"], out)
    jobs, session, sessions, out = smtpprobe(farm, NULLREF, farm_port, rcpts, "--fallback", "probe@vemilter.test")
    tap.check("session mode, null sender refused: the fallback sender counts for every address (fallback=1)",
              len(sessions) == 1 and [jobs.get(r, {}).get("fallback") for r in rcpts] == ["1"] * 3
              and [jobs[r].get("code") for r in rcpts] == ["250", "550", "250"], out)
    jobs, session, sessions, out = smtpprobe(farm, LAGGING, farm_port, ["alice@x.test", "nobody@x.test"])
    tap.check("session mode: a server one reply behind -> the session's sync report is broken (for both)",
              session.get("sync") == "broken" and len(jobs) == 2, out)


def main():
    tap = vmtest.Tap()
    if not os.access(CHECK, os.X_OK):
        tap.check("vemilter-check exists at %s (set VEMILTER_BUILDDIR)" % CHECK, False)
        return tap.done()
    tmp = TempDir()
    dns = FakeDNS(zone())
    farm = SmtpFarm()
    try:
        dns_port = dns.start()
        farm.add(FORGED, "normal", users=["alice"])
        farm.add(PROVIDER, "normal", users=["alice"])
        farm.add(LIMITED, "normal", users=["alice", "bob"], rcpt_limit=3)
        farm.add(DROPPING, "normal", users=["alice", "bob"], drop_after=3)
        farm.add(FAILING, "normal", users=["alice"])
        farm.add(LAGGING, "lagging_reply", users=["alice"])
        farm.add(HANGING, "silent_after_rcpt", users=["alice"])
        farm.add(SLOWPOKE, "normal", users=["alice"], reply_delay=0.1)
        # 0.3 s before each reply: the second sender's lookups (racing the
        # first's session) are done, and its job queued, before the first
        # RCPT goes out; a session that sees nothing queued then ends after
        # its address (s_last) and the second gets a session of its own
        # (CI under load, once: the case then tested nothing)
        farm.add(STRAY, "normal", users=["alice"], stray_after=2, reply_delay=0.3)
        farm.add(TLSHOST, "starttls", users=["alice"])
        farm.add(NULLREF, "null_sender_refused", users=["alice"])
        farm.add(MAILREF, "mail_refused", users=["alice"], reply_delay=0.3)
        farm_port = farm.start()
        session_mode_runs(tap, farm, farm_port)
        forged_flood(tap, tmp, dns_port, farm, farm_port)
        provider_run(tap, tmp, dns_port, farm, farm_port)
        limit_run(tap, tmp, dns_port, farm, farm_port)
        drop_run(tap, tmp, dns_port, farm, farm_port)
        errors_run(tap, tmp, dns_port, farm, farm_port)
        lagging_run(tap, tmp, dns_port, farm, farm_port)
        lagging_long_run(tap, tmp, dns_port, farm, farm_port)
        age_run(tap, tmp, dns_port, farm, farm_port)
        stray_run(tap, tmp, dns_port, farm, farm_port)
        hanging_run(tap, tmp, dns_port, farm, farm_port)
        early_run(tap, tmp, dns_port, farm, farm_port)
    finally:
        farm.stop()
        dns.stop()
        tmp.remove()
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
