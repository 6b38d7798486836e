"""`slotmem eval` (perplexity, mqar, niah), the S-NIAH generator, `slotmem generate` options,
and `slotmem lm-eval` on local tasks (YAML + JSONL made here; no hub access)."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import slotmem
from slotmem.cli import main as cli_main
from slotmem.data import byte_tokenizer, generate_mqar, load_tokenizer, tokenize_documents
from slotmem.data import IGNORE_INDEX
from slotmem.data.niah import (NEEDLE, PREAMBLE, QUERY, encode_niah, make_niah_sample, niah_samples, niah_train_samples,
                                split_seed)
from slotmem.eval.niah import evaluate_niah_cells, score_niah, summarize_niah
from slotmem.eval.perplexity import evaluate_nll
from slotmem.models import LatticeConfig, LatticeForCausalLM

SRC = str(Path(slotmem.__file__).resolve().parents[1])  # the slotmem under test, for subprocesses
TEXT = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog, number {i * 7 % 13}.\n" for i in range(60))



def assert_cli_error(capsys, args, pattern):
    """A user error at the CLI: exit code 2 and one ``error:`` line matching ``pattern`` on stderr."""
    with pytest.raises(SystemExit) as info:
        cli_main(args)
    err = capsys.readouterr().err
    assert info.value.code == 2 and re.search(pattern, err), err

def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
               HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    """An untrained Lattice LM with the byte tokenizer saved next to it."""
    torch.manual_seed(0)
    tok = byte_tokenizer()
    cfg = LatticeConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_heads=2,
                        mixer_kwargs={"num_slots": 8, "chunk_size": 8}, bos_token_id=256, eos_token_id=257, pad_token_id=258)
    d = tmp_path_factory.mktemp("tiny_lm") / "model"
    LatticeForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


# --------------------------------------------------------------------------- S-NIAH


def test_niah_samples_hit_length_and_depth():
    tok = byte_tokenizer()
    for haystack in ("noise", "words"):
        samples = niah_samples(tok, [600, 1000], [0.0, 0.5, 1.0], 2, seed=3, haystack=haystack)
        assert len(samples) == 12
        for s in samples:
            assert s.length - 100 < s.num_tokens <= s.length  # within one filler sentence (< 100 bytes) of the target
            assert s.num_tokens == len(tok.encode(s.prompt, add_special_tokens=False))
            needle = f"One of the special magic numbers for {s.key} is: {s.value}."
            assert s.prompt.count(needle) == 1 and s.prompt.endswith(f"for {s.key} mentioned in the provided text is")
            assert s.answer == " " + s.value and len(s.value) == 7
            assert tok.encode(s.prompt, add_special_tokens=False)[s.needle_token:][:10] == tok.encode(needle)[:10]
        # depth = the needle's place in the filler between the preamble and the query
        n = lambda text: len(tok.encode(text, add_special_tokens=False))
        at = {}
        for s in samples:
            needle, query = NEEDLE.format(key=s.key, value=s.value), QUERY.format(key=s.key)
            filler = s.num_tokens - n(PREAMBLE) - n(needle) - n(query)
            at[(s.length, s.depth, s.index)] = (s.needle_token - n(PREAMBLE)) / filler
        assert all(at[(L, 0.0, i)] == 0.0 and at[(L, 1.0, i)] == 1.0 for L in (600, 1000) for i in (0, 1))
        assert all(0.35 < at[(L, 0.5, i)] < 0.65 for L in (600, 1000) for i in (0, 1))
    # a sample depends only on (seed, length, depth, index): other lengths do not move it
    a = make_niah_sample(tok, 800, 0.5, index=1, seed=3)
    assert a == niah_samples(tok, [500, 800], [0.5], 2, seed=3)[3]
    assert a != make_niah_sample(tok, 800, 0.5, index=1, seed=4)
    with pytest.raises(ValueError, match="too short"):
        make_niah_sample(tok, 100, 0.5)
    with pytest.raises(ValueError, match="depth"):
        make_niah_sample(tok, 800, 1.5)
    with pytest.raises(ValueError, match="haystack"):
        make_niah_sample(tok, 800, 0.5, haystack="essays")


class _Oracle(nn.Module):
    """Logits that put all mass on the token ``shift`` places ahead in its own input."""

    def __init__(self, vocab: int, shift: int) -> None:
        super().__init__()
        self.vocab, self.shift, self.w = vocab, shift, nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, use_cache=False):
        nxt = torch.roll(input_ids, -self.shift, dims=1)
        return type("Out", (), {"logits": torch.nn.functional.one_hot(nxt, self.vocab).float() * 20})()


def test_score_niah_reads_the_answer_positions():
    tok = byte_tokenizer()
    samples = niah_samples(tok, [500], [0.0, 1.0], 2)
    right = score_niah(_Oracle(259, 1), tok, samples)
    assert all(r["correct"] and r["token_acc"] == 1.0 for r in right) and max(r["nll"] for r in right) < 1e-6
    wrong = score_niah(_Oracle(259, 0), tok, samples)  # predicts the current token: off by one
    assert not any(r["correct"] for r in wrong)
    cells = summarize_niah(right + wrong)
    assert {(c["length"], c["depth"], c["samples"], c["acc"]) for c in cells} == {(500, 0.0, 4, 0.5), (500, 1.0, 4, 0.5)}


def test_encode_niah_labels_only_the_answer_and_pads_right():
    tok = byte_tokenizer()
    samples = niah_samples(tok, [500, 700], [0.5], 2)
    inputs, labels = encode_niah(tok, samples, pad_id=258)
    longest = max(len(tok.encode(s.prompt + s.answer, add_special_tokens=False)) for s in samples)
    assert inputs.shape == labels.shape == (4, longest - 1)
    for i, s in enumerate(samples):
        p, a = (tok.encode(t, add_special_tokens=False) for t in (s.prompt, s.answer))
        n = len(p) + len(a) - 1
        assert inputs[i, :n].tolist() == (p + a)[:-1] and (inputs[i, n:] == 258).all()
        assert labels[i][labels[i] != IGNORE_INDEX].tolist() == a  # the answer's tokens, nothing else
        assert (labels[i, : len(p) - 1] == IGNORE_INDEX).all() and (labels[i, n:] == IGNORE_INDEX).all()


def test_niah_train_stream_is_its_own_and_depths_vary():
    tok = byte_tokenizer()
    a = niah_train_samples(tok, 500, 8, seed=1)
    assert a == niah_train_samples(tok, 500, 8, seed=1) and a != niah_train_samples(tok, 500, 8, seed=2)
    assert len({round(s.depth, 6) for s in a}) == 8 and all(0.0 <= s.depth <= 1.0 for s in a)
    assert len({split_seed(seed, split) for seed in range(4) for split in ("train", "val", "test")}) == 12
    with pytest.raises(ValueError, match="split"):
        split_seed(0, "dev")


class _Teacher(nn.Module):
    """Logits that put all mass on the encoded rows' labels (the right answer everywhere)."""

    def __init__(self, inputs, labels, vocab: int) -> None:
        super().__init__()
        self.rows = {tuple(r.tolist()): torch.where(lab == IGNORE_INDEX, 0, lab) for r, lab in zip(inputs, labels)}
        self.vocab, self.w = vocab, nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, use_cache=False):
        nxt = torch.stack([self.rows[tuple(r.tolist())] for r in input_ids])
        return type("Out", (), {"logits": torch.nn.functional.one_hot(nxt, self.vocab).float() * 20})()


