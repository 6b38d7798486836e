"""Errors the runner raises on purpose; each carries a message that says what to fix."""
from __future__ import annotations


class SlotmemTrainError(RuntimeError):
    """Base class: the CLI prints ``error: <message>`` and exits with status 2 for these."""


class ConfigError(SlotmemTrainError, ValueError):
    """A bad configuration: unknown key, wrong type, invalid value, missing data file."""


class CheckpointError(SlotmemTrainError):
    """A checkpoint that cannot be read (corrupt, truncated, wrong format or incompatible)."""


class NonFiniteError(SlotmemTrainError, FloatingPointError):
    """A non-finite loss or non-finite parameters; training stops, nothing is saved."""
