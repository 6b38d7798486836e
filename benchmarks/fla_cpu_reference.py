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
import functools
import platform
import warnings

import torch
import torch.nn.functional as F
from _report import save_report  # benchmarks/_report.py: OUT.md + OUT.json
from bench_ops import time_call  # the sibling script's best-of-N timer (fwd, or fwd + backward of sum(o))

from slotmem.layers import fla_ops


def inputs(B, T, H, D):
    """q, k (unit rows), v [B, T, H, D]; g (log decay), beta [B, T, H]."""
    return dict(q=torch.randn(B, T, H, D), k=F.normalize(torch.randn(B, T, H, D), dim=-1), v=torch.randn(B, T, H, D),
                g=-0.1 * torch.rand(B, T, H), beta=torch.rand(B, T, H))


def reference(recurrent: bool):
    return functools.partial(fla_ops._NAIVE["gated_delta_rule"], scale=None, initial_state=None,
                             output_final_state=False, recurrent=recurrent)


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
            x = inputs(a.batch, T, a.heads, a.dim)
            rec = time_call(reference(True), x, grad, a.repeats, "cpu")
            chunk = time_call(reference(False), x, grad, a.repeats, "cpu")
            rows.append(dict(T=T, backward=grad, recurrent_ms=1e3 * rec, chunk_ms=1e3 * chunk, ratio=rec / chunk))
    head = (f"fla naive gated delta rule on CPU ({platform.processor() or platform.machine()}, 1 thread, fp32), "
            f"B {a.batch}, H {a.heads}, d {a.dim}; ratio = token loop / chunked (> 1: chunked is faster); "
            f"slotmem uses the token loop for T <= {fla_ops.NAIVE_RECURRENT_MAX_T}")
    lines = [head, "", "| T | pass | token loop (ms) | chunked (ms) | ratio |", "|---|---|---|---|---|"]
    lines += [f"| {r['T']} | {'fwd+bwd' if r['backward'] else 'fwd'} | {r['recurrent_ms']:.1f} | {r['chunk_ms']:.1f} | "
              f"{r['ratio']:.2f} |" for r in rows]
    text = "\n".join(lines)
    print(text)
    save_report(a.out, text, dict(args=vars(a), torch=torch.__version__, rows=rows))


if __name__ == "__main__":
    main()
