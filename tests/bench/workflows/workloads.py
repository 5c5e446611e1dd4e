"""The workflow shapes both systems run: N sequential SQL steps, each a SELECT 1 or an INSERT."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

EVENTS_TABLE = "bench_events"
EVENTS_DDL = (
    f"CREATE TABLE {EVENTS_TABLE} (id bigserial PRIMARY KEY, step integer NOT NULL, "
    "at timestamptz NOT NULL DEFAULT now())"
)
TERMINAL = ("completed", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class Workload:
    """`steps` sequential SQL steps; `insert` ones each add one row to bench_events."""

    name: str
    steps: int
    insert: bool

    def step_sql(self, n: int) -> str:
        """The statement of step n (1-based)."""
        if self.insert:
            return f"INSERT INTO {EVENTS_TABLE} (step) VALUES ({n})"
        return "SELECT 1"

    @property
    def start_sql(self) -> str:
        """pgdurable: `SELECT df.start('step 1' ~> 'step 2' ~> ...)`."""
        graph = " ~> ".join(_literal(self.step_sql(n)) for n in range(1, self.steps + 1))
        return f"SELECT df.start({graph})"

    @property
    def rows_per_workflow(self) -> int:
        """Rows a completed workflow leaves in bench_events (exactly-once check)."""
        return self.steps if self.insert else 0


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("select1", 1, insert=False),
        Workload("select3", 3, insert=False),
        Workload("insert1", 1, insert=True),
        Workload("insert3", 3, insert=True),
        # a long chain: round trips per step tend to what one chained step costs
        Workload("select10", 10, insert=False),
    )
}
DEFAULT_WORKLOADS = ("select1", "select3", "insert1", "insert3")  # select10: on request
HELLO_WORLD = "select1"


def runs_of(
    workloads: Sequence[str], modes: Sequence[str], clients: Sequence[int]
) -> list[tuple[str, str, int]]:
    """(workload, mode, clients) in order: a closed loop per client count, a burst from the
    first count's clients, single with one."""
    per_mode = {"closed": list(clients), "burst": [clients[0]], "single": [1]}
    return [(w, m, n) for w in workloads for m in modes for n in per_mode[m]]
