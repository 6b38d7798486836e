"""Per-layer recurrent cache for incremental decoding: constant size, whatever the length."""
from __future__ import annotations

from typing import Any


class RecurrentCache:
    """Holds, per layer index, a dict of state tensors (``recurrent_state``, ``conv_state``, ...)
    and counts the tokens seen. Memory does not grow with the number of decoded tokens."""

    def __init__(self):
        self.states: dict[int, dict[str, Any]] = {}
        self.seen_tokens = 0

    def __getitem__(self, layer_idx: int) -> dict[str, Any] | None:
        return self.states.get(layer_idx)

    def update(self, layer_idx: int, num_new_tokens: int, **state) -> None:
        """Store a layer's new state; the first layer's update advances ``seen_tokens``."""
        if layer_idx == min(self.states, default=layer_idx):
            self.seen_tokens += num_new_tokens
        self.states[layer_idx] = state

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def __len__(self) -> int:
        return len(self.states)
