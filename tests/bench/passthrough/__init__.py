"""Passthrough benchmark: pgbench select-only direct vs pgdurable vs PgBouncer (session mode).

Run from the repository root with the project venv:

    python -m tests.bench.passthrough [--quick] [-T SECONDS] [--repeats N] [--out FILE]
"""
