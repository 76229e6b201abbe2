"""MaskBit's generator ``LFQBert`` (Weber et al., TMLR 2024; markweberdev/maskbit ``modeling/bert.py``), written so
that the released state dict (``maskbit_generator_{K}bit.bin``, after renaming ``token_emb*`` -> ``input_proj*``)
loads with strict=True.

The official network takes factorised tokens ``[B, L, G]``: each of the L = 16x16 positions holds a K-bit LFQ code
split into G groups of K/G bits (14 bits = 2 groups of 128 values), and the mask id is ``2^(K/G)`` *in each group
independently*. The input has no embedding table: each group index becomes its K/G bits as +-1 (a masked group all
zeros), the G groups are concatenated to K bits, and ``input_proj = Linear(K, D)`` projects them. The class
embedding (``class_emb``, row ``nclass`` = dropped label) is appended after the L tokens; the post-norm BERT's
output goes through ``last_layer`` and ``prediction_layer = Linear(D, G * 2^(K/G))`` -> logits ``[B, L, G, 2^(K/G)]``.

**dimo's layout (the factorised grid flattened).** dimo's token grid is ``[B, L*G]`` with entry ``l*G + g`` the
group ``g`` of position ``l`` (the order of the official ``rearrange``), ``vocab_size = 2^(K/G)`` and ``mask_id =
2^(K/G)``; logits are ``[B, L*G, 2^(K/G)]``. Every (position, group) entry is one dimo token: MaskBit trains by
masking each entry independently and its sampler reveals entries independently (``num_maskable = L*G``), and the
network factorises p(code | x_t) as a product over groups, so divergences, masking, samplers and cross-entropy
apply per entry unchanged. The "token embedding" of an entry is its K/G bits (``code_embeddings()`` is the
``[2^(K/G), K/G]`` table of +-1 bits, [M] is the zero vector): soft embeddings ``E^T softmax(z)`` are expected bits,
and ``inputs_embeds [B, L*G, K/G]`` is reshaped to the ``[B, L, K]`` bit input of ``input_proj``.
"""
from __future__ import annotations

from typing import Optional

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

PATCH = 16   # the VQGAN+ tokenizer downsamples by 16: 256 px -> 16 x 16 positions


class MaskBitArch(BaseModel):
    """Generator sizes; the defaults are the released ones (configs/generator/maskbit_generator_*bit.yaml)."""
    model_config = ConfigDict(extra="forbid")
    dim: int = Field(1024, gt=0, description="hidden width")
    depth: int = Field(24, gt=0, description="post-norm BERT blocks")
    heads: int = Field(16, gt=0, description="attention heads")
    mlp_dim: int = Field(4096, gt=0, description="hidden width of the MLP")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout after embeddings, attention and MLP (official 0.1)")

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} is not divisible by heads={self.heads}")
        return self


