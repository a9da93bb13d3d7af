#!/usr/bin/python3
"""test_dns - the MX lookup (src/dns.c) against the fake DNS server.

Runs tests/tools/dnsquery against tests/fakes/fakedns.py (one FakeDNS on a
loopback port, UDP and TCP) and checks what dns_lookup_mx answered: MX
order and the shuffle of equal preferences, IPv4 before IPv6, the implicit
MX, null MX, NXDOMAIN, NODATA, unresolvable and failing MX hosts, SERVFAIL,
REFUSED, timeouts, truncation (retried over TCP), the max_mx and
max_addresses bounds, and the trace; the TTL of each answer (ttl_ms: the
negative TTL from the SOA in the authority section of NXDOMAIN and NODATA
answers, RFC 2308; the null MX's TTL; the smallest known of several; 0
without an SOA or with a damaged one); then that the resolver is stateless
(counted in the fake server's queries): concurrent and repeated lookups of
a domain each resolve, a cancelled lookup's resolution is abandoned and
asks no more. Sharing one resolution among the probes of a domain, and
keeping its answer no longer than its TTL and dns_cache_time, are the
verifier's: tests/unit/test_vcore.c and test_verify.py. Names are
CNAME-free. TAP output;
standard library only; loopback only; every wait is bounded.
"""

import os
import re
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("VEMILTER_SRCDIR") or os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SRCDIR, "tests", "lib"))
sys.path.insert(0, os.path.join(SRCDIR, "tests", "fakes"))

import vmtest  # noqa: E402

BUILDDIR = os.environ.get("VEMILTER_BUILDDIR") or SRCDIR
DNSQUERY = os.path.join(BUILDDIR, "tests", "tools", "dnsquery")
RUN_TIMEOUT = 30          # seconds for one dnsquery run
SHORT_MS = 200            # -t for the cases that time out on purpose
SLOW_S = 0.5              # the MX answer of slow.test comes this late

A1, A2, A3 = "192.0.2.1", "192.0.2.2", "192.0.2.3"
V6A, V6B = "2001:db8::1", "2001:db8::2"

BIG = 300                 # MX records of big.test


