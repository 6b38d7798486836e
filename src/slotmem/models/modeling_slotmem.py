"""Hugging Face-native slot-memory language models, one implementation for every mixer.

``SlotMemModel``: token embedding -> ``num_hidden_layers`` pre-norm blocks
(``x + mixer(RMSNorm(x))``, then ``x + SwiGLU(RMSNorm(x))``) -> final RMSNorm.
``SlotMemForCausalLM`` adds the LM head (tied to the embedding by default), the loss and
``generate()`` with a constant-size ``RecurrentCache``. ``Lattice*`` and ``Trellis*`` are the
same classes bound to their configs (and ``model_type``) so the Auto classes can find them.

Generation (transformers 5.x ``GenerationMixin``):

* The cache travels under the name the installed transformers uses (``CACHE_NAME``: ``cache`` from
  transformers 5.2x on, which deprecates ``past_key_values`` / ``cache_params`` for removal in 6.0;
  ``past_key_values`` before). ``forward`` accepts any of the three names (one at a time) and returns
  the cache in the output field of that name.
* ``_prepare_cache_for_generation`` puts a fresh ``RecurrentCache`` in the model kwargs (never a
  ``DynamicCache``); a cache passed by the user must be a ``RecurrentCache``.
* ``prepare_inputs_for_generation`` feeds only the tokens the cache has not seen (the last one
  after the prefill) and the full 2D ``attention_mask``; the mixers take its last ``T`` columns,
  so a left-padded prompt is unpadded inside each mixer rather than zero-filled.
* ``_is_stateful = True``: assisted decoding (which must roll the state back) is refused.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as _init  # init functions that skip already-loaded tensors
from transformers.modeling_layers import GradientCheckpointingLayer as _BlockBase
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from ..layers import build_mixer, take_auxiliary_loss
from ..modules import RecurrentCache, SwiGLU
from .manifest import verify_manifest
from .configuration_slotmem import LatticeConfig, SlotMemConfig, TrellisConfig

# The generation cache's name in model inputs and outputs: ``cache`` in transformers >= 5.2x
# (``past_key_values`` / ``cache_params`` deprecated there), ``past_key_values`` before.
CACHE_NAME = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
_CACHE_ALIASES = ("cache", "past_key_values", "cache_params")
# Keyword arguments the HF stack may send to forward() and that these models do not need.
_IGNORED_FORWARD_KWARGS = frozenset({"position_ids", "cache_position", "token_type_ids", "num_items_in_batch", "output_attentions"})


class SlotMemBlock(_BlockBase):
    """``x + mixer(RMSNorm(x))`` then, with ``use_mlp``, ``x + SwiGLU(RMSNorm(x))``."""

    def __init__(self, config: SlotMemConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.mixer_name, self.mixer_kwargs = config.layer_mixer(layer_idx)
        self.mixer_norm = nn.RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.mixer = build_layer_mixer(config, layer_idx)
        for m in self.mixer.modules():  # the mixer keeps its own initialisation (see _init_weights)
            m._slotmem_mixer_owned = True
        if config.use_mlp:
            self.mlp_norm = nn.RMSNorm(config.hidden_size, eps=config.norm_eps)
            self.mlp = SwiGLU(config.hidden_size, config.intermediate_size)
        else:
            self.mlp_norm = self.mlp = None

    def forward(self, hidden_states, attention_mask=None, past_key_values=None, use_cache=False, cu_seqlens=None):
        extra = {} if cu_seqlens is None else {"cu_seqlens": cu_seqlens}
        o, _, past_key_values = self.mixer(self.mixer_norm(hidden_states), attention_mask=attention_mask,
                                           past_key_values=past_key_values, use_cache=use_cache, **extra)
        hidden_states = hidden_states + o
        if self.mlp is not None:
            hidden_states = hidden_states + self.mlp(self.mlp_norm(hidden_states))
        return hidden_states, past_key_values


def build_layer_mixer(config: SlotMemConfig, layer_idx: int) -> nn.Module:
    """The token mixer of layer ``layer_idx``, with the layer named in any construction error."""
    name, kwargs = config.layer_mixer(layer_idx)
    try:
        return build_mixer(name, config.hidden_size, config.num_heads, layer_idx=layer_idx, **kwargs)
    except (TypeError, ValueError) as e:
        cls = ValueError if isinstance(e, ValueError) else TypeError
        raise cls(f"layer {layer_idx}: cannot build mixer {name!r} (hidden_size={config.hidden_size}, "
                  f"num_heads={config.num_heads}, kwargs={kwargs}): {e}") from e


class SlotMemPreTrainedModel(PreTrainedModel):
    config_class = SlotMemConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["SlotMemBlock"]
    _is_stateful = True  # recurrent state: no assisted decoding / rollback

    def _init_weights(self, module):
        """Embedding, MLP and LM head weights: N(0, initializer_range); RMSNorm weights: 1.

        Token mixers keep their own constructor initialisation (they are marked at construction
        and skipped here): it encodes mixer-specific numerics, e.g. Trellis' gate biases and
        projection scales -- re-drawing Trellis' projections from N(0, 0.02) made its float32
        forward deviate ~50% from float64 in a tiny model, against ~0.4% with its own init."""
        if getattr(module, "_slotmem_mixer_owned", False):
            return
        std = self.config.initializer_range
        if isinstance(module, nn.Embedding):
            _init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.Linear):
            _init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.RMSNorm) and module.weight is not None:
            _init.ones_(module.weight)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """``PreTrainedModel.from_pretrained`` (a local directory with ``slotmem_manifest.json`` is first
        checked against it: a damaged file raises ``CorruptModelError``), then restore what a checkpoint cannot hold: mixer
        tensors that are not in the state dict (non-persistent buffers such as RoPE frequencies,
        and any missing key inside a mixer) are recomputed by building that layer's mixer afresh."""
        want_info = kwargs.pop("output_loading_info", False)
        source = args[0] if args else kwargs.get("pretrained_model_name_or_path")
        if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
            verify_manifest(source)  # a saved model with a manifest is checked before loading
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        model._restore_mixer_tensors(set(info.get("missing_keys", ())))
        return (model, info) if want_info else model

    @torch.no_grad()
    def _restore_mixer_tensors(self, missing_keys: set[str]) -> None:
        base = getattr(self, self.base_model_prefix, self)
        prefix = f"{self.base_model_prefix}." if base is not self else ""
        for i, block in enumerate(base.layers):
            mixer, path = block.mixer, f"{prefix}layers.{i}.mixer."
            targets = {}
            for mod_name, mod in mixer.named_modules():
                for buf_name in getattr(mod, "_non_persistent_buffers_set", ()):
                    full = f"{mod_name}.{buf_name}" if mod_name else buf_name
                    targets[full] = mixer.get_buffer(full)
            for key in missing_keys:
                if key.startswith(path):
                    rel = key[len(path):]
                    targets[rel] = _get_tensor(mixer, rel)
            targets = {k: v for k, v in targets.items() if v is not None}
            if not targets:
                continue
            with torch.random.fork_rng(devices=[]), torch.device("cpu"):
                fresh = build_layer_mixer(self.config, i)
            for name, t in targets.items():
                t.copy_(_get_tensor(fresh, name).to(device=t.device, dtype=t.dtype))

    def state_size(self, seq_len: int = 0) -> int:
        """Floats of decode state per sequence after ``seq_len`` tokens, summed over layers."""
        return sum(self.layer_state_sizes(seq_len))

    def layer_state_sizes(self, seq_len: int = 0) -> list[int]:
        """Per-layer ``mixer.state_size(seq_len)`` (floats per sequence)."""
        base = getattr(self, self.base_model_prefix, self)
        return [int(block.mixer.state_size(seq_len)) for block in base.layers]


