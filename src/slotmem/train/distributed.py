"""Process groups for ``torchrun``: one place that reads the environment.

``torchrun --nproc_per_node N -m slotmem.cli train CONFIG`` sets ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK``; with ``WORLD_SIZE > 1`` the runner initialises the default process
group (nccl on CUDA, gloo on CPU unless ``distributed.backend`` says otherwise) and wraps
the model in DDP or FSDP (``distributed.strategy``).
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import ConfigError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world() -> tuple[int, int, int]:
    def _int(name, default):
        v = os.environ.get(name)
        try:
            return default if v is None else int(v)
        except ValueError:
            raise ConfigError(f"environment variable {name}={v!r} is not an integer") from None

    return _int("RANK", 0), _int("WORLD_SIZE", 1), _int("LOCAL_RANK", 0)


def init_distributed(backend: str, device_type: str, timeout_s: int) -> DistInfo:
    rank, world, local = env_world()
    if world <= 1:
        return DistInfo()
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local, False)
    if backend == "auto":
        backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl" and device_type != "cuda":
        raise ConfigError("distributed.backend=nccl needs CUDA devices; use gloo (or auto) on CPU")
    if device_type == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, True)


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_object(obj, info: DistInfo):
    if not info.enabled:
        return obj
    lst = [obj]
    dist.broadcast_object_list(lst, src=0)
    return lst[0]


def destroy(info: DistInfo, clean_exit: bool = False) -> None:
    """Tear down the process group this process created.

    After a clean finish every rank meets at a barrier first, so no rank tears down its
    gloo/nccl pairs while another still talks to it (PyTorch issue 75097: an unsynchronised
    ``destroy_process_group`` can hang the job at exit). After an error there is no barrier
    (the other ranks may never reach it); the launcher stops the rest of the job.
    """
    if info.initialized_here and dist.is_initialized():
        if clean_exit:
            dist.barrier()
        dist.destroy_process_group()


def find_layer_list(module: torch.nn.Module):
    """The ``nn.ModuleList`` of transformer blocks (``layers``/``h``/``blocks``), for FSDP wrapping."""
    for name in ("layers", "h", "blocks"):
        for mod_name, mod in module.named_modules():
            if mod_name.split(".")[-1] == name and isinstance(mod, torch.nn.ModuleList):
                return mod
    return None


def wrap_model(module: torch.nn.Module, strategy: str, info: DistInfo, device: torch.device, find_unused: bool):
    """DDP or FSDP (``fully_shard`` per block, then the root) around ``module``."""
    if not info.enabled:
        return module
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        return DDP(module, device_ids=ids, find_unused_parameters=find_unused)
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError as e:  # pragma: no cover - torch < 2.6
        raise ConfigError(f"distributed.strategy=fsdp needs torch.distributed.fsdp.fully_shard (torch >= 2.6): {e}") from None
    layers = find_layer_list(module)
    if layers is not None:
        for block in layers:
            fully_shard(block)
    fully_shard(module)
    return module
