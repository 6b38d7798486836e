"""Long decoding in float32 state: token-by-token decode of a Lattice and a Trellis layer at their
defaults (tiny widths, random inputs) for ``--tokens`` steps; records every ``--every`` tokens
whether output and state are finite, and the state norms (Lattice: mean slot norm, which grows
without renormalisation; Trellis: ‖Mk‖, ‖Mv‖). Prints a table; writes Markdown + JSON.

    python benchmarks/long_decode_stability.py --tokens 100000 --out benchmarks/results/long_decode
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
from _report import save_report  # benchmarks/_report.py: OUT.md + OUT.json

from slotmem.layers import LatticeAttention, TrellisAttention
from slotmem.modules import RecurrentCache


def state_norms(name: str, entry: dict) -> dict:
    s = entry["recurrent_state"]
    if name == "lattice":  # [B, H, m, d]: one row per slot
        return {"mean slot norm": s.norm(dim=-1).mean().item()}
    return {"‖Mk‖": s[0].norm().item(), "‖Mv‖": s[1].norm().item()}


def run(name: str, layer, tokens: int, every: int, hidden: int) -> list[dict]:
    cache, rows, finite = RecurrentCache(), [], True
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    with torch.no_grad():
        for t in range(1, tokens + 1):
            y, _, cache = layer(torch.randn(1, 1, hidden, generator=g), past_key_values=cache, use_cache=True)
            finite = finite and bool(torch.isfinite(y).all())
            if t % every == 0 or t == tokens:
                entry = cache[0]
                finite_state = all(bool(torch.isfinite(x).all()) for x in cache.tensors())
                rows.append(dict(mixer=name, tokens=t, finite_output=finite, finite_state=finite_state,
                                 seconds=round(time.perf_counter() - t0, 1), **state_norms(name, entry)))
                print(rows[-1], flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=100_000)
    ap.add_argument("--every", type=int, default=10_000)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/long_decode")
    args = ap.parse_args()
    torch.manual_seed(0)
    layers = {"lattice": LatticeAttention(args.hidden, args.heads, layer_idx=0),
              "trellis": TrellisAttention(args.hidden, args.heads, layer_idx=0)}
    rows = [r for name, layer in layers.items() for r in run(name, layer.eval(), args.tokens, args.every, args.hidden)]
    keys = list(dict.fromkeys(k for r in rows for k in r))
    table = "\n".join(["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
                      + ["| " + " | ".join(f"{r[k]:.4g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys) + " |"
                         for r in rows])
    print(table)
    save_report(args.out, f"Token-by-token decode, float32 state, layer defaults (hidden {args.hidden}, "
                          f"{args.heads} heads), random inputs.\n\n`python benchmarks/long_decode_stability.py "
                          f"{' '.join(sys.argv[1:])}`\n\n{table}", dict(args=vars(args), rows=rows))


if __name__ == "__main__":
    main()
