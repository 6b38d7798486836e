"""``slotmem compare``: train several models on the same task (MQAR, language modelling,
forecasting or S-NIAH) under one protocol, and report mean and spread over seeds in a table, plots and JSON.

The protocol (its results: ``docs/results.md``), for every model and
every point of its sweep axis:

1. **learning-rate sweep**: one run per lr of the model's grid (``protocol.lr_grid``, or the
   run's own ``lr_grid``) with the first seed;
2. **selection on a validation split**, never the test data: MQAR -- the test slices' (T, kv)
   settings drawn from a third random stream (``generate_mqar(..., "val")``), scored on the
   in-distribution slices (all slices when none is in-distribution); LM -- the first half of
   the held-out text at the training length (the second half is the test text); forecasting
   -- the standard validation split (MSE); S-NIAH -- a separate sample stream at the training
   lengths;
3. **seeds**: every seed of ``protocol.seeds`` at the chosen lr (the sweep's run is the first);
4. **report**: mean, std and min-max over the seeds; a run whose training loss, gradient or
   evaluation goes non-finite is *diverged*: listed with a count, never averaged as a score.
   MQAR reports in-distribution slices (a (T, kv) seen in training) and extrapolation slices
   in separate columns; S-NIAH likewise for training lengths and longer ones, with a depth x
   length heat map per model.

A comparison file::

    name: compare_mqar
    base: {task: mqar, model: {...}, mqar: {...}, train: {...}}   # the `slotmem train` schema
    protocol: {lr_grid: [1.0e-3, 3.2e-3, 1.0e-2, 3.2e-2], seeds: [0, 1, 2], val_examples: 256}
    points: {key: timeseries.horizon, values: [96, 192]}   # optional axis for every run
    runs:
      - label: Lattice
        overrides: {model: {mixer: lattice}}
        points: {key: model.mixer_kwargs.num_slots, values: [16, 64]}   # optional, this run only
        lr_grid: [1.0e-2]                                             # optional, this run only
    presets:                # optional; --preset NAME merges one into the file (default: quick)
      quick: {note: "...", protocol: {...}, base: {...}, points: {...}, runs: {Lattice: {points: ...}}}

Command-line ``key=value`` overrides apply to ``base`` (after the preset), ``protocol.KEY=value``
to the protocol (e.g. ``protocol.seeds=[0,1,2,3]``; ``protocol.lr_grid=[...]`` also replaces the runs'
own grids); ``Label:key=value`` applies to one run,
after its own overrides. Every run lives in
``<out>/runs/<label>[/<point>]/lr<lr>_seed<seed>_<hash>/`` with a ``record.json`` once finished:
rerunning the same command in the same ``--out`` skips finished runs (a killed comparison
resumes; the default ``--out`` is ``outputs/compare/<name>-<preset>``), and a changed config
gets new folders (the hash). ``--jobs N`` runs N worker
processes with ``max(1, cores // N)`` torch threads each. Outputs: ``results.json``,
``table.md``, the plots (``*.png``) and ``command.txt``.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..configs import builtin_path
from ..train.config import Config, apply_overrides, config_from_dict, model_identity, read_yaml, to_dict
from ..train.errors import ConfigError

DEFAULT_CONFIG = builtin_path("compare_mqar")
DEFAULT_PRESET = "quick"
ZOOLOGY_LR_GRID = [1e-3, 3.2e-3, 1e-2, 3.2e-2]
_TOP_KEYS = ("name", "base", "protocol", "points", "runs", "presets")
_RUN_KEYS = ("label", "overrides", "points", "lr_grid")
_PROTOCOL_KEYS = ("lr_grid", "seeds", "val_examples")
_PRESET_KEYS = ("note", "protocol", "base", "points", "runs")
# Config parts that do not change what a run computes (left out of its identity hash).
_NOT_IDENTITY = (("out_dir",), ("name",), ("train", "num_threads"), ("train", "progress"), ("train", "resume"),
                 ("train", "tensorboard"), ("train", "log_every"))
# task sections added after runs were recorded: part of a run's identity only when they are its task,
# so that the runs of the older tasks keep their hashes (and resume)
_LATER_TASK_SECTIONS = ("niah",)


# --------------------------------------------------------------------------- config


def _merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("mixer_kwargs", "attn_kwargs"):
            out[k] = _merge(out[k], v)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = copy.deepcopy(v)
    return out


def slug(label: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(label)).strip("_")
    return s or "run"


@dataclass
class Protocol:
    """``lr_grid``: learning rates swept per model (one value: no selection); ``seeds``: the
    seeds run at the chosen lr (the first also runs the sweep); ``val_examples``: MQAR
    examples per validation slice."""

    lr_grid: list = field(default_factory=lambda: list(ZOOLOGY_LR_GRID))
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    val_examples: int = 256


@dataclass
class Unit:
    """One model at one point of its sweep axis: the protocol runs on each unit."""

    label: str
    point: object  # the axis value, or None
    point_key: str | None
    cfg: Config
    lr_grid: list

    @property
    def name(self) -> str:
        return self.label if self.point is None else f"{self.label} [{self.point_key.split('.')[-1]}={self.point}]"

    @property
    def folder(self) -> str:
        return slug(self.label) if self.point is None else f"{slug(self.label)}/{slug(self.point_key.split('.')[-1])}{self.point}"


@dataclass
class Comparison:
    name: str
    task: str
    protocol: Protocol
    units: list
    labels: list
    preset: str | None = None
    note: str = ""


def _check_lr_grid(where: str, grid) -> list:
    if not isinstance(grid, list) or not grid:
        raise ConfigError(f"{where}: lr_grid must be a non-empty list of learning rates, got {grid!r}")
    out = []
    for v in grid:
        try:
            f = float(v)
        except (TypeError, ValueError):
            f = float("nan")
        if not (math.isfinite(f) and f > 0):
            raise ConfigError(f"{where}: lr_grid entries must be positive numbers, got {v!r}")
        out.append(f)
    return out


def _check_points(where: str, pts) -> tuple[str, list] | None:
    if pts is None:
        return None
    if not isinstance(pts, dict) or set(pts) != {"key", "values"}:
        raise ConfigError(f"{where}: points must be a mapping {{key: dotted.config.key, values: [...]}}, got {pts!r}")
    if not isinstance(pts["key"], str) or not isinstance(pts["values"], list) or not pts["values"]:
        raise ConfigError(f"{where}: points needs a dotted 'key' and a non-empty 'values' list, got {pts!r}")
    return pts["key"], list(pts["values"])


def _build_protocol(path, data) -> Protocol:
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: 'protocol' must be a mapping with keys {list(_PROTOCOL_KEYS)}")
    for k in data:
        if k not in _PROTOCOL_KEYS:
            raise ConfigError(f"{path}: unknown key {k!r} in 'protocol'; valid keys: {list(_PROTOCOL_KEYS)}")
    p = Protocol(**data)
    p.lr_grid = _check_lr_grid(f"{path}: protocol", p.lr_grid)
    if (not isinstance(p.seeds, list) or not p.seeds or len(set(p.seeds)) != len(p.seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in p.seeds)):
        raise ConfigError(f"{path}: protocol.seeds must be a non-empty list of distinct ints >= 0, got {p.seeds!r}")
    if not isinstance(p.val_examples, int) or p.val_examples < 1:
        raise ConfigError(f"{path}: protocol.val_examples must be an int >= 1, got {p.val_examples!r}")
    return p


def load_compare_config(path, overrides=None, preset: str | None = DEFAULT_PRESET) -> Comparison:
    """Read a comparison file, merge ``preset`` (ignored when the file defines no presets and
    ``preset`` is the default), apply ``overrides``; every run is validated up front."""
    path = Path(path)
    if not path.is_file():
        hint = " (the built-in default ships inside the package: reinstall slotmem, or pass a config path)" if path == DEFAULT_CONFIG else ""
        raise ConfigError(f"comparison config not found: {str(path)!r}{hint}")
    data = read_yaml(path)
    for k in data:
        if k not in _TOP_KEYS:
            raise ConfigError(f"{path}: unknown key {k!r}; a comparison file has keys {list(_TOP_KEYS)}")
    presets = data.get("presets") or {}
    note = ""
    if preset is not None and (presets or preset != DEFAULT_PRESET):
        if preset not in presets:
            raise ConfigError(f"{path}: no preset {preset!r}; this file defines {sorted(presets) or 'no presets'}")
        pre = presets[preset] or {}
        for k in pre:
            if k not in _PRESET_KEYS:
                raise ConfigError(f"{path}: unknown key {k!r} in presets.{preset}; valid keys: {list(_PRESET_KEYS)}")
        note = str(pre.get("note", ""))
        patches = pre.get("runs") or {}  # {label: {points, lr_grid, overrides}} merged into that run
        if not isinstance(patches, dict):
            raise ConfigError(f"{path}: presets.{preset}.runs must map run labels to run keys, got {patches!r}")
        data = _merge(data, {k: v for k, v in pre.items() if k not in ("note", "runs")})
        runs = data.get("runs") if isinstance(data.get("runs"), list) else []
        known = {r.get("label") for r in runs if isinstance(r, dict)}
        if set(patches) - known:
            raise ConfigError(f"{path}: presets.{preset}.runs names unknown label(s) {sorted(set(patches) - known)}")
        data["runs"] = [_merge(r, patches[r["label"]]) if isinstance(r, dict) and r.get("label") in patches else r
                        for r in runs] or data.get("runs")
    else:
        preset = None
    if "runs" not in data or not isinstance(data["runs"], list) or not data["runs"]:
        raise ConfigError(f"{path}: 'runs' must list at least one run")
    base = data.get("base") or {}
    if not isinstance(base, dict):
        raise ConfigError(f"{path}: 'base' must be a mapping (a training config)")
    shared, per_run, proto = [], {}, []
    for o in overrides or ():
        label, sep, rest = o.partition(":")
        if sep and "=" not in label:  # 'Label:key=value' applies to one run
            per_run.setdefault(label, []).append(rest)
        elif o.startswith("protocol."):  # 'protocol.seeds=[0,1,2]' changes the protocol
            proto.append(o[len("protocol."):])
        else:
            shared.append(o)
    # a grid given on the command line is the user's choice for every run, over the runs' own grids
    cli_grid = any(o.partition("=")[0].strip() == "lr_grid" for o in proto)
    pdata = data.get("protocol") or {}
    protocol = _build_protocol(path, apply_overrides(pdata, proto) if isinstance(pdata, dict) else pdata)
    shared_points = _check_points(f"{path}: points", data.get("points"))
    base = apply_overrides(base, shared, Config)
    name = data.get("name", path.stem)
    units, labels, tasks = [], [], set()
    for i, run in enumerate(data["runs"]):
        if not isinstance(run, dict):
            raise ConfigError(f"{path}: runs[{i}] must be a mapping with keys {list(_RUN_KEYS)}")
        for k in run:
            if k not in _RUN_KEYS:
                raise ConfigError(f"{path}: unknown key {k!r} in runs[{i}]; valid keys: {list(_RUN_KEYS)}")
        label = run.get("label")
        if not isinstance(label, str) or not label:
            raise ConfigError(f"{path}: runs[{i}] needs a 'label'")
        if label in labels:
            raise ConfigError(f"{path}: duplicate run label {label!r}")
        if "," in label:
            raise ConfigError(f"{path}: run label {label!r} contains ',', which --only uses to separate labels")
        labels.append(label)
        own_grid = "lr_grid" in run and not cli_grid
        grid = _check_lr_grid(f"{path}: run {label!r}", run["lr_grid"]) if own_grid else protocol.lr_grid
        pts = _check_points(f"{path}: run {label!r}", run["points"]) if "points" in run else shared_points
        merged = _merge(base, run.get("overrides") or {})
        merged = apply_overrides(merged, per_run.pop(label, []), Config)
        merged["name"] = slug(label)
        for value in (pts[1] if pts else [None]):
            d = merged if value is None else apply_overrides(merged, [f"{pts[0]}={json.dumps(value)}"], Config)
            try:
                cfg = config_from_dict(d)
            except ConfigError as e:
                at = "" if value is None else f" at {pts[0]}={value}"
                raise ConfigError(f"{path}: run {label!r}{at}: {e}") from None
            tasks.add(cfg.task)
            units.append(Unit(label, value, pts[0] if pts else None, cfg, grid))
    if per_run:
        raise ConfigError(f"override(s) for unknown run label(s) {sorted(per_run)}; labels are {labels}")
    if len(tasks) != 1:
        raise ConfigError(f"{path}: all runs of a comparison must have the same task, got {sorted(tasks)}")
    return Comparison(name, tasks.pop(), protocol, units, labels, preset, note)


# --------------------------------------------------------------------------- one run


def identity_hash(cfg_dict: dict) -> str:
    """A short hash of everything in a run's config that changes its result (the model section in the
    form ``model_identity`` gives, so that runs recorded before the section changed are found again)."""
    d = copy.deepcopy(cfg_dict)
    d["model"] = model_identity(d["model"])
    for section in _LATER_TASK_SECTIONS:
        if d.get("task") != section:
            d.pop(section, None)
    for keys in _NOT_IDENTITY:
        node = d
        for k in keys[:-1]:
            node = node.get(k, {})
        node.pop(keys[-1], None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:8]


def in_distribution(cfg: Config) -> list[bool]:
    """MQAR: for each test slice, whether its (seq_len, num_kv_pairs) appears in training."""
    seen = {(s.seq_len, s.num_kv_pairs) for s in cfg.mqar.train}
    return [(s.seq_len, s.num_kv_pairs) in seen for s in cfg.mqar.test]


def slice_name(s) -> str:
    """An MQAR test slice's column name, ``T{seq_len}/kv{num_kv_pairs}``."""
    return f"T{s.seq_len}/kv{s.num_kv_pairs}"


