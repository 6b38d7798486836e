"""``SlotMemoryMixer``: what the two slot-memory mixers (``LatticeAttention``, ``TrellisAttention``)
share and the baselines do not: the head and slot layout, the chunk size, the op's knobs (one
frozen dataclass, built and validated once at construction), the code activations, float32 gate
logits, unit-row initial memories (``unit_rows``), and the chunk-grid carry in the decode cache."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..checks import check_positive_int, resolve_heads
from ..ops.utils import ChunkCarry
from .recurrent import RecurrentMixer

CODE_ACTIVATIONS = ("identity", "silu", "softmax", "l2norm")


def apply_code_activation(x: torch.Tensor, name: str) -> torch.Tensor:
    """Activation over the last (slot / feature) axis."""
    if name == "identity":
        return x
    if name == "silu":
        return F.silu(x)
    if name == "softmax":
        return x.softmax(-1)
    return F.normalize(x, dim=-1, eps=1e-6)


def gate_logits(proj: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``proj(x)`` in (at least) float32 with autocast off: gates (forget gates, step sizes) keep their precision
    under bf16/fp16 training (in bf16 a forget gate of 0.999 rounds to 1.0, i.e. no forgetting)."""
    dtype = torch.promote_types(x.dtype, torch.float32)  # float64 stays float64
    with torch.autocast(device_type=x.device.type, enabled=False):
        bias = None if proj.bias is None else proj.bias.to(dtype)
        return F.linear(x.to(dtype), proj.weight.to(dtype), bias)


def unit_rows(H: int, m: int, d: int) -> torch.Tensor:
    """[H, m, d] random rows of unit norm, orthonormal (QR) when m <= d."""
    g = torch.randn(H, d, m)
    if m <= d:
        return torch.linalg.qr(g).Q.transpose(-1, -2).contiguous()
    return F.normalize(g.transpose(-1, -2), dim=-1).contiguous()


class SlotMemoryMixer(RecurrentMixer):
    """Base of the slot-memory mixers. ``knobs_class`` is the op's knob dataclass; a subclass calls
    ``_init_slot_memory`` first in its ``__init__`` and implements ``_mix`` (see ``RecurrentMixer``)."""

    knobs_class: ClassVar[type]

    def _init_slot_memory(self, hidden_size: int, num_heads: int, num_slots: int | None, head_dim: int | None,
                          conv_size: int, chunk_size: int, layer_idx: int | None, knobs: dict) -> None:
        """Check and store the layout shared by the slot memories (``num_slots=None``: ``head_dim``
        slots); ``knobs`` (the op's knobs, by name) become ``self.knobs``, an instance of
        ``knobs_class`` that validates them."""
        self.head_dim = resolve_heads(hidden_size, num_heads, head_dim)
        num_slots = self.head_dim if num_slots is None else num_slots
        for name, value in (("num_slots", num_slots), ("conv_size", conv_size), ("chunk_size", chunk_size)):
            check_positive_int(name, value)
        unknown = sorted(set(knobs) - {f.name for f in dataclasses.fields(self.knobs_class)})
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown argument(s): {unknown}")
        self.knobs = self.knobs_class(**knobs)
        self.hidden_size, self.num_heads, self.num_slots = hidden_size, num_heads, num_slots
        self.chunk_size, self.layer_idx = chunk_size, layer_idx


def resume_state(state: dict | None, fresh, use_cache: bool):
    """The op's ``initial_state`` for a chunked slot memory: ``fresh`` (the layer's S_0) at the start,
    as a ``ChunkCarry`` when the result will be cached, so that decoding continues the chunk grid of
    the prefill and reproduces the chunk-parallel forward exactly; the cached carry afterwards."""
    if state is not None:
        return ChunkCarry(state["recurrent_state"], state["anchor_state"], state["chunk_offset"])
    return ChunkCarry.start(fresh) if use_cache else fresh


def cache_entry(final, conv_state) -> dict:
    """What a chunked slot memory stores per layer: batch-first tensors only (beam search reorders them)."""
    if not isinstance(final, ChunkCarry):
        return {}
    return dict(recurrent_state=final.state, anchor_state=final.anchor, chunk_offset=final.offset, conv_state=conv_state)
