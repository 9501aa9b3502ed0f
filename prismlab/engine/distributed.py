"""DistributedDataParallel set-up from torchrun's environment: nccl on GPUs, gloo on CPU."""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist


def init() -> tuple[int, int, torch.device]:
    """-> (rank, world_size, device). A plain `python -m prismlab` run is rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    rank = dist.get_rank() if dist.is_initialized() else 0
    device = local_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return rank, world, device


def local_device() -> torch.device:
    """This process's GPU (torchrun's LOCAL_RANK) where there is one, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum plain numbers over all ranks (float64 so counts stay exact)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_sum_array(values: np.ndarray, device: torch.device) -> np.ndarray:
    """Sum an integer array over all ranks, element by element."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.from_numpy(values).to(device)
    dist.all_reduce(t)
    return t.cpu().numpy()


def broadcast_buffers(module: torch.nn.Module, params: bool = False) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics), and with `params` its weights too,
    to every rank."""
    if dist.is_available() and dist.is_initialized():
        tensors = list(module.buffers()) + (list(module.parameters()) if params else [])
        with torch.no_grad():
            for t in tensors:
                dist.broadcast(t.data, src=0)


def rank0_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's value of `flag`, on every rank (other ranks may not see rank 0's files)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def all_true(flag: bool, device: torch.device) -> bool:
    """True only if `flag` is true on every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
