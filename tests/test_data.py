"""Data pipelines: MQAR generator, LM text reading/tokenizing/packing, forecasting CSVs.

Everything is generated here (in tmp_path); nothing reads the shared real-data folder.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from slotmem.data import (
    ForecastDataset,
    LMDataset,
    MQARConfig,
    byte_tokenizer,
    generate_mqar,
    is_byte_tokenizer,
    load_forecast_splits,
    load_lm_data,
    load_tokenizer,
    pack_tokens,
    query_slot_probs,
    read_documents,
    read_series_csv,
    split_borders,
    split_tokens,
    tokenize_documents,
)

# ============================================================================ MQAR


def _context(inputs: torch.Tensor, kv: int):
    return inputs[:, 0 : 2 * kv : 2], inputs[:, 1 : 2 * kv : 2]


@pytest.mark.parametrize("T,kv", [(64, 4), (64, 16), (128, 32), (20, 5)])
def test_mqar_structure(T, kv):
    cfg = MQARConfig(seq_len=T, num_kv_pairs=kv, num_examples=300, seed=3)
    x, y = generate_mqar(cfg)
    V = cfg.vocab_size
    assert x.shape == (300, T) and y.shape == (300, T)
    assert x.dtype == torch.long and y.dtype == torch.long
    assert int(x.min()) >= 0 and int(x.max()) < V
    keys, values = _context(x, kv)
    assert ((keys >= 1) & (keys < V // 2)).all()
    assert ((values >= V // 2) & (values < V)).all()
    # keys (and values) are distinct within each example
    assert (keys.sort(1).values.diff(dim=1) > 0).all()
    assert (values.sort(1).values.diff(dim=1) > 0).all()
    # no label in the context; exactly kv labels, at even offsets of the query region
    assert (y[:, : 2 * kv] == -100).all()
    mask = y != -100
    assert (mask.sum(1) == kv).all()
    n_idx, pos = mask.nonzero(as_tuple=True)
    assert ((pos - 2 * kv) % 2 == 0).all()
    # the input at each label position is a key, each key queried once, and the label is its value
    q = x[n_idx, pos].view(300, kv)
    assert torch.equal(q.sort(1).values, keys.sort(1).values)
    match = q[:, :, None] == keys[:, None, :]  # [N, kv(query), kv(pair)]
    assert (match.sum(-1) == 1).all()
    expected = (match.long() * values[:, None, :]).sum(-1)
    assert torch.equal(y[n_idx, pos].view(300, kv), expected)


def test_mqar_zoology_example_layout():
    """Zoology's docstring example: T=16, kv=2, vocab=12 — queries after a 4-token context."""
    x, y = generate_mqar(MQARConfig(16, 2, 50, vocab_size=12, seed=0))
    pos = (y != -100).nonzero(as_tuple=True)[1]
    assert set(pos.tolist()) <= {4, 6, 8, 10, 12, 14}


def test_mqar_deterministic_and_split_disjoint():
    cfg = MQARConfig(64, 4, 500, seed=7)
    x1, y1 = generate_mqar(cfg, "train")
    x2, y2 = generate_mqar(cfg, "train")
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    xt, yt = generate_mqar(cfg, "test")
    # different data for the same index: no example of the test split equals its train counterpart
    assert not (xt == x1).all(1).any()
    # nor does any test example appear anywhere in train
    train_rows = {tuple(r) for r in x1.tolist()}
    assert not any(tuple(r) in train_rows for r in xt.tolist())
    xs, _ = generate_mqar(MQARConfig(64, 4, 500, seed=8), "train")
    assert not (xs == x1).all(1).any()


