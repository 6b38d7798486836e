"""Conditioning of Trellis' first writes: input-gradient norm per token position at initialisation.

With ``M_0 = 0`` every first write evaluates ``phi`` at ``z = M_0 k = 0``. For ``ln_silu = LN(SiLU(z))``
the LayerNorm then divides by ``sqrt(eps)``; this script measures what that does to the gradient
that reaches the layer's input, token by token, for a TrellisAttention layer at initialisation
(random inputs, a random cotangent on the output), and for the remedies (learnable non-zero
``M_0``, a larger ``eps``). Prints a table and writes ``--out`` (Markdown + JSON).

    python benchmarks/trellis_conditioning.py --out benchmarks/results/trellis_conditioning
"""
from __future__ import annotations

import argparse

import torch
from _report import save_report  # benchmarks/_report.py: OUT.md + OUT.json

from slotmem.layers import TrellisAttention

VARIANTS = {
    "M0=0, eps=1e-5": dict(learn_initial_state=False, eps=1e-5),
    "M0=0, eps=1e-2": dict(learn_initial_state=False, eps=1e-2),
    "M0 learned (unit rows), eps=1e-5": dict(learn_initial_state=True, eps=1e-5),
    "M0=0, eps=0.5 (the default)": dict(learn_initial_state=False, eps=0.5),
}
PAPER = dict(phi="ln_silu", f="ln_silu", psi="ln_silu", value_objective="encode")


def grad_norms(knobs: dict, T: int, hidden: int, heads: int, slots: int, seeds: int) -> torch.Tensor:
    """Median over seeds of ||d<y, c>/dx_t|| for each position t -> [T]."""
    rows = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        layer = TrellisAttention(hidden, heads, num_slots=slots, chunk_size=1, **PAPER, **knobs)
        x = torch.randn(1, T, hidden, requires_grad=True)
        y, _, _ = layer(x)
        (y * torch.randn_like(y)).sum().backward()
        rows.append(x.grad[0].norm(dim=-1))
    return torch.stack(rows).median(0).values


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--T", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--heads", type=int, default=1)
    ap.add_argument("--slots", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results/trellis_conditioning")
    args = ap.parse_args()
    results, lines = {}, ["| variant | ‖∂/∂x_t‖ t=0 | t=1 | t=2 | median t≥8 | max/median |", "| --- | --- | --- | --- | --- | --- |"]
    for name, knobs in VARIANTS.items():
        g = grad_norms(knobs, args.T, args.hidden, args.heads, args.slots, args.seeds)
        rest = g[8:].median().item()
        results[name] = g.tolist()
        lines.append(f"| {name} | {g[0]:.3g} | {g[1]:.3g} | {g[2]:.3g} | {rest:.3g} | {g.max().item() / rest:.3g} |")
    table = "\n".join(lines)
    print(table)
    meta = dict(vars(args), knobs=PAPER, variants=VARIANTS)
    save_report(args.out, f"Trellis input-gradient norm per position at init ({PAPER}, C=1, "
                          f"T={args.T}, hidden={args.hidden}, m={args.slots}, median of {args.seeds} seeds)\n\n"
                          f"`python benchmarks/trellis_conditioning.py`\n\n{table}",
                dict(meta=meta, grad_norm_per_position=results))


if __name__ == "__main__":
    main()
