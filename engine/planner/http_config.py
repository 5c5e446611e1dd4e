"""An HTTP node's configuration with §6.3 substitution applied: the task's payload (pure)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from engine.errors import EngineError
from engine.planner.kinds import NodeType

_WHOLE_REFERENCE = re.compile(
    r"\$[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?\??|\{[A-Za-z_][A-Za-z0-9_]*\}"
)
Substitute = Callable[[str], str]


class HttpConfigError(EngineError):
    """The node's configuration cannot become a request; the message is the node's error."""

    sqlstate = "22023"  # invalid_parameter_value


def load_config(node_type: str, text: str | None) -> dict[str, Any]:
    try:
        config = json.loads(text or "")
    except ValueError as exc:
        raise HttpConfigError(f"{node_type} node has an invalid configuration: {exc}") from None
    if not isinstance(config, dict):
        raise HttpConfigError(f"{node_type} node has an invalid configuration: not an object")
    return config


def substituted_config(node_type: str, node_id: str, query: str | None, sub: Substitute) -> str:
    """The task payload: url, body, string header values and multipart name, filename,
    content_type and (whole-value references only) data_b64 substituted."""
    config = load_config(node_type, query)
    for key in ("url", "body"):
        if isinstance(config.get(key), str):
            config[key] = sub(config[key])
    headers = config.get("headers")
    if isinstance(headers, dict):
        config["headers"] = {k: sub(v) if isinstance(v, str) else v for k, v in headers.items()}
    if node_type == NodeType.HTTP_MULTIPART and isinstance(config.get("parts"), list):
        config["parts"] = [_substitute_part(node_id, p, sub) for p in config["parts"]]
    return compact(config)


def _substitute_part(node_id: str, part: Any, sub: Substitute) -> Any:
    if not isinstance(part, dict):
        return part
    part = dict(part)
    for key in ("name", "filename", "content_type"):
        if isinstance(part.get(key), str):
            part[key] = sub(part[key])
    data = part.get("data_b64")
    if isinstance(data, str):
        if _WHOLE_REFERENCE.fullmatch(data.strip()):
            part["data_b64"] = sub(data.strip())
        elif "$" in data or "{" in data:
            raise HttpConfigError(
                f"HTTP_MULTIPART node {node_id}: data_b64 for part '{part.get('name')}' mixes "
                "a variable reference with other text. Only a whole-value reference is "
                "supported (e.g. data_b64 => '$result' or '{myvar}'), because splicing into "
                "base64 would corrupt the payload."
            )
    return part


def compact(value: Any) -> str:
    """Compact JSON with non-ASCII kept raw."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
