"""Training: the config schema, the runner (``slotmem train``), checkpoints, DDP/FSDP.

    from slotmem.train import load_config, train
    results = train(load_config(builtin_path("mqar_lattice"), ["train.steps=200"])  # slotmem.configs.builtin_path)
"""
from .config import Config, load_config
from .errors import CheckpointError, ConfigError, NonFiniteError, SlotmemTrainError
from .trainer import Trainer, train

__all__ = ["Config", "load_config", "Trainer", "train", "CheckpointError", "ConfigError", "NonFiniteError",
           "SlotmemTrainError"]
