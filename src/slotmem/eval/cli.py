"""The ``eval`` subcommands of ``slotmem`` (registered by ``slotmem.cli``): evaluate a saved model.

    slotmem eval perplexity MODEL DATA... --lengths 256 1024 4096
    slotmem eval mqar MODEL --slices 64:4 128:8 256:16
    slotmem eval niah MODEL --lengths 512 1024 2048 --depths 0 0.25 0.5 0.75 1

Outputs follow ``slotmem compare``: ``results.json``, ``table.txt`` and a plot in ``--out``
(default ``outputs/eval/<kind>/<timestamp>``); the table is also printed.
"""
from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "slotmem_tokenizer.json")


def _fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def load_tokenizer_for(model_dir, name: str | None = None):
    """``name`` if given, else the tokenizer saved in ``model_dir``, else the byte tokenizer."""
    from ..data.text import load_tokenizer

    if name is not None:
        return load_tokenizer(name)
    if any((Path(model_dir) / f).is_file() for f in _TOKENIZER_FILES):
        return load_tokenizer(str(model_dir))
    return load_tokenizer("byte")


def load_saved_model(model_dir, device: str = "cpu", command: str = "slotmem eval"):
    """The causal LM saved in ``model_dir`` by ``save_pretrained`` (e.g. ``slotmem train``'s
    ``<out_dir>/model``), in eval mode on ``device``. Exits with a message if ``model_dir`` is not
    a saved model directory."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from .. import models  # noqa: F401  (registers the Auto classes)

    d = Path(model_dir)
    if not (d / "config.json").is_file():
        raise SystemExit(f"{command}: {d} is not a saved model directory (no config.json)")
    hf_logging.disable_progress_bar()
    return AutoModelForCausalLM.from_pretrained(str(d)).to(device).eval()


def load_model_and_tokenizer(model_dir, device: str = "cpu", tokenizer: str | None = None,
                             command: str = "slotmem eval"):
    """``(model, tokenizer)``: ``load_saved_model`` and ``load_tokenizer_for``; exits if the
    tokenizer has more tokens than the model's vocabulary."""
    model = load_saved_model(model_dir, device, command)
    tok = load_tokenizer_for(model_dir, tokenizer)
    if len(tok) > model.config.vocab_size:
        raise SystemExit(f"{command}: tokenizer has {len(tok)} tokens but the model's vocab_size is "
                         f"{model.config.vocab_size}; pass the model's tokenizer with --tokenizer")
    return model, tok


def _out_dir(args, kind: str) -> Path:
    out = Path(args.out) if args.out else Path("outputs") / "eval" / kind / datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _report(out: Path, results: dict, title: str, table: str, plot, plot_name: str) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    (out / "table.txt").write_text(title + "\n" + table + "\n")
    plot(out / plot_name)
    print(title)
    print(table)
    print(f"results in {out}/ (results.json, table.txt, {plot_name})")


def _positive(name: str, values) -> None:
    bad = [v for v in values if v < 1]
    if bad:
        _fail(f"{name} must be positive, got {bad}")


# --------------------------------------------------------------------------- perplexity


