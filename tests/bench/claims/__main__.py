"""`python -m tests.bench.claims`."""

from tests.bench.claims.bench import main

raise SystemExit(main())