def test_evaluate_niah_cells_agrees_with_score_niah():
    tok = byte_tokenizer()
    cells = []
    for d in (0.0, 1.0):
        samples = niah_samples(tok, [500], [d], 3)
        cells.append((500, d, *encode_niah(tok, samples, pad_id=258)))
    teacher = _Teacher([r for c in cells for r in c[2]], [r for c in cells for r in c[3]], 259)
    right = evaluate_niah_cells(teacher, cells, batch_size=2)
    assert right["acc"] == 1.0 and all(c["acc"] == 1.0 and c["samples"] == 3 for c in right["cells"])
    wrong = evaluate_niah_cells(_Oracle(259, 0), cells, batch_size=2)
    per_sample = score_niah(_Oracle(259, 0), tok, niah_samples(tok, [500], [0.0], 3))
    assert wrong["cells"][0]["acc"] == np.mean([r["correct"] for r in per_sample]) == 0.0
    assert wrong["cells"][0]["token_acc"] == pytest.approx(np.mean([r["token_acc"] for r in per_sample]))


# --------------------------------------------------------------------------- slotmem eval


def test_eval_perplexity_cli(tiny_lm, tmp_path, capsys):
    (tmp_path / "a.txt").write_text(TEXT)
    out = tmp_path / "ppl"
    cli_main(["eval", "perplexity", str(tiny_lm), str(tmp_path / "a.txt"), "--lengths", "64", "256",
              "--batch-size", "4", "--train-len", "64", "--out", str(out)])
    printed = capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert (out / "table.txt").read_text().splitlines()[1:] == printed.splitlines()[1:-1]
    assert (out / "ppl_vs_length.png").stat().st_size > 0
    rows = res["rows"]
    assert [r["length"] for r in rows] == [64, 256] and [r["beyond_training"] for r in rows] == [False, True]
    model = LatticeForCausalLM.from_pretrained(tiny_lm)
    tokens = tokenize_documents([TEXT], byte_tokenizer())
    assert rows[1]["nll"] == pytest.approx(evaluate_nll(model, tokens, 256, 2)["nll"], rel=1e-5)
    assert_cli_error(capsys, ["eval", "perplexity", str(tmp_path), str(tmp_path / "a.txt"), "--lengths", "8"], "not a saved model")
    with pytest.raises(SystemExit):
        cli_main(["eval", "perplexity", str(tiny_lm), str(tmp_path / "missing.txt"), "--lengths", "8"])
    assert "no such file" in capsys.readouterr().err


