#!/usr/bin/python3
"""smtpfarm - a farm of fake SMTP servers, one behaviour per loopback address.

What it fakes
    The mail exchangers vemilter's callout talks to when it verifies a
    sender: it connects to an MX, reads the banner, says EHLO, MAIL FROM:<>,
    RCPT TO:<sender> and QUIT, and never sends DATA. Each fake server sits on
    its own loopback address (127.0.0.2, 127.0.0.3, ... or ::1), all on one
    port, and plays one scripted behaviour: a normal server, a catch-all,
    greylisting, a 421/554 banner, a broken STARTTLS, a server that never
    answers RCPT, and so on. Every line a client sends is recorded, so tests
    can assert what the callout did (e.g. that DATA was never sent).
    Standard library only (asyncio in one background thread, ssl); runs
    with Debian's /usr/bin/python3. Built for thousands of concurrent
    connections (benchmarks): RLIMIT_NOFILE's soft limit is raised if low.

How tests use it
    farm = SmtpFarm(latency=0.0)
    farm.add("127.0.0.2", "normal", users=["alice"])
    farm.add("127.0.0.3", "greylist")
    farm.add("127.0.0.4", "starttls")
    port = farm.start()                 # the same port on every address
    ... point the sender domain's MX at 127.0.0.2 (fakedns) and let
        vemilter probe port `port` ...
    farm.wait_idle()                    # let the fake see the client's close
    assert farm.saw("127.0.0.2", "RCPT TO:<alice@")
    assert not farm.saw("127.0.0.2", "DATA")
    s = farm.sessions("127.0.0.2")[0]; s.commands, s.closed_by, s.tls
    farm.stop()

    An address that was not add()ed has no server: connecting to it on the
    farm's port is refused (ECONNREFUSED), which is how tests fake an MX
    that is down. (All of 127.0.0.0/8 is local on Linux; nothing listens
    there unless added.)

    Standalone (manual use, benchmarks):
        /usr/bin/python3 smtpfarm.py --port 2525 --latency 0.05 --farm farm.json
    farm.json maps address -> behaviour name, or -> {"behaviour": NAME,
    option: value, ...}. Prints "listening on port N" then one
    "ADDRESS:N BEHAVIOUR" line per server, and serves until SIGINT/SIGTERM.

Behaviours (add(address, behaviour, **options))
    normal          220 banner; EHLO -> 250 multi-line (PIPELINING, 8BITMIME,
                    SIZE, ENHANCEDSTATUSCODES, + SMTPUTF8 with smtputf8=True);
                    HELO -> 250; MAIL -> 250 2.1.0; RCPT: known user 250 2.1.5,
                    unknown 550 5.1.1 user unknown; RSET, NOOP -> 250;
                    QUIT -> 221 and close; DATA -> 554 5.5.1 "no DATA allowed
                    in tests"; anything else -> 500. Out of order (MAIL before
                    HELO/EHLO, RCPT before MAIL) -> 503 5.5.1.
    catchall        like normal, every RCPT -> 250 (with catchall_domains=[...]
                    only at those domains; at others like normal)
    catchall_452    known users 250, any other RCPT -> 452 4.5.3 too many recipients
    greylist        every RCPT -> 450 4.7.1 greylisted, try again later
    banner_421      "421 4.3.2 service not available", then closes
    banner_554      "554 5.7.1 your IP is blocklisted", stays: QUIT -> 221,
                    anything else (EHLO/HELO included) -> 503 5.5.1 bad sequence
                    (any behaviour with refuse_from=[client addresses]: a
                    connection from one of them is served as banner_554, its
                    session's behaviour says so)
    mail_refused    MAIL -> 550 5.7.1 null sender not accepted from you
    ehlo_refused    EHLO -> 502 5.5.2 command not implemented; HELO -> 250
    starttls        EHLO offers STARTTLS; STARTTLS -> 220 then a TLS handshake
                    (self-signed, CN=mx.test, farm.cert_file); after it EHLO
                    offers no STARTTLS, session.tls is True and the commands
                    sent inside TLS are recorded too
    tls_broken      EHLO offers STARTTLS; STARTTLS -> 220, then garbage bytes
                    and close. A connection that does not use STARTTLS works
                    like normal (a client retrying in plain text succeeds).
    slow_banner     waits `delay` seconds (default 30; stop() cuts it short)
                    before the banner, then like normal
    drop_after_mail MAIL -> 250, then RCPT gets no reply: the server closes
    multiline       every reply is multi-line (banner too), each line with
                    the enhanced code; RCPT unknown -> multi-line 550 5.1.1
    endless_line    normal banner; EHLO -> "250 AAAA..." with no CRLF, 4 KiB
                    chunks, until the client disconnects or 10 MB are sent
    garbage         "hello there" instead of a banner, and to every command
    silent_after_rcpt like normal until RCPT, which (and everything after it)
                    is never answered: the client must time out
    early_reply     like normal, but sends one unsolicited extra line
                    "250 2.0.0 unsolicited reply, before its command" right
                    after (in the same write as) one reply, once a session:
                    option when="banner" (default), "ehlo" or "mail". A client
                    that pairs replies by order takes it as the next command's
                    reply (and so an unknown user's 550 as some later one's).
    hang_quit       like normal until QUIT, which is recorded but never
                    answered; the server never closes (the client must)
    hang_catchall   known users 250; any other RCPT (the catch-all probe) is
                    never answered, nor is anything after it
    greylist_for    RCPT -> 450 4.7.1 "greylisted for N seconds, try again
                    later" until `seconds` (default 60) have passed since the
                    farm first saw that (sender, recipient) pair at that
                    address (over all connections); then like normal
    null_sender_refused  MAIL FROM:<> -> 550 5.7.1 null sender refused; RSET ->
                    250; MAIL FROM:<anything else> -> 250; then normal users
                    (with replies={"RSET": ...} a refused RSET too)
    multiline_mismatch   every RCPT gets one multi-line reply whose lines carry
                    different codes: "250-2.1.5 ok" then "550 5.1.1 no such user"
    lagging_reply   one reply behind for the whole session: right after the
                    first EHLO arrives it sends one unsolicited line
                    "250 2.0.0 unsolicited" (before the real EHLO reply), and
                    answers every command `delay` seconds (default 0.15)
                    late, so nothing is waiting when the client sends its
                    next command, yet every reply it reads is the previous
                    command's. QUIT -> 221 (late) and close. With
                    refuse_null=True, MAIL FROM:<> -> 553 5.1.8 sender
                    address rejected: null sender not accepted
    null_sender_refused_at_rcpt  Postfix with smtpd_delay_reject = yes:
                    MAIL FROM:<> -> 250, then every RCPT -> 554 5.7.1 <>:
                    Sender address rejected: Access denied; after MAIL
                    FROM:<anything else> normal users

Options (all behaviours)
    users=[...]        local parts that exist (case- and domain-insensitive);
                       default: postmaster, alice, bob, user
    smtputf8=False     advertise SMTPUTF8 in EHLO
    hostname="mx.test" name used in the banner and EHLO reply (the first word
                       of each; set it to the prober's helo_name for a server
                       that is "this host")
    delay=30.0         slow_banner's wait (lagging_reply: 0.15, each reply's)
    refuse_null=False  lagging_reply: refuse MAIL FROM:<> with 553 5.1.8
    reply_delay=0      seconds to wait before answering each command (any
                       behaviour): a slow server that stays in step
    when="banner"      early_reply: after which reply ("banner", "ehlo", "mail")
    catchall_domains=None  catchall: the recipient domains it accepts every
                       local part at (case-insensitive); None: all
    seconds=60.0       greylist_for: how long a (sender, recipient) pair is
                       greylisted
    rcpt_limit=N       every behaviour: after N RCPTs in one transaction (MAIL
                       to RSET/MAIL), every further RCPT -> 452 4.5.3 too
                       many recipients (Postfix's smtpd_recipient_limit)
    drop_after=N       every behaviour: the session's RCPT number N+1 gets no
                       reply: the server closes the connection
    stray_after=N      after answering the session's RCPT number N, 30 ms
                       later one more line "250 2.0.0 stray reply", then
                       the server closes (a reply out of step, seen only
                       unread at the close)
    pipelining=True    advertise PIPELINING in the EHLO reply (False: not)
    stray_mail=False   MAIL -> 250 2.1.0, and a second "250 2.1.0 sender ok"
                       held back until the client's next command(s) arrive,
                       then sent ahead of their replies (in the same write):
                       every reply after it is one slot late, and nothing
                       waited when the client sent them
    replies={VERB: "text"}   replace the reply text the behaviour sends for a
                       verb ("BANNER" for the greeting); "\\n" separates
                       lines, e.g. {"RCPT": "451 4.3.0 local error"}. The
                       behaviour's own state changes stay as they are.

Pipelined commands (RFC 2920)
    Every behaviour answers a group of commands the way Postfix does: when
    more complete command lines were waiting unread as a command was taken,
    its replies are held, and they go out together, in order and in one
    write, with the reply to the group's last command, after one `latency`
    (so a group costs one round trip, as on a network; a client sending one
    command at a time, or a command that arrives while a reply is being
    delayed, sees no change). Held replies are lost if the server drops the
    connection within the group (drop_after), as in a crash; a server that
    stops answering (silent_after_rcpt, hang_catchall, hang_quit) sends
    what it held first; lagging_reply answers one command at a time
    whatever waits. Replies are recorded when they are written.

Records (thread-safe snapshots)
    farm.sessions(address=None) -> [Session]; Session has address, behaviour,
        peer, commands (exact lines received, latin-1, CRLF stripped, in
        order), replies (lines sent), closed_by ('client' | 'server' | None
        while open), tls, bare_lf (a line ended in LF without CR), started,
        ended (time.monotonic()).
    farm.commands(address) -> flat list; farm.saw(address, prefix) -> bool
    (case-insensitive prefix); farm.count(address, prefix) -> int;
    farm.connections(address=None); farm.active(address=None);
    farm.max_concurrent(address=None); farm.wait_idle(address=None, timeout=5);
    per listening address: farm.connections(a) sessions, farm.count(a, "RCPT")
    RCPTs, farm.replies_per_session(a, "550") failures in each session;
    farm.reset().

Everything listens on loopback only (other addresses are refused), every
wait is bounded, and stop() closes every socket and joins the thread.
"""

