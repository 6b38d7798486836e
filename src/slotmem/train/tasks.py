"""The tasks the runner trains: MQAR, language modelling, time-series forecasting, S-NIAH.

A task owns its data, builds the network and the *objective* (an ``nn.Module`` that
wraps the network and returns sums -- loss, number of targets, hits -- so that DDP/FSDP
wrap one module and losses reduce exactly across processes and micro-batches), and
evaluates. All ranks hold all data (the datasets here are in-memory tensors); each rank
takes its share of every global batch.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..data import IGNORE_INDEX
from ..eval import evaluate_forecast, evaluate_mqar_slices, evaluate_nll, perplexity_vs_length
from ..eval.objectives import ForecastObjective, TokenObjective
from .config import Config, ModelConfig, model_config
from .errors import ConfigError


# --------------------------------------------------------------------------- models


def task_vocabulary(cfg: Config) -> tuple[int, dict]:
    """``(vocab_size, special_ids)`` a task's data needs: the MQAR vocabulary; the tokenizer's size and
    ``bos/eos/pad_token_id`` (LM); 1 for forecasting (inputs are embeddings, the vocabulary is unused)."""
    if cfg.task == "mqar":
        return cfg.mqar.vocab_size, {}
    if cfg.task in ("lm", "niah"):
        from ..data import load_tokenizer, special_token_ids

        tok = load_tokenizer(cfg.lm.tokenizer if cfg.task == "lm" else cfg.niah.tokenizer)
        return len(tok), special_token_ids(tok)
    return 1, {}


def _check_vocab(model_vocab: int, data_vocab: int, where: str) -> None:
    if model_vocab < data_vocab:
        raise ConfigError(
            f"{where} vocab_size={model_vocab} is smaller than the data's vocabulary ({data_vocab} ids: the "
            "tokenizer's or mqar.vocab_size); token ids would fall outside the embedding. Set model.vocab_size "
            f">= {data_vocab} or leave it unset"
        )


def build_causal_lm(m: ModelConfig, vocab_size: int, special_ids: dict | None = None) -> nn.Module:
    """A causal LM for data with ``vocab_size`` ids: ``m.pretrained`` loaded (its manifest
    checked when present) or a new model from the model section."""
    from .. import models

    if m.pretrained:
        from ..models.manifest import verify_manifest

        p = Path(m.pretrained)
        if not (p / "config.json").is_file():
            raise ConfigError(f"config key 'model.pretrained': {str(p)!r} is not a saved model directory (no config.json)")
        verify_manifest(p)
        from transformers import AutoModelForCausalLM

        try:
            net = AutoModelForCausalLM.from_pretrained(str(p))
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(f"config key 'model.pretrained': cannot load {str(p)!r}: {str(e).splitlines()[0]}") from None
        _check_vocab(net.config.vocab_size, vocab_size, f"the pretrained model's ({p})")
        return net
    _check_vocab(m.vocab_size if m.vocab_size is not None else vocab_size, vocab_size, "config key 'model.vocab_size':")
    cfg = model_config(m, vocab_size, special_ids)
    try:
        return models.model_for_causal_lm(cfg)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model section: {e}") from None


def build_backbone(m: ModelConfig) -> nn.Module:
    """A ``SlotMemModel`` (no LM head) for inputs given as embeddings; its 1-token vocabulary
    is unused and frozen."""
    from .. import models

    cfg = model_config(m, vocab_size=1)
    try:
        net = models.modeling_slotmem.MODEL_CLASSES[cfg.model_type][0](cfg)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model section: {e}") from None
    emb = net.get_input_embeddings()
    if emb is not None:
        emb.requires_grad_(False)
    return net


def mixer_modules(net: nn.Module) -> list[nn.Module]:
    """The token mixers of a network, in layer order (modules with ``state_size``)."""
    from ..layers import MIXERS

    classes = tuple(MIXERS.values())
    return [mod for mod in net.modules() if isinstance(mod, classes)]


def state_size_per_layer(net: nn.Module, seq_len: int) -> list[int]:
    """Floats of decode state per sequence for each layer after ``seq_len`` tokens."""
    return [int(mod.state_size(seq_len)) for mod in mixer_modules(net)]


def count_parameters(net: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)


# --------------------------------------------------------------------------- tasks


class Task:
    name = ""
    #: splits evaluated every ``train.eval_every`` steps, and at the end of training
    periodic_splits: tuple = ()
    final_splits: tuple = ()

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.groups: list = []
        self.group_names: list[str] = []

    # data
    @property
    def group_sizes(self) -> list[int]:
        return [len(g) for g in self.groups]

    def get_batch(self, group: int, idx) -> dict:
        raise NotImplementedError

    def target_count(self, group: int, idx) -> int:
        raise NotImplementedError

    def tokens(self, batch: dict) -> int:
        raise NotImplementedError

    # model
    def build_net(self) -> nn.Module:
        raise NotImplementedError

    def objective(self, net: nn.Module) -> nn.Module:
        raise NotImplementedError

    def train_metrics(self, sums: dict) -> dict:
        return {"loss": sums["loss_sum"] / max(sums["count"], 1)}

    def evaluate(self, module, split: str, batch_size: int, info) -> dict:
        raise NotImplementedError

    def extra_final(self, module, batch_size: int, info) -> dict:
        return {}

    def export(self, net: nn.Module, state_dict: dict, directory: Path) -> None:
        net.save_pretrained(str(directory), state_dict=state_dict)


def _take_tokens(inputs: torch.Tensor, labels: torch.Tensor, idx) -> dict:
    i = torch.as_tensor(np.asarray(idx), dtype=torch.long)
    return {"input_ids": inputs[i], "labels": labels[i]}


class _TokenTask(Task):
    """A task on token sequences (``input_ids``, ``labels``) trained with next-token cross-entropy;
    a task with a ``tokenizer`` saves it next to the exported model."""

    def tokens(self, batch):
        return batch["input_ids"].numel()

    def objective(self, net):
        return TokenObjective(net)

    def export(self, net, state_dict, directory):
        super().export(net, state_dict, directory)
        tokenizer = getattr(self, "tokenizer", None)
        if hasattr(tokenizer, "save_pretrained"):
            tokenizer.save_pretrained(str(directory))


class _LabelledTokenTask(_TokenTask):
    """Training groups of ``(input_ids [N, T], labels [N, T])`` tensors, one group per sequence length
    (MQAR slices, S-NIAH lengths); a batch never mixes groups."""

    @property
    def group_sizes(self) -> list[int]:
        return [g[0].shape[0] for g in self.groups]

    def get_batch(self, group, idx):
        return _take_tokens(*self.groups[group], idx)

    def target_count(self, group, idx):
        lab = self.groups[group][1][torch.as_tensor(np.asarray(idx), dtype=torch.long)]
        return int((lab != IGNORE_INDEX).sum())


def mqar_metric_key(seq_len: int, num_kv_pairs: int) -> str:
    """The metrics key of one MQAR test slice's accuracy (``acc_T{seq_len}_kv{num_kv_pairs}``)."""
    return f"acc_T{seq_len}_kv{num_kv_pairs}"