def zone():
    z = {
        # ordering, equal preferences, IPv4 before IPv6
        "order.test": {"MX": [[30, "mx3.order.test"], [10, "mx1.order.test"], [20, "mx2.order.test"]]},
        "mx1.order.test": {"A": [A1]},
        "mx2.order.test": {"A": [A2]},
        "mx3.order.test": {"A": [A3]},
        "equal.test": {"MX": [[10, "e1.equal.test"], [20, "e3.equal.test"], [10, "e2.equal.test"]]},
        "e1.equal.test": {"A": [A1]},
        "e2.equal.test": {"A": [A2]},
        "e3.equal.test": {"A": [A3]},
        "mixed.test": {"MX": [[10, "mx.mixed.test"]]},
        "mx.mixed.test": {"AAAA": [V6A, V6B], "A": [A1, A2]},
        "dupes.test": {"MX": [[10, "mx1.order.test"], [20, "MX1.Order.Test"], [30, "mx2.order.test"]]},
        # implicit MX
        "implicit.test": {"A": [A1], "AAAA": [V6A]},
        "implicit6.test": {"AAAA": [V6B]},
        "implicit-fail.test": {"TXT": ["x"], "rcode": {"A": "SERVFAIL", "AAAA": "SERVFAIL"}},
        # definite "no"
        "nullmx.test": {"MX": [[0, "."]], "A": [A1]},
        "halfnull.test": {"MX": [[0, "."], [10, "mx1.order.test"]]},
        "empty.test": {"TXT": ["v=spf1 -all"]},
        "onegood.test": {"MX": [[10, "missing.onegood.test"], [20, "mx2.order.test"]]},
        "allmissing.test": {"MX": [[10, "gone1.allmissing.test"], [20, "gone2.allmissing.test"]]},
        "nodata-hosts.test": {"MX": [[10, "bare.nodata-hosts.test"]]},
        "bare.nodata-hosts.test": {"TXT": ["no addresses here"]},
        "literal.test": {"MX": [[10, "192.0.2.9"], [20, "mx3.order.test"]]},
        # "try again"
        "hostfail.test": {"MX": [[10, "sf.hostfail.test"], [20, "gone.hostfail.test"]]},
        "sf.hostfail.test": {"rcode": "SERVFAIL"},
        "hostfail-other-ok.test": {"MX": [[10, "sf.hostfail.test"], [20, "mx2.order.test"]]},
        "servfail.test": {"rcode": {"MX": "SERVFAIL"}, "A": [A1]},
        "refused.test": {"rcode": "REFUSED"},
        "dead.test": {"timeout": True},
        "slowaaaa.test": {"MX": [[10, "mx.slowaaaa.test"]]},
        "mx.slowaaaa.test": {"A": [A3], "timeout": {"AAAA": True}},
        # transport
        "tc.test": {"MX": [[10, "mx1.order.test"], [20, "mx2.order.test"]], "truncate": True},
        "big.test": {"MX": [[i, "mx%d.big.test" % i] for i in range(BIG)]},
        # sharing and caching
        "slow.test": {"MX": [[10, "mx1.order.test"], [20, "mx2.order.test"]], "delay": {"MX": SLOW_S}},
        "shortttl.test": {"MX": [[10, "mx.shortttl.test"]]},
        "mx.shortttl.test": {"A": [A3], "AAAA": [V6A], "ttl": 1},
        # TTLs: negative ones from the SOA (TTL, MINIMUM) of the zone's apex
        "neg.test": {"soa": {"ttl": 300, "minimum": 60}},
        "nodata.neg.test": {"TXT": ["no MX, no address"], "soa": {"ttl": 45, "minimum": 600}},
        "nullmx120.test": {"MX": [[0, "."]], "ttl": {"MX": 120}},
        "ttlok.test": {"MX": [[10, "mx.ttlok.test"]], "ttl": {"MX": 90}},
        "mx.ttlok.test": {"A": [A1], "AAAA": [V6A], "ttl": {"A": 30, "AAAA": 40}},
        "okneg.test": {"MX": [[10, "mx.okneg.test"]], "ttl": 90},
        "mx.okneg.test": {"A": [A1], "ttl": 30, "soa": {"ttl": 10, "minimum": 300}},
        "implicitneg.test": {"A": [A1], "AAAA": [V6A], "ttl": 50, "soa": {"ttl": 300, "minimum": 20}},
        "ttlhosts.test": {"MX": [[10, "gone.ttlhosts.test"], [20, "bare.ttlhosts.test"]], "ttl": 100,
                          "soa": {"ttl": 50, "minimum": 40}},
        "bare.ttlhosts.test": {"TXT": ["no address"], "soa": {"ttl": 20, "minimum": 25}},
        "ttlhalf.test": {"MX": [[10, "gone.ttlhalf.test"], [20, "bare.ttlhalf.test"]], "ttl": 100},
        "bare.ttlhalf.test": {"TXT": ["no address"], "soa": {"ttl": 70, "minimum": 80, "mangle": "cut"}},
        "gone.ttlhalf.test": {"rcode": "NXDOMAIN", "soa": None},
        "nosoa.test": {"soa": None},
        "huge.test": {"soa": {"ttl": 0x7fffffff, "minimum": 0x7fffffff}},
        "topbit.test": {"soa": {"ttl": 0xffffffff, "minimum": 60}},
        "cut.test": {"soa": {"ttl": 300, "minimum": 60, "mangle": "cut"}},
        "rdlength.test": {"soa": {"ttl": 300, "minimum": 60, "mangle": "rdlength"}},
        "short.test": {"soa": {"ttl": 300, "minimum": 60, "mangle": "short"}},
        "loop.test": {"soa": {"ttl": 300, "minimum": 60, "mangle": "loop"}},
        "badnodata.test": {"TXT": ["x"], "soa": {"ttl": 300, "minimum": 60, "mangle": "rdlength"}},
        # negative answers: 1 s and 3 s of negative TTL, and 30 s
        "grow.test": {"soa": {"ttl": 300, "minimum": 1}},
        "neg3.test": {"soa": {"ttl": 3, "minimum": 300}},
        "stay.test": {"soa": {"ttl": 300, "minimum": 30}},
    }
    for i in range(BIG):
        z["mx%d.big.test" % i] = {"A": ["198.51.100.%d" % (i % 200 + 1), "203.0.113.%d" % (i % 200 + 1)],
                                  "AAAA": ["2001:db8:1::%x" % (i + 1)]}
    return z


