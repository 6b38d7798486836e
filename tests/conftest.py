import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def max_err(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item() if a.numel() else 0.0


def prefill_then_decode(layer, x, prefill: int = 4):
    """Run ``layer`` on ``x[:, :prefill]`` with a cache, then token by token: ``(outputs [B, T, D], cache)``."""
    out, _, cache = layer(x[:, :prefill], use_cache=True)
    outs = [out]
    for t in range(prefill, x.shape[1]):
        o, _, cache = layer(x[:, t:t + 1], past_key_values=cache, use_cache=True)
        outs.append(o)
    return torch.cat(outs, 1), cache


@pytest.fixture
def trellis_op_inputs(monkeypatch):
    """Record what ``TrellisAttention`` hands the Trellis op: a dict filled with q, k, v, alpha,
    beta, gamma of the last call (the op still runs)."""
    import slotmem.layers.trellis as trellis_layer

    seen, real = {}, trellis_layer.chunk_trellis

    def spy(q, k, v, alpha, beta, gamma, **kw):
        seen.update(q=q, k=k, v=v, alpha=alpha, beta=beta, gamma=gamma)
        return real(q, k, v, alpha, beta, gamma, **kw)

    monkeypatch.setattr(trellis_layer, "chunk_trellis", spy)
    return seen
