"""Perplexity, and perplexity against context length.

``perplexity_vs_length`` cuts the SAME validation token stream into non-overlapping
windows of each length ``L`` and reports the mean next-token NLL over all their targets:
every length scores (nearly) the same text, only the context available to the model
changes. Lengths beyond the training length test length extrapolation; recurrent and
slot-memory models run at any length, attention needs its positional encoding to
extrapolate.

Command line (a model saved by ``slotmem train``, i.e. ``<out_dir>/model``)::

    slotmem eval perplexity outputs/lm/model data.txt --lengths 256 512 1024 2048
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..data.text import pack_tokens
from .common import eval_mode, module_device, reduce_sums, sharded_batches
from .objectives import as_token_objective


def evaluate_nll(model, tokens: torch.Tensor, seq_len: int, batch_size: int, info=None, max_tokens: int = 0,
                 autocast=None, progress: bool = False) -> dict:
    """Mean next-token NLL (nats) over windows of ``seq_len`` of a 1-D token stream.
    Returns ``{"nll", "ppl", "windows", "tokens"}``; ``nll`` is None if the stream is
    shorter than one window. ``model``: a causal LM or a ``TokenObjective``; ``progress``:
    a tqdm bar over the batches."""
    obj = as_token_objective(model)
    dev = module_device(obj)
    tokens = tokens.long()
    w = pack_tokens(tokens[: max_tokens + 1] if max_tokens else tokens, seq_len)
    if w.shape[0] == 0:
        return {"nll": None, "ppl": None, "windows": 0, "tokens": 0}
    sums = {"loss_sum": 0.0, "count": 0.0}
    batches = sharded_batches(w.shape[0], batch_size, info)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(list(batches), desc=f"perplexity L={seq_len}", unit="batch", leave=False)
    with eval_mode(obj, autocast):
        for idx, real in batches:
            b = w[torch.as_tensor(np.asarray(idx), dtype=torch.long)].to(dev)
            out = obj(b[:, :-1], b[:, 1:])
            if real:
                sums["loss_sum"] += float(out["loss_sum"])
                sums["count"] += float(out["count"])
    s = reduce_sums(sums, info)
    nll = s["loss_sum"] / s["count"]
    return {"nll": nll, "ppl": math.exp(min(nll, 50.0)), "windows": int(w.shape[0]), "tokens": int(s["count"])}


def perplexity_vs_length(model, tokens: torch.Tensor, lengths, batch_size: int = 8, info=None, max_tokens: int = 0,
                         train_len: int | None = None, autocast=None, progress: bool = False) -> list[dict]:
    """One row per length: ``{"length", "nll", "ppl", "bits_per_token", "windows", "tokens",
    "beyond_training"}``. The batch shrinks with the length (``batch_size * min(lengths)``
    tokens per batch, at least one window)."""
    rows = []
    base = min(lengths) if train_len is None else train_len
    for L in lengths:
        bs = max(1, (batch_size * base) // L)
        r = evaluate_nll(model, tokens, int(L), bs, info, max_tokens, autocast, progress)
        rows.append({
            "length": int(L),
            "nll": r["nll"],
            "ppl": r["ppl"],
            "bits_per_token": None if r["nll"] is None else r["nll"] / math.log(2),
            "windows": r["windows"],
            "tokens": r["tokens"],
            "beyond_training": bool(train_len is not None and L > train_len),
        })
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'length':>8} {'windows':>8} {'tokens':>9} {'nll':>8} {'ppl':>9}"]
    for r in rows:
        if r["nll"] is None:
            lines.append(f"{r['length']:>8} {0:>8} {0:>9} {'-':>8} {'too few tokens':>9}")
        else:
            mark = " *" if r["beyond_training"] else ""
            lines.append(f"{r['length']:>8} {r['windows']:>8} {r['tokens']:>9} {r['nll']:>8.4f} {r['ppl']:>9.3f}{mark}")
    if any(r["beyond_training"] for r in rows):
        lines.append("* longer than the training context")
    return "\n".join(lines)


def plot_perplexity(rows: list[dict], path, title: str = "", train_len: int | None = None) -> None:
    """Perplexity against context length (log-2 x axis), one point per row with a score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(r["length"], r["ppl"]) for r in rows if r["ppl"] is not None]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
    if train_len:
        ax.axvline(train_len, color="gray", linestyle="--", label=f"training length {train_len}")
        ax.legend()
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("perplexity")
    ax.grid(True, alpha=0.3)
    ax.set_title(title or "perplexity vs context length", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