import argparse
import asyncio
import ipaddress
import json
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

BEHAVIOURS = (
    "normal", "catchall", "catchall_452", "greylist", "banner_421", "banner_554",
    "mail_refused", "ehlo_refused", "starttls", "tls_broken", "slow_banner",
    "drop_after_mail", "multiline", "endless_line", "garbage", "silent_after_rcpt",
    "early_reply", "hang_quit", "hang_catchall", "greylist_for", "null_sender_refused",
    "multiline_mismatch", "lagging_reply", "null_sender_refused_at_rcpt",
)
LAG_LINE = "250 2.0.0 unsolicited"
NULL_AT_RCPT = "<>: Sender address rejected: Access denied"
EARLY_WHEN = {"banner": "BANNER", "ehlo": "EHLO", "mail": "MAIL"}
EARLY_LINE = "250 2.0.0 unsolicited reply, before its command"
TLS_BEHAVIOURS = ("starttls", "tls_broken")
DEFAULT_USERS = ("postmaster", "alice", "bob", "user")

# Bounds.
IDLE_TIMEOUT = 120.0        # a silent client is dropped with 421 after this
LINE_LIMIT = 65536          # longest command line we accept
ENDLESS_MAX = 10 * 1024 * 1024
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
TLS_HANDSHAKE_TIMEOUT = 10.0
WANT_NOFILE = 65536

