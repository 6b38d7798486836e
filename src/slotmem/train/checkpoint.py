"""Checkpoints: everything a run needs to continue bit-exactly, written atomically and checksummed.

A checkpoint is one ``torch.save`` file ``<out_dir>/checkpoints/step_<step>.pt`` holding a
dict with ``format``/``version``, ``step``, ``model`` (state dict), ``optimizer``,
``scheduler``, ``scaler`` (fp16 only), ``rng`` (python / numpy / torch / cuda states),
``data`` (the sampler position), ``meter`` (the partial logging interval),
``metrics_records`` (lines of ``metrics.jsonl`` written so far) and ``config``; next to it
``step_<step>.pt.sha256`` holds the SHA-256 of the file in ``sha256sum`` format
(``sha256sum -c step_00000100.pt.sha256`` checks it by hand).

Safety:
* the payload is written to ``<name>.tmp-<pid>`` in the same folder, flushed and
  fsync'ed; its checksum is computed from the bytes on disk and written the same way;
  then the checksum file and the payload are renamed into place (``os.replace`` is
  atomic; checksum first, so a payload under a final name always has its checksum);
* ``load_checkpoint`` verifies the checksum before unpickling, reads with
  ``weights_only=True`` (no pickled code) and turns every failure into a
  ``CheckpointError`` naming the file; damaged bytes (checksum mismatch, truncation,
  non-finite parameters) raise ``CorruptCheckpointError``;
* ``resume_candidate`` walks the checkpoints newest first, moves corrupt ones aside
  (``*.corrupt``) and returns the newest that verifies; ``prune_checkpoints`` never
  deletes the checkpoint just written (the one that verified);
* ``save_checkpoint`` refuses a model with non-finite parameters, so a diverged run never
  replaces a good checkpoint; a failed write (disk full, read-only folder) leaves no
  temporary file and raises ``OutputError`` saying what happened.
"""
from __future__ import annotations

import os
import random
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from ..models.manifest import MANIFEST, file_sha256
from .errors import CheckpointError, CorruptCheckpointError, NonFiniteError, output_error

FORMAT = "slotmem-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("format", "version", "step", "model", "optimizer", "scheduler", "rng", "data", "config")
SUM_SUFFIX = ".sha256"
CORRUPT_SUFFIX = ".corrupt"
_NAME = re.compile(r"^step_(\d+)\.pt$")
_TMP = re.compile(r"\.tmp-\d+$")
_HEX = re.compile(r"^[0-9a-f]{64}$")


def checkpoint_dir(out_dir) -> Path:
    return Path(out_dir) / "checkpoints"


def checkpoint_path(out_dir, step: int) -> Path:
    return checkpoint_dir(out_dir) / f"step_{step:08d}.pt"


def checksum_path(path) -> Path:
    """The ``sha256sum``-format checksum file of a checkpoint."""
    path = Path(path)
    return path.with_name(path.name + SUM_SUFFIX)


def list_checkpoints(out_dir) -> list[tuple[int, Path]]:
    """``[(step, path)]`` of the finished checkpoint files in ``out_dir``, oldest first
    (temporary files of an interrupted save and quarantined ``*.corrupt`` files are not listed)."""
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


def _tmp_name(path: Path) -> Path:
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


def _write_tmp(path: Path, write) -> Path:
    """``write(f)`` into ``<path>.tmp-<pid>``, flushed and fsync'ed; returns the temporary path
    (removed again if writing fails)."""
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def atomic_write(path, write, what: str = "file", hint: str = "") -> Path:
    """Write ``path`` atomically: ``write(f)`` (a binary file) into a temporary file in the
    same folder, fsync, rename. A failed write leaves ``path`` as it was and raises
    ``OutputError`` (disk full, read-only, permission denied) naming ``what`` and the path."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _write_tmp(path, write)
        try:
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as e:
        raise output_error(e, what, path, hint) from None
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path, text: str, what: str = "file", hint: str = "") -> Path:
    """``atomic_write`` of UTF-8 text."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda f: f.write(data), what, hint)


def atomic_torch_save(obj, path, what: str = "file") -> Path:
    """``torch.save`` to a temporary file in the same folder, then atomically rename."""
    return atomic_write(path, lambda f: torch.save(obj, f), what)


def save_checkpoint(state: dict, path) -> Path:
    """Validate and write one checkpoint and its checksum file (see the module docstring)."""
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks {missing}")  # a programming error
    bad = nonfinite_tensors(state["model"])
    if bad:
        raise NonFiniteError(
            f"refusing to save checkpoint {str(path)!r}: parameters {bad[:5]}{' ...' if len(bad) > 5 else ''} are "
            "not finite; the previous checkpoints are kept"
        )
    path = Path(path)
    sums = checksum_path(path)
    tmp = tmp_sum = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _write_tmp(path, lambda f: torch.save(state, f))
        line = f"{file_sha256(tmp)}  {path.name}\n".encode()
        tmp_sum = _write_tmp(sums, lambda f: f.write(line))
        os.replace(tmp_sum, sums)
        os.replace(tmp, path)
    except OSError as e:
        raise output_error(e, "checkpoint", path, "The previous checkpoints are kept.") from None
    finally:
        for t in (tmp, tmp_sum):
            if t is not None:
                t.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    checksum_path(path).unlink(missing_ok=True)


