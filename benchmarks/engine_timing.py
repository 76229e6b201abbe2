"""Timing training through the real engine (``core.engine.Trainer``, the code path of ``python -m core.run``):
one measurement, and a grid of them written to JSON as it goes. Shared by ``benchmarks.engine_iteration`` and
the teachers' own benchmarks (``plugins/teachers/*/benchmark.py``)."""
from __future__ import annotations

import argparse
import gc
import itertools
import json
import tempfile
import time
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Axis:
    """One axis of a teacher benchmark's grid: its comma-list option, the row field it fills, its default."""
    option: str
    key: str
    default: str
    parse: Callable[[str], list] = csv_ints
    help: str = ""


# The grid of the text-to-image teachers: the official micro-batch 2 (and 8) without accumulation, ZeRO 2 and 3
MICRO_BATCHES = Axis("batches", "micro_batch", "2,8", help="micro-batches (one process: the batch)")
ZERO_STAGES = Axis("stages", "zero_stage", "2,3", help="ZeRO stages")
# Soft-Di[M]O without the released reward weights: its GAN head (a trunk copy of the network) on random tokens
SOFT_DIMO_GAN_ONLY = ("method.rewards=[]", "method.w_gan=1.0", "discriminator=trunk")


def micro_batch_point(micro_batch: int, zero_stage: int) -> list[str]:
    """One point of the MICRO_BATCHES x ZERO_STAGES grid as overrides."""
    return [f"trainer.batch_size={micro_batch}", "trainer.grad_accum=1", f"trainer.zero_stage={zero_stage}"]


def teacher_benchmark(argv: Optional[list[str]], *, teacher: str, doc: str, axes: list[Axis],
                      prepare: Callable[[str, Path], list[str]], overrides: Callable[..., list[str]],
                      soft_dimo: tuple[str, ...] = (), sizes: tuple[str, ...] = ("real", "tiny")) -> dict:
    """The command line every teacher's iteration benchmark shares (plugins/teachers/*/benchmark.py): ``--size``
    (one of ``sizes``, the first by default), ``--methods``, one comma-list option per grid axis, ``--iters``,
    ``--device``, ``--out``.
    ``prepare(size, folder)`` writes random weights in the released layout and returns the teacher overrides that
    point at them; ``overrides(**point)`` gives one grid point's overrides; ``soft_dimo`` is added for that method
    (released reward weights are not on a benchmark machine)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--size", choices=sizes, default=sizes[0])
    parser.add_argument("--methods", default="dimo,soft_dimo")
    for axis in axes:
        parser.add_argument(f"--{axis.option}", default=axis.default, help=axis.help or f"{axis.key} values")
    parser.add_argument("--iters", type=int, default=3, help="measured iterations (as many again warm up)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--out", default=None, help=f"JSON of the rows (default: {teacher}_iteration_<device>.json)")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    teacher_args = prepare(args.size, Path(tempfile.mkdtemp(prefix=f"dimo-{teacher}-random-")))
    values = [axis.parse(getattr(args, axis.option)) for axis in axes]
    specs = [{"method": method, **{axis.key: v for axis, v in zip(axes, point)}}
             for method in args.methods.split(",") for point in itertools.product(*values)]

    def measure(method: str, **point) -> dict:
        extra = list(soft_dimo) if method == "soft_dimo" else []
        return time_training([f"method={method}", f"teacher={teacher}", *teacher_args, *overrides(**point), *extra],
                             args.iters, device)
    return run_grid(specs, measure, new_result(device, size=args.size),
                    Path(args.out or f"{teacher}_iteration_{device.type}.json"))