dns = None
PORT = None


def dnsquery(domains, *options, timeout=RUN_TIMEOUT):
    """Run dnsquery -v; returns (CompletedProcess, [result dict per domain], seconds)."""
    argv = [DNSQUERY, "-v", "-s", "127.0.0.1:%d" % PORT] + list(options) + list(domains)
    t0 = time.monotonic()
    r = vmtest.run(argv, timeout=timeout)
    return r, parse(r.stdout or ""), time.monotonic() - t0


def parse(text):
    """dnsquery -v output -> list of {domain, status, implicit, hosts, ttl_ms, detail, trace}."""
    results = []
    for line in text.splitlines():
        m = re.match(r"^(\S+) status=(\S+) implicit=([01]) hosts=(\d+)$", line)
        if m:
            results.append({"domain": m.group(1), "status": m.group(2),
                            "implicit": m.group(3) == "1", "count": int(m.group(4)),
                            "hosts": [], "ttl_ms": None, "detail": None, "trace": []})
            continue
        if not results:
            continue
        cur = results[-1]
        m = re.match(r"^  host (\S+) pref (\d+) addrs (\S*)$", line)
        if m:
            addrs = m.group(3).split(",") if m.group(3) else []
            cur["hosts"].append((m.group(1), int(m.group(2)), addrs))
        elif re.match(r"^  ttl_ms \d+$", line):
            cur["ttl_ms"] = int(line.split()[1])
        elif line.startswith("  detail "):
            cur["detail"] = line[len("  detail "):]
        elif line.startswith("dns: "):
            cur["trace"].append(line)
    return results


def diag_of(r, extra=None):
    def d():
        parts = ["exit: %r" % r.returncode, "stdout:", vmtest.tail(r.stdout or ""),
                 "stderr:", vmtest.tail(r.stderr or "")]
        if extra:
            parts.append(extra() if callable(extra) else str(extra))
        return "\n".join(parts)
    return d


def one(tap, domain, *options, timeout=RUN_TIMEOUT):
    """Look one domain up; its result (or None, reported)."""
    r, res, secs = dnsquery([domain], *options, timeout=timeout)
    ok = tap.check("%s: dnsquery ran (exit 0, one answer)" % domain,
                   r.returncode == 0 and len(res) == 1 and res[0]["domain"] == domain, diag_of(r))
    return (res[0] if ok else None), r, secs


def names(result):
    return [h[0] for h in result["hosts"]]


def is_v4(a):
    return ":" not in a


# ---------------------------------------------------------------- cases

def expect(domain, status, *options, implicit=False, hosts=None, detail=None, trace=None, ttl_ms=None):
    """A case: status, implicit flag, optionally the host names in order,
    a detail substring, trace lines (regexes) that must appear and the
    answer's ttl_ms."""
    def test(tap, cleanup):
        res, r, _ = one(tap, domain, *options)
        if res is None:
            return
        d = diag_of(r)
        tap.equal("%s: status %s" % (domain, status), res["status"], status, d)
        tap.equal("%s: implicit=%d" % (domain, implicit), res["implicit"], implicit, d)
        if hosts is not None:
            tap.equal("%s: hosts %s" % (domain, hosts), names(res), hosts, d)
        if status != "ok":
            tap.equal("%s: no hosts" % domain, res["count"], 0, d)
        if detail is not None:
            tap.check("%s: detail says %r" % (domain, detail), detail in (res["detail"] or ""), d)
        for rx in trace or ():
            tap.check("%s: trace has %r" % (domain, rx), any(re.search(rx, t) for t in res["trace"]), d)
        if ttl_ms is not None:
            tap.equal("%s: ttl_ms %d" % (domain, ttl_ms), res["ttl_ms"], ttl_ms, d)
    test.__name__ = "test_" + re.sub(r"\W", "_", domain)
    return test


