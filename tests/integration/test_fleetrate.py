#!/usr/bin/python3
"""test_fleetrate - the fleet's budgets on Redis (issue 12).

host_session_rate and domain_probe_rate across the fleet (fleetrate.h).
A real redis-server on loopback (tests/lib/redisserver.py), a fake DNS
server, a fake SMTP farm and two vemilter daemons sharing the Redis cache,
driven by our milter client; host_session_rate = RATE, host_sessions = 0
(one session per probe, so the rate alone is measured), senders at many
domains whose one MX is the same farm address. Checked:

- shared: senders one after another, alternating between A and B: the
  farm sees at most RATE + 1 sessions at the address in the minute (the
  stated overshoot, fleetrate.h: a host decides on the total of its own
  last reply, blind to what the other began since: one session per other
  host at most here), where each alone would have opened RATE; Redis holds
  "vemilter:r:s:<address>:<minute>" with the fleet's total and a TTL of at
  most 2 minutes; the senders over the budget are not rejected, and a host
  says why with "across the fleet" when the other's sessions counted;
- domain_probe_rate = DRATE shared the same way: addresses at one domain,
  one after another over both daemons: at most DRATE + 1 probes, the
  refusal logged "(N probes this minute across the fleet)";
- client_probe_rate = CRATE likewise: one client, senders at many domains
  (each its own MX address): at most CRATE + 1 probes, the refusal logged
  "(N probes this minute across the fleet)";
- all at once (both daemons, concurrent messages): measured and printed,
  never more than each host's own budget (2 * RATE);
- Redis killed: each host falls back to its own budgets at other
  addresses (the farm sees 2 * RATE sessions, 2 * DRATE and 2 * CRATE
  probes: the controls, so the shared counts can fail), a valid sender at another
  address is accepted, nothing is rejected for Redis's sake.

The counts are per wall-clock minute (the window every host agrees on): a
phase waits (bounded, < 30 s) for a minute with room left before it
starts. In the phases one after another, each message waits (bounded,
2 s) until its host holds Redis's answer to what it spent (Redis's total
and the host's /metrics): the bound is for a host that decides on that
answer, and a loaded machine must not let the next message in first.
The world (fakes, Redis, daemons): tests/lib/fleetlib.py. TAP on stdout;
loopback only; every wait bounded.
"""

import os
import re
import sys
import threading
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))

import fleetlib  # noqa: E402
import vmtest  # noqa: E402
from milterclient import MilterClient  # noqa: E402

RATE = 4
DRATE = 2  # domain_probe_rate
CRATE = 3  # client_probe_rate
CLIENT = "198.51.100.9"  # the client of the client_probe_rate phase; every other message has its own
CLIENT2 = "198.51.100.10"  # ... and of its control, Redis down
N_DOMAINS = 12
N_USERS = 8
RATED = "127.0.0.80"   # every r<i>.test
BURST = "127.0.0.81"   # every b<i>.test: the concurrent phase
DOWN = "127.0.0.82"    # every d<i>.test: Redis down
GOOD = "127.0.0.83"    # ok.test
MANY = "127.0.0.84"    # many.test: the domain budget, shared
MANY2 = "127.0.0.85"   # many2.test: the domain budget, Redis down
USERS = ["alice"] + ["u%d" % i for i in range(1, N_USERS + 1)]
CLIENTED = ["127.0.0.%d" % (100 + i) for i in range(1, 2 * N_USERS + 1)]  # c<i>.test: one address each

FARM = {addr: ("normal", {"users": USERS}) for addr in [RATED, BURST, DOWN, GOOD, MANY, MANY2] + CLIENTED}


def zone():
    z = {}
    for prefix, addr in (("r", RATED), ("b", BURST), ("d", DOWN)):
        for i in range(1, N_DOMAINS + 1):
            z["%s%d.test" % (prefix, i)] = {"MX": [[10, "mx.%s%d.test" % (prefix, i)]]}
            z["mx.%s%d.test" % (prefix, i)] = {"A": [addr]}
    for i, addr in enumerate(CLIENTED, 1):
        z["c%d.test" % i] = {"MX": [[10, "mx.c%d.test" % i]]}
        z["mx.c%d.test" % i] = {"A": [addr]}
    for name, addr in (("ok", GOOD), ("many", MANY), ("many2", MANY2)):
        z["%s.test" % name] = {"MX": [[10, "mx.%s.test" % name]]}
        z["mx.%s.test" % name] = {"A": [addr]}
    return z


