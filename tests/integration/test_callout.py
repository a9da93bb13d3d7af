#!/usr/bin/python3
"""test_callout - the real vemilter-check against a fake DNS server and a
farm of fake SMTP servers, one behaviour per scenario.

Every scenario is one sender domain whose MX points at its own 127.0.0.x
farm address, so the farm's record of commands belongs to that scenario
alone. Most addresses run in one vemilter-check invocation (it probes them
concurrently), with catch_all_action = tempfail so that every verdict waits
for the catch-all answer; each is asserted on its outcome class, stage,
reason and flags. Further runs cover what needs its own configuration or
clock: the default policy (catch-all answers come after the verdict, as
facts), a fallback probe sender, greylisting over time, and servers that
hang at QUIT or at the catch-all RCPT (time to the verdict measured against
a 10 s command_timeout). At the end the farm's records are checked: DATA
never sent, QUIT sent wherever the connection was still open.

TAP on stdout; loopback only; every wait bounded. VEMILTER_VALGRIND=1 also
runs vemilter-check under valgrind on a few scenarios.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "fakes"))

import vmtest  # noqa: E402
from vmtest import TempDir  # noqa: E402
from fakedns import FakeDNS  # noqa: E402
from smtpfarm import SmtpFarm  # noqa: E402
import checkrun  # noqa: E402
from checkrun import transcript  # noqa: E402

CHECK = os.path.join(vmtest.builddir(), "vemilter-check")
CALLOUTRUN = os.path.join(vmtest.builddir(), "tests", "tools", "calloutrun")

# scenario name -> (domain, farm address or None, behaviour, options)
# Addresses never added to the farm refuse connections.
FARM = {
    "127.0.0.11": ("normal", {"users": ["alice"]}),
    "127.0.0.12": ("normal", {"users": ["alice"]}),
    "127.0.0.13": ("normal", {"users": ["carol"]}),
    "127.0.0.15": ("normal", {"users": ["dave"]}),
    "127.0.0.18": ("greylist", {}),
    "127.0.0.19": ("banner_421", {}),
    "127.0.0.20": ("banner_554", {}),
    "127.0.0.21": ("mail_refused", {}),
    "127.0.0.22": ("catchall", {}),
    "127.0.0.23": ("catchall_452", {"users": ["erin"]}),
    "127.0.0.24": ("ehlo_refused", {"users": ["frank"]}),
    "127.0.0.25": ("starttls", {"users": ["gina"]}),
    "127.0.0.26": ("tls_broken", {"users": ["hank"]}),
    "127.0.0.27": ("slow_banner", {"delay": 6}),
    "127.0.0.28": ("drop_after_mail", {}),
    "127.0.0.29": ("multiline", {"users": ["ivan"]}),
    "127.0.0.30": ("endless_line", {}),
    "127.0.0.31": ("normal", {"users": ["jo"]}),
    "127.0.0.32": ("normal", {"smtputf8": True}),
    "127.0.0.33": ("early_reply", {"users": ["alice"]}),                  # when="banner"
    "127.0.0.34": ("early_reply", {"when": "ehlo", "users": ["alice"]}),
    "127.0.0.35": ("early_reply", {"when": "mail", "users": ["alice"]}),
    "127.0.0.36": ("hang_quit", {"users": ["alice"]}),
    "127.0.0.37": ("hang_catchall", {"users": ["alice"]}),
    "127.0.0.38": ("greylist_for", {"seconds": 1.5, "users": ["alice"]}),
    "127.0.0.39": ("null_sender_refused", {"users": ["alice"]}),
    "127.0.0.40": ("multiline_mismatch", {}),
    "127.0.0.41": ("normal", {"hostname": "probe.vemilter.test", "users": ["alice"]}),
    "127.0.0.42": ("null_sender_refused", {"users": ["alice"], "replies": {"RSET": "502 5.5.2 no RSET"}}),
    "127.0.0.43": ("normal", {"users": ["alice"],
                              "replies": {"EHLO": "250-Probe.Vemilter.Test. hello\n250 8BITMIME"}}),
    "127.0.0.44": ("early_reply", {"users": ["alice"]}),                  # rank1.test
    "127.0.0.45": ("early_reply", {"users": ["alice"]}),                  # rank2.test
    "127.0.0.46": ("catchall", {}),                                       # early path run
    "127.0.0.47": ("normal", {"users": ["alice"]}),                       # early path run
    "127.0.0.48": ("hang_catchall", {"users": ["alice"]}),                # interrupted runs
    "127.0.0.49": ("hang_quit", {"users": ["alice"]}),                    # interrupted runs
    # one reply behind for the whole session (an unsolicited line at EHLO, every reply 0.15 s late)
    "127.0.0.50": ("lagging_reply", {"users": ["alice"]}),
    "127.0.0.51": ("lagging_reply", {"users": ["alice"], "refuse_null": True}),
    # ... and its refused MAIL worded like an address rejection: the shifted 5xx looks like an answer
    "127.0.0.52": ("lagging_reply", {"users": ["alice"], "refuse_null": True,
                                     "replies": {"MAIL": "550 5.1.1 mailbox unavailable"}}),
    "127.0.0.53": ("null_sender_refused_at_rcpt", {"users": ["alice"]}),
    "127.0.0.54": ("normal", {"users": ["alice"]}),                       # pipelining run
}
# Interrupted runs leave a connection whose random RCPT hangs without QUIT.
INTERRUPTED = {"127.0.0.48"}
HELO = "probe.vemilter.test"
FALLBACK = "verify@vemilter.test"


def mx(host, pref=10):
    return [pref, host]


ZONE = {
    "valid.test": {"MX": [mx("mx.valid.test")]},
    "mx.valid.test": {"A": ["127.0.0.11"]},
    "unknown.test": {"MX": [mx("mx.unknown.test")]},
    "mx.unknown.test": {"A": ["127.0.0.12"]},
    "implicit.test": {"A": ["127.0.0.13"]},
    "nullmx.test": {"MX": [[0, "."]]},
    "unres.test": {"MX": [mx("mx.gone.test")]},
    "servfail.test": {"rcode": "SERVFAIL"},
    "dnstimeout.test": {"timeout": True},
    "two.test": {"MX": [mx("mx1.two.test", 10), mx("mx2.two.test", 20)]},
    "mx1.two.test": {"A": ["127.0.0.14"]},
    "mx2.two.test": {"A": ["127.0.0.15"]},
    "down.test": {"MX": [mx("mx1.down.test", 10), mx("mx2.down.test", 20)]},
    "mx1.down.test": {"A": ["127.0.0.16"]},
    "mx2.down.test": {"A": ["127.0.0.17"]},
    "grey.test": {"MX": [mx("mx.grey.test")]},
    "mx.grey.test": {"A": ["127.0.0.18"]},
    "b421.test": {"MX": [mx("mx.b421.test")]},
    "mx.b421.test": {"A": ["127.0.0.19"]},
    "b554.test": {"MX": [mx("mx.b554.test")]},
    "mx.b554.test": {"A": ["127.0.0.20"]},
    "mailref.test": {"MX": [mx("mx.mailref.test")]},
    "mx.mailref.test": {"A": ["127.0.0.21"]},
    "catchall.test": {"MX": [mx("mx.catchall.test")]},
    "mx.catchall.test": {"A": ["127.0.0.22"]},
    "c452.test": {"MX": [mx("mx.c452.test")]},
    "mx.c452.test": {"A": ["127.0.0.23"]},
    "ehlo.test": {"MX": [mx("mx.ehlo.test")]},
    "mx.ehlo.test": {"A": ["127.0.0.24"]},
    "tls.test": {"MX": [mx("mx.tls.test")]},
    "mx.tls.test": {"A": ["127.0.0.25"]},
    "tlsbad.test": {"MX": [mx("mx.tlsbad.test")]},
    "mx.tlsbad.test": {"A": ["127.0.0.26"]},
    "slow.test": {"MX": [mx("mx.slow.test")]},
    "mx.slow.test": {"A": ["127.0.0.27"]},
    "drop.test": {"MX": [mx("mx.drop.test")]},
    "mx.drop.test": {"A": ["127.0.0.28"]},
    "multi.test": {"MX": [mx("mx.multi.test")]},
    "mx.multi.test": {"A": ["127.0.0.29"]},
    "endless.test": {"MX": [mx("mx.endless.test")]},
    "mx.endless.test": {"A": ["127.0.0.30"]},
    "guard.test": {"MX": [mx("mx1.guard.test"), mx("mx2.guard.test", 20)]},
    "mx1.guard.test": {"A": ["10.1.2.3"]},
    "mx2.guard.test": {"A": ["192.168.7.7"], "AAAA": ["fd00::25"]},
    # "MX points at localhost" and other addresses no mail server has: no_domain
    "bogus.test": {"MX": [mx("mx1.bogus.test"), mx("mx2.bogus.test", 20)]},
    "mx1.bogus.test": {"A": ["0.0.0.0", "192.0.2.25"]},
    "mx2.bogus.test": {"AAAA": ["ff02::1", "::ffff:0.0.0.0"]},
    "utf8.test": {"MX": [mx("mx.utf8.test")]},
    "mx.utf8.test": {"A": ["127.0.0.31"]},
    "utf8ok.test": {"MX": [mx("mx.utf8ok.test")]},
    "mx.utf8ok.test": {"A": ["127.0.0.32"]},
    "erb.test": {"MX": [mx("mx.erb.test")]},
    "mx.erb.test": {"A": ["127.0.0.33"]},
    "ere.test": {"MX": [mx("mx.ere.test")]},
    "mx.ere.test": {"A": ["127.0.0.34"]},
    "erm.test": {"MX": [mx("mx.erm.test")]},
    "mx.erm.test": {"A": ["127.0.0.35"]},
    "hangquit.test": {"MX": [mx("mx.hangquit.test")]},
    "mx.hangquit.test": {"A": ["127.0.0.36"]},
    "hangca.test": {"MX": [mx("mx.hangca.test")]},
    "hangcawait.test": {"MX": [mx("mx.hangca.test")]},
    "mx.hangca.test": {"A": ["127.0.0.37"]},
    "greyfor.test": {"MX": [mx("mx.greyfor.test")]},
    "mx.greyfor.test": {"A": ["127.0.0.38"]},
    "nullref.test": {"MX": [mx("mx.nullref.test")]},
    "nullref2.test": {"MX": [mx("mx.nullref.test")]},
    "mx.nullref.test": {"A": ["127.0.0.39"]},
    "mism.test": {"MX": [mx("mx.mism.test")]},
    "mx.mism.test": {"A": ["127.0.0.40"]},
    "self.test": {"MX": [mx("mx.self.test")]},
    "mx.self.test": {"A": ["127.0.0.41"]},
    "rsetno.test": {"MX": [mx("mx.rsetno.test")]},
    "mx.rsetno.test": {"A": ["127.0.0.42"]},
    "selfehlo.test": {"MX": [mx("mx.selfehlo.test")]},
    "mx.selfehlo.test": {"A": ["127.0.0.43"]},
    "local.test": {"MX": [mx("mx.local.test")]},
    "mx.local.test": {"A": ["127.0.0.1"]},
    "local6.test": {"MX": [mx("mx.local6.test")]},
    "mx.local6.test": {"AAAA": ["::1"]},
    "localsecond.test": {"MX": [mx("mx1.localsecond.test", 10), mx("mx2.localsecond.test", 20)]},
    "mx1.localsecond.test": {"A": ["127.0.0.1"]},
    "mx2.localsecond.test": {"A": ["127.0.0.47"]},
    # the most telling failure: a desync outranks a refused connection, in either order
    "rank1.test": {"MX": [mx("mx1.rank1.test", 10), mx("mx2.rank1.test", 20)]},
    "mx1.rank1.test": {"A": ["127.0.0.44"]},
    "mx2.rank1.test": {"A": ["127.0.0.201"]},
    "rank2.test": {"MX": [mx("mx1.rank2.test", 10), mx("mx2.rank2.test", 20)]},
    "mx1.rank2.test": {"A": ["127.0.0.202"]},
    "mx2.rank2.test": {"A": ["127.0.0.45"]},
    "int-ca.test": {"MX": [mx("mx.int-ca.test")]},
    "mx.int-ca.test": {"A": ["127.0.0.48"]},
    "int-quit.test": {"MX": [mx("mx.int-quit.test")]},
    "mx.int-quit.test": {"A": ["127.0.0.49"]},
    "early-catchall.test": {"MX": [mx("mx.early-catchall.test")]},
    "mx.early-catchall.test": {"A": ["127.0.0.46"]},
    "early-normal.test": {"MX": [mx("mx.early-normal.test")]},
    "mx.early-normal.test": {"A": ["127.0.0.47"]},
    "lag.test": {"MX": [mx("mx.lag.test")]},
    "mx.lag.test": {"A": ["127.0.0.50"]},
    "lagnull.test": {"MX": [mx("mx.lagnull.test")]},
    "mx.lagnull.test": {"A": ["127.0.0.51"]},
    "lagnull2.test": {"MX": [mx("mx.lagnull2.test")]},
    "mx.lagnull2.test": {"A": ["127.0.0.52"]},
    "nullrcpt.test": {"MX": [mx("mx.nullrcpt.test")]},
    "mx.nullrcpt.test": {"A": ["127.0.0.53"]},
    "pipe.test": {"MX": [mx("mx.pipe.test")]},
    "mx.pipe.test": {"A": ["127.0.0.54"]},
}


def private_local_address():
    """An address of this host in a range the guard refuses but that may be
    real on a split horizon (RFC 1918, ULA), or None. Only looked at, never
    connected to."""
    import ipaddress
    try:
        out = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for m in re.finditer(r"\binet6? ([0-9a-fA-F:.]+)/", out):
        ip = ipaddress.ip_address(m.group(1))
        if ip.is_private and not (ip.is_loopback or ip.is_link_local or ip.is_unspecified):
            if ip.version == 4 and not any(ip in ipaddress.ip_network(n)
                                           for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")):
                continue
            if ip.version == 6 and ip not in ipaddress.ip_network("fc00::/7"):
                continue
            return ip
    return None


SPLIT = private_local_address()
if SPLIT is not None:  # our own MX resolves to our RFC 1918 / ULA address: a loop, not no_domain
    ZONE["split.test"] = {"MX": [mx("mx.split.test")]}
    ZONE["mx.split.test"] = {("A" if SPLIT.version == 4 else "AAAA"): [str(SPLIT)]}

NULLREF_REASON = (r"^(refused at mail|remembered: mx\.nullref\.test \[127\.0\.0\.39\] "
                  r"refused us at mail 0 minutes ago)$")
# address -> (outcome, stage, extra checks on the parsed result line, farm address)
CASES = [
    ("alice@valid.test", "valid", "rcpt", {"reply": r"^250", "flags": "not_catchall"}, "127.0.0.11"),
    ("bob@unknown.test", "invalid", "rcpt", {"reply": r"^550 5\.1\.1"}, "127.0.0.12"),
    ("x@nope.test", "no_domain", "dns", {"reason": "NXDOMAIN"}, None),
    ("carol@implicit.test", "valid", "rcpt", {"mx": "implicit.test", "flags": "not_catchall"}, "127.0.0.13"),
    ("x@nullmx.test", "no_domain", "dns", {"reason": "null MX"}, None),
    ("x@unres.test", "no_domain", "dns", {}, None),
    ("x@servfail.test", "tempfail", "dns", {}, None),
    ("x@dnstimeout.test", "tempfail", "dns", {}, None),
    ("dave@two.test", "valid", "rcpt", {"mx": "mx2.two.test", "flags": "not_catchall"}, "127.0.0.15"),
    ("x@down.test", "tempfail", "connect", {}, None),
    ("x@grey.test", "tempfail", "rcpt", {"reply": r"^450", "flags": "greylist", "reason": "greylisted"},
     "127.0.0.18"),
    ("x@b421.test", "tempfail", "banner", {"reply": r"^421"}, "127.0.0.19"),
    ("x@b554.test", "blocked", "banner", {"reply": r"^554"}, "127.0.0.20"),
    ("x@mailref.test", "blocked", "mail", {"reply": r"^550 5\.7\.1"}, "127.0.0.21"),
    ("x@catchall.test", "catch_all", "catchall", {}, "127.0.0.22"),
    ("erin@c452.test", "valid", "rcpt", {"reason": "catch-all unknown"}, "127.0.0.23"),
    ("frank@ehlo.test", "valid", "rcpt", {"flags": "not_catchall"}, "127.0.0.24"),
    ("gina@tls.test", "valid", "rcpt", {"flags": "not_catchall"}, "127.0.0.25"),
    ("hank@tlsbad.test", "valid", "rcpt", {"flags": "not_catchall"}, "127.0.0.26"),
    ("x@slow.test", "tempfail", "banner", {}, "127.0.0.27"),
    ("x@drop.test", "tempfail", "rcpt", {}, "127.0.0.28"),
    ("ivan@multi.test", "valid", "rcpt", {"flags": "not_catchall"}, "127.0.0.29"),
    ("nobody@multi.test", "invalid", "rcpt", {"reply": r"^550 5\.1\.1"}, "127.0.0.29"),
    ("x@endless.test", "tempfail", "ehlo", {"reason": "line too long", "flags": "protocol"}, "127.0.0.30"),
    # Private addresses are refused by our policy, not by DNS: they may be real
    # on a split horizon, so the answer is unverifiable, never no_domain (a 550).
    ("x@guard.test", "unverifiable", "guard", {"reason": r"network we do not probe \((private|unique local)"},
     None),
    ("x@bogus.test", "no_domain", "guard", {"reason": "forbidden network"}, None),
    ("j\u00f6rg@utf8.test", "unverifiable", "ehlo", {}, "127.0.0.31"),
    # The farm records lines as latin-1, so it cannot know a UTF-8 user: an
    # unknown-user reply still proves the question was asked, with SMTPUTF8.
    ("k\u00efm@utf8ok.test", "invalid", "rcpt", {"reply": r"^550"}, "127.0.0.32"),
    ("alice@[127.0.0.11]", "valid", "rcpt", {"flags": "not_catchall"}, "127.0.0.11"),
    ("bob@unknown.test", "invalid", "rcpt", {"fact": "not_catch_all"}, "127.0.0.12"),
    # desync: never an answer, whatever the user (unknown users would pass otherwise)
    ("alice@erb.test", "tempfail", "ehlo", {"reason": r"^reply before command \(before EHLO\)$",
                                            "flags": "protocol"}, "127.0.0.33"),
    ("nobody@erb.test", "tempfail", "ehlo", {"reason": r"^reply before command \(before EHLO\)$",
                                             "flags": "protocol"}, "127.0.0.33"),
    ("nobody@ere.test", "tempfail", "mail", {"reason": r"^reply before command \(before MAIL\)$",
                                             "flags": "protocol"}, "127.0.0.34"),
    ("nobody@erm.test", "tempfail", "rcpt", {"reason": r"^reply before command \(before RCPT\)$",
                                             "flags": "protocol"}, "127.0.0.35"),
    ("alice@erm.test", "tempfail", "rcpt", {"reason": r"^reply before command \(before RCPT\)$",
                                            "flags": "protocol"}, "127.0.0.35"),
    ("alice@mism.test", "tempfail", "rcpt", {"reason": "changed from 250 to 550", "flags": "protocol"},
     "127.0.0.40"),
    ("x@rank1.test", "tempfail", "ehlo", {"reason": "reply before command", "flags": "protocol",
                                          "mx": "mx1.rank1.test"}, "127.0.0.44"),
    ("x@rank2.test", "tempfail", "ehlo", {"reason": "reply before command", "flags": "protocol",
                                          "mx": "mx2.rank2.test"}, "127.0.0.45"),
    # without a fallback sender, <> refused is blocked, known user or not; the
    # host refused us, so the second sender gets the remembered refusal (the
    # circuit breaker: one session; whichever probe came first asked)
    ("alice@nullref.test", "blocked", "mail", {"reply": r"^550 5\.7\.1", "reason": NULLREF_REASON},
     "127.0.0.39"),
    ("nobody@nullref.test", "blocked", "mail", {"reply": r"^550 5\.7\.1", "reason": NULLREF_REASON},
     "127.0.0.39"),
    # this host: by name after the banner or EHLO, by address without a connection
    ("alice@self.test", "tempfail", "banner", {"reason": r"^mx is this host$", "flags": "loop",
                                               "reply": r"^220 probe\.vemilter\.test "}, "127.0.0.41"),
    ("alice@selfehlo.test", "tempfail", "ehlo", {"reason": r"^mx is this host$", "flags": "loop"},
     "127.0.0.43"),
    ("x@local.test", "tempfail", "connect", {"reason": r"^mx is this host$", "flags": "loop",
                                             "addr": r"^127\.0\.0\.1$"}, None),
    ("x@local6.test", "tempfail", "connect", {"reason": r"^mx is this host$", "flags": "loop",
                                              "addr": r"^::1$"}, None),
    # the walk stops at ourselves (as Postfix does): the less preferred MX is not asked
    ("alice@localsecond.test", "tempfail", "connect", {"reason": r"^mx is this host$", "flags": "loop"},
     None),
]
if SPLIT is not None:  # checked before the guard, which refuses the range
    CASES.append(("x@split.test", "tempfail", "connect", {"reason": r"^mx is this host$", "flags": "loop",
                                                          "addr": "^%s$" % re.escape(str(SPLIT))}, None))

BASE = [
    "dns_timeout = 500ms",
    "helo_name = %s" % HELO,
    "probe_allow_networks = 127.0.0.0/8, ::1/128",
    "connect_timeout = 2s",
    "banner_timeout = 2s",
    "command_timeout = 3s",
    "probe_timeout = 15s",
]


def write_conf(tmp, name, dns_port, farm_port, *extra):
    """A configuration for vemilter-check (checkrun.write_conf: extra lines
    replace the base's line for the same key)."""
    base = ["dns_servers = 127.0.0.1:%d" % dns_port, "probe_port = %d" % farm_port] + BASE
    return checkrun.write_conf(tmp, name, base, *extra)


def run_check(conf, addresses, timeout=60, verbose=True):
    return checkrun.run_check(CHECK, conf, addresses, verbose=verbose, timeout=timeout)


def verdict_ms(out, address):
    """The "* verdict after N ms" of address in a -v transcript, or None."""
    m = re.search(r"^%s: \* verdict after (\d+) ms" % re.escape(address), out, re.M)
    return int(m.group(1)) if m else None


def check_case(tap, results, out, address, outcome, stage, extra, label=""):
    """One result line: outcome, stage, regexes in extra; flags exactly
    extra["flags"] (none if not given); fact only if given."""
    r = results.get(address)
    diag = "result: %r\ntranscript:\n%s" % (r, transcript(out, address))
    ok = r is not None and r[0] == outcome and r[1].get("stage") == stage
    for key, pattern in extra.items():
        if key in ("flags", "fact"):
            continue
        ok = ok and r is not None and re.search(pattern, r[1].get(key, "")) is not None
    want_flags = extra.get("flags")
    ok = ok and r is not None and r[1].get("flags") == want_flags
    if "fact" in extra:
        ok = ok and r is not None and r[1].get("fact") == extra["fact"]
    tap.check("%s%s -> %s at %s%s%s" % (label, address, outcome, stage,
                                         " flags=%s" % want_flags if want_flags else "",
                                         " fact=%s" % extra["fact"] if "fact" in extra else ""), ok, diag)


def unrandom(commands):
    """commands (or transcript lines), the random address's local part replaced by random"""
    return [re.sub(r"^(> )?RCPT TO:<[a-z0-9]{16}@", r"\1RCPT TO:<random@", c) for c in commands]


def dialogue(farm, address):
    return [s.commands for s in farm.sessions(address)]


def main_run(tap, tmp, dns_port, farm, farm_port):
    """Most scenarios at once; every verdict waits for the catch-all answer."""
    conf = write_conf(tmp, "check.conf", dns_port, farm_port, "catch_all_action = tempfail")
    if SPLIT is None:
        tap.skip("split horizon: our own MX on a private address of this host is a loop",
                 "this host has no RFC 1918 / ULA address (ip -o addr)")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:  # 127.0.0.1 on the farm's port: a probe through ourselves would land here
        listener.bind(("127.0.0.1", farm_port))
        listener.listen(16)
        listener.setblocking(False)
    except OSError as e:
        listener.close()
        listener = None
        tap.diag("cannot listen on 127.0.0.1:%d (%s): the no-connection check relies on the transcript"
                 % (farm_port, e))
    try:
        addresses = [c[0] for c in CASES]
        rc, out, err, results, secs, _ = run_check(conf, addresses)
    finally:
        accepted = 0
        if listener is not None:
            while True:
                try:
                    c, _ = listener.accept()
                    c.close()
                    accepted += 1
                except (BlockingIOError, OSError):
                    break
            listener.close()
    tap.check("vemilter-check ran (exit status 3: the worst outcome is a definite negative)", rc == 3,
              "exit %r\nstderr:\n%s" % (rc, err))
    for address, outcome, stage, extra, farm_addr in CASES:
        check_case(tap, results, out, address, outcome, stage, extra)

    valid = next((s.commands for s in farm.sessions("127.0.0.11")
                  if "RCPT TO:<alice@valid.test>" in s.commands), [])
    tap.check("valid: exact dialogue EHLO, MAIL FROM:<>, RCPT, random RCPT, QUIT",
              len(valid) >= 5 and valid[0] == "EHLO " + HELO and valid[1] == "MAIL FROM:<>"
              and valid[2] == "RCPT TO:<alice@valid.test>"
              and re.match(r"^RCPT TO:<[a-z0-9]{16}@valid\.test>$", valid[3]) is not None
              and valid[4] == "QUIT", "%r" % valid)
    invalid = next((s.commands for s in farm.sessions("127.0.0.12")
                    if "RCPT TO:<bob@unknown.test>" in s.commands), [])
    tap.check("invalid: the random RCPT still asked after the 550 (a domain fact), then QUIT",
              len(invalid) == 5 and re.match(r"^RCPT TO:<[a-z0-9]{16}@unknown\.test>$", invalid[3]) is not None
              and invalid[4] == "QUIT", "%r" % invalid)
    ehlo = farm.commands("127.0.0.24")
    tap.check("EHLO refused: HELO used instead", "HELO " + HELO in ehlo, "%r" % ehlo)
    tls = farm.sessions("127.0.0.25")
    tap.check("STARTTLS offered: the dialogue ran under TLS", any(s.tls for s in tls),
              "%r" % [(s.commands, s.tls) for s in tls])
    bad = farm.sessions("127.0.0.26")
    tap.check("TLS failure: one retry without STARTTLS", len(bad) == 2
              and "STARTTLS" in bad[0].commands and "STARTTLS" not in bad[1].commands,
              "%r" % [s.commands for s in bad])
    utf8 = farm.commands("127.0.0.31")
    tap.check("SMTPUTF8 not offered: RCPT never sent", not any(c.startswith("RCPT") for c in utf8),
              "%r" % utf8)
    utf8ok = farm.commands("127.0.0.32")
    tap.check("SMTPUTF8 offered: MAIL FROM carries SMTPUTF8",
              any(c.startswith("MAIL FROM:<>") and "SMTPUTF8" in c for c in utf8ok), "%r" % utf8ok)
    tap.check("guarded network: no connection attempted", "10.1.2.3" not in out or
              "not connecting" in transcript(out, "x@guard.test"), transcript(out, "x@guard.test"))
    # desync: what each early_reply server saw
    tap.equal("early reply after the banner: two connections (two senders), only QUIT on each",
              dialogue(farm, "127.0.0.33"), [["QUIT"], ["QUIT"]])
    tap.equal("early reply after EHLO: one connection, EHLO then QUIT", dialogue(farm, "127.0.0.34"),
              [["EHLO " + HELO, "QUIT"]])
    tap.equal("early reply after MAIL: two connections, RCPT never sent",
              dialogue(farm, "127.0.0.35"), [["EHLO " + HELO, "MAIL FROM:<>", "QUIT"]] * 2)
    tap.check("early reply: the unsolicited line is shown, then the protocol error",
              "nobody@erm.test: < 250 2.0.0 unsolicited reply, before its command" in out
              and "nobody@erm.test: * protocol error: reply before command (before RCPT)" in out,
              transcript(out, "nobody@erm.test"))
    # (the farm offers PIPELINING: RCPT, the random RCPT and QUIT go out as one group)
    tap.equal("codes disagreeing in one reply: RCPT asked once, in one group with the random RCPT and QUIT",
              [unrandom(c) for c in dialogue(farm, "127.0.0.40")],
              [["EHLO " + HELO, "MAIL FROM:<>", "RCPT TO:<alice@mism.test>", "RCPT TO:<random@mism.test>",
                "QUIT"]])
    tap.equal("null sender refused, no fallback: one session (the breaker remembers), MAIL once, then QUIT",
              dialogue(farm, "127.0.0.39"), [["EHLO " + HELO, "MAIL FROM:<>", "QUIT"]])
    reasons = sorted(results.get(a, (None, {}))[1].get("reason", "")[:10]
                     for a in ("alice@nullref.test", "nobody@nullref.test"))
    tap.equal("... one sender asked, the other answered from the remembered refusal", reasons,
              ["refused at", "remembered"])
    # this host
    tap.equal("greeting names our helo_name: QUIT right after the banner", dialogue(farm, "127.0.0.41"),
              [["QUIT"]])
    tap.equal("EHLO reply names our helo_name: QUIT right after EHLO", dialogue(farm, "127.0.0.43"),
              [["EHLO " + HELO, "QUIT"]])
    local = transcript(out, "x@local.test") + "\n" + transcript(out, "x@local6.test")
    tap.check("MX 127.0.0.1 / ::1: no connection attempted (%s)" % (
              "nothing reached 127.0.0.1:%d" % farm_port if listener is not None else "transcript"),
              accepted == 0 and "* connecting" not in local and "is an address of this host" in local,
              "accepted %d\n%s" % (accepted, local))
    tap.equal("MX list stops at ourselves: the less preferred MX is never asked",
              farm.connections("127.0.0.47"), 0)
    # rank: desync outranks a refused connection in either order
    tap.check("rank: both MX addresses tried for rank1 and rank2",
              "* trying mx2.rank1.test" in transcript(out, "x@rank1.test")
              and "* trying mx1.rank2.test" in transcript(out, "x@rank2.test"),
              transcript(out, "x@rank1.test") + transcript(out, "x@rank2.test"))
    tap.check("-v shows DNS answers and the dialogue",
              re.search(r"^alice@valid\.test: .*MX", out, re.M) is not None
              and "alice@valid.test: > RCPT TO:<alice@valid.test>" in out
              and re.search(r"^alice@valid\.test: < 250", out, re.M) is not None
              and verdict_ms(out, "alice@valid.test") is not None,
              transcript(out, "alice@valid.test"))
    return conf


def deadline_run(tap, tmp, conf):
    """One overall deadline bounds a whole verification, whatever the
    per-phase timeouts allow."""
    with open(conf) as f:
        text = f.read()
    slow_conf = tmp.write("deadline.conf", text.replace("banner_timeout = 2s", "banner_timeout = 30s")
                          .replace("probe_timeout = 15s", "probe_timeout = 1s"))
    t0 = time.monotonic()
    d = subprocess.run([CHECK, "-c", slow_conf, "x@slow.test"], capture_output=True, timeout=30)
    took = time.monotonic() - t0
    line = d.stdout.decode("utf-8", "replace").strip()
    tap.check("probe_timeout 1s ends a 6 s banner wait early: tempfail within 3 s",
              line.startswith("x@slow.test tempfail ") and took < 3 and d.returncode == 2,
              "%.2f s, exit %r: %s" % (took, d.returncode, line))


def early_run(tap, tmp, dns_port, farm, farm_port):
    """The default policy accepts valid and catch_all alike: the verdict comes
    right after the real RCPT, the random address's answer as a fact."""
    conf = write_conf(tmp, "early.conf", dns_port, farm_port)
    before = {a: farm.connections(a) for a in ("127.0.0.46", "127.0.0.47")}
    addresses = ["x@early-catchall.test", "alice@early-normal.test", "nobody@early-normal.test"]
    rc, out, err, results, secs, _ = run_check(conf, addresses)
    tap.check("default policy: exit status 3 (an invalid; the catch-all fact counts as catch_all)", rc == 3,
              "exit %r\n%s" % (rc, err))
    check_case(tap, results, out, "x@early-catchall.test", "valid", "rcpt",
               {"reason": "catch-all unknown", "fact": "catch_all"}, "default policy: ")
    check_case(tap, results, out, "alice@early-normal.test", "valid", "rcpt",
               {"reason": "catch-all unknown", "fact": "not_catch_all"}, "default policy: ")
    check_case(tap, results, out, "nobody@early-normal.test", "invalid", "rcpt",
               {"reply": r"^550 5\.1\.1", "fact": "not_catch_all"}, "default policy: ")
    tap.check("default policy: the facts come after the verdicts (transcript order)",
              out.find("x@early-catchall.test: * verdict after") < out.find("x@early-catchall.test: late: "),
              transcript(out, "x@early-catchall.test"))
    tap.equal("default policy: one connection per address", [farm.connections(a) - before[a] for a in before],
              [1, 2])


def fallback_run(tap, tmp, dns_port, farm, farm_port):
    """probe_sender_fallback: <> refused, the same server asked again."""
    conf = write_conf(tmp, "fallback.conf", dns_port, farm_port, "catch_all_action = tempfail",
                      "probe_sender_fallback = " + FALLBACK)
    before = {a: len(farm.sessions(a)) for a in ("127.0.0.39", "127.0.0.42")}
    addresses = ["alice@nullref.test", "nobody@nullref2.test", "alice@rsetno.test"]
    rc, out, err, results, secs, _ = run_check(conf, addresses)
    tap.check("fallback: exit status 3", rc == 3, "exit %r\n%s" % (rc, err))
    check_case(tap, results, out, "alice@nullref.test", "valid", "rcpt",
               {"flags": "not_catchall,fallback_sender"}, "fallback: ")
    check_case(tap, results, out, "nobody@nullref2.test", "invalid", "rcpt",
               {"reply": r"^550 5\.1\.1", "flags": "fallback_sender"}, "fallback: ")
    check_case(tap, results, out, "alice@rsetno.test", "valid", "rcpt",
               {"flags": "not_catchall,fallback_sender"}, "fallback, RSET refused: ")
    sessions = [s.commands for s in farm.sessions("127.0.0.39")[before["127.0.0.39"]:]]
    want = ["EHLO " + HELO, "MAIL FROM:<>", "RSET", "MAIL FROM:<%s>" % FALLBACK]
    tap.check("fallback: one connection per sender: <> refused, RSET, the fallback, RCPT, random RCPT, QUIT",
              len(sessions) == 2 and all(c[:4] == want and c[-1] == "QUIT" and len(c) == 7 for c in sessions),
              "%r" % sessions)
    sessions = [s.commands for s in farm.sessions("127.0.0.42")[before["127.0.0.42"]:]]
    tap.check("fallback, RSET refused: a second connection starts with the fallback sender",
              len(sessions) == 2 and sessions[0] == ["EHLO " + HELO, "MAIL FROM:<>", "RSET", "QUIT"]
              and sessions[1][:3] == ["EHLO " + HELO, "MAIL FROM:<%s>" % FALLBACK, "RCPT TO:<alice@rsetno.test>"]
              and sessions[1][-1] == "QUIT", "%r" % sessions)


def greylist_run(tap, tmp, dns_port, farm, farm_port):
    """A server that greylists for 1.5 s: tempfail flagged greylist, then the
    answer once the time is up."""
    conf = write_conf(tmp, "greylist.conf", dns_port, farm_port, "catch_all_action = tempfail")
    rc, out, err, results, secs, _ = run_check(conf, ["alice@greyfor.test", "nobody@greyfor.test"])
    # counted from the end of the first run, not its start: the farm's
    # clock starts at the RCPT, which a slow start (the sanitizer build)
    # can put half a second into the run
    t0 = time.monotonic()
    check_case(tap, results, out, "alice@greyfor.test", "tempfail", "rcpt",
               {"reply": r"^450 4\.7\.1", "reason": "greylisted at RCPT", "flags": "greylist"},
               "greylist, first try: ")
    check_case(tap, results, out, "nobody@greyfor.test", "tempfail", "rcpt",
               {"reason": "greylisted at RCPT", "flags": "greylist"}, "greylist, first try: ")
    time.sleep(max(0.0, 1.6 - (time.monotonic() - t0)))
    rc, out, err, results, secs, _ = run_check(conf, ["alice@greyfor.test", "nobody@greyfor.test"])
    # the random address is new each time, so it is greylisted: catch-all unknown
    check_case(tap, results, out, "alice@greyfor.test", "valid", "rcpt", {"reason": "catch-all unknown"},
               "greylist, retry: ")
    check_case(tap, results, out, "nobody@greyfor.test", "invalid", "rcpt", {"reply": r"^550"},
               "greylist, retry: ")
    tap.equal("greylist: one connection per address and try", farm.connections("127.0.0.38"), 4)


def hang_run(tap, tmp, dns_port, farm, farm_port):
    """Servers that hang at QUIT or at the random RCPT, command_timeout 10 s:
    the verdict must not wait for them."""
    conf = write_conf(tmp, "hang.conf", dns_port, farm_port, "command_timeout = 10s", "verify_budget = 2s",
                      "probe_timeout = 30s",
                      "domain_overrides = hangcawait.test catch_all=tempfail, hangquit.test catch_all=tempfail")
    addresses = ["alice@hangquit.test", "alice@hangca.test", "alice@hangcawait.test"]
    before = {a: len(farm.sessions(a)) for a in ("127.0.0.36", "127.0.0.37")}
    rc, out, err, results, secs, seen = run_check(conf, addresses, timeout=60)
    times = {a: verdict_ms(out, a) for a in addresses}
    tap.diag("time to verdict with command_timeout 10 s: %s; vemilter-check ran %.1f s (it waits for QUIT "
             "and late answers before it prints)" % (
                 ", ".join("%s %s ms (line seen at %.2f s)" % (a, times[a], seen.get(a, -1)) for a in addresses),
                 secs))
    check_case(tap, results, out, "alice@hangquit.test", "valid", "rcpt",
               {"reason": "^address accepted$", "flags": "not_catchall"}, "hang at QUIT: ")
    check_case(tap, results, out, "alice@hangca.test", "valid", "rcpt", {"reason": "catch-all unknown"},
               "hang at the catch-all RCPT, default policy: ")
    check_case(tap, results, out, "alice@hangcawait.test", "valid", "rcpt",
               {"reason": "catch-all unknown \\(the random address is not answered yet\\)"},
               "hang at the catch-all RCPT, catch-all matters: ")
    for a in addresses:
        tap.check("%s: verdict in < 3 s (%s ms; command_timeout 10 s)" % (a, times[a]),
                  times[a] is not None and times[a] < 3000 and 0 <= seen.get(a, 99) < 3.5,
                  transcript(out, a))
    tap.check("bounded catch-all wait: the verdict came after verify_budget/2 = 1 s (%s ms)"
              % times["alice@hangcawait.test"],
              times["alice@hangcawait.test"] is not None and times["alice@hangcawait.test"] >= 950,
              transcript(out, "alice@hangcawait.test"))
    tap.check("vemilter-check stayed until QUIT timed out (%.1f s) and exited 0" % secs,
              rc == 0 and 9.5 <= secs < 30, "exit %r\n%s" % (rc, err))
    quit = dialogue(farm, "127.0.0.36")[before["127.0.0.36"]:]
    tap.check("hang at QUIT: one connection, QUIT sent last",
              len(quit) == 1 and quit[0][-1] == "QUIT" and quit[0].count("RCPT TO:<alice@hangquit.test>") == 1,
              "%r" % quit)
    ca = dialogue(farm, "127.0.0.37")[before["127.0.0.37"]:]
    tap.check("hang at the catch-all RCPT: two connections, the random RCPT then QUIT on each",
              len(ca) == 2 and all(re.match(r"^RCPT TO:<[a-z0-9]{16}@", c[-2]) and c[-1] == "QUIT" for c in ca),
              "%r" % ca)


def hints_run(tap, tmp, dns_port, farm, farm_port):
    """What the cache knows spares the server (tests/tools/calloutrun gives
    the callout the verifier's hints): no random RCPT for a domain known
    not to be catch-all; the fallback sender first for a domain known to
    need it (only when one is configured)."""
    if not os.access(CALLOUTRUN, os.X_OK):
        tap.check("calloutrun exists at %s" % CALLOUTRUN, False)
        return
    with_fb = write_conf(tmp, "hints.conf", dns_port, farm_port, "catch_all_action = tempfail",
                         "probe_sender_fallback = " + FALLBACK)
    without = write_conf(tmp, "hints-nofb.conf", dns_port, farm_port, "catch_all_action = tempfail")

    def run(conf, opts, address, farm_addr):
        before = len(farm.sessions(farm_addr))
        r = vmtest.run([CALLOUTRUN, "-c", conf] + opts + [address], timeout=30)
        farm.wait_idle(farm_addr, timeout=5)
        fields = dict(kv.split("=", 1) for kv in (r.stdout or "").strip().split("\n")[-1].split() if "=" in kv)
        return fields, [s.commands for s in farm.sessions(farm_addr)[before:]], r

    f, sessions, r = run(with_fb, ["--skip-catchall"], "alice@valid.test", "127.0.0.11")
    tap.check("hint skip_catchall: valid, no flags, and no random RCPT at all",
              f.get("outcome") == "valid" and f.get("flags") == "-" and f.get("facts") == "-"
              and sessions == [["EHLO " + HELO, "MAIL FROM:<>", "RCPT TO:<alice@valid.test>", "QUIT"]],
              "%r %r\n%s" % (f, sessions, r.stderr))
    f, sessions, r = run(with_fb, ["--fallback-hint"], "alice@nullref.test", "127.0.0.39")
    tap.check("hint use_fallback_sender: the fallback first, flagged, no MAIL FROM:<>",
              f.get("outcome") == "valid" and f.get("flags") == "not_catchall,fallback_sender"
              and len(sessions) == 1 and sessions[0][:3] == ["EHLO " + HELO, "MAIL FROM:<%s>" % FALLBACK,
                                                             "RCPT TO:<alice@nullref.test>"]
              and "MAIL FROM:<>" not in sessions[0], "%r %r\n%s" % (f, sessions, r.stderr))
    f, sessions, r = run(with_fb, ["--fallback-hint", "--skip-catchall"], "nobody@nullref.test", "127.0.0.39")
    tap.check("both hints, unknown user: invalid, flagged fallback_sender, one RCPT",
              f.get("outcome") == "invalid" and f.get("flags") == "fallback_sender"
              and sessions == [["EHLO " + HELO, "MAIL FROM:<%s>" % FALLBACK, "RCPT TO:<nobody@nullref.test>",
                                "QUIT"]], "%r %r\n%s" % (f, sessions, r.stderr))
    tap.check("on_finished: once, after the verdict (%s ms, verdict %s ms)" % (f.get("finished_ms"),
                                                                               f.get("verdict_ms")),
              f.get("finished") == "1" and int(f.get("finished_ms", -1)) >= int(f.get("verdict_ms", 0)),
              "%r" % f)
    f, sessions, r = run(with_fb, ["--skip-catchall"], "alice@hangquit.test", "127.0.0.36")
    tap.check("on_finished waits for a hanging QUIT: verdict %s ms, finished after the 3 s QUIT wait (%s ms)"
              % (f.get("verdict_ms"), f.get("finished_ms")),
              f.get("outcome") == "valid" and f.get("finished") == "1" and int(f.get("verdict_ms", 9999)) < 1000
              and 2900 <= int(f.get("finished_ms", 0)) < 6000, "%r\n%s" % (f, r.stderr))
    f, sessions, r = run(with_fb, [], "x@nope.test", "127.0.0.11")
    tap.check("on_finished without any connection (NXDOMAIN): once, at once",
              f.get("outcome") == "no_domain" and f.get("finished") == "1", "%r" % f)
    f, sessions, r = run(without, ["--fallback-hint"], "alice@nullref.test", "127.0.0.39")
    tap.check("hint use_fallback_sender without a fallback configured: <> as ever, blocked",
              f.get("outcome") == "blocked" and f.get("stage") == "mail"
              and sessions == [["EHLO " + HELO, "MAIL FROM:<>", "QUIT"]], "%r %r\n%s" % (f, sessions, r.stderr))


def calloutrun(conf, opts, address, farm, farm_addr):
    """calloutrun -v: (fields of its result line, the farm's sessions it made, transcript)"""
    before = len(farm.sessions(farm_addr))
    r = vmtest.run([CALLOUTRUN, "-c", conf, "-v"] + opts + [address], timeout=30)
    farm.wait_idle(farm_addr, timeout=5)
    lines = (r.stdout or "").strip().split("\n")
    fields = dict(kv.split("=", 1) for kv in lines[-1].split() if "=" in kv)
    return fields, [s.commands for s in farm.sessions(farm_addr)[before:]], (r.stdout or "") + (r.stderr or "")


def desync_run(tap, tmp, dns_port, farm, farm_port):
    """A server one reply behind for the whole session (nothing waits when a
    command goes out): the verdict must never stand as an answer. A positive
    verdict comes at once and is taken back (fact retracted); an invalid is
    held until QUIT proves the session in step, which it never does here."""
    conf = write_conf(tmp, "desync.conf", dns_port, farm_port, "verify_budget = 8s")
    for address, opts in (("nobody@lag.test", []), ("nobody@lag.test", ["--skip-catchall"]),
                          ("alice@lag.test", []), ("alice@lag.test", ["--skip-catchall"])):
        f, sessions, out = calloutrun(conf, opts, address, farm, "127.0.0.50")
        outcome, facts = f.get("outcome"), f.get("facts", "").split(",")
        ok = outcome != "invalid" and (
            (outcome == "valid" and "retracted" in facts)
            or (outcome == "tempfail" and "protocol" in f.get("flags", "").split(",")))
        tap.check("lagging_reply %s%s: %s, facts %s (verdict %s ms): never a standing answer"
                  % (address, " " + " ".join(opts) if opts else "", outcome, f.get("facts"), f.get("verdict_ms")),
                  ok and len(sessions) == 1 and sessions[0][-1] == "QUIT", "%r %r\n%s" % (f, sessions, out))
    f, sessions, out = calloutrun(conf, [], "nobody@lag.test", farm, "127.0.0.50")
    tap.check("lagging_reply: the retraction names the QUIT reply (transcript)",
              re.search(r"^retracted: the valid verdict came from a session out of step "
                        r"\(reply before command \(found after the verdict", out, re.M) is not None, out)
    # refuse_null: MAIL FROM:<> 553 5.1.8, shifted onto RCPT: a real user must never be invalid
    for address, farm_addr in (("alice@lagnull.test", "127.0.0.51"), ("nobody@lagnull.test", "127.0.0.51"),
                               ("alice@lagnull2.test", "127.0.0.52"), ("nobody@lagnull2.test", "127.0.0.52")):
        for opts in ([], ["--skip-catchall"]):
            f, sessions, out = calloutrun(conf, opts, address, farm, farm_addr)
            outcome = f.get("outcome")
            ok = outcome in ("blocked", "tempfail") and "retracted" not in f.get("facts", "")
            if outcome == "tempfail":
                ok = ok and "protocol" in f.get("flags", "")
            tap.check("lagging_reply refuse_null %s%s: %s (%s ms), never invalid"
                      % (address, " " + " ".join(opts) if opts else "", outcome, f.get("verdict_ms")),
                      ok, "%r %r\n%s" % (f, sessions, out))
    # the hold path: the shifted 550 looks like an answer, QUIT shows it is not
    f, sessions, out = calloutrun(conf, ["--skip-catchall"], "alice@lagnull2.test", farm, "127.0.0.52")
    tap.check("invalid held until QUIT: the 550 at RCPT became tempfail at quit (protocol), %s ms"
              % f.get("verdict_ms"),
              f.get("outcome") == "tempfail" and f.get("stage") == "quit" and f.get("flags") == "protocol"
              and "invalid, held until QUIT" in out and int(f.get("verdict_ms", 9999)) < 2000,
              "%r\n%s" % (f, out))
    # vemilter-check shows a retraction and does not exit 0 on it
    rc, out, err, results, secs, _ = run_check(conf, ["nobody@lag.test"])
    r = results.get("nobody@lag.test")
    tap.check("vemilter-check: nobody@lag.test shows fact=retracted and exits 2 (temporary)",
              rc == 2 and r is not None and r[1].get("fact") == "retracted" and r[0] in ("valid", "tempfail"),
              "exit %r %r\n%s" % (rc, r, out))
    # a sound server: the hold costs one round trip and the close, no more
    f, sessions, out = calloutrun(conf, ["--skip-catchall"], "bob@unknown.test", farm, "127.0.0.12")
    tap.check("in step: invalid after QUIT proved it (%s ms), no fact" % f.get("verdict_ms"),
              f.get("outcome") == "invalid" and f.get("facts") == "-" and "proved in step" in out
              and int(f.get("verdict_ms", 9999)) < 1000, "%r\n%s" % (f, out))
    # a server that hangs at QUIT: no contrary evidence, invalid after the bounded wait
    conf5 = write_conf(tmp, "desync5.conf", dns_port, farm_port, "verify_budget = 5s")
    f, sessions, out = calloutrun(conf5, ["--skip-catchall"], "nobody@hangquit.test", farm, "127.0.0.36")
    tap.check("hang at QUIT, unknown user: invalid after min(command_timeout, verify_budget/4) = 1.25 s "
              "(%s ms)" % f.get("verdict_ms"),
              f.get("outcome") == "invalid" and 1200 <= int(f.get("verdict_ms", 0)) < 2000,
              "%r\n%s" % (f, out))


def null_at_rcpt_run(tap, tmp, dns_port, farm, farm_port):
    """Postfix's smtpd_delay_reject: the null sender refused at RCPT, 554
    5.7.1 <>: Sender address rejected. About us: blocked, never invalid; with
    a fallback sender, asked again in a new connection."""
    without = write_conf(tmp, "nullrcpt.conf", dns_port, farm_port)
    with_fb = write_conf(tmp, "nullrcpt-fb.conf", dns_port, farm_port, "probe_sender_fallback = " + FALLBACK)
    for address in ("alice@nullrcpt.test", "nobody@nullrcpt.test"):
        f, sessions, out = calloutrun(without, [], address, farm, "127.0.0.53")
        tap.check("null sender refused at RCPT, no fallback: %s -> blocked at rcpt" % address,
                  f.get("outcome") == "blocked" and f.get("stage") == "rcpt" and len(sessions) == 1
                  and unrandom(sessions[0]) == ["EHLO " + HELO, "MAIL FROM:<>", "RCPT TO:<%s>" % address,
                                                "RCPT TO:<random@nullrcpt.test>", "QUIT"],
                  "%r %r\n%s" % (f, sessions, out))
    # (the default policy: the verdict comes at RCPT, the catch-all answer as a fact)
    for address, outcome, flags in (("alice@nullrcpt.test", "valid", "fallback_sender"),
                                    ("nobody@nullrcpt.test", "invalid", "fallback_sender")):
        f, sessions, out = calloutrun(with_fb, [], address, farm, "127.0.0.53")
        tap.check("null sender refused at RCPT, fallback: %s -> %s flags=%s, second connection with the "
                  "fallback" % (address, outcome, flags),
                  f.get("outcome") == outcome and f.get("stage") == "rcpt" and f.get("flags") == flags
                  and f.get("facts") == "not_catch_all"
                  and len(sessions) == 2 and sessions[0][1:3] == ["MAIL FROM:<>", "RCPT TO:<%s>" % address]
                  and sessions[1][1:3] == ["MAIL FROM:<%s>" % FALLBACK, "RCPT TO:<%s>" % address],
                  "%r %r\n%s" % (f, sessions, out))


def pipelining_run(tap, tmp, dns_port, farm, farm_port):
    """probe_pipelining: by default the last RCPT, the random RCPT and QUIT
    go out as one group to a server that offers PIPELINING, and the -v
    transcript shows it; probe_pipelining = no asks one command at a time.
    The verdict and what the server saw are the same."""
    for label, extra, grouped in (("default", (), True), ("probe_pipelining = no",
                                                           ("probe_pipelining = no",), False)):
        conf = write_conf(tmp, "pipe-%s.conf" % grouped, dns_port, farm_port, *extra)
        before = len(farm.sessions("127.0.0.54"))
        rc, out, err, results, secs, _ = run_check(conf, ["nobody@pipe.test"])
        farm.wait_idle("127.0.0.54", timeout=5)
        sessions = [x.commands for x in farm.sessions("127.0.0.54")[before:]]
        t = transcript(out, "nobody@pipe.test")
        check_case(tap, results, out, "nobody@pipe.test", "invalid", "rcpt", {}, label="%s: " % label)
        lines = [l.split(": ", 1)[1] for l in t.splitlines()]
        at = lines.index("> MAIL FROM:<>") + 2 if "> MAIL FROM:<>" in lines else None
        want = (["* PIPELINING: RCPT, the random RCPT and QUIT in one group (the session ends after this "
                 "address)", "> RCPT TO:<nobody@pipe.test>", "> RCPT TO:<random@pipe.test>", "> QUIT",
                 "< 550 5.1.1 <nobody@pipe.test>: user unknown"] if grouped else
                ["> RCPT TO:<nobody@pipe.test>", "< 550 5.1.1 <nobody@pipe.test>: user unknown",
                 "> RCPT TO:<random@pipe.test>"])
        tap.equal("%s: the transcript shows %s" % (label, "the group" if grouped else "one command at a time"),
                  unrandom(lines[at:at + len(want)]) if at is not None else None, want, t)
        tap.equal("%s: the server saw EHLO, MAIL, RCPT, the random RCPT, QUIT" % label,
                  [unrandom(c) for c in sessions],
                  [["EHLO " + HELO, "MAIL FROM:<>", "RCPT TO:<nobody@pipe.test>", "RCPT TO:<random@pipe.test>",
                    "QUIT"]], t)


def interrupt_check(tap, conf, address, valgrind=False):
    """vemilter-check on address (whose verdict comes at once, then lingers
    for 10 s), interrupted with SIGINT once the verdict is in: the result
    is printed and the lingering work closed (under valgrind: cleanly).
    Returns (exit status, stdout, stderr, seconds from SIGINT to exit)."""
    argv = [CHECK, "-c", conf, "-v", address]
    if valgrind:
        argv = ["valgrind", "-q", "--leak-check=full", "--error-exitcode=9",
                "--errors-for-leak-kinds=definite,indirect,possible"] + argv
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines, after = [], None
    try:
        deadline = time.monotonic() + 60
        for raw in iter(p.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            lines.append(line)
            if "* verdict after" in line:
                time.sleep(2.0 if valgrind else 0.5)   # into the lingering phase
                t0 = time.monotonic()
                p.send_signal(signal.SIGINT)
                rest, err = p.communicate(timeout=30)
                after = time.monotonic() - t0
                lines += rest.decode("utf-8", "replace").splitlines()
                return p.returncode, "\n".join(lines), err.decode("utf-8", "replace"), after
            if time.monotonic() > deadline:
                break
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    return p.returncode, "\n".join(lines), "", after


def interrupt_run(tap, tmp, dns_port, farm_port):
    """SIGINT while only goodbyes are left: results at once, exit clean."""
    conf = write_conf(tmp, "interrupt.conf", dns_port, farm_port, "command_timeout = 10s")
    for address, what in (("alice@int-ca.test", "the late catch-all answer"),
                          ("alice@int-quit.test", "a QUIT reply")):
        rc, out, err, after = interrupt_check(tap, conf, address)
        tap.check("SIGINT while waiting for %s: result printed, exit 0 within 2 s (%s s)" % (
                  what, "%.2f" % after if after is not None else "?"),
                  rc == 0 and after is not None and after < 2
                  and re.search(r"^%s valid stage=rcpt " % re.escape(address), out, re.M) is not None,
                  "exit %r\n%s\n%s" % (rc, out, err))


def valgrind_run(tap, tmp, dns_port, farm_port):
    """Optional (VEMILTER_VALGRIND=1): vemilter-check leak- and error-free
    on the new paths: desync, late facts, fallback, loops, lingering QUIT."""
    reason = vmtest.valgrind_skip_reason()
    if reason:
        tap.skip("valgrind vemilter-check", reason)
        return
    conf = write_conf(tmp, "valgrind.conf", dns_port, farm_port, "command_timeout = 2s",
                      "probe_sender_fallback = " + FALLBACK)
    for label, addresses in (
            ("desync and mismatch", ["nobody@erb.test", "nobody@erm.test", "alice@mism.test"]),
            ("late facts, fallback, loops", ["x@early-catchall.test", "nobody@early-normal.test",
                                             "alice@nullref.test", "alice@rsetno.test", "x@local.test",
                                             "alice@self.test"]),
            ("lingering QUIT and catch-all", ["alice@hangquit.test", "alice@hangca.test"])):
        r = vmtest.run(["valgrind", "-q", "--leak-check=full", "--error-exitcode=9",
                        "--errors-for-leak-kinds=definite,indirect,possible", CHECK, "-c", conf, "-v"]
                       + addresses, timeout=120)
        tap.check("valgrind vemilter-check, %s: clean (exit %r)" % (label, r.returncode),
                  r.returncode in (0, 1, 2, 3), vmtest.tail(r.stderr or "") + vmtest.tail(r.stdout or ""))
    # interrupted while a callout waits for its late catch-all answer and a
    # probe hangs at QUIT: engine_free closes both
    conf = write_conf(tmp, "valgrind-int.conf", dns_port, farm_port, "command_timeout = 10s")
    for address in ("alice@int-ca.test", "alice@int-quit.test"):
        rc, out, err, after = interrupt_check(tap, conf, address, valgrind=True)
        tap.check("valgrind vemilter-check, %s interrupted while lingering: clean (exit %r)" % (address, rc),
                  rc == 0 and after is not None, "%s\n%s" % (vmtest.tail(out), vmtest.tail(err)))


def main():
    tap = vmtest.Tap()
    if not os.access(CHECK, os.X_OK):
        tap.check("vemilter-check exists at %s (set VEMILTER_BUILDDIR)" % CHECK, False)
        return tap.done()
    tmp = TempDir()
    dns = FakeDNS(ZONE)
    farm = SmtpFarm()
    try:
        dns_port = dns.start()
        for address, (behaviour, options) in FARM.items():
            farm.add(address, behaviour, **options)
        farm_port = farm.start()
        conf = main_run(tap, tmp, dns_port, farm, farm_port)
        deadline_run(tap, tmp, conf)
        early_run(tap, tmp, dns_port, farm, farm_port)
        fallback_run(tap, tmp, dns_port, farm, farm_port)
        hints_run(tap, tmp, dns_port, farm, farm_port)
        greylist_run(tap, tmp, dns_port, farm, farm_port)
        hang_run(tap, tmp, dns_port, farm, farm_port)
        desync_run(tap, tmp, dns_port, farm, farm_port)
        null_at_rcpt_run(tap, tmp, dns_port, farm, farm_port)
        pipelining_run(tap, tmp, dns_port, farm, farm_port)
        interrupt_run(tap, tmp, dns_port, farm_port)
        valgrind_run(tap, tmp, dns_port, farm_port)

        # What every server saw, over all runs.
        farm.wait_idle(timeout=5)
        for address in FARM:
            sessions = farm.sessions(address)
            data = [s for s in sessions if any(c.upper().startswith("DATA") for c in s.commands)]
            tap.check("%s (%s): DATA never sent" % (address, FARM[address][0]), not data,
                      "%r" % [s.commands for s in sessions])
        for address in FARM:
            behaviour = FARM[address][0]
            if behaviour in ("slow_banner", "endless_line", "banner_421", "drop_after_mail"):
                continue  # no dialogue left to end politely
            if address in INTERRUPTED:
                continue  # cut short on purpose
            sessions = farm.sessions(address)
            polite = all(s.closed_by == "server" or (s.commands and s.commands[-1].upper() == "QUIT")
                         for s in sessions)
            tap.check("%s (%s): QUIT sent on every connection still open" % (address, behaviour),
                      bool(sessions) and polite, "%r" % [(s.commands, s.closed_by) for s in sessions])
    finally:
        farm.stop()
        dns.stop()
        tmp.remove()
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
