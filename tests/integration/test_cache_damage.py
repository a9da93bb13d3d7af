#!/usr/bin/python3
"""test_cache_damage - a cache file damaged every way we know, and mail
still flowing: the real vemilter (through the milter protocol) and
vemilter-cache (list, stats), with the file damaged before the start and
while running.

Damage: truncated to half, to one page, to zero; data pages zeroed; data
pages overwritten with random bytes; the newer meta page's fields
overwritten; the newer meta page's main root pointing at a meta page (an
LMDB assertion if LMDB read it). Each case ends with the sender accepted
(or the tool exiting 0) and exactly one log line naming the problem, and
the daemon stopping cleanly (exit 0: it never died of SIGBUS or an abort).

TAP on stdout; loopback only; every wait bounded.
"""

import os
import re
import shutil
import struct
import sys
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "fakes"))

import vmtest  # noqa: E402
from vmtest import Daemon, TempDir, probe_conf, run  # noqa: E402
from milterclient import MilterClient  # noqa: E402
from fakedns import FakeDNS  # noqa: E402
from smtpfarm import SmtpFarm  # noqa: E402

TOOL = os.path.join(vmtest.builddir(), "vemilter-cache")
ZONE = {"ok.test": {"MX": [[10, "mx.ok.test"]]}, "mx.ok.test": {"A": ["127.0.0.41"]}}
PAGE = 4096
CASES = ["truncated to half", "truncated to one page", "truncated to zero", "pages zeroed",
         "pages overwritten with garbage", "meta page garbage", "meta root at a meta page"]
# one line per damage event: moved aside (or, an empty file, started afresh)
EVENT = re.compile(r"cache \S+ (is unusable \((?P<problem>.*)\): moved aside to \S+, starting a new one"
                   r"|was empty \(0 bytes)")
# any line of the store's about the file's state
CACHE_LINE = re.compile(r"cache \S+ (is unusable|was empty|was replaced)|cache \S+: .*(reopened|running without a "
                        r"cache|usable again|cannot)")


GOOD = []  # the good file's bytes, made once for every test function


class Env:
    """The fake DNS and SMTP farm, a config, and a good cache file to copy."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.dns = FakeDNS(ZONE)
        self.farm = SmtpFarm()
        self.farm.add("127.0.0.41", "normal", users=["alice"])
        dns_port = self.dns.start()
        farm_port = self.farm.start()
        self.cache = tmp.join("cache.lmdb")
        self.good = tmp.join("good.lmdb")
        self.conf = probe_conf(tmp, "damage.sock", dns_port, farm_port, **{
            "connect_timeout": "2s",
            "verify_budget": "5s", "cache": self.cache, "cache_max_mb": 4,
        })
        self.conf_path = tmp.write("tool.conf", vmtest.format_conf(self.conf))

    def stop(self):
        self.farm.stop()
        self.dns.stop()

    def tool(self, *args):
        return run([TOOL, "-c", self.conf_path] + list(args), timeout=30)

    def make_good(self):
        """A cache of a few pages: alice@ok.test valid, and 150 others."""
        if GOOD:
            with open(self.good, "wb") as f:
                f.write(GOOD[0])
            return
        p = self.tool("put", "alice@ok.test", "valid")
        for i in range(150):
            if p.returncode != 0:
                break
            p = self.tool("put", "user%03d-with-a-long-local-part@example.org" % i, "invalid", "550", "5.1.1",
                          "no such user " + "x" * 100)
        if p.returncode != 0:
            raise RuntimeError("populating the cache: %r %s" % (p.returncode, p.stderr))
        shutil.copyfile(self.cache, self.good)
        with open(self.good, "rb") as f:
            GOOD.append(f.read())

    def fresh(self):
        """The good file in place, nothing moved aside, no lock file."""
        for n in os.listdir(self.tmp.path):
            if ".corrupt." in n or n == "cache.lmdb-lock":
                os.unlink(self.tmp.join(n))
        shutil.copyfile(self.good, self.cache)

    def moved(self):
        return [n for n in os.listdir(self.tmp.path) if n.startswith("cache.lmdb.corrupt.")]


def next_tick(path):
    """Wait (bounded) until a change to path gets a new mtime: the cache
    notices in-place changes by the file's mtime."""
    m = os.stat(path).st_mtime_ns
    vmtest.wait_until(lambda: time.clock_gettime_ns(getattr(time, "CLOCK_REALTIME_COARSE", 5)) > m, 2, 0.002)


def damage(path, case):
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        m0, m1 = f.read(PAGE), f.read(PAGE)
    # the meta page LMDB uses: the higher txnid (meta fields start after the 16-octet header)
    t0, t1 = struct.unpack_from("<Q", m0, 16 + 128)[0], struct.unpack_from("<Q", m1, 16 + 128)[0]
    meta = (PAGE if t1 > t0 else 0) + 16
    next_tick(path)
    if case.startswith("truncated"):
        os.truncate(path, {"truncated to half": size // 2, "truncated to one page": PAGE,
                           "truncated to zero": 0}[case])
        return
    with open(path, "r+b") as f:
        if case == "pages zeroed":
            f.seek(2 * PAGE)
            f.write(b"\0" * (size - 2 * PAGE))
        elif case == "pages overwritten with garbage":
            f.seek(2 * PAGE)
            f.write(os.urandom(size - 2 * PAGE))
        elif case == "meta page garbage":
            f.seek(meta + 24)
            f.write(os.urandom(104))
        elif case == "meta root at a meta page":
            f.seek(meta + 72 + 40)
            f.write(struct.pack("<Q", 1))