CLIENTS = iter("198.51.%d.%d" % (101 + n // 250, 1 + n % 250) for n in range(100000))


def session(d, sender, client=None):
    """One message (from a client address of its own unless told);
    (first digit of the RCPT reply, transcript)."""
    client = client or next(CLIENTS)
    c = MilterClient(d.socket, timeout=20)
    try:
        c.session(client_addr=client)
        m = c.mail(sender, macros={"i": "Q1"})
        got = m
        if m.code == "c":
            got = c.rcpt("<bob@local.test>")
        c.quit()
        digit = "2" if got.code in ("c", "a") else (got.smtp_code or "?")[0]
        return digit, c.transcript_text()
    finally:
        c.close()


CONF = {"client_probe_rate": str(CRATE), "domain_probe_rate": str(DRATE), "host_session_rate": str(RATE),
        "host_sessions": "0", "catchall_host_domains": "0"}


def minute_with_room(need_s=30):
    """Wait (at most 60 - need_s s) until the wall-clock minute has need_s
    left; the minute's number (what the Redis key ends with)."""
    left = 60 - time.time() % 60
    if left < need_s:
        time.sleep(left + 0.2)
    return int(time.time() // 60)


def budget_totals(rc, minute):
    """{key: the fleet's total} of every budget key of the minute in Redis."""
    return {k: int(rc.command("GET", k) or 0) for k in rc.scan_keys("vemilter:r:*:%d" % minute)}


def answered(fleet):
    """How many budget reports Redis has answered, over every daemon (their metrics)."""
    n = 0
    for d in fleet.daemons:
        m = re.search(r'^vemilter_shared_budget_events_total\{result="reported"\} (\d+)$', fleet.metrics(d), re.M)
        n += int(m.group(1)) if m else 0
    return n


class Waits:
    """What settled_session waited for in one phase (diagnostics)."""

    def __init__(self):
        self.seconds = []
        self.unsettled = []  # a line each

    def summary(self):
        return "waited for the answers %d times, at most %.3f s, %d not settled" % (
            len(self.seconds), max(self.seconds, default=0), len(self.unsettled))

    def diag(self, first):
        return "\n".join([first, self.summary()] + self.unsettled)


def settled_session(fleet, rc, minute, d, sender, key, spent, waits, client=None):
    """session() at d, then wait (bounded) until d holds Redis's answer to
    what the message spent: Redis counts at key what the farm saw
    (spent(): the phase's sessions or probes, each reported once taken),
    and the daemons' answered reports are at least as many as the budget
    keys Redis changed since the message began (Redis runs a report
    before it answers it; a late report of an earlier message counts on
    both sides).

    The bound "the rate + 1 per other host" (fleetrate.h) is for a host
    that decides on the answer to its own last report: blind to what the
    other host began since, one session (or probe) here. Had the next
    message reached d before that answer, d would decide on an older
    one, blind to more of the other's: a loaded machine would break the
    bound by the test's timing, not the daemon's (seen: Redis's writes
    paused 300 ms after each message gave 8 sessions for a rate of 4
    without this wait, 5 with it). So each message waits for the answer
    instead of assuming it came first; a wait that ends unsettled is
    noted in waits (a Waits: the checks' diagnostics).
    (digit, transcript), as session()."""
    before, was = budget_totals(rc, minute), answered(fleet)
    digit, t = session(d, sender, client=client)

    def settled():
        now = budget_totals(rc, minute)
        changed = sum(1 for k, v in now.items() if before.get(k) != v)
        return now.get(key, 0) == spent() and answered(fleet) - was >= changed
    t0 = time.monotonic()
    ok = vmtest.wait_until(settled, 2 * vmtest.TIME_SCALE)
    waits.seconds.append(time.monotonic() - t0)
    if not ok:
        now = budget_totals(rc, minute)
        waits.unsettled.append("%s at %s: not settled in %.1f s: %s %d, the farm %d; %d answered, %d keys changed"
                               % (sender, d.name, time.monotonic() - t0, key, now.get(key, 0), spent(),
                                  answered(fleet) - was, sum(1 for k, v in now.items() if before.get(k) != v)))
    return digit, t


def main():
    return fleetlib.run(body, zone(), FARM, skip="the fleet's session budget", conf=CONF)


def body(tap, fleet):
    farm, redis = fleet.farm, fleet.redis
    rc = redis.client()
    a, b = fleet.connected(tap, metrics=("a", "b"))

    # Shared: one after another, alternating.
    minute = minute_with_room()
    key = "vemilter:r:s:%s:%d" % (RATED, minute)
    digits, waits = [], Waits()
    t0 = time.monotonic()
    for i in range(1, N_DOMAINS + 1):
        d = (a, b)[i % 2]
        digit, t = settled_session(fleet, rc, minute, d, "<alice@r%d.test>" % i, key,
                                   lambda: farm.connections(RATED), waits)
        digits.append(digit)
    secs = time.monotonic() - t0
    farm.wait_idle(timeout=5)
    shared = farm.connections(RATED)
    total = rc.command("GET", key)
    pttl = rc.command("PTTL", key)
    tap.diag("shared, one after another: %d senders, host_session_rate = %d, 2 daemons: %d sessions "
             "at %s (%d over the rate), Redis total %r, %.2f s" % (N_DOMAINS, RATE, shared, RATED,
                                                                  shared - RATE, total, secs))
    tap.diag(waits.summary())
    tap.check("shared: the farm saw at least %d and at most %d sessions (the rate + 1 per other host)"
              % (RATE, RATE + 1), RATE <= shared <= RATE + 1, waits.diag("sessions %d" % shared))
    tap.check("shared: fewer than the two hosts' own budgets (%d)" % (2 * RATE), shared < 2 * RATE,
              "sessions %d" % shared)
    tap.check("Redis holds the fleet's total for the minute, its TTL within 2 minutes",
              total is not None and int(total) == shared and 0 < pttl <= 120000,
              "key %s total %r pttl %r" % (key, total, pttl))
    tap.equal("shared: %d senders accepted, the rest tempfailed, none rejected" % shared,
              (digits.count("2"), digits.count("4"), digits.count("5")),
              (shared, N_DOMAINS - shared, 0), "%r" % digits)
    said = a.log_lines("across the fleet") + b.log_lines("across the fleet")
    tap.diag("what a host over the fleet's budget logged: %s" % (said[0] if said else "nothing"))
    fleet_lines = a.log_lines(r"host_session_rate: \d+ sessions to %s this minute across the fleet"
                              % RATED.replace(".", r"\.")) + \
        b.log_lines(r"host_session_rate: \d+ sessions to %s this minute across the fleet"
                    % RATED.replace(".", r"\."))
    tap.check("a host over the fleet's budget says so (\"... this minute across the fleet\")",
              len(fleet_lines) >= 1, a.diag() + b.diag())
    budget = re.compile(r'vemilter_shared_budget_events_total\{result="(\w+)"\} (\d+)')
    counts = {}
    for text in (fleet.metrics(a), fleet.metrics(b)):
        for kind, n in budget.findall(text):
            counts[kind] = counts.get(kind, 0) + int(n)
    tap.check("metrics: reports answered, and refusals with the fleet's spending counted",
              counts.get("reported", 0) >= 2 and counts.get("refused_fleet", 0) >= 1
              and counts.get("refused", 0) >= counts.get("refused_fleet", 0), "%r" % counts)

    # domain_probe_rate, shared: one domain, many addresses.
    minute = minute_with_room()
    digits, waits = [], Waits()
    for i in range(1, N_USERS + 1):
        digit, t = settled_session(fleet, rc, minute, (a, b)[i % 2], "<u%d@many.test>" % i,
                                   "vemilter:r:d:many.test:%d" % minute, lambda: farm.connections(MANY), waits)
        digits.append(digit)
    farm.wait_idle(timeout=5)
    many = farm.connections(MANY)
    tap.diag("domain_probe_rate = %d, shared, one after another: %d addresses at one domain, 2 daemons: "
             "%d probes (%d over the rate); %s" % (DRATE, N_USERS, many, many - DRATE, waits.summary()))
    tap.check("domain_probe_rate shared: at least %d and at most %d probes of the domain"
              % (DRATE, DRATE + 1), DRATE <= many <= DRATE + 1, waits.diag("sessions %d" % many))
    tap.equal("domain_probe_rate shared: %d accepted, the rest tempfailed, none rejected" % many,
              (digits.count("2"), digits.count("4"), digits.count("5")),
              (many, N_USERS - many, 0), "%r" % digits)
    said = a.log_lines(r"domain_probe_rate for domain many\.test \(\d+ probes this minute across the fleet\)") \
        + b.log_lines(r"domain_probe_rate for domain many\.test \(\d+ probes this minute across the fleet\)")
    tap.check("a host over the fleet's domain budget says so", len(said) >= 1, a.diag() + b.diag())

    # client_probe_rate, shared: one client, many domains.
    minute = minute_with_room()
    digits, waits = [], Waits()
    for i in range(1, N_USERS + 1):
        digit, t = settled_session(fleet, rc, minute, (a, b)[i % 2], "<alice@c%d.test>" % i,
                                   "vemilter:r:c:%s:%d" % (CLIENT, minute),
                                   lambda: sum(farm.connections(x) for x in CLIENTED[:N_USERS]), waits,
                                   client=CLIENT)
        digits.append(digit)
    farm.wait_idle(timeout=5)
    probes = sum(farm.connections(x) for x in CLIENTED[:N_USERS])
    tap.diag("client_probe_rate = %d, shared, one after another: %d senders from one client, 2 daemons: "
             "%d probes (%d over the rate); %s" % (CRATE, N_USERS, probes, probes - CRATE, waits.summary()))
    tap.check("client_probe_rate shared: at least %d and at most %d probes for the client"
              % (CRATE, CRATE + 1), CRATE <= probes <= CRATE + 1, waits.diag("probes %d" % probes))
    tap.check("client_probe_rate shared: none rejected", "5" not in digits, "%r" % digits)
    said = a.log_lines(r"client_probe_rate for client %s \(\d+ probes this minute across the fleet\)"
                       % CLIENT.replace(".", r"\.")) \
        + b.log_lines(r"client_probe_rate for client %s \(\d+ probes this minute across the fleet\)"
                      % CLIENT.replace(".", r"\."))
    tap.check("a host over the fleet's client budget says so", len(said) >= 1, a.diag() + b.diag())

    # All at once: measured.
    minute = minute_with_room()
    results = []
    lock = threading.Lock()

    def one(i):
        d = (a, b)[i % 2]
        try:
            digit, _ = session(d, "<alice@b%d.test>" % i)
        except Exception as e:  # reported below
            digit = "!%s" % e
        with lock:
            results.append(digit)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(1, N_DOMAINS + 1)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    farm.wait_idle(timeout=5)
    burst = farm.connections(BURST)
    tap.diag("shared, all at once: %d senders split over 2 daemons: %d sessions at %s (%d over the rate)"
             % (N_DOMAINS, burst, BURST, burst - RATE))
    tap.check("all at once: at least %d sessions, never more than the hosts' own budgets (%d)"
              % (RATE, 2 * RATE), RATE <= burst <= 2 * RATE, "sessions %d" % burst)
    tap.check("all at once: none rejected", len(results) == N_DOMAINS and "5" not in results
              and all(r in ("2", "4") for r in results), "%r" % results)

    # Redis down: each its own budget.
    redis.kill()
    for d in (a, b):
        tap.check("%s: logged Redis unavailable" % d.name,
                  d.wait_log(r"shared cache .*unavailable", 5) is not None, d.diag)
    minute_with_room()
    digits = []
    for i in range(1, N_DOMAINS + 1):
        d = (a, b)[i % 2]
        digit, t = session(d, "<alice@d%d.test>" % i)
        digits.append(digit)
    farm.wait_idle(timeout=5)
    down = farm.connections(DOWN)
    tap.diag("Redis down, one after another: %d sessions at %s" % (down, DOWN))
    tap.equal("Redis down: each host its own budget: %d sessions (the control)" % (2 * RATE), down,
              2 * RATE)
    tap.equal("Redis down: %d accepted, the rest tempfailed, none rejected" % (2 * RATE),
              (digits.count("2"), digits.count("4"), digits.count("5")),
              (2 * RATE, N_DOMAINS - 2 * RATE, 0), "%r" % digits)
    digit, t = session(a, "<alice@ok.test>")
    tap.check("Redis down: a valid sender at another MX accepted", digit == "2", t)
    digits = []
    for i in range(1, N_USERS + 1):
        digit, t = session((a, b)[i % 2], "<u%d@many2.test>" % i)
        digits.append(digit)
    farm.wait_idle(timeout=5)
    many2 = farm.connections(MANY2)
    tap.diag("domain_probe_rate, Redis down: %d probes of one domain" % many2)
    tap.equal("Redis down: each host its own domain budget: %d probes (the control)" % (2 * DRATE), many2,
              2 * DRATE)
    tap.check("Redis down: none rejected", "5" not in digits, "%r" % digits)
    digits = []
    for i in range(N_USERS + 1, 2 * N_USERS + 1):
        digit, t = session((a, b)[i % 2], "<alice@c%d.test>" % i, client=CLIENT2)
        digits.append(digit)
    farm.wait_idle(timeout=5)
    probes = sum(farm.connections(x) for x in CLIENTED[N_USERS:])
    tap.diag("client_probe_rate, Redis down: %d probes for one client" % probes)
    tap.equal("Redis down: each host its own client budget: %d probes (the control)" % (2 * CRATE), probes,
              2 * CRATE)
    tap.check("Redis down: none rejected", "5" not in digits, "%r" % digits)

    for d in fleet.daemons:
        tap.check("%s: no crash" % d.name, d.proc.poll() is None, d.diag())


if __name__ == "__main__":
    sys.exit(main())
