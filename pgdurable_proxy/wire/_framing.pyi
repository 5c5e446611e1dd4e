"""Types of the optional C extension built from _framing.c (see wire/frames.py)."""

class ClientFramerCore:
    _skip: int
    _held: bytearray
    requests: int
    inspect_limit: int
    terminated: bool
    def feed(self, data: bytes) -> bytes: ...

class ServerTrackerCore:
    _remaining: int
    _partial: bytearray
    ready_count: int
    status: int
    _tapped: bool
    def feed(self, data: bytes) -> bytes: ...
