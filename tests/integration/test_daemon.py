#!/usr/bin/python3
"""test_daemon - vemilter as a process: options, config check, start/stop,
signals, pid file, sockets, privilege drop, in-flight sessions at shutdown.

TAP on stdout; exit 0 only if every case passed. Loopback only; every wait
is bounded.
"""

import grp
import os
import pwd
import signal
import socket
import stat
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import vmtest  # noqa: E402
from vmtest import Daemon, TempDir, base_conf, run  # noqa: E402
from milterclient import MilterClient  # noqa: E402

BIN = vmtest.vemilter_binary()
VERSION = "vemilter 0.1.0"
LOG_LINE = r"^vemilter\[(\d+)\]: (error|warning|notice|info|debug): \S"


def cmd_diag(p):
    return "exit code: %r\nstdout:\n%s\nstderr:\n%s" % (p.returncode, p.stdout, p.stderr)


def short_session(spec, sender="<>", client="198.51.100.7", timeout=5):
    """optneg + connect + MAIL sender; returns (reply, client transcript)."""
    c = MilterClient(spec, timeout=timeout)
    try:
        c.optneg()
        fam = "6" if ":" in client else "4"
        c.connect("client.example", fam, 40000, client)
        c.helo("client.example")
        r = c.mail(sender, macros={"i": "DAEMONTEST"})
        if r.code == "c":
            r = c.rcpt("<user@test.example>")
        c.abort()
        c.quit()
        return r, c.transcript_text()
    finally:
        c.close()


# ---------------------------------------------------------------- command line

def t_version(tap, cleanup):
    p = run([BIN, "-V"])
    tap.check("-V exits 0", p.returncode == 0, cmd_diag(p))
    tap.equal("-V prints the version", p.stdout.strip(), VERSION, cmd_diag(p))


def t_help(tap, cleanup):
    p = run([BIN, "-h"])
    tap.check("-h exits 0", p.returncode == 0, cmd_diag(p))
    out = p.stdout
    tap.check("-h prints usage on stdout", "usage" in out.lower(), cmd_diag(p))
    missing = [o for o in ("-c", "-f", "-n", "-d", "-V", "-h") if o not in out]
    tap.check("-h mentions every option", not missing, "missing: %s\n%s" % (missing, cmd_diag(p)))
    tap.check("-h prints nothing on stderr", p.stderr == "", cmd_diag(p))


def t_long_help(tap, cleanup):
    """--help and --version for every program (issue 11)"""
    for prog in (BIN, vmtest.vemilter_binary().replace("/vemilter", "/vemilter-cache"),
                 vmtest.vemilter_binary().replace("/vemilter", "/vemilter-check")):
        name = os.path.basename(prog)
        p = run([prog, "--help"])
        tap.check("%s --help exits 0 with the usage on stdout" % name,
                  p.returncode == 0 and "usage" in p.stdout.lower() and p.stderr == "", cmd_diag(p))
        p = run([prog, "--version"])
        tap.check("%s --version prints its name and version" % name,
                  p.returncode == 0 and p.stdout.strip() == "%s %s" % (name, VERSION.split()[-1]), cmd_diag(p))


def t_check_environment(tap, cleanup):
    """-n checks what the daemon checks at start: the user exists, the cache
    opens (as that user)"""
    tmp = TempDir()
    cleanup.add(tmp.remove)
    conf = tmp.write("nouser.conf", "user = no-such-user-here\ncache = %s\n" % tmp.join("c.lmdb"))
    p = run([BIN, "-n", "-c", conf])
    tap.check("-n: a user that does not exist is an error (exit 1, named)",
              p.returncode == 1 and "no-such-user-here" in p.stderr and "does not exist" in p.stderr
              and "no errors" not in p.stdout, cmd_diag(p))
    conf = tmp.write("nocache.conf", "user = \ncache = %s\n" % tmp.join("missing", "dir", "c.lmdb"))
    p = run([BIN, "-n", "-c", conf])
    tap.check("-n: a cache that cannot open is a warning (the daemon runs without it): exit 0, named",
              p.returncode == 0 and "warning" in p.stderr and "cache" in p.stderr, cmd_diag(p))
    conf = tmp.write("ok.conf", "user = \ncache = %s\n" % tmp.join("c.lmdb"))
    p = run([BIN, "-n", "-c", conf])
    tap.check("-n: a cache that opens: no errors", p.returncode == 0 and "no errors" in p.stdout, cmd_diag(p))


