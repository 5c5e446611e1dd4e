"""df._step_guard's verdict, read from the command tag of a step's BEGIN round trip."""

from __future__ import annotations

import pytest

from engine.connections.step_connection import OwnerCheck, OwnerNotAllowed, StepConnection


@pytest.mark.parametrize(
    ("tag", "check"),
    [
        ("SELECT 2", OwnerCheck.ALLOWED),
        ("SELECT 1", OwnerCheck.SUPERUSER),
        ("SELECT 0", OwnerCheck.GONE),
    ],
)
def test_the_tag_counts_the_verdict(tag: str, check: OwnerCheck) -> None:
    assert OwnerCheck.from_tag(tag) is check


@pytest.mark.parametrize("allow_superuser", [False, True])
def test_a_superuser_is_refused_unless_superuser_instances_are_on(allow_superuser: bool) -> None:
    step = StepConnection.__new__(StepConnection)  # no connection: only the verdict is asked
    step.allow_superuser = allow_superuser
    assert step.verdict("SELECT 2") is None
    assert step.verdict("SELECT 0") is OwnerCheck.GONE
    expected = None if allow_superuser else OwnerCheck.SUPERUSER
    assert step.verdict("SELECT 1") is expected


def test_refusals_speak_pg_durables_words() -> None:
    gone = OwnerNotAllowed(OwnerCheck.GONE).message_for("0a0b0c0d", "alice")
    assert gone == "Instance 0a0b0c0d: submitted_by role no longer exists in pg_roles"
    superuser = OwnerNotAllowed(OwnerCheck.SUPERUSER).message_for("0a0b0c0d", "alice")
    assert superuser == (
        'pg_durable blocked instance 0a0b0c0d: submitted_by role "alice" is a superuser, '
        "but pg_durable.enable_superuser_instances is off"
    )
