"""The ``slotmem`` command line. ``slotmem --help`` lists the subcommands."""
from __future__ import annotations

import argparse
import time


def _demo(args) -> None:
    """Run a LatticeAttention layer on generated data; print state size and throughput."""
    import torch

    from .layers import LatticeAttention

    torch.manual_seed(args.seed)
    layer = LatticeAttention(args.hidden_size, args.num_heads, num_slots=args.num_slots, chunk_size=args.chunk_size)
    x = torch.randn(args.batch, args.seq_len, args.hidden_size, requires_grad=True)
    layer(x[:, :64])[0].sum().backward()  # warm-up
    t0 = time.perf_counter()
    out, _, _ = layer(x)
    t_fwd = time.perf_counter() - t0
    out.square().mean().backward()
    t_all = time.perf_counter() - t0
    tokens = args.batch * args.seq_len
    print(f"LatticeAttention hidden={args.hidden_size} heads={args.num_heads} slots={layer.num_slots} head_dim={layer.head_dim}")
    print(f"parameters            {sum(p.numel() for p in layer.parameters()):,}")
    print(f"recurrent state       {layer.state_size():,} floats per sequence (constant in sequence length)")
    print(f"forward               {tokens / t_fwd:,.0f} tokens/s  (B={args.batch}, T={args.seq_len}, chunk={args.chunk_size})")
    print(f"forward+backward      {tokens / t_all:,.0f} tokens/s")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="slotmem", description="Lattice and Trellis: bounded, learned slot memory.")
    sub = ap.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a Lattice layer on generated data (state size, throughput)")
    demo.add_argument("--hidden-size", type=int, default=256)
    demo.add_argument("--num-heads", type=int, default=4)
    demo.add_argument("--num-slots", type=int, default=64)
    demo.add_argument("--seq-len", type=int, default=2048)
    demo.add_argument("--batch", type=int, default=2)
    demo.add_argument("--chunk-size", type=int, default=64)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    return ap


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
