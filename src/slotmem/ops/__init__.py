"""The Lattice and Trellis ops on ``[B, T, H, D]`` tensors: ``naive_*`` (the reference loop),
``chunk_*`` (the chunk-parallel form on the shared driver, ``ops/driver.py``) and ``recurrent_*``
(the exact recurrence: the chunked form with ``chunk_size=1``)."""
from .lattice import chunk_lattice, naive_lattice, recurrent_lattice
from .trellis import chunk_trellis, naive_trellis, recurrent_trellis

__all__ = ["chunk_lattice", "naive_lattice", "recurrent_lattice", "chunk_trellis", "naive_trellis", "recurrent_trellis"]
