#!/usr/bin/python3
"""fakedns - a scripted, authoritative-style DNS server for vemilter's tests.

What it fakes
    The DNS servers vemilter (through c-ares) asks for a sender domain's MX,
    A and AAAA records. One FakeDNS answers every name it is given in a
    small "zone" dict, on one loopback port, over both UDP and TCP, and can
    be told to misbehave per name and per query type: fail with an RCODE,
    never answer, answer late, or set the TC bit so the client must retry
    over TCP. Standard library only (struct, socket, threading); runs with
    Debian's /usr/bin/python3.

How tests use it
    dns = FakeDNS({
        "example.test":  {"MX": [[10, "mx1.example.test"], [20, "mx2.example.test"]]},
        "mx1.example.test": {"A": ["127.0.0.2"], "AAAA": ["::1"]},
        "nullmx.test":   {"MX": [[0, "."]]},                  # RFC 7505 null MX
        "broken.test":   {"rcode": {"MX": "SERVFAIL"}},        # MX fails, A is NODATA
        "slow.test":     {"MX": [[10, "mx1.example.test"]], "delay": 2},
        "dead.test":     {"timeout": True},                    # never answers
        "big.test":      {"MX": [[i, "mx%d.big.test" % i] for i in range(300)]},
        "tc.test":       {"MX": [[10, "mx1.example.test"]], "truncate": True},
    })
    port = dns.start()                      # same port on UDP and TCP
    ... point vemilter at 127.0.0.1:port (e.g. dns_servers = 127.0.0.1:PORT) ...
    assert ("example.test", "MX", "udp") in dns.queries
    dns.set_zone(other_zone)                # change answers at run time
    dns.update({"new.test": {"MX": [[10, "mx1.example.test"]]},   # add or replace names,
                "gone.test": None})                                 # None removes one
    dns.stop()                              # closes every socket, joins threads

    Negative answers and TTLs (RFC 2308), e.g. a domain that does not exist
    with a negative TTL of 1 s, and then starts to exist:
        dns = FakeDNS({"test": {"soa": {"ttl": 300, "minimum": 1}},
                       "nullmx.test": {"MX": [[0, "."]], "ttl": {"MX": 120}}})
        ... MX born.test? -> NXDOMAIN, SOA TTL 300 MINIMUM 1 in authority ...
        dns.update({"born.test": {"MX": [[10, "mx1.example.test"]]}})

    Standalone (manual use, benchmarks):
        /usr/bin/python3 fakedns.py --port 5353 --zone zone.json [--verbose]
    prints "listening on 127.0.0.1:5353" and serves until SIGINT/SIGTERM;
    SIGHUP re-reads the zone file.

Zone format
    { "name": { "MX": [[pref, "host"], ...], "A": ["1.2.3.4"], "AAAA": ["::1"],
                "TXT": ["text", ["two", "strings"]], "CNAME": "target",
                "PTR": ["host"], "NS": ["host"], "ttl": 60,
                "soa": {"ttl": 300, "minimum": 60, "mangle": "cut"} | null,
                "rcode": "NXDOMAIN"|"SERVFAIL"|"REFUSED"|"NOERROR"|"FORMERR"|"NOTIMP",
                "timeout": true, "truncate": true, "delay": 1.5 }, ... }

    Names are case-insensitive and need no trailing dot. The behaviour keys
    (rcode, timeout, truncate, delay) apply to every query type, or only to
    the types listed when given as a dict: "rcode": {"MX": "SERVFAIL"},
    "timeout": {"AAAA": true}, "delay": {"MX": 3}. "ttl" (default 60) too:
    "ttl": 30 for every record of the name, "ttl": {"MX": 120, "A": 5} per
    type (the types not named keep 60).

    "soa" shapes the SOA record put in the authority section of the
    negative answers (NXDOMAIN, NODATA) of the name and of every name below
    it that has no "soa" of its own (the nearest one up the tree counts;
    the root entry "" may set one for the whole zone): "ttl" is the SOA
    record's TTL, "minimum" its MINIMUM field (both default 60; a client's
    negative TTL is the smaller of the two), and "soa": null leaves the
    SOA out. An SOA found on an enclosing name is owned by that name;
    otherwise the owner is the name itself (NODATA) or its parent
    (NXDOMAIN). "mangle" damages the SOA record on purpose (the packet
    stays parseable up to the SOA's owner, so clients accept the answer):
      "cut"      - the message ends 10 octets before the end of the SOA
                   RDATA (section counts unchanged; no OPT)
      "rdlength" - RDLENGTH claims 200 more octets than there are
      "short"    - RDLENGTH 12 octets short (the rest of the SOA is then
                   read as the next record)
      "loop"     - the SOA's owner is a compression pointer to itself

    - a name absent from the zone        -> NXDOMAIN (SOA in authority, see "soa")
    - a name present, type absent         -> NOERROR, no answer (NODATA), SOA in authority
    - "rcode" NXDOMAIN                    -> NXDOMAIN with SOA; other rcodes -> empty reply
    - "timeout"                           -> the query is recorded, never answered
    - "truncate"                          -> over UDP: TC=1 and no records; TCP: full answer
    - "delay"                             -> the answer is sent that many seconds late
                                             (other queries are not held up)
    - a CNAME answers any other type with the CNAME and, when the target is
      in the zone, the target's records (as an authoritative server would)
    - over UDP an answer bigger than 512 bytes (no EDNS in the query) or than
      the query's EDNS payload size is sent with TC=1 and no records.

Wire format
    Built by hand with struct. The question is parsed (compressed names
    allowed, loops refused), an EDNS OPT record in the additional section is
    honoured (its payload size) and echoed back. Replies have QR and AA set,
    echo the ID, the question (as sent, case included) and RD. Answers use
    name compression unless FakeDNS(..., compress=False). Malformed packets
    are logged to stderr and dropped; they never stop the server.

All sockets are loopback only (a non-loopback host is refused), every wait
is bounded, and stop() closes every socket and joins every thread.
"""

