"""`python -m tests.bench.workflows`."""

from tests.bench.workflows.bench import main

raise SystemExit(main())
