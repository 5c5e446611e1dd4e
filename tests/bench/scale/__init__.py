"""Scale benchmark: a catalog with a million finished instances (`python -m tests.bench.scale`)."""
