"""What the Trellis layers of a model feed their op, for the benchmark scripts that inspect gates and codes
(they run as ``python benchmarks/NAME.py``, so this folder is on ``sys.path``). Written by hand: the layer
calls ``chunk_trellis`` through its module, and recording that call is the one place that sees every layer's
``k, alpha, beta, gamma`` after the projections, gates and short convolution."""
from __future__ import annotations

import torch

import slotmem.layers.trellis as trellis_layer


def trellis_op_inputs(model, *inputs, **kwargs) -> list[dict]:
    """Run ``model(*inputs, **kwargs)`` without grad; one dict per Trellis layer call, in layer order, with the detached
    ``k`` [B, T, H, d], ``alpha`` [B, T, H, m], ``beta`` and ``gamma`` [B, T, H] it passed to ``chunk_trellis``, and
    ``state``, the ``(Mk, Mv)`` the op returned after the prompt (None unless ``use_cache=True``)."""
    calls, real = [], trellis_layer.chunk_trellis

    def record(q, k, v, alpha, beta, gamma, **kw):
        o, final = real(q, k, v, alpha, beta, gamma, **kw)
        state = getattr(final, "state", final)  # a ChunkCarry when the layer caches, else the plain state or None
        calls.append({"k": k.detach(), "alpha": alpha.detach(), "beta": beta.detach(), "gamma": gamma.detach(),
                      "state": state})
        return o, final

    trellis_layer.chunk_trellis = record
    try:
        with torch.no_grad():
            model(*inputs, **kwargs)
    finally:
        trellis_layer.chunk_trellis = real
    return calls
