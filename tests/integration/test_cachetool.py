#!/usr/bin/python3
"""test_cachetool - vemilter-cache, the administrator's view of the cache:
put/get/list/del/purge/stats output and exit codes, the stale and expired
marks, address records, domain facts (d:) and probe hints (h:) named by an
address, a domain or a key, the flags, greylist tries and deferral start
put can set and list shows, a tagged sender's stable form (t:) reached
through any of its addresses, bad arguments (64), configuration errors (78),
a corrupt cache file (moved aside, recreated), and the tool working while
another process holds the cache open.

TAP on stdout; exit 0 only if every case passed. Every command is bounded.
"""

import calendar
import os
import re
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import vmtest  # noqa: E402
from vmtest import TempDir, run  # noqa: E402

TOOL = os.path.join(vmtest.builddir(), "vemilter-cache")
ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
LINE = re.compile(r'^(?P<key>\S+) (?P<outcome>[a-z_]+) flags=(?P<flags>[a-z_,]+|-) stage=(?P<stage>\S+) '
                  r'reply=(?P<reply>"[^"]*"|\S+) mx=\S+ addr=\S+ probed=(?P<probed>%s) refresh=(?P<refresh>%s) '
                  r'expires=(?P<expires>%s) deferred_since=(?P<deferred_since>%s|-) tries=(?P<tries>\d+) '
                  r'reason=(?:"[^"]*"|\S+)(?P<mark> expired| stale)?$' % (ISO, ISO, ISO, ISO))


def scratch(cleanup, **conf):
    """A temp dir with a config whose cache lives in it; returns (tmp, conf path)."""
    tmp = TempDir(prefix="vemilter-cachetool-")
    cleanup.add(tmp.remove)
    settings = {"cache": tmp.join("cache.lmdb"), "cache_max_mb": 4}
    settings.update(conf)
    return tmp, tmp.write("vemilter.conf", vmtest.format_conf(settings))


def tool(conf, *args, timeout=20):
    return run([TOOL, "-c", conf] + list(args), timeout=timeout)


def diag(p):
    return "exit %r\nstdout:\n%s\nstderr:\n%s" % (p.returncode, p.stdout, p.stderr)


def records(p):
    """stdout lines of list/get, parsed; a line that does not parse is None."""
    out = []
    for line in p.stdout.splitlines():
        m = LINE.match(line)
        out.append(m.groupdict() if m else None)
    return out


def t_usage(tap, cleanup):
    tmp, conf = scratch(cleanup)
    for args in ([], ["frob"], ["get"], ["list", "extra"], ["purge", "--bogus"], ["del", "a", "b"],
                 ["put", "x@example.org"], ["put", "x@example.org", "valid", "250"], ["-x", "list"]):
        p = run([TOOL, "-c", conf] + args)
        tap.equal("usage: %s exits 64" % (" ".join(args) or "no command"), p.returncode, 64, diag(p))
    p = tool(conf, "put", "x@example.org", "maybe")
    tap.equal("put with an unknown outcome exits 64", p.returncode, 64, diag(p))
    p = tool(conf, "put", "x@example.org", "invalid", "5x0", "5.1.1", "no")
    tap.equal("put with a bad reply code exits 64", p.returncode, 64, diag(p))
    for args in (["--bogus", "x@example.org", "valid"], ["--flags", "cheese", "x@example.org", "valid"],
                 ["--tries", "256", "x@example.org", "valid"], ["--tries=-1", "x@example.org", "valid"],
                 ["--deferred-for", "soon", "x@example.org", "valid"], ["x@example.org", "valid", "--tries"],
                 ["--flags"]):
        p = tool(conf, "put", *args)
        tap.equal("usage: put %s exits 64" % " ".join(args), p.returncode, 64, diag(p))
    p = run([TOOL, "-h"])
    tap.check("-h prints the synopsis and exits 0", p.returncode == 0 and "purge [--expired]" in p.stdout
              and "get ADDRESS|DOMAIN|KEY" in p.stdout and "del [--domain] ADDRESS|DOMAIN|KEY" in p.stdout
              and "put [--flags LIST] [--deferred-for DURATION] [--tries N]" in p.stdout, diag(p))
    p = run([TOOL, "-V"])
    tap.check("-V prints the version", p.returncode == 0 and p.stdout.startswith("vemilter-cache "), diag(p))


