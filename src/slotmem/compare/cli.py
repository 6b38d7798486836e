"""The ``compare`` subcommand of ``slotmem`` (registered by ``slotmem.cli``)."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path


def _compare(args) -> None:
    from ..configs import resolve_config
    from ..train.errors import SlotmemTrainError, fail
    from .runner import DEFAULT_CONFIG, run_compare

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not Path(config).exists():  # no config given, only overrides
        config, overrides = None, [config, *overrides]
    try:
        command = shlex.join(["slotmem", *sys.argv[1:]])
        run_compare(DEFAULT_CONFIG if config is None else resolve_config(config), overrides, out=args.out, only=args.only,
                    preset=args.preset, jobs=args.jobs, command=command)
    except (SlotmemTrainError, FileNotFoundError) as e:
        fail(e)


def add_compare_parser(sub) -> None:
    from ..configs import comparison_names

    p = sub.add_parser(
        "compare",
        help="compare models under one protocol (lr sweep on validation, seeds, spread): MQAR, LM or forecasting",
        description="Train every model of a comparison config on the same data: per model an lr sweep scored on a "
                    "validation split, then several seeds at the chosen lr; tables report mean, std and min-max, "
                    "diverged runs apart. Rerunning the same command with the same --out resumes. "
                    "Default: the built-in compare_mqar config, preset quick.",
        epilog=f"built-in comparison configs: {', '.join(comparison_names())}",
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
