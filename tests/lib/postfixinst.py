"""postfixinst - a throw-away Postfix instance for integration tests.

Debian's postfix package (3.7) is installed, possibly with "No configuration"
(no /etc/postfix/main.cf). We never touch /etc/postfix nor start the system
instance: everything lives in a temp dir and is driven with
"postfix -c DIR start|stop".

Set-up decisions (see also the comments in PostfixInstance.main_cf):

- config_directory DIR/conf holds our own main.cf and master.cf; every other
  directory (daemon, command, meta, shlib) points at Debian's install.
  "postfix -c DIR" run as root needs no alternate_config_directories (only
  the set-gid commands postdrop/postqueue check that list, and we use none).
- The queue directory must exist (root-owned, not group/world-writable)
  before "postfix start"; post-install create-missing (run by postfix-script)
  then creates the queue subdirectories owned by the postfix user and
  data_directory. The temp dir is 0755 and root-owned so "postfix check"
  has nothing to complain about and the unprivileged daemons can reach it.
- No chroot (the "n" column in master.cf), so a unix milter socket path is
  the same for smtpd as for us.
- smtpd listens on 127.0.0.1:FREEPORT only (inet_interfaces = 127.0.0.1,
  inet_protocols = ipv4); clients may bind any 127.0.0.0/8 source address.
- No DNS at all: smtpd_peername_lookup = no (the sandbox has no resolver
  that answers; a reverse lookup would only add delay), and nothing is ever
  delivered by SMTP: every transport is "discard:", and the master.cf has no
  smtp/lmtp/local/pipe/virtual service at all.
- relay_domains = test.example with relay_recipient_maps empty: any local
  part @test.example is accepted; anything else gets "Relay access denied".
- Logging: maillog_file in the temp dir (maillog_file_prefixes must allow
  it) with the postlog service in master.cf, since there is no syslog here.
- Gotcha: the postfix command prints its fatal errors only to a terminal
  (otherwise to syslog, which does not exist here). We run it on a pty so
  its complaints end up in our diagnostics.
- Stopping: "postfix -c DIR stop" returns at once; we then wait (bounded)
  for the master process (queue/pid/master.pid) to be gone and SIGKILL the
  master and its children (only processes whose executable is under
  Postfix's daemon directory) if it is not.
"""

import os
import pty
import select
import signal
import subprocess
import time

import vmtest

POSTFIX = "/usr/sbin/postfix"
DAEMON_DIR = "/usr/lib/postfix/sbin"


def available():
    """None if a Postfix instance can be run here, else the reason."""
    if not os.path.exists(POSTFIX):
        return "postfix is not installed (apt-get install postfix)"
    if not os.path.isdir(DAEMON_DIR):
        return "no Postfix daemon directory %s" % DAEMON_DIR
    if os.geteuid() != 0:
        return "Postfix instances need root"
    try:
        import pwd
        pwd.getpwnam("postfix")
        import grp
        grp.getgrnam("postdrop")
    except KeyError as e:
        return "missing Postfix user/group: %s" % e
    return None