import argparse
import ipaddress
import json
import select
import signal
import socket
import struct
import sys
import threading
import time

# ----------------------------------------------------------------- constants

QTYPES = {
    "A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16,
    "AAAA": 28, "SRV": 33, "OPT": 41, "TLSA": 52, "ANY": 255,
}
QTYPE_NAMES = {v: k for k, v in QTYPES.items()}

RCODES = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5}

CLASS_IN = 1
DEFAULT_TTL = 60
# Our own EDNS payload size, advertised in the OPT we send back.
OUR_EDNS_SIZE = 1232
# Per-type behaviour keys of a zone entry (the rest are record types, "ttl" or "soa").
BEHAVIOURS = ("rcode", "timeout", "truncate", "delay")
# What "soa" may hold, and how its record may be damaged.
SOA_KEYS = ("ttl", "minimum", "mangle")
SOA_MANGLES = ("cut", "rdlength", "short", "loop")
# Record types a zone entry may carry.
RECORD_TYPES = ("A", "AAAA", "MX", "TXT", "CNAME", "PTR", "NS")

# Bounds (seconds).
POLL = 0.2                 # how often loops look at the stop flag
TCP_IDLE = 30.0            # a TCP client silent this long is dropped
JOIN_TIMEOUT = 5.0         # per thread, in stop()
MAX_CNAME_CHAIN = 8


def qtype_str(qtype):
    """'MX' for 15, 'TYPE65' for types we have no name for."""
    return QTYPE_NAMES.get(qtype, "TYPE%d" % qtype)


def log(msg):
    sys.stderr.write("fakedns: %s\n" % msg)
    sys.stderr.flush()


def normalize_name(name):
    """Lower-case (ASCII only, as DNS does), no trailing dot; root is ''."""
    name = name.strip()
    if name.endswith("."):
        name = name[:-1]
    return name.encode("latin-1", "replace").lower().decode("latin-1")


