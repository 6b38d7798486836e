"""Multi-Query Associative Recall (MQAR), the Zoology protocol (Arora, Eyuboglu et al., 2023).

One example of length ``T`` (``seq_len``) with ``kv`` (``num_kv_pairs``) pairs::

    position   0   1   2   3  ...  2kv-2 2kv-1 | 2kv ........................... T-1
    input      k1  v1  k2  v2 ...  kkv   vkv   | filler, with the kv keys queried at
                                               | even offsets 2*g_j of this region
    label     -100 everywhere except at a query key's position, where it is that
               key's value (the next token the model must predict).

The generator follows Zoology's ``multiquery_ar`` (re-implemented, vectorised):

* keys are drawn without replacement from ``[1, vocab/2)``, values without replacement
  from ``[vocab/2, vocab)``; pair ``j`` is ``(key_j, value_j)``;
* the query region after the ``2*kv`` context tokens has ``S = (T - 2*kv) // 2`` slots
  (offsets ``0, 2, 4, ...``); ``kv`` distinct slots ``g_1..g_kv`` are drawn *in order*
  without replacement with probability proportional to ``a * i**(a - 1)`` for slot
  ``i = 1..S`` (``a = power_a``, 0.01 by default: queries sit close to the context, a
  power law as for bigram re-use gaps in text), and key ``j`` is placed at offset
  ``2*g_j``. Successive weighted sampling without replacement (what
  ``numpy.random.choice(replace=False, p=...)`` does) is drawn here with the
  equivalent Gumbel-top-k trick: the order of ``argsort(log p + Gumbel)`` has exactly
  the same distribution;
* every other position of the query region (odd offsets, unused even offsets) is
  filler drawn uniformly from the WHOLE vocabulary ``[0, vocab)``, as Zoology's
  ``random_non_queries=True`` does (so filler may, rarely, repeat a key or value);
* sequences are built with ``T + 1`` tokens; ``inputs = x[:, :-1]`` and
  ``labels = y[:, 1:]``, which puts each value label at its query key's position.

Deviations from Zoology, all deliberate: the random streams are numpy ``PCG64``
generators seeded from ``(seed, split, seq_len, num_kv_pairs)`` (Zoology seeds the
global numpy RNG and draws the filler from the unseeded global torch RNG), so the data
are reproducible and the train and test streams are independent, but not bit-identical
to Zoology's; Zoology's ``T even`` and ``vocab > T`` asserts are replaced by the
conditions that are actually needed (``4*kv <= T``, ``kv <= vocab/2 - 1``).

Labels are already shifted: ``labels[:, t]`` is the target of the prediction made at
position ``t``. Compute the loss as ``cross_entropy(logits.flatten(0, 1),
labels.flatten(), ignore_index=-100)``; do not hand them to a Hugging Face model's
``labels=`` argument, which shifts once more.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..checks import check_choice

IGNORE_INDEX = -100
SPLITS = ("train", "val", "test")
# Distinct spawn-key tags per split: the train, validation and test random streams never
# overlap ('val' is what ``slotmem compare`` selects learning rates on; tag 2 keeps the
# existing train/test streams unchanged).
_SPLIT_TAG = {"train": 0, "test": 1, "val": 2}


def _check_int(name: str, value, minimum: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class MQARConfig:
    """One MQAR setting: ``num_examples`` sequences of ``seq_len`` tokens with
    ``num_kv_pairs`` key-value pairs, all queried. Validated on construction."""

    seq_len: int
    num_kv_pairs: int
    num_examples: int
    vocab_size: int = 8192
    power_a: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        _check_int("seq_len", self.seq_len, 4)
        _check_int("num_kv_pairs", self.num_kv_pairs, 1)
        _check_int("num_examples", self.num_examples, 1)
        _check_int("vocab_size", self.vocab_size, 4)
        _check_int("seed", self.seed, 0)
        kv, T = self.num_kv_pairs, self.seq_len
        if 4 * kv > T:
            raise ValueError(
                f"seq_len={T} is too short for num_kv_pairs={kv}: the context takes 2*kv={2 * kv} tokens "
                f"and the query region needs kv={kv} even slots, so seq_len >= 4*kv={4 * kv} is required"
            )
        n_keys = self.vocab_size // 2 - 1
        n_values = self.vocab_size - self.vocab_size // 2
        if kv > n_keys or kv > n_values:
            raise ValueError(
                f"vocab_size={self.vocab_size} is too small for num_kv_pairs={kv}: keys come from "
                f"[1, {self.vocab_size // 2}) ({n_keys} tokens), values from "
                f"[{self.vocab_size // 2}, {self.vocab_size}); need vocab_size >= {2 * kv + 2}"
            )
        if not isinstance(self.power_a, (int, float)) or isinstance(self.power_a, bool) or not self.power_a > 0:
            raise ValueError(f"power_a must be a float > 0 (1.0 = uniform query placement), got {self.power_a!r}")

    @property
    def num_query_slots(self) -> int:
        """``S = (T - 2*kv) // 2``: the even offsets of the query region a key may take."""
        return (self.seq_len - 2 * self.num_kv_pairs) // 2


