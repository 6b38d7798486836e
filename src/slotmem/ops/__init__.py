from .lattice import chunk_lattice, fused_recurrent_lattice, naive_lattice
