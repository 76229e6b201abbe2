"""Soft-Di[M]O's time-conditioned GAN heads D(Emb_r, r, c) -> logit [B].

The input is a sequence of embeddings in the teacher's input-embedding space ``[B, L, D]``: real tokens'
rows ``E[x]`` or the generator's soft embeddings ``E^T softmax(z)``, with a fraction ``r`` of positions replaced
by the [M] embedding (the method does the masking). ``r`` conditions the head through a Fourier-feature MLP.

* ``trunk``: a trainable copy of the teacher network fed with ``inputs_embeds`` (the paper stresses that soft
  embeddings are compatible with teacher backbones); its per-token outputs are pooled to one logit.
* ``light``: a small transformer over the embeddings with a time/class token (cheap, teacher-agnostic).
"""
from __future__ import annotations

import copy
import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from core.interfaces import Discriminator, PluginConfig
from registry import hookimpl


class TimeEmbedding(nn.Module):
    """r in [0, 1] -> Fourier features -> MLP -> ``[B, dim]``; ``zero_init`` makes it start as a no-op."""

    def __init__(self, dim: int, features: int = 32, zero_init: bool = False):
        super().__init__()
        self.register_buffer("freqs", torch.exp(torch.linspace(0, math.log(1000.0), features // 2)),
                             persistent=False)
        self.mlp = nn.Sequential(nn.Linear(features, dim), nn.SiLU(), nn.Linear(dim, dim))
        if zero_init:
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, r: Tensor) -> Tensor:
        angles = r.float()[:, None] * self.freqs * math.pi
        return self.mlp(torch.cat([angles.sin(), angles.cos()], -1))


class TrunkHead(nn.Module):
    """The teacher's transformer as a discriminator trunk. ``r`` is added to every input embedding (zero-init,
    so training starts from the teacher's features) and again before the logit; the trunk's per-token outputs
    (logits over the codes: the last hidden state through the tied head) are projected and mean-pooled."""

    def __init__(self, trunk: nn.Module, emb_dim: int, out_dim: int, width: int, train_trunk: bool):
        super().__init__()
        self.trunk = trunk.requires_grad_(train_trunk)
        self.time_in = TimeEmbedding(emb_dim, zero_init=True)
        self.proj = nn.Sequential(nn.LayerNorm(out_dim), nn.Linear(out_dim, width), nn.GELU())
        self.time_out = TimeEmbedding(width)
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 1))

    def forward(self, emb: Tensor, r: Tensor, cond) -> Tensor:
        h = self.trunk(None, cond, inputs_embeds=emb + self.time_in(r)[:, None].to(emb.dtype))
        pooled = self.proj(h.float()).mean(1) + self.time_out(r)
        return self.out(pooled).squeeze(-1)


class LightHead(nn.Module):
    """A small pre-norm transformer: projected embeddings + positions, and one summary token carrying r and
    the class (class-conditional teachers; the last class row is the null/unconditional one)."""

    def __init__(self, emb_dim: int, seq_len: int, num_classes, width: int, depth: int, heads: int):
        super().__init__()
        self.num_classes = num_classes or 0
        self.proj = nn.Linear(emb_dim, width)
        self.pos = nn.Parameter(torch.randn(1, seq_len, width) * 0.02)
        self.time = TimeEmbedding(width)
        self.cls = nn.Embedding(self.num_classes + 1, width)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, 0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 1))

    def class_ids(self, cond, batch: int, device) -> Tensor:
        if not self.num_classes or not torch.is_tensor(cond) or cond.dim() != 1:
            return torch.full((batch,), self.num_classes, device=device)
        cond = cond.long().to(device)
        return torch.where((cond < 0) | (cond >= self.num_classes), torch.full_like(cond, self.num_classes), cond)

    def forward(self, emb: Tensor, r: Tensor, cond) -> Tensor:
        x = self.proj(emb.float()) + self.pos
        token = self.time(r) + self.cls(self.class_ids(cond, emb.shape[0], emb.device))
        h = self.blocks(torch.cat([token[:, None], x], 1))
        return self.out(h[:, 0]).squeeze(-1)


class TrunkDiscriminator(Discriminator):
    """A copy of the teacher network (fed with inputs_embeds) as the trunk, pooled to a time-conditioned logit."""

    class Config(PluginConfig):
        width: int = Field(256, gt=0, description="width of the pooling head on the trunk's per-token outputs")
        train: Literal["all", "head"] = Field(
            "all", description="all: the trunk copy is trained with the head; head: the trunk stays the teacher's")

    def build(self, teacher, teacher_network) -> nn.Module:
        trunk = copy.deepcopy(teacher_network).train()
        emb_dim = teacher_network.code_embeddings().shape[1]
        return TrunkHead(trunk, emb_dim, teacher.vocab_size, self.config.width, self.config.train == "all")


class LightDiscriminator(Discriminator):
    """A small transformer head on the (masked) embeddings; independent of the teacher's architecture."""

    class Config(PluginConfig):
        width: int = Field(128, gt=0, description="transformer width")
        depth: int = Field(2, gt=0, description="transformer blocks")
        heads: int = Field(4, gt=0, description="attention heads (must divide width)")

    def build(self, teacher, teacher_network) -> nn.Module:
        c = self.config
        if c.width % c.heads:
            from core.errors import UserError
            raise UserError(f"discriminator.heads={c.heads} does not divide discriminator.width={c.width}")
        emb_dim = teacher_network.code_embeddings().shape[1]
        return LightHead(emb_dim, teacher.seq_len, teacher.num_classes, c.width, c.depth, c.heads)


@hookimpl
def dimo_register(register):
    register("discriminator", "trunk", TrunkDiscriminator)
    register("discriminator", "light", LightDiscriminator)
