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
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..ops.utils import check_choice

FORMATS = ("auto", "txt", "jsonl", "hf")
_TXT_SUFFIXES = (".txt", ".text")
_JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
# Files that `load_dataset` reads through a packaged builder (keyed by suffix).
_HF_FILE_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}
_TOKENIZER_FILE = "slotmem_tokenizer.json"


# --------------------------------------------------------------------------- tokenizers


class ByteTokenizer:
    """UTF-8 byte tokenizer; needs no download.

    Ids ``0..255`` are the bytes themselves; ``256 = <bos>``, ``257 = <eos>``,
    ``258 = <pad>``; ``vocab_size = 259``. Offers the small part of the Hugging Face
    tokenizer interface that training, generation and the CLI use: ``encode``,
    ``decode``, ``batch_decode``, ``__call__`` (``input_ids`` / ``attention_mask``),
    ``*_token_id`` attributes, ``len()``, ``save_pretrained`` (reloaded by
    ``load_tokenizer``).
    """

    bos_token_id = 256
    eos_token_id = 257
    pad_token_id = 258
    vocab_size = 259
    bos_token, eos_token, pad_token = "<bos>", "<eos>", "<pad>"
    name_or_path = "byte"

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def all_special_ids(self) -> list[int]:
        return [self.bos_token_id, self.eos_token_id, self.pad_token_id]

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """UTF-8 bytes of ``text``; with ``add_special_tokens`` wrapped in ``<bos> ... <eos>``."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        ids = list(text.encode("utf-8"))
        if add_special_tokens:
            ids = [self.bos_token_id, *ids, self.eos_token_id]
        return ids

    def encode_array(self, text: str) -> np.ndarray:
        """Fast path: UTF-8 bytes as an int64 array ``[n_bytes]`` (no special tokens)."""
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """Bytes back to text (invalid UTF-8 becomes U+FFFD); special ids become their
        names, or are dropped with ``skip_special_tokens``."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        if isinstance(ids, int):
            ids = [ids]
        names = {self.bos_token_id: self.bos_token, self.eos_token_id: self.eos_token, self.pad_token_id: self.pad_token}
        out: list[str] = []
        buf = bytearray()
        for i in ids:
            i = int(i)
            if 0 <= i < 256:
                buf.append(i)
            elif i in names:
                out.append(buf.decode("utf-8", errors="replace"))
                buf = bytearray()
                if not skip_special_tokens:
                    out.append(names[i])
            else:
                raise ValueError(f"token id {i} is outside the byte vocabulary [0, {self.vocab_size})")
        out.append(buf.decode("utf-8", errors="replace"))
        return "".join(out)

    def batch_decode(self, sequences, skip_special_tokens: bool = False) -> list[str]:
        return [self.decode(s, skip_special_tokens=skip_special_tokens) for s in sequences]

    def __call__(self, text, add_special_tokens: bool = False, return_tensors: str | None = None):
        """``{"input_ids", "attention_mask"}`` for a str or a list of str; lists are
        right-padded with ``<pad>``; ``return_tensors='pt'`` gives LongTensors ``[B, T]``."""
        if return_tensors not in (None, "pt"):
            raise ValueError(f"return_tensors={return_tensors!r} is not supported; use None or 'pt'")
        single = isinstance(text, str)
        batch = [self.encode(t, add_special_tokens) for t in ([text] if single else text)]
        width = max((len(b) for b in batch), default=0)
        ids = [b + [self.pad_token_id] * (width - len(b)) for b in batch]
        mask = [[1] * len(b) + [0] * (width - len(b)) for b in batch]
        if return_tensors == "pt":
            return {"input_ids": torch.tensor(ids, dtype=torch.long), "attention_mask": torch.tensor(mask, dtype=torch.long)}
        if single:
            return {"input_ids": ids[0], "attention_mask": mask[0]}
        return {"input_ids": ids, "attention_mask": mask}

    def save_pretrained(self, directory) -> None:
        """Write a marker file so that ``load_tokenizer(directory)`` gives a ByteTokenizer."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / _TOKENIZER_FILE).write_text(json.dumps({"type": "byte", "vocab_size": self.vocab_size}) + "\n")

    def __repr__(self) -> str:
        return "ByteTokenizer(vocab_size=259, bos=256, eos=257, pad=258)"


def load_tokenizer(name_or_path: str = "byte"):
    """``'byte'`` (or a directory saved by ``ByteTokenizer.save_pretrained``) gives a
    ``ByteTokenizer``; anything else goes to ``transformers.AutoTokenizer.from_pretrained``
    (a local directory, or a hub name when online)."""
    if not isinstance(name_or_path, (str, Path)):
        raise TypeError(f"name_or_path must be a str or path, got {type(name_or_path).__name__}")
    if str(name_or_path) == "byte":
        return ByteTokenizer()
    p = Path(name_or_path)
    if (p / _TOKENIZER_FILE).is_file():
        kind = json.loads((p / _TOKENIZER_FILE).read_text()).get("type")
        if kind != "byte":
            raise ValueError(f"{p / _TOKENIZER_FILE}: unknown tokenizer type {kind!r}")
        return ByteTokenizer()
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
    eos_arr = np.array([eos], dtype=np.int64)
    parts: list[np.ndarray] = []
    n_docs = 0
    for doc in documents:
        if not doc:
            continue
        n_docs += 1
        if isinstance(tokenizer, ByteTokenizer):
            ids = tokenizer.encode_array(doc)
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
    """Windows ``[N, seq_len + 1]`` of a 1-D token stream, starting every ``stride``
    tokens (default ``seq_len``: consecutive windows share one token, so every token but
    the first is a target exactly once). A tail shorter than a window is dropped."""
    ds = LMDataset(tokens, seq_len, stride)
    return tokens.unfold(0, seq_len + 1, ds.stride)[: len(ds)]


class LMDataset(Dataset):
    """Packed language-modelling windows over a 1-D token stream.

    Item ``i`` is ``{"input_ids": w[:-1], "labels": w[1:]}``, both ``LongTensor
    [seq_len]``, for the window ``w = tokens[i*stride : i*stride + seq_len + 1]``.
    Windows are sliced lazily; the stream is not copied.
    """

    def __init__(self, tokens: torch.Tensor, seq_len: int, stride: int | None = None) -> None:
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 1:
            raise ValueError(f"tokens must be a 1-D tensor, got {getattr(tokens, 'shape', type(tokens))}")
        if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 1:
            raise ValueError(f"seq_len must be a positive int, got {seq_len!r}")
        stride = seq_len if stride is None else stride
        if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
            raise ValueError(f"stride must be a positive int, got {stride!r}")
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
        i %= self._n
        w = self.tokens[i * self.stride : i * self.stride + self.seq_len + 1]
        return {"input_ids": w[:-1], "labels": w[1:]}


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
