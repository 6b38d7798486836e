"""Integrity of saved models: ``slotmem_manifest.json`` lists the SHA-256 of every file of a
``save_pretrained`` directory (written by ``slotmem train``); ``from_pretrained`` checks it when
present, so damaged weights are refused by name instead of loading silently."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

MANIFEST = "slotmem_manifest.json"


class CorruptModelError(ValueError):
    """A saved model whose files do not match its manifest (damaged, truncated or missing)."""


def file_sha256(path, block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def verify_manifest(directory) -> bool:
    """Check the files of a saved model against its manifest. False: no manifest (nothing to
    check); True: all listed files match. A damaged or missing file raises ``CorruptModelError``."""
    d = Path(directory)
    m = d / MANIFEST
    if not m.is_file():
        return False
    try:
        files = json.loads(m.read_text(encoding="utf-8"))["files"]
        if not isinstance(files, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise CorruptModelError(f"saved model {str(d)!r}: {MANIFEST} is damaged (not a file -> sha256 mapping)") from None
    for rel, expected in files.items():
        p = d / rel
        if not p.is_file():
            raise CorruptModelError(f"saved model {str(d)!r}: {rel} listed in {MANIFEST} is missing")
        if file_sha256(p) != expected:
            raise CorruptModelError(f"saved model {str(d)!r}: {rel} is corrupt (checksum mismatch against {MANIFEST})")
    return True
