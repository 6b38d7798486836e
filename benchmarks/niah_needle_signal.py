"""Why a model does or does not learn S-NIAH from scratch: two measurements on `compare_niah`'s task.

``init``: for every model of the comparison at its initialisation, how much of the answer loss's
gradient reaches the needle's digits — the norm of the cross-entropy's gradient at the input
embeddings of the 7 value digits in the needle, over its mean at the needle sentence's words just
before them (same distance from the query, so forgetting cancels). Above 1, the untrained memory
already routes the answer's error to the tokens that hold the answer: the signal learning starts from.

``gates``: for trained Trellis runs (a ``slotmem compare`` run folder: ``config.yaml`` + its last
checkpoint), per layer the mean forget gate β and the needle's retention ``Σ log β`` from the end of
the needle sentence to the query (e^-5 keeps 0.7 % of a write), at needle depths 0, 0.5 and 1.

``memory``: for trained Trellis runs, at the test lengths (the needle at depth 0.5), per layer the memories'
Frobenius norms ‖Mk‖, ‖Mv‖ at the query (the decode cache's state after the prompt) and the write strength
``γ‖k‖²`` at the needle's digits over its mean over the prompt: whether the memory keeps a fixed scale, and how
much the needle stands out of what else is written, as the haystack grows past the training length.

    python benchmarks/niah_needle_signal.py init [key=value ...] [--out benchmarks/results/niah_needle_signal_init]
    python benchmarks/niah_needle_signal.py gates RUN [RUN ...] [--out benchmarks/results/niah_needle_signal_gates]
    python benchmarks/niah_needle_signal.py memory RUN [RUN ...] [--out benchmarks/results/niah_needle_signal_memory]
"""
from __future__ import annotations

import argparse
import statistics

import torch
from _report import save_report
from _trellis_inputs import trellis_op_inputs

from slotmem.compare.runner import load_compare_config
from slotmem.configs import resolve_config
from slotmem.data.niah import encode_niah, niah_samples, split_seed
from slotmem.train.checkpoint import latest_checkpoint, load_checkpoint
from slotmem.train.config import load_config
from slotmem.train.tasks import build_task

DEPTHS = (0.0, 0.5, 1.0)


def _samples(task, depth: float, num: int, length: int | None = None):
    """``num`` test samples at ``depth`` and ``length`` (default: the training length), with their encoding."""
    length = task.cfg.niah.train_lengths[0] if length is None else length
    smp = niah_samples(task.tokenizer, [length], [depth], num, seed=split_seed(task.cfg.niah.seed, "test"))
    return smp, *encode_niah(task.tokenizer, smp, task.pad_id)


def _digit_positions(task, s) -> tuple[list[int], int]:
    """Token positions of the needle's value digits, and of the needle's first value token."""
    tok = task.tokenizer
    head = s.prompt[: s.prompt.index(s.value)]  # the first occurrence is the needle's (the query never states it)
    start = len(tok.encode(head, add_special_tokens=False))
    return list(range(start, start + len(tok.encode(s.value, add_special_tokens=False)))), start


def needle_gradient(net, task, depth: float, num: int) -> float:
    """Mean over ``num`` samples of |∂CE/∂e| at the needle's digits / its mean over the 36 tokens before them."""
    store = {}

    def keep(module, inputs, out):
        out.retain_grad()
        store["e"] = out

    hook = net.get_input_embeddings().register_forward_hook(keep)
    try:
        smp, x, y = _samples(task, depth, num)
        net.zero_grad()
        net(x, labels=y).loss.backward()
    finally:
        hook.remove()
    g = store["e"].grad.norm(dim=-1)  # [B, T]
    ratios = []
    for i, s in enumerate(smp):
        digits, start = _digit_positions(task, s)
        ratios.append((g[i, digits].mean() / g[i, start - 40:start - 4].mean()).item())
    return statistics.mean(ratios)


