#!/bin/sh
# The programs beside Python packages that make targets run for real: install the missing
# ones from Debian's packages (as root), or say exactly what to install and stop.
#
#   sh scripts/system-deps.sh [test|cluster]
#
# test (the default, make test): what the trial suite runs; cluster (make cluster, make
# soak-cluster): a Redis and HAProxy only.
# Each line of a set: COMMAND DEBIAN-PACKAGE
set -eu
WHAT=${1:-test}
case "$WHAT" in
  # tests/test_cluster_script.py runs make cluster's script, HAProxy included
  test) NEEDED="systemd-analyze systemd
setpriv util-linux
redis-server redis-server
haproxy haproxy" ;;
  cluster) NEEDED="redis-server redis-server
haproxy haproxy" ;;
  *) echo "usage: sh scripts/system-deps.sh [test|cluster]" >&2; exit 2 ;;
esac
missing=$(echo "$NEEDED" | while read -r cmd pkg; do
  # haproxy and some daemons live in /usr/sbin, which a non-root PATH may lack
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || echo "$pkg"
done | sort -u | tr '\n' ' ')
missing=${missing% }
if [ -z "$missing" ]; then
  echo "==> system packages ($WHAT): all present"
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "==> installing system packages ($WHAT): $missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
else
  echo "==> missing system packages ($WHAT): $missing: install them (e.g. sudo apt-get install $missing) and run make again" >&2
  exit 1
fi
