"""The runner: exact resume, checkpoint safety, non-finite stops, the LM and time-series tasks.

Shapes are tiny (width 16, T <= 64): these test plumbing, not learning (see test_train_learning.py).
"""
import json
import math

import numpy as np
import pytest
import torch

from slotmem.train import checkpoint as ckpt
from slotmem.train.config import load_config
from slotmem.train.errors import CheckpointError, ConfigError, NonFiniteError
from slotmem.train.metrics import read_metrics
from slotmem.train.trainer import Trainer, lr_lambda, train

TINY_MQAR = [
    "task=mqar", "model.mixer=lattice", "model.hidden_size=16", "model.num_heads=1", "model.use_mlp=false",
    "model.mixer_kwargs={num_slots: 8, chunk_size: 8}",
    "mqar.vocab_size=64",
    "mqar.train=[{seq_len: 16, num_kv_pairs: 2, num_examples: 48}, {seq_len: 32, num_kv_pairs: 4, num_examples: 32}]",
    "mqar.test=[{seq_len: 16, num_kv_pairs: 2, num_examples: 10}, {seq_len: 32, num_kv_pairs: 4, num_examples: 6}]",
    "optim.lr=1e-2", "optim.warmup_steps=2",
    "train.batch_size=8", "train.grad_accum=2", "train.steps=9", "train.eval_every=4", "train.log_every=2",
    "train.save_every=3", "train.keep_checkpoints=5", "train.progress=false", "train.tensorboard=false",
]


def tiny(tmp_path, name, *extra):
    return load_config(None, TINY_MQAR + [f"out_dir={tmp_path / name}", *extra])


def _strip(records):
    return [{k: v for k, v in r.items() if k not in ("time", "tokens_per_s")} for r in records]


def test_resume_is_exact(tmp_path):
    full = train(tiny(tmp_path, "full"), quiet=True)
    part = train(tiny(tmp_path, "split", "train.stop_at_step=5"), quiet=True)
    assert part == {"stopped_at": 5, "out_dir": str(tmp_path / "split")}
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "split")] == [3, 5]
    resumed = train(tiny(tmp_path, "split"), quiet=True)
    assert resumed["final"] == full["final"]  # bit-exact metrics
    a = ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / "full", 9))
    b = ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / "split", 9))
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k, st in a["optimizer"]["state"].items():
        for n, t in st.items():
            assert torch.equal(t, b["optimizer"]["state"][k][n]), (k, n)
    assert a["data"] == b["data"]
    ma, mb = _strip(read_metrics(tmp_path / "full" / "metrics.jsonl")), _strip(read_metrics(tmp_path / "split" / "metrics.jsonl"))
    assert ma == mb
    assert {r["split"] for r in ma} == {"train", "test", "final"}
    res = json.loads((tmp_path / "full" / "results.json").read_text())
    assert res["final"]["test"]["acc_T32_kv4"] == full["final"]["test"]["acc_T32_kv4"]
    assert res["state_size_per_layer"] == [8 * 16, 8 * 16]  # Lattice: m * d per head
    assert (tmp_path / "full" / "model" / "config.json").is_file()


