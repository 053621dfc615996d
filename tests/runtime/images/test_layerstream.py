"""Decompressing a layer in a thread of its own: what the tar reader is handed."""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import threading
import zlib

import pytest

from orchestrator.runtime.images import layerstream
from orchestrator.runtime.images.layerstream import CHUNK, DecompressedLayer
from orchestrator.spec.errors import StackError


@pytest.fixture(autouse=True, params=["isal", "zlib"])
def inflater(request, monkeypatch):
    """gzip behaves the same whether ISA-L is installed or zlib stands in for it."""
    if request.param == "isal":
        pytest.importorskip("isal")
        assert layerstream.inflate_module.__name__ == "isal.isal_zlib"
    else:
        monkeypatch.setattr(layerstream, "inflate_module", zlib)


def read_all(blob: bytes, piece: int = 10240) -> tuple[bytes, str]:
    with DecompressedLayer(io.BytesIO(blob)) as layer:
        data = b"".join(iter(lambda: layer.read(piece), b""))
    return data, layer.digest


def test_concatenated_gzip_members_with_zero_padding_read_as_one_stream() -> None:
    first, second = b"a" * 300000, bytes(range(256)) * 1000
    blob = gzip.compress(first) + b"\0" * 700 + gzip.compress(second)
    data, digest = read_all(blob)
    assert data == first + second
    assert digest == "sha256:" + hashlib.sha256(first + second).hexdigest()


def test_a_gzip_bomb_is_handed_over_a_chunk_at_a_time() -> None:
    plain = b"\0" * (64 * CHUNK)
    with DecompressedLayer(io.BytesIO(gzip.compress(plain, 9))) as layer:
        sizes = [len(piece) for piece in iter(lambda: layer.read(1 << 30), b"")]
    assert sum(sizes) == len(plain) and max(sizes) <= CHUNK


@pytest.mark.parametrize("damage", ["truncated", "bad checksum", "garbage after a member"])
def test_damaged_gzip_is_one_clear_error(damage: str) -> None:
    blob = gzip.compress(bytes(range(256)) * 4000)
    if damage == "truncated":
        blob = blob[: len(blob) // 2]
    elif damage == "bad checksum":
        blob = blob[:-8] + bytes([blob[-8] ^ 1]) + blob[-7:]
    else:
        blob += b"not gzip"
    with pytest.raises(StackError, match="truncated or corrupt"):
        read_all(blob)


def test_a_reader_that_gives_up_early_stops_the_threads() -> None:
    blob = zlib.compress(b"x")  # not gzip: read as a plain tar
    before = threading.active_count()
    big = gzip.compress(b"y" * (32 * CHUNK))
    for data in (blob, big):
        with DecompressedLayer(io.BytesIO(data)) as layer:
            layer.read(10)
    assert threading.active_count() == before


def test_an_uncompressed_layer_is_hashed_once_for_both_digests() -> None:
    tar = bytes(range(256)) * 4000
    with DecompressedLayer(io.BytesIO(tar)) as layer:
        assert layer.read() == tar
    assert layer.digest == layer.blob_digest == "sha256:" + hashlib.sha256(tar).hexdigest()


def test_a_compressed_layer_knows_the_digest_of_its_blob_and_of_its_tar() -> None:
    tar = b"x" * 300000
    blob = gzip.compress(tar)
    with DecompressedLayer(io.BytesIO(blob)) as layer:
        assert layer.read() == tar
    assert layer.digest == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert layer.blob_digest == "sha256:" + hashlib.sha256(blob).hexdigest()


def test_views_and_copies_read_the_same_bytes_across_chunks() -> None:
    tar = bytes(range(251)) * (3 * CHUNK // 251)
    for blob in (tar, gzip.compress(tar, 1)):
        pieces = []
        with DecompressedLayer(io.BytesIO(blob)) as layer:
            while piece := (layer.read_view(70001) if len(pieces) % 2 else layer.read(70001)):
                pieces.append(bytes(piece))
        assert b"".join(pieces) == tar


def test_the_blob_digest_covers_bytes_after_the_compressed_stream() -> None:
    """xz (like bz2) readers ignore what follows the last stream: it is the blob's all
    the same, and its digest must cover it."""
    tar = b"y" * 100000
    blob = lzma.compress(tar) + b"trailing bytes" * 200_000  # over two chunks
    with DecompressedLayer(io.BytesIO(blob)) as layer:
        assert layer.read() == tar
        layer.drain()
    assert layer.blob_digest == "sha256:" + hashlib.sha256(blob).hexdigest()