CASES = [
    expect("order.test", "ok", hosts=["mx1.order.test", "mx2.order.test", "mx3.order.test"],
           trace=[r"^dns: MX order\.test\? -> 30 mx3\.order\.test, 10 mx1\.order\.test, 20 mx2\.order\.test$",
                  r"^dns: A mx1\.order\.test\? -> 192\.0\.2\.1$",
                  r"^dns: AAAA mx1\.order\.test\? -> NODATA$"]),
    expect("dupes.test", "ok", hosts=["mx1.order.test", "mx2.order.test"]),
    expect("implicit.test", "ok", implicit=True, hosts=["implicit.test"],
           detail="no MX; using A/AAAA of implicit.test (implicit MX)",
           trace=[r"^dns: MX implicit\.test\? -> NODATA$"]),
    expect("implicit6.test", "ok", implicit=True, hosts=["implicit6.test"]),
    expect("implicit-fail.test", "tempfail", implicit=True, detail="SERVFAIL"),
    expect("nullmx.test", "null_mx", detail="null MX (RFC 7505)", ttl_ms=60000),
    expect("halfnull.test", "ok", hosts=["mx1.order.test"]),
    expect("nope.test", "nxdomain", detail="NXDOMAIN", trace=[r"^dns: MX nope\.test\? -> NXDOMAIN$"],
           ttl_ms=60000),                                         # the fake's default SOA: 60, 60
    expect("empty.test", "no_mail_host", implicit=True,
           trace=[r"^dns: A empty\.test\? -> NODATA$", r"^dns: AAAA empty\.test\? -> NODATA$"]),
    expect("onegood.test", "ok", hosts=["mx2.order.test"],
           trace=[r"^dns: A missing\.onegood\.test\? -> NXDOMAIN$"]),
    expect("allmissing.test", "no_mail_host"),
    expect("nodata-hosts.test", "no_mail_host"),
    expect("literal.test", "ok", hosts=["mx3.order.test"], trace=[r"192\.0\.2\.9 is an IP address"]),
    expect("hostfail.test", "tempfail", detail="SERVFAIL"),
    expect("hostfail-other-ok.test", "ok", hosts=["mx2.order.test"]),
    expect("servfail.test", "tempfail", detail="MX servfail.test: SERVFAIL"),
    expect("refused.test", "tempfail", detail="REFUSED"),
    expect("slowaaaa.test", "ok", "-t", str(SHORT_MS), hosts=["mx.slowaaaa.test"],
           trace=[r"^dns: AAAA mx\.slowaaaa\.test\? -> timeout$"]),
    # TTLs (ttl_ms): RFC 2308 negative TTL = min(SOA TTL, SOA MINIMUM)
    expect("gone.neg.test", "nxdomain", ttl_ms=60000),            # TTL 300, MINIMUM 60
    expect("gone.neg3.test", "nxdomain", ttl_ms=3000),            # TTL 3, MINIMUM 300
    expect("gone.grow.test", "nxdomain", ttl_ms=1000),            # TTL 300, MINIMUM 1
    expect("gone.stay.test", "nxdomain", ttl_ms=30000),           # TTL 300, MINIMUM 30
    expect("nodata.neg.test", "no_mail_host", implicit=True, ttl_ms=45000),  # NODATA x3, TTL 45
    expect("nullmx120.test", "null_mx", ttl_ms=120000),           # the MX record's TTL
    expect("ttlok.test", "ok", hosts=["mx.ttlok.test"], ttl_ms=30000),  # MX 90, A 30, AAAA 40
    expect("okneg.test", "ok", hosts=["mx.okneg.test"], ttl_ms=10000),  # MX 90, A 30, AAAA NODATA 10
    expect("implicitneg.test", "ok", implicit=True, ttl_ms=20000),      # MX NODATA 20, A/AAAA 50
    # no MX host resolves: MX TTL 100, NXDOMAIN min(50, 40), NODATA min(20, 25)
    expect("ttlhosts.test", "no_mail_host", ttl_ms=20000),
    # only the MX TTL is known (one host's NXDOMAIN has no SOA, the other's is damaged)
    expect("ttlhalf.test", "no_mail_host", ttl_ms=100000),
    expect("gone.nosoa.test", "nxdomain", ttl_ms=0),              # no SOA: unknown
    expect("gone.huge.test", "nxdomain", ttl_ms=2147483647000),
    expect("gone.topbit.test", "nxdomain", ttl_ms=1),             # TTL 2^32-1 counts as 0 (RFC 2181)
    expect("gone.cut.test", "nxdomain", ttl_ms=0),                # damaged SOA: unknown, no crash
    expect("gone.rdlength.test", "nxdomain", ttl_ms=0),
    expect("gone.short.test", "nxdomain", ttl_ms=0),
    expect("gone.loop.test", "nxdomain", ttl_ms=0),
    expect("badnodata.test", "no_mail_host", implicit=True, ttl_ms=0),
    expect("servfail.test", "tempfail", ttl_ms=0),
    expect("hostfail.test", "tempfail", ttl_ms=0),
]


