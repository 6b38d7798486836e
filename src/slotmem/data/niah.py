"""Single needle in a haystack (S-NIAH) in the style of RULER (Hsieh et al., 2024), generated locally.

One sample of context length ``L`` (tokens of the model's tokenizer) and depth ``d``::

    PREAMBLE  filler sentence ... filler sentence  NEEDLE  filler sentence ...  QUERY | ANSWER
              `-------------- about L tokens in all, NEEDLE at fraction d ---------'

* NEEDLE: ``"One of the special magic numbers for {key} is: {value}. "`` -- ``key`` two random
  words joined by a hyphen, ``value`` a random 7-digit number (RULER's words / numbers kinds);
* QUERY: ``"What is the special magic number for {key} mentioned in the provided text? The
  special magic number for {key} mentioned in the provided text is"``; ANSWER: ``" {value}"``;
* filler (``haystack``): ``"noise"`` repeats RULER's noise sentences ("The grass is green. The
  sky is blue. ..."); ``"words"`` draws sentences of random common words (no repetition to
  latch on to);
* the needle goes in at the sentence boundary nearest the fraction ``d`` of the filler
  (0 = right after the preamble, 1 = right before the query).

Lengths are counted with the tokenizer, sentence by sentence, so a sample is at most ``L``
tokens (context + query, before the answer) and within one sentence of it. Every sample is a
pure function of ``(seed, length, depth, index)`` (its own numpy ``PCG64`` stream), so adding
lengths or depths does not change the other samples. Scoring (greedy decoding must reproduce
the value) is ``slotmem.eval.niah``.

As a trained task (``task: niah``, ``slotmem compare``): ``niah_train_samples`` draws the needle
depth uniformly per sample, ``split_seed`` gives train / val / test their own sample streams of one
seed, and ``encode_niah`` turns samples into next-token tensors whose labels are the answer's tokens
only (the loss and the score are on the value, as MQAR's are on the queries).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..checks import check_choice, check_positive_int
from .mqar import IGNORE_INDEX

HAYSTACKS = ("noise", "words")
SPLITS = ("train", "val", "test")
PREAMBLE = ("Some special magic numbers are hidden within the following text. Make sure to memorize it. "
            "I will quiz you about the numbers afterwards.\n")
NEEDLE = "One of the special magic numbers for {key} is: {value}. "
QUERY = ("\nWhat is the special magic number for {key} mentioned in the provided text? "
         "The special magic number for {key} mentioned in the provided text is")
NOISE = ("The grass is green. ", "The sky is blue. ", "The sun is yellow. ", "Here we go. ", "There and back again. ")
WORDS = (
    "amber", "anchor", "apple", "arrow", "autumn", "basket", "breeze", "bridge", "candle", "canyon", "castle",
    "cedar", "cloud", "copper", "coral", "cotton", "crystal", "desert", "dragon", "eagle", "ember", "falcon",
    "feather", "forest", "garden", "glacier", "granite", "harbor", "hazel", "island", "ivory", "jasmine",
    "lantern", "lemon", "marble", "meadow", "mirror", "maple", "narrow", "ocean", "orchid", "pebble", "pepper",
    "planet", "quiet", "river", "saddle", "silver", "spring", "summer", "thunder", "timber", "valley", "velvet",
    "violet", "window", "winter", "yellow", "zephyr", "walks", "sings", "rests", "turns", "holds", "finds",
)


@dataclass(frozen=True)
class NIAHSample:
    """One S-NIAH example. ``prompt`` (preamble, haystack with the needle, query) is what the
    model reads; ``answer`` (``" " + value``) is what it must continue with. ``num_tokens`` is
    the prompt's length in tokens, ``needle_token`` the token offset where the needle starts."""

    prompt: str
    answer: str
    key: str
    value: str
    length: int
    depth: float
    index: int
    num_tokens: int
    needle_token: int


def _count(tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False))


def _filler(rng: np.random.Generator, haystack: str, start: int) -> str:
    if haystack == "noise":
        return NOISE[start % len(NOISE)]
    words = rng.choice(len(WORDS), size=int(rng.integers(5, 12)))
    text = " ".join(WORDS[i] for i in words)
    return text[0].upper() + text[1:] + ". "


