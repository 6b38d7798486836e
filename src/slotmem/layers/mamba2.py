"""Mamba2 (Dao & Gu 2024, arXiv:2405.21060) as a token mixer, its SSD scan on fla's ``simple_gla`` op.

Why not wrap ``transformers``' ``Mamba2Mixer``: its forward needs a transformers ``Cache`` object
(conv/recurrent state accessors tied to a ``Mamba2Config``), handles padding by zeroing hidden
states, has no packed-sequence (``cu_seqlens``) path on CPU, and its torch SSD helper is internal
API that older ``transformers`` releases do not have. So the layer is written here, with
``Mamba2Mixer``'s parameter layout and initialisation (``in_proj``, depthwise ``conv1d`` with bias,
``dt_bias``, ``A_log``, ``D``, grouped gated RMSNorm ``norm``, ``out_proj``) — the tests copy the
weights of a ``transformers`` ``Mamba2Mixer`` into it and check both give the same output.

The SSD recurrence itself is not re-implemented: with ``Δ_t = softplus(W_Δ x + dt_bias)`` and
``A = −exp(A_log)`` per head, Mamba2's ``h_t = exp(Δ_t A) h_{t−1} + Δ_t B_t x_tᵀ``,
``y_t = h_tᵀ C_t + D x_t`` is scalar-gated linear attention (the SSD duality) with
``q = C, k = B, v = Δ·x, log-gate g = Δ·A, scale 1`` — fla's ``simple_gla`` op (Triton chunk
kernel on CUDA, fla's naive chunk/recurrent references on CPU), run by ``fla_ops.run_fla_op``.
State per sequence: ``H · d_state · head_dim`` floats (fla layout ``[N, H, d_state, head_dim]``).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange, repeat

from ..checks import check_bool, check_layer_idx, check_positive_float, check_positive_int
from ..modules import ShortConvolution
from .fla_ops import run_fla_op
from .recurrent import RecurrentMixer
from .registry import register_mixer


@register_mixer("mamba2")
class Mamba2(RecurrentMixer):
    """Mamba2 mixer: x [B, T, hidden] -> [B, T, hidden].

    ``in_proj`` gives ``z`` (gate, ``I = num_heads · head_dim`` channels), ``xBC`` (``I + 2·G·N``)
    and ``Δ`` (one per head); ``xBC = SiLU(conv(xBC) + b)``; SSD over heads with ``B, C`` shared by
    the ``G = n_groups`` head groups; ``y + D x``; ``RMSNorm_G(y ⊙ SiLU(z))`` (per group of
    ``I / G`` channels, gate before norm as in ``transformers``); ``out_proj``.

    ``head_dim`` defaults to ``expand · hidden_size / num_heads``; ``d_state`` is Mamba's ``N``.
    """

    def __init__(self, hidden_size: int, num_heads: int, head_dim: int | None = None, *, d_state: int = 64,
                 expand: int = 2, n_groups: int = 1, conv_size: int = 4, use_conv_bias: bool = True,
                 use_bias: bool = False, norm_eps: float = 1e-5, dt_min: float = 1e-3, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, layer_idx: int | None = None):
        super().__init__()
        check_positive_int("hidden_size", hidden_size)
        check_positive_int("num_heads", num_heads)
        check_positive_int("expand", expand)
        if head_dim is None:
            if (expand * hidden_size) % num_heads:
                raise ValueError(f"expand*hidden_size={expand * hidden_size} is not divisible by num_heads={num_heads}; pass head_dim")
            head_dim = expand * hidden_size // num_heads
        check_positive_int("head_dim", head_dim)
        check_positive_int("d_state", d_state)
        check_positive_int("n_groups", n_groups)
        if num_heads % n_groups:
            raise ValueError(f"num_heads={num_heads} must be divisible by n_groups={n_groups}")
        check_positive_int("conv_size", conv_size)
        check_bool("use_conv_bias", use_conv_bias)
        check_bool("use_bias", use_bias)
        for name, val in (("norm_eps", norm_eps), ("dt_min", dt_min), ("dt_max", dt_max), ("dt_init_floor", dt_init_floor)):
            check_positive_float(name, val)
        if dt_min > dt_max:
            raise ValueError(f"dt_min={dt_min} must be <= dt_max={dt_max}")
        check_layer_idx(layer_idx)
        self.hidden_size, self.num_heads, self.head_dim, self.layer_idx = hidden_size, num_heads, head_dim, layer_idx
        self.d_state, self.n_groups, self.conv_size = d_state, n_groups, conv_size
        self.intermediate_size = I = num_heads * head_dim
        self.conv_dim = I + 2 * n_groups * d_state
        self.in_proj = nn.Linear(hidden_size, I + self.conv_dim + num_heads, bias=use_bias)
        self.conv1d = ShortConvolution(self.conv_dim, conv_size)
        self.conv_bias = nn.Parameter(torch.zeros(self.conv_dim)) if use_conv_bias else None
        self.A_log = nn.Parameter(torch.log(torch.arange(1, num_heads + 1, dtype=torch.float32)))
        self.D = nn.Parameter(torch.ones(num_heads))
        dt = torch.exp(torch.rand(num_heads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.A_log._no_weight_decay = self.D._no_weight_decay = self.dt_bias._no_weight_decay = True
        self.norm_weight = nn.Parameter(torch.ones(I))
        self.norm_eps = norm_eps
        self.out_proj = nn.Linear(I, hidden_size, bias=use_bias)

    def state_size(self, seq_len: int = 0) -> int:
        """Recurrent (SSM) state floats per sequence: ``H · d_state · head_dim`` (constant in ``seq_len``)."""
        return self.num_heads * self.d_state * self.head_dim

    def _mix(self, x, state, cu_seqlens, use_cache):
        H, P, G, N, I = self.num_heads, self.head_dim, self.n_groups, self.d_state, self.intermediate_size
        z, xBC, dt = torch.split(self.in_proj(x), [I, self.conv_dim, H], dim=-1)
        xBC, conv_state = self.conv1d(xBC, cache=None if state is None else state["conv_state"],
                                      output_final_state=use_cache, cu_seqlens=cu_seqlens)
        if self.conv_bias is not None:
            xBC = xBC + self.conv_bias.to(xBC.dtype)
        xs, Bm, Cm = torch.split(F.silu(xBC), [I, G * N, G * N], dim=-1)
        xs = rearrange(xs, "b t (h p) -> b t h p", p=P)
        Bm = repeat(Bm, "b t (g n) -> b t (g r) n", g=G, r=H // G)
        Cm = repeat(Cm, "b t (g n) -> b t (g r) n", g=G, r=H // G)
        dt = F.softplus(dt.float() + self.dt_bias.float())  # [b, t, H]
        g = dt * -self.A_log.float().exp()
        y, new_state = run_fla_op("simple_gla", Cm, Bm, xs * dt[..., None].to(xs.dtype), g, scale=1.0,
                                  initial_state=None if state is None else state["recurrent_state"],
                                  output_final_state=use_cache, cu_seqlens=cu_seqlens)
        y = y + xs * self.D.to(xs.dtype)[:, None]
        y = rearrange(y, "b t h p -> b t (h p)") * F.silu(z)
        yg = rearrange(y, "b t (g c) -> b t g c", g=G)
        yg = yg * torch.rsqrt(yg.float().pow(2).mean(-1, keepdim=True) + self.norm_eps).to(yg.dtype)
        y = rearrange(yg, "b t g c -> b t (g c)") * self.norm_weight.to(yg.dtype)
        return self.out_proj(y), dict(recurrent_state=new_state, conv_state=conv_state)


__all__ = ["Mamba2"]
