"""`python -m tests.bench.passthrough`."""

from tests.bench.passthrough.bench import main

raise SystemExit(main())
