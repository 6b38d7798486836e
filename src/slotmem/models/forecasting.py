"""A forecasting head on any slot-memory (or baseline) backbone.

Design (standard, and stated here because forecasting papers differ):

* **Tokens = time steps, channels mixed.** Each of the ``L`` lookback steps becomes one
  token: a linear map of its ``C_in`` channel values to ``hidden_size`` (the "value
  embedding" of Informer / Autoformer; no calendar features). The backbone mixes over
  time with its own positional handling (RoPE in attention, recurrence elsewhere).
* **RevIN-style instance normalisation** (``revin=True``, Kim et al. 2022; also used by
  PatchTST and iTransformer): each input window is normalised per channel by its own mean
  and standard deviation, and the forecast is de-normalised with the same statistics
  (no learned affine). It removes the level shift between the train and test periods.
* **Head.** ``head="last"`` (default): the causal backbone's LAST hidden state, which has
  read the whole lookback, maps linearly to the full horizon ``H x C_out`` (direct
  multi-step forecasting, as an RNN forecaster does). ``head="flatten"``: all ``L``
  hidden states are flattened and mapped linearly to the horizon (PatchTST's flatten head,
  with time steps as patches); more parameters, uses every position.

Input ``x [B, L, C_in]``, output ``[B, H, C_out]``. With ``features='MS'`` the output is the
target channel only; RevIN then uses the target's statistics (``target_index``).

``DLinear`` (Zeng et al. 2023, "Are Transformers Effective for Time Series Forecasting?") is
the linear reference every forecasting table needs: no backbone, a moving-average split of
each channel into trend and remainder, and one linear map ``L -> H`` for each, shared by
all channels (the paper's default ``individual=False``); ``timeseries.head: dlinear``.
"""
from __future__ import annotations

import torch
import torch.nn as nn


def _check_io(n_in: int, n_out: int, target_index) -> None:
    if n_out not in (n_in, 1):
        raise ValueError(f"n_out must be n_in ({n_in}) or 1, got {n_out}")
    if n_out == 1 and n_in > 1 and target_index is None:
        raise ValueError("n_out=1 with several input channels needs target_index (the channel to forecast)")


def _revin_stats(x: torch.Tensor, eps: float):
    """Per-window, per-channel mean and std of ``x [B, L, C]`` (no gradient), each ``[B, 1, C]``."""
    mean = x.mean(dim=1, keepdim=True).detach()
    std = (x.var(dim=1, keepdim=True, unbiased=False) + eps).sqrt().detach()
    return mean, std


def _revin_undo(y: torch.Tensor, mean, std, n_in: int, n_out: int, target_index) -> torch.Tensor:
    if n_out == 1 and n_in > 1:
        t = target_index
        mean, std = mean[..., t : t + 1], std[..., t : t + 1]
    return y * std + mean


class ForecastModel(nn.Module):
    def __init__(self, backbone: nn.Module, hidden_size: int, n_in: int, n_out: int, lookback: int, horizon: int,
                 head: str = "last", revin: bool = True, target_index: int | None = None, eps: float = 1e-5) -> None:
        super().__init__()
        if head not in ("last", "flatten"):
            raise ValueError(f"head={head!r} is not valid; choose 'last' or 'flatten'")
        _check_io(n_in, n_out, target_index)
        self.backbone = backbone
        self.n_in, self.n_out, self.lookback, self.horizon = n_in, n_out, lookback, horizon
        self.head_kind, self.revin, self.eps = head, revin, eps
        self.target_index = target_index
        self.embed = nn.Linear(n_in, hidden_size)
        width = hidden_size * (lookback if head == "flatten" else 1)
        self.head = nn.Linear(width, horizon * n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.n_in:
            raise ValueError(f"x must be [B, L, {self.n_in}], got {tuple(x.shape)}")
        if self.head_kind == "flatten" and x.shape[1] != self.lookback:
            raise ValueError(f"the flatten head needs exactly lookback={self.lookback} steps, got {x.shape[1]}")
        if self.revin:
            mean, std = _revin_stats(x, self.eps)
            x = (x - mean) / std
        h = self.backbone(inputs_embeds=self.embed(x), use_cache=False).last_hidden_state  # [B, L, hidden]
        z = h[:, -1] if self.head_kind == "last" else h.flatten(1)
        y = self.head(z).view(x.shape[0], self.horizon, self.n_out)
        if self.revin:
            y = _revin_undo(y, mean, std, self.n_in, self.n_out, self.target_index)
        return y


class DLinear(nn.Module):
    """DLinear: ``x [B, L, C_in] -> [B, H, C_out]``. Trend = moving average over ``kernel_size``
    steps (edges padded by repetition, as in the paper), remainder = ``x - trend``; forecast =
    ``Linear_trend(trend) + Linear_remainder(remainder)`` along time, one pair of maps shared
    by all channels. ``revin`` as in ``ForecastModel`` (off in the paper; on here by default so
    the comparison's rows share the normalisation)."""

    def __init__(self, n_in: int, n_out: int, lookback: int, horizon: int, kernel_size: int = 25,
                 revin: bool = True, target_index: int | None = None, eps: float = 1e-5) -> None:
        super().__init__()
        _check_io(n_in, n_out, target_index)
        if not isinstance(kernel_size, int) or kernel_size < 1:
            raise ValueError(f"kernel_size must be an int >= 1, got {kernel_size!r}")
        self.n_in, self.n_out, self.lookback, self.horizon = n_in, n_out, lookback, horizon
        self.kernel_size, self.revin, self.eps, self.target_index = kernel_size, revin, eps, target_index
        self.trend = nn.Linear(lookback, horizon)
        self.remainder = nn.Linear(lookback, horizon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.n_in or x.shape[1] != self.lookback:
            raise ValueError(f"x must be [B, {self.lookback}, {self.n_in}], got {tuple(x.shape)}")
        if self.revin:
            mean, std = _revin_stats(x, self.eps)
            x = (x - mean) / std
        k = self.kernel_size
        xt = x.transpose(1, 2)  # [B, C, L]
        padded = torch.cat([xt[..., :1].expand(-1, -1, (k - 1) // 2), xt, xt[..., -1:].expand(-1, -1, k // 2)], dim=-1)
        trend = torch.nn.functional.avg_pool1d(padded, k, stride=1)  # [B, C, L]
        y = (self.trend(trend) + self.remainder(xt - trend)).transpose(1, 2)  # [B, H, C_in]
        if self.n_out == 1 and self.n_in > 1:
            y = y[..., self.target_index : self.target_index + 1]
        if self.revin:
            y = _revin_undo(y, mean, std, self.n_in, self.n_out, self.target_index)
        return y