def make_niah_sample(tokenizer, length: int, depth: float, *, index: int = 0, seed: int = 0,
                     haystack: str = "noise") -> NIAHSample:
    """One sample of about ``length`` tokens with the needle at relative ``depth`` in [0, 1]
    (see the module docstring). Raises ``ValueError`` if ``length`` cannot hold the preamble,
    the needle and the query."""
    check_choice("haystack", haystack, HAYSTACKS)
    check_positive_int("length", length)
    if not isinstance(depth, (int, float)) or isinstance(depth, bool) or not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be a number in [0, 1], got {depth!r}")
    rng = np.random.default_rng((int(seed), int(length), int(round(depth * 10**6)), int(index)))
    a, b = rng.choice(len(WORDS), size=2, replace=False)
    key = f"{WORDS[a]}-{WORDS[b]}"
    value = str(int(rng.integers(10**6, 10**7)))
    needle, query = NEEDLE.format(key=key, value=value), QUERY.format(key=key)
    fixed = _count(tokenizer, PREAMBLE) + _count(tokenizer, needle) + _count(tokenizer, query)
    if fixed > length:
        raise ValueError(f"length {length} is too short for an S-NIAH sample: the preamble, needle and query "
                         f"alone take {fixed} tokens; use lengths > {fixed}")
    sentences, sizes, used = [], [], fixed
    while True:
        s = _filler(rng, haystack, len(sentences))
        n = _count(tokenizer, s)
        if used + n > length:
            break
        sentences.append(s)
        sizes.append(n)
        used += n
    at = int(round(depth * len(sentences)))
    before = PREAMBLE + "".join(sentences[:at])
    prompt = before + needle + "".join(sentences[at:]) + query
    return NIAHSample(prompt=prompt, answer=" " + value, key=key, value=value, length=int(length), depth=float(depth),
                      index=int(index), num_tokens=_count(tokenizer, prompt), needle_token=_count(tokenizer, before))


def niah_samples(tokenizer, lengths, depths, num_samples: int = 1, *, seed: int = 0,
                 haystack: str = "noise") -> list[NIAHSample]:
    """``num_samples`` samples for every (length, depth), lengths outermost."""
    check_positive_int("num_samples", num_samples)
    return [make_niah_sample(tokenizer, int(L), float(d), index=i, seed=seed, haystack=haystack)
            for L in lengths for d in depths for i in range(num_samples)]


def split_seed(seed: int, split: str) -> int:
    """The sample-stream seed of ``split`` ('train', 'val' or 'test') for ``seed``: distinct for every
    (seed, split) pair, so no split ever shares a sample with another."""
    check_choice("split", split, SPLITS)
    return 3 * int(seed) + SPLITS.index(split)


def niah_train_samples(tokenizer, length: int, num_samples: int, *, seed: int = 0,
                       haystack: str = "noise") -> list[NIAHSample]:
    """``num_samples`` training samples of about ``length`` tokens, the needle depth uniform in [0, 1]
    (drawn from the train stream of ``seed``)."""
    check_positive_int("num_samples", num_samples)
    s = split_seed(seed, "train")
    depths = np.random.default_rng((s, int(length))).random(num_samples)
    return [make_niah_sample(tokenizer, length, float(d), index=i, seed=s, haystack=haystack)
            for i, d in enumerate(depths)]


def encode_niah(tokenizer, samples, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples -> ``(input_ids [N, T], labels [N, T])`` for next-token training and scoring:
    ``prompt + answer`` tokens shifted by one, labels at the answer's tokens only (``IGNORE_INDEX``
    elsewhere), right-padded with ``pad_id`` (never a label) to the longest sample."""
    rows = []
    for smp in samples:
        p = tokenizer.encode(smp.prompt, add_special_tokens=False)
        a = tokenizer.encode(smp.answer, add_special_tokens=False)
        rows.append((p + a, len(p)))
    T = max(len(ids) for ids, _ in rows) - 1
    inputs = torch.full((len(rows), T), int(pad_id), dtype=torch.long)
    labels = torch.full((len(rows), T), IGNORE_INDEX, dtype=torch.long)
    for i, (ids, n_prompt) in enumerate(rows):
        t = torch.tensor(ids, dtype=torch.long)
        inputs[i, : len(ids) - 1] = t[:-1]
        labels[i, n_prompt - 1 : len(ids) - 1] = t[n_prompt:]
    return inputs, labels
