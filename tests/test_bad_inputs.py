"""Bad inputs, table-driven: every one gives a clear error naming what is wrong (never a
traceback for a user error through the CLI, never silent acceptance).

Levels: config keys (overrides), config files, run construction (model / data / tokenizer /
checkpoint), the data API, model configs, the CLI (exit status 2 and one ``error:`` line).
Each case is fast: nothing trains (the runner cases only build the task and the model).
"""
import math
import warnings

import pytest
import torch

from slotmem.train.config import load_config
from slotmem.train.errors import CheckpointError, ConfigError, SlotmemTrainError
from slotmem.train.trainer import Trainer

BASE = [
    "model.hidden_size=16", "model.num_heads=1", "model.use_mlp=false",
    "model.mixer_kwargs={num_slots: 8, chunk_size: 8}", "mqar.vocab_size=64",
    "mqar.train=[{seq_len: 16, num_kv_pairs: 2, num_examples: 16}]",
    "mqar.test=[{seq_len: 16, num_kv_pairs: 2, num_examples: 4}]",
    "train.batch_size=4", "train.steps=2", "train.progress=false", "train.tensorboard=false",
]

# --------------------------------------------------------------------------- config keys

CONFIG_CASES = [
    (["task=foo"], r"'task': 'foo' is not valid; choose one of"),
    (["name="], r"'name' must be a non-empty name"),
    (["name=a/b"], r"'name' must be a non-empty name without '/'"),
    (["seed=-1"], r"'seed' must be >= 0, got -1"),
    (["seed=18446744073709551616"], r"'seed' must be < 2\*\*63"),
    (["seed=abc"], r"'seed': expected an integer, got 'abc'"),
    (["model.hidden_size=0"], r"config section 'model': hidden_size must be >= 1, got 0"),
    (["model.num_hidden_layers=-1"], r"config section 'model': num_hidden_layers must be >= 1"),
    (["model.num_heads=0"], r"config section 'model': num_heads must be >= 1"),
    (["model.mixer="], r"config section 'model': mixer must be a mixer name"),
    (["model.mixer_kwargs=[1]"], r"'model.mixer_kwargs': expected a mapping, got \[1\]"),
    (["model.use_mlp=maybe"], r"'model.use_mlp': expected true/false, got 'maybe'"),
    (["model.attn_layers=3"], r"'model.attn_layers': expected a list, got 3"),
    (["optim.lr=0"], r"'optim.lr' must be > 0, got 0"),
    (["optim.lr=-1"], r"'optim.lr' must be > 0"),
    (["optim.lr=.nan"], r"'optim.lr' must be > 0, got nan"),
    (["optim.lr=.inf"], r"'optim.lr' must be > 0, got inf"),
    (["optim.lr=fast"], r"'optim.lr': expected a number, got 'fast'"),
    (["optim.weight_decay=-0.1"], r"'optim.weight_decay' must be >= 0"),
    (["optim.eps=0"], r"'optim.eps' must be > 0"),
    (["optim.betas=[0.9]"], r"'optim.betas' must be two numbers in \[0, 1\)"),
    (["optim.betas=[0.9, 1.0]"], r"'optim.betas' must be two numbers in \[0, 1\)"),
    (["optim.schedule=exp"], r"'optim.schedule': 'exp' is not valid"),
    (["optim.min_lr_ratio=2"], r"'optim.min_lr_ratio' must be in \[0, 1\], got 2"),
    (["optim.grad_clip=.inf"], r"'optim.grad_clip' must be finite"),
    (["optim.warmup_steps=-1"], r"'optim.warmup_steps' must be >= 0"),
    (["train.steps=0"], r"'train.steps' must be > 0, got 0"),
    (["train.steps=1.5"], r"'train.steps': expected an integer, got 1.5"),
    (["train.batch_size=0"], r"'train.batch_size' must be > 0"),
    (["train.batch_size=8", "train.grad_accum=3"], r"train.batch_size=8 is not divisible by train.grad_accum=3"),
    (["train.grad_accum=0"], r"'train.grad_accum' must be > 0"),
    (["train.log_every=0"], r"'train.log_every' must be > 0"),
    (["train.keep_checkpoints=0"], r"'train.keep_checkpoints' must be > 0"),
    (["train.eval_every=-1"], r"'train.eval_every' must be >= 0"),
    (["train.save_every=-5"], r"'train.save_every' must be >= 0"),
    (["train.num_threads=-1"], r"'train.num_threads' must be >= 0"),
    (["train.precision=fp8"], r"'train.precision': 'fp8' is not valid"),
    (["train.device=tpu"], r"'train.device': 'tpu' is not valid"),
    (["train.resume="], r"'train.resume' must be 'auto', 'never' or a checkpoint path"),
    (["train.stop_at_step=0"], r"'train.stop_at_step' must be a step in 1..train.steps=2, got 0"),
    (["train.stop_at_step=100"], r"'train.stop_at_step' must be a step in 1..train.steps=2, got 100"),
    (["train.progress=maybe"], r"'train.progress': expected true/false"),
    (["distributed.strategy=zero"], r"'distributed.strategy': 'zero' is not valid"),
    (["distributed.backend=mpi"], r"'distributed.backend': 'mpi' is not valid"),
    (["distributed.timeout_s=0"], r"'distributed.timeout_s' must be > 0"),
    (["mqar.train=[]"], r"'mqar.train' must list at least one slice"),
    (["mqar.test=[]"], r"'mqar.test' must list at least one slice"),
    (["mqar.train=[{seq_len: 8, num_kv_pairs: 4, num_examples: 1}]"], r"'mqar.train\[0\]': .*seq_len >= 4\*kv"),
    (["mqar.train=[{seq_len: 16, num_kv_pairs: 2}]"], r"missing required config key 'mqar.train\[0\].num_examples'"),
    (["mqar.vocab_size=4"], r"'mqar.train\[0\]': .*vocab_size=4 is too small"),
    (["mqar.power_a=0"], r"'mqar.train\[0\]': .*power_a"),
    (["task=lm"], r"'lm.source' is required for task 'lm'"),
    (["task=lm", "lm.source=x.txt", "lm.val_fraction=0"], r"'lm.val_fraction' must be in \(0, 1\), got 0"),
    (["task=lm", "lm.source=x.txt", "lm.val_fraction=1.5"], r"'lm.val_fraction' must be in \(0, 1\), got 1.5"),
    (["task=lm", "lm.source=x.txt", "lm.format=csv"], r"'lm.format': 'csv' is not valid"),
    (["task=lm", "lm.source=x.txt", "lm.seq_len=0"], r"'lm.seq_len' must be > 0"),
    (["task=lm", "lm.source=x.txt", "lm.eval_lengths=[0]"], r"'lm.eval_lengths\[0\]' must be a positive int, got 0"),
    (["task=lm", "lm.source=x.txt", "lm.max_eval_tokens=-1"], r"'lm.max_eval_tokens' must be >= 0"),
    (["task=lm", "lm.source=3"], r"'lm.source': expected str or list"),
    (["task=timeseries"], r"'timeseries.path' is required for task 'timeseries'"),
    (["task=timeseries", "timeseries.path=x.csv", "timeseries.lookback=0"], r"'timeseries.lookback' must be > 0"),
    (["task=timeseries", "timeseries.path=x.csv", "timeseries.horizon=-3"], r"'timeseries.horizon' must be > 0"),
    (["task=timeseries", "timeseries.path=x.csv", "timeseries.features=X"], r"'timeseries.features': 'X' is not valid"),
    (["task=timeseries", "timeseries.path=x.csv", "timeseries.protocol=weekly"], r"'timeseries.protocol': 'weekly' is not valid"),
    (["task=timeseries", "timeseries.path=x.csv", "timeseries.head=mean"], r"'timeseries.head': 'mean' is not valid"),
    (["task=timeseries", "timeseries.path=x.csv", "timeseries.ratios=[0.5, 0.5]"], r"'timeseries.ratios' must be three fractions"),
    (["task=timeseries", "timeseries.path=x.csv", "timeseries.ratios=[0.5, 0.3, 0.3]"], r"summing to 1 .*got \[0.5, 0.3, 0.3\]"),
    (["task=timeseries", "timeseries.path=x.csv", "timeseries.target="], r"'timeseries.target' must name a channel"),
    (["task=timeseries", "timeseries.path=x.csv", "timeseries.max_eval_windows=-1"], r"'timeseries.max_eval_windows' must be >= 0"),
    (["optim.lrr=1"], r"override 'optim.lrr=1': unknown config key|unknown config key 'optim.lrr'"),
    (["optimizer.lr=1"], r"override 'optimizer.lr=1': unknown config key 'optimizer'"),
    (["lr=1"], r"unknown config key 'lr'"),
    (["optim.lr"], r"override 'optim.lr' is not of the form key=value"),
    (["=3"], r"override '=3': empty key"),
    (["optim..lr=3"], r"override 'optim..lr=3': empty key"),
    (["model.mixer_kwargs={a: [}"], r"override 'model.mixer_kwargs=\{a: \[\}': value is not valid YAML"),
    (["optim=3"], r"config section 'optim': expected a mapping, got 3"),
]


