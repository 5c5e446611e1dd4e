"""`python -m tests.bench.link --upstream-port PORT --delay-ms MS`."""

from tests.bench.link.relay import main

raise SystemExit(main())
