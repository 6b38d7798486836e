"""Configurations of the slot-memory language models.

One configuration, ``SlotMemConfig``, describes every model in this package: a stack of
pre-norm blocks whose token mixer is any name in the mixer registry (``slotmem.layers.MIXERS``),
optionally with some layers switched to softmax attention (hybrids). ``LatticeConfig`` and
``TrellisConfig`` are the same configuration with the mixer fixed, registered under their own
``model_type`` so that a saved checkpoint says what it is.

Configs are ``transformers`` v5 dataclass configs: fields are keyword arguments, derived
defaults and validation run in ``__post_init__``; every invalid value raises ``ValueError``
(``TypeError`` for wrong types) with the offending field in the message. The ``model:`` section of a
training config is this schema (``config_fields``): same keys, same defaults.
"""
import dataclasses
import json
import math
from pathlib import Path
from typing import Any, ClassVar

from transformers import PreTrainedConfig

# Keys the model passes to every mixer itself; they cannot appear in mixer_kwargs / attn_kwargs.
_RESERVED_MIXER_KEYS = ("hidden_size", "num_heads", "layer_idx")
ATTENTION_MIXER = "attention"


def default_intermediate_size(hidden_size: int, multiple_of: int = 64) -> int:
    """SwiGLU width with the parameter count of a 4x GELU MLP: 8/3 * hidden, rounded up to ``multiple_of``."""
    return multiple_of * math.ceil(8 * hidden_size / 3 / multiple_of)


def _registered_mixers() -> dict:
    from ..layers import MIXERS  # importing the package registers every mixer it ships

    return MIXERS


