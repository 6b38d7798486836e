"""Baseline mixers (attention, Gated DeltaNet, DeltaNet, GLA, GSA, Mamba2): decode == forward,
chaining, padding, packing, gradients, state sizes, references (naive attention, transformers'
Mamba2Mixer) and the fla dispatch (naive references on CPU)."""
import importlib
import math

import pytest
import torch

from slotmem.layers import MIXERS, build_mixer
from slotmem.layers import fla_ops as fb
from slotmem.layers.attention import Attention
from slotmem.layers.fla_ops import fla_backend, run_fla_op

from .conftest import max_err, prefill_then_decode

HIDDEN, HEADS = 32, 4
# fla's naive references compute in float32 whatever the input dtype: fp32 tests, 1e-4 tolerance
TOL = 1e-4
CONFIGS = {
    "attention": ("attention", dict()),
    "attention_gqa_window": ("attention", dict(num_kv_heads=2, window_size=3)),
    "gated_deltanet": ("gated_deltanet", dict()),
    "deltanet": ("deltanet", dict()),
    "gla": ("gla", dict(use_short_conv=True)),
    "gsa": ("gsa", dict(num_slots=6, use_short_conv=True)),
    "mamba2": ("mamba2", dict(d_state=8, n_groups=2)),
}
RECURRENT = ["gated_deltanet", "deltanet", "gla", "gsa", "mamba2"]


def make(key, **kw):
    name, base = CONFIGS[key]
    return build_mixer(name, HIDDEN, HEADS, layer_idx=0, **dict(base, **kw))


def left_mask(lens, T):
    mask = torch.zeros(len(lens), T, dtype=torch.long)
    for i, n in enumerate(lens):
        mask[i, T - n:] = 1
    return mask


def test_all_baselines_registered():
    assert {"attention", "gated_deltanet", "deltanet", "gla", "gsa", "mamba2"} <= set(MIXERS)


@pytest.mark.parametrize("key", list(CONFIGS))
def test_prefill_then_token_by_token_decode_equals_forward(key):
    layer = make(key)
    x = torch.randn(2, 12, HIDDEN)
    full, _, _ = layer(x)
    decoded, cache = prefill_then_decode(layer, x)
    assert max_err(full, decoded) < TOL
    assert cache.get_seq_length() == 12


@pytest.mark.parametrize("key", list(CONFIGS))
@pytest.mark.parametrize("T1", [1, 2])  # shorter than the conv width 4
def test_chaining_with_calls_shorter_than_the_conv(key, T1):
    layer = make(key)
    x = torch.randn(2, 7, HIDDEN)
    full, _, _ = layer(x)
    a, _, cache = layer(x[:, :T1], use_cache=True)
    b, _, cache = layer(x[:, T1:T1 + 1], past_key_values=cache, use_cache=True)
    c, _, _ = layer(x[:, T1 + 1:], past_key_values=cache, use_cache=True)
    assert max_err(full, torch.cat([a, b, c], 1)) < TOL


@pytest.mark.parametrize("key", ["gated_deltanet", "deltanet", "mamba2"])
def test_chunked_reference_equals_recurrent_reference(key):
    """Longer calls run the chunked CPU form, short ones (<= 8 tokens) the token loop: one call == two calls."""
    layer = make(key)
    x = torch.randn(1, 70, HIDDEN)
    full, _, _ = layer(x)  # chunked (70 tokens)
    a, _, cache = layer(x[:, :6], use_cache=True)  # token loop (6)
    b, _, _ = layer(x[:, 6:], past_key_values=cache, use_cache=True)  # chunked (64), from the loop's state
    assert max_err(full, torch.cat([a, b], 1)) < TOL


@pytest.mark.parametrize("key", list(CONFIGS))
def test_left_padded_batch_equals_per_sample(key):
    layer = make(key)
    lens, T = [7, 3, 5], 7
    x = torch.randn(3, T, HIDDEN)
    out, _, _ = layer(x, attention_mask=left_mask(lens, T))
    for i, n in enumerate(lens):
        ref, _, _ = layer(x[i:i + 1, T - n:])
        assert max_err(out[i:i + 1, T - n:], ref) < TOL
        assert out[i, :T - n].abs().max() == 0 if n < T else True


