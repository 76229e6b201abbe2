"""Halton-MaskGIT (Besnier et al., ICLR 2025; valeoai/Halton-MaskGIT v2.0): a DiT-style transformer with
adaptive-norm class conditioning over LlamaGen's VQ (16384 codes of 8 dims, l2-normalised, f16).

Module names reproduce the official keys so ``ImageNet_{256,384}_{size}.pth`` (``model_state_dict``,
``module.``/``_orig_mod.`` stripped) and LlamaGen's ``vq_ds16_c2i.pt`` (``model``) load strictly.

Transformer: ``tok_emb`` (codes + [M]), ``cls_emb`` (classes + null = C), learned ``pos_emb``, one register
token appended after the image tokens; blocks of adaLN-modulated RMSNorm (shift, scale, gate from the
class embedding), attention with RMS-normalised q/k, SwiGLU MLP; a final adaptive norm and a head tied to
``tok_emb`` with its own bias. ``head_dim = dim // heads`` as in the official code, so ``small`` (512 wide,
6 heads) projects q/k/v to 510 dims.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from plugins.teachers.maskgit.vqgan import AttnBlock, Downsample, ResBlock, Upsample, norm


class HaltonArch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dim: int = Field(768, gt=0, description="hidden width")
    depth: int = Field(12, gt=0, description="number of blocks")
    heads: int = Field(12, gt=0, description="attention heads (head_dim = dim // heads)")
    mlp_ratio: float = Field(4.0, gt=0, description="mlp_dim = ratio * dim; the SwiGLU hidden width is 2/3 of "
                                                    "it rounded up to a multiple of 256")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout in attention and MLP (official 0.1)")
    registers: int = Field(1, ge=0, description="register tokens appended after the image tokens "
                                                "(official: register)")


# Trainer/abstract_trainer.transformer_size of the official repo.
HALTON_SIZES = {
    "tiny": HaltonArch(dim=384, depth=6, heads=6),
    "small": HaltonArch(dim=512, depth=12, heads=6),
    "base": HaltonArch(dim=768, depth=12, heads=12),
    "large": HaltonArch(dim=1024, depth=24, heads=16),
    "xlarge": HaltonArch(dim=1152, depth=28, heads=16),
}


class RMSNorm(nn.Module):
    def __init__(self, dim: int, weight: bool = True, bias: bool = False, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if weight else None
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        out = (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)
        if self.weight is not None:
            out = self.weight * out
        return out + self.bias if self.bias is not None else out


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class QKNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.query_norm, self.key_norm = RMSNorm(1, weight=False), RMSNorm(1, weight=False)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.head_dim, self.dropout = heads, dim // heads, dropout
        inner = heads * self.head_dim
        self.wq, self.wk, self.wv = (nn.Linear(dim, inner, bias=False) for _ in range(3))
        self.wo = nn.Linear(inner, dim, bias=False)
        self.qk_norm = QKNorm()   # over all heads together, without weights

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        v = self.wv(x)
        q, k = self.qk_norm.query_norm(self.wq(x)).to(v), self.qk_norm.key_norm(self.wk(x)).to(v)
        q, k, v = (t.view(b, n, self.heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        drop = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop).transpose(1, 2).reshape(b, n, -1)
        return F.dropout(self.wo(out), drop, self.training)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, mlp_dim: int, dropout: float):
        super().__init__()
        hidden = 256 * math.ceil(int(2 * mlp_dim / 3) / 256)
        self.w1, self.w3 = nn.Linear(dim, hidden, bias=False), nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.dropout(F.silu(self.w1(x)) * self.w3(x), self.dropout, self.training))


class Block(nn.Module):
    def __init__(self, arch: HaltonArch):
        super().__init__()
        dim = arch.dim
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))   # shift, scale, gate for both halves
        self.ln1, self.attn = RMSNorm(dim), Attention(dim, arch.heads, arch.dropout)
        self.ln2, self.ff = RMSNorm(dim), SwiGLU(dim, int(arch.mlp_ratio * dim), arch.dropout)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.mlp(y).chunk(6, dim=1)
        x = x + gate1[:, None] * self.attn(modulate(self.ln1(x), shift1, scale1))
        return x + gate2[:, None] * self.ff(modulate(self.ln2(x), shift2, scale2))


class Layers(nn.Module):
    def __init__(self, arch: HaltonArch):
        super().__init__()
        self.layers = nn.ModuleList(Block(arch) for _ in range(arch.depth))


class AdaNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm_final = RMSNorm(dim, weight=True, bias=True)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        shift, scale = self.mlp(y).chunk(2, dim=1)
        return modulate(self.norm_final(x), shift, scale)


class TiedHead(nn.Module):
    """The output layer: its weight is ``tok_emb.weight`` (tied), only the bias is its own (``head.bias``).
    Official state dicts also carry ``head.weight``, a second name for the same tensor (see ``fold_tied_head``)."""

    def __init__(self, vocab: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(vocab))


def fold_tied_head(state: dict) -> dict:
    """Drops the duplicate ``head.weight`` of an official state dict after checking it is ``tok_emb.weight``
    (safetensors, which dimo's exports use, refuses two names for one tensor)."""
    state = dict(state)
    head = state.pop("head.weight", None)
    if head is not None and "tok_emb.weight" in state and not torch.equal(head, state["tok_emb.weight"]):
        raise ValueError("head.weight differs from tok_emb.weight, but the Halton-MaskGIT head is tied")
    return state


class HaltonTransformer(nn.Module):
    """MaskedNetwork: ``forward(tokens [B, L], cond [B])`` -> logits ``[B, L, V]`` (the [M] column dropped
    unless ``include_mask_logit``); ``cond`` outside ``0..C-1`` is the null class."""

    def __init__(self, side: int, arch: HaltonArch, codebook_size: int = 16384, num_classes: int = 1000,
                 include_mask_logit: bool = False):
        super().__init__()
        self.side, self.seq_len = side, side * side
        self.codebook_size, self.num_classes, self.mask_id = codebook_size, num_classes, codebook_size
        self.include_mask_logit = include_mask_logit
        dim = arch.dim
        self.cls_emb = nn.Embedding(num_classes + 1, dim)
        self.tok_emb = nn.Embedding(codebook_size + 1, dim)
        self.pos_emb = nn.Embedding(self.seq_len, dim)
        self.transformer = Layers(arch)
        self.last_norm = AdaNorm(dim)
        self.head = TiedHead(codebook_size + 1)
        if arch.registers > 0:
            self.reg_tokens = nn.Embedding(arch.registers, dim)
        self.registers = arch.registers
        self._init_weights()

    def _init_weights(self) -> None:
        """The official init: xavier linears, N(0, 0.02) embeddings, zeroed adaLN modulation."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.zeros_(self.head.bias)
        for emb in (self.cls_emb, self.tok_emb, self.pos_emb) + ((self.reg_tokens,) if self.registers else ()):
            nn.init.normal_(emb.weight, std=0.02)
        for block in self.transformer.layers:
            nn.init.zeros_(block.mlp[1].weight)
            nn.init.zeros_(block.mlp[1].bias)

    # -- the MaskedNetwork protocol --------------------------------------------------------------
    def embed_tokens(self, tokens: Tensor) -> Tensor:
        return self.tok_emb(tokens.reshape(tokens.shape[0], -1))

    def code_embeddings(self) -> Tensor:
        return self.tok_emb.weight[: self.codebook_size]

    def frozen_parameters(self):
        """Embedding (hence the tied head), head bias and positions, as Di[M]O fixes for MaskGIT."""
        return [self.tok_emb.weight, self.head.bias, self.pos_emb.weight]

    def class_index(self, cond: Tensor) -> Tensor:
        cond = cond.long().reshape(-1)
        return torch.where((cond < 0) | (cond >= self.num_classes), torch.full_like(cond, self.num_classes), cond)

    def forward(self, tokens: Optional[Tensor], cond: Tensor, *, inputs_embeds: Optional[Tensor] = None) -> Tensor:
        emb = self.embed_tokens(tokens) if inputs_embeds is None else inputs_embeds
        if emb.shape[1] != self.seq_len:
            raise ValueError(f"expected {self.seq_len} image tokens, got {emb.shape[1]}")
        y = self.cls_emb(self.class_index(cond.to(emb.device)))
        x = emb + self.pos_emb.weight
        if self.registers:
            x = torch.cat([x, self.reg_tokens.weight.expand(x.shape[0], -1, -1).to(x.dtype)], dim=1)
        for block in self.transformer.layers:
            x = block(x, y)
        x = self.last_norm(x[:, : self.seq_len], y)
        vocab = self.codebook_size + (1 if self.include_mask_logit else 0)
        return F.linear(x, self.tok_emb.weight[:vocab], self.head.bias[:vocab])


# ---------------------------------------------------------------------------------------------------
# LlamaGen VQ-16 (the tokenizer of Halton-MaskGIT)
# ---------------------------------------------------------------------------------------------------

class LlamaGenVQConfig(BaseModel):
    """LlamaGen's ``VQ-16`` (``VQ_models["VQ-16"](codebook_size=16384, codebook_embed_dim=8)``)."""
    model_config = ConfigDict(extra="forbid")
    codebook_size: int = Field(16384, gt=0, description="number of codes")
    embed_dim: int = Field(8, gt=0, description="code dimension (codes are l2-normalised)")
    ch: int = Field(128, gt=0, description="base channel width of encoder and decoder")
    ch_mult: list[int] = Field(default_factory=lambda: [1, 1, 2, 2, 4],
                               description="channel multipliers per level; len - 1 halvings (5 levels: f16)")
    num_res_blocks: int = Field(2, gt=0, description="residual blocks per encoder level (decoder: one more)")
    z_channels: int = Field(256, gt=0, description="latent channels before quant_conv")


def _stage(blocks: list[nn.Module], attn: list[nn.Module]) -> nn.Module:
    stage = nn.Module()
    stage.res, stage.attn = nn.ModuleList(blocks), nn.ModuleList(attn)
    return stage


def _run_stage(stage: nn.Module, h: Tensor) -> Tensor:
    for i, block in enumerate(stage.res):
        h = block(h)
        if len(stage.attn):
            h = stage.attn[i](h)
    return h


class LlamaGenEncoder(nn.Module):
    def __init__(self, c: LlamaGenVQConfig):
        super().__init__()
        n = len(c.ch_mult)
        self.conv_in = nn.Conv2d(3, c.ch, 3, padding=1)
        self.conv_blocks = nn.ModuleList()
        cin = c.ch
        for i, mult in enumerate(c.ch_mult):
            cout = c.ch * mult
            blocks = [ResBlock(cin if j == 0 else cout, cout, 0.0) for j in range(c.num_res_blocks)]
            stage = _stage(blocks, [AttnBlock(cout) for _ in blocks] if i == n - 1 else [])
            if i != n - 1:
                stage.downsample = Downsample(cout)
            self.conv_blocks.append(stage)
            cin = cout
        self.mid = nn.ModuleList([ResBlock(cin, cin, 0.0), AttnBlock(cin), ResBlock(cin, cin, 0.0)])
        self.norm_out, self.conv_out = norm(cin), nn.Conv2d(cin, c.z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for stage in self.conv_blocks:
            h = _run_stage(stage, h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        for block in self.mid:
            h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class LlamaGenDecoder(nn.Module):
    """``conv_blocks[0]`` is the lowest resolution (the reverse of taming's ``up`` indexing)."""

    def __init__(self, c: LlamaGenVQConfig):
        super().__init__()
        n = len(c.ch_mult)
        cin = c.ch * c.ch_mult[-1]
        self.conv_in = nn.Conv2d(c.z_channels, cin, 3, padding=1)
        self.mid = nn.ModuleList([ResBlock(cin, cin, 0.0), AttnBlock(cin), ResBlock(cin, cin, 0.0)])
        self.conv_blocks = nn.ModuleList()
        for i in reversed(range(n)):
            cout = c.ch * c.ch_mult[i]
            blocks = [ResBlock(cin if j == 0 else cout, cout, 0.0) for j in range(c.num_res_blocks + 1)]
            stage = _stage(blocks, [AttnBlock(cout) for _ in blocks] if i == n - 1 else [])
            if i != 0:
                stage.upsample = Upsample(cout)
            self.conv_blocks.append(stage)
            cin = cout
        self.norm_out, self.conv_out = norm(cin), nn.Conv2d(cin, 3, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.conv_in(z)
        for block in self.mid:
            h = block(h)
        for stage in self.conv_blocks:
            h = _run_stage(stage, h)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class LlamaGenQuantizer(nn.Module):
    def __init__(self, codebook_size: int, embed_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(codebook_size, embed_dim)
        self.register_buffer("codebook_used", torch.zeros(65536))   # training statistics, kept for strict loading

    def codebook(self) -> Tensor:
        return F.normalize(self.embedding.weight, dim=-1)

    def nearest(self, z: Tensor) -> Tensor:
        flat = F.normalize(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]), dim=-1)
        return (flat @ self.codebook().t()).argmax(1).view(z.shape[0], z.shape[2], z.shape[3])


class LlamaGenVQ(nn.Module):
    """Same interface as the taming VQGAN: encode / decode / decode_soft / decode_embeddings; output
    clamped to [-1, 1] as the Halton sampler does, then mapped to [0, 1]."""

    def __init__(self, config: LlamaGenVQConfig):
        super().__init__()
        self.config = config
        self.encoder, self.decoder = LlamaGenEncoder(config), LlamaGenDecoder(config)
        self.quantize = LlamaGenQuantizer(config.codebook_size, config.embed_dim)
        self.quant_conv = nn.Conv2d(config.z_channels, config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)

    @property
    def codebook(self) -> Tensor:
        return self.quantize.codebook()

    def encode(self, images: Tensor) -> Tensor:
        return self.quantize.nearest(self.quant_conv(self.encoder(2 * images - 1))).flatten(1)

    def decode_embeddings(self, emb: Tensor) -> Tensor:
        b, length, dim = emb.shape
        side = int(round(length ** 0.5))
        if side * side != length:
            raise ValueError(f"{length} tokens do not form a square grid")
        x = self.decoder(self.post_quant_conv(emb.transpose(1, 2).reshape(b, dim, side, side)))
        return ((x.clamp(-1, 1) + 1) / 2)

    def decode(self, tokens: Tensor) -> Tensor:
        tokens = tokens.reshape(tokens.shape[0], -1).clamp(0, self.config.codebook_size - 1)
        return self.decode_embeddings(self.codebook[tokens])

    def decode_soft(self, probs: Tensor) -> Tensor:
        return self.decode_embeddings(probs.to(self.codebook.dtype) @ self.codebook)
