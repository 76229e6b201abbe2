"""Process-group setup: the same code single-process (``python -m core.run``) and under torchrun/deepspeed."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import sys
from typing import NoReturn

import torch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def available_cores() -> int:
    """The CPU cores this process may run on: its affinity mask (taskset, cpusets, Slurm), capped by a cgroup v2
    CPU quota (containers), not the machine's total."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()
        if quota != "max":
            cores = min(cores, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return cores


def processes_per_machine() -> int:
    """Processes of this run on this machine: torchrun sets LOCAL_WORLD_SIZE, the deepspeed launcher LOCAL_SIZE."""
    return int(os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("LOCAL_SIZE") or 1)


def configure_threads() -> int:
    """torch's CPU threads per process: ``OMP_NUM_THREADS`` when set (torch reads it itself; torchrun sets it to 1
    for several processes per machine), else this process's share of the cores it may use. torch's own default
    counts every core of the machine, and threads that outnumber the cores free to them spin against each other."""
    if not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(max(1, available_cores() // processes_per_machine()))
    return torch.get_num_threads()


def quiet_startup() -> None:
    """Silence start-up notices that are not the user's concern, before torch extensions or DeepSpeed load."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)   # "No CUDA runtime is found"
    if not torch.cuda.is_available():   # else DeepSpeed warns on every start that it "was unable to detect" a GPU
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


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
        with contextlib.redirect_stdout(io.StringIO()):   # "DeepSpeed ... shm_comm_op built successfully"
            deepspeed.init_distributed(dist_backend="nccl" if use_cuda else "gloo", verbose=False)
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def exit_process(code: int) -> NoReturn:
    """End ``python -m core.run``: destroy the process group, then exit. A launched rank (torchrun, WORLD_SIZE > 1)
    leaves with ``os._exit`` after flushing: its files are written and wandb is finished by then, and skipping C++
    static destructors avoids a teardown abort ("terminate called without an active exception", SIGABRT) that hit
    about one ZeRO-3 run in five on a loaded 2-core CPU after the run had completed, turning a finished run into
    a failed torchrun."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


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
