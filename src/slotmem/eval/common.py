"""Shared evaluation plumbing: sharding over processes, summing, eval mode."""
from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn as nn


def world(info) -> tuple[int, int]:
    """``(rank, world_size)`` of a ``DistInfo`` (or ``(0, 1)`` for None)."""
    if info is None or not getattr(info, "enabled", False):
        return 0, 1
    return info.rank, info.world_size


def sharded_batches(n: int, batch_size: int, info=None):
    """Yield ``(indices, real)`` for this process's share of ``n`` items (every ``world``-th).

    Every process yields the SAME number of batches (FSDP needs each forward on every
    rank): a process that has run out yields ``(array([0]), False)`` -- run it, discard it.
    """
    rank, ws = world(info)
    mine = np.arange(rank, n, ws)
    per_rank = math.ceil(math.ceil(n / ws) / batch_size) if n else 0
    for j in range(per_rank):
        idx = mine[j * batch_size : (j + 1) * batch_size]
        yield (idx, True) if len(idx) else (np.zeros(1, dtype=np.int64), False)


def per_example_outputs(obj, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int, info=None):
    """Run a ``TokenObjective`` with ``per_example=True`` over this process's share of ``inputs`` /
    ``labels`` ([N, T] each), batch by batch; yield the outputs of the real batches (the padding
    batches of ``sharded_batches`` run, for FSDP, and are dropped)."""
    dev = module_device(obj)
    for idx, real in sharded_batches(inputs.shape[0], batch_size, info):
        i = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        out = obj(inputs[i].to(dev), labels[i].to(dev), per_example=True)
        if real:
            yield out


def reduce_sums(values: dict, info=None) -> dict:
    """Sum float values over processes (float64, one all-reduce)."""
    keys = sorted(values)
    _, ws = world(info)
    if ws == 1:
        return {k: float(values[k]) for k in keys}
    import torch.distributed as dist

    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return {k: float(v) for k, v in zip(keys, t.cpu().tolist())}


def module_device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


class eval_mode:
    """``with eval_mode(module):`` -- eval() and no_grad, restoring the training flag after."""

    def __init__(self, module: nn.Module, autocast=None) -> None:
        self.module, self.autocast = module, autocast or nullcontext()

    def __enter__(self):
        self.was_training = self.module.training
        self.module.eval()
        self.nograd = torch.no_grad()
        self.nograd.__enter__()
        self.autocast.__enter__()
        return self.module

    def __exit__(self, *exc):
        self.autocast.__exit__(*exc)
        self.nograd.__exit__(*exc)
        self.module.train(self.was_training)
        return False
