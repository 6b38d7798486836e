"""slotmem: Lattice and Trellis, sequence models with bounded, learned slot memory."""
__version__ = "0.1.0"
