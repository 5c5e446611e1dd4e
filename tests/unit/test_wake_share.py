"""Which df_wake notifications an engine acts on (engine/presence.py, WakeShare)."""

from __future__ import annotations

import uuid

from engine.presence import WakeShare

ENGINES = sorted(uuid.UUID(int=n) for n in (7, 3, 11))


def test_each_notification_wakes_exactly_one_engine_by_its_backend_pid() -> None:
    shares = [WakeShare(key) for key in ENGINES]
    for share in shares:
        share.update(ENGINES)
    for pid in range(1000, 1300):
        assert sum(s.ours(pid) for s in shares) == 1
    assert [pid for pid in range(1000, 1006) if shares[0].ours(pid)] == [1002, 1005]


def test_an_engine_not_registered_yet_takes_every_wake_up() -> None:
    # between its boot and its first heartbeat's answer, or after another engine removed
    # its row while it reconnected: never a share nobody takes
    share = WakeShare(uuid.UUID(int=99))
    share.update(ENGINES)
    assert all(share.ours(pid) for pid in range(10))
    share.update([*ENGINES, uuid.UUID(int=99)])
    assert sum(share.ours(pid) for pid in range(100)) == 25