def test_equal_preferences_shuffled(tap, cleanup):
    runs = 30
    dns.clear_queries()
    r, res, _ = dnsquery(["equal.test"] * runs)
    if not tap.check("equal.test x%d: all answered" % runs,
                     r.returncode == 0 and len(res) == runs and all(x["status"] == "ok" for x in res),
                     diag_of(r)):
        return
    tap.equal("equal.test x%d: one MX query each (nothing shared)" % runs,
              asked(dns.queries, "equal.test", "MX"), runs, "queries: %r" % (dns.queries,))
    orders = set(tuple(names(x)) for x in res)
    tap.check("equal.test: both equal-preference hosts always first, the other last",
              all(set(o[:2]) == {"e1.equal.test", "e2.equal.test"} and o[2] == "e3.equal.test"
                  and len(o) == 3 for o in orders), "orders: %r" % (orders,))
    tap.check("equal.test: both orders of the equal preferences appear in %d runs" % runs,
              {o[:2] for o in orders} == {("e1.equal.test", "e2.equal.test"),
                                          ("e2.equal.test", "e1.equal.test")},
              "orders: %r" % (orders,))
    # the same over separate processes (each seeds its own generator)
    firsts = set()
    for _ in range(runs):
        _, res1, _ = dnsquery(["equal.test"])
        if res1 and res1[0]["hosts"]:
            firsts.add(res1[0]["hosts"][0][0])
    tap.check("equal.test: separate processes shuffle too", len(firsts) == 2, "firsts: %r" % (firsts,))


def test_ipv4_before_ipv6(tap, cleanup):
    res, r, _ = one(tap, "mixed.test")
    if res is None:
        return
    addrs = res["hosts"][0][2] if res["hosts"] else []
    tap.equal("mixed.test: IPv4 addresses first, then IPv6", [is_v4(a) for a in addrs],
              [True, True, False, False], diag_of(r))
    tap.equal("mixed.test: all four addresses", sorted(addrs), sorted([A1, A2, V6A, V6B]), diag_of(r))
    res, r, _ = one(tap, "implicit.test")
    if res is not None:
        tap.equal("implicit.test: A then AAAA", res["hosts"][0][2] if res["hosts"] else None,
                  [A1, V6A], diag_of(r))


def test_timeout_bounded(tap, cleanup):
    res, r, secs = one(tap, "dead.test", "-t", str(SHORT_MS), timeout=15)
    if res is None:
        return
    tap.equal("dead.test: tempfail", res["status"], "tempfail", diag_of(r))
    tap.check("dead.test: detail says timeout", "timeout" in (res["detail"] or ""), diag_of(r))
    # two tries (c-ares doubles the second): about 3 x SHORT_MS
    tap.check("dead.test: gave up within 3 s (took %.2f s)" % secs, secs < 3.0, diag_of(r))
    tap.check("dead.test: the query was retried", sum(1 for q in dns.queries if q[0] == "dead.test") >= 2,
              lambda: "queries: %r" % [q for q in dns.queries if q[0] == "dead.test"])


def test_truncated_retried_over_tcp(tap, cleanup):
    dns.clear_queries()
    res, r, _ = one(tap, "tc.test")
    if res is None:
        return
    tap.equal("tc.test: ok", res["status"], "ok", diag_of(r))
    tap.equal("tc.test: both hosts", names(res), ["mx1.order.test", "mx2.order.test"], diag_of(r))
    q = dns.queries
    tap.check("tc.test: asked over UDP, then over TCP",
              ("tc.test", "MX", "udp") in q and ("tc.test", "MX", "tcp") in q, "queries: %r" % (q,))


