"""Metrics: a JSONL file (always) and TensorBoard (when the package is installed).

Every record is one JSON line ``{"step": int, "split": "train"|"val"|"test"|..., <metric>: float,
..., "time": seconds since the run started}``. On resume the file is cut back to the
records at or before the checkpoint's step, so a resumed run's file holds the same
records as an uninterrupted run's (the ``time`` and ``tokens_per_s`` fields aside).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

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

    def __init__(self, out_dir, tensorboard: bool = True, resume_step: int | None = None, notice=print) -> None:
        self.path = Path(out_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.t0 = time.time()
        if resume_step is None:
            self.path.write_text("")
        else:
            self._truncate(resume_step)
        self._f = self.path.open("a", encoding="utf-8")
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

    def _truncate(self, step: int) -> None:
        if not self.path.is_file():
            return
        keep = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the interruption
            if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= step and rec.get("split") != "final":
                keep.append(line)
        self.path.write_text("".join(l + "\n" for l in keep))

    def log(self, step: int, split: str, metrics: dict) -> None:
        rec = {"step": int(step), "split": split}
        rec.update({k: _clean(v) for k, v in metrics.items()})
        rec["time"] = round(time.time() - self.t0, 3)
        self._f.write(json.dumps(rec) + "\n")
        self._f.flush()
        if self.tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(f"{split}/{k}", v, step)
            self.tb.flush()

    def close(self) -> None:
        self._f.close()
        if self.tb is not None:
            self.tb.close()


def read_metrics(path) -> list[dict]:
    """All records of a ``metrics.jsonl`` file."""
    return [json.loads(l) for l in Path(path).read_text(encoding="utf-8").splitlines() if l.strip()]
