"""Both implementations of the relay's framing, for tests that run against each.

The compiled one is built from the checkout's `_framing.c` into a temporary directory (so
the tests check the source as it is, whether or not anything was built in place or
installed); without a C compiler the tests of that variant are skipped, saying why.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from pgdurable_proxy.wire import frames

SOURCE = Path(frames.__file__).with_name("_framing.c")
MODULE = "pgdurable_proxy.wire._framing"


@dataclass(frozen=True)
class Framing:
    """One implementation: its client framer and server tracker classes."""

    name: str
    ClientFramer: type[frames.ClientFramerBase]
    ServerTracker: type[frames.ServerTrackerBase]


PURE = Framing("python", frames.ClientFramerPy, frames.ServerTrackerPy)


class NotBuilt(Exception):
    """The C extension could not be compiled here."""


def build_compiled(build_dir: Path) -> ModuleType:
    """Compile `_framing.c` into `build_dir` and load it (raises NotBuilt without a C
    compiler or Python headers)."""
    from setuptools import Distribution, Extension

    dist = Distribution({"ext_modules": [Extension(MODULE, [str(SOURCE)])]})
    command = dist.get_command_obj("build_ext")
    command.build_lib = str(build_dir)
    command.build_temp = str(build_dir / "temp")
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            command.ensure_finalized()
            command.run()
    except Exception as exc:
        raise NotBuilt(f"{type(exc).__name__}: {exc}\n{output.getvalue()[-2000:]}") from exc
    built = next(build_dir.rglob("_framing*.so"), None)
    if built is None:
        raise NotBuilt(f"no module was built\n{output.getvalue()[-2000:]}")
    spec = importlib.util.spec_from_file_location(MODULE, built)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compiled(module: ModuleType) -> Framing:
    """The classes the relay uses when `module` is the built extension."""
    client, server = frames.compiled_variants(module)
    return Framing("compiled", client, server)
