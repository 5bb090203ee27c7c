#!/bin/sh
# Makes sure the PostgreSQL server binaries (initdb, pg_ctl) exist, for the tests' own
# throwaway server (tests/postgres.py). When they are missing it installs Debian's server
# package (postgresql-15 on bookworm) and nothing more: no cluster is created (Debian's
# `create_main_cluster` is off while it installs, then the file is the package's own again),
# no service is started (a policy-rc.d refuses while it installs) and the unit the package
# enables is disabled again; nothing it only recommends (sysstat, cron) is installed. Nothing
# here starts, stops or configures a server. Idempotent.
set -eu
found() {
    for bin in /usr/lib/postgresql/*/bin; do
        [ -x "$bin/initdb" ] && [ -x "$bin/pg_ctl" ] && return 0
    done
    command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1
}
found && exit 0
echo "the tests need PostgreSQL's server binaries (initdb, pg_ctl)" >&2
install_hint="apt-get install postgresql-15"
. "$(dirname "$0")/root-runner.sh"
command -v apt-get >/dev/null 2>&1 || {
    echo "the tests need PostgreSQL's server binaries (initdb, pg_ctl) on PATH" >&2
    exit 1
}
echo "installing PostgreSQL's server binaries (the tests run a private throwaway server;" \
    "no cluster is created and no service started)" >&2
$sudo apt-get update -qq
package="$(apt-cache depends postgresql 2>/dev/null | sed -n 's/.*Depends: \(postgresql-[0-9][0-9]*\)$/\1/p' | head -n 1)"
package="${package:-postgresql-15}"
conf=/etc/postgresql-common/createcluster.conf
made_conf=""
made_policy=""
cleanup() {
    [ -n "$made_policy" ] && $sudo rm -f /usr/sbin/policy-rc.d
    if [ -n "$made_conf" ]; then
        # ucf (or dpkg) kept ours and laid the package's own beside it: put that one back.
        if [ -f "$conf.ucf-dist" ]; then
            $sudo mv "$conf.ucf-dist" "$conf"
        elif [ -f "$conf.dpkg-dist" ]; then
            $sudo mv "$conf.dpkg-dist" "$conf"
        else
            $sudo rm -f "$conf"
        fi
    fi
}
trap cleanup EXIT
if [ ! -e "$conf" ]; then
    $sudo mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" | $sudo tee "$conf" >/dev/null
    made_conf=1
fi
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod 0755 /usr/sbin/policy-rc.d
    made_policy=1
fi
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confold -o Dpkg::Options::=--force-confdef "$package" >/dev/null
# The package enables postgresql.service (it starts every cluster: there is none) at boot:
# disabled again, and recorded so that its upgrades leave it disabled.
if command -v systemctl >/dev/null 2>&1; then
    $sudo systemctl disable postgresql >/dev/null 2>&1 || true
elif command -v deb-systemd-helper >/dev/null 2>&1; then  # no systemd here (a chroot)
    $sudo env DPKG_MAINTSCRIPT_PACKAGE=postgresql-common \
        deb-systemd-helper disable postgresql.service >/dev/null 2>&1 || true
fi
found && exit 0
echo "$package was installed but no initdb/pg_ctl was found under /usr/lib/postgresql" >&2
exit 1
