#!/bin/sh
# Makes sure libfaketime is installed, for the test that steps the wall clock back under a
# running daemon (tests/faults/test_clock.py): Debian's `faketime` package (a library and a
# command, no service). Idempotent; never fatal: the test says it skipped when the library
# could not be had, or fails instead where REQUIRE_FAKETIME=1 is set (CI sets it: .ci/run).
set -u
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] && exit 0
exec sh "$(dirname "$0")/apt-install.sh" "the stepped-clock test will be skipped" faketime
