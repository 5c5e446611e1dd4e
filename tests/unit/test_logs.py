"""--log-format json: the key=value template of a log call read into JSON keys."""

from __future__ import annotations

import json
import logging
from typing import Any

from engine.redaction import redact_urls
from pgdurable_proxy.config import parse_settings
from pgdurable_proxy.logs import TEXT_LINE, JsonFormatter, RedactingFormatter


def _record(msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("pgdurable.engine", logging.INFO, __file__, 1, msg, args, info)


def _json(record: logging.LogRecord) -> dict[str, Any]:
    line = JsonFormatter().format(record)
    assert "\n" not in line  # one object per line, tracebacks included
    parsed: dict[str, Any] = json.loads(line)
    return parsed


def test_fields_take_their_arguments_values() -> None:
    record = _record(
        "event=step_failed instance=%s node=%s attempt=%d seconds=%.1f message=%r gone=%s",
        *("ab12cd34", "ef56ab78", 3, 1.234, "SQL execution failed: division by zero", None),
    )
    line = _json(record)
    assert line["level"] == "INFO" and line["logger"] == "pgdurable.engine"
    assert line["ts"].endswith("+00:00") and "T" in line["ts"]
    assert {k: v for k, v in line.items() if k not in ("ts", "level", "logger")} == {
        "event": "step_failed",
        "instance": "ab12cd34",
        "node": "ef56ab78",
        "attempt": 3,
        "seconds": 1.2,
        "message": "SQL execution failed: division by zero",  # not quoted twice
        "gone": None,
    }


def test_literal_values_other_objects_and_reserved_keys() -> None:
    error = ConnectionRefusedError(111, "refused")
    line = _json(_record("event=x instance=ab12cd34 error=%r level=%s", error, "high"))
    assert line["instance"] == "ab12cd34"
    assert line["error"] == repr(error)
    assert line["level"] == "INFO" and line["level_"] == "high"


def test_other_messages_and_tracebacks() -> None:
    try:
        raise ValueError("bad http://me:pw@h/x?k=v")
    except ValueError as exc:
        line = _json(_record("something happened: %s", "https://u:secret@h/", exc=exc))
    assert "event" not in line
    assert line["message"] == "something happened: https://REDACTED@h/"
    assert "ValueError: bad http://REDACTED@h/x?k=REDACTED" in line["exc"]
    assert "pw" not in json.dumps(line) and "secret" not in json.dumps(line)
    # a template not made of key=value pairs only is printed whole
    assert _json(_record("event=x then %s", 1)) | {"ts": 0} == {
        "ts": 0,
        "level": "INFO",
        "logger": "pgdurable.engine",
        "message": "event=x then 1",
    }


def test_field_values_are_redacted_before_quoting() -> None:
    """Redacting the JSON text would cut an escaped quote in half (invalid JSON)."""
    url = 'https://h/p?token=t0k"en&x=1'
    line = _json(_record("event=http_redirect to=%s", url))
    assert line["to"] == redact_urls(url) and "t0k" not in line["to"]


def test_text_format_is_unchanged() -> None:
    formatter = RedactingFormatter(TEXT_LINE)
    text = formatter.format(_record("event=step_failed instance=%s message=%r", "ab", "x"))
    assert text.endswith(
        " level=INFO logger=pgdurable.engine event=step_failed instance=ab message='x'"
    )


def test_log_format_flag_and_variable() -> None:
    assert parse_settings([], {}).log_format == "text"
    assert parse_settings(["--log-format", "json"], {}).log_format == "json"
    assert parse_settings([], {"PGDURABLE_LOG_FORMAT": "json"}).log_format == "json"