def t_config_errors(tap, cleanup):
    tmp, conf = scratch(cleanup)
    p = run([TOOL, "-c", tmp.join("missing.conf"), "list"])
    tap.check("missing config exits 78 and names it", p.returncode == 78 and "missing.conf" in p.stderr, diag(p))
    bad = tmp.write("bad.conf", "cache_max_mb = lots\n")
    p = run([TOOL, "-c", bad, "stats"])
    tap.check("bad config exits 78 with file:line", p.returncode == 78 and "bad.conf:1:" in p.stderr, diag(p))
    none = tmp.write("none.conf", "cache =\n")
    p = run([TOOL, "-c", none, "stats"])
    tap.check("no cache configured exits 78", p.returncode == 78 and "no cache" in p.stderr, diag(p))
    nodir = tmp.write("nodir.conf", "cache = %s\n" % tmp.join("nope", "cache.lmdb"))
    p = run([TOOL, "-c", nodir, "stats"])
    tap.check("a missing cache directory exits 1 and names it",
              p.returncode == 1 and tmp.join("nope") + " is missing" in p.stderr, diag(p))
    tap.check("... and is not created", not os.path.exists(tmp.join("nope")))


def t_put_get_list(tap, cleanup):
    tmp, conf = scratch(cleanup)
    p = tool(conf, "put", "Bob@Example.ORG", "invalid", "550", "5.1.1", "user unknown")
    got = records(p)
    tap.check("put an address: exit 0, prints the normalized record",
              p.returncode == 0 and len(got) == 1 and got[0] is not None
              and got[0]["key"] == "a:Bob@example.org" and got[0]["outcome"] == "invalid"
              and got[0]["reply"] == '"550 5.1.1 user unknown"' and got[0]["mark"] is None, diag(p))
    p = tool(conf, "put", "d:example.org", "catch_all")
    tap.check("put a domain key", p.returncode == 0 and p.stdout.startswith("d:example.org catch_all "), diag(p))
    p = tool(conf, "get", "Bob@example.org")
    got = records(p)
    tap.check("get shows the address's record and its domain's (facts, and hints: none)",
              p.returncode == 0 and [g and (g["key"], g["outcome"]) for g in got]
              == [("a:Bob@example.org", "invalid"), ("d:example.org", "catch_all"), None]
              and p.stdout.splitlines()[2] == "h:example.org not cached", diag(p))
    p = tool(conf, "get", "alice@example.org")
    tap.check("get: address not cached, domain cached: exit 0",
              p.returncode == 0 and "a:alice@example.org not cached" in p.stdout
              and "d:example.org catch_all" in p.stdout, diag(p))
    p = tool(conf, "get", "alice@other.org")
    tap.check("get: nothing cached: exit 1", p.returncode == 1 and "d:other.org not cached" in p.stdout, diag(p))
    p = tool(conf, "get", "not an address")
    tap.check("get: a bad address is reported, exit 1", p.returncode == 1 and "not an address" in p.stderr,
              diag(p))
    p = tool(conf, "get", "a:Bob@example.org")
    tap.check("get by key", p.returncode == 0 and len(p.stdout.splitlines()) == 1, diag(p))
    p = tool(conf, "list")
    got = records(p)
    tap.check("list: one parseable line per record, in key order",
              p.returncode == 0 and [g and g["key"] for g in got] == ["a:Bob@example.org", "d:example.org"], diag(p))
    inv = got[0] or {}
    tap.check("list: stage, ISO-8601 times, refresh before expiry",
              inv.get("stage") == "none" and inv.get("probed", "") < inv.get("refresh", "")
              < inv.get("expires", ""), diag(p))
    p = tool(conf, "put", '"john doe"@example.org', "valid")
    p = tool(conf, "list")
    tap.check("list quotes a key holding a space", '"a:\\"john doe\\"@example.org" valid ' in p.stdout, diag(p))
    p = tool(conf, "put", "Bob@example.org", "tempfail")
    p2 = tool(conf, "get", "a:Bob@example.org")
    tap.check("put replaces whatever was there (even a definite answer)",
              p.returncode == 0 and " tempfail " in p2.stdout, diag(p2))


