#!/bin/sh
# Creates the project's virtual environment, installing Debian's venv module first when it is missing.
set -eu
venv="${1:-.venv}"
python="${PYTHON:-python3}"
[ -x "$venv/bin/python" ] && exit 0
if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "installing python3-venv (needed to create $venv)" >&2
    if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq python3-venv
fi
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "edge-node needs Python 3.11 or newer; $python is $("$python" --version 2>&1)" >&2
    exit 1
}
"$python" -m venv "$venv"
