"""URL secrets redacted in logs and error texts (pg_durable 0.2.8): userinfo, query values,
fragment; the rest of the URL kept so it is still recognisable."""

from __future__ import annotations

import logging

import pytest

from engine.redaction import redact_url, redact_urls
from pgdurable_proxy.logs import RedactingFormatter


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "http://user:secret@127.0.0.1:8080/p?token=abc#frag",
            "http://REDACTED@127.0.0.1:8080/p?token=REDACTED#REDACTED",
        ),
        ("https://api.example/v1/items", "https://api.example/v1/items"),
        ("https://h/p?a=&b=1&flag", "https://h/p?a=&b=REDACTED&REDACTED"),
        ("http://token@h?x=1", "http://REDACTED@h?x=REDACTED"),
        ("http://a@b@c/", "http://REDACTED@c/"),  # the last @ ends the userinfo
        ("http://[::1]:80/users/@me?q=1", "http://[::1]:80/users/@me?q=REDACTED"),
        ("https://h/p#?not=query", "https://h/p#REDACTED"),
        ("https://h/p?q=a b c", "https://h/p?q=REDACTED"),  # as given: spaces and all
        ("h/p?x=1#", "h/p?x=REDACTED#"),  # no scheme: query and fragment still go
        ("{base}/p?key={secret}", "{base}/p?key=REDACTED"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_urls_finds_each_url_in_a_text() -> None:
    text = (
        "HTTP connection failed: http://u:pw@h:1/p?t=abc#f - Cannot connect "
        "(InvalidURL('https://x/y?z=2'))"
    )
    assert redact_urls(text) == (
        "HTTP connection failed: http://REDACTED@h:1/p?t=REDACTED#REDACTED - Cannot connect "
        "(InvalidURL('https://x/y?z=REDACTED'))"
    )
    assert redact_urls("no url here: a=b?c#d") == "no url here: a=b?c#d"


def test_log_lines_and_their_tracebacks_are_redacted() -> None:
    formatter = RedactingFormatter("%(message)s")
    try:
        raise ValueError("bad http://me:pw@h/x?k=v")
    except ValueError as exc:
        record = logging.LogRecord(
            "pgdurable.t", logging.ERROR, __file__, 1, "url=%s", ("https://h/?s=1",), None
        )
        record.exc_info = (type(exc), exc, exc.__traceback__)
    line = formatter.format(record)
    assert "url=https://h/?s=REDACTED" in line
    assert "ValueError: bad http://REDACTED@h/x?k=REDACTED" in line
    assert "pw" not in line and "s=1" not in line and "k=v" not in line
