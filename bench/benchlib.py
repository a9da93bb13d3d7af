"""benchlib - what the Postfix benches (postfix_bench.py, shared_bench.py)
share around their Bench: the command-line options both take, the config
of a vemilter behind the bench Postfix, and the run of one bench (what it
needs, the open-file limit, setup/run/report, the logs' tails on a
failure, teardown always). The bench itself, its phases and its report
stay in its own file.
"""

import argparse
import os
import resource
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "lib"))

import postfixinst  # noqa: E402
import vmtest  # noqa: E402


def arg_parser(doc, latency, procs, messages_help, fresh_help, quick_help):
    """The options both benches take, with this bench's defaults (latency:
    seconds before each farm reply; procs: load generator processes) and
    wording; the caller adds its own before parse_args()."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--messages", type=int, default=2000, help=messages_help)
    ap.add_argument("--fresh", type=int, default=200, help=fresh_help)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--latency", type=float, default=latency, help="seconds before each farm reply")
    ap.add_argument("--domains", type=int, default=50)
    ap.add_argument("--servers", type=int, default=10)
    ap.add_argument("--retry", type=float, default=1.0, help="seconds before a 4xx'd sender tries again")
    ap.add_argument("--procs", type=int, default=procs, help="load generator processes")
    ap.add_argument("--quick", action="store_true", help=quick_help)
    return ap


def milter_conf(tmp, socket, dns_port, farm_port, **extra):
    """The config of a vemilter behind the bench Postfix: listening on
    socket (libmilter notation; a unix socket world-writable, since
    Postfix's smtpd connects as postfix), loopback clients checked, the
    bench's fake DNS server (dns_port) and SMTP farm (farm_port, at
    127.0.0.0/8); extra: the daemon's own directives (its cache, its
    transport, ...), over these."""
    conf = vmtest.base_conf(tmp, socket_mode="0666", trusted_networks="192.0.2.0/24")
    conf.update({
        "socket": socket,
        "dns_servers": "127.0.0.1:%d" % dns_port, "helo_name": "probe.bench",
        "probe_port": farm_port, "probe_allow_networks": "127.0.0.0/8",
        "verify_budget": "8s",
        # throughput, not politeness: thousands of probes to 10 fake
        # servers would otherwise meet the per-host session budget, and
        # thousands of new senders from the one load generator the
        # per-client budget (client_probe_rate, 60 a minute)
        "host_session_rate": 0, "client_probe_rate": 0,
    })
    conf.update(extra)
    return conf


def start_milter(tmp, name, socket, dns_port, farm_port, **extra):
    """A vemilter named name with milter_conf(...), started (waits, bounded,
    until it listens); the caller stops it."""
    d = vmtest.Daemon(tmp, milter_conf(tmp, socket, dns_port, farm_port, **extra), name=name)
    d.start()
    return d


def run(make_bench, args, needs=()):
    """One bench: make_bench(args) set up, run, reported and torn down
    (whatever happens). needs: more checks like postfixinst.available (a
    reason it cannot run, or None). The exit status: 0 done, 1 Postfix
    failed, 2 cannot run here; anything else is raised, after the tails of
    Postfix's and every daemon's log."""
    why = postfixinst.available()
    for need in needs:
        why = why or need()
    if why:
        print("cannot run: %s" % why)
        return 2
    if not os.access(vmtest.vemilter_binary(), os.X_OK):
        print("no vemilter binary at %s (set VEMILTER_BUILDDIR)" % vmtest.vemilter_binary())
        return 2
    # the load generator, the farm and the fakes share this process's fds
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    b = make_bench(args)
    try:
        b.setup()
        b.run()
        b.report()
    except postfixinst.PostfixError as e:
        print("Postfix failed: %s" % e)
        return 1
    except BaseException:
        if b.postfix is not None:
            sys.stderr.write("Postfix log tail:\n%s\n" % vmtest.tail(b.postfix.log(), 20))
        for d in b.milters.values():
            sys.stderr.write("%s log tail:\n%s\n" % (d.name, vmtest.tail(d.log(), 20)))
        raise
    finally:
        b.teardown()
    print("bench run time %.0f s" % (time.monotonic() - b.t_start))
    return 0
