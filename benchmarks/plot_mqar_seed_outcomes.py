"""MQAR outcome per seed and model: in-distribution accuracy, pass (≥ 0.9 on every in-distribution slice) or not.

Reads a CSV of per-seed results of the comparison task (columns: model, seed, steps, in_dist, passed,
source — one row per `slotmem compare` run, copied from the run's results.json; the `source` column
names the docs section with the command) and draws one strip per model and budget, so that a reader
sees at a glance how many seeds each model learns.

    python benchmarks/plot_mqar_seed_outcomes.py docs/figures/mqar_seed_outcomes.csv --out docs/figures/mqar_seed_outcomes.png
"""
from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path


def load(path: Path) -> dict[tuple[str, int], list[dict]]:
    """Rows grouped by (model, steps), in file order."""
    groups = defaultdict(list)
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            groups[(r["model"], int(r["steps"]))].append(
                dict(seed=int(r["seed"]), acc=float(r["in_dist"]), passed=r["passed"].strip().lower() == "yes"))
    if not groups:
        raise ValueError(f"{path}: no rows")
    return groups


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv", type=Path)
    ap.add_argument("--out", type=Path, default=Path("docs/figures/mqar_seed_outcomes.png"))
    args = ap.parse_args(argv)
    groups = load(args.csv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 * len(groups) + 2, 4))
    for x, ((model, steps), rows) in enumerate(groups.items()):
        n = len(rows)
        for i, r in enumerate(sorted(rows, key=lambda r: r["seed"])):
            dx = (i - (n - 1) / 2) * min(0.05, 0.7 / max(n, 1))
            ax.scatter(x + dx, r["acc"], s=28, color="tab:green" if r["passed"] else "tab:red",
                       marker="o" if r["passed"] else "x", zorder=3)
        wins = sum(r["passed"] for r in rows)
        ax.text(x, 1.04, f"{wins} / {n}", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(range(len(groups)), [f"{m}\n{s} steps" for m, s in groups], fontsize=8)
    ax.axhline(0.9, color="grey", lw=0.8, ls="--")
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("MQAR in-distribution accuracy (mean of 3 slices)")
    ax.set_title("Seeds that learn (green: ≥ 0.9 on every in-distribution slice; red ×: not)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
