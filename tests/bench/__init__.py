"""Benchmarks: scripts run by hand, outside the default pytest run (norecursedirs)."""
