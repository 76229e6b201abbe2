"""Seconds per iteration and peak memory of Di[M]O and Soft-Di[M]O on MaskBit through the real engine
(core.engine.Trainer, the code path of ``python -m core.run``), at the released size with random weights.

Grid: method (dimo, soft_dimo) x batch (one process) x ZeRO stage. The random files have the released shapes
(LFQBert 305M, VQGAN+ tokenizer 55M, 14 bits); Soft-Di[M]O's GAN head reads random LFQ codes through
``teacher.data``.

    python -m plugins.teachers.maskbit.benchmark                                   # GPU: batches 32, 64; ZeRO 0, 2, 3
    python -m plugins.teachers.maskbit.benchmark --size tiny --batches 4 --stages 0 # CPU smoke run
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from benchmarks.engine_timing import Axis, teacher_benchmark
from core.config import resolve

TINY = ["teacher.bits=6", "teacher.resolution=64", "teacher.num_classes=10", "teacher.arch.dim=32",
        "teacher.arch.depth=2", "teacher.arch.heads=4", "teacher.arch.mlp_dim=64",
        "teacher.tokenizer_arch.hidden_channels=32", "teacher.tokenizer_arch.channel_mult=[1,1,1,1,1]",
        "teacher.tokenizer_arch.num_res_blocks=1"]


def random_files(folder: Path, size_args: list[str]) -> list[str]:
    """Random generator and tokenizer files in the released layout, and random codes as ``teacher.data``;
    returns the teacher arguments that point at them."""
    from core.engine import build_method
    _, teacher = build_method(resolve(["method=dimo", "teacher=maskbit", *size_args]))
    torch.manual_seed(0)
    bits = teacher.config.bits
    teacher.save_pretrained(teacher.new_network(), folder / f"maskbit_generator_{bits}bit.bin")
    from plugins.teachers.maskbit.tokenizer import ConvVQModel
    torch.save(ConvVQModel(teacher.config.tokenizer_arch, bits).state_dict(), folder / f"maskbit_tokenizer_{bits}bit.bin")
    g = torch.Generator().manual_seed(0)
    save_file({"tokens": torch.randint(0, 2 ** bits, (256, teacher.positions), generator=g),
               "labels": torch.randint(0, teacher.num_classes, (256,), generator=g)}, str(folder / "codes.safetensors"))
    return [f"teacher.checkpoint={folder}", f"teacher.tokenizer={folder}", f"teacher.data={folder / 'codes.safetensors'}"]


AXES = [Axis("batches", "batch", "32,64", help="batches (one process)"), Axis("stages", "zero_stage", "0,2,3")]


def prepare(size: str, folder: Path) -> list[str]:
    size_args = TINY if size == "tiny" else []
    return size_args + random_files(folder, size_args)


def grid_point(batch: int, zero_stage: int) -> list[str]:
    return [f"trainer.batch_size={batch}", f"trainer.zero_stage={zero_stage}"]


def main(argv=None) -> dict:
    return teacher_benchmark(argv, teacher="maskbit", doc=__doc__, axes=AXES, prepare=prepare, overrides=grid_point)


if __name__ == "__main__":
    main()
