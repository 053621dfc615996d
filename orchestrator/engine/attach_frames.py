"""What `exec` and `run` add to the raw frames (`raw_frames.py`): pure, for the engine and
the CLI alike.

An attached `run` may have dependencies to bring up before its container
exists, and a user should see them come up as with `up`: PROGRESS frames
carry those events (the ProgressEvent of the API) ahead of any output. And a
process that never ran has no exit status of its own: its exit frame says
why, next to the code Docker would give (126, 127), so the client can print
one line rather than guess.
"""

from __future__ import annotations

import json
from typing import Any

from orchestrator.engine.raw_frames import EXIT, encode

PROGRESS = 5  # engine to client, before the process runs: a ProgressEvent in JSON


def json_frame(kind: int, value: dict[str, Any]) -> bytes:
    return encode(kind, json.dumps(value, separators=(",", ":")).encode())


def exit_frame(exit_code: int, error: str = "") -> bytes:
    payload: dict[str, Any] = {"exit_code": exit_code}
    if error:
        payload["error"] = error
    return json_frame(EXIT, payload)


def json_payload(payload: bytes) -> dict[str, Any] | None:
    """A frame's JSON object, or None when it is not one."""
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
