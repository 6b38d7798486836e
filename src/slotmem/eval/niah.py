"""Scoring of S-NIAH samples (``slotmem.data.niah``): does greedy decoding reproduce the value?

One forward pass per sample over ``prompt + answer`` tokens: the sample is ``correct`` when the
argmax prediction at every answer position is the answer token, which is exactly "greedy
decoding from the prompt starts with the value" (teacher forcing changes nothing while every
prediction is right). Also reported: ``token_acc`` (fraction of the answer's tokens predicted
right, partial credit) and ``nll`` (mean NLL of the answer tokens, nats).

``evaluate_niah_cells`` scores the same way on encoded tensors (``slotmem.data.niah.encode_niah``),
batched, for the trained ``niah`` task; ``draw_niah`` / ``plot_niah`` draw the depth-by-length grid.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .common import eval_mode, module_device, per_example_outputs, reduce_sums
from .objectives import as_token_objective


def score_niah(model, tokenizer, samples, progress: bool = False) -> list[dict]:
    """One row per sample: ``{"length", "depth", "index", "num_tokens", "needle_token",
    "correct", "token_acc", "nll"}``. ``model``: a causal LM (``logits [1, T, V]``)."""
    dev = module_device(model)
    it = samples
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(samples, desc="niah", unit="sample", leave=False)
    rows = []
    with eval_mode(model):
        for s in it:
            p = tokenizer.encode(s.prompt, add_special_tokens=False)
            a = tokenizer.encode(s.answer, add_special_tokens=False)
            ids = torch.tensor([p + a], dtype=torch.long, device=dev)
            logits = model(input_ids=ids, use_cache=False).logits[0, len(p) - 1 : len(p) + len(a) - 1].float()
            target = ids[0, len(p):]
            hits = logits.argmax(-1) == target
            rows.append({
                "length": s.length, "depth": s.depth, "index": s.index, "num_tokens": s.num_tokens,
                "needle_token": s.needle_token, "correct": bool(hits.all()), "token_acc": float(hits.float().mean()),
                "nll": float(F.cross_entropy(logits, target)),
            })
    return rows


def evaluate_niah_cells(model, cells, batch_size: int, info=None) -> dict:
    """``cells``: ``[(length, depth, input_ids [N, T], labels [N, T])]`` (``encode_niah``). ``model``: a
    causal LM or a ``TokenObjective`` (FSDP-sharded: every process must call this). A sample is correct
    when the argmax at every answer token is right (= greedy decoding reproduces the value).

    Returns ``{"acc", "loss", "cells": [{"length", "depth", "samples", "acc", "token_acc", "loss"}]}``;
    ``acc`` is the mean over cells. A cell whose loss is not finite reports ``acc = loss = nan``."""
    obj = as_token_objective(model)
    rows = []
    with eval_mode(obj):
        for length, depth, inputs, labels in cells:
            sums = {"correct": 0.0, "tok_acc": 0.0, "n": 0.0, "loss_sum": 0.0, "count": 0.0, "nonfinite": 0.0}
            for out in per_example_outputs(obj, inputs, labels, batch_size, info):
                rc = out["row_count"].double()
                sums["correct"] += float((out["row_hits"] == rc).sum())
                sums["tok_acc"] += float((out["row_hits"] / rc).sum())
                sums["n"] += rc.numel()
                sums["loss_sum"] += float(out["loss_sum"])
                sums["count"] += float(out["count"])
                sums["nonfinite"] += float(not torch.isfinite(out["loss_sum"]).item())
            s = reduce_sums(sums, info)
            bad = s["nonfinite"] or not np.isfinite(s["loss_sum"])
            rows.append({"length": int(length), "depth": float(depth), "samples": int(s["n"]),
                         "acc": float("nan") if bad else s["correct"] / s["n"], "token_acc": s["tok_acc"] / s["n"],
                         "loss": float("nan") if bad else s["loss_sum"] / s["count"]})
    return {"acc": float(np.mean([r["acc"] for r in rows])), "loss": float(np.mean([r["loss"] for r in rows])),
            "cells": rows}


def summarize_niah(rows: list[dict]) -> list[dict]:
    """Mean over samples per (length, depth): ``{"length", "depth", "samples", "acc", "token_acc", "nll"}``."""
    cells: dict = {}
    for r in rows:
        cells.setdefault((r["length"], r["depth"]), []).append(r)
    return [{"length": L, "depth": d, "samples": len(rs), "acc": float(np.mean([r["correct"] for r in rs])),
             "token_acc": float(np.mean([r["token_acc"] for r in rs])), "nll": float(np.mean([r["nll"] for r in rs]))}
            for (L, d), rs in cells.items()]


def format_niah_table(cells: list[dict]) -> str:
    """Accuracy grid: one row per depth, one column per length, and a mean row."""
    lengths = sorted({c["length"] for c in cells})
    depths = sorted({c["depth"] for c in cells})
    acc = {(c["length"], c["depth"]): c["acc"] for c in cells}
    lines = [f"{'depth':>7}" + "".join(f"{L:>9,}" for L in lengths)]
    for d in depths:
        lines.append(f"{d:>7.2f}" + "".join(f"{acc[(L, d)]:>9.3f}" for L in lengths))
    lines.append(f"{'mean':>7}" + "".join(f"{np.mean([acc[(L, d)] for d in depths]):>9.3f}" for L in lengths))
    return "\n".join(lines)


def draw_niah(ax, cells: list[dict]):
    """Draw the accuracy grid (``{"length", "depth", "acc"}`` cells), depth (rows) by context length
    (columns), annotated, on ``ax``; returns the image (for a colour bar)."""
    lengths = sorted({c["length"] for c in cells})
    depths = sorted({c["depth"] for c in cells})
    acc = {(c["length"], c["depth"]): c["acc"] for c in cells}
    grid = np.array([[acc[(L, d)] for L in lengths] for d in depths])
    im = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    for i in range(len(depths)):
        for j in range(len(lengths)):
            ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(lengths)), [f"{L:,}" for L in lengths])
    ax.set_yticks(range(len(depths)), [f"{d:.2f}" for d in depths])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("needle depth")
    return im


def plot_niah(cells: list[dict], path, title: str = "") -> None:
    """Heat map of accuracy, depth (rows) by context length (columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_len, n_dep = len({c["length"] for c in cells}), len({c["depth"] for c in cells})
    fig, ax = plt.subplots(figsize=(1.2 * n_len + 2.5, 0.5 * n_dep + 2))
    im = draw_niah(ax, cells)
    ax.set_title(title or "S-NIAH accuracy", fontsize=10)
    fig.colorbar(im, ax=ax, label="accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