def test_mqar_power_law_query_placement():
    """Query slots follow successive sampling without replacement from p_i ∝ a i^(a-1).

    (1) The first pair's key is the first draw, so its slot is distributed exactly as p:
        every slot frequency is within 5 binomial standard deviations of p_i.
    (2) The per-slot inclusion frequencies agree (5 sigma) with numpy's
        `choice(replace=False, p=p)`, the sampler Zoology uses.
    (3) Queries are skewed toward the start: more than 60% fall in the first half of the
        region (uniform placement gives 50%; about 0.79 for these settings).
    """
    T, kv, N = 64, 4, 20000
    cfg = MQARConfig(T, kv, N, seed=0)
    S = cfg.num_query_slots
    p = query_slot_probs(S, cfg.power_a)
    x, y = generate_mqar(cfg)
    keys, _ = _context(x, kv)
    n_idx, pos = (y != -100).nonzero(as_tuple=True)
    slot = ((pos - 2 * kv) // 2).view(N, kv)
    qkey = x[n_idx, pos].view(N, kv)
    first_slot = slot[qkey == keys[:, :1]]  # slot of pair 0's query, one per example
    assert first_slot.numel() == N
    freq = torch.bincount(first_slot, minlength=S).double().numpy() / N
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / N) + 1e-12)

    incl = torch.bincount(slot.flatten(), minlength=S).double().numpy() / N
    rs = np.random.RandomState(0)
    M = 4000
    ref = np.zeros(S)
    for _ in range(M):
        ref[rs.choice(S, size=kv, replace=False, p=p)] += 1
    ref /= M
    sigma = np.sqrt(ref * (1 - ref) / M + incl * (1 - incl) / N)
    assert np.all(np.abs(incl - ref) <= 5 * sigma + 2e-3)

    first_half = (slot < S // 2).double().mean().item()
    assert first_half > 0.6
    # power_a = 1 is uniform placement: close to 50%
    xu, yu = generate_mqar(MQARConfig(T, kv, N, power_a=1.0, seed=0))
    posu = (yu != -100).nonzero(as_tuple=True)[1]
    assert abs(((posu - 2 * kv) // 2 < S // 2).double().mean().item() - 0.5) < 0.02


def test_mqar_full_size_train_slice():
    # The default train slice (20k examples). Generation speed is a benchmark matter, not a unit test.
    x, y = generate_mqar(MQARConfig(64, 4, 20000))
    assert x.shape == y.shape == (20000, 64)
    assert int((y != -100).sum(1).min()) == int((y != -100).sum(1).max()) == 4  # kv queries labelled in every row


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(seq_len=64, num_kv_pairs=17, num_examples=1), "seq_len >= 4\\*kv"),
        (dict(seq_len=64, num_kv_pairs=0, num_examples=1), "num_kv_pairs"),
        (dict(seq_len=64, num_kv_pairs=4, num_examples=0), "num_examples"),
        (dict(seq_len=64, num_kv_pairs=4, num_examples=1, vocab_size=8), "vocab_size=8 is too small"),
        (dict(seq_len=64, num_kv_pairs=4, num_examples=1, power_a=0.0), "power_a"),
        (dict(seq_len=64.0, num_kv_pairs=4, num_examples=1), "seq_len"),
        (dict(seq_len=64, num_kv_pairs=4, num_examples=1, seed=-1), "seed"),
    ],
)
def test_mqar_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MQARConfig(**kwargs)


def test_mqar_split_validation():
    with pytest.raises(ValueError, match="split"):
        generate_mqar(MQARConfig(64, 4, 2), split="valid")
    # 'val' (what slotmem compare selects learning rates on) is a third, independent stream
    cfg = MQARConfig(64, 4, 8)
    val, train, test = (generate_mqar(cfg, s)[0] for s in ("val", "train", "test"))
    assert torch.equal(val, generate_mqar(cfg, "val")[0])
    assert not torch.equal(val, train) and not torch.equal(val, test)


