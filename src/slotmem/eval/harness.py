"""``slotmem lm-eval``: EleutherAI's lm-evaluation-harness with the slotmem models registered.

``lm_eval --model hf`` loads models through ``AutoModelForCausalLM``, which knows the slotmem
model types only after ``import slotmem``. This command imports slotmem and then hands every
argument, unchanged, to lm-eval's own command line (``lm_eval.__main__.cli_evaluate``), so all of
lm-eval's documented options work::

    slotmem lm-eval --model hf --model_args pretrained=outputs/lm_bytes/model \\
        --tasks piqa,hellaswag --batch_size 8 --output_path outputs/lm_eval

Needs ``pip install 'slotmem[eval]'`` (lm-eval and accelerate).
"""
from __future__ import annotations

import sys


def main(argv=None) -> None:
    """Run lm-eval's CLI on ``argv`` (default ``sys.argv[1:]``) with slotmem's models registered."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        from lm_eval.__main__ import cli_evaluate
    except ImportError as e:
        raise SystemExit(f"slotmem lm-eval needs lm-evaluation-harness ({e}): pip install 'slotmem[eval]'") from None

    from .. import models  # noqa: F401  (registers the Auto classes that `--model hf` loads through)

    saved = sys.argv
    sys.argv = ["lm-eval", *argv]  # lm-eval's parser reads sys.argv itself
    try:
        cli_evaluate()
    finally:
        sys.argv = saved


if __name__ == "__main__":
    main()
