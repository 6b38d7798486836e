"""Errors the runner raises on purpose; each carries a message that says what to fix.

The CLI prints ``error: <message>`` (one line, no traceback) and exits with ``exit_code``:
2 for usage errors (a bad config, input file or checkpoint), 1 for environment failures
(disk full, read-only output folder).
"""
from __future__ import annotations

import errno as _errno
import os
import sys


class SlotmemTrainError(RuntimeError):
    """Base class: the CLI prints ``error: <message>`` and exits with ``exit_code``."""

    exit_code = 2


class ConfigError(SlotmemTrainError, ValueError):
    """A bad configuration: unknown key, wrong type, invalid value, missing data file."""


class CheckpointError(SlotmemTrainError):
    """A checkpoint that cannot be used (wrong format, incompatible config or model)."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint whose bytes are damaged: checksum mismatch, truncated or unreadable file,
    non-finite parameters. ``train.resume=auto`` falls back to the previous checkpoint."""


class NonFiniteError(SlotmemTrainError, FloatingPointError):
    """A non-finite loss or non-finite parameters; training stops, nothing is saved."""


class RunLockedError(SlotmemTrainError):
    """Another live run holds the output folder's lock."""


class OutputError(SlotmemTrainError, OSError):
    """Writing an output failed (no space left, read-only file system, permission denied)."""

    exit_code = 1


_REASONS = {
    _errno.ENOSPC: "no space left on device",
    _errno.EDQUOT: "disk quota exceeded",
    _errno.EROFS: "the file system is read-only",
    _errno.EACCES: "permission denied",
    _errno.EPERM: "operation not permitted",
    _errno.ENOTDIR: "a path component is not a directory",
    _errno.EISDIR: "the path is a directory",
}


def output_error(e: OSError, what: str, path, hint: str = "") -> OutputError:
    """An ``OutputError`` for a failed write: ``cannot write <what> '<path>': <reason> [ERRNO]. <hint>``."""
    code = getattr(e, "errno", None)
    reason = _REASONS.get(code) or (e.strerror or str(e) or type(e).__name__)
    name = f" [{_errno.errorcode[code]}]" if code in _errno.errorcode else ""
    fix = {
        _errno.ENOSPC: "free disk space or set out_dir on another disk",
        _errno.EDQUOT: "free disk space or set out_dir on another disk",
        _errno.EROFS: "set out_dir to a writable folder",
        _errno.EACCES: "set out_dir to a folder you can write to",
        _errno.EPERM: "set out_dir to a folder you can write to",
    }.get(code, "check out_dir")
    return OutputError(f"cannot write {what} {str(path)!r}: {reason}{name}. {hint + ' ' if hint else ''}Fix: {fix}")


def fail(e: Exception) -> None:
    """CLI exit for ``e``: one ``error:`` line on stderr and ``e.exit_code`` (2 usage, 1 environment; 2 for
    other errors); ``SLOTMEM_DEBUG=1`` re-raises with the traceback."""
    if os.environ.get("SLOTMEM_DEBUG"):
        raise e
    print(f"error: {e}", file=sys.stderr)
    raise SystemExit(getattr(e, "exit_code", 2))
