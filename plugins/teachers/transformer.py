"""A small MaskGit-style bidirectional transformer, shared by the embedded teachers (digits, ...).

Layout follows MaskGIT-pytorch so that Di[M]O's choices carry over unchanged:
  * one shared embedding table: codes ``0..V-1``, [M] = ``V``, classes ``V+1..V+C``, null class ``V+C+1``;
  * the class token is appended after the L image tokens; learned positions for all L+1;
  * pre-norm transformer blocks (torch's own ``TransformerEncoderLayer``);
  * output head tied to the code rows of the embedding, plus a per-position bias ``[L, V]``.
"""
from __future__ import annotations

from typing import Optional

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn


class TransformerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dim: int = Field(64, gt=0, description="width")
    depth: int = Field(4, gt=0, description="transformer blocks")
    heads: int = Field(4, gt=0, description="attention heads (must divide dim)")
    mlp_ratio: float = Field(4.0, gt=0, description="MLP hidden size / width")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout (MaskGIT-pytorch uses 0.1)")

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.dim % self.heads:   # torch's attention splits the width evenly over the heads
            divisors = [h for h in range(1, min(self.dim, 64) + 1) if self.dim % h == 0]
            raise ValueError(f"heads={self.heads} does not divide dim={self.dim}; valid heads for this dim: "
                             f"{', '.join(map(str, divisors))}")
        return self


class MaskedTransformer(nn.Module):
    def __init__(self, seq_len: int, vocab_size: int, num_classes: int, spec: TransformerSpec):
        super().__init__()
        if spec.dim % spec.heads:
            raise ValueError(f"dim {spec.dim} is not divisible by heads {spec.heads}")
        self.seq_len, self.vocab_size, self.num_classes, self.spec = seq_len, vocab_size, num_classes, spec
        self.mask_id = vocab_size
        self.null_class = vocab_size + 1 + num_classes
        self.tok_emb = nn.Embedding(vocab_size + 2 + num_classes, spec.dim)
        self.pos_emb = nn.Parameter(torch.zeros(1, seq_len + 1, spec.dim))
        self.drop = nn.Dropout(spec.dropout)
        layer = nn.TransformerEncoderLayer(spec.dim, spec.heads, int(spec.dim * spec.mlp_ratio), spec.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, spec.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(spec.dim)
        self.bias = nn.Parameter(torch.zeros(seq_len, vocab_size))
        nn.init.trunc_normal_(self.tok_emb.weight, std=0.02)
        nn.init.trunc_normal_(self.pos_emb, std=0.02)

    # -- the MaskedNetwork protocol --------------------------------------------------------------
    def embed_tokens(self, tokens: Tensor) -> Tensor:
        return self.tok_emb(tokens)

    def code_embeddings(self) -> Tensor:
        return self.tok_emb.weight[: self.vocab_size]

    def frozen_parameters(self):
        return [self.tok_emb.weight, self.pos_emb, self.bias]

    def class_token(self, cond: Tensor) -> Tensor:
        """Class ids (or -1 / ``num_classes`` for the null class) -> embedding-table ids."""
        cond = cond.long()
        null = (cond < 0) | (cond >= self.num_classes)
        return torch.where(null, torch.full_like(cond, self.null_class), cond + self.vocab_size + 1)

    def forward(self, tokens: Optional[Tensor], cond: Tensor, *, inputs_embeds: Optional[Tensor] = None) -> Tensor:
        emb = self.embed_tokens(tokens) if inputs_embeds is None else inputs_embeds
        cls = self.tok_emb(self.class_token(cond.to(emb.device)))[:, None]
        h = self.drop(torch.cat([emb, cls], dim=1) + self.pos_emb)
        h = self.norm(self.blocks(h))[:, : self.seq_len]
        return h @ self.code_embeddings().t() + self.bias
