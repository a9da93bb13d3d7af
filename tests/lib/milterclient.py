"""milterclient - the MTA side of the milter protocol (version 6), as Postfix
speaks it, for tests.

Framing: every packet is a 4-byte big-endian length (counting the command
byte), a command byte and data. Constants are those of
/usr/include/libmilter/mfdef.h.

    c = MilterClient("unix:/tmp/x/milter.sock")
    c.optneg()                           # offers v6, all actions, Postfix's mask
    c.connect("client.example", "4", 12345, "192.0.2.1")
    c.helo("client.example")
    r = c.mail(["<a@example.com>"], macros={"i": "ABC123"})
    r.code == "a"
    c.abort(); c.quit()

A step that the milter disabled (SMFIP_NO*) is not sent and returns
SKIPPED; a step whose reply it said it will not send (SMFIP_NR_*) returns
NOREPLY. Everything has a socket timeout.
"""

import socket
import struct

from vmtest import parse_socket_spec

SMFI_PROT_VERSION = 6

# commands
SMFIC_ABORT = b"A"
SMFIC_BODY = b"B"
SMFIC_CONNECT = b"C"
SMFIC_MACRO = b"D"
SMFIC_BODYEOB = b"E"
SMFIC_HELO = b"H"
SMFIC_QUIT_NC = b"K"
SMFIC_HEADER = b"L"
SMFIC_MAIL = b"M"
SMFIC_EOH = b"N"
SMFIC_OPTNEG = b"O"
SMFIC_QUIT = b"Q"
SMFIC_RCPT = b"R"
SMFIC_DATA = b"T"
SMFIC_UNKNOWN = b"U"

# replies
SMFIR_ADDRCPT = "+"
SMFIR_DELRCPT = "-"
SMFIR_ADDRCPT_PAR = "2"
SMFIR_SHUTDOWN = "4"
SMFIR_ACCEPT = "a"
SMFIR_REPLBODY = "b"
SMFIR_CONTINUE = "c"
SMFIR_DISCARD = "d"
SMFIR_CHGFROM = "e"
SMFIR_CONN_FAIL = "f"
SMFIR_ADDHEADER = "h"
SMFIR_INSHEADER = "i"
SMFIR_SETSYMLIST = "l"
SMFIR_CHGHEADER = "m"
SMFIR_PROGRESS = "p"
SMFIR_QUARANTINE = "q"
SMFIR_REJECT = "r"
SMFIR_SKIP = "s"
SMFIR_TEMPFAIL = "t"
SMFIR_REPLYCODE = "y"

FINAL_REPLIES = set("acdrtsyf4")  # end a step (s = skip, only after body)
MODIFICATION_REPLIES = set("+-2behilmq")

# actions (SMFIF_*)
SMFIF_ADDHDRS = 0x001
SMFIF_CHGBODY = 0x002
SMFIF_ADDRCPT = 0x004
SMFIF_DELRCPT = 0x008
SMFIF_CHGHDRS = 0x010
SMFIF_QUARANTINE = 0x020
SMFIF_CHGFROM = 0x040
SMFIF_ADDRCPT_PAR = 0x080
SMFIF_SETSYMLIST = 0x100
SMFI_CURR_ACTS = 0x1FF

# protocol flags (SMFIP_*)
SMFIP_NOCONNECT = 0x00000001
SMFIP_NOHELO = 0x00000002
SMFIP_NOMAIL = 0x00000004
SMFIP_NORCPT = 0x00000008
SMFIP_NOBODY = 0x00000010
SMFIP_NOHDRS = 0x00000020
SMFIP_NOEOH = 0x00000040
SMFIP_NR_HDR = 0x00000080
SMFIP_NOUNKNOWN = 0x00000100
SMFIP_NODATA = 0x00000200
SMFIP_SKIP = 0x00000400
SMFIP_RCPT_REJ = 0x00000800
SMFIP_NR_CONN = 0x00001000
SMFIP_NR_HELO = 0x00002000
SMFIP_NR_MAIL = 0x00004000
SMFIP_NR_RCPT = 0x00008000
SMFIP_NR_DATA = 0x00010000
SMFIP_NR_UNKN = 0x00020000
SMFIP_NR_EOH = 0x00040000
SMFIP_NR_BODY = 0x00080000
SMFIP_HDR_LEADSPC = 0x00100000
SMFI_CURR_PROT = 0x001FFFFF