def normalize_zone(zone):
    """A copy of zone with normalized names; checks types so mistakes show early."""
    if not isinstance(zone, dict):
        raise TypeError("zone must be a dict name -> entry")
    out = {}
    for name, entry in zone.items():
        if not isinstance(entry, dict):
            raise TypeError("zone entry for %r must be a dict" % name)
        for key in entry:
            if key not in RECORD_TYPES and key not in BEHAVIOURS and key not in ("ttl", "soa"):
                raise ValueError("zone entry %r: unknown key %r" % (name, key))
        ttl = entry.get("ttl")
        for v in (ttl.values() if isinstance(ttl, dict) else [ttl]):
            if v is not None and not (isinstance(v, int) and 0 <= v <= 0xFFFFFFFF):
                raise ValueError("zone entry %r: bad ttl %r" % (name, v))
        soa = entry.get("soa")
        if soa is not None:
            if not isinstance(soa, dict) or any(k not in SOA_KEYS for k in soa):
                raise ValueError("zone entry %r: soa must be null or a dict of %s" % (name, SOA_KEYS))
            for k in ("ttl", "minimum"):
                if not (isinstance(soa.get(k, 0), int) and 0 <= soa.get(k, 0) <= 0xFFFFFFFF):
                    raise ValueError("zone entry %r: bad soa %s %r" % (name, k, soa[k]))
            if soa.get("mangle") not in (None,) + SOA_MANGLES:
                raise ValueError("zone entry %r: unknown soa mangle %r" % (name, soa["mangle"]))
        rc = entry.get("rcode")
        for v in (rc.values() if isinstance(rc, dict) else [rc]):
            if v is not None and str(v).upper() not in RCODES:
                raise ValueError("zone entry %r: unknown rcode %r" % (name, v))
        out[normalize_name(name)] = entry
    return out


class Malformed(Exception):
    """A packet we cannot parse; it is logged and dropped."""


# ------------------------------------------------------------- wire: reading

def read_name(msg, off):
    """Read a possibly compressed name at off. Returns (labels, next_off).

    labels is a list of bytes. Pointers must point backwards and at most
    64 of them are followed, so a loop cannot hang us."""
    labels = []
    jumps = 0
    end = None           # offset after the name in the original position
    total = 0
    while True:
        if off >= len(msg):
            raise Malformed("name runs past the end of the packet")
        ln = msg[off]
        if ln & 0xC0 == 0xC0:
            if off + 1 >= len(msg):
                raise Malformed("truncated compression pointer")
            ptr = ((ln & 0x3F) << 8) | msg[off + 1]
            if end is None:
                end = off + 2
            if ptr >= off:
                raise Malformed("compression pointer does not point backwards")
            jumps += 1
            if jumps > 64:
                raise Malformed("too many compression pointers")
            off = ptr
            continue
        if ln & 0xC0:
            raise Malformed("unsupported label type 0x%02x" % ln)
        off += 1
        if ln == 0:
            break
        if off + ln > len(msg):
            raise Malformed("label runs past the end of the packet")
        labels.append(bytes(msg[off:off + ln]))
        total += ln + 1
        if total > 255:
            raise Malformed("name longer than 255 octets")
        off += ln
    return labels, (end if end is not None else off)


def labels_to_str(labels):
    return ".".join(l.decode("latin-1") for l in labels)


def parse_query(msg):
    """Parse a query. Returns a dict with id, flags, qname (str, as sent),
    qname_wire (bytes of the question name, uncompressed), qtype, qclass,
    edns_size (None when there is no OPT) and question_end."""
    if len(msg) < 12:
        raise Malformed("shorter than a DNS header (%d bytes)" % len(msg))
    qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", msg[:12])
    if flags & 0x8000:
        raise Malformed("QR set: this is a response, not a query")
    if qd != 1:
        raise Malformed("QDCOUNT is %d, not 1" % qd)
    labels, off = read_name(msg, 12)
    if off + 4 > len(msg):
        raise Malformed("question runs past the end of the packet")
    qtype, qclass = struct.unpack("!HH", msg[off:off + 4])
    off += 4
    question_end = off
    # Skip answer and authority records, then look for OPT in additional.
    edns_size = None
    edns_version = 0
    for i in range(an + ns + ar):
        _, off = read_name(msg, off)
        if off + 10 > len(msg):
            raise Malformed("resource record header runs past the end")
        rtype, rclass, ttl, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
        off += 10
        if off + rdlen > len(msg):
            raise Malformed("rdata runs past the end")
        if i >= an + ns and rtype == QTYPES["OPT"]:
            edns_size = max(512, rclass)
            edns_version = (ttl >> 16) & 0xFF
        off += rdlen
    return {
        "id": qid, "flags": flags, "opcode": (flags >> 11) & 0xF,
        "qname": labels_to_str(labels),
        "qname_wire": b"".join(bytes([len(l)]) + l for l in labels) + b"\x00",
        "qtype": qtype, "qclass": qclass,
        "edns_size": edns_size, "edns_version": edns_version,
        "question": bytes(msg[12:question_end]),
    }


