#!/bin/sh
# Installs Debian packages for a test or benchmark that needs them, never fatally:
# `sh scripts/apt-install.sh "WITHOUT" PACKAGE...` installs the packages without their
# recommended ones (which can bring services), with sudo -n unless root (never a password
# prompt from make), and otherwise says what happens without them (WITHOUT, e.g. "the
# browser test will be skipped"). Always exits 0: the caller's test says it skipped, or fails
# where CI requires it.
set -u
without=$1
shift
if ! command -v apt-get >/dev/null 2>&1; then
    echo "no $* and no apt-get here: $without" >&2
    exit 0
fi
if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo -n"; fi
echo "installing Debian's $*" >&2
if $sudo apt-get update -qq >/dev/null 2>&1 \
    && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1; then
    exit 0
fi
echo "could not install $*: $without" >&2
exit 0