def _perplexity(args) -> None:
    from ..data import read_documents, split_tokens, tokenize_documents
    from .perplexity import format_table, perplexity_vs_length, plot_perplexity

    _positive("--lengths", args.lengths)
    _positive("--batch-size", [args.batch_size])
    if not 0.0 <= args.val_fraction < 1.0:
        _fail(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    model, tok = load_model_and_tokenizer(args.model, args.device, args.tokenizer, "slotmem eval perplexity")
    try:
        docs = read_documents(args.data, format=args.format, text_field=args.text_field, hf_split=args.hf_split,
                              hf_config=args.hf_config)
        tokens = tokenize_documents(docs, tok)
    except (FileNotFoundError, ValueError, ImportError) as e:
        _fail(str(e))
    if args.val_fraction > 0:
        tokens = split_tokens(tokens, args.val_fraction)[1]
    out = _out_dir(args, "perplexity")
    t0 = time.perf_counter()
    rows = perplexity_vs_length(model, tokens, args.lengths, args.batch_size, max_tokens=args.max_tokens,
                                train_len=args.train_len, progress=not args.no_progress)
    scored = f"{tokens.numel():,} tokens" + (f" (first {args.max_tokens:,} scored)" if args.max_tokens else "")
    title = (f"perplexity of {args.model} on {', '.join(map(str, args.data))}: {scored}"
             + (f", last {args.val_fraction:g} of the stream" if args.val_fraction else ""))
    results = {"kind": "perplexity", "model": str(args.model), "data": list(map(str, args.data)), "rows": rows,
               "tokens": int(tokens.numel()), "val_fraction": args.val_fraction, "max_tokens": args.max_tokens,
               "train_len": args.train_len, "wall_s": time.perf_counter() - t0}
    _report(out, results, title, format_table(rows),
            lambda p: plot_perplexity(rows, p, title, args.train_len), "ppl_vs_length.png")


# --------------------------------------------------------------------------- mqar


def _parse_slice(text: str) -> tuple[int, int]:
    try:
        t, kv = (int(x) for x in text.split(":"))
    except ValueError:
        raise SystemExit(f"error: --slices entries are T:kv (e.g. 128:8), got {text!r}") from None
    return t, kv


def _mqar(args) -> None:
    from ..data import MQARConfig, generate_mqar
    from .mqar import evaluate_mqar_slices

    _positive("--num-examples", [args.num_examples])
    slices_spec = [_parse_slice(s) for s in args.slices]
    model = load_saved_model(args.model, args.device, "slotmem eval mqar")
    vocab = args.vocab_size or model.config.vocab_size
    if vocab > model.config.vocab_size:
        _fail(f"--vocab-size {vocab} exceeds the model's vocab_size {model.config.vocab_size}")
    slices = []
    for t, kv in slices_spec:
        try:
            cfg = MQARConfig(t, kv, args.num_examples, vocab, args.power_a, args.seed)
            inputs, labels = generate_mqar(cfg, "test")
        except ValueError as e:
            _fail(f"slice {t}:{kv}: {e}")
        slices.append((cfg, inputs, labels))
    out = _out_dir(args, "mqar")
    t0 = time.perf_counter()
    res = evaluate_mqar_slices(model, slices, args.batch_size)
    rows = res["slices"]
    title = (f"MQAR accuracy of {args.model}: vocab {vocab}, {args.num_examples} test examples per slice "
             f"(seed {args.seed}); chance ~ {1.0 / (vocab - vocab // 2):.1e}")
    table = "\n".join([f"{'T':>6} {'kv':>5} {'examples':>9} {'acc':>7} {'loss':>8}"]
                      + [f"{r['seq_len']:>6} {r['num_kv_pairs']:>5} {r['num_examples']:>9} {r['acc']:>7.3f} {r['loss']:>8.4f}"
                         for r in rows] + [f"{'mean':>6} {'':>5} {'':>9} {res['acc']:>7.3f} {res['loss']:>8.4f}"])
    results = {"kind": "mqar", "model": str(args.model), "vocab_size": vocab, "seed": args.seed, "power_a": args.power_a,
               "acc": res["acc"], "loss": res["loss"], "slices": rows, "wall_s": time.perf_counter() - t0}

    def plot(path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(1.1 * len(rows) + 3, 4))
        ax.bar([f"T{r['seq_len']}/kv{r['num_kv_pairs']}" for r in rows], [r["acc"] for r in rows])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("accuracy")
        ax.set_xlabel("test slice")
        ax.set_title(title, fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)

    _report(out, results, title, table, plot, "accuracy_per_slice.png")


# --------------------------------------------------------------------------- niah


def _niah(args) -> None:
    from ..data.niah import niah_samples
    from .niah import format_niah_table, plot_niah, score_niah, summarize_niah

    _positive("--lengths", args.lengths)
    bad = [d for d in args.depths if not 0.0 <= d <= 1.0]
    if bad:
        _fail(f"--depths must lie in [0, 1], got {bad}")
    model, tok = load_model_and_tokenizer(args.model, args.device, args.tokenizer, "slotmem eval niah")
    try:
        samples = niah_samples(tok, args.lengths, args.depths, args.samples, seed=args.seed, haystack=args.haystack)
    except ValueError as e:
        _fail(str(e))
    out = _out_dir(args, "niah")
    t0 = time.perf_counter()
    rows = score_niah(model, tok, samples, progress=not args.no_progress)
    cells = summarize_niah(rows)
    title = (f"S-NIAH accuracy of {args.model} (greedy decoding reproduces the 7-digit value): haystack "
             f"{args.haystack}, {args.samples} sample(s) per cell, seed {args.seed}")
    results = {"kind": "niah", "model": str(args.model), "haystack": args.haystack, "seed": args.seed,
               "acc": sum(r["correct"] for r in rows) / len(rows), "cells": cells, "samples": rows,
               "wall_s": time.perf_counter() - t0}
    _report(out, results, title, format_niah_table(cells) + f"\nmean accuracy {results['acc']:.3f}",
            lambda p: plot_niah(cells, p, title), "niah_accuracy.png")


# --------------------------------------------------------------------------- parser


def _common(p, tokenizer: bool = True) -> None:
    p.add_argument("model", help="a saved model directory (e.g. <out_dir>/model of slotmem train)")
    if tokenizer:
        p.add_argument("--tokenizer", default=None, help="tokenizer name or path (default: the model directory's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="output folder (default outputs/eval/<kind>/<timestamp>)")


def add_eval_parser(sub) -> None:
    ev = sub.add_parser("eval", help="evaluate a saved model: perplexity, mqar, niah (results.json, table, plot)",
                        description="Evaluate a saved model. Outputs in --out: results.json, table.txt and a plot.")
    kinds = ev.add_subparsers(dest="eval_kind", required=True)

    p = kinds.add_parser("perplexity", help="perplexity at several context lengths on text / jsonl / HF datasets",
                         description="Cut the same token stream into windows of each length and report the mean "
                                     "next-token NLL and perplexity per length.")
    _common(p)
    p.add_argument("data", nargs="+", help="text / jsonl files or directories, or a dataset (see --format)")
    p.add_argument("--lengths", type=int, nargs="+", required=True, metavar="L")
    p.add_argument("--format", default="auto", choices=["auto", "txt", "jsonl", "hf"],
                   help="hf: a save_to_disk directory, a .parquet/.csv/.arrow file, or a hub name")
    p.add_argument("--text-field", default="text")
    p.add_argument("--hf-split", default="train")
    p.add_argument("--hf-config", default=None)
    p.add_argument("--val-fraction", type=float, default=0.0,
                   help="score only the last fraction of the token stream (what slotmem train held out with "
                        "lm.val_fraction); default 0: all of it")
    p.add_argument("--max-tokens", type=int, default=0, help="score only the first N tokens (0 = all)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per batch at the shortest length")
    p.add_argument("--train-len", type=int, default=None, help="training context length (marks longer lengths)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_perplexity)

    p = kinds.add_parser("mqar", help="MQAR accuracy per (T, kv) test slice",
                         description="Accuracy on held-out MQAR slices (the test stream of slotmem.data.mqar).")
    _common(p, tokenizer=False)
    p.add_argument("--slices", nargs="+", required=True, metavar="T:kv", help="e.g. 64:4 128:8 256:16")
    p.add_argument("--num-examples", type=int, default=256)
    p.add_argument("--vocab-size", type=int, default=None, help="MQAR vocabulary (default: the model's vocab_size)")
    p.add_argument("--power-a", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(func=_mqar)

    p = kinds.add_parser("niah", help="RULER-style single needle in a haystack at several lengths and depths",
                         description="S-NIAH (slotmem.data.niah): a key/value needle sentence at a controlled depth in "
                                     "locally generated filler; correct when greedy decoding reproduces the value.")
    _common(p)
    p.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048], metavar="L")
    p.add_argument("--depths", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0], metavar="D")
    p.add_argument("--samples", type=int, default=4, help="samples per (length, depth)")
    p.add_argument("--haystack", default="noise", choices=["noise", "words"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_niah)
