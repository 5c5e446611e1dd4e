"""Structured, quiet logging on stderr: `key=value` lines, or one JSON object per line
(--log-format json), URL secrets redacted in both.

Every pgdurable log call is written `log.info("event=name key=%s other=%r", a, b)`: the
text format prints it as it is; the JSON format reads the keys from that template and
takes each value from its argument, so a number stays a number and a text is not quoted
twice (`{"event": "name", "key": ..., "other": ...}`). A message of another shape (a
library's) becomes `{"message": ...}`.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from engine.redaction import redact_urls

LOG_FORMATS = ("text", "json")
TEXT_LINE = "ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"
# one %-conversion of a logging template (what `%` formats), or an escaped percent sign
_CONVERSION = re.compile(r"%[-#0 +]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa%]")
_RESERVED_KEYS = ("ts", "level", "logger", "exc", "stack")  # a field of that name gets a "_"


class RedactingFormatter(logging.Formatter):
    """Every URL in a line, tracebacks included, with its secrets redacted (pg_durable
    0.2.8): whatever a message or a library's exception quotes."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_urls(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (UTC, ISO 8601), level, logger, event and the
    record's key=value fields as keys (`message` for a record not written that way), and
    `exc` with the traceback; every text in it with its URLs redacted."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        fields = event_fields(record)
        if fields is None:
            line["message"] = redact_urls(record.getMessage())
        else:
            for key, value in fields.items():
                line[key + "_" if key in _RESERVED_KEYS else key] = (
                    redact_urls(value) if isinstance(value, str) else value
                )
        if record.exc_info:
            line["exc"] = redact_urls(self.formatException(record.exc_info))
        if record.stack_info:
            line["stack"] = redact_urls(self.formatStack(record.stack_info))
        return json.dumps(line, ensure_ascii=False, default=str)


def event_fields(record: logging.LogRecord) -> dict[str, Any] | None:
    """The fields of a record logged as `event=name key=%s ...`, each with its argument's
    value; None for a record of another shape."""
    template, args = record.msg, record.args
    if not isinstance(template, str) or not template.startswith("event="):
        return None
    if not isinstance(args, tuple):
        args = () if args is None else (args,)
    fields: dict[str, Any] = {}
    used = 0
    for token in template.split():
        key, equals, text = token.partition("=")
        if not equals or not key.isidentifier():
            return None
        conversions = [c for c in _CONVERSION.findall(text) if c != "%%"]
        taken = args[used : used + len(conversions)]
        used += len(conversions)
        if len(taken) != len(conversions):
            return None
        try:
            if len(conversions) == 1 and text == conversions[0]:
                fields[key] = _value(text, taken[0])
            else:
                fields[key] = text % taken if "%" in text else text
        except (TypeError, ValueError):
            return None
    return fields if used == len(args) else None


def _value(conversion: str, arg: object) -> Any:
    """`arg` as JSON should carry it: numbers as numbers, texts unquoted (a `%r` of a text
    is the text), anything else as the text the conversion gives."""
    kind = conversion[-1]
    if arg is None or isinstance(arg, bool):
        return arg
    if kind in "rs" and isinstance(arg, (str, int, float)):
        return arg
    if kind in "di" and isinstance(arg, (int, float)):
        return int(arg)
    if kind in "eEfFgG" and isinstance(arg, (int, float)):
        return float(conversion % arg)  # at the precision the template asks for
    return conversion % (arg,)


def configure(level: str, log_format: str = "text") -> None:
    """Install one stderr handler at `level` for the pgdurable loggers. The libraries'
    warnings (asyncio, aiohttp) stay as Python prints them without a handler (the bare
    message, from WARNING on; a JSON object with it under --log-format json), redacted
    too."""
    json_lines = log_format == "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else RedactingFormatter(TEXT_LINE))
    ours = logging.getLogger("pgdurable")
    ours.handlers[:] = [handler]
    ours.setLevel(level.upper())
    ours.propagate = False
    libraries = logging.StreamHandler(sys.stderr)
    libraries.setLevel(logging.WARNING)
    libraries.setFormatter(JsonFormatter() if json_lines else RedactingFormatter())
    logging.getLogger().handlers[:] = [libraries]