def in_distribution_slices(cfg: Config) -> list[str]:
    """The column names of the MQAR test slices whose (seq_len, num_kv_pairs) appears in training."""
    return [slice_name(s) for s, f in zip(cfg.mqar.test, in_distribution(cfg)) if f]


LEARNED_AT = 0.9  # MQAR: a run "learned" when every in-distribution slice reaches this accuracy (issue 10's bar)


def learned_mqar(cfg: Config, test: dict) -> bool:
    """Whether an MQAR run's every in-distribution test slice reaches ``LEARNED_AT``. Seed outcomes on
    MQAR are bimodal (a run learns or stays on the plateau), so the count of runs that learned says what
    a mean cannot."""
    return all(test[n] >= LEARNED_AT for n in in_distribution_slices(cfg))


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def fit_and_score(cfg: Config, val_examples: int = 256, quiet: bool = True) -> dict:
    """Train ``cfg`` and score it. Returns ``{"val": {"score", "higher_better", ...},
    "test": {metric: value}, "params", "state_size_per_layer", "train_time_s"}``; raises
    ``NonFiniteError`` when training goes non-finite. Validation never touches the test data."""
    import torch

    from ..train.trainer import Trainer

    lm_lengths = list(cfg.lm.eval_lengths) if cfg.task == "lm" else []
    if cfg.task == "lm":
        cfg.lm.eval_lengths = []  # scored below on the test half only
    tr = Trainer(cfg, quiet=quiet)
    try:
        res = tr.fit()
        module, bs, info = tr.eval_module, tr.eval_bs, tr.info
        with torch.no_grad():
            if cfg.task == "mqar":
                val, test = _score_mqar(tr.task, cfg, res, module, bs, info, val_examples)
            elif cfg.task == "lm":
                val, test = _score_lm(tr.task, cfg, module, bs, info, lm_lengths)
            elif cfg.task == "niah":
                val, test = _score_niah(tr.task, cfg, res, module, bs, info, val_examples)
            else:
                val = {"score": res["final"]["val"]["mse"], "higher_better": False, "metric": "val MSE",
                       "mse": res["final"]["val"]["mse"], "mae": res["final"]["val"]["mae"]}
                test = {"mse": res["final"]["test"]["mse"], "mae": res["final"]["test"]["mae"]}
    finally:
        tr.close()
    sizes = res.get("state_size_per_layer") or []
    return {"val": val, "test": test, "params": res["params"], "state_size_per_layer": max(sizes) if sizes else 0,
            "train_time_s": res["train_time_s"]}


