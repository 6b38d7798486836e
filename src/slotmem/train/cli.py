"""The ``train`` and ``compare`` subcommands of ``slotmem`` (registered by ``slotmem.cli``)."""
from __future__ import annotations

import os
import sys


def _fail(e: Exception) -> None:
    """One ``error:`` line and the error's exit status (2 usage, 1 environment);
    ``SLOTMEM_DEBUG=1`` re-raises with the traceback."""
    if os.environ.get("SLOTMEM_DEBUG"):
        raise e
    print(f"error: {e}", file=sys.stderr)
    raise SystemExit(getattr(e, "exit_code", 2))


def _train(args) -> None:
    from .config import load_config
    from .errors import SlotmemTrainError
    from .trainer import train

    from ..configs import resolve_config

    try:
        cfg = load_config(resolve_config(args.config), args.overrides)
        results = train(cfg)
    except (SlotmemTrainError, FileNotFoundError) as e:
        _fail(e)
    if "stopped_at" in results:
        return
    from .distributed import env_world

    if env_world()[0] != 0:
        return
    print(f"\n{cfg.name}: {results['params']:,} parameters, {results['step']} steps, "
          f"train time {results['train_time_s']:.1f}s; results in {cfg.output_dir / 'results.json'}")
    for split, m in results["final"].items():
        shown = "  ".join(f"{k}={v:.4f}" for k, v in m.items() if isinstance(v, float))
        print(f"  {split}: {shown}")
    if results.get("ppl_vs_length"):
        from ..eval.perplexity import format_table

        print("perplexity vs context length (validation text):")
        print(format_table(results["ppl_vs_length"]))


def _compare(args) -> None:
    from ..eval.compare import DEFAULT_CONFIG, run_compare
    from .errors import SlotmemTrainError

    from pathlib import Path

    from ..configs import resolve_config

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not Path(config).exists():  # no config given, only overrides
        config, overrides = None, [config, *overrides]
    try:
        import shlex

        command = shlex.join(["slotmem", *sys.argv[1:]])
        run_compare(DEFAULT_CONFIG if config is None else resolve_config(config), overrides, out=args.out, only=args.only,
                    preset=args.preset, jobs=args.jobs, command=command)
    except (SlotmemTrainError, FileNotFoundError) as e:
        _fail(e)


_COMPARISONS = ("compare_", "ablations/")  # built-in comparison files (the others are training / model configs)


def _builtins(comparisons: bool) -> str:
    from ..configs import builtin_names

    return ", ".join(n for n in builtin_names()
                     if n.startswith(_COMPARISONS) == comparisons and not n.startswith("models/"))


def add_train_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model from a YAML config (tasks: mqar, lm, timeseries)",
        description="Train from a YAML config; dotted key=value overrides follow the file "
                    "(e.g. optim.lr=3e-3 train.steps=500). Multi-process: torchrun --nproc_per_node N "
                    "-m slotmem.cli train CONFIG.",
        epilog=f"built-in configs (CONFIG may name one): {_builtins(comparisons=False)}",
    )
    p.add_argument("config", help="a YAML config file, or the name of a built-in config (e.g. mqar_lattice)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, values parsed as YAML")
    p.set_defaults(func=_train)


def add_compare_parser(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="compare models under one protocol (lr sweep on validation, seeds, spread): MQAR, LM or forecasting",
        description="Train every model of a comparison config on the same data: per model an lr sweep scored on a "
                    "validation split, then several seeds at the chosen lr; tables report mean, std and min-max, "
                    "diverged runs apart. Rerunning the same command with the same --out resumes. "
                    "Default: the built-in compare_mqar config, preset quick.",
        epilog=f"built-in comparison configs: {_builtins(comparisons=True)}",
    )
    p.add_argument("config", nargs="?", default=None,
                   help="comparison YAML file or built-in name (default: the built-in compare_mqar)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides for every run (e.g. train.steps=100), "
                                                      "or Label:key=value for one run (e.g. Trellis:optim.lr=3e-3)")
    p.add_argument("--out", default=None, help="output folder (default outputs/compare/<timestamp>)")
    p.add_argument("--only", default=None, help="comma-separated labels of the runs to do (default: all)")
    p.add_argument("--preset", default="quick",
                   help="preset of the comparison file to apply (e.g. quick, full; default quick; ignored when the "
                        "file defines no presets)")
    p.add_argument("--jobs", type=int, default=0,
                   help="worker processes (0 = one per usable core); each gets max(1, cores // jobs) torch threads")
    p.set_defaults(func=_compare)
