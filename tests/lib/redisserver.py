"""redisserver - a throw-away redis-server for the tests, and a tiny client.

Standard library only (Debian's /usr/bin/python3). RedisServer starts
Debian's redis-server on 127.0.0.1 with a port and a directory of its own
(nothing shared with a system instance), no persistence unless asked
(persist=True: an append-only file, so a restart keeps the data even after
a kill), `enable-debug-command yes` so a test can make it slow with
DEBUG SLEEP, and optionally a password (requirepass) and an ACL user. It
waits (bounded) until the server answers PING; stop(), kill() and
restart() (same port, same directory) are bounded too.

Client is a minimal RESP2 client over one socket: command(*args) sends one
command and returns the parsed reply (bytes, int, list, None), raising
RedisError for an error reply; every read has a timeout. Everything talks to
loopback only.
"""

import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import vmtest

REDIS_SERVER = "/usr/bin/redis-server"
START_TIMEOUT = 10.0 * vmtest.TIME_SCALE
STOP_TIMEOUT = 10.0


def available():
    """None if redis-server can run here, else the reason (for a skip)."""
    if not os.access(REDIS_SERVER, os.X_OK):
        return "redis-server is not installed (tools/deps.sh --test)"
    return None


class RedisError(Exception):
    """An error reply from the server (its text), or a protocol problem."""


class Client:
    """One connection; command() is one round trip. Not thread-safe: one per thread."""

    def __init__(self, port, host="127.0.0.1", password=None, user=None, db=0, timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        if password is not None:
            self.command(*(["AUTH", user, password] if user else ["AUTH", password]))
        if db:
            self.command("SELECT", str(db))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def _bulk(x):
        if isinstance(x, bytes):
            return x
        return str(x).encode()

    def send(self, *args):
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            b = self._bulk(a)
            parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.sock.sendall(b"".join(parts))

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise RedisError("connection closed by the server")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def read_reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RedisError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            if n < 0:
                return None
            out = []
            for _ in range(n):
                try:
                    out.append(self.read_reply())
                except RedisError as e:  # an error inside an array (EXEC): kept as the item
                    out.append(e)
            return out
        raise RedisError("unexpected reply %r" % line[:80])

    def command(self, *args):
        self.send(*args)
        return self.read_reply()

    def scan_keys(self, match="*"):
        """Every key matching (SCAN, so never a blocking KEYS), sorted, as str."""
        keys, cursor = set(), b"0"
        for _ in range(100000):
            cursor, batch = self.command("SCAN", cursor, "MATCH", match, "COUNT", "1000")
            keys.update(k.decode(errors="surrogateescape") for k in batch)
            if cursor == b"0":
                break
        return sorted(keys)


class RedisServer:
    """A redis-server of the test's own. password: requirepass for the
    default user; user=(name, password): an ACL user with every right."""

    def __init__(self, tmp=None, password=None, user=None, persist=False, port=None):
        self._own_dir = tmp is None
        self.dir = tmp if tmp is not None else vmtest.TempDir(prefix="vemilter-redis-").path
        self.password = password
        self.user = user
        self.persist = persist
        self.port = port or vmtest.free_port()
        self.proc = None
        self.conf_path = os.path.join(self.dir, "redis-%d.conf" % self.port)
        self.log_path = os.path.join(self.dir, "redis-%d.log" % self.port)

    def url(self, db=0, user=None):
        user = user if user is not None else (self.user[0] if self.user else "")
        return "redis://%s127.0.0.1:%d/%d" % (user + "@" if user else "", self.port, db)

    def write_conf(self):
        lines = [
            "bind 127.0.0.1",
            "port %d" % self.port,
            "dir %s" % self.dir,
            "daemonize no",
            "logfile %s" % self.log_path,
            "enable-debug-command yes",
            "save \"\"",
            "appendonly %s" % ("yes" if self.persist else "no"),
            "appendfsync always",
            "appendfilename appendonly-%d.aof" % self.port,
            "appenddirname aof-%d" % self.port,
            "dbfilename dump-%d.rdb" % self.port,
            "databases 16",
        ]
        if self.password is not None:
            lines.append("requirepass %s" % self.password)
        if self.user is not None:
            lines.append("user %s on >%s ~* &* +@all" % self.user)
        with open(self.conf_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    def client(self, **kw):
        """A Client authenticated as this server wants (as the user if there is one)."""
        if "password" not in kw:
            if self.user is not None:
                kw.setdefault("user", self.user[0])
                kw["password"] = self.user[1]
            else:
                kw["password"] = self.password
        return Client(self.port, **kw)

    def command(self, *args, timeout=5.0):
        """One command on a connection of its own (client()); its reply."""
        with self.client(timeout=timeout) as c:
            return c.command(*args)

    def ping(self):
        try:
            with self.client(timeout=1.0) as c:
                return c.command("PING") == b"PONG"
        except (OSError, RedisError):
            return False

    def start(self, timeout=START_TIMEOUT):
        self.write_conf()
        log = open(self.log_path + ".stdout", "ab")
        try:
            self.proc = subprocess.Popen([REDIS_SERVER, self.conf_path], stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        if not vmtest.wait_until(lambda: self.proc.poll() is not None or self.ping(), timeout):
            self.kill()
            raise RuntimeError("redis-server on port %d did not answer PING within %.0f s:\n%s"
                               % (self.port, timeout, self.diag()))
        if self.proc.poll() is not None:
            raise RuntimeError("redis-server on port %d exited with %r:\n%s"
                               % (self.port, self.proc.returncode, self.diag()))
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _wait(self, timeout):
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM (saves first when persistent), then SIGKILL if it lingers."""
        if not self.running():
            return
        self.proc.send_signal(signal.SIGTERM)
        if not self._wait(timeout):
            self.kill()

    def kill(self):
        """SIGKILL: the server dies at once, as in a crash."""
        if not self.running():
            return
        self.proc.kill()
        self._wait(STOP_TIMEOUT)

    def restart(self, timeout=START_TIMEOUT):
        """Stop (if running) and start again on the same port and directory.
        The port may linger briefly after a kill: retried within timeout."""
        self.stop()
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.start(timeout=max(1.0, deadline - time.monotonic()))
            except RuntimeError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def debug_sleep(self, seconds):
        """DEBUG SLEEP in a background thread (the server answers nobody
        meanwhile); returns the thread, join it to know the sleep ended."""
        def sleep():
            try:
                with self.client(timeout=seconds + 10) as c:
                    c.command("DEBUG", "SLEEP", "%g" % seconds)
            except (OSError, RedisError):
                pass
        th = threading.Thread(target=sleep, daemon=True)
        th.start()
        return th

    def log(self):
        return vmtest.read_file(self.log_path) + vmtest.read_file(self.log_path + ".stdout")

    def diag(self):
        return vmtest.tail(self.log(), 20)

    def remove(self):
        """Stop and delete the directory if this object made it."""
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