def _get_tensor(module: nn.Module, name: str):
    try:
        return module.get_parameter(name)
    except AttributeError:
        try:
            return module.get_buffer(name)
        except AttributeError:
            return None


def take_cache(kwargs: dict, **named):
    """The generation cache, popped from ``kwargs`` or taken from ``named`` (a forward's own parameters)
    under any of its names (``cache``, ``past_key_values``, ``cache_params``; at most one may be set),
    checked to be a ``RecurrentCache``."""
    given = {name: kwargs.pop(name) for name in _CACHE_ALIASES if name in kwargs}
    given.update(named)
    given = {name: value for name, value in given.items() if value is not None}
    if len(given) > 1:
        raise ValueError(f"the cache was passed under several names {sorted(given)}; pass it once, as {CACHE_NAME!r}")
    cache = next(iter(given.values()), None)
    if cache is not None and not isinstance(cache, RecurrentCache):
        raise TypeError(f"the cache must be a slotmem RecurrentCache, got {type(cache).__name__} "
                        "(these models keep per-layer recurrent state, not a key/value cache)")
    return cache


def _check_forward_kwargs(kwargs: dict) -> None:
    unknown = sorted(set(kwargs) - _IGNORED_FORWARD_KWARGS)
    if unknown:
        raise TypeError(f"forward() got unexpected keyword argument(s) {unknown}")
    if kwargs.get("output_attentions"):
        raise ValueError("output_attentions is not supported: slot-memory mixers have no attention matrix")