def t_marks_and_sweep(tap, cleanup):
    tmp, conf = scratch(cleanup, temporary_ttl="1s", negative_refresh="1s", negative_ttl="1d")
    tool(conf, "put", "gone@example.org", "tempfail")
    tool(conf, "put", "old@example.org", "invalid", "550", "5.1.1", "no such user")
    tool(conf, "put", "fresh@example.org", "valid")
    time.sleep(1.3)
    p = tool(conf, "list")
    marks = {g["key"]: g["mark"] for g in records(p) if g}
    tap.equal("list marks expired and stale records",
              marks, {"a:fresh@example.org": None, "a:gone@example.org": " expired",
                      "a:old@example.org": " stale"}, diag(p))
    p = tool(conf, "get", "gone@example.org")
    tap.check("get still shows an expired record, marked",
              p.returncode == 0 and p.stdout.splitlines()[0].endswith(" expired"), diag(p))
    p = tool(conf, "stats")
    tap.check("stats counts the expired one", p.returncode == 0 and "\nexpired: 1\n" in p.stdout, diag(p))
    p = tool(conf, "purge", "--expired")
    tap.check("purge --expired removes it and says so",
              p.returncode == 0 and p.stdout.strip() == "removed 1 expired record", diag(p))
    p = tool(conf, "list")
    tap.equal("two records left", len(p.stdout.splitlines()), 2, diag(p))


def t_stats_del_purge(tap, cleanup):
    tmp, conf = scratch(cleanup)
    for args in (("a@x.org", "valid"), ("b@x.org", "valid"), ("c@x.org", "invalid"), ("d:x.org", "catch_all"),
                 ("d:y.org", "no_domain")):
        tool(conf, "put", *args)
    p = tool(conf, "stats")
    fields = dict(line.split(": ", 1) for line in p.stdout.splitlines() if ": " in line)
    tap.check("stats: counts by kind and outcome",
              p.returncode == 0 and fields.get("records") == "5" and fields.get("addresses") == "3"
              and fields.get("domains") == "2" and fields.get("hints") == "0"
              and fields.get("valid") == "2" and fields.get("invalid") == "1"
              and fields.get("catch_all") == "1" and fields.get("no_domain") == "1"
              and fields.get("tempfail") == "0", diag(p))
    tap.check("stats: map and used sizes", re.match(r"^\d+ \(", fields.get("map_bytes", ""))
              and re.match(r"^\d+ \(", fields.get("used_bytes", ""))
              and fields.get("max_bytes", "").startswith("4194304 "), diag(p))
    p = tool(conf, "del", "a@x.org")
    tap.check("del: exit 0, says deleted", p.returncode == 0 and "a:a@x.org deleted" in p.stdout, diag(p))
    p = tool(conf, "del", "a@x.org")
    tap.check("del again: exit 1, not cached", p.returncode == 1 and "not cached" in p.stdout, diag(p))
    p = tool(conf, "del", "b@x.org")
    tap.check("del leaves the domain record alone", "d:x.org" not in p.stdout
              and tool(conf, "get", "d:x.org").returncode == 0, diag(p))
    p = tool(conf, "del", "--domain", "c@x.org")
    tap.check("del --domain deletes both", p.returncode == 0 and "a:c@x.org deleted" in p.stdout
              and "d:x.org deleted" in p.stdout, diag(p))
    p = tool(conf, "purge")
    tap.check("purge removes everything and says how many",
              p.returncode == 0 and p.stdout.strip() == "removed 1 record", diag(p))
    p = tool(conf, "list")
    tap.check("list of an empty cache: no lines, exit 0", p.returncode == 0 and p.stdout == "", diag(p))


