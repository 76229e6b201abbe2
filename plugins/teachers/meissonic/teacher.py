"""The ``meissonic`` teacher: Meissonic (Bai et al. 2024), the 1B text-to-image masked model at 1024 px that the
Di[M]O paper distils (Table 3), with its diffusers ``VQModel`` and CLIP-ViT-H/14 text tower.

Files (hub ``MeissonFlow/Meissonic``, or the same layout in a local folder)::

    transformer/config.json, diffusion_pytorch_model.safetensors   Transformer2DModel (transformer.py), ~1B
    vqvae/config.json, diffusion_pytorch_model.safetensors         VQModel, 8192 codes, f16
    text_encoder/ (CLIPTextModelWithProjection, 1024-d), tokenizer/ (CLIPTokenizer)

Token grid: (resolution/16)^2 tokens (64 x 64 = 4096 at 1024 px; the transformer sees 32 x 32 after its 2x
down-block), V = ``codebook_size`` (8192) real codes, [M] = ``vocab_size - 1`` (8255). Conditions are prompt indices
into the prompt set (plugins/prompts.py, shared with aMUSEd and MaskGen): CLIP's penultimate hidden states (77 x
1024) and projected ``text_embeds`` (1024), the micro-conditions ``[W, H, crop_y, crop_x, aesthetic]`` and a
timestep. CFG ``u + w (c - u)`` with the negative prompt of Meissonic's inference script as u (the official Di[M]O
code distils against it: "teacher has much better performance with negative prompt").

Everything after the network (text conditioning, VQ decode and soft decode, encode, captions) is the aMUSEd
teacher's: the two families share the UVit2D token space and the diffusers VQModel.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from pydantic import Field
from torch import Tensor

from core.errors import UserError
from plugins.inits import vp_noise
from plugins.prompts import TextConditioner, load_prompts
from plugins.teachers.amused.loading import diffusers_model, save_diffusers_model, weights_name
from plugins.teachers.amused.teacher import AmusedConfig, AmusedTeacher, ConvEmbeddingParts
from plugins.teachers.maskgit.loading import locate
from plugins.teachers.meissonic.transformer import MeissonicTransformer

HUB_ID = "MeissonFlow/Meissonic"
# Meissonic's inference.py default negative prompt (and the official Di[M]O distillation's unconditional branch).
NEGATIVE_PROMPT = ("worst quality, low quality, low res, blurry, distortion, watermark, logo, signature, text, jpeg "
                   "artifacts, signature, sketch, duplicate, ugly, identifying mark")


class MeissonicNetwork(ConvEmbeddingParts, MeissonicTransformer):
    """``MeissonicTransformer`` with dimo's MaskedNetwork protocol: ``forward(tokens [B, L], cond [B]) -> [B, L, V]``.
    The teacher sets ``text`` (the shared prompt conditioner), ``side``, ``micro`` and ``timestep`` after building."""
    text: Optional[TextConditioner] = None
    side: int = 64
    micro: tuple = (1024, 1024, 0, 0, 6.0)
    timestep: float = 0.0

    def forward(self, tokens: Optional[Tensor], cond: Tensor, *, noise_sigma: float = 0.0,
                inputs_embeds: Optional[Tensor] = None, timestep: Optional[float] = None) -> Tensor:
        """``inputs_embeds [B, L, D]`` replaces the table lookup (before ``embed``'s RMSNorm and conv);
        ``noise_sigma`` perturbs the output of ``embed`` (official ``noise_emb_perturb``); ``timestep`` defaults to
        the network's (0, as the official Di[M]O code); the pipeline sampler passes its step index."""
        emb = self.embed_tokens(tokens) if inputs_embeds is None else inputs_embeds
        b, side = cond.shape[0], self.side
        if emb.shape[1] != side * side:
            raise ValueError(f"expected {side * side} tokens ({side} x {side}), got {emb.shape[1]}")
        x = self.embed.layer_norm(emb.reshape(b, side, side, -1).to(self.embed.embeddings.weight.dtype))
        x = vp_noise(self.embed.conv(x.permute(0, 3, 1, 2)), noise_sigma)
        out = self.text(cond.to(x.device))
        hidden, pooled = out["hidden"].to(x.dtype), out["pooled"].to(x.dtype)
        micro = torch.tensor(self.micro, device=x.device, dtype=hidden.dtype).expand(b, -1)
        t = torch.full((b,), self.timestep if timestep is None else float(timestep), device=x.device)
        logits = self.transformer(x, hidden, pooled, t, micro)
        return logits.flatten(2).transpose(1, 2)   # [B, V, H, W] -> [B, L, V], row-major like the token grid


class MeissonicConfig(AmusedConfig):
    checkpoint: str = Field(HUB_ID, description="Meissonic folder or hub id with transformer/, vqvae/, text_encoder/, "
                                                "tokenizer/")
    resolution: int = Field(1024, gt=0, description="image size; tokens (resolution/16)^2 with the released 16x VQ "
                                                    "(released: 1024)")
    timestep: float = Field(0.0, description="timestep input of the distilled networks (x1000 inside): the official "
                                             "Di[M]O code passes 0")
    gradient_checkpointing: bool = Field(True, description="recompute each block in the backward pass (generator, "
                                                           "aux; the official Di[M]O run uses it)")


class MeissonicTeacher(AmusedTeacher):
    Config = MeissonicConfig
    recipe = "meissonic"   # plugins/recipes/meissonic/*.yaml (subclasses inherit them)

    def __init__(self, config: MeissonicConfig):
        super().__init__(config)
        if config.prompts.negative is None:
            self.prompt_set = load_prompts(config.prompts, default_negative=NEGATIVE_PROMPT)
        scale = self.image_shape[1] // self.side   # the VQ's downsampling (16 for the released VQModel)
        down = 2 if self.transformer_config.get("downsample", True) else 1
        if config.resolution % (scale * down):
            raise UserError(f"teacher.resolution={config.resolution} must be a multiple of {scale * down} (the VQ's "
                            f"{scale}x downsampling, then the transformer's {down}x down-block); released: 1024")
        self.side = config.resolution // scale
        self.seq_len = self.side * self.side
        self.image_shape = (3, config.resolution, config.resolution)

    def checkpoint_path(self) -> Path:
        """The transformer weights (hashed into benchmark provenance; a UserError when not available)."""
        name = weights_name("diffusion_pytorch_model.safetensors", self.config.variant)
        return locate(self.config.checkpoint, f"transformer/{name}", "teacher.checkpoint")

    def build_network(self, load_weights: bool = True) -> MeissonicNetwork:
        net = diffusers_model(MeissonicNetwork, self.config.checkpoint, "transformer", "teacher.checkpoint",
                              self.config.variant, load_weights=load_weights).float()
        net.text, net.side, net.timestep = self.text_conditioner(), self.side, self.config.timestep
        net.micro = (self.config.resolution, self.config.resolution, *self.config.crop_coord,
                     self.config.aesthetic_score)
        net.gradient_checkpointing = self.config.gradient_checkpointing
        return net

    def save_pretrained(self, network, path) -> Path:
        """The released ``transformer/`` layout (config.json naming Meissonic's Transformer2DModel + safetensors)."""
        return save_diffusers_model(network, path, "Transformer2DModel")
