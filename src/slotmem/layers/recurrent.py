"""``RecurrentMixer``: the plumbing every recurrent token mixer shares (the slot memories and the
recurrent baselines): padding masks (unpad, never zero), packed sequences and the per-layer
entry of the recurrent-state cache."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..modules import RecurrentCache, pad, unpad


class RecurrentMixer(nn.Module):
    """Subclasses implement ``_mix(x, state, cu_seqlens, use_cache) -> (o, new_state)`` on packed or
    batched inputs ``x [B', T', hidden]``, where ``state`` is the cached dict or None."""

    layer_idx: int | None
    #: a training regulariser (a weighted scalar) the last forward computed, or None; the objectives and the
    #: causal-LM loss add it to the loss and clear it (``take_auxiliary_loss``)
    aux_loss: torch.Tensor | None = None

    def forward(self, hidden_states, attention_mask=None, past_key_values=None, use_cache=False, cu_seqlens=None, **kwargs):
        """hidden_states [B, T, hidden]; attention_mask [B, T] or [B, T_past + T] (1 = token, 0 = pad).

        Returns ``(o [B, T, hidden], None, past_key_values)``; with ``use_cache`` the layer's state
        (recurrent + conv) is written to ``past_key_values`` (a ``RecurrentCache``; created if None).
        """
        if hidden_states.dim() != 3:
            raise ValueError(f"hidden_states must be [B, T, hidden], got {tuple(hidden_states.shape)}")
        B, T, _ = hidden_states.shape
        if use_cache and past_key_values is None:
            past_key_values = RecurrentCache()
        if use_cache and self.layer_idx is None:
            raise ValueError(f"{type(self).__name__} needs a layer_idx to use a cache")
        state = past_key_values[self.layer_idx] if past_key_values is not None else None
        x, indices = hidden_states, None
        if attention_mask is not None:
            if attention_mask.dim() != 2 or attention_mask.shape[0] != B or attention_mask.shape[1] < T:
                raise ValueError(f"attention_mask must be [B, >=T] for hidden_states {tuple(hidden_states.shape)}, got {tuple(attention_mask.shape)}")
            if cu_seqlens is not None:
                raise ValueError("pass either attention_mask or cu_seqlens, not both")
            attention_mask = attention_mask[:, -T:]
            if not bool(attention_mask.bool().all()):
                x, indices, cu_seqlens = unpad(hidden_states, attention_mask)
        o, new_state = self._mix(x, state, cu_seqlens, use_cache)
        if indices is not None:
            o = pad(o, indices, B, T)
        if use_cache:
            past_key_values.update(self.layer_idx, T, **new_state)
        return o, None, past_key_values

    def _mix(self, x, state, cu_seqlens, use_cache):
        raise NotImplementedError


def take_auxiliary_loss(net: nn.Module) -> torch.Tensor | None:
    """The sum of the ``aux_loss`` the token mixers of ``net`` set in their last forward (None if none did);
    each is cleared, so a later forward that sets none adds nothing and no graph is kept alive."""
    total = None
    for mod in net.modules():
        if isinstance(mod, RecurrentMixer) and mod.aux_loss is not None:
            total = mod.aux_loss if total is None else total + mod.aux_loss
            mod.aux_loss = None
    return total


def num_sequences(x: torch.Tensor, cu_seqlens) -> int:
    """Sequences in ``x``: its batch size, or the packed sequences of ``cu_seqlens``."""
    return x.shape[0] if cu_seqlens is None else cu_seqlens.numel() - 1