def _score_mqar(task, cfg, res, module, bs, info, val_examples):
    from ..data import generate_mqar
    from ..eval.mqar import evaluate_mqar_slices
    from ..train.tasks import mqar_metric_key

    q = cfg.mqar
    flags = in_distribution(cfg)
    val_slices = []
    for s in q.test:
        spec = q.slice_config(s, min(s.num_examples, val_examples))
        val_slices.append((spec, *generate_mqar(spec, "val")))
    v = evaluate_mqar_slices(module, val_slices, bs, info)
    accs = [r["acc"] for r in v["slices"]]
    pick = [a for a, f in zip(accs, flags) if f] or accs
    val = {"score": sum(pick) / len(pick), "higher_better": True,
           "metric": "val acc (in-dist slices)" if any(flags) else "val acc (all slices)", "loss": v["loss"]}
    t = res["final"]["test"]
    test = {}
    for s in q.test:
        test[slice_name(s)] = t[mqar_metric_key(s.seq_len, s.num_kv_pairs)]
    _add_in_dist_extrap(test, list(test.values()), flags)
    test["loss"] = t["loss"]
    return val, test


def _add_in_dist_extrap(test: dict, values: list, in_dist: list) -> None:
    """``test["in-dist"]`` / ``test["extrap"]``: the means of ``values`` whose ``in_dist`` flag is set /
    not set (each only when there is one)."""
    ind = [a for a, f in zip(values, in_dist) if f]
    ext = [a for a, f in zip(values, in_dist) if not f]
    if ind:
        test["in-dist"] = sum(ind) / len(ind)
    if ext:
        test["extrap"] = sum(ext) / len(ext)


def _score_niah(task, cfg, res, module, bs, info, val_examples):
    """Validation: a separate sample stream at the training lengths x the test depths. Test: per
    (length, depth) cell ``L{length}/d{depth}``, per length ``L{length}`` (mean over depths), and
    ``in-dist`` (training lengths) / ``extrap`` (the other lengths)."""
    from ..eval.niah import evaluate_niah_cells

    n = cfg.niah
    cells = task.cells("val", min(n.num_test, val_examples), lengths=list(n.train_lengths))
    v = evaluate_niah_cells(module, cells, bs, info)
    val = {"score": v["acc"], "higher_better": True, "metric": "val acc (training lengths)", "loss": v["loss"]}
    t = res["final"]["test"]
    test, per_len = {}, {}
    for L in n.test_lengths:
        for d in n.test_depths:
            a = t[f"acc_L{L}_d{float(d):g}"]
            test[f"L{L}/d{float(d):g}"] = a
            per_len.setdefault(L, []).append(a)
    for L, accs in per_len.items():
        test[f"L{L}"] = sum(accs) / len(accs)
    _add_in_dist_extrap(test, [test[f"L{L}"] for L in per_len], [L in n.train_lengths for L in per_len])
    test["loss"] = t["loss"]
    return val, test


