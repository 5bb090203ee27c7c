"""A private, throwaway PostgreSQL server for the tests: initdb in a temp dir, pg_ctl, DSNs.

The suite never uses a server that happens to run on the machine (nor its port 5432): it
finds the server binaries (`scripts/ensure-postgres.sh` installs them, `make test` runs it),
creates a cluster in a fresh temporary directory with trust authentication and fsync off,
starts it on a free loopback port with its unix socket inside that directory, and deletes
everything when the session ends. initdb refuses to run as root, so as root the cluster
belongs to the `postgres` system user (created by Debian's package) and its commands run
through `runuser`.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

SUPERUSER = "postgres"
SYSTEM_PORT = 5432  # the machine's own server, if any: never ours
START_TIMEOUT_SECONDS = 60
INSTALL_HINT = (
    "the tests need the PostgreSQL server binaries (initdb, pg_ctl): run `make test`, or "
    "`sh scripts/ensure-postgres.sh` (installs Debian's postgresql package), then retry"
)


class PostgresUnavailable(Exception):
    """No private PostgreSQL server could be started; the message says why and what to do."""


def find_bin_dir() -> Path:
    """The directory holding initdb and pg_ctl: the newest Debian version, else the PATH."""
    candidates = sorted(
        (Path(d) for d in glob.glob("/usr/lib/postgresql/*/bin")),
        key=lambda d: _version_key(d.parent.name),
        reverse=True,
    )
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return Path(os.path.realpath(initdb)).parent
    raise PostgresUnavailable(f"no initdb/pg_ctl found: {INSTALL_HINT}")


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (never 5432)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port != SYSTEM_PORT:
            return port


@dataclass
class PostgresServer:
    """One running throwaway cluster; `create_database` hands out fresh databases."""

    bin_dir: Path
    root: Path
    port: int
    run_as: str | None  # system user owning the cluster when we are root
    settings: dict[str, str] = field(default_factory=dict)  # more postgresql.conf values
    _names: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root

    def dsn(self, database: str = "postgres", user: str = SUPERUSER) -> str:
        """A TCP DSN to this server, as an edge node or the CLI would be given one."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, template: str = "template1") -> str:
        """A new empty database (copied from `template`); returns its name."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        self.sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    def drop_database(self, name: str) -> None:
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one statement as the superuser over the unix socket; returns psql's output."""
        result = self._run(
            self.bin_dir / "psql",
            "--no-psqlrc",
            "--quiet",
            "--tuples-only",
            "--no-align",
            "--set=ON_ERROR_STOP=1",
            f"--host={self.socket_dir}",
            f"--port={self.port}",
            f"--username={SUPERUSER}",
            f"--dbname={database}",
            f"--command={statement}",
        )
        return result.stdout.strip()

    def stop(self) -> None:
        """Stop the server at once (its data is throwaway) and delete its directory."""
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._run(self.bin_dir / "pg_ctl", "stop", "-D", str(self.data_dir), "-m", "i")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")
        except OSError:
            return ""

    def _run(self, program: Path, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(program), *args]
        if self.run_as is not None:
            command = ["runuser", "-u", self.run_as, "--", *command]
        result = subprocess.run(
            command,
            cwd=self.root,  # the postgres user may not be allowed into our working directory
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_SECONDS + 30,
            check=False,
            env=_clean_environment(),
        )
        if result.returncode != 0:
            raise PostgresUnavailable(
                f"{program.name} failed (exit {result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        return result


def _clean_environment() -> dict[str, str]:
    """Our environment without libpq's PG* variables, so nothing points us at another server."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PG")}
    env.update(LC_ALL="C", LANG="C")
    return env


def start_server(settings: dict[str, str] | None = None, prefix: str = "pg") -> PostgresServer:
    """initdb a cluster in a new temp dir and start it on a free loopback port, with
    `settings` (postgresql.conf values, quoted as the file wants them) besides ours."""
    bin_dir = find_bin_dir()
    run_as = _system_user() if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix=f"edge-node-{prefix}-"))
    server = PostgresServer(bin_dir, root, free_port(), run_as, dict(settings or {}))
    try:
        if run_as is not None:
            account = pwd.getpwnam(run_as)
            os.chown(root, account.pw_uid, account.pw_gid)
        server._run(
            bin_dir / "initdb",
            f"--pgdata={server.data_dir}",
            f"--username={SUPERUSER}",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        _start(server)
    except BaseException:
        server.stop()
        raise
    return server


def start_standby(primary: PostgresServer) -> PostgresServer:
    """A hot standby of `primary`, streaming from it: `pg_basebackup -R` (base backup and
    recovery settings) into a new temp dir, started on a free loopback port of its own."""
    root = Path(tempfile.mkdtemp(prefix="edge-node-standby-"))
    server = PostgresServer(primary.bin_dir, root, free_port(), primary.run_as)
    try:
        if primary.run_as is not None:
            account = pwd.getpwnam(primary.run_as)
            os.chown(root, account.pw_uid, account.pw_gid)
        server._run(
            primary.bin_dir / "pg_basebackup",
            f"--pgdata={server.data_dir}",
            "--write-recovery-conf",
            "--host=127.0.0.1",
            f"--port={primary.port}",
            f"--username={SUPERUSER}",
            "--wal-method=stream",
            "--checkpoint=fast",
            "--no-sync",
        )
        _start(server)  # the primary's postgresql.conf, with this server's port appended
    except BaseException:
        server.stop()
        raise
    return server


def _system_user() -> str:
    try:
        pwd.getpwnam(SUPERUSER)
    except KeyError:
        raise PostgresUnavailable(
            "running as root, and initdb refuses root: the `postgres` system user (created by "
            f"Debian's postgresql package) is missing; {INSTALL_HINT}"
        ) from None
    if shutil.which("runuser") is None:
        raise PostgresUnavailable("running as root and `runuser` (util-linux) is missing")
    return SUPERUSER


def _write_settings(server: PostgresServer) -> None:
    # Durability is worthless for a throwaway cluster; speed and isolation are what count.
    settings = {
        "listen_addresses": "'127.0.0.1'",
        "port": str(server.port),
        "unix_socket_directories": f"'{server.socket_dir}'",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "200",
        "shared_buffers": "'128MB'",
        "logging_collector": "off",
        **server.settings,
    }
    lines = "".join(f"{key} = {value}\n" for key, value in settings.items())
    conf = server.data_dir / "postgresql.conf"
    with conf.open("a") as handle:  # the file belongs to the postgres user; root may append
        handle.write("\n# edge-node test settings\n" + lines)


def _start(server: PostgresServer, attempts: int = 3) -> None:
    """pg_ctl start; a port taken since we probed it is retried with another one."""
    for attempt in range(attempts):
        _write_settings(server)  # appended: the last value of a setting wins
        try:
            server._run(
                server.bin_dir / "pg_ctl",
                "start",
                "--wait",
                f"--timeout={START_TIMEOUT_SECONDS}",
                f"--pgdata={server.data_dir}",
                f"--log={server.root / 'server.log'}",
            )
            return
        except PostgresUnavailable as exc:
            log = server.log()
            if "Address already in use" in log and attempt + 1 < attempts:
                server.port = free_port()
                continue
            raise PostgresUnavailable(f"{exc}\nserver log:\n{log[-4000:]}") from None