def t_domains_and_hints(tap, cleanup):
    """Domain facts (d:) and probe hints (h:) are shown, set and deleted like
    address records: by key, by domain (any case, IDN), or with an address."""
    tmp, conf = scratch(cleanup, temporary_ttl="10m")
    p = tool(conf, "put", "--flags", "not_catchall,fallback_sender", "h:B\u00fccher.Example", "valid")
    got = records(p)
    tap.check("put a hints key: normalized to lower-case A-labels, flags shown by name",
              p.returncode == 0 and len(got) == 1 and got[0] is not None
              and got[0]["key"] == "h:xn--bcher-kva.example"
              and got[0]["flags"] == "not_catchall,fallback_sender" and got[0]["tries"] == "0"
              and got[0]["deferred_since"] == "-", diag(p))
    p = tool(conf, "put", "B\u00fccher.example", "no_domain")
    tap.check("put DOMAIN stores the domain's fact (d:)",
              p.returncode == 0 and p.stdout.startswith("d:xn--bcher-kva.example no_domain flags=- "), diag(p))
    before = time.time()
    p = tool(conf, "put", "--deferred-for", "3h", "--tries=2", "--flags", "greylist",
             "bob@b\u00fccher.example", "tempfail", "450", "4.2.0", "-greylisted-")
    got = records(p)
    deferred = got[0] and calendar.timegm(time.strptime(got[0]["deferred_since"], "%Y-%m-%dT%H:%M:%SZ"))
    tap.check("put an address with --deferred-for 3h --tries=2 --flags greylist (TEXT may start with a dash)",
              p.returncode == 0 and got[0] is not None and got[0]["key"] == "a:bob@xn--bcher-kva.example"
              and got[0]["flags"] == "greylist" and got[0]["tries"] == "2"
              and got[0]["reply"] == "\"450 4.2.0 -greylisted-\""
              and abs(deferred - (before - 3 * 3600)) < 5, "%s\ndeferred %r, want about %r" % (
                  diag(p), deferred, before - 3 * 3600))
    tool(conf, "put", "alice@other.example", "valid")

    p = tool(conf, "list")
    got = records(p)
    tap.check("list: every kind, in key order, each line parseable",
              p.returncode == 0 and [g and (g["key"], g["outcome"], g["flags"]) for g in got]
              == [("a:alice@other.example", "valid", "-"), ("a:bob@xn--bcher-kva.example", "tempfail", "greylist"),
                  ("d:xn--bcher-kva.example", "no_domain", "-"),
                  ("h:xn--bcher-kva.example", "valid", "not_catchall,fallback_sender")], diag(p))

    for arg in ("B\u00fccher.Example", "xn--bcher-kva.example.", "XN--BCHER-KVA.EXAMPLE"):
        p = tool(conf, "get", arg)
        tap.check("get DOMAIN (%s): the domain's facts and hints, not its addresses" % arg,
                  p.returncode == 0 and [g and g["key"] for g in records(p)]
                  == ["d:xn--bcher-kva.example", "h:xn--bcher-kva.example"], diag(p))
    p = tool(conf, "get", "someone@B\u00fccher.example")
    tap.check("get ADDRESS: its own record (absent) and its domain's two",
              p.returncode == 0 and p.stdout.splitlines()[0] == "a:someone@xn--bcher-kva.example not cached"
              and [g and g["key"] for g in records(p)[1:]]
              == ["d:xn--bcher-kva.example", "h:xn--bcher-kva.example"], diag(p))
    p = tool(conf, "get", "h:XN--BCHER-KVA.example")
    tap.check("get h:KEY: that key only, normalized",
              p.returncode == 0 and [g and g["key"] for g in records(p)] == ["h:xn--bcher-kva.example"], diag(p))
    p = tool(conf, "get", "other.example")
    tap.check("get DOMAIN with only address records: exit 1, both keys not cached",
              p.returncode == 1 and p.stdout == "d:other.example not cached\nh:other.example not cached\n",
              diag(p))
    p = tool(conf, "get", "no such domain")
    tap.check("get: neither an address nor a domain: exit 1 and says so",
              p.returncode == 1 and "not an address or a domain" in p.stderr, diag(p))
    p = tool(conf, "put", "h:not a domain", "valid")
    tap.check("put: a key that does not parse is refused (exit 1)",
              p.returncode == 1 and "not a valid key" in p.stderr, diag(p))
    p = tool(conf, "stats")
    fields = dict(line.split(": ", 1) for line in p.stdout.splitlines() if ": " in line)
    tap.check("stats counts hints apart: records 4 = 2 addresses + 1 domain + 1 hints",
              (fields.get("records"), fields.get("addresses"), fields.get("domains"), fields.get("hints"))
              == ("4", "2", "1", "1"), diag(p))

    p = tool(conf, "del", "bob@b\u00fccher.example")
    tap.check("del ADDRESS: only the address's record",
              p.returncode == 0 and p.stdout == "a:bob@xn--bcher-kva.example deleted\n", diag(p))
    p = tool(conf, "del", "B\u00fccher.example")
    tap.check("del DOMAIN: its facts and hints",
              p.returncode == 0 and p.stdout == "d:xn--bcher-kva.example deleted\nh:xn--bcher-kva.example deleted\n",
              diag(p))
    p = tool(conf, "del", "b\u00fccher.example")
    tap.check("del DOMAIN again: exit 1, not cached", p.returncode == 1
              and p.stdout.count(" not cached") == 2, diag(p))
    tool(conf, "put", "h:other.example", "valid")
    p = tool(conf, "del", "--domain", "alice@other.example")
    tap.check("del --domain ADDRESS: the address's record, the domain's facts and hints",
              p.returncode == 0 and p.stdout == "a:alice@other.example deleted\nd:other.example not cached\n"
              "h:other.example deleted\n", diag(p))
    p = tool(conf, "put", "t:Some=Key@Example.org", "valid")
    tap.check("a key of another kind is taken exactly as given",
              p.returncode == 0 and p.stdout.startswith("t:Some=Key@Example.org valid ")
              and tool(conf, "get", "t:Some=Key@Example.org").returncode == 0
              and tool(conf, "del", "t:Some=Key@Example.org").stdout == "t:Some=Key@Example.org deleted\n",
              diag(p))
    p = tool(conf, "list")
    tap.check("nothing left", p.returncode == 0 and p.stdout == "", diag(p))