def lm_split_tokens(tokens):
    """The held-out token stream cut in two halves: ``(validation, test)``."""
    h = tokens.numel() // 2
    return tokens[:h], tokens[h:]


def _score_lm(task, cfg, module, bs, info, lengths):
    from ..eval.perplexity import evaluate_nll, perplexity_vs_length

    val_tok, test_tok = lm_split_tokens(task.data.val_tokens)
    mx = cfg.lm.max_eval_tokens
    r = evaluate_nll(module, val_tok, cfg.lm.seq_len, bs, info, max_tokens=mx)
    if r["nll"] is None:
        raise ConfigError(f"the validation half of the held-out text has fewer than lm.seq_len+1={cfg.lm.seq_len + 1} "
                          "tokens; raise lm.val_fraction or use more text")
    val = {"score": r["nll"], "higher_better": False, "metric": "val NLL (first half of held-out text)", "ppl": r["ppl"]}
    test = {}
    for row in perplexity_vs_length(module, test_tok, lengths or [cfg.lm.seq_len], bs, info, max_tokens=mx,
                                    train_len=cfg.lm.seq_len):
        if row["nll"] is not None:
            test[f"ppl@{row['length']}"] = row["ppl"]
    return val, test


def run_one(job: dict) -> dict:
    """Run one (unit, lr, seed) job and write its ``record.json`` (the resume marker).
    ``job``: ``{"cfg": config dict, "run_dir", "val_examples", "threads", "key"}``."""
    cfg = config_from_dict(job["cfg"])
    cfg.out_dir = job["run_dir"]
    cfg.train.resume = "auto"
    if job.get("threads") and not cfg.train.num_threads:
        cfg.train.num_threads = job["threads"]
    rec = {"key": job["key"], "lr": cfg.optim.lr, "seed": cfg.seed}
    t0 = time.perf_counter()
    try:
        out = fit_and_score(cfg, job["val_examples"], quiet=job.get("quiet", True))
    except FloatingPointError as e:  # NonFiniteError from training, or an op meeting NaN activations in scoring
        rec.update(status="diverged", reason=str(e).split(";")[0])
    else:
        rec.update(out)
        bad = [k for k, v in [("val", out["val"]["score"]), *out["test"].items()] if not _finite(v)]
        rec["status"] = "diverged" if bad else "ok"
        if bad:
            rec["reason"] = f"non-finite evaluation: {bad}"
    rec["wall_s"] = time.perf_counter() - t0
    path = Path(job["run_dir"]) / "record.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rec, indent=2, default=float))
    tmp.replace(path)
    return rec


def _init_worker(threads: int, parent_pid: int) -> None:
    import torch

    torch.set_num_threads(threads)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True, name="exit-with-parent").start()