@pytest.mark.parametrize("key", list(CONFIGS))
def test_left_padded_prefill_then_decode_equals_per_sample(key):
    """Positions (RoPE) and states of a padded batch survive the cache: decode == unpadded forward."""
    layer = make(key)
    lens, T, steps = [6, 2, 4], 6, 4
    x = torch.randn(3, T + steps, HIDDEN)
    mask = left_mask(lens, T)
    out, _, cache = layer(x[:, :T], attention_mask=mask, use_cache=True)
    outs = []
    for t in range(steps):
        mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], 1)
        o, _, cache = layer(x[:, T + t:T + t + 1], attention_mask=mask, past_key_values=cache, use_cache=True)
        outs.append(o)
    dec = torch.cat(outs, 1)
    for i, n in enumerate(lens):
        ref, _, _ = layer(x[i:i + 1, T - n:])
        assert max_err(out[i:i + 1, T - n:], ref[:, :n]) < TOL
        assert max_err(dec[i:i + 1], ref[:, n:]) < TOL


@pytest.mark.parametrize("key", list(CONFIGS))
def test_cu_seqlens_equals_per_sequence_and_chains(key):
    layer = make(key)
    cu = torch.tensor([0, 3, 9, 11])
    x = torch.randn(1, 11, HIDDEN)
    out, _, cache = layer(x, cu_seqlens=cu, use_cache=True)
    nxt = torch.randn(1, 3, HIDDEN)  # one more token per sequence, packed
    o2, _, _ = layer(nxt, cu_seqlens=torch.tensor([0, 1, 2, 3]), past_key_values=cache, use_cache=True)
    for n, (a, b) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        ref, _, _ = layer(torch.cat([x[:, a:b], nxt[:, n:n + 1]], 1))
        assert max_err(out[:, a:b], ref[:, :-1]) < TOL
        assert max_err(o2[:, n:n + 1], ref[:, -1:]) < TOL


VARIANTS = [(k, {}) for k in CONFIGS] + [
    ("gated_deltanet", dict(use_short_conv=False, use_gate=False, allow_neg_eigval=True)),
    ("deltanet", dict(qk_norm="sum", use_beta=False, use_gate=True)),
    ("gla", dict(use_short_conv=False, use_output_gate=False)),
    ("gsa", dict(use_short_conv=False)),
    ("mamba2", dict(use_conv_bias=False, use_bias=True, n_groups=1)),
    ("attention", dict(qkv_bias=True, num_kv_heads=1)),
]


@pytest.mark.parametrize("key,kw", VARIANTS, ids=[f"{k}-{i}" for i, (k, _) in enumerate(VARIANTS)])
def test_one_backward_step_gives_finite_grads(key, kw):
    layer = make(key, **kw)
    x = torch.randn(2, 9, HIDDEN, requires_grad=True)
    o, _, _ = layer(x, attention_mask=left_mask([9, 6], 9))
    (o * torch.randn_like(o)).sum().backward()
    assert torch.isfinite(x.grad).all()
    for n, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n


