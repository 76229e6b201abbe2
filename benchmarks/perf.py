"""Performance measurements of benchmark entries, each in a fresh process (clean peak memory, no shared
allocator): a few training iterations (median seconds per iteration, peak memory) against plain MDM's, and
sampling throughput of the student against the teacher's k-step sampling (``measure_entry``)."""
from __future__ import annotations

import copy
import multiprocessing as mp
import os
import statistics
import time
from typing import Callable

import torch

from benchmarks import results
from benchmarks.memory import PeakMemory

PERF_HIGHER = {"iter_seconds": False, "iter_cost_vs_mdm": False, "peak_memory_mb": False,
               "samples_per_s": True, "throughput_vs_teacher": True}


def best_throughput(fn: Callable, teacher, batch: int, repeats: int) -> tuple[float, torch.Tensor]:
    """Samples per second of one ``batch`` (best of ``repeats``), and the tokens of the first repeat."""
    cond = torch.arange(batch) % teacher.num_classes
    best, first = float("inf"), None
    for r in range(repeats):
        g = torch.Generator().manual_seed(r)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad():
            out = fn(cond, g)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
        first = out.cpu() if first is None else first
    return batch / best, first


def _perf_child(resolved: dict, perf: dict, sampler_cfg: dict, steps: int, queue) -> None:
    """In a fresh process: train ``warmup + iters`` steps of ``resolved`` (a run config's JSON view, which a
    spawned process re-resolves: plugin classes need not pickle), time them, then time sampling."""
    import tempfile
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):   # the parent's group
        os.environ.pop(k, None)
    try:
        from core.config import resolve_dict
        from core.engine import Trainer
        from core.export import load_student
        from registry.registry import build
        with tempfile.TemporaryDirectory(prefix="dimo-perf-") as tmp:
            cfg = resolve_dict({**resolved, "trainer": {**resolved["trainer"], "output_dir": tmp}})
            device = torch.device("cuda" if torch.cuda.is_available() and cfg.trainer.device != "cpu" else "cpu")
            with PeakMemory(device) as mem:
                result = Trainer(cfg).train()
            rates = [h["samples_per_s"] for h in result.history][perf["warmup"]:]
            iter_seconds = statistics.median(cfg.trainer.batch_size / r for r in rates)
            method, teacher, student, _ = load_student(tmp)
            student.to(device)
            teacher_net = teacher.build_network(load_weights=True).to(device).eval()
            sampler = build("sampler", sampler_cfg["name"], {k: v for k, v in sampler_cfg.items() if k != "name"})
            k_teacher = perf["teacher_steps"]
            if method.needs_teacher_weights:
                student_fn = lambda c, g: method.generate(student, c.to(device), g, steps=steps)
            else:   # mdm: its network sampled like the teacher
                student_fn = lambda c, g: sampler.sample(student, teacher, c, steps, g)
            teacher_fn = lambda c, g: sampler.sample(teacher_net, teacher, c, k_teacher, g)
            s_rate, tokens = best_throughput(student_fn, teacher, perf["sample_batch"], perf["repeats"])
            t_rate, _ = best_throughput(teacher_fn, teacher, perf["sample_batch"], perf["repeats"])
        queue.put({"iter_seconds": iter_seconds, "peak_memory_mb": mem.mb, "samples_per_s": s_rate,
                   "teacher_samples_per_s": t_rate, "tokens": tokens.tolist(), "device": results.device_name(device),
                   "train_seconds": result.seconds})
    except BaseException as exc:   # report, never hang the parent
        import traceback
        queue.put({"error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"})


def baseline_config(resolved: dict) -> dict:
    """A plain MDM step on the same teacher network and batch, fine-tuning the teacher: the cost baseline."""
    from core.config import resolve_dict
    trainer = {k: resolved["trainer"][k] for k in ("seed", "batch_size", "grad_accum", "steps", "log_every", "wandb",
                                                    "progress", "precision", "device")}
    return resolve_dict({"method": {"name": "mdm", "init_from_teacher": True, "cache_teacher": False},
                         "teacher": copy.deepcopy(resolved["teacher"]), "trainer": trainer, "eval": {"enabled": False}})


def measure_entry(resolved: dict, perf: dict, sampler_cfg: dict, steps: int) -> tuple[dict, dict]:
    """The method's iteration time and peak memory against MDM's, and its sampling throughput against the
    teacher's ``perf["teacher_steps"]``-step sampling. Returns the config measured (MDM's row measures the
    baseline itself) and the fields of its result record (``device``: the device's name)."""
    from core.config import config_hash
    base_cfg = baseline_config(resolved)
    is_mdm = resolved["method"]["name"] == "mdm"
    if is_mdm:   # the baseline's own row: the same fine-tuning step
        resolved = base_cfg
    base = measure_in_child(base_cfg, perf, sampler_cfg, perf["teacher_steps"])
    own = base if is_mdm else measure_in_child(resolved, perf, sampler_cfg, steps)
    metrics = {"iter_seconds": own["iter_seconds"], "iter_cost_vs_mdm": own["iter_seconds"] / base["iter_seconds"],
               "peak_memory_mb": own["peak_memory_mb"], "samples_per_s": own["samples_per_s"],
               "throughput_vs_teacher": own["samples_per_s"] / own["teacher_samples_per_s"]}
    return resolved, {"device": own["device"], "train_config_hash": config_hash(resolved),
                      "train_time_s": own["train_seconds"], "num_samples": perf["sample_batch"], "metrics": metrics,
                      "spread": {k: 0.0 for k in metrics}, "per_seed": [metrics],
                      "higher_is_better": {k: PERF_HIGHER[k] for k in metrics},
                      "sample_hash": results.tokens_hash([torch.tensor(own["tokens"])])}


def measure_in_child(resolved: dict, perf: dict, sampler_cfg: dict, steps: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_perf_child, args=(dict(resolved), perf, sampler_cfg, steps, queue))
    proc.start()
    out = queue.get()
    proc.join()
    if "error" in out:
        raise RuntimeError(f"performance measurement failed: {out['error']}")
    return out
