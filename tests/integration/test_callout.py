#!/usr/bin/python3
"""test_callout - the real vemilter-check against a fake DNS server and a
farm of fake SMTP servers, one behaviour per scenario.

Every scenario is one sender domain whose MX points at its own 127.0.0.x
farm address, so the farm's record of commands belongs to that scenario
alone. All addresses run in one vemilter-check invocation (it probes them
concurrently) and each is asserted on its outcome class and stage; then the
farm's records are checked: DATA never sent, QUIT sent wherever the
connection was still open at the end.

TAP on stdout; loopback only; every wait bounded.
"""

import os
import re
import shlex
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

CHECK = os.path.join(vmtest.builddir(), "vemilter-check")

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
}


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
    "utf8.test": {"MX": [mx("mx.utf8.test")]},
    "mx.utf8.test": {"A": ["127.0.0.31"]},
    "utf8ok.test": {"MX": [mx("mx.utf8ok.test")]},
    "mx.utf8ok.test": {"A": ["127.0.0.32"]},
}

# address -> (outcome, stage, extra checks on the parsed result line, farm address)
CASES = [
    ("alice@valid.test", "valid", "rcpt", {"reply": r"^250"}, "127.0.0.11"),
    ("bob@unknown.test", "invalid", "rcpt", {"reply": r"^550 5\.1\.1"}, "127.0.0.12"),
    ("x@nope.test", "no_domain", "dns", {"reason": "NXDOMAIN"}, None),
    ("carol@implicit.test", "valid", "rcpt", {"mx": "implicit.test"}, "127.0.0.13"),
    ("x@nullmx.test", "no_domain", "dns", {"reason": "null MX"}, None),
    ("x@unres.test", "no_domain", "dns", {}, None),
    ("x@servfail.test", "tempfail", "dns", {}, None),
    ("x@dnstimeout.test", "tempfail", "dns", {}, None),
    ("dave@two.test", "valid", "rcpt", {"mx": "mx2.two.test"}, "127.0.0.15"),
    ("x@down.test", "tempfail", "connect", {}, None),
    ("x@grey.test", "tempfail", "rcpt", {"reply": r"^450"}, "127.0.0.18"),
    ("x@b421.test", "tempfail", "banner", {"reply": r"^421"}, "127.0.0.19"),
    ("x@b554.test", "blocked", "banner", {"reply": r"^554"}, "127.0.0.20"),
    ("x@mailref.test", "blocked", "mail", {"reply": r"^550 5\.7\.1"}, "127.0.0.21"),
    ("x@catchall.test", "catch_all", "catchall", {}, "127.0.0.22"),
    ("erin@c452.test", "valid", "rcpt", {"reason": "catch-all unknown"}, "127.0.0.23"),
    ("frank@ehlo.test", "valid", "rcpt", {}, "127.0.0.24"),
    ("gina@tls.test", "valid", "rcpt", {}, "127.0.0.25"),
    ("hank@tlsbad.test", "valid", "rcpt", {}, "127.0.0.26"),
    ("x@slow.test", "tempfail", "banner", {}, "127.0.0.27"),
    ("x@drop.test", "tempfail", "rcpt", {}, "127.0.0.28"),
    ("ivan@multi.test", "valid", "rcpt", {}, "127.0.0.29"),
    ("nobody@multi.test", "invalid", "rcpt", {"reply": r"^550 5\.1\.1"}, "127.0.0.29"),
    ("x@endless.test", "tempfail", "ehlo", {}, "127.0.0.30"),
    ("x@guard.test", "no_domain", "guard", {"reason": "forbidden network"}, None),
    ("j\u00f6rg@utf8.test", "unverifiable", "ehlo", {}, "127.0.0.31"),
    # The farm records lines as latin-1, so it cannot know a UTF-8 user: an
    # unknown-user reply still proves the question was asked, with SMTPUTF8.
    ("k\u00efm@utf8ok.test", "invalid", "rcpt", {"reply": r"^550"}, "127.0.0.32"),
    ("alice@[127.0.0.11]", "valid", "rcpt", {}, "127.0.0.11"),
]

RESULT = re.compile(r'^(\S+) (\w+) (.*)$')
KV = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def parse_result(line):
    m = RESULT.match(line)
    if not m:
        return None
    fields = {k: (v[1:-1] if v.startswith('"') else v) for k, v in KV.findall(m.group(3))}
    return m.group(1), m.group(2), fields


