"""Which df_wake notifications an engine acts on (engine/presence.py, WakeShare)."""

from __future__ import annotations

import uuid

from engine.presence import WakeShare

ENGINES = sorted(uuid.UUID(int=n) for n in (7, 3, 11))


def _shares() -> list[WakeShare]:
    shares = [WakeShare(f"{n:016x}", key) for n, key in enumerate(ENGINES)]
    for share in shares:
        share.update(ENGINES)
    return shares


def test_a_relayed_session_wakes_only_its_relays_engine() -> None:
    shares = _shares()
    assert shares[1].channel == "df_wake_0000000000000001"
    # (only that engine listens on its channel: whatever the PID, the wake-up is its own)
    assert all(shares[1].ours(pid, shares[1].channel) for pid in range(100, 120))


def test_other_sessions_wake_exactly_one_engine_each_by_pid() -> None:
    shares = _shares()
    for pid in range(1000, 1300):
        assert sum(s.ours(pid, "df_wake") for s in shares) == 1
    assert {pid % 3 for pid in range(1000, 1003) if shares[0].ours(pid, "df_wake")} == {0}


def test_an_engine_not_registered_yet_takes_every_wake_up() -> None:
    # between its boot and its first heartbeat's answer, or after another engine removed
    # its row while it reconnected: never a share nobody takes
    share = WakeShare("00000000000000aa", uuid.UUID(int=99))
    share.update(ENGINES)
    assert all(share.ours(pid, "df_wake") for pid in range(10))
    share.update([*ENGINES, uuid.UUID(int=99)])
    assert sum(share.ours(pid, "df_wake") for pid in range(100)) == 25
