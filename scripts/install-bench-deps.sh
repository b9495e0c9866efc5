#!/bin/sh
# The benchmark's other contenders (tcpserver from ucspi-tcp, socat),
# hyperfine (times the floor: starting cat with no network), and the
# launchers' scenario: nginx in front of socket, wrk to load it, gcc to
# compile the SCGI wrapper and the CGI (scripts/bench/*.c; gcc and
# libc6-dev are enough, build-essential is not needed); the gateways
# socket's --fastcgi and --scgi are set beside: fcgiwrap, and uWSGI's CGI
# plugin (in Debian 12 it is inside uwsgi-core, which replaces the old
# uwsgi-plugin-cgi package: /usr/lib/uwsgi/plugins/cgi_plugin.so). From Debian.
# Idempotent: installs only what is missing, and touches apt only then.
# Run as root: sudo scripts/install-bench-deps.sh
set -e
missing=""
command -v tcpserver >/dev/null 2>&1 || missing="$missing ucspi-tcp"
command -v socat >/dev/null 2>&1 || missing="$missing socat"
command -v hyperfine >/dev/null 2>&1 || missing="$missing hyperfine"
command -v nginx >/dev/null 2>&1 || missing="$missing nginx"
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
{ command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1; } || missing="$missing gcc"
[ -e /usr/include/stdio.h ] || missing="$missing libc6-dev"
command -v fcgiwrap >/dev/null 2>&1 || [ -x /usr/sbin/fcgiwrap ] || missing="$missing fcgiwrap"
[ -e /usr/lib/uwsgi/plugins/cgi_plugin.so ] || missing="$missing uwsgi-core"
if [ -z "$missing" ]; then
  echo "install-bench-deps: tcpserver, socat, hyperfine, nginx, wrk, a C compiler, fcgiwrap and uWSGI's CGI plugin are installed"
  exit 0
fi
echo "install-bench-deps: installing$missing"
# nginx's package starts a server on port 80 when installed: the benchmark
# runs its own, so keep Debian's from starting (policy-rc.d says "not now").
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
