"""Forecasting metrics (MSE / MAE on the normalised data, the standard protocol) of a
``ForecastModel`` on one split."""
from __future__ import annotations

import torch

from .common import eval_mode, module_device, reduce_sums, sharded_batches
from .objectives import as_forecast_objective


def evaluate_forecast(model, dataset, batch_size: int, info=None, max_windows: int = 0, autocast=None) -> dict:
    """``{"mse", "mae", "windows"}`` over the split's windows (the first ``max_windows`` if > 0).
    ``model``: a ``ForecastModel`` or a ``ForecastObjective``."""
    obj = as_forecast_objective(model)
    dev = module_device(obj)
    n = len(dataset) if not max_windows else min(len(dataset), max_windows)
    sums = {"sq": 0.0, "abs": 0.0, "count": 0.0}
    with eval_mode(obj, autocast):
        for idx, real in sharded_batches(n, batch_size, info):
            xs, ys = zip(*(dataset[int(i)] for i in idx))
            out = obj(torch.stack(xs).to(dev), torch.stack(ys).to(dev))
            if real:
                sums["sq"] += float(out["loss_sum"])
                sums["abs"] += float(out["abs_sum"])
                sums["count"] += float(out["count"])
    s = reduce_sums(sums, info)
    return {"mse": s["sq"] / s["count"], "mae": s["abs"] / s["count"], "windows": n}