def test_byte_tokenizer_round_trip(tmp_path):
    tok = byte_tokenizer()
    s = "Hello, wörld — ∑ 🙂\n<eos> \x00"
    ids = tok.encode(s, add_special_tokens=False)
    assert ids == list(s.encode("utf-8")) and max(ids) < 256  # a literal "<eos>" is bytes
    assert tok(s)["input_ids"] == ids  # nothing is added by default (training adds no BOS)
    assert tok.decode(ids) == s
    wrapped = [tok.bos_token_id, *ids, tok.eos_token_id]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, len(tok)) == (256, 257, 258, 259)
    assert tok.decode(wrapped) == "<bos>" + s + "<eos>"
    assert tok.decode(torch.tensor(wrapped), skip_special_tokens=True) == s
    assert tok.decode([0xFF]) == "\ufffd"  # invalid UTF-8 is replaced, not an error
    enc = tok(["ab", "c"], return_tensors="pt", padding=True)
    assert enc["input_ids"].tolist() == [[97, 98], [99, tok.pad_token_id]]
    assert enc["attention_mask"].tolist() == [[1, 1], [1, 0]]
    assert tok.batch_decode(enc["input_ids"], skip_special_tokens=True) == ["ab", "c"]
    assert is_byte_tokenizer(tok) and is_byte_tokenizer(load_tokenizer("byte"))
    tok.save_pretrained(tmp_path / "tok")
    assert (tmp_path / "tok" / "tokenizer.json").is_file()
    again = load_tokenizer(str(tmp_path / "tok"))
    assert is_byte_tokenizer(again) and again.encode(s, add_special_tokens=False) == ids
    # the fast path of tokenize_documents gives exactly the tokenizer's ids
    assert tokenize_documents([s], again).tolist() == ids + [257]
    # a directory written by the old ByteTokenizer still loads as the byte tokenizer
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "slotmem_tokenizer.json").write_text('{"type": "byte", "vocab_size": 259}')
    assert is_byte_tokenizer(load_tokenizer(tmp_path / "old"))


def test_byte_tokenizer_loads_without_slotmem(tmp_path):
    """AutoTokenizer reads the saved byte tokenizer in a process that never imports slotmem."""
    byte_tokenizer().save_pretrained(tmp_path / "tok")
    code = (
        "import sys; from transformers import AutoTokenizer\n"
        f"t = AutoTokenizer.from_pretrained({str(tmp_path / 'tok')!r})\n"
        "s = 'round trip: ∂x 🙂 <eos>'\n"
        "ids = t(s)['input_ids']\n"
        "assert ids == list(s.encode()), ids\n"
        "assert t.decode(ids) == s and (t.bos_token_id, t.eos_token_id, t.pad_token_id) == (256, 257, 258)\n"
        "assert not any(m.startswith('slotmem') for m in sys.modules), 'slotmem was imported'\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_hf_tokenizer_from_local_dir(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "[EOS]": 1, "hello": 2, "world": 3}
    core = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", eos_token="[EOS]").save_pretrained(tmp_path / "wl")
    tok = load_tokenizer(str(tmp_path / "wl"))
    assert not is_byte_tokenizer(tok)
    stream = tokenize_documents(["hello world", "world"], tok)
    assert stream.tolist() == [2, 3, 1, 3, 1]


def test_txt_and_jsonl_reading(tmp_path):
    (tmp_path / "a.txt").write_text("first document\nline two\n", encoding="utf-8")
    rows = [{"body": "doc one", "id": 1}, {"body": "doc ∂ two", "id": 2}]
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    assert list(read_documents(tmp_path / "a.txt")) == ["first document\nline two\n"]
    assert list(read_documents(str(tmp_path / "b.jsonl"), text_field="body")) == ["doc one", "doc ∂ two"]
    # a list of sources, in order
    both = list(read_documents([tmp_path / "b.jsonl", tmp_path / "a.txt"], text_field="body"))
    assert both == ["doc one", "doc ∂ two", "first document\nline two\n"]
    tok = byte_tokenizer()
    stream = tokenize_documents(["doc one", "doc ∂ two"], tok)
    eos = (stream == tok.eos_token_id).nonzero().flatten().tolist()
    assert eos == [7, stream.numel() - 1]  # one EOS after each document
    assert tok.decode(stream) == "doc one<eos>doc ∂ two<eos>"


def test_hf_datasets_local(tmp_path):
    datasets = pytest.importorskip("datasets")
    texts = [f"record number {i}" for i in range(20)]
    datasets.Dataset.from_dict({"content": texts, "n": list(range(20))}).save_to_disk(str(tmp_path / "ds"))
    assert list(read_documents(tmp_path / "ds", text_field="content")) == texts
    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"text": ["a b"]}), "validation": datasets.Dataset.from_dict({"text": ["c"]})}
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    assert list(read_documents(tmp_path / "dd", format="hf", hf_split="validation")) == ["c"]
    with pytest.raises(ValueError, match="no split 'test'"):
        list(read_documents(tmp_path / "dd", hf_split="test"))
    with pytest.raises(ValueError, match="no column 'text'"):
        list(read_documents(tmp_path / "ds"))
    # local jsonl through load_dataset
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in texts[:3]) + "\n")
    assert list(read_documents(tmp_path / "c.jsonl", format="hf")) == texts[:3]


