"""Shared test helpers: real PostgreSQL clusters and real pgdurable processes."""
