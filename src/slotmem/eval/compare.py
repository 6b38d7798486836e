"""``slotmem compare``: train several models on the same MQAR data, report accuracy per
held-out (T, kv) slice against state size, with a table, a plot and a JSON file.

A comparison file has two keys::

    base:            # a training config (the ``slotmem train`` schema), shared by every run
      task: mqar
      model: {hidden_size: 64, num_hidden_layers: 2, use_mlp: false}
      ...
    runs:            # one entry per model; ``overrides`` is merged (deeply) into ``base``
      - label: Lattice
        overrides: {model: {mixer: lattice, mixer_kwargs: {num_slots: 64}}, optim: {lr: 3e-3}}
      - ...

Command-line ``key=value`` overrides apply to ``base`` before the runs' own overrides;
``Label:key=value`` (e.g. ``Transformer++:optim.lr=1e-2``) applies to one run, after them.
Outputs in ``--out`` (default ``outputs/compare/<timestamp>``): ``results.json``,
``table.txt``, ``accuracy_vs_state.png``, and one training folder per run.
"""
from __future__ import annotations

import copy
import json
import math
import re
import time
from datetime import datetime
from pathlib import Path

from ..configs import builtin_path
from ..train.config import Config, apply_overrides, config_from_dict, read_yaml
from ..train.errors import ConfigError

DEFAULT_CONFIG = builtin_path("compare_mqar")
_TOP_KEYS = ("name", "base", "runs")
_RUN_KEYS = ("label", "overrides")


def _merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("mixer_kwargs", "extra"):
            out[k] = _merge(out[k], v)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = copy.deepcopy(v)
    return out