class Attention(nn.Module):
    """Post-norm self-attention: ``LN(x + Drop(MHA(x)))`` (keys ``mha.*``, ``norm.*``)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True, bias=True)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.dropout(self.mha(x, x, x, need_weights=False)[0]))


class FeedForward(nn.Module):
    """Post-norm MLP: ``LN(x + Drop(Lin(GELU(Lin(x)))))`` (keys ``net.0``, ``net.2``, ``norm``)."""

    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(dropout))
        self.norm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.net(x))


class Encoder(nn.Module):
    def __init__(self, arch: MaskBitArch):
        super().__init__()
        self.layers = nn.ModuleList(nn.ModuleList([Attention(arch.dim, arch.heads, arch.dropout),
                                                   FeedForward(arch.dim, arch.mlp_dim, arch.dropout)])
                                    for _ in range(arch.depth))

    def forward(self, x: Tensor) -> Tensor:
        for attn, ff in self.layers:
            x = ff(attn(x))
        return x


def index_bits(indices: Tensor, bits: int) -> Tensor:
    """Integer codes -> their ``bits`` lowest bits as +-1 (bit j is channel j, as MaskBit's LFQ)."""
    powers = 2 ** torch.arange(bits, device=indices.device)
    return ((indices[..., None] & powers) != 0).float() * 2 - 1


class LFQBert(nn.Module):
    """The MaskedNetwork of the ``maskbit`` teacher: ``forward(tokens [B, L*G], cond [B])`` -> ``[B, L*G, C]``,
    C = 2^(K/G) codes per group. ``cond`` holds class ids ``0..nclass-1``; ``-1`` (or ``nclass``) is the
    dropped label."""

    def __init__(self, side: int, arch: MaskBitArch, bits: int = 14, splits: int = 2, num_classes: int = 1000):
        super().__init__()
        if bits % splits:
            raise ValueError(f"bits={bits} is not divisible by splits={splits}")
        self.side, self.positions, self.splits, self.bits = side, side * side, splits, bits
        self.group_bits = bits // splits
        self.codebook_size = 2 ** self.group_bits
        self.mask_id = self.codebook_size
        self.seq_len = self.positions * splits
        self.num_classes = num_classes
        dim = arch.dim
        # official buffer (persistent, so the released state dict holds it)
        self.register_buffer("bits_to_indices", (2 ** torch.arange(self.group_bits)).int())
        table = torch.cat([index_bits(torch.arange(self.codebook_size), self.group_bits),
                           torch.zeros(1, self.group_bits)])   # + the [M] row: all-zero bits
        self.register_buffer("bit_table", table, persistent=False)
        self.class_emb = nn.Embedding(num_classes + 1, dim)
        self.input_proj = nn.Linear(bits, dim)
        self.pos_emb = nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, self.positions + 1, dim), 0.0, 0.02))
        self.first_layer = nn.Sequential(nn.LayerNorm(dim, eps=1e-12), nn.Dropout(arch.dropout))
        self.transformer = Encoder(arch)
        self.last_layer = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim, eps=1e-12))
        self.prediction_layer = nn.Linear(dim, splits * self.codebook_size)

    # -- the MaskedNetwork protocol --------------------------------------------------------------
    def embed_tokens(self, tokens: Tensor) -> Tensor:
        """Entries (any shape, ids ``0..C``) -> their bits ``[..., K/G]`` (+-1; [M] is all zeros)."""
        return self.bit_table[tokens.long()]

    def code_embeddings(self) -> Tensor:
        return self.bit_table[: self.codebook_size]

    def frozen_parameters(self):
        """As for MaskGit's tied table (Di[M]O fixes the embedding layer): the bit projection, the class
        embedding and the positions stay the teacher's."""
        return [self.input_proj.weight, self.input_proj.bias, self.class_emb.weight, self.pos_emb]

    def class_ids(self, cond: Tensor) -> Tensor:
        cond = cond.long().reshape(-1)
        return torch.where((cond < 0) | (cond >= self.num_classes), torch.full_like(cond, self.num_classes), cond)

    def forward(self, tokens: Optional[Tensor], cond: Tensor, *, inputs_embeds: Optional[Tensor] = None) -> Tensor:
        """Logits ``[B, L*G, C]``. ``inputs_embeds [B, L*G, K/G]`` replaces the bits of the tokens: soft embeddings,
        TTEO, and Di[M]O's generator input (the init's ``e <- s n + sqrt(1 - s^2) e`` on the bits)."""
        emb = self.embed_tokens(tokens) if inputs_embeds is None else inputs_embeds
        if emb.shape[1:] != (self.seq_len, self.group_bits):
            raise ValueError(f"expected {self.seq_len} entries ({self.positions} positions x {self.splits} groups) "
                             f"of {self.group_bits} bits, got {tuple(emb.shape[1:])}")
        b = emb.shape[0]
        x = self.input_proj(emb.reshape(b, self.positions, self.bits).to(self.input_proj.weight.dtype))
        cls = self.class_emb(self.class_ids(cond.to(x.device)))[:, None]
        x = torch.cat([x, cls.to(x.dtype)], dim=1) + self.pos_emb
        x = self.last_layer(self.transformer(self.first_layer(x)))
        logits = self.prediction_layer(x[:, : self.positions])
        return logits.reshape(b, self.seq_len, self.codebook_size)


def group_tokens(tokens: Tensor, splits: int) -> Tensor:
    """dimo's flat grid ``[B, L*G]`` -> MaskBit's ``[B, L, G]``."""
    return tokens.reshape(tokens.shape[0], -1, splits)


def combine_groups(tokens: Tensor, splits: int, group_bits: int) -> Tensor:
    """Flat grid ``[B, L*G]`` -> LFQ codes ``[B, L]``: sum_g tok_g << (g * K/G) (``combine_factorized_tokens``)."""
    grouped = group_tokens(tokens, splits).long()
    shifts = torch.arange(splits, device=tokens.device) * group_bits
    return (grouped << shifts).sum(-1)


def split_codes(codes: Tensor, splits: int, group_bits: int) -> Tensor:
    """LFQ codes ``[B, L]`` -> flat grid ``[B, L*G]`` (``split_factorized_tokens``, flattened)."""
    shifts = torch.arange(splits, device=codes.device) * group_bits
    grouped = (codes.long()[..., None] >> shifts) & ((1 << group_bits) - 1)
    return grouped.reshape(codes.shape[0], -1)