class MQARTask(_LabelledTokenTask):
    name = "mqar"
    periodic_splits = ("test",)
    final_splits = ("test",)

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        from ..data import generate_mqar

        q = cfg.mqar
        self.vocab_size = q.vocab_size
        for s in q.train:
            inp, lab = generate_mqar(q.slice_config(s), "train")
            self.groups.append((inp, lab))
            self.group_names.append(f"mqar.train (T={s.seq_len}, kv={s.num_kv_pairs})")
        self.test_slices = []
        for s in q.test:
            inp, lab = generate_mqar(q.slice_config(s), "test")
            self.test_slices.append((s, inp, lab))

    def build_net(self):
        return build_causal_lm(self.cfg.model, self.vocab_size)

    def train_metrics(self, sums):
        n = max(sums["count"], 1)
        return {"loss": sums["loss_sum"] / n, "acc": sums["hits"] / n}

    def evaluate(self, module, split, batch_size, info):
        res = evaluate_mqar_slices(module, self.test_slices, batch_size, info)
        out = {"acc": res["acc"], "loss": res["loss"]}
        for r in res["slices"]:
            out[mqar_metric_key(r["seq_len"], r["num_kv_pairs"])] = r["acc"]
        return out


class NIAHTask(_LabelledTokenTask):
    """S-NIAH trained from scratch (``NIAHTaskConfig``): one training group per length, scored per
    (length, depth) cell of the test grid."""

    name = "niah"
    periodic_splits = ("test",)
    final_splits = ("test",)

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        from ..data import special_token_ids
        from ..data.niah import niah_train_samples

        n = cfg.niah
        self.tokenizer = check_niah_data(n)
        self.vocab_size = len(self.tokenizer)
        self.special_ids = special_token_ids(self.tokenizer)
        self.pad_id = next((self.special_ids[k] for k in ("pad_token_id", "eos_token_id")
                            if self.special_ids.get(k) is not None), 0)
        for L in n.train_lengths:
            samples = niah_train_samples(self.tokenizer, L, n.num_train, seed=n.seed, haystack=n.haystack)
            self.groups.append(self.encode(samples))
            self.group_names.append(f"niah.train (length {L}, {n.num_train} samples, depth uniform in [0, 1])")
        self.test_cells = self.cells("test", n.num_test)

    def encode(self, samples):
        from ..data.niah import encode_niah

        return encode_niah(self.tokenizer, samples, self.pad_id)

    def cells(self, split: str, num: int, lengths=None) -> list:
        """``[(length, depth, input_ids, labels)]`` from ``split``'s sample stream over ``lengths``
        (default: the test lengths) x the test depths, ``num`` samples per cell."""
        from ..data.niah import niah_samples, split_seed

        n = self.cfg.niah
        out = []
        for L in lengths or n.test_lengths:
            for d in n.test_depths:
                samples = niah_samples(self.tokenizer, [L], [float(d)], num, seed=split_seed(n.seed, split),
                                       haystack=n.haystack)
                out.append((L, float(d), *self.encode(samples)))
        return out

    def build_net(self):
        return build_causal_lm(self.cfg.model, self.vocab_size, self.special_ids)

    def train_metrics(self, sums):
        n = max(sums["count"], 1)
        return {"loss": sums["loss_sum"] / n, "token_acc": sums["hits"] / n}

    def evaluate(self, module, split, batch_size, info):
        from ..eval.niah import evaluate_niah_cells

        res = evaluate_niah_cells(module, self.test_cells, batch_size, info)
        out = {"acc": res["acc"], "loss": res["loss"]}
        for c in res["cells"]:
            out[f"acc_L{c['length']}_d{c['depth']:g}"] = c["acc"]
        return out


