"""``torchrun`` support: process group from environment variables, reductions, rank-0 helpers.

``torchrun --nproc_per_node N -m kdforge train CONFIG`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them, joins a
``gloo`` (CPU) or ``nccl`` (CUDA) process group and picks the device. Without them (or with
``WORLD_SIZE=1``) everything here is a no-op, so the trainer has one code path.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


class DeviceError(RuntimeError):
    """A device setting this machine cannot honour."""


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size``, its ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(pref: str, local_rank: int = 0) -> torch.device:
    """``auto`` → CUDA when available; ``cuda`` without a GPU raises a clear error."""
    if pref == "cuda" or (pref == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise DeviceError("device: cuda was asked for but no CUDA GPU is visible; use device: cpu or auto")
        return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return torch.device("cpu")


def init_distributed(device_pref: str = "auto") -> DistContext:
    """Join the process group ``torchrun`` describes (or stay single-process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_pref, local)
    if world <= 1:
        return DistContext(device=device)
    here = False
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
        here = True
    return DistContext(rank, world, local, device, here)


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``t`` over ranks (returns ``t`` unchanged single-process). CPU tensors go through the
    process group's device (nccl needs CUDA tensors)."""
    if not ctx.distributed:
        return t
    orig = t.device
    work = t.to(ctx.device) if ctx.device.type == "cuda" else t.cpu()
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.to(orig)


def broadcast_buffers(module: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's buffers (BatchNorm running stats) to every rank, e.g. before evaluation."""
    if not ctx.distributed:
        return
    for b in module.buffers():
        if b.device.type == "cpu" and ctx.device.type == "cuda":
            tmp = b.to(ctx.device)
            dist.broadcast(tmp, 0)
            b.copy_(tmp.cpu())
        else:
            dist.broadcast(b, 0)


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def cleanup(ctx: DistContext) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if ctx.initialized_here and dist.is_initialized():
        dist.destroy_process_group()
