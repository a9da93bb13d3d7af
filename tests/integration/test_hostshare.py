#!/usr/bin/python3
"""test_hostshare - the circuit breaker shared across a fleet on Redis (issue 12).

A real redis-server on loopback (tests/lib/redisserver.py), a fake DNS
server, a fake SMTP farm and vemilter daemons sharing the Redis cache,
driven by our milter client. Checked:

- both connections of a daemon to Redis (the cache's, the channel's) have
  TCP keepalive (the channel may be silent for hours);
- A meets an MX address that answers 554 at the greeting: Redis holds
  "vemilter:m:<address>" (state B, the reply, a TTL within blocked_ttl);
  B, already running, learns it from the channel (logged) and, asked a
  sender at ANOTHER domain on that MX, makes no connection there (the
  farm's session count does not move) and never rejects;
- an MX address nobody listens on: A's backoff reaches Redis (state O) and
  B learns it;
- C, started after both were written, learns them from its SCAN at connect
  and makes no connection to the blocking address either;
- a record whose window is longer than our blocked_ttl is cut to it;
- a user that may not subscribe (no channel permission): a warning that
  names the channel, the cache stays up (no flapping), and records written
  before are still learned by the SCAN;
- Redis down: nothing is learned; B connects to a new blocking address
  itself (the farm counts it: the control, so the count can fail), valid
  senders are still accepted, no reject or tempfail for the cache's sake;
- Redis restarted: every daemon reconnects and subscribes again, and a
  block met by A is learned by B again;
- a db of 700000 other keys and 40 breaker records: a daemon's SCAN at
  connect walks it all and learns the 40;
- a refusal is about the probing address: F probes from 127.0.0.2, G from
  127.0.0.3, and an MX refuses (554 at the greeting) only 127.0.0.2. F's
  record carries its source; G does not apply it (not an address of
  G's: logged) and keeps verifying there (a valid sender accepted, an
  unknown one rejected, by its own sessions from 127.0.0.3); a backoff F
  meets is still learned by G. A record without a source (version 1) is
  not applied as a refusal, and is as a backoff. (A and B above probe
  from 127.0.0.1, an address every host has: they learn each other's.)

The world (fakes, Redis servers, daemons): tests/lib/fleetlib.py. TAP on
stdout; loopback only; every wait bounded.
"""

import os
import sys
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))

import fleetlib  # noqa: E402
import vmtest  # noqa: E402
from milterclient import verdict_digit  # noqa: E402
import redisserver  # noqa: E402

BLOCKING = "127.0.0.51"  # banner_554, shared by blk1..blk3.test
BLOCKING2 = "127.0.0.52"  # banner_554, met while Redis is down (blk4, blk5)
GOOD = "127.0.0.53"
BLOCKING3 = "127.0.0.55"  # banner_554, met after Redis is back (blk6, blk7)
DEAD = "127.0.0.54"  # not in the farm: connections refused
SELECTIVE = "127.0.0.56"  # refuses only probes from 127.0.0.2 (sel1..sel3.test)
DEAD2 = "127.0.0.57"  # not in the farm either: F's backoff (dead2.test)
F_SOURCE, G_SOURCE = "127.0.0.2", "127.0.0.3"

FARM = {
    BLOCKING: ("banner_554", {}),
    BLOCKING2: ("banner_554", {}),
    BLOCKING3: ("banner_554", {}),
    GOOD: ("normal", {"users": ["alice", "bob"]}),
    SELECTIVE: ("normal", {"users": ["alice", "bob"], "refuse_from": [F_SOURCE]}),
}


def zone():
    z = {}
    for name, addr in (("blk1", BLOCKING), ("blk2", BLOCKING), ("blk3", BLOCKING), ("blk4", BLOCKING2),
                       ("blk5", BLOCKING2), ("blk6", BLOCKING3), ("blk7", BLOCKING3), ("ok", GOOD), ("dead", DEAD),
                       ("sel1", SELECTIVE), ("sel2", SELECTIVE), ("sel3", SELECTIVE), ("dead2", DEAD2)):
        mx = "mx.%s.test" % {BLOCKING: "blk", BLOCKING2: "blk2", BLOCKING3: "blk3",
                             SELECTIVE: "sel"}.get(addr, name)
        z["%s.test" % name] = {"MX": [[10, mx]]}
        z[mx] = {"A": [addr]}
    return z


