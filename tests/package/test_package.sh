#!/bin/sh
# test_package.sh - the Debian package: build it from the committed tree
# (dpkg-buildpackage -us -uc -b), lintian finds no error, it installs, the
# installed binaries run, the unit passes systemd-analyze verify, the
# daemon starts as the vemilter user the way the unit starts it, and the
# package purges cleanly. It changes the machine (installs the package,
# creates the vemilter user), so it runs only when VEMILTER_PACKAGE_TEST=1
# (.ci/run sets it) and as root; otherwise every case is skipped. TAP.
srcdir=$(cd "$(dirname "$0")/../.." && pwd)
n=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() { n=$((n + 1)); echo "not ok $n - $1"; [ -n "${2:-}" ] && sed 's/^/# /' "$2" | tail -n 30; }
check() { # check NAME LOG COMMAND...
	name=$1 log=$2
	shift 2
	if "$@" >"$log" 2>&1; then ok "$name"; else notok "$name" "$log"; fi
}
skip_all() { echo "1..0 # SKIP $1"; exit 0; }

[ "${VEMILTER_PACKAGE_TEST:-0}" = 1 ] || skip_all "set VEMILTER_PACKAGE_TEST=1 (CI does) to build and install the package"
[ "$(id -u)" -eq 0 ] || skip_all "needs root"
command -v dpkg-buildpackage >/dev/null && command -v dh >/dev/null && command -v lintian >/dev/null ||
	skip_all "needs dpkg-dev, debhelper and lintian (tools/deps.sh --package)"
git -C "$srcdir" rev-parse HEAD >/dev/null 2>&1 || skip_all "needs a git checkout to build from"

tmp=$(mktemp -d /tmp/vemilter-pkg.XXXXXX)
daemon_pid=
cleanup() {
	[ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null
	dpkg --purge vemilter >/dev/null 2>&1
	rm -rf "$tmp" /run/vemilter-pkgtest
}
trap cleanup EXIT
echo "1..10"

# The committed tree only: what a release would be built from.
git clone -q "$srcdir" "$tmp/vemilter" 2>"$tmp/clone.log" || { notok "clone" "$tmp/clone.log"; exit 1; }
# The unit tests already ran in this suite: nocheck keeps CI's time.
check "dpkg-buildpackage -us -uc -b" "$tmp/build.log" \
	sh -c "cd '$tmp/vemilter' && DEB_BUILD_OPTIONS=nocheck timeout 900 dpkg-buildpackage -us -uc -b"
deb=$(ls "$tmp"/vemilter_*_*.deb 2>/dev/null | head -n 1)
lintian "$tmp"/vemilter_*.changes >"$tmp/lintian.log" 2>&1
if [ -n "$deb" ] && ! grep -q '^E:' "$tmp/lintian.log"; then
	ok "lintian: no errors ($(grep -c '^W:' "$tmp/lintian.log") warnings)"
else
	notok "lintian: no errors" "$tmp/lintian.log"
fi
check "the package installs" "$tmp/install.log" dpkg -i "$deb"
check "installed vemilter -V" "$tmp/version.log" /usr/sbin/vemilter -V
check "installed vemilter -n -c /etc/vemilter.conf" "$tmp/n.log" /usr/sbin/vemilter -n -c /etc/vemilter.conf
check "systemd-analyze verify accepts the unit" "$tmp/analyze.log" \
	systemd-analyze verify /lib/systemd/system/vemilter.service
if id vemilter >/dev/null 2>&1 && [ "$(stat -c %U /var/lib/vemilter 2>/dev/null)" = vemilter ]; then
	ok "the vemilter user exists and owns /var/lib/vemilter"
else
	notok "the vemilter user exists and owns /var/lib/vemilter"
fi

# Start it as the unit does: as the vemilter user, in the foreground, with
# the installed configuration but a private socket, pid file and cache.
rundir=/run/vemilter-pkgtest
install -d -o vemilter -g vemilter -m 0755 "$rundir"
cat /etc/vemilter.conf >"$tmp/test.conf"
printf 'socket = unix:%s/vemilter.sock\npid_file = %s/vemilter.pid\ncache = %s/cache.lmdb\nhelo_name = probe.vemilter.test\n' \
	"$rundir" "$rundir" "$rundir" >>"$tmp/test.conf"
chmod 0644 "$tmp/test.conf"
chmod 0755 "$tmp"
setpriv --reuid=vemilter --regid=vemilter --init-groups /usr/sbin/vemilter -f -c "$tmp/test.conf" >"$tmp/daemon.log" 2>&1 &
daemon_pid=$!
i=0
while [ $i -lt 100 ] && ! [ -S "$rundir/vemilter.sock" ]; do sleep 0.1; i=$((i + 1)); done
if [ -S "$rundir/vemilter.sock" ] && [ "$(stat -c %U "$rundir/vemilter.sock")" = vemilter ] &&
	kill -0 "$daemon_pid" 2>/dev/null; then
	ok "the installed daemon runs as vemilter and listens"
else
	notok "the installed daemon runs as vemilter and listens" "$tmp/daemon.log"
fi
kill "$daemon_pid"
i=0
while [ $i -lt 100 ] && kill -0 "$daemon_pid" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
if ! kill -0 "$daemon_pid" 2>/dev/null && ! [ -e "$rundir/vemilter.pid" ]; then
	ok "it stops on SIGTERM and removes its own pid file"
else
	notok "it stops on SIGTERM and removes its own pid file" "$tmp/daemon.log"
fi
daemon_pid=
check "the package purges" "$tmp/purge.log" dpkg --purge vemilter