def test_bounds(tap, cleanup):
    res, r, _ = one(tap, "big.test", "--max-mx", "3", "--max-addresses", "50")
    if res is not None:
        tap.equal("big.test --max-mx 3: the three lowest preferences", [(h[0], h[1]) for h in res["hosts"]],
                  [("mx0.big.test", 0), ("mx1.big.test", 1), ("mx2.big.test", 2)], diag_of(r))
    dns.clear_queries()
    res, r, _ = one(tap, "big.test", "--max-mx", "10", "--max-addresses", "7")
    if res is None:
        return
    counts = [len(h[2]) for h in res["hosts"]]
    tap.equal("big.test --max-addresses 7: 7 addresses in all, earlier hosts first", counts, [3, 3, 1],
              diag_of(r))
    tap.equal("big.test: the cut host keeps IPv4 first", res["hosts"][2][2][0] if len(res["hosts"]) > 2
              else None, "198.51.100.3", diag_of(r))
    asked = {q[0] for q in dns.queries if q[1] in ("A", "AAAA")}
    tap.check("big.test: addresses asked for at most max_mx hosts (%d)" % len(asked), len(asked) <= 10,
              "asked: %r" % sorted(asked))
    tap.check("big.test: the 300-record MX answer came over TCP", ("big.test", "MX", "tcp") in dns.queries,
              "queries: %r" % [q for q in dns.queries if q[0] == "big.test"])


def test_no_search_domains(tap, cleanup):
    dns.clear_queries()
    res, r, _ = one(tap, "nope.test")
    if res is None:
        return
    q = dns.queries
    tap.equal("nope.test: exactly one MX query, for the name as given",
              [(n, t) for n, t, _ in q], [("nope.test", "MX")], "queries: %r" % (q,))


def test_many_at_once(tap, cleanup):
    domains = ["order.test", "nope.test", "nullmx.test", "implicit.test", "empty.test",
               "servfail.test", "onegood.test", "refused.test"] * 5
    want = {"order.test": "ok", "nope.test": "nxdomain", "nullmx.test": "null_mx",
            "implicit.test": "ok", "empty.test": "no_mail_host", "servfail.test": "tempfail",
            "onegood.test": "ok", "refused.test": "tempfail"}
    r, res, secs = dnsquery(domains)
    tap.equal("%d lookups on one event_base: every answer right" % len(domains),
              [(x["domain"], x["status"]) for x in res], [(d, want[d]) for d in domains], diag_of(r))
    tap.check("%d lookups at once took %.2f s (< 5 s)" % (len(domains), secs), secs < 5.0)


# ------------------------------------------------- no sharing, no cache

def asked(queries, name=None, qtype=None):
    """How many queries (of name, of qtype) the fake server received (any case)."""
    return sum(1 for n, t, _ in queries
               if (name is None or n.lower() == name.lower()) and (qtype is None or t == qtype))


def answer_of(result):
    return (result["status"], result["implicit"], result["hosts"])


def rounds(tap, label, r, res, domains):
    """dnsquery --repeat-after output: (first round, second round), or None (reported)."""
    want = list(domains) * 2
    if not tap.equal("%s: both rounds answered, in order" % label, [x["domain"] for x in res], want, diag_of(r)):
        return None
    return res[:len(domains)], res[len(domains):]


def test_concurrent_lookups_independent(tap, cleanup):
    # dns.c is stateless: sharing one resolution among the probes of a
    # domain is the verifier's (tests/unit/test_vcore.c, test_verify.py)
    domains = ["order.test"] * 17 + ["Order.Test", "ORDER.TEST", "order.test"]
    dns.clear_queries()
    r, res, _ = dnsquery(domains)
    q = dns.queries
    d = diag_of(r, lambda: "queries: %r" % (q,))
    if not tap.equal("20 concurrent lookups of order.test: 20 answers", len(res), 20, d):
        return
    want = (["mx1.order.test", "mx2.order.test", "mx3.order.test"], [[A1], [A2], [A3]])
    tap.check("order.test x20: every answer ok with all three hosts and their addresses",
              all(x["status"] == "ok" and ([n.lower() for n in names(x)], [h[2] for h in x["hosts"]]) == want
                  for x in res), d)
    tap.equal("order.test x20: 20 MX queries, one per lookup", asked(q, "order.test", "MX"), 20, d)
    for host in want[0]:
        tap.equal("order.test x20: 20 A and 20 AAAA queries for %s" % host,
                  (asked(q, host, "A"), asked(q, host, "AAAA")), (20, 20), d)
    led = [x for x in res if any(t.lower().startswith("dns: mx order.test? -> 30 ") for t in x["trace"])]
    tap.equal("order.test x20: every lookup's trace has its own resolution", len(led), 20, d)
    tap.check("order.test x20: no trace line says joined or cached",
              not any("joined" in t or "(cached)" in t for x in res for t in x["trace"]), d)


