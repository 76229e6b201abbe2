"""The ``amused`` teacher: aMUSEd 256/512 (Patil et al. 2024), the smallest released text-to-image masked
model, built entirely from diffusers (``UVit2DModel``, ``VQModel``, ``AmusedScheduler``) and the transformers
CLIP text tower (``CLIPTextModelWithProjection`` + ``CLIPTokenizer``).

Files (hub ``amused/amused-256`` or ``amused/amused-512``, or the same layout in a local folder)::

    transformer/config.json, diffusion_pytorch_model[.fp16].safetensors   UVit2DModel
    vqvae/config.json, diffusion_pytorch_model[.fp16].safetensors         VQModel, 8192 codes, f16
    text_encoder/ (CLIPTextModelWithProjection), tokenizer/ (CLIPTokenizer)

Token grid: ``sample_size^2`` tokens (16 x 16 at 256 px, 32 x 32 at 512 px), V = ``codebook_size`` (8192) real
codes, [M] = ``vocab_size - 1`` (8255). Conditions are prompt indices (plugins/prompts.py): the text encoder's
penultimate hidden states and projected ``text_embeds``, plus the micro-conditions ``[W, H, crop_y, crop_x,
aesthetic]`` of AmusedPipeline. CFG: ``u + w (c - u)`` with the empty prompt as u (AmusedPipeline).

Embedding noise and soft embeddings follow the official Di[M]O Meissonic code (same UVit2D embedding): the
embedding table feeds RMSNorm and a 1x1 conv (``embed``); ``inputs_embeds`` replaces the table lookup,
``noise_sigma`` perturbs the output of ``embed``; ``embed`` and the output head ``mlm_layer`` stay frozen.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from diffusers import UVit2DModel, VQModel
from pydantic import Field
from torch import Tensor

from core.errors import UserError
from core.interfaces import Teacher
from plugins.inits import vp_noise
from plugins.prompts import PromptConditioned, TextConditioner, TextToImageConfig, load_prompts
from plugins.teachers.amused.loading import diffusers_model, read_json, save_diffusers_model, transformers_model

HUB_ID = "amused/amused-256"


class ConvEmbeddingParts:
    """What Di[M]O needs from a network with UVit2D's conv embedding (``embed``: table, RMSNorm, 1x1 conv) and
    MLM head (``mlm_layer``): aMUSEd and Meissonic."""
    noise_inside = True   # Di[M]O's noise on the output of embed (RMSNorm + conv), as the official Meissonic code

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        return self.embed.embeddings(tokens.reshape(tokens.shape[0], -1))

    def code_embeddings(self) -> Tensor:
        return self.embed.embeddings.weight[: self.config.codebook_size]

    def frozen_parameters(self):
        """As the official Di[M]O Meissonic code: the embedding (table, RMSNorm, conv) and the output head."""
        return list(self.embed.parameters()) + list(self.mlm_layer.parameters())


class AmusedNetwork(ConvEmbeddingParts, UVit2DModel):
    """``UVit2DModel`` (same modules, same state-dict keys) with dimo's MaskedNetwork protocol:
    ``forward(tokens [B, L], cond [B]) -> logits [B, L, V]``. The teacher sets ``text`` (the shared prompt
    conditioner), ``side`` (token grid side) and ``micro`` (micro-conditions) after building it."""
    text: Optional[TextConditioner] = None
    side: int = 0
    micro: tuple = (256, 256, 0, 0, 6.0)

    def text_inputs(self, cond: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.text is None:
            raise RuntimeError("AmusedNetwork has no text conditioner; build it with AmusedTeacher.build_network")
        out = self.text(cond)
        dtype = self.encoder_proj.weight.dtype   # the cache is fp32; bf16-weight engines need their dtype
        hidden, pooled = out["hidden"].to(dtype), out["pooled"].to(dtype)
        micro = torch.tensor(self.micro, device=hidden.device, dtype=hidden.dtype).expand(cond.shape[0], -1)
        return hidden, pooled, micro

    def forward(self, tokens: Optional[Tensor], cond: Tensor, *, noise_sigma: float = 0.0,
                inputs_embeds: Optional[Tensor] = None) -> Tensor:
        """UVit2DModel's forward; ``inputs_embeds [B, L, C]`` replaces the table lookup and ``noise_sigma`` applies
        ``e <- s n + sqrt(1 - s^2) e`` to the output of ``embed`` (forward hooks, so diffusers' forward runs as is)."""
        b, side = cond.shape[0], self.side
        device = self.embed.embeddings.weight.device
        hooks = []
        if inputs_embeds is None:
            ids = tokens.reshape(b, side, side).to(device)
        else:
            ids = torch.zeros(b, side, side, dtype=torch.long, device=device)
            emb = inputs_embeds.reshape(b, side, side, -1)
            hooks.append(self.embed.embeddings.register_forward_hook(lambda m, a, out: emb.to(out.dtype)))
        if noise_sigma > 0:
            hooks.append(self.embed.register_forward_hook(lambda m, a, out: vp_noise(out, noise_sigma)))
        try:
            logits = super().forward(ids, *self.text_inputs(cond.to(device)))
        finally:
            for h in hooks:
                h.remove()
        return logits.flatten(2).transpose(1, 2)   # [B, V, H, W] -> [B, L, V], row-major like the token grid


class AmusedConfig(TextToImageConfig):
    checkpoint: str = Field(HUB_ID, description="aMUSEd folder or hub id (amused/amused-256, amused/amused-512) "
                                                "with transformer/, vqvae/, text_encoder/, tokenizer/")
    variant: Optional[str] = Field(None, description="weights variant, e.g. fp16 (*.fp16.safetensors files)")
    aesthetic_score: float = Field(6.0, description="micro-condition (AmusedPipeline default 6)")
    crop_coord: tuple[int, int] = Field((0, 0), description="micro-condition crop coordinates (pipeline: 0, 0)")


class AmusedTeacher(PromptConditioned, Teacher):
    Config = AmusedConfig
    recipe = "amused"   # plugins/recipes/amused/*.yaml (subclasses inherit them)

    def __init__(self, config):
        super().__init__(config)
        field = "teacher.checkpoint"
        self.transformer_config = read_json(config.checkpoint, "transformer/config.json", field)
        vq_config = read_json(config.checkpoint, "vqvae/config.json", field)
        self.side = int(self.transformer_config.get("sample_size", 64))
        self.seq_len = self.side * self.side
        self.vocab_size = int(self.transformer_config.get("codebook_size", 8192))
        self.mask_id = int(self.transformer_config.get("vocab_size", 8256)) - 1
        if self.mask_id < self.vocab_size:
            raise UserError(f"{field}: transformer vocab_size {self.mask_id + 1} leaves no [M] id above the "
                            f"{self.vocab_size} codes")
        scale = 2 ** (len(vq_config.get("block_out_channels", [64])) - 1)
        self.image_shape = (3, self.side * scale, self.side * scale)
        self.prompt_set = load_prompts(config.prompts, default_negative="")
        self.num_classes = len(self.prompt_set.prompts)
        self._text: Optional[TextConditioner] = None
        self._vq: Optional[VQModel] = None

    # -- conditions: prompts (PromptConditioned), image-caption data encoded by the VQ ----------------
    def evaluator(self):
        """Per-prompt samples scored against their prompts (plugins/t2i_metrics.py)."""
        from plugins.t2i_metrics import TextImageEvaluator
        c = self.config
        return TextImageEvaluator.of(self.prompt_set, c)

    def text_conditioner(self) -> TextConditioner:
        """Penultimate CLIP hidden states and projected text_embeds, as AmusedPipeline encodes prompts."""
        if self._text is None:
            from transformers import CLIPTextModelWithProjection, CLIPTokenizer
            spec, field = self.config.checkpoint, "teacher.checkpoint"
            encoder = transformers_model(CLIPTextModelWithProjection, spec, "text_encoder", field, self.config.variant)
            encoder = encoder.float().eval().requires_grad_(False)
            tokenizer = transformers_model(CLIPTokenizer, spec, "tokenizer", field)

            def encode(texts: list[str], device) -> dict[str, Tensor]:
                ids = tokenizer(texts, return_tensors="pt", padding="max_length", truncation=True,
                                max_length=tokenizer.model_max_length).input_ids
                out = encoder.to(device)(ids.to(device), return_dict=True, output_hidden_states=True)
                return {"hidden": out.hidden_states[-2].float(), "pooled": out.text_embeds.float()}
            self._text = TextConditioner(self.prompt_set, encode)
        return self._text

    # -- the network -------------------------------------------------------------------------------
    def input_vocab_size(self) -> int:
        return self.mask_id + 1

    def build_network(self, load_weights: bool = True) -> AmusedNetwork:
        net = diffusers_model(AmusedNetwork, self.config.checkpoint, "transformer", "teacher.checkpoint",
                              self.config.variant, load_weights=load_weights).float()
        net.text, net.side = self.text_conditioner(), self.side
        h, w = self.image_shape[1:]
        net.micro = (w, h, *self.config.crop_coord, self.config.aesthetic_score)   # AmusedPipeline's order
        return net

    def save_pretrained(self, network, path) -> Path:
        """The diffusers layout of ``transformer/`` (config.json naming UVit2DModel + safetensors)."""
        return save_diffusers_model(network, path, "UVit2DModel")

    # -- the codec ---------------------------------------------------------------------------------
    def vq(self, device=None) -> VQModel:
        if self._vq is None:
            self._vq = diffusers_model(VQModel, self.config.checkpoint, "vqvae", "teacher.checkpoint",
                                       self.config.variant).float().requires_grad_(False)
        return self._vq.to(device) if device is not None else self._vq

    def decode(self, tokens: Tensor) -> Tensor:
        vq = self.vq(tokens.device)
        shape = (tokens.shape[0], self.side, self.side, vq.config.latent_channels)
        return vq.decode(tokens.reshape(tokens.shape[0], -1), force_not_quantize=True, shape=shape).sample.clamp(0, 1)

    def decode_soft(self, probs: Tensor) -> Tensor:
        """Expected codebook vectors ``probs @ codebook`` through VQModel.decode's post-quant conv and decoder."""
        vq = self.vq(probs.device)
        quant = probs.float() @ vq.quantize.embedding.weight.float()
        quant = quant.reshape(probs.shape[0], self.side, self.side, -1).permute(0, 3, 1, 2)
        spatial = quant if vq.config.norm_type == "spatial" else None
        return vq.decoder(vq.post_quant_conv(quant), spatial).clamp(0, 1)

    def encode(self, images: Tensor) -> Tensor:
        """Images in [0, 1] (AmusedImg2ImgPipeline does not normalise) -> nearest-code tokens ``[B, L]``."""
        vq = self.vq(images.device)
        _, _, (_, _, idx) = vq.quantize(vq.encode(images.float()).latents)
        return idx.reshape(images.shape[0], -1)
