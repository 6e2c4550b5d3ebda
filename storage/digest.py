"""A local file's sha256, read a chunk at a time: a model's gigabytes never sit in memory at once."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

CHUNK = 1 << 24  # bytes read at once


def chunks(path: Path) -> Iterator[bytes]:
    """The bytes of a file, CHUNK at a time."""
    with path.open("rb") as source:
        while chunk := source.read(CHUNK):
            yield chunk


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file."""
    digest = hashlib.sha256()
    for chunk in chunks(path):
        digest.update(chunk)
    return digest.hexdigest()
