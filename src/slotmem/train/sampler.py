"""Deterministic, resumable batch order.

Training data are one or more *groups* of equally long examples (MQAR: one group per
(T, kv) slice; LM and time series: one group). An epoch is a fixed function of
``(seed, epoch)``: each group is permuted, cut into global batches of ``batch_size``
(an incomplete tail batch is dropped), and the batches of all groups are shuffled
together, so each group appears in proportion to its size and a batch never mixes
lengths. The position ``(epoch, index)`` is all the state there is; a checkpoint stores
it and a resumed run continues with exactly the batches an uninterrupted run would see.
"""
from __future__ import annotations

import numpy as np

from .errors import ConfigError


class BatchPlan:
    def __init__(self, group_sizes: list[int], batch_size: int, seed: int, group_names: list[str] | None = None) -> None:
        self.group_sizes = [int(n) for n in group_sizes]
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        names = group_names or [f"group {i}" for i in range(len(group_sizes))]
        for n, name in zip(self.group_sizes, names):
            if n < self.batch_size:
                raise ConfigError(
                    f"training data {name} has {n} examples, fewer than one global batch (train.batch_size="
                    f"{self.batch_size}); add data or lower train.batch_size"
                )
        self.batches_per_epoch = sum(n // self.batch_size for n in self.group_sizes)
        self.epoch = 0
        self.index = 0
        self._plan_epoch: int | None = None
        self._plan: list[tuple[int, np.ndarray]] = []

    def _make_plan(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, 0x5107]))
        batches = []
        for g, n in enumerate(self.group_sizes):
            perm = rng.permutation(n)
            for b in range(n // self.batch_size):
                batches.append((g, perm[b * self.batch_size : (b + 1) * self.batch_size]))
        order = rng.permutation(len(batches))
        return [batches[i] for i in order]

    def next(self) -> tuple[int, np.ndarray]:
        """The next global batch: ``(group, indices [batch_size])``; advances the position."""
        if self.index >= self.batches_per_epoch:
            self.epoch += 1
            self.index = 0
        if self._plan_epoch != self.epoch:
            self._plan = self._make_plan(self.epoch)
            self._plan_epoch = self.epoch
        g, idx = self._plan[self.index]
        self.index += 1
        return g, idx

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed, "batch_size": self.batch_size,
                "group_sizes": list(self.group_sizes)}

    def load_state_dict(self, state: dict) -> None:
        for k in ("seed", "batch_size", "group_sizes"):
            mine = getattr(self, k)
            if list(state[k]) != list(mine) if isinstance(mine, list) else state[k] != mine:
                raise ConfigError(
                    f"cannot resume: the checkpoint's data plan has {k}={state[k]!r}, this config gives {mine!r}; "
                    "resume with the same data, seed and train.batch_size, or start a new out_dir"
                )
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
