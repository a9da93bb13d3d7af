#!/usr/bin/python3
"""test_cacheredis - vemilter-cache on the shared Redis cache (issue 12),
against a real redis-server of the test's own on loopback (tests/lib/
redisserver.py).

- test_cachetool's put/get/list/del cases, domains and hints, tagged
  senders, run unchanged with `cache = redis://...`: the same commands give
  the same output on both back ends.
- Records written by another writer (tests/lib/cacherecord.py encodes
  cacherec.c's format, as the daemon stores it: HASH "vemilter:<key>",
  field "r", a TTL) are listed in key order, decoded exactly; leases,
  damaged records, keys of another type or prefix are never listed; more
  records than one SCAN batch.
- put writes the contract's layout (decoded here in Python, TTL at
  expires_at); del, purge (leases too, nothing outside "vemilter:"),
  purge --expired; stats; the URL's db.
- Errors: Redis unreachable, a required password missing, a wrong one, an
  unreadable password file, an ACL user, a server too slow (DEBUG SLEEP):
  exit 1 with a clear message, never the password.

TAP on stdout; exit 0 only if every case passed. Every command is bounded.
"""

import os
import re
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, HERE)

import cacherecord as cr  # noqa: E402
import redisserver  # noqa: E402
import test_cachetool as ct  # noqa: E402
import vmtest  # noqa: E402
from vmtest import TempDir, run  # noqa: E402

TOOL = ct.TOOL
tool, diag, records = ct.tool, ct.diag, ct.records


def server(cleanup, **kw):
    tmp = TempDir(prefix="vemilter-cacheredis-")
    cleanup.add(tmp.remove)
    srv = redisserver.RedisServer(tmp.path, **kw).start()
    cleanup.add(srv.kill)
    return tmp, srv


def redis_scratch(cleanup, **conf):
    """test_cachetool's scratch() on Redis: a server of its own, a config naming it."""
    tmp, srv = server(cleanup)
    settings = {"cache": srv.url()}
    settings.update(conf)
    return tmp, tmp.write("vemilter.conf", vmtest.format_conf(settings))


def lmdb_cases():
    """test_cachetool's cases that hold for any back end, run on Redis."""
    def wrap(fn):
        def case(tap, cleanup):
            saved = ct.scratch
            ct.scratch = redis_scratch
            try:
                fn(tap, cleanup)
            finally:
                ct.scratch = saved
        case.__name__ = "redis_" + fn.__name__
        return case
    return [wrap(fn) for fn in (ct.t_put_get_list, ct.t_domains_and_hints, ct.t_tagged_sender)]


def fields_of(p):
    return dict(line.split(": ", 1) for line in p.stdout.splitlines() if ": " in line)


def t_same_output_as_lmdb(tap, cleanup):
    """The same puts on both back ends list the same lines (times aside)."""
    tmp, srv = server(cleanup)
    lconf = tmp.write("lmdb.conf", vmtest.format_conf({"cache": tmp.join("cache.lmdb"), "cache_max_mb": 4}))
    rconf = tmp.write("redis.conf", vmtest.format_conf({"cache": srv.url()}))
    puts = [("--flags", "greylist", "--tries", "3", "--deferred-for", "1h", "g@example.org", "tempfail", "451",
             "4.7.1", "try later"),
            ("x@example.org", "invalid", "550", "5.1.1", "no such user"), ("d:example.org", "catch_all"),
            ("--flags", "not_catchall", "h:example.org", "valid"), ("t:list@example.net", "valid"),
            ('"odd one"@example.org', "valid")]
    for args in puts:
        for conf in (lconf, rconf):
            p = tool(conf, "put", *args)
            if p.returncode != 0:
                tap.check("put %s" % " ".join(args), False, diag(p))
                return
    times = re.compile(r"(probed|refresh|expires|deferred_since)=\S+")
    lp, rp = tool(lconf, "list"), tool(rconf, "list")
    lines = [times.sub(r"\1=T", x) for x in lp.stdout.splitlines()]
    tap.check("list: %d records, same lines from LMDB and Redis" % len(puts),
              rp.returncode == 0 and len(lines) == len(puts)
              and lines == [times.sub(r"\1=T", x) for x in rp.stdout.splitlines()],
              "LMDB:\n%s\nRedis:\n%s" % (lp.stdout, diag(rp)))
    for arg in ("g@example.org", "example.org", "prvs=1234567890=list@example.net"):
        lp, rp = tool(lconf, "get", arg), tool(rconf, "get", arg)
        tap.check("get %s: same exit and lines" % arg, lp.returncode == rp.returncode and
                  [times.sub(r"\1=T", x) for x in lp.stdout.splitlines()]
                  == [times.sub(r"\1=T", x) for x in rp.stdout.splitlines()],
                  "LMDB:\n%s\nRedis:\n%s" % (diag(lp), diag(rp)))


