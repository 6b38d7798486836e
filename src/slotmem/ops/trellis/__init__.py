"""Trellis op: ``naive_trellis`` (reference loop), ``chunk_trellis`` (chunk-parallel),
``recurrent_trellis`` (exact recurrence / decode). See ``docs/trellis.md``."""
from .chunk import chunk_trellis, recurrent_trellis
from .knobs import TrellisKnobs, default_state, write_grad
from .naive import naive_trellis

__all__ = ["naive_trellis", "chunk_trellis", "recurrent_trellis", "TrellisKnobs", "write_grad", "default_state"]