def check_niah_data(n):
    """Load the S-NIAH section's tokenizer and check that every length holds a sample (preamble,
    needle, query); returns the tokenizer. Errors are ``ConfigError``s naming the key."""
    from ..data import load_tokenizer
    from ..data.niah import make_niah_sample

    try:
        tok = load_tokenizer(n.tokenizer)
    except OSError as e:
        raise ConfigError(f"config key 'niah.tokenizer': {str(e).splitlines()[0]}") from None
    for key in ("train_lengths", "test_lengths"):
        try:
            make_niah_sample(tok, min(getattr(n, key)), 0.5, haystack=n.haystack)
        except ValueError as e:
            raise ConfigError(f"config key 'niah.{key}': {e}") from None
    return tok


class LMTask(_TokenTask):
    name = "lm"
    periodic_splits = ("val",)
    final_splits = ("val",)

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        from ..data import is_byte_tokenizer, load_lm_data

        lm = cfg.lm
        _check_sources(lm.source, lm.format)
        try:
            data = load_lm_data(lm.source, lm.seq_len, tokenizer=lm.tokenizer, val_fraction=lm.val_fraction,
                                format=lm.format, text_field=lm.text_field, hf_split=lm.hf_split, hf_config=lm.hf_config)
        except FileNotFoundError as e:
            raise ConfigError(f"config key 'lm.source': {e}") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise ConfigError(f"lm data: {e}") from None
        except OSError as e:  # e.g. a tokenizer the hub does not have
            raise ConfigError(f"lm data: {str(e).splitlines()[0]}") from None
        self.data = data
        self.tokenizer = data.tokenizer
        self.vocab_size = len(data.tokenizer)
        self.windows = data.train.windows()
        self.groups = [self.windows]
        self.group_names = [f"lm.source ({data.train_tokens.numel()} train tokens, seq_len={lm.seq_len})"]
        self.is_bytes = is_byte_tokenizer(self.tokenizer)

    @property
    def group_sizes(self):
        return [self.windows.shape[0]]

    def get_batch(self, group, idx):
        w = self.windows[torch.as_tensor(np.asarray(idx), dtype=torch.long)]
        return {"input_ids": w[:, :-1], "labels": w[:, 1:]}

    def target_count(self, group, idx):
        return len(idx) * self.cfg.lm.seq_len

    def build_net(self):
        from ..data import special_token_ids

        return build_causal_lm(self.cfg.model, self.vocab_size, special_token_ids(self.tokenizer))

    def _metrics(self, nll: float) -> dict:
        out = {"loss": nll, "ppl": math.exp(min(nll, 50.0))}
        if self.is_bytes:
            out["bpb"] = nll / math.log(2)
        return out

    def evaluate(self, module, split, batch_size, info):
        res = evaluate_nll(module, self.data.val_tokens, self.cfg.lm.seq_len, batch_size, info,
                           max_tokens=self.cfg.lm.max_eval_tokens)
        return self._metrics(res["nll"])

    def extra_final(self, module, batch_size, info):
        lengths = self.cfg.lm.eval_lengths
        if not lengths:
            return {}
        rows = perplexity_vs_length(module, self.data.val_tokens, lengths, batch_size, info,
                                    max_tokens=self.cfg.lm.max_eval_tokens, train_len=self.cfg.lm.seq_len)
        out = {}
        for r in rows:
            if r.get("nll") is not None:
                out[f"ppl_L{r['length']}"] = r["ppl"]
        return {"ppl_vs_length": rows, **out}