def run_init(overrides, num: int, out) -> None:
    comp = load_compare_config(resolve_config("compare_niah"), overrides)
    rows = []
    for u in comp.units:
        torch.manual_seed(u.cfg.seed)
        task = build_task(u.cfg)
        net = task.build_net().eval()  # eval mode: the cross-entropy alone (no training regulariser)
        rows.append({"model": u.label, **{f"depth {d:g}": needle_gradient(net, task, d, num) for d in DEPTHS}})
        print(rows[-1], flush=True)
    md = ["| model | " + " | ".join(f"depth {d:g}" for d in DEPTHS) + " |", "|---" * (len(DEPTHS) + 1) + "|"]
    md += ["| " + r["model"] + " | " + " | ".join(f"{r[f'depth {d:g}']:.2f}" for d in DEPTHS) + " |" for r in rows]
    note = (f"S-NIAH (compare_niah, length {comp.units[0].cfg.niah.train_lengths[0]}), at initialisation: |dCE/d embedding| "
            f"at the needle's digits / at the needle's words before them, mean over {num} samples. Overrides: {list(overrides)}")
    print("\n".join(md))
    save_report(out, note + "\n\n" + "\n".join(md), {"overrides": list(overrides), "samples": num, "rows": rows})


def _trained(run: str):
    cfg = load_config(f"{run}/config.yaml")
    task = build_task(cfg)
    net = task.build_net()
    state = load_checkpoint(latest_checkpoint(run))["model"]  # the trainer's objective holds the model as ``net``
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items()})
    return task, net.eval()


def run_gates(runs, num: int, out) -> None:
    rows = []
    for run in runs:
        task, net = _trained(run)
        for depth in DEPTHS:
            smp, x, _ = _samples(task, depth, num)
            betas = [c["beta"][..., 0].double() for c in trellis_op_inputs(net, x)]  # [B, T], head 0
            for layer, beta in enumerate(betas):
                kept = []
                for i, s in enumerate(smp):
                    digits, _ = _digit_positions(task, s)
                    kept.append(beta[i, digits[-1] + 2:s.num_tokens - 1].log().sum().item())
                rows.append({"run": run, "depth": depth, "layer": layer, "beta": beta.mean().item(),
                             "log_retention": statistics.mean(kept)})
                print(rows[-1], flush=True)
    md = ["| run | depth | layer | mean β | Σ log β, needle → query |", "|---|---|---|---|---|"]
    md += [f"| {r['run']} | {r['depth']:g} | {r['layer']} | {r['beta']:.4f} | {r['log_retention']:.1f} |" for r in rows]
    print("\n".join(md))
    save_report(out, f"Trained Trellis on S-NIAH: forget gate (head 0), mean over {num} test samples per depth.\n\n"
                + "\n".join(md), {"samples": num, "rows": rows})


def run_memory(runs, num: int, out) -> None:
    rows = []
    for run in runs:
        task, net = _trained(run)
        for length in task.cfg.niah.test_lengths:
            smp, x, _ = _samples(task, 0.5, num, length)
            for layer, c in enumerate(trellis_op_inputs(net, x, use_cache=True)):
                write = c["gamma"][..., 0] * c["k"][..., 0, :].float().pow(2).sum(-1)  # γ‖k‖², head 0  [B, T]
                ratio = statistics.mean((write[i, _digit_positions(task, s)[0]].mean() / write[i, :s.num_tokens].mean()).item()
                                        for i, s in enumerate(smp))
                Mk, Mv = c["state"]
                rows.append({"run": run, "length": length, "layer": layer, "Mk_norm": Mk.norm(dim=(-2, -1)).mean().item(),
                             "Mv_norm": Mv.norm(dim=(-2, -1)).mean().item(), "needle_write_ratio": ratio})
                print(rows[-1], flush=True)
    md = ["| run | length | layer | ‖Mk‖ | ‖Mv‖ | γ‖k‖² needle digits / prompt mean |", "|---|---|---|---|---|---|"]
    md += [f"| {r['run']} | {r['length']} | {r['layer']} | {r['Mk_norm']:.2f} | {r['Mv_norm']:.2f} | {r['needle_write_ratio']:.1f} |"
           for r in rows]
    print("\n".join(md))
    save_report(out, f"Trained Trellis on S-NIAH: memory norms at the query and the needle's write strength (head 0), "
                f"needle at depth 0.5, mean over {num} test samples per length.\n\n" + "\n".join(md),
                {"samples": num, "rows": rows})


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("init", "gates", "memory"))
    ap.add_argument("args", nargs="*", help="init: compare_niah overrides (key=value); gates, memory: run folders")
    ap.add_argument("--samples", type=int, default=8, help="test samples per depth")
    ap.add_argument("--out", default=None, help="report path without suffix (default benchmarks/results/niah_needle_signal_MODE)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = a.out or f"benchmarks/results/niah_needle_signal_{a.mode}"
    run = {"init": run_init, "gates": run_gates, "memory": run_memory}[a.mode]
    run(a.args, a.samples, out)


if __name__ == "__main__":
    main()
