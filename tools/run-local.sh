#!/usr/bin/env bash
# run-local.sh - install what is missing, build, and run vemilter in the
# foreground with a local config: socket, pid file and (later) cache under
# ./run/, logging to the terminal. Ctrl-C stops it.
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
user =
log_level = info
CONF
	echo "run-local: wrote run/vemilter.conf"
fi
echo "run-local: vemilter listening on unix:$PWD/run/vemilter.sock (Ctrl-C stops)"
exec ./vemilter -f -c run/vemilter.conf "$@"
