"""MQAR accuracy per held-out (T, kv) slice.

Accuracy follows the Zoology protocol: per example,
the fraction of its query positions whose argmax prediction is the right value;
averaged over examples. ``acc`` (the headline number) is the unweighted mean over slices.
A slice whose logits hold NaN/Inf (a diverged model) reports ``acc = loss = nan``, never a
score: the argmax of NaN logits is meaningless.
"""
from __future__ import annotations

import numpy as np
import torch

from .common import eval_mode, per_example_outputs, reduce_sums
from .objectives import as_token_objective


def evaluate_mqar_slices(model, slices, batch_size: int, info=None, autocast=None) -> dict:
    """``slices``: ``[(spec, inputs [N, T], labels [N, T])]`` where ``spec`` has ``seq_len`` and
    ``num_kv_pairs`` (e.g. ``MQARSlice`` or ``MQARConfig``). ``model``: a causal LM or a
    ``TokenObjective`` (possibly FSDP-sharded: then every process must call this).

    Returns ``{"acc", "loss", "slices": [{"seq_len", "num_kv_pairs", "num_examples", "acc", "loss"}]}``.
    """
    obj = as_token_objective(model)
    rows = []
    with eval_mode(obj, autocast):
        for spec, inputs, labels in slices:
            sums = {"acc_sum": 0.0, "n_ex": 0.0, "loss_sum": 0.0, "count": 0.0, "nonfinite": 0.0}
            for out in per_example_outputs(obj, inputs, labels, batch_size, info):
                rc = out["row_count"].double()
                valid = rc > 0
                sums["acc_sum"] += float((out["row_hits"][valid] / rc[valid]).sum())
                sums["n_ex"] += float(valid.sum())
                sums["loss_sum"] += float(out["loss_sum"])
                sums["count"] += float(out["count"])
                sums["nonfinite"] += float(not torch.isfinite(out["loss_sum"]).item())
            s = reduce_sums(sums, info)
            if s["nonfinite"] or not np.isfinite(s["loss_sum"]):
                s["acc_sum"] = s["loss_sum"] = float("nan")
            rows.append({
                "seq_len": int(spec.seq_len),
                "num_kv_pairs": int(spec.num_kv_pairs),
                "num_examples": int(inputs.shape[0]),
                "acc": s["acc_sum"] / s["n_ex"] if s["n_ex"] else float("nan"),
                "loss": s["loss_sum"] / s["count"] if s["count"] else float("nan"),
            })
    return {
        "acc": float(np.mean([r["acc"] for r in rows])),
        "loss": float(np.mean([r["loss"] for r in rows])),
        "slices": rows,
    }
