"""``LatticeAttention``: the Lattice token mixer (``docs/lattice.md``, "Layer")."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from ..checks import check_choice, check_positive_float
from ..modules import ShortConvolution
from ..ops.driver import DEFAULT_CHUNK_SIZE
from ..ops.lattice import LatticeKnobs, chunk_lattice
from .recurrent import num_sequences
from .registry import register_mixer
from .slot_memory import (CODE_ACTIVATIONS, SlotMemoryMixer, apply_code_activation, cache_entry, gate_logits, resume_state,
                          unit_rows)


@register_mixer("lattice")
class LatticeAttention(SlotMemoryMixer):
    """Token mixer: x [B, T, hidden] -> [B, T, hidden].

    Per head: ``q, k = code_activation(ShortConv(W x)) ∈ R^m``, ``v = SiLU(ShortConv(W_v x)) ∈ R^d``,
    ``η = eta_max · sigmoid(W_η x)`` (per head or per slot), Lattice recurrence over ``m`` slots of
    dim ``d``, per-head RMSNorm, output gate ``SiLU(W_g x)``, output projection.
    State per head: ``m · d`` floats. Op knobs (objective, slot_renorm, chunk_mode, read,
    outer_grad, eps) become one ``LatticeKnobs``, checked here and passed to ``chunk_lattice``.
    """

    knobs_class = LatticeKnobs

    def __init__(self, hidden_size: int, num_heads: int, num_slots: int | None = None, head_dim: int | None = None, *,
                 conv_size: int = 4, chunk_size: int = DEFAULT_CHUNK_SIZE, learn_initial_state: bool = True,
                 norm_eps: float = 1e-5, layer_idx: int | None = None,
                 code_activation: str = "l2norm", eta_mode: str = "head", eta_max: float = 1.0, **knobs):
        super().__init__()
        self._init_slot_memory(hidden_size, num_heads, num_slots, head_dim, conv_size, chunk_size, layer_idx, knobs)
        check_positive_float("eta_max", eta_max)
        check_choice("code_activation", code_activation, CODE_ACTIVATIONS)
        check_choice("eta_mode", eta_mode, ("head", "slot"))
        self.code_act, self.eta_mode, self.eta_max = code_activation, eta_mode, float(eta_max)
        H, m, d = num_heads, self.num_slots, self.head_dim
        self.qkv_proj = nn.Linear(hidden_size, H * (2 * m + d), bias=False)
        self.conv = ShortConvolution(H * (2 * m + d), conv_size)
        self.eta_proj = nn.Linear(hidden_size, H * (m if eta_mode == "slot" else 1), bias=True)
        self.g_proj = nn.Linear(hidden_size, H * d, bias=False)
        self.o_norm = nn.RMSNorm(d, eps=norm_eps)
        self.o_proj = nn.Linear(H * d, hidden_size, bias=False)
        s0 = unit_rows(H, m, d)
        if learn_initial_state:
            self.initial_state = nn.Parameter(s0)
        else:
            self.register_buffer("initial_state", s0)

    def state_size(self, seq_len: int = 0) -> int:
        """Recurrent state floats per sequence (constant in ``seq_len``; conv cache excluded)."""
        return self.num_heads * self.num_slots * self.head_dim

    def _mix(self, x, state, cu_seqlens, use_cache):
        H, m, d = self.num_heads, self.num_slots, self.head_dim
        y, conv_state = self.conv(self.qkv_proj(x), cache=None if state is None else state["conv_state"],
                                  output_final_state=use_cache, cu_seqlens=cu_seqlens)
        q, k, v = torch.split(y, [H * m, H * m, H * d], dim=-1)
        q = apply_code_activation(rearrange(q, "b t (h m) -> b t h m", h=H), self.code_act)
        k = apply_code_activation(rearrange(k, "b t (h m) -> b t h m", h=H), self.code_act)
        v = F.silu(rearrange(v, "b t (h d) -> b t h d", h=H))
        eta = self.eta_max * torch.sigmoid(gate_logits(self.eta_proj, x))  # float32 under autocast
        eta = rearrange(eta, "b t (h m) -> b t h m", h=H) if self.eta_mode == "slot" else eta
        s0 = resume_state(state, self.initial_state.float().expand(num_sequences(x, cu_seqlens), H, m, d), use_cache)
        o, final = chunk_lattice(q, k, v, eta, initial_state=s0, output_final_state=use_cache,
                                 chunk_size=self.chunk_size, cu_seqlens=cu_seqlens, knobs=self.knobs)
        o = self.o_norm(o.to(x.dtype)) * F.silu(rearrange(self.g_proj(x), "b t (h d) -> b t h d", h=H))
        o = self.o_proj(rearrange(o, "b t h d -> b t (h d)"))
        return o, cache_entry(final, conv_state)