@pytest.mark.parametrize("overrides, match", CONFIG_CASES, ids=[" ".join(c[0]) for c in CONFIG_CASES])
def test_bad_config_value(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, BASE + overrides)


# --------------------------------------------------------------------------- config files

FILE_CASES = [
    ("missing", None, r"config file not found: '.*nope.yaml'"),
    ("directory", None, r"is a directory; pass a YAML file"),
    ("bad_yaml", b"optim: [1, 2\n", r"not valid YAML \(.*\)$"),
    ("top_list", b"- 1\n- 2\n", r"the top level must be a mapping of config keys, got list"),
    ("not_utf8", b"task: mqar\nname: \xff\xfe\n", r"not UTF-8 text"),
    ("section_scalar", b"optim: 3\n", r"config section 'optim': expected a mapping, got 3"),
    ("unknown_key", b"optim: {lrr: 1}\n", r"unknown config key 'optim.lrr'"),
    ("wrong_type", b"train: {steps: ten}\n", r"'train.steps': expected an integer, got 'ten'"),
]


@pytest.mark.parametrize("kind, content, match", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_bad_config_file(tmp_path, kind, content, match):
    p = tmp_path / "nope.yaml"
    if kind == "directory":
        p.mkdir()
    elif content is not None:
        p.write_bytes(content)
    with pytest.raises(ConfigError, match=match) as e:
        load_config(p)
    assert "\n" not in str(e.value)  # one line


# --------------------------------------------------------------------------- run construction


def _csv(tmp_path, rows=60, edit=None, header="date,a,OT", name="series.csv"):
    lines = [header] + [f"2020-01-01 {i:05d},{math.sin(i / 3):.4f},{math.cos(i / 5):.4f}" for i in range(rows)]
    if edit:
        edit(lines)
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


def _set(i, text):
    def edit(lines):
        lines[i] = text
    return edit


TS = ["task=timeseries", "timeseries.lookback=8", "timeseries.horizon=4"]


def _ts(tmp_path, **kw):
    return TS + [f"timeseries.path={_csv(tmp_path, **kw)}"]


def _lm(tmp_path, text="hello world " * 200, name="c.txt", raw=None):
    p = tmp_path / name
    p.write_bytes(raw) if raw is not None else p.write_text(text)
    return ["task=lm", f"lm.source={p}", "lm.seq_len=16"]


RUN_CASES = [
    ("unknown_mixer", lambda t: ["model.mixer=nope"], r"unknown mixer\(s\) \['nope'\]; registered"),
    ("unknown_mixer_kwarg", lambda t: ["model.mixer_kwargs={bogus: 1}"], r"LatticeAttention got unknown argument\(s\): \['bogus'\]"),
    ("zero_slots", lambda t: ["model.mixer_kwargs={num_slots: 0}"], r"num_slots must be a positive int, got 0"),
    ("heads_not_dividing", lambda t: ["model.num_heads=3"], r"hidden_size=16 is not divisible by num_heads=3"),
    ("attn_layer_out_of_range", lambda t: ["model.attn_layers=[5]"], r"attn_layers \[5\] out of range"),
    ("model_unknown_key", lambda t: ["model.nope=1"], r"unknown config key 'model.nope'"),
    ("vocab_zero", lambda t: ["model.vocab_size=0"], r"config section 'model': vocab_size must be >= 1, got 0"),
    ("attn_window_zero", lambda t: ["model.attn_window=0"], r"attn_window must be >= 1, got 0"),
    ("mqar_vocab_too_small", lambda t: ["model.vocab_size=32"], r"vocab_size=32 is smaller than the data's vocabulary \(64 ids"),
    ("lm_vocab_too_small", lambda t: _lm(t) + ["model.vocab_size=100"], r"vocab_size=100 is smaller than the data's vocabulary \(259 ids"),
    ("tokenizer_missing", lambda t: _lm(t) + [f"lm.tokenizer={t / 'no_such_tokenizer'}"], r"tokenizer '.*no_such_tokenizer' not found"),
    ("tokenizer_is_a_file", lambda t: _lm(t) + [f"lm.tokenizer={t / 'c.txt'}"], r"tokenizer '.*c.txt' not found"),
    ("lm_source_missing", lambda t: ["task=lm", f"lm.source={t / 'none.txt'}"], r"'lm.source': data file not found"),
    ("lm_empty_corpus", lambda t: _lm(t, text=""), r"empty corpus"),
    ("lm_corpus_too_short", lambda t: _lm(t, text="hi"), r"too few for one window"),
    ("lm_not_utf8", lambda t: _lm(t, raw=b"ok \xff\xfe bad"), r"not UTF-8 text"),
    ("lm_bad_jsonl", lambda t: _lm(t, name="c.jsonl", text='{"text": "a"}\n{oops\n'), r"c.jsonl:2: invalid JSON"),
    ("lm_jsonl_no_field", lambda t: _lm(t, name="c.jsonl", text='{"body": "a"}\n'), r"c.jsonl:1: no field 'text' \(found \['body'\]\)"),
    ("lm_jsonl_not_string", lambda t: _lm(t, name="c.jsonl", text='{"text": 3}\n'), r"field 'text' is int, not a string"),
    ("lm_unknown_suffix", lambda t: _lm(t, name="c.bin"), r"unknown format \(suffix '.bin'\)"),
    ("lm_empty_dir", lambda t: ["task=lm", f"lm.source={t}"], r"directory holds no .txt or .jsonl/.json files"),
    ("ts_missing_file", lambda t: TS + [f"timeseries.path={t / 'none.csv'}"], r"'timeseries.path': data file not found"),
    ("ts_empty_file", lambda t: TS + [f"timeseries.path={_write(t, 'e.csv', b'')}"], r"empty file"),
    ("ts_header_only", lambda t: _ts(t, rows=0), r"no data rows"),
    ("ts_extra_field", lambda t: _ts(t, edit=_set(7, "2020-01-01 x,1.0,2.0,3.0")), r"line 8 has 4 fields, the header has 3"),
    ("ts_missing_field", lambda t: _ts(t, edit=_set(3, "2020-01-01 x,1.0")), r"line 4 has 2 fields, the header has 3"),
    ("ts_not_a_number", lambda t: _ts(t, edit=_set(5, "2020-01-01 x,abc,2.0")), r"line 6, column 'a': 'abc' is not a number"),
    ("ts_empty_cell", lambda t: _ts(t, edit=_set(5, "2020-01-01 x,,2.0")), r"line 6, column 'a': '' is not a number"),
    ("ts_nan", lambda t: _ts(t, edit=_set(9, "2020-01-01 x,nan,2.0")), r"non-finite value nan in column 'a' at line 10"),
    ("ts_inf", lambda t: _ts(t, edit=_set(9, "2020-01-01 x,1.0,-inf")), r"non-finite value -inf in column 'OT' at line 10"),
    ("ts_huge", lambda t: _ts(t, edit=_set(4, "2020-01-01 x,1e300,2.0")), r"value 1e\+300 in column 'a' at line 5 is too large"),
    ("ts_no_date_col", lambda t: _ts(t, header="time,a,OT"), r"no date column 'date' in header \['time', 'a', 'OT'\]"),
    ("ts_duplicate_cols", lambda t: _ts(t, header="date,a,a"), r"duplicate column names"),
    ("ts_target_missing", lambda t: _ts(t) + ["timeseries.target=XX"], r"target column 'XX' not found; channels are \['a', 'OT'\]"),
    ("ts_lookback_too_long", lambda t: _ts(t) + ["timeseries.lookback=500"], r"lookback=500 is longer than the train split"),
    ("ts_too_few_rows_for_window", lambda t: _ts(t, rows=20), r"too few for one window"),
    ("ts_etth_protocol_short", lambda t: _ts(t) + ["timeseries.protocol=ETTh"], r"the ETTh protocol needs at least 14400 rows"),
    ("ts_path_is_dir", lambda t: TS + [f"timeseries.path={t}"], r"'timeseries.path': data file not found"),
    ("pretrained_missing", lambda t: [f"model.pretrained={t / 'none'}"], r"'model.pretrained': .* is not a saved model directory"),
    ("pretrained_not_model", lambda t: [f"model.pretrained={t}"], r"'model.pretrained': .* is not a saved model directory \(no config.json\)"),
    ("resume_missing", lambda t: [f"train.resume={t / 'none.pt'}"], r"checkpoint not found: '.*none.pt'"),
    ("resume_dir", lambda t: [f"train.resume={t}"], r"is a directory; pass a checkpoints/step_\*.pt file"),
    ("out_dir_is_file", lambda t: [f"out_dir={_write(t, 'f', b'x')}"], r"out_dir '.*f' exists and is not a directory"),
]


def _write(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("name, make, match", RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_bad_run_input(tmp_path, name, make, match):
    overrides = BASE + make(tmp_path)
    if not any(o.startswith("out_dir=") for o in overrides):
        overrides.append(f"out_dir={tmp_path / 'out'}")
    with pytest.raises(SlotmemTrainError, match=match) as e:
        Trainer(load_config(None, overrides), quiet=True).close()
    assert "\n" not in str(e.value).strip()


def test_resume_from_a_file_that_is_not_a_checkpoint(tmp_path):
    p = _write(tmp_path, "x.pt", b"\x00" * 64)
    with pytest.warns(UserWarning, match="no .sha256 checksum file"), \
            pytest.raises(CheckpointError, match=r"x.pt' cannot be read .* corrupt or truncated"):
        Trainer(load_config(None, BASE + [f"train.resume={p}", f"out_dir={tmp_path / 'o'}"]), quiet=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda(tmp_path):
    with pytest.raises(ConfigError, match="train.device=cuda but CUDA is not available"):
        Trainer(load_config(None, BASE + ["train.device=cuda", f"out_dir={tmp_path}"]), quiet=True)


# --------------------------------------------------------------------------- data API


def _api_cases():
    from slotmem.data import timeseries as ts
    from slotmem.data import text

    return [
        ("split_unknown", lambda t: ts.ForecastDataset(_csv(t), "dev", lookback=8, horizon=4), ValueError, r"split"),
        ("features_unknown", lambda t: ts.ForecastDataset(_csv(t), features="Q", lookback=8, horizon=4), ValueError, r"features"),
        ("lookback_float", lambda t: ts.ForecastDataset(_csv(t), lookback=8.0, horizon=4), ValueError, r"lookback must be a positive int"),
        ("ratios_bad", lambda t: ts.split_borders(100, 8, "ratio", (0.5, 0.5, 0.5)), ValueError, r"summing to 1"),
        ("csv_dir", lambda t: ts.read_series_csv(t), IsADirectoryError, r"is a directory, not a CSV file"),
        ("csv_missing", lambda t: ts.read_series_csv(t / "x.csv"), FileNotFoundError, r"no such CSV file"),
        ("window_index", lambda t: ts.ForecastDataset(_csv(t), lookback=8, horizon=4)[10**6], IndexError, r"out of range"),
        ("lm_seq_len_zero", lambda t: text.LMDataset(torch.arange(100), 0), ValueError, r"seq_len must be a positive int, got 0"),
        ("lm_tokens_2d", lambda t: text.LMDataset(torch.zeros(2, 2, dtype=torch.long), 4), ValueError, r"tokens must be a 1-D tensor"),
        ("lm_stride_zero", lambda t: text.LMDataset(torch.arange(100), 4, 0), ValueError, r"stride must be a positive int"),
        ("val_fraction_one", lambda t: text.split_tokens(torch.arange(10), 1.0), ValueError, r"val_fraction must be in \[0, 1\)"),
        ("byte_encode_type", lambda t: text.byte_tokenizer().encode(b"x"), ValueError, r"text input must be of type `str`"),
        ("tokenizer_type", lambda t: text.load_tokenizer(3), TypeError, r"name_or_path must be a str or path"),
        ("tokenizer_missing_path", lambda t: text.load_tokenizer(str(t / "tok")), ValueError, r"tokenizer '.*tok' not found"),
        ("read_format", lambda t: list(text.read_documents("x", format="docx")), ValueError, r"format"),
        ("read_missing", lambda t: list(text.read_documents(str(t / "none.txt"))), FileNotFoundError, r"no such file or directory"),
        ("read_source_type", lambda t: list(text.read_documents(3)), TypeError, r"source must be a path/name or a non-empty list"),
    ]


API_IDS = ["split_unknown", "features_unknown", "lookback_float", "ratios_bad", "csv_dir",
           "csv_missing", "window_index", "lm_seq_len_zero", "lm_tokens_2d", "lm_stride_zero", "val_fraction_one",
           "read_format", "read_missing", "read_source_type"]


@pytest.mark.parametrize("case", API_IDS)
def test_bad_data_api_input(tmp_path, case):
    (_, call, exc, match), = [c for c in _api_cases() if c[0] == case]
    with pytest.raises(exc, match=match):
        call(tmp_path)


# --------------------------------------------------------------------------- model configs

MODEL_CASES = [
    (dict(hidden_size=0), ValueError, r"hidden_size must be >= 1, got 0"),
    (dict(num_hidden_layers=0), ValueError, r"num_hidden_layers must be >= 1"),
    (dict(vocab_size=0), ValueError, r"vocab_size must be >= 1, got 0"),
    (dict(hidden_size=16, num_heads=3), ValueError, r"hidden_size=16 is not divisible by num_heads=3"),
    (dict(mixer="nope"), ValueError, r"unknown mixer\(s\) \['nope'\]"),
    (dict(mixer=3), TypeError, r"mixer must be a mixer name \(str\), got 3"),
    (dict(norm_eps=-1.0), ValueError, r"norm_eps must be a finite positive number, got -1.0"),
    (dict(use_mlp="yes"), TypeError, r"use_mlp must be a bool, got 'yes'"),
    (dict(bos_token_id=999, vocab_size=100), ValueError, r"bos_token_id=999 must be None or an id in \[0, vocab_size=100\)"),
    (dict(attn_layers=[9]), ValueError, r"attn_layers \[9\] out of range"),
    (dict(attn_layers=[0, 0], num_hidden_layers=2), ValueError, r"attn_layers has duplicates"),
    (dict(attn_kwargs={"window_size": 4}), ValueError, r"attn_kwargs is set but attn_layers is empty"),
    (dict(mixer_kwargs={"hidden_size": 8}), ValueError, r"mixer_kwargs must not set \['hidden_size'\]"),
    (dict(mixer_kwargs={"bogus": 1}), TypeError, r"got unknown argument\(s\): \['bogus'\]"),
]


@pytest.mark.parametrize("kwargs, exc, match", MODEL_CASES, ids=[str(c[0]) for c in MODEL_CASES])
def test_bad_model_config(kwargs, exc, match):
    from slotmem import models

    with pytest.raises(exc, match=match):
        with torch.device("meta"):
            models.model_for_causal_lm(models.SlotMemConfig(**{"hidden_size": 16, "num_heads": 1, **kwargs}))


# --------------------------------------------------------------------------- CLI


def _cli_cases(t):
    cfg = t / "ok.yaml"
    cfg.write_text("task: mqar\n")
    bad_info = t / "bad.yaml"
    bad_info.write_text("hidden_size: 0\n")
    return {
        "train_missing_config": (["train", str(t / "none.yaml")], r"no such file, and no built-in config of that name"),
        "train_bad_override": (["train", str(cfg), "optim.lr=-1"], r"'optim.lr' must be > 0"),
        "train_unknown_key": (["train", str(cfg), "optim.lrr=1"], r"unknown config key"),
        "train_no_equals": (["train", str(cfg), "steps"], r"is not of the form key=value"),
        "train_vocab_small": (["train", str(cfg)] + BASE + ["model.vocab_size=8", f"out_dir={t / 'o'}"], r"vocab_size=8 is smaller"),
        "info_missing": (["info", "--config", str(t / "none.yaml")], r"no such file, and no built-in config of that name"),
        "info_bad_suffix": (["info", "--config", str(_write(t, "m.txt", b"x"))], r"config files must be .yaml, .yml or .json"),
        "info_bad_value": (["info", "--config", str(bad_info)], r"hidden_size must be >= 1, got 0"),
        "info_dir_without_config": (["info", "--config", str(t)], r"no config file at|config.json"),
        "info_bad_yaml": (["info", "--config", str(_write(t, "y.yaml", b"a: [\n"))], r"y.yaml"),
        "generate_missing_model": (["generate", "--model", str(t / "none"), "--prompt", "hi"], r"is not a saved model directory"),
        "demo_zero_width": (["demo", "--hidden-size", "0"], r"hidden_size|positive"),
        "demo_heads": (["demo", "--hidden-size", "30", "--num-heads", "4"], r"divisible|head"),
    }


CLI_IDS = ["train_missing_config", "train_bad_override", "train_unknown_key", "train_no_equals", "train_vocab_small",
           "info_missing", "info_bad_suffix", "info_bad_value", "info_dir_without_config", "info_bad_yaml",
           "generate_missing_model", "demo_zero_width", "demo_heads"]


@pytest.mark.parametrize("case", CLI_IDS)
def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, case, monkeypatch):
    from slotmem.cli import main

    monkeypatch.delenv("SLOTMEM_DEBUG", raising=False)
    argv, match = _cli_cases(tmp_path)[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(SystemExit) as e:
            main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert "Traceback" not in err
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(lines) == 1, err
    import re

    assert re.search(match, lines[0]), lines[0]


def test_cli_debug_env_shows_the_traceback(tmp_path, monkeypatch):
    from slotmem.cli import main

    monkeypatch.setenv("SLOTMEM_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="no built-in config of that name"):  # raised, not one line
        main(["train", str(tmp_path / "none.yaml")])


# --------------------------------------------------------------------------- silent NaN


def test_nan_model_reports_nan_accuracy_not_zero():
    from slotmem.data import MQARConfig, generate_mqar
    from slotmem.eval.mqar import evaluate_mqar_slices
    from slotmem import models

    net = models.model_for_causal_lm(models.SlotMemConfig(vocab_size=64, hidden_size=16, num_heads=1, num_hidden_layers=1,
                                                          mixer="lattice", mixer_kwargs={"num_slots": 8, "chunk_size": 8},
                                                          bos_token_id=None, eos_token_id=None, pad_token_id=None))
    spec = MQARConfig(16, 2, 4, 64)
    x, y = generate_mqar(spec, "test")
    ok = evaluate_mqar_slices(net, [(spec, x, y)], 4)
    assert math.isfinite(ok["acc"]) and math.isfinite(ok["loss"])
    with torch.no_grad():
        net.get_output_embeddings().weight.fill_(float("nan"))
    res = evaluate_mqar_slices(net, [(spec, x, y)], 4)
    assert math.isnan(res["acc"]) and math.isnan(res["loss"]) and math.isnan(res["slices"][0]["acc"])
