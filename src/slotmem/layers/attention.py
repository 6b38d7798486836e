"""Transformer++ attention (Llama style: RoPE, causal softmax attention, optional GQA / sliding window).

Hand-written on purpose: ``transformers``' ``LlamaAttention`` needs its model's config, rotary
module and ``Cache`` classes around it, while the mixers here share one interface and one
``RecurrentCache``. The attention itself is ``torch.nn.functional.scaled_dot_product_attention``
(flash / memory-efficient kernels on GPU for the unmasked causal case).

Masks and positions:

* ``attention_mask`` ``[B, T]`` or ``[B, T_past + T]`` (1 = token, 0 = pad; its last ``T`` columns
  describe the new tokens). Rotary positions count only real tokens (``cumsum(mask) − 1`` plus the
  real tokens already cached), so a left-padded row gets the positions of its unpadded run; padded
  keys are masked out and padded query rows output zeros.
* ``cu_seqlens`` (packed ``[1, N_tokens, hidden]``): the packed sequences are laid out as a
  left-padded batch of ``N`` rows, run, and packed back; a cache then holds one row per sequence.
* ``window_size = W``: each token attends to itself and the ``W − 1`` previous real tokens. The
  cache is TRIMMED to the last ``W − 1`` entries, so decode memory is bounded; this is exact for
  left padding (every row's real tokens contiguous at the right), the Hugging Face convention.

Cache entry (``RecurrentCache[layer_idx]``): ``key``/``value`` ``[B, H_kv, L, d]`` (RoPE applied),
``pos`` ``[B, L]`` (positions), ``valid`` ``[B, L]`` (bool), ``seen`` ``[B]`` (real tokens so far).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from ..checks import check_bool, check_layer_idx, check_positive_float, check_positive_int, resolve_heads
from ..modules import RecurrentCache
from ..ops.utils import check_cu_seqlens
from .registry import register_mixer


@register_mixer("attention")
class Attention(nn.Module):
    """Causal multi-head softmax attention with RoPE: x [B, T, hidden] -> [B, T, hidden].

    ``num_kv_heads`` (divides ``num_heads``) gives grouped-query attention; ``window_size`` (None =
    full) a sliding window. Decode state: ``2 · H_kv · d`` floats per cached token (K and V).
    """

    def __init__(self, hidden_size: int, num_heads: int, head_dim: int | None = None, *,
                 num_kv_heads: int | None = None, window_size: int | None = None, rope_theta: float = 10000.0,
                 qkv_bias: bool = False, layer_idx: int | None = None):
        super().__init__()
        self.head_dim = resolve_heads(hidden_size, num_heads, head_dim)
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        self.num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        check_positive_int("num_kv_heads", self.num_kv_heads)
        if num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={num_heads} must be divisible by num_kv_heads={self.num_kv_heads}")
        if window_size is not None:
            check_positive_int("window_size", window_size)
        check_positive_float("rope_theta", rope_theta)
        check_bool("qkv_bias", qkv_bias)
        check_layer_idx(layer_idx)
        self.hidden_size, self.num_heads, self.layer_idx = hidden_size, num_heads, layer_idx
        self.window_size, self.rope_theta = window_size, float(rope_theta)
        H, Hkv, d = num_heads, self.num_kv_heads, self.head_dim
        self.q_proj = nn.Linear(hidden_size, H * d, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden_size, Hkv * d, bias=qkv_bias)
        self.v_proj = nn.Linear(hidden_size, Hkv * d, bias=qkv_bias)
        self.o_proj = nn.Linear(H * d, hidden_size, bias=False)

    def state_size(self, seq_len: int = 0) -> int:
        """KV-cache floats per sequence after ``seq_len`` tokens: ``2 · H_kv · d · L`` with
        ``L = seq_len`` (full) or ``min(seq_len, window_size − 1)`` (sliding window, trimmed cache)."""
        if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 0:
            raise ValueError(f"seq_len must be a non-negative int, got {seq_len!r}")
        n = seq_len if self.window_size is None else min(seq_len, self.window_size - 1)
        return 2 * self.num_kv_heads * self.head_dim * n

    def forward(self, hidden_states, attention_mask=None, past_key_values=None, use_cache=False, cu_seqlens=None, **kwargs):
        """Returns ``(o [B, T, hidden], None, past_key_values)``; see the module docstring."""
        if hidden_states.dim() != 3:
            raise ValueError(f"hidden_states must be [B, T, hidden], got {tuple(hidden_states.shape)}")
        B, T, _ = hidden_states.shape
        if cu_seqlens is not None:
            if attention_mask is not None:
                raise ValueError("pass either attention_mask or cu_seqlens, not both")
            check_cu_seqlens(cu_seqlens, B, T)
            x, mask, index = _packed_to_left_padded(hidden_states, cu_seqlens)
            o, _, past_key_values = self.forward(x, mask, past_key_values, use_cache)
            return o.flatten(0, 1)[index][None], None, past_key_values
        if attention_mask is not None:
            if attention_mask.dim() != 2 or attention_mask.shape[0] != B or attention_mask.shape[1] < T:
                raise ValueError(f"attention_mask must be [B, >=T] for hidden_states {tuple(hidden_states.shape)}, got {tuple(attention_mask.shape)}")
            valid = attention_mask[:, -T:].bool()
        else:
            valid = torch.ones(B, T, dtype=torch.bool, device=hidden_states.device)
        if use_cache and past_key_values is None:
            past_key_values = RecurrentCache()
        if use_cache and self.layer_idx is None:
            raise ValueError("Attention needs a layer_idx to use a cache")
        state = past_key_values[self.layer_idx] if past_key_values is not None else None
        if state is not None and state["key"].shape[0] != B:
            raise ValueError(f"the cache holds {state['key'].shape[0]} sequences, the input {B}")

        H, Hkv, d = self.num_heads, self.num_kv_heads, self.head_dim
        seen = state["seen"] if state is not None else torch.zeros(B, dtype=torch.long, device=valid.device)
        pos = (seen[:, None] + valid.long().cumsum(1) - 1).clamp(min=0)  # real-token positions
        q = rotary(rearrange(self.q_proj(hidden_states), "b t (h d) -> b t h d", d=d), pos, self.rope_theta)
        k = rotary(rearrange(self.k_proj(hidden_states), "b t (h d) -> b t h d", d=d), pos, self.rope_theta)
        v = rearrange(self.v_proj(hidden_states), "b t (h d) -> b t h d", d=d)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, heads, T, d]
        key_pos, key_valid = pos, valid
        if state is not None:
            k = torch.cat([state["key"].to(k.dtype), k], dim=2)
            v = torch.cat([state["value"].to(v.dtype), v], dim=2)
            key_pos, key_valid = torch.cat([state["pos"], pos], 1), torch.cat([state["valid"], valid], 1)

        mask, causal = None, False
        if state is None and bool(valid.all()) and self.window_size is None:
            causal = T > 1  # the plain causal case: SDPA's fused kernels
        else:
            rows = slice(None)
            if bool(key_valid.all()) and bool((seen == seen[0]).all()):
                rows = slice(0, 1)  # identical positions in every row: one [T, L] mask
            qp, kp = pos[rows, :, None], key_pos[rows, None, :]
            mask = key_valid[rows, None, :] & (kp <= qp)
            if self.window_size is not None:
                mask = mask & (qp - kp < self.window_size)
            mask = (mask | ~valid[rows, :, None])[:, None]  # padded query rows: anything (zeroed below)
        kk, vv = k, v
        if Hkv != H:
            kk, vv = k.repeat_interleave(H // Hkv, dim=1), v.repeat_interleave(H // Hkv, dim=1)
        o = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask, is_causal=causal)
        o = self.o_proj(rearrange(o, "b h t d -> b t (h d)")) * valid[..., None].to(hidden_states.dtype)

        if use_cache:
            L = k.shape[2]
            keep = L if self.window_size is None else min(L, self.window_size - 1)
            past_key_values.update(self.layer_idx, T, key=k[:, :, L - keep:], value=v[:, :, L - keep:],
                                   pos=key_pos[:, L - keep:], valid=key_valid[:, L - keep:],
                                   seen=seen + valid.long().sum(1))
        return o, None, past_key_values


def rotary(x: torch.Tensor, pos: torch.Tensor, theta: float) -> torch.Tensor:
    """Llama RoPE (rotate-half pairing ``(i, i + d/2)``): x [B, T, H, d], pos [B, T] -> [B, T, H, d]."""
    half = x.shape[-1] // 2
    dt = torch.float64 if x.dtype == torch.float64 else torch.float32
    inv_freq = theta ** (-torch.arange(half, device=x.device, dtype=dt) * 2 / x.shape[-1])
    ang = pos.to(dt)[..., None] * inv_freq  # [B, T, half]
    cos, sin = ang.cos()[:, :, None].to(x.dtype), ang.sin()[:, :, None].to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def _packed_to_left_padded(x: torch.Tensor, cu_seqlens: torch.Tensor):
    """[1, N_tok, D] packed -> ([N, T_max, D] left-padded, mask [N, T_max], index [N_tok] into the flat rows)."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    N, Tm = lengths.numel(), int(lengths.max()) if lengths.numel() else 0
    seq = torch.repeat_interleave(torch.arange(N, device=x.device), lengths)
    offset = torch.arange(x.shape[1], device=x.device) - cu_seqlens[:-1].long()[seq]
    index = seq * Tm + (Tm - lengths[seq]) + offset
    out = x.new_zeros(N * Tm, x.shape[-1])
    out[index] = x[0]
    mask = torch.zeros(N * Tm, dtype=torch.long, device=x.device)
    mask[index] = 1
    return out.view(N, Tm, -1), mask.view(N, Tm), index


__all__ = ["Attention", "rotary"]
