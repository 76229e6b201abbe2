"""MaskBit's VQGAN+ tokenizer with lookup-free quantisation (markweberdev/maskbit ``modeling/conv_vqgan.py``,
``modules/autoencoder.py``, ``quantizer/lookup_free.py``), module names as the released
``maskbit_tokenizer_{K}bit.bin`` so that it loads with strict=True.

* Convolutions use TensorFlow "same" padding (asymmetric for the stride-2 downsampling), no attention anywhere,
  GroupNorm(32, eps 1e-6), residual blocks without conv biases. Where a block changes the channel count the official
  code applies ``nin_shortcut`` to the block's *output* (not its input); reproduced as is.
* The non-legacy decoder (the one MaskBit's tokenizers use) lists its ``up`` stages from the lowest resolution up
  (``up.0`` is the deepest level) and runs them in that order.
* LFQ: the codebook is implicit (buffers ``bits_to_indices`` 2^j and ``codebook`` the 2^K x K table of +-1 bits);
  bit j of a code is latent channel j. Images are in [0, 1] in and out (callers clamp the decoder's output).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from plugins.teachers.maskbit.transformer import index_bits


class TokenizerArch(BaseModel):
    """``model.vq_model`` of configs/tokenizer/maskbit_tokenizer_*bit.yaml (the released shape by default)."""
    model_config = ConfigDict(extra="forbid")
    hidden_channels: int = Field(128, gt=0, description="channels of the first level (a multiple of 32)")
    channel_mult: list[int] = Field([1, 1, 2, 2, 4], min_length=1, description="channel multiplier per level; "
                                                                                "len - 1 downsamplings")
    num_res_blocks: int = Field(2, gt=0, description="residual blocks per level")
    num_channels: int = Field(3, gt=0, description="image channels")
    sample_with_conv: bool = Field(True, description="encoder downsamples with a stride-2 conv (else avg-pool)")

    @model_validator(mode="after")
    def _groups(self):
        bad = [self.hidden_channels * m for m in self.channel_mult if (self.hidden_channels * m) % 32]
        if bad:
            raise ValueError(f"GroupNorm(32) needs channel counts divisible by 32; hidden_channels x channel_mult "
                             f"gives {bad}")
        return self

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding (the extra pixel of an odd total goes right/bottom)."""

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s, d in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1], self.dilation[::-1]):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads) if any(pads) else x)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


class ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = group_norm(cin), Conv2dSame(cin, cout, 3, bias=False)
        self.norm2, self.conv2 = group_norm(cout), Conv2dSame(cout, cout, 3, bias=False)
        self.changes = cin != cout
        if self.changes:
            self.nin_shortcut = Conv2dSame(cout, cout, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (self.nin_shortcut(h) if self.changes else x)   # official: shortcut of the output


def res_blocks(cin: int, cout: int, n: int) -> nn.ModuleList:
    return nn.ModuleList(ResidualBlock(cin if i == 0 else cout, cout) for i in range(n))


class Stage(nn.Module):
    """``res_blocks`` then an optional resampling: ``down_conv`` (stride 2), avg-pool, or nearest x2 +
    ``upsample_conv`` (the official ResidualStage / DownsamplingStage / UpsamplingStage)."""

    def __init__(self, cin: int, cout: int, n: int, resample: str = "none"):
        super().__init__()
        self.res_blocks = res_blocks(cin, cout, n)
        self.resample = resample
        if resample == "down_conv":
            self.down_conv = Conv2dSame(cout, cout, 3, stride=2)
        elif resample == "up":
            self.upsample_conv = Conv2dSame(cout, cout, 3)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.res_blocks:
            x = block(x)
        if self.resample == "down_conv":
            return self.down_conv(x)
        if self.resample == "avg_pool":
            return F.avg_pool2d(x, 2, 2)
        if self.resample == "up":
            return self.upsample_conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return x


class ConvEncoder(nn.Module):
    def __init__(self, arch: TokenizerArch, token_size: int):
        super().__init__()
        h, mult, n = arch.hidden_channels, (1,) + tuple(arch.channel_mult), arch.num_res_blocks
        levels = len(arch.channel_mult)
        self.conv_in = Conv2dSame(arch.num_channels, h, 3, bias=False)
        down = "down_conv" if arch.sample_with_conv else "avg_pool"
        self.down = nn.ModuleList(Stage(h * mult[i], h * mult[i + 1], n, down if i < levels - 1 else "none")
                                  for i in range(levels))
        top = h * mult[-1]
        self.mid = Stage(top, top, n)
        self.norm_out = group_norm(top)
        self.conv_out = Conv2dSame(top, token_size, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        for stage in self.down:
            x = stage(x)
        return self.conv_out(F.silu(self.norm_out(self.mid(x))))


class ConvDecoder(nn.Module):
    def __init__(self, arch: TokenizerArch, token_size: int):
        super().__init__()
        h, n = arch.hidden_channels, arch.num_res_blocks
        mult = tuple(arch.channel_mult) + (arch.channel_mult[-1],)
        levels = len(arch.channel_mult)
        top = h * arch.channel_mult[-1]
        self.conv_in = Conv2dSame(token_size, top, 3)
        self.mid = Stage(top, top, n)
        self.up = nn.ModuleList(Stage(h * mult[i + 1], h * mult[i], n, "up" if i > 0 else "none")
                                for i in reversed(range(levels)))
        self.norm_out = group_norm(h * mult[0])
        self.conv_out = Conv2dSame(h * mult[0], arch.num_channels, 3)

    def forward(self, z: Tensor) -> Tensor:
        x = self.mid(self.conv_in(z))
        for stage in self.up:
            x = stage(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class LookupFreeQuantizer(nn.Module):
    """Only the buffers and the bit maths (the training losses are not needed to tokenise or decode)."""

    def __init__(self, token_bits: int):
        super().__init__()
        self.token_size = token_bits
        self.register_buffer("bits_to_indices", (2 ** torch.arange(token_bits)).int())
        self.register_buffer("codebook", index_bits(torch.arange(2 ** token_bits), token_bits))

    def codes(self, z: Tensor) -> Tensor:
        """Latents ``[B, K, h, w]`` -> codes ``[B, h*w]`` (sign of each channel is a bit)."""
        bits = (z > 0).long().flatten(2)                                          # [B, K, h*w]
        return (bits * self.bits_to_indices.long()[None, :, None]).sum(1)


class ConvVQModel(nn.Module):
    """``encode`` images [0, 1] -> LFQ codes ``[B, h*w]``; ``decode_bits`` +-1 (or expected) bits ``[B, h*w, K]`` ->
    images (unclamped, as the official ``decode``)."""

    def __init__(self, arch: TokenizerArch, token_bits: int):
        super().__init__()
        self.arch, self.token_bits = arch, token_bits
        self.encoder = ConvEncoder(arch, token_bits)
        self.decoder = ConvDecoder(arch, token_bits)
        self.quantize = LookupFreeQuantizer(token_bits)

    def encode(self, images: Tensor) -> Tensor:
        return self.quantize.codes(self.encoder(images))

    def decode_bits(self, bits: Tensor) -> Tensor:
        b, length, k = bits.shape
        side = math.isqrt(length)
        if side * side != length or k != self.token_bits:
            raise ValueError(f"expected a square grid of {self.token_bits}-bit latents, got {tuple(bits.shape)}")
        z = bits.transpose(1, 2).reshape(b, k, side, side)
        return self.decoder(z.to(self.decoder.conv_in.weight.dtype))

    def decode_codes(self, codes: Tensor) -> Tensor:
        return self.decode_bits(index_bits(codes.long(), self.token_bits))
