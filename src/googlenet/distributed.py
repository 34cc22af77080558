"""DistributedDataParallel under torchrun; a no-op in a single process.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; with WORLD_SIZE > 1 we join
the process group (NCCL on CUDA, gloo on CPU). Each process takes its share
of every global batch through a DistributedSampler, so the global batch is
the one the user asked for and one process with the whole batch computes the
same mean gradient as N processes with 1/N of it each.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import NoReturn

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data.distributed import DistributedSampler

__all__ = [
    "all_gather_object",
    "all_reduce_sum",
    "any_process",
    "barrier",
    "broadcast_object",
    "cleanup",
    "epoch_order",
    "exit_process",
    "init",
    "is_main",
    "local_rank",
    "mean_over_processes",
    "rank",
    "shard",
    "world_size",
    "wrap",
]


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    return rank() == 0


def init(device: torch.device) -> None:
    """Join the process group when launched by torchrun with several processes.

    The backend follows the training device, not the machine: NCCL for CUDA,
    gloo otherwise (so `--device cpu` works on a machine that has GPUs).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(device)
        dist.init_process_group(backend)
        global _joined
        _joined = True


_joined = False  # whether this process has been in a process group (init)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def exit_process(code: object) -> NoReturn:
    """Leave the process with exit status `code` (sys.exit's meaning).

    A process that was in a process group skips the interpreter's native teardown once Python's exit handlers have
    run: DistributedDataParallel keeps gloo's threads alive after destroy_process_group (torch 2.14), and the
    teardown around them aborts about one process exit in ten ("terminate called without an active exception",
    SIGABRT), after the run's work is done and saved. A process that never joined one exits as usual.
    """
    if not _joined:
        sys.exit(code)
    status = code if isinstance(code, int) else 0 if code is None else 1
    if not isinstance(code, int) and code is not None:
        print(code, file=sys.stderr)
    atexit._run_exitfuncs()  # what the interpreter would run: multiprocessing's temporary folders, ...
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    if world_size() == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """This process's sample order for `epoch` (DistributedSampler, set_epoch, drop_last)."""
    sampler = DistributedSampler(
        range(n), num_replicas=world_size(), rank=rank(), shuffle=True, seed=seed, drop_last=True
    )
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.long)


def shard(n: int) -> Tensor | None:
    """This process's disjoint slice of an evaluation split (None: the whole split)."""
    if world_size() == 1:
        return None
    return torch.arange(rank(), n, world_size())


def all_reduce_sum(t: Tensor) -> Tensor:
    if world_size() == 1:
        return t
    device = torch.device("cuda", local_rank()) if dist.get_backend() == "nccl" else torch.device("cpu")
    buf = t.to(device)
    dist.all_reduce(buf)
    return buf.to(t.device)


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is true on any (a collective: all processes must call it)."""
    if world_size() == 1:
        return flag
    return bool(all_reduce_sum(torch.tensor([1.0 if flag else 0.0], dtype=torch.float64)).item() > 0)


def all_gather_object(obj):
    """[obj of rank 0, obj of rank 1, ...] on every process (a collective)."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj):
    """Rank 0's `obj` on every process (a collective: all processes must call it)."""
    if world_size() == 1:
        return obj
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def mean_over_processes(loss_sum: float, correct: int, seen: int) -> tuple[float, float]:
    """Training loss and accuracy over every process's samples of the epoch."""
    totals = all_reduce_sum(torch.tensor([loss_sum, float(correct), float(seen)], dtype=torch.float64))
    seen_all = max(totals[2].item(), 1.0)
    return totals[0].item() / seen_all, totals[1].item() / seen_all
