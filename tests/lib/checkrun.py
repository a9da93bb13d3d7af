"""checkrun - run vemilter-check the way the engine tests do, and read what
it prints.

    conf = write_conf(tmp, "x.conf", BASE_LINES, "host_backoff = 1s")
    status, out, err, results, secs, seen = run_check(CHECK, conf, addresses, jobs=10)
    results["a@b.test"] -> ("valid", {"stage": "rcpt", "reason": ..., ...})

Used by test_callout, test_breaker and test_hostrules. Every wait is
bounded by timeout; the process is killed if it overruns.
"""

import re
import subprocess
import time

RESULT = re.compile(r'^(\S+) (\w+) (.*)$')
KV = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def parse_result(line):
    """A result line "ADDRESS OUTCOME key=value ..." -> (address, outcome,
    {key: value}), quotes removed; None for any other line."""
    m = RESULT.match(line)
    if not m:
        return None
    fields = {k: (v[1:-1] if v.startswith('"') else v) for k, v in KV.findall(m.group(3))}
    return m.group(1), m.group(2), fields


def write_conf(tmp, name, base, *extra):
    """A configuration file from base lines; each extra "key = value" line
    replaces the base's line for the same key (a directive may appear once)."""
    lines = list(base)
    for line in extra:
        key = line.split("=", 1)[0].strip()
        lines = [l for l in lines if l.split("=", 1)[0].strip() != key] + [line]
    return tmp.write(name, "\n".join(lines + [""]))


def run_check(check, conf, addresses, jobs=None, verbose=True, timeout=60):
    """check -c conf [-v] [-jN] addresses: (exit status or None, stdout,
    stderr, {address: (outcome, fields)}, seconds, {address: seconds from
    the start when its "* verdict after" line came})."""
    argv = [check, "-c", conf] + (["-v"] if verbose else []) + (["-j%d" % jobs] if jobs else [])
    argv += list(addresses)
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines, seen = [], {}
    deadline = t0 + timeout
    try:
        for raw in iter(p.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            lines.append(line)
            m = re.match(r"^(\S+): \* verdict after (\d+) ms", line)
            if m:
                seen[m.group(1)] = time.monotonic() - t0
            if time.monotonic() > deadline:
                break
        p.wait(max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    err = p.stderr.read().decode("utf-8", "replace")
    p.stdout.close()
    p.stderr.close()
    results = {}
    for line in lines:
        parsed = parse_result(line)
        if parsed and parsed[0] in addresses and not parsed[1].endswith(":"):
            results[parsed[0]] = parsed[1:]
    return p.returncode, "\n".join(lines), err, results, time.monotonic() - t0, seen


def transcript(out, address):
    """The lines of one address in a -v transcript."""
    return "\n".join(l for l in out.splitlines() if l.startswith(address + ": "))
