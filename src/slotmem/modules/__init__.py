"""Building blocks shared by the layers: short convolution, SwiGLU, unpadding, decode cache."""
from .cache import RecurrentCache
from .conv import ShortConvolution
from .mlp import SwiGLU
from .unpad import pad, unpad

__all__ = ["RecurrentCache", "ShortConvolution", "SwiGLU", "pad", "unpad"]