class NoChannelRedis(redisserver.RedisServer):
    """A server whose user may run commands but not subscribe (no &*)."""

    def write_conf(self):
        super().write_conf()
        with open(self.conf_path) as f:
            text = f.read()
        with open(self.conf_path, "w") as f:
            f.write(text.replace(" &* ", " resetchannels "))


def session(d, sender):
    return verdict_digit(d.socket, sender)


USER, PASSWORD = "fleet", "fleet-pw-7f3a"


CONF = {"blocked_ttl": "10m", "host_backoff": "5m"}  # nothing learned runs out during the test


def main():
    return fleetlib.run(body, zone(), FARM, skip="the shared breaker",
                        # an ACL user with a password, the default user locked by another: both
                        # connections (cache and channel) must AUTH as the user
                        redis=dict(password="default-pw-not-ours", user=(USER, PASSWORD)), conf=CONF)


def body(tap, fleet):
    farm, redis = fleet.farm, fleet.redis
    rc = redis.client()
    a, b = fleet.connected(tap, metrics=("a", "b"))
    # the channel is subscribed once Redis lists two subscribers (bounded)
    tap.check("both daemons listen on the breaker channel",
              vmtest.wait_until(lambda: rc.command("PUBSUB", "NUMSUB", "vemilter:m:news:0")[1] == 2, 5),
              repr(rc.command("PUBSUB", "CHANNELS")))
    # The channel is silent for hours when nothing is blocked: TCP
    # keepalive is what finds it dead (a firewall's idle timeout, a
    # host gone without a RST), or keeps a NAT's state; the main
    # connection's commands have timeouts, the channel's wait has none.
    socks = redis_sockets(a.proc.pid, redis.port)
    tap.check("A: both its connections to Redis (cache and channel) have TCP keepalive",
              len(socks) == 2 and all(on for _, on in socks), repr(socks))

    # A meets the blocking MX.
    digit, t = session(a, "<x@blk1.test>")
    tap.check("A: a sender whose MX refuses us at the greeting is not rejected", digit != "5", t)
    tap.equal("A: 1 session at the blocking address", farm.connections(BLOCKING), 1)
    key = "vemilter:m:" + BLOCKING
    vmtest.wait_until(lambda: rc.command("EXISTS", key) == 1, 3)
    rec = rc.command("GET", key) or b""
    pttl = rc.command("PTTL", key)
    fields = rec.split(b"\t")
    tap.check("Redis holds A's breaker record: version 2, blocked, at the banner, the 554, the source "
              "A's session came from (127.0.0.1), the host and text, a TTL within blocked_ttl",
              len(fields) >= 10 and fields[0] == b"2" and fields[1] == b"B" and fields[4] == b"554"
              and fields[7] == b"127.0.0.1" and fields[8] == b"mx.blk.test" and b"blocklisted" in fields[9]
              and fields[6].endswith(b":%d" % a.proc.pid) and 0 < pttl <= 600000,
              "rec=%r pttl=%r" % (rec, pttl))

    # B learns it from the channel and does not connect.
    tap.check("B: logged that it learned the block from A",
              b.wait_log(r"breaker: learned from \S+:%d: mx\.blk\.test \[127\.0\.0\.51\] refused us "
                         r"\(127\.0\.0\.1\) at banner \(554" % a.proc.pid, 5) is not None, b.diag)
    tap.check("A: does not learn its own record", not a.log_lines(r"breaker: learned from"), a.diag())
    digit, t = session(b, "<y@blk2.test>")
    tap.check("B: a sender at another domain on that MX is not rejected", digit != "5", t)
    tap.equal("B: made no connection to the blocking address (the farm saw still 1 session)",
              farm.connections(BLOCKING), 1)
    tap.check("B: its probe took the learned refusal",
              b.wait_log(r"y@blk2\.test.*(blocked|refused)", 3) is not None, b.diag)
    tap.check("B: ... and its reason says it was learned from the fleet, from A (not \"remembered\")",
              b.wait_log(r"learned from the fleet \(\S+:%d, \d+ minutes ago\): mx\.blk\.test "
                         r"\[127\.0\.0\.51\] refused 127\.0\.0\.1 at banner" % a.proc.pid, 3) is not None
              and not b.log_lines(r"remembered: mx\.blk\.test"), b.diag)

    # A backoff travels too.
    digit, t = session(a, "<z@dead.test>")
    tap.check("A: a sender whose MX does not answer is not rejected", digit != "5", t)
    dkey = "vemilter:m:" + DEAD
    vmtest.wait_until(lambda: rc.command("EXISTS", dkey) == 1, 3)
    drec = rc.command("GET", dkey) or b""
    tap.check("Redis holds A's backoff (state O, a TTL within host_backoff)",
              drec.startswith(b"2\tO\t") and 0 < rc.command("PTTL", dkey) <= 300000, repr(drec))
    tap.check("B: logged that it learned the backoff",
              b.wait_log(r"breaker: learned from \S+: no answer from 127\.0\.0\.54", 5) is not None, b.diag)

    ma, mb = fleet.metrics(a), fleet.metrics(b)
    tap.check("metrics: A published 2 breaker records and learned none, B learned 2",
              'vemilter_shared_breaker_records_total{result="published"} 2' in ma
              and 'vemilter_shared_breaker_records_total{result="learned"} 0' in ma
              and 'vemilter_shared_breaker_records_total{result="learned"} 2' in mb,
              "\n".join(l for l in (ma + mb).splitlines() if "breaker" in l))

    # C starts after: it learns both from its SCAN.
    c = fleet.daemon("c")
    tap.check("C (started later): learned the block from its SCAN at connect",
              c.wait_log(r"breaker: learned from \S+: mx\.blk\.test \[127\.0\.0\.51\]", 8) is not None, c.diag)
    tap.check("C: ... and the backoff",
              c.wait_log(r"breaker: learned from \S+: no answer from 127\.0\.0\.54", 3) is not None, c.diag)
    digit, t = session(c, "<w@blk3.test>")
    tap.check("C: not rejected, and no connection to the blocking address",
              digit != "5" and farm.connections(BLOCKING) == 1, t + "\nsessions %d" % farm.connections(BLOCKING))

    # Redis down: everything stays local, as without a shared tier.
    redis.kill()
    for d in (a, b):
        tap.check("%s: logged Redis unavailable" % d.name,
                  d.wait_log(r"shared cache .*unavailable", 5) is not None, d.diag)
    digit, t = session(a, "<v@blk4.test>")
    tap.check("Redis down, A: a new blocking address costs A one session; not rejected",
              digit != "5" and farm.connections(BLOCKING2) == 1, t)
    digit, t = session(b, "<u@blk5.test>")
    tap.check("Redis down, B: learns nothing, connects there itself as before (2 sessions); not rejected",
              digit != "5" and farm.connections(BLOCKING2) == 2, t + "\nsessions %d" % farm.connections(BLOCKING2))
    digit, t = session(b, "<alice@ok.test>")
    tap.check("Redis down, B: a valid sender accepted (no tempfail for the cache's sake)", digit == "2", t)
    digit, t = session(b, "<y@blk2.test>")
    tap.equal("Redis down, B: still keeps what it learned before (no session at the first address)",
              farm.connections(BLOCKING), 1)
    # Redis back: both connections again, and the channel works again.
    redis.restart()
    for d in (a, b, c):
        tap.check("%s: logged the shared cache connected again" % d.name,
                  vmtest.wait_until(lambda: len(d.log_lines(r"shared cache .*: connected")) >= 2, 40), d.diag)
    rc.close()
    rc = redis.client()
    tap.check("after the restart all three listen on the channel again",
              vmtest.wait_until(lambda: rc.command("PUBSUB", "NUMSUB", "vemilter:m:news:0")[1] == 3, 10),
              repr(rc.command("PUBSUB", "NUMSUB", "vemilter:m:news:0")))
    digit, t = session(a, "<s@blk6.test>")
    tap.check("after the restart, A meets another blocking address: 1 session", digit != "5"
              and farm.connections(BLOCKING3) == 1, t)
    tap.check("... B learns it from the channel",
              b.wait_log(r"breaker: learned from \S+: mx\.blk3\.test \[127\.0\.0\.55\]", 5) is not None,
              b.diag)
    digit, t = session(b, "<r@blk7.test>")
    tap.check("... and makes no connection there", digit != "5" and farm.connections(BLOCKING3) == 1,
              t + "\nsessions %d" % farm.connections(BLOCKING3))

    # A user without the channel: the cache stays up, the SCAN still reads.
    locked = fleet.redis_server("redis2", NoChannelRedis, password="default-pw-not-ours", user=(USER, PASSWORD))
    try:
        locked.start()
        with locked.client() as lc:
            far = int(time.time() * 1000) + 7200000  # 2 h: past our blocked_ttl
            rec = "2\tB\t%d\t4\t554\t5.7.1\tother-host:1\t127.0.0.1\tmx.far.test\tgo away" % far
            lc.command("SET", "vemilter:m:127.0.0.99", rec, "PX", "120000")
            # version 1 (an older writer): no source. The refusal is not
            # applied, the backoff is.
            lc.command("SET", "vemilter:m:127.0.0.98",
                       "1\tB\t%d\t4\t554\t5.7.1\tother-host:1\tmx.old.test\tgo away" % far, "PX", "120000")
            lc.command("SET", "vemilter:m:127.0.0.97", "1\tO\t%d\t0\t0\t\tother-host:1\t\t" % far,
                       "PX", "120000")
        d = fleet.daemon("d", locked)
        tap.check("no channel permission: a warning naming the channel",
                  d.wait_log(r"breaker channel vemilter:m:news:0 was refused", 5) is not None, d.diag)
        tap.check("... the record written before is learned by the SCAN, its window cut to our "
                  "blocked_ttl (10 min, not the writer's 2 h)",
                  d.wait_log(r"breaker: learned from other-host:1: mx\.far\.test \[127\.0\.0\.99\] refused "
                             r"us \(127\.0\.0\.1\) at banner \(554 5\.7\.1 go away\): not connecting there "
                             r"for 600 s", 5)
                  is not None, d.diag)
        tap.check("... a version 1 refusal (no source) is not applied (logged), a version 1 backoff is",
                  d.wait_log(r"breaker: not applying other-host:1's refusal by mx\.old\.test \[127\.0\.0\.98\]: "
                             r"met from an unknown source", 5) is not None
                  and d.wait_log(r"breaker: learned from other-host:1: no answer from 127\.0\.0\.97", 5)
                  is not None and not d.log_lines(r"learned from other-host:1: mx\.old\.test"), d.diag)
        time.sleep(2.5)  # two reconnection backoffs, had the refusal dropped the cache
        tap.check("... and the cache stays up: connected once, never unavailable",
                  len(d.log_lines(r"shared cache .*: connected")) == 1
                  and not d.log_lines(r"shared cache .*unavailable"), d.diag)
    finally:
        locked.remove()

    # A big shared cache: SCAN's COUNT is keys examined, MATCH filters
    # after, so the walk takes as many steps as the db has keys / COUNT,
    # whatever few breaker records there are. 700000 other keys (the
    # cache's records, here DEBUG POPULATE's) and 40 breaker records:
    # every one is learned (the walk once stopped at 1000 steps of 500
    # keys: about 28 of the 40).
    big = fleet.redis_server("redis3", password="default-pw-not-ours", user=(USER, PASSWORD))
    try:
        big.start()
        n_far = 40
        with big.client(timeout=60) as bc:  # DEBUG POPULATE: about 1 s, more under load
            bc.command("DEBUG", "POPULATE", "700000", "filler")
            until = int(time.time() * 1000) + 120000
            for i in range(1, n_far + 1):
                bc.command("SET", "vemilter:m:127.0.1.%d" % i,
                           "2\tB\t%d\t4\t554\t5.7.1\tother-host:2\t127.0.0.1\tmx.far%d.test\tgo away"
                           % (until, i),
                           "PX", "120000")
            dbsize = bc.command("DBSIZE")
        e = fleet.daemon("e", big)
        t0 = time.monotonic()
        vmtest.wait_until(lambda: len(e.log_lines(r"breaker: learned from other-host:2: ")) >= n_far, 30)
        learned = len(e.log_lines(r"breaker: learned from other-host:2: "))
        tap.diag("SCAN over %d keys: %d of %d breaker records learned in %.2f s"
                 % (dbsize, learned, n_far, time.monotonic() - t0))
        tap.equal("a db of %d keys: the SCAN at connect learns all %d breaker records" % (dbsize, n_far),
                  learned, n_far, e.diag)
    finally:
        big.remove()

    source_is_the_probers(tap, fleet)

    for d in fleet.daemons:
        tap.check("%s: no crash, and the password never logged" % d.name,
                  d.proc.poll() is None and not d.log_lines(PASSWORD), d.diag())


