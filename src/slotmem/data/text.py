"""Language-modelling data: read documents, tokenize, split, pack.

Pipeline (``load_lm_data`` runs all of it)::

    read_documents(source)           plain .txt, JSONL (one object per line, text field
                                     configurable) or Hugging Face ``datasets``
      -> tokenize_documents          token stream, each document followed by EOS
      -> split_tokens                deterministic: the last ``val_fraction`` of the stream
                                     is validation, the rest train (no shuffling, no seed)
      -> LMDataset(tokens, seq_len)  windows of ``seq_len + 1`` tokens, stride ``seq_len``:
                                     ``input_ids = w[:-1]``, ``labels = w[1:]``

Labels are already shifted (``labels[t]`` is the token after ``input_ids[t]``): compute
the loss directly with ``cross_entropy(..., ignore_index=-100)``; a Hugging Face model's
``labels=`` argument would shift them once more.

Splitting the token stream rather than the document list keeps a one-document corpus
(e.g. a single .txt file) usable and gives the same validation text at every
``seq_len``, which a perplexity-vs-context-length sweep needs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..checks import check_choice, check_positive_int

FORMATS = ("auto", "txt", "jsonl", "hf")
_TXT_SUFFIXES = (".txt", ".text")
_JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
# Files that `load_dataset` reads through a packaged builder (keyed by suffix).
_HF_FILE_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}
# Written by slotmem < 0.2 for the byte tokenizer; still read by load_tokenizer.
_LEGACY_TOKENIZER_FILE = "slotmem_tokenizer.json"


# --------------------------------------------------------------------------- tokenizers


BYTE_BOS_ID, BYTE_EOS_ID, BYTE_PAD_ID = 256, 257, 258
BYTE_VOCAB_SIZE = 259
_BYTE_SPECIALS = ("<bos>", "<eos>", "<pad>")


@lru_cache(maxsize=1)
def _byte_symbols() -> tuple[str, ...]:
    """The printable stand-in of each byte ``0..255`` in byte-level BPE vocabularies (the
    GPT-2 convention that ``tokenizers``' ``ByteLevel`` pre-tokenizer and decoder use)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1), *range(ord("\u00ae"), ord("\u00ff") + 1)]
    symbols, n = {}, 0
    for b in range(256):
        if b in keep:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + n)
            n += 1
    return tuple(symbols[b] for b in range(256))