def _exit_with_parent(parent_pid: int, poll_s: float = 0.5) -> None:
    """Stop this worker when the comparison process that started it is gone (killed, or crashed):
    an orphan would train on unseen, hold its run's lock and take the cores from a rerun. Polls the
    parent pid (portable, unlike Linux's PR_SET_PDEATHSIG); the unfinished run restarts on resume."""
    while os.getppid() == parent_pid:
        time.sleep(poll_s)
    os._exit(1)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_job(jobs: int) -> int:
    """Torch threads for each of ``jobs`` processes: ``max(1, cores // jobs)``, capped by
    ``OMP_NUM_THREADS`` when it is set (a shared machine's limit). A run's own
    ``train.num_threads`` (when not 0) wins over both."""
    n = max(1, usable_cores() // max(1, jobs))
    env = os.environ.get("OMP_NUM_THREADS", "")
    return min(n, int(env)) if env.isdigit() and int(env) > 0 else n


# --------------------------------------------------------------------------- the protocol


def _fmt_lr(lr: float) -> str:
    return f"{lr:.2g}".replace("+", "")


def _load_record(run_dir: Path, key: str):
    p = run_dir / "record.json"
    if not p.is_file():
        return None
    try:
        rec = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return rec if rec.get("key") == key and rec.get("status") in ("ok", "diverged") else None


def select_lr(sweep: dict) -> float | None:
    """The lr with the best VALIDATION score among the finished, non-diverged sweep runs
    (``{lr: record}``); None when every run diverged. Ties keep the smaller lr."""
    ok = [(lr, r["val"]["score"], r["val"]["higher_better"]) for lr, r in sorted(sweep.items()) if r["status"] == "ok"]
    if not ok:
        return None
    best = ok[0]
    for cand in ok[1:]:
        better = cand[1] > best[1] if cand[2] else cand[1] < best[1]
        if better:
            best = cand
    return best[0]


def summarize(values: list[float]) -> dict:
    import statistics

    if not values:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


class _Runner:
    """Schedules the jobs of every unit (sweep, then seeds), inline or in worker processes."""

    def __init__(self, comp: Comparison, out_dir: Path, jobs: int, say, quiet: bool):
        self.comp, self.out_dir, self.say, self.quiet = comp, out_dir, say, quiet
        self.jobs = max(1, jobs)
        self.threads = threads_per_job(self.jobs)
        self.reused = 0
        self.ran = 0

    def job(self, unit: Unit, lr: float, seed: int) -> dict:
        d = to_dict(unit.cfg)
        d["optim"]["lr"] = lr
        d["seed"] = seed
        key = identity_hash(d)
        run_dir = self.out_dir / "runs" / unit.folder / f"lr{_fmt_lr(lr)}_seed{seed}_{key}"
        return {"cfg": d, "run_dir": str(run_dir), "key": key, "val_examples": self.comp.protocol.val_examples,
                "threads": self.threads, "quiet": self.quiet, "unit": unit.name, "lr": lr, "seed": seed}

    def run(self) -> list[dict]:
        p = self.comp.protocol
        state = []  # per unit: {"unit", "sweep": {lr: rec}, "seeds": {seed: rec}, "lr": chosen}
        pending = []  # jobs to run, in order
        for u in self.comp.units:
            st = {"unit": u, "sweep": {}, "seeds": {}, "lr": None}
            state.append(st)
            for lr in u.lr_grid:
                pending.append((st, "sweep", self.job(u, lr, p.seeds[0])))
        if self.jobs == 1:
            while pending:
                st, phase, job = pending.pop(0)
                self._done(st, phase, job, self._cached_or_run(job), pending)
        else:
            self._run_pool(pending)
        return state

    def _cached_or_run(self, job):
        rec = _load_record(Path(job["run_dir"]), job["key"])
        if rec is not None:
            self.reused += 1
            return rec
        self.say(f"-- {job['unit']}: lr {_fmt_lr(job['lr'])}, seed {job['seed']}")
        self.ran += 1
        rec = run_one(job)
        self._report(job, rec)
        return rec

    def _report(self, job, rec):
        if rec["status"] == "diverged":
            self.say(f"   {job['unit']} lr {_fmt_lr(job['lr'])} seed {job['seed']}: DIVERGED ({rec.get('reason', '')[:120]})")
        else:
            self.say(f"   {job['unit']} lr {_fmt_lr(job['lr'])} seed {job['seed']}: {rec['val']['metric']} "
                     f"{rec['val']['score']:.4g}, {rec['wall_s']:.0f}s")

    def _done(self, st, phase, job, rec, pending):
        """Record a finished job; after a unit's sweep, queue its remaining seeds."""
        p = self.comp.protocol
        if phase == "sweep":
            st["sweep"][job["lr"]] = rec
            if len(st["sweep"]) == len(st["unit"].lr_grid):
                st["lr"] = select_lr(st["sweep"])
                if st["lr"] is not None:
                    st["seeds"][p.seeds[0]] = st["sweep"][st["lr"]]
                    for s in p.seeds[1:]:
                        pending.append((st, "seed", self.job(st["unit"], st["lr"], s)))
                if len(st["unit"].lr_grid) > 1:
                    self.say(f"   {st['unit'].name}: lr chosen on validation = "
                             f"{'none (all diverged)' if st['lr'] is None else _fmt_lr(st['lr'])}")
        else:
            st["seeds"][job["seed"]] = rec

    def _run_pool(self, pending):
        import multiprocessing as mp
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(self.jobs, mp_context=ctx, initializer=_init_worker,
                                 initargs=(self.threads, os.getpid())) as ex:
            running = {}
            while pending or running:
                while pending:
                    st, phase, job = pending.pop(0)
                    rec = _load_record(Path(job["run_dir"]), job["key"])
                    if rec is not None:
                        self.reused += 1
                        self._done(st, phase, job, rec, pending)
                        continue
                    self.say(f"-- {job['unit']}: lr {_fmt_lr(job['lr'])}, seed {job['seed']} (worker)")
                    self.ran += 1
                    running[ex.submit(run_one, job)] = (st, phase, job)
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for f in done:
                    st, phase, job = running.pop(f)
                    rec = f.result()
                    self._report(job, rec)
                    self._done(st, phase, job, rec, pending)


def aggregate(state: list[dict], comp: Comparison) -> list[dict]:
    """One row per unit: the chosen lr, the sweep's validation scores, and per test metric the
    mean / std / min / max over the non-diverged seed runs, with the diverged count."""
    rows = []
    for st in state:
        u = st["unit"]
        recs = [st["seeds"][s] for s in comp.protocol.seeds if s in st["seeds"]]
        ok = [r for r in recs if r["status"] == "ok"]
        metrics = {}
        for r in ok:
            for k, v in r["test"].items():
                metrics.setdefault(k, []).append(v)
        any_ok = ok[0] if ok else next((r for r in st["sweep"].values() if r["status"] == "ok"), None)
        rows.append({
            "label": u.label, "point": u.point, "point_key": u.point_key, "name": u.name, "mixer": u.cfg.model.mixer,
            "lr_grid": u.lr_grid, "lr": st["lr"],
            "sweep": {_fmt_lr(lr): (None if r["status"] != "ok" else r["val"]["score"]) for lr, r in sorted(st["sweep"].items())},
            "sweep_metric": any_ok["val"]["metric"] if any_ok else None,
            "seeds": [r["seed"] for r in recs], "n_ok": len(ok), "n_diverged": len(recs) - len(ok),
            "sweep_diverged": sum(r["status"] != "ok" for r in st["sweep"].values()),
            "diverged_reasons": sorted({r.get("reason", "") for r in list(st["sweep"].values()) + recs if r["status"] != "ok"}),
            "params": any_ok["params"] if any_ok else None,
            "state_size_per_layer": any_ok["state_size_per_layer"] if any_ok else None,
            "state_grows": u.cfg.model.mixer == "attention" or bool(u.cfg.model.attn_layers),
            "train_time_s": summarize([r["train_time_s"] for r in ok])["mean"],
            "metrics": {k: summarize(v) for k, v in metrics.items()},
            "n_learned": (sum(learned_mqar(u.cfg, r["test"]) for r in ok)
                          if comp.task == "mqar" and in_distribution_slices(u.cfg) else None),
            "runs": [{"seed": r["seed"], "lr": r["lr"], "status": r["status"], **({"test": r["test"]} if r["status"] == "ok" else {})}
                     for r in recs],
        })
    return rows


# --------------------------------------------------------------------------- reporting


def _cell(s: dict, digits: int = 3) -> str:
    if not s or s["n"] == 0:
        return "–"
    if s["n"] == 1:
        return f"{s['mean']:.{digits}f}"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f} [{s['min']:.{digits}f}–{s['max']:.{digits}f}]"


def _metric_columns(rows, task) -> tuple[list[str], list[str]]:
    """``(headline columns, detail columns)``: MQAR's headline is in-dist / extrap, its detail
    the slices; other tasks show every metric in the headline table."""
    cols = []
    for r in rows:
        for k in r["metrics"]:
            if k not in cols and k != "loss":
                cols.append(k)
    if task in ("mqar", "niah"):
        head = [c for c in ("in-dist", "extrap") if c in cols]
        # S-NIAH's detail is one column per length (its depth x length cells are in the heat map)
        return head, [c for c in cols if c not in head and "/d" not in c]
    return cols, []