def test_eval_mqar_cli(tmp_path, capsys):
    from slotmem.data import MQARConfig
    from slotmem.eval.mqar import evaluate_mqar_slices

    torch.manual_seed(0)
    cfg = LatticeConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_heads=1, use_mlp=False,
                        mixer_kwargs={"num_slots": 8, "chunk_size": 8})
    LatticeForCausalLM(cfg).save_pretrained(tmp_path / "m")
    cli_main(["eval", "mqar", str(tmp_path / "m"), "--slices", "32:4", "64:8", "--num-examples", "16",
              "--out", str(tmp_path / "o")])
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert [(s["seq_len"], s["num_kv_pairs"], s["num_examples"]) for s in res["slices"]] == [(32, 4, 16), (64, 8, 16)]
    assert res["vocab_size"] == 64 and (tmp_path / "o" / "accuracy_per_slice.png").is_file()
    spec = MQARConfig(64, 8, 16, 64, 0.01, 0)
    direct = evaluate_mqar_slices(LatticeForCausalLM.from_pretrained(tmp_path / "m"), [(spec, *generate_mqar(spec, "test"))], 8)
    assert res["slices"][1]["acc"] == pytest.approx(direct["acc"])
    assert_cli_error(capsys, ["eval", "mqar", str(tmp_path / "m"), "--slices", "64x8"], "T:kv")


def test_eval_niah_cli(tiny_lm, tmp_path, capsys):
    out = tmp_path / "niah"
    cli_main(["eval", "niah", str(tiny_lm), "--lengths", "500", "700", "--depths", "0", "1", "--samples", "2",
              "--haystack", "words", "--out", str(out), "--no-progress"])
    res = json.loads((out / "results.json").read_text())
    assert len(res["samples"]) == 8 and len(res["cells"]) == 4 and (out / "niah_accuracy.png").is_file()
    assert "mean accuracy" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main(["eval", "niah", str(tiny_lm), "--lengths", "50", "--out", str(out)])
    assert "too short" in capsys.readouterr().err


# --------------------------------------------------------------------------- slotmem generate