class SlotMemModel(SlotMemPreTrainedModel):
    """Embedding + blocks + final norm; returns ``BaseModelOutputWithPast``."""

    def __init__(self, config: SlotMemConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(SlotMemBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm = nn.RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, cache=None, past_key_values=None,
                use_cache=None, output_hidden_states=None, return_dict=None, cu_seqlens=None, **kwargs):
        """input_ids [B, T] (or inputs_embeds [B, T, hidden]); attention_mask [B, T_past + T] (1 = token,
        0 = padding, any side) or ``cu_seqlens`` [N + 1] for packed sequences (B = 1); ``cache`` (or
        ``past_key_values`` / ``cache_params``): a ``RecurrentCache`` (created when ``use_cache`` and None).
        The output carries it in the field ``CACHE_NAME``."""
        past_key_values = take_cache(kwargs, cache=cache, past_key_values=past_key_values)
        _check_forward_kwargs(kwargs)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if input_ids is not None and input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [B, T], got shape {tuple(input_ids.shape)}")
        if inputs_embeds is not None and (inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.hidden_size):
            raise ValueError(f"inputs_embeds must be [B, T, {self.config.hidden_size}], got {tuple(inputs_embeds.shape)}")
        hidden_states = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        B, T = hidden_states.shape[:2]
        if T == 0 and (past_key_values is None or past_key_values.get_seq_length() == 0):
            raise ValueError("the input has no tokens and there is no cached state to continue from (an empty "
                             "prompt?): pass at least one token, e.g. the BOS id")
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        return_dict = self.config.return_dict if return_dict is None else return_dict
        output_hidden_states = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        if use_cache and past_key_values is None:
            past_key_values = RecurrentCache()
        if attention_mask is not None:
            if attention_mask.dim() != 2 or attention_mask.shape[0] != B or attention_mask.shape[1] < T:
                raise ValueError(f"attention_mask must be 2D [B, T_past + T] (B={B}, T={T}), got {tuple(attention_mask.shape)}")
            if cu_seqlens is not None:
                raise ValueError("pass either attention_mask or cu_seqlens, not both")
            if bool(attention_mask.bool().all()):
                attention_mask = None  # no padding: skip the unpad path
        if cu_seqlens is not None and B != 1:
            raise ValueError(f"cu_seqlens needs packed inputs with batch size 1, got B={B}")
        all_hidden = () if output_hidden_states else None
        for block in self.layers:
            if output_hidden_states:
                all_hidden += (hidden_states,)
            hidden_states, past_key_values = block(hidden_states, attention_mask=attention_mask,
                                                   past_key_values=past_key_values, use_cache=use_cache,
                                                   cu_seqlens=cu_seqlens)
        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden += (hidden_states,)
        cache = past_key_values if use_cache else None
        if not return_dict:
            return tuple(v for v in (hidden_states, cache, all_hidden) if v is not None)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, hidden_states=all_hidden, **{CACHE_NAME: cache})