# ------------------------------------------------------------- wire: writing

class Writer:
    """Builds one DNS message, with optional name compression."""

    def __init__(self, compress=True):
        self.buf = bytearray()
        self.compress = compress
        self.names = {}        # lower-cased suffix (tuple of labels) -> offset

    def name(self, name):
        """Append a name given as text ('' or '.' is the root)."""
        name = name.rstrip(".") if name not in (".", "") else ""
        labels = [l.encode("latin-1") for l in name.split(".")] if name else []
        for l in labels:
            if not 0 < len(l) < 64:
                raise ValueError("bad label in name %r" % name)
        for i in range(len(labels)):
            key = tuple(l.lower() for l in labels[i:])
            if self.compress and key in self.names:
                self.buf += struct.pack("!H", 0xC000 | self.names[key])
                return
            if len(self.buf) < 0x4000:
                self.names.setdefault(key, len(self.buf))
            self.buf += bytes([len(labels[i])]) + labels[i]
        self.buf += b"\x00"

    def question_name(self, wire):
        """Append an uncompressed name as received (case kept) and make its
        suffixes available for compressing later names."""
        labels, off = [], 0
        while wire[off]:
            labels.append((len(self.buf) + off, wire[off + 1:off + 1 + wire[off]]))
            off += 1 + wire[off]
        for i, (at, _) in enumerate(labels):
            if at < 0x4000:
                self.names.setdefault(tuple(l.lower() for _, l in labels[i:]), at)
        self.buf += wire

    def raw(self, data):
        self.buf += data

    def rr(self, owner, rtype, ttl, rdata_fn, rclass=CLASS_IN):
        """Append a record; rdata_fn(self) appends the rdata."""
        self.name(owner)
        self.buf += struct.pack("!HHI", rtype, rclass, ttl)
        at = len(self.buf)
        self.buf += b"\x00\x00"
        rdata_fn(self)
        struct.pack_into("!H", self.buf, at, len(self.buf) - at - 2)


def rdata_writer(rtype, value):
    """A function appending the rdata of one record of rtype, from a zone value."""
    if rtype == "A":
        packed = socket.inet_pton(socket.AF_INET, value)
        return lambda w: w.raw(packed)
    if rtype == "AAAA":
        packed = socket.inet_pton(socket.AF_INET6, value)
        return lambda w: w.raw(packed)
    if rtype == "MX":
        pref, host = value

        def mx(w):
            w.raw(struct.pack("!H", int(pref)))
            w.name(host)          # "." gives the root name: a null MX
        return mx
    if rtype in ("CNAME", "PTR", "NS"):
        return lambda w: w.name(value)
    if rtype == "TXT":
        strings = [value] if isinstance(value, str) else list(value)
        data = bytearray()
        for s in strings:
            b = s.encode("utf-8") if isinstance(s, str) else bytes(s)
            if not b:
                data += b"\x00"
            while b:                # character-strings are at most 255 octets
                data += bytes([len(b[:255])]) + b[:255]
                b = b[255:]
        return lambda w: w.raw(bytes(data))
    raise ValueError("unsupported record type %r" % rtype)