def test_generate_options_and_prompt_sources(tiny_lm, tmp_path, capsys, monkeypatch):
    base = ["generate", "--model", str(tiny_lm), "--max-new-tokens", "6", "--ignore-eos"]
    cli_main(base + ["--prompt", "hello", "--temperature", "0.9", "--top-p", "0.8", "--top-k", "20",
                     "--repetition-penalty", "1.3", "--seed", "1"])
    sampled = capsys.readouterr()
    assert sampled.out.startswith("hello") and "6 new tokens" in sampled.err
    (tmp_path / "p.txt").write_text("hello")
    cli_main(base + ["--prompt-file", str(tmp_path / "p.txt"), "--temperature", "0.9", "--top-p", "0.8",
                     "--top-k", "20", "--repetition-penalty", "1.3", "--seed", "1"])
    assert capsys.readouterr().out == sampled.out  # same prompt, same seed: same text
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello"))
    cli_main(base + ["--prompt-file", "-", "--temperature", "0"])
    greedy = capsys.readouterr().out
    cli_main(base + ["--prompt", "hello", "--temperature", "0", "--num-beams", "1"])
    assert capsys.readouterr().out == greedy and greedy.startswith("hello")
    cli_main(base + ["--prompt", "hello", "--temperature", "0", "--num-beams", "3"])
    beams = capsys.readouterr()
    assert beams.out.startswith("hello") and "6 new tokens" in beams.err
    for bad, msg in ((["--top-p", "0"], "top-p"), (["--num-beams", "0"], "num-beams"),
                     (["--repetition-penalty", "0"], "repetition-penalty")):
        assert_cli_error(capsys, base + ["--prompt", "x"] + bad, msg)
    assert_cli_error(capsys, base, "exactly one")


# --------------------------------------------------------------------------- lm-eval


def _local_tasks(root: Path) -> Path:
    """A multiple-choice task and a rolling-loglikelihood task (YAML + JSONL) under ``root/tasks``."""
    mc = [{"question": f"What is {i} plus one?", "choices": [str(i + 1), str(i + 2), "blue"], "label": 0} for i in range(5)]
    roll = [{"text": f"Document {i}. " + "the quick brown fox jumps over the lazy dog. " * (i + 1)} for i in range(3)]
    (root / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mc))
    (root / "roll.jsonl").write_text("".join(json.dumps(r) + "\n" for r in roll))
    tasks = root / "tasks"
    tasks.mkdir()
    common = "dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {path}\ntest_split: test\n"
    (tasks / "tiny_mc.yaml").write_text(
        "task: tiny_mc\n" + common.format(path=root / "mc.jsonl")
        + 'output_type: multiple_choice\ndoc_to_text: "{{question}} Answer:"\ndoc_to_choice: "{{choices}}"\n'
          'doc_to_target: "{{label}}"\nmetric_list:\n  - metric: acc\n')
    (tasks / "tiny_roll.yaml").write_text(
        "task: tiny_roll\n" + common.format(path=root / "roll.jsonl")
        + 'output_type: loglikelihood_rolling\ndoc_to_text: ""\ndoc_to_target: "{{text}}"\n'
          "metric_list:\n  - metric: word_perplexity\n  - metric: byte_perplexity\n  - metric: bits_per_byte\n")
    return tasks


def test_lm_eval_batched_equals_unbatched(tiny_lm):
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    pairs = [("The capital of France is", " Paris"), ("1 2 3", " 4"), ("a much longer context " * 5, " and a tail."),
             ("x", " y z"), ("Question: what is two plus two? Answer:", " four")]
    texts = ["the quick brown fox " * 4, "short", "jumps over the lazy dog. " * 9]
    results = {}
    for bs in (1, 4):
        lm = HFLM(pretrained=str(tiny_lm), batch_size=bs, device="cpu", dtype="float32")
        ll = lm.loglikelihood([Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)], disable_tqdm=True)
        roll = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)],
                                        disable_tqdm=True)
        results[bs] = ([x[0] for x in ll], [x[1] for x in ll], roll)
    assert results[4][0] == pytest.approx(results[1][0], abs=1e-4)
    assert results[4][1] == results[1][1]
    assert results[4][2] == pytest.approx(results[1][2], abs=1e-4)
    # the scores are the model's own: sum of log-probs of the continuation bytes
    model = LatticeForCausalLM.from_pretrained(tiny_lm).eval()
    ctx, cont = pairs[1]
    c, t = list(ctx.encode()), list(cont.encode())
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([c + t])).logits[0].float().log_softmax(-1)
    want = sum(float(logp[len(c) - 1 + j, tok]) for j, tok in enumerate(t))
    assert results[1][0][1] == pytest.approx(want, abs=1e-4)


