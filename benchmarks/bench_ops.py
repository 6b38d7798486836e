"""Op-level timing: naive loop vs chunk-parallel form (several chunk sizes) vs causal SDPA.

Prints a table and writes JSON + Markdown results. Forward and forward+backward, fp32.
Example (the figures in docs/ come from this):
    python benchmarks/bench_ops.py --ops lattice --T 256 512 1024 2048 4096 8192
"""
from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F
from _report import save_report  # benchmarks/_report.py: OUT.md + OUT.json

from slotmem.ops.lattice import chunk_lattice, naive_lattice


def lattice_inputs(B, T, H, m, d, device):
    return dict(
        q=torch.randn(B, T, H, m, device=device),
        k=F.normalize(torch.randn(B, T, H, m, device=device), dim=-1),
        v=torch.randn(B, T, H, d, device=device),
        eta=0.5 * torch.rand(B, T, H, device=device),
        initial_state=F.normalize(torch.randn(B, H, m, d, device=device), dim=-1),
    )


def trellis_inputs(B, T, H, m, d, device):
    return dict(
        q=torch.randn(B, T, H, d, device=device),
        k=F.normalize(torch.randn(B, T, H, d, device=device), dim=-1),
        v=torch.randn(B, T, H, d, device=device),
        alpha=torch.randn(B, T, H, m, device=device),
        beta=torch.rand(B, T, H, device=device) * 0.1 + 0.9,
        gamma=torch.rand(B, T, H, device=device) * 0.1,
    )


def sdpa(q, v, **_):
    """Causal softmax attention of the same width: q, k, v [B, T, H, d]."""
    qh = v.transpose(1, 2)
    return F.scaled_dot_product_attention(qh, qh, qh, is_causal=True).transpose(1, 2), None


def op_table():
    table = {"lattice": (lattice_inputs, naive_lattice, chunk_lattice)}
    try:
        from slotmem.ops.trellis import chunk_trellis, naive_trellis
        table["trellis"] = (trellis_inputs, naive_trellis, chunk_trellis)
    except ImportError:
        pass
    return table


def time_call(fn, inputs, backward, repeats, device):
    """Best-of-``repeats`` seconds for one call (plus backward of sum(o) + sum(state))."""
    best = float("inf")
    for _ in range(repeats):
        leaves = {k: v.clone().requires_grad_(backward) for k, v in inputs.items()}
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        o, s = fn(**leaves)
        if backward:
            loss = o.sum()
            if s is not None:
                loss = loss + sum(x.sum() for x in (s if isinstance(s, tuple) else (s,)))
            loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", nargs="+", default=["lattice", "trellis"])
    ap.add_argument("--T", nargs="+", type=int, default=[256, 512, 1024, 2048, 4096, 8192])
    ap.add_argument("--chunk-sizes", nargs="+", type=int, default=[16, 32, 64, 128])
    ap.add_argument("--naive-max-T", type=int, default=2048, help="skip the naive loop above this length (it is slow)")
    ap.add_argument("--B", type=int, default=1)
    ap.add_argument("--H", type=int, default=4)
    ap.add_argument("--m", type=int, default=64, help="slots")
    ap.add_argument("--d", type=int, default=64, help="head dim")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="benchmarks/results/ops")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    table = op_table()
    unknown = set(args.ops) - set(table)
    if unknown:
        ap.error(f"unknown op(s) {sorted(unknown)}; available: {sorted(table)}")
    rows = []
    for name in args.ops:
        make, naive, chunk = table[name]
        for T in args.T:
            inputs = make(args.B, T, args.H, args.m, args.d, args.device)
            runs = [(f"chunk C={C}", lambda C=C, **kw: chunk(**kw, chunk_size=C, output_final_state=True)) for C in args.chunk_sizes]
            runs.append(("sdpa (causal)", sdpa))
            if T <= args.naive_max_T:
                runs.append(("naive loop", lambda **kw: naive(**kw, output_final_state=True)))
            for label, fn in runs:
                fwd = time_call(fn, inputs, False, args.repeats, args.device)
                fb = time_call(fn, inputs, True, args.repeats if label != "naive loop" else 1, args.device)
                rows.append(dict(op=name, impl=label, T=T, fwd_ms=1e3 * fwd, fwd_bwd_ms=1e3 * fb))
                print(f"{name:8s} T={T:5d} {label:14s} fwd {1e3 * fwd:9.1f} ms   fwd+bwd {1e3 * fb:9.1f} ms", flush=True)
    for r in rows:
        ref = next((x for x in rows if x["op"] == r["op"] and x["T"] == r["T"] and x["impl"] == "naive loop"), None)
        r["speedup_vs_naive_fwd_bwd"] = ref["fwd_bwd_ms"] / r["fwd_bwd_ms"] if ref else None
    meta = dict(device=args.device, cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads(),
                torch=torch.__version__, B=args.B, H=args.H, m=args.m, d=args.d, dtype="float32")
    lines = [f"device={meta['device']} threads={meta['threads']} torch={meta['torch']} B={args.B} H={args.H} m={args.m} d={args.d} fp32", "",
             "| op | impl | T | fwd ms | fwd+bwd ms | fwd+bwd speed-up vs naive |", "|---|---|---|---|---|---|"]
    for r in rows:
        sp = f"{r['speedup_vs_naive_fwd_bwd']:.1f}×" if r["speedup_vs_naive_fwd_bwd"] else "–"
        lines.append(f"| {r['op']} | {r['impl']} | {r['T']} | {r['fwd_ms']:.1f} | {r['fwd_bwd_ms']:.1f} | {sp} |")
    print("\n".join(lines))
    save_report(args.out, "\n".join(lines), dict(meta=meta, rows=rows))


if __name__ == "__main__":
    main()