class SlotMemForCausalLM(SlotMemPreTrainedModel, GenerationMixin):
    """``SlotMemModel`` + LM head; ``labels`` follow the HF convention (shifted inside, -100 ignored)."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    base_model_class = SlotMemModel

    def __init__(self, config: SlotMemConfig):
        super().__init__(config)
        self.model = self.base_model_class(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, cache=None, past_key_values=None,
                labels=None, use_cache=None, output_hidden_states=None, return_dict=None, logits_to_keep=0, cu_seqlens=None, **kwargs):
        """Returns ``CausalLMOutputWithPast``; ``logits_to_keep=k > 0`` computes only the last ``k`` positions'
        logits (generation uses 1). With ``cu_seqlens``, labels are not shifted across sequence boundaries."""
        num_items = kwargs.get("num_items_in_batch")
        return_dict = self.config.return_dict if return_dict is None else return_dict
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                         cache=cache, past_key_values=past_key_values, use_cache=use_cache,
                         output_hidden_states=output_hidden_states, return_dict=True, cu_seqlens=cu_seqlens, **kwargs)
        hidden_states, cache = out.last_hidden_state, getattr(out, CACHE_NAME)
        if isinstance(logits_to_keep, int):
            if logits_to_keep < 0:
                raise ValueError(f"logits_to_keep must be >= 0, got {logits_to_keep}")
            keep = slice(-logits_to_keep, None) if logits_to_keep else slice(None)
        else:
            keep = logits_to_keep
        logits = self.lm_head(hidden_states[:, keep])
        loss = None
        if labels is not None:
            if logits.shape[1] != hidden_states.shape[1]:
                raise ValueError("labels need the logits of every position: leave logits_to_keep=0")
            loss = causal_lm_loss(logits, labels, cu_seqlens=cu_seqlens, num_items_in_batch=num_items)
            aux = take_auxiliary_loss(self.model)  # mixers' training regularisers (none in eval mode)
            if aux is not None:  # a per-target mean; under num_items_in_batch, weighted by this batch's share
                share = 1.0 if num_items is None else (shifted_labels(labels, cu_seqlens) != -100).sum() / num_items
                loss = loss + aux * share
        if not return_dict:
            rest = tuple(v for v in (cache, out.hidden_states) if v is not None)
            return ((loss,) if loss is not None else ()) + (logits,) + rest
        return CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=out.hidden_states, **{CACHE_NAME: cache})

    # ------------------------------------------------------------------ generation
    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # a DynamicCache (key/value lists) cannot hold recurrent state

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, *args, **kwargs):
        """Put a fresh ``RecurrentCache`` in ``model_kwargs`` (unless the caller passed one or
        ``use_cache=False``); transformers' key/value cache implementations are refused."""
        cache = take_cache(model_kwargs)
        if cache is not None:
            cache._is_user_defined = True
            model_kwargs[CACHE_NAME] = cache
            return
        if generation_config.use_cache is False:
            return
        if getattr(generation_config, "cache_implementation", None) is not None:
            raise ValueError(f"cache_implementation={generation_config.cache_implementation!r} is not supported: "
                             "these models decode with a constant-size RecurrentCache")
        model_kwargs[CACHE_NAME] = RecurrentCache()

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, inputs_embeds=None,
                                      next_sequence_length=None, is_first_iteration=False, use_cache=True, **kwargs):
        """Feed only the tokens the cache has not seen: the last ``next_sequence_length`` tokens as
        transformers 5 computes them (the prompt at the prefill, 1 token after it; None = all, e.g.
        one chunk of a chunked prefill). The cache comes under any of its names and goes to ``forward``
        as ``CACHE_NAME``."""
        past_key_values = take_cache(kwargs)
        seen = past_key_values.get_seq_length() if past_key_values is not None else 0
        n = next_sequence_length
        if inputs_embeds is not None and (is_first_iteration or seen == 0):
            model_inputs = {"inputs_embeds": inputs_embeds if n is None else inputs_embeds[:, inputs_embeds.shape[1] - n:]}
        else:
            model_inputs = {"input_ids": input_ids if n is None else input_ids[:, input_ids.shape[1] - n:]}
        if past_key_values is not None:
            model_inputs[CACHE_NAME] = past_key_values
        if attention_mask is not None:
            model_inputs["attention_mask"] = attention_mask
        model_inputs["use_cache"] = use_cache
        for key, value in kwargs.items():
            if key not in ("labels", "position_ids", "cache_position", "token_type_ids") and key not in model_inputs:
                model_inputs[key] = value
        device = self.device
        if device.type != "meta":
            model_inputs = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in model_inputs.items()}
        return model_inputs


