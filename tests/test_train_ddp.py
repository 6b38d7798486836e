"""Multi-process training: ``torchrun`` with 2 CPU processes on gloo, DDP and FSDP.

Both ranks must end with bit-identical parameters (DDP: the runner checks the replicas'
SHA-256 and writes them to results.json), and the result must match a single-process run
of the same global batch up to floating-point summation order.
"""
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid``, deepest first (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found[::-1]


def _torchrun(cfg_path, out_dir, *overrides):
    """Run ``torchrun`` with 2 ranks; on a hang, every process of the job prints its Python stack
    (faulthandler on SIGABRT) and the test fails with that output instead of a bare timeout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "slotmem.cli", "train", str(cfg_path), f"out_dir={out_dir}", *overrides]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        job = _descendants(proc.pid) + [proc.pid]  # torchrun puts its workers in their own sessions
        for sig in (signal.SIGABRT, signal.SIGKILL):
            for pid in job:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            time.sleep(2)
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"torchrun did not finish in 240 s; stacks of the job's processes:\n{out[-4000:]}\n{err[-12000:]}")
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
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
