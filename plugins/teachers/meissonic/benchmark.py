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

from pathlib import Path

import torch

from benchmarks.engine_timing import (MICRO_BATCHES, SOFT_DIMO_GAN_ONLY, ZERO_STAGES, Axis, csv_bools,
                                       micro_batch_point, teacher_benchmark)

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


AXES = [MICRO_BATCHES, Axis("checkpointing", "gradient_checkpointing", "true,false", csv_bools), ZERO_STAGES]


def prepare(size: str, folder: Path) -> list[str]:
    folder, resolution = random_folder(folder, size)
    return [f"teacher.checkpoint={folder}", f"teacher.resolution={resolution}"]


def grid_point(micro_batch: int, gradient_checkpointing: bool, zero_stage: int) -> list[str]:
    return [f"teacher.gradient_checkpointing={gradient_checkpointing}", *micro_batch_point(micro_batch, zero_stage)]


def main(argv=None) -> dict:
    return teacher_benchmark(argv, teacher="meissonic", doc=__doc__, axes=AXES, prepare=prepare,
                             overrides=grid_point, soft_dimo=SOFT_DIMO_GAN_ONLY)


if __name__ == "__main__":
    main()