MAIL_RE = re.compile(r"^MAIL FROM:\s*<([^>]*)>", re.I)
RCPT_RE = re.compile(r"^RCPT TO:\s*<([^>]*)>", re.I)


def log(msg):
    sys.stderr.write("smtpfarm: %s\n" % msg)
    sys.stderr.flush()


def raise_nofile(want=WANT_NOFILE):
    """Raise the soft RLIMIT_NOFILE towards want (never above the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as e:
            log("cannot raise RLIMIT_NOFILE from %d to %d: %s" % (soft, target, e))


def make_certificate(directory):
    """A self-signed key and certificate (CN=mx.test) made with openssl."""
    key = os.path.join(directory, "key.pem")
    cert = os.path.join(directory, "cert.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=mx.test",
         "-days", "2", "-keyout", key, "-out", cert],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    return key, cert


class Session:
    """One SMTP connection as the fake saw it."""

    __slots__ = ("address", "behaviour", "peer", "commands", "replies", "closed_by",
                 "tls", "bare_lf", "started", "ended")

    def __init__(self, address, behaviour, peer):
        self.address = address
        self.behaviour = behaviour
        self.peer = peer
        self.commands = []
        self.replies = []
        self.closed_by = None
        self.tls = False
        self.bare_lf = False
        self.started = time.monotonic()
        self.ended = None

    def copy(self):
        c = Session(self.address, self.behaviour, self.peer)
        for k in self.__slots__:
            v = getattr(self, k)
            setattr(c, k, list(v) if isinstance(v, list) else v)
        return c

    def __repr__(self):
        return "<Session %s %s tls=%s closed_by=%s %r>" % (
            self.address, self.behaviour, self.tls, self.closed_by, self.commands)


class _Closed(Exception):
    """The connection is over (client went away or we closed it)."""


class _Conn:
    """The server side of one connection: reads commands, plays the behaviour."""

    def __init__(self, farm, address, reader, writer):
        self.farm = farm
        self.address = address
        self.behaviour, self.opts = farm._servers[address]
        self.reader, self.writer = reader, writer
        peer = writer.get_extra_info("peername")
        if peer and peer[0] in self.opts.get("refuse_from", ()):
            self.behaviour = "banner_554"        # a blocklist of that client's address
        self.s = Session(address, self.behaviour, peer[:2] if peer else None)
        self.users = {u.lower() for u in self.opts.get("users", DEFAULT_USERS)}
        self.hostname = self.opts.get("hostname", "mx.test")
        self.overrides = {k.upper(): v for k, v in (self.opts.get("replies") or {}).items()}
        self.greeted = False      # HELO/EHLO seen
        self.in_mail = False      # MAIL accepted
        self.silent = False       # silent_after_rcpt, hang_*: answer nothing any more
        self.verb = None          # the verb being answered (for overrides)
        self.mail_from = None     # the sender of the MAIL accepted (greylist_for)
        self.early_verb = (EARLY_WHEN[self.opts.get("when", "banner")]
                           if self.behaviour == "early_reply" else None)
        self.lag_started = False  # lagging_reply: the unsolicited line went out
        self.rcpts = 0            # RCPT commands in this session (drop_after)
        self.txn_rcpts = 0        # RCPTs taken in this transaction (rcpt_limit)
        self.held = []            # reply lines held while a pipelined group is answered
        self.in_group = False     # more commands were waiting when this one was taken
        self.stray_due = False    # stray_mail: the second MAIL reply waits for the next command

    # ---- low-level I/O

    def more_waiting(self):
        """Does a complete command line wait unread (a pipelined group)?
        (asyncio's StreamReader keeps what it has read in _buffer.)"""
        buf = getattr(self.reader, "_buffer", None)
        return buf is not None and b"\n" in buf

    async def send(self, lines):
        """Send reply lines (CRLF added), after the farm's latency; held
        while more commands of a pipelined group wait (module docstring)."""
        if self.in_group:
            self.held.extend(lines)
            return
        await self.flush(lines)

    async def flush(self, lines=()):
        """Write what was held and lines, after the farm's latency."""
        if not self.held and not lines:
            return
        if self.farm.latency > 0:
            await asyncio.sleep(self.farm.latency)
        lines = self.held + list(lines)
        self.held = []
        with self.farm._lock:
            self.s.replies.extend(lines)
        try:
            self.writer.write("".join(l + "\r\n" for l in lines).encode("latin-1", "replace"))
            await self.writer.drain()
        except (ConnectionError, OSError) as e:
            self.closed("client")
            raise _Closed() from e

    def catchall_at(self, rcpt):
        """catchall: does it accept any local part at rcpt's domain?"""
        domains = self.opts.get("catchall_domains")
        if domains is None:
            return True
        domain = rcpt.rpartition("@")[2].rstrip(">").lower()
        return domain in [d.lower() for d in domains]

    async def reply(self, code, enh, text, more=()):
        """One reply: code, enhanced code (or None) and text; `more` are extra
        lines before the last (a multi-line reply). The multiline behaviour
        turns every reply into three lines; an override replaces it all."""
        key = self.verb
        if key in self.overrides:
            lines = str(self.overrides[key]).replace("\r", "").split("\n")
        else:
            e = (enh + " ") if enh else ""
            texts = list(more) + [text]
            if self.behaviour == "multiline" and len(texts) == 1:
                texts = [text, "multi-line reply, second line", "end of reply"]
            lines = ["%d-%s%s" % (code, e, t) for t in texts[:-1]]
            lines.append("%d %s%s" % (code, e, texts[-1]))
        if self.early_verb is not None and key == self.early_verb:
            lines.append(EARLY_LINE)            # same write: already waiting when the reply is read
            self.early_verb = None
        await self.send(lines)

    async def readline(self):
        """The next command line (CRLF stripped), or None when the client is gone."""
        try:
            raw = await asyncio.wait_for(self.reader.readline(), IDLE_TIMEOUT)
        except asyncio.TimeoutError:
            self.verb = None
            try:
                await self.reply(421, "4.4.2", "idle timeout, closing")
            except _Closed:
                pass
            self.closed("server")
            return None
        except (ValueError, asyncio.LimitOverrunError):
            self.closed("server")
            try:
                await self.send(["500 5.5.2 line too long"])
            except _Closed:
                pass
            return None
        except (ConnectionError, OSError, ssl.SSLError):
            self.closed("client")
            return None
        if not raw:
            self.closed("client")
            return None
        if raw.endswith(b"\r\n"):
            raw = raw[:-2]
        elif raw.endswith(b"\n"):
            raw = raw[:-1]
            self.s.bare_lf = True
        line = raw.decode("latin-1")
        # lagging_reply's point is its timing: one reply per command, each
        # late, whatever the client sent meanwhile
        self.in_group = self.more_waiting() and self.behaviour != "lagging_reply"
        with self.farm._lock:
            self.s.commands.append(line)
        return line

    def closed(self, by):
        """Note who closed first (set before the last reply goes out, so a
        client that sees the reply also sees closed_by)."""
        with self.farm._lock:
            if self.s.closed_by is None:
                self.s.closed_by = by

    async def hold(self, seconds):
        """Wait `seconds` without reading; False as soon as the client has
        closed (EOF or reset), so a client that gives up on a slow banner
        ends its session at once (what it sent early stays unread)."""
        deadline = time.monotonic() + seconds
        while True:
            if self.reader.at_eof() or self.reader.exception() is not None:
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            await asyncio.sleep(min(left, 0.1))

    # ---- the dialogue

    async def run(self):
        b = self.behaviour
        self.verb = "BANNER"
        if b == "slow_banner":
            if not await self.hold(float(self.opts.get("delay", 30.0))):
                self.closed("client")            # the client gave up first
                return
        if b == "banner_421":
            self.closed("server")
            await self.reply(421, "4.3.2", "service not available")
            return
        if b == "banner_554":
            await self.reply(554, "5.7.1", "your IP is blocklisted")
        elif b == "garbage":
            await self.send(["hello there"])
        else:
            await self.reply(220, "2.0.0" if b == "multiline" else None,
                             "%s ESMTP fake (%s)" % (self.hostname, b))
        while True:
            line = await self.readline()
            if line is None:
                return
            if self.silent:
                continue
            verb = line.split(" ", 1)[0].upper()
            self.verb = verb
            if not await self.command(verb, line):
                return

    async def command(self, verb, line):
        """Answer one command; False when the connection is over."""
        b = self.behaviour
        arg = line[len(verb):].strip()
        if self.stray_due:                         # stray_mail: ahead of this command's reply
            self.stray_due = False
            self.held.append("250 2.1.0 sender ok")

        if b == "garbage":
            if verb == "QUIT":
                self.closed("server")
            await self.send(["hello there"])
            return verb != "QUIT"

        if self.opts.get("reply_delay"):
            await asyncio.sleep(float(self.opts["reply_delay"]))

        if b == "lagging_reply":
            if verb == "EHLO" and not self.lag_started:
                self.lag_started = True
                await self.send([LAG_LINE])      # at once: the client takes it as EHLO's reply
            await asyncio.sleep(float(self.opts.get("delay", 0.15)))

        if b == "banner_554":
            if verb == "QUIT":
                self.closed("server")
                await self.reply(221, "2.0.0", "bye")
                return False
            await self.reply(503, "5.5.1", "bad sequence of commands")
            return True

        if verb == "EHLO":
            if b == "ehlo_refused":
                await self.reply(502, "5.5.2", "command not implemented")
                return True
            if b == "endless_line":
                await self.endless()
                return False
            self.greeted, self.in_mail = True, False
            ext = ["PIPELINING", "8BITMIME", "SIZE 10240000", "ENHANCEDSTATUSCODES"]
            if not self.opts.get("pipelining", True):
                ext.remove("PIPELINING")
            if self.opts.get("smtputf8"):
                ext.append("SMTPUTF8")
            if b in TLS_BEHAVIOURS and not self.s.tls:
                ext.append("STARTTLS")
            first = "%s greets %s" % (self.hostname, arg or "(nobody)")
            await self.reply(250, None, ext[-1], more=[first] + ext[:-1])
            return True

        if verb == "HELO":
            self.greeted, self.in_mail = True, False
            await self.reply(250, None, self.hostname)
            return True

        if verb == "STARTTLS" and b in TLS_BEHAVIOURS:
            if self.s.tls:
                await self.reply(503, "5.5.1", "TLS already active")
                return True
            if arg:
                await self.reply(501, "5.5.4", "STARTTLS takes no argument")
                return True
            await self.reply(220, "2.0.0", "ready to start TLS")
            if b == "tls_broken":
                self.closed("server")
                try:
                    self.writer.write(b"\x00\xffthis is not a TLS handshake\r\n" * 4)
                    await self.writer.drain()
                except (ConnectionError, OSError):
                    pass
                return False
            try:
                await self.writer.start_tls(self.farm._ssl_ctx,
                                            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
            except (ssl.SSLError, ConnectionError, OSError, asyncio.TimeoutError) as e:
                log("%s: TLS handshake failed: %s" % (self.address, e))
                self.closed("client")
                return False
            with self.farm._lock:
                self.s.tls = True
            self.greeted, self.in_mail = False, False     # RFC 3207: start over
            return True

        if verb == "MAIL":
            if not self.greeted:
                await self.reply(503, "5.5.1", "send HELO or EHLO first")
            elif self.in_mail:
                await self.reply(503, "5.5.1", "nested MAIL command")
            elif not MAIL_RE.match(line):
                await self.reply(501, "5.5.4", "syntax: MAIL FROM:<address>")
            elif b == "mail_refused":
                await self.reply(550, "5.7.1", "null sender not accepted from you")
            elif b == "null_sender_refused" and MAIL_RE.match(line).group(1) == "":
                await self.reply(550, "5.7.1", "null sender refused")
            elif (b == "lagging_reply" and self.opts.get("refuse_null")
                  and MAIL_RE.match(line).group(1) == ""):
                await self.reply(553, "5.1.8", "sender address rejected: null sender not accepted")
            else:
                self.in_mail = True
                self.txn_rcpts = 0
                self.mail_from = MAIL_RE.match(line).group(1)
                await self.reply(250, "2.1.0", "sender ok")
                self.stray_due = bool(self.opts.get("stray_mail"))
            return True

        if verb == "RCPT":
            m = RCPT_RE.match(line)
            if not self.in_mail:
                await self.reply(503, "5.5.1", "need MAIL before RCPT")
                return True
            if not m:
                await self.reply(501, "5.5.4", "syntax: RCPT TO:<address>")
                return True
            self.rcpts += 1
            drop = self.opts.get("drop_after")
            if drop is not None and self.rcpts > int(drop):
                self.closed("server")                # no reply: the connection just ends
                return False
            limit = self.opts.get("rcpt_limit")
            if limit is not None and self.txn_rcpts >= int(limit):
                await self.reply(452, "4.5.3", "too many recipients")
                return True
            self.txn_rcpts += 1
            if b == "drop_after_mail":
                self.closed("server")
                return False
            if b == "silent_after_rcpt":
                self.silent = True
                await self.flush()
                return True
            if b == "multiline_mismatch":
                await self.send(["250-2.1.5 ok", "550 5.1.1 no such user"])
                return True
            if b == "null_sender_refused_at_rcpt" and self.mail_from == "":
                await self.reply(554, "5.7.1", NULL_AT_RCPT)
                return True
            addr = m.group(1)
            local = addr.split(":", 1)[-1]             # drop a source route
            local = local.rpartition("@")[0] if "@" in local else local
            if local.startswith('"') and local.endswith('"') and len(local) >= 2:
                local = local[1:-1]
            known = local.lower() in self.users
            if b == "hang_catchall" and not known:
                self.silent = True
                await self.flush()
                return True
            if b == "greylist_for":
                seconds = float(self.opts.get("seconds", 60.0))
                pair = (self.address, (self.mail_from or "").lower(), addr.lower())
                now = time.monotonic()
                with self.farm._lock:
                    first = self.farm._grey_seen.setdefault(pair, now)
                if now - first < seconds:
                    await self.reply(450, "4.7.1", "greylisted for %g seconds, try again later" % seconds)
                    return True
            if b == "greylist":
                await self.reply(450, "4.7.1", "greylisted, try again later")
            elif (b == "catchall" and self.catchall_at(addr)) or known:
                await self.reply(250, "2.1.5", "recipient ok")
            elif b == "catchall_452":
                await self.reply(452, "4.5.3", "too many recipients")
            elif b == "multiline":
                await self.reply(550, "5.1.1", "user unknown",
                                 more=["<%s>: no such user here" % addr, "check the address"])
            else:
                await self.reply(550, "5.1.1", "<%s>: user unknown" % addr)
            stray = self.opts.get("stray_after")
            if stray is not None and self.rcpts == int(stray):
                await asyncio.sleep(0.03)              # the client is between commands now
                await self.send(["250 2.0.0 stray reply"])
                self.closed("server")
                return False
            return True

        if verb == "RSET":
            self.in_mail = False
            await self.reply(250, "2.0.0", "ok")
            return True
        if verb == "NOOP":
            await self.reply(250, "2.0.0", "ok")
            return True
        if verb == "QUIT":
            if b == "hang_quit":
                self.silent = True                   # recorded, never answered, never closed
                await self.flush()
                return True
            self.closed("server")
            await self.reply(221, "2.0.0", "bye")
            return False
        if verb == "DATA":
            await self.reply(554, "5.5.1", "no DATA allowed in tests")
            return True
        await self.reply(500, "5.5.2", "command not recognized")
        return True

    async def endless(self):
        """endless_line: '250 ' and then 'A's, never a CRLF."""
        if self.farm.latency > 0:
            await asyncio.sleep(self.farm.latency)
        sent = 0
        chunk = b"A" * 4096
        try:
            self.writer.write(b"250 ")
            while sent < ENDLESS_MAX:
                self.writer.write(chunk)
                sent += len(chunk)
                await self.writer.drain()
                if self.writer.is_closing():
                    break
        except (ConnectionError, OSError):
            self.closed("client")
            return
        self.closed("server")


class SmtpFarm:
    """Fake SMTP servers, one behaviour per loopback address, one shared port.

    SmtpFarm(port=0, latency=0.0)
      add(address, behaviour, **options)   before start()
      start() -> port                      binds every address, serves in a thread
      stop()                               closes every connection and socket
    See the module docstring for behaviours, options and the record helpers.
    """

    def __init__(self, port=0, latency=0.0):
        self.port = port
        self.latency = float(latency)
        self._servers = {}                  # address -> (behaviour, options)
        self._lock = threading.Lock()
        self._sessions = []                 # every Session, in start order
        self._grey_seen = {}                # greylist_for: (address, sender, rcpt) -> first seen
        self._open = {}                     # address -> open connections now
        self._peak = {}                     # address -> most open at once
        self._peak_all = 0
        self._socks = []
        self._loop = None
        self._thread = None
        self._tasks = set()
        self._aservers = []
        self._tmpdir = None
        self._ssl_ctx = None
        self.cert_file = None               # the self-signed certificate (TLS behaviours)
        self.key_file = None

    # ---- setup

    def add(self, address, behaviour, **options):
        """Serve `behaviour` on loopback `address` (e.g. '127.0.0.2' or '::1')."""
        if self._loop is not None:
            raise RuntimeError("add() must come before start()")
        ip = ipaddress.ip_address(address)
        if not ip.is_loopback:
            raise ValueError("SmtpFarm listens on loopback only, not %r" % address)
        if behaviour not in BEHAVIOURS:
            raise ValueError("unknown behaviour %r (known: %s)" % (behaviour, ", ".join(BEHAVIOURS)))
        known = {"users", "smtputf8", "hostname", "delay", "replies", "when", "seconds", "refuse_null",
                 "catchall_domains", "rcpt_limit", "drop_after", "reply_delay", "stray_after",
                 "pipelining", "stray_mail", "refuse_from"}
        bad = set(options) - known
        if bad:
            raise ValueError("unknown option(s) %s" % ", ".join(sorted(bad)))
        if options.get("when", "banner") not in EARLY_WHEN:
            raise ValueError("when= is one of %s" % ", ".join(sorted(EARLY_WHEN)))
        self._servers[str(ip)] = (behaviour, dict(options))

    def _bind_all(self):
        """Bind a listening socket on every address, all on one port."""
        addrs = list(self._servers)
        for _ in range(1 if self.port else 100):
            socks = []
            port = self.port
            try:
                for a in addrs:
                    fam = socket.AF_INET6 if ":" in a else socket.AF_INET
                    s = socket.socket(fam, socket.SOCK_STREAM)
                    socks.append(s)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    if fam == socket.AF_INET6:
                        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    s.bind((a, port))
                    port = s.getsockname()[1]
                    s.listen(4096)
                    s.setblocking(False)
            except OSError:
                for s in socks:
                    s.close()
                if self.port:
                    raise
                continue
            self.port = port
            return list(zip(addrs, socks))
        raise OSError("no port free on all of %s" % ", ".join(addrs))

    def start(self):
        """Bind every added address on one port and serve; returns the port."""
        if self._loop is not None:
            raise RuntimeError("SmtpFarm already started")
        if not self._servers:
            raise RuntimeError("add() at least one server before start()")
        raise_nofile()
        if any(b in TLS_BEHAVIOURS for b, _ in self._servers.values()):
            self._tmpdir = tempfile.mkdtemp(prefix="smtpfarm-")
            self.key_file, self.cert_file = make_certificate(self._tmpdir)
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(self.cert_file, self.key_file)
            self._ssl_ctx = ctx
        bound = self._bind_all()
        self._socks = [s for _, s in bound]
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure = []

        async def serve():
            for addr, sock in bound:
                srv = await asyncio.start_server(
                    lambda r, w, a=addr: self._handle(a, r, w), sock=sock, limit=LINE_LIMIT,
                    backlog=4096)
                self._aservers.append(srv)

        def run():
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(serve())
            except Exception as e:
                failure.append(e)
                ready.set()
                return
            ready.set()
            try:
                self._loop.run_forever()
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name="smtpfarm", daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT) or failure:
            self.stop()
            raise RuntimeError("smtpfarm did not start: %s" % (failure or "timeout"))
        return self.port

    def stop(self):
        """Close every connection, listening socket and the loop thread (bounded)."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            try:
                fut.result(STOP_TIMEOUT)
            except Exception as e:
                log("stop(): shutdown incomplete: %r" % (e,))
            loop.call_soon_threadsafe(loop.stop)
            thread.join(STOP_TIMEOUT)
            if thread.is_alive():
                log("stop(): loop thread did not end in time")
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass
        self._socks = []
        self._thread = None
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    async def _shutdown(self):
        for srv in self._aservers:
            srv.close()
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_TIMEOUT / 2)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    # ---- connections

    async def _handle(self, address, reader, writer):
        task = asyncio.current_task()
        self._tasks.add(task)
        conn = _Conn(self, address, reader, writer)
        with self._lock:
            self._sessions.append(conn.s)
            n = self._open.get(address, 0) + 1
            self._open[address] = n
            self._peak[address] = max(self._peak.get(address, 0), n)
            self._peak_all = max(self._peak_all, sum(self._open.values()))
        try:
            await conn.run()
        except _Closed:
            pass
        except asyncio.CancelledError:
            conn.closed("server")              # stop() while the session was open
        except Exception as e:
            log("%s: session error: %r" % (address, e))
            conn.closed("server")
        finally:
            try:
                writer.close()
                await asyncio.wait_for(writer.wait_closed(), 2.0)
            except BaseException:              # includes a second cancel from stop()
                writer.transport.abort()
            with self._lock:
                conn.s.ended = time.monotonic()
                if conn.s.closed_by is None:
                    conn.s.closed_by = "client"
                self._open[address] -= 1
            self._tasks.discard(task)

    # ---- records

    def sessions(self, address=None):
        """Snapshots of the sessions (of one address, or all), oldest first."""
        with self._lock:
            return [s.copy() for s in self._sessions if address is None or s.address == address]

    def commands(self, address=None):
        """Every line received (by one address, or all), session after session."""
        with self._lock:
            return [c for s in self._sessions if address is None or s.address == address
                    for c in s.commands]

    def count(self, address, prefix):
        """How many received lines start with prefix (case-insensitive)."""
        p = prefix.lower()
        return sum(1 for c in self.commands(address) if c.lower().startswith(p))

    def replies_per_session(self, address, prefix):
        """For each session at address, oldest first: how many reply lines
        start with prefix (e.g. "550": its failed RCPTs)."""
        return [sum(1 for r in s.replies if r.startswith(prefix)) for s in self.sessions(address)]

    def saw(self, address, prefix):
        """True if any line received starts with prefix (case-insensitive)."""
        return self.count(address, prefix) > 0

    def connections(self, address=None):
        """How many connections were accepted."""
        return len(self.sessions(address))

    def active(self, address=None):
        """How many connections are open now."""
        with self._lock:
            if address is not None:
                return self._open.get(address, 0)
            return sum(self._open.values())

    def max_concurrent(self, address=None):
        """The most connections open at once (on one address, or on the farm)."""
        with self._lock:
            return self._peak.get(address, 0) if address is not None else self._peak_all

    def wait_idle(self, address=None, timeout=5.0):
        """Wait until no connection is open; True if that happened in time."""
        deadline = time.monotonic() + timeout
        while self.active(address):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def reset(self):
        """Forget the records (open connections keep being recorded)."""
        with self._lock:
            self._sessions = [s for s in self._sessions if s.ended is None]
            self._peak = dict(self._open)
            self._peak_all = sum(self._open.values())


# ---------------------------------------------------------------- standalone

def main(argv=None):
    ap = argparse.ArgumentParser(description="Farm of fake SMTP servers (loopback only).")
    ap.add_argument("--port", type=int, default=0, help="port shared by every address (0: any)")
    ap.add_argument("--latency", type=float, default=0.0, help="seconds before every reply")
    ap.add_argument("--farm", required=True,
                    help='JSON: {"127.0.0.2": "normal", "127.0.0.3": {"behaviour": "greylist"}}')
    args = ap.parse_args(argv)
    with open(args.farm, encoding="utf-8") as f:
        spec = json.load(f)
    farm = SmtpFarm(port=args.port, latency=args.latency)
    for addr, b in spec.items():
        if isinstance(b, str):
            farm.add(addr, b)
        else:
            opts = dict(b)
            farm.add(addr, opts.pop("behaviour"), **opts)
    port = farm.start()
    # The handlers before the "listening" line: whoever reads it may signal at once.
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *a: done.set())
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    print("listening on port %d" % port, flush=True)
    for addr, (b, _) in farm._servers.items():
        print("%s:%d %s" % ("[%s]" % addr if ":" in addr else addr, port, b), flush=True)
    while not done.wait(1.0):
        pass
    farm.stop()
    print("%d connections, at most %d at once" % (farm.connections(), farm.max_concurrent()),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