class SlotMemConfig(PreTrainedConfig):
    r"""Configuration of a slot-memory (or baseline) causal language model.

    Args:
        vocab_size: tokens in the vocabulary (259 = the byte tokenizer's).
        hidden_size: model width.
        num_hidden_layers: number of blocks.
        num_heads: heads of every token mixer (attention layers included).
        mixer: registry name of the token mixer (``"lattice"``, ``"trellis"``, ``"attention"``,
            ``"gated_deltanet"``...; see ``slotmem.layers.MIXERS``).
        mixer_kwargs: extra keyword arguments for the mixer (e.g. ``{"num_slots": 64, "chunk_size": 64}``);
            the mixer validates them (unknown keys are errors) when the model is built.
        attn_layers: indices of the layers that use softmax attention (``"attention"`` mixer) instead
            of ``mixer`` -- a hybrid. Empty: none.
        attn_window: sliding-window size of the softmax-attention layers (``attn_layers``, or every
            layer when ``mixer="attention"``); ``None``: full causal attention.
        attn_kwargs: extra keyword arguments for the attention layers of a hybrid.
        layer_kwargs: per-layer overrides of ``mixer_kwargs``, ``{layer index: {key: value}}`` (e.g.
            ``{"0": {"forget_gate": False}}``: layer 0 alone without Trellis's forget gate); merged over
            ``mixer_kwargs`` for that layer. Keys are stored as strings (JSON's form); not for ``attn_layers``.
        intermediate_size: SwiGLU width; default ``8/3 * hidden_size`` rounded up to 64.
        use_mlp: whether blocks have the SwiGLU MLP (MQAR models often drop it).
        norm_eps: epsilon of the RMSNorms.
        tie_word_embeddings: share the input embedding and the LM head.
        initializer_range: std of the normal init of embeddings and linear weights.
        bos_token_id, eos_token_id, pad_token_id: special ids (``None`` or within the vocabulary; the
            byte tokenizer's are 256, 257, 258).
        use_cache: default for ``forward(use_cache=...)`` in generation.
    """

    model_type = "slotmem"
    keys_to_ignore_at_inference = ["past_key_values"]
    attribute_map: ClassVar[dict[str, str]] = {"num_attention_heads": "num_heads"}  # the HF-standard name
    fixed_mixer: ClassVar[str | None] = None  # set by the family configs (Lattice, Trellis)

    vocab_size: int = 259
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_heads: int = 1
    mixer: str = "lattice"
    mixer_kwargs: dict | None = None
    attn_layers: list | None = None
    attn_window: int | None = None
    attn_kwargs: dict | None = None
    layer_kwargs: dict | None = None
    intermediate_size: int | None = None
    use_mlp: bool = True
    norm_eps: float = 1e-5
    tie_word_embeddings: bool = True
    initializer_range: float = 0.02
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    use_cache: bool = True

    def __post_init__(self, **kwargs):
        if "num_attention_heads" in kwargs:  # alias, resolved before validation
            self.num_heads = kwargs.pop("num_attention_heads")
        if self.fixed_mixer is not None and self.mixer != self.fixed_mixer:
            raise ValueError(f"{type(self).__name__} always uses mixer={self.fixed_mixer!r}, got mixer={self.mixer!r}; "
                             "use SlotMemConfig for other mixers")
        self.mixer_kwargs = dict(self.mixer_kwargs or {})
        self.attn_kwargs = dict(self.attn_kwargs or {})
        self.attn_layers = sorted(self.attn_layers or [])
        self.layer_kwargs = _layer_keys(self.layer_kwargs)
        if self.intermediate_size is None and isinstance(self.hidden_size, int):
            self.intermediate_size = default_intermediate_size(self.hidden_size)
        self._check()
        super().__post_init__(**kwargs)

    # ------------------------------------------------------------------ validation
    def _check(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_heads", "intermediate_size"):
            _positive_int(name, getattr(self, name))
        for name in ("use_mlp", "tie_word_embeddings", "use_cache"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        for name in ("norm_eps", "initializer_range"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 < v < float("inf")):
                raise ValueError(f"{name} must be a finite positive number, got {v!r}")
        if not isinstance(self.mixer, str) or not self.mixer:
            raise TypeError(f"mixer must be a mixer name (str), got {self.mixer!r}")
        layer_kw = {f"layer_kwargs[{i}]": kw for i, kw in self.layer_kwargs.items()}
        for name, kw in (("mixer_kwargs", self.mixer_kwargs), ("attn_kwargs", self.attn_kwargs), *layer_kw.items()):
            if not isinstance(kw, dict):
                raise TypeError(f"{name} must be a mapping, got {kw!r}")
            if any(not isinstance(k, str) for k in kw):
                raise TypeError(f"{name} keys must be str, got {sorted(map(repr, kw))}")
            reserved = sorted(set(kw) & set(_RESERVED_MIXER_KEYS))
            if reserved:
                raise ValueError(f"{name} must not set {reserved}: the model passes them (use the top-level fields)")
        bad = sorted(int(i) for i in self.layer_kwargs if not 0 <= int(i) < self.num_hidden_layers)
        if bad:
            raise ValueError(f"layer_kwargs names layers {bad}, out of range for num_hidden_layers={self.num_hidden_layers}")
        bad = sorted(int(i) for i in self.layer_kwargs if int(i) in self.attn_layers)
        if bad:
            raise ValueError(f"layer_kwargs names layers {bad}, which are attention layers (attn_layers; use attn_kwargs)")
        if any(isinstance(i, bool) or not isinstance(i, int) for i in self.attn_layers):
            raise TypeError(f"attn_layers must be a list of layer indices (int), got {self.attn_layers!r}")
        bad = [i for i in self.attn_layers if not 0 <= i < self.num_hidden_layers]
        if bad:
            raise ValueError(f"attn_layers {bad} out of range for num_hidden_layers={self.num_hidden_layers} "
                             f"(valid: 0..{self.num_hidden_layers - 1})")
        if len(set(self.attn_layers)) != len(self.attn_layers):
            raise ValueError(f"attn_layers has duplicates: {self.attn_layers}")
        if self.attn_window is not None:
            _positive_int("attn_window", self.attn_window)
            if not self.attn_layers and self.mixer != ATTENTION_MIXER:
                raise ValueError("attn_window is set but no layer uses softmax attention "
                                 "(attn_layers is empty and mixer is not 'attention')")
            if self.mixer == ATTENTION_MIXER and "window_size" in self.mixer_kwargs:
                raise ValueError("set the attention window once: attn_window or mixer_kwargs['window_size'], not both")
        if self.attn_kwargs and not self.attn_layers:
            raise ValueError("attn_kwargs is set but attn_layers is empty")
        if self.attn_layers and self.mixer == ATTENTION_MIXER:
            raise ValueError("attn_layers makes a hybrid, but mixer is already 'attention' everywhere")
        # Head layout: a mixer takes head_dim = hidden_size // num_heads unless told otherwise.
        if self.hidden_size % self.num_heads and "head_dim" not in self.mixer_kwargs:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}; "
                             "change them or set mixer_kwargs['head_dim']")
        if self.attn_layers and self.hidden_size % self.num_heads and "head_dim" not in self.attn_kwargs:
            raise ValueError(f"the attention layers need hidden_size={self.hidden_size} divisible by "
                             f"num_heads={self.num_heads}, or attn_kwargs['head_dim']")
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < self.vocab_size):
                raise ValueError(f"{name}={v!r} must be None or an id in [0, vocab_size={self.vocab_size})")
        check_mixers_registered(self)

    # ------------------------------------------------------------------ layout
    def layer_mixer(self, layer_idx: int) -> tuple[str, dict[str, Any]]:
        """``(registry name, kwargs)`` of layer ``layer_idx``'s token mixer."""
        if not 0 <= layer_idx < self.num_hidden_layers:
            raise IndexError(f"layer {layer_idx} out of range for num_hidden_layers={self.num_hidden_layers}")
        if layer_idx in self.attn_layers:
            kw = dict(self.attn_kwargs)
            if self.attn_window is not None:
                kw["window_size"] = self.attn_window
            return ATTENTION_MIXER, kw
        kw = {**self.mixer_kwargs, **self.layer_kwargs.get(str(layer_idx), {})}
        if self.mixer == ATTENTION_MIXER and self.attn_window is not None:
            kw["window_size"] = self.attn_window
        return self.mixer, kw

    @property
    def mixer_types(self) -> list[str]:
        """Registry name of every layer's mixer, in order."""
        return [self.layer_mixer(i)[0] for i in range(self.num_hidden_layers)]


def _layer_keys(layer_kwargs) -> dict:
    """``layer_kwargs`` with its layer indices as strings (JSON's form: a saved config reloads equal);
    an index may be given as an int or a string of digits."""
    if layer_kwargs is None:
        return {}
    if not isinstance(layer_kwargs, dict):
        raise TypeError(f"layer_kwargs must be a mapping {{layer index: {{key: value}}}}, got {layer_kwargs!r}")
    out = {}
    for i, kw in layer_kwargs.items():
        if isinstance(i, bool) or not (isinstance(i, int) or (isinstance(i, str) and i.isdigit())):
            raise TypeError(f"layer_kwargs keys must be layer indices (int or digits), got {i!r}")
        if str(int(i)) in out:
            raise ValueError(f"layer_kwargs names layer {int(i)} twice")
        out[str(int(i))] = kw
    return out


def check_mixers_registered(config: SlotMemConfig) -> None:
    """Raise ``ValueError`` naming the available mixers if ``config`` uses an unregistered one."""
    mixers = _registered_mixers()
    needed = {config.mixer} | ({ATTENTION_MIXER} if config.attn_layers else set())
    missing = sorted(needed - set(mixers))
    if missing:
        raise ValueError(f"unknown mixer(s) {missing}; registered: {sorted(mixers)}. A mixer registered by a module "
                         "outside slotmem.layers must be imported before the config is built")


def _positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


class LatticeConfig(SlotMemConfig):
    """``SlotMemConfig`` with ``mixer="lattice"`` (``docs/lattice.md``)."""

    model_type = "slotmem_lattice"
    fixed_mixer: ClassVar[str | None] = "lattice"
    mixer: str = "lattice"


class TrellisConfig(SlotMemConfig):
    """``SlotMemConfig`` with ``mixer="trellis"`` (``docs/trellis.md``)."""

    model_type = "slotmem_trellis"
    fixed_mixer: ClassVar[str | None] = "trellis"
    mixer: str = "trellis"


def config_fields() -> list[dataclasses.Field]:
    """The fields a user sets (``SlotMemConfig``'s own, not those ``PreTrainedConfig`` adds), in order,
    with their types and defaults; the training config's ``model:`` section is built from them."""
    return [f for f in dataclasses.fields(SlotMemConfig) if f.name in SlotMemConfig.__annotations__]


CONFIG_CLASSES: dict[str, type[SlotMemConfig]] = {c.model_type: c for c in (SlotMemConfig, LatticeConfig, TrellisConfig)}


def config_from_dict(d: dict[str, Any]) -> SlotMemConfig:
    """Build the config class named by ``d["model_type"]`` (default: ``"slotmem"``, or the family
    of ``d["mixer"]`` when it is lattice/trellis). Unknown keys are errors (typos in a config file
    would otherwise be silently ignored)."""
    if not isinstance(d, dict):
        raise TypeError(f"a model config must be a mapping, got {type(d).__name__}")
    d = dict(d)
    model_type = d.pop("model_type", None)
    if model_type is None:
        model_type = {"lattice": "slotmem_lattice", "trellis": "slotmem_trellis"}.get(d.get("mixer"), "slotmem")
    if model_type not in CONFIG_CLASSES:
        raise ValueError(f"unknown model_type {model_type!r}; expected one of {sorted(CONFIG_CLASSES)}")
    cls = CONFIG_CLASSES[model_type]
    fields = {f.name for f in dataclasses.fields(cls)}  # instance fields only (not ClassVars like attribute_map)
    allowed = fields | {"transformers_version", "architectures", "dtype", "torch_dtype"}
    unknown = sorted(set(d) - allowed)
    if unknown:
        ours = sorted(f.name for f in config_fields())
        raise ValueError(f"unknown config key(s) {unknown}; valid keys: {ours}")
    return cls(**d)


def load_config_file(path) -> SlotMemConfig:
    """Read a ``.yaml``/``.yml``/``.json`` model config file (or a checkpoint directory's config.json)."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    if not p.is_file():
        raise FileNotFoundError(f"no config file at {p}")
    suffix = p.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise ValueError(f"{p}: config files must be .yaml, .yml or .json")
    import yaml

    try:
        text = p.read_text(encoding="utf-8")
        d = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        kind = "JSON" if suffix == ".json" else "YAML"
        raise ValueError(f"{p}: not valid {kind} ({' '.join(str(e).split())})") from None
    try:
        return config_from_dict(d)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{p}: {e}") from None
