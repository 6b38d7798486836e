"""How far is the chunk-parallel Trellis from the exact recurrence, stale vs delta-corrected?

For random inputs (float64; q, k, v, alpha ~ N(0, 1), k and v scaled by 1/sqrt(d), beta in (0.5, 0.99),
gamma uniform in (0, gamma_max)), the relative error of the chunk form's output against the exact
token-by-token recurrence (``naive_trellis``, C = 1), per knob setting, for ``chunk_mode`` stale and
delta (``docs/trellis.md``, "chunk_mode='delta'").

    python benchmarks/trellis_chunk_error.py     # writes benchmarks/results/trellis_chunk_error.{md,json}
"""
from __future__ import annotations

import argparse
import math

import torch
from _report import save_report  # benchmarks/_report.py: OUT.md + OUT.json

from slotmem.ops.trellis import chunk_trellis, naive_trellis

SETTINGS = {  # label -> op knobs
    "phi identity, encode": dict(phi="identity"),
    "phi identity, decode": dict(phi="identity", value_objective="decode"),
    "phi silu": dict(phi="silu"),
    "phi ln_silu, eps 0.5 (default)": dict(),
    "phi ln_silu, eps 1e-5": dict(eps=1e-5),
    "phi l2_silu, eps 0.5": dict(phi="l2_silu"),
}


def inputs(T, B=2, H=2, d=8, m=8, gamma_max=0.05, random_state=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    x = (r(B, T, H, d), r(B, T, H, d) / math.sqrt(d), r(B, T, H, d) / math.sqrt(d), r(B, T, H, m),
         0.5 + 0.49 * torch.rand(B, T, H, generator=g, dtype=torch.float64),
         gamma_max * torch.rand(B, T, H, generator=g, dtype=torch.float64))
    state = (r(B, H, m, d), r(B, H, m, d)) if random_state else None
    return x, state


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--T", type=int, default=64)
    p.add_argument("--chunk-size", type=int, default=16)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default="benchmarks/results/trellis_chunk_error")
    a = p.parse_args(argv)
    rows = []
    for label, kn in SETTINGS.items():
        for gamma_max in (0.05, 0.5):
            for random_state in (False, True):
                err = {"stale": [], "delta": []}
                for seed in a.seeds:
                    x, s = inputs(a.T, gamma_max=gamma_max, random_state=random_state, seed=seed)
                    exact, _ = naive_trellis(*x, initial_state=s, **kn)
                    for mode in err:
                        o, _ = chunk_trellis(*x, initial_state=s, chunk_size=a.chunk_size, chunk_mode=mode, **kn)
                        err[mode].append(((o - exact).norm() / exact.norm()).item())
                rows.append(dict(setting=label, gamma_max=gamma_max, M0="random" if random_state else "0",
                                 stale=sum(err["stale"]) / len(a.seeds), delta=sum(err["delta"]) / len(a.seeds)))
    lines = [f"Relative error ‖o_chunk − o_exact‖ / ‖o_exact‖ against the exact recurrence, T = {a.T}, C = {a.chunk_size}, "
             f"float64, mean over seeds {a.seeds} (`python benchmarks/trellis_chunk_error.py`).", "",
             "| setting | γ_max | M_0 | stale | delta | delta / stale |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['gamma_max']} | {r['M0']} | {r['stale']:.2e} | {r['delta']:.2e} | "
                     f"{r['delta'] / r['stale']:.2f} |")
    text = "\n".join(lines)
    print(text)
    save_report(a.out, text, rows)


if __name__ == "__main__":
    main()