def session(d, sender="<alice@ok.test>"):
    """One message; True if the sender and recipient were let through."""
    c = MilterClient(d.socket, timeout=20)
    try:
        c.session(client_addr="198.51.100.7")
        m = c.mail(sender, macros={"i": "Q1"})
        r = c.rcpt("<bob@local.test>") if m.code == "c" else m
        c.quit()
        # accepted at MAIL FROM (a cached valid sender) or at RCPT
        return m.code == "a" or (m.code == "c" and r.code in ("c", "a")), c.transcript_text()
    finally:
        c.close()


def cache_lines(text_lines):
    return [l for l in text_lines if CACHE_LINE.search(l)]


def one_event(lines):
    """exactly one cache line, and it is a damage event naming the problem"""
    ours = cache_lines(lines)
    return len(ours) == 1 and EVENT.search(ours[0]) is not None


def daemon_case(tap, env, cleanup, case, while_running, tool_too=False):
    env.fresh()
    if not while_running:
        damage(env.cache, case)
    name = "dmg%d" % (abs(hash((case, while_running, tool_too))) % 100000)
    d = Daemon(env.tmp, env.conf, name=name, debug=True)
    cleanup.add(d.stop)
    d.start()
    where = "while running" if while_running else "before start"
    who = "vemilter-cache list/stats" if tool_too else "daemon"
    if while_running:
        ok, t = session(d)  # the daemon has the file open and has read it
        if not ok:
            tap.check("%s, %s, %s: accepted before the damage" % (case, where, who), False, t + d.diag())
        damage(env.cache, case)
    tool_ok = True
    if tool_too:
        p1, p2 = env.tool("list"), env.tool("stats")
        for line in cache_lines(p1.stderr.splitlines() + p2.stderr.splitlines()):
            tap.diag("%s, %s, %s: the tool logged: %s" % (case, where, who, line.split(": ", 1)[-1]))
        tool_ok = p1.returncode == 0 and p2.returncode == 0 and one_event(p1.stderr.splitlines() +
                                                                           p2.stderr.splitlines())
        tap.check("%s, %s, %s: both exit 0, one line naming the problem" % (case, where, who), tool_ok,
                  "list: %r %s\nstats: %r %s" % (p1.returncode, p1.stderr, p2.returncode, p2.stderr))
    ok, t = session(d)
    lines = d.log_lines()
    for line in cache_lines(lines):
        tap.diag("%s, %s, %s: the daemon logged: %s" % (case, where, who, line.split(": ", 1)[-1]))
    if tool_too:
        # the tool moved the file aside: the daemon reopens it (or finds
        # its old one damaged); either way at most one line of its own
        logged = len(cache_lines(lines)) <= 1
    else:
        logged = one_event(lines)
    tap.check("%s, %s, %s: mail flows (sender accepted), %s" %
              (case, where, who, "at most one log line of the daemon's" if tool_too
               else "one log line naming the problem"), ok and logged,
              "%s\ncache lines: %s\n%s" % (t, cache_lines(lines), d.diag()))
    ok2, t2 = session(d, "<alice@ok.test>")
    tap.check("%s, %s, %s: the new cache works (next message accepted)" % (case, where, who), ok2, t2)
    tap.equal("%s, %s, %s: the daemon stops cleanly (it never died)" % (case, where, who), d.stop(), 0, d.diag)
    moved = env.moved()
    tap.check("%s, %s, %s: %s" % (case, where, who, "nothing to move aside (an empty file)"
                                  if case == "truncated to zero" and not while_running
                                  else "the damaged file moved aside"),
              len(moved) == (0 if case == "truncated to zero" and not while_running else 1), repr(moved))


def with_env(fn):
    def wrapped(tap, cleanup):
        tmp = TempDir(prefix="vemilter-dmg-")
        cleanup.add(tmp.remove)
        env = Env(tmp)
        cleanup.add(env.stop)
        env.make_good()
        fn(tap, env, cleanup)
    wrapped.__name__ = fn.__name__
    return wrapped


@with_env
def t_tool_before_start(tap, env, cleanup):
    for case in CASES:
        env.fresh()
        damage(env.cache, case)
        p1 = env.tool("list")
        p2 = env.tool("stats")
        empty = case == "truncated to zero"
        for line in cache_lines(p1.stderr.splitlines() + p2.stderr.splitlines()):
            tap.diag("%s, before start, vemilter-cache: logged: %s" % (case, line.split(": ", 1)[-1]))
        tap.check("%s, before start, vemilter-cache list/stats: exit 0, an empty cache, one line naming "
                  "the problem" % case,
                  p1.returncode == 0 and p1.stdout == "" and p2.returncode == 0 and
                  one_event(p1.stderr.splitlines() + p2.stderr.splitlines()) and
                  len(env.moved()) == (0 if empty else 1),
                  "list: %r %s\nstats: %r %s\nmoved: %r" % (p1.returncode, p1.stderr, p2.returncode, p2.stderr,
                                                           env.moved()))


@with_env
def t_daemon_before_start(tap, env, cleanup):
    for case in CASES:
        daemon_case(tap, env, cleanup, case, False)


@with_env
def t_daemon_while_running(tap, env, cleanup):
    for case in CASES:
        daemon_case(tap, env, cleanup, case, True)


@with_env
def t_tool_while_running(tap, env, cleanup):
    for case in CASES:
        daemon_case(tap, env, cleanup, case, True, tool_too=True)


if __name__ == "__main__":
    vmtest.require_binary(TOOL, "vemilter-cache")
    vmtest.run_tests([t_tool_before_start, t_daemon_before_start, t_daemon_while_running, t_tool_while_running],
                     per_test_timeout=150, total_timeout=560)
