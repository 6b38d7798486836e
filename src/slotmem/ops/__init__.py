from .lattice import chunk_lattice, recurrent_lattice, naive_lattice
from .trellis import chunk_trellis, recurrent_trellis, naive_trellis