def byte_tokenizer():
    """The UTF-8 byte tokenizer as a Hugging Face ``PreTrainedTokenizerFast``; needs no download.

    Ids ``0..255`` are the bytes themselves; ``256 = <bos>``, ``257 = <eos>``, ``258 = <pad>``;
    ``len() == 259``. Built with the ``tokenizers`` library (a byte-level BPE with no merges), so
    ``save_pretrained`` writes a ``tokenizer.json`` that ``AutoTokenizer.from_pretrained`` loads
    in any process, without ``slotmem``. No special tokens are added on encoding (training
    separates documents by ``<eos>`` only), and text is always read as bytes: a literal
    ``"<eos>"`` in the input is five bytes, not id 257 (``split_special_tokens``). Invalid UTF-8
    decodes to U+FFFD.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(vocab={c: b for b, c in enumerate(_byte_symbols())}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(list(_BYTE_SPECIALS))
    bos, eos, pad = _BYTE_SPECIALS
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=bos, eos_token=eos, pad_token=pad,
                                  split_special_tokens=True, name_or_path="byte")
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, len(tok)) == (BYTE_BOS_ID, BYTE_EOS_ID, BYTE_PAD_ID, BYTE_VOCAB_SIZE)
    return tok


def is_byte_tokenizer(tokenizer) -> bool:
    """Whether ``tokenizer`` maps text to its UTF-8 bytes exactly as ``byte_tokenizer()`` does
    (same vocabulary and special ids, text read as bytes)."""
    get_vocab = getattr(tokenizer, "get_vocab", None)
    if get_vocab is None or len(tokenizer) != BYTE_VOCAB_SIZE or not getattr(tokenizer, "split_special_tokens", False):
        return False
    vocab = get_vocab()
    return all(vocab.get(c) == b for b, c in enumerate(_byte_symbols())) and all(
        vocab.get(name) == i for i, name in zip((BYTE_BOS_ID, BYTE_EOS_ID, BYTE_PAD_ID), _BYTE_SPECIALS))


def special_token_ids(tokenizer) -> dict:
    """``{"bos_token_id", "eos_token_id", "pad_token_id"}`` of a tokenizer (None where it has none),
    for a model config and its generation config."""
    return {k: getattr(tokenizer, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}


def load_tokenizer(name_or_path: str = "byte"):
    """``'byte'`` gives ``byte_tokenizer()``; anything else goes to
    ``transformers.AutoTokenizer.from_pretrained`` (a local directory, e.g. a model saved by
    ``slotmem train``, or a hub name when online). A directory from before the byte tokenizer
    was a Hugging Face tokenizer (holding only ``slotmem_tokenizer.json``) also gives the byte
    tokenizer."""
    if not isinstance(name_or_path, (str, Path)):
        raise TypeError(f"name_or_path must be a str or path, got {type(name_or_path).__name__}")
    if str(name_or_path) == "byte":
        return byte_tokenizer()
    p = Path(name_or_path)
    if (p / _LEGACY_TOKENIZER_FILE).is_file() and not (p / "tokenizer.json").is_file():
        kind = json.loads((p / _LEGACY_TOKENIZER_FILE).read_text()).get("type")
        if kind != "byte":
            raise ValueError(f"{p / _LEGACY_TOKENIZER_FILE}: unknown tokenizer type {kind!r}")
        return byte_tokenizer()
    name = str(name_or_path)
    # A name that is clearly a local path (absolute, ./ ~/, or below an existing folder) and
    # is missing fails here at once instead of after the hub client's retries.
    looks_local = p.is_absolute() or name.startswith((".", "~")) or (p.parent != Path(".") and p.parent.exists())
    if p.is_file() or (not p.exists() and looks_local):
        raise ValueError(f"tokenizer {name!r} not found: not a tokenizer directory. Use 'byte', a directory with tokenizer "
                         "files (tokenizer.json, ...) or a Hugging Face hub name")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as e:
        raise ValueError(f"tokenizer {name!r} cannot be loaded: {str(e).splitlines()[0]} Use 'byte', a directory with "
                         "tokenizer files or a Hugging Face hub name (hub names need network access or the local cache)") from None


def _eos_id(tokenizer) -> int:
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        eos = getattr(tokenizer, "sep_token_id", None)
    if eos is None:
        raise ValueError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', tokenizer)!r} has no eos_token_id (nor sep_token_id) "
            "to separate documents; set tokenizer.eos_token first"
        )
    return int(eos)


# --------------------------------------------------------------------------- reading


def _read_txt(path: Path) -> Iterator[str]:
    try:
        yield path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); convert it to UTF-8") from None


def _read_jsonl(path: Path, text_field: str) -> Iterator[str]:
    lineno = 0
    try:
        with path.open("r", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
                if not isinstance(obj, dict) or text_field not in obj:
                    keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
                    raise ValueError(f"{path}:{lineno}: no field {text_field!r} (found {keys}); set text_field")
                text = obj[text_field]
                if not isinstance(text, str):
                    raise ValueError(f"{path}:{lineno}: field {text_field!r} is {type(text).__name__}, not a string")
                yield text
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text after line {lineno} ({e.reason}); convert it to UTF-8") from None


def _is_saved_hf_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / f).is_file() for f in ("dataset_info.json", "state.json", "dataset_dict.json"))


def _read_hf(source: str, text_field: str, hf_split: str, hf_config: str | None) -> Iterator[str]:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("reading Hugging Face datasets needs `datasets`: pip install 'slotmem[data]'") from e
    path = Path(source)
    if _is_saved_hf_dataset(path):
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if hf_split not in ds:
                raise ValueError(f"{path}: no split {hf_split!r} (found {sorted(ds)}); set hf_split")
            ds = ds[hf_split]
    elif path.is_file():
        suffix = path.suffix.lower()
        builder = _HF_FILE_BUILDERS.get(suffix) or ("json" if suffix in _JSONL_SUFFIXES else "text" if suffix in _TXT_SUFFIXES else None)
        if builder is None:
            raise ValueError(f"{path}: cannot load a {suffix!r} file with `datasets`; use .parquet/.csv/.arrow/.jsonl/.txt")
        ds = datasets.load_dataset(builder, data_files=str(path), split="train")
    elif path.is_dir():
        ds = datasets.load_dataset(str(path), hf_config, split=hf_split)
    else:  # a hub name, e.g. "roneneldan/TinyStories" (needs network access)
        ds = datasets.load_dataset(source, hf_config, split=hf_split)
    if text_field not in ds.column_names:
        raise ValueError(f"{source}: no column {text_field!r} (found {ds.column_names}); set text_field")
    for text in ds[text_field]:
        if not isinstance(text, str):
            raise ValueError(f"{source}: column {text_field!r} holds {type(text).__name__}, not strings")
        yield text


def _infer_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if _is_saved_hf_dataset(path) or suffix in _HF_FILE_BUILDERS:
        return "hf"
    if suffix in _TXT_SUFFIXES:
        return "txt"
    if suffix in _JSONL_SUFFIXES:
        return "jsonl"
    raise ValueError(
        f"{path}: unknown format (suffix {suffix!r}); expected .txt, .jsonl/.json, a saved `datasets` "
        "directory or .parquet/.csv/.arrow, or pass format='txt'|'jsonl'|'hf'"
    )


def _expand_sources(source) -> list:
    if isinstance(source, (str, Path)):
        return [source]
    if isinstance(source, Sequence) and source and all(isinstance(s, (str, Path)) for s in source):
        return list(source)
    raise TypeError(f"source must be a path/name or a non-empty list of them, got {source!r}")


def read_documents(
    source,
    *,
    format: str = "auto",
    text_field: str = "text",
    hf_split: str = "train",
    hf_config: str | None = None,
) -> Iterator[str]:
    """Yield documents (strings) from ``source``: a path, a hub name or a list of them.

    * ``txt``: each file is one document (UTF-8).
    * ``jsonl``: one JSON object per line, the document in ``text_field``; blank lines skipped.
    * ``hf``: a directory saved with ``save_to_disk`` (``load_from_disk``; a DatasetDict
      gives ``hf_split``), a local .parquet/.csv/.arrow/.jsonl/.txt file or data directory
      (``load_dataset``), or otherwise a hub name (``load_dataset(name, hf_config,
      split=hf_split)``, needs network access).
    * ``auto``: by suffix / directory content; a directory that is not a saved dataset
      yields its .txt and .jsonl/.json files in sorted order.

    A local path that does not exist raises ``FileNotFoundError`` unless ``format='hf'``
    (then it is taken to be a hub name).
    """
    check_choice("format", format, FORMATS)
    for src in _expand_sources(source):
        path = Path(src)
        if format == "hf":
            yield from _read_hf(str(src), text_field, hf_split, hf_config)
            continue
        if not path.exists():
            hint = " (for a Hugging Face hub dataset pass format='hf')" if format == "auto" else ""
            raise FileNotFoundError(f"no such file or directory: {str(path)!r}{hint}")
        if path.is_dir() and not _is_saved_hf_dataset(path):
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in _TXT_SUFFIXES + _JSONL_SUFFIXES)
            if not files:
                raise ValueError(f"{path}: directory holds no .txt or .jsonl/.json files")
            for f in files:
                yield from read_documents(f, format=format, text_field=text_field)
            continue
        fmt = _infer_format(path) if format == "auto" else format
        if fmt == "txt":
            yield from _read_txt(path)
        elif fmt == "jsonl":
            yield from _read_jsonl(path, text_field)
        else:
            yield from _read_hf(str(src), text_field, hf_split, hf_config)


# --------------------------------------------------------------------------- tokens


def tokenize_documents(documents: Iterable[str], tokenizer) -> torch.Tensor:
    """One token stream ``LongTensor [n_tokens]``: each document's tokens (no special
    tokens added) followed by the tokenizer's EOS. Raises ``ValueError`` if empty."""
    eos = _eos_id(tokenizer)
    byte_fast = is_byte_tokenizer(tokenizer)
    eos_arr = np.array([eos], dtype=np.int64)
    parts: list[np.ndarray] = []
    n_docs = 0
    for doc in documents:
        if not doc:
            continue
        n_docs += 1
        if byte_fast:  # the same ids as tokenizer.encode, ~100x faster
            ids = np.frombuffer(doc.encode("utf-8"), dtype=np.uint8).astype(np.int64)
        else:
            ids = np.asarray(tokenizer.encode(doc, add_special_tokens=False), dtype=np.int64)
        parts.append(ids)
        parts.append(eos_arr)
    if n_docs == 0:
        raise ValueError("empty corpus: no non-empty documents were read")
    return torch.from_numpy(np.concatenate(parts))


