"""The live metrics, on models whose outputs are known: MQAR accuracy (``evaluate_mqar_slices``),
forecast MSE/MAE (``evaluate_forecast``) and the windows every LM evaluation and training batch is
cut with (``pack_tokens``, used by ``evaluate_nll``)."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from slotmem.data import LMDataset, MQARConfig, generate_mqar, pack_tokens
from slotmem.eval import evaluate_forecast, evaluate_mqar_slices, evaluate_nll

V = 32


class Lookup(nn.Module):
    """A causal LM that predicts ``preds[n]`` (one-hot logits) for the input row ``inputs[n]``."""

    def __init__(self, inputs, preds, scale=1.0):
        super().__init__()
        self.rows = {tuple(r): p for r, p in zip(inputs.tolist(), preds)}
        self.scale = scale

    def forward(self, input_ids, use_cache=False):
        preds = torch.stack([self.rows[tuple(r)] for r in input_ids.tolist()])
        return SimpleNamespace(logits=nn.functional.one_hot(preds, V).float() * self.scale)


def _mqar():
    spec = MQARConfig(16, 2, 3, vocab_size=V, seed=1)
    x, y = generate_mqar(spec)
    preds = y.clamp(min=0).clone()
    pos = [(y[n] != -100).nonzero().flatten() for n in range(3)]
    preds[0, pos[0][0]] = (y[0, pos[0][0]] + 1) % V  # example 0: one of two queries wrong -> 0.5
    preds[1, pos[1]] = (y[1, pos[1]] + 1) % V        # example 1: both wrong -> 0; example 2: right -> 1
    preds[y == -100] = 5                             # predictions at ignored positions do not count
    return spec, x, y, preds


def test_mqar_accuracy_is_the_mean_over_examples_of_their_query_accuracy():
    spec, x, y, preds = _mqar()
    res = evaluate_mqar_slices(Lookup(x, preds), [(spec, x, y)], batch_size=2)
    assert res["slices"][0]["acc"] == pytest.approx(0.5) and res["acc"] == pytest.approx(0.5)
    assert res["slices"][0]["num_examples"] == 3 and math.isfinite(res["loss"])
    y2 = y.clone()
    y2[1] = -100  # an example without queries is left out of the mean: (0.5 + 1) / 2
    assert evaluate_mqar_slices(Lookup(x, preds), [(spec, x, y2)], batch_size=1)["acc"] == pytest.approx(0.75)
    perfect = evaluate_mqar_slices(Lookup(x, y.clamp(min=0)), [(spec, x, y), (spec, x, y2)], batch_size=3)
    assert [r["acc"] for r in perfect["slices"]] == [1.0, 1.0]


def test_mqar_accuracy_of_a_diverged_model_is_nan():
    spec, x, y, preds = _mqar()
    res = evaluate_mqar_slices(Lookup(x, preds, scale=float("nan")), [(spec, x, y)], batch_size=2)
    assert math.isnan(res["acc"]) and math.isnan(res["loss"])


class Zero(nn.Module):
    def forward(self, x):
        return torch.zeros_like(x)


def test_forecast_mse_mae_average_every_element():
    ys = [torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, -1.0]])]  # windows [H=1, C=2]
    dataset = [(y, y) for y in ys]  # (input, target); the model forecasts zeros
    res = evaluate_forecast(Zero(), dataset, batch_size=1)
    assert res == {"mse": pytest.approx((1 + 4 + 9 + 1) / 4), "mae": pytest.approx((1 + 2 + 3 + 1) / 4), "windows": 2}
    assert evaluate_forecast(Zero(), dataset, batch_size=2, max_windows=1)["mse"] == pytest.approx((1 + 4) / 2)


def test_windows_share_one_token_and_drop_the_tail():
    w = pack_tokens(torch.arange(11), 3)
    assert w.tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert pack_tokens(torch.arange(3), 3).shape == (0, 4)  # too short for one window
    assert pack_tokens(torch.arange(10), 3, stride=2).shape == (4, 4)
    ds = LMDataset(torch.arange(11), 3)
    assert torch.equal(ds.windows(), w) and torch.equal(ds[2]["labels"], w[2, 1:])


class Uniform(nn.Module):
    def forward(self, input_ids, use_cache=False):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, V))


def test_perplexity_scores_the_packed_windows():
    tokens = torch.arange(41) % V
    res = evaluate_nll(Uniform(), tokens, seq_len=8, batch_size=2)
    assert res["windows"] == pack_tokens(tokens, 8).shape[0] == 5 and res["tokens"] == 5 * 8
    assert res["nll"] == pytest.approx(math.log(V))
    assert evaluate_nll(Uniform(), tokens, seq_len=8, batch_size=2, max_tokens=16)["windows"] == 2
    assert evaluate_nll(Uniform(), tokens[:5], seq_len=8, batch_size=2)["nll"] is None
