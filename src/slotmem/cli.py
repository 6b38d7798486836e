"""The ``slotmem`` command line. ``slotmem --help`` lists the subcommands."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

DEFAULT_CONTEXTS = (1024, 4096, 16384, 65536)


def _demo(args) -> None:
    """Run a LatticeAttention layer on generated data; print state size and throughput."""
    import torch

    from .layers import LatticeAttention

    torch.manual_seed(args.seed)
    kw = {} if args.chunk_size is None else {"chunk_size": args.chunk_size}  # None: the layer's default
    layer = LatticeAttention(args.hidden_size, args.num_heads, num_slots=args.num_slots, **kw)
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
    print(f"forward               {tokens / t_fwd:,.0f} tokens/s  (B={args.batch}, T={args.seq_len}, chunk={layer.chunk_size})")
    print(f"forward+backward      {tokens / t_all:,.0f} tokens/s")


# --------------------------------------------------------------------------- info


def _human(n: float) -> str:
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:,.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}P"


def model_info(config, context_lengths=DEFAULT_CONTEXTS) -> str:
    """A text summary of the model ``config`` describes: architecture, parameters, decode state."""
    import torch

    from .models import model_for_causal_lm

    with torch.device("meta"):  # shapes only: instant even for large models
        model = model_for_causal_lm(config)
    c = config
    lines = [f"model            {type(model).__name__}  (model_type {c.model_type!r})"]
    kinds = c.mixer_types
    layout = ", ".join(f"{k} x{n}" for k, n in _runs(kinds))
    lines.append(f"layers           {c.num_hidden_layers}: {layout}")
    lines.append(f"block            x + {c.mixer}(RMSNorm(x))" + (f"; x + SwiGLU(RMSNorm(x)) [intermediate {c.intermediate_size}]" if c.use_mlp else "; no MLP"))
    lines.append(f"width            hidden {c.hidden_size}, heads {c.num_heads}, vocab {c.vocab_size}, "
                 f"{'tied' if c.tie_word_embeddings else 'untied'} embeddings")
    if c.mixer_kwargs:
        lines.append(f"mixer_kwargs     {c.mixer_kwargs}")
    for i, kw in sorted(c.layer_kwargs.items(), key=lambda item: int(item[0])):
        lines.append(f"layer {i} kwargs   {kw}")
    if c.attn_layers:
        lines.append(f"attention layers {c.attn_layers} (window {c.attn_window or 'full'}; kwargs {c.attn_kwargs or {}})")
    total = model.num_parameters()
    non_emb = model.num_parameters(exclude_embeddings=True)
    per_block = sum(p.numel() for p in model.model.layers[0].parameters())
    mixer0 = sum(p.numel() for p in model.model.layers[0].mixer.parameters())
    lines.append(f"parameters       {total:,} total ({_human(total)}); {non_emb:,} without embeddings; "
                 f"block 0: {per_block:,} (mixer {mixer0:,})")
    lines.append("decode state     floats per sequence (fp32 bytes = 4x), by context length:")
    ctx = list(context_lengths)
    head = f"  {'layer':<6}{'mixer':<16}" + "".join(f"{t:>14,}" for t in ctx)
    lines.append(head)
    per = [model.layer_state_sizes(t) for t in ctx]
    for i, kind in enumerate(kinds):
        lines.append(f"  {i:<6}{kind:<16}" + "".join(f"{per[j][i]:>14,}" for j in range(len(ctx))))
    lines.append(f"  {'total':<22}" + "".join(f"{sum(p):>14,}" for p in per))
    lines.append(f"  {'total (MiB fp32)':<22}" + "".join(f"{sum(p) * 4 / 2**20:>14,.2f}" for p in per))
    constant = all(sum(p) == sum(per[0]) for p in per)
    lines.append("  constant in context length" if constant else "  grows with context length (softmax-attention KV cache)")
    return "\n".join(lines)


def _runs(items):
    out = []
    for x in items:
        if out and out[-1][0] == x:
            out[-1][1] += 1
        else:
            out.append([x, 1])
    return out


def _info(args) -> None:
    from .configs import resolve_config
    from .models import load_config_file

    path = Path(args.config)
    if not path.exists():  # not a file or saved model directory: a built-in model config (e.g. lattice-tiny)
        try:
            path = resolve_config(args.config)
        except FileNotFoundError as e:
            raise SystemExit(f"slotmem info: {e}") from None
    config = _training_model_config(path) or load_config_file(path)
    print(model_info(config, args.context_lengths))


def _training_model_config(path: Path):
    """The model a training config (a YAML file with a ``task``) trains, exactly as the trainer builds
    it (vocabulary from the task); None for any other file."""
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        return None
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return None  # load_config_file reports it
    if not isinstance(data, dict) or "task" not in data:
        return None
    from .train.config import load_config, model_config
    from .train.errors import SlotmemTrainError
    from .train.tasks import task_vocabulary

    try:
        cfg = load_config(path)
        return model_config(cfg.model, *task_vocabulary(cfg))
    except SlotmemTrainError as e:
        raise SystemExit(f"slotmem info: {e}") from None


# --------------------------------------------------------------------------- generate


def _read_prompt(args) -> str:
    if (args.prompt is None) == (args.prompt_file is None):
        raise SystemExit("slotmem generate: give exactly one of --prompt TEXT and --prompt-file PATH ('-' = stdin)")
    if args.prompt is not None:
        return args.prompt
    if args.prompt_file == "-":
        return sys.stdin.read()
    try:
        return Path(args.prompt_file).read_text(encoding="utf-8")
    except OSError as e:
        raise SystemExit(f"slotmem generate: cannot read --prompt-file {args.prompt_file!r}: {e.strerror}") from None


def generation_kwargs(args, model, tok) -> dict:
    """``model.generate`` arguments from the ``slotmem generate`` options (validated)."""
    checks = [
        (args.max_new_tokens >= 1, "--max-new-tokens must be >= 1"),
        (args.temperature >= 0, "--temperature must be >= 0 (0 = greedy)"),
        (args.top_k is None or args.top_k >= 1, "--top-k must be >= 1"),
        (args.top_p is None or 0 < args.top_p <= 1, "--top-p must be in (0, 1]"),
        (args.num_beams >= 1, "--num-beams must be >= 1"),
        (args.repetition_penalty > 0, "--repetition-penalty must be > 0 (1 = none)"),
    ]
    for ok, msg in checks:
        if not ok:
            raise SystemExit(f"slotmem generate: {msg}")
    gen = dict(max_new_tokens=args.max_new_tokens, do_sample=args.temperature > 0, num_beams=args.num_beams,
               repetition_penalty=args.repetition_penalty, return_dict_in_generate=True)
    if args.temperature > 0:
        gen.update(temperature=args.temperature, top_k=args.top_k if args.top_k is not None else 0,
                   top_p=args.top_p if args.top_p is not None else 1.0)
    eos = model.config.eos_token_id if model.config.eos_token_id is not None else getattr(tok, "eos_token_id", None)
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else getattr(tok, "pad_token_id", None)
    if eos is not None and not args.ignore_eos:
        gen["eos_token_id"] = eos
    if pad is not None or eos is not None:
        gen["pad_token_id"] = pad if pad is not None else eos
    return gen


def _generate(args) -> None:
    import torch
    from transformers import TextStreamer

    from .eval.cli import load_model_and_tokenizer
    from .models import CACHE_NAME

    prompt = _read_prompt(args)
    model, tok = load_model_and_tokenizer(args.model, args.device, args.tokenizer, "slotmem generate")
    gen = generation_kwargs(args, model, tok)
    torch.manual_seed(args.seed)
    enc = tok(prompt, return_tensors="pt")
    input_ids = enc["input_ids"].to(args.device)
    if input_ids.shape[1] == 0:
        raise SystemExit("slotmem generate: the prompt is empty")
    # tokens appear as they are decoded (HF TextStreamer); beam search knows its text only at the end
    streamer = TextStreamer(tok, skip_prompt=False, skip_special_tokens=True) if args.num_beams == 1 else None
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids, attention_mask=enc["attention_mask"].to(args.device), streamer=streamer, **gen)
    dt = time.perf_counter() - t0
    if streamer is None:
        print(tok.decode(out.sequences[0], skip_special_tokens=True))
    n_new = out.sequences.shape[1] - input_ids.shape[1]
    cache = getattr(out, CACHE_NAME, None)
    cache_bytes = cache.nbytes() if cache is not None else 0
    print(f"[{n_new} new tokens in {dt:.2f}s ({n_new / max(dt, 1e-9):.1f} tok/s); decode cache {cache_bytes:,} bytes; "
          f"state {model.state_size(out.sequences.shape[1]):,} floats]", file=sys.stderr)


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    ap = argparse.ArgumentParser(prog="slotmem", description="Lattice and Trellis: bounded, learned slot memory.")
    ap.add_argument("--version", action="version", version=f"slotmem {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a Lattice layer on generated data (state size, throughput)")
    demo.add_argument("--hidden-size", type=int, default=256)
    demo.add_argument("--num-heads", type=int, default=4)
    demo.add_argument("--num-slots", type=int, default=64)
    demo.add_argument("--seq-len", type=int, default=2048)
    demo.add_argument("--batch", type=int, default=2)
    demo.add_argument("--chunk-size", type=int, default=None, help="default: the layer's")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)

    info = sub.add_parser("info", help="describe a model config: architecture, parameters, decode state by context length")
    info.add_argument("--config", required=True, help="model config file (.yaml/.yml/.json), a saved model directory, "
                                                       "or a built-in model config (e.g. lattice-tiny)")
    info.add_argument("--context-lengths", type=int, nargs="+", default=list(DEFAULT_CONTEXTS), metavar="T")
    info.set_defaults(func=_info)

    gen = sub.add_parser("generate", help="stream a continuation of a prompt from a saved model")
    gen.add_argument("--model", required=True, help="directory written by save_pretrained")
    gen.add_argument("--prompt", default=None, help="the prompt text")
    gen.add_argument("--prompt-file", default=None, metavar="PATH", help="read the prompt from a file ('-' = stdin)")
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--temperature", type=float, default=1.0, help="0 = greedy decoding (or beam search)")
    gen.add_argument("--top-k", type=int, default=None, help="sample from the k most likely tokens (default: all)")
    gen.add_argument("--top-p", type=float, default=None, help="nucleus sampling: the smallest set of tokens with "
                                                               "probability >= p (default: 1, all)")
    gen.add_argument("--num-beams", type=int, default=1, help="beam search with this many beams (prints at the end)")
    gen.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeats (1 = none)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--tokenizer", default=None,
                     help="tokenizer name or path (default: the model directory's, else the byte tokenizer)")
    gen.add_argument("--device", default="cpu")
    gen.add_argument("--ignore-eos", action="store_true", help="keep generating past the end-of-sequence token")
    gen.set_defaults(func=_generate)

    from .eval.cli import add_eval_parser
    from .compare.cli import add_compare_parser
    from .train.cli import add_train_parser

    add_train_parser(sub)
    add_compare_parser(sub)
    add_eval_parser(sub)
    sub.add_parser("lm-eval", add_help=False,
                   help="EleutherAI lm-evaluation-harness with the slotmem models registered; every argument "
                        "goes to lm-eval unchanged (slotmem lm-eval --help)")
    return ap


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["lm-eval"]:  # lm-eval parses its own arguments
        from .eval.harness import main as lm_eval_main

        return lm_eval_main(argv[1:])
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides after an option (`compare NAME --only A key=v`): argparse leaves them over
        if not hasattr(args, "overrides") or any(x.startswith("-") for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        args.func(args)
    except Exception as e:  # noqa: BLE001 - user errors become one line; bugs keep their traceback
        code = user_error_exit_code(e)
        if code is None or os.environ.get("SLOTMEM_DEBUG"):
            raise
        print(f"error: {' '.join(str(e).split()) or type(e).__name__}", file=sys.stderr)
        raise SystemExit(code) from None
    except SystemExit as e:
        if isinstance(e.code, str):  # SystemExit("message"): a usage error of a subcommand
            print(f"error: {e.code}", file=sys.stderr)
            raise SystemExit(2) from None
        raise
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def user_error_exit_code(e: BaseException) -> int | None:
    """Exit status for an error caused by the user's input or environment (printed as one
    ``error:`` line, no traceback; ``SLOTMEM_DEBUG=1`` shows it), None for a bug.
    2: usage (bad value, file, config, checkpoint); 1: environment (disk full, read-only)."""
    from .train.errors import SlotmemTrainError

    if isinstance(e, SlotmemTrainError):
        return e.exit_code
    if isinstance(e, OSError):
        return 2 if isinstance(e, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)) else 1
    if isinstance(e, (ValueError, TypeError)):
        return 2
    import yaml

    if isinstance(e, yaml.YAMLError):
        return 2
    return None


if __name__ == "__main__":
    main()
