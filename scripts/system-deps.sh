#!/bin/sh
# The programs beside Python packages that make targets run for real: install the missing
# ones from Debian's packages (as root), or say exactly what to install and stop.
#
#   sh scripts/system-deps.sh [test|cluster]
#
# test (the default, make test): what the trial suite runs; cluster (make cluster, make
# soak-cluster): a Redis and HAProxy only.
# Each line of a set: COMMAND DEBIAN-PACKAGE (a COMMAND starting with / is a file that must
# exist: the browser tests drive /usr/bin/chromium itself, never a downloaded browser).
set -eu
WHAT=${1:-test}
case "$WHAT" in
  # tests/test_cluster_script.py runs make cluster's script, HAProxy included;
  # tests/test_browser.py runs Debian's Chromium (fonts: screenshots of failures have text);
  # tests/test_metrics.py checks docs/alerts.yml with promtool, which Debian ships in its
  # prometheus package (installed without recommends: no node exporter; nothing starts);
  # tests/test_httpapi.py runs the README's curl lines
  test) NEEDED="systemd-analyze systemd
curl curl
setpriv util-linux
redis-server redis-server
haproxy haproxy
promtool prometheus
/usr/bin/chromium chromium
/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf fonts-dejavu-core" ;;
  cluster) NEEDED="redis-server redis-server
haproxy haproxy" ;;
  *) echo "usage: sh scripts/system-deps.sh [test|cluster]" >&2; exit 2 ;;
esac
# the packages of NEEDED whose command or file is missing, on one line
missing_packages() {
  echo "$NEEDED" | while read -r cmd pkg; do
    case "$cmd" in
      /*) [ -e "$cmd" ] || echo "$pkg" ;;
      # haproxy and some daemons live in /usr/sbin, which a non-root PATH may lack
      *) command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || echo "$pkg" ;;
    esac
  done | sort -u | tr '\n' ' '
}
missing=$(missing_packages)
missing=${missing% }
if [ -z "$missing" ]; then
  echo "==> system packages ($WHAT): all present"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "==> installing system packages ($WHAT): $missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
  # a package that installed without the command it was for (renamed, split) fails here,
  # not later in a test
  still=$(missing_packages)
  if [ -n "$still" ]; then
    echo "==> installed, yet their programs are still missing ($WHAT): $still" >&2
    exit 1
  fi
else
  echo "==> missing system packages ($WHAT): $missing: install them (e.g. sudo apt-get install $missing) and run make again" >&2
  exit 1
fi
if [ "$WHAT" = test ]; then
  # The browser tests run playwright-core (tests/browser), which needs Node.js >= 20 and
  # npm; Debian 12's nodejs is older, so it is not installed from here.
  node_version=$(node --version 2>/dev/null || true)
  node_major=$(echo "$node_version" | sed -n 's/^v\([0-9][0-9]*\)\..*/\1/p')
  if [ -z "$node_major" ] || ! command -v npm >/dev/null 2>&1; then
    echo "==> Node.js or npm is missing: the browser tests (tests/browser) need Node.js >= 20" \
      "with npm; install them (e.g. from nodejs.org or NodeSource) and run make again" >&2
    exit 1
  elif [ "$node_major" -lt 20 ]; then
    echo "==> Node.js $node_version is too old: the browser tests (tests/browser) need" \
      "Node.js >= 20; upgrade it and run make again" >&2
    exit 1
  fi
  echo "==> Node.js $node_version and npm $(npm --version) for the browser tests: present"
fi