def test_lm_packing_and_shift(tmp_path):
    text = "".join(f"line {i}: the quick brown fox\n" for i in range(200))
    (tmp_path / "corpus.txt").write_text(text, encoding="utf-8")
    seq_len = 32
    data = load_lm_data(tmp_path / "corpus.txt", seq_len, val_fraction=0.1)
    n = len(text.encode()) + 1  # + EOS
    n_val = round(0.1 * n)
    assert data.train_tokens.numel() == n - n_val and data.val_tokens.numel() == n_val
    assert len(data.train) == (n - n_val - seq_len - 1) // seq_len + 1
    for i in range(len(data.train)):
        item = data.train[i]
        assert item["input_ids"].shape == (seq_len,) and item["labels"].shape == (seq_len,)
        assert torch.equal(item["input_ids"][1:], item["labels"][:-1])  # labels shifted by one
        if i + 1 < len(data.train):  # windows tile the stream, every token a target once
            assert data.train[i + 1]["input_ids"][0] == item["labels"][-1]
    # windows reassemble the stream
    first = data.train[0]
    assert data.tokenizer.decode(torch.cat([first["input_ids"], first["labels"][-1:]])) == text[: seq_len + 1]
    packed = pack_tokens(data.train_tokens, seq_len)
    assert packed.shape == (len(data.train), seq_len + 1)
    assert torch.equal(packed[5, :-1], data.train[5]["input_ids"])
    # other strides
    assert len(LMDataset(torch.arange(100), 9, stride=10)) == 10
    assert len(LMDataset(torch.arange(100), 10, stride=10)) == 9
    loader = DataLoader(data.validation, batch_size=4)
    b = next(iter(loader))
    assert b["input_ids"].shape == (4, seq_len) and b["input_ids"].dtype == torch.long


def test_lm_split_deterministic(tmp_path):
    lines = [json.dumps({"text": f"document {i} " * (i % 7 + 1)}) for i in range(100)]
    (tmp_path / "d.jsonl").write_text("\n".join(lines))
    a = load_lm_data(tmp_path / "d.jsonl", 16, val_fraction=0.2)
    b = load_lm_data(tmp_path / "d.jsonl", 16, val_fraction=0.2)
    assert torch.equal(a.train_tokens, b.train_tokens) and torch.equal(a.val_tokens, b.val_tokens)
    whole = torch.cat([a.train_tokens, a.val_tokens])
    assert torch.equal(whole, tokenize_documents(read_documents(tmp_path / "d.jsonl"), byte_tokenizer()))
    # the validation text does not depend on seq_len (same text for every context length)
    c = load_lm_data(tmp_path / "d.jsonl", 64, val_fraction=0.2)
    assert torch.equal(c.val_tokens, a.val_tokens)
    tr, va = split_tokens(torch.arange(10), 0.3)
    assert tr.tolist() == list(range(7)) and va.tolist() == [7, 8, 9]
    assert load_lm_data(tmp_path / "d.jsonl", 16, val_fraction=0.0).validation is None


