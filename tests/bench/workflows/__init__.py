"""Workflow benchmark: durable SQL workflows through pgdurable vs DBOS Transact 3.x.

Run from the repository root with the project venv:

    python -m tests.bench.workflows [--quick] [-T SECONDS] [--burst N] [--no-dbos] [--out FILE]
"""
