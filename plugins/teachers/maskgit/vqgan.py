"""The taming-transformers VQGAN (Esser et al. 2021) that MaskGIT-pytorch tokenises ImageNet with:
f16, 1024 codes of 256 dims (``vqgan_imagenet_f16_1024``), read from ``last.ckpt`` + ``model.yaml``.

Module names reproduce taming's keys (``encoder.*``, ``decoder.*``, ``quantize.embedding.weight``,
``quant_conv.*``, ``post_quant_conv.*``) so its state dict loads strictly; the Lightning checkpoint's
``loss.*`` entries (discriminator, LPIPS) are skipped. Images are in [0, 1] outside and [-1, 1] inside
(MaskGIT-pytorch trains on ``2x - 1``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch.nn.functional as F
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor, nn

from core.errors import UserError
from plugins.teachers.maskgit.loading import load_strict, safe_torch_load


class DDConfig(BaseModel):
    """taming's ``ddconfig`` (encoder/decoder shape)."""
    model_config = ConfigDict(extra="ignore")
    ch: int = Field(128, gt=0)
    ch_mult: list[int] = Field(default_factory=lambda: [1, 1, 2, 2, 4])
    num_res_blocks: int = Field(2, gt=0)
    attn_resolutions: list[int] = Field(default_factory=lambda: [16])
    resolution: int = Field(256, gt=0, description="nominal resolution; decides where attention sits")
    in_channels: int = 3
    out_ch: int = 3
    z_channels: int = 256
    double_z: bool = False
    dropout: float = 0.0


class VQGANConfig(BaseModel):
    """``model.params`` of taming's model.yaml (``lossconfig`` and the rest are ignored)."""
    model_config = ConfigDict(extra="ignore")
    embed_dim: int = Field(256, gt=0)
    n_embed: int = Field(1024, gt=0)
    ddconfig: DDConfig = Field(default_factory=DDConfig)


def norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1-conv projections."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = norm(channels)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(channels, channels, 1) for _ in range(4))

    def forward(self, x: Tensor) -> Tensor:
        b, c, hgt, wid = x.shape
        h = self.norm(x)
        q, k, v = (conv(h).flatten(2).transpose(1, 2) for conv in (self.q, self.k, self.v))   # [B, HW, C]
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, hgt, wid))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))   # taming pads right/bottom only


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _level(blocks: list[nn.Module], attn: list[nn.Module]) -> nn.Module:
    level = nn.Module()
    level.block, level.attn = nn.ModuleList(blocks), nn.ModuleList(attn)
    return level


def _mid(channels: int, dropout: float) -> nn.Module:
    mid = nn.Module()
    mid.block_1, mid.attn_1 = ResBlock(channels, channels, dropout), AttnBlock(channels)
    mid.block_2 = ResBlock(channels, channels, dropout)
    return mid


def _run_mid(mid: nn.Module, h: Tensor) -> Tensor:
    return mid.block_2(mid.attn_1(mid.block_1(h)))


def _run_level(level: nn.Module, h: Tensor) -> Tensor:
    for i, block in enumerate(level.block):
        h = block(h)
        if len(level.attn):
            h = level.attn[i](h)
    return h


