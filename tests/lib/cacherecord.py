"""cacherecord - the cache record format of src/cacherec.c (version 2), in
Python, so tests can write records into a shared Redis cache without the
daemon and read back what vemilter wrote.

Mirrors the table in cacherec.c's header comment: a 50-octet header of
little-endian integers (version, kind, stage, flags, code, five string
lengths, probed/refresh/expires/deferred_since in ms since the epoch, tries,
reserved), then the five strings (ecode, text, reason, mx_host, mx_addr).
The enums are named as vemilter-cache prints them (outcome.c).

In Redis (the contract of issue 12) a record is the HASH "vemilter:" + key
whose field "r" holds these bytes, expiring (PEXPIREAT) at expires_at.
"""

import struct
import time

PREFIX = "vemilter:"
HEADER = struct.Struct("<BBBBHHHHHHqqqqBB")  # 50 octets
assert HEADER.size == 50

# enum outcome_kind, in outcome.h's order
KINDS = ["valid", "invalid", "no_domain", "catch_all", "tempfail", "blocked", "unverifiable"]
FLAGS = {"not_catchall": 1, "fallback_sender": 2, "greylist": 4, "protocol": 8, "loop": 16, "tagged": 32,
         "limited": 64}
STAGE_NONE = 0


def now_ms():
    return int(time.time() * 1000)


def encode(kind, probed_ms=None, refresh_ms=None, expires_ms=None, code=0, ecode="", text="",
           reason="set by a test", mx_host="", mx_addr="", flags=(), stage=STAGE_NONE, deferred_since_ms=0,
           tries=0, version=2):
    """The bytes cache_record_encode would write; times default to a record
    probed now, stale in an hour, expired in a day."""
    probed_ms = now_ms() if probed_ms is None else probed_ms
    refresh_ms = probed_ms + 3600000 if refresh_ms is None else refresh_ms
    expires_ms = probed_ms + 86400000 if expires_ms is None else expires_ms
    strings = [s.encode() for s in (ecode, text, reason, mx_host, mx_addr)]
    bits = 0
    for f in flags:
        bits |= FLAGS[f]
    head = HEADER.pack(version, KINDS.index(kind), stage, bits, code, *[len(s) for s in strings],
                       probed_ms, refresh_ms, expires_ms, deferred_since_ms, tries, 0)
    return head + b"".join(strings)


def decode(data):
    """The fields of a version 2 record as a dict (kind by name), or None."""
    if data is None or len(data) < HEADER.size or data[0] != 2:
        return None
    f = HEADER.unpack_from(data)
    lens = f[5:10]
    if HEADER.size + sum(lens) != len(data):
        return None
    strings, off = [], HEADER.size
    for n in lens:
        strings.append(data[off:off + n].decode(errors="replace"))
        off += n
    return {"kind": KINDS[f[1]] if f[1] < len(KINDS) else f[1], "stage": f[2], "flags": f[3], "code": f[4],
            "ecode": strings[0], "text": strings[1], "reason": strings[2], "mx_host": strings[3],
            "mx_addr": strings[4], "probed_ms": f[10], "refresh_ms": f[11], "expires_ms": f[12],
            "deferred_since_ms": f[13], "tries": f[14]}


def redis_put(client, key, record, expires_ms=None, **fields):
    """Store record bytes under "vemilter:"+key as the daemon does: HSET r,
    PEXPIREAT at expires_ms (default: the record's own expires_at)."""
    if expires_ms is None:
        d = decode(record)
        expires_ms = d["expires_ms"] if d else None
    rkey = PREFIX + key
    client.command("DEL", rkey)
    args = ["HSET", rkey, "r", record]
    for name, value in fields.items():
        args += [name, value]
    client.command(*args)
    if expires_ms is not None:
        client.command("PEXPIREAT", rkey, str(expires_ms))


def redis_get(client, key):
    """The decoded record under "vemilter:"+key, or None."""
    return decode(client.command("HGET", PREFIX + key, "r"))
