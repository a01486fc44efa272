#!/bin/sh
# The programs the test suite runs for real, beside Python packages: install the missing
# ones from Debian's packages (as root), or say exactly what to install and stop.
# Each line: COMMAND DEBIAN-PACKAGE
set -eu
NEEDED="systemd-analyze systemd
setpriv util-linux"
missing=$(echo "$NEEDED" | while read -r cmd pkg; do
  command -v "$cmd" >/dev/null 2>&1 || echo "$pkg"
done | sort -u | tr '\n' ' ')
if [ -z "$missing" ]; then
  echo "==> system packages: all present"
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "==> installing system packages: $missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
else
  echo "==> missing system packages: $missing" >&2
  echo "    install them (e.g. sudo apt-get install $missing) and run make test again" >&2
  exit 1
fi