def source_is_the_probers(tap, fleet):
    """F probes from 127.0.0.2, G from 127.0.0.3; SELECTIVE refuses only
    127.0.0.2 (a blocklist of F's address). G must not take F's refusal:
    it keeps verifying there. On a build that applies every learned
    refusal, G's senders at SELECTIVE get no verdict (blocked, no session)."""
    farm = fleet.farm
    r4 = fleet.redis_server("redis4", password="default-pw-not-ours", user=(USER, PASSWORD))
    try:
        r4.start()
        f = fleet.daemon("f", r4, probe_source_address=F_SOURCE)
        g = fleet.daemon("g", r4, probe_source_address=G_SOURCE)
        with r4.client() as rc4:
            tap.check("F and G listen on the breaker channel",
                      vmtest.wait_until(lambda: rc4.command("PUBSUB", "NUMSUB", "vemilter:m:news:0")[1] == 2, 5),
                      f.diag() + g.diag())
            digit, t = session(f, "<alice@sel1.test>")
            sessions = farm.sessions(SELECTIVE)
            tap.check("F: refused at the greeting (from 127.0.0.2): not rejected, 1 session, from F's source",
                      digit != "5" and len(sessions) == 1 and sessions[0].peer[0] == F_SOURCE
                      and sessions[0].behaviour == "banner_554", t + "\n" + repr(sessions))
            key = "vemilter:m:" + SELECTIVE
            vmtest.wait_until(lambda: rc4.command("EXISTS", key) == 1, 3)
            fields = (rc4.command("GET", key) or b"").split(b"\t")
            tap.check("Redis holds F's refusal with its source 127.0.0.2",
                      len(fields) >= 10 and fields[:2] == [b"2", b"B"] and fields[7] == F_SOURCE.encode(),
                      repr(fields))
            tap.check("G: does not apply it: 127.0.0.2 is not an address of G's (logged)",
                      g.wait_log(r"breaker: not applying \S+:%d's refusal by mx\.sel\.test \[127\.0\.0\.56\]: "
                                 r"met from 127\.0\.0\.2, not an address of ours" % f.proc.pid, 5) is not None
                      and not g.log_lines(r"breaker: learned from .*127\.0\.0\.56"), g.diag)
            digit, t = session(g, "<alice@sel2.test>")
            tap.check("G: a valid sender at that MX is verified and accepted", digit == "2", t)
            digit, t = session(g, "<nobody@sel3.test>")
            tap.check("G: an unknown sender there gets a real verdict: rejected", digit == "5", t)
            peers = [(x.peer[0], x.behaviour) for x in farm.sessions(SELECTIVE)]
            tap.check("G: its own sessions there, from 127.0.0.3, served normally",
                      peers.count((G_SOURCE, "normal")) >= 1 and all(p == G_SOURCE for p, _ in peers[1:]),
                      repr(peers))
            # a backoff is about the MX: G takes F's whatever the source
            digit, t = session(f, "<z@dead2.test>")
            tap.check("F: a sender whose MX does not answer is not rejected", digit != "5", t)
            tap.check("G: learns F's backoff (a backoff is applied from any source)",
                      g.wait_log(r"breaker: learned from \S+:%d: no answer from 127\.0\.0\.57" % f.proc.pid, 5)
                      is not None, g.diag)
    finally:
        r4.remove()


def redis_sockets(pid, port):
    """Process pid's established TCP connections to port: [(local address,
    keepalive timer on)], read from /proc (its fds' socket inodes, and
    /proc/net/tcp: state 01 established, timer kind "tr" 2 keepalive)."""
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            link = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            c = row.split()
            if len(c) > 9 and c[3] == "01" and c[9] in inodes and int(c[2].rsplit(":", 1)[1], 16) == port:
                out.append((c[1], c[5].split(":")[0] == "02"))
    return out


if __name__ == "__main__":
    sys.exit(main())
