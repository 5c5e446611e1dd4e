"""df.signal through pgdurable: the signal is stored at once, on the engine's connection.

The caller's df.signal checks the instance (pg_durable's texts, row-level security, the
acting owner) in its own transaction, then asks with a NOTICE (catalog control.sql:
df._signal_at_once) that the relay takes out of the session's stream and hands over here
with the session's login role. The engine stores the signal in a transaction of its own,
after checking again, for that login role and the role the request names, what df.signal
checks (df._record_signal). So a signal takes effect at once, as pg_durable's does: the
caller's ROLLBACK does not undo it, and a caller that then waits for the instance in the
same transaction sees it go on. The answer (df._signal_requests) tells the caller whether to
store the signal itself instead.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass

SIGNAL_MARKER = "pgdurable:signal"


@dataclass(frozen=True, slots=True)
class SignalRequest:
    """What the caller's df.signal asked for (the NOTICE's detail)."""

    request: uuid.UUID
    role: str  # current_user of the df.signal call
    instance_id: str
    signal_name: str
    data: str  # the payload, as JSON text

    @classmethod
    def from_detail(cls, detail: str) -> SignalRequest:
        """Parse the NOTICE detail (base64 of a JSON object); ValueError, KeyError or
        TypeError when it is not ours."""
        fields = json.loads(base64.b64decode(detail))
        data = fields["data"]
        if not isinstance(data, str):
            raise TypeError("signal data must be JSON text")
        return cls(
            uuid.UUID(fields["request"]),
            str(fields["role"]),
            str(fields["instance_id"]),
            str(fields["signal_name"]),
            data,
        )
