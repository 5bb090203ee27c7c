#!/bin/sh
# Makes sure the PostgreSQL server binaries (initdb, pg_ctl) exist, installing Debian's
# postgresql package when they do not. The tests start their own throwaway server with them
# (tests/postgres.py); nothing here starts, stops or configures a server. Idempotent.
set -eu
for bin in /usr/lib/postgresql/*/bin; do
    [ -x "$bin/initdb" ] && [ -x "$bin/pg_ctl" ] && exit 0
done
command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && exit 0
echo "installing postgresql (the tests run a private throwaway server with it)" >&2
if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
$sudo apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
for bin in /usr/lib/postgresql/*/bin; do
    [ -x "$bin/initdb" ] && [ -x "$bin/pg_ctl" ] && exit 0
done
echo "postgresql was installed but no initdb/pg_ctl was found under /usr/lib/postgresql" >&2
exit 1
