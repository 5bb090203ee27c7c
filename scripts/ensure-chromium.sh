#!/bin/sh
# Makes sure a Chromium is at /usr/bin/chromium (and what playwright's driver needs) for the
# browser test of the API docs page
# (tests/http/test_docs_page.py, driven by playwright with that executable: playwright never
# downloads a browser of its own here): Debian's `chromium` package, without its
# recommended packages (they bring services: avahi-daemon, ...). Idempotent; never fatal:
# the test says it skipped when no browser could be had, or fails instead where
# REQUIRE_BROWSER=1 is set (CI sets it: .ci/run).
set -u
# playwright's driver (a node binary in its wheel) needs libatomic.so.1, which a minimal
# Debian lacks.
missing=""
[ -x /usr/bin/chromium ] || missing=" chromium"
[ -e /usr/lib/x86_64-linux-gnu/libatomic.so.1 ] || ldconfig -p 2>/dev/null | grep -q libatomic.so.1 \
    || missing="$missing libatomic1"
[ -z "$missing" ] && exit 0
# Word splitting of $missing is wanted: one argument per package.
# shellcheck disable=SC2086
exec sh "$(dirname "$0")/apt-install.sh" "the browser test will be skipped" $missing
