"""A real, throwaway PostgreSQL server for tests and benches: initdb + postgres on a free port
in a temporary directory owned by the ``postgres`` user (PostgreSQL refuses to run as root),
stopped and removed in ``finally``. Binaries: ``pg_config --bindir``, else the newest
``/usr/lib/postgresql/*/bin`` (Debian's layout; any major version).

It listens on 127.0.0.1 and on a Unix socket in its directory. The lab's hosts (network
namespaces) share this machine's files, so a registry process in any of them reaches it
through :meth:`PgServer.socket_url`, as registry hosts of a real deployment reach their
database over its own network; no lab address carries database traffic.

A fresh database is ``CREATE DATABASE ... TEMPLATE template0``: a few ms.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import IO

from mycelium.procs import free_port, wait_for

SUPERUSER = "postgres"
_counter = itertools.count()


def bindir() -> Path | None:
    """Where initdb and postgres are, or None when PostgreSQL is not installed."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(Path(out.stdout.strip()))
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += versions
    for path in candidates:
        if (path / "initdb").is_file() and (path / "postgres").is_file():
            return path
    return None


def missing_reason() -> str | None:
    """Why a PostgreSQL server cannot be started here (None: it can)."""
    if bindir() is None:
        return "PostgreSQL server binaries (initdb, postgres) are not installed"
    try:
        pwd.getpwnam(SUPERUSER)
    except KeyError:
        return f"no {SUPERUSER!r} user to run PostgreSQL as"
    return None


@dataclass(frozen=True)
class PgServer:
    port: int
    admin_url: str  # the postgres database, as the superuser (no password: trust locally)
    socket_dir: Path  # where its Unix socket is (``.s.PGSQL.PORT``)

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def socket_url(self, url: str) -> str:
        """``url`` (one of :meth:`url`'s) through the Unix socket: usable from any lab host."""
        name = url.rsplit("/", 1)[1]
        return f"postgresql://{SUPERUSER}@/{name}?host={self.socket_dir}&port={self.port}"

    def create_database(self, prefix: str = "t") -> str:
        """A fresh empty database; returns its URL."""
        import psycopg

        name = f"{prefix}_{os.getpid()}_{next(_counter)}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _as_postgres(args: list[str], *, stdout: int | IO[bytes], stderr: int) -> Popen[bytes]:
    user = pwd.getpwnam(SUPERUSER)
    return subprocess.Popen(
        args,
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        # its own session: no signal meant for the caller's process group reaches it
        start_new_session=True,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/tmp"},
        stdout=stdout,
        stderr=stderr,
    )


@contextlib.contextmanager
def postgres_server(*, fsync: bool = False) -> Iterator[PgServer]:
    """Start PostgreSQL as ``postgres`` on a free port; stop it and remove its files after."""
    import psycopg

    binaries = bindir()
    if binaries is None:
        raise RuntimeError("PostgreSQL is not installed")
    user = pwd.getpwnam(SUPERUSER)
    root = Path(tempfile.mkdtemp(prefix="mycelium-pg-"))
    process: Popen[bytes] | None = None
    try:
        os.chown(root, user.pw_uid, user.pw_gid)
        data, log = root / "data", root / "server.log"
        init = _as_postgres(
            [str(binaries / "initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust", "-N"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _, err = init.communicate(timeout=120)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {err.decode(errors='replace').strip()}")
        port = free_port()
        settings = [
            f"port={port}",
            "listen_addresses=127.0.0.1",
            f"unix_socket_directories={root}",
            "max_connections=200",
            f"fsync={'on' if fsync else 'off'}",
            "shared_buffers=64MB",
        ]
        args = [str(binaries / "postgres"), "-D", str(data)]
        for setting in settings:
            args += ["-c", setting]
        with open(log, "wb") as out:
            os.chown(log, user.pw_uid, user.pw_gid)
            process = _as_postgres(args, stdout=out, stderr=subprocess.STDOUT)
        server = PgServer(port, f"postgresql://{SUPERUSER}@127.0.0.1:{port}/postgres", root)

        def ready() -> bool:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"postgres exited: {log.read_text(errors='replace')[-500:]}")
            with psycopg.connect(server.admin_url, connect_timeout=2):
                return True

        wait_for(ready, timeout=60, interval=0.1, what="PostgreSQL accepting connections")
        yield server
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # fast shutdown: ends client sessions too
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