def shifted_labels(labels, cu_seqlens=None, ignore_index: int = -100):
    """``labels[:, 1:]`` [B, T - 1], the target of every position that predicts one: with ``cu_seqlens``,
    ``ignore_index`` where a packed sequence's last token would predict the next sequence's first."""
    shift = labels[:, 1:].clone()
    if cu_seqlens is not None:
        ends = cu_seqlens[1:-1].to(labels.device) - 1
        shift[0, ends[(ends >= 0) & (ends < shift.shape[1])]] = ignore_index
    return shift


def causal_lm_loss(logits, labels, *, cu_seqlens=None, num_items_in_batch=None, ignore_index: int = -100):
    """Next-token cross-entropy in float32: position ``t`` predicts ``labels[:, t + 1]``."""
    if labels.shape != logits.shape[:2]:
        raise ValueError(f"labels must be [B, T]={tuple(logits.shape[:2])}, got {tuple(labels.shape)}")
    shift_labels = shifted_labels(labels, cu_seqlens, ignore_index)
    shift_logits = logits[:, :-1].float()
    reduction = "sum" if num_items_in_batch is not None else "mean"
    loss = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1).to(logits.device),
                           ignore_index=ignore_index, reduction=reduction)
    if num_items_in_batch is not None:
        loss = loss / num_items_in_batch
    return loss


# ---------------------------------------------------------------------- the registered families
class LatticeModel(SlotMemModel):
    config_class = LatticeConfig


class LatticeForCausalLM(SlotMemForCausalLM):
    config_class = LatticeConfig
    base_model_class = LatticeModel


class TrellisModel(SlotMemModel):
    config_class = TrellisConfig


class TrellisForCausalLM(SlotMemForCausalLM):
    config_class = TrellisConfig
    base_model_class = TrellisModel


MODEL_CLASSES = {
    SlotMemConfig.model_type: (SlotMemModel, SlotMemForCausalLM),
    LatticeConfig.model_type: (LatticeModel, LatticeForCausalLM),
    TrellisConfig.model_type: (TrellisModel, TrellisForCausalLM),
}


def model_for_causal_lm(config: SlotMemConfig) -> SlotMemForCausalLM:
    """Build the causal LM class that matches ``config``'s ``model_type``."""
    if not isinstance(config, SlotMemConfig):
        raise TypeError(f"expected a SlotMemConfig (or LatticeConfig / TrellisConfig), got {type(config).__name__}")
    return MODEL_CLASSES[config.model_type][1](config)
