"""Seconds per iteration and peak memory of Di[M]O and Soft-Di[M]O on aMUSEd through the real engine
(core.engine.Trainer, the code path of ``python -m core.run``), at the released size with random weights.

Grid (issue 13): method (dimo, soft_dimo) x micro-batch (2, the recipe's micro-batch, and 8) x ZeRO stage (2, 3),
one process. ``--size 256|512`` picks the released transformer (``UVit2DModel`` at its defaults, the aMUSEd
configuration: 1024 wide, 22 layers; 16 x 16 tokens at 256 px, 32 x 32 at 512 px, where the 512 model down- and
up-samples around its transformer: ``force_down_up_sample`` of diffusers' ``convert_amused.py``). The VQModel
has the released 16x downsampling with small channels (nothing is decoded during training), the CLIP text tower
the released widths and one layer (its outputs are cached per prompt). Soft-Di[M]O runs its GAN head (a trunk
copy of the network) on random tokens and no rewards (HPS/CLIP need their released weights).

    python -m plugins.teachers.amused.benchmark --size 256        # GPU: the full grid at 256 px (then --size 512)
    python -m plugins.teachers.amused.benchmark --size tiny --batches 2 --stages 0 --methods dimo   # CPU smoke run
"""
from __future__ import annotations

from pathlib import Path

from benchmarks.engine_timing import (MICRO_BATCHES, SOFT_DIMO_GAN_ONLY, ZERO_STAGES, micro_batch_point,
                                       teacher_benchmark)

TINY = dict(hidden_size=8, cond_embed_dim=8, micro_cond_encode_dim=2, micro_cond_embed_dim=10, encoder_hidden_size=8,
            vocab_size=40, codebook_size=32, in_channels=8, block_out_channels=8, num_res_blocks=1,
            block_num_heads=1, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8)
SIDES = {"256": 16, "512": 32, "tiny": 4}


def random_folder(folder: Path, size: str) -> Path:
    """An aMUSEd folder (transformer/, vqvae/, text_encoder/, tokenizer/, scheduler/) with random weights."""
    import torch
    from diffusers import AmusedScheduler, UVit2DModel, VQModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection
    from plugins.teachers.meissonic.benchmark import char_tokenizer
    torch.manual_seed(0)
    side = SIDES[size]
    arch = TINY if size == "tiny" else {}
    resample = size == "512"
    transformer = UVit2DModel(sample_size=side, downsample=resample, upsample=resample, **arch)
    transformer.save_pretrained(folder / "transformer")
    config = transformer.config
    levels = 2 if size == "tiny" else 5   # 2x, or the released 16x
    VQModel(block_out_channels=[8] * levels, down_block_types=["DownEncoderBlock2D"] * levels,
            up_block_types=["UpDecoderBlock2D"] * levels, latent_channels=8, layers_per_block=1, norm_num_groups=8,
            num_vq_embeddings=config.codebook_size, mid_block_add_attention=False,
            lookup_from_codebook=True).save_pretrained(folder / "vqvae")
    tok = char_tokenizer()
    CLIPTextModelWithProjection(CLIPTextConfig(
        hidden_size=config.encoder_hidden_size, intermediate_size=4 * config.encoder_hidden_size,
        projection_dim=config.cond_embed_dim, num_hidden_layers=1, num_attention_heads=2, vocab_size=len(tok),
        max_position_embeddings=77, bos_token_id=len(tok) - 2, eos_token_id=len(tok) - 1,
        pad_token_id=len(tok) - 1)).save_pretrained(folder / "text_encoder")
    tok.save_pretrained(folder / "tokenizer")
    AmusedScheduler(mask_token_id=config.vocab_size - 1).save_pretrained(folder / "scheduler")
    return folder


def prepare(size: str, folder: Path) -> list[str]:
    return [f"teacher.checkpoint={random_folder(folder, size)}"]


def main(argv=None) -> dict:
    return teacher_benchmark(argv, teacher="amused", doc=__doc__, axes=[MICRO_BATCHES, ZERO_STAGES], prepare=prepare,
                             overrides=micro_batch_point, soft_dimo=SOFT_DIMO_GAN_ONLY, sizes=("256", "512", "tiny"))


if __name__ == "__main__":
    main()
