"""Di[M]O iteration against an MDM step through the real engine (core.engine.Trainer, the code path of
``python -m core.run``), on the 174M MaskGit with random weights saved as a safetensors file.

Per configuration (method x ZeRO stage x bf16 mode x compile) it prints and writes to JSON: seconds per
iteration and samples/s (steady state: the second of two logging windows), achieved TFLOP/s from a FLOP count
(torch's FlopCounterMode on one step, and the analytic model of docs/performance.md), peak GPU memory and
its split per role (weights, optimizer state and master copies, the rest: gradients and activations). It also
runs the same algorithm with plain torch Adam (benchmarks/maskgit_iteration.py) for the engine overhead, and
estimates then checks the largest Di[M]O batch per ZeRO stage.

    python -m benchmarks.engine_iteration                        # GPU: the full grid (~4 minutes on an H200)
    python -m benchmarks.engine_iteration --size tiny --batch 4  # CPU smoke run of the same code (~1 minute)
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.engine_timing import free_memory, pick_device, time_training
from core.config import resolve
from core.engine import build_method

TINY_ARCH = ["teacher.resolution=64", "teacher.arch.dim=64", "teacher.arch.depth=2", "teacher.arch.heads=2",
             "teacher.arch.mlp_dim=128"]
H200_BF16_PEAK_TFLOPS = 790.0   # sustained dense bf16 matmul throughput measured on the H200 (issue 11)


def random_checkpoint(size_args: list[str], folder: Path) -> Path:
    from safetensors.torch import save_file
    _, teacher = build_method(resolve(["method=dimo", "teacher=maskgit", *size_args]))
    torch.manual_seed(0)
    net = teacher.build_network(load_weights=False)
    path = folder / "maskgit_random.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def tensor_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if torch.is_tensor(t) and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def _param_tensors(module):
    for p in module.parameters():
        yield p.ds_tensor if hasattr(p, "ds_tensor") else p   # ZeRO-3: this rank's shard


def _optimizer_tensors(engine):
    """Adam moments and fp32 master copies, wherever DeepSpeed keeps them at this stage."""
    opt = engine.optimizer
    inner = getattr(opt, "optimizer", opt)
    for state in inner.state.values():
        yield from (t for t in state.values() if torch.is_tensor(t) and t.dim())
    for attr in ("single_partition_of_fp32_groups", "fp32_partitioned_groups_flat", "fp32_groups_flat_partition"):
        yield from getattr(opt, attr, None) or []


def role_memory(trainer) -> dict:
    gib = 2 ** 30
    out = {}
    for name, model in trainer.models.items():
        module = model.module if hasattr(model, "module") else model
        entry = {"weights_gib": tensor_bytes(_param_tensors(module)) / gib}
        if name in trainer.engines:
            entry["optimizer_state_gib"] = tensor_bytes(_optimizer_tensors(trainer.engines[name])) / gib
        out[name] = entry
    out["ema_gib"] = sum(tensor_bytes(e.parameters()) for e in trainer.emas.values()) / gib
    return out


def count_flops(method_name: str, size_args: list[str], batch: int, device) -> float:
    """FLOPs of one training step (matmuls and attention), counted by torch on the plain-torch harness."""
    from torch.utils.flop_counter import FlopCounterMode
    from benchmarks.maskgit_iteration import build_step
    step, cleanup = build_step(method_name, batch, device, size_args)
    step(0)   # lazy state (optimizer moments) first, so the counted step is a steady one
    with FlopCounterMode(display=False) as counter:
        step(1)
    cleanup()
    return float(counter.get_total_flops())


def run_engine(method: str, checkpoint: Path, batch: int, iters: int, stage: int, mode: str, compile_: bool,
               size_args: list[str], device: torch.device) -> dict:
    overrides = [f"method={method}", "teacher=maskgit", *size_args, f"teacher.checkpoint={checkpoint}",
                 f"trainer.batch_size={batch}", f"trainer.zero_stage={stage}", f"trainer.bf16_mode={mode}",
                 f"trainer.compile={compile_}"]
    row = time_training(overrides, iters, device, inspect=lambda trainer: {"roles": role_memory(trainer)})
    return {"method": method, "zero_stage": stage, "bf16_mode": mode, "compile": compile_, "batch": batch, **row}


def largest_batch(rows: list[dict], stage: int, capacity_gib: float) -> int | None:
    """Linear model peak(b) = fixed + b * per_sample from two measured batches of the same stage."""
    pts = sorted((r["batch"], r["peak_memory_gib"]) for r in rows
                 if r["method"] == "dimo" and r["zero_stage"] == stage and r["bf16_mode"] == "autocast"
                 and not r["compile"])
    if len(pts) < 2 or pts[-1][0] == pts[0][0]:
        return None
    (b0, m0), (b1, m1) = pts[0], pts[-1]
    per_sample = (m1 - m0) / (b1 - b0)
    return int((capacity_gib - (m0 - per_sample * b0)) / per_sample) // 8 * 8


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("base", "tiny"), default="base")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--iters", type=int, default=10, help="measured iterations (as many again warm up)")
    parser.add_argument("--stages", default="0,2,3", help="ZeRO stages of the Di[M]O rows")
    parser.add_argument("--modes", default="autocast,weights", help="bf16 modes of the ZeRO-0 Di[M]O rows")
    parser.add_argument("--compile", action="store_true", help="add a torch.compile Di[M]O and MDM row")
    parser.add_argument("--max-batch", action="store_true", help="estimate, then check, the largest Di[M]O batch")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--out", default=None, help="JSON (default benchmarks/results/engine_iteration_<device>.json)")
    args = parser.parse_args(argv)
    size_args = TINY_ARCH if args.size == "tiny" else []
    device = pick_device(args.device)
    out = Path(args.out or f"benchmarks/results/engine_iteration_{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else
              f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)",
              "torch": torch.__version__, "deepspeed": _version("deepspeed"), "size": args.size,
              "batch": args.batch, "iters": args.iters, "rows": []}

    def save():
        out.write_text(json.dumps(result, indent=1))

    tmp = Path(tempfile.mkdtemp(prefix="dimo-maskgit-random-"))
    ckpt = random_checkpoint(size_args, tmp)
    flops = {m: count_flops(m, size_args, args.batch, device) for m in ("dimo", "mdm")}
    result["flops_per_iter"] = flops
    result["flops_analytic"] = analytic_flops(size_args, args.batch)
    print(f"FLOPs per iteration at batch {args.batch}: Di[M]O {flops['dimo'] / 1e12:.2f} T, "
          f"MDM {flops['mdm'] / 1e12:.2f} T (counted); analytic {result['flops_analytic']}")
    grid = [("mdm", 0, "autocast", False)] + [("dimo", int(s), "autocast", False) for s in args.stages.split(",")]
    grid += [("dimo", 0, m, False) for m in args.modes.split(",") if m != "autocast"]
    for spec in grid:
        add_row(result, flops, spec, ckpt, args, size_args, device)
        save()
    base = {r["method"]: r for r in result["rows"] if r["zero_stage"] == 0 and r["bf16_mode"] == "autocast"
            and not r["compile"]}
    result["dimo_over_mdm"] = base["dimo"]["seconds_per_iter"] / base["mdm"]["seconds_per_iter"]
    from benchmarks.maskgit_iteration import measure
    plain = measure("dimo", args.batch, args.iters, args.iters, device, size_args)
    result["plain_torch_dimo_seconds"] = plain["seconds"]
    result["engine_over_plain_torch"] = base["dimo"]["seconds_per_iter"] / plain["seconds"]
    print(f"  Di[M]O / MDM = {result['dimo_over_mdm']:.2f}; engine / plain torch (same algorithm) = "
          f"{result['engine_over_plain_torch']:.2f} ({plain['seconds']:.4f} s plain)")
    save()
    if args.max_batch and device.type == "cuda":
        result["max_batch"] = max_batches(result["rows"], ckpt, args, size_args, device, save)
    if args.compile:   # last: compilation is the slowest part of the run
        for method in ("dimo", "mdm"):
            add_row(result, flops, (method, 0, "autocast", True), ckpt, args, size_args, device)
            save()
    save()
    print(f"  -> {out}")
    return result


def add_row(result: dict, flops: dict, spec: tuple, ckpt: Path, args, size_args: list[str], device) -> None:
    method, stage, mode, comp = spec
    row = run_engine(method, ckpt, args.batch, args.iters, stage, mode, comp, size_args, device)
    row["tflops"] = flops[method] / row["seconds_per_iter"] / 1e12
    if device.type == "cuda":
        row["fraction_of_bf16_peak"] = row["tflops"] / H200_BF16_PEAK_TFLOPS
    result["rows"].append(row)
    print(f"  {method:4s} zero {stage} {mode:8s} compile={comp!s:5s}: {row['seconds_per_iter']:.4f} s/iter "
          f"{row['samples_per_s']:8.1f} samples/s {row['tflops']:7.2f} TFLOP/s peak {row['peak_memory_gib']:.1f} GiB")


def max_batches(rows: list[dict], ckpt: Path, args, size_args: list[str], device, save) -> dict:
    """Per ZeRO stage: a second batch size gives the memory line, its capacity crossing is then tried."""
    capacity = torch.cuda.get_device_properties(device).total_memory / 2 ** 30 * 0.95
    found = {}
    for stage in [int(s) for s in args.stages.split(",")]:
        rows.append(run_engine("dimo", ckpt, 2 * args.batch, 2, stage, "autocast", False, size_args, device))
        guess = largest_batch(rows, stage, capacity)
        entry = {"estimate": guess, "capacity_gib": capacity}
        try:
            fit = run_engine("dimo", ckpt, guess, 1, stage, "autocast", False, size_args, device)
            entry.update(checked=True, peak_memory_gib=fit["peak_memory_gib"], seconds_per_iter=fit["seconds_per_iter"])
        except torch.cuda.OutOfMemoryError:
            entry.update(checked=False)
            free_memory()
        found[f"zero{stage}"] = entry
        print(f"  largest Di[M]O batch, ZeRO {stage}: {entry}")
        save()
    return found


def analytic_flops(size_args: list[str], batch: int) -> dict:
    """The FLOP model of docs/performance.md: one MaskGit forward, and Di[M]O / MDM in forward-equivalents."""
    _, teacher = build_method(resolve(["method=dimo", "teacher=maskgit", *size_args]))
    arch = teacher.new_network()
    d, depth = arch.tok_emb.weight.shape[1], len(arch.transformer.layers)
    mlp = arch.transformer.layers[0][1].fn.net[0].out_features
    t, length, v = arch.seq_len + 1, arch.seq_len, arch.codebook_size
    per_token = depth * (4 * d * d + 2 * d * mlp) + 3 * d * d           # blocks, first and last layers
    forward = 2 * batch * (t * per_token + depth * 2 * t * t * d + length * d * v)
    # Di[M]O: generator fwd+bwd 3, teacher with CFG 2, aux fwd 1, fresh generator sample 1, aux fwd+bwd 3
    return {"forward": forward, "dimo": 10 * forward, "mdm": 3 * forward}


def _version(pkg: str) -> str:
    import importlib.metadata as md
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return "absent"


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"  ({time.time() - t0:.0f} s)")
