"""Which df_wake notifications an engine acts on (engine/presence.py, WakeShare)."""

from __future__ import annotations

import uuid

from engine.presence import WakeShare

ENGINES = sorted(uuid.UUID(int=n) for n in (7, 3, 11))


def _shares() -> list[WakeShare]:
    shares = [WakeShare(f"relay{n}", key) for n, key in enumerate(ENGINES)]
    for share in shares:
        share.update(ENGINES)
    return shares


def test_a_relayed_session_wakes_only_its_relays_engine() -> None:
    shares = _shares()
    for pid in range(100, 120):
        assert [s.ours(pid, "relay1") for s in shares] == [False, True, False]


def test_other_sessions_wake_exactly_one_engine_each_by_pid() -> None:
    shares = _shares()
    for pid in range(1000, 1300):
        assert sum(s.ours(pid, "") for s in shares) == 1
    assert {pid % 3 for pid in range(1000, 1003) if shares[0].ours(pid, "")} == {0}


def test_an_engine_not_registered_yet_takes_every_wake_up() -> None:
    # between its boot and its first heartbeat's answer, or after another engine removed
    # its row while it reconnected: never a share nobody takes
    share = WakeShare("relay", uuid.UUID(int=99))
    share.update(ENGINES)
    assert all(share.ours(pid, "") for pid in range(10))
    share.update([*ENGINES, uuid.UUID(int=99)])
    assert sum(share.ours(pid, "") for pid in range(100)) == 25
