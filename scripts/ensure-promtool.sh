#!/bin/sh
# Makes sure promtool (Prometheus's rule and exposition checker) is at VENV/bin/promtool, for
# the test that checks config/prometheus-alerts.yml and the node's /metrics with it. On
# Debian it unpacks promtool from the prometheus package into the virtualenv: no service is
# installed or started. Elsewhere, a promtool on PATH is used. Idempotent; never fatal: the
# test says it skipped when promtool could not be had, or fails instead where
# REQUIRE_PROMTOOL=1 is set (CI sets it: .ci/run).
set -u
venv="${1:-.venv}"
target="$venv/bin/promtool"
[ -x "$target" ] && exit 0
if found="$(command -v promtool 2>/dev/null)"; then
    ln -sf "$found" "$target" && exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
    echo "promtool not found and no apt-get here: the promtool check will be skipped" >&2
    exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "fetching promtool from Debian's prometheus package (unpacked into $venv only)" >&2
# sudo -n: never a password prompt from `make test`; without root the lists stay as they are.
if [ "$(id -u)" = 0 ]; then update="apt-get update -qq"; else update="sudo -n apt-get update -qq"; fi
if (cd "$work" && apt-get download -qq prometheus >/dev/null 2>&1) \
    || { $update >/dev/null 2>&1 && (cd "$work" && apt-get download -qq prometheus >/dev/null 2>&1); }; then
    dpkg-deb -x "$work"/prometheus_*.deb "$work/unpacked" \
        && install -m 0755 "$work/unpacked/usr/bin/promtool" "$target" && exit 0
fi
echo "could not fetch promtool: the promtool check will be skipped" >&2
exit 0