def split_tokens(tokens: torch.Tensor, val_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic contiguous split: ``(train, validation)`` with validation the last
    ``round(val_fraction * n)`` tokens of the stream (views, no copy)."""
    if tokens.dim() != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tuple(tokens.shape)}")
    if not isinstance(val_fraction, (int, float)) or not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    n_val = int(round(val_fraction * tokens.numel()))
    cut = tokens.numel() - n_val
    return tokens[:cut], tokens[cut:]


def num_windows(n_tokens: int, seq_len: int, stride: int) -> int:
    """Number of full windows of ``seq_len + 1`` tokens at the given stride (the tail is dropped)."""
    return 0 if n_tokens < seq_len + 1 else (n_tokens - seq_len - 1) // stride + 1


def pack_tokens(tokens: torch.Tensor, seq_len: int, stride: int | None = None) -> torch.Tensor:
    """Windows ``[N, seq_len + 1]`` (a view) of a 1-D token stream, starting every ``stride`` tokens
    (default ``seq_len``: consecutive windows share one token, so every token but the first is a
    target exactly once). A tail shorter than a window is dropped; ``N = 0`` for a stream shorter
    than one window. The one windowing of the package: training batches, ``LMDataset`` and the
    perplexity evaluation all cut streams with it."""
    stride = seq_len if stride is None else stride
    n = num_windows(tokens.numel(), seq_len, stride)
    if n == 0:
        return tokens.new_zeros((0, seq_len + 1))
    return tokens.unfold(0, seq_len + 1, stride)[:n]


class LMDataset(Dataset):
    """Packed language-modelling windows over a 1-D token stream.

    Item ``i`` is ``{"input_ids": w[:-1], "labels": w[1:]}``, both ``LongTensor
    [seq_len]``, for the window ``w = tokens[i*stride : i*stride + seq_len + 1]``.
    Windows are sliced lazily; the stream is not copied.
    """

    def __init__(self, tokens: torch.Tensor, seq_len: int, stride: int | None = None) -> None:
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 1:
            raise ValueError(f"tokens must be a 1-D tensor, got {getattr(tokens, 'shape', type(tokens))}")
        check_positive_int("seq_len", seq_len)
        stride = seq_len if stride is None else stride
        check_positive_int("stride", stride)
        n = num_windows(tokens.numel(), seq_len, stride)
        if n == 0:
            raise ValueError(
                f"{tokens.numel()} tokens are too few for one window of seq_len + 1 = {seq_len + 1} tokens"
            )
        self.tokens = tokens.long()
        self.seq_len = seq_len
        self.stride = stride
        self._n = n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -self._n <= i < self._n:
            raise IndexError(f"index {i} out of range for {self._n} windows")
        w = self.windows()[i % self._n]
        return {"input_ids": w[:-1], "labels": w[1:]}

    def windows(self) -> torch.Tensor:
        """All windows ``[len(self), seq_len + 1]`` as one view (``pack_tokens``)."""
        return pack_tokens(self.tokens, self.seq_len, self.stride)


@dataclass
class LMData:
    """What ``load_lm_data`` returns. ``validation`` is None when ``val_fraction == 0``."""

    train: LMDataset
    validation: LMDataset | None
    tokenizer: object
    train_tokens: torch.Tensor
    val_tokens: torch.Tensor


def load_lm_data(
    source,
    seq_len: int,
    *,
    tokenizer="byte",
    val_fraction: float = 0.1,
    stride: int | None = None,
    format: str = "auto",
    text_field: str = "text",
    hf_split: str = "train",
    hf_config: str | None = None,
) -> LMData:
    """Read ``source`` (see ``read_documents``), tokenize (``tokenizer``: an object or a
    name for ``load_tokenizer``), split the stream (``split_tokens``) and pack both parts
    into ``LMDataset`` windows of ``seq_len`` inputs."""
    tok = load_tokenizer(tokenizer) if isinstance(tokenizer, (str, Path)) else tokenizer
    docs = read_documents(source, format=format, text_field=text_field, hf_split=hf_split, hf_config=hf_config)
    tokens = tokenize_documents(docs, tok)
    train_tokens, val_tokens = split_tokens(tokens, val_fraction)
    parts = {}
    for name, toks in (("train", train_tokens), ("validation", val_tokens)):
        if name == "validation" and val_fraction == 0:
            parts[name] = None
            continue
        try:
            parts[name] = LMDataset(toks, seq_len, stride)
        except ValueError as e:
            raise ValueError(
                f"{name} split of {source!r} ({tokens.numel()} tokens in all, val_fraction={val_fraction}): {e}"
            ) from None
    train, validation = parts["train"], parts["validation"]
    return LMData(train, validation, tok, train_tokens, val_tokens)
