"""Per-layer recurrent cache for incremental decoding: constant size, whatever the length.

The same object serves the layers (``cache[layer_idx] -> dict | None``, ``cache.update(layer_idx,
num_new_tokens, **state)``) and ``transformers``' ``GenerationMixin`` (``get_seq_length``,
``reorder_cache`` for beam search, ``is_compileable``...). It is deliberately *not* a subclass of
``transformers.Cache``: that class's ``update(key_states, value_states, layer_idx)`` contract is a
KV cache, which a recurrent state is not, and ``generate`` only needs the duck-typed surface below.

Convention for what a layer stores: a dict of tensors (or tuples/lists of tensors) whose first
dimension is the batch (one row per sequence). Beam reordering and batch selection rely on it.
"""
from __future__ import annotations

from typing import Any, Callable

import torch


class RecurrentCache:
    """Holds, per layer index, a dict of state tensors (``recurrent_state``, ``conv_state``, ...)
    and counts the tokens seen. For slot memories and recurrent baselines the memory does not grow
    with the number of decoded tokens (a softmax-attention layer may keep a growing KV cache here)."""

    is_compileable = False  # read by GenerationMixin (auto-compile, 4D-mask creation)
    is_croppable = False  # a recurrent state cannot be rolled back (no assisted / deferred-stop decoding)

    @property
    def is_linear(self) -> list[bool]:
        """Read by ``GenerationMixin`` (transformers >= 5.24): for a cache whose layers are not all
        "linear", the prefill feeds only the tokens after ``get_seq_length()``. That is what this cache
        needs (it counts the tokens its states have absorbed, and a user may pass a filled one), so every
        layer reports False."""
        return [False] * len(self.states)

    def __init__(self):
        self.states: dict[int, dict[str, Any]] = {}
        self.seen_tokens = 0

    # ------------------------------------------------------------------ layer interface
    def __getitem__(self, layer_idx: int) -> dict[str, Any] | None:
        return self.states.get(layer_idx)

    def update(self, layer_idx: int, num_new_tokens: int, **state) -> None:
        """Store a layer's new state; the lowest layer index's update advances ``seen_tokens``."""
        if layer_idx == min(self.states, default=layer_idx):
            self.seen_tokens += num_new_tokens
        self.states[layer_idx] = state

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Tokens seen so far (padding included), as ``generate`` expects."""
        return self.seen_tokens

    def __len__(self) -> int:
        return len(self.states)

    def __contains__(self, layer_idx: int) -> bool:
        return layer_idx in self.states

    # ------------------------------------------------------------------ inspection
    def tensors(self) -> list[torch.Tensor]:
        """Every tensor held, in layer order."""
        out: list[torch.Tensor] = []
        for idx in sorted(self.states):
            _collect(self.states[idx], out)
        return out

    def nbytes(self) -> int:
        """Bytes held by all cached tensors (shared storage counted once per tensor view)."""
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def layer_nbytes(self) -> dict[int, int]:
        out = {}
        for idx in sorted(self.states):
            ts: list[torch.Tensor] = []
            _collect(self.states[idx], ts)
            out[idx] = sum(t.numel() * t.element_size() for t in ts)
        return out

    @property
    def batch_size(self) -> int | None:
        ts = self.tensors()
        return ts[0].shape[0] if ts else None

    # ------------------------------------------------------------------ GenerationMixin hooks
    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Beam search: row ``i`` of every state becomes old row ``beam_idx[i]``."""
        self._map(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._map(lambda t: t[indices.to(t.device)])

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._map(lambda t: t.repeat_interleave(repeats, dim=0))

    def reset(self) -> None:
        self.states.clear()
        self.seen_tokens = 0

    def crop(self, max_length: int) -> None:
        """Recurrent states cannot be rolled back; only a no-op crop is accepted."""
        if max_length == 0 or max_length == self.seen_tokens:
            return
        raise NotImplementedError("RecurrentCache holds recurrent states, which cannot be cropped to an earlier length")

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.states = {idx: _apply(state, fn) for idx, state in self.states.items()}

    def __repr__(self) -> str:
        return f"RecurrentCache(layers={sorted(self.states)}, seen_tokens={self.seen_tokens}, nbytes={self.nbytes()})"


def _collect(obj, out: list) -> None:
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            _collect(v, out)
    elif isinstance(obj, (tuple, list)):
        for v in obj:
            _collect(v, out)


def _apply(obj, fn):
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _apply(v, fn) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(_apply(v, fn) for v in obj)
    if isinstance(obj, list):
        return [_apply(v, fn) for v in obj]
    return obj
