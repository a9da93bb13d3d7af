"""fleetlib - the world of the fleet tests (issue 12), set up and torn down
as one: a fake DNS server, a fake SMTP farm, a redis-server of the test's
own (tests/lib/redisserver.py) and vemilter daemons sharing it as their
cache.

test_shared, test_hostshare and test_fleetrate each need this world.
Fleet owns every piece of it (the temp dir, the fakes, the Redis servers
made by redis_server(), the daemons made by daemon()); close() ends them
all whatever state they are in; connected() starts its first daemons and
checks each reached Redis. run() is such a test file's main: TAP, a
skip when redis-server is missing (if the test asks for one), the fleet
started, the test's body, an exception as a failed check with every
daemon's log, the teardown always.

Standard library only (Debian's /usr/bin/python3); loopback only; every
wait is bounded (by the pieces' own bounds).
"""

import os
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "fakes"))

import redisserver  # noqa: E402
import vmtest  # noqa: E402
from fakedns import FakeDNS  # noqa: E402
from smtpfarm import SmtpFarm  # noqa: E402

# What every daemon of a fleet test is given unless the test says
# otherwise: budgets short enough for a test run, long enough for a loaded
# machine; no client_probe_rate (its own tests set one).
FLEET_CONF = {
    "connect_timeout": "2s", "banner_timeout": "5s", "command_timeout": "5s", "probe_timeout": "10s",
    "verify_budget": "6s", "client_probe_rate": "0",
}


class Fleet:
    """zone: the fake DNS zone (tests/fakes/fakedns.py); farm: {address:
    (behaviour, options)} for tests/fakes/smtpfarm.py; redis: options of
    the main RedisServer (password, user); conf: the test's directives for
    every daemon (over FLEET_CONF; a daemon's own over those)."""

    def __init__(self, zone, farm, redis=None, conf=None):
        self.tmp = vmtest.TempDir()
        self.dns = FakeDNS(zone)
        self.farm = SmtpFarm()
        self.farm_spec = dict(farm)
        self.conf_over = dict(FLEET_CONF, **(conf or {}))
        self.servers = []       # every RedisServer made here: removed by close()
        self.daemons = []       # every Daemon made here: killed by close()
        self.metrics_ports = {}  # daemon name -> its metrics_listen port on 127.0.0.1
        self.dns_port = self.farm_port = None
        self.redis = self.redis_server("redis", **(redis or {}))

    def start(self):
        """The fakes and the main Redis server (the daemons come one by one:
        daemon())."""
        self.dns_port = self.dns.start()
        for address, (behaviour, options) in self.farm_spec.items():
            self.farm.add(address, behaviour, **options)
        self.farm_port = self.farm.start()
        self.redis.start()
        return self

    def redis_server(self, name, cls=redisserver.RedisServer, **options):
        """A RedisServer (cls: a subclass) in a directory of its own in the
        temp dir, not started; close() removes it (a test may earlier)."""
        path = self.tmp.join(name)
        os.makedirs(path, exist_ok=True)
        server = cls(path, **options)
        self.servers.append(server)
        return server

    def conf(self, name, redis=None, **over):
        """A daemon's config: probe_conf (the fakes), the Redis server
        (default the main one) as the cache, as its ACL user if it has one
        (the user's password in a file next to the server's), a local tier
        of its own, FLEET_CONF, the test's directives, then over."""
        redis = redis or self.redis
        conf = {"cache": "redis://127.0.0.1:%d" % redis.port, "cache_fallback": self.tmp.join(name + ".lmdb")}
        if redis.user:
            user, password = redis.user
            pw_file = os.path.join(redis.dir, "user.pw")
            with open(pw_file, "w") as f:
                f.write(password + "\n")
            conf.update(cache="redis://%s@127.0.0.1:%d" % (user, redis.port), cache_password_file=pw_file)
        conf.update(self.conf_over)
        conf.update(over)
        return vmtest.probe_conf(self.tmp, name + ".sock", self.dns_port, self.farm_port, **conf)

    def daemon(self, name, redis=None, metrics=False, start=True, **over):
        """A daemon with conf(name, redis, **over), debug logging, started
        (unless start is false); metrics: served on a free port of its own
        (metrics())."""
        if metrics:
            self.metrics_ports[name] = vmtest.free_port()
            over["metrics_listen"] = "127.0.0.1:%d" % self.metrics_ports[name]
        d = vmtest.Daemon(self.tmp, self.conf(name, redis, **over), name=name, debug=True)
        self.daemons.append(d)
        if start:
            d.start()
        return d

    def metrics(self, d):
        """d's /metrics (made with metrics=True)."""
        return vmtest.metrics_text(self.metrics_ports[d.name])

    def connected(self, tap, names=("a", "b"), metrics=(), timeout=5):
        """The fleet's first daemons: one named each of names, started one
        after another (those in metrics served with metrics), then a check
        each that it logged the main Redis server connected within timeout
        s. The daemons, in order."""
        daemons = [self.daemon(name, metrics=name in metrics) for name in names]
        for d in daemons:
            tap.check("%s: connected to the shared cache" % d.name,
                      d.wait_log(r"shared cache redis://\S*127\.0\.0\.1:%d/0: connected" % self.redis.port, timeout)
                      is not None, d.diag)
        return daemons

    def diag(self):
        return "\n".join(d.diag() for d in self.daemons)

    def close(self):
        """Everything gone, whatever state it is in; never raises."""
        for d in self.daemons:
            d.kill()
        for server in self.servers:
            try:
                server.remove()
            except Exception:
                pass
        vmtest.tear_down(servers=(self.farm, self.dns), tmp=self.tmp)


def run(body, zone, farm, skip=None, redis=None, conf=None):
    """A fleet test file's main: body(tap, fleet) with a started Fleet(zone,
    farm, redis, conf); its exit code. skip: the name of the skipped check
    when redis-server is not installed (None: no skip, the start fails)."""
    tap = vmtest.Tap()
    why = redisserver.available() if skip else None
    if why:
        tap.skip(skip, why)
        return tap.done()
    fleet = Fleet(zone, farm, redis=redis, conf=conf)
    try:
        fleet.start()
        body(tap, fleet)
    except Exception:
        tap.check("no exception", False, traceback.format_exc() + "\n" + fleet.diag())
    finally:
        fleet.close()
    return tap.done()
