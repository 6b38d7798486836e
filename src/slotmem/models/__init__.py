"""Hugging Face-native language models: ``SlotMem*`` (any registered mixer), ``Lattice*``, ``Trellis*``.

Importing this package (``import slotmem`` does) registers the configs and models with
``AutoConfig`` / ``AutoModel`` / ``AutoModelForCausalLM``, so a checkpoint written by
``save_pretrained`` reloads with ``AutoModelForCausalLM.from_pretrained(directory)``.
"""
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from ..modules import RecurrentCache
from .configuration_slotmem import (
    CONFIG_CLASSES,
    LatticeConfig,
    SlotMemConfig,
    TrellisConfig,
    config_from_dict,
    default_intermediate_size,
    load_config_file,
)
from .modeling_slotmem import (
    CACHE_NAME,
    MODEL_CLASSES,
    LatticeForCausalLM,
    LatticeModel,
    SlotMemBlock,
    SlotMemForCausalLM,
    SlotMemModel,
    SlotMemPreTrainedModel,
    TrellisForCausalLM,
    TrellisModel,
    causal_lm_loss,
    model_for_causal_lm,
)

for _model_type, (_base, _lm) in MODEL_CLASSES.items():
    AutoConfig.register(_model_type, CONFIG_CLASSES[_model_type], exist_ok=True)
    AutoModel.register(CONFIG_CLASSES[_model_type], _base, exist_ok=True)
    AutoModelForCausalLM.register(CONFIG_CLASSES[_model_type], _lm, exist_ok=True)

__all__ = [
    "SlotMemConfig", "LatticeConfig", "TrellisConfig",
    "SlotMemPreTrainedModel", "SlotMemModel", "SlotMemForCausalLM", "SlotMemBlock",
    "LatticeModel", "LatticeForCausalLM", "TrellisModel", "TrellisForCausalLM",
    "RecurrentCache", "config_from_dict", "load_config_file", "model_for_causal_lm",
    "default_intermediate_size", "causal_lm_loss", "CACHE_NAME",
]
