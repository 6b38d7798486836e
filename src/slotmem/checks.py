"""Argument checks shared by every layer of the package (ops, layers, data); imports nothing of slotmem."""
from __future__ import annotations

from typing import Sequence


def check_choice(name: str, value, choices: Sequence) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {list(choices)}")