def t_tagged_sender(tap, cleanup):
    """A tagged sender's answer lives under its stable form (t:): get and del
    of any of its addresses reach it, as tagged_senders says which are."""
    tmp, conf = scratch(cleanup)
    tool(conf, "put", "--flags", "tagged", "t:alice@bat.example", "valid")
    tool(conf, "put", "prvs=1111111111=alice@bat.example", "valid")
    p = tool(conf, "get", "prvs=2222222222=alice@bat.example")
    lines = p.stdout.splitlines()
    tap.check("get ADDRESS of a tagged sender: its record, its stable form's, its domain's",
              p.returncode == 0 and len(lines) == 4
              and lines[0] == "a:prvs=2222222222=alice@bat.example not cached"
              and lines[1].startswith("t:alice@bat.example valid flags=tagged ")
              and lines[2:] == ["d:bat.example not cached", "h:bat.example not cached"], diag(p))
    p = tool(conf, "get", "alice@bat.example")
    tap.check("get ADDRESS not tagged: no t: key",
              p.returncode == 1 and "t:" not in p.stdout, diag(p))
    p = tool(conf, "get", "a:prvs=1111111111=alice@bat.example")
    tap.check("get a:KEY: that key only", p.returncode == 0 and len(p.stdout.splitlines()) == 1, diag(p))
    p = tool(conf, "del", "prvs=1111111111=alice@bat.example")
    tap.check("del ADDRESS of a tagged sender: its record and its stable form's",
              p.returncode == 0 and p.stdout == "a:prvs=1111111111=alice@bat.example deleted\n"
              "t:alice@bat.example deleted\n", diag(p))
    p = tool(conf, "list")
    tap.check("nothing left of the sender", p.returncode == 0 and p.stdout == "", diag(p))
    tool(conf, "put", "--flags", "tagged", "t:list-bounces@lists.example", "valid")
    p = tool(conf, "del", "list-bounces+bob=example.org@lists.example")
    tap.check("del ADDRESS (VERP): the stable form's answer is deleted although the address had none",
              p.returncode == 0 and p.stdout == "a:list-bounces+bob=example.org@lists.example not cached\n"
              "t:list-bounces@lists.example deleted\n", diag(p))

    tmp2, conf2 = scratch(cleanup, tagged_senders="srs")
    tool(conf2, "put", "--flags", "tagged", "t:alice@bat.example", "valid")
    p = tool(conf2, "del", "prvs=1111111111=alice@bat.example")
    tap.check("tagged_senders without batv: a BATV address names no t: key",
              p.returncode == 1 and p.stdout == "a:prvs=1111111111=alice@bat.example not cached\n"
              and tool(conf2, "get", "t:alice@bat.example").returncode == 0, diag(p))