def run_on_pty(argv, timeout=60, env=None):
    """Run argv with stdout/stderr on a pseudo-terminal; return
    (exit code or None on timeout, output text)."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave,
                                stderr=slave, close_fds=True, env=env,
                                start_new_session=True)
    except OSError as e:
        os.close(master)
        os.close(slave)
        return 127, str(e)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select([master], [], [], min(left, 0.2))
            if r:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the other side is closed
                    chunk = b""
                if not chunk:
                    if proc.poll() is not None:
                        break
                    # all writers closed, but the process runs on
                    time.sleep(0.05)
                    continue
                out += chunk
            elif proc.poll() is not None:
                # drained and exited
                break
        try:
            rc = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait(timeout=10)
            rc = None
    finally:
        os.close(master)
    return rc, out.decode("utf-8", errors="replace").replace("\r\n", "\n")


class PostfixError(Exception):
    pass


class PostfixInstance:
    """p = PostfixInstance(tmp, milter="unix:/path"); p.start(); ...; p.stop()

    p.port is smtpd's port on 127.0.0.1; p.log() the maillog text.
    """

    def __init__(self, tmp, milter=None, extra_main=None, hostname="mx.test.example"):
        self.tmp = tmp
        self.base = tmp.join("postfix")
        self.conf_dir = os.path.join(self.base, "conf")
        self.queue_dir = os.path.join(self.base, "queue")
        self.data_dir = os.path.join(self.base, "data")
        self.maillog = os.path.join(self.base, "maillog")
        self.milter = milter
        self.extra_main = dict(extra_main or {})
        self.hostname = hostname
        self.port = None
        self.master_pid = None
        self.command_output = []  # (argv, rc, output)
        self.started = False

    # ------------------------------------------------------------ config

    def main_cf(self):
        p = {
            "compatibility_level": "3.6",
            "config_directory": self.conf_dir,
            "queue_directory": self.queue_dir,
            "data_directory": self.data_dir,
            "meta_directory": "/etc/postfix",   # postfix-files, dynamicmaps.cf (read only)
            "command_directory": "/usr/sbin",
            "daemon_directory": DAEMON_DIR,
            "shlib_directory": "/usr/lib/postfix",
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": self.hostname,
            "mydomain": "test.example",
            "myorigin": "$myhostname",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            # nobody is trusted for relaying; relay only to test.example
            "mynetworks": "",
            "relay_domains": "test.example",
            "relay_recipient_maps": "",
            "smtpd_relay_restrictions": "reject_unauth_destination",
            "smtpd_recipient_restrictions": "",
            "smtpd_sender_restrictions": "",
            # everything ends in discard: never the network
            "default_transport": "discard:",
            "relay_transport": "discard:",
            "local_transport": "discard:",
            "virtual_transport": "discard:",
            "fallback_transport": "",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "biff": "no",
            # no DNS here
            "smtpd_peername_lookup": "no",
            "smtp_dns_support_level": "disabled",
            # fast and quiet
            "smtpd_error_sleep_time": "0",
            "smtpd_soft_error_limit": "100",
            "smtpd_hard_error_limit": "100",
            "in_flow_delay": "0",
            "smtpd_banner": "$myhostname ESMTP test",
            # logging
            "maillog_file": self.maillog,
            "maillog_file_prefixes": self.base,
            # milter
            "milter_protocol": "6",
            "milter_default_action": "tempfail",
            "milter_connect_timeout": "10s",
            "milter_command_timeout": "10s",
            "milter_content_timeout": "10s",
        }
        if self.milter:
            p["smtpd_milters"] = self.milter
        p.update(self.extra_main)
        return "".join("%s = %s\n" % kv for kv in p.items())

    def master_cf(self):
        # Only what a message from smtpd to discard needs; no delivery agent
        # that could reach the network.
        return """\
