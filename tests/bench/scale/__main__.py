"""`python -m tests.bench.scale`."""

from tests.bench.scale.bench import main

raise SystemExit(main())
