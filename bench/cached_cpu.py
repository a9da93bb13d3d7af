#!/usr/bin/python3
"""cached_cpu - vemilter's cost per cached message: CPU, syscalls, context
switches, thread creations and milter round trips, through the real daemon.

The daemon runs with a warm LMDB cache (fake DNS and fake SMTP farm on
loopback fill it first); then --messages sessions are played against it the
way Postfix 3.7's milter8 client plays them, one SMTP session per message:

    OPTNEG (reply) | D C + CONNECT | D H (+ HELO) | D M + MAIL (reply)
    [| D R + RCPT (reply) ...] | ABORT | QUIT

Postfix sends each stage's macros even for a step the milter skipped
(SMFIP_NO*), and its default macro lists unless the milter asked for
others (SETSYMLIST in the OPTNEG reply): both are mimicked, so the number
of packets and of libmilter dispatches per message is the one a real
Postfix causes. --concurrency client processes run at once.

Measured over the measuring phase only (after the warm-up):
  cpu_us/msg    vemilter's utime+stime (/proc/PID/stat, all threads, dead
                ones included) / messages
  ctxsw/msg     context switches (perf stat -e context-switches, all threads)
  syscalls/msg  and clone/msg: a second, shorter phase under strace -c -f
                (strace slows the process: its CPU is not reported)
  rt/msg        milter round trips (packets the client waited a reply for)
  pkts/msg      packets the client sent

The current binary is measured with each milter transport of --transports
(default "libmilter,native": milter_transport), columns named after them.
Given two binaries (--before OLD), both are measured in one run with each
transport (columns before-TRANSPORT and TRANSPORT), phases interleaved
(before, after, before, after ...; --rounds), medians reported: the
machine is shared, so only numbers of one run compare.

With --floor, two more columns: bench/milter_floor.c (compiled with cc),
which speaks the protocol itself, accepts every MAIL and does nothing
else: floor-threads with a thread per connection, floor-epoll with one
epoll loop for all: what the transport costs without libmilter's pool.

Usage: bench/cached_cpu.py [--messages 3000] [--rounds 3] [--concurrency 4]
       [--senders 20] [--gap SECONDS] [--socket unix|inet]
       [--strace-messages 500] [--floor] [--before OLD_BINARY]
       [--transports libmilter,native] [BINARY]
BINARY defaults to the build tree's vemilter. Not part of make check.
"""

