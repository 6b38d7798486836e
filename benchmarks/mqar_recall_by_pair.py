"""MQAR recall by the position of the key-value pair in the context, for trained models.

MQAR's context is ``k_0 v_0 k_1 v_1 ...`` (pair ``j`` at tokens ``2j, 2j+1``); every key is queried
later. A model that loses a whole block of pairs -- e.g. every pair after the first chunk of a
chunked recurrence -- shows it here as a step in accuracy at the chunk boundary, which the slice
means hide. Give one or more trained model folders (a ``slotmem compare`` run's ``.../model``, or
``slotmem train``'s); the test stream of the slice is the one the comparison scores.
``--chunk-sizes 16 4 1`` also evaluates each chunked model (Lattice, Trellis) with other chunk sizes
than it was trained with (1 = the exact recurrence): a model that learned the recurrence recalls the
same at every chunk size, one that exploits the chunk form does not.

    python benchmarks/mqar_recall_by_pair.py RUN/model [RUN2/model ...] --seq-len 128 --kv 16 \
        --chunk-sizes 16 4 1 --out benchmarks/results/mqar_recall_by_pair
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _report import save_report  # benchmarks/_report.py: OUT.md + OUT.json

from slotmem.data.mqar import IGNORE_INDEX, MQARConfig, generate_mqar
from slotmem.layers.slot_memory import SlotMemoryMixer
from slotmem.models import SlotMemForCausalLM


def recall_by_pair(model, seq_len: int, kv: int, examples: int, vocab: int, seed: int, batch: int = 64) -> list[float]:
    """Accuracy of the queries whose key is pair ``j`` of the context, ``j = 0 .. kv-1`` -> list of kv floats."""
    x, y = generate_mqar(MQARConfig(seq_len, kv, examples, vocab, seed=seed), "test")
    hits, counts = torch.zeros(kv), torch.zeros(kv)
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb, yb = x[i:i + batch], y[i:i + batch]
            pred = model(xb).logits.argmax(-1)
            keys = xb[:, 0:2 * kv:2]                                  # [B, kv] the context's keys in order
            n, t = (yb != IGNORE_INDEX).nonzero(as_tuple=True)        # query positions (the key is at t)
            pair = (keys[n] == xb[n, t].unsqueeze(-1)).float().argmax(-1)
            hits.index_add_(0, pair, (pred[n, t] == yb[n, t]).float())
            counts.index_add_(0, pair, torch.ones_like(pair, dtype=torch.float))
    return (hits / counts.clamp_min(1)).tolist()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="trained model folders (save_pretrained format)")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--kv", type=int, default=16)
    ap.add_argument("--examples", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=256, help="the vocabulary the models were trained on")
    ap.add_argument("--seed", type=int, default=0, help="mqar.seed of the training config (the test stream)")
    ap.add_argument("--chunk-sizes", type=int, nargs="+", help="evaluate chunked mixers at these chunk sizes "
                    "(default: the one each model was trained with)")
    ap.add_argument("--out", type=Path, help="write OUT.md and OUT.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for path in args.models:
        model = SlotMemForCausalLM.from_pretrained(path).eval()
        chunked = [m for m in model.modules() if isinstance(m, SlotMemoryMixer)]
        trained = chunked[0].chunk_size if chunked else None
        for C in (args.chunk_sizes if chunked and args.chunk_sizes else [trained]):
            for m in chunked:
                m.chunk_size = C
            rows.append(dict(model=path, mixer=model.config.mixer, trained_chunk_size=trained, chunk_size=C,
                             acc=recall_by_pair(model, args.seq_len, args.kv, args.examples, args.vocab, args.seed)))
    head = "| model | mixer | trained chunk | eval chunk | " + " | ".join(f"p{j}" for j in range(args.kv)) + " |"
    lines = [f"MQAR T={args.seq_len}, kv={args.kv}: test accuracy by pair index (p0 = first pair, tokens 0-1)", "",
             head, "|" + "---|" * (args.kv + 4)]
    for r in rows:
        lines.append(f"| {r['model']} | {r['mixer']} | {r['trained_chunk_size']} | {r['chunk_size']} | "
                     + " | ".join(f"{a:.2f}" for a in r["acc"]) + " |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        save_report(args.out, text, dict(vars(args), models=args.models, out=str(args.out), rows=rows))


if __name__ == "__main__":
    main()
