#!/bin/sh
# What the test suite's real peers need, from Debian: nginx (in front of
# --scgi and --fastcgi), systemd-socket-activate (socket activation),
# unshare (a PID namespace for PID 1), groff and man (the man page), socat
# (a NOTIFY_SOCKET receiver for the readiness tests), promtool (checks
# --status's metrics page; Debian's prometheus package); apache2, cgit, git
# (git-http-backend, gitweb), CGI.pm and php-cgi (real applications and
# front ends for --scgi, --fastcgi; docs/RECIPES.md's recipes: apache2-bin
# has mod_proxy_fcgi and mod_env, which the tests load in their own
# configuration, so no a2enmod), fcgiwrap (compared with them); and
# for the release's tests: qemu-user with libc6-arm64-cross (the arm64
# executable), lintian.
# Called by `npm test`. Idempotent: touches apt only when something is
# missing. Without root or without apt it says what is missing and goes
# on; the tests that need it then skip with a note naming it.
missing=""
need() { command -v "$1" >/dev/null 2>&1 || missing="$missing $2"; }
need nginx nginx
need systemd-socket-activate systemd
need unshare util-linux
need groff groff-base
need man man-db
need socat socat
need strace strace
need promtool prometheus
[ -x /usr/sbin/apache2 ] || missing="$missing apache2"
need git git
need php-cgi php-cgi
[ -x /usr/lib/cgit/cgit.cgi ] || missing="$missing cgit"
perl -MCGI -e 1 >/dev/null 2>&1 || missing="$missing libcgi-pm-perl"
# gitweb.cgi is git's in Debian 12; the gitweb package brings it with git and CGI.pm elsewhere.
[ -e /usr/share/gitweb/gitweb.cgi ] || missing="$missing gitweb"
[ -x /usr/sbin/fcgiwrap ] || missing="$missing fcgiwrap"
need qemu-aarch64 qemu-user
[ -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ] || missing="$missing libc6-arm64-cross"
need lintian lintian
if [ -z "$missing" ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-deps: not root or no apt-get; missing:$missing (their tests will skip)" >&2
  exit 0
fi
echo "install-test-deps: installing$missing" >&2
# nginx's package starts a server on port 80 when installed: the tests run
# their own, so keep Debian's from starting (policy-rc.d says "not now").
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing; } >&2; then
  echo "install-test-deps: apt-get failed; missing:$missing (their tests will skip)" >&2
fi
exit 0