import argparse
import multiprocessing
import os
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(HERE, "..", "tests", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fakes"))

import vmtest  # noqa: E402
from vmtest import Daemon, TempDir, base_conf  # noqa: E402
import milterclient as mc  # noqa: E402
from fakedns import FakeDNS  # noqa: E402
from smtpfarm import SmtpFarm  # noqa: E402

# Postfix 3.7's default macro lists (postconf -d milter_*_macros).
POSTFIX_MACROS = {
    mc.SMFIM_CONNECT: "j {daemon_name} {daemon_addr} v _",
    mc.SMFIM_HELO: "{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}",
    mc.SMFIM_ENVFROM: "i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}",
    mc.SMFIM_ENVRCPT: "i {rcpt_addr} {rcpt_host} {rcpt_mailer}",
}
CLIENT_ADDR = "198.51.100.7"
PENDING = "pending"  # event(wait=False): the reply is read later


def macro_values(sender):
    """What a plain (no TLS, no AUTH) Postfix session defines; the queue id
    is not known at MAIL (smtpd_delay_open_until_valid_rcpt = yes)."""
    mail_addr = sender.strip("<>")
    return {"j": "mx.bench.example", "{daemon_name}": "smtpd", "{daemon_addr}": "127.0.0.1",
            "v": "Postfix 3.7.11", "_": "client.example [%s]" % CLIENT_ADDR,
            "{client_addr}": CLIENT_ADDR, "{client_name}": "client.example",
            "{mail_addr}": mail_addr, "{mail_host}": mail_addr.split("@")[-1], "{mail_mailer}": "smtp",
            "{rcpt_addr}": "bob@local.test", "{rcpt_host}": "local.test", "{rcpt_mailer}": "local"}


class PostfixLike:
    """One milter8-style session over a MilterClient; counts packets and
    round trips."""

    def __init__(self, spec, gap=0.0):
        self.c = mc.MilterClient(spec, timeout=30)
        self.gap = gap
        self.packets = 0
        self.round_trips = 0

    def send(self, cmd, data=b""):
        self.packets += 1
        self.c.send_packet(cmd, data)

    def pause(self):
        """the SMTP client's next command: with --gap, libmilter's worker
        gives the session back to its controller in between, as it does
        behind a real Postfix"""
        if self.gap > 0:
            time.sleep(self.gap)

    def reply(self):
        self.round_trips += 1
        return self.c.read_reply()

    def event(self, stage, cmd, data, no_flag, nr_flag, values, wait=True):
        """one stage: its macros, the command, its reply (None: skipped or
        no reply; wait=False: PENDING, read it later with reply())"""
        names = self.c.symlists.get(stage, POSTFIX_MACROS.get(stage, "")).split()
        d = cmd
        for n in names:
            if n in values:
                d += mc._z(n) + mc._z(values[n])
        self.send(mc.SMFIC_MACRO, d)  # sent even when the event is skipped
        if self.c.protocol & no_flag:
            return None
        self.send(cmd, data)
        if self.c.protocol & nr_flag:
            return None
        return self.reply() if wait else PENDING

    def start(self):
        """connect and negotiate (OPTNEG), keeping the milter's macro lists"""
        c = self.c
        c.open()
        self.packets += 1
        c.send_packet(mc.SMFIC_OPTNEG, struct.pack(">III", 6, mc.SMFI_CURR_ACTS, mc.POSTFIX_V6_PROTO_MASK))
        self.round_trips += 1
        code, data = c.read_packet()
        c.version, c.actions, c.protocol = struct.unpack(">III", data[:12])
        rest = data[12:]
        while len(rest) >= 4:
            (stage,) = struct.unpack(">I", rest[:4])
            end = rest.find(b"\0", 4)
            c.symlists[stage] = rest[4:end].decode()
            rest = rest[end + 1:]

    def mail(self, sender):
        """CONNECT, HELO and MAIL FROM as Postfix sends them: MAIL's reply"""
        v = macro_values(sender)
        self.event(mc.SMFIM_CONNECT, mc.SMFIC_CONNECT,
                   mc._z("client.example") + b"4" + struct.pack(">H", 40000) + mc._z(CLIENT_ADDR),
                   mc.SMFIP_NOCONNECT, mc.SMFIP_NR_CONN, v)
        self.pause()
        self.event(mc.SMFIM_HELO, mc.SMFIC_HELO, mc._z("client.example"), mc.SMFIP_NOHELO, mc.SMFIP_NR_HELO, v)
        self.pause()
        return self.event(mc.SMFIM_ENVFROM, mc.SMFIC_MAIL, mc._z(sender), mc.SMFIP_NOMAIL, mc.SMFIP_NR_MAIL, v)

    def rcpt(self, sender, wait=True):
        """RCPT TO:<bob@local.test>: its reply (wait=False: PENDING)"""
        return self.event(mc.SMFIM_ENVRCPT, mc.SMFIC_RCPT, mc._z("<bob@local.test>"), mc.SMFIP_NORCPT,
                          mc.SMFIP_NR_RCPT, macro_values(sender), wait)

    def end(self):
        """ABORT, QUIT, close"""
        self.pause()
        self.send(mc.SMFIC_ABORT)
        self.pause()
        self.send(mc.SMFIC_QUIT)
        self.c.close()

    def message(self, sender):
        self.start()
        r = self.mail(sender)
        final = r
        if r is None or r.code == "c":
            final = self.rcpt(sender)
        self.end()
        return final


def client_worker(args):
    spec, senders, n, gap = args
    packets = rts = 0
    bad = []
    for i in range(n):
        s = PostfixLike(spec, gap)
        r = s.message(senders[i % len(senders)])
        packets += s.packets
        rts += s.round_trips
        if r is None or r.code not in ("a", "c"):
            bad.append(repr(r))
    return packets, rts, bad[:3], len(bad)


def play(spec, senders, messages, concurrency, gap=0.0):
    per = [messages // concurrency + (1 if i < messages % concurrency else 0) for i in range(concurrency)]
    with multiprocessing.Pool(concurrency) as pool:
        out = pool.map(client_worker, [(spec, senders[i:] + senders[:i], n, gap) for i, n in enumerate(per)])
    packets = sum(o[0] for o in out)
    rts = sum(o[1] for o in out)
    nbad = sum(o[3] for o in out)
    if nbad:
        raise SystemExit("%d messages were not accepted, e.g. %s" % (nbad, [b for o in out for b in o[2]][:3]))
    return packets, rts


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)


def perf_available():
    if shutil.which("perf") is None:
        return False
    r = subprocess.run(["perf", "stat", "-x,", "-e", "context-switches", "true"], capture_output=True, text=True)
    return r.returncode == 0 and "context-switches" in r.stderr


class Perf:
    """perf stat -p PID -e context-switches over a phase."""

    def __init__(self, pid):
        self.proc = subprocess.Popen(["perf", "stat", "-x,", "-e", "context-switches,cpu-migrations",
                                      "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        time.sleep(0.3)  # attached

    def stop(self):
        self.proc.send_signal(2)
        _, err = self.proc.communicate(timeout=30)
        out = {}
        for line in err.splitlines():
            parts = line.split(",")
            if len(parts) >= 3 and parts[0].strip().isdigit():
                out[parts[2]] = int(parts[0])
        return out


def strace_phase(pid, spec, senders, messages, concurrency, gap, tmp):
    """syscalls and clones per message under strace -c -f"""
    if shutil.which("strace") is None:
        return None
    path = tmp.join("strace.%d.txt" % pid)
    st = subprocess.Popen(["strace", "-c", "-f", "-o", path, "-p", str(pid)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    play(spec, senders, messages, concurrency, gap)
    time.sleep(0.2)
    st.send_signal(2)
    st.wait(timeout=30)
    calls = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
            if m and m.group(2) != "total":
                calls[m.group(2)] = int(m.group(1))
    return calls


class FloorDaemon:
    """bench/milter_floor.c, compiled here: the transport without libmilter
    and without vemilter's work (see its header)"""

    def __init__(self, tmp, name, mode):
        self.log_path = tmp.join(name + ".log")
        src = os.path.join(HERE, "milter_floor.c")
        binary = tmp.join("milter_floor")
        subprocess.run(["cc", "-O2", "-pthread", "-o", binary, src], check=True)
        path = tmp.join(name + ".sock")
        self.socket = "unix:" + path
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([binary, path, mode], stdout=log, stderr=subprocess.STDOUT)
        if not vmtest.wait_until(lambda: os.path.exists(path), 10):
            raise SystemExit("milter_floor did not listen")
        self.pid = self.proc.pid

    def stop(self):
        self.proc.kill()
        self.proc.wait(timeout=10)


def start_daemon(tmp, name, binary, dns_port, farm_port, sockkind, transport=None):
    if name.startswith("floor-"):
        return FloorDaemon(tmp, name, name[len("floor-"):])
    if sockkind == "inet":
        sock = "inet:%d@127.0.0.1" % vmtest.free_port()
    else:
        sock = "unix:" + tmp.join(name + ".sock")
    conf = base_conf(tmp, name + ".sock", **{
        "socket": sock,
        "dns_servers": "127.0.0.1:%d" % dns_port, "dns_timeout": "2s",
        "helo_name": "probe.vemilter.test", "probe_port": farm_port,
        "probe_allow_networks": "127.0.0.0/8", "verify_budget": "8s",
        "cache": tmp.join(name + ".lmdb"), "client_probe_rate": "0",
    })
    if transport is not None:
        conf["milter_transport"] = transport
    d = Daemon(tmp, conf, name=name, binary=binary)
    d.start()
    return d


def warm(d, senders):
    """One message per sender until every one is answered at MAIL FROM."""
    for _ in range(50):
        pending = []
        for s in senders:
            r = PostfixLike(d.socket).message(s)
            if r is None or r.code != "a":
                pending.append(s)
        if not pending:
            return
        time.sleep(0.2)
    raise SystemExit("the cache did not warm up:\n" + vmtest.tail(vmtest.read_file(d.log_path)))


def measure(d, senders, args, use_perf):
    pid = d.pid
    perf = Perf(pid) if use_perf else None
    t0 = cpu_ticks(pid)
    w0 = time.monotonic()
    packets, rts = play(d.socket, senders, args.messages, args.concurrency, args.gap)
    wall = time.monotonic() - w0
    t1 = cpu_ticks(pid)
    ps = perf.stop() if perf else {}
    hz = os.sysconf("SC_CLK_TCK")
    n = args.messages
    return {
        "cpu_us": (t1 - t0) * 1e6 / hz / n,
        "msgs_s": n / wall,
        "ctxsw": ps.get("context-switches", float("nan")) / n,
        "rt": rts / n,
        "pkts": packets / n,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binary", nargs="?", default=vmtest.vemilter_binary())
    ap.add_argument("--before", help="a second vemilter binary: a 'before-TRANSPORT' column per transport")
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--senders", type=int, default=20)
    ap.add_argument("--floor", action="store_true",
                    help="also measure bench/milter_floor.c: the transport without libmilter, no work")
    ap.add_argument("--gap", type=float, default=0.0,
                    help="seconds between the SMTP client's commands (e.g. 0.002): "
                         "sessions then wait between steps as behind a real Postfix")
    ap.add_argument("--socket", choices=("unix", "inet"), default="unix")
    ap.add_argument("--transports", default="libmilter,native",
                    help="milter_transport values to measure the binary with, comma-separated")
    ap.add_argument("--strace-messages", type=int, default=500, help="0: no strace phase")
    ap.add_argument("--perf-record", metavar="FILE",
                    help="also record one phase of the last binary with perf record -g into FILE")
    args = ap.parse_args()

    builds = []
    for transport in args.transports.split(","):
        if args.before:  # the same transport in the old binary, measured alongside
            builds.append(("before-" + transport, args.before, transport))
        builds.append((transport, args.binary, transport))
    if args.floor:
        builds += [("floor-threads", None, None), ("floor-epoll", None, None)]
    domains = ["d%d.test" % i for i in range(5)]
    zone = {}
    for i, dom in enumerate(domains):
        zone[dom] = {"MX": [[10, "mx." + dom]]}
        zone["mx." + dom] = {"A": ["127.0.0.%d" % (60 + i)]}
    senders = ["<u%d@%s>" % (i, domains[i % len(domains)]) for i in range(args.senders)]
    users = ["u%d" % i for i in range(args.senders)]

    tmp = TempDir("vemilter-cpu-")
    dns = FakeDNS(zone)
    farm = SmtpFarm()
    daemons = {}
    use_perf = perf_available()
    try:
        dns_port = dns.start()
        for i, dom in enumerate(domains):
            farm.add("127.0.0.%d" % (60 + i), "normal", users=users)
        farm_port = farm.start()
        for name, binary, transport in builds:
            d = start_daemon(tmp, name, binary, dns_port, farm_port, args.socket, transport)
            daemons[name] = d
            warm(d, senders)
            play(d.socket, senders, min(200, args.messages), args.concurrency)  # threads, pages
        results = {name: [] for name, _, _ in builds}
        for r in range(args.rounds):
            for name, _, _ in builds:
                results[name].append(measure(daemons[name], senders, args, use_perf))
        straced = {}
        if args.strace_messages > 0:
            for name, _, _ in builds:
                straced[name] = strace_phase(daemons[name].pid, daemons[name].socket, senders,
                                             args.strace_messages, args.concurrency, args.gap, tmp)
        if args.perf_record:
            d = daemons[builds[-1][0]]
            rec = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-g", "-o", args.perf_record,
                                    "-p", str(d.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            play(d.socket, senders, args.messages, args.concurrency, args.gap)
            rec.send_signal(2)
            rec.wait(timeout=60)
    finally:
        for d in daemons.values():
            d.stop()
        dns.stop()
        farm.stop()

    print("cached_cpu: %d messages x %d rounds, %d client processes, %s socket, %d senders, gap %gs; medians"
          % (args.messages, args.rounds, args.concurrency, args.socket, args.senders, args.gap))
    keys = [("cpu_us", "CPU us/msg", "%.0f"), ("msgs_s", "msgs/s (client-bound)", "%.0f"),
            ("ctxsw", "ctx switches/msg", "%.1f"), ("rt", "round trips/msg", "%.2f"),
            ("pkts", "packets/msg", "%.2f")]
    names = [n for n, _, _ in builds]
    print("%-24s" % "" + "".join("%17s" % n for n in names))
    for k, label, fmt in keys:
        row = "%-24s" % label
        for n in names:
            vals = [x[k] for x in results[n]]
            row += "%17s" % (fmt % statistics.median(vals))
        print(row)
    for n in names:
        print("  %s cpu_us per round: %s" % (n, " ".join("%.0f" % x["cpu_us"] for x in results[n])))
    if straced:
        m = args.strace_messages
        row_total = "%-24s" % "syscalls/msg (strace)"
        row_clone = "%-24s" % "clone/msg"
        for n in names:
            calls = straced.get(n) or {}
            row_total += "%17.1f" % (sum(calls.values()) / m)
            row_clone += "%17.2f" % ((calls.get("clone", 0) + calls.get("clone3", 0)) / m)
        print(row_total)
        print(row_clone)
        for n in names:
            calls = straced.get(n) or {}
            top = sorted(calls.items(), key=lambda kv: -kv[1])[:12]
            print("  %s: %s" % (n, " ".join("%s=%.2f" % (k, v / m) for k, v in top)))
    tmp.remove()


if __name__ == "__main__":
    main()
