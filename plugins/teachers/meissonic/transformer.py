"""Meissonic's transformer (Bai et al. 2024; viiika/Meissonic ``src/transformer.py`` ``Transformer2DModel``), built
from diffusers blocks with a thin wrapper that carries Meissonic's attribute names, so the released
``MeissonFlow/Meissonic/transformer`` weights load with strict key and shape checks.

The official module runs only with diffusers < 0.40 (its legacy ``Attention`` lacks ``head_dim`` for the new Flux
processors). Its blocks have exactly the state-dict keys of diffusers' ``FluxTransformerBlock`` /
``FluxSingleTransformerBlock`` and the same outputs, so those are used here, with ``FluxPosEmbed`` (RoPE),
``CombinedTimestepTextProjEmbeddings``, ``TimestepEmbedding``, ``RMSNorm``, ``Downsample2D``/``Upsample2D`` and the
UVit2D ``UVit2DConvEmbed`` / ``ConvMlmLayer``. Forward (ids ``[B, H, W]``, 64 x 64 at 1024 px):

  micro-conditions -> sinusoid(256 each, flip_sin_to_cos) ‖ pooled text -> ``cond_embed`` (no bias)
  ids -> ``embed`` (table, RMSNorm, 1x1 conv) -> ``down_block.downsample`` (2x2 conv, RMSNorm): H/2 x W/2
  -> ``project_to_hidden_norm`` / ``project_to_hidden``; text -> ``context_embedder`` -> ``encoder_proj_layer_norm``
  temb = ``time_text_embed``(timestep * 1000, pooled); RoPE over [77 zero text ids ‖ (0, row, col) image ids]
  -> double blocks, single blocks -> ``project_from_hidden(_norm)`` -> ``up_block.upsample`` (2x2 transposed conv)
  -> ``mlm_layer`` -> logits ``[B, codebook_size, H, W]``.

Gradient checkpointing (``gradient_checkpointing = True``) recomputes each block in the backward pass; the
official Di[M]O Meissonic run uses it at micro-batch 2.
"""
from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import CombinedTimestepTextProjEmbeddings, TimestepEmbedding, get_timestep_embedding
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import RMSNorm
from diffusers.models.resnet import Downsample2D, Upsample2D
from diffusers.models.transformers.transformer_flux import (FluxPosEmbed, FluxSingleTransformerBlock,
                                                            FluxTransformerBlock)
from diffusers.models.unets.uvit_2d import ConvMlmLayer, UVit2DConvEmbed
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

EPS = 1e-6                 # Meissonic's layer_norm_eps; RMSNorms are affine, convs and projections bias-free
MICRO_ENCODE_DIM = 256     # per micro-condition sinusoid (aMUSEd's micro_cond_encode_dim); 5 of them -> 1280


class Resample(nn.Module):
    """Meissonic's ``Simple_UVitBlock``: an optional ``downsample`` and ``upsample`` (the key prefixes)."""

    def __init__(self, channels: int, down: bool, up: bool):
        super().__init__()
        self.downsample = Downsample2D(channels, use_conv=True, padding=0, name="Conv2d_0", kernel_size=2,
                                       norm_type="rms_norm", eps=EPS, elementwise_affine=True, bias=False) \
            if down else None
        self.upsample = Upsample2D(channels, use_conv_transpose=True, kernel_size=2, padding=0, name="conv",
                                   norm_type="rms_norm", eps=EPS, elementwise_affine=True, bias=False,
                                   interpolate=False) if up else None

    def forward(self, x: Tensor) -> Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        if self.upsample is not None:
            x = self.upsample(x)
        return x


def image_ids(height: int, width: int, device, dtype) -> Tensor:
    """RoPE ids (0, row, col) of the transformer's (down-sampled) grid, row-major (``_prepare_latent_image_ids``)."""
    ids = torch.zeros(height, width, 3, device=device, dtype=dtype)
    ids[..., 1] += torch.arange(height, device=device, dtype=dtype)[:, None]
    ids[..., 2] += torch.arange(width, device=device, dtype=dtype)[None, :]
    return ids.reshape(height * width, 3)