class Encoder(nn.Module):
    def __init__(self, c: DDConfig):
        super().__init__()
        n = len(c.ch_mult)
        self.conv_in = nn.Conv2d(c.in_channels, c.ch, 3, padding=1)
        self.down = nn.ModuleList()
        cin, res = c.ch, c.resolution
        for i, mult in enumerate(c.ch_mult):
            cout = c.ch * mult
            blocks = [ResBlock(cin if j == 0 else cout, cout, c.dropout) for j in range(c.num_res_blocks)]
            attn = [AttnBlock(cout) for _ in range(c.num_res_blocks)] if res in c.attn_resolutions else []
            level = _level(blocks, attn)
            if i != n - 1:
                level.downsample = Downsample(cout)
                res //= 2
            self.down.append(level)
            cin = cout
        self.mid = _mid(cin, c.dropout)
        self.norm_out = norm(cin)
        self.conv_out = nn.Conv2d(cin, 2 * c.z_channels if c.double_z else c.z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = _run_level(level, h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        return self.conv_out(F.silu(self.norm_out(_run_mid(self.mid, h))))


class Decoder(nn.Module):
    def __init__(self, c: DDConfig):
        super().__init__()
        n = len(c.ch_mult)
        cin = c.ch * c.ch_mult[-1]
        self.conv_in = nn.Conv2d(c.z_channels, cin, 3, padding=1)
        self.mid = _mid(cin, c.dropout)
        levels = []
        for i in reversed(range(n)):   # built from the lowest resolution up; ``up[i]`` is level i
            cout, res = c.ch * c.ch_mult[i], c.resolution // 2 ** i
            blocks = [ResBlock(cin if j == 0 else cout, cout, c.dropout) for j in range(c.num_res_blocks + 1)]
            attn = [AttnBlock(cout) for _ in range(c.num_res_blocks + 1)] if res in c.attn_resolutions else []
            level = _level(blocks, attn)
            if i != 0:
                level.upsample = Upsample(cout)
            levels.insert(0, level)
            cin = cout
        self.up = nn.ModuleList(levels)
        self.norm_out = norm(cin)
        self.conv_out = nn.Conv2d(cin, c.out_ch, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = _run_mid(self.mid, self.conv_in(z))
        for level in reversed(self.up):
            h = _run_level(level, h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Quantizer(nn.Module):
    def __init__(self, n_embed: int, embed_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)

    def nearest(self, z: Tensor) -> Tensor:
        """``[B, C, H, W]`` latents -> ``[B, H, W]`` indices of the nearest codebook vectors (L2)."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        book = self.embedding.weight
        dist = flat.pow(2).sum(1, keepdim=True) + book.pow(2).sum(1) - 2 * flat @ book.t()
        return dist.argmin(1).view(z.shape[0], z.shape[2], z.shape[3])


class VQGAN(nn.Module):
    """``encode``: images [0, 1] -> tokens ``[B, h*w]``; ``decode``: tokens -> images; ``decode_embeddings``:
    codebook-space vectors ``[B, h*w, C]`` (e.g. expected codebook vectors) -> images, differentiable."""

    def __init__(self, config: VQGANConfig):
        super().__init__()
        self.config = config
        dd = config.ddconfig
        self.encoder, self.decoder = Encoder(dd), Decoder(dd)
        self.quantize = Quantizer(config.n_embed, config.embed_dim)
        self.quant_conv = nn.Conv2d(dd.z_channels, config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, dd.z_channels, 1)
        self.factor = 2 ** (len(dd.ch_mult) - 1)

    @property
    def codebook(self) -> Tensor:
        return self.quantize.embedding.weight

    def encode(self, images: Tensor) -> Tensor:
        z = self.quant_conv(self.encoder(2 * images - 1))
        return self.quantize.nearest(z).flatten(1)

    def decode_embeddings(self, emb: Tensor) -> Tensor:
        b, length, dim = emb.shape
        side = int(round(length ** 0.5))
        if side * side != length:
            raise ValueError(f"{length} tokens do not form a square grid")
        z = emb.transpose(1, 2).reshape(b, dim, side, side)
        x = self.decoder(self.post_quant_conv(z))
        return ((x + 1) / 2).clamp(0, 1)

    def decode(self, tokens: Tensor) -> Tensor:
        tokens = tokens.reshape(tokens.shape[0], -1).clamp(0, self.config.n_embed - 1)   # [M] -> last code
        return self.decode_embeddings(self.quantize.embedding(tokens))

    def decode_soft(self, probs: Tensor) -> Tensor:
        """Per-token code distributions ``[B, L, V]`` -> images of the expected codebook vectors."""
        return self.decode_embeddings(probs.to(self.codebook.dtype) @ self.codebook)


def read_config(path: Path, field: str) -> VQGANConfig:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"{field}: '{path}' is not a readable YAML file ({exc})") from None
    params = data.get("model", {}).get("params") if isinstance(data, dict) else None
    if not isinstance(params, dict) or "ddconfig" not in params:
        raise UserError(f"{field}: '{path}' has no model.params.ddconfig (expected taming's VQGAN model.yaml)")
    try:
        return VQGANConfig.model_validate(params)
    except ValidationError as exc:
        raise UserError(f"{field}: '{path}' has invalid VQGAN settings: {exc.errors()[0]['loc']} "
                        f"{exc.errors()[0]['msg']}") from None


def load_vqgan(ckpt: Path, config: Path, field: str = "teacher.vqgan",
               expect_codes: Optional[int] = None) -> VQGAN:
    cfg = read_config(config, field)
    if expect_codes is not None and cfg.n_embed != expect_codes:
        raise UserError(f"{field}: '{config}' has n_embed={cfg.n_embed} codes but the transformer uses "
                        f"codebook_size={expect_codes}")
    model = VQGAN(cfg)
    blob = safe_torch_load(ckpt, field)
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else blob
    load_strict(model, state, ckpt, field, ignore_prefixes=("loss.",))
    return model.eval().requires_grad_(False)
