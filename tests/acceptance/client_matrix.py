"""Run an out-of-process client "matrix" program and read its `key=value` report.

The programs under tests/clients/ (JdbcMatrix.java, node/matrix.js) run every case against
the proxy in one process (JVM and node start-up are slow) and print one `key=value` per line:
`<case>.ok=true` or `<case>.error=<message>` per case, a few observed values, and a final
`done=<failed cases>`. A hang is bounded by the subprocess timeout and reported as such.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.clusters import AUTH_ROLES

MAIN_LOGIN = "scram_user"


def login_args() -> list[str]:
    """USER PASSWORD pairs for the matrix programs: SCRAM first (the main login), then the rest."""
    roles = [MAIN_LOGIN, *sorted(r for r in AUTH_ROLES if r != MAIN_LOGIN)]
    args: list[str] = []
    for role in roles:
        args += [role, AUTH_ROLES[role][1]]
    return args


@dataclass
class MatrixRun:
    """What one matrix program printed."""

    cmd: list[str]
    returncode: int | None  # None: killed at the timeout
    stdout: str
    stderr: str
    values: dict[str, str] = field(default_factory=dict)

    def diagnostics(self) -> str:
        status = "timed out (killed)" if self.returncode is None else f"exit {self.returncode}"
        errors = "\n".join(f"  {k}={v}" for k, v in self.values.items() if k.endswith(".error"))
        stderr = "\n".join(self.stderr.splitlines()[-40:])
        return (
            f"{' '.join(self.cmd[:3])} ...: {status}\n"
            f"failed cases:\n{errors or '  (none reported)'}\n"
            f"--- stdout tail ---\n{self.stdout[-3000:]}\n--- stderr tail ---\n{stderr}"
        )

    def case(self, name: str) -> dict[str, str]:
        """Fail unless case `name` reported ok; return its `name.*` values (prefix stripped)."""
        if self.values.get(f"{name}.ok") != "true":
            error = self.values.get(f"{name}.error", "no result (the program crashed or hung)")
            pytest.fail(f"case {name!r} failed: {error}\n{self.diagnostics()}")
        prefix = f"{name}."
        return {k[len(prefix) :]: v for k, v in self.values.items() if k.startswith(prefix)}

    def assert_clean(self) -> None:
        """Every case passed and the program exited 0."""
        assert self.returncode == 0 and self.values.get("done") == "0", self.diagnostics()


def run_matrix(cmd: list[str], cwd: Path, timeout: float) -> MatrixRun:
    """Run a matrix program to completion (or `timeout`) and parse its report."""
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        run = MatrixRun(cmd, proc.returncode, proc.stdout, proc.stderr)
    except subprocess.TimeoutExpired as exc:
        run = MatrixRun(cmd, None, _text(exc.stdout), _text(exc.stderr))
    for line in run.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            run.values[key] = value
    return run


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", "replace")
