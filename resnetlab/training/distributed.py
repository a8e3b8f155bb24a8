"""torchrun/DDP support: one process per device, data sharded by rank, rank 0 writes.

Global-batch semantics: ``--batch-size`` is the global batch; each of W ranks gets
B/W images of every global batch (the same images and augmentation a single process
would use), gradients are averaged. Each rank normalises BN over its own B/W images
(``--sync-bn`` on CUDA normalises over all B). What a W-process run shares with one
process and ``--accum-steps W``: the same micro-batches, the same batch statistics in
every BN layer, hence the same gradients and the same weights after every step. What it
does not share: BN *running* statistics (the estimates used at test time), which each
process updates once per step from its own B/W images while accumulation updates them
W times per step, one micro-batch after another; rank 0's are the ones saved.

Under ``torchrun --max-restarts K`` a restarted group resumes from the last checkpoint
by itself (``TORCHELASTIC_RESTART_COUNT`` > 0), and a collective that waits longer than
``TIMEOUT`` for a dead peer fails instead of hanging.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")
TIMEOUT = timedelta(minutes=5)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistInfo:
    """Join the torchrun process group if launched by torchrun, else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        rank = int(os.environ["RANK"])
        # torchrun keeps its key-value store across restarts of the group: without a
        # prefix of its own per restart, a restarted group reads the dead workers'
        # addresses and fails to connect ("Connection refused").
        store, _, _ = next(dist.rendezvous("env://", rank, world, timeout=TIMEOUT))
        prefixed = dist.PrefixStore(f"resnetlab/restart{elastic_restart_count()}/", store)
        dist.init_process_group(
            backend=backend, store=prefixed, rank=rank, world_size=world, timeout=TIMEOUT
        )
    return DistInfo(
        dist.get_rank(),
        dist.get_world_size(),
        int(os.environ.get("LOCAL_RANK", "0")),
        str(dist.get_backend()),
    )


def elastic_restart_count() -> int:
    """How often torchrun has restarted this worker group (0: first start, or no torchrun)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj: T, info: DistInfo) -> T:
    """Rank 0's ``obj`` on every rank (decisions made once, such as the speed settings)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def max_replica_difference(params: list[torch.Tensor], info: DistInfo) -> float:
    """Largest difference between this rank's weights and rank 0's, over all ranks."""
    if not info.enabled:
        return 0.0
    flat = torch.cat([p.detach().reshape(-1).float() for p in params])
    ref = flat.clone()
    dist.broadcast(ref, src=0)
    diff = (flat - ref).abs().max().reshape(1)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff.item())
