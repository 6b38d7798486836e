"""The training loop behind ``slotmem train``.

One optimizer step = one global batch of ``train.batch_size`` sequences from the
deterministic ``BatchPlan``; every process takes its ``1/world_size`` share, in
``grad_accum`` micro-batches. The loss is the global per-target mean: each micro-batch
contributes ``sum of its token losses * world_size / (targets in the global batch)``, so
DDP's gradient average equals the single-process gradient of the same global batch
(whatever the split into processes and micro-batches, up to summation order).

Outputs in ``out_dir``: ``config.yaml`` (the resolved config), ``metrics.jsonl``,
``tensorboard/`` (if installed), ``checkpoints/step_*.pt`` (+ ``.sha256``), ``model/`` (the
final model, ``save_pretrained`` format for LM/MQAR, with ``slotmem_manifest.json``) and
``results.json`` (final metrics, parameter count, state size, timings).

A run holds an exclusive lock on ``out_dir`` (``runlock.RunLock``) from construction to
``close()``; a second run on the same folder stops at once naming the holder's pid. Files
are written atomically (temp + rename); temporary files of a killed run are removed at start.
"""
from __future__ import annotations

import json
import math
import random
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import yaml

from . import checkpoint as ckpt
from .config import Config, model_identity, to_dict
from .distributed import DistInfo, all_reduce_sum, barrier, broadcast_object, destroy, init_distributed, wrap_model
from .errors import CheckpointError, ConfigError, NonFiniteError, OutputError, SlotmemTrainError, output_error
from .metrics import Meter, MetricsLogger
from .runlock import RunLock
from .sampler import BatchPlan
from .tasks import build_task, count_parameters, state_size_per_layer

