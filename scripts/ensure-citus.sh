#!/bin/sh
# Makes sure the Citus extension (citus.so, the PostgreSQL extension that distributes tables
# over a coordinator and workers) is installed into the PostgreSQL server binaries the tests
# use, for the tests that run the central database on a Citus cluster of their own
# (tests/citus.py). Citus is not in Debian: its release source and build script are kept in
# ../shared/vendor/citus/ beside the repository (CITUS_VENDOR overrides where), and the build
# needs root. Idempotent; never fatal: without root or without the source it says why and the
# Citus tests skip with that reason (or fail where REQUIRE_CITUS=1 is set).
set -u
vendor="${CITUS_VENDOR:-$(cd "$(dirname "$0")/.." && pwd)/../shared/vendor/citus}"
for pgc in /usr/lib/postgresql/*/bin/pg_config; do
    [ -x "$pgc" ] && [ -f "$("$pgc" --pkglibdir)/citus.so" ] && exit 0
done
if [ ! -f "$vendor/build.sh" ]; then
    echo "Citus source not found at $vendor: the Citus tests will be skipped" >&2
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "building Citus needs root (sh $vendor/build.sh): the Citus tests will be skipped" >&2
    exit 0
fi
echo "building and installing Citus from $vendor (about 2 minutes)" >&2
sh "$vendor/build.sh" >&2 || echo "the Citus build failed: the Citus tests will be skipped" >&2
exit 0
