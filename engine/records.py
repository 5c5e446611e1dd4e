"""The engine's typed records: what the catalog hands it (engine/store.py) and what it hands
its executors."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Owner:
    """Whom an instance's steps run as: its owner's role OID, fixed when the instance was
    first loaded (df._instance_owner), and that role's name now, to log in with ("": the
    role is gone). A role dropped and created again under its name is another owner."""

    oid: int
    name: str

    @property
    def gone(self) -> bool:
        return not self.name


@dataclass(frozen=True, slots=True)
class Task:
    """A leaf task this engine holds the lease of (node_type: a planner.kinds.NodeType)."""

    instance_id: str
    node_id: str
    node_type: str
    payload: str | None
    token: str
    owner: Owner
    database: str


@dataclass(frozen=True, slots=True)
class Claimed:
    """A task the poll (or claim_own_leases) leased to this engine; `attempts` counts the
    leases it had (more than one: recovered after its lease expired)."""

    task: Task
    attempts: int


@dataclass(frozen=True, slots=True)
class NewInstance:
    """A new instance the poll found, with its owner and first document when asked for."""

    instance_id: str
    owner: Owner | None  # None: the instance is gone
    state: str | None


@dataclass(frozen=True, slots=True)
class AdvanceDue:
    """An instance with an advance due."""

    instance_id: str


@dataclass(frozen=True, slots=True)
class NextTimer:
    """Seconds until the next timer (None: nothing scheduled)."""

    due: float | None


PollRow = NewInstance | AdvanceDue | Claimed | NextTimer


@dataclass(frozen=True, slots=True)
class HeldCheck:
    """df's stored state of an instance, to check the held state against."""

    state: str | None
    pending: bool


@dataclass(frozen=True, slots=True)
class HttpPrivilege:
    """What an HTTP step's owner may do now: EXECUTE on the step's builder; superuser."""

    allowed: bool
    superuser: bool


@dataclass(frozen=True, slots=True)
class Pruned:
    """What one retention batch deleted: finished instances past the retention window
    (`by_age`) and, younger ones, beyond the cap on retained instances (`by_cap`)."""

    by_age: int
    by_cap: int

    @property
    def total(self) -> int:
        return self.by_age + self.by_cap
