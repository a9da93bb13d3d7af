#!/usr/bin/python3
"""selftest - checks the test fakes themselves (fakedns.py and smtpfarm.py).

Speaks TAP ("ok N - name" per check, "# ..." diagnostics, the plan line
"1..N"); exit status 0 when every check passed. Each check drives a fake
with raw sockets (hand-built DNS packets over UDP and TCP) or with smtplib
and ssl, so the fakes are tested by code that shares nothing with them. A
watchdog ends the run if anything hangs.

    /usr/bin/python3 tests/fakes/selftest.py
"""

import json
import os
import random
import signal
import smtplib
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True              # no __pycache__ in the source tree

from fakedns import FakeDNS                 # noqa: E402
from smtpfarm import SmtpFarm               # noqa: E402

PYTHON = "/usr/bin/python3"
WATCHDOG = 240.0          # the whole run
TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28, "OPT": 41}
TYPE_NAMES = {v: k for k, v in TYPES.items()}
RCODE = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


# ======================================================================
# A tiny DNS client, independent of fakedns.py

def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\x00"


def build_query(name, qtype, qid=None, rd=True, edns=None, qdcount=1):
    """A query packet; edns is the advertised payload size (None: no OPT)."""
    qid = random.randrange(65536) if qid is None else qid
    flags = 0x0100 if rd else 0
    pkt = struct.pack("!HHHHHH", qid, flags, qdcount, 0, 0, 1 if edns else 0)
    code = TYPES[qtype] if isinstance(qtype, str) else qtype
    pkt += encode_name(name) + struct.pack("!HH", code, 1)
    if edns:
        pkt += b"\x00" + struct.pack("!HHIH", 41, edns, 0, 0)
    return pkt


def udp_query(port, pkt, timeout=2.0, host="127.0.0.1"):
    """The reply to pkt over UDP, or None if none came within timeout."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(pkt, (host, port))
        try:
            return s.recv(65535)
        except socket.timeout:
            return None


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf


def tcp_query(port, pkt, timeout=2.0, host="127.0.0.1"):
    """The reply to pkt over TCP, or None if none came within timeout."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(struct.pack("!H", len(pkt)) + pkt)
        try:
            (n,) = struct.unpack("!H", recv_exact(s, 2))
            return recv_exact(s, n)
        except socket.timeout:
            return None


def query(port, transport, *args, timeout=2.0, **kw):
    pkt = build_query(*args, **kw)
    fn = udp_query if transport == "udp" else tcp_query
    return fn(port, pkt, timeout=timeout), pkt


def parse_name(msg, off):
    labels, jumps, end = [], 0, None
    while True:
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if end is None:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            jumps += 1
            assert jumps < 50, "pointer loop in reply"
            continue
        off += 1
        if n == 0:
            break
        labels.append(msg[off:off + n].decode("latin-1"))
        off += n
    return ".".join(labels), (end if end is not None else off)


def parse_rdata(msg, rtype, off, rdlen):
    rd = msg[off:off + rdlen]
    t = TYPE_NAMES.get(rtype)
    if t == "A":
        return socket.inet_ntop(socket.AF_INET, rd)
    if t == "AAAA":
        return socket.inet_ntop(socket.AF_INET6, rd)
    if t == "MX":
        return (struct.unpack("!H", rd[:2])[0], parse_name(msg, off + 2)[0])
    if t in ("CNAME", "NS"):
        return parse_name(msg, off)[0]
    if t == "TXT":
        out, i = [], 0
        while i < len(rd):
            out.append(rd[i + 1:i + 1 + rd[i]].decode())
            i += 1 + rd[i]
        return out
    if t == "SOA":
        mname, o = parse_name(msg, off)
        rname, o = parse_name(msg, o)
        return (mname, rname) + struct.unpack("!IIIII", msg[o:o + 20])
    return rd


def parse_reply(msg):
    """A dict describing a reply: id, flags, rcode, question, sections."""
    qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", msg[:12])
    r = {"id": qid, "qr": bool(flags & 0x8000), "aa": bool(flags & 0x0400),
         "tc": bool(flags & 0x0200), "rd": bool(flags & 0x0100),
         "rcode": RCODE.get(flags & 0xF, flags & 0xF), "len": len(msg),
         "question_raw": None, "an": [], "ns": [], "ar": []}
    off = 12
    assert qd == 1, "reply has %d questions" % qd
    start = off
    r["qname"], off = parse_name(msg, off)
    r["qtype"] = struct.unpack("!H", msg[off:off + 2])[0]
    off += 4
    r["question_raw"] = msg[start:off]
    for sect, count in (("an", an), ("ns", ns), ("ar", ar)):
        for _ in range(count):
            name, off = parse_name(msg, off)
            rtype, rclass, ttl, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
            off += 10
            r[sect].append({"name": name, "type": TYPE_NAMES.get(rtype, rtype), "class": rclass,
                            "ttl": ttl, "rdata": parse_rdata(msg, rtype, off, rdlen),
                            "raw": msg[off:off + rdlen]})
            off += rdlen
    assert off == len(msg), "trailing bytes in reply"
    return r


def answers(r, rtype=None):
    return [a["rdata"] for a in r["an"] if rtype is None or a["type"] == rtype]


# ======================================================================
# SMTP helpers

def smtp(port, addr, timeout=5.0):
    return smtplib.SMTP(addr, port, timeout=timeout, local_hostname="selftest.example")


def raw_connect(addr, port, timeout=5.0):
    s = socket.create_connection((addr, port), timeout=timeout)
    return s, s.makefile("rb")


def read_reply(f):
    """The lines of one SMTP reply (CRLF stripped), read from a file."""
    lines = []
    while True:
        line = f.readline()
        if not line:
            raise EOFError("connection closed; got %r" % lines)
        line = line.decode("latin-1").rstrip("\r\n")
        lines.append(line)
        if len(line) < 4 or line[3] != "-":
            return lines


def eof_within(s, timeout):
    """True if the peer closes the connection within timeout."""
    s.settimeout(timeout)
    try:
        while True:
            if not s.recv(65536):
                return True
    except socket.timeout:
        return False
    except ConnectionError:
        return True