# Postfix (milter8.c) offers, for protocol version 6, every NO* flag, SKIP,
# RCPT_REJ, every NR_* flag and HDR_LEADSPC: that is SMFI_CURR_PROT.
POSTFIX_V6_PROTO_MASK = (
    SMFIP_NOCONNECT | SMFIP_NOHELO | SMFIP_NOMAIL | SMFIP_NORCPT | SMFIP_NOBODY
    | SMFIP_NOHDRS | SMFIP_NOEOH | SMFIP_NOUNKNOWN | SMFIP_NODATA | SMFIP_SKIP
    | SMFIP_RCPT_REJ | SMFIP_NR_CONN | SMFIP_NR_HELO | SMFIP_NR_MAIL
    | SMFIP_NR_RCPT | SMFIP_NR_DATA | SMFIP_NR_UNKN | SMFIP_NR_HDR
    | SMFIP_NR_EOH | SMFIP_NR_BODY | SMFIP_HDR_LEADSPC)

# macro stages in a SETSYMLIST / OPTNEG reply
SMFIM_CONNECT, SMFIM_HELO, SMFIM_ENVFROM, SMFIM_ENVRCPT, SMFIM_DATA, \
    SMFIM_EOM, SMFIM_EOH = range(7)

MAX_PACKET = 1 << 20  # a reply longer than this is a protocol error


class MilterProtocolError(Exception):
    pass


class Reply:
    """One milter reply: code is the reply letter ('a', 'c', 'r', 't', 'd',
    'y', ...), data the raw bytes after it; for 'y' text is the SMTP reply
    ('553 5.1.7 ...') without the trailing NUL. mods collects modification
    replies seen before the final one (end of message)."""

    NAMES = {"a": "accept", "c": "continue", "r": "reject", "t": "tempfail",
             "d": "discard", "y": "replycode", "s": "skip", "f": "conn_fail",
             "4": "shutdown"}

    def __init__(self, code, data=b"", mods=None):
        self.code = code
        self.data = data
        self.mods = mods or []

    @property
    def name(self):
        return self.NAMES.get(self.code, self.code)

    @property
    def text(self):
        if self.code != SMFIR_REPLYCODE:
            return None
        d = self.data
        if d.endswith(b"\0"):
            d = d[:-1]
        return d.decode("utf-8", errors="replace")

    @property
    def raw_text(self):
        """'y' data as bytes without the trailing NUL (to look for CR/LF)."""
        d = self.data
        return d[:-1] if d.endswith(b"\0") else d

    @property
    def smtp_code(self):
        t = self.text
        return t[:3] if t else None

    def __eq__(self, other):
        if isinstance(other, str):
            return self.code == other
        if isinstance(other, Reply):
            return (self.code, self.data) == (other.code, other.data)
        return NotImplemented

    def __repr__(self):
        if self.code == SMFIR_REPLYCODE:
            return "Reply(y %r)" % (self.text,)
        if self.data:
            return "Reply(%s %r)" % (self.code, self.data)
        return "Reply(%s)" % self.name


class _Marker:
    def __init__(self, name):
        self.name = name
        self.code = name

    def __repr__(self):
        return self.name


SKIPPED = _Marker("SKIPPED")   # the milter asked not to get this step
NOREPLY = _Marker("NOREPLY")   # sent, but the milter said it will not reply


def _z(s):
    if isinstance(s, str):
        s = s.encode("utf-8")
    return s + b"\0"


