#!/bin/sh
# Makes sure wrk is installed, the load generator `make bench` and `make report` prefer
# (bench/loadgen.py: a C load generator takes less of the CPU it shares with the servers than
# the Python one, which would otherwise understate the baseline). On Debian it installs the
# `wrk` package (a command, no service), with sudo -n unless root: never a password prompt.
# Idempotent; never fatal: without it the benchmarks fall back to the Python load generator and
# say so under their tables.
set -u
command -v wrk >/dev/null 2>&1 && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "no wrk and no apt-get here: the benchmarks will use the Python load generator" >&2
    exit 0
fi
if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo -n"; fi
echo "installing Debian's wrk (the benchmarks' load generator)" >&2
if $sudo apt-get update -qq >/dev/null 2>&1 \
    && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null 2>&1; then
    exit 0
fi
echo "could not install wrk: the benchmarks will use the Python load generator" >&2
exit 0
