#!/usr/bin/python3
"""test_shared - two vemilter daemons sharing one Redis cache (issue 12).

A real redis-server on a loopback port and a data directory of its own
(started here; nothing else uses it), two daemons (A and B, each with its
own local LMDB tier) with `cache = redis://127.0.0.1:PORT`, a fake DNS
server and a fake SMTP farm, driven by our milter client. Checked:

- a record's round trip: A's probe leaves vemilter:a:<address> in Redis
  (a HASH whose "r" is the record, with a TTL); B answers the same sender
  from it with no probe;
- one probe for the fleet: many concurrent messages from one new sender at
  a slow server, split across A and B, make the farm see exactly 1 RCPT
  for it (the other daemon waits on the lease, then serves A's answer);
- a catch-all fact learned on A saves B its random RCPT (and its probe);
- Redis killed mid-run: mail keeps being verified by probes (no tempfail
  for the cache's sake), the daemon logs "unavailable" once; Redis
  restarted: the daemon logs "connected" and new results reach Redis;
- Redis made slow with DEBUG SLEEP: verdicts still come within the budget;
- a wrong password: `vemilter -n` exits non-zero with a clear error.

The world (fakes, Redis, daemons): tests/lib/fleetlib.py. TAP on stdout;
loopback only; every wait bounded.
"""

import os
import re
import signal
import sys
import threading
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))

import fleetlib  # noqa: E402
import vmtest  # noqa: E402
from milterclient import verdict_digit  # noqa: E402

FARM = {
    "127.0.0.41": ("normal", {"users": ["alice", "bob", "carol", "dave", "erin"]}),
    "127.0.0.42": ("catchall", {}),
    "127.0.0.46": ("slow_banner", {"delay": 1.5, "users": ["burst", "late"]}),
}
ZONE = {
    "ok.test": {"MX": [[10, "mx.ok.test"]]}, "mx.ok.test": {"A": ["127.0.0.41"]},
    "all.test": {"MX": [[10, "mx.all.test"]]}, "mx.all.test": {"A": ["127.0.0.42"]},
    "slow.test": {"MX": [[10, "mx.slow.test"]]}, "mx.slow.test": {"A": ["127.0.0.46"]},
}
CONF = {"banner_timeout": "10s"}  # the slow server (a 1.5 s banner) under a burst of 50


def session(d, sender):
    return verdict_digit(d.socket, sender)


def main():
    return fleetlib.run(body, ZONE, FARM, conf=CONF)


