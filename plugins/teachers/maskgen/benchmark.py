"""Seconds per iteration and peak memory of Di[M]O and Soft-Di[M]O on MaskGen through the real engine
(core.engine.Trainer, the code path of ``python -m core.run``), at the released size with random weights.

Grid (issue 13): method (dimo, soft_dimo) x micro-batch (2, the recipe's micro-batch, and 8) x ZeRO stage (2, 3),
one process. ``--size l|xl`` writes a generator folder in the released layout (the official config.json fields
and state-dict keys, MaskGen-L: 1024 wide, 16 blocks; XL: 1280, 20; 128 tokens x 8192 codes) and an open_clip
text tower of the released width with one layer and random weights (its outputs are cached per prompt, so its
depth does not enter the iteration). The TA-TiTok decoder is given by its shape only: nothing is decoded during
training. Soft-Di[M]O runs its GAN head (a trunk copy of the network) on random tokens and no rewards (HPS/CLIP
need their released weights).

    python -m plugins.teachers.maskgen.benchmark --size l       # GPU: the full grid for MaskGen-L (then --size xl)
    python -m plugins.teachers.maskgen.benchmark --size tiny --batches 2 --stages 0 --methods dimo   # CPU smoke run
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from benchmarks.engine_timing import (MICRO_BATCHES, SOFT_DIMO_GAN_ONLY, ZERO_STAGES, micro_batch_point,
                                       teacher_benchmark)
from plugins.teachers.maskgen.network import SIZES, MaskGenArch, MaskGenNetwork

TINY = MaskGenArch(dim=32, depth=2, heads=2, seq_len=8, codebook_size=16, text_dim=16, micro_dim=8)
TINY_TOKENIZER = {"width": 16, "layers": 1, "heads": 2, "image_size": 16, "patch": 8, "latent_tokens": 8,
                  "token_size": 4, "codebook_size": 16, "text_dim": 16, "enc_width": 16, "enc_layers": 1,
                  "enc_heads": 2, "enc_patch": 8}


def official_config(arch: MaskGenArch, crop: int) -> dict:
    """The fields of the released config.json (an OmegaConf dump) that MaskGenArch.from_official reads."""
    return {"model": {"vq_model": {"quantize_mode": "vq", "codebook_size": arch.codebook_size,
                                   "num_latent_tokens": arch.seq_len, "text_embed_dim": arch.text_dim,
                                   "is_legacy": False},
                      "maskgen": {"decoder_embed_dim": arch.dim, "decoder_depth": arch.depth,
                                  "decoder_num_heads": arch.heads, "micro_condition": True,
                                  "micro_condition_embed_dim": arch.micro_dim,
                                  "condition_num_classes": arch.num_classes}},
            "dataset": {"preprocessing": {"crop_size": crop}}}


def prepare(size: str, folder: Path) -> list[str]:
    """A generator folder and a one-layer open_clip text config with random weights; returns the teacher
    arguments that point at them."""
    torch.manual_seed(0)
    tiny = size == "tiny"
    arch = TINY if tiny else SIZES[size]
    config = official_config(arch, crop=16 if tiny else 256)
    generator = folder / "generator"
    generator.mkdir(parents=True)
    (generator / "config.json").write_text(json.dumps(config, indent=1))
    state = {k: v.contiguous() for k, v in MaskGenNetwork(arch).state_dict().items()}
    state["lm_head.weight"] = state["embeddings.weight"].clone()   # the released tied-head key
    save_file(state, str(generator / "model.safetensors"))
    clip = folder / "dimo-bench-clip.json"   # open_clip names the model after the file
    clip.write_text(json.dumps({"embed_dim": arch.text_dim,
                                "vision_cfg": {"image_size": 16, "layers": 1, "width": 8, "head_width": 4,
                                               "patch_size": 8},
                                "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": arch.text_dim,
                                             "heads": 2, "layers": 1}}))
    tokenizer = TINY_TOKENIZER if tiny else {"image_size": 256}   # the released TA-TiTok shape otherwise
    return [f"teacher.checkpoint={generator}", f"teacher.clip_arch={clip}", "teacher.clip_pretrained=null",
            f"teacher.tokenizer={folder / 'no-tokenizer'}",
            *(f"teacher.tokenizer_arch.{k}={v}" for k, v in tokenizer.items())]


def main(argv=None) -> dict:
    return teacher_benchmark(argv, teacher="maskgen", doc=__doc__, axes=[MICRO_BATCHES, ZERO_STAGES], prepare=prepare,
                             overrides=micro_batch_point, soft_dimo=SOFT_DIMO_GAN_ONLY, sizes=("l", "xl", "tiny"))


if __name__ == "__main__":
    main()
