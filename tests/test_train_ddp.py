"""Multi-process training: ``torchrun`` with 2 CPU processes on gloo, DDP and FSDP.

Both ranks must end with bit-identical parameters (DDP: the runner checks the replicas'
SHA-256 and writes them to results.json), and the result must match a single-process run
of the same global batch up to floating-point summation order.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

from slotmem.train import checkpoint as ckpt
from slotmem.train.config import load_config
from slotmem.train.trainer import train

CONFIG = """
task: mqar
model: {mixer: lattice, hidden_size: 16, num_heads: 1, use_mlp: false, mixer_kwargs: {num_slots: 8, chunk_size: 8}}
mqar:
  vocab_size: 64
  train: [{seq_len: 16, num_kv_pairs: 2, num_examples: 64}, {seq_len: 32, num_kv_pairs: 4, num_examples: 32}]
  test: [{seq_len: 16, num_kv_pairs: 2, num_examples: 10}, {seq_len: 32, num_kv_pairs: 4, num_examples: 7}]
optim: {lr: 1.0e-2, warmup_steps: 1}
train: {batch_size: 8, grad_accum: 2, steps: 4, eval_every: 2, log_every: 1, progress: false, tensorboard: false}
"""


def _torchrun(cfg_path, out_dir, *overrides):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "slotmem.cli", "train", str(cfg_path), f"out_dir={out_dir}", *overrides]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out_dir / "results.json").read_text())


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one(tmp_path, strategy):
    cfg_path = tmp_path / "ddp.yaml"
    cfg_path.write_text(CONFIG)
    multi = _torchrun(cfg_path, tmp_path / "multi", f"distributed.strategy={strategy}")
    single = train(load_config(cfg_path, [f"out_dir={tmp_path / 'single'}"]), quiet=True)
    assert multi["world_size"] == 2 and single["world_size"] == 1
    if strategy == "ddp":
        h = multi["replica_param_sha256"]
        assert len(h) == 2 and h[0] == h[1]
    a = ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / "multi", 4))
    b = ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / "single", 4))
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-5, atol=1e-5, msg=k)
    for name in multi["final"]["test"]:
        assert multi["final"]["test"][name] == pytest.approx(single["final"]["test"][name], abs=1e-5)