def t_unknown_option(tap, cleanup):
    p = run([BIN, "-Z"])
    tap.check("unknown option exits 2", p.returncode == 2, cmd_diag(p))
    tap.check("unknown option: usage on stderr", "usage" in p.stderr.lower(), cmd_diag(p))
    tap.check("unknown option: nothing on stdout", p.stdout == "", cmd_diag(p))


def t_check_good(tap, cleanup):
    tmp = TempDir()
    cleanup.add(tmp.remove)
    senders = tmp.write("senders.txt", "# allowed senders\nboss@partner.example\n\nceo@partner.example\n")
    conf = tmp.write("good.conf", "\n".join([
        "# a complete, valid configuration",
        "",
        "socket = unix:%s" % tmp.join("m.sock"),
        "socket_mode = 0660",
        "socket_group = ",
        "user = ",
        "pid_file = %s" % tmp.join("v.pid"),
        "cache = %s" % tmp.join("c.lmdb"),
        "syslog_facility = mail",
        "log_level = debug",
        "trusted_networks = 127.0.0.0/8, ::1/128, 192.0.2.0/24",
        "skip_authenticated = yes",
        "allow_sender_domains = partner.example, example.org",
        "allow_senders = file:%s, someone@example.net" % senders,
        "exempt_recipients = postmaster, abuse",
        "bad_syntax_reply = 553 5.1.7 Sender address rejected: %r",
        "",
    ]))
    p = run([BIN, "-n", "-c", conf])
    tap.check("-n on a good config exits 0", p.returncode == 0, cmd_diag(p))
    tap.equal("-n on a good config prints 'no errors'", p.stdout, "vemilter: %s: no errors\n" % conf,
              cmd_diag(p))
    tap.check("-n on a good config prints nothing on stderr", p.stderr == "", cmd_diag(p))
    tap.check("-n creates no socket", not os.path.exists(tmp.join("m.sock")))
    tap.check("-n writes no pid file", not os.path.exists(tmp.join("v.pid")))


def t_check_bad(tap, cleanup):
    tmp = TempDir()
    cleanup.add(tmp.remove)
    lines = [
        ("# comment line", False),
        ("socket = unix:%s" % tmp.join("m.sock"), False),
        ("no_such_directive = 1", True),                 # unknown directive
        ("socket_mode = 0999", True),                     # not octal
        ("log_level = loud", True),                       # bad enum
        ("trusted_networks = 10.0.0.0/33, ::1/128", True),  # prefix out of range
        ("skip_authenticated = perhaps", True),           # not a boolean
        ("this line has no equals sign", True),           # syntax
        ("exempt_recipients = postmaster, abuse", False),
        ("allow_senders = file:%s" % tmp.join("missing", "list.txt"), True),  # unreadable list file
        ("syslog_facility = nowhere", True),              # bad enum
        ("bad_syntax_reply = 250 2.1.0 fine", True),      # not a 4xx/5xx reply
        ("allow_sender_domains = partner.example", False),
        ("socket_group = ", False),
    ]
    conf = tmp.write("bad.conf", "\n".join(l for l, _ in lines) + "\n")
    p = run([BIN, "-n", "-c", conf])
    tap.check("-n on a bad config exits 1", p.returncode == 1, cmd_diag(p))
    tap.check("-n on a bad config prints nothing on stdout", p.stdout == "", cmd_diag(p))
    for no, (line, bad) in enumerate(lines, 1):
        tag = "%s:%d:" % (conf, no)
        if bad:
            tap.check("-n reports line %d (%s)" % (no, line.split("=")[0].strip()),
                      tag in p.stderr, "want %r in stderr\n%s" % (tag, cmd_diag(p)))
        elif line and not line.startswith("#"):
            tap.check("-n does not flag good line %d" % no, tag not in p.stderr, cmd_diag(p))
    # Every stderr line is FILE:LINE: message.
    other = [l for l in p.stderr.splitlines()
             if l and not l.startswith(conf + ":")]
    tap.check("-n error lines are all 'FILE:LINE: message'", not other,
              "other lines: %r\n%s" % (other, cmd_diag(p)))