def format_table(rows: list[dict], comp: Comparison, header: dict) -> str:
    """Markdown tables: one row per model (and sweep point), the headline metrics as
    mean ± std [min–max]; MQAR's slices as means; the lr sweep's validation scores."""
    cols, detail = _metric_columns(rows, comp.task)
    digits = 3 if comp.task != "timeseries" else 4
    learned = any(r.get("n_learned") is not None for r in rows)
    hdr = ["model", "params", "state/layer", "lr (chosen)", "seeds ok / diverged"] + ["learned"] * learned + cols
    lines = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for r in rows:
        st = "–" if r["state_size_per_layer"] is None else f"{r['state_size_per_layer']:,}" + ("*" if r["state_grows"] else "")
        lr = "all diverged" if r["lr"] is None else _fmt_lr(r["lr"])
        cells = [r["name"], "–" if r["params"] is None else f"{r['params']:,}", st, lr,
                 f"{r['n_ok']} / {r['n_diverged']}"]
        if learned:
            cells.append("–" if r.get("n_learned") is None else f"{r['n_learned']} / {r['n_ok']}")
        cells += [_cell(r["metrics"].get(c), digits) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    if detail:
        what = "context length (mean over needle depths)" if comp.task == "niah" else "test slice"
        lines += ["", f"per {what}, mean over the seeds that finished:", "",
                  "| model | " + " | ".join(detail) + " |", "|" + "---|" * (len(detail) + 1)]
        for r in rows:
            cells = ["–" if not r["metrics"].get(c) or not r["metrics"][c]["n"] else f"{r['metrics'][c]['mean']:.{digits}f}"
                     for c in detail]
            lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    notes = ["", header["metric_note"], "",
             "cells: mean ± std [min–max] over the seed runs that finished; diverged runs (non-finite loss, "
             "gradient or evaluation) are excluded from every cell and counted in 'seeds ok / diverged'."]
    if learned:
        notes.append(f"learned: seed runs with every in-distribution slice ≥ {LEARNED_AT} / seed runs that finished.")
    if any(r["state_grows"] for r in rows):
        notes.append(f"* attention's KV cache at T={header.get('state_len')} (grows linearly with T).")
    notes += ["", "learning-rate sweep (validation score of the first seed per lr; 'div' = diverged):", ""]
    grid_cols = sorted({lr for r in rows for lr in r["sweep"]}, key=float)
    notes.append("| model | metric | " + " | ".join(grid_cols) + " |")
    notes.append("|" + "---|" * (len(grid_cols) + 2))
    for r in rows:
        cells = []
        for g in grid_cols:
            if g not in r["sweep"]:
                cells.append("")
            else:
                v = r["sweep"][g]
                mark = "**" if r["lr"] is not None and g == _fmt_lr(r["lr"]) else ""
                cells.append("div" if v is None else f"{mark}{v:.4g}{mark}")
        notes.append(f"| {r['name']} | {r['sweep_metric'] or '–'} | " + " | ".join(cells) + " |")
    reasons = sorted({x for r in rows for x in r["diverged_reasons"] if x})
    if reasons:
        notes += ["", "diverged runs: " + "; ".join(reasons[:5])]
    return "\n".join(lines + notes)


def _legend_outside(ax):
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)


def _series(rows, key_x, metric):
    """``{label: [(x, mean, lo, hi)]}`` sorted by x, from rows' metric summaries."""
    out = {}
    for r in rows:
        s = r["metrics"].get(metric)
        x = key_x(r)
        if not s or s["n"] == 0 or x is None:
            continue
        out.setdefault(r["label"], []).append((x, s["mean"], s["min"], s["max"]))
    return {k: sorted(v) for k, v in out.items()}


_MARKERS = "osD^vP*Xh<>"


def _draw(ax, series, *, logx=False, logy=False):
    """One line per series with its min–max as a band (and as error bars, which single points
    still show); markers differ per series, and on a log x axis points of several series at
    the same x are dodged sideways by a few percent."""
    from matplotlib.ticker import FuncFormatter

    # series that share an x are dodged sideways a little (log x: by a factor), so none hides another
    share: dict = {}
    for label, pts in series.items():
        for p in pts:
            share.setdefault(p[0], []).append(label)
    for i, (label, pts) in enumerate(series.items()):
        xs, ms, lo, hi = zip(*pts)
        if logx:
            xs = tuple(x * 2 ** (0.06 * (share[x].index(label) - (len(share[x]) - 1) / 2)) for x in xs)
        line, = ax.plot(xs, ms, marker=_MARKERS[i % len(_MARKERS)], ms=5, label=label, alpha=0.9)
        if any(a != b for a, b in zip(lo, hi)):
            c = line.get_color()
            ax.errorbar(xs, ms, yerr=[[m - a for m, a in zip(ms, lo)], [b - m for m, b in zip(ms, hi)]],
                        fmt="none", ecolor=c, capsize=3, lw=1, alpha=0.7)
            if len(xs) > 1:
                ax.fill_between(xs, lo, hi, color=c, alpha=0.15, linewidth=0)
    if logx:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    if logy:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)


def _suptitle(fig, text: str) -> None:
    import textwrap

    fig.suptitle("\n".join(textwrap.wrap(text, 150)), fontsize=8)