def t_corrupt_file(tap, cleanup):
    tmp, conf = scratch(cleanup)
    with open(tmp.join("cache.lmdb"), "wb") as f:
        f.write(os.urandom(20000))
    p = tool(conf, "list")
    moved = [n for n in os.listdir(tmp.path) if n.startswith("cache.lmdb.corrupt.")]
    tap.check("corrupt file: list exits 0 and reports it was moved aside and recreated",
              p.returncode == 0 and "moved aside" in p.stderr and "starting a new one" in p.stderr
              and len(moved) == 1 and moved[0] in p.stderr, diag(p))
    p = tool(conf, "put", "x@example.org", "valid")
    tap.check("the new cache works", p.returncode == 0 and tool(conf, "get", "x@example.org").returncode == 0,
              diag(p))


def t_while_held(tap, cleanup):
    tmp, conf = scratch(cleanup)
    text = "t" * 290
    for i in range(150):  # well over a pipe's 64 KiB of list output
        p = tool(conf, "put", "user%03d@example.org" % i, "invalid", "550", "5.1.1", text)
        if p.returncode != 0:
            tap.check("populate", False, diag(p))
            return
    # list blocks writing to a pipe nobody reads, with the cache open.
    lister = subprocess.Popen([TOOL, "-c", conf, "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL)
    cleanup.add(lister.kill)
    time.sleep(0.3)
    tap.check("list is still running (blocked on its pipe)", lister.poll() is None)
    t0 = time.monotonic()
    p1 = tool(conf, "put", "other@example.org", "valid", timeout=10)
    p2 = tool(conf, "get", "other@example.org", timeout=10)
    p3 = tool(conf, "del", "user000@example.org", timeout=10)
    took = time.monotonic() - t0
    tap.check("put, get and del work while another process holds the cache",
              p1.returncode == 0 and p2.returncode == 0 and p3.returncode == 0 and took < 10,
              "%.1f s\n%s\n%s\n%s" % (took, diag(p1), diag(p2), diag(p3)))
    out, err = lister.communicate(timeout=20)
    lines = out.decode().splitlines()
    tap.check("the held list finishes with its own snapshot",
              lister.returncode == 0 and len(lines) == 150 and lines[0].startswith("a:user000@example.org "),
              "exit %r, %d lines, stderr %s" % (lister.returncode, len(lines), err.decode()))


TESTS = [t_usage, t_config_errors, t_put_get_list, t_marks_and_sweep, t_stats_del_purge, t_domains_and_hints,
         t_tagged_sender, t_corrupt_file, t_while_held]


setup = vmtest.require_binary(TOOL, "vemilter-cache")


if __name__ == "__main__":
    vmtest.run_tests(TESTS, per_test_timeout=60, total_timeout=170, setup=setup)
