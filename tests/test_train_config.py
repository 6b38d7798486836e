"""The run configuration: strict YAML schema, dotted overrides, clear errors."""
import pytest

from slotmem.train.config import Config, load_config, parse_override
from slotmem.train.errors import ConfigError


def _write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_and_nested_sections(tmp_path):
    p = _write(tmp_path, """
task: mqar
model: {mixer: trellis, hidden_size: 32, mixer_kwargs: {num_slots: 16}}
optim: {lr: 1e-3, betas: [0.9, 0.99]}
mqar:
  vocab_size: 128
  train: [{seq_len: 32, num_kv_pairs: 2, num_examples: 64}]
  test: [{seq_len: 32, num_kv_pairs: 2, num_examples: 8}]
""")
    cfg = load_config(p)
    assert isinstance(cfg, Config)
    assert cfg.model.mixer == "trellis" and cfg.model.mixer_kwargs == {"num_slots": 16}
    assert cfg.optim.lr == pytest.approx(1e-3)  # '1e-3' is a YAML 1.1 string; the schema converts it
    assert cfg.mqar.train[0].seq_len == 32
    assert cfg.train.batch_size == 32  # default
    assert str(cfg.output_dir) == "outputs/run"


@pytest.mark.parametrize("text, key", [
    ("lr: 0.1\n", "'lr'"),
    ("optim: {lrr: 0.1}\n", "'optim.lrr'"),
    ("mqar: {train: [{seq_len: 64, num_kv_pairs: 4, num_examples: 10, oops: 1}]}\n", "'mqar.train[0].oops'"),
])
def test_unknown_key_is_an_error_naming_it(tmp_path, text, key):
    with pytest.raises(ConfigError, match=f"unknown config key {key}".replace("[", r"\[").replace("]", r"\]")):
        load_config(_write(tmp_path, text))


def test_overrides(tmp_path):
    p = _write(tmp_path, "task: mqar\n")
    cfg = load_config(p, ["optim.lr=3e-3", "train.steps=7", "model.mixer_kwargs.num_slots=8",
                          "mqar.test=[{seq_len: 64, num_kv_pairs: 4, num_examples: 5}]", "train.stop_at_step=null"])
    assert cfg.optim.lr == pytest.approx(3e-3)
    assert cfg.train.steps == 7
    assert cfg.model.mixer_kwargs == {"num_slots": 8}
    assert cfg.mqar.test[0].num_examples == 5
    with pytest.raises(ConfigError, match="unknown config key 'optim.lrr'"):
        load_config(p, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="unknown config key 'optimm'"):
        load_config(p, ["optimm.lr=1"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(p, ["optim.lr"])
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    cfg = load_config(p, ["model.mixer=trellis", "model.layer_kwargs.0.forget_gate=false"])  # one layer's knob
    assert cfg.model.layer_kwargs == {"0": {"forget_gate": False}}
    from slotmem.train.config import model_config
    assert model_config(cfg.model, 64).layer_mixer(0)[1] == {"forget_gate": False}


@pytest.mark.parametrize("override, match", [
    ("train.steps=ten", "'train.steps': expected an integer"),
    ("train.steps=0", "'train.steps' must be > 0"),
    ("train.compile=yes please", "'train.compile': expected true/false"),
    ("task=vision", "'task': 'vision' is not valid"),
    ("optim.schedule=step", "'optim.schedule'"),
    ("train.precision=fp8", "'train.precision'"),
    ("train.grad_accum=3", "not divisible by train.grad_accum"),
    ("mqar.train=[{seq_len: 8, num_kv_pairs: 4, num_examples: 10}]", r"mqar.train\[0\]"),
    ("optim.betas=[0.9]", "'optim.betas'"),
])
def test_bad_values(tmp_path, override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(_write(tmp_path, "task: mqar\n"), [override])


def test_missing_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="'lm.source' is required"):
        load_config(_write(tmp_path, "task: lm\n"))
    with pytest.raises(ConfigError, match="'timeseries.path' is required"):
        load_config(_write(tmp_path, "task: timeseries\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(_write(tmp_path, "- 1\n- 2\n"))


def test_missing_data_file_stops_the_runner(tmp_path):
    from slotmem.train import train

    cfg = load_config(None, ["task=lm", f"lm.source={tmp_path / 'missing.txt'}", f"out_dir={tmp_path / 'o'}"])
    with pytest.raises(ConfigError, match="data file not found"):
        train(cfg, quiet=True)
    cfg = load_config(None, ["task=timeseries", f"timeseries.path={tmp_path / 'missing.csv'}", f"out_dir={tmp_path / 'o'}"])
    with pytest.raises(ConfigError, match="data file not found"):
        train(cfg, quiet=True)


def test_cli_reports_config_errors(tmp_path, capsys):
    from slotmem.cli import main

    p = _write(tmp_path, "task: mqar\nmodel: {mixr: lattice}\n")
    with pytest.raises(SystemExit) as e:
        main(["train", str(p)])
    assert e.value.code == 2
    assert "unknown config key 'model.mixr'" in capsys.readouterr().err


def test_model_section_is_the_model_schema():
    """The model: section has SlotMemConfig's keys and defaults (vocab_size: the task's; plus pretrained),
    and model_identity gives the pre-issue-13 form that resumes and comparison hashes compare."""
    import dataclasses

    from slotmem.models import SlotMemConfig
    from slotmem.models.configuration_slotmem import config_fields
    from slotmem.train.config import ModelConfig, model_config, model_identity, to_dict

    section = {f.name: f for f in dataclasses.fields(ModelConfig)}
    assert set(section) == {f.name for f in config_fields()} | {"pretrained"}
    built = model_config(ModelConfig(), vocab_size=7)
    reference = SlotMemConfig(vocab_size=7)
    assert {f.name: getattr(built, f.name) for f in config_fields()} == {f.name: getattr(reference, f.name)
                                                                         for f in config_fields()}
    old = {"mixer": "lattice", "hidden_size": 64, "num_hidden_layers": 2, "num_heads": 1, "use_mlp": True,
           "mixer_kwargs": {}, "attn_layers": [], "attn_window": None, "vocab_size": None, "extra": {},
           "pretrained": None}  # a checkpoint's model section written before the change
    assert model_identity(to_dict(ModelConfig())) == model_identity(old) == old
    assert model_identity(to_dict(ModelConfig(norm_eps=1e-6)))["norm_eps"] == 1e-6
