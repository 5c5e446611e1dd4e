"""Node types and statuses, as the catalog stores them (text columns; df.nodes.type,
df.instances.status, df.instance_nodes.status)."""

from __future__ import annotations

from enum import StrEnum


class NodeType(StrEnum):
    """A node's type: what the planner does with it."""

    SQL = "SQL"
    HTTP = "HTTP"
    HTTP_MULTIPART = "HTTP_MULTIPART"
    SLEEP = "SLEEP"
    WAIT_SCHEDULE = "WAIT_SCHEDULE"
    SIGNAL = "SIGNAL"
    THEN = "THEN"
    IF = "IF"
    JOIN = "JOIN"
    RACE = "RACE"
    LOOP = "LOOP"
    BREAK = "BREAK"
    RETRY = "RETRY"  # df.retry: a failure policy for its one child's subgraph
    TIMEOUT = "TIMEOUT"  # df.timeout: a deadline for its one child's subgraph
    COMPENSATED = "COMPENSATED"  # forward <-> undo: the undo runs if the instance fails


class Status(StrEnum):
    """An instance's or a node's status (a node is never cancelled: its instance is)."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"  # an instance only (df.pause): no new step starts
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    COMPENSATED = "compensated"  # an instance that failed and whose forwards were undone


# an instance's last status
TERMINAL = (Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.COMPENSATED)
HTTP_TYPES = (NodeType.HTTP, NodeType.HTTP_MULTIPART)
TIMER_TYPES = (NodeType.SLEEP, NodeType.WAIT_SCHEDULE)
# nodes that run (or wait) themselves rather than through their children
LEAF_TYPES = frozenset({NodeType.SQL, NodeType.SIGNAL, *HTTP_TYPES, *TIMER_TYPES})

# The members under plain names, for the planner's comparisons: a member looked up on its
# enum class costs about four times a module global, and the planner compares statuses and
# types for every node of every advance.
PENDING = Status.PENDING
RUNNING = Status.RUNNING
PAUSED = Status.PAUSED
COMPLETED = Status.COMPLETED
FAILED = Status.FAILED
CANCELLED = Status.CANCELLED
SQL = NodeType.SQL
IF = NodeType.IF
JOIN = NodeType.JOIN
LOOP = NodeType.LOOP
BREAK = NodeType.BREAK
