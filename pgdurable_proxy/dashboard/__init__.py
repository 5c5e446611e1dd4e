"""The dashboard on the admin port: instances and their graphs, seen as a PostgreSQL role."""

from pgdurable_proxy.dashboard.app import Dashboard

__all__ = ["Dashboard"]