def test_resume_refuses_a_different_config(tmp_path):
    train(tiny(tmp_path, "r", "train.stop_at_step=3"), quiet=True)
    with pytest.raises(CheckpointError, match="optim.lr"):
        Trainer(tiny(tmp_path, "r", "optim.lr=0.5"), quiet=True)
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        Trainer(tiny(tmp_path, "r", "train.resume=never"), quiet=True)
    # only the run's own task section must match: a checkpoint written before the niah section existed,
    # or another task's section changed, still resumes
    path = ckpt.checkpoint_path(tmp_path / "r", 3)
    state = ckpt.load_checkpoint(path)
    del state["config"]["niah"]
    ckpt.save_checkpoint(state, path)
    Trainer(tiny(tmp_path, "r", "lm.seq_len=64", "niah.num_test=3"), quiet=True).close()
    with pytest.raises(CheckpointError, match="mqar.vocab_size"):
        Trainer(tiny(tmp_path, "r", "mqar.vocab_size=96"), quiet=True)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_checkpoint_is_a_clear_error(tmp_path, damage):
    train(tiny(tmp_path, "c", "train.stop_at_step=3"), quiet=True)
    p = ckpt.checkpoint_path(tmp_path / "c", 3)
    data = p.read_bytes()
    p.write_bytes({"garbage": b"not a checkpoint at all" * 10, "truncated": data[: len(data) // 2], "empty": b""}[damage])
    with pytest.raises(CheckpointError, match=r"no valid checkpoint.*step_00000003\.pt' is corrupt: checksum mismatch"):
        train(tiny(tmp_path, "c"), quiet=True)
    assert p.is_file()  # the only checkpoint is not moved aside: the run stops instead
    ckpt.checksum_path(p).unlink()  # without its checksum file the damage shows when unpickling
    with pytest.warns(UserWarning, match="no .sha256 checksum file"), \
            pytest.raises(CheckpointError, match="corrupt or truncated"):
        train(tiny(tmp_path, "c"), quiet=True)
    with pytest.raises(CheckpointError, match="not found"):
        train(tiny(tmp_path, "c", f"train.resume={tmp_path / 'nope.pt'}"), quiet=True)


def test_cli_reports_corrupt_checkpoint(tmp_path, capsys):
    from slotmem.cli import main

    train(tiny(tmp_path, "c", "train.stop_at_step=3"), quiet=True)
    ckpt.checkpoint_path(tmp_path / "c", 3).write_bytes(b"\x00" * 100)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("task: mqar\n")
    with pytest.raises(SystemExit) as e:
        main(["train", str(cfg_file)] + TINY_MQAR + [f"out_dir={tmp_path / 'c'}"])
    assert e.value.code == 2
    assert "checksum mismatch" in capsys.readouterr().err


def test_non_finite_loss_stops_and_keeps_the_good_checkpoint(tmp_path):
    cfg = tiny(tmp_path, "nan", "train.save_every=2")
    tr = Trainer(cfg, quiet=True)
    real = tr.fwd

    def poisoned(**batch):
        out = real(**batch)
        if tr.step >= 4:  # the 5th update gets a NaN loss
            out = {**out, "loss_sum": out["loss_sum"] * float("nan")}
        return out

    tr.fwd = poisoned
    with pytest.raises(NonFiniteError, match=r"non-finite training loss \(nan\) at step 5.*step_00000004\.pt"):
        tr.fit()
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "nan")] == [2, 4]
    good = ckpt.checkpoint_path(tmp_path / "nan", 4)
    before = good.read_bytes()
    # Saving non-finite parameters is refused and leaves the good checkpoint untouched.
    with torch.no_grad():
        next(tr.net.parameters()).fill_(float("inf"))
    with pytest.raises(NonFiniteError, match="refusing to save"):
        tr.save()
    assert good.read_bytes() == before
    assert not [p for p in (tmp_path / "nan" / "checkpoints").iterdir() if ".tmp" in p.name]
    state = ckpt.load_checkpoint(good)
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def test_lr_schedule():
    lrs = [lr_lambda(s, 10, 2, "cosine", 0.1) for s in range(10)]
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))
    assert lr_lambda(5, 10, 0, "constant", 0.0) == 1.0
    assert lr_lambda(9, 10, 0, "linear", 0.0) == pytest.approx(0.1)


def test_amp_and_compile_on_cpu_warn_and_run_fp32(tmp_path):
    with pytest.warns(UserWarning, match="precision=bf16 needs CUDA"):
        tr = Trainer(tiny(tmp_path, "amp", "train.precision=bf16", "train.compile=true", "train.steps=2"), quiet=True)
    try:
        assert tr.amp_dtype is None and tr.use_compile is False and tr.scaler is None
        before = {k: v.clone() for k, v in tr.objective.state_dict().items()}
        res = tr.fit()  # the fallback really trains: two fp32 optimizer steps
    finally:
        tr.close()
    assert res["step"] == 2 and tr.optimizer.state  # AdamW state exists only after a step
    after = tr.objective.state_dict()
    assert all(after[k].dtype == torch.float32 for k in after if after[k].is_floating_point())
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert math.isfinite(res["final"]["test"]["loss"])


def test_cpu_training_flushes_denormals(tmp_path):
    torch.set_flush_denormal(False)
    tiny_value = torch.tensor([1e-40])  # a float32 denormal
    assert tiny_value.item() != 0
    tr = Trainer(tiny(tmp_path, "dn", "train.steps=1"), quiet=True)
    tr.close()
    assert (torch.tensor([1e-40]) * 1.0).item() == 0  # flushed: denormal arithmetic is slow on x86


def test_resume_after_pruning_is_exact(tmp_path):
    full = train(tiny(tmp_path, "full", "train.keep_checkpoints=1"), quiet=True)
    train(tiny(tmp_path, "split", "train.keep_checkpoints=1", "train.stop_at_step=7"), quiet=True)
    # keep_checkpoints=1 pruned steps 3 and 6 (and their checksum files) when 6 and 7 were written
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "split")] == [7]
    assert sorted(p.name for p in (tmp_path / "split" / "checkpoints").iterdir()) == ["step_00000007.pt", "step_00000007.pt.sha256"]
    resumed = train(tiny(tmp_path, "split", "train.keep_checkpoints=1"), quiet=True)
    assert resumed["final"] == full["final"]
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "split")] == [9]
    ma, mb = _strip(read_metrics(tmp_path / "full" / "metrics.jsonl")), _strip(read_metrics(tmp_path / "split" / "metrics.jsonl"))
    assert ma == mb