class MeissonicTransformer(ModelMixin, ConfigMixin):
    """Meissonic's ``Transformer2DModel`` (same config names and state-dict keys) on diffusers blocks."""
    _supports_gradient_checkpointing = True
    _no_split_modules = ["FluxTransformerBlock", "FluxSingleTransformerBlock"]

    @register_to_config
    def __init__(self, patch_size: int = 1, in_channels: int = 64, num_layers: int = 14, num_single_layers: int = 28,
                 attention_head_dim: int = 128, num_attention_heads: int = 8, joint_attention_dim: int = 1024,
                 pooled_projection_dim: int = 1024, guidance_embeds: bool = False,
                 axes_dims_rope: tuple = (16, 56, 56), vocab_size: int = 8256, codebook_size: int = 8192,
                 downsample: bool = True, upsample: bool = True):
        super().__init__()
        dim = num_attention_heads * attention_head_dim
        if pooled_projection_dim != dim:
            raise ValueError(f"pooled_projection_dim={pooled_projection_dim} must equal num_attention_heads x "
                             f"attention_head_dim = {dim} (cond_embed's output feeds time_text_embed)")
        if guidance_embeds:
            raise ValueError("guidance_embeds=True is not part of any released Meissonic (the official code leaves "
                             "it unused)")
        if sum(axes_dims_rope) != attention_head_dim:
            raise ValueError(f"axes_dims_rope {tuple(axes_dims_rope)} must sum to attention_head_dim={attention_head_dim}")
        self.inner_dim = dim
        self.pos_embed = FluxPosEmbed(theta=10000, axes_dim=list(axes_dims_rope))
        self.time_text_embed = CombinedTimestepTextProjEmbeddings(embedding_dim=dim, pooled_projection_dim=dim)
        self.context_embedder = nn.Linear(joint_attention_dim, dim)
        self.transformer_blocks = nn.ModuleList(
            FluxTransformerBlock(dim, num_attention_heads, attention_head_dim) for _ in range(num_layers))
        self.single_transformer_blocks = nn.ModuleList(
            FluxSingleTransformerBlock(dim, num_attention_heads, attention_head_dim) for _ in range(num_single_layers))
        self.embed = UVit2DConvEmbed(dim, dim, vocab_size, True, EPS, False)
        self.mlm_layer = ConvMlmLayer(dim, dim, False, True, EPS, codebook_size)
        self.cond_embed = TimestepEmbedding(5 * MICRO_ENCODE_DIM + pooled_projection_dim, dim, sample_proj_bias=False)
        self.encoder_proj_layer_norm = RMSNorm(dim, EPS, True)
        self.project_to_hidden_norm = RMSNorm(dim, EPS, True)
        self.project_to_hidden = nn.Linear(dim, dim, bias=False)
        self.project_from_hidden_norm = RMSNorm(dim, EPS, True)
        self.project_from_hidden = nn.Linear(dim, dim, bias=False)
        self.down_block = Resample(dim, downsample, False)
        self.up_block = Resample(dim, False, upsample)
        self.gradient_checkpointing = False

    def _block(self, block, *args):
        if not (self.gradient_checkpointing and torch.is_grad_enabled()):
            return block(*args)
        # The recomputation must build the graph the forward built: a caller may have frozen parameters only for
        # this forward (Soft-Di[M]O's generator loss through the discriminator trunk), so their flags are replayed.
        flags = [p.requires_grad for p in block.parameters()]

        def replay(*inputs):
            params = list(block.parameters())
            now = [p.requires_grad for p in params]
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)
            try:
                return block(*inputs)
            finally:
                for p, flag in zip(params, now):
                    p.requires_grad_(flag)
        return checkpoint(replay, *args, use_reentrant=False)

    def transformer(self, embedded: Tensor, encoder_hidden_states: Tensor, pooled_projections: Tensor,
                    timestep: Tensor, micro_conds: Tensor) -> Tensor:
        """Everything after ``embed``: ``embedded [B, D, H, W]`` (the output of ``embed``) -> logits ``[B, V, H, W]``."""
        b = embedded.shape[0]
        micro = get_timestep_embedding(micro_conds.flatten(), MICRO_ENCODE_DIM, flip_sin_to_cos=True,
                                       downscale_freq_shift=0).reshape(b, -1)
        pooled = self.cond_embed(torch.cat([pooled_projections, micro], 1).to(self.dtype))
        pooled = pooled.to(encoder_hidden_states.dtype)
        context = self.encoder_proj_layer_norm(self.context_embedder(encoder_hidden_states))
        x = self.down_block(embedded)
        _, channels, height, width = x.shape
        x = self.project_to_hidden(self.project_to_hidden_norm(x.permute(0, 2, 3, 1).reshape(b, height * width,
                                                                                              channels)))
        temb = self.time_text_embed(timestep.to(x.dtype) * 1000, pooled)
        ids = torch.cat([torch.zeros(context.shape[1], 3, device=x.device, dtype=x.dtype),
                         image_ids(height, width, x.device, x.dtype)])
        rope = self.pos_embed(ids)
        for block in list(self.transformer_blocks) + list(self.single_transformer_blocks):
            context, x = self._block(block, x, context, temb, rope)
        x = self.project_from_hidden(self.project_from_hidden_norm(x))
        x = self.up_block(x.reshape(b, height, width, channels).permute(0, 3, 1, 2))
        return self.mlm_layer(x)

    def forward(self, hidden_states: Tensor, encoder_hidden_states: Tensor, pooled_projections: Tensor,
                timestep: Tensor, micro_conds: Tensor) -> Tensor:
        """The official call (keywords as Meissonic's pipeline; img_ids/txt_ids are built inside)."""
        return self.transformer(self.embed(hidden_states), encoder_hidden_states, pooled_projections,
                                timestep.reshape(-1), micro_conds)


def tiny_config(**overrides) -> dict:
    """A tiny configuration for tests (48k parameters, as teachers.md's verified one)."""
    cfg = dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=2, attention_head_dim=8,
               num_attention_heads=2, joint_attention_dim=12, pooled_projection_dim=16, axes_dims_rope=(2, 2, 4),
               vocab_size=40, codebook_size=32, downsample=True, upsample=True)
    return {**cfg, **overrides}