def t_foreign_records(tap, cleanup):
    """Records another writer stored (as the daemon does) are read exactly;
    what is not a record of ours is never listed."""
    tmp, srv = server(cleanup)
    conf = tmp.write("vemilter.conf", vmtest.format_conf({"cache": srv.url()}))
    c = srv.client()
    cleanup.add(c.close)
    now = cr.now_ms()
    cr.redis_put(c, "a:bob@example.org", cr.encode("invalid", now - 5000, now + 3600000, now + 86400000, code=550,
                                                   ecode="5.1.1", text="user unknown", reason="RCPT refused",
                                                   mx_host="mx.example.org", mx_addr="192.0.2.25", stage=10),
                 host="mx-a")  # a field of the daemon's own beside "r"
    cr.redis_put(c, "d:example.org", cr.encode("catch_all", now, now + 60000, now + 120000))
    cr.redis_put(c, "h:example.org", cr.encode("valid", flags=("not_catchall",)))
    cr.redis_put(c, "a:stale@example.org", cr.encode("valid", now - 7200000, now - 3600000, now + 3600000))
    cr.redis_put(c, "a:damaged@example.org", b"\x02garbage")
    c.command("SET", "vemilter:lease:a:new@example.org", "mx-b", "PX", "60000")
    c.command("SET", "vemilter:a:string@example.org", "not a hash")
    cr.redis_put(c, "x:other-kind", cr.encode("valid"))
    c.command("HSET", "other:a:app@example.org", "r", cr.encode("valid"))
    p = tool(conf, "list")
    got = records(p)
    tap.check("list: the four records, in key order; no lease, damaged record, string, other kind or prefix",
              p.returncode == 0 and [g and g["key"] for g in got]
              == ["a:bob@example.org", "a:stale@example.org", "d:example.org", "h:example.org"], diag(p))
    bob = got[0] or {}
    tap.check("list decodes every field the other writer stored",
              bob.get("outcome") == "invalid" and bob.get("stage") == "rcpt"
              and bob.get("reply") == '"550 5.1.1 user unknown"' and "mx=mx.example.org addr=192.0.2.25"
              in p.stdout.splitlines()[0] and bob.get("probed") == time.strftime(
                  "%Y-%m-%dT%H:%M:%SZ", time.gmtime((now - 5000) // 1000)), diag(p))
    tap.check("the stale record is marked stale, the hints keep their flag",
              len(got) == 4 and got[1] and got[1]["mark"] == " stale" and got[3] and got[3]["flags"] == "not_catchall",
              diag(p))
    p = tool(conf, "get", "a:damaged@example.org")
    tap.check("get of a damaged record: not cached (a miss, never a crash)",
              p.returncode == 1 and p.stdout == "a:damaged@example.org not cached\n", diag(p))
    p = tool(conf, "stats")
    f = fields_of(p)
    tap.check("stats: records 4 = 2 addresses + 1 domain + 1 hints, by outcome, 1 lease, memory",
              p.returncode == 0 and (f.get("server"), f.get("records"), f.get("addresses"), f.get("domains"),
                                     f.get("hints"), f.get("expired"), f.get("valid"), f.get("invalid"),
                                     f.get("catch_all"), f.get("leases"))
              == (srv.url(), "4", "2", "1", "1", "0", "1", "1", "1", "1")
              and re.match(r"^\d+ \(\d+\.\d MiB\)$", f.get("used_memory", "")), diag(p))


def t_put_layout(tap, cleanup):
    """put stores the contract's layout: HASH, field "r" = the record, TTL at expires_at."""
    tmp, srv = server(cleanup)
    conf = tmp.write("vemilter.conf", vmtest.format_conf({"cache": srv.url(), "negative_ttl": "2h"}))
    c = srv.client()
    cleanup.add(c.close)
    before = cr.now_ms()
    p = tool(conf, "put", "Bob@Example.ORG", "invalid", "550", "5.1.1", "user unknown")
    rec = cr.redis_get(c, "a:Bob@example.org")
    ttl = c.command("PTTL", "vemilter:a:Bob@example.org")
    tap.check("put: a HASH under vemilter:a:Bob@example.org whose field r decodes to the record",
              p.returncode == 0 and rec is not None and rec["kind"] == "invalid" and rec["code"] == 550
              and rec["ecode"] == "5.1.1" and rec["text"] == "user unknown"
              and rec["reason"] == "set by vemilter-cache"
              and c.command("TYPE", "vemilter:a:Bob@example.org") == b"hash", "%s\n%r" % (diag(p), rec))
    tap.check("... expiring at the record's expires_at (negative_ttl 2h)",
              rec is not None and abs(rec["expires_ms"] - (before + 7200000)) < 5000
              and 7200000 - 10000 < ttl <= 7200000, "ttl %r, record %r" % (ttl, rec))
    c.command("HSET", "vemilter:a:Bob@example.org", "owner", "mx-a")
    p = tool(conf, "put", "Bob@example.org", "tempfail")
    tap.check("put replaces the whole hash (an administrator's word), even a definite answer",
              p.returncode == 0 and cr.redis_get(c, "a:Bob@example.org")["kind"] == "tempfail"
              and c.command("HGET", "vemilter:a:Bob@example.org", "owner") is None, diag(p))


def t_del_purge(tap, cleanup):
    tmp, srv = server(cleanup)
    conf = tmp.write("vemilter.conf", vmtest.format_conf({"cache": srv.url()}))
    c = srv.client()
    cleanup.add(c.close)
    for args in (("a@x.org", "valid"), ("b@x.org", "valid"), ("c@x.org", "invalid"), ("d:x.org", "catch_all"),
                 ("d:y.org", "no_domain"), ("h:x.org", "valid")):
        tool(conf, "put", *args)
    p = tool(conf, "del", "a@x.org")
    tap.check("del: exit 0, says deleted, key gone from Redis",
              p.returncode == 0 and p.stdout == "a:a@x.org deleted\n"
              and c.command("EXISTS", "vemilter:a:a@x.org") == 0, diag(p))
    p = tool(conf, "del", "a@x.org")
    tap.check("del again: exit 1, not cached", p.returncode == 1 and p.stdout == "a:a@x.org not cached\n", diag(p))
    p = tool(conf, "del", "--domain", "c@x.org")
    tap.check("del --domain: the address, the domain's facts and hints",
              p.returncode == 0 and p.stdout == "a:c@x.org deleted\nd:x.org deleted\nh:x.org deleted\n", diag(p))
    # an expired record Redis has not dropped (this host's clock ahead of the server's, say)
    now = cr.now_ms()
    cr.redis_put(c, "a:late@x.org", cr.encode("valid", now - 7200000, now - 7100000, now - 3600000),
                 expires_ms=now + 600000)
    p = tool(conf, "stats")
    tap.check("stats counts the record past its expires_at as expired", fields_of(p).get("expired") == "1", diag(p))
    p = tool(conf, "purge", "--expired")
    tap.check("purge --expired: removes only that one",
              p.returncode == 0 and p.stdout == "removed 1 expired record\n"
              and c.command("EXISTS", "vemilter:a:late@x.org") == 0
              and c.command("EXISTS", "vemilter:a:b@x.org") == 1, diag(p))
    c.command("SET", "vemilter:lease:a:new@x.org", "mx-b", "PX", "60000")
    c.command("SET", "someone-else:key", "kept")
    p = tool(conf, "purge")
    tap.check("purge: every record (leases too, not counted), nothing outside vemilter:",
              p.returncode == 0 and p.stdout == "removed 2 records\n"
              and c.scan_keys("vemilter:*") == [] and c.command("GET", "someone-else:key") == b"kept", diag(p))
    p = tool(conf, "list")
    tap.check("list of an empty cache: no lines, exit 0", p.returncode == 0 and p.stdout == "", diag(p))


def t_many(tap, cleanup):
    """More records than one SCAN batch or pipeline (1000): all listed once, in order."""
    tmp, srv = server(cleanup)
    conf = tmp.write("vemilter.conf", vmtest.format_conf({"cache": srv.url()}))
    c = srv.client()
    cleanup.add(c.close)
    n = 2500
    rec = cr.encode("valid", text="x" * 200)
    for i in range(n):  # pipelined: send all, then read all
        c.send("HSET", "vemilter:a:user%04d@example.org" % i, "r", rec)
    for i in range(n):
        c.read_reply()
    t0 = time.monotonic()
    p = tool(conf, "list", timeout=60)
    took = time.monotonic() - t0
    keys = [line.split(" ", 1)[0] for line in p.stdout.splitlines()]
    tap.check("list: %d records, each once, in key order (%.2f s)" % (n, took),
              p.returncode == 0 and keys == ["a:user%04d@example.org" % i for i in range(n)], diag(p)[:2000])
    p = tool(conf, "purge", timeout=60)
    tap.check("purge: all %d" % n, p.returncode == 0 and p.stdout == "removed %d records\n" % n
              and c.command("DBSIZE") == 0, diag(p))


def t_db(tap, cleanup):
    """The URL's db is SELECTed: records live there, not in db 0."""
    tmp, srv = server(cleanup)
    conf = tmp.write("vemilter.conf", vmtest.format_conf({"cache": srv.url(db=3)}))
    p = tool(conf, "put", "a@x.org", "valid")
    with srv.client() as c0, srv.client(db=3) as c3:
        tap.check("put to db 3", p.returncode == 0 and c3.command("EXISTS", "vemilter:a:a@x.org") == 1
                  and c0.command("DBSIZE") == 0, diag(p))
        c0.command("HSET", "vemilter:a:zero@x.org", "r", cr.encode("valid"))
    p = tool(conf, "list")
    tap.check("list of db 3 does not see db 0", p.returncode == 0 and p.stdout.startswith("a:a@x.org valid ")
              and "zero" not in p.stdout, diag(p))


def t_auth(tap, cleanup):
    secret = "s3cret-Pass-1"
    tmp, srv = server(cleanup, password=secret)
    good = tmp.write("good.pw", secret + "\n", mode=0o600)
    bad = tmp.write("bad.pw", "wrong-Pass-2\n", mode=0o600)
    empty = tmp.write("empty.pw", "\n", mode=0o600)

    def conf(name, **kw):
        settings = {"cache": srv.url()}
        settings.update(kw)
        return tmp.write(name, vmtest.format_conf(settings))
    p = tool(conf("good.conf", cache_password_file=good), "put", "a@x.org", "valid")
    tap.check("the right password: put works", p.returncode == 0, diag(p))
    p = tool(conf("good.conf", cache_password_file=good), "get", "a@x.org")
    tap.check("... and get", p.returncode == 0 and p.stdout.startswith("a:a@x.org valid "), diag(p))
    p = tool(conf("none.conf"), "list")
    tap.check("no password for a server that wants one: exit 1, says to set cache_password_file",
              p.returncode == 1 and "requires a password" in p.stderr and "cache_password_file" in p.stderr
              and srv.url() in p.stderr and p.stdout == "", diag(p))
    p = tool(conf("bad.conf", cache_password_file=bad), "list")
    tap.check("a wrong password: exit 1, AUTH refused, the password not shown",
              p.returncode == 1 and "AUTH" in p.stderr and "WRONGPASS" in p.stderr
              and "wrong-Pass-2" not in p.stderr + p.stdout, diag(p))
    p = tool(conf("missing.conf", cache_password_file=tmp.join("nope.pw")), "list")
    tap.check("a missing password file: exit 1 and names it",
              p.returncode == 1 and tmp.join("nope.pw") in p.stderr, diag(p))
    p = tool(conf("empty.conf", cache_password_file=empty), "list")
    tap.check("an empty password file: exit 1 and says so", p.returncode == 1 and "empty" in p.stderr, diag(p))

    tmp2, usrv = server(cleanup, user=("vemilter", "user-Pass-3"))
    upw = tmp2.write("user.pw", "user-Pass-3\n", mode=0o600)
    uconf = tmp2.write("u.conf", vmtest.format_conf({"cache": usrv.url(), "cache_password_file": upw}))
    p = tool(uconf, "put", "a@x.org", "valid")
    tap.check("an ACL user (redis://vemilter@...) with its password: put works",
              p.returncode == 0 and usrv.url().startswith("redis://vemilter@"), diag(p))
    other = tmp2.write("o.conf", vmtest.format_conf({"cache": usrv.url(user="intruder"),
                                                     "cache_password_file": upw}))
    p = tool(other, "list")
    tap.check("another user with that password: exit 1, refused", p.returncode == 1 and "WRONGPASS" in p.stderr,
              diag(p))
    nopw = tmp2.write("n.conf", vmtest.format_conf({"cache": usrv.url()}))
    p = tool(nopw, "list")
    tap.check("a user without cache_password_file: a configuration error (exit 78), says it needs one",
              p.returncode == 78 and "needs a password" in p.stderr, diag(p))


def t_unreachable_and_slow(tap, cleanup):
    tmp, srv = server(cleanup)
    conf = tmp.write("vemilter.conf", vmtest.format_conf({"cache": srv.url()}))
    tool(conf, "put", "a@x.org", "valid")
    srv.kill()
    for cmd in (["list"], ["get", "a@x.org"], ["del", "a@x.org"], ["purge"], ["stats"], ["put", "b@x.org", "valid"]):
        t0 = time.monotonic()
        p = tool(conf, *cmd)
        took = time.monotonic() - t0
        tap.check("Redis down: %s exits 1 at once with the URL and the reason (%.2f s)" % (cmd[0], took),
                  p.returncode == 1 and srv.url() in p.stderr and "connect" in p.stderr and p.stdout == ""
                  and took < 5 * vmtest.TIME_SCALE, diag(p))
    srv.restart()
    p = tool(conf, "put", "a@x.org", "valid")
    tap.check("restarted (no persistence): works again", p.returncode == 0, diag(p))
    sleeper = srv.debug_sleep(5 * vmtest.TIME_SCALE)
    time.sleep(0.2)
    t0 = time.monotonic()
    p = tool(conf, "list", timeout=20)
    took = time.monotonic() - t0
    tap.check("Redis asleep (DEBUG SLEEP): list gives up after its 2 s timeout, exit 1, says so (%.2f s)" % took,
              p.returncode == 1 and "no answer within" in p.stderr and 1.5 < took < 4.5 * vmtest.TIME_SCALE,
              diag(p))
    sleeper.join(10 * vmtest.TIME_SCALE)
    p = tool(conf, "get", "a@x.org")
    tap.check("awake again: get works", p.returncode == 0, diag(p))


TESTS = lmdb_cases() + [t_same_output_as_lmdb, t_foreign_records, t_put_layout, t_del_purge, t_many, t_db,
                        t_auth, t_unreachable_and_slow]


def setup(tap):
    return redisserver.available() or vmtest.require_binary(TOOL, "vemilter-cache")(tap)


if __name__ == "__main__":
    vmtest.run_tests(TESTS, per_test_timeout=60, total_timeout=240, setup=setup)
