"""Lattice op: ``naive_lattice`` (reference loop), ``chunk_lattice`` (chunk-parallel),
``recurrent_lattice`` (exact recurrence / decode). See ``docs/lattice.md``."""
from .chunk import chunk_lattice, recurrent_lattice
from .knobs import LatticeKnobs, default_state
from .naive import naive_lattice

__all__ = ["naive_lattice", "chunk_lattice", "recurrent_lattice", "LatticeKnobs", "default_state"]
