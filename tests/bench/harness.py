"""What every benchmark entry point shares: logging, the code revision, and a main that
owns the work directory and turns Ctrl-C/SIGTERM and bench errors into exit codes."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parents[2]

Bench = Callable[[argparse.Namespace, Path, Path, contextlib.ExitStack], int]


def log(msg: str) -> None:
    """A timestamped progress line on stderr."""
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def git_rev() -> str:
    """The short commit, with +dirty when the server's packages have local changes."""
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "-C",
                str(REPO),
                "status",
                "--porcelain",
                "--",
                "pgdurable_proxy",
                "engine",
                "dsl",
            ],
            capture_output=True,
            text=True,
        ).stdout
        return rev + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_bench(
    args: argparse.Namespace, name: str, bench: Bench, errors: tuple[type[Exception], ...]
) -> int:
    """Run `bench` in a work dir (args.workdir, or a temporary one unless args.keep), writing
    JSON to args.out (default /tmp/pgdurable-bench-<name>-<stamp>.json); 130 on Ctrl-C or
    SIGTERM, 1 on one of `errors`. Everything registered on the stack is stopped on exit."""
    signal.signal(signal.SIGTERM, _sigterm)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_path: Path = args.out or Path(f"/tmp/pgdurable-bench-{name}-{stamp}.json")
    with contextlib.ExitStack() as stack:
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=True)
            workdir = args.workdir
        else:
            workdir = Path(tempfile.mkdtemp(prefix=f"pgdurable-bench-{name}-"))
            if not args.keep:
                stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        try:
            return bench(args, workdir, out_path, stack)
        except KeyboardInterrupt:
            print("\ninterrupted: stopping servers", file=sys.stderr, flush=True)
            return 130
        except errors as exc:
            print(f"bench: error: {exc}", file=sys.stderr, flush=True)
            return 1
        finally:
            if args.keep or args.workdir is not None:
                print(f"work dir kept: {workdir}", file=sys.stderr)
    return 0  # not reached: ExitStack does not swallow exceptions
