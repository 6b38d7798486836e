"""Objectives: a network wrapped so that its forward returns loss SUMS (and counts, hits).

The trainer differentiates them and the evaluators add them up; sums (not means) reduce exactly
across processes and micro-batches. ``TokenObjective`` serves MQAR and language modelling,
``ForecastObjective`` forecasting. In training mode both add the token mixers' regularisers
(``take_auxiliary_loss``, a per-target mean) as ``aux · count``, so the trainer's per-target mean carries
them once; in eval mode the mixers set none and the sums are the plain losses.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import IGNORE_INDEX
from ..layers import take_auxiliary_loss


class TokenObjective(nn.Module):
    """Next-token cross-entropy on already-shifted labels (``-100`` = ignored).

    The LM head runs only on the labelled positions (MQAR labels ~kv of T positions),
    through the HF model's base model and output embeddings; the plain ``forward`` is the
    fallback for models without them. Returns sums: ``loss_sum``, ``count``, ``hits``, and
    with ``per_example`` the per-row ``row_hits`` / ``row_count``.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def _logits_at(self, input_ids, mask):
        net = self.net
        base = getattr(net, getattr(net, "base_model_prefix", ""), None)
        head = net.get_output_embeddings() if hasattr(net, "get_output_embeddings") else None
        if isinstance(base, nn.Module) and base is not net and head is not None:
            h = base(input_ids=input_ids, use_cache=False).last_hidden_state
            return head(h[mask])
        return net(input_ids=input_ids, use_cache=False).logits[mask]

    def forward(self, input_ids, labels, per_example: bool = False):
        mask = labels != IGNORE_INDEX
        logits = self._logits_at(input_ids, mask).float()
        tgt = labels[mask]
        loss_sum = F.cross_entropy(logits, tgt, reduction="sum")
        hits = logits.argmax(-1) == tgt
        loss_sum = _add_auxiliary(loss_sum, self.net, mask.sum())
        out = {"loss_sum": loss_sum, "count": mask.sum(), "hits": hits.sum()}
        if per_example:
            rows = mask.nonzero()[:, 0]
            out["row_hits"] = torch.bincount(rows, weights=hits.double(), minlength=labels.shape[0])
            out["row_count"] = mask.sum(1)
        return out


class ForecastObjective(nn.Module):
    """Squared and absolute error sums of a forecast ``net(x) -> [B, H, C]``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x, y):
        err = self.net(x).float() - y.float()
        loss_sum = _add_auxiliary(err.square().sum(), self.net, err.numel())
        return {"loss_sum": loss_sum, "count": torch.tensor(err.numel(), device=err.device), "abs_sum": err.abs().sum()}


def _add_auxiliary(loss_sum: torch.Tensor, net: nn.Module, count) -> torch.Tensor:
    """``loss_sum + aux · count`` when the mixers of ``net`` set a regulariser in this forward."""
    aux = take_auxiliary_loss(net)
    return loss_sum if aux is None else loss_sum + aux * count


def as_token_objective(model: nn.Module) -> nn.Module:
    """A ``TokenObjective`` around a causal LM, unless ``model`` already is one."""
    return model if isinstance(model, TokenObjective) else TokenObjective(model)


def as_forecast_objective(model: nn.Module) -> nn.Module:
    """A ``ForecastObjective`` around a forecaster, unless ``model`` already is one."""
    return model if isinstance(model, ForecastObjective) else ForecastObjective(model)
