"""The frames of an upgraded connection: what goes in comes out, however it is cut."""

from __future__ import annotations

import pytest

from orchestrator.engine import raw_frames
from orchestrator.spec.errors import StackError


def test_frames_survive_arriving_a_byte_at_a_time() -> None:
    wire = (raw_frames.encode(raw_frames.STDOUT, b"hello") + raw_frames.encode(raw_frames.STDIN)
            + raw_frames.exit_frame(3))
    decoder = raw_frames.FrameDecoder()
    frames = [frame for i in range(len(wire)) for frame in decoder.feed(wire[i:i + 1])]
    assert frames[:2] == [(raw_frames.STDOUT, b"hello"), (raw_frames.STDIN, b"")]
    assert frames[2][0] == raw_frames.EXIT and raw_frames.exit_code_of(frames[2][1]) == 3
    assert decoder.pending == 0


def test_a_big_payload_is_split_into_frames_a_decoder_accepts() -> None:
    payload = bytes(range(256)) * (raw_frames.MAX_PAYLOAD // 256 + 10)
    frames = raw_frames.FrameDecoder().feed(raw_frames.encode(raw_frames.STDOUT, payload))
    assert len(frames) == 2 and b"".join(p for _, p in frames) == payload


def test_an_oversized_announcement_is_refused() -> None:
    header = raw_frames.HEADER.pack(raw_frames.STDOUT, raw_frames.MAX_PAYLOAD + 1)
    with pytest.raises(StackError, match="allowed"):
        raw_frames.FrameDecoder().feed(header)


def test_a_malformed_exit_frame_is_an_error() -> None:
    with pytest.raises(StackError, match="malformed exit frame"):
        raw_frames.exit_code_of(b"not json")
