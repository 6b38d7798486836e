"""An exclusive lock on a run's output folder, held for the life of the run.

``<out_dir>/.slotmem.lock`` is locked with ``fcntl.flock`` (exclusive, non-blocking) and
holds the owner's pid, host and start time as JSON. The kernel drops the lock when the
owner exits or is killed, so a lock left by a killed run is free: the next run takes it
over and says so (the file still names the dead owner). Hand-written on ``fcntl`` rather
than ``filelock``: ``filelock`` truncates the lock file on every attempt, which would erase
the holder's pid that the refusal message names.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from .errors import RunLockedError, output_error

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = ".slotmem.lock"


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError):
        return False
    return True


def _read_holder(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 4096).decode("utf-8", errors="replace").strip()
        return json.loads(raw) if raw else {}
    except (OSError, ValueError):
        return {}


class RunLock:
    """``RunLock(out_dir).acquire(notice)`` ... ``release()``; also a context manager."""

    def __init__(self, out_dir) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LOCK_NAME
        self.fd: int | None = None

    def acquire(self, notice=print) -> "RunLock":
        """Take the lock or raise ``RunLockedError`` at once (naming the holder's pid);
        an unwritable ``out_dir`` raises ``OutputError``."""
        if self.fd is not None:
            return self
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise RunLockedError(f"out_dir {str(self.out_dir)!r} exists and is not a directory; choose another out_dir")
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise output_error(e, "the run lock in out_dir", self.path) from None
        if fcntl is None:  # pragma: no cover - Windows: no lock, say so
            notice(f"no fcntl on {sys.platform}: {self.out_dir} is not locked against a second run")
            self.fd = fd
            return self
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            who = f"pid {holder.get('pid', '?')}"
            if holder.get("host") and holder["host"] != socket.gethostname():
                who += f" on host {holder['host']}"
            since = f", running since {holder['started']}" if holder.get("started") else ""
            raise RunLockedError(
                f"out_dir {str(self.out_dir)!r} is in use by another slotmem run ({who}{since}); wait for it to "
                "finish, stop it, or choose another out_dir"
            ) from None
        old = _read_holder(fd)
        if old.get("pid") is not None:
            same_host = old.get("host") in (None, socket.gethostname())
            state = "no longer running" if same_host and not _pid_alive(old["pid"]) else "not holding it any more"
            notice(f"taking over the stale lock of {self.out_dir} left by pid {old['pid']} ({state})")
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "argv": sys.argv[:8]}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            os.fsync(fd)
        except OSError as e:
            os.close(fd)
            raise output_error(e, "the run lock in out_dir", self.path) from None
        self.fd = fd
        return self

    def release(self) -> None:
        """Clear the holder record and unlock (idempotent)."""
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        finally:
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
