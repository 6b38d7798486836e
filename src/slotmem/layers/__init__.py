"""Token mixers behind one interface (see ``registry``): ``LatticeAttention``, ``TrellisAttention``."""
from .lattice import LatticeAttention
from .registry import MIXERS, build_mixer, register_mixer
from .trellis import TrellisAttention

__all__ = ["LatticeAttention", "TrellisAttention", "MIXERS", "build_mixer", "register_mixer"]
