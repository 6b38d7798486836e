"""Token mixers behind one interface (see ``registry``): the slot memories ``LatticeAttention`` and
``TrellisAttention``, and the baselines (Transformer++ attention, Gated DeltaNet, DeltaNet, GLA,
Gated Slot Attention, Mamba2)."""
from .attention import Attention
from .fla_ops import fla_backend, run_fla_op
from .lattice import LatticeAttention
from .linear_attention import DeltaNet, GatedDeltaNet, GatedLinearAttention, GatedSlotAttention
from .mamba2 import Mamba2
from .recurrent import take_auxiliary_loss
from .registry import MIXERS, build_mixer, register_mixer
from .trellis import TrellisAttention

__all__ = ["LatticeAttention", "TrellisAttention", "Attention", "DeltaNet", "GatedDeltaNet", "GatedLinearAttention",
           "GatedSlotAttention", "Mamba2", "MIXERS", "build_mixer", "register_mixer", "fla_backend", "run_fla_op", "take_auxiliary_loss"]