def write_conf(tmp, dns_port, farm_port):
    return tmp.write("check.conf", "\n".join([
        "dns_servers = 127.0.0.1:%d" % dns_port,
        "dns_timeout = 500ms",
        "helo_name = probe.vemilter.test",
        "probe_port = %d" % farm_port,
        "probe_allow_networks = 127.0.0.0/8",
        "connect_timeout = 2s",
        "banner_timeout = 2s",
        "command_timeout = 3s",
        "probe_timeout = 15s",
        "",
    ]))


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
        conf = write_conf(tmp, dns_port, farm_port)
        argv = [CHECK, "-c", conf, "-v"] + [c[0] for c in CASES]
        p = subprocess.run(argv, capture_output=True, timeout=60)
        out = p.stdout.decode("utf-8", "replace")
        err = p.stderr.decode("utf-8", "replace")
        tap.check("vemilter-check ran (exit status 3: the worst outcome is a definite negative)",
                  p.returncode == 3, "exit %r\n%s\nstderr:\n%s" % (p.returncode, " ".join(map(shlex.quote, argv)), err))
        results = {}
        for line in out.splitlines():
            parsed = parse_result(line)
            if parsed and parsed[0] in {c[0] for c in CASES} and not parsed[1].endswith(":"):
                results[parsed[0]] = parsed

        def transcript(address):
            return "\n".join(l for l in out.splitlines() if l.startswith(address + ": "))

        for address, outcome, stage, extra, farm_addr in CASES:
            r = results.get(address)
            diag = "result: %r\ntranscript:\n%s" % (r, transcript(address))
            ok = r is not None and r[1] == outcome and r[2].get("stage") == stage
            for key, pattern in extra.items():
                ok = ok and r is not None and re.search(pattern, r[2].get(key, "")) is not None
            tap.check("%s -> %s at %s" % (address, outcome, stage), ok, diag)

        # What every server saw.
        for address in FARM:
            sessions = farm.sessions(address)
            data = [s for s in sessions if any(c.upper().startswith("DATA") for c in s.commands)]
            tap.check("%s (%s): DATA never sent" % (address, FARM[address][0]), not data,
                      "%r" % [s.commands for s in sessions])
        for address in FARM:
            behaviour = FARM[address][0]
            if behaviour in ("slow_banner", "endless_line", "banner_421", "drop_after_mail"):
                continue  # no dialogue left to end politely
            sessions = farm.sessions(address)
            polite = all(s.closed_by == "server" or (s.commands and s.commands[-1].upper() == "QUIT")
                         for s in sessions)
            tap.check("%s (%s): QUIT sent on every connection still open" % (address, behaviour),
                      bool(sessions) and polite, "%r" % [(s.commands, s.closed_by) for s in sessions])

        valid = next((s.commands for s in farm.sessions("127.0.0.11")
                      if "RCPT TO:<alice@valid.test>" in s.commands), [])
        tap.check("valid: exact dialogue EHLO, MAIL FROM:<>, RCPT, random RCPT, QUIT",
                  len(valid) >= 5 and valid[0] == "EHLO probe.vemilter.test" and valid[1] == "MAIL FROM:<>"
                  and valid[2] == "RCPT TO:<alice@valid.test>"
                  and re.match(r"^RCPT TO:<[a-z0-9]{16}@valid\.test>$", valid[3]) is not None
                  and valid[4] == "QUIT", "%r" % valid)
        ehlo = farm.commands("127.0.0.24")
        tap.check("EHLO refused: HELO used instead", "HELO probe.vemilter.test" in ehlo, "%r" % ehlo)
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
                  "not connecting" in transcript("x@guard.test"), transcript("x@guard.test"))
        # One overall deadline bounds a whole verification, whatever the
        # per-phase timeouts allow.
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
        tap.check("-v shows DNS answers and the dialogue",
                  re.search(r"^alice@valid\.test: .*MX", out, re.M) is not None
                  and "alice@valid.test: > RCPT TO:<alice@valid.test>" in out
                  and re.search(r"^alice@valid\.test: < 250", out, re.M) is not None,
                  transcript("alice@valid.test"))
    finally:
        farm.stop()
        dns.stop()
        tmp.remove()
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
