#!/usr/bin/env bash
# deps.sh - install the Debian packages vemilter needs to build (and, with
# --test, to run its tests). Idempotent: does nothing when all are present.
# Postfix is preseeded to "No configuration" so no system instance starts;
# tests run their own throw-away instance.
set -euo pipefail

build_pkgs=(gcc make autoconf automake pkg-config libmilter-dev libc-ares-dev libssl-dev
	liblmdb-dev libevent-dev libidn2-dev libhiredis-dev)
test_pkgs=(check postfix python3 clang-format iproute2 redis-server)
# --package: what building and checking the Debian package needs (CI)
package_pkgs=(dpkg-dev debhelper lintian systemd)

want=("${build_pkgs[@]}")
for arg in "$@"; do
	case "$arg" in
	--test) want+=("${test_pkgs[@]}") ;;
	--package) want+=("${package_pkgs[@]}") ;;
	*) echo "deps.sh: unknown option $arg (--test, --package)" >&2; exit 2 ;;
	esac
done

missing=()
for pkg in "${want[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed"; then
		missing+=("$pkg")
	fi
done
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "deps.sh: missing packages: ${missing[*]}; run as root (sudo) to install them" >&2
	exit 1
fi
echo "deps.sh: installing ${missing[*]}"
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
