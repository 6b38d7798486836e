"""How large is what Trellis reads out at initialisation, and how large are the gradients it sends back?

Builds the `compare_mqar` model (d_model 64, 2 layers, Trellis 32 slots, chunk 16) per variant and
seed, runs one MQAR training batch, and reports per layer the RMS of the op's output before the
layer's RMSNorm (whose eps is 1e-5, i.e. a floor of ~3e-3 on the RMS it divides by) and the gradient
norms of the first layer's q/k/v and alpha projections. Lattice and Gated DeltaNet are printed for scale.

    python benchmarks/trellis_init_scale.py                # writes benchmarks/results/trellis_init_scale.{md,json}
"""
from __future__ import annotations

import argparse
import copy
import warnings

import torch
from _report import save_report  # benchmarks/_report.py: OUT.md + OUT.json

from slotmem.compare.runner import load_compare_config
from slotmem.configs import builtin_path
from slotmem.train.tasks import MQARTask, mixer_modules

VARIANTS = {
    "Trellis, M0 = 0 (default)": ("Trellis", {}),
    "Trellis, M0 = 0, read_eps = 1e-5": ("Trellis", {"read_eps": 1e-5}),
    "Trellis, M0 learned": ("Trellis", {"learn_initial_state": True}),
    "Lattice (default)": ("Lattice", {}),
    "Gated DeltaNet": ("Gated DeltaNet", {}),
}


def measure(unit_cfg, extra: dict, seed: int) -> dict:
    cfg = copy.deepcopy(unit_cfg)
    cfg.model.mixer_kwargs = {**cfg.model.mixer_kwargs, **extra}
    cfg.seed = seed
    task = MQARTask(cfg)
    torch.manual_seed(seed)
    net = task.build_net()
    rms = {}
    for i, mixer in enumerate(mixer_modules(net)):
        mixer.o_norm.register_forward_hook(
            lambda m, inp, out, i=i: rms.__setitem__(i, inp[0].float().pow(2).mean().sqrt().item()))
    out = task.objective(net)(**task.get_batch(0, torch.arange(cfg.train.batch_size)))
    (out["loss_sum"] / out["count"]).backward()
    grads = {n: p.grad.norm().item() for n, p in net.named_parameters() if p.grad is not None}
    first = [n for n in grads if ".layers.0.mixer." in n]
    qkv = next(n for n in first if "qkv_proj" in n)
    alpha = next((n for n in first if "alpha_proj" in n), None)
    return dict(rms=[rms[i] for i in sorted(rms)], grad_qkv=grads[qkv], grad_alpha=grads[alpha] if alpha else None)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default="benchmarks/results/trellis_init_scale")
    a = p.parse_args(argv)
    warnings.simplefilter("ignore", UserWarning)
    torch.set_num_threads(1)
    units = {u.name: u.cfg for u in load_compare_config(builtin_path("compare_mqar")).units}
    rows = []
    for name, (label, extra) in VARIANTS.items():
        for seed in a.seeds:
            rows.append(dict(variant=name, seed=seed, **measure(units[label], extra, seed)))
    lines = ["One MQAR batch (48 sequences) at initialisation, `compare_mqar` model; RMS of the op output before "
             "the RMSNorm per layer; gradient norms of layer 0's projections.", "",
             "| variant | seed | RMS layer 0 | RMS layer 1 | grad qkv_proj | grad alpha_proj |", "|---|---|---|---|---|---|"]
    for r in rows:
        ga = "" if r["grad_alpha"] is None else f"{r['grad_alpha']:.3f}"
        lines.append(f"| {r['variant']} | {r['seed']} | {r['rms'][0]:.2e} | {r['rms'][1]:.2e} | {r['grad_qkv']:.3f} | {ga} |")
    text = "\n".join(lines)
    print(text)
    save_report(a.out, text, rows)


if __name__ == "__main__":
    main()
