"""Token mixers behind one interface (see ``registry``): ``LatticeAttention`` and friends."""
from .lattice import LatticeAttention
from .registry import MIXERS, build_mixer, register_mixer

__all__ = ["LatticeAttention", "MIXERS", "build_mixer", "register_mixer"]