def _check_sources(source, fmt):
    if fmt == "hf":
        return
    for s in source if isinstance(source, list) else [source]:
        if not isinstance(s, str):
            raise ConfigError(f"config key 'lm.source': expected a path or a list of paths, got {s!r}")
        if not Path(s).exists():
            raise ConfigError(f"config key 'lm.source': data file not found: {s!r} (for a Hugging Face hub dataset set lm.format=hf)")


class ForecastTask(Task):
    name = "timeseries"
    periodic_splits = ("val",)
    final_splits = ("val", "test")

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        from ..data import load_forecast_splits

        ts = cfg.timeseries
        if not Path(ts.path).is_file():
            raise ConfigError(f"config key 'timeseries.path': data file not found: {ts.path!r}")
        try:
            self.splits = load_forecast_splits(ts.path, lookback=ts.lookback, horizon=ts.horizon, features=ts.features,
                                               target=ts.target, protocol=ts.protocol, ratios=tuple(ts.ratios),
                                               date_col=ts.date_col)
        except ValueError as e:
            raise ConfigError(f"timeseries data: {e}") from None
        tr = self.splits["train"]
        self.n_in = tr.n_channels
        self.n_out = 1 if ts.features == "MS" else self.n_in
        self.groups = [tr]
        self.group_names = [f"timeseries train split ({len(tr)} windows)"]

    @staticmethod
    def _stack(ds, idx):
        xs, ys = zip(*(ds[int(i)] for i in idx))
        return {"x": torch.stack(xs), "y": torch.stack(ys)}

    def get_batch(self, group, idx):
        return self._stack(self.groups[group], idx)

    def target_count(self, group, idx):
        return len(idx) * self.cfg.timeseries.horizon * self.n_out

    def tokens(self, batch):
        return batch["x"].shape[0] * batch["x"].shape[1]

    def build_net(self):
        from ..models.forecasting import DLinear, ForecastModel

        ts = self.cfg.timeseries
        if ts.head == "dlinear":  # the linear reference: no backbone, the model section is unused
            return DLinear(self.n_in, self.n_out, ts.lookback, ts.horizon, revin=ts.revin,
                           target_index=self.groups[0].target_index)
        backbone = build_backbone(self.cfg.model)
        return ForecastModel(backbone, self.cfg.model.hidden_size, self.n_in, self.n_out, ts.lookback, ts.horizon,
                             head=ts.head, revin=ts.revin, target_index=self.groups[0].target_index)

    def objective(self, net):
        return ForecastObjective(net)

    def train_metrics(self, sums):
        n = max(sums["count"], 1)
        return {"loss": sums["loss_sum"] / n, "mae": sums["abs_sum"] / n}

    def evaluate(self, module, split, batch_size, info):
        return evaluate_forecast(module, self.splits[split], batch_size, info, max_windows=self.cfg.timeseries.max_eval_windows)

    def export(self, net, state_dict, directory):
        from .checkpoint import atomic_torch_save

        directory.mkdir(parents=True, exist_ok=True)
        if hasattr(net, "backbone"):
            net.backbone.config.save_pretrained(str(directory / "backbone"))
        ts = self.cfg.timeseries
        atomic_torch_save({"state_dict": state_dict, "n_in": self.n_in, "n_out": self.n_out, "lookback": ts.lookback,
                           "horizon": ts.horizon, "head": ts.head, "revin": ts.revin,
                           "target_index": self.groups[0].target_index, "hidden_size": self.cfg.model.hidden_size,
                           "mean": self.groups[0].mean, "std": self.groups[0].std, "columns": self.groups[0].columns},
                          directory / "forecast_model.pt")


TASK_CLASSES = {"mqar": MQARTask, "lm": LMTask, "timeseries": ForecastTask, "niah": NIAHTask}


def build_task(cfg: Config) -> Task:
    return TASK_CLASSES[cfg.task](cfg)
