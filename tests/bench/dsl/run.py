"""`python tests/bench/dsl/run.py`: the same as `python -m tests.bench.dsl`."""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    from tests.bench.dsl.bench import main

    raise SystemExit(main())