def soa_rdata(minimum):
    """A function appending SOA rdata with this MINIMUM field."""
    def rdata(w):
        w.name("ns.fake.test")
        w.name("hostmaster.fake.test")
        # serial, refresh, retry, expire, minimum (the negative-caching TTL)
        w.raw(struct.pack("!IIIII", 1, 3600, 600, 86400, minimum))
    return rdata


def record_ttl(entry, rtype):
    """The TTL of the records of rtype in a zone entry: "ttl" as a number,
    or per type as a dict; DEFAULT_TTL otherwise."""
    v = behaviour(entry, "ttl", rtype)
    return DEFAULT_TTL if v is None else int(v)


def soa_of(zone, qname):
    """(owner, soa dict or None) for a negative answer about qname: the
    "soa" of qname's entry or of the nearest enclosing name (up to the root
    entry ""). owner is None when no entry sets "soa" (the default SOA)."""
    name = qname
    while True:
        entry = zone.get(name)
        if entry is not None and "soa" in entry:
            return name, entry["soa"]
        if name == "":
            return None, {}
        name = name.split(".", 1)[1] if "." in name else ""


def records_of(entry, rtype):
    """The list of values of rtype in a zone entry ([] when absent)."""
    v = entry.get(rtype)
    if v is None:
        return []
    if rtype == "CNAME" and isinstance(v, str):
        return [v]
    return list(v)


def behaviour(entry, key, qtype):
    """A behaviour key for this query type: a plain value applies to all
    types, a dict only to the types it names (case-insensitive)."""
    v = entry.get(key)
    if isinstance(v, dict):
        for k, val in v.items():
            if k.upper() == qtype:
                return val
        return None
    return v


# -------------------------------------------------------------------- server

def _big_receive_buffer(sock, size=8 << 20):
    """A burst of thousands of queries (benchmarks) must not overflow the
    UDP receive queue: real resolvers queue deep, and a dropped query would
    measure our fake, not vemilter. SO_RCVBUFFORCE (root) passes the
    net.core.rmem_max cap; otherwise take what SO_RCVBUF allows."""
    force = getattr(socket, "SO_RCVBUFFORCE", 33)
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, size)
    except OSError:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        except OSError:
            pass