def test_train_tokenizer_and_lm_eval_in_fresh_processes(tmp_path):
    """The README's end-to-end path: slotmem train (a built-in config by name), AutoTokenizer
    without slotmem, slotmem lm-eval --model hf on local tasks."""
    pytest.importorskip("lm_eval")
    (tmp_path / "corpus.txt").write_text(TEXT * 3)
    run = lambda *cmd: subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    r = run(sys.executable, "-m", "slotmem.cli", "train", "lm_bytes", "lm.source=corpus.txt", "lm.seq_len=32",
            "lm.eval_lengths=[32]", "model.hidden_size=32", "model.num_hidden_layers=1", "train.steps=3",
            "train.batch_size=4", "train.eval_every=0", "train.save_every=0", "train.progress=false",
            "train.tensorboard=false", "out_dir=out")
    assert r.returncode == 0, r.stderr[-3000:]
    model_dir = tmp_path / "out" / "model"
    config = json.loads((model_dir / "config.json").read_text())
    gen_config = json.loads((model_dir / "generation_config.json").read_text())
    for c in (config, gen_config):
        assert (c["bos_token_id"], c["eos_token_id"], c["pad_token_id"]) == (256, 257, 258)
    env = {k: v for k, v in _env().items() if k != "PYTHONPATH"}
    code = ("import sys; from transformers import AutoTokenizer\n"
            "t = AutoTokenizer.from_pretrained('out/model'); s = 'round trip ∂ 🙂'\n"
            "assert t.decode(t(s)['input_ids']) == s and t(s)['input_ids'] == list(s.encode())\n"
            "assert 'slotmem' not in sys.modules; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "ok", r.stderr[-3000:]
    tasks = _local_tasks(tmp_path)
    r = run(sys.executable, "-m", "slotmem.cli", "lm-eval", "--model", "hf", "--model_args",
            "pretrained=out/model,dtype=float32", "--tasks", "tiny_mc,tiny_roll", "--include_path", str(tasks),
            "--device", "cpu", "--batch_size", "4", "--output_path", "lm_eval_out")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "|tiny_mc" in r.stdout and "|tiny_roll" in r.stdout and "bits_per_byte" in r.stdout  # lm-eval's table
    found = list((tmp_path / "lm_eval_out").rglob("results_*.json"))
    assert len(found) == 1
    res = json.loads(found[0].read_text())["results"]
    assert 0.0 <= res["tiny_mc"]["acc,none"] <= 1.0 and res["tiny_roll"]["bits_per_byte,none"] > 0


# --------------------------------------------------------------------------- built-in configs


def test_builtin_configs_resolve_by_name(tmp_path, monkeypatch):
    from slotmem.configs import builtin_names, builtin_path, resolve_config

    names = builtin_names()
    assert {"compare_mqar", "mqar_lattice", "lm_bytes", "models/lattice-tiny"} <= set(names)
    p = builtin_path("compare_mqar")
    assert p.is_file() and p.parent.name == "configs" and p.parent.parent == Path(slotmem.__file__).parent
    assert builtin_path("compare_mqar.yaml") == builtin_path("configs/compare_mqar.yaml") == p
    assert builtin_path("lattice-tiny") == builtin_path("models/lattice-tiny")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mqar_lattice").write_text("task: mqar\n")  # an existing file wins over the built-in name
    assert resolve_config("mqar_lattice") == Path("mqar_lattice")
    assert resolve_config("lm_bytes") == builtin_path("lm_bytes")
    with pytest.raises(FileNotFoundError, match="no such file, and no built-in config.*mqar_lattice"):
        resolve_config("nope.yaml")
    with pytest.raises(SystemExit):
        cli_main(["train", "nope"])
