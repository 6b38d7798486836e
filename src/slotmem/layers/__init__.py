"""Token mixers behind one interface (see ``registry``): ``LatticeAttention``, ``TrellisAttention``."""
from .lattice import LatticeAttention
from .attention import Attention
from .linear_attention import DeltaNet, GatedDeltaNet, GatedLinearAttention, GatedSlotAttention
from .mamba2 import Mamba2
from .fla_ops import fla_backend, run_fla_op
from .registry import MIXERS, build_mixer, register_mixer
from .trellis import TrellisAttention

__all__ = ["LatticeAttention", "TrellisAttention", "MIXERS", "build_mixer", "register_mixer"]
__all__ += ["Attention", "DeltaNet", "GatedDeltaNet", "GatedLinearAttention", "GatedSlotAttention", "Mamba2",
            "fla_backend", "run_fla_op"]