# --------------------------------------------------------------------------- LM task


def _corpus(n_words=3000, seed=0):
    rng = np.random.default_rng(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "home"]
    return " ".join(words[i] for i in rng.integers(0, len(words), n_words))


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "hf"])
def test_lm_task_on_generated_text(tmp_path, fmt):
    text = _corpus()
    if fmt == "txt":
        src = tmp_path / "corpus.txt"
        src.write_text(text)
    elif fmt == "hf":  # a dataset saved with `datasets`' save_to_disk
        datasets = pytest.importorskip("datasets")
        src = tmp_path / "corpus_hf"
        datasets.Dataset.from_dict({"body": [text[i : i + 500] for i in range(0, len(text), 500)]}).save_to_disk(str(src))
    else:
        src = tmp_path / "corpus.jsonl"
        chunks = [text[i : i + 500] for i in range(0, len(text), 500)]
        src.write_text("".join(json.dumps({"body": c}) + "\n" for c in chunks))
    cfg = load_config(None, [
        "task=lm", f"lm.source={src}", "lm.text_field=body", "lm.seq_len=32", "lm.val_fraction=0.2",
        "lm.eval_lengths=[16, 32, 64]", "lm.max_eval_tokens=1024",
        "model.mixer=trellis", "model.hidden_size=16", "model.num_heads=2", "model.mixer_kwargs={num_slots: 8, chunk_size: 16}",
        "optim.lr=3e-3", "train.batch_size=8", "train.steps=6", "train.eval_every=3", "train.progress=false",
        "train.tensorboard=false", f"out_dir={tmp_path / 'lm'}",
    ])
    res = train(cfg, quiet=True)
    val = res["final"]["val"]
    assert math.isfinite(val["loss"]) and val["ppl"] == pytest.approx(math.exp(val["loss"]))
    assert val["bpb"] == pytest.approx(val["loss"] / math.log(2))
    assert val["ppl"] < 259  # below the uniform byte distribution after 6 steps
    rows = res["ppl_vs_length"]
    assert [r["length"] for r in rows] == [16, 32, 64]
    assert [r["beyond_training"] for r in rows] == [False, False, True]
    assert all(r["nll"] is not None and math.isfinite(r["nll"]) for r in rows)
    saved = tmp_path / "lm" / "model"
    assert (saved / "config.json").is_file() and (saved / "tokenizer.json").is_file()
    # The saved model reloads through the Auto classes and scores the same text identically.
    from transformers import AutoModelForCausalLM

    from slotmem.cli import main as cli_main

    model = AutoModelForCausalLM.from_pretrained(str(saved))
    assert type(model).__name__ == "TrellisForCausalLM"
    out = tmp_path / "ppl"
    cli_main(["eval", "perplexity", str(saved), str(src), "--text-field", "body", "--lengths", "32", "64",
              "--max-tokens", "1024", "--val-fraction", "0.2", "--train-len", "32", "--out", str(out), "--no-progress"])
    again = json.loads((out / "results.json").read_text())["rows"]
    assert again[0]["nll"] == pytest.approx(rows[1]["nll"], rel=1e-5)
    assert again[1]["nll"] == pytest.approx(rows[2]["nll"], rel=1e-5)


# --------------------------------------------------------------------------- time series


