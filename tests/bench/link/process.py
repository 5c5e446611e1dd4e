"""The latency link as a child process of a benchmark or a test: start, pid, stop, counters."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bench.harness import REPO


@dataclass
class LinkProcess:
    """`python -m tests.bench.link` relaying to upstream_port, holding each chunk delay_ms
    each way (a round trip through it costs 2 × delay_ms more)."""

    upstream_port: int
    delay_ms: float
    stats_path: Path
    upstream_host: str = "127.0.0.1"
    port: int = 0  # known once started
    process: subprocess.Popen[str] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 10.0) -> LinkProcess:
        cmd = [
            sys.executable,
            "-m",
            "tests.bench.link",
            "--upstream-host",
            self.upstream_host,
            "--upstream-port",
            str(self.upstream_port),
            "--delay-ms",
            str(self.delay_ms),
            "--stats",
            str(self.stats_path),
        ]
        self.process = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if line.startswith("link ready "):
                self.port = int(line.split()[2])
                return self
            if not line and self.process.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"the latency link did not start (exit {self.process.poll()})")

    def stop(self, timeout: float = 10.0) -> dict[str, Any]:
        """SIGTERM, wait, and return the counters it wrote ({} if none)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        try:
            stats: dict[str, Any] = json.loads(self.stats_path.read_text())
        except (OSError, ValueError):
            return {}
        return stats