def plot_results(rows, comp: Comparison, header: dict, out_dir: Path) -> list[str]:
    """Task plots (one line per model, a band over the seeds' min–max); returns file names (none when
    every run diverged: there is nothing to draw, and the table says why)."""
    if not any(r["metrics"] for r in rows):
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    if comp.task == "mqar":
        metrics = [m for m in ("in-dist", "extrap") if any(m in r["metrics"] for r in rows)]
        fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics) + 2.5, 4.5), squeeze=False)
        for ax, m in zip(axes[0], metrics):
            _draw(ax, _series(rows, lambda r: r["state_size_per_layer"] or None, m), logx=True)
            ax.set_xlabel(f"state floats per layer (attention: KV cache at T={header['state_len']})")
            ax.set_ylabel(f"test accuracy, {m} slices")
            ax.set_ylim(-0.03, 1.03)
            ax.set_title(f"MQAR {m}: accuracy vs state size")
        _legend_outside(axes[0][-1])
        _suptitle(fig, header["title"])
        fig.tight_layout()
        fig.savefig(out_dir / "accuracy_vs_state.png", dpi=120)
        plt.close(fig)
        files.append("accuracy_vs_state.png")
    elif comp.task == "niah":
        from ..eval.niah import draw_niah

        n = comp.units[0].cfg.niah
        fig, axes = plt.subplots(1, len(rows), figsize=((1.0 * len(n.test_lengths) + 1.6) * len(rows) + 1.5,
                                                        0.45 * len(n.test_depths) + 2.5), squeeze=False, layout="constrained")
        im = None
        for i, (ax, r) in enumerate(zip(axes[0], rows)):
            cells = [{"length": L, "depth": float(d), "acc": (r["metrics"].get(f"L{L}/d{float(d):g}") or {}).get("mean")}
                     for L in n.test_lengths for d in n.test_depths]
            for c in cells:
                c["acc"] = float("nan") if c["acc"] is None else c["acc"]
            im = draw_niah(ax, cells)
            ax.set_title(f"{r['name']} ({r['n_ok']} seed{'s' if r['n_ok'] != 1 else ''})", fontsize=9)
            if i:
                ax.set_ylabel("")
        if im is not None:
            fig.colorbar(im, ax=axes[0].tolist(), label="accuracy (mean over seeds)", shrink=0.8)
        _suptitle(fig, header["title"])
        fig.savefig(out_dir / "niah_heatmaps.png", dpi=120)
        plt.close(fig)
        files.append("niah_heatmaps.png")
    elif comp.task == "lm":
        fig, ax = plt.subplots(figsize=(8.5, 4.5))
        series = {}
        for r in rows:
            pts = [(int(k.split("@")[1]), s["mean"], s["min"], s["max"]) for k, s in r["metrics"].items()
                   if k.startswith("ppl@") and s["n"]]
            if pts:
                series[r["name"]] = sorted(pts)
        _draw(ax, series, logx=True)
        train_len = header.get("train_len")
        if train_len:
            ax.axvline(train_len, color="gray", ls="--", lw=1)
            ax.text(train_len, ax.get_ylim()[1], " training length", va="top", fontsize=8, color="gray")
        ax.set_xlabel("evaluation context length (tokens)")
        ax.set_ylabel("test perplexity")
        ax.set_title("perplexity vs context length")
        _legend_outside(ax)
        _suptitle(fig, header["title"])
        fig.tight_layout()
        fig.savefig(out_dir / "ppl_vs_context.png", dpi=120)
        plt.close(fig)
        files.append("ppl_vs_context.png")
    else:
        fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
        for ax, m in zip(axes, ("mse", "mae")):
            if rows[0]["point_key"]:
                _draw(ax, _series(rows, lambda r: r["point"], m))
                ax.set_xlabel(rows[0]["point_key"])
            else:
                names = [r["name"] for r in rows]
                ax.bar(range(len(rows)), [r["metrics"].get(m, {}).get("mean") or 0 for r in rows])
                ax.set_xticks(range(len(rows)))
                ax.set_xticklabels(names, rotation=20, fontsize=8)
            ax.set_ylabel(f"test {m.upper()} (normalised)")
            ax.grid(True, alpha=0.3)
        if rows[0]["point_key"]:
            _legend_outside(axes[-1])
        _suptitle(fig, header["title"])
        fig.tight_layout()
        fig.savefig(out_dir / "forecast_error.png", dpi=120)
        plt.close(fig)
        files.append("forecast_error.png")
    return files


def _header(comp: Comparison) -> dict:
    c0 = comp.units[0].cfg
    p = comp.protocol
    proto = (f"lr grid {[_fmt_lr(x) for x in p.lr_grid]} (per-run grids in the sweep table), seeds {p.seeds}"
             + (f", preset {comp.preset}" if comp.preset else ""))
    m = c0.model
    width = f"d_model {m.hidden_size}, {m.num_hidden_layers} layers, {'MLP' if m.use_mlp else 'no MLP'}"
    run = f"{c0.train.steps} steps x {c0.train.batch_size}"
    h = {"protocol": proto}
    if comp.task == "mqar":
        tr = ", ".join(f"({s.seq_len},{s.num_kv_pairs})x{s.num_examples}" for s in c0.mqar.train)
        h["title"] = f"{comp.name}: {width}, vocab {c0.mqar.vocab_size}; train {tr}; {run}; {proto}"
        h["state_len"] = max(s.seq_len for s in c0.mqar.test)
        ind = in_distribution_slices(c0)
        h["metric_note"] = (
            f"MQAR test accuracy (Zoology: per example, fraction of queries answered; held-out test stream, "
            f"{' or '.join(sorted({str(s.num_examples) for s in c0.mqar.test}, key=int))} examples per slice; chance ~ "
            f"{1.0 / (c0.mqar.vocab_size - c0.mqar.vocab_size // 2):.1e}). in-dist = mean over slices whose (T, kv) "
            f"is trained on ({', '.join(ind) or 'none'}); extrap = mean over the others. lr chosen on a separate "
            f"validation stream of the same slices (up to {p.val_examples} examples each), in-distribution ones.")
    elif comp.task == "lm":
        src = c0.lm.source if isinstance(c0.lm.source, str) else ", ".join(map(str, c0.lm.source))
        h["title"] = f"{comp.name}: {width}; {Path(str(src)).name}, {c0.lm.tokenizer} tokens, train length {c0.lm.seq_len}; {run}; {proto}"
        h["train_len"] = h["state_len"] = c0.lm.seq_len
        h["metric_note"] = (
            f"perplexity on the second half of the held-out text (last {c0.lm.val_fraction:g} of the stream), cut "
            f"into non-overlapping windows of each length (ppl@L); training length {c0.lm.seq_len}, longer lengths "
            "test extrapolation. lr chosen on the first half (NLL at the training length).")
    elif comp.task == "niah":
        n = c0.niah
        h["state_len"] = max(n.test_lengths)
        h["title"] = (f"{comp.name}: {width}; S-NIAH ({n.haystack} haystack, {n.tokenizer} tokens), train lengths "
                      f"{list(n.train_lengths)} x {n.num_train}; {run}; {proto}")
        h["metric_note"] = (
            f"S-NIAH accuracy: fraction of held-out samples whose 7-digit value greedy decoding reproduces "
            f"(every answer token the argmax), {n.num_test} samples per (length, depth) cell, needle depths "
            f"{[float(d) for d in n.test_depths]}. in-dist = mean over the training lengths "
            f"{list(n.train_lengths)}; extrap = mean over the longer ones. lr chosen on a separate validation "
            "stream at the training lengths.")
    else:
        ts = c0.timeseries
        h["state_len"] = ts.lookback
        h["title"] = f"{comp.name}: {width}; {Path(ts.path).name}, lookback {ts.lookback}, features {ts.features}; {run}; {proto}"
        h["metric_note"] = ("forecasting MSE / MAE on the z-normalised test split (standard protocol); "
                            "lr chosen on the validation split's MSE.")
    return h