def test_text_errors(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        load_lm_data(missing, 8)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="empty corpus"):
        load_lm_data(tmp_path / "empty.txt", 8)
    (tmp_path / "blank.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match="empty corpus"):
        load_lm_data(tmp_path / "blank.jsonl", 8)
    (tmp_path / "data.xyz").write_text("abc")
    with pytest.raises(ValueError, match="unknown format"):
        list(read_documents(tmp_path / "data.xyz"))
    with pytest.raises(ValueError, match="format="):
        list(read_documents(tmp_path / "data.xyz", format="csv"))
    assert list(read_documents(tmp_path / "data.xyz", format="txt")) == ["abc"]
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{broken\n')
    with pytest.raises(ValueError, match="bad.jsonl:2: invalid JSON"):
        list(read_documents(tmp_path / "bad.jsonl"))
    (tmp_path / "field.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(ValueError, match="no field 'text'"):
        list(read_documents(tmp_path / "field.jsonl"))
    (tmp_path / "short.txt").write_text("tiny")
    with pytest.raises(ValueError, match="too few"):
        load_lm_data(tmp_path / "short.txt", 64)
    with pytest.raises(ValueError, match="val_fraction"):
        split_tokens(torch.arange(10), 1.0)
    with pytest.raises(ValueError, match="seq_len"):
        LMDataset(torch.arange(10), 0)


# ============================================================================ time series


def _write_csv(path, n_rows, columns=("HUFL", "HULL", "OT"), seed=0):
    """Hourly series with different levels and a trend, so whole-series and train
    statistics differ."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_rows)
    vals = np.stack(
        [10 * (c + 1) + 0.001 * (c + 1) * t + np.sin(2 * np.pi * t / 24 + c) + 0.1 * rng.standard_normal(n_rows)
         for c in range(len(columns))],
        axis=1,
    )
    start = np.datetime64("2016-07-01T00:00")
    lines = [",".join(("date",) + tuple(columns))]
    for i in range(n_rows):
        d = str(start + np.timedelta64(i, "h")).replace("T", " ")
        lines.append(d + "," + ",".join(f"{v:.6f}" for v in vals[i]))
    path.write_text("\n".join(lines) + "\n")
    return np.array([[float(v) for v in ln.split(",")[1:]] for ln in lines[1:]])


@pytest.fixture(scope="module")
def etth_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("ts") / "ETTh_synthetic.csv"
    vals = _write_csv(path, 14400 + 50)
    return path, vals


def test_split_borders():
    assert split_borders(17420, 96, "ETTh") == {"train": (0, 8640), "val": (8544, 11520), "test": (11424, 14400)}
    assert split_borders(69680, 96, "ETTm") == {"train": (0, 34560), "val": (34464, 46080), "test": (45984, 57600)}
    # 0.7 / 0.1 / 0.2 as in Dataset_Custom: int(0.7 n), int(0.2 n), val takes the rest
    assert split_borders(1001, 24, "ratio") == {"train": (0, 700), "val": (676, 801), "test": (777, 1001)}
    assert split_borders(1000, 10, "ratio", (0.6, 0.2, 0.2)) == {"train": (0, 600), "val": (590, 800), "test": (790, 1000)}
    with pytest.raises(ValueError, match="at least 14400 rows"):
        split_borders(14399, 96, "ETTh")
    with pytest.raises(ValueError, match="ratios"):
        split_borders(1000, 10, "ratio", (0.7, 0.2, 0.2))


def test_forecast_splits_normalisation_windows(etth_csv):
    path, vals = etth_csv
    L, H = 96, 192
    splits = load_forecast_splits(path, lookback=L, horizon=H)
    tr, va, te = splits["train"], splits["val"], splits["test"]
    assert tr.protocol == "ETTh" and tr.columns == ["HUFL", "HULL", "OT"]
    assert tr.rows == (0, 8640) and va.rows == (8544, 11520) and te.rows == (11424, 14400)
    assert len(tr) == 8640 - L - H + 1 and len(va) == 2976 - L - H + 1 and len(te) == 2976 - L - H + 1
    # statistics from the train rows only
    np.testing.assert_allclose(tr.mean.numpy(), vals[:8640].mean(0), rtol=1e-6)
    np.testing.assert_allclose(tr.std.numpy(), vals[:8640].std(0), rtol=1e-5)
    assert not np.allclose(tr.mean.numpy(), vals[:14400].mean(0), rtol=1e-3)
    assert torch.allclose(va.mean, tr.mean) and torch.allclose(te.std, tr.std)
    assert tr.data.mean(0).abs().max() < 1e-4 and (tr.data.std(0, unbiased=False) - 1).abs().max() < 1e-4
    assert te.data.mean(0).min() > 0.5  # the trend: test sits above the train level
    # windows
    x, y = va[0]
    assert x.shape == (L, 3) and y.shape == (H, 3) and x.dtype == torch.float32
    expect_y0 = (vals[8640] - vals[:8640].mean(0)) / vals[:8640].std(0)
    np.testing.assert_allclose(y[0].numpy(), expect_y0, rtol=1e-4, atol=1e-5)  # first target at the border
    x5, y5 = tr[5]
    assert torch.equal(x5, tr.data[5 : 5 + L]) and torch.equal(y5, tr.data[5 + L : 5 + L + H])
    xl, yl = te[len(te) - 1]
    assert torch.equal(yl[-1], te.data[-1])  # the last window ends at the test border
    np.testing.assert_allclose(te.inverse_transform(yl).numpy()[-1], vals[14399], rtol=1e-5)
    b = next(iter(DataLoader(te, batch_size=4)))
    assert b[0].shape == (4, L, 3) and b[1].shape == (4, H, 3)


def test_forecast_features(tmp_path):
    path = tmp_path / "custom.csv"
    vals = _write_csv(path, 600, columns=("OT", "a", "b"))
    m = ForecastDataset(path, "test", lookback=24, horizon=12)
    assert m.protocol == "ratio" and m.columns == ["a", "b", "OT"]  # target moved last
    assert m.rows == (480 - 24, 600)
    s = ForecastDataset(path, "train", lookback=24, horizon=12, features="S")
    x, y = s[0]
    assert s.columns == ["OT"] and x.shape == (24, 1) and y.shape == (12, 1)
    np.testing.assert_allclose(s.mean.numpy(), [vals[:420, 0].mean()], rtol=1e-6)
    ms = ForecastDataset(path, "val", lookback=24, horizon=12, features="MS")
    x, y = ms[3]
    assert x.shape == (24, 3) and y.shape == (12, 1)
    assert torch.equal(y[:, 0], ms.data[3 + 24 : 3 + 36, ms.target_index])
    raw = ForecastDataset(path, "train", lookback=24, horizon=12, scale=False)
    np.testing.assert_allclose(raw.data[:, 2].numpy(), vals[:420, 0], rtol=1e-6)
    for h in (96, 192):
        assert ForecastDataset(path, "train", lookback=8, horizon=h)[0][1].shape == (h, 3)


def test_timeseries_errors(tmp_path, etth_csv):
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        ForecastDataset(tmp_path / "missing.csv")
    (tmp_path / "nodate.csv").write_text("time,OT\n1,2\n")
    with pytest.raises(ValueError, match="no date column 'date'"):
        read_series_csv(tmp_path / "nodate.csv")
    _write_csv(tmp_path / "small.csv", 300, columns=("x", "y"))
    with pytest.raises(ValueError, match="target column 'OT' not found"):
        ForecastDataset(tmp_path / "small.csv")
    with pytest.raises(ValueError, match="too few for one window"):
        ForecastDataset(tmp_path / "small.csv", "test", target="y", lookback=48, horizon=96)
    _write_csv(tmp_path / "ETTh_short.csv", 1000)
    with pytest.raises(ValueError, match="at least 14400 rows"):
        ForecastDataset(tmp_path / "ETTh_short.csv")
    (tmp_path / "text.csv").write_text("date,OT\n2016-01-01,1.0\n2016-01-02,abc\n")
    with pytest.raises(ValueError, match="text.csv"):
        read_series_csv(tmp_path / "text.csv")
    (tmp_path / "nan.csv").write_text("date,OT\n2016-01-01,1.0\n2016-01-02,nan\n")
    with pytest.raises(ValueError, match="non-finite value nan in column 'OT' at line 3"):
        read_series_csv(tmp_path / "nan.csv")
    with pytest.raises(ValueError, match="features"):
        ForecastDataset(etth_csv[0], features="X")
    with pytest.raises(ValueError, match="horizon"):
        ForecastDataset(etth_csv[0], horizon=0)
    with pytest.raises(ValueError, match="split"):
        ForecastDataset(etth_csv[0], "validation")
