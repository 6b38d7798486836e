"""What trained Trellis models write on MQAR: per layer, the write size ``γ‖k‖²`` at the context's key
and value tokens and after the context, the forget gate β and the key norm ``‖k‖``.

``γ‖k‖²`` is how far one write moves the written key's response; a model in the first-chunk regime
(``docs/ablations.md``) writes with ``γ‖k‖² ≫ 1``, a learned recall layer with ~0.3–0.6. Give trained
model folders (a ``slotmem compare`` run's ``.../model``); the test stream is the comparison's.

    python benchmarks/trellis_write_gates.py RUN/model [RUN2/model ...] --seq-len 128 --kv 16 --seed 0
"""
from __future__ import annotations

import argparse

import torch

import slotmem.layers.trellis as trellis_layer
from slotmem.data.mqar import MQARConfig, generate_mqar
from slotmem.models import SlotMemForCausalLM


def write_gates(model, seq_len: int, kv: int, examples: int, vocab: int, seed: int) -> list[dict]:
    """One dict per Trellis layer: mean γ‖k‖² at keys / values / after the context, mean β, mean ‖k‖."""
    calls, real = [], trellis_layer.chunk_trellis

    def record(q, k, v, alpha, beta, gamma, **kw):
        calls.append((k.detach(), beta.detach(), gamma.detach()))
        return real(q, k, v, alpha, beta, gamma, **kw)

    x, _ = generate_mqar(MQARConfig(seq_len, kv, examples, vocab, seed=seed), "test")
    trellis_layer.chunk_trellis = record
    try:
        with torch.no_grad():
            model(x)
    finally:
        trellis_layer.chunk_trellis = real
    rows = []
    for k, beta, gamma in calls:                       # k [B, T, H, d]; beta, gamma [B, T, H]
        size = gamma * k.pow(2).sum(-1)
        ctx = 2 * kv
        rows.append(dict(keys=size[:, 0:ctx:2].mean().item(), values=size[:, 1:ctx:2].mean().item(),
                         after=size[:, ctx:].mean().item(), beta=beta.mean().item(), k_norm=k.norm(dim=-1).mean().item()))
    return rows


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
    print("| model | layer | γ‖k‖² keys | γ‖k‖² values | γ‖k‖² after context | β | ‖k‖ |")
    print("|---|---|---|---|---|---|---|")
    for path in args.models:
        model = SlotMemForCausalLM.from_pretrained(path).eval()
        for i, r in enumerate(write_gates(model, args.seq_len, args.kv, args.examples, args.vocab, args.seed)):
            print(f"| {path} | {i} | {r['keys']:.3f} | {r['values']:.3f} | {r['after']:.3f} | {r['beta']:.4f} | {r['k_norm']:.2f} |")


if __name__ == "__main__":
    main()
