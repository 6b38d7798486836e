"""Token mixers: ``LatticeAttention`` (and ``TrellisAttention``)."""
from .lattice import LatticeAttention

__all__ = ["LatticeAttention"]
