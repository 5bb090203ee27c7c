#!/bin/sh
# Creates the project's virtual environment, installing Debian's venv module first when it is missing.
set -eu
venv="${1:-.venv}"
python="${PYTHON:-python3}"
[ -x "$venv/bin/python" ] && exit 0
if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "$python has no venv module, needed to create $venv" >&2
    install_hint="apt-get install python3-venv"
    . "$(dirname "$0")/root-runner.sh"
    echo "installing python3-venv (needed to create $venv)" >&2
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "edge-node needs Python 3.11 or newer; $python is $("$python" --version 2>&1)" >&2
    exit 1
}
"$python" -m venv "$venv"
