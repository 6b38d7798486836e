"""``slotmem compare``: the default comparison file parses, runs (shrunk to a few steps) and writes
its table, JSON and plot; run selection and per-run overrides work; errors are clear."""
import json

import pytest

from slotmem.eval.compare import DEFAULT_CONFIG, load_compare_config, run_compare
from slotmem.train.errors import ConfigError

SHRINK = [
    "model.hidden_size=16",
    "mqar.vocab_size=64",
    "mqar.train=[{seq_len: 16, num_kv_pairs: 2, num_examples: 32}, {seq_len: 32, num_kv_pairs: 4, num_examples: 16}]",
    "mqar.test=[{seq_len: 16, num_kv_pairs: 2, num_examples: 8}, {seq_len: 32, num_kv_pairs: 4, num_examples: 8}]",
    "train.steps=3", "train.batch_size=8", "train.progress=false", "train.tensorboard=false",
    "Lattice:model.mixer_kwargs={num_slots: 8, chunk_size: 8}",
    "Trellis:model.mixer_kwargs={num_slots: 8, chunk_size: 8}",
]


def test_default_config_lists_the_four_models_at_equal_width():
    name, runs = load_compare_config(DEFAULT_CONFIG)
    assert [label for label, _ in runs] == ["Lattice", "Trellis", "Gated DeltaNet", "Transformer++"]
    assert [c.model.mixer for _, c in runs] == ["lattice", "trellis", "gated_deltanet", "attention"]
    assert len({(c.model.hidden_size, c.model.num_hidden_layers, c.model.use_mlp) for _, c in runs}) == 1
    assert all(c.model.num_hidden_layers == 2 and not c.model.use_mlp for _, c in runs)


def test_compare_runs_and_writes_outputs(tmp_path, capsys):
    res = run_compare(DEFAULT_CONFIG, SHRINK, out=tmp_path / "cmp")
    out = capsys.readouterr().out
    for label in ("Lattice", "Trellis", "Gated DeltaNet", "Transformer++"):
        assert label in out
    assert "T16/kv2" in out and "state/layer" in out
    saved = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert [r["label"] for r in saved["runs"]] == ["Lattice", "Trellis", "Gated DeltaNet", "Transformer++"]
    by = {r["label"]: r for r in saved["runs"]}
    assert by["Lattice"]["state_size_per_layer"] == 8 * 16
    assert by["Transformer++"]["state_grows"] and by["Transformer++"]["state_size_per_layer"] == 2 * 16 * 32
    assert all(0.0 <= s["acc"] <= 1.0 for r in saved["runs"] for s in r["slices"])
    png = (tmp_path / "cmp" / "accuracy_vs_state.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert (tmp_path / "cmp" / "table.txt").read_text().count("\n") >= 6


def test_only_and_per_run_overrides(tmp_path):
    _, runs = load_compare_config(DEFAULT_CONFIG, ["train.steps=7", "Trellis:optim.lr=1e-3"])
    cfg = dict(runs)
    assert cfg["Trellis"].optim.lr == pytest.approx(1e-3) and cfg["Lattice"].optim.lr == pytest.approx(1e-2)
    assert all(c.train.steps == 7 for c in cfg.values())
    res = run_compare(DEFAULT_CONFIG, SHRINK, out=tmp_path / "one", only="Lattice", quiet=True)
    assert [r["label"] for r in res["runs"]] == ["Lattice"]
    with pytest.raises(ConfigError, match="unknown run label"):
        run_compare(DEFAULT_CONFIG, SHRINK, out=tmp_path / "x", only="Mamba", quiet=True)
    with pytest.raises(ConfigError, match="unknown run label"):
        load_compare_config(DEFAULT_CONFIG, ["Mamba:optim.lr=1e-3"])
    with pytest.raises(ConfigError, match="unknown config key 'optim.lrr'"):
        load_compare_config(DEFAULT_CONFIG, ["optim.lrr=1"])


def test_bad_comparison_files(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("base: {task: mqar}\nruns:\n  - {label: A, overrides: {model: {mixer: lattice, mixr: 1}}}\n")
    with pytest.raises(ConfigError, match="run 'A': unknown config key 'model.mixr'"):
        load_compare_config(p)
    p.write_text("base: {task: mqar}\nruns: []\n")
    with pytest.raises(ConfigError, match="at least one run"):
        load_compare_config(p)
    p.write_text("base: {task: mqar}\nrunz: []\n")
    with pytest.raises(ConfigError, match="unknown key 'runz'"):
        load_compare_config(p)
    p.write_text("base: {task: mqar}\nruns:\n  - {label: A, overrides: {model: {mixer: no_such_mixer}}}\n")
    with pytest.raises(ConfigError, match="no_such_mixer"):
        run_compare(p, out=tmp_path / "o", quiet=True)