def query_slot_probs(num_slots: int, power_a: float = 0.01) -> np.ndarray:
    """``p_i ∝ a * i**(a - 1)`` for slots ``i = 1..num_slots``, normalised; shape ``[num_slots]``."""
    i = np.arange(1, num_slots + 1, dtype=np.float64)
    p = power_a * i ** (power_a - 1.0)
    return p / p.sum()


def _rng(cfg: MQARConfig, split: str) -> np.random.Generator:
    ss = np.random.SeedSequence(entropy=cfg.seed, spawn_key=(_SPLIT_TAG[split], cfg.seq_len, cfg.num_kv_pairs))
    return np.random.default_rng(ss)


def _distinct_ints(rng: np.random.Generator, n: int, k: int, low: int, high: int) -> np.ndarray:
    """``[n, k]`` ints from ``[low, high)``, each row a uniformly random ordered k-subset.

    Draw with replacement, then redraw every repeat of an earlier entry until all rows are
    distinct; the rule ignores the values, so it commutes with any relabelling of the range
    and every ordered tuple of distinct values is equally likely.
    """
    out = rng.integers(low, high, size=(n, k), dtype=np.int64)
    rows = np.arange(n)[:, None]
    while True:
        order = np.argsort(out, axis=1, kind="stable")
        srt = np.take_along_axis(out, order, axis=1)
        dup = np.zeros_like(out, dtype=bool)
        # Among equal values the stable sort keeps the earliest column first: flag the later ones.
        dup[np.broadcast_to(rows, order.shape)[:, 1:], order[:, 1:]] = srt[:, 1:] == srt[:, :-1]
        n_dup = int(dup.sum())
        if n_dup == 0:
            return out
        out[dup] = rng.integers(low, high, size=n_dup, dtype=np.int64)


def _weighted_order_without_replacement(rng: np.random.Generator, n: int, k: int, p: np.ndarray) -> np.ndarray:
    """``[n, k]`` slot indices, each row k successive draws without replacement from ``p``."""
    gumbel = -np.log(-np.log(rng.random((n, p.shape[0]))))
    scores = np.log(p)[None, :] + gumbel
    if k < p.shape[0]:
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        top = np.broadcast_to(np.arange(p.shape[0]), (n, p.shape[0])).copy()
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def generate_mqar(cfg: MQARConfig, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Generate ``(inputs, labels)``, both ``LongTensor [N, T]`` (``N = num_examples``).

    ``split`` ('train', 'val' or 'test') selects an independent random stream for the same
    ``seed``; the result is a deterministic function of ``(cfg, split)``.
    """
    if not isinstance(cfg, MQARConfig):
        raise TypeError(f"cfg must be an MQARConfig, got {type(cfg).__name__}")
    check_choice("split", split, SPLITS)
    rng = _rng(cfg, split)
    N, T, kv, V = cfg.num_examples, cfg.seq_len, cfg.num_kv_pairs, cfg.vocab_size
    half = V // 2
    ctx = 2 * kv

    keys = _distinct_ints(rng, N, kv, 1, half)
    values = _distinct_ints(rng, N, kv, half, V)
    slots = _weighted_order_without_replacement(rng, N, kv, query_slot_probs(cfg.num_query_slots, cfg.power_a))
    qpos = ctx + 2 * slots  # query key positions in the T+1 sequence (and in inputs)

    # Filler first, then the context and the queries on top of it.
    seq = rng.integers(0, V, size=(N, T + 1), dtype=np.int64)
    seq[:, 0:ctx:2] = keys
    seq[:, 1:ctx:2] = values
    np.put_along_axis(seq, qpos, keys, axis=1)

    tgt = np.full((N, T + 1), IGNORE_INDEX, dtype=np.int64)
    np.put_along_axis(tgt, qpos + 1, values, axis=1)  # the value follows its query key
    return torch.from_numpy(seq[:, :-1].copy()), torch.from_numpy(tgt[:, 1:].copy())