def t_check_names(tap, cleanup):
    """-n fails, as the start would, when the user or socket_group named
    does not exist (the unit's ExecStartPre runs -n)."""
    tmp = TempDir()
    cleanup.add(tmp.remove)
    for directive in ("user", "socket_group"):
        conf = tmp.write("%s.conf" % directive, "socket = unix:%s\n%s = no-such-name-vemilter\n"
                         % (tmp.join("m.sock"), directive))
        p = run([BIN, "-n", "-c", conf])
        tap.check("-n with a %s that does not exist exits 1 naming it" % directive,
                  p.returncode == 1 and "no-such-name-vemilter" in p.stderr and "no errors" not in p.stdout,
                  cmd_diag(p))


def t_missing_config(tap, cleanup):
    tmp = TempDir()
    cleanup.add(tmp.remove)
    missing = tmp.join("does-not-exist.conf")
    p = run([BIN, "-n", "-c", missing])
    tap.check("-n with a missing config exits 1", p.returncode == 1, cmd_diag(p))
    tap.check("-n with a missing config names the file", missing in p.stderr, cmd_diag(p))
    p = run([BIN, "-f", "-c", missing], timeout=10)
    tap.check("-f with a missing config exits 1", p.returncode == 1, cmd_diag(p))
    tap.check("-f with a missing config names the file", missing in (p.stderr + p.stdout),
              cmd_diag(p))


# ---------------------------------------------------------------- lifecycle

def _uid_gid(name):
    pw = pwd.getpwnam(name)
    return pw.pw_uid, pw.pw_gid


