# Sourced by the ensure-*.sh scripts with $install_hint set to the command that installs what
# they need: sets $sudo to how to run a command as root ("" as root, "sudo" where it exists);
# without either, prints the hint and exits 1, instead of failing later with "sudo: not found".
if [ "$(id -u)" = 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
else
    echo "not root and no sudo here: as root, run  $install_hint  then run make again" >&2
    exit 1
fi
