"""pgdurable: durable SQL workflows behind a PostgreSQL wire-protocol relay."""

__version__ = "0.1.0"
