#!/usr/bin/python3
"""test_metrics - GET /metrics from the running daemon (metrics_listen).

The real vemilter with a fake DNS server and a fake SMTP farm: a valid
sender (probed, then cached), an invalid one, a bad-syntax one and an
unknown domain go through the milter protocol; then /metrics is scraped
and every line is checked against the text format's grammar (a strict
parser here; promtool check metrics too when Debian's prometheus package
is installed), and the counters must say what happened: verdicts by action
and reason, cache hits and misses, probes by outcome and stage, the probe
and DNS histograms (cumulative buckets, +Inf equal to the count). Other
paths are 404, other methods 405; a bad metrics_listen is refused by -n;
a port already taken stops the start with the reason. TAP on stdout;
loopback only; every wait bounded.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "fakes"))

import vmtest  # noqa: E402
from vmtest import Daemon, TempDir, probe_conf  # noqa: E402
from milterclient import one_message  # noqa: E402
from fakedns import FakeDNS  # noqa: E402
from smtpfarm import SmtpFarm  # noqa: E402

ZONE = {
    "ok.test": {"MX": [[10, "mx.ok.test"]]}, "mx.ok.test": {"A": ["127.0.0.41"]},
}

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = NAME + r'="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(r"^(" + NAME + r")(\{(" + LABEL + r"(?:," + LABEL + r")*)\})? "
                    r"([-+]?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|Inf)|NaN)$")
TYPE = re.compile(r"^# TYPE (" + NAME + r") (counter|gauge|histogram)$")
HELP = re.compile(r"^# HELP (" + NAME + r") .+$")


def parse(text):
    """Strict parse: {(name, labels-text): value}, families {name: type},
    and a list of problems (empty when every line is right)."""
    samples, families, problems = {}, {}, []
    current = None
    if not text.endswith("\n"):
        problems.append("does not end with a newline")
    for line in text.splitlines():
        m = TYPE.match(line)
        if m:
            if m.group(1) in families:
                problems.append("TYPE twice: %s" % line)
            families[m.group(1)] = m.group(2)
            current = m.group(1)
            continue
        if HELP.match(line):
            continue
        m = SAMPLE.match(line)
        if not m:
            problems.append("bad line: %r" % line)
            continue
        name = m.group(1)
        if current is None or not name.startswith(current):
            problems.append("sample outside its family: %r" % line)
        key = (name, m.group(3) or "")
        if key in samples:
            problems.append("sample twice: %r" % line)
        samples[key] = float(m.group(4).replace("Inf", "inf"))
    return samples, families, problems


def value(samples, name, labels=""):
    return samples.get((name, labels), 0.0)


def histogram_ok(samples, name):
    """Every series of histogram name: buckets non-decreasing in le order,
    +Inf equal to _count. Returns (series checked, problems)."""
    series = {}
    for (n, labels), v in samples.items():
        if n != name + "_bucket":
            continue
        le = re.search(r'le="([^"]*)"', labels).group(1)
        rest = re.sub(r',?le="[^"]*"', "", labels).strip(",")
        series.setdefault(rest, []).append((float(le.replace("+Inf", "inf")), v))
    problems = []
    for rest, buckets in series.items():
        buckets.sort()
        counts = [v for _, v in buckets]
        if counts != sorted(counts):
            problems.append("%s{%s}: buckets decrease: %r" % (name, rest, buckets))
        if buckets[-1][0] != float("inf") or buckets[-1][1] != value(samples, name + "_count", rest):
            problems.append("%s{%s}: +Inf is not the count" % (name, rest))
    return len(series), problems


def scrape(port, path="/metrics", method="GET"):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), ""


def head_then_get(port):
    """HEAD /metrics then GET /metrics on one connection: what came back
    (read until the server closes, at most 10 s)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(b"HEAD /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n"
                  b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            data += chunk
        return data
    finally:
        s.close()


def message(d, sender):
    return one_message(d.socket, sender, qid="QM")


def main():
    tap = vmtest.Tap()
    tmp = TempDir()
    dns = FakeDNS(ZONE)
    farm = SmtpFarm()
    daemons = []
    try:
        dns_port = dns.start()
        farm.add("127.0.0.41", "normal", users=["alice"])
        farm_port = farm.start()
        mport = vmtest.free_port()
        conf = probe_conf(tmp, "metrics.sock", dns_port, farm_port, **{
            "verify_budget": "8s",
            "cache": tmp.join("cache.lmdb"), "metrics_listen": "127.0.0.1:%d" % mport,
        })
        d = Daemon(tmp, conf, name="metrics", debug=True)
        daemons.append(d)
        d.start()
        # The milter socket listens before the engine (and its metrics
        # server) is up: wait, bounded, for the port.

        def metrics_up():
            try:
                with socket.create_connection(("127.0.0.1", mport), timeout=1):
                    return True
            except OSError:
                return False
        tap.check("the metrics port listens", vmtest.wait_until(metrics_up, 30), d.diag)

        status, ctype, text = scrape(mport)
        _, families, problems = parse(text)
        tap.check("before any mail: 200, text/plain version 0.0.4, every line well formed",
                  status == 200 and "version=0.0.4" in ctype and not problems and families,
                  "%s %s\n%s\n%s" % (status, ctype, problems, text))

        replies = [message(d, s) for s in ("<alice@ok.test>", "<alice@ok.test>", "<nobody@ok.test>",
                                           "<a..b@ok.test>", "<x@nxdomain.test>")]
        tap.check("the mail: valid, valid again, invalid, bad syntax, no domain",
                  [r.code for r in replies[:2]] in (["c", "a"], ["a", "a"], ["c", "c"])
                  and all(r.code == "y" for r in replies[2:]), repr(replies))

        status, ctype, text = scrape(mport)
        samples, families, problems = parse(text)
        tap.check("after the mail: every line well formed", status == 200 and not problems,
                  "\n".join(problems) + "\n" + text)
        want = {
            "vemilter_verdicts_total": "counter", "vemilter_cache_lookups_total": "counter",
            "vemilter_probes_total": "counter", "vemilter_probes_started_total": "counter",
            "vemilter_probe_duration_seconds": "histogram", "vemilter_dns_duration_seconds": "histogram",
            "vemilter_budget_refusals_total": "counter", "vemilter_probes_in_flight": "gauge",
            "vemilter_probes_waiting": "gauge",
            "vemilter_self_health_unhealthy": "gauge", "vemilter_mx_hosts": "gauge",
            "vemilter_cache_entries": "gauge", "vemilter_cache_bytes": "gauge",
        }
        tap.check("every family is there with its type",
                  all(families.get(k) == t for k, t in want.items()), "%r" % families)
        v = lambda n, l="": value(samples, n, l)  # noqa: E731
        tap.equal("verdicts: accept/valid 2", v("vemilter_verdicts_total", 'action="accept",reason="valid"'), 2.0,
                  text)
        tap.equal("verdicts: reject/invalid 1", v("vemilter_verdicts_total", 'action="reject",reason="invalid"'),
                  1.0, text)
        tap.equal("verdicts: reject/bad_syntax 1",
                  v("vemilter_verdicts_total", 'action="reject",reason="bad_syntax"'), 1.0, text)
        tap.equal("verdicts: reject/no_domain 1",
                  v("vemilter_verdicts_total", 'action="reject",reason="no_domain"'), 1.0, text)
        tap.check("cache: 1 hit (alice again), 3 misses (alice, nobody, x@nxdomain)",
                  v("vemilter_cache_lookups_total", 'result="hit"') == 1
                  and v("vemilter_cache_lookups_total", 'result="miss"') == 3, text)
        tap.check("probes: 3 started; valid and invalid decided at rcpt, no_domain at dns",
                  v("vemilter_probes_started_total") == 3
                  and v("vemilter_probes_total", 'outcome="valid",stage="rcpt"') == 1
                  and v("vemilter_probes_total", 'outcome="invalid",stage="rcpt"') == 1
                  and v("vemilter_probes_total", 'outcome="no_domain",stage="dns"') == 1, text)
        n, hp = histogram_ok(samples, "vemilter_probe_duration_seconds")
        tap.check("probe time histogram: 3 observations, cumulative, +Inf = count",
                  n >= 1 and not hp and sum(v("vemilter_probe_duration_seconds_count", l)
                                            for (name, l) in samples
                                            if name == "vemilter_probe_duration_seconds_count") == 3,
                  "%s\n%s" % (hp, text))
        n, hp = histogram_ok(samples, "vemilter_dns_duration_seconds")
        tap.check("DNS time histogram: ok and nxdomain resolutions, cumulative",
                  n >= 2 and not hp and v("vemilter_dns_duration_seconds_count", 'status="ok"') >= 1
                  and v("vemilter_dns_duration_seconds_count", 'status="nxdomain"') == 1, "%s\n%s" % (hp, text))
        tap.check("cache records counted (alice, nobody and more), file bytes > 0, within the map",
                  v("vemilter_cache_entries") >= 2
                  and 0 < v("vemilter_cache_bytes", 'kind="file"') <= v("vemilter_cache_bytes", 'kind="map"'),
                  text)
        tap.check("nothing in flight, healthy", v("vemilter_probes_in_flight") == 0
                  and v("vemilter_probes_waiting") == 0
                  and v("vemilter_self_health_unhealthy") == 0, text)
        promtool = shutil.which("promtool")
        if promtool:
            p = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True,
                               timeout=30)
            # promtool's lint warnings (naming advice) exit 3; a parse error exits 1
            tap.check("promtool check metrics parses it", p.returncode in (0, 3),
                      p.stdout.decode() + p.stderr.decode())
        else:
            tap.skip("promtool check metrics", "Debian's prometheus package is not installed")

        tap.equal("another path: 404", scrape(mport, "/")[0], 404)
        tap.equal("POST /metrics: 405", scrape(mport, "/metrics", "POST")[0], 405)
        # HEAD then GET on one connection: a HEAD response carries no body
        # (RFC 9110 9.3.2), else a keep-alive client reads the body as the
        # next response.
        raw = head_then_get(mport)
        first, _, rest = raw.partition(b"\r\n\r\n")
        tap.check("HEAD /metrics: 200 with no body, the GET after it answered on the same connection",
                  first.startswith(b"HTTP/1.1 200") and rest.startswith(b"HTTP/1.1 200")
                  and b"# TYPE vemilter_verdicts_total counter" in rest, raw[:400].decode(errors="replace"))
        tap.equal("clean stop", d.stop(), 0, d.diag)

        # log_level = warning: verdict lines are not even formatted, but
        # every verdict is still counted.
        # The port was free a moment ago: should another test's process
        # take it first, this daemon stops after its milter socket listened
        # (and that other process answers on the port): another port then.
        for attempt in range(3):
            qport = vmtest.free_port()
            quiet = dict(conf, log_level="warning", metrics_listen="127.0.0.1:%d" % qport,
                         socket="unix:" + tmp.join("quiet.sock"))
            dq = Daemon(tmp, quiet, name="quiet%d" % attempt)
            daemons.append(dq)
            try:
                dq.start()
            except vmtest.DaemonError:
                continue

            def quiet_up():
                try:
                    with socket.create_connection(("127.0.0.1", qport), timeout=1):
                        return dq.running()
                except OSError:
                    return not dq.running()
            vmtest.wait_until(quiet_up, 30)
            time.sleep(0.3)  # one whose port was taken exits right after the bind failed
            if dq.running():
                break
        replies = [one_message(dq.socket, s, qid="QQ") for s in ("<>", "<a..b@ok.test>", "<alice@ok.test>")]
        _, _, text = scrape(qport)
        samples, _, _ = parse(text)
        q = lambda l: value(samples, "vemilter_verdicts_total", l)  # noqa: E731
        tap.check("log_level = warning: no verdict line, each verdict counted "
                  "(accept/null_sender, reject/bad_syntax, accept/valid)",
                  [r.code for r in replies] in (["a", "y", "c"], ["a", "y", "a"])
                  and q('action="accept",reason="null_sender"') == 1
                  and q('action="reject",reason="bad_syntax"') == 1
                  and q('action="accept",reason="valid"') == 1
                  and " verdict " not in dq.log(),
                  "%r\n%s\n%s" % (replies, text, dq.diag()))
        tap.equal("quiet daemon: clean stop", dq.stop(), 0, dq.diag)

        # A bad metrics_listen is a configuration error; a taken port stops the start.
        bad = dict(conf, metrics_listen="localhost:9469")
        path = tmp.join("bad.conf")
        with open(path, "w") as f:
            f.write(vmtest.format_conf(bad))
        p = subprocess.run([vmtest.vemilter_binary(), "-n", "-c", path], capture_output=True, timeout=30)
        tap.check("metrics_listen = localhost:9469 refused by -n, naming the directive",
                  p.returncode == 1 and b"metrics_listen" in p.stderr + p.stdout, repr(p))
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        taken = dict(conf, metrics_listen="127.0.0.1:%d" % holder.getsockname()[1],
                     socket="unix:" + tmp.join("taken.sock"))
        d2 = Daemon(tmp, taken, name="taken")
        daemons.append(d2)
        d2.spawn()
        rc = d2.wait(20)
        holder.close()
        tap.check("a taken metrics port: the start fails (exit 1) saying so",
                  rc == 1 and "cannot listen there" in d2.log(), d2.diag())
    finally:
        vmtest.tear_down(servers=(farm, dns), daemons=daemons, tmp=tmp)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