class MilterClient:
    def __init__(self, spec, timeout=10.0):
        """spec: 'unix:/path', 'inet:PORT@HOST' or 'inet6:PORT@HOST' (loopback)."""
        self.spec = spec
        self.timeout = timeout
        self.sock = None
        self.version = None
        self.actions = None
        self.protocol = 0
        self.symlists = {}
        self.client_addr = None  # CONNECT's address, sent as {client_addr} when asked
        self.transcript = []  # (direction, command, data) for diagnostics
        self._buf = b""

    # ------------------------------------------------------------ transport

    def open(self):
        family, address = parse_socket_spec(self.spec)
        if family != socket.AF_UNIX:
            host = address[0]
            if not (host.startswith("127.") or host == "::1" or host == "localhost"):
                raise ValueError("tests talk to loopback only, not %r" % host)
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(address)
        except OSError:
            s.close()
            raise
        self.sock = s
        return self

    def __enter__(self):
        if self.sock is None:
            self.open()
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def send_packet(self, cmd, data=b""):
        if self.sock is None:
            raise MilterProtocolError("not connected")
        if isinstance(cmd, str):
            cmd = cmd.encode()
        pkt = struct.pack(">I", len(data) + 1) + cmd + data
        self.transcript.append((">", cmd.decode(), data))
        self.sock.sendall(pkt)

    def _recv_exact(self, n):
        while len(self._buf) < n:
            chunk = self.sock.recv(max(4096, n - len(self._buf)))
            if not chunk:
                raise MilterProtocolError(
                    "connection closed by the milter (wanted %d bytes, have %d)"
                    % (n, len(self._buf)))
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def read_packet(self):
        """One raw packet -> (code letter, data)."""
        if self.sock is None:
            raise MilterProtocolError("not connected")
        (length,) = struct.unpack(">I", self._recv_exact(4))
        if length < 1 or length > MAX_PACKET:
            raise MilterProtocolError("bad packet length %d" % length)
        body = self._recv_exact(length)
        code = chr(body[0])
        self.transcript.append(("<", code, body[1:]))
        return code, body[1:]

    def read_reply(self):
        """Next final reply of a step; progress replies are skipped and
        modification replies collected in .mods."""
        mods = []
        for _ in range(10000):  # bounded
            code, data = self.read_packet()
            if code == SMFIR_PROGRESS:
                continue
            if code in MODIFICATION_REPLIES:
                mods.append(Reply(code, data))
                continue
            if code in FINAL_REPLIES:
                return Reply(code, data, mods)
            raise MilterProtocolError("unexpected reply %r %r" % (code, data))
        raise MilterProtocolError("too many progress/modification replies")

    def expect_closed(self, timeout=5.0):
        """True if the milter closes the connection (EOF) within timeout."""
        if self.sock is None:
            return True
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except socket.timeout:
            return False
        except OSError:
            return True
        finally:
            if self.sock is not None:
                self.sock.settimeout(old)

    def transcript_text(self, limit=60):
        lines = []
        for direction, cmd, data in self.transcript[-limit:]:
            lines.append("%s %s %r" % (direction, cmd, data))
        return "\n".join(lines)

    # ------------------------------------------------------------ protocol

    def optneg(self, version=SMFI_PROT_VERSION, actions=SMFI_CURR_ACTS,
               protocol=POSTFIX_V6_PROTO_MASK):
        """Offer version/actions/protocol; return the milter's
        (version, actions, protocol). The answered protocol flags decide which
        steps are sent and which replies are awaited from then on."""
        if self.sock is None:
            self.open()
        self.send_packet(SMFIC_OPTNEG, struct.pack(">III", version, actions, protocol))
        code, data = self.read_packet()
        if code != "O":
            raise MilterProtocolError("OPTNEG answered with %r %r" % (code, data))
        if len(data) < 12:
            raise MilterProtocolError("short OPTNEG reply %r" % (data,))
        self.version, self.actions, self.protocol = struct.unpack(">III", data[:12])
        if self.version < 2 or self.version > version:
            raise MilterProtocolError("milter answered version %d" % self.version)
        # Optional symbol lists: (uint32 stage, "macro names\0")*
        rest = data[12:]
        self.symlists = {}
        while len(rest) >= 4:
            (stage,) = struct.unpack(">I", rest[:4])
            end = rest.find(b"\0", 4)
            if end < 0:
                raise MilterProtocolError("bad symbol list in OPTNEG reply %r" % (data,))
            self.symlists[stage] = rest[4:end].decode(errors="replace")
            rest = rest[end + 1:]
        return self.version, self.actions, self.protocol

    def _requested(self, stage, macros):
        """macros, plus {client_addr} if the milter asked for it at stage
        and the caller did not set it: Postfix sends every macro a
        milter's list names that it knows."""
        names = self.symlists.get(stage, "").split()
        if "{client_addr}" not in names or self.client_addr is None:
            return macros
        items = list(macros.items() if isinstance(macros, dict) else (macros or []))
        if any(k == "{client_addr}" for k, _ in items):
            return macros
        return items + [("{client_addr}", self.client_addr)]

    def _step(self, cmd, data, no_flag, nr_flag, macros=None, macro_cmd=None):
        if self.protocol & no_flag:
            return SKIPPED
        if macros:
            self.macro(macro_cmd or cmd, macros)
        self.send_packet(cmd, data)
        if nr_flag and self.protocol & nr_flag:
            return NOREPLY
        return self.read_reply()

    def macro(self, cmd, macros):
        """Send 'D' + command letter + name\\0value\\0... (no reply)."""
        if isinstance(cmd, str):
            cmd = cmd.encode()
        data = cmd
        items = macros.items() if isinstance(macros, dict) else macros
        for k, v in items:
            data += _z(k) + _z(v)
        self.send_packet(SMFIC_MACRO, data)

    def connect(self, hostname, family="4", port=0, address="", macros=None):
        """CONNECT: family '4', '6', 'L' (unix) or 'U' (unknown). The
        address is also what later steps send as {client_addr} when the
        milter asked for it (as Postfix does, CONNECT skipped or not)."""
        self.client_addr = address if family in ("4", "6") and address else None
        data = _z(hostname) + family.encode()
        if family != "U":
            data += struct.pack(">H", port) + _z(address)
        return self._step(SMFIC_CONNECT, data, SMFIP_NOCONNECT, SMFIP_NR_CONN, macros)

    def helo(self, name, macros=None):
        return self._step(SMFIC_HELO, _z(name), SMFIP_NOHELO, SMFIP_NR_HELO, macros)

    def mail(self, args, macros=None):
        """MAIL: args is the sender ('<a@b>') or a list [sender, esmtp args...]."""
        if isinstance(args, (str, bytes)):
            args = [args]
        data = b"".join(_z(a) for a in args)
        return self._step(SMFIC_MAIL, data, SMFIP_NOMAIL, SMFIP_NR_MAIL,
                          self._requested(SMFIM_ENVFROM, macros))

    def rcpt(self, args, macros=None):
        if isinstance(args, (str, bytes)):
            args = [args]
        data = b"".join(_z(a) for a in args)
        return self._step(SMFIC_RCPT, data, SMFIP_NORCPT, SMFIP_NR_RCPT, macros)

    def data(self, macros=None):
        return self._step(SMFIC_DATA, b"", SMFIP_NODATA, SMFIP_NR_DATA, macros)

    def header(self, name, value):
        if self.protocol & SMFIP_HDR_LEADSPC == 0:
            value = value.lstrip(" ")
        return self._step(SMFIC_HEADER, _z(name) + _z(value), SMFIP_NOHDRS, SMFIP_NR_HDR)

    def eoh(self, macros=None):
        return self._step(SMFIC_EOH, b"", SMFIP_NOEOH, SMFIP_NR_EOH, macros)

    def body(self, chunk):
        if isinstance(chunk, str):
            chunk = chunk.encode()
        return self._step(SMFIC_BODY, chunk, SMFIP_NOBODY, SMFIP_NR_BODY)

    def eom(self, macros=None):
        """End of message: always answered (modifications, then a final reply)."""
        if macros:
            self.macro(SMFIC_BODYEOB, macros)
        self.send_packet(SMFIC_BODYEOB, b"")
        return self.read_reply()

    def unknown(self, line):
        return self._step(SMFIC_UNKNOWN, _z(line), SMFIP_NOUNKNOWN, SMFIP_NR_UNKN)

    def abort(self):
        """ABORT: end the current message (no reply)."""
        self.send_packet(SMFIC_ABORT, b"")

    def quit(self):
        """QUIT: end the session (no reply) and close."""
        try:
            if self.sock is not None:
                self.send_packet(SMFIC_QUIT, b"")
        finally:
            self.close()

    def quit_nc(self):
        """QUIT_NC: end the session, another connection follows (no reply)."""
        self.send_packet(SMFIC_QUIT_NC, b"")

    # ------------------------------------------------------------ helpers

    def session(self, client_addr="192.0.2.1", client_name="client.example",
                helo="client.example", port=40000, connect_macros=None):
        """optneg + connect (+ helo); returns (connect_reply, helo_reply)."""
        self.optneg()
        fam = "6" if ":" in client_addr else "4"
        macros = {"j": "mx.test.example", "{daemon_name}": "smtpd",
                  "{client_addr}": client_addr, "{client_name}": client_name}
        if connect_macros:
            macros.update(connect_macros)
        r1 = self.connect(client_name, fam, port, client_addr, macros=macros)
        r2 = self.helo(helo, macros={}) if helo else None
        return r1, r2


