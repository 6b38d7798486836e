"""Which of fla's pure-PyTorch references is faster on a CPU, per sequence length: the token loop
(``naive_recurrent_*``) or the chunked form (``naive_chunk_*``, chunk 64, padded)?

``slotmem.layers.fla_ops`` picks the token loop at or below ``NAIVE_RECURRENT_MAX_T`` tokens and the
chunked form above; this script is the measurement behind that constant. Times one op call, forward
only and forward + backward (sum of outputs), best of ``--repeats``, one torch thread, fp32.

    python benchmarks/fla_cpu_reference.py                 # gated delta rule, B 48, H 1, d 64
    python benchmarks/fla_cpu_reference.py --T 16 32 48 64 128 --batch 8
"""
from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from slotmem.layers import fla_ops


def inputs(B, T, H, D, grad):
    """q, k (unit rows), v [B, T, H, D]; g (log decay), beta [B, T, H]."""
    xs = (torch.randn(B, T, H, D), F.normalize(torch.randn(B, T, H, D), dim=-1), torch.randn(B, T, H, D),
          -0.1 * torch.rand(B, T, H), torch.rand(B, T, H))
    return [x.requires_grad_(grad) for x in xs]


def time_call(recurrent, B, T, H, D, grad, repeats):
    best = float("inf")
    for _ in range(repeats):
        q, k, v, g, beta = inputs(B, T, H, D, grad)
        t0 = time.perf_counter()
        with torch.set_grad_enabled(grad):
            o, _ = fla_ops._NAIVE["gated_delta_rule"](q, k, v, g, beta, scale=None, initial_state=None,
                                                       output_final_state=False, recurrent=recurrent)
            if grad:
                o.sum().backward()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--T", type=int, nargs="+", default=[16, 32, 48, 64, 128])
    p.add_argument("--batch", type=int, default=48)
    p.add_argument("--heads", type=int, default=1)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/fla_cpu_reference")
    a = p.parse_args(argv)
    warnings.simplefilter("ignore", UserWarning)  # fla's "Triton is not supported" notice
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows = []
    for T in a.T:
        for grad in (False, True):
            rec = time_call(True, a.batch, T, a.heads, a.dim, grad, a.repeats)
            chunk = time_call(False, a.batch, T, a.heads, a.dim, grad, a.repeats)
            rows.append(dict(T=T, backward=grad, recurrent_ms=1e3 * rec, chunk_ms=1e3 * chunk, ratio=rec / chunk))
    head = (f"fla naive gated delta rule on CPU ({platform.processor() or platform.machine()}, 1 thread, fp32), "
            f"B {a.batch}, H {a.heads}, d {a.dim}; ratio = token loop / chunked (> 1: chunked is faster); "
            f"slotmem uses the token loop for T <= {fla_ops.NAIVE_RECURRENT_MAX_T}")
    lines = [head, "", "| T | pass | token loop (ms) | chunked (ms) | ratio |", "|---|---|---|---|---|"]
    lines += [f"| {r['T']} | {'fwd+bwd' if r['backward'] else 'fwd'} | {r['recurrent_ms']:.1f} | {r['chunk_ms']:.1f} | "
              f"{r['ratio']:.2f} |" for r in rows]
    text = "\n".join(lines)
    print(text)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps(dict(args=vars(a), torch=torch.__version__, rows=rows), indent=1))


if __name__ == "__main__":
    main()
