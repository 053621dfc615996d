"""The frames of an upgraded API connection (cp; exec speaks the same): pure encoding.

After `101 Switching Protocols` both sides send frames: an 8-byte header —
the kind, three zero bytes, the payload's length (big-endian) — then the
payload. schemas/engine-api.yaml describes them for clients. No I/O and no
trio here, so the CLI (a plain socket) and the engine (a trio stream) share it.
"""

from __future__ import annotations

import json
import struct

from orchestrator.spec.errors import StackError

STDIN, STDOUT, STDERR, EXIT, RESIZE = 0, 1, 2, 3, 4
HEADER = struct.Struct(">B3xI")
MAX_PAYLOAD = 1 << 20
"""A bigger payload is split; a bigger announced one is a broken peer, not a big file."""


def encode(kind: int, payload: bytes = b"") -> bytes:
    """One frame, or several when the payload is over MAX_PAYLOAD (never for EXIT/RESIZE)."""
    if len(payload) <= MAX_PAYLOAD:
        return HEADER.pack(kind, len(payload)) + payload
    return b"".join(
        HEADER.pack(kind, len(chunk)) + chunk
        for chunk in (payload[i:i + MAX_PAYLOAD] for i in range(0, len(payload), MAX_PAYLOAD))
    )


def exit_frame(exit_code: int) -> bytes:
    return encode(EXIT, json.dumps({"exit_code": exit_code}).encode())


def exit_code_of(payload: bytes) -> int:
    try:
        return int(json.loads(payload)["exit_code"])
    except (ValueError, KeyError, TypeError):
        raise StackError("the engine sent a malformed exit frame") from None


class FrameDecoder:
    """Bytes in, whole frames out: `feed` what arrived, get the frames it completed."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buffer += data
        frames: list[tuple[int, bytes]] = []
        while len(self._buffer) >= HEADER.size:
            kind, size = HEADER.unpack_from(self._buffer)
            if size > MAX_PAYLOAD:
                raise StackError(f"a frame of {size} bytes is more than the {MAX_PAYLOAD} allowed")
            end = HEADER.size + size
            if len(self._buffer) < end:
                break
            frames.append((kind, bytes(self._buffer[HEADER.size:end])))
            del self._buffer[:end]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of a frame not complete yet (a stream that ends here was cut)."""
        return len(self._buffer)

