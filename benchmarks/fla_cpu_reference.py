"""The gated delta rule's CPU paths, per sequence length: fla's token loop (``naive_recurrent_*``),
fla's chunked reference (``naive_chunk_*``, chunk 64, padded) and slotmem's chunked form
(``fla_ops.chunk_gated_delta_rule_torch``: the same algorithm with a triangular solve in place of fla's
Python loop).

``slotmem.layers.fla_ops`` picks the token loop at or below ``NAIVE_RECURRENT_MAX_T`` tokens and its
chunked form above; this script is the measurement behind that constant and behind writing the chunked
form by hand. Times one op call, forward only and forward + backward (sum of outputs), best of
``--repeats``, one torch thread, fp32.

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
    """slotmem's CPU path: fla's token loop (``recurrent``) or slotmem's chunked form."""
    return functools.partial(fla_ops._NAIVE["gated_delta_rule"], scale=None, initial_state=None,
                             output_final_state=False, recurrent=recurrent)


def fla_chunk(q, k, v, g, beta):
    from fla.ops.gated_delta_rule.naive import naive_chunk_gated_delta_rule

    return naive_chunk_gated_delta_rule(q, k, v, g, beta, chunk_size=64)


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
            fla = time_call(fla_chunk, x, grad, a.repeats, "cpu")
            chunk = time_call(reference(False), x, grad, a.repeats, "cpu")
            rows.append(dict(T=T, backward=grad, recurrent_ms=1e3 * rec, fla_chunk_ms=1e3 * fla, chunk_ms=1e3 * chunk,
                             ratio=rec / chunk, fla_ratio=fla / chunk))
    head = (f"gated delta rule on CPU ({platform.processor() or platform.machine()}, 1 thread, fp32), "
            f"B {a.batch}, H {a.heads}, d {a.dim}; ratio = time / slotmem's chunked form (> 1: the chunked form is "
            f"faster); slotmem uses fla's token loop for T <= {fla_ops.NAIVE_RECURRENT_MAX_T['gated_delta_rule']}, "
            "its chunked form above")
    lines = [head, "", "| T | pass | fla token loop (ms) | fla chunked (ms) | slotmem chunked (ms) | token loop ratio | "
             "fla chunked ratio |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['T']} | {'fwd+bwd' if r['backward'] else 'fwd'} | {r['recurrent_ms']:.1f} | {r['fla_chunk_ms']:.1f} | "
              f"{r['chunk_ms']:.1f} | {r['ratio']:.2f} | {r['fla_ratio']:.2f} |" for r in rows]
    text = "\n".join(lines)
    print(text)
    save_report(a.out, text, dict(args=vars(a), torch=torch.__version__, rows=rows))


if __name__ == "__main__":
    main()