def t_lifecycle(tap, cleanup):
    """Several daemons started side by side, then stopped together (libmilter,
    with milter_transport = libmilter, needs a few seconds to notice a stop;
    in parallel the file stays fast)."""
    tmp = TempDir()
    cleanup.add(tmp.remove)
    scen = []  # (name, daemon, sig, post_check(rc))

    def add(name, daemon, sig, post):
        cleanup.add(daemon.kill)
        scen.append((name, daemon, sig, post))

    def started(name, d):
        try:
            d.start()
            return True
        except vmtest.DaemonError as e:
            tap.check("%s: daemon starts and listens" % name, False, str(e))
            return False

    def files_removed(name, d, paths):
        def post(rc):
            tap.check("%s: exit code 0" % name, rc == 0, "exit code %r\n%s" % (rc, d.diag()))
            for what, p in paths:
                tap.check("%s: %s removed at exit" % (name, what), not os.path.exists(p), d.diag)
        return post

    # A: SIGTERM, pid file, default socket_mode, log line format, no debug without -d
    a_sock, a_pid = tmp.join("a.sock"), tmp.join("a.pid")
    a = Daemon(tmp, base_conf(tmp, "a.sock", pid_file=a_pid), name="a")
    if started("SIGTERM", a):
        tap.check("SIGTERM: started daemon is running", a.running(), a.diag)
        pid_text = vmtest.read_file(a_pid)
        tap.equal("pid file holds the daemon's pid", pid_text.strip(), str(a.pid), a.diag)
        tap.check("pid file is one line ending in a newline", pid_text.count("\n") == 1
                  and pid_text.endswith("\n"), "pid file %r" % pid_text)
        tap.check("unix socket created", vmtest.is_socket_file(a_sock), a.diag)
        mode = stat.S_IMODE(os.stat(a_sock).st_mode) if os.path.exists(a_sock) else None
        tap.equal("default socket_mode is 0660", oct(mode) if mode is not None else None,
                  oct(0o660), a.diag)
        r, tr = short_session(a.socket, "<a..b@example.com>")
        tap.check("SIGTERM daemon answers a milter session", r.code == "y", tr)
        add("SIGTERM", a, signal.SIGTERM, files_removed("SIGTERM", a, [("pid file", a_pid),
                                                                     ("socket", a_sock)]))

    # B: SIGINT, socket_mode 0666
    b_sock, b_pid = tmp.join("b.sock"), tmp.join("b.pid")
    b = Daemon(tmp, base_conf(tmp, "b.sock", pid_file=b_pid, socket_mode="0666"), name="b")
    if started("SIGINT", b):
        tap.equal("SIGINT daemon: pid file holds its pid", vmtest.read_file(b_pid).strip(),
                  str(b.pid), b.diag)
        mode = stat.S_IMODE(os.stat(b_sock).st_mode) if os.path.exists(b_sock) else None
        tap.equal("socket_mode 0666 applied", oct(mode) if mode is not None else None,
                  oct(0o666), b.diag)
        add("SIGINT", b, signal.SIGINT, files_removed("SIGINT", b, [("pid file", b_pid),
                                                                   ("socket", b_sock)]))

    # C: a stale socket (a socket file nobody listens on) is replaced
    c_sock = tmp.join("c.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(c_sock)
    s.close()  # never listened: the file stays, connect() gets ECONNREFUSED
    c = Daemon(tmp, base_conf(tmp, "c.sock"), name="c", debug=True)
    if started("stale socket", c):
        # (the inode number may well be reused, so "listening" is the proof)
        tap.check("stale socket replaced by a listening one",
                  vmtest.is_socket_file(c_sock) and vmtest.socket_listening(c.socket), c.diag)
        r, tr = short_session(c.socket, "<a..b@example.com>")
        tap.check("daemon on the replaced socket answers (bad sender rejected at RCPT)",
                  r.code == "y", tr + "\n" + c.diag())
        add("stale socket", c, signal.SIGTERM, files_removed("stale socket", c, [("socket", c_sock)]))

    # D: socket_mode 0640 and socket_group (root only: chown to a group)
    if vmtest.have_root():
        d_sock = tmp.join("d.sock")
        gname = "postfix" if _group_exists("postfix") else "nogroup"
        # A pid file: start() waits for it, and it is written once the socket is the group's.
        d = Daemon(tmp, base_conf(tmp, "d.sock", pid_file=tmp.join("d.pid"), socket_mode="0640",
                                  socket_group=gname), name="d")
        if started("socket_group", d):
            st = os.stat(d_sock)
            tap.equal("socket_mode 0640 applied", oct(stat.S_IMODE(st.st_mode)), oct(0o640), d.diag)
            tap.equal("socket_group %s applied" % gname, st.st_gid, grp.getgrnam(gname).gr_gid, d.diag)
            add("socket_group", d, signal.SIGTERM, files_removed("socket_group", d, [("socket", d_sock)]))
    else:
        tap.skip("socket_group applied", "not root")

    # E: inet socket on loopback
    port4 = vmtest.free_port("127.0.0.1")
    e = Daemon(tmp, base_conf(tmp, socket="inet:%d@127.0.0.1" % port4), name="e")
    if started("inet", e):
        r, tr = short_session(e.socket, "<>")
        tap.check("inet:PORT@127.0.0.1 socket answers a milter session", r.code == "a",
                  tr + "\n" + e.diag())

        def e_post(rc, e=e, port4=port4):
            tap.check("inet: exit code 0", rc == 0, "exit code %r\n%s" % (rc, e.diag()))
            tap.check("inet: port closed at exit",
                      not vmtest.socket_listening("inet:%d@127.0.0.1" % port4), e.diag)
        add("inet", e, signal.SIGTERM, e_post)

    # F: inet6 socket on ::1
    if _have_ipv6_loopback():
        port6 = vmtest.free_port("::1")
        f = Daemon(tmp, base_conf(tmp, socket="inet6:%d@::1" % port6), name="f")
        if started("inet6", f):
            r, tr = short_session(f.socket, "<>", client="2001:db8::7")
            tap.check("inet6:PORT@::1 socket answers a milter session", r.code == "a",
                      tr + "\n" + f.diag())
            add("inet6", f, signal.SIGTERM,
                lambda rc, f=f: tap.check("inet6: exit code 0", rc == 0,
                                          "exit code %r\n%s" % (rc, f.diag())))
    else:
        tap.skip("inet6:PORT@::1 socket answers a milter session", "no ::1 here")

    # G: user = nobody (root only): runs as nobody after opening the socket
    if vmtest.have_root():
        nuid, ngid = _uid_gid("nobody")
        rundir = tmp.join("run")
        os.mkdir(rundir)
        os.chown(rundir, nuid, ngid)  # like /run/vemilter owned by the service user
        os.chmod(rundir, 0o755)
        g_sock, g_pid = os.path.join(rundir, "g.sock"), os.path.join(rundir, "g.pid")
        g = Daemon(tmp, base_conf(tmp, socket="unix:" + g_sock, user="nobody", pid_file=g_pid),
                   name="g")
        if started("nobody", g):
            want = "%d\t%d\t%d\t%d" % (nuid, nuid, nuid, nuid)
            vmtest.wait_until(lambda: vmtest.proc_status(g.pid).get("Uid") == want, 5)
            st = vmtest.proc_status(g.pid)
            tap.equal("user = nobody: real/effective/saved/fs uid are nobody's",
                      st.get("Uid"), want, g.diag)
            gwant = "%d\t%d\t%d\t%d" % (ngid, ngid, ngid, ngid)
            tap.equal("user = nobody: gids are nobody's group", st.get("Gid"), gwant, g.diag)
            groups = st.get("Groups", "").split()
            tap.check("user = nobody: no supplementary root group", "0" not in groups,
                      "Groups: %r" % st.get("Groups"))
            tap.equal("user = nobody: pid file holds its pid", vmtest.read_file(g_pid).strip(),
                      str(g.pid), g.diag)
            r, tr = short_session(g.socket, "<>")
            tap.check("daemon running as nobody answers a milter session", r.code == "a",
                      tr + "\n" + g.diag())
            add("nobody", g, signal.SIGTERM, files_removed("nobody", g, [("pid file", g_pid),
                                                                        ("socket", g_sock)]))
    else:
        tap.skip("user = nobody", "not root")

    # Stop them all at once.
    codes = vmtest.stop_all([(d, sig) for _n, d, sig, _p in scen])
    for (name, d, sig, post), rc in zip(scen, codes):
        post(rc)

    # Log format, -d or not (daemons are stopped: logs complete).
    if a.log():
        bad = [l for l in a.log().splitlines() if not _log_line_ok(l, a.pid)]
        tap.check("-f log lines are 'vemilter[PID]: LEVEL: message'", not bad,
                  "bad lines: %r\n%s" % (bad, a.diag()))
        tap.check("no debug lines without -d (log_level info)",
                  not a.log_lines(r"^vemilter\[\d+\]: debug: "), a.diag)
        tap.check("verdict logged at info", bool(a.log_lines(r"^vemilter\[\d+\]: info: verdict ")),
                  a.diag)
    if c.log():
        bad = [l for l in c.log().splitlines() if not _log_line_ok(l, c.pid)]
        tap.check("-d log lines are 'vemilter[PID]: LEVEL: message'", not bad,
                  "bad lines: %r\n%s" % (bad, c.diag()))
        tap.check("-d enables debug lines", bool(c.log_lines(r"^vemilter\[\d+\]: debug: ")), c.diag)


def _log_line_ok(line, pid):
    import re
    m = re.match(LOG_LINE, line)
    return bool(m) and int(m.group(1)) == pid


def _group_exists(name):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def _have_ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            s.bind(("::1", 0))
            return True
        finally:
            s.close()
    except OSError:
        return False


def t_live_socket(tap, cleanup):
    """Another process listens on the unix socket: vemilter exits 1 and
    leaves the socket alone."""
    tmp = TempDir()
    cleanup.add(tmp.remove)
    path = tmp.join("live.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cleanup.add(listener.close)
    listener.bind(path)
    listener.listen(8)
    listener.settimeout(5)
    ino = os.stat(path).st_ino
    pid_file = tmp.join("live.pid")
    d = Daemon(tmp, base_conf(tmp, "live.sock", pid_file=pid_file), name="live")
    cleanup.add(d.kill)
    d.spawn()
    rc = d.wait(15)
    tap.check("socket in use by another process: exit 1", rc == 1, "exit code %r\n%s" % (rc, d.diag()))
    tap.check("socket in use: an error is logged", bool(d.log_lines(r": error: ")), d.diag)
    tap.check("socket in use: the error names the socket", path in d.log(), d.diag)
    tap.check("socket in use: the socket file is left in place",
              vmtest.is_socket_file(path) and os.stat(path).st_ino == ino, d.diag)
    ok = False
    try:
        # vemilter's own liveness probe may still sit in the backlog: drain it.
        listener.setblocking(False)
        for _ in range(16):
            try:
                listener.accept()[0].close()
            except BlockingIOError:
                break
        listener.settimeout(5)
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(5)
        c.connect(path)
        conn, _ = listener.accept()
        conn.sendall(b"still mine")
        ok = c.recv(64) == b"still mine"
        conn.close()
        c.close()
    except OSError as e:
        tap.diag("connect to the other process's socket: %r" % e)
    tap.check("socket in use: the other process still gets connections", ok)
    tap.check("socket in use: no pid file left behind", not os.path.exists(pid_file), d.diag)


def _file_id(path):
    """(inode, mtime_ns, content) of a file, None if it is missing."""
    try:
        st = os.stat(path)
        return st.st_ino, st.st_mtime_ns, vmtest.read_file(path)
    except OSError:
        return None


def t_second_instance(tap, cleanup):
    """A second vemilter on the socket of a running one, unix and inet:
    exit 1 with a message saying so; the running daemon's pid file and
    socket are untouched and it goes on serving. Then: a pid file that
    names another process is left alone at exit; a socket that cannot be
    listened on leaves no pid file."""
    tmp = TempDir()
    cleanup.add(tmp.remove)
    port = vmtest.free_port("127.0.0.1")
    cases = [("unix", base_conf(tmp, "two.sock", pid_file=tmp.join("unix.pid"))),
             ("inet", base_conf(tmp, socket="inet:%d@127.0.0.1" % port,
                                pid_file=tmp.join("inet.pid")))]
    firsts = []
    for kind, conf in cases:
        first = Daemon(tmp, conf, name="first-" + kind)
        cleanup.add(first.kill)
        try:
            first.start()
        except vmtest.DaemonError as e:
            tap.check("%s: the first daemon starts" % kind, False, str(e))
            continue
        firsts.append((kind, first))
        pid_file = conf["pid_file"]
        sock_path = conf["socket"][5:] if conf["socket"].startswith("unix:") else None
        before_pid = _file_id(pid_file)
        before_sock = os.stat(sock_path).st_ino if sock_path else None
        tap.equal("%s: the first daemon's pid file names it" % kind,
                  before_pid[2].strip() if before_pid else None, str(first.pid), first.diag)
        time.sleep(0.02)  # so that a rewrite would show in the mtime
        second = Daemon(tmp, conf, name="second-" + kind)
        cleanup.add(second.kill)
        second.spawn()
        rc = second.wait(15)
        tap.equal("%s: a second instance on the same socket exits 1" % kind, rc, 1, second.diag)
        tap.check("%s: it says vemilter seems to be running already" % kind,
                  bool(second.log_lines(r"error: .*already running\?")), second.diag)
        tap.check("%s: its message names the socket" % kind,
                  conf["socket"] in second.log() or (sock_path or "\0") in second.log(), second.diag)
        tap.equal("%s: the running daemon's pid file is untouched (inode, mtime, pid)" % kind,
                  _file_id(pid_file), before_pid, second.diag)
        if sock_path:
            tap.check("%s: the running daemon's socket file is untouched" % kind,
                      vmtest.is_socket_file(sock_path) and os.stat(sock_path).st_ino == before_sock,
                      second.diag)
        r, tr = short_session(first.socket, "<>")
        tap.check("%s: the first daemon still serves" % kind, r.code == "a", tr + first.diag())

    # The pid file now names someone else (a restart raced us): left alone.
    for kind, first in firsts:
        if kind == "unix":
            with open(first.conf["pid_file"], "w") as f:
                f.write("1\n")
    codes = vmtest.stop_all([(d, signal.SIGTERM) for _k, d in firsts])
    for (kind, first), rc in zip(firsts, codes):
        tap.equal("%s: the first daemon stops with 0" % kind, rc, 0, first.diag)
        pid_file = first.conf["pid_file"]
        if kind == "unix":
            tap.equal("unix: a pid file naming another process is left at exit",
                      vmtest.read_file(pid_file, None), "1\n", first.diag)
            tap.check("unix: ... and the daemon says so",
                      bool(first.log_lines(r"notice: pid file .* names pid 1: left alone")), first.diag)
        else:
            tap.check("inet: its own pid file is removed at exit", not os.path.exists(pid_file),
                      first.diag)

    # Something else holds the inet port: exit 1, no pid file ever written.
    other = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    cleanup.add(other.close)
    other.bind(("127.0.0.1", 0))
    other.listen(4)
    busy = "inet:%d@127.0.0.1" % other.getsockname()[1]
    pid_file = tmp.join("busy.pid")
    d = Daemon(tmp, base_conf(tmp, socket=busy, pid_file=pid_file), name="busy")
    cleanup.add(d.kill)
    d.spawn()
    rc = d.wait(15)
    tap.equal("port held by another program: exit 1", rc, 1, d.diag)
    tap.check("port held by another program: the error says the address is in use",
              bool(d.log_lines(r"error: cannot listen on %s: the address is in use" % busy)), d.diag)
    tap.check("port held by another program: no pid file written", not os.path.exists(pid_file),
              d.diag)


def t_inflight(tap, cleanup):
    """A milter session open at SIGTERM finishes; the daemon exits after it."""
    tmp = TempDir()
    cleanup.add(tmp.remove)
    sock = tmp.join("inflight.sock")
    d = Daemon(tmp, base_conf(tmp, "inflight.sock"), name="inflight", debug=True)
    cleanup.add(d.kill)
    d.start()
    c = MilterClient(d.socket, timeout=5)
    cleanup.add(c.close)
    c.optneg()
    c.connect("client.example", "4", 40001, "198.51.100.9")
    c.helo("client.example")

    d.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    # During the drain vemilter keeps serving: a new session started now
    # still gets verdicts (fewer tempfails during a restart than refusing it).
    # Wait (bounded) until the daemon logged that it is draining.
    draining = d.wait_log(r"stopping: waiting up to \d+ s for 1 milter session", 10)
    tap.check("after SIGTERM the daemon drains the open session", draining, d.diag)
    p = MilterClient(d.socket, timeout=5)
    cleanup.add(p.close)
    try:
        p.optneg()
        p.connect("late.example", "4", 40002, "198.51.100.10")
        r = p.mail("<>", macros={"i": "LATE1"})
        served = r.code == "a"
        p.quit()
    except Exception as e:
        served = False
        tap.diag("late session: %r" % e)
    p.close()
    tap.check("during the drain a new session is still served", served, d.diag)
    tap.check("after SIGTERM the daemon keeps running while a session is open",
              d.running(), d.diag)

    steps = [
        ("MAIL bad sender -> continue", lambda: c.mail("<a..b@example.com>", macros={"i": "INFLIGHT1"}),
         lambda r: r.code == "c"),
        ("RCPT -> 553 5.1.7", lambda: c.rcpt("<user@test.example>"),
         lambda r: r.code == "y" and (r.text or "").startswith("553 5.1.7 ")),
        ("RCPT postmaster -> continue", lambda: c.rcpt("<postmaster@test.example>"),
         lambda r: r.code == "c"),
        ("ABORT, MAIL null sender -> accept",
         lambda: (c.abort(), c.mail("<>", macros={"i": "INFLIGHT2"}))[1],
         lambda r: r.code == "a"),
    ]
    alive = True
    for name, do, ok in steps:
        if not alive:
            tap.check("in-flight session after SIGTERM: %s" % name, False, "(not run: session broken)")
            continue
        try:
            r = do()
            tap.check("in-flight session after SIGTERM: %s" % name, ok(r),
                      "reply %r\n%s\n%s" % (r, c.transcript_text(), d.diag()))
        except Exception as e:
            alive = False
            tap.check("in-flight session after SIGTERM: %s" % name, False,
                      "%r after %.1fs since SIGTERM\n%s\n%s" % (e, time.monotonic() - t0,
                                                                 c.transcript_text(), d.diag()))
    if alive:
        c.quit()
    c.close()
    t1 = time.monotonic()
    rc = d.wait(10)
    tap.check("daemon exits 0 once the in-flight session ended (within 10 s)", rc == 0,
              "exit code %r after %.1fs\n%s" % (rc, time.monotonic() - t1, d.diag()))
    if rc is None:
        d.kill()  # (then the socket cannot have been removed: not checked)
    else:
        tap.check("in-flight: socket removed at exit", not os.path.exists(sock), d.diag)


def t_reload(tap, cleanup):
    """SIGHUP re-reads the config; a bad config is refused and the old kept."""
    tmp = TempDir()
    cleanup.add(tmp.remove)
    d = Daemon(tmp, base_conf(tmp, "reload.sock"), name="reload")
    cleanup.add(d.kill)
    d.start()
    r, t = short_session(d.socket, sender="<a..b@partner.example>")
    tap.check("reload: before, a bad sender is rejected", r.code == "y", t)

    d.conf["trusted_networks"] = "198.51.100.0/24"
    d.write_conf()
    d.send_signal(signal.SIGHUP)
    tap.check("reload: logged", d.wait_log(r"notice: reloaded configuration", 10), d.diag)
    r, t = short_session(d.socket, sender="<a..b@partner.example>")
    tap.check("reload: new trusted_networks apply to new sessions", r.code == "a", t + d.diag())

    with open(d.conf_path, "a") as f:
        f.write("log_level = loud\n")
    d.send_signal(signal.SIGHUP)
    tap.check("reload: a bad config names file:line",
              d.wait_log(r"error: reload: .*reload\.conf:\d+: ", 10), d.diag)
    tap.check("reload: a bad config keeps the running one",
              d.wait_log(r"keeping the running configuration", 10), d.diag)
    r, t = short_session(d.socket, sender="<a..b@partner.example>")
    tap.check("reload: still serving with the old config", r.code == "a", t + d.diag())
    tap.equal("reload: stops cleanly afterwards", d.stop(), 0, d.diag)


TESTS = [t_version, t_help, t_long_help, t_check_environment, t_unknown_option, t_check_good, t_check_bad, t_check_names, t_missing_config,
         t_lifecycle, t_live_socket, t_second_instance, t_inflight, t_reload]


setup = vmtest.require_binary(BIN, "vemilter")


if __name__ == "__main__":
    vmtest.run_tests(TESTS, per_test_timeout=60, total_timeout=170, setup=setup)
