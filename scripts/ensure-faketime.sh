#!/bin/sh
# Makes sure libfaketime is installed, for the test that steps the wall clock back under a
# running daemon (tests/faults/test_clock.py). On Debian it installs the `faketime` package
# (a library and a command, no service), with sudo -n unless root: never a password prompt
# from `make test`. Idempotent; never fatal: the test says it skipped when the library could
# not be had, or fails instead where REQUIRE_FAKETIME=1 is set (CI sets it: .ci/run).
set -u
library=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1
[ -e "$library" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "no libfaketime and no apt-get here: the stepped-clock test will be skipped" >&2
    exit 0
fi
if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo -n"; fi
echo "installing Debian's faketime (for the stepped-clock test)" >&2
if $sudo apt-get update -qq >/dev/null 2>&1 \
    && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends faketime >/dev/null 2>&1; then
    exit 0
fi
echo "could not install faketime: the stepped-clock test will be skipped" >&2
exit 0
