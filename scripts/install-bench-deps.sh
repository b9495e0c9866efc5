#!/bin/sh
# The benchmark's other contenders and its chart, from Debian: tcpserver
# (ucspi-tcp), socat, and gnuplot for docs/bench.png. Idempotent.
set -e
missing=""
command -v tcpserver >/dev/null 2>&1 || missing="$missing ucspi-tcp"
command -v socat >/dev/null 2>&1 || missing="$missing socat"
command -v gnuplot >/dev/null 2>&1 || missing="$missing gnuplot-nox"
[ -z "$missing" ] && exit 0
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
