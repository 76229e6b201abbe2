"""Process-group setup: the same code single-process (``python -m core.run``) and under torchrun/deepspeed."""
from __future__ import annotations

import os
import socket

import torch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init(device_pref: str = "auto") -> torch.device:
    """Initialise torch.distributed once (gloo on CPU, nccl on GPU) and return this rank's device."""
    use_cuda = torch.cuda.is_available() if device_pref == "auto" else device_pref == "cuda"
    if device_pref == "cuda" and not torch.cuda.is_available():
        from core.errors import UserError
        raise UserError("trainer.device=cuda but no CUDA device is available; valid choices here: auto, cpu")
    if "RANK" not in os.environ:   # no launcher: a world of one (DeepSpeed would otherwise try MPI discovery)
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=os.environ.get("MASTER_PORT", str(_free_port())))
    if not torch.distributed.is_initialized():
        import deepspeed
        deepspeed.init_distributed(dist_backend="nccl" if use_cuda else "gloo", verbose=False)
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def compute_device(pref: str = "auto") -> torch.device:
    """Where evaluation and generation run: this process's GPU when there is one (no process group needed)."""
    if pref == "cuda" and not torch.cuda.is_available():
        from core.errors import UserError
        raise UserError("device=cuda but no CUDA device is available; valid choices here: auto, cpu")
    if pref != "cpu" and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def broadcast_object(obj):
    if world_size() == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj) -> list:
    """Every rank's ``obj``, in rank order (one element when there is no process group)."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    torch.distributed.all_gather_object(out, obj)
    return out
