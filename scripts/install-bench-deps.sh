#!/bin/sh
# The benchmark's other contenders (tcpserver from ucspi-tcp, socat) and
# hyperfine, which times the floor (starting cat with no network), from
# Debian. Idempotent: installs only what is missing, and touches apt only then.
# Run as root: sudo scripts/install-bench-deps.sh
set -e
missing=""
command -v tcpserver >/dev/null 2>&1 || missing="$missing ucspi-tcp"
command -v socat >/dev/null 2>&1 || missing="$missing socat"
command -v hyperfine >/dev/null 2>&1 || missing="$missing hyperfine"
if [ -z "$missing" ]; then
  echo "install-bench-deps: tcpserver, socat and hyperfine are installed"
  exit 0
fi
echo "install-bench-deps: installing$missing"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