def refused(addr, port):
    try:
        socket.create_connection((addr, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def threads_left():
    return [t.name for t in threading.enumerate()
            if t.name.startswith(("fakedns", "smtpfarm"))]


# ======================================================================
# TAP runner

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def main():
    def bail():
        print("Bail out! selftest watchdog: still running after %.0f s" % WATCHDOG, flush=True)
        os._exit(2)
    dog = threading.Timer(WATCHDOG, bail)
    dog.daemon = True
    dog.start()
    failed = 0
    for n, fn in enumerate(CHECKS, 1):
        name = (fn.__doc__ or fn.__name__).strip().splitlines()[0]
        try:
            fn()
        except Exception:
            failed += 1
            print("not ok %d - %s" % (n, name))
            for line in traceback.format_exc().splitlines():
                print("# " + line)
        else:
            print("ok %d - %s" % (n, name))
        sys.stdout.flush()
    print("1..%d" % len(CHECKS))
    if failed:
        print("# %d of %d failed" % (failed, len(CHECKS)))
    dog.cancel()
    return 1 if failed else 0


# ======================================================================
# DNS checks

ZONE = {
    "example.test": {"MX": [[10, "mx1.example.test"], [20, "mx2.other.test"]],
                     "A": ["192.0.2.1"], "AAAA": ["2001:db8::1"],
                     "TXT": ["v=spf1 -all", ["two", "strings"], "x" * 300]},
    "Mixed.Case.TEST.": {"A": ["192.0.2.7"]},
    "nullmx.test": {"MX": [[0, "."]]},
    "nx.test": {"rcode": "NXDOMAIN"},
    "servfail.test": {"rcode": "SERVFAIL", "MX": [[10, "mx1.example.test"]]},
    "refused.test": {"rcode": "REFUSED"},
    "mxfail.test": {"rcode": {"MX": "SERVFAIL"}, "A": ["192.0.2.2"]},
    "dead.test": {"timeout": True, "A": ["192.0.2.3"]},
    "deadmx.test": {"timeout": {"MX": True}, "A": ["192.0.2.4"], "MX": [[1, "x.test"]]},
    "tc.test": {"truncate": True, "MX": [[10, "mx1.example.test"]]},
    "slow.test": {"delay": 0.6, "A": ["192.0.2.5"]},
    "big.test": {"MX": [[i, "mx%d.big.test" % i] for i in range(300)]},
    "mid.test": {"MX": [[i, "mx%d.mid.test" % i] for i in range(40)]},
    "alias.test": {"CNAME": "example.test"},
    "ttl.test": {"A": ["192.0.2.9"], "ttl": 5},
}


def with_dns(zone=ZONE, **kw):
    """A FakeDNS to use in a with block (started on entry, stopped on exit)."""
    return FakeDNS(zone, **kw)


def assert_header(r, pkt, rcode="NOERROR"):
    qid = struct.unpack("!H", pkt[:2])[0]
    assert r["id"] == qid, "ID not echoed"
    assert r["qr"] and r["aa"], "QR/AA not set"
    assert r["rd"] == bool(pkt[2] & 0x01), "RD not copied"
    assert r["question_raw"] == pkt[12:12 + len(r["question_raw"])], "question not echoed as sent"
    assert r["rcode"] == rcode, "rcode %s, want %s" % (r["rcode"], rcode)


@check
def dns_records():
    """dns: A, AAAA, MX, TXT answered over UDP and TCP, with AA, ID, RD and question echoed"""
    with with_dns() as dns:
        for tr in ("udp", "tcp"):
            for rd in (True, False):
                raw, pkt = query(dns.port, tr, "example.test", "MX", rd=rd)
                r = parse_reply(raw)
                assert_header(r, pkt)
                assert not r["tc"]
                assert answers(r) == [(10, "mx1.example.test"), (20, "mx2.other.test")], answers(r)
                assert all(a["name"] == "example.test" and a["ttl"] == 60 for a in r["an"])
            r = parse_reply(query(dns.port, tr, "example.test", "A")[0])
            assert answers(r) == ["192.0.2.1"]
            r = parse_reply(query(dns.port, tr, "example.test", "AAAA")[0])
            assert answers(r) == ["2001:db8::1"]
            r = parse_reply(query(dns.port, tr, "example.test", "TXT")[0])
            assert answers(r) == [["v=spf1 -all"], ["two", "strings"], ["x" * 255, "x" * 45]], answers(r)
            r = parse_reply(query(dns.port, tr, "ttl.test", "A")[0])
            assert r["an"][0]["ttl"] == 5


@check
def dns_case():
    """dns: names are case-insensitive, zone names may end in a dot, question case is kept"""
    with with_dns() as dns:
        for tr in ("udp", "tcp"):
            raw, pkt = query(dns.port, tr, "EXAMPLE.Test", "A")
            r = parse_reply(raw)
            assert_header(r, pkt)
            assert r["qname"] == "EXAMPLE.Test" and answers(r) == ["192.0.2.1"]
            r = parse_reply(query(dns.port, tr, "mixed.case.test", "A")[0])
            assert answers(r) == ["192.0.2.7"]
        assert ("example.test", "A", "udp") in dns.queries


@check
def dns_null_mx():
    """dns: a null MX [0, "."] encodes the root name"""
    with with_dns() as dns:
        for tr in ("udp", "tcp"):
            r = parse_reply(query(dns.port, tr, "nullmx.test", "MX")[0])
            assert len(r["an"]) == 1 and r["an"][0]["raw"] == b"\x00\x00\x00", r["an"]
            assert answers(r) == [(0, "")]


@check
def dns_nxdomain_absent():
    """dns: a name absent from the zone is NXDOMAIN with an SOA in authority"""
    with with_dns() as dns:
        for tr in ("udp", "tcp"):
            raw, pkt = query(dns.port, tr, "nowhere.example.test", "MX")
            r = parse_reply(raw)
            assert_header(r, pkt, "NXDOMAIN")
            assert not r["an"] and [a["type"] for a in r["ns"]] == ["SOA"], r
            assert r["ns"][0]["name"] == "example.test"


@check
def dns_nodata():
    """dns: a name without the asked type is NOERROR/NODATA with an SOA"""
    with with_dns() as dns:
        for tr in ("udp", "tcp"):
            r = parse_reply(query(dns.port, tr, "nullmx.test", "AAAA")[0])
            assert r["rcode"] == "NOERROR" and not r["an"], r
            assert [a["type"] for a in r["ns"]] == ["SOA"] and r["ns"][0]["name"] == "nullmx.test"
            assert r["ns"][0]["rdata"][0] == "ns.fake.test"


@check
def dns_rcodes():
    """dns: rcode NXDOMAIN, SERVFAIL, REFUSED for every type, and per type"""
    with with_dns() as dns:
        for tr in ("udp", "tcp"):
            for name, rc in (("nx.test", "NXDOMAIN"), ("servfail.test", "SERVFAIL"),
                             ("refused.test", "REFUSED")):
                for qt in ("MX", "A", "AAAA"):
                    raw, pkt = query(dns.port, tr, name, qt)
                    r = parse_reply(raw)
                    assert_header(r, pkt, rc)
                    assert not r["an"], r
            r = parse_reply(query(dns.port, tr, "mxfail.test", "MX")[0])
            assert r["rcode"] == "SERVFAIL"
            r = parse_reply(query(dns.port, tr, "mxfail.test", "A")[0])
            assert r["rcode"] == "NOERROR" and answers(r) == ["192.0.2.2"]


@check
def dns_timeout():
    """dns: timeout never answers (UDP and TCP), per type too, but records the query"""
    with with_dns() as dns:
        for tr in ("udp", "tcp"):
            assert query(dns.port, tr, "dead.test", "A", timeout=0.6)[0] is None
            assert query(dns.port, tr, "deadmx.test", "MX", timeout=0.6)[0] is None
            r = parse_reply(query(dns.port, tr, "deadmx.test", "A")[0])
            assert answers(r) == ["192.0.2.4"]
        q = dns.queries
        for tr in ("udp", "tcp"):
            assert ("dead.test", "A", tr) in q and ("deadmx.test", "MX", tr) in q, q


@check
def dns_truncate():
    """dns: truncate gives TC=1 and no records over UDP, the full answer over TCP"""
    with with_dns() as dns:
        for edns in (None, 4096):
            raw, pkt = query(dns.port, "udp", "tc.test", "MX", edns=edns)
            r = parse_reply(raw)
            assert_header(r, pkt)
            assert r["tc"] and not r["an"] and not r["ns"], r
        r = parse_reply(query(dns.port, "tcp", "tc.test", "MX")[0])
        assert not r["tc"] and answers(r) == [(10, "mx1.example.test")]


@check
def dns_delay():
    """dns: delay answers late without holding up other queries"""
    with with_dns() as dns:
        for tr in ("udp", "tcp"):
            result = {}

            def slow():
                t0 = time.monotonic()
                result["r"] = query(dns.port, tr, "slow.test", "A", timeout=3)[0]
                result["t"] = time.monotonic() - t0
            th = threading.Thread(target=slow)
            th.start()
            time.sleep(0.1)
            t0 = time.monotonic()
            r = parse_reply(query(dns.port, tr, "example.test", "A")[0])
            fast = time.monotonic() - t0
            th.join(5)
            assert answers(r) == ["192.0.2.1"] and fast < 0.4, fast
            assert result["t"] >= 0.55, result
            assert answers(parse_reply(result["r"])) == ["192.0.2.5"]


@check
def dns_large():
    """dns: 300 MX over TCP; over UDP TC past 512 bytes (no EDNS) or past the EDNS size"""
    with with_dns() as dns:
        r = parse_reply(query(dns.port, "tcp", "big.test", "MX")[0])
        assert not r["tc"] and len(r["an"]) == 300, len(r["an"])
        assert answers(r)[299] == (299, "mx299.big.test")
        for edns in (None, 1232, 4096):
            raw = query(dns.port, "udp", "big.test", "MX", edns=edns)[0]
            r = parse_reply(raw)
            assert r["tc"] and not r["an"], (edns, r["len"])
            assert r["len"] <= (edns or 512)
        # 40 MX: about 900 bytes, over 512 but within 1232.
        r = parse_reply(query(dns.port, "tcp", "mid.test", "MX")[0])
        assert 512 < r["len"] < 1232 and len(r["an"]) == 40, r["len"]
        r = parse_reply(query(dns.port, "udp", "mid.test", "MX")[0])
        assert r["tc"] and not r["an"]
        r = parse_reply(query(dns.port, "udp", "mid.test", "MX", edns=1232)[0])
        assert not r["tc"] and len(r["an"]) == 40
        # An EDNS size below 512 counts as 512.
        r = parse_reply(query(dns.port, "udp", "example.test", "MX", edns=100)[0])
        assert not r["tc"] and len(r["an"]) == 2


@check
def dns_edns():
    """dns: an OPT in the query gets an OPT back; none without"""
    with with_dns() as dns:
        for tr in ("udp", "tcp"):
            r = parse_reply(query(dns.port, tr, "example.test", "A", edns=1232)[0])
            assert [a["type"] for a in r["ar"]] == ["OPT"] and r["ar"][0]["name"] == ""
            assert r["ar"][0]["class"] == 1232
            r = parse_reply(query(dns.port, tr, "example.test", "A")[0])
            assert r["ar"] == []


@check
def dns_compressed_query():
    """dns: a compressed name in the query (OPT owner pointing at the question) is parsed"""
    with with_dns() as dns:
        pkt = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 1) + encode_name("example.test")
        pkt += struct.pack("!HH", 15, 1) + b"\xc0\x0c" + struct.pack("!HHIH", 41, 1232, 0, 0)
        r = parse_reply(udp_query(dns.port, pkt))
        assert r["id"] == 7 and len(r["an"]) == 2 and r["ar"][0]["type"] == "OPT"


@check
def dns_cname():
    """dns: a CNAME is answered, and followed inside the zone"""
    with with_dns() as dns:
        r = parse_reply(query(dns.port, "udp", "alias.test", "MX")[0])
        assert [(a["name"], a["type"]) for a in r["an"]] == [
            ("alias.test", "CNAME"), ("example.test", "MX"), ("example.test", "MX")], r["an"]
        r = parse_reply(query(dns.port, "tcp", "alias.test", "CNAME")[0])
        assert answers(r) == ["example.test"]


@check
def dns_queries_and_set_zone():
    """dns: queries are recorded per transport; set_zone changes answers at run time"""
    with with_dns() as dns:
        query(dns.port, "udp", "Example.Test", "MX")
        query(dns.port, "tcp", "nullmx.test", "AAAA")
        assert dns.queries == [("example.test", "MX", "udp"), ("nullmx.test", "AAAA", "tcp")], dns.queries
        dns.clear_queries()
        assert dns.queries == []
        dns.set_zone({"example.test": {"A": ["198.51.100.1"]}})
        for tr in ("udp", "tcp"):
            assert answers(parse_reply(query(dns.port, tr, "example.test", "A")[0])) == ["198.51.100.1"]
            assert parse_reply(query(dns.port, tr, "nullmx.test", "MX")[0])["rcode"] == "NXDOMAIN"


TTL_ZONE = {
    "": {"soa": {"ttl": 7, "minimum": 8}},              # the zone-wide default
    "apex.test": {"soa": {"ttl": 300, "minimum": 60}},
    "sub.apex.test": {"TXT": ["x"]},
    "nx.apex.test": {"rcode": "NXDOMAIN", "soa": {"ttl": 5, "minimum": 6}},
    "own.test": {"TXT": ["x"], "soa": {"ttl": 45, "minimum": 600}},
    "nosoa.test": {"A": ["192.0.2.1"], "soa": None},
    "mx.test": {"MX": [[10, "mx1.example.test"]], "A": ["192.0.2.1"], "ttl": {"MX": 90, "a": 0}},
    "nullmx.test": {"MX": [[0, "."]], "ttl": {"MX": 120}},
    "all.test": {"MX": [[10, "mx1.example.test"]], "A": ["192.0.2.1"], "ttl": 33},
}


def soa_of_reply(r):
    """(owner, ttl, minimum) of each authority record, which must all be SOAs."""
    assert all(a["type"] == "SOA" for a in r["ns"]), r["ns"]
    return [(a["name"], a["ttl"], a["rdata"][6]) for a in r["ns"]]


@check
def dns_soa_ttl_and_minimum():
    """dns: "soa" sets the TTL and MINIMUM of negative answers, for the name and the names below it"""
    with with_dns(TTL_ZONE) as dns:
        for tr in ("udp", "tcp"):
            def neg(name, qtype="MX"):
                r = parse_reply(query(dns.port, tr, name, qtype)[0])
                assert not r["an"], r
                return r["rcode"], soa_of_reply(r)
            assert neg("x.apex.test") == ("NXDOMAIN", [("apex.test", 300, 60)])
            assert neg("deep.x.apex.test") == ("NXDOMAIN", [("apex.test", 300, 60)])
            assert neg("sub.apex.test") == ("NOERROR", [("apex.test", 300, 60)])   # inherited
            assert neg("apex.test", "AAAA") == ("NOERROR", [("apex.test", 300, 60)])
            assert neg("nx.apex.test") == ("NXDOMAIN", [("apex.test", 5, 6)])     # its own, parent owns it
            assert neg("own.test", "AAAA") == ("NOERROR", [("own.test", 45, 600)])
            assert neg("gone.own.test") == ("NXDOMAIN", [("own.test", 45, 600)])
            assert neg("nosoa.test", "MX") == ("NOERROR", [])                     # "soa": null
            assert neg("x.nosoa.test") == ("NXDOMAIN", [])
            assert neg("elsewhere.test") == ("NXDOMAIN", [("", 7, 8)])           # the root's default
    with with_dns() as dns:                               # no "soa" anywhere: 60, 60
        r = parse_reply(query(dns.port, "udp", "nowhere.example.test", "MX")[0])
        assert soa_of_reply(r) == [("example.test", 60, 60)], r["ns"]


@check
def dns_record_ttls():
    """dns: "ttl" as a number or per type (null MX and MX with their own TTL)"""
    with with_dns(TTL_ZONE) as dns:
        for tr in ("udp", "tcp"):
            r = parse_reply(query(dns.port, tr, "nullmx.test", "MX")[0])
            assert [(a["rdata"], a["ttl"]) for a in r["an"]] == [((0, ""), 120)], r["an"]
            r = parse_reply(query(dns.port, tr, "mx.test", "MX")[0])
            assert [a["ttl"] for a in r["an"]] == [90], r["an"]
            r = parse_reply(query(dns.port, tr, "mx.test", "A")[0])
            assert [a["ttl"] for a in r["an"]] == [0], r["an"]                 # type names any case
            r = parse_reply(query(dns.port, tr, "all.test", "MX")[0])
            assert [a["ttl"] for a in r["an"]] == [33]
            r = parse_reply(query(dns.port, tr, "all.test", "A")[0])
            assert [a["ttl"] for a in r["an"]] == [33]


def soa_layout(msg):
    """Offsets in a raw NXDOMAIN reply (no answers, one authority record):
    (owner offset, the owner's first two octets, RDLENGTH, octets after RDLENGTH)."""
    qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", msg[:12])
    assert (qd, an, ns) == (1, 0, 1), (qd, an, ns)
    _, off = parse_name(msg, 12)
    owner = off + 4
    if msg[owner] & 0xC0 == 0xC0:
        end = owner + 2
    else:
        _, end = parse_name(msg, owner)
    (rdlen,) = struct.unpack("!H", msg[end + 8:end + 10])
    return owner, msg[owner:owner + 2], rdlen, len(msg) - (end + 10)


@check
def dns_soa_mangled():
    """dns: "soa" "mangle" damages the SOA as documented (cut, rdlength, short, loop)"""
    zone = {"ok.test": {"soa": {"ttl": 300, "minimum": 60}}}
    for m in ("cut", "rdlength", "short", "loop"):
        zone[m + ".test"] = {"soa": {"ttl": 300, "minimum": 60, "mangle": m}}
    with with_dns(zone) as dns:
        for tr in ("udp", "tcp"):
            layout = {}
            for name in zone:
                raw, pkt = query(dns.port, tr, "x." + name, "MX")
                assert raw[:2] == pkt[:2] and raw[3] & 0xF == 3, "not an NXDOMAIN reply"
                layout[name] = soa_layout(raw)
            _, _, full, rest = layout["ok.test"]
            assert rest == full, layout                       # a sound SOA, nothing after it
            assert parse_reply(query(dns.port, tr, "x.ok.test", "MX")[0])["ns"][0]["rdata"][6] == 60
            assert layout["cut.test"][2:] == (full, full - 10), layout
            assert layout["rdlength.test"][2:] == (full + 200, full), layout
            assert layout["short.test"][2:] == (full - 12, full), layout
            owner, first, rdlen, rest = layout["loop.test"]
            assert first == struct.pack("!H", 0xC000 | owner) and (rdlen, rest) == (full, full), layout


@check
def dns_update_while_running():
    """dns: update() adds, replaces and removes names while serving (a domain that appears)"""
    with with_dns() as dns:
        for tr in ("udp", "tcp"):
            assert parse_reply(query(dns.port, tr, "born.test", "MX")[0])["rcode"] == "NXDOMAIN"
        dns.update({"born.test": {"MX": [[10, "mx1.example.test"]]}, "Nullmx.Test.": {"A": ["192.0.2.8"]}})
        for tr in ("udp", "tcp"):
            r = parse_reply(query(dns.port, tr, "born.test", "MX")[0])
            assert r["rcode"] == "NOERROR" and answers(r) == [(10, "mx1.example.test")], r
            r = parse_reply(query(dns.port, tr, "nullmx.test", "MX")[0])       # replaced
            assert r["rcode"] == "NOERROR" and not r["an"], r
            assert answers(parse_reply(query(dns.port, tr, "example.test", "A")[0])) == ["192.0.2.1"]
        dns.update({"born.test": None})
        for tr in ("udp", "tcp"):
            assert parse_reply(query(dns.port, tr, "born.test", "MX")[0])["rcode"] == "NXDOMAIN"
        for bad in ({"x.test": {"soa": {"ttl": -1}}}, {"x.test": {"soa": {"mangle": "shred"}}},
                    {"x.test": {"soa": {"serial": 1}}}, {"x.test": {"soa": 60}},
                    {"x.test": {"ttl": {"MX": "long"}}}, {"x.test": {"ttl": 2 ** 32}}):
            try:
                dns.update(bad)
            except ValueError:
                pass
            else:
                raise AssertionError("bad entry accepted: %r" % bad)
        assert parse_reply(query(dns.port, "udp", "x.test", "MX")[0])["rcode"] == "NXDOMAIN"


@check
def dns_malformed():
    """dns: malformed packets are dropped (logged), and the server keeps answering"""
    with with_dns() as dns:
        good = build_query("example.test", "A")
        bad = [
            b"",                                           # empty
            b"\x01\x02\x03",                               # shorter than a header
            good[:2] + b"\x81\x00" + good[4:],             # QR set: a response
            good[:4] + b"\x00\x02" + good[6:],             # QDCOUNT 2
            good[:12] + b"\x3f" + b"a" * 5,                # label past the end
            good[:12] + b"\xc0\x0c" + good[-4:],           # pointer loop on itself
            good[:12] + b"\x80abc" + good[-4:],            # reserved label type
            good[:-3],                                     # question cut short
            bytes(random.getrandbits(8) for _ in range(600)),
        ]
        for pkt in bad:
            assert udp_query(dns.port, pkt, timeout=0.3) is None
        # A garbage TCP frame, then a good query on the same connection? The
        # fake drops the frame; a new connection is answered.
        with socket.create_connection(("127.0.0.1", dns.port), timeout=2) as s:
            s.sendall(b"\x00\x05hello")
        assert dns.malformed >= len(bad) - 1
        for tr in ("udp", "tcp"):
            assert answers(parse_reply(query(dns.port, tr, "example.test", "A")[0])) == ["192.0.2.1"]


@check
def dns_tcp_pipelined():
    """dns: several queries on one TCP connection are all answered"""
    with with_dns() as dns:
        with socket.create_connection(("127.0.0.1", dns.port), timeout=3) as s:
            pkts = [build_query("example.test", t, qid=i) for i, t in enumerate(("A", "MX", "AAAA"))]
            s.sendall(b"".join(struct.pack("!H", len(p)) + p for p in pkts))
            ids = []
            for _ in pkts:
                (n,) = struct.unpack("!H", recv_exact(s, 2))
                ids.append(parse_reply(recv_exact(s, n))["id"])
            assert sorted(ids) == [0, 1, 2]


@check
def dns_ipv6_and_loopback_only():
    """dns: serves on ::1; a non-loopback host is refused"""
    with FakeDNS(ZONE, host="::1") as dns:
        for fn in (udp_query, tcp_query):
            r = parse_reply(fn(dns.port, build_query("example.test", "A"), host="::1"))
            assert answers(r) == ["192.0.2.1"]
    try:
        FakeDNS(ZONE, host="0.0.0.0")
    except ValueError:
        pass
    else:
        raise AssertionError("0.0.0.0 accepted")


@check
def dns_stop():
    """dns: stop() closes UDP, TCP (even an open connection and a pending delay) and joins threads"""
    dns = FakeDNS(ZONE)
    port = dns.start()
    conn = socket.create_connection(("127.0.0.1", port), timeout=2)
    pkt = build_query("slow.test", "A")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.sendto(pkt, ("127.0.0.1", port))            # a delayed answer in flight
        time.sleep(0.1)
        t0 = time.monotonic()
        dns.stop()
        assert time.monotonic() - t0 < 2.0
    assert eof_within(conn, 2.0), "open TCP connection not closed"
    conn.close()
    assert refused("127.0.0.1", port)
    assert udp_query(port, build_query("example.test", "A"), timeout=0.3) is None
    assert threads_left() == [], threads_left()
    dns.stop()                                       # twice is fine


@check
def dns_standalone():
    """dns: standalone 'fakedns.py --port 0 --zone FILE' prints its port and serves"""
    with tempfile.TemporaryDirectory() as d:
        zf = os.path.join(d, "zone.json")
        with open(zf, "w") as f:
            json.dump(ZONE, f)
        p = subprocess.Popen([PYTHON, os.path.join(HERE, "fakedns.py"), "--port", "0", "--zone", zf],
                             stdout=subprocess.PIPE, text=True)
        try:
            line = p.stdout.readline().strip()
            assert line.startswith("listening on 127.0.0.1:"), line
            port = int(line.rsplit(":", 1)[1])
            r = parse_reply(udp_query(port, build_query("example.test", "MX")))
            assert len(r["an"]) == 2
            r = parse_reply(tcp_query(port, build_query("big.test", "MX")))
            assert len(r["an"]) == 300
        finally:
            p.send_signal(signal.SIGTERM)
            rc = p.wait(10)
            p.stdout.close()
        assert rc == 0, rc


# ======================================================================
# SMTP checks

BEHAVIOURS = {
    "127.0.0.2": ("normal", {}),
    "127.0.0.3": ("catchall", {}),
    "127.0.0.4": ("catchall_452", {"users": ["alice"]}),
    "127.0.0.5": ("greylist", {}),
    "127.0.0.6": ("banner_421", {}),
    "127.0.0.7": ("banner_554", {}),
    "127.0.0.8": ("mail_refused", {}),
    "127.0.0.9": ("ehlo_refused", {}),
    "127.0.0.10": ("starttls", {}),
    "127.0.0.11": ("tls_broken", {}),
    "127.0.0.12": ("slow_banner", {"delay": 0.5}),
    "127.0.0.13": ("drop_after_mail", {}),
    "127.0.0.14": ("multiline", {}),
    "127.0.0.15": ("endless_line", {}),
    "127.0.0.16": ("garbage", {}),
    "127.0.0.17": ("silent_after_rcpt", {}),
    "127.0.0.18": ("normal", {"smtputf8": True, "users": ["Carol", "d.e"]}),
    "127.0.0.19": ("slow_banner", {}),                 # the default 30 s
    "127.0.0.20": ("normal", {"replies": {"RCPT": "451 4.3.0 local error",
                                          "BANNER": "220-one\n220 two"}}),
    "127.0.0.21": ("early_reply", {}),                 # when="banner"
    "127.0.0.22": ("early_reply", {"when": "ehlo"}),
    "127.0.0.23": ("early_reply", {"when": "mail", "users": ["alice"]}),
    "127.0.0.24": ("hang_quit", {}),
    "127.0.0.25": ("hang_catchall", {"users": ["alice"]}),
    "127.0.0.26": ("greylist_for", {"seconds": 1.0, "users": ["alice"]}),
    "127.0.0.27": ("null_sender_refused", {"users": ["alice"]}),
    "127.0.0.28": ("multiline_mismatch", {}),
    "127.0.0.29": ("normal", {"hostname": "probe.vemilter.test"}),
    "127.0.0.30": ("lagging_reply", {"users": ["alice"]}),
    "127.0.0.31": ("lagging_reply", {"users": ["alice"], "refuse_null": True, "delay": 0.1}),
    "127.0.0.32": ("null_sender_refused_at_rcpt", {"users": ["alice"]}),
    "::1": ("normal", {}),
}
FARM = None
PORT = None


def farm():
    """The shared farm, started on first use."""
    global FARM, PORT
    if FARM is None:
        FARM = SmtpFarm()
        for a, (b, o) in BEHAVIOURS.items():
            FARM.add(a, b, **o)
        PORT = FARM.start()
    return FARM


def last(addr):
    f = farm()
    assert f.wait_idle(addr, 5.0), "session on %s still open" % addr
    return f.sessions(addr)[-1]


@check
def smtp_normal():
    """smtp normal: banner, EHLO keywords, MAIL, RCPT known/unknown, RSET, NOOP, DATA 554, 500, QUIT"""
    f = farm()
    c = smtp(PORT, "127.0.0.2")
    code, text = c.ehlo("probe.test")
    assert code == 250
    lines = text.decode().split("\n")
    assert lines[1:] == ["PIPELINING", "8BITMIME", "SIZE 10240000", "ENHANCEDSTATUSCODES"], lines
    assert c.mail("") == (250, b"2.1.0 sender ok")
    assert c.rcpt("alice@example.test")[0] == 250
    assert c.rcpt("Bob@Whatever.Test")[0] == 250            # domain- and case-insensitive
    code, text = c.rcpt("nobody@example.test")
    assert code == 550 and text.startswith(b"5.1.1") and b"user unknown" in text, text
    assert c.rset()[0] == 250 and c.noop()[0] == 250
    assert c.docmd("DATA") == (554, b"5.5.1 no DATA allowed in tests")
    assert c.docmd("VRFY", "alice")[0] == 500
    assert c.docmd("RCPT TO:<alice@x>")[0] == 503               # no MAIL since RSET
    assert c.quit()[0] == 221
    s = last("127.0.0.2")
    assert s.commands == ["ehlo probe.test", "mail FROM:<>", "rcpt TO:<alice@example.test>",
                          "rcpt TO:<Bob@Whatever.Test>", "rcpt TO:<nobody@example.test>",
                          "rset", "noop", "DATA", "VRFY alice", "RCPT TO:<alice@x>", "quit"], s.commands
    assert s.closed_by == "server" and not s.tls and not s.bare_lf
    assert f.saw("127.0.0.2", "data") and f.count("127.0.0.2", "RCPT") == 4
    assert not f.saw("127.0.0.3", "DATA")
    c = smtp(PORT, "127.0.0.2")
    assert c.helo("probe.test")[0] == 250
    assert c.mail("") [0] == 250
    c.close()
    s = last("127.0.0.2")
    assert s.closed_by == "client" and s.commands == ["helo probe.test", "mail FROM:<>"]
    # MAIL before any greeting
    s, fh = raw_connect("127.0.0.2", PORT)
    read_reply(fh)
    s.sendall(b"MAIL FROM:<>\r\n")
    assert read_reply(fh)[0].startswith("503 5.5.1")
    s.close()
    fh.close()


@check
def smtp_options():
    """smtp options: smtputf8 advertised, users case-insensitive, replies override"""
    farm()
    c = smtp(PORT, "127.0.0.18")
    assert "smtputf8" in c.ehlo()[1].decode().lower()
    assert c.has_extn("smtputf8")
    c.mail("")
    assert c.rcpt("carol@x.test")[0] == 250 and c.rcpt("D.E@y.test")[0] == 250
    assert c.rcpt("alice@x.test")[0] == 550                    # not in this users list
    c.quit()
    s, fh = raw_connect("127.0.0.20", PORT)
    assert read_reply(fh) == ["220-one", "220 two"]
    s.sendall(b"EHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<alice@x>\r\nQUIT\r\n")   # pipelined
    assert read_reply(fh)[0].startswith("250-")
    assert read_reply(fh) == ["250 2.1.0 sender ok"]
    assert read_reply(fh) == ["451 4.3.0 local error"]
    assert read_reply(fh) == ["221 2.0.0 bye"]
    s.close()
    fh.close()


@check
def smtp_catchall():
    """smtp catchall: every RCPT gets 250"""
    farm()
    c = smtp(PORT, "127.0.0.3")
    c.ehlo()
    c.mail("")
    assert c.rcpt("nobody-at-all-xyz@example.test")[0] == 250
    c.quit()


@check
def smtp_catchall_452():
    """smtp catchall_452: known users 250, others 452 4.5.3"""
    farm()
    c = smtp(PORT, "127.0.0.4")
    c.ehlo()
    c.mail("")
    assert c.rcpt("alice@example.test")[0] == 250
    assert c.rcpt("random123@example.test") == (452, b"4.5.3 too many recipients")
    c.quit()


@check
def smtp_greylist():
    """smtp greylist: RCPT gets 450 4.7.1"""
    farm()
    c = smtp(PORT, "127.0.0.5")
    c.ehlo()
    c.mail("")
    assert c.rcpt("alice@example.test") == (450, b"4.7.1 greylisted, try again later")
    c.quit()


@check
def smtp_banner_421():
    """smtp banner_421: 421 4.3.2 then the server closes"""
    farm()
    s, fh = raw_connect("127.0.0.6", PORT)
    assert read_reply(fh) == ["421 4.3.2 service not available"]
    assert eof_within(s, 2.0)
    s.close()
    fh.close()
    ss = last("127.0.0.6")
    assert ss.closed_by == "server" and ss.commands == []


@check
def smtp_banner_554():
    """smtp banner_554: 554 5.7.1 banner, EHLO/HELO 503, QUIT 221"""
    farm()
    s, fh = raw_connect("127.0.0.7", PORT)
    assert read_reply(fh) == ["554 5.7.1 your IP is blocklisted"]
    for cmd in (b"EHLO probe.test\r\n", b"HELO probe.test\r\n", b"MAIL FROM:<>\r\n"):
        s.sendall(cmd)
        r = read_reply(fh)
        assert r[0].startswith("503 5.5.1") and "bad sequence" in r[0], r
    s.sendall(b"QUIT\r\n")
    assert read_reply(fh)[0].startswith("221")
    assert eof_within(s, 2.0)
    s.close()
    fh.close()
    assert last("127.0.0.7").closed_by == "server"


@check
def smtp_mail_refused():
    """smtp mail_refused: MAIL FROM gets 550 5.7.1"""
    farm()
    c = smtp(PORT, "127.0.0.8")
    c.ehlo()
    assert c.mail("") == (550, b"5.7.1 null sender not accepted from you")
    c.quit()


@check
def smtp_ehlo_refused():
    """smtp ehlo_refused: EHLO 502 5.5.2, HELO 250, then like normal"""
    farm()
    c = smtp(PORT, "127.0.0.9")
    assert c.ehlo() == (502, b"5.5.2 command not implemented")
    assert c.helo()[0] == 250
    assert c.mail("")[0] == 250 and c.rcpt("bob@x")[0] == 250 and c.rcpt("zz@x")[0] == 550
    c.quit()


@check
def smtp_starttls():
    """smtp starttls: STARTTLS offered, handshake (CN=mx.test), no STARTTLS after, commands recorded"""
    f = farm()
    c = smtp(PORT, "127.0.0.10")
    c.ehlo("probe.test")
    assert c.has_extn("starttls")
    ctx = ssl.create_default_context(cafile=f.cert_file)
    c._host = "mx.test"                              # name checked against the certificate
    assert c.starttls(context=ctx)[0] == 220
    assert c.sock.getpeercert()["subject"] == ((("commonName", "mx.test"),),)
    c.ehlo("probe.test")
    assert not c.has_extn("starttls")
    assert c.docmd("STARTTLS")[0] == 503
    c.mail("")
    assert c.rcpt("alice@x")[0] == 250
    c.quit()
    s = last("127.0.0.10")
    assert s.tls and s.closed_by == "server"
    assert s.commands == ["ehlo probe.test", "STARTTLS", "ehlo probe.test", "STARTTLS",
                          "mail FROM:<>", "rcpt TO:<alice@x>", "quit"], s.commands


@check
def smtp_tls_broken():
    """smtp tls_broken: STARTTLS 220 then garbage (handshake fails); a plain retry works"""
    farm()
    c = smtp(PORT, "127.0.0.11")
    c.ehlo()
    assert c.has_extn("starttls")
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        c.starttls(context=ctx)
    except (ssl.SSLError, OSError, smtplib.SMTPException):
        pass
    else:
        raise AssertionError("TLS handshake succeeded")
    c.close()
    s = last("127.0.0.11")
    assert s.closed_by == "server" and not s.tls and s.commands[-1] == "STARTTLS"
    c = smtp(PORT, "127.0.0.11")
    c.ehlo()
    assert c.mail("")[0] == 250 and c.rcpt("alice@x")[0] == 250
    c.quit()
    assert not last("127.0.0.11").tls


@check
def smtp_slow_banner():
    """smtp slow_banner: banner after `delay`; the default 30 s outlasts a client timeout"""
    farm()
    t0 = time.monotonic()
    c = smtp(PORT, "127.0.0.12")
    assert time.monotonic() - t0 >= 0.45
    c.ehlo()
    c.quit()
    s, fh = raw_connect("127.0.0.19", PORT, timeout=0.5)
    try:
        fh.readline()
    except socket.timeout:
        pass
    else:
        raise AssertionError("banner came early")
    s.close()
    fh.close()
    ss = last("127.0.0.19")                           # the fake notices the close at once
    assert ss.closed_by == "client" and ss.commands == [] and ss.replies == []


@check
def smtp_drop_after_mail():
    """smtp drop_after_mail: MAIL 250, then the server closes without answering RCPT"""
    farm()
    c = smtp(PORT, "127.0.0.13")
    c.ehlo()
    assert c.mail("")[0] == 250
    try:
        c.rcpt("alice@x")
    except smtplib.SMTPServerDisconnected:
        pass
    else:
        raise AssertionError("RCPT got a reply")
    c.close()
    s = last("127.0.0.13")
    assert s.closed_by == "server" and s.commands[-1] == "rcpt TO:<alice@x>"
    assert all(not r.startswith(("250 2.1.5", "550")) for r in s.replies)


@check
def smtp_multiline():
    """smtp multiline: every reply multi-line with enhanced codes, banner and RCPT 550 included"""
    farm()
    s, fh = raw_connect("127.0.0.14", PORT)
    banner = read_reply(fh)
    assert len(banner) == 3 and banner[0].startswith("220-2.0.0 ") and banner[2].startswith("220 2.0.0 "), banner
    for cmd, code, enh in ((b"HELO x", "250", None), (b"MAIL FROM:<>", "250", "2.1.0"),
                           (b"RCPT TO:<nobody@x>", "550", "5.1.1"), (b"NOOP", "250", "2.0.0")):
        s.sendall(cmd + b"\r\n")
        r = read_reply(fh)
        assert len(r) == 3, r
        assert all(l[:4] == code + "-" for l in r[:-1]) and r[-1][:4] == code + " ", r
        if enh:
            assert all(l[4:].startswith(enh + " ") for l in r), r
    s.close()
    fh.close()
    c = smtp(PORT, "127.0.0.14")
    c.ehlo()
    c.mail("")
    code, text = c.rcpt("nobody@x")
    assert code == 550 and text.count(b"5.1.1") == 3, text
    assert c.rcpt("alice@x")[0] == 250
    c.quit()


@check
def smtp_endless_line():
    """smtp endless_line: EHLO answered by an endless line without CRLF"""
    farm()
    s, fh = raw_connect("127.0.0.15", PORT)
    read_reply(fh)
    fh.close()
    s.sendall(b"EHLO probe.test\r\n")
    got = b""
    while len(got) < 1024 * 1024:
        chunk = s.recv(65536)
        assert chunk, "closed early"
        got += chunk
    assert got.startswith(b"250 AAAA") and b"\n" not in got
    s.close()
    assert last("127.0.0.15").closed_by == "client"


@check
def smtp_garbage():
    """smtp garbage: 'hello there' instead of a banner"""
    farm()
    s, fh = raw_connect("127.0.0.16", PORT)
    assert fh.readline() == b"hello there\r\n"
    s.sendall(b"EHLO x\r\n")
    assert fh.readline() == b"hello there\r\n"
    s.close()
    fh.close()
    try:
        smtp(PORT, "127.0.0.16")
    except smtplib.SMTPConnectError:
        pass
    else:
        raise AssertionError("smtplib accepted garbage")


@check
def smtp_silent_after_rcpt():
    """smtp silent_after_rcpt: RCPT is never answered, the client times out"""
    farm()
    s, fh = raw_connect("127.0.0.17", PORT, timeout=2)
    assert read_reply(fh)[0].startswith("220 ")
    s.sendall(b"EHLO x\r\n")
    read_reply(fh)
    s.sendall(b"MAIL FROM:<>\r\n")
    assert read_reply(fh)[0].startswith("250 ")
    s.sendall(b"RCPT TO:<alice@x>\r\n")
    s.settimeout(0.5)
    try:
        data = s.recv(512)
    except socket.timeout:
        data = None
    assert data is None, "RCPT was answered: %r" % data
    s.sendall(b"QUIT\r\n")                          # recorded, not answered either
    time.sleep(0.1)
    s.close()
    fh.close()
    ss = last("127.0.0.17")
    assert ss.closed_by == "client" and ss.commands[-2:] == ["RCPT TO:<alice@x>", "QUIT"], ss.commands


def pending(s, timeout):
    """Bytes the server sent within timeout (b"" if none came)."""
    s.settimeout(timeout)
    try:
        return s.recv(4096)
    except socket.timeout:
        return b""


@check
def smtp_early_reply():
    """smtp early_reply: one extra 250 line in the same write as the banner, EHLO or MAIL reply"""
    farm()
    # when=banner: the banner and the extra line arrive together, before any command
    s, fh = raw_connect("127.0.0.21", PORT)
    assert read_reply(fh)[0].startswith("220 ")
    assert read_reply(fh) == ["250 2.0.0 unsolicited reply, before its command"]
    # a client that pairs by order now reads the EHLO reply as MAIL's, and so on:
    # the 550 of an unknown user arrives as the reply to whatever comes after RCPT
    s.sendall(b"EHLO x\r\n")
    ehlo = read_reply(fh)
    assert ehlo[0].startswith("250-") and ehlo[-1] == "250 ENHANCEDSTATUSCODES", ehlo
    s.sendall(b"MAIL FROM:<>\r\n")
    assert read_reply(fh) == ["250 2.1.0 sender ok"]
    s.sendall(b"RCPT TO:<nobody@x>\r\n")
    assert read_reply(fh)[0].startswith("550 5.1.1")
    s.sendall(b"QUIT\r\n")
    assert read_reply(fh)[0].startswith("221")
    assert pending(s, 0.2) == b""                   # once a session
    s.close()
    fh.close()
    # when=ehlo and when=mail: right after that reply, nowhere else
    for addr, after in (("127.0.0.22", b"EHLO x\r\n"), ("127.0.0.23", b"MAIL FROM:<>\r\n")):
        s, fh = raw_connect(addr, PORT)
        assert read_reply(fh)[0].startswith("220 ")
        assert pending(s, 0.2) == b"", addr          # nothing extra after the banner
        s.settimeout(5)
        if after.startswith(b"MAIL"):
            s.sendall(b"EHLO x\r\n")
            read_reply(fh)
            assert pending(s, 0.2) == b"", addr
            s.settimeout(5)
        s.sendall(after)
        assert read_reply(fh)[-1].startswith("250"), addr
        assert read_reply(fh) == ["250 2.0.0 unsolicited reply, before its command"], addr
        s.close()
        fh.close()
    c = smtp(PORT, "127.0.0.23")
    c.ehlo()
    c.mail("")
    c.getreply()                                    # the extra line
    assert c.rcpt("alice@x")[0] == 250 and c.rcpt("nobody@x")[0] == 550   # users are normal
    c.quit()
    try:
        SmtpFarm().add("127.0.0.2", "early_reply", when="rcpt")
    except ValueError:
        pass
    else:
        raise AssertionError("when=rcpt accepted")


@check
def smtp_hang_quit():
    """smtp hang_quit: normal until QUIT, which is never answered; the server never closes"""
    f = farm()
    c = smtp(PORT, "127.0.0.24")
    c.ehlo()
    c.mail("")
    assert c.rcpt("alice@x")[0] == 250 and c.rcpt("nobody@x")[0] == 550
    c.sock.sendall(b"QUIT\r\n")
    assert pending(c.sock, 0.5) == b"", "QUIT answered or closed"
    assert f.active("127.0.0.24") == 1
    c.close()
    s = last("127.0.0.24")
    assert s.commands[-1] == "QUIT" and s.closed_by == "client", (s.commands, s.closed_by)
    assert not any(r.startswith("221") for r in s.replies)


@check
def smtp_hang_catchall():
    """smtp hang_catchall: known users 250; any other RCPT is never answered"""
    farm()
    c = smtp(PORT, "127.0.0.25")
    c.ehlo()
    c.mail("")
    assert c.rcpt("alice@x")[0] == 250
    c.sock.sendall(b"RCPT TO:<random123@x>\r\n")
    assert pending(c.sock, 0.5) == b"", "the unknown RCPT was answered"
    c.sock.sendall(b"QUIT\r\n")
    assert pending(c.sock, 0.3) == b""
    c.close()
    s = last("127.0.0.25")
    assert s.commands[-2:] == ["RCPT TO:<random123@x>", "QUIT"] and s.closed_by == "client"


@check
def smtp_greylist_for():
    """smtp greylist_for: 450 4.7.1 per (sender, recipient) pair for `seconds`, then normal"""
    farm()
    t0 = time.monotonic()
    c = smtp(PORT, "127.0.0.26")
    c.ehlo()
    c.mail("")
    code, text = c.rcpt("alice@x")
    assert code == 450 and text.startswith(b"4.7.1 greylisted for 1 seconds"), text
    assert c.rcpt("nobody@x")[0] == 450
    c.rset()
    c.mail("someone@else")                          # another sender: another pair, greylisted too
    assert c.rcpt("alice@x")[0] == 450
    c.quit()
    time.sleep(max(0.0, 1.1 - (time.monotonic() - t0)))
    c = smtp(PORT, "127.0.0.26")                    # a new connection, the same pairs
    c.ehlo()
    c.mail("")
    assert c.rcpt("ALICE@x")[0] == 250              # case-insensitive pair
    assert c.rcpt("nobody@x")[0] == 550             # normal from now on: unknown is unknown
    assert c.rcpt("bob@x")[0] == 450                # a new pair starts its own wait
    c.quit()


@check
def smtp_null_sender_refused():
    """smtp null_sender_refused: MAIL FROM:<> 550 5.7.1, RSET 250, MAIL FROM:<x> 250, normal users"""
    farm()
    c = smtp(PORT, "127.0.0.27")
    c.ehlo()
    assert c.mail("") == (550, b"5.7.1 null sender refused")
    assert c.rset()[0] == 250
    assert c.mail("probe@vemilter.test")[0] == 250
    assert c.rcpt("alice@x")[0] == 250 and c.rcpt("nobody@x")[0] == 550
    c.quit()
    s = last("127.0.0.27")
    assert s.commands[1:4] == ["mail FROM:<>", "rset", "mail FROM:<probe@vemilter.test>"], s.commands


@check
def smtp_lagging_reply():
    """smtp lagging_reply: an unsolicited line at EHLO, then every reply 0.15 s late: one behind"""
    farm()
    s, fh = raw_connect("127.0.0.30", PORT)
    try:
        assert read_reply(fh)[0].startswith("220")
        t0 = time.monotonic()
        s.sendall(b"EHLO x\r\n")
        assert read_reply(fh) == ["250 2.0.0 unsolicited"]
        early = time.monotonic() - t0
        assert pending(s, 0.05) == b"", "the real EHLO reply came too early"
        s.settimeout(5.0)
        # Paired by order, every reply is now the previous command's:
        s.sendall(b"MAIL FROM:<>\r\n")
        ehlo = read_reply(fh)
        assert ehlo[-1] == "250 ENHANCEDSTATUSCODES" and len(ehlo) > 1, ehlo
        t1 = time.monotonic()
        s.sendall(b"RCPT TO:<nobody@x>\r\n")
        assert read_reply(fh) == ["250 2.1.0 sender ok"]          # MAIL's reply
        lag = time.monotonic() - t1
        s.sendall(b"QUIT\r\n")
        assert read_reply(fh)[0].startswith("550 5.1.1")          # RCPT's reply
        assert read_reply(fh)[0].startswith("221")                # QUIT's, after it
        assert eof_within(s, 2.0)
    finally:
        s.close()
        fh.close()
    assert early < 0.1 and 0.12 <= lag < 1.0, (early, lag)
    st = last("127.0.0.30")
    assert st.commands == ["EHLO x", "MAIL FROM:<>", "RCPT TO:<nobody@x>", "QUIT"], st.commands


@check
def smtp_lagging_reply_refuse_null():
    """smtp lagging_reply refuse_null: MAIL FROM:<> 553 5.1.8 (one reply late), other senders 250"""
    farm()
    s, fh = raw_connect("127.0.0.31", PORT)
    try:
        read_reply(fh)
        s.sendall(b"EHLO x\r\n")
        assert read_reply(fh) == ["250 2.0.0 unsolicited"]
        s.sendall(b"MAIL FROM:<>\r\n")
        read_reply(fh)                                           # EHLO's
        s.sendall(b"MAIL FROM:<p@x>\r\n")
        assert read_reply(fh)[0].startswith("553 5.1.8 sender address rejected")
        s.sendall(b"RCPT TO:<alice@x>\r\n")
        assert read_reply(fh) == ["250 2.1.0 sender ok"]
        s.sendall(b"QUIT\r\n")
        assert read_reply(fh) == ["250 2.1.5 recipient ok"]
        assert read_reply(fh)[0].startswith("221")
    finally:
        s.close()
        fh.close()


@check
def smtp_null_sender_refused_at_rcpt():
    """smtp null_sender_refused_at_rcpt: MAIL FROM:<> 250, RCPT 554 5.7.1 <>: Sender address rejected"""
    farm()
    c = smtp(PORT, "127.0.0.32")
    c.ehlo()
    assert c.mail("")[0] == 250
    assert c.rcpt("alice@x") == (554, b"5.7.1 <>: Sender address rejected: Access denied")
    assert c.rcpt("nobody@x")[0] == 554
    assert c.rset()[0] == 250
    assert c.mail("probe@vemilter.test")[0] == 250
    assert c.rcpt("alice@x")[0] == 250 and c.rcpt("nobody@x")[0] == 550
    c.quit()


@check
def smtp_multiline_mismatch():
    """smtp multiline_mismatch: RCPT gets 250-2.1.5 ok, then 550 5.1.1 no such user"""
    farm()
    s, fh = raw_connect("127.0.0.28", PORT)
    read_reply(fh)
    s.sendall(b"EHLO x\r\nMAIL FROM:<>\r\n")
    read_reply(fh)
    read_reply(fh)
    s.sendall(b"RCPT TO:<alice@x>\r\n")
    assert read_reply(fh) == ["250-2.1.5 ok", "550 5.1.1 no such user"]
    s.sendall(b"QUIT\r\n")
    assert read_reply(fh)[0].startswith("221")
    s.close()
    fh.close()


@check
def smtp_hostname():
    """smtp hostname=: the first word of the banner and of the EHLO reply"""
    farm()
    c = smtp(PORT, "127.0.0.29")
    code, text = c.ehlo("x")
    assert code == 250 and text.split(b"\n")[0].split(b" ")[0] == b"probe.vemilter.test", text
    c.quit()
    s, fh = raw_connect("127.0.0.29", PORT)
    assert read_reply(fh)[0].startswith("220 probe.vemilter.test "), "banner"
    s.close()
    fh.close()


@check
def smtp_no_server():
    """smtp: an address with no server refuses connections"""
    farm()
    assert refused("127.0.0.99", PORT)


@check
def smtp_ipv6_and_checks():
    """smtp: ::1 works; non-loopback addresses and unknown behaviours are refused"""
    farm()
    c = smtp(PORT, "::1")
    assert c.ehlo()[0] == 250
    c.quit()
    for args in (("192.0.2.1", "normal"), ("127.0.0.2", "nonsense")):
        try:
            SmtpFarm().add(*args)
        except ValueError:
            pass
        else:
            raise AssertionError("add%r accepted" % (args,))


@check
def smtp_bare_lf():
    """smtp: a command ending in a bare LF is recorded and flagged"""
    farm()
    s, fh = raw_connect("127.0.0.2", PORT)
    read_reply(fh)
    s.sendall(b"HELO x\n")
    read_reply(fh)
    s.sendall(b"QUIT\r\n")
    read_reply(fh)
    s.close()
    fh.close()
    ss = last("127.0.0.2")
    assert ss.bare_lf and ss.commands == ["HELO x", "QUIT"]


@check
def smtp_pipelined_group():
    """smtp: a pipelined group answered in one write after one latency; pipelining=False; stray_mail"""
    lat = 0.3
    f = SmtpFarm(latency=lat)
    f.add("127.0.0.2", "normal", users=["alice"])
    f.add("127.0.0.3", "normal", pipelining=False)
    f.add("127.0.0.4", "normal", users=["alice"], stray_mail=True)
    port = f.start()
    try:
        s, fh = raw_connect("127.0.0.2", port)
        read_reply(fh)
        s.sendall(b"EHLO x\r\n")
        assert "250-PIPELINING" in read_reply(fh)
        s.sendall(b"MAIL FROM:<>\r\n")
        read_reply(fh)
        t0 = time.monotonic()
        s.sendall(b"RCPT TO:<alice@x.test>\r\nRCPT TO:<nobody@x.test>\r\nQUIT\r\n")
        s.settimeout(5)
        data = b""
        while data.count(b"\r\n") < 3:
            chunk = s.recv(4096)
            assert chunk, data
            data += chunk
        took = time.monotonic() - t0
        assert data.startswith(b"250 2.1.5") and b"\r\n550 5.1.1" in data and data.endswith(b"221 2.0.0 bye\r\n"), data
        assert lat <= took < 2 * lat, took           # one round trip, not three
        assert data.count(b"\r\n") == 3, data
        s.close()
        fh.close()
        ss = f.sessions("127.0.0.2")[-1]
        assert ss.commands[-3:] == ["RCPT TO:<alice@x.test>", "RCPT TO:<nobody@x.test>", "QUIT"], ss.commands
        print("# a group of 3 answered in %.3f s at latency %.1f s" % (took, lat))
        c = smtp(port, "127.0.0.3")
        c.ehlo("x")
        assert not c.has_extn("pipelining") and c.has_extn("8bitmime")
        c.quit()
        s, fh = raw_connect("127.0.0.4", port)
        read_reply(fh)
        s.sendall(b"HELO x\r\n")
        read_reply(fh)
        s.sendall(b"MAIL FROM:<>\r\n")
        assert read_reply(fh) == ["250 2.1.0 sender ok"]
        s.sendall(b"RCPT TO:<nobody@x.test>\r\nQUIT\r\n")
        assert read_reply(fh) == ["250 2.1.0 sender ok"]          # MAIL's second reply, held back
        assert read_reply(fh)[0].startswith("550 5.1.1")
        assert read_reply(fh) == ["221 2.0.0 bye"]
        s.close()
        fh.close()
    finally:
        f.stop()


@check
def smtp_concurrency():
    """smtp: 2,000 concurrent connections each get a banner (with latency)"""
    f = SmtpFarm(latency=0.2)
    f.add("127.0.0.2", "normal")
    f.add("127.0.0.3", "catchall")
    port = f.start()
    socks = []
    try:
        t0 = time.monotonic()
        for i in range(2000):
            socks.append(socket.create_connection(("127.0.0.%d" % (2 + i % 2), port), timeout=10))
        for s in socks:
            data = b""
            while not data.endswith(b"\r\n"):
                chunk = s.recv(512)
                assert chunk, "closed"
                data += chunk
            assert data.startswith(b"220 ")
        elapsed = time.monotonic() - t0
        assert elapsed >= 0.2, elapsed                 # latency applies
        assert f.active() == 2000 and f.max_concurrent() == 2000, (f.active(), f.max_concurrent())
        assert f.max_concurrent("127.0.0.2") == 1000
        print("# 2000 banners in %.2f s" % elapsed)
    finally:
        for s in socks:
            s.close()
    assert f.wait_idle(timeout=20)
    assert f.connections() == 2000
    assert all(s.closed_by == "client" for s in f.sessions())
    f.reset()
    assert f.connections() == 0
    f.stop()


@check
def smtp_standalone():
    """smtp: standalone 'smtpfarm.py --port 0 --farm FILE' prints its port and serves"""
    with tempfile.TemporaryDirectory() as d:
        ff = os.path.join(d, "farm.json")
        with open(ff, "w") as fh:
            json.dump({"127.0.0.2": "greylist", "127.0.0.3": {"behaviour": "normal", "users": ["zed"]}}, fh)
        p = subprocess.Popen([PYTHON, os.path.join(HERE, "smtpfarm.py"), "--port", "0",
                              "--latency", "0.01", "--farm", ff],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = p.stdout.readline().strip()
            assert line.startswith("listening on port "), line
            port = int(line.rsplit(" ", 1)[1])
            c = smtp(port, "127.0.0.2")
            c.ehlo()
            c.mail("")
            assert c.rcpt("zed@x")[0] == 450
            c.quit()
            c = smtp(port, "127.0.0.3")
            c.ehlo()
            c.mail("")
            assert c.rcpt("zed@x")[0] == 250
            c.quit()
        finally:
            p.send_signal(signal.SIGTERM)
            out, err = p.communicate(timeout=15)
        assert p.returncode == 0, (p.returncode, err)
        assert "2 connections" in err, err


@check
def smtp_stop():
    """smtp: stop() closes open sessions (slow banner too), every port, the thread and the temp dir"""
    f = farm()
    open_conn = socket.create_connection(("127.0.0.2", PORT), timeout=2)
    open_conn.recv(512)                               # banner
    slow = socket.create_connection(("127.0.0.19", PORT), timeout=2)
    tmp = os.path.dirname(f.cert_file)
    time.sleep(0.1)
    t0 = time.monotonic()
    f.stop()
    assert time.monotonic() - t0 < 3.0, "stop() took %.1f s" % (time.monotonic() - t0)
    assert eof_within(open_conn, 2.0) and eof_within(slow, 2.0)
    open_conn.close()
    slow.close()
    for a in ("127.0.0.2", "127.0.0.10"):
        assert refused(a, PORT)
    assert threads_left() == [], threads_left()
    assert not os.path.exists(tmp)
    assert all(s.closed_by is not None for s in f.sessions())
    f.stop()                                          # twice is fine


if __name__ == "__main__":
    sys.exit(main())
