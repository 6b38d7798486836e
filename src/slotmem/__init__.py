"""slotmem: Lattice and Trellis, sequence models with bounded, learned slot memory.

Importing the package registers the models with transformers' ``AutoConfig`` / ``AutoModel`` /
``AutoModelForCausalLM`` (``slotmem.models``); the op, layer and data modules are imported on use.
"""
__version__ = "0.1.0"

from . import models  # noqa: E402,F401  (Auto-class registration)
