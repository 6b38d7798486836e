from .lattice import chunk_lattice, fused_recurrent_lattice, naive_lattice
from .trellis import chunk_trellis, fused_recurrent_trellis, naive_trellis
