"""Cost of one Di[M]O iteration against one plain MDM training step, on the real MaskGit teacher size
(174M parameters, 256 px, 16x16 tokens) with random weights, measured in one run.

Both sides run their method's real ``train_step`` (plugins/methods/dimo.py with the teacher's recipe:
CFG 2.0 on the teacher, FKL, fresh aux sample; plugins/methods/mdm.py) with plain torch Adam updates in
place of the DeepSpeed engines, so the figures are the algorithms' cost, not the engine's. EMA updates
are left out of both. Peak memory: CUDA allocator peak on GPU, peak resident set size on CPU.

    python -m benchmarks.maskgit_iteration                      # CPU, batch 1, no warm-up (~2 minutes)
    python -m benchmarks.maskgit_iteration --batch 64 --iters 5 # the GPU setting
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import time
from pathlib import Path

import torch

from benchmarks.memory import PeakMemory
from core.config import resolve
from core.engine import build_method
from core.interfaces import SetupContext, StepContext


def harness(roles: dict, device: torch.device):
    """Adam per trainable role and an ``update`` with the engine's semantics (nan_to_num, clipping)."""
    opts = {name: torch.optim.Adam([p for p in r.module.parameters() if p.requires_grad], lr=r.lr, betas=r.betas,
                                   eps=r.eps) for name, r in roles.items() if r.trainable}

    def update(name: str, loss: torch.Tensor) -> None:
        loss.backward()
        params = [p for p in roles[name].module.parameters() if p.grad is not None]
        if roles[name].nan_to_num:
            for p in params:
                torch.nan_to_num_(p.grad, nan=0.0, posinf=1e5, neginf=-1e5)
        if roles[name].grad_clip:
            torch.nn.utils.clip_grad_norm_(params, roles[name].grad_clip)
        opts[name].step()
        opts[name].zero_grad(set_to_none=True)

    for name, role in roles.items():
        role.module.to(device).train(role.trainable)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else \
        (lambda: torch.autocast("cpu", enabled=False))
    return update, autocast


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def build_step(name: str, batch: int, device: torch.device, size_args=()):
    """One ``train_step`` of method ``name`` on MaskGit with random weights and plain torch Adam; returns
    ``step(i)`` and a ``cleanup()`` that frees the models."""
    resolved = resolve([f"method={name}", "teacher=maskgit", f"trainer.batch_size={batch}", *size_args])
    method, teacher = build_method(resolved)
    torch.manual_seed(0)
    teacher_net = None
    if method.needs_teacher_weights:   # random weights at the real size stand in for the checkpoint
        teacher_net = teacher.build_network(load_weights=False).to(device).eval().requires_grad_(False)
    ctx = SetupContext(teacher=teacher, plugins=method.plugins, device=device, world_size=1, rank=0,
                       micro_batch=batch, teacher_network=teacher_net)
    roles = method.setup(ctx)
    update, autocast = harness(roles, device)
    models = {n: r.module for n, r in roles.items()}
    data = (torch.randint(0, teacher.vocab_size, (batch, teacher.seq_len), device=device),
            torch.randint(0, teacher.num_classes, (batch,), device=device))
    step = lambda i: method.train_step(StepContext(step=i, models=models, update=update, device=device,
                                                   autocast=autocast, batch=data if method.needs_data else None))
    step.params = sum(p.numel() for p in roles[method.student_role].module.parameters())
    step.config = {k: resolved[k] for k in ("method", "teacher")}

    def cleanup():
        models.clear()
        roles.clear()
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return step, cleanup


def measure(name: str, batch: int, iters: int, warmup: int, device: torch.device, size_args=()) -> dict:
    step, cleanup = build_step(name, batch, device, size_args)
    for i in range(warmup):   # allocator, kernels, optimizer state
        step(i)
    sync(device)
    with PeakMemory(device) as mem:
        t0 = time.perf_counter()
        for i in range(iters):
            step(warmup + i)
        sync(device)
        seconds = (time.perf_counter() - t0) / iters
    peak = mem.peak
    params, config = step.params, step.config
    del step
    cleanup()
    return {"seconds": seconds, "peak_memory_gb": peak / 2 ** 30, "student_params_m": params / 1e6,
            "config": config}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=None, help="default: 64 on GPU, 1 on CPU")
    parser.add_argument("--iters", type=int, default=None, help="measured iterations (default: 5 on GPU, 1 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="unmeasured iterations before them "
                                                                 "(default: 1 on GPU, 0 on CPU to stay short)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--out", default=None,
                        help="JSON file (default benchmarks/results/maskgit_iteration_<device>.json)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    batch = args.batch or (64 if gpu else 1)
    iters = args.iters or (5 if gpu else 1)
    warmup = args.warmup if args.warmup is not None else (1 if gpu else 0)
    mdm = measure("mdm", batch, iters, warmup, device)    # the smaller one first: CPU memory is not always returned
    dimo = measure("dimo", batch, iters, warmup, device)
    result = {
        "device": torch.cuda.get_device_name(device) if gpu else f"cpu ({platform.processor() or platform.machine()}, "
                                                                  f"{torch.get_num_threads()} threads)",
        "torch": torch.__version__, "batch": batch, "iters": iters, "warmup": warmup,
        "precision": "bf16 autocast" if gpu else "fp32",
        "memory": "cuda max_memory_allocated" if gpu else "peak process RSS",
        "mdm_seconds": mdm["seconds"], "dimo_seconds": dimo["seconds"], "ratio": dimo["seconds"] / mdm["seconds"],
        "mdm_peak_memory_gb": mdm["peak_memory_gb"], "dimo_peak_memory_gb": dimo["peak_memory_gb"],
        "params_m": dimo["student_params_m"], "dimo_config": dimo["config"], "mdm_config": mdm["config"],
    }
    print(f"maskgit ({result['params_m']:.1f}M) on {result['device']}, batch {batch}, {iters} measured "
          f"iteration(s) after {warmup} warm-up:")
    print(f"  MDM step      {mdm['seconds']:8.3f} s   peak memory {mdm['peak_memory_gb']:.2f} GiB")
    print(f"  Di[M]O step   {dimo['seconds']:8.3f} s   peak memory {dimo['peak_memory_gb']:.2f} GiB")
    print(f"  ratio Di[M]O / MDM = {result['ratio']:.2f}")
    out = Path(args.out or f"benchmarks/results/maskgit_iteration_{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"  -> {out}")
    return result


if __name__ == "__main__":
    main()
