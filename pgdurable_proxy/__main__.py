"""`python -m pgdurable_proxy` is the `pgdurable` command."""

import sys

from pgdurable_proxy.cli import main

sys.exit(main())