def test_repeat_resolves_again(tap, cleanup):
    domains = ["order.test", "implicit.test", "nope.test", "nullmx.test", "empty.test", "servfail.test"]
    want = ["ok", "ok", "nxdomain", "null_mx", "no_mail_host", "tempfail"]
    dns.clear_queries()
    r, res, _ = dnsquery(domains, "--repeat-after", "50")
    q = dns.queries
    d = diag_of(r, lambda: "queries: %r" % (q,))
    got = rounds(tap, "repeated lookups", r, res, domains)
    if got is None:
        return
    first, second = got
    tap.equal("repeat: the same statuses twice", [x["status"] for x in first + second], want * 2, d)
    tap.equal("repeat: the same answers", [answer_of(x) for x in second], [answer_of(x) for x in first], d)
    for domain in domains:
        tap.equal("repeat: %s asked MX twice (the resolver keeps nothing)" % domain, asked(q, domain, "MX"),
                  2, d)
    tap.check("repeat: no (cached) trace line", not any("(cached)" in t for x in second for t in x["trace"]), d)
    tap.check("repeat: every second-round trace has its own MX line",
              all(any(t.startswith("dns: MX %s? -> " % x["domain"]) for t in x["trace"]) for x in second), d)


def test_cancel_one_of_several(tap, cleanup):
    for which, label in ((1, "the second"), (0, "the first")):
        dns.clear_queries()
        r, res, _ = dnsquery(["slow.test"] * 3, "--cancel-after", "100", "--cancel-which", str(which))
        q = dns.queries
        d = diag_of(r, lambda: "queries: %r" % (q,))
        want = ["ok"] * 3
        want[which] = "cancelled"
        tap.equal("slow.test x3, cancel %s: the others answered" % label, [x["status"] for x in res], want, d)
        tap.check("cancel %s: the others got both hosts" % label,
                  all(names(x) == ["mx1.order.test", "mx2.order.test"] for i, x in enumerate(res)
                      if i != which), d)
        tap.equal("cancel %s: three MX queries" % label, asked(q, "slow.test", "MX"), 3, d)
        tap.equal("cancel %s: the cancelled resolution asked no A/AAAA (2 x 2 x 2 for the others)" % label,
                  asked(q, qtype="A") + asked(q, qtype="AAAA"), 8, d)


def test_cancelled_then_repeated(tap, cleanup):
    # a cancelled lookup's resolution is abandoned: its MX answer starts no
    # host queries, and the repeat resolves again
    dns.clear_queries()
    r, res, _ = dnsquery(["slow.test"], "--cancel-after", "100", "--repeat-after", str(int(SLOW_S * 1000) + 400))
    q = dns.queries
    d = diag_of(r, lambda: "queries: %r" % (q,))
    got = rounds(tap, "slow.test cancelled, then repeated", r, res, ["slow.test"])
    if got is None:
        return
    tap.equal("cancelled, repeated: cancelled, then ok", [got[0][0]["status"], got[1][0]["status"]],
              ["cancelled", "ok"], d)
    tap.equal("cancelled, repeated: the abandoned resolution asked no A/AAAA (1 + 5 queries)", len(q), 6, d)


def test_short_ttl_reported(tap, cleanup):
    # how long an answer holds is reported for its keeper (vcore.c) to obey:
    # the smallest TTL of the records used (here the hosts' A/AAAA, 1 s)
    res, r, _ = one(tap, "shortttl.test")
    if res is not None:
        tap.equal("shortttl.test: ok, ttl_ms 1000 (the A/AAAA TTL)", (res["status"], res["ttl_ms"]),
                  ("ok", 1000), diag_of(r))


