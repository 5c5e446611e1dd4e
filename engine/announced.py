"""A new instance's first document, announced by the df.start that created it.

On a session pgdurable relays, df.start (df._submit) writes a new instance's `_advance` row
already claimed for the relaying engine, named by the digest of its key (`relay_engine`,
found by df._announcing_engine), and df._announce_first raises a NOTICE with the instance's
first document. The relay takes the notice out of the stream and hands it to
its engine once the session's transaction has ended; the engine then takes the instance's
first step at once, without a scheduler pass (one round trip fewer from a start to its
first step).

Any relayed session can raise a notice with the same text, so the detail carries a MAC:
sha256 over the engine's key, which users cannot read, around the document. A notice
without the right MAC, or whose owner is not the session's login role, is ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass

from engine.records import Owner

FIRST_MARKER = "pgdurable:first"  # df._announce_first's NOTICE


@dataclass(frozen=True, slots=True)
class Announced:
    """A new instance to take the first step of, with its owner and first document."""

    instance_id: str
    owner: Owner
    state: str


def relay_engine(key: str) -> str:
    """How df._announcing_engine finds the engine `key` from the relay's startup parameter."""
    return hashlib.sha256(key.encode()).hexdigest()


def read_announced(key: str, login_role: str, detail: str) -> Announced | None:
    """The instance a df._announce_first notice names, if the engine `key` sealed it and
    the session's login role owns it; None otherwise."""
    mac, _, document = detail.partition(" ")
    sealed = hashlib.sha256((key + document + key).encode()).hexdigest()
    if not hmac.compare_digest(mac.encode(), sealed.encode()):
        return None
    state = json.loads(document)
    if state.get("owner") != login_role:
        return None
    owner = Owner(int(state["owner_oid"]), str(state["owner"]))
    return Announced(str(state["id"]), owner, document)
