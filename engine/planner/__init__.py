"""The planner: pure functions from an instance's stored state to its next changes (no I/O)."""
