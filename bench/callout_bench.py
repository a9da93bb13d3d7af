#!/usr/bin/python3
"""callout_bench - probe throughput of the callout engine (vemilter-check)
against the fake SMTP farm, with an artificial latency on every reply.

Runs, in one go and on the same fakes:
  serial:     a sample of the addresses, one at a time (-j 1): the baseline
  concurrent: N distinct addresses over D domains, with at most J probes in
              flight, for each J in --jobs (the last is usually N: all at once)
and reports probes/second for each, the ratio to the serial rate (the
concurrency factor), how many came back valid, the farm's maximum of
simultaneous connections, and the peak memory (max RSS) of vemilter-check.
Numbers are ratios within one run, not absolute promises; past a few hundred
in flight the Python fakes, not vemilter, are what saturates (their drops
show as tempfails, which the valid count makes visible).

Usage: bench/callout_bench.py [--addresses 2000] [--domains 200]
       [--latency 0.02] [--serial 100] [--servers 20] [--jobs 50,250,1000,2000]
       [--set 'host_sessions = 0' ...]
Needs a built tree: VEMILTER_BUILDDIR (default: the source dir).
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fakes"))

from fakedns import FakeDNS  # noqa: E402
from smtpfarm import SmtpFarm  # noqa: E402


def build_zone(domains, servers):
    zone = {}
    for d in range(domains):
        name = "d%03d.bench" % d
        zone[name] = {"MX": [[10, "mx." + name]]}
        zone["mx." + name] = {"A": ["127.0.1.%d" % (d % servers + 1)]}
    return zone


def peak_rss_kib(pid):
    """VmHWM of a running process, in KiB (0 once it is gone)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_check(binary, conf, addresses, jobs):
    """Run vemilter-check; return (seconds, exit status, peak RSS in KiB, output).

    The peak is sampled from /proc every 20 ms while it runs: rusage's
    ru_maxrss would count the memory of this Python process, which the
    child shares until exec (vfork), not vemilter-check's own."""
    with tempfile.TemporaryFile() as out:
        t0 = time.monotonic()
        p = subprocess.Popen([binary, "-c", conf, "-j", str(jobs)] + addresses,
                             stdout=out, stderr=subprocess.STDOUT)
        peak = 0
        while p.poll() is None:
            peak = max(peak, peak_rss_kib(p.pid))
            time.sleep(0.02)
        elapsed = time.monotonic() - t0
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    return elapsed, p.returncode, peak, text


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--addresses", type=int, default=2000)
    ap.add_argument("--domains", type=int, default=200)
    ap.add_argument("--latency", type=float, default=0.02)
    ap.add_argument("--serial", type=int, default=100)
    ap.add_argument("--servers", type=int, default=20)
    ap.add_argument("--jobs", default="50,250,1000,2000")
    ap.add_argument("--set", action="append", default=[], metavar="'DIRECTIVE = VALUE'",
                    help="one more configuration line (e.g. 'host_sessions = 0'), repeatable")
    args = ap.parse_args()

    builddir = os.environ.get("VEMILTER_BUILDDIR", os.path.join(HERE, ".."))
    binary = os.path.join(builddir, "vemilter-check")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    users = ["u%04d" % i for i in range(args.addresses)]
    addresses = ["%s@d%03d.bench" % (u, i % args.domains) for i, u in enumerate(users)]
    dns = FakeDNS(build_zone(args.domains, args.servers))
    farm = SmtpFarm(latency=args.latency)
    tmp = tempfile.mkdtemp(prefix="vemilter-bench-")
    try:
        dns_port = dns.start()
        for s in range(args.servers):
            farm.add("127.0.1.%d" % (s + 1), "normal", users=users)
        farm_port = farm.start()
        conf = os.path.join(tmp, "bench.conf")
        with open(conf, "w") as f:
            f.write("dns_servers = 127.0.0.1:%d\nhelo_name = bench.vemilter.test\n"
                    "probe_port = %d\nprobe_allow_networks = 127.0.0.0/8\n"
                    "probe_timeout = 120s\ncommand_timeout = 60s\nbanner_timeout = 60s\n"
                    # throughput, not politeness: thousands of probes to a
                    # few fake servers would meet the per-host session budget
                    "host_session_rate = 0\n"
                    % (dns_port, farm_port))
            for line in args.set:
                f.write(line + "\n")

        serial_sample = addresses[:args.serial]
        s_time, s_rc, s_rss, _ = run_check(binary, conf, serial_sample, 1)
        s_rate = len(serial_sample) / s_time
        print("callout benchmark: %d addresses over %d domains, %d servers, %.0f ms per reply"
              % (len(addresses), args.domains, args.servers, args.latency * 1000))
        print("  -j 1     %4d probes %7.2f s %7.1f probes/s  exit %d  peak RSS %5.1f MiB  (baseline)"
              % (len(serial_sample), s_time, s_rate, s_rc, s_rss / 1024))
        all_valid = s_rc == 0
        for jobs in [int(j) for j in args.jobs.split(",")]:
            farm.reset()
            c_time, c_rc, c_rss, c_out = run_check(binary, conf, addresses, jobs)
            valid = sum(1 for line in c_out.splitlines() if " valid " in line)
            c_rate = len(addresses) / c_time
            print("  -j %-5d %4d probes %7.2f s %7.1f probes/s  %4d valid  max in flight %4d  "
                  "peak RSS %5.1f MiB  %5.1fx serial"
                  % (jobs, len(addresses), c_time, c_rate, valid, farm.max_concurrent(), c_rss / 1024,
                     c_rate / s_rate))
            all_valid = all_valid and valid > 0
        return 0 if all_valid else 1
    finally:
        farm.stop()
        dns.stop()
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    sys.exit(main())
