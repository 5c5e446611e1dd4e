"""Secrets out of logs and error texts (pg_durable 0.2.8): wherever a URL is written, its
userinfo, its query values and its fragment are replaced by REDACTED, while its scheme,
host, port, path and query keys stay, so that it is still recognisable.

`redact_url` takes one URL as it was given (it may hold spaces); `redact_urls` finds the
URLs in a free text (a library's error message, a log line) and redacts each.
"""

from __future__ import annotations

import re

REDACTED = "REDACTED"
# scheme://, then up to whitespace or a quote: how URLs appear in messages and repr()s
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")


def redact_url(url: str) -> str:
    """`url` with its userinfo, each non-empty query value and its fragment redacted."""
    scheme, separator, rest = url.partition("://")
    if not separator:  # no authority: only a query and a fragment to redact
        scheme, rest = "", url
    rest, hash_mark, fragment = rest.partition("#")
    rest, question_mark, query = rest.partition("?")
    if separator:
        authority, slash, path = rest.partition("/")
        _, at, host = authority.rpartition("@")
        rest = (f"{REDACTED}@{host}" if at else authority) + slash + path
    if question_mark:
        query = "&".join(_redact_parameter(p) for p in query.split("&"))
    if fragment:
        fragment = REDACTED
    return scheme + separator + rest + question_mark + query + hash_mark + fragment


def _redact_parameter(parameter: str) -> str:
    """`key=value` keeps its key; a bare `value` goes whole; empty stays empty."""
    key, equals, value = parameter.partition("=")
    if equals:
        return f"{key}={REDACTED}" if value else parameter
    return REDACTED if parameter else parameter


def redact_urls(text: str) -> str:
    """`text` with every URL in it redacted (redact_url)."""
    if "://" not in text:  # the common case: nothing to look for
        return text
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group()), text)
