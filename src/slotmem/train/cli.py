"""The ``train`` subcommand of ``slotmem`` (registered by ``slotmem.cli``)."""
from __future__ import annotations



def _train(args) -> None:
    from .config import load_config
    from .errors import SlotmemTrainError, fail
    from .trainer import train

    from ..configs import resolve_config

    try:
        cfg = load_config(resolve_config(args.config), args.overrides)
        results = train(cfg)
    except (SlotmemTrainError, FileNotFoundError) as e:
        fail(e)
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


def add_train_parser(sub) -> None:
    from ..configs import training_names

    p = sub.add_parser(
        "train",
        help="train a model from a YAML config (tasks: mqar, lm, timeseries)",
        description="Train from a YAML config; dotted key=value overrides follow the file "
                    "(e.g. optim.lr=3e-3 train.steps=500). Multi-process: torchrun --nproc_per_node N "
                    "-m slotmem.cli train CONFIG.",
        epilog=f"built-in configs (CONFIG may name one): {', '.join(training_names())}",
    )
    p.add_argument("config", help="a YAML config file, or the name of a built-in config (e.g. mqar_lattice)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, values parsed as YAML")
    p.set_defaults(func=_train)
