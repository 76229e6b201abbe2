"""Seconds per iteration and peak memory of Di[M]O and Soft-Di[M]O on Meissonic through the real engine
(core.engine.Trainer, the code path of ``python -m core.run``), at real size with random weights.

The grid (issue 14): method (dimo, soft_dimo) x micro-batch (2, 8) x gradient checkpointing (on, off) x ZeRO stage
(2, 3), one process. The random-weight folder has the released transformer shape (1.007B parameters, 64 x 64
tokens at 1024 px), a VQModel with the released 16x downsampling (small channels: nothing is decoded during
Di[M]O training) and a one-layer CLIP text tower with the released output widths (its outputs are cached per prompt,
so its depth does not enter the iteration). Soft-Di[M]O runs with its GAN head (a trunk copy of the network) on
random real tokens and without rewards (HPS/CLIP need their released weights).

    python -m plugins.teachers.meissonic.benchmark                       # GPU: the full grid
    python -m plugins.teachers.meissonic.benchmark --size tiny --batches 2 --stages 2 --methods dimo   # CPU smoke
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from benchmarks.engine_timing import csv_bools, csv_ints, new_result, pick_device, run_grid, time_training

TINY = dict(num_layers=1, num_single_layers=2, attention_head_dim=8, num_attention_heads=2, joint_attention_dim=12,
            pooled_projection_dim=16, axes_dims_rope=(2, 2, 4), vocab_size=40, codebook_size=32)
REAL = dict(num_layers=14, num_single_layers=28, attention_head_dim=128, num_attention_heads=8,
            joint_attention_dim=1024, pooled_projection_dim=1024, axes_dims_rope=(16, 56, 56), vocab_size=8256,
            codebook_size=8192)


def char_tokenizer(max_length: int = 77):
    """A local CLIP BPE vocabulary without merges (one token per character): no download."""
    from transformers import CLIPTokenizer
    chars = [chr(c) for c in range(33, 127)]
    vocab = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=[], model_max_length=max_length)


def random_folder(folder: Path, size: str) -> tuple[Path, int]:
    """A Meissonic folder with random weights; returns it and the resolution of its token grid."""
    from diffusers import VQModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection
    from plugins.teachers.meissonic.transformer import MeissonicTransformer
    torch.manual_seed(0)
    arch = REAL if size == "real" else TINY
    net = MeissonicTransformer(**arch)
    net.save_pretrained(folder / "transformer", safe_serialization=True)
    levels = 5 if size == "real" else 1
    VQModel(block_out_channels=[8] * levels, down_block_types=["DownEncoderBlock2D"] * levels,
            up_block_types=["UpDecoderBlock2D"] * levels, latent_channels=8, layers_per_block=1, norm_num_groups=8,
            num_vq_embeddings=arch["codebook_size"], mid_block_add_attention=False,
            lookup_from_codebook=True).save_pretrained(folder / "vqvae")
    tok = char_tokenizer()
    CLIPTextModelWithProjection(CLIPTextConfig(
        hidden_size=arch["joint_attention_dim"], intermediate_size=4 * arch["joint_attention_dim"],
        projection_dim=arch["pooled_projection_dim"], num_hidden_layers=2, num_attention_heads=2,
        vocab_size=len(tok), max_position_embeddings=77, bos_token_id=len(tok) - 2, eos_token_id=len(tok) - 1,
        pad_token_id=len(tok) - 1)).save_pretrained(folder / "text_encoder")
    tok.save_pretrained(folder / "tokenizer")
    return folder, 1024 if size == "real" else 8


def measure(folder: Path, resolution: int, method: str, batch: int, checkpointing: bool, stage: int, iters: int,
            device: str) -> dict:
    extra = ["method.rewards=[]", "method.w_gan=1.0", "discriminator=trunk"] if method == "soft_dimo" else []
    return time_training([f"method={method}", "teacher=meissonic", f"teacher.checkpoint={folder}",
                          f"teacher.resolution={resolution}", f"teacher.gradient_checkpointing={checkpointing}",
                          f"trainer.batch_size={batch}", "trainer.grad_accum=1", f"trainer.zero_stage={stage}",
                          *extra], iters,
                         torch.device(device))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("real", "tiny"), default="real")
    parser.add_argument("--methods", default="dimo,soft_dimo")
    parser.add_argument("--batches", default="2,8", help="micro-batches (one process: the batch)")
    parser.add_argument("--checkpointing", default="true,false")
    parser.add_argument("--stages", default="2,3", help="ZeRO stages")
    parser.add_argument("--iters", type=int, default=3, help="measured iterations (as many again warm up)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--out", default=None, help="JSON of the rows (default: meissonic_iteration_<device>.json)")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    folder, resolution = random_folder(Path(tempfile.mkdtemp(prefix="dimo-meissonic-random-")), args.size)
    specs = [{"method": m, "micro_batch": b, "gradient_checkpointing": c, "zero_stage": z}
             for m in args.methods.split(",") for b in csv_ints(args.batches)
             for c in csv_bools(args.checkpointing) for z in csv_ints(args.stages)]
    measure_spec = lambda method, micro_batch, gradient_checkpointing, zero_stage: measure(
        folder, resolution, method, micro_batch, gradient_checkpointing, zero_stage, args.iters, device.type)
    return run_grid(specs, measure_spec, new_result(device, size=args.size),
                    Path(args.out or f"meissonic_iteration_{device.type}.json"))


if __name__ == "__main__":
    main()