@pytest.mark.parametrize("key", RECURRENT)
def test_recurrent_state_size_is_constant_and_matches_the_cache(key):
    layer = make(key)
    sizes = {layer.state_size(n) for n in (1, 100, 10_000)}
    assert len(sizes) == 1
    _, _, cache = layer(torch.randn(3, 5, HIDDEN), use_cache=True)
    st = cache[0]["recurrent_state"]
    floats = sum(s.numel() for s in (st if isinstance(st, tuple) else (st,))) // 3
    assert layer.state_size(5) == floats
    d = HIDDEN // HEADS
    expected = dict(gated_deltanet=HEADS * d * d, deltanet=HEADS * d * d, gla=HEADS * d * d,
                    gsa=HEADS * 6 * (d + d), mamba2=HEADS * 8 * (2 * HIDDEN // HEADS))[key]
    assert layer.state_size() == expected


def test_attention_state_size_grows_linearly_and_caps_at_the_window():
    full, win = make("attention"), make("attention_gqa_window")
    d = HIDDEN // HEADS
    assert [full.state_size(n) for n in (0, 1, 10, 100)] == [0, 2 * HEADS * d, 20 * HEADS * d, 200 * HEADS * d]
    assert [win.state_size(n) for n in (1, 2, 10, 10_000)] == [2 * 2 * d, 2 * 2 * d * 2, 2 * 2 * d * 2, 2 * 2 * d * 2]
    for layer in (full, win):
        _, _, cache = layer(torch.randn(2, 9, HIDDEN), use_cache=True)
        kv = cache[0]["key"].numel() + cache[0]["value"].numel()
        assert kv // 2 == layer.state_size(9)


def _naive_attention(layer, x, window=None):
    """softmax((R q)(R k)ᵀ/√d + mask) v from scratch: complex-number RoPE, loops over heads."""
    B, T, _ = x.shape
    H, Hkv, d = layer.num_heads, layer.num_kv_heads, layer.head_dim
    q = layer.q_proj(x).view(B, T, H, d)
    k = layer.k_proj(x).view(B, T, Hkv, d)
    v = layer.v_proj(x).view(B, T, Hkv, d)
    half = d // 2
    freqs = torch.tensor([layer.rope_theta ** (-2 * i / d) for i in range(half)], dtype=x.dtype)
    rot = torch.polar(torch.ones(T, half, dtype=x.dtype), torch.arange(T, dtype=x.dtype)[:, None] * freqs)

    def rope(t):
        z = torch.complex(t[..., :half], t[..., half:]) * rot[None, :, None, :]
        return torch.cat([z.real, z.imag], -1)

    q, k = rope(q), rope(k)
    out = torch.zeros(B, T, H, d, dtype=x.dtype)
    for h in range(H):
        g = h // (H // Hkv)
        s = torch.einsum("btd,bsd->bts", q[:, :, h], k[:, :, g]) / math.sqrt(d)
        i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
        allowed = j <= i if window is None else (j <= i) & (i - j < window)
        s = s.masked_fill(~allowed, float("-inf"))
        out[:, :, h] = s.softmax(-1) @ v[:, :, g]
    return layer.o_proj(out.reshape(B, T, H * d))


@pytest.mark.parametrize("kw", [dict(), dict(num_kv_heads=2), dict(window_size=4), dict(num_kv_heads=1, window_size=1)])
def test_attention_matches_naive_masked_softmax_with_rope(kw):
    layer = Attention(HIDDEN, HEADS, layer_idx=0, **kw).double()
    x = torch.randn(2, 10, HIDDEN, dtype=torch.float64)
    o, _, _ = layer(x)
    assert max_err(o, _naive_attention(layer, x, kw.get("window_size"))) < 1e-10


def test_sliding_window_sees_exactly_the_last_w_tokens():
    W, T = 3, 9
    layer = Attention(HIDDEN, HEADS, window_size=W, layer_idx=0).double()
    x = torch.randn(1, T, HIDDEN, dtype=torch.float64)
    base, _, _ = layer(x)
    for s in range(T):  # perturb token s: only outputs s .. s+W-1 may change
        y = x.clone()
        y[:, s] += 1.0
        changed = (layer(y)[0] - base).abs().amax(-1)[0] > 1e-12
        assert changed.tolist() == [s <= t < s + W for t in range(T)]
    _, _, cache = layer(x, use_cache=True)
    assert cache[0]["key"].shape[2] == W - 1  # the trimmed cache


def test_mamba2_matches_transformers_mamba2mixer():
    from transformers import Mamba2Config
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer

    cfg = Mamba2Config(hidden_size=HIDDEN, num_heads=HEADS, head_dim=16, state_size=8, n_groups=2, expand=2,
                       conv_kernel=4, chunk_size=16, num_hidden_layers=1)
    ref = Mamba2Mixer(cfg, layer_idx=0).eval()
    ours = build_mixer("mamba2", HIDDEN, HEADS, head_dim=16, d_state=8, n_groups=2, expand=2)
    with torch.no_grad():
        for p in (ref.conv1d.bias, ref.dt_bias, ref.A_log, ref.D, ref.norm.weight):
            p.add_(0.1 * torch.randn_like(p))
        ours.in_proj.weight.copy_(ref.in_proj.weight)
        ours.conv1d.weight.copy_(ref.conv1d.weight)
        ours.conv_bias.copy_(ref.conv1d.bias)
        for n in ("dt_bias", "A_log", "D"):
            getattr(ours, n).copy_(getattr(ref, n))
        ours.norm_weight.copy_(ref.norm.weight)
        ours.out_proj.weight.copy_(ref.out_proj.weight)
        x = torch.randn(2, 40, HIDDEN)
        assert max_err(ours(x)[0], ref(x)) < TOL


# ------------------------------------------------------------------ the fla dispatch


def test_dispatch_picks_naive_on_cpu_and_kernels_on_cuda(monkeypatch):
    monkeypatch.delenv("SLOTMEM_FLA_BACKEND", raising=False)
    assert fla_backend("cpu") == "naive"
    assert fla_backend(torch.device("cuda", 0)) == "kernel"
    assert fla_backend("cuda", torch.bfloat16) == "kernel" and fla_backend("cuda", torch.float32) == "kernel"
    assert fla_backend("cuda", torch.float64) == "naive"  # fla's kernels take no float64
    assert fla_backend("cuda", override="naive") == "naive"
    with pytest.raises(ValueError, match="needs CUDA"):
        fla_backend("cpu", override="kernel")
    monkeypatch.setenv("SLOTMEM_FLA_BACKEND", "sometimes")
    with pytest.raises(ValueError, match="SLOTMEM_FLA_BACKEND"):
        fla_backend("cpu")
    monkeypatch.setenv("SLOTMEM_FLA_BACKEND", "naive")
    assert fla_backend("cuda") == "naive"


def test_run_fla_op_calls_the_naive_reference_on_cpu(monkeypatch):
    calls = []
    real = fb._NAIVE["simple_gla"]

    def spy(*a, **kw):
        calls.append(kw["recurrent"])
        return real(*a, **kw)

    monkeypatch.setitem(fb._NAIVE, "simple_gla", spy)
    monkeypatch.setitem(fb._KERNEL, "simple_gla", lambda *a, **kw: pytest.fail("kernel called on CPU"))
    q, k, v = torch.randn(1, 70, 2, 4), torch.randn(1, 70, 2, 4), torch.randn(1, 70, 2, 5)
    g = -torch.rand(1, 70, 2)
    o, s = run_fla_op("simple_gla", q, k, v, g, output_final_state=True)
    o2, s2 = run_fla_op("simple_gla", q, k, v, g, output_final_state=True, cu_seqlens=torch.tensor([0, 30, 70]))
    assert calls == [False, True, False]  # T=70: chunked reference; packed 30 + 40: token loop, chunked
    assert o.shape == (1, 70, 2, 5) and s.shape == (1, 2, 4, 5) and s2.shape == (2, 2, 4, 5)
    o3, s3 = run_fla_op("simple_gla", q[:, 30:], k[:, 30:], v[:, 30:], g[:, 30:], output_final_state=True)
    assert max_err(o2[:, 30:], o3) < 1e-5 and max_err(s2[1:], s3) < 1e-5


@pytest.mark.parametrize("op", fb.FLA_OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("recurrent", [True, False])
def test_kernel_adapters_bind_to_the_real_fla_kernel_signatures(monkeypatch, op, dtype, recurrent):
    """No GPU here: check that each kernel call binds to the signature of the real fla function."""
    import inspect
    import types

    called = []

    def fake_module(path):
        real = importlib.import_module(f"fla.ops.{path}")
        mod = types.SimpleNamespace()
        for fname in dir(real):
            if fname.startswith(("chunk_", "fused_recurrent_")) and inspect.isfunction(getattr(real, fname)):
                def fake(*a, _sig=inspect.signature(getattr(real, fname)), _name=fname, **kw):
                    bound = _sig.bind(*a, **kw)
                    called.append((_name, bound.arguments))
                    return bound.arguments["v"], None
                setattr(mod, fname, fake)
        return mod

    monkeypatch.setattr(fb, "_fla", fake_module)
    B, T, H, K = 1, 5, 2, 4
    q = torch.randn(B, T, H, K, dtype=dtype)
    extra = dict(gated_delta_rule=(torch.rand(B, T, H), torch.rand(B, T, H)), delta_rule=(torch.rand(B, T, H),),
                 gla=(torch.rand(B, T, H, K),), gsa=(torch.rand(B, T, H, 3), torch.rand(B, T, H, 3)),
                 simple_gla=(torch.rand(B, T, H),))[op]
    fb._KERNEL[op](q, q, q, *extra, recurrent=recurrent, scale=None, initial_state=None, output_final_state=True,
                   cu_seqlens=torch.tensor([0, T]))
    (name, args), = called
    assert name.startswith("fused_recurrent_" if recurrent else "chunk_")
    if op == "delta_rule" and not recurrent and dtype == torch.float32:
        assert name == "chunk_gated_delta_rule" and not args["g"].any()  # chunk_delta_rule refuses fp32
    assert args["output_final_state"] is True and args["cu_seqlens"] is not None


def test_run_fla_op_matches_fla_naive_directly_and_checks_arguments():
    from fla.ops.gated_delta_rule.naive import naive_recurrent_gated_delta_rule

    q, k, v = torch.randn(2, 6, 2, 4), torch.nn.functional.normalize(torch.randn(2, 6, 2, 4), dim=-1), torch.randn(2, 6, 2, 3)
    g, beta, h0 = -torch.rand(2, 6, 2), torch.rand(2, 6, 2), torch.randn(2, 2, 4, 3)
    o, s = run_fla_op("gated_delta_rule", q, k, v, g, beta, initial_state=h0, output_final_state=True)
    o_ref, s_ref = naive_recurrent_gated_delta_rule(q, k, v, beta, g, initial_state=h0, output_final_state=True)
    assert max_err(o, o_ref) == 0 and max_err(s, s_ref) == 0
    with pytest.raises(ValueError, match="op="):
        run_fla_op("retnet", q, k, v)
    with pytest.raises(ValueError, match="scale"):
        run_fla_op("gla", q, k, v, g[..., None].expand_as(q), scale=1.0)


def _gated_delta_loop64(q, k, v, g, beta, h0):
    """The gated delta rule token by token in float64: S_t = e^{g_t} S_{t-1} (I - β_t k_t k_tᵀ) + β_t k_t v_tᵀ,
    o_t = S_tᵀ q_t / √K (fla's state layout [B, H, K, V])."""
    S, out = h0.clone(), []
    for t in range(q.shape[1]):
        qt, kt, vt = q[:, t], k[:, t], v[:, t]  # [B, H, K|V]
        S = S * g[:, t, :, None, None].exp()
        pred = torch.einsum("bhk,bhkv->bhv", kt, S)
        S = S + torch.einsum("bhk,bhv->bhkv", kt, beta[:, t, :, None] * (vt - pred))
        out.append(torch.einsum("bhk,bhkv->bhv", qt, S) * q.shape[-1] ** -0.5)
    return torch.stack(out, 1), S


@pytest.mark.parametrize("T", [64, 150])  # one chunk; three chunks, the last padded
def test_chunked_gated_delta_rule_equals_the_float64_loop_forward_backward_and_chained(T):
    torch.manual_seed(0)
    B, H, K, V = 2, 2, 8, 5
    q, k = (torch.nn.functional.normalize(torch.randn(B, T, H, K, dtype=torch.float64), dim=-1) for _ in range(2))
    v, g = torch.randn(B, T, H, V, dtype=torch.float64), -0.3 * torch.rand(B, T, H, dtype=torch.float64)
    beta, h0 = torch.rand(B, T, H, dtype=torch.float64), torch.randn(B, H, K, V, dtype=torch.float64)
    inputs = [t.requires_grad_() for t in (q, k, v, g, beta, h0)]
    o, s = fb.chunk_gated_delta_rule_torch(*inputs[:5], initial_state=h0, output_final_state=True)
    o_ref, s_ref = _gated_delta_loop64(*inputs)
    assert o.dtype == torch.float64 and max_err(o, o_ref) < 1e-12 and max_err(s, s_ref) < 1e-12
    w = torch.randn_like(o)
    grads = torch.autograd.grad((o * w).sum() + s.sum(), inputs)
    grads_ref = torch.autograd.grad((o_ref * w).sum() + s_ref.sum(), inputs)
    assert max(max_err(a, b) for a, b in zip(grads, grads_ref)) < 1e-10
    cut = T // 3  # split sequence == whole
    o1, s1 = fb.chunk_gated_delta_rule_torch(*(t[:, :cut] for t in inputs[:5]), initial_state=h0, output_final_state=True)
    o2, s2 = fb.chunk_gated_delta_rule_torch(*(t[:, cut:] for t in inputs[:5]), initial_state=s1, output_final_state=True)
    assert max_err(torch.cat([o1, o2], 1), o) < 1e-12 and max_err(s2, s) < 1e-12
    # fp32 through the dispatcher (T > 8: this chunked form) against fla's own token loop
    from fla.ops.gated_delta_rule.naive import naive_recurrent_gated_delta_rule

    f32 = [t.detach().float() for t in inputs]
    o32, s32 = run_fla_op("gated_delta_rule", *f32[:5], initial_state=f32[5], output_final_state=True)
    o_fla, s_fla = naive_recurrent_gated_delta_rule(*f32[:3], f32[4], f32[3], initial_state=f32[5], output_final_state=True)
    assert max_err(o32, o_fla) < TOL and max_err(s32, s_fla) < TOL


# ------------------------------------------------------------------ arguments


@pytest.mark.parametrize("name,kw,err,match", [
    ("attention", dict(num_kv_heads=3), ValueError, "num_kv_heads"),
    ("attention", dict(window_size=0), ValueError, "window_size"),
    ("attention", dict(rope_theta=-1.0), ValueError, "rope_theta"),
    ("attention", dict(head_dim=7), ValueError, "even"),
    ("attention", dict(causal=False), TypeError, "causal"),
    ("gated_deltanet", dict(expand_v=0.3), ValueError, "expand_v"),
    ("gated_deltanet", dict(use_gate=1), ValueError, "use_gate"),
    ("gated_deltanet", dict(mode="chunk"), TypeError, "mode"),
    ("deltanet", dict(qk_norm="l1"), ValueError, "qk_norm"),
    ("deltanet", dict(conv_size=0), ValueError, "conv_size"),
    ("gla", dict(gate_logit_normalizer=float("inf")), ValueError, "gate_logit_normalizer"),
    ("gla", dict(gate_low_rank_dim=0), ValueError, "gate_low_rank_dim"),
    ("gsa", dict(num_slots=0), ValueError, "num_slots"),
    ("mamba2", dict(n_groups=3), ValueError, "n_groups"),
    ("mamba2", dict(dt_min=0.5, dt_max=0.1), ValueError, "dt_min"),
    ("mamba2", dict(state_size=16), TypeError, "state_size"),
])
def test_bad_arguments_raise_clear_errors(name, kw, err, match):
    with pytest.raises(err, match=match):
        build_mixer(name, HIDDEN, HEADS, layer_idx=0, **kw)


@pytest.mark.parametrize("name", ["attention", "gated_deltanet", "deltanet", "gla", "gsa", "mamba2"])
def test_bad_shapes_and_layouts_raise(name):
    with pytest.raises(ValueError, match="not divisible"):
        build_mixer(name, 33, 4)
    with pytest.raises(ValueError, match="layer_idx"):
        build_mixer(name, HIDDEN, HEADS, layer_idx=-1)
    layer = build_mixer(name, HIDDEN, HEADS)
    with pytest.raises(ValueError, match="hidden_states"):
        layer(torch.randn(5, HIDDEN))
    with pytest.raises(ValueError, match="attention_mask"):
        layer(torch.randn(2, 5, HIDDEN), attention_mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="layer_idx"):
        layer(torch.randn(2, 5, HIDDEN), use_cache=True)
