#!/bin/sh
# Makes sure wrk is installed, the load generator `make bench` and `make report` prefer
# (bench/loadgen.py: a C load generator takes less of the CPU it shares with the servers than
# the Python one, which would otherwise understate the baseline). Idempotent; never fatal:
# without it the benchmarks use the Python load generator and say so under their tables.
set -u
command -v wrk >/dev/null 2>&1 && exit 0
exec sh "$(dirname "$0")/apt-install.sh" "the benchmarks will use the Python load generator" wrk