def run_compare(config=DEFAULT_CONFIG, overrides=None, out=None, only=None, quiet: bool = False,
                preset: str | None = DEFAULT_PRESET, jobs: int = 1, command: str | None = None) -> dict:
    """Run a comparison (see the module docstring); returns the results dict."""
    comp = load_compare_config(config, overrides, preset)
    if only:
        want = [s.strip() for s in only.split(",") if s.strip()]
        unknown = [w for w in want if w not in comp.labels]
        if unknown:
            raise ConfigError(f"--only: unknown run label(s) {unknown}; labels are {comp.labels}")
        comp.units = [u for u in comp.units if u.label in want]
    if not isinstance(jobs, int) or jobs < 0:
        raise ConfigError(f"--jobs must be an int >= 0 (0 = one per usable core), got {jobs!r}")
    jobs = jobs or usable_cores()
    preflight(comp.units)
    # a fixed default folder, so that rerunning the same command resumes it
    out_dir = Path(out) if out else Path("outputs") / "compare" / (comp.name + (f"-{comp.preset}" if comp.preset else ""))
    out_dir.mkdir(parents=True, exist_ok=True)
    say = (lambda *a: None) if quiet else print
    if command is None:
        command = "slotmem compare " + " ".join(
            [str(config)] + list(overrides or []) + [f"--out {out_dir}"] + ([f"--preset {preset}"] if preset else [])
            + ([f"--only {only}"] if only else []) + [f"--jobs {jobs}"])
    (out_dir / "command.txt").write_text(command + "\n")
    if comp.note:
        say(f"preset {comp.preset}: {comp.note}")
    runner = _Runner(comp, out_dir, jobs, say, quiet)
    say(f"{comp.name}: {len(comp.units)} model(s)/point(s), lr grid {[_fmt_lr(x) for x in comp.protocol.lr_grid]}, "
        f"seeds {comp.protocol.seeds}; {jobs} process(es) x {runner.threads} thread(s); runs in {out_dir}/runs")
    t_all = time.perf_counter()
    state = runner.run()
    total = time.perf_counter() - t_all
    rows = aggregate(state, comp)
    # wall time of every run of this comparison, including runs read back from an earlier invocation
    run_wall = sum(r.get("wall_s", 0.0) for st in state
                   for r in {id(x): x for x in [*st["sweep"].values(), *st["seeds"].values()]}.values())
    header = _header(comp)
    table = format_table(rows, comp, header)
    plots = plot_results(rows, comp, header, out_dir)
    results = {"name": comp.name, "task": comp.task, "preset": comp.preset, "preset_note": comp.note,
               "protocol": {"lr_grid": comp.protocol.lr_grid, "seeds": comp.protocol.seeds,
                            "val_examples": comp.protocol.val_examples},
               "header": header, "rows": rows, "command": command, "config": str(config),
               "overrides": list(overrides or []), "jobs": jobs, "threads_per_job": runner.threads,
               "runs_done": runner.ran, "runs_reused": runner.reused, "total_wall_s": total, "runs_wall_s": run_wall,
               "plots": plots}
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=float))
    md = [f"# {comp.name}", "", f"`{command}`", "", header["title"], ""]
    if comp.note:
        md += [f"preset **{comp.preset}**: {comp.note}", ""]
    md += [table, "", f"wall time of this invocation {total:.0f}s ({runner.ran} runs trained, {runner.reused} read back "
           f"from an earlier one), {jobs} process(es) x {runner.threads} thread(s); the runs' own wall times sum to "
           f"{run_wall:.0f}s", ""] + [f"![{p}]({p})" for p in plots]
    (out_dir / "table.md").write_text("\n".join(md) + "\n")
    say("")
    say(header["title"])
    say(table)
    say(f"total wall time {total:.1f}s ({total / 60:.1f} min), {runner.ran} runs trained, {runner.reused} reused; "
        f"results in {out_dir}/ (results.json, table.md, {', '.join(plots)}, command.txt)")
    return results


def preflight(units) -> None:
    """Build every model and push one short input through it (forward and backward) before
    any training starts, so a missing optional dependency (fla for the baselines) or a bad
    mixer argument stops the comparison at once, not after the first models have trained."""
    import torch

    from ..train.tasks import _check_sources, build_backbone, build_causal_lm, check_niah_data

    seen = set()
    for u in units:
        cfg = u.cfg
        try:  # the data first: a wrong path should not wait for the first model to train
            if cfg.task == "lm":
                _check_sources(cfg.lm.source, cfg.lm.format)
            elif cfg.task == "timeseries" and not Path(cfg.timeseries.path).is_file():
                raise ConfigError(f"config key 'timeseries.path': data file not found: {cfg.timeseries.path!r} "
                                  "(pass timeseries.path=<an ETT-layout CSV>)")
            elif cfg.task == "niah":
                check_niah_data(cfg.niah)
        except ConfigError as e:
            raise ConfigError(f"run {u.name!r}: {e}") from None
        key = json.dumps(to_dict(cfg.model), sort_keys=True, default=str) + cfg.timeseries.head
        if key in seen:
            continue
        seen.add(key)
        try:
            with torch.random.fork_rng(devices=[]):
                if cfg.task == "timeseries":
                    if cfg.timeseries.head == "dlinear":
                        continue  # no backbone
                    net = build_backbone(cfg.model)
                    net(inputs_embeds=torch.randn(1, 8, cfg.model.hidden_size), use_cache=False).last_hidden_state.sum().backward()
                else:
                    vocab = cfg.mqar.vocab_size if cfg.task == "mqar" else 260
                    net = build_causal_lm(cfg.model, vocab)
                    ids = torch.randint(0, vocab, (1, 8))
                    net(input_ids=ids, use_cache=False).logits.float().sum().backward()
        except ImportError as e:
            raise ConfigError(f"run {u.name!r} (mixer {cfg.model.mixer!r}) needs an optional dependency: {e}. "
                              "The baselines need fla: pip install -e '.[baselines]'") from None
        except ConfigError as e:
            raise ConfigError(f"run {u.name!r}: {e}") from None
        except (TypeError, ValueError, RuntimeError) as e:
            raise ConfigError(f"run {u.name!r} (mixer {cfg.model.mixer!r}) cannot run: {type(e).__name__}: {e}") from None
