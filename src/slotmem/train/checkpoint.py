"""Checkpoints: everything a run needs to continue bit-exactly, written atomically.

A checkpoint is one ``torch.save`` file ``<out_dir>/checkpoints/step_<step>.pt`` holding a
dict with ``format``/``version``, ``step``, ``model`` (state dict), ``optimizer``,
``scheduler``, ``scaler`` (fp16 only), ``rng`` (python / numpy / torch / cuda states),
``data`` (the sampler position), ``meter`` (the partial logging interval) and ``config``.

Safety:
* a file is written to ``<name>.tmp-<pid>`` in the same folder, flushed, fsync'ed and then
  renamed over the final name (``os.replace`` is atomic), so a crash never leaves a
  half-written file under a checkpoint name;
* ``save_checkpoint`` refuses a model with non-finite parameters, so a diverged run never
  replaces a good checkpoint;
* ``load_checkpoint`` reads with ``weights_only=True`` (no pickled code) and turns every
  failure into a ``CheckpointError`` that names the file and says what to do.
"""
from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import torch

from .errors import CheckpointError, NonFiniteError

FORMAT = "slotmem-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("format", "version", "step", "model", "optimizer", "scheduler", "rng", "data", "config")
_NAME = re.compile(r"^step_(\d+)\.pt$")


def checkpoint_dir(out_dir) -> Path:
    return Path(out_dir) / "checkpoints"


def checkpoint_path(out_dir, step: int) -> Path:
    return checkpoint_dir(out_dir) / f"step_{step:08d}.pt"


def list_checkpoints(out_dir) -> list[tuple[int, Path]]:
    """``[(step, path)]`` of the finished checkpoint files in ``out_dir``, oldest first
    (temporary files of an interrupted save are not listed)."""
    d = checkpoint_dir(out_dir)
    if not d.is_dir():
        return []
    found = []
    for p in d.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(out_dir) -> Path | None:
    ckpts = list_checkpoints(out_dir)
    return ckpts[-1][1] if ckpts else None


def nonfinite_tensors(state_dict: dict) -> list[str]:
    """Names of floating-point tensors holding NaN or Inf."""
    bad = []
    for name, t in state_dict.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad.append(name)
    return bad


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj, path) -> None:
    """``torch.save`` to a temporary file in the same folder, then atomically rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def save_checkpoint(state: dict, path) -> Path:
    """Validate and write one checkpoint (see the module docstring); returns the path."""
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks {missing}")  # a programming error
    bad = nonfinite_tensors(state["model"])
    if bad:
        raise NonFiniteError(
            f"refusing to save checkpoint {str(path)!r}: parameters {bad[:5]}{' ...' if len(bad) > 5 else ''} are "
            "not finite; the previous checkpoints are kept"
        )
    atomic_torch_save(state, path)
    return Path(path)


def prune_checkpoints(out_dir, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints."""
    ckpts = list_checkpoints(out_dir)
    for _, p in ckpts[: max(0, len(ckpts) - keep)]:
        p.unlink(missing_ok=True)


def load_checkpoint(path) -> dict:
    """Read and check one checkpoint file (on CPU)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {str(p)!r}")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every read failure means the same thing to the user
        raise CheckpointError(
            f"checkpoint {str(p)!r} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); "
            "the file is corrupt or truncated. Delete it to resume from the previous checkpoint, or pass "
            "train.resume=<another checkpoint> (or train.resume=never with a fresh out_dir)"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {str(p)!r} is not a slotmem training checkpoint (format {getattr(state, 'get', lambda k: None)('format')!r})")
    if state.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {str(p)!r} has version {state.get('version')!r}; this slotmem reads version {VERSION}")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {str(p)!r} is incomplete: missing {missing}")
    bad = nonfinite_tensors(state["model"])
    if bad:
        raise CheckpointError(f"checkpoint {str(p)!r} holds non-finite parameters {bad[:5]}")
    return state


# --------------------------------------------------------------------------- RNG states


def get_rng_state() -> dict:
    """Python, numpy (legacy global), torch CPU and CUDA generator states, in a form that
    ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_to_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def _to_tuple(x):
    if isinstance(x, (list, tuple)):
        return tuple(_to_tuple(v) for v in x)
    return x
