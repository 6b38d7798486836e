"""Bit-identity of training: the same seed gives the same per-step MQAR loss curve as the
recorded fixture ``tests/data/mqar_loss_curve.json``, to the last bit (float32, CPU, 1 thread).

The fixture was recorded before the structural refactor of issue #13 and guards it: any change
of numerics, defaults, initialisation or data order shows up here. A deliberate numeric change
regenerates it with ``SLOTMEM_REGEN_LOSS_CURVE=1 python -m pytest tests/test_bit_identity.py``
(and says so in the commit).
"""
import json
import os
from pathlib import Path

import pytest
import torch

from slotmem.train.config import load_config
from slotmem.train.trainer import Trainer

FIXTURE = Path(__file__).parent / "data" / "mqar_loss_curve.json"
STEPS = 20

# Every model key is explicit, so the run does not depend on where defaults live.
MODEL = {
    "lattice": ["model.mixer=lattice", "model.mixer_kwargs={num_slots: 8, chunk_size: 8}"],
    "trellis": ["model.mixer=trellis", "model.mixer_kwargs={num_slots: 8, chunk_size: 8}"],
    "gla": ["model.mixer=gla", "model.mixer_kwargs={}"],
}
COMMON = [
    "task=mqar", "seed=3", "model.hidden_size=16", "model.num_hidden_layers=2", "model.num_heads=1",
    "model.use_mlp=true", "mqar.vocab_size=64", "mqar.seed=1",
    "mqar.train=[{seq_len: 16, num_kv_pairs: 2, num_examples: 64}, {seq_len: 32, num_kv_pairs: 4, num_examples: 32}]",
    "mqar.test=[{seq_len: 16, num_kv_pairs: 2, num_examples: 4}]",
    "optim.lr=1e-2", "optim.warmup_steps=3", f"train.steps={STEPS}", "train.batch_size=8",
    "train.progress=false", "train.tensorboard=false", "train.device=cpu",
]


def loss_curve(mixer: str, out_dir: Path) -> list[float]:
    cfg = load_config(None, COMMON + MODEL[mixer] + [f"out_dir={out_dir}"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    trainer = Trainer(cfg, quiet=True)
    try:
        return [trainer.train_step()["metrics"]["loss"] for _ in range(STEPS)]
    finally:
        trainer.close()
        torch.set_num_threads(threads)


@pytest.mark.parametrize("mixer", sorted(MODEL))
def test_mqar_loss_curve_is_bit_identical(mixer, tmp_path):
    got = loss_curve(mixer, tmp_path / mixer)
    if os.environ.get("SLOTMEM_REGEN_LOSS_CURVE") == "1":
        data = json.loads(FIXTURE.read_text()) if FIXTURE.is_file() else {}
        data[mixer] = got
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        FIXTURE.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"regenerated {FIXTURE.name}[{mixer}]")
    want = json.loads(FIXTURE.read_text())[mixer]
    assert len(got) == STEPS
    assert got == want, [i for i, (a, b) in enumerate(zip(got, want)) if a != b]
