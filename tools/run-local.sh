#!/usr/bin/env bash
# run-local.sh - install what is missing, build, and run vemilter in the
# foreground with a local config: socket, pid file and cache under ./run/,
# logging to the terminal. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh
tools/build.sh
mkdir -p run
if [ ! -f run/vemilter.conf ]; then
	cat > run/vemilter.conf <<CONF
# Local development config written by tools/run-local.sh; edit freely.
socket = unix:$PWD/run/vemilter.sock
socket_mode = 0666
pid_file = $PWD/run/vemilter.pid
cache = $PWD/run/cache.lmdb
user =
log_level = info
# Probes announce this name; set it to this host's public name (and make
# its reverse DNS agree) before pointing a real MTA at vemilter.
#helo_name = mail.example.org
CONF
	echo "run-local: wrote run/vemilter.conf"
fi
echo "run-local: vemilter listening on unix:$PWD/run/vemilter.sock (Ctrl-C stops)"
exec ./vemilter -f -c run/vemilter.conf "$@"