def prune_checkpoints(out_dir, keep: int, protect=None) -> list[Path]:
    """Delete all but the ``keep`` newest checkpoints (with their checksum files), never
    ``protect`` (the checkpoint just written and verified). Returns the deleted paths."""
    ckpts = list_checkpoints(out_dir)
    gone = []
    for _, p in ckpts[: max(0, len(ckpts) - keep)]:
        if protect is not None and Path(p) == Path(protect):
            continue
        _remove(p)
        gone.append(p)
    return gone


def verify_checksum(path) -> bool:
    """Check ``path`` against its ``.sha256`` file. True: verified; False: there is no
    checksum file (an older slotmem wrote it). Raises ``CorruptCheckpointError`` on a mismatch."""
    p = Path(path)
    sums = checksum_path(p)
    if not sums.is_file():
        return False
    text = sums.read_text(encoding="utf-8", errors="replace").split()
    expected = text[0].lower() if text else ""
    if not _HEX.match(expected):
        raise CorruptCheckpointError(f"checkpoint {str(p)!r}: its checksum file {sums.name} is damaged (no SHA-256 in it)")
    actual = file_sha256(p)
    if actual != expected:
        raise CorruptCheckpointError(
            f"checkpoint {str(p)!r} is corrupt: checksum mismatch (sha256 {actual[:16]}..., {sums.name} says "
            f"{expected[:16]}...; {p.stat().st_size} bytes)"
        )
    return True


def load_checkpoint(path) -> dict:
    """Verify (checksum) and read one checkpoint file (on CPU)."""
    p = Path(path)
    if p.is_dir():
        raise CheckpointError(f"checkpoint {str(p)!r} is a directory; pass a checkpoints/step_*.pt file")
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {str(p)!r}")
    if not verify_checksum(p):
        warnings.warn(f"checkpoint {str(p)!r} has no {SUM_SUFFIX} checksum file (written by an older slotmem); "
                      "loading it unverified", stacklevel=2)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every read failure means the same thing to the user
        raise CorruptCheckpointError(
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
        raise CorruptCheckpointError(f"checkpoint {str(p)!r} holds non-finite parameters {bad[:5]}")
    return state


def quarantine(path) -> Path:
    """Rename a corrupt checkpoint (and its checksum file) to ``*.corrupt``, out of the
    resume / prune listing but kept for inspection. Returns the new path."""
    p = Path(path)
    dest = p.with_name(p.name + CORRUPT_SUFFIX)
    os.replace(p, dest)
    s = checksum_path(p)
    if s.is_file():
        os.replace(s, s.with_name(s.name + CORRUPT_SUFFIX))
    return dest


def resume_candidate(out_dir, notice=print) -> tuple[Path, dict] | None:
    """The newest checkpoint of ``out_dir`` that verifies, loaded: ``(path, state)``, or None
    when there is none. Corrupt newer ones are reported through ``notice`` and moved aside
    (``quarantine``). When every checkpoint is corrupt nothing is moved and
    ``CorruptCheckpointError`` lists them."""
    ckpts = list_checkpoints(out_dir)
    bad: list[tuple[Path, CorruptCheckpointError]] = []
    for _, p in reversed(ckpts):
        try:
            state = load_checkpoint(p)
        except CorruptCheckpointError as e:
            bad.append((p, e))
            continue
        for q, e in bad:
            moved = quarantine(q)
            notice(f"{e}; moved aside to {moved.name}; resuming from the previous checkpoint {p.name}")
        return p, state
    if bad:
        raise CorruptCheckpointError(
            f"no valid checkpoint in {str(checkpoint_dir(out_dir))!r}: " + "; ".join(str(e) for _, e in bad)
            + ". Delete the damaged files (or use a new out_dir) to start over, or pass train.resume=<a good checkpoint>"
        )
    return None


def clean_stale_files(out_dir) -> list[Path]:
    """Remove what a killed run left behind: ``*.tmp-<pid>`` files of an interrupted write in
    ``out_dir`` and its ``checkpoints/``, and checksum files whose checkpoint is missing.
    Call only while holding the run lock (no other writer is alive). Returns the removed paths."""
    out_dir = Path(out_dir)
    removed = []
    for d in (out_dir, checkpoint_dir(out_dir)):
        if not d.is_dir():
            continue
        for p in d.iterdir():
            orphan_sum = p.name.endswith(".pt" + SUM_SUFFIX) and not p.with_name(p.name[: -len(SUM_SUFFIX)]).exists()
            if p.is_file() and (_TMP.search(p.name) or orphan_sum):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


# --------------------------------------------------------------------------- exported models

def write_manifest(directory) -> Path:
    """Write ``<directory>/slotmem_manifest.json``: the SHA-256 of every file below
    ``directory`` (``{"format": "slotmem-manifest", "files": {relative path: sha256}}``)."""
    import json

    d = Path(directory)
    files = {str(p.relative_to(d)): file_sha256(p) for p in sorted(d.rglob("*")) if p.is_file() and p.name != MANIFEST}
    return atomic_write_text(d / MANIFEST, json.dumps({"format": "slotmem-manifest", "files": files}, indent=1) + "\n",
                             "model manifest")


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
