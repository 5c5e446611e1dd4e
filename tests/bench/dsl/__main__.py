"""`python -m tests.bench.dsl`."""

from tests.bench.dsl.bench import main

raise SystemExit(main())
