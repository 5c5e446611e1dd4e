"""Parse the upstream DSN (libpq URI or key=value form) into what the relay needs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_KEYWORD = re.compile(r"\s*(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S*)")


class DSNError(ValueError):
    """The upstream DSN cannot be used; the message is the one-line reason."""


@dataclass(frozen=True, slots=True)
class UpstreamDSN:
    """Where PostgreSQL is and how pgdurable's own (admin) connection logs in."""

    host: str
    port: int
    user: str
    dbname: str
    password: str | None = None
    sslmode: str = "prefer"
    sslrootcert: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None

    @property
    def is_unix_socket(self) -> bool:
        """True when host names a socket directory."""
        return self.host.startswith("/")

    def with_user(self, user: str, password: str | None = None, dbname: str | None = None) -> str:
        """A libpq URI for the same server as another role (used by the engine)."""
        auth = _quote(user) + (f":{_quote(password)}" if password else "")
        path = _quote(dbname or self.dbname)
        if self.is_unix_socket:  # an empty host with a port is not a socket to asyncpg
            query = f"host={_quote(self.host)}&port={self.port}&sslmode={self.sslmode}"
            return f"postgresql://{auth}@/{path}?{query}"
        host = _host_part(self.host)
        return f"postgresql://{auth}@{host}:{self.port}/{path}?sslmode={self.sslmode}"

    def admin_uri(self) -> str:
        """The DSN of pgdurable's admin connection, normalised to a URI."""
        return self.with_user(self.user, self.password)


def parse_dsn(text: str) -> UpstreamDSN:
    """Parse a libpq URI or key=value conninfo string."""
    text = text.strip()
    if not text:
        raise DSNError("the upstream DSN is empty")
    if text.startswith(("postgresql://", "postgres://")):
        params = _parse_uri(text)
    elif "=" in text:
        params = _parse_keywords(text)
    else:
        raise DSNError(f"not a PostgreSQL URI or key=value DSN: {text!r}")
    return _build(params)


def _parse_uri(text: str) -> dict[str, str]:
    parts = urlsplit(text)
    params: dict[str, str] = {}
    try:
        port = parts.port
    except ValueError as exc:
        raise DSNError(f"invalid port in DSN: {exc}") from None
    if parts.hostname:
        params["host"] = unquote(parts.hostname)
    if port is not None:
        params["port"] = str(port)
    if parts.username:
        params["user"] = unquote(parts.username)
    if parts.password:
        params["password"] = unquote(parts.password)
    if parts.path and parts.path != "/":
        params["dbname"] = unquote(parts.path.lstrip("/"))
    params.update(parse_qsl(parts.query, keep_blank_values=True))
    return params


def _parse_keywords(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        match = _KEYWORD.match(text, pos)
        if match is None:
            if text[pos:].strip():
                raise DSNError(f"cannot parse DSN near {text[pos:]!r}")
            break
        value = match.group(2)
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[match.group(1)] = value
        pos = match.end()
    return params


def _build(params: dict[str, str]) -> UpstreamDSN:
    known = {
        "host",
        "port",
        "user",
        "dbname",
        "password",
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "application_name",
        "connect_timeout",
    }
    unknown = sorted(set(params) - known)
    if unknown:
        raise DSNError(f"unsupported DSN parameter: {unknown[0]}")
    port_text = params.get("port", "5432")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise DSNError(f"invalid port in DSN: {port_text!r}")
    sslmode = params.get("sslmode", "prefer")
    if sslmode not in SSL_MODES:
        raise DSNError(f"invalid sslmode in DSN: {sslmode!r}")
    user = params.get("user", "postgres")
    return UpstreamDSN(
        host=params.get("host", "127.0.0.1") or "127.0.0.1",
        port=int(port_text),
        user=user,
        dbname=params.get("dbname", user),
        password=params.get("password"),
        sslmode=sslmode,
        sslrootcert=params.get("sslrootcert"),
        sslcert=params.get("sslcert"),
        sslkey=params.get("sslkey"),
    )


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def _host_part(host: str) -> str:
    return f"[{host}]" if ":" in host else host
