"""The Trellis op as an associative memory, without training: which writes can be read back?

``kv`` random pairs ``(k_j, v_j)`` with random slot codes ``alpha_j`` are written at tokens
``0 .. kv-1`` (one per token, forget gate ``beta``, inner step ``gamma = g / E||k||²``); then ``k_j``
is queried at tokens ``kv .. 2kv-1`` (no writes there). A query counts as recalled when the op's
output is nearest (cosine) to its own ``v_j`` among the ``kv`` values. Recall is reported apart for
the pairs written in the FIRST chunk (for ``C = 1``: the first token) and for all LATER ones, because
that is where the knobs differ (``eps`` given explicitly per variant; it also floors f and psi): with
``phi = ln_silu``, ``M_0 = 0`` and a small ``eps`` (1e-5, the default until 2026-12-02) the first
write is made at ``z = 0``, where ``LN(SiLU(z))`` has gain ``1/sqrt(eps)``, and every later write is
drowned by it.

    python benchmarks/trellis_memory_capacity.py --out benchmarks/results/trellis_memory_capacity
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from _report import save_report  # benchmarks/_report.py: OUT.md + OUT.json

from slotmem.ops import chunk_trellis

VARIANTS = {  # name -> op knobs and the scale of a random non-zero M_0 (0: M_0 = 0)
    "ln_silu eps=1e-5 (M0=0)": dict(knobs=dict(eps=1e-5), m0=0.0),
    "ln_silu eps=0.5 (M0=0)": dict(knobs=dict(eps=0.5), m0=0.0),
    "ln_silu eps=1e-5, random M0": dict(knobs=dict(eps=1e-5), m0=1.0),
    "phi=silu (M0=0)": dict(knobs=dict(phi="silu", eps=1e-5), m0=0.0),
    "phi=identity (M0=0)": dict(knobs=dict(phi="identity", eps=1e-5), m0=0.0),
}


def recall(C: int, g: float, knobs: dict, m0: float, m: int, d: int, kv: int, n: int, beta: float, seed: int):
    """-> (recall of first-chunk pairs, recall of later pairs); f = psi = ln_silu, encode."""
    torch.manual_seed(seed)
    k, v, a = F.silu(torch.randn(n, kv, 1, d)), F.silu(torch.randn(n, kv, 1, d)), torch.randn(n, kv, 1, m)
    zeros = torch.zeros_like
    q, k_in, v_in, a_in = torch.cat([zeros(k), k], 1), torch.cat([k, zeros(k)], 1), torch.cat([v, zeros(v)], 1), torch.cat([a, zeros(a)], 1)
    gamma = torch.cat([torch.full((n, kv, 1), g / k.pow(2).sum(-1).mean().item()), torch.zeros(n, kv, 1)], 1)
    state = tuple(m0 * torch.randn(n, 1, m, d) / d ** 0.5 for _ in range(2))
    o, _ = chunk_trellis(q, k_in, v_in, a_in, torch.full((n, 2 * kv, 1), beta), gamma, initial_state=state,
                         chunk_size=C, **dict(dict(phi="ln_silu", f="ln_silu", psi="ln_silu", value_objective="encode"), **knobs))
    cos = F.cosine_similarity(o[:, kv:, 0].unsqueeze(2), v[:, :, 0].unsqueeze(1), dim=-1)   # [n, query j, value i]
    hit = (cos.argmax(-1) == torch.arange(kv)).float().mean(0)
    return hit[:C].mean().item(), (hit[C:].mean().item() if C < kv else float("nan"))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slots", type=int, default=32)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--kv", type=int, default=16)
    ap.add_argument("--examples", type=int, default=32)
    ap.add_argument("--beta", type=float, default=1.0)
    ap.add_argument("--chunks", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--steps", type=float, nargs="+", default=[0.3, 1.0, 3.0], help="g = gamma * E||k||^2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="write OUT.md and OUT.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for C in args.chunks:
        for g in args.steps:
            for name, var in VARIANTS.items():
                first, later = recall(C, g, var["knobs"], var["m0"], args.slots, args.dim, args.kv, args.examples, args.beta, args.seed)
                rows.append(dict(chunk_size=C, g=g, variant=name, first=first, later=later))
    lines = [f"Trellis op recall without training (m={args.slots}, d={args.dim}, kv={args.kv}, beta={args.beta}, "
             f"f = psi = ln_silu, encode; {args.examples} sequences): first-chunk pairs / later pairs", "",
             "| C | g = γ·E‖k‖² | " + " | ".join(VARIANTS) + " |", "|---|---|" + "---|" * len(VARIANTS)]
    for C in args.chunks:
        for g in args.steps:
            cells = [r for r in rows if r["chunk_size"] == C and r["g"] == g]
            lines.append(f"| {C} | {g:g} | " + " | ".join(f"{r['first']:.2f} / {r['later']:.2f}" for r in cells) + " |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        save_report(args.out, f"`python benchmarks/trellis_memory_capacity.py --out {args.out}`\n\n" + text,
                    dict(args=dict(vars(args), out=str(args.out)), rows=rows))


if __name__ == "__main__":
    main()
