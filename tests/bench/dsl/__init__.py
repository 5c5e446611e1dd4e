"""DSL latency benchmark: JOIN/RACE overhead, signal-to-resume and timer lateness in pgdurable.

Run from the repository root with the project venv:

    python -m tests.bench.dsl [--quick] [--repeats N] [--scenarios join,race,...] [--out FILE]
"""
