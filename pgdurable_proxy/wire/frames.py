"""Header-only framing of both directions: the relay's hot path.

The client framer (client_frames.py) checks every client→server header and offers only
candidate Query/Parse messages to the inspector; the server tracker (server_frames.py)
follows server→client message boundaries, reading only the few messages the relay needs.

Two implementations of the same classes: pure Python, and one whose state and common case
live in an optional C extension (`_framing.c`, built by `pip install .` when a compiler is
there), chosen at import unless PGDURABLE_PURE_PYTHON=1. The logic is written once, in
Python: the C `feed` handles only chunks that need nothing of it (every message complete
or streamed, no candidate, nothing tracked but ReadyForQuery) and hands any other chunk,
before changing any state, to `_feed_python`. Per pgbench `-S` transaction (request and
reply, `python -m tests.bench.relay_path`) the pure-Python relay adds ≈ 1.3–2.5 µs to the
Python work of a bare pipe, the compiled one ≈ 0.13 µs.
"""

from __future__ import annotations

import os
from types import ModuleType

from pgdurable_proxy.wire.client_frames import (
    INSPECT_LIMIT,
    ClientFramerBase,
    ClientFramerPy,
    Inspector,
    is_candidate,
)
from pgdurable_proxy.wire.server_frames import (
    IDLE,
    NoticeHandler,
    ServerTrackerBase,
    ServerTrackerPy,
)

__all__ = [
    "ACCELERATED",
    "IDLE",
    "INSPECT_LIMIT",
    "ClientFramer",
    "ClientFramerBase",
    "ClientFramerPy",
    "Inspector",
    "NoticeHandler",
    "ServerTracker",
    "ServerTrackerBase",
    "ServerTrackerPy",
    "compiled_variants",
    "is_candidate",
]


def compiled_variants(
    core: ModuleType,
) -> tuple[type[ClientFramerBase], type[ServerTrackerBase]]:
    """The framer and tracker on the compiled module's state and fast `feed` (the core
    types come first, so their `feed` is the one called; it falls back to `_feed_python`)."""

    class ClientFramerC(core.ClientFramerCore, ClientFramerBase):  # type: ignore[name-defined,misc]
        __slots__ = ("_inspector", "_need", "inspect")

    class ServerTrackerC(core.ServerTrackerCore, ServerTrackerBase):  # type: ignore[name-defined,misc]
        __slots__ = (
            "_markers",
            "_on_notice",
            "_tracked",
            "backend_key",
            "fatal_seen",
            "parameters",
        )

    return ClientFramerC, ServerTrackerC


def _compiled_core() -> ModuleType | None:
    """The C extension, unless it is not built or PGDURABLE_PURE_PYTHON=1 asks for Python."""
    if os.environ.get("PGDURABLE_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from pgdurable_proxy.wire import _framing
    except ImportError:
        return None
    return _framing


_core = _compiled_core()
ACCELERATED = _core is not None
"""True when the relay's framing runs on the compiled extension."""
ClientFramer: type[ClientFramerBase] = ClientFramerPy
ServerTracker: type[ServerTrackerBase] = ServerTrackerPy
if _core is not None:
    ClientFramer, ServerTracker = compiled_variants(_core)