# service type  private unpriv  chroot  wakeup  maxproc command
127.0.0.1:%(port)d inet n  -       n       -       -       smtpd
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
""" % {"port": self.port}

    def write_config(self):
        for d in (self.base, self.conf_dir, self.queue_dir):
            os.makedirs(d, exist_ok=True)
            os.chown(d, 0, 0)
            os.chmod(d, 0o755)
        for name, text in (("main.cf", self.main_cf()), ("master.cf", self.master_cf())):
            p = os.path.join(self.conf_dir, name)
            with open(p, "w") as f:
                f.write(text)
            os.chmod(p, 0o644)

    # ------------------------------------------------------------ control

    def postfix(self, *args, timeout=60):
        argv = [POSTFIX, "-c", self.conf_dir] + list(args)
        env = dict(os.environ)
        env.pop("MAIL_CONFIG", None)
        rc, out = run_on_pty(argv, timeout=timeout, env=env)
        self.command_output.append((argv, rc, out))
        return rc, out

    def read_master_pid(self):
        try:
            with open(os.path.join(self.queue_dir, "pid", "master.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def start(self, timeout=30, attempts=2):
        last = None
        for _ in range(attempts):
            self.port = vmtest.free_port("127.0.0.1")
            self.write_config()
            rc, out = self.postfix("start", timeout=timeout)
            self.started = True
            if rc != 0:
                last = "postfix start exited %s" % rc
                continue
            ok = vmtest.wait_until(
                lambda: self.read_master_pid() and
                vmtest.socket_listening("inet:%d@127.0.0.1" % self.port), timeout)
            self.master_pid = self.read_master_pid()
            if ok:
                return self
            last = "smtpd not listening on 127.0.0.1:%d" % self.port
            self.stop()
        raise PostfixError("%s\n%s" % (last, self.diag()))

    def _postfix_processes(self):
        """The master and its children that run Postfix programs."""
        pids = []
        if self.master_pid:
            for pid in [self.master_pid] + vmtest.children_of(self.master_pid):
                try:
                    exe = os.readlink("/proc/%d/exe" % pid)
                except OSError:
                    continue
                if exe.startswith(DAEMON_DIR + "/"):
                    pids.append(pid)
        return pids

    def stop(self, timeout=20):
        """postfix stop, wait for the master to go, SIGKILL leftovers."""
        if not self.started:
            return
        self.master_pid = self.read_master_pid() or self.master_pid
        procs = self._postfix_processes()
        self.postfix("stop", timeout=timeout)
        gone = vmtest.wait_until(
            lambda: not any(vmtest.pid_alive(p) for p in procs), timeout)
        if not gone:
            for p in procs:
                if vmtest.pid_alive(p):
                    try:
                        os.kill(p, signal.SIGKILL)
                    except OSError:
                        pass
            vmtest.wait_until(lambda: not any(vmtest.pid_alive(p) for p in procs), 5)
        self.started = False

    # ------------------------------------------------------------ diagnostics

    def log(self):
        return vmtest.read_file(self.maillog)

    def log_size(self):
        try:
            return os.path.getsize(self.maillog)
        except OSError:
            return 0

    def wait_log(self, regex, timeout=5.0, start=0):
        import re
        r = re.compile(regex, re.M)
        return vmtest.wait_until(lambda: r.search(self.log(), start), timeout)

    def diag(self):
        parts = []
        for argv, rc, out in self.command_output[-4:]:
            parts.append("$ %s  (exit %s)" % (" ".join(argv), rc))
            if out.strip():
                parts.append(out.rstrip())
        parts.append("Postfix maillog %s (tail):" % self.maillog)
        parts.append(vmtest.tail(self.log()) or "(empty)")
        return "\n".join(parts)

    def queue_files(self):
        """Names of queue files still in incoming/active/deferred/hold."""
        out = []
        for sub in ("incoming", "active", "deferred", "hold", "maildrop"):
            d = os.path.join(self.queue_dir, sub)
            for root, _dirs, files in os.walk(d):
                out.extend(os.path.join(sub, os.path.relpath(os.path.join(root, f), d))
                           for f in files)
        return out


def smtp_client(port, source="127.0.0.1", timeout=20):
    """An SMTP client connected to the instance from a loopback source
    address, after a successful EHLO (AssertionError otherwise)."""
    import smtplib
    s = smtplib.SMTP(timeout=timeout, source_address=(source, 0), local_hostname="client.example")
    s.connect("127.0.0.1", port)
    code, msg = s.ehlo("client.example")
    if code != 250:
        raise AssertionError("EHLO answered %d %r" % (code, msg))
    return s


def smtp_close(s):
    """QUIT if the server still listens; close in any case."""
    try:
        s.quit()
    except Exception:
        try:
            s.close()
        except Exception:
            pass
