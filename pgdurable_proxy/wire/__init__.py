"""Sans-I/O PostgreSQL wire protocol pieces: bytes in, messages and verdicts out (stdlib only)."""
