"""A throwaway PostgreSQL server for store tests, from the PostgreSQL binaries on this machine.

``postgres_server()`` yields the URL of a running server: ``EVALSTACK_TEST_POSTGRES_URL`` when set,
else a fresh cluster in a temporary folder (``initdb`` + ``pg_ctl``; as root, run as the ``postgres``
user), stopped afterwards. ``local_postgres()`` always starts a cluster of its own, which a fault
test may kill and start again. It raises :class:`PostgresUnavailable`, with the reason, when neither
can be had, so tests can skip saying why.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from tests.fakes.serving import free_port

URL_VARIABLE = "EVALSTACK_TEST_POSTGRES_URL"


class PostgresUnavailable(Exception):
    """No PostgreSQL server can be used here; the message says why."""


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise PostgresUnavailable(
            f"no PostgreSQL binaries (initdb) on this machine and {URL_VARIABLE} is not set"
        )
    return Path(initdb).parent


def _runner() -> list[str]:
    """The command prefix that runs PostgreSQL tools as an unprivileged user (they refuse root)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable(
            "running as root and there is no 'postgres' user to run PostgreSQL as"
        ) from None
    if shutil.which("runuser") is None:
        raise PostgresUnavailable("running as root and there is no 'runuser' to run PostgreSQL as 'postgres'")
    return ["runuser", "-u", "postgres", "--"]


def _run(what: str, command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise PostgresUnavailable(f"{what} failed: {(done.stderr or done.stdout)[-500:]}")


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """The URL (``postgresql+psycopg://...``, database ``postgres``) of a running server."""
    given = os.environ.get(URL_VARIABLE)
    if given:
        yield given
        return
    with local_postgres() as server:
        yield server.url


class LocalPostgres:
    """A PostgreSQL cluster of our own, which a test may kill (as a crash would) and start again.

    It keeps its port and data across ``kill`` and ``start``, so clients reconnect to the same URL.
    """

    def __init__(self, folder: Path, bin_dir: Path, prefix: list[str]) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://evalstack@127.0.0.1:{self.port}/postgres"
        self._pg_ctl = [*prefix, str(bin_dir / "pg_ctl"), "-D", str(self.data)]

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        _run("pg_ctl start", [*self._pg_ctl, "-o", options, "-l", str(self.folder / "log"), "-w", "start"])

    def kill(self) -> None:
        """Stop at once, dropping every connection and skipping the shutdown checkpoint."""
        subprocess.run(
            [*self._pg_ctl, "-m", "immediate", "stop"], capture_output=True, timeout=60, check=False
        )


@contextlib.contextmanager
def local_postgres() -> Iterator[LocalPostgres]:
    """A fresh cluster in a temporary folder (``initdb`` + ``pg_ctl``; as root, run as ``postgres``)."""
    try:
        import psycopg  # noqa: F401  (the driver the store's URL names)
    except ImportError:
        raise PostgresUnavailable(
            "the psycopg driver is not installed (pip install 'psycopg[binary]')"
        ) from None
    bin_dir, prefix = _bin_dir(), _runner()
    folder = Path(tempfile.mkdtemp(prefix="evalstack-pg-"))
    if prefix:
        shutil.chown(folder, "postgres")
    server = LocalPostgres(folder, bin_dir, prefix)
    try:
        initdb = [
            str(bin_dir / "initdb"),
            "-D",
            str(server.data),
            "-U",
            "evalstack",
            "--auth=trust",
            "-E",
            "UTF8",
        ]
        _run("initdb", [*prefix, *initdb])
        server.start()
        try:
            yield server
        finally:
            server.kill()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server for one test; dropped afterwards."""
    import psycopg

    name = f"evalstack_{uuid.uuid4().hex[:12]}"
    admin = server_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