def _ett_like_csv(path, n=400, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    cols = {
        "HUFL": np.sin(2 * np.pi * t / 24) + 0.1 * rng.standard_normal(n),
        "MUFL": np.cos(2 * np.pi * t / 12) + 0.1 * rng.standard_normal(n),
        "OT": 0.5 * np.sin(2 * np.pi * t / 24 + 1) + 0.01 * t + 0.1 * rng.standard_normal(n),
    }
    lines = ["date," + ",".join(cols)]
    for i in range(n):
        lines.append(f"2016-07-{1 + i // 24:02d} {i % 24:02d}:00:00," + ",".join(f"{cols[c][i]:.5f}" for c in cols))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("features, head", [("M", "last"), ("MS", "flatten")])
def test_timeseries_task_on_generated_csv(tmp_path, features, head):
    csv = _ett_like_csv(tmp_path / "toy.csv")
    cfg = load_config(None, [
        "task=timeseries", f"timeseries.path={csv}", "timeseries.lookback=24", "timeseries.horizon=8",
        f"timeseries.features={features}", f"timeseries.head={head}",
        "model.mixer=lattice", "model.hidden_size=16", "model.num_heads=2", "model.mixer_kwargs={num_slots: 8, chunk_size: 8}",
        "optim.lr=3e-3", "train.batch_size=16", "train.steps=8", "train.eval_every=4", "train.progress=false",
        "train.tensorboard=false", f"out_dir={tmp_path / 'ts'}",
    ])
    res = train(cfg, quiet=True)
    for split in ("val", "test"):
        m = res["final"][split]
        assert math.isfinite(m["mse"]) and math.isfinite(m["mae"]) and m["windows"] > 0
    assert res["final"]["val"]["mse"] < 1.5  # z-normalised data: a trivial predictor scores ~1
    assert (tmp_path / "ts" / "model" / "forecast_model.pt").is_file()
    recs = read_metrics(tmp_path / "ts" / "metrics.jsonl")
    assert any(r["split"] == "val" and r["step"] == 4 for r in recs)


def test_forecast_model_shapes_and_revin():
    from slotmem.train.config import ModelConfig
    from slotmem.models.forecasting import ForecastModel
    from slotmem.train.tasks import build_backbone

    bb = build_backbone(ModelConfig(mixer="trellis", hidden_size=16, num_heads=2, mixer_kwargs={"num_slots": 4, "chunk_size": 8}))
    m = ForecastModel(bb, 16, n_in=3, n_out=3, lookback=12, horizon=5)
    x = torch.randn(2, 12, 3)
    y = m(x)
    assert y.shape == (2, 5, 3)
    # RevIN: shifting and scaling the input window shifts and scales the forecast the same way.
    y2 = m(x * 3.0 + 7.0)
    torch.testing.assert_close(y2, y * 3.0 + 7.0, rtol=1e-4, atol=1e-4)
    assert not any(p.requires_grad for p in bb.get_input_embeddings().parameters())


def test_tensorboard_optional(tmp_path, capsys, monkeypatch):
    import builtins

    import slotmem.train.metrics as metrics

    real_import = builtins.__import__

    def no_tensorboard(name, *a, **k):
        if name.startswith("torch.utils.tensorboard") or name == "tensorboard":
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    monkeypatch.setattr(metrics, "_TB_NOTICE_SHOWN", False)
    train(tiny(tmp_path, "notb", "train.tensorboard=true", "train.steps=2"), quiet=False)
    err = capsys.readouterr().err
    assert err.count("tensorboard is not installed") == 1
    assert (tmp_path / "notb" / "metrics.jsonl").is_file() and not (tmp_path / "notb" / "tensorboard").exists()


def test_tensorboard_writer_receives_every_scalar_and_purges_on_resume(tmp_path, monkeypatch):
    """Runs without the tensorboard package: a recording SummaryWriter stands in for
    torch.utils.tensorboard's (the real event files are checked below when it is installed)."""
    import sys
    import types

    made = []

    class Recorder:
        def __init__(self, log_dir, purge_step=None):
            self.log_dir, self.purge_step, self.scalars, self.closed = log_dir, purge_step, [], False
            made.append(self)

        def add_scalar(self, tag, value, step):
            self.scalars.append((tag, step, value))

        def flush(self):
            pass

        def close(self):
            self.closed = True

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Recorder))
    train(tiny(tmp_path, "tb", "train.tensorboard=true", "train.stop_at_step=6"), quiet=True)
    train(tiny(tmp_path, "tb", "train.tensorboard=true"), quiet=True)
    first, second = made
    assert first.log_dir == str(tmp_path / "tb" / "tensorboard") and first.purge_step is None and first.closed
    assert second.purge_step == 7  # events after the checkpoint's step are dropped on resume
    assert [s for t, s, _ in first.scalars if t == "train/loss"] == [2, 4, 6]
    assert [s for t, s, _ in second.scalars if t == "train/loss"] == [8]
    jsonl = {(f"{r['split']}/loss", r["step"]): r["loss"] for r in read_metrics(tmp_path / "tb" / "metrics.jsonl") if "loss" in r}
    for tag, step, v in first.scalars + second.scalars:
        if tag.endswith("/loss") and not tag.startswith("final"):
            assert jsonl[(tag, step)] == v  # the same numbers as metrics.jsonl


def test_tensorboard_events_when_installed(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(tiny(tmp_path, "tb", "train.tensorboard=true"), quiet=True)
    ea = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    ea.Reload()
    assert [e.step for e in ea.Scalars("train/loss")] == [2, 4, 6, 8]
