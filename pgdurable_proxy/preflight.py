"""What pgdurable checks before it touches anything: that no other pgdurable uses its data
directory (a lock held for the process's lifetime) and that its port is free."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path
from typing import IO

LOCK_FILE = "pgdurable.lock"


class StartupConflict(Exception):
    """Something pgdurable needs is taken by another process; the message is one line."""


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Hold an exclusive lock on `data_dir` for as long as the returned file stays open (the
    kernel drops it when the process ends, however it ends). The file names the holder."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise StartupConflict(
            f"data directory {data_dir} is in use by another pgdurable (pid {holder}); "
            "stop it first or choose another --data-dir"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def check_port_free(host: str, port: int) -> None:
    """Raise StartupConflict when `host`:`port` cannot be listened on (as the relay will:
    every address `host` resolves to, SO_REUSEADDR on). Port 0 is always free."""
    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise StartupConflict(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise StartupConflict(
                    f"cannot listen on {host}:{port}: {exc.strerror} "
                    "(another server uses the port; choose another --port)"
                ) from None
