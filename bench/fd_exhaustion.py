#!/usr/bin/python3
"""fd_exhaustion - the descriptor-exhaustion case of issue 9, measured.

vemilter runs under an open-file limit (soft = hard = --nofile, by
prlimit(1)); --idle MTA connections are opened and left silent (more than
the daemon has descriptors for: the rest wait in the listen backlog, and
the accept loop meets EMFILE; --transport picks which one, libmilter's by
default, as issue 9 measured it). Then: the daemon's CPU use over
--window seconds (from /proc/PID/stat), and how long one normal milter
session (negotiate, connect, MAIL FROM:<>, quit) takes, bounded by
--session-timeout. Optionally the same again after --later seconds.

    bench/fd_exhaustion.py --binary ./vemilter --nofile 256 --idle 300
    bench/fd_exhaustion.py --binary /tmp/old/vemilter --no-milter-timeout

Loopback only (a unix socket in a temporary directory); everything it
starts is stopped at the end.
"""

import argparse
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "lib"))
sys.dont_write_bytecode = True

from milterclient import MilterClient  # noqa: E402


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def open_fds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return -1


def normal_session(path, timeout):
    """Seconds one normal session took, or None if it did not finish."""
    t0 = time.monotonic()
    c = MilterClient("unix:" + path, timeout=timeout)
    try:
        c.optneg()
        c.connect("client.example", "4", 40000, "198.51.100.7")
        r = c.mail("<>", macros={"i": "BENCH"})
        c.quit()
        return time.monotonic() - t0 if r.code == "a" else None
    except Exception:
        return None
    finally:
        c.close()


def measure(pid, path, window, session_timeout):
    c0 = cpu_seconds(pid)
    time.sleep(window)
    cpu = (cpu_seconds(pid) - c0) / window * 100.0
    fds = open_fds(pid)
    took = normal_session(path, session_timeout)
    return cpu, fds, took


def report(label, cpu, fds, took, session_timeout):
    s = "%.2f s" % took if took is not None else "no answer within %d s" % session_timeout
    print("%-28s daemon CPU %5.1f %%   descriptors open %4d   normal session: %s"
          % (label, cpu, fds, s))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default=os.path.join(HERE, "..", "vemilter"))
    ap.add_argument("--nofile", type=int, default=256)
    ap.add_argument("--idle", type=int, default=300)
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument("--session-timeout", type=int, default=30)
    ap.add_argument("--milter-timeout", default="",
                    help="milter_timeout in the config (default: the binary's default)")
    ap.add_argument("--no-milter-timeout", action="store_true",
                    help="a binary without the directive (before issue 9)")
    ap.add_argument("--transport", default="libmilter", choices=("libmilter", "native", "default"),
                    help="milter_transport (default: libmilter, what issue 9 measured; "
                         "\"default\" leaves the binary's)")
    ap.add_argument("--later", type=float, default=0.0,
                    help="measure again this many seconds later")
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.idle + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(want, soft)), hard))

    tmp = tempfile.mkdtemp(prefix="vemilter-bench-")
    path = os.path.join(tmp, "m.sock")
    conf = os.path.join(tmp, "v.conf")
    lines = ["socket = unix:" + path, "user =", "pid_file =", "cache =", "dns_servers = 127.0.0.1:1",
             "helo_name = bench.vemilter.test", "trusted_networks = 192.0.2.0/24"]
    if args.milter_timeout and not args.no_milter_timeout:
        lines.append("milter_timeout = " + args.milter_timeout)
    if args.transport != "default":
        lines.append("milter_transport = " + args.transport)
    with open(conf, "w") as f:
        f.write("\n".join(lines) + "\n")
    log = open(os.path.join(tmp, "v.log"), "wb")
    proc = subprocess.Popen(["/usr/bin/prlimit", "--nofile=%d:%d" % (args.nofile, args.nofile), "--",
                             args.binary, "-f", "-c", conf], stdout=log, stderr=subprocess.STDOUT)
    conns = []
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        base = open_fds(proc.pid)
        t0 = time.monotonic()
        refused = 0
        for _ in range(args.idle):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(2)
            try:
                s.connect(path)
                conns.append(s)
            except OSError:
                refused += 1
                s.close()
        print("vemilter %s under nofile %d: %d descriptors open at rest; %d silent MTA connections "
              "opened in %.1f s (%d not connected)"
              % (args.binary, args.nofile, base, len(conns), time.monotonic() - t0, refused))
        time.sleep(1)
        cpu, fds, took = measure(proc.pid, path, args.window, args.session_timeout)
        report("with them open:", cpu, fds, took, args.session_timeout)
        if args.later > 0:
            time.sleep(args.later)
            cpu, fds, took = measure(proc.pid, path, args.window, args.session_timeout)
            report("%.0f s later:" % args.later, cpu, fds, took, args.session_timeout)
        for s in conns:
            s.close()
        conns = []
        time.sleep(1)
        cpu, fds, took = measure(proc.pid, path, min(args.window, 5.0), args.session_timeout)
        report("after they closed:", cpu, fds, took, args.session_timeout)
    finally:
        for s in conns:
            s.close()
        proc.kill()
        proc.wait(timeout=10)
        log.close()
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