def one_message(socket_spec, sender, rcpt="<bob@local.test>", client_addr="198.51.100.7", qid="Q1",
                timeout=20):
    """One message over a fresh connection: MAIL FROM sender, then one RCPT
    unless MAIL was already answered (accept at MAIL FROM, or a refusal).
    Returns the reply that decided: the RCPT's, else the MAIL's."""
    return one_message_transcript(socket_spec, sender, rcpt, client_addr, qid, timeout)[0]


def one_message_transcript(socket_spec, sender, rcpt="<bob@local.test>", client_addr="198.51.100.7", qid="Q1",
                           timeout=20):
    """one_message, and the session's transcript (for a failed check's diagnostics)."""
    c = MilterClient(socket_spec, timeout=timeout)
    try:
        c.session(client_addr=client_addr)
        m = c.mail(sender, macros={"i": qid})
        r = c.rcpt(rcpt) if m.code == "c" else m
        c.quit()
        return r, c.transcript_text()
    finally:
        c.close()


def verdict_digit(socket_spec, sender, client_addr="198.51.100.7"):
    """one_message as a verdict: (the first digit of the reply that decided,
    "2" for an accept or a continue, "?" for a reply without a code; the
    transcript)."""
    r, transcript = one_message_transcript(socket_spec, sender, client_addr=client_addr)
    return ("2" if r.code in ("c", "a") else (r.smtp_code or "?")[0]), transcript
