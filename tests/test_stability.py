"""Numerical stability of the slot-memory layers: finite outputs and gradients over 16K tokens for
the layer defaults and for every Lattice/Trellis mixer a shipped config builds (tiny widths, the
config's own knobs), in float32 and under bf16 autocast; forget gates computed in float32."""
from pathlib import Path

import pytest
import torch
import yaml

import slotmem.configs
from slotmem.layers import TrellisAttention, build_mixer

CONFIGS = Path(slotmem.configs.__file__).parent  # the built-in configs shipped in the package
T_LONG = 16384


def _mixers_in(obj, out):
    """Every ``{mixer: lattice|trellis, mixer_kwargs: {...}}`` found anywhere in a config tree."""
    if isinstance(obj, dict):
        if obj.get("mixer") in ("lattice", "trellis"):
            out.add((obj["mixer"], yaml.safe_dump(obj.get("mixer_kwargs") or {}, sort_keys=True)))
        for v in obj.values():
            _mixers_in(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _mixers_in(v, out)
    return out


def shipped_mixers():
    found = {("lattice", "{}\n"), ("trellis", "{}\n"),  # the layer defaults, and the learned M_0 that the forget
             ("trellis", yaml.safe_dump({"learn_initial_state": True, "forget_to_initial_state": "both"}))}  # gate pulls toward
    for path in sorted(p for p in CONFIGS.rglob("*.yaml") if "ablations" not in p.parts):  # ablations: experiments
        _mixers_in(yaml.safe_load(path.read_text()), found)
    return [(name, yaml.safe_load(kw)) for name, kw in sorted(found)]


@pytest.mark.parametrize("name,kwargs", shipped_mixers(), ids=lambda v: v if isinstance(v, str) else
                         ",".join(f"{k}={w}" for k, w in sorted(v.items())) or "defaults")
def test_16k_tokens_finite_fp32_and_bf16(name, kwargs):
    torch.manual_seed(0)
    kwargs = dict(kwargs, num_slots=min(kwargs.get("num_slots", 8), 8))  # tiny state, the config's knobs
    layer = build_mixer(name, 16, 1, layer_idx=0, **kwargs)
    x = torch.randn(1, T_LONG, 16, requires_grad=True)
    y, _, _ = layer(x)
    (y * torch.randn_like(y)).sum().backward()
    assert torch.isfinite(y).all(), "non-finite output"
    assert torch.isfinite(x.grad).all(), "non-finite input gradient"
    for pname, p in layer.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), f"non-finite gradient of {pname}"
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        yb, _, _ = layer(x.detach())
    assert torch.isfinite(yb).all(), "non-finite output under bf16 autocast"


def test_forget_gate_stays_float32_under_bf16_autocast(trellis_op_inputs):
    """A forget gate of 0.999 rounds to 1.0 in bf16 (no forgetting): the layer computes it in float32."""
    layer = TrellisAttention(16, 1, num_slots=4, layer_idx=0)
    with torch.no_grad():
        layer.beta_proj.weight.zero_()
        layer.beta_proj.bias.fill_(torch.logit(torch.tensor(0.999)).item())
    seen = trellis_op_inputs
    with torch.autocast("cpu", dtype=torch.bfloat16):
        layer(torch.randn(1, 5, 16))
    assert seen["beta"].dtype == seen["gamma"].dtype == torch.float32
    torch.testing.assert_close(seen["beta"], torch.full_like(seen["beta"], 0.999), rtol=0, atol=1e-6)
