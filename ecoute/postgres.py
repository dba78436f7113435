"""The PostgreSQL server Écoute starts for itself when `ECOUTE_DATABASE_URL` is unset (``ecoute run``) and for
the test session: Debian's ``postgresql`` binaries (initdb, postgres, pg_ctl) on a free loopback port.

PostgreSQL refuses to run as root; as root, the server runs as the ``postgres`` system user that the Debian
package creates. Only the standard library is used here, like `ecoute.brokers`.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ecoute.brokers import free_port

logger = logging.getLogger(__name__)

DATABASE = "ecoute"
# Settings for a small local server: history is written in batches by one sink, read by a few API replicas.
SERVER_OPTIONS = {
    "listen_addresses": "127.0.0.1",
    "max_connections": "100",
    "shared_buffers": "256MB",
    "work_mem": "16MB",
    "maintenance_work_mem": "128MB",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_wal_size": "2GB",
    "checkpoint_timeout": "15min",
    "log_min_messages": "warning",
    "logging_collector": "off",
    "timezone": "UTC",
}


class PostgresError(RuntimeError):
    """The local server could not be found, initialised or started; the message says what to do."""


def find_bin_dir() -> Path:
    """The directory of `initdb`/`postgres`: $ECOUTE_POSTGRES_BIN, PATH, or Debian's newest major version."""
    configured = os.environ.get("ECOUTE_POSTGRES_BIN")
    if configured:
        return Path(configured)
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]), reverse=True
    )
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(on_path)
    for candidate in candidates:
        binary = Path(candidate)
        if (binary.parent / "postgres").exists() and (binary.parent / "pg_ctl").exists():
            return binary.parent
    raise PostgresError(
        "PostgreSQL server binaries (initdb, postgres) not found: install Debian's package "
        "(`apt-get install postgresql`), set ECOUTE_POSTGRES_BIN to their directory, or set ECOUTE_DATABASE_URL "
        "to a server of yours"
    )


def _run_as() -> tuple[int, int] | None:
    """(uid, gid) to run the server as when we are root (PostgreSQL refuses root); None otherwise."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError as exc:
        raise PostgresError(
            "running as root, and PostgreSQL refuses root: create a `postgres` system user (Debian's postgresql "
            "package does) or run Écoute as another user"
        ) from exc
    return entry.pw_uid, entry.pw_gid


@dataclass
class LocalPostgres:
    """One PostgreSQL server on 127.0.0.1 with its data in `data_dir` (kept across restarts when given)."""

    data_dir: Path | None = None
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    _owns_dir: bool = False

    @property
    def url(self) -> str:
        return self.url_for(DATABASE)

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def log_path(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def start(self, timeout: float = 60.0) -> LocalPostgres:
        bin_dir = find_bin_dir()
        owner = _run_as()
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="ecoute-pg-")) / "data"
            self._owns_dir = True
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if owner is not None:
            os.chown(self.data_dir.parent, *owner)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bin_dir, owner)
        self.port = self.port or free_port()
        cmd = [str(bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port), "-k", str(self.data_dir)]
        for name, value in SERVER_OPTIONS.items():
            cmd += ["-c", f"{name}={value}"]
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=owner[0] if owner else None,
                group=owner[1] if owner else None,
            )
        self._wait_ready(time.monotonic() + timeout)
        self._create_database()
        logger.info("PostgreSQL ready at 127.0.0.1:%d (data in %s)", self.port, self.data_dir)
        return self

    def _initdb(self, bin_dir: Path, owner: tuple[int, int] | None) -> None:
        assert self.data_dir is not None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if owner is not None:
            os.chown(self.data_dir, *owner)
        cmd = [
            str(bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",  # loopback only (listen_addresses); a server of your own is for anything else
            "--encoding=UTF8",
            "--locale=C.UTF-8",
        ]
        result = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            check=False,
            user=owner[0] if owner else None,
            group=owner[1] if owner else None,
        )
        if result.returncode != 0:
            raise PostgresError(f"initdb failed ({result.returncode}): {result.stderr[-2000:]}")

    def _wait_ready(self, deadline: float) -> None:
        import socket

        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise PostgresError(
                    f"postgres exited with code {self.proc.returncode} before accepting connections; "
                    f"see {self.log_path}: {self._log_tail()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
            except OSError:
                time.sleep(0.1)
                continue
            if self._psql("SELECT 1", check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise PostgresError(f"PostgreSQL did not accept connections on 127.0.0.1:{self.port}; see {self.log_path}")

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-1500:]
        except OSError:
            return ""

    def _psql(self, sql: str, database: str = "postgres", check: bool = True) -> subprocess.CompletedProcess[str]:
        psql = find_bin_dir() / "psql"
        cmd = [str(psql) if psql.exists() else "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        cmd += ["-d", database, "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise PostgresError(f"psql failed: {result.stderr.strip()}")
        return result

    def _create_database(self) -> None:
        self.create_database(DATABASE)

    def create_database(self, name: str) -> str:
        """Create `name` if missing; returns its URL."""
        exists = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'").stdout.strip()
        if not exists:
            self._psql(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def kill(self) -> None:
        """SIGKILL the server (tests of a database that goes away); `restart` brings it back."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            # Children (backends) of a killed postmaster exit once they notice; wait for the port to free.
            self._wait_port_free(time.monotonic() + 30)

    def _wait_port_free(self, deadline: float) -> None:
        import socket

        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    pass
            except OSError:
                return
            time.sleep(0.1)

    def restart(self, timeout: float = 60.0) -> LocalPostgres:
        """Start again on the same port and data directory (after `stop` or `kill`)."""
        self.stop(remove=False)
        return self.start(timeout)

    def stop(self, remove: bool = True) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, checkpoint) of the server started here, by PID."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                logger.warning("PostgreSQL did not stop within 30 s; killing pid %d", self.proc.pid)
                self.proc.kill()
                self.proc.wait(timeout=10)
        if remove and self._owns_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir.parent, ignore_errors=True)


def default_data_dir() -> Path:
    """Where `ecoute run` keeps its local server's data (history must outlive a restart):
    $ECOUTE_POSTGRES_DATA_DIR, else /var/lib/ecoute/postgres as root (the server's user cannot enter /root),
    else ~/.local/share/ecoute/postgres."""
    configured = os.environ.get("ECOUTE_POSTGRES_DATA_DIR")
    if configured:
        return Path(configured)
    if os.geteuid() == 0:
        return Path("/var/lib/ecoute/postgres")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ecoute" / "postgres"


def main(argv: list[str] | None = None) -> int:
    """`python -m ecoute.postgres [--data DIR]`: run a local PostgreSQL until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m ecoute.postgres")
    parser.add_argument("--data", type=Path, default=None, help="data directory (default: a temporary one)")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = LocalPostgres(data_dir=args.data, port=args.port).start()
    print(f"ECOUTE_DATABASE_URL={server.url}", flush=True)
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    while not stop and server.proc is not None and server.proc.poll() is None:
        time.sleep(0.2)
    server.stop(remove=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
