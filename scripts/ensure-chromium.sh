#!/bin/sh
# Makes sure a Chromium is at /usr/bin/chromium (and what playwright's driver needs) for the
# browser test of the API docs page
# (tests/http/test_docs_page.py, driven by playwright with that executable: playwright never
# downloads a browser of its own here). On Debian it installs the `chromium` package (with
# sudo -n unless root: never a password prompt from `make test`), without its recommended
# packages (they bring services: avahi-daemon, ...). Idempotent; never fatal:
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
if ! command -v apt-get >/dev/null 2>&1; then
    echo "no$missing and no apt-get here: the browser test will be skipped" >&2
    exit 0
fi
if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo -n"; fi
echo "installing Debian's$missing (for the browser test of /docs)" >&2
if $sudo apt-get update -qq >/dev/null 2>&1 \
    && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1; then
    exit 0
fi
echo "could not install$missing: the browser test will be skipped" >&2
exit 0
