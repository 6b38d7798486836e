"""Metrics: a JSONL file (always) and TensorBoard (when the package is installed).

Every record is one JSON line ``{"step": int, "split": "train"|"val"|"test"|..., <metric>: float,
..., "time": seconds since the run started}``. Non-finite values are written as the strings
``"nan"`` / ``"inf"`` / ``"-inf"`` (JSON has no NaN), never dropped.

Durability: records are appended and flushed one by one (a crash cuts at most the last
line, which readers skip); ``sync()`` fsyncs the file before a checkpoint is written and
``n_records`` is stored in the checkpoint. On resume the file is cut back atomically
(temp + rename) to exactly the records that existed when the checkpoint was written, so a
resumed run's file holds the same records as an uninterrupted run's (the ``time`` and
``tokens_per_s`` fields aside) and no record is duplicated.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from .checkpoint import atomic_write_text
from .errors import output_error

_TB_NOTICE_SHOWN = False


class Meter:
    """Sums over a logging interval; ``state_dict`` makes the interval survive a resume."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, float] = {}

    def add(self, name: str, total: float, count: float = 1.0) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + float(total)
        self.counts[name] = self.counts.get(name, 0.0) + float(count)

    def means(self) -> dict[str, float]:
        return {k: self.sums[k] / self.counts[k] for k in self.sums if self.counts[k] > 0}

    def reset(self) -> None:
        self.sums.clear()
        self.counts.clear()

    def state_dict(self) -> dict:
        return {"sums": dict(self.sums), "counts": dict(self.counts)}

    def load_state_dict(self, state: dict) -> None:
        self.sums, self.counts = dict(state["sums"]), dict(state["counts"])


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/Inf
    return v


class MetricsLogger:
    """Writes ``metrics.jsonl`` and, when ``tensorboard`` is installed and enabled, event
    files under ``tensorboard/``. Only the main process should own one."""

    def __init__(self, out_dir, tensorboard: bool = True, resume_step: int | None = None, notice=print,
                 resume_records: int | None = None) -> None:
        """``resume_step`` None: start an empty file. Else keep the records written up to the
        checkpoint: its first ``resume_records`` records when given (checkpoints store it),
        otherwise those at or before ``resume_step`` that are not final-evaluation records."""
        self.path = Path(out_dir) / "metrics.jsonl"
        self.t0 = time.time()
        kept = [] if resume_step is None else self._kept(resume_step, resume_records)
        atomic_write_text(self.path, "".join(l + "\n" for l in kept), "metrics log")
        self.n_records = len(kept)
        try:
            self._f = self.path.open("a", encoding="utf-8")
        except OSError as e:
            raise output_error(e, "metrics log", self.path) from None
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                global _TB_NOTICE_SHOWN
                if not _TB_NOTICE_SHOWN:
                    notice("tensorboard is not installed; metrics go to metrics.jsonl only (pip install 'slotmem[tensorboard]')")
                    _TB_NOTICE_SHOWN = True
            else:
                self.tb = SummaryWriter(log_dir=str(Path(out_dir) / "tensorboard"), purge_step=None if resume_step is None else resume_step + 1)

    def _kept(self, step: int, records: int | None) -> list[str]:
        if not self.path.is_file():
            return []
        keep = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the interruption
            if not (isinstance(rec, dict) and isinstance(rec.get("step"), int)):
                continue
            if records is not None:
                if len(keep) >= records:
                    break
                keep.append(line)
            elif rec["step"] <= step and rec.get("split") != "final":
                keep.append(line)
        return keep

    def log(self, step: int, split: str, metrics: dict) -> None:
        rec = {"step": int(step), "split": split}
        rec.update({k: _clean(v) for k, v in metrics.items()})
        rec["time"] = round(time.time() - self.t0, 3)
        try:
            self._f.write(json.dumps(rec) + "\n")
            self._f.flush()
        except OSError as e:
            raise output_error(e, "metrics log", self.path) from None
        self.n_records += 1
        if self.tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(f"{split}/{k}", v, step)
            self.tb.flush()

    def sync(self) -> None:
        """Flush and fsync the log (before a checkpoint records ``n_records``)."""
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
        except OSError as e:
            raise output_error(e, "metrics log", self.path) from None

    def close(self) -> None:
        try:
            self._f.close()
        except OSError:
            pass
        if self.tb is not None:
            self.tb.close()


def read_metrics(path) -> list[dict]:
    """All records of a ``metrics.jsonl`` file (a last line cut by a crash is skipped)."""
    lines = [l for l in Path(path).read_text(encoding="utf-8").splitlines() if l.strip()]
    out = []
    for i, l in enumerate(lines):
        try:
            out.append(json.loads(l))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise ValueError(f"{path}: line {i + 1} is not valid JSON") from None
    return out
