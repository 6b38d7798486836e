"""What trained Trellis models write on MQAR: per layer, the write size ``γ‖k‖²`` at the context's key
and value tokens and after the context, the forget gate β, the key norm ``‖k‖``, and how alike the
slot target codes ``α`` of different pairs are (mean cosine between the slot-centred ``α`` of the
context's key tokens, and of its value tokens: ~0 for distinct codes, → 1 when they collapse to one).

``γ‖k‖²`` is how far one write moves the written key's response; a model in the first-chunk regime
(``docs/ablations.md``) writes with ``γ‖k‖² ≫ 1``, a learned recall layer with ~0.3–0.6. Give trained
model folders (a ``slotmem compare`` run's ``.../model``); the test stream is the comparison's.

    python benchmarks/trellis_write_gates.py RUN/model [RUN2/model ...] --seq-len 128 --kv 16 --seed 0
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from _trellis_inputs import trellis_op_inputs

from slotmem.data.mqar import MQARConfig, generate_mqar
from slotmem.models import SlotMemForCausalLM


def write_gates(model, seq_len: int, kv: int, examples: int, vocab: int, seed: int) -> list[dict]:
    """One dict per Trellis layer: mean γ‖k‖² at keys / values / after the context, mean β, mean ‖k‖, and the
    mean pairwise cosine of the slot-centred α among the context's key tokens / value tokens (head 0)."""
    x, _ = generate_mqar(MQARConfig(seq_len, kv, examples, vocab, seed=seed), "test")
    rows = []
    for c in trellis_op_inputs(model, x):
        k, alpha, beta, gamma = c["k"], c["alpha"], c["beta"], c["gamma"]  # k [B, T, H, d]; alpha [B, T, H, m]; beta, gamma [B, T, H]
        size = gamma * k.pow(2).sum(-1)
        ctx = 2 * kv
        rows.append(dict(keys=size[:, 0:ctx:2].mean().item(), values=size[:, 1:ctx:2].mean().item(),
                         after=size[:, ctx:].mean().item(), beta=beta.mean().item(), k_norm=k.norm(dim=-1).mean().item(),
                         alpha_cos_keys=_mean_cosine(alpha[:, 0:ctx:2, 0]), alpha_cos_values=_mean_cosine(alpha[:, 1:ctx:2, 0])))
    return rows


def _mean_cosine(a: torch.Tensor) -> float:
    """a [B, n, m] -> mean cosine between the n slot-centred codes of each example, over distinct pairs."""
    a = F.normalize(a.float() - a.float().mean(-1, keepdim=True), dim=-1)
    n = a.shape[1]
    return ((a @ a.transpose(1, 2)).sum((1, 2)) - n).mean().item() / (n * (n - 1))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="trained Trellis model folders (save_pretrained format)")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--kv", type=int, default=16)
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=256, help="the vocabulary the models were trained on")
    ap.add_argument("--seed", type=int, default=0, help="mqar.seed of the training config (the test stream)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print("| model | layer | γ‖k‖² keys | γ‖k‖² values | γ‖k‖² after context | β | ‖k‖ | cos α keys | cos α values |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in args.models:
        model = SlotMemForCausalLM.from_pretrained(path).eval()
        for i, r in enumerate(write_gates(model, args.seq_len, args.kv, args.examples, args.vocab, args.seed)):
            print(f"| {path} | {i} | {r['keys']:.3f} | {r['values']:.3f} | {r['after']:.3f} | {r['beta']:.4f} | {r['k_norm']:.2f} | "
                  f"{r['alpha_cos_keys']:.2f} | {r['alpha_cos_values']:.2f} |")


if __name__ == "__main__":
    main()