# Config sections that must match the checkpoint's for a resume to be the same run, plus the run's
# own task section (``cfg.task``): the other tasks' sections do not change the run
_RESUME_MUST_MATCH = ("task", "seed", "model", "optim", "train.batch_size")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_lambda(step: int, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the peak lr for update ``step`` (0-based): linear warmup over ``warmup``
    updates, then cosine / linear decay to ``min_ratio`` at ``total``, or constant."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return min_ratio + (1 - min_ratio) * (1 - progress)


def build_optimizer(module: torch.nn.Module, o) -> torch.optim.Optimizer:
    """AdamW; parameters marked ``_no_weight_decay`` (fla convention) and, unless
    ``optim.decay_1d_params``, all 1-D parameters (biases, norm weights, gate constants) get no decay."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        exempt = getattr(p, "_no_weight_decay", False) or (p.dim() < 2 and not o.decay_1d_params)
        (no_decay if exempt else decay).append(p)
    groups = [{"params": decay, "weight_decay": o.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps)


def _get(d: dict, dotted: str):
    for k in dotted.split("."):
        d = d[k]
    return d


def _diff(a, b, prefix="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
        return out
    return [] if a == b else [prefix]


class Trainer:
    """Build everything from a ``Config``; ``fit()`` trains, evaluates, saves, returns results."""

    def __init__(self, cfg: Config, quiet: bool = False) -> None:
        self.info = DistInfo()
        self.lock: RunLock | None = None
        self.logger: MetricsLogger | None = None
        try:
            self._setup(cfg, quiet)
        except BaseException:
            self._release()
            destroy(self.info)
            raise

    def _setup(self, cfg: Config, quiet: bool) -> None:
        self.cfg = cfg
        t = cfg.train
        self.quiet = quiet
        want = t.device
        if want == "cuda" and not torch.cuda.is_available():
            raise ConfigError("train.device=cuda but CUDA is not available; use train.device=auto or cpu")
        dev_type = "cuda" if (want == "cuda" or (want == "auto" and torch.cuda.is_available())) else "cpu"
        self.info: DistInfo = init_distributed(cfg.distributed.backend, dev_type, cfg.distributed.timeout_s)
        self.device = torch.device(dev_type, self.info.local_rank) if dev_type == "cuda" else torch.device("cpu")
        self.out_dir = cfg.output_dir
        self._lock_out_dir()

        # precision / compile: GPU features
        self.amp_dtype = None
        if t.precision != "fp32":
            if dev_type != "cuda":
                self.warn(f"train.precision={t.precision} needs CUDA; running in fp32 on CPU")
            else:
                self.amp_dtype = torch.bfloat16 if t.precision == "bf16" else torch.float16
        self.use_compile = bool(t.compile)
        if self.use_compile and dev_type != "cuda":
            self.warn("train.compile=true is used on CUDA only; running eagerly on CPU")
            self.use_compile = False
        if dev_type == "cpu":
            # Flush float denormals (|x| < 1.2e-38 in fp32) to zero. Long decays (Gated DeltaNet's exp(Σ g) over a
            # chunk) produce them, and x86 arithmetic on denormals is slow: a trained Gated DeltaNet's training step
            # took 115-147 ms instead of 74 (docs/results.md, "MQAR, the default"). Changes nothing above 1e-38.
            torch.set_flush_denormal(True)

        ws = self.info.world_size
        if t.batch_size % (ws * t.grad_accum):
            raise ConfigError(
                f"train.batch_size={t.batch_size} must be divisible by world_size * grad_accum = {ws} * {t.grad_accum}"
            )
        self.micro = t.batch_size // (ws * t.grad_accum)
        self.eval_bs = t.eval_batch_size or max(1, t.batch_size // ws)

        if t.num_threads:
            torch.set_num_threads(t.num_threads)
        seed_everything(cfg.seed)
        self.task = build_task(cfg)
        self.net = self.task.build_net().to(self.device)
        self.objective = self.task.objective(self.net).to(self.device)
        self.n_params = count_parameters(self.net)
        self.model = wrap_model(self.objective, cfg.distributed.strategy, self.info, self.device,
                                cfg.distributed.find_unused_parameters)
        self.fsdp = self.info.enabled and cfg.distributed.strategy == "fsdp"
        self.ddp = self.info.enabled and cfg.distributed.strategy == "ddp"
        self.eval_module = self.model.module if self.ddp else self.model
        self.fwd = torch.compile(self.model) if self.use_compile else self.model
        self.optimizer = build_optimizer(self.objective, cfg.optim)
        o = cfg.optim
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_lambda(s, t.steps, o.warmup_steps, o.schedule, o.min_lr_ratio))
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.plan = BatchPlan(self.task.group_sizes, t.batch_size, cfg.seed, self.task.group_names)
        self.meter = Meter()
        self.step = 0
        self.resumed_from: Path | None = None
        self.train_time = 0.0
        self._resume()

    # ------------------------------------------------------------------ utilities
    def log(self, msg: str) -> None:
        if self.info.is_main and not self.quiet:
            from tqdm import tqdm

            tqdm.write(msg, file=sys.stderr)

    def _notice(self, msg: str) -> None:
        """A message that must reach the user even with ``quiet`` (stderr, main process)."""
        if self.info.is_main:
            print(msg, file=sys.stderr, flush=True)

    def warn(self, msg: str) -> None:
        if self.info.is_main:
            warnings.warn(msg, stacklevel=3)

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def _lock_out_dir(self) -> None:
        """Main process: lock ``out_dir`` (or fail at once) and remove a killed run's
        temporary files; every process raises the same error when the lock is refused."""
        err = None
        if self.info.is_main:
            try:
                self.lock = RunLock(self.out_dir).acquire(notice=self._notice)
                for p in ckpt.clean_stale_files(self.out_dir):
                    self._notice(f"removed {p}, left by an interrupted run")
            except SlotmemTrainError as e:
                err = e
        err = broadcast_object(err, self.info)
        if err is not None:
            raise err

    def _release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    # ------------------------------------------------------------------ state
    def _state_dicts(self):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_state_dict(self.objective, self.optimizer, options=opts)

    def _load_state_dicts(self, model_sd, optim_sd) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        opts = StateDictOptions(full_state_dict=True, strict=True)
        set_state_dict(self.objective, self.optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd, options=opts)

    def save(self) -> Path | None:
        """Write a checkpoint of the current step (collective under FSDP; rank 0 writes)."""
        model_sd, optim_sd = self._state_dicts()
        path = ckpt.checkpoint_path(self.out_dir, self.step)
        err = None
        if self.info.is_main:
            state = {
                "format": ckpt.FORMAT, "version": ckpt.VERSION, "step": self.step,
                "model": model_sd, "optimizer": optim_sd, "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "rng": ckpt.get_rng_state(), "data": self.plan.state_dict(), "meter": self.meter.state_dict(),
                "train_time": self.train_time, "world_size": self.info.world_size, "config": to_dict(self.cfg),
                "metrics_records": self.logger.n_records if self.logger is not None else None,
            }
            try:
                if self.logger is not None:
                    self.logger.sync()
                ckpt.save_checkpoint(state, path)
                ckpt.prune_checkpoints(self.out_dir, self.cfg.train.keep_checkpoints, protect=path)
            except (NonFiniteError, OutputError) as e:
                err = e
        err = broadcast_object(err, self.info)
        if err is not None:
            raise err
        return path

    def _resume(self) -> None:
        r = self.cfg.train.resume
        if r == "never":
            if ckpt.list_checkpoints(self.out_dir):
                raise ConfigError(
                    f"{ckpt.checkpoint_dir(self.out_dir)} already holds checkpoints and train.resume=never; "
                    "choose another out_dir, delete them, or use train.resume=auto"
                )
            return
        if r == "auto":
            # The main process verifies (moving corrupt checkpoints aside); the others load its pick.
            found, err = None, None
            if self.info.is_main:
                try:
                    found = ckpt.resume_candidate(self.out_dir, notice=self._notice)
                except SlotmemTrainError as e:
                    err = e
            pick = broadcast_object((None if found is None else str(found[0]), err), self.info)
            if pick[1] is not None:
                raise pick[1]
            if pick[0] is None:
                return
            path = Path(pick[0])
            state = found[1] if found is not None else ckpt.load_checkpoint(path)
        else:
            path = Path(r)
            state = ckpt.load_checkpoint(path)
        mine, theirs = to_dict(self.cfg), state["config"]
        if isinstance(theirs.get("model"), dict):  # a checkpoint written before or after the model section changed
            mine["model"], theirs = model_identity(mine["model"]), {**theirs, "model": model_identity(theirs["model"])}
        diffs = []
        for key in (*_RESUME_MUST_MATCH, self.cfg.task):
            try:
                diffs += [f"{key}.{d}" if d else key for d in _diff(_get(mine, key), _get(theirs, key))]
            except (KeyError, TypeError):
                diffs.append(key)
        if diffs:
            raise CheckpointError(
                f"cannot resume from {str(path)!r}: the config differs from the checkpoint's in {diffs}; "
                "resume with the same settings or use a new out_dir"
            )
        if theirs.get("train", {}).get("steps") != self.cfg.train.steps:
            self.warn(f"resuming a run planned for train.steps={theirs.get('train', {}).get('steps')} with "
                      f"train.steps={self.cfg.train.steps}: the learning-rate schedule changes from here on")
        try:
            self._load_state_dicts(state["model"], state["optimizer"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise CheckpointError(f"checkpoint {str(path)!r} does not fit this model: {str(e).splitlines()[0][:300]}") from None
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.plan.load_state_dict(state["data"])
        self.meter.load_state_dict(state["meter"])
        ckpt.set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.train_time = float(state.get("train_time", 0.0))
        self.resume_records = state.get("metrics_records")
        self.resumed_from = path
        self.log(f"resumed from {path} at step {self.step}")

    # ------------------------------------------------------------------ training
    def _no_sync(self, last: bool):
        if last or not self.info.enabled:
            return nullcontext()
        if self.ddp:
            return self.model.no_sync()
        if self.fsdp and hasattr(self.model, "set_requires_gradient_sync"):
            self.model.set_requires_gradient_sync(False)
        return nullcontext()

    def train_step(self) -> dict:
        t = self.cfg.train
        ws, rank = self.info.world_size, self.info.rank
        group, idx = self.plan.next()
        n_targets = self.task.target_count(group, idx)
        if n_targets == 0:
            raise ConfigError(f"a training batch of {self.task.group_names[group]} has no targets")
        parts = np.asarray(idx).reshape(t.grad_accum, ws, self.micro)[:, rank]
        stats = None
        tokens = 0
        for k in range(t.grad_accum):
            batch = {n: v.to(self.device, non_blocking=True) for n, v in self.task.get_batch(group, parts[k]).items()}
            tokens += self.task.tokens(batch)
            last = k == t.grad_accum - 1
            if self.fsdp and last and hasattr(self.model, "set_requires_gradient_sync"):
                self.model.set_requires_gradient_sync(True)
            with self._no_sync(last):
                with self.autocast():
                    try:
                        out = self.fwd(**batch)
                    except FloatingPointError as e:  # an op met NaN/inf activations (ops.utils.NonFiniteInputError)
                        raise NonFiniteError(
                            f"non-finite activations in the forward pass at step {self.step + 1} "
                            f"(lr {self.scheduler.get_last_lr()[0]:.3g}): {e}; training stopped without saving. "
                            "Lower optim.lr, add optim.warmup_steps or set optim.grad_clip") from e
                loss = out["loss_sum"].float() * (ws / n_targets)
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            vals = torch.stack([out[k2].detach().double() for k2 in sorted(out)])
            stats = vals if stats is None else stats + vals
            keys = sorted(out)
        stats = all_reduce_sum(stats.to(self.device) if self.device.type == "cuda" else stats, self.info).cpu()
        sums = dict(zip(keys, stats.tolist()))
        loss_val = sums["loss_sum"] / n_targets
        if not math.isfinite(loss_val):
            last = ckpt.latest_checkpoint(self.out_dir)
            raise NonFiniteError(
                f"non-finite training loss ({loss_val}) at step {self.step + 1} (lr {self.scheduler.get_last_lr()[0]:.3g}); "
                f"training stopped without saving. Last good checkpoint: {str(last) if last else 'none'}. "
                "Lower optim.lr, add optim.warmup_steps or set optim.grad_clip"
            )
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        gnorm = None
        if self.cfg.optim.grad_clip > 0:
            gnorm = torch.nn.utils.clip_grad_norm_(self.objective.parameters(), self.cfg.optim.grad_clip)
            if hasattr(gnorm, "full_tensor"):
                gnorm = gnorm.full_tensor()
            gnorm = float(gnorm)
            if not math.isfinite(gnorm) and self.scaler is None:
                raise NonFiniteError(
                    f"non-finite gradient norm at step {self.step + 1} (loss {loss_val:.4g}); training stopped without "
                    "saving. Lower optim.lr or add optim.warmup_steps"
                )
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        metrics = self.task.train_metrics(sums)
        for name, v in metrics.items():
            self.meter.add(name, v)
        if gnorm is not None:
            self.meter.add("grad_norm", gnorm)
        return {"metrics": metrics, "tokens": tokens * ws}

    def evaluate(self, splits) -> dict:
        out = {}
        for split in splits:
            out[split] = self.task.evaluate(self.eval_module, split, self.eval_bs, self.info)
        return out

    def _log_eval(self, logger, results: dict, label: str = "") -> None:
        for split, m in results.items():
            bad = [k for k, v in m.items() if isinstance(v, float) and not math.isfinite(v)]
            if bad:
                self._notice(f"warning: {label}evaluation of {split!r} at step {self.step} is not finite for {bad} "
                             "(the model output NaN/Inf); they are reported as nan, not as a score")
            if logger is not None:
                logger.log(self.step, split, {k: v for k, v in m.items() if isinstance(v, (int, float))})
            shown = "  ".join(f"{k} {v:.4g}" for k, v in m.items() if isinstance(v, float))
            self.log(f"step {self.step:>6} {label}{split}: {shown}")

    def fit(self) -> dict:
        cfg, t = self.cfg, self.cfg.train
        main = self.info.is_main
        logger = None
        if main:
            ckpt.atomic_write_text(self.out_dir / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False), "config")
            logger = MetricsLogger(self.out_dir, t.tensorboard, resume_step=self.step if self.resumed_from else None,
                                   notice=self.log, resume_records=getattr(self, "resume_records", None))
        self.logger = logger
        try:
            return self._fit(logger)
        finally:
            self.logger = None
            if logger is not None:
                logger.close()

    def _fit(self, logger) -> dict:
        cfg, t = self.cfg, self.cfg.train
        main = self.info.is_main
        pbar = None
        if main and t.progress and not self.quiet:
            from tqdm import tqdm

            pbar = tqdm(total=t.steps, initial=self.step, desc=f"{cfg.name}", dynamic_ncols=True, file=sys.stderr)
        self.log(f"{cfg.task}: {self.n_params:,} parameters, mixer {cfg.model.mixer}, {self.info.world_size} process(es), "
                 f"device {self.device}, {t.steps} steps of {t.batch_size} sequences")
        tok_window, t_window = 0, time.perf_counter()
        saved_step = self.step if self.resumed_from else None
        stop = t.stop_at_step
        stopped = stop is not None and stop <= self.step < t.steps  # resumed at or past the planned stop
        while self.step < t.steps and not stopped:
            t0 = time.perf_counter()
            r = self.train_step()
            self.step += 1
            self.train_time += time.perf_counter() - t0
            tok_window += r["tokens"]
            if pbar is not None:
                tps = tok_window / max(time.perf_counter() - t_window, 1e-9)
                post = {k: f"{v:.4f}" for k, v in r["metrics"].items()}
                post["tok/s"] = f"{tps:,.0f}"
                pbar.set_postfix(post, refresh=False)
                pbar.update(1)
            if self.step % t.log_every == 0:
                m = self.meter.means()
                now = time.perf_counter()
                m["lr"] = self.scheduler.get_last_lr()[0]
                m["tokens_per_s"] = tok_window / max(now - t_window, 1e-9)
                if logger is not None:
                    logger.log(self.step, "train", m)
                self.meter.reset()
                tok_window, t_window = 0, now
            if t.eval_every and self.step % t.eval_every == 0 and self.step < t.steps:
                self._log_eval(logger, self.evaluate(self.task.periodic_splits))
            if (t.save_every and self.step % t.save_every == 0) or self.step == stop:
                self.save()
                saved_step = self.step
            if self.step == stop and self.step < t.steps:
                stopped = True
        if pbar is not None:
            pbar.close()
        if stopped:
            self.log(f"stopped at step {self.step} (train.stop_at_step); resume with the same command")
            return {"stopped_at": self.step, "out_dir": str(self.out_dir)}
        if saved_step != self.step:
            self.save()
        t_eval = time.perf_counter()
        final = self.evaluate(self.task.final_splits)
        extra = self.task.extra_final(self.eval_module, self.eval_bs, self.info)
        eval_time = time.perf_counter() - t_eval
        self._log_eval(logger, final, "final ")
        results = {
            "name": cfg.name, "task": cfg.task, "mixer": cfg.model.mixer, "step": self.step,
            "params": self.n_params, "world_size": self.info.world_size,
            "train_time_s": self.train_time, "final_eval_time_s": eval_time,
            "final": final, **extra,
        }
        if cfg.task == "mqar":
            tmax = max(s.seq_len for s in cfg.mqar.test)
            results["state_size_per_layer"] = state_size_per_layer(self.net, tmax)
            results["state_size_at_len"] = tmax
        elif cfg.task == "lm":
            results["state_size_per_layer"] = state_size_per_layer(self.net, cfg.lm.seq_len)
        elif cfg.task == "niah":
            tmax = max(cfg.niah.test_lengths)
            results["state_size_per_layer"] = state_size_per_layer(self.net, tmax)
            results["state_size_at_len"] = tmax
        else:
            results["state_size_per_layer"] = state_size_per_layer(self.net, cfg.timeseries.lookback)
        if logger is not None:
            flat = {f"{s}/{k}": v for s, m in final.items() for k, v in m.items() if isinstance(v, (int, float))}
            logger.log(self.step, "final", flat)
        if self.ddp:
            results["replica_param_sha256"] = self._replica_hashes()
        if t.save_model:
            self._export()
        if main:
            ckpt.atomic_write_text(self.out_dir / "results.json", json.dumps(results, indent=2, default=float), "results")
        return results

    def _replica_hashes(self) -> list[str]:
        """SHA-256 of every process's parameters (DDP replicas must be bit-identical); raises if they differ."""
        import hashlib

        import torch.distributed as dist

        h = hashlib.sha256()
        for name, p in sorted(self.objective.named_parameters()):
            h.update(name.encode())
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
        hashes = [None] * self.info.world_size
        dist.all_gather_object(hashes, h.hexdigest())
        if len(set(hashes)) != 1:
            raise RuntimeError(f"DDP replicas diverged: parameter hashes per rank {hashes}")
        return hashes

    def _export(self) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(self.objective, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.info.is_main:
            net_sd = {k[len("net."):]: v for k, v in sd.items() if k.startswith("net.")}
            directory = self.out_dir / "model"
            from transformers.utils import logging as hf_logging

            was = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
            try:
                self.task.export(self.net, net_sd, directory)
                ckpt.write_manifest(directory)
            except OSError as e:
                raise output_error(e, "the final model", directory,
                                   "Training finished and its last checkpoint is saved.") from None
            finally:
                if was:
                    hf_logging.enable_progress_bar()
        barrier(self.info)

    def close(self, clean_exit: bool = False) -> None:
        """Release the run lock and the process group (``clean_exit``: every rank finished ``fit``)."""
        self._release()
        destroy(self.info, clean_exit)


def train(cfg: Config, quiet: bool = False) -> dict:
    """Run ``cfg`` to the end (or to ``train.stop_at_step``); returns the results dict."""
    trainer = Trainer(cfg, quiet=quiet)
    try:
        results = trainer.fit()
    except BaseException:
        trainer.close()
        raise
    trainer.close(clean_exit=True)
    return results