def body(tap, fleet):
    tmp, farm, redis = fleet.tmp, fleet.farm, fleet.redis
    a, b = fleet.connected(tap, metrics=("b",))

    # Round trip: A probes, the record is in Redis with its TTL; B serves it.
    digit, t = session(a, "<alice@ok.test>")
    tap.check("A: valid sender accepted (probed)", digit == "2", t)
    key = "vemilter:a:alice@ok.test"
    vmtest.wait_until(lambda: redis.command("EXISTS", key) == 1, 3)
    rec = redis.command("HGET", key, "r")
    ttl = redis.command("PTTL", key)
    tap.check("Redis holds A's record: a HASH, field r a version-2 record of kind valid, with a TTL",
              rec is not None and rec[0] == 2 and rec[1] == 0 and ttl > 0,
              "r=%r pttl=%r type=%r" % (rec, ttl, redis.command("TYPE", key)))
    tap.check("the writer's id is kept (field w)", (redis.command("HGET", key, "w") or b"").endswith(
        b":%d" % a.proc.pid), repr(redis.command("HGETALL", key)))
    before = farm.count("127.0.0.41", "RCPT TO:<alice@ok.test>")
    digit, t = session(b, "<alice@ok.test>")
    tap.check("B: the same sender accepted with 0 probes (from the shared cache)",
              digit == "2" and farm.count("127.0.0.41", "RCPT TO:<alice@ok.test>") == before == 1,
              "%s\nprobes before %d after %d\n%s" % (t, before, farm.count("127.0.0.41", "RCPT TO:<alice@ok.test>"),
                                                     b.diag()))
    tap.check("B: logged as answered from the shared cache",
              b.wait_log(r"alice@ok\.test: answered from the shared cache", 2) is not None, b.diag)

    # An invalid address: the 550 travels too (B rejects without a probe).
    digit, t = session(a, "<nobody@ok.test>")
    digit_b, t_b = session(b, "<nobody@ok.test>")
    tap.check("invalid on A, rejected on B with no probe of its own",
              digit == "5" and digit_b == "5" and farm.count("127.0.0.41", "RCPT TO:<nobody@ok.test>") == 1,
              t + t_b)

    text = fleet.metrics(b)
    tap.check("B's metrics: the shared answers counted, Redis up",
              'vemilter_cache_lookups_total{result="shared"} 2' in text and "vemilter_shared_cache_up 1" in text
              and int((re.search(r"^vemilter_shared_cache_fetched_total (\d+)", text, re.M) or [0, "0"])[1]) >= 2,
              "\n".join(l for l in text.splitlines() if "shared" in l))

    # One probe for the fleet: 50 concurrent messages from a new sender at
    # a slow server (1.5 s banner), half at A, half at B.
    results = []
    lock = threading.Lock()

    def one(d):
        try:
            r = session(d, "<burst@slow.test>")[0]
        except Exception as e:  # a failed session is a failed check below
            r = repr(e)
        with lock:
            results.append(r)
    threads = [threading.Thread(target=one, args=((a, b)[i % 2],)) for i in range(50)]
    t0 = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    took = time.monotonic() - t0
    rcpts = farm.count("127.0.0.46", "RCPT TO:<burst@slow.test>")
    tap.diag("50 concurrent messages over 2 daemons: %d probe(s), %.2f s" % (rcpts, took))
    tap.check("50 concurrent messages split over A and B: all accepted",
              results.count("2") == 50, repr(results))
    tap.check("... with exactly 1 probe for the fleet (the farm saw 1 RCPT)", rcpts == 1,
              "RCPTs: %d\n%s\n%s" % (rcpts, a.diag(), b.diag()))
    waited = [d for d in (a, b) if d.log_lines(r"burst@slow\.test: another host probes it")]
    # (never both: one of them holds the lease; none only if a machine
    # this loaded let one daemon finish before the other asked)
    tap.check("... at most one daemon waited on the other's lease", len(waited) <= 1,
              "\n".join(l for d in (a, b) for l in d.log_lines(r"burst@slow")))

    # A catch-all fact learned on A saves B its random RCPT.
    digit, t = session(a, "<x@all.test>")
    tap.check("A: catch-all sender accepted", digit == "2", t)
    vmtest.wait_until(lambda: redis.command("EXISTS", "vemilter:d:all.test") == 1, 5)
    tap.check("the catch-all fact is in Redis (vemilter:d:all.test)",
              redis.command("EXISTS", "vemilter:d:all.test") == 1, repr(redis.command("KEYS", "vemilter:*")))
    sessions = farm.connections("127.0.0.42")
    rcpts = farm.count("127.0.0.42", "RCPT TO:")
    digit, t = session(b, "<y@all.test>")
    tap.check("B: another address of the catch-all domain accepted with no session and no RCPT",
              digit == "2" and farm.connections("127.0.0.42") == sessions and
              farm.count("127.0.0.42", "RCPT TO:") == rcpts,
              "%s\nsessions %d->%d rcpts %d->%d" % (t, sessions, farm.connections("127.0.0.42"), rcpts,
                                                    farm.count("127.0.0.42", "RCPT TO:")))

    # Redis lost its scripts (SCRIPT FLUSH, as after a failover): EVALSHA
    # gets NOSCRIPT and the script goes again with EVAL.
    redis.command("SCRIPT", "FLUSH")
    digit, t = session(a, "<bob@ok.test>")
    ok = vmtest.wait_until(lambda: redis.command("EXISTS", "vemilter:a:bob@ok.test") == 1, 3)
    tap.check("after SCRIPT FLUSH the record still reaches Redis (NOSCRIPT: EVAL)", digit == "2" and ok,
              repr(redis.command("KEYS", "vemilter:a:*")) + a.diag())
    digit, t = session(b, "<bob@ok.test>")
    tap.check("... and B answers it with no probe", digit == "2" and
              farm.count("127.0.0.41", "RCPT TO:<bob@ok.test>") == 1, t)

    # Redis slow: DEBUG SLEEP holds it 2 s; a new sender is still verified
    # (the lookup times out after 200 ms, the daemon probes).
    sleeper = redis.debug_sleep(2)
    time.sleep(0.2)
    t0 = time.monotonic()
    digit, t = session(a, "<carol@ok.test>")
    took = time.monotonic() - t0
    sleeper.join(15)
    tap.check("Redis asleep (DEBUG SLEEP 2): a new sender still accepted, in %.2f s (< 1.5 s)" % took,
              digit == "2" and took < 1.5, t + "\n" + a.diag())
    tap.check("A logged the shared cache unavailable (a timeout)",
              a.wait_log(r"shared cache .*: unavailable \(no answer within 200 ms\)", 3) is not None, a.diag)
    tap.check("A: back on Redis after the sleep (logged connected again)",
              a.wait_log(r"(?s)unavailable.*shared cache .*: connected", 10) is not None, a.diag)

    # Redis killed: mail still flows, from probes and the local tier.
    mark_a, mark_b = len(a.log()), len(b.log())
    redis.kill()
    digit, t = session(a, "<dave@ok.test>")
    tap.check("Redis killed: a new sender is still verified (accepted, probed)",
              digit == "2" and farm.count("127.0.0.41", "RCPT TO:<dave@ok.test>") == 1, t + a.diag())
    digit, t = session(a, "<alice@ok.test>")
    tap.check("Redis killed: a known sender is answered from the local tier",
              digit == "2" and farm.count("127.0.0.41", "RCPT TO:<alice@ok.test>") == 1, t)
    digit, t = session(a, "<nobody@ok.test>")
    tap.check("Redis killed: the known invalid sender is still rejected", digit == "5", t)
    tap.check("A logged the shared cache unavailable once",
              len([l for l in a.log()[mark_a:].splitlines() if "unavailable" in l]) == 1,
              a.log()[mark_a:])
    # B's results while down are dropped, and its metrics say so.
    b_down = b.wait_log(r"shared cache .*: unavailable", 5, start=mark_b) is not None
    digit, t = session(b, "<frank@ok.test>")
    text = fleet.metrics(b)
    dropped = int((re.search(r'^vemilter_shared_cache_writes_total\{result="dropped"\} (\d+)', text, re.M)
                   or [0, "0"])[1])
    tap.check("Redis killed: B's writes meanwhile counted as dropped (%d)" % dropped,
              b_down and digit == "5" and dropped >= 1,
              t + "\n".join(l for l in text.splitlines() if "shared" in l))

    # Restarted (same port, empty): back on it, logged, and new results go there.
    redis.start()
    tap.check("Redis restarted: A logged connected again",
              a.wait_log(r"shared cache .*: connected", 35, start=mark_a) is not None, a.diag)
    digit, t = session(a, "<erin@ok.test>")
    ok = vmtest.wait_until(lambda: redis.command("EXISTS", "vemilter:a:erin@ok.test") == 1, 3)
    tap.check("after the restart, a new result reaches Redis", digit == "2" and ok,
              repr(redis.command("KEYS", "*")))

    # Wrong password at start-up: a clear error (never the password), mail
    # still verified locally; the right one in the file and a reload: connected.
    locked = fleet.redis_server("locked", password="s3cret-pw")
    try:
        locked.start()
        pwfile = tmp.write("c.pw", "not-the-one\n", mode=0o600)
        # (by name: resolved once at start, not on the engine thread at each connect)
        c = fleet.daemon("c", locked, cache="redis://localhost:%d" % locked.port, cache_password_file=pwfile)
        tap.check("wrong password at start-up: an error naming AUTH and cache_password_file",
                  c.wait_log(r"error: shared cache .*: AUTH refused .*check cache_password_file", 5)
                  is not None and "not-the-one" not in c.log(), c.diag)
        digit, t = session(c, "<alice@ok.test>")
        tap.check("... and mail is still verified (probed, accepted)", digit == "2", t)
        mark = len(c.log())
        tmp.write("c.pw", "s3cret-pw\n", mode=0o600)
        c.send_signal(signal.SIGHUP)
        tap.check("the right password and a reload: connected",
                  c.wait_log(r"shared cache .*: connected", 10, start=mark) is not None, c.diag)
        tap.check("the password never appears in the log", "s3cret-pw" not in c.log(), c.diag)
        locked.kill()
        tap.check("stops cleanly with Redis gone (exit 0)", c.stop() == 0, c.diag)
    finally:
        locked.kill()

    # The lease holder dies mid-probe: the other host waits for the lease
    # to expire (verify_budget 2 s + probe_timeout 3 s + 2 s), takes it and
    # probes; the client meanwhile gets a 4xx, never a reject.
    short = dict(verify_budget="2s", probe_timeout="3s", banner_timeout="3s")
    d1 = fleet.daemon("d1", **short)
    d2 = fleet.daemon("d2", **short)
    vmtest.wait_until(lambda: d1.log_lines(r"shared cache .*: connected") and
                      d2.log_lines(r"shared cache .*: connected"), 5)
    holder = threading.Thread(target=lambda: _quiet(session, d1, "<late@slow.test>"))
    holder.start()
    took_lease = vmtest.wait_until(lambda: redis.command("EXISTS", "vemilter:lease:a:late@slow.test") == 1, 3)
    d1.kill()
    holder.join(10)
    digit, t = session(d2, "<late@slow.test>")
    tap.check("holder killed: the other host's client gets a 4xx meanwhile (not a reject)",
              took_lease and digit == "4", "%s %s\n%s" % (took_lease, t, d2.diag()))
    probed = d2.wait_log(r"probe late@slow\.test: valid", 12)
    tap.check("... then the other host takes the expired lease and probes (1 RCPT in all)",
              probed is not None and farm.count("127.0.0.46", "RCPT TO:<late@slow.test>") == 1 and
              d2.log_lines(r"late@slow\.test: another host probes it"),
              "%s\nRCPTs %d" % (d2.diag(), farm.count("127.0.0.46", "RCPT TO:<late@slow.test>")))
    digit, t = session(d2, "<late@slow.test>")
    tap.check("... and the retry is accepted from the cache", digit == "2", t)
    d2.kill()

    # A clean stop with the shared client up and one down (sanitizer
    # builds check for leaks at exit).
    rc_a, rc_b = a.stop(), b.stop()
    tap.check("A and B stop cleanly (exit 0)", rc_a == 0 and rc_b == 0, "%r %r" % (rc_a, rc_b))

    # Wrong password: vemilter -n refuses with a clear error.
    locked = fleet.redis_server("locked2", password="right-one")
    try:
        locked.start()
        tmp.write("wrong.pw", "wrong-one\n", mode=0o600)
        tmp.write("right.pw", "right-one\n", mode=0o600)
        for pw, want in (("wrong.pw", False), ("right.pw", True)):
            conf = fleet.conf("n", locked, cache_password_file=tmp.join(pw))
            path = tmp.write("n-%s.conf" % pw, vmtest.format_conf(conf))
            r = vmtest.run([vmtest.vemilter_binary(), "-n", "-c", path], timeout=20)
            out = (r.stdout or "") + (r.stderr or "")
            if want:
                tap.check("vemilter -n with the right password: exit 0", r.returncode == 0, out)
            else:
                tap.check("vemilter -n with a wrong password: exit non-zero, naming AUTH",
                          r.returncode != 0 and "AUTH refused" in out and "wrong-one" not in out, out)
        # Redis slow to answer the AUTH (DEBUG SLEEP): silence, not a
        # refusal; a start must not fail for it (the daemon reconnects).
        sleeper = locked.debug_sleep(4)
        vmtest.wait_until(lambda: not locked.ping(), 3)  # asleep: PING gets no answer within 1 s
        r = vmtest.run([vmtest.vemilter_binary(), "-n", "-c", path], timeout=20)
        out = (r.stdout or "") + (r.stderr or "")
        sleeper.join(10)
        tap.check("vemilter -n with Redis asleep at AUTH: a warning, exit 0 (not a refusal)",
                  r.returncode == 0 and "warning" in out and "refused" not in out, out)
        # A user that may not run scripts (the daemon's writes, fetches
        # and releases are all scripts): -n says so instead of "OK".
        locked.command("ACL", "SETUSER", "noscript", "on", ">other-pw", "~*", "&*", "+@all", "-script",
                   "-evalsha", "-eval")
        tmp.write("noscript.pw", "other-pw\n", mode=0o600)
        conf = fleet.conf("n", locked, cache="redis://noscript@127.0.0.1:%d" % locked.port,
                          cache_password_file=tmp.join("noscript.pw"))
        r = vmtest.run([vmtest.vemilter_binary(), "-n", "-c", tmp.write("n-noscript.conf",
                                                                       vmtest.format_conf(conf))], timeout=20)
        out = (r.stdout or "") + (r.stderr or "")
        tap.check("vemilter -n as a user that may not run scripts: exit non-zero, naming SCRIPT",
                  r.returncode != 0 and "SCRIPT" in out and "other-pw" not in out, out)
        locked.kill()
        r = vmtest.run([vmtest.vemilter_binary(), "-n", "-c", path], timeout=20)
        out = (r.stdout or "") + (r.stderr or "")
        tap.check("vemilter -n with Redis down: a warning, exit 0 (the daemon starts and reconnects)",
                  r.returncode == 0 and "warning" in out and "cannot connect" in out, out)
    finally:
        locked.kill()


def _quiet(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except Exception:
        pass


if __name__ == "__main__":
    sys.exit(main())