def test_valgrind(tap, cleanup):
    if vmtest.SANITIZED or shutil.which("valgrind") is None:
        tap.skip("valgrind: clean", "a sanitizer build (valgrind cannot run ASan binaries)"
                 if vmtest.SANITIZED else "valgrind not installed")
        return
    runs = (("answers", ["order.test", "equal.test", "mixed.test", "implicit.test", "nullmx.test",
                         "nope.test", "empty.test", "onegood.test", "hostfail.test", "servfail.test",
                         "refused.test", "tc.test", "literal.test", "halfnull.test"], []),
            ("bounds", ["big.test"], ["--max-mx", "20", "--max-addresses", "9"]),
            ("timeout", ["dead.test", "slowaaaa.test"], ["-t", str(SHORT_MS)]),
            ("cancel while waiting", ["dead.test", "slowaaaa.test"], ["-t", str(SHORT_MS),
                                                                     "--cancel-after", "100"]),
            ("cancel before the start", ["order.test", "nope.test"], ["--cancel-after", "0"]),
            ("free the resolver under lookups", ["dead.test", "order.test", "big.test"],
             ["-t", str(SHORT_MS), "--free-after", "20"]),
            ("several of one domain, repeated", ["order.test"] * 4 + ["Order.Test", "nope.test", "nope.test",
                                                                      "servfail.test", "equal.test",
                                                                      "equal.test", "empty.test",
                                                                      "hostfail.test"],
             ["--repeat-after", "20"]),
            ("ttl", ["gone.neg.test", "nodata.neg.test", "nullmx120.test", "ttlok.test", "ttlhosts.test",
                     "ttlhalf.test", "gone.nosoa.test", "gone.huge.test", "gone.topbit.test", "gone.cut.test",
                     "gone.rdlength.test", "gone.short.test", "gone.loop.test", "badnodata.test"],
             ["--repeat-after", "20"]),
            ("cancel the first of several", ["slow.test"] * 3, ["--cancel-after", "100"]),
            ("cancel the last of several", ["slow.test"] * 3, ["--cancel-after", "100", "--cancel-which", "2"]),
            ("cancel, then repeat", ["slow.test", "order.test"], ["--cancel-after", "100", "--repeat-after", "900"]),
            ("free the resolver with lookups running",
             ["slow.test", "slow.test", "dead.test", "nope.test"],
             ["-t", str(SHORT_MS), "--repeat-after", "10", "--free-after", str(int(SLOW_S * 1000) + 600)]))
    for label, domains, options in runs:
        argv = ["valgrind", "-q", "--leak-check=full", "--show-leak-kinds=all", "--error-exitcode=9",
                "--errors-for-leak-kinds=definite,indirect,possible", DNSQUERY, "-v",
                "-s", "127.0.0.1:%d" % PORT] + options + domains
        r = vmtest.run(argv, timeout=60)
        tap.equal("valgrind %s: clean" % label, r.returncode, 0, diag_of(r))


def test_bad_usage(tap, cleanup):
    r = vmtest.run([DNSQUERY, "-s", "not-an-address", "x.test"], timeout=10)
    tap.check("a bad server is refused with a reason", r.returncode == 1 and "not-an-address" in r.stderr,
              diag_of(r))
    r = vmtest.run([DNSQUERY], timeout=10)
    tap.equal("no domain: usage error", r.returncode, 2, diag_of(r))


def setup(tap):
    global dns, PORT
    if not os.access(DNSQUERY, os.X_OK):
        return "%s not built" % DNSQUERY
    try:
        import fakedns
    except ImportError as e:
        return "tests/fakes/fakedns.py not available: %s" % e
    dns = fakedns.FakeDNS(zone())
    PORT = dns.start()
    return None


def main():
    tests = CASES + [
        test_equal_preferences_shuffled, test_ipv4_before_ipv6, test_timeout_bounded,
        test_truncated_retried_over_tcp, test_bounds, test_no_search_domains, test_many_at_once,
        test_concurrent_lookups_independent, test_repeat_resolves_again, test_cancel_one_of_several,
        test_cancelled_then_repeated, test_short_ttl_reported, test_bad_usage, test_valgrind,
    ]
    try:
        vmtest.run_tests(tests, per_test_timeout=90, total_timeout=170, setup=setup)
    finally:
        if dns is not None:
            dns.stop()


if __name__ == "__main__":
    main()