class FakeDNS:
    """A scripted DNS server on one loopback port, UDP and TCP.

    FakeDNS(zone, host='127.0.0.1', port=0, compress=True, verbose=False)
      start() -> port       bind UDP and TCP on the same port, serve in threads
      stop()                close every socket, join every thread (bounded)
      set_zone(zone)        replace the zone (takes effect for the next query)
      queries               snapshot list of (qname_lowercase, qtype_str, 'udp'|'tcp')
      clear_queries()       forget the queries seen so far
      malformed             number of packets dropped as malformed
    """

    def __init__(self, zone, host="127.0.0.1", port=0, compress=True, verbose=False):
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError("FakeDNS listens on loopback only, not %r" % host)
        self.host = host
        self.port = port
        self.compress = compress
        self.verbose = verbose
        self._zone = normalize_zone(zone)
        self._lock = threading.Lock()
        self._queries = []
        self.malformed = 0
        self._stop = threading.Event()
        self._udp = None
        self._tcp = None
        self._threads = set()
        self._conns = set()
        self._started = False

    # ---- public API

    @property
    def queries(self):
        """A copy of the queries received so far, oldest first."""
        with self._lock:
            return list(self._queries)

    def clear_queries(self):
        with self._lock:
            self._queries.clear()

    def set_zone(self, zone):
        z = normalize_zone(zone)
        with self._lock:
            self._zone = z

    def update(self, entries):
        """Add or replace names in the zone (an entry None removes the
        name), at once for the next query; the rest of the zone stays."""
        add = normalize_zone({n: e for n, e in entries.items() if e is not None})
        gone = [normalize_name(n) for n, e in entries.items() if e is None]
        with self._lock:
            z = dict(self._zone)
            for n in gone:
                z.pop(n, None)
            z.update(add)
            self._zone = z

    def start(self):
        """Bind UDP and TCP on one port (a free one when port is 0) and serve."""
        if self._started:
            raise RuntimeError("FakeDNS already started")
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        last = None
        for _ in range(50):
            tcp = socket.socket(fam, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            udp = socket.socket(fam, socket.SOCK_DGRAM)
            _big_receive_buffer(udp)
            try:
                tcp.bind((self.host, self.port))
                port = tcp.getsockname()[1]
                udp.bind((self.host, port))
            except OSError as e:
                tcp.close()
                udp.close()
                last = e
                if self.port:
                    raise
                continue
            tcp.listen(128)
            self._tcp, self._udp, self.port = tcp, udp, port
            break
        else:
            raise OSError("no port free on both UDP and TCP: %s" % last)
        self._started = True
        self._spawn(self._udp_loop, "fakedns-udp")
        self._spawn(self._tcp_loop, "fakedns-tcp")
        return self.port

    def stop(self):
        """Close every socket and join every thread; safe to call twice."""
        self._stop.set()
        for s in (self._udp, self._tcp):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + JOIN_TIMEOUT
        while True:
            with self._lock:
                threads = [t for t in self._threads if t is not threading.current_thread()]
            if not threads:
                break
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))
            if time.monotonic() >= deadline:
                log("stop(): %d thread(s) did not end in time" % len(threads))
                break
        for c in conns:
            try:
                c.close()
            except OSError:
                pass

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    # ---- threads

    def _spawn(self, fn, name, *args):
        t = threading.Thread(target=self._run_thread, args=(fn, args), name=name, daemon=True)
        with self._lock:
            self._threads.add(t)
        t.start()
        return t

    def _run_thread(self, fn, args):
        try:
            fn(*args)
        except Exception as e:                     # never let a thread die silently
            if not self._stop.is_set():
                log("thread %s: %r" % (threading.current_thread().name, e))
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _sleep(self, seconds):
        """Sleep, but wake at once on stop(). True if still running."""
        return not self._stop.wait(seconds)

    def _udp_loop(self):
        sock = self._udp
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([sock], [], [], POLL)
                if not r:
                    continue
                data, peer = sock.recvfrom(65535)
            except (OSError, ValueError):
                if self._stop.is_set():
                    return
                continue
            self._handle(data, "udp", lambda resp, p=peer: self._udp_send(resp, p))

    def _udp_send(self, resp, peer):
        try:
            self._udp.sendto(resp, peer)
        except OSError as e:
            if not self._stop.is_set():
                log("udp send to %s: %s" % (peer, e))

    def _tcp_loop(self):
        sock = self._tcp
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([sock], [], [], POLL)
                if not r:
                    continue
                conn, _ = sock.accept()
            except (OSError, ValueError):
                if self._stop.is_set():
                    return
                continue
            with self._lock:
                self._conns.add(conn)
            self._spawn(self._tcp_conn, "fakedns-tcp-conn", conn)

    def _recv_exact(self, conn, n):
        """n bytes from conn, or None on EOF, idle timeout or stop."""
        buf = bytearray()
        idle_since = time.monotonic()
        while len(buf) < n:
            if self._stop.is_set() or time.monotonic() - idle_since > TCP_IDLE:
                return None
            try:
                r, _, _ = select.select([conn], [], [], POLL)
                if not r:
                    continue
                chunk = conn.recv(n - len(buf))
            except (OSError, ValueError):
                return None
            if not chunk:
                return None
            buf += chunk
            idle_since = time.monotonic()
        return bytes(buf)

    def _tcp_conn(self, conn):
        send_lock = threading.Lock()

        def send(resp):
            with send_lock:
                try:
                    conn.sendall(struct.pack("!H", len(resp)) + resp)
                except OSError:
                    pass

        try:
            while not self._stop.is_set():
                head = self._recv_exact(conn, 2)
                if head is None:
                    return
                (length,) = struct.unpack("!H", head)
                data = self._recv_exact(conn, length) if length else b""
                if data is None:
                    return
                self._handle(data, "tcp", send)
        finally:
            with self._lock:
                self._conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    # ---- answering

    def _handle(self, data, transport, send):
        """Parse one query, record it, and send (now or later) its answer."""
        try:
            q = parse_query(data)
        except Malformed as e:
            with self._lock:
                self.malformed += 1
            log("dropped malformed %s packet (%d bytes): %s" % (transport, len(data), e))
            return
        except Exception as e:                     # belt and braces
            with self._lock:
                self.malformed += 1
            log("dropped %s packet (%d bytes): unexpected %r" % (transport, len(data), e))
            return
        qname = normalize_name(q["qname"])
        qtype = qtype_str(q["qtype"])
        with self._lock:
            self._queries.append((qname, qtype, transport))
            zone = self._zone
        if self.verbose:
            log("query %s %s over %s" % (qname or ".", qtype, transport))
        entry = zone.get(qname)
        if entry is not None and behaviour(entry, "timeout", qtype):
            return                                 # never answered
        try:
            resp = self._answer(q, qname, qtype, zone, transport)
        except Exception as e:                     # a zone mistake must not kill us
            log("cannot answer %s %s: %r" % (qname, qtype, e))
            resp = self._reply(q, RCODES["SERVFAIL"], [], [], transport)
        delay = float(behaviour(entry, "delay", qtype) or 0) if entry is not None else 0.0
        if delay > 0:
            # Answer from another thread so that other queries are not held up.
            def later():
                if self._sleep(delay):
                    send(resp)
            self._spawn(later, "fakedns-delay")
        else:
            send(resp)

    def _answer(self, q, qname, qtype, zone, transport):
        """The reply bytes for a parsed query."""
        if q["opcode"] != 0:
            return self._reply(q, RCODES["NOTIMP"], [], [], transport)
        if q["qclass"] not in (CLASS_IN, 255):
            return self._reply(q, RCODES["REFUSED"], [], [], transport)
        entry = zone.get(qname)
        if entry is None:
            return self._reply(q, RCODES["NXDOMAIN"], [], self._soa(qname, zone, True), transport)
        rcode = behaviour(entry, "rcode", qtype)
        if rcode is not None and str(rcode).upper() != "NOERROR":
            rc = RCODES[str(rcode).upper()]
            auth = self._soa(qname, zone, True) if rc == RCODES["NXDOMAIN"] else []
            return self._reply(q, rc, [], auth, transport)
        if transport == "udp" and behaviour(entry, "truncate", qtype):
            return self._reply(q, 0, [], [], transport, tc=True)
        answers = self._records(qname, qtype, zone)
        auth = [] if answers else self._soa(qname, zone, False)
        return self._reply(q, 0, answers, auth, transport)

    def _records(self, qname, qtype, zone):
        """(owner, type, ttl, rdata_fn) tuples answering qname/qtype,
        following CNAMEs inside the zone."""
        out = []
        name = qname
        for _ in range(MAX_CNAME_CHAIN):
            entry = zone.get(name)
            if entry is None:
                break
            types = RECORD_TYPES if qtype == "ANY" else (qtype,)
            found = False
            for t in types:
                if t not in RECORD_TYPES:
                    continue
                for v in records_of(entry, t):
                    out.append((name, QTYPES[t], record_ttl(entry, t), rdata_writer(t, v)))
                    found = True
            if found or qtype in ("CNAME", "ANY") or "CNAME" not in entry:
                break
            target = records_of(entry, "CNAME")[0]
            out.append((name, QTYPES["CNAME"], record_ttl(entry, "CNAME"), rdata_writer("CNAME", target)))
            name = normalize_name(target)
        return out

    def _soa(self, qname, zone, nxdomain):
        """The authority section of a negative answer: [SOA record], or []
        when "soa" is null (see the module docstring). The record is
        (owner, type, ttl, rdata_fn, mangle)."""
        at, soa = soa_of(zone, qname)
        if soa is None:
            return []
        owner = qname
        if at is not None and at != qname:
            owner = at
        elif nxdomain:
            owner = qname.split(".", 1)[1] if "." in qname else ""
        return [(owner, QTYPES["SOA"], int(soa.get("ttl", DEFAULT_TTL)),
                 soa_rdata(int(soa.get("minimum", DEFAULT_TTL))), soa.get("mangle"))]

    def _reply(self, q, rcode, answers, authority, transport, tc=False):
        """Encode a reply; over UDP an answer that does not fit gets TC=1."""
        limit = 65535
        if transport == "udp":
            limit = q["edns_size"] or 512
        msg = self._encode(q, rcode, answers, authority, tc)
        if len(msg) > limit:
            msg = self._encode(q, rcode, [], [], True)
        return msg

    @staticmethod
    def _mangled_rr(w, mangle, owner, rtype, ttl, rdata_fn):
        """Append a record damaged as "mangle" says (SOA_MANGLES); True
        when the message must end here ("cut")."""
        if mangle == "loop":
            w.raw(struct.pack("!H", 0xC000 | len(w.buf)))   # a pointer to itself
        else:
            w.name(owner)
        w.raw(struct.pack("!HHI", rtype, CLASS_IN, ttl))
        at = len(w.buf)
        w.raw(b"\x00\x00")
        rdata_fn(w)
        rdlen = len(w.buf) - at - 2
        if mangle == "cut":
            struct.pack_into("!H", w.buf, at, rdlen)
            del w.buf[len(w.buf) - 10:]
            return True
        if mangle == "rdlength":
            rdlen += 200
        elif mangle == "short":
            rdlen -= 12
        struct.pack_into("!H", w.buf, at, rdlen)
        return False

    def _encode(self, q, rcode, answers, authority, tc):
        w = Writer(self.compress)
        flags = 0x8000 | 0x0400                    # QR, AA
        flags |= q["flags"] & 0x0100               # RD copied
        flags |= q["opcode"] << 11
        if tc:
            flags |= 0x0200
        flags |= rcode & 0xF
        has_opt = q["edns_size"] is not None
        w.raw(struct.pack("!HHHHHH", q["id"], flags, 1, len(answers), len(authority),
                          1 if has_opt else 0))
        # Echo the question as sent (case kept), uncompressed, and remember
        # its name for compression of the answers.
        w.question_name(q["qname_wire"])
        w.raw(struct.pack("!HH", q["qtype"], q["qclass"]))
        for rec in answers + authority:
            mangle = rec[4] if len(rec) > 4 else None
            if mangle is None:
                w.rr(*rec[:4])
            elif self._mangled_rr(w, mangle, *rec[:4]):
                return bytes(w.buf)                # the message ends inside this record
        if has_opt:
            # OPT: root owner, class = our payload size, TTL = ext-rcode/version/flags.
            w.raw(b"\x00" + struct.pack("!HHIH", QTYPES["OPT"], OUR_EDNS_SIZE, 0, 0))
        return bytes(w.buf)


# ---------------------------------------------------------------- standalone

def main(argv=None):
    ap = argparse.ArgumentParser(description="Scripted fake DNS server (loopback only).")
    ap.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=0, help="UDP and TCP port (0: any free one)")
    ap.add_argument("--zone", required=True, help="zone JSON file (see the module docstring)")
    ap.add_argument("--verbose", action="store_true", help="log every query to stderr")
    args = ap.parse_args(argv)

    def load():
        with open(args.zone, encoding="utf-8") as f:
            return json.load(f)

    dns = FakeDNS(load(), host=args.host, port=args.port, verbose=args.verbose)
    port = dns.start()
    host = "[%s]" % args.host if ":" in args.host else args.host

    # The handlers before the "listening" line: whoever reads it may signal
    # at once (a SIGTERM before them killed the process: exit -15).
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *a: done.set())
    signal.signal(signal.SIGTERM, lambda *a: done.set())

    def reload(*a):
        try:
            dns.set_zone(load())
            log("zone reloaded from %s" % args.zone)
        except Exception as e:
            log("zone reload failed, keeping the old one: %s" % e)
    signal.signal(signal.SIGHUP, reload)
    print("listening on %s:%d" % (host, port), flush=True)
    while not done.wait(1.0):
        pass
    dns.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
