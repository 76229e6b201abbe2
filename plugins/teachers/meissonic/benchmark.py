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
import gc
import json
import tempfile
import time
from pathlib import Path

import torch

from core.config import resolve
from core.engine import Trainer

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


class RandomTokenTrainer(Trainer):
    """The real engine; Soft-Di[M]O's GAN head gets random real tokens (no data set on this machine)."""

    def _dataset(self):
        n, g = 4 * self.tcfg["batch_size"], torch.Generator().manual_seed(0)
        return (torch.randint(0, self.teacher.vocab_size, (n, self.teacher.seq_len), generator=g),
                torch.randint(0, self.teacher.num_classes, (n,), generator=g))


def measure(folder: Path, resolution: int, method: str, batch: int, checkpointing: bool, stage: int, iters: int,
            device: str) -> dict:
    steps = 2 * iters   # the first window warms up (allocator, kernels); the second is measured
    extra = ["method.rewards=[]", "method.w_gan=1.0", "discriminator=trunk"] if method == "soft_dimo" else []
    with tempfile.TemporaryDirectory(prefix="dimo-meissonic-bench-") as out:
        cfg = resolve([f"method={method}", "teacher=meissonic", f"teacher.checkpoint={folder}",
                       f"teacher.resolution={resolution}", f"teacher.gradient_checkpointing={checkpointing}",
                       f"trainer.batch_size={batch}", f"trainer.steps={steps}", f"trainer.log_every={iters}",
                       f"trainer.zero_stage={stage}", f"trainer.device={device}", "trainer.wandb=disabled",
                       "trainer.progress=false", "eval.enabled=false", f"trainer.output_dir={out}",
                       "trainer.resume=never", *extra])
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        result = RandomTokenTrainer(cfg).train()
        rate = result.history[-1]["samples_per_s"]
        peak = torch.cuda.max_memory_allocated() / 2 ** 30 if torch.cuda.is_available() else None
        row = {"method": method, "micro_batch": batch, "gradient_checkpointing": checkpointing, "zero_stage": stage,
               "seconds_per_iter": batch / rate, "peak_memory_gib": peak, "wall_s": time.perf_counter() - t0}
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    print(json.dumps(row))
    return row


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
    device = "cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu"
    out = Path(args.out or f"meissonic_iteration_{device}.json")
    folder, resolution = random_folder(Path(tempfile.mkdtemp(prefix="dimo-meissonic-random-")), args.size)
    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "size": args.size,
              "torch": torch.__version__, "rows": []}
    for method in args.methods.split(","):
        for batch in map(int, args.batches.split(",")):
            for ckpt in (v.strip() == "true" for v in args.checkpointing.split(",")):
                for stage in map(int, args.stages.split(",")):
                    try:
                        result["rows"].append(measure(folder, resolution, method, batch, ckpt, stage, args.iters,
                                                      device))
                    except torch.cuda.OutOfMemoryError as exc:
                        result["rows"].append({"method": method, "micro_batch": batch, "gradient_checkpointing": ckpt,
                                               "zero_stage": stage, "error": f"out of memory: {str(exc)[:200]}"})
                        gc.collect()
                        torch.cuda.empty_cache()
                    out.write_text(json.dumps(result, indent=1))
    print(f"-> {out}")
    return result


if __name__ == "__main__":
    main()
