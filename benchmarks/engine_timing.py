"""Timing training through the real engine (``core.engine.Trainer``, the code path of ``python -m core.run``):
one measurement, and a grid of them written to JSON as it goes. Shared by ``benchmarks.engine_iteration`` and
the teachers' own benchmarks (``plugins/teachers/*/benchmark.py``)."""
from __future__ import annotations

import gc
import json
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from benchmarks.memory import PeakMemory
from benchmarks.results import device_name
from core.config import resolve
from core.engine import Trainer


class RandomDataTrainer(Trainer):
    """The real engine; methods that read data (MDM, Soft-Di[M]O's GAN head) get random tokens, since no real
    data set is on the benchmark machine."""

    def _dataset(self):
        n, g = 4 * self.tcfg.batch_size, torch.Generator().manual_seed(0)
        return (torch.randint(0, self.teacher.vocab_size, (n, self.teacher.seq_len), generator=g),
                torch.randint(0, self.teacher.num_classes, (n,), generator=g))


def pick_device(preference: str) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda``: CUDA when asked for (or auto) and present."""
    return torch.device("cuda" if preference != "cpu" and torch.cuda.is_available() else "cpu")


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def time_training(overrides: list[str], iters: int, device: torch.device, trainer_cls=RandomDataTrainer,
                  inspect: Optional[Callable] = None) -> dict:
    """Trains ``2 * iters`` steps from ``overrides`` (method, teacher, batch, stage, ...): the first window warms
    up (allocator, kernels, compilation), the second is measured. ``inspect(trainer)`` adds fields to the row."""
    with tempfile.TemporaryDirectory(prefix="dimo-bench-") as out:
        cfg = resolve([*overrides, f"trainer.steps={2 * iters}", f"trainer.log_every={iters}",
                       f"trainer.device={device.type}", "trainer.wandb=disabled", "trainer.progress=false",
                       "eval.enabled=false", f"trainer.output_dir={out}", "trainer.resume=never"])
        t0 = time.perf_counter()
        with PeakMemory(device) as mem:
            trainer = trainer_cls(cfg)
            result = trainer.train()
        rate = result.history[-1]["samples_per_s"]
        row = {"seconds_per_iter": cfg["trainer"]["batch_size"] / rate, "samples_per_s": rate,
               "peak_memory_gib": mem.peak / 2 ** 30, "wall_s": time.perf_counter() - t0,
               **(inspect(trainer) if inspect else {})}
        del trainer, result
    free_memory()
    return row


def new_result(device: torch.device, **fields) -> dict:
    return {"device": device_name(device), "torch": torch.__version__, **fields, "rows": []}


def run_grid(specs: list[dict], measure: Callable[..., dict], result: dict, out: Path) -> dict:
    """``measure(**spec)`` for each spec; a row is the spec and its figures, or the spec and the out-of-memory
    error (the grid goes on). The JSON is rewritten after every row, so an interrupted grid keeps its rows."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        try:
            row = {**spec, **measure(**spec)}
        except torch.cuda.OutOfMemoryError as exc:
            row = {**spec, "error": f"out of memory: {str(exc)[:200]}"}
            free_memory()
        print(json.dumps(row))
        result["rows"].append(row)
        out.write_text(json.dumps(result, indent=1))
    print(f"-> {out}")
    return result


def csv_ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def csv_bools(text: str) -> list[bool]:
    return [v.strip().lower() == "true" for v in text.split(",")]
