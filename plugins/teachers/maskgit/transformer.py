"""MaskGIT-pytorch's bidirectional transformer (Besnier & Chen 2023), written so that the official
state dict (``MaskGIT_ImageNet_{256,512}.pth``, ``model_state_dict``) loads with strict=True.

Layout (module names reproduce the official keys, which is why plain ``nn.Sequential`` indices appear):
  * ``tok_emb``: one table of ``V + 1 + C + 1`` rows: codes ``0..V-1``, [M] = ``V``, classes ``V+1..V+C``,
    the null class ``V+C+1`` (2026 rows for V=1024, C=1000);
  * the class token is appended after the ``L`` image tokens; ``pos_emb`` covers all ``L + 1``;
  * ``first_layer`` (LN, Linear, GELU, LN, Linear), ``transformer.layers`` of pre-norm attention and MLP
    blocks, ``last_layer`` (LN, Linear, GELU, LN);
  * the output head is tied to ``tok_emb`` with a per-position bias ``bias [L+1, V+C+2]``.

The official forward returns logits over ``V + 1`` entries (the [M] logit included). dimo's networks
return logits over the ``V`` real codes (core/interfaces.py), so the [M] column is dropped unless
``include_mask_logit`` is set: softmaxes then renormalise over the codes. The trained model puts almost
no mass on [M] (it is never a training target), so this changes teacher probabilities negligibly.
"""
from __future__ import annotations

from typing import Optional

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

PATCH = 16   # the VQGAN downsamples by 16: 256 px -> 16 x 16 tokens


class MaskGitArch(BaseModel):
    """Transformer sizes. ``base`` is the published one (174M parameters)."""
    model_config = ConfigDict(extra="forbid")
    dim: int = Field(768, gt=0, description="hidden width")
    depth: int = Field(24, gt=0, description="number of transformer blocks")
    heads: int = Field(16, gt=0, description="attention heads (the checkpoints use 16, not the class default 8)")
    mlp_dim: int = Field(3072, gt=0, description="hidden width of the MLP")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout in embeddings, attention and MLP (official 0.1)")

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} is not divisible by heads={self.heads}")
        return self


# The sizes of MaskGIT-pytorch's trainer (Trainer/vit.py); only ``base`` has released weights.
SIZES = {
    "base": MaskGitArch(dim=768, depth=24, heads=16, mlp_dim=3072),
    "big": MaskGitArch(dim=1024, depth=32, heads=16, mlp_dim=3072),
    "huge": MaskGitArch(dim=1024, depth=48, heads=16, mlp_dim=3072),
}


class PreNorm(nn.Module):
    """LayerNorm, then the wrapped function (keys ``norm.*`` and ``fn.*``)."""

    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(self.norm(x))


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        # need_weights=False lets torch use its fused scaled-dot-product attention
        return self.mha(x, x, x, need_weights=False)[0]


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Encoder(nn.Module):
    def __init__(self, arch: MaskGitArch):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([PreNorm(arch.dim, SelfAttention(arch.dim, arch.heads, arch.dropout)),
                           PreNorm(arch.dim, FeedForward(arch.dim, arch.mlp_dim, arch.dropout))])
            for _ in range(arch.depth))

    def forward(self, x: Tensor) -> Tensor:
        for attn, ff in self.layers:
            x = x + attn(x)
            x = x + ff(x)
        return x


class MaskTransformer(nn.Module):
    """The MaskedNetwork of the ``maskgit`` teacher: ``forward(tokens [B, L], cond [B])`` -> ``[B, L, V]``.

    ``cond`` holds class ids ``0..C-1``; any id outside that range (``-1`` or ``C``) is the null class.
    """

    def __init__(self, side: int, arch: MaskGitArch, codebook_size: int = 1024, num_classes: int = 1000,
                 include_mask_logit: bool = False):
        super().__init__()
        self.side, self.seq_len = side, side * side
        self.codebook_size, self.num_classes = codebook_size, num_classes
        self.mask_id = codebook_size
        self.null_class = codebook_size + 1 + num_classes
        self.include_mask_logit = include_mask_logit
        dim, drop = arch.dim, arch.dropout
        self.tok_emb = nn.Embedding(codebook_size + 2 + num_classes, dim)
        self.pos_emb = nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, self.seq_len + 1, dim), 0.0, 0.02))
        self.first_layer = nn.Sequential(nn.LayerNorm(dim, eps=1e-12), nn.Dropout(drop), nn.Linear(dim, dim),
                                         nn.GELU(), nn.LayerNorm(dim, eps=1e-12), nn.Dropout(drop),
                                         nn.Linear(dim, dim))
        self.transformer = Encoder(arch)
        self.last_layer = nn.Sequential(nn.LayerNorm(dim, eps=1e-12), nn.Dropout(drop), nn.Linear(dim, dim),
                                        nn.GELU(), nn.LayerNorm(dim, eps=1e-12))
        self.bias = nn.Parameter(torch.zeros(self.seq_len + 1, codebook_size + 2 + num_classes))

    # -- the MaskedNetwork protocol --------------------------------------------------------------
    def embed_tokens(self, tokens: Tensor) -> Tensor:
        return self.tok_emb(tokens.reshape(tokens.shape[0], -1))

    def code_embeddings(self) -> Tensor:
        return self.tok_emb.weight[: self.codebook_size]

    def frozen_parameters(self):
        """Official Di[M]O (fix_emb_layer) freezes the embedding (hence the tied head), its bias and positions."""
        return [self.tok_emb.weight, self.bias, self.pos_emb]

    def class_token(self, cond: Tensor) -> Tensor:
        cond = cond.long().reshape(-1)
        null = (cond < 0) | (cond >= self.num_classes)
        return torch.where(null, torch.full_like(cond, self.null_class), cond + self.codebook_size + 1)

    def forward(self, tokens: Optional[Tensor], cond: Tensor, *, inputs_embeds: Optional[Tensor] = None) -> Tensor:
        """Logits ``[B, L, V]`` over the real codes (``[B, L, V+1]`` with ``include_mask_logit``).

        ``inputs_embeds`` ``[B, L, D]`` replaces the image-token lookup: Di[M]O's perturbed embeddings of the L
        image tokens (not the class token), before the positions are added (official code), soft embeddings.
        """
        emb = self.embed_tokens(tokens) if inputs_embeds is None else inputs_embeds
        if emb.shape[1] != self.seq_len:
            raise ValueError(f"expected {self.seq_len} image tokens, got {emb.shape[1]}")
        cls = self.tok_emb(self.class_token(cond.to(emb.device)))[:, None]
        x = torch.cat([emb, cls.to(emb.dtype)], dim=1) + self.pos_emb
        x = self.last_layer(self.transformer(self.first_layer(x)))[:, : self.seq_len]
        # Tied head restricted to the rows that are returned (same values as the official full
        # product followed by slicing, without computing the 1001 class columns).
        vocab = self.codebook_size + (1 if self.include_mask_logit else 0)
        return x @ self.tok_emb.weight[:vocab].t() + self.bias[: self.seq_len, :vocab]


def build_transformer(resolution: int, arch: MaskGitArch, codebook_size: int = 1024,
                      num_classes: int = 1000) -> MaskTransformer:
    if resolution % PATCH:
        raise ValueError(f"resolution {resolution} is not a multiple of {PATCH}")
    return MaskTransformer(resolution // PATCH, arch, codebook_size, num_classes)
