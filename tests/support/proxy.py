"""Run the real `pgdurable` process on free ports and wait for it to be ready."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pgdurable_proxy.cluster import free_port


@dataclass
class ProxyProcess:
    """A `python -m pgdurable_proxy` child process."""

    upstream: str
    extra_args: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    log_path: Path | None = None
    soft_fd_limit: int | None = None  # start with this soft RLIMIT_NOFILE
    hard_fd_limit: int | None = None  # and this hard one (lowering it cannot be undone)
    env: dict[str, str] = field(default_factory=dict)  # added to this process's environment
    process: subprocess.Popen[str] | None = None

    def __post_init__(self) -> None:
        while self.http_port == self.port:  # the OS may hand out a just-freed port twice
            self.http_port = free_port()

    def start(self, timeout: float = 30.0) -> ProxyProcess:
        """Launch and wait for the 'ready' line."""
        cmd = [
            sys.executable,
            "-m",
            "pgdurable_proxy",
            "--upstream",
            self.upstream,
            "--port",
            str(self.port),
            "--http-port",
            str(self.http_port),
            "--log-level",
            "info",
            *self.extra_args,
        ]
        log = open(self.log_path, "a") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, **self.env},
            preexec_fn=self._limit_fds if self.soft_fd_limit or self.hard_fd_limit else None,
        )
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if line.startswith("pgdurable ready"):
                return self
            if not line and self.process.poll() is not None:
                raise RuntimeError(f"pgdurable exited with {self.process.returncode}")
        raise TimeoutError("pgdurable did not become ready")

    def _limit_fds(self) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        hard = self.hard_fd_limit or hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.soft_fd_limit or min(soft, hard), hard))

    def dsn(self, user: str = "postgres", password: str = "", dbname: str = "postgres") -> str:
        """libpq URI pointing at the proxy."""
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def signal(self, sig: int) -> None:
        """Send a signal to the process."""
        assert self.process is not None
        self.process.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode
