"""The run configuration: a dataclass schema loaded from YAML, strictly.

A config file is a YAML mapping whose keys are the fields of ``Config`` below (nested
sections are nested mappings). Unknown keys are errors naming the key (with its dotted
path), values are type-checked, and ``key=value`` overrides use dotted paths with YAML
values::

    slotmem train mqar_lattice optim.lr=3e-3 train.steps=500 \
        model.mixer_kwargs.num_slots=32 "mqar.test=[{seq_len: 64, num_kv_pairs: 4, num_examples: 100}]"

Batch semantics: ``train.batch_size`` is the GLOBAL number of sequences per optimizer
step, whatever the number of processes; each process runs ``grad_accum`` micro-batches of
``batch_size / (world_size * grad_accum)`` sequences. The same config therefore trains
the same model on 1 process or on N (up to floating-point summation order).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from ..models.configuration_slotmem import SlotMemConfig, config_fields, config_from_dict as model_config_from_dict
from .errors import ConfigError

TASKS = ("mqar", "lm", "timeseries", "niah")
PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULES = ("cosine", "linear", "constant")
DEVICES = ("auto", "cpu", "cuda")
STRATEGIES = ("ddp", "fsdp")
BACKENDS = ("auto", "gloo", "nccl")


# --------------------------------------------------------------------------- schema


_EMPTY = {"mixer_kwargs": dict, "attn_layers": list, "attn_kwargs": dict, "layer_kwargs": dict}  # SlotMemConfig reads None as these


def _model_section_fields() -> list:
    """``SlotMemConfig``'s fields with their types and defaults (an empty mapping or list where it reads
    None as one), except that ``vocab_size`` defaults to None (the task's vocabulary), plus ``pretrained``."""
    out = []
    for f in config_fields():
        if f.name == "vocab_size":
            out.append((f.name, Optional[int], field(default=None)))
        elif f.name in _EMPTY:
            out.append((f.name, f.type, field(default_factory=_EMPTY[f.name])))
        else:
            out.append((f.name, f.type, field(default=f.default)))
    return out + [("pretrained", Optional[str], field(default=None))]


ModelConfig = dataclasses.make_dataclass("ModelConfig", _model_section_fields())
ModelConfig.__module__ = __name__
ModelConfig.__doc__ = """The backbone: the fields of ``SlotMemConfig`` (``slotmem.models``), same names and
    defaults; ``mixer`` is a registry name (``lattice``, ``trellis``, ``attention``, ``gated_deltanet``,
    ``deltanet``, ``gla``, ``gsa``, ``mamba2``). Two keys are the trainer's own: ``vocab_size`` (None: the
    task's vocabulary, the MQAR vocabulary or the tokenizer's size) and ``pretrained`` (a directory saved
    with ``save_pretrained`` to start from instead; LM task). ``model_config`` turns it into the model's config."""


# The model section's keys before it became SlotMemConfig's fields (it also had `extra`, now gone).
_V1_MODEL_KEYS = ("mixer", "hidden_size", "num_hidden_layers", "num_heads", "use_mlp", "mixer_kwargs", "attn_layers",
                  "attn_window", "vocab_size", "pretrained")


def model_identity(model: dict) -> dict:
    """A ``model:`` section (as a dict) in the form it had before it became ``SlotMemConfig``'s fields:
    the keys added then are left out while they hold their defaults, and the old ``extra: {}`` is put
    back. Resuming a checkpoint and ``slotmem compare``'s run identities compare this form, so that runs
    recorded before the change are found again and the same model always compares equal."""
    defaults = to_dict(ModelConfig())
    out = {k: v for k, v in model.items() if k in _V1_MODEL_KEYS or k not in defaults or v != defaults[k]}
    out.setdefault("extra", {})
    return out


def model_config(m, vocab_size: int, special_ids: dict | None = None) -> SlotMemConfig:
    """THE place a ``model:`` section becomes a model config: ``SlotMemConfig`` (``LatticeConfig`` /
    ``TrellisConfig`` by mixer) of the section's fields, ``vocab_size`` None -> ``vocab_size``, unset special
    ids -> ``special_ids`` (the tokenizer's ``bos/eos/pad_token_id``). Raises ``ConfigError``."""
    d = {f.name: getattr(m, f.name) for f in config_fields()}
    if d["vocab_size"] is None:
        d["vocab_size"] = vocab_size
    for k, v in (special_ids or {}).items():
        if d[k] is None:
            d[k] = v
    try:
        return model_config_from_dict(d)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config section 'model': {e}") from None


@dataclass
class MQARSlice:
    """One (T, kv) setting with its number of examples."""

    seq_len: int
    num_kv_pairs: int
    num_examples: int


def _default_mqar_train() -> list:
    return [MQARSlice(64, 4, 20000), MQARSlice(128, 8, 5000)]


def _default_mqar_test() -> list:
    return [MQARSlice(64, 4, 500), MQARSlice(64, 8, 500), MQARSlice(128, 8, 500), MQARSlice(128, 16, 500)]


@dataclass
class MQARTaskConfig:
    """MQAR (``slotmem.data.mqar``): the train mixture and the held-out test slices.
    Train and test draw from independent random streams of the same ``seed``. Train
    batches never mix sequence lengths: each batch comes from one slice (slices are
    sampled in proportion to their sizes)."""

    vocab_size: int = 8192
    power_a: float = 0.01
    seed: int = 0
    train: list = field(default_factory=_default_mqar_train)
    test: list = field(default_factory=_default_mqar_test)

    def slice_config(self, s: MQARSlice, num_examples: int | None = None):
        """The ``MQARConfig`` (``slotmem.data``) of slice ``s`` (with ``num_examples`` instead of its own)."""
        from ..data import MQARConfig

        n = s.num_examples if num_examples is None else num_examples
        return MQARConfig(s.seq_len, s.num_kv_pairs, n, self.vocab_size, self.power_a, self.seed)


@dataclass
class LMTaskConfig:
    """Language modelling (``slotmem.data.text``): a .txt / .jsonl file or directory, a saved
    ``datasets`` directory, a .parquet/.csv/.arrow file, or a hub name (``format: hf``).
    ``eval_lengths``: context lengths for the final perplexity-vs-length evaluation
    (may exceed ``seq_len``); ``max_eval_tokens`` evaluates only the first that many
    validation tokens (0 = all), the same text at every length."""

    source: Union[str, list, None] = None
    format: str = "auto"
    text_field: str = "text"
    hf_split: str = "train"
    hf_config: Optional[str] = None
    tokenizer: str = "byte"
    seq_len: int = 256
    val_fraction: float = 0.1
    eval_lengths: list = field(default_factory=list)
    max_eval_tokens: int = 0


@dataclass
class TimeSeriesTaskConfig:
    """Forecasting (``slotmem.data.timeseries``): an ETT-layout CSV. The model is
    ``slotmem.models.forecasting.ForecastModel``: one token per time step (a linear embedding
    of its channels), the backbone, and a head on the last hidden state (``head: last``)
    or on all of them flattened (``head: flatten``); ``head: dlinear`` is the DLinear linear
    baseline instead (no backbone; the model section is unused); ``revin`` normalises each input window
    per channel and undoes it on the forecast. ``max_eval_windows`` caps windows per split
    evaluation (0 = all)."""

    path: Optional[str] = None
    lookback: int = 96
    horizon: int = 96
    features: str = "M"
    target: str = "OT"
    protocol: str = "auto"
    ratios: list = field(default_factory=lambda: [0.7, 0.1, 0.2])
    date_col: str = "date"
    head: str = "last"
    revin: bool = True
    max_eval_windows: int = 0


@dataclass
class NIAHTaskConfig:
    """S-NIAH trained from scratch (``slotmem.data.niah``, RULER's single needle): ``num_train`` prompts
    per training length with the needle at a uniform random depth, the loss on the answer's tokens
    only; scored on a held-out grid of ``test_lengths`` x ``test_depths`` with ``num_test`` samples per
    cell (a sample is right when greedy decoding reproduces the 7-digit value). Lengths are in tokens
    of ``tokenizer``; lengths beyond the training ones test extrapolation. Train, validation and test
    draw from separate sample streams of ``seed``."""

    tokenizer: str = "byte"
    haystack: str = "noise"
    seed: int = 0
    train_lengths: list = field(default_factory=lambda: [512])
    num_train: int = 4096
    test_lengths: list = field(default_factory=lambda: [512, 1024, 2048])
    test_depths: list = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    num_test: int = 16


@dataclass
class OptimConfig:
    """AdamW with linear warmup then cosine (or linear / constant) decay to
    ``min_lr_ratio * lr``; gradient clipping by global norm (``grad_clip <= 0`` disables).
    ``decay_1d_params: false`` exempts biases, norm weights and other 1-D parameters
    from weight decay."""

    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: list = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    warmup_steps: int = 0
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    decay_1d_params: bool = False


@dataclass
class RunConfig:
    """The loop. ``steps`` optimizer steps of ``batch_size`` sequences (global) in
    ``grad_accum`` micro-batches per process. ``eval_every`` / ``save_every`` = 0: only at
    the end. ``resume``: ``auto`` (continue from ``out_dir``'s last checkpoint if there is
    one), ``never`` (start over; refuses a non-empty checkpoint folder), or a checkpoint
    path. ``stop_at_step``: leave after saving a checkpoint at that step (a planned
    interruption; a later run resumes). ``precision`` bf16/fp16 and ``compile`` act on CUDA
    only; on CPU they are ignored with a warning. ``num_threads``: torch intra-op CPU threads
    per process (0 = torch's default). Small models on a shared CPU run far steadier with 1:
    with 2 threads on 2 busy cores each step waits on the slower thread (measured 10-100x
    slow-downs here); torchrun sets OMP_NUM_THREADS=1 itself."""

    steps: int = 1000
    batch_size: int = 32
    grad_accum: int = 1
    eval_every: int = 0
    eval_batch_size: int = 0
    log_every: int = 10
    save_every: int = 0
    keep_checkpoints: int = 2
    precision: str = "fp32"
    compile: bool = False
    device: str = "auto"
    resume: str = "auto"
    stop_at_step: Optional[int] = None
    progress: bool = True
    tensorboard: bool = True
    save_model: bool = True
    num_threads: int = 0


@dataclass
class DistributedConfig:
    """Used when launched by ``torchrun`` (``WORLD_SIZE > 1``). ``strategy``: ``ddp``
    (replicated parameters) or ``fsdp`` (sharded, for large models; ``fully_shard`` per
    layer). ``backend``: ``auto`` = nccl on CUDA, gloo on CPU."""

    strategy: str = "ddp"
    backend: str = "auto"
    timeout_s: int = 600
    find_unused_parameters: bool = False


@dataclass
class Config:
    """A training run. ``out_dir`` defaults to ``outputs/<name>``."""

    task: str = "mqar"
    name: str = "run"
    out_dir: Optional[str] = None
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: RunConfig = field(default_factory=RunConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    mqar: MQARTaskConfig = field(default_factory=MQARTaskConfig)
    lm: LMTaskConfig = field(default_factory=LMTaskConfig)
    timeseries: TimeSeriesTaskConfig = field(default_factory=TimeSeriesTaskConfig)
    niah: NIAHTaskConfig = field(default_factory=NIAHTaskConfig)

    @property
    def output_dir(self) -> Path:
        return Path(self.out_dir) if self.out_dir else Path("outputs") / self.name

    def to_dict(self) -> dict:
        return to_dict(self)


# list fields whose items are dataclasses
_LIST_ITEM_TYPES = {(MQARTaskConfig, "train"): MQARSlice, (MQARTaskConfig, "test"): MQARSlice}


# --------------------------------------------------------------------------- building


def to_dict(obj) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value, tp, path: str):
    """Check ``value`` against the annotation ``tp``; YAML quirks (``1e-3`` read as a string,
    an int where a float is expected) are converted."""
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, path)
            except ConfigError as e:
                errors.append(e)
        if len(errors) == 1:  # an optional value: the one type's message says what is expected
            raise errors[0]
        names = " or ".join(_type_name(a) for a in args)
        raise ConfigError(f"config key {path!r}: expected {names}, got {value!r}")
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key {path!r}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key {path!r}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key {path!r}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config key {path!r}: expected a string, got {value!r}")
    if tp is list or origin is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        raise ConfigError(f"config key {path!r}: expected a list, got {value!r}")
    if tp is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"config key {path!r}: expected a mapping, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, path)
    raise TypeError(f"unsupported annotation {tp!r} at {path}")  # a bug in the schema


def build_dataclass(cls, data, path: str = ""):
    """Build ``cls`` from a mapping; unknown keys and missing required keys are errors."""
    where = f"config section {path!r}" if path else "config"
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            full = f"{path}.{key}" if path else str(key)
            raise ConfigError(f"unknown config key {full!r}; valid keys{' in ' + repr(path) if path else ''}: {names}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        full = f"{path}.{f.name}" if path else f.name
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"missing required config key {full!r}")
            continue
        value = _coerce(data[f.name], hints[f.name], full)
        item_cls = _LIST_ITEM_TYPES.get((cls, f.name))
        if item_cls is not None:
            value = [build_dataclass(item_cls, v, f"{full}[{i}]") for i, v in enumerate(value)]
        kwargs[f.name] = value
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'optim.lr=3e-3'`` -> ``(['optim', 'lr'], 0.003)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value (dotted key, e.g. optim.lr=3e-3)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({e})") from None
    return key.split("."), value  # '1e-3' stays a str here (YAML 1.1); the schema converts it


def apply_overrides(data: dict, overrides, schema=None) -> dict:
    """Set dotted keys in a (nested) config dict; intermediate mappings are created.
    With ``schema`` (a dataclass), the key's first unknown part is reported by name."""
    data = copy.deepcopy(data)
    for text in overrides or ():
        keys, value = parse_override(text)
        node, cls = data, schema
        for i, k in enumerate(keys[:-1]):
            if cls is not None and dataclasses.is_dataclass(cls):
                fields = {f.name for f in dataclasses.fields(cls)}
                if k not in fields:
                    raise ConfigError(f"override {text!r}: unknown config key {'.'.join(keys[: i + 1])!r}")
                sub = typing.get_type_hints(cls)[k]
                cls = sub if dataclasses.is_dataclass(sub) else None
            else:
                cls = None
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(keys[: i + 1])!r} is not a section")
            node = nxt
        node[keys[-1]] = value
    return data


def read_yaml(path) -> dict:
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config file {str(p)!r} is a directory; pass a YAML file (see configs/)")
    if not p.is_file():
        raise ConfigError(f"config file not found: {str(p)!r}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({' '.join(str(e).split())})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte {e.start}); a config is a YAML text file") from None
    except OSError as e:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {e.strerror or e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of config keys, got {type(data).__name__}")
    return data


def config_from_dict(data: dict, overrides=None) -> Config:
    data = apply_overrides(data, overrides, Config)
    cfg = build_dataclass(Config, data)
    validate(cfg)
    return cfg


def load_config(path=None, overrides=None) -> Config:
    """Read a YAML file (or start from the defaults when ``path`` is None), apply dotted
    ``key=value`` overrides, build and validate a ``Config``."""
    data = read_yaml(path) if path is not None else {}
    return config_from_dict(data, overrides)


# --------------------------------------------------------------------------- validation


def _choice(path, value, choices):
    if value not in choices:
        raise ConfigError(f"config key {path!r}: {value!r} is not valid; choose one of {list(choices)}")


def _positive(path, value, allow_zero=False):
    ok = value >= 0 if allow_zero else value > 0
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        raise ConfigError(f"config key {path!r} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def validate(cfg: Config) -> None:
    """Value checks that the types alone do not express."""
    _choice("task", cfg.task, TASKS)
    if not cfg.name or "/" in cfg.name:
        raise ConfigError(f"config key 'name' must be a non-empty name without '/', got {cfg.name!r}")
    _positive("seed", cfg.seed, allow_zero=True)
    if cfg.seed >= 2**63:
        raise ConfigError(f"config key 'seed' must be < 2**63, got {cfg.seed}")
    m = cfg.model
    # every model check, before any data is read; the token ids are checked against the task's
    # vocabulary when the model is built (tasks.py)
    ids = [i for i in (m.bos_token_id, m.eos_token_id, m.pad_token_id) if isinstance(i, int) and not isinstance(i, bool)]
    model_config(m, vocab_size=max(ids, default=0) + 1)
    o = cfg.optim
    _positive("optim.lr", o.lr)
    _positive("optim.weight_decay", o.weight_decay, allow_zero=True)
    _positive("optim.eps", o.eps)
    _positive("optim.warmup_steps", o.warmup_steps, allow_zero=True)
    if len(o.betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in o.betas):
        raise ConfigError(f"config key 'optim.betas' must be two numbers in [0, 1), got {o.betas!r}")
    _choice("optim.schedule", o.schedule, SCHEDULES)
    if not 0 <= o.min_lr_ratio <= 1:
        raise ConfigError(f"config key 'optim.min_lr_ratio' must be in [0, 1], got {o.min_lr_ratio!r}")
    if not math.isfinite(o.grad_clip):
        raise ConfigError(f"config key 'optim.grad_clip' must be finite, got {o.grad_clip!r}")
    t = cfg.train
    for k in ("steps", "batch_size", "grad_accum", "log_every", "keep_checkpoints"):
        _positive(f"train.{k}", getattr(t, k))
    for k in ("eval_every", "save_every", "eval_batch_size", "num_threads"):
        _positive(f"train.{k}", getattr(t, k), allow_zero=True)
    if t.batch_size % t.grad_accum:
        raise ConfigError(f"train.batch_size={t.batch_size} is not divisible by train.grad_accum={t.grad_accum}")
    if t.stop_at_step is not None and not 0 < t.stop_at_step <= t.steps:
        raise ConfigError(f"config key 'train.stop_at_step' must be a step in 1..train.steps={t.steps}, got {t.stop_at_step!r}")
    _choice("train.precision", t.precision, PRECISIONS)
    _choice("train.device", t.device, DEVICES)
    if not t.resume:
        raise ConfigError("config key 'train.resume' must be 'auto', 'never' or a checkpoint path")
    d = cfg.distributed
    _choice("distributed.strategy", d.strategy, STRATEGIES)
    _choice("distributed.backend", d.backend, BACKENDS)
    _positive("distributed.timeout_s", d.timeout_s)
    if cfg.task == "mqar":
        q = cfg.mqar
        if not q.train:
            raise ConfigError("config key 'mqar.train' must list at least one slice")
        if not q.test:
            raise ConfigError("config key 'mqar.test' must list at least one slice")
        for part in ("train", "test"):
            for i, s in enumerate(getattr(q, part)):
                try:
                    q.slice_config(s)
                except ValueError as e:
                    raise ConfigError(f"config key 'mqar.{part}[{i}]': {e}") from None
    elif cfg.task == "lm":
        lm = cfg.lm
        if lm.source is None or lm.source == [] or lm.source == "":
            raise ConfigError("config key 'lm.source' is required for task 'lm' (a .txt/.jsonl file, a directory or a dataset)")
        _choice("lm.format", lm.format, ("auto", "txt", "jsonl", "hf"))
        _positive("lm.seq_len", lm.seq_len)
        if not 0 < lm.val_fraction < 1:
            raise ConfigError(f"config key 'lm.val_fraction' must be in (0, 1), got {lm.val_fraction!r}")
        for i, n in enumerate(lm.eval_lengths):
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise ConfigError(f"config key 'lm.eval_lengths[{i}]' must be a positive int, got {n!r}")
        _positive("lm.max_eval_tokens", lm.max_eval_tokens, allow_zero=True)
    elif cfg.task == "niah":
        n = cfg.niah
        _choice("niah.haystack", n.haystack, ("noise", "words"))
        _positive("niah.seed", n.seed, allow_zero=True)
        _positive("niah.num_train", n.num_train)
        _positive("niah.num_test", n.num_test)
        for key in ("train_lengths", "test_lengths"):
            values = getattr(n, key)
            if not values:
                raise ConfigError(f"config key 'niah.{key}' must list at least one length")
            for i, v in enumerate(values):
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    raise ConfigError(f"config key 'niah.{key}[{i}]' must be a positive int, got {v!r}")
        if not n.test_depths:
            raise ConfigError("config key 'niah.test_depths' must list at least one depth")
        for i, d in enumerate(n.test_depths):
            if not isinstance(d, (int, float)) or isinstance(d, bool) or not 0 <= d <= 1:
                raise ConfigError(f"config key 'niah.test_depths[{i}]' must be a number in [0, 1], got {d!r}")
    else:
        ts = cfg.timeseries
        if not ts.path:
            raise ConfigError("config key 'timeseries.path' is required for task 'timeseries' (an ETT-layout CSV)")
        _positive("timeseries.lookback", ts.lookback)
        _positive("timeseries.horizon", ts.horizon)
        _choice("timeseries.features", ts.features, ("M", "S", "MS"))
        _choice("timeseries.protocol", ts.protocol, ("auto", "ETTh", "ETTm", "ratio"))
        _choice("timeseries.head", ts.head, ("last", "flatten", "dlinear"))
        r = ts.ratios
        if (len(r) != 3 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x < 1 for x in r)
                or abs(sum(r) - 1.0) > 1e-6):
            raise ConfigError(f"config key 'timeseries.ratios' must be three fractions in (0, 1) summing to 1 "
                              f"(train, val, test), got {r!r}")
        if not ts.target:
            raise ConfigError("config key 'timeseries.target' must name a channel column")
        _positive("timeseries.max_eval_windows", ts.max_eval_windows, allow_zero=True)