def slug(label: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_")
    return s or "run"


def load_compare_config(path, overrides=None) -> tuple[str, list[tuple[str, Config]]]:
    """``(name, [(label, Config)])`` from a comparison file; every run is validated up front."""
    path = Path(path)
    if not path.is_file():
        hint = " (the built-in default ships inside the package: reinstall slotmem, or pass a config path)" if path == DEFAULT_CONFIG else ""
        raise ConfigError(f"comparison config not found: {str(path)!r}{hint}")
    data = read_yaml(path)
    for k in data:
        if k not in _TOP_KEYS:
            raise ConfigError(f"{path}: unknown key {k!r}; a comparison file has keys {list(_TOP_KEYS)}")
    if "runs" not in data or not isinstance(data["runs"], list) or not data["runs"]:
        raise ConfigError(f"{path}: 'runs' must list at least one run")
    base = data.get("base") or {}
    if not isinstance(base, dict):
        raise ConfigError(f"{path}: 'base' must be a mapping (a training config)")
    shared, per_run = [], {}
    for o in overrides or ():
        label, sep, rest = o.partition(":")
        if sep and "=" not in label:  # 'Label:key=value' applies to one run
            per_run.setdefault(label, []).append(rest)
        else:
            shared.append(o)
    base = apply_overrides(base, shared, Config)
    name = data.get("name", path.stem)
    runs, labels = [], set()
    for i, run in enumerate(data["runs"]):
        if not isinstance(run, dict):
            raise ConfigError(f"{path}: runs[{i}] must be a mapping with keys {list(_RUN_KEYS)}")
        for k in run:
            if k not in _RUN_KEYS:
                raise ConfigError(f"{path}: unknown key {k!r} in runs[{i}]; valid keys: {list(_RUN_KEYS)}")
        label = run.get("label")
        if not isinstance(label, str) or not label:
            raise ConfigError(f"{path}: runs[{i}] needs a 'label'")
        if label in labels:
            raise ConfigError(f"{path}: duplicate run label {label!r}")
        labels.add(label)
        merged = _merge(base, run.get("overrides") or {})
        merged = apply_overrides(merged, per_run.pop(label, []), Config)
        merged["name"] = slug(label)
        try:
            cfg = config_from_dict(merged)
        except ConfigError as e:
            raise ConfigError(f"{path}: run {label!r}: {e}") from None
        if cfg.task != "mqar":
            raise ConfigError(f"{path}: run {label!r}: comparisons are MQAR runs (task: mqar), got task {cfg.task!r}")
        runs.append((label, cfg))
    if per_run:
        raise ConfigError(f"override(s) for unknown run label(s) {sorted(per_run)}; labels are {sorted(labels)}")
    return name, runs


# --------------------------------------------------------------------------- reporting


def slice_key(s) -> str:
    return f"T{s['seq_len']}/kv{s['num_kv_pairs']}"


def format_table(rows: list[dict], header: dict) -> str:
    slices = [slice_key(s) for s in rows[0]["slices"]]
    w = max(10, max(len(r["label"]) for r in rows) + 1)
    cols = [f"{'model':<{w}}", f"{'params':>9}", f"{'state/layer':>11}", f"{'train s':>8}"] + [f"{s:>9}" for s in slices] + [f"{'mean':>6}"]
    lines = [" ".join(cols), "-" * len(" ".join(cols))]
    for r in rows:
        st = f"{r['state_size_per_layer']:,}" + ("*" if r["state_grows"] else "")
        vals = [f"{r['label']:<{w}}", f"{r['params']:>9,}", f"{st:>11}", f"{r['train_time_s']:>8.1f}"]
        vals += [f"{s['acc']:>9.3f}" for s in r["slices"]] + [f"{r['mean_acc']:>6.3f}"]
        lines.append(" ".join(vals))
    notes = [
        f"accuracy: held-out MQAR test slices (T = sequence length, kv = key-value pairs), "
        f"{header['test_examples']} examples each; chance ~ {header['chance']:.1e}",
        "state/layer: floats of decode state per sequence per layer (largest mixer layer)",
    ]
    if any(r["state_grows"] for r in rows):
        notes.append(f"* attention KV cache at T={header['state_len']} (grows linearly with T)")
    return "\n".join(lines + notes)


def plot_results(rows: list[dict], header: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slices = [slice_key(s) for s in rows[0]["slices"]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [1, 1.4]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    placed: list[tuple[float, float]] = []
    for i, r in enumerate(rows):
        c = colors[i % len(colors)]
        marker = "s" if r["state_grows"] else "o"
        x, y = r["state_size_per_layer"], r["mean_acc"]
        ax1.scatter(x, y, s=90, color=c, marker=marker, zorder=3, alpha=0.85,
                    label=r["label"] + (" (KV cache)" if r["state_grows"] else ""))
        # labels of points that (nearly) coincide are stacked instead of overprinted
        clash = sum(1 for px, py in placed if abs(math.log2(max(px, 1)) - math.log2(max(x, 1))) < 0.3 and abs(py - y) < 0.06)
        placed.append((x, y))
        ax1.annotate(f"{r['label']} ({y:.2f})", (x, y), textcoords="offset points", xytext=(9, 4 - 14 * clash),
                     fontsize=9, color=c)
    xs = [max(r["state_size_per_layer"], 1) for r in rows]
    ax1.set_xscale("log", base=2)
    ax1.set_xlim(min(xs) / 2, max(xs) * 4)
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax1.xaxis.set_major_locator(LogLocator(base=2))
    ax1.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{int(v):,}"))
    ax1.set_xlabel(f"state size (floats per layer; attention at T={header['state_len']})")
    ax1.set_ylabel("mean accuracy over test slices")
    ax1.set_ylim(-0.03, 1.03)
    ax1.grid(True, alpha=0.3)
    ax1.set_title("MQAR accuracy vs state size")
    ax1.legend(fontsize=9, loc="lower right")
    n = len(rows)
    width = 0.8 / n
    for i, r in enumerate(rows):
        xs = [j + (i - (n - 1) / 2) * width for j in range(len(slices))]
        ax2.bar(xs, [s["acc"] for s in r["slices"]], width=width, color=colors[i % len(colors)], label=r["label"])
    ax2.set_xticks(range(len(slices)))
    ax2.set_xticklabels(slices, fontsize=9)
    ax2.set_ylim(0, 1.17)
    ax2.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax2.set_ylabel("accuracy")
    ax2.set_xlabel("held-out test slice")
    ax2.set_title("accuracy per (T, kv) test slice")
    ax2.grid(True, axis="y", alpha=0.3)
    ax2.legend(fontsize=9, loc="upper center", ncol=min(n, 4), frameon=False)
    fig.suptitle(header["title"], fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def preflight(runs) -> None:
    """Build every run's model and push one short sequence through it (forward and backward)
    before any training starts, so a missing optional dependency (fla for the baselines) or a bad
    mixer argument stops the comparison at once, not after the first models have trained."""
    import torch

    from ..train.tasks import build_causal_lm

    for label, cfg in runs:
        try:
            with torch.random.fork_rng(devices=[]):
                net = build_causal_lm(cfg.model, cfg.mqar.vocab_size)
                ids = torch.randint(0, cfg.mqar.vocab_size, (1, 8))
                net(input_ids=ids, use_cache=False).logits.float().sum().backward()
        except ImportError as e:
            raise ConfigError(f"run {label!r} (mixer {cfg.model.mixer!r}) needs an optional dependency: {e}. "
                              "The baselines need fla: pip install -e '.[baselines]'") from None
        except ConfigError as e:
            raise ConfigError(f"run {label!r}: {e}") from None
        except (TypeError, ValueError, RuntimeError) as e:
            raise ConfigError(f"run {label!r} (mixer {cfg.model.mixer!r}) cannot run: {type(e).__name__}: {e}") from None


def run_compare(config=DEFAULT_CONFIG, overrides=None, out=None, only=None, quiet: bool = False) -> dict:
    """Run a comparison (see the module docstring); returns the results dict."""
    from ..train.trainer import train

    name, runs = load_compare_config(config, overrides)
    if only:
        want = [s.strip() for s in only.split(",") if s.strip()]
        unknown = [w for w in want if w not in {l for l, _ in runs}]
        if unknown:
            raise ConfigError(f"--only: unknown run label(s) {unknown}; labels are {[l for l, _ in runs]}")
        runs = [(l, c) for l, c in runs if l in want]
    preflight(runs)
    out_dir = Path(out) if out else Path("outputs") / "compare" / datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    say = (lambda *a: None) if quiet else print
    t_all = time.perf_counter()
    rows = []
    for label, cfg in runs:
        cfg.out_dir = str(out_dir / slug(label))
        cfg.train.resume = "never"
        say(f"== {label}: mixer {cfg.model.mixer}, d_model {cfg.model.hidden_size}, lr {cfg.optim.lr:g}, "
            f"{cfg.train.steps} steps of {cfg.train.batch_size}")
        t0 = time.perf_counter()
        res = train(cfg, quiet=quiet)
        wall = time.perf_counter() - t0
        test = res["final"]["test"]
        slices = [{"seq_len": s.seq_len, "num_kv_pairs": s.num_kv_pairs, "acc": test[f"acc_T{s.seq_len}_kv{s.num_kv_pairs}"]}
                  for s in cfg.mqar.test]
        sizes = res["state_size_per_layer"]
        from ..train.tasks import state_size_per_layer  # noqa: F401  (documented source of the numbers)

        row = {
            "label": label, "mixer": cfg.model.mixer, "params": res["params"],
            "state_size_per_layer": max(sizes) if sizes else 0,
            "state_sizes": sizes, "state_grows": cfg.model.mixer == "attention" or bool(cfg.model.attn_layers),
            "train_time_s": res["train_time_s"], "wall_s": wall, "lr": cfg.optim.lr,
            "slices": slices, "mean_acc": test["acc"], "out_dir": cfg.out_dir,
        }
        rows.append(row)
        say(f"   {label}: mean acc {row['mean_acc']:.3f}, train {row['train_time_s']:.1f}s, wall {wall:.1f}s")
    total = time.perf_counter() - t_all
    c0 = runs[0][1]
    tr = ", ".join(f"({s.seq_len},{s.num_kv_pairs})x{s.num_examples}" for s in c0.mqar.train)
    header = {
        "title": (f"{name}: d_model {c0.model.hidden_size}, {c0.model.num_hidden_layers} layers, "
                  f"{'MLP' if c0.model.use_mlp else 'no MLP'}, vocab {c0.mqar.vocab_size}; train {tr}; "
                  f"{c0.train.steps} steps x {c0.train.batch_size}"),
        "state_len": max(s.seq_len for s in c0.mqar.test),
        "test_examples": ",".join(sorted({str(s.num_examples) for s in c0.mqar.test})),
        "chance": 1.0 / (c0.mqar.vocab_size - c0.mqar.vocab_size // 2),
    }
    table = format_table(rows, header)
    results = {"name": name, "header": header, "runs": rows, "total_wall_s": total,
               "config": str(config), "overrides": list(overrides or [])}
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=float))
    (out_dir / "table.txt").write_text(header["title"] + "\n" + table + f"\ntotal wall time {total:.1f}s\n")
    plot_results(rows, header, out_dir / "accuracy_vs_state.png")
    say("")
    say(header["title"])
    say(table)
    say(f"total wall time {total:.1f}s ({total / 60:.1f} min); results in {out_dir}/ "
        "(results.json, table.txt, accuracy_vs_state.png)")
    return results
