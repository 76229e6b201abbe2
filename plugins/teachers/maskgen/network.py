"""MaskGen-VQ (Kim et al. 2025, bytedance/1d-tokenizer ``modeling/maskgen.py``) and the TA-TiTok VQ decoder
(``modeling/tatitok.py``, ``modeling/modules/blocks.py``), written so that the released state dicts load by their
own key names.

MaskGen-VQ: token embedding (V + 1 + C + 1 rows: codes, [M] = V, C unused class rows kept for compatibility,
a drop row) + learned positions, diffusers ``JointTransformerBlock`` x depth (text states as the joint context,
the last block context-pre-only) with the pooled text + aesthetic sinusoid as adaLN ``temb``, diffusers
``AdaLayerNormContinuous``, and an output head tied to ``embeddings.weight[:V]`` without bias (the checkpoint
holds the tied tensor under both ``embeddings.weight`` and ``lm_head.weight``; ``fold_tied_head`` checks and
drops the copy).

TA-TiTok decoder (ViT, CLIP-style residual blocks): [class + grid^2 mask tokens + positions] ‖ [projected
quantised latent tokens + positions] ‖ [projected text guidance + positions] -> blocks -> the grid positions ->
1x1 conv to patch pixels, pixel shuffle, 3x3 conv: RGB in [0, 1] directly (``is_legacy=False``).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import torch
from diffusers.models.attention import JointTransformerBlock
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.models.normalization import AdaLayerNormContinuous
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn



class MaskGenArch(BaseModel):
    """``model.maskgen`` / ``model.vq_model`` fields of the official config.json that shape the network."""
    model_config = ConfigDict(extra="forbid")
    dim: int = Field(1024, gt=0, description="decoder_embed_dim (L: 1024, XL: 1280)")
    depth: int = Field(16, gt=0, description="decoder_depth (L: 16, XL: 20)")
    heads: int = Field(16, gt=0, description="decoder_num_heads")
    seq_len: int = Field(128, gt=0, description="vq_model.num_latent_tokens")
    codebook_size: int = Field(8192, gt=0, description="vq_model.codebook_size")
    num_classes: int = Field(1000, ge=0, description="condition_num_classes (unused rows of the embedding)")
    text_dim: int = Field(768, gt=0, description="vq_model.text_embed_dim (CLIP-L/14 width)")
    micro_dim: int = Field(256, gt=0, description="micro_condition_embed_dim (aesthetic sinusoid)")

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.dim % self.heads:   # attention splits the width evenly over the heads
            raise ValueError(f"heads={self.heads} does not divide dim={self.dim}")
        return self

    @classmethod
    def from_official(cls, config: dict) -> "MaskGenArch":
        m, vq = config["model"]["maskgen"], config["model"]["vq_model"]
        return cls(dim=m["decoder_embed_dim"], depth=m["decoder_depth"], heads=m["decoder_num_heads"],
                   seq_len=vq["num_latent_tokens"], codebook_size=vq["codebook_size"],
                   num_classes=m.get("condition_num_classes", 1000), text_dim=vq.get("text_embed_dim", 768),
                   micro_dim=m.get("micro_condition_embed_dim", 256))


SIZES = {"l": MaskGenArch(dim=1024, depth=16, heads=16), "xl": MaskGenArch(dim=1280, depth=20, heads=16)}


def fold_tied_head(state: dict) -> dict:
    """The official state dict stores the tied head under ``lm_head.weight`` too (WeightTiedLMHead); dimo's network
    computes the head from ``embeddings.weight`` (one tensor, so safetensors exports work): drop the copy after
    checking that it is the same tensor."""
    state = dict(state)
    head = state.pop("lm_head.weight", None)
    emb = state.get("embeddings.weight")
    if head is not None and emb is not None and (head.shape != emb.shape or not torch.equal(head, emb)):
        raise ValueError("lm_head.weight differs from embeddings.weight: an untied head (weight_tying=False) is not "
                         "a released MaskGen-VQ")
    return state


class MaskGenNetwork(nn.Module):
    """The MaskedNetwork of ``maskgen``: ``forward(tokens [B, L], cond [B]) -> [B, L, V]``; ``text`` (set by the
    teacher) maps prompt indices to CLIP penultimate states ``hidden [B, 77, 768]`` and ``pooled [B, 768]``."""
    text = None

    def __init__(self, arch: MaskGenArch, aesthetic_score: float = 6.5):
        super().__init__()
        self.arch, self.aesthetic_score = arch, aesthetic_score
        d = arch.dim
        self.text_embed_proj = nn.Linear(arch.text_dim, d)
        self.cond_pooled_proj = nn.Linear(arch.text_dim + arch.micro_dim, d)
        self.blocks = nn.ModuleList(JointTransformerBlock(d, arch.heads, d // arch.heads,
                                                          context_pre_only=i == arch.depth - 1)
                                    for i in range(arch.depth))
        self.norm = AdaLayerNormContinuous(d, d, elementwise_affine=False, eps=1e-6)
        self.embeddings = nn.Embedding(arch.codebook_size + 1 + arch.num_classes + 1, d)
        self.pos_embed = nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, arch.seq_len, d), 0.0, 0.02))

    # -- the MaskedNetwork protocol ----------------------------------------------------------------
    def embed_tokens(self, tokens: Tensor) -> Tensor:
        return self.embeddings(tokens.reshape(tokens.shape[0], -1))

    def code_embeddings(self) -> Tensor:
        return self.embeddings.weight[: self.arch.codebook_size]

    def frozen_parameters(self):
        """The embedding (hence the tied head) and the positions, as the official Di[M]O ``fix_emb_layer``."""
        return [self.embeddings.weight, self.pos_embed]

    def pooled_condition(self, pooled: Tensor, aesthetic: Tensor) -> Tensor:
        """[pooled text ‖ sinusoid(100 a)] (sin first, max period 1000), projected: the adaLN ``temb``."""
        sinus = get_timestep_embedding(aesthetic * 100, self.arch.micro_dim, flip_sin_to_cos=False,
                                       downscale_freq_shift=0, max_period=1000)
        return self.cond_pooled_proj(torch.cat([pooled, sinus.to(pooled.dtype)], dim=-1))

    def run(self, emb: Tensor, hidden: Tensor, pooled: Tensor, aesthetic: Tensor) -> Tensor:
        """The official forward from token embeddings ``[B, L, D]``, text states and aesthetic scores ``[B]``."""
        x = emb + self.pos_embed[:, : emb.shape[1]]
        context = self.text_embed_proj(hidden)
        temb = self.pooled_condition(pooled, aesthetic)
        for block in self.blocks:
            context, x = block(x, context, temb)
        return self.norm(x, temb) @ self.code_embeddings().t()   # WeightTiedLMHead, no bias

    def forward(self, tokens: Optional[Tensor], cond: Tensor, *, inputs_embeds: Optional[Tensor] = None) -> Tensor:
        """Di[M]O's embedding noise comes in ``inputs_embeds`` (the init's ``InitSample.embed``): on the token
        embeddings, before the positions, as for MaskGit."""
        emb = self.embed_tokens(tokens) if inputs_embeds is None else inputs_embeds
        if self.text is None:
            raise RuntimeError("MaskGenNetwork has no text conditioner; build it with MaskGenTeacher.build_network")
        text = self.text(cond.to(emb.device))
        dtype = self.text_embed_proj.weight.dtype   # the cache is fp32; bf16-weight engines need their dtype
        aesthetic = torch.full((emb.shape[0],), self.aesthetic_score, device=emb.device)
        return self.run(emb.to(dtype), text["hidden"].to(dtype), text["pooled"].to(dtype), aesthetic)


# ---------------------------------------------------------------------------------------------------
# TA-TiTok VQ decoder
# ---------------------------------------------------------------------------------------------------

class TATiTokArch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: int = Field(1024, gt=0, description="decoder width (vit_dec_model_size large: 1024)")
    layers: int = Field(24, gt=0, description="decoder blocks (large: 24)")
    heads: int = Field(16, gt=0, description="decoder heads (large: 16)")
    image_size: int = Field(256, gt=0, description="dataset.preprocessing.crop_size")
    patch: int = Field(16, gt=0, description="vit_dec_patch_size")
    latent_tokens: int = Field(128, gt=0, description="num_latent_tokens")
    token_size: int = Field(64, gt=0, description="codebook vector size")
    codebook_size: int = Field(8192, gt=0)
    text_len: int = Field(77, gt=0, description="text_context_length")
    text_dim: int = Field(768, gt=0, description="text_embed_dim")
    enc_width: int = Field(768, gt=0, description="encoder width (vit_enc_model_size base: 768)")
    enc_layers: int = Field(12, gt=0, description="encoder blocks (base: 12)")
    enc_heads: int = Field(12, gt=0, description="encoder heads (base: 12)")
    enc_patch: int = Field(16, gt=0, description="vit_enc_patch_size")

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.width % self.heads:   # nn.MultiheadAttention needs it
            raise ValueError(f"heads={self.heads} does not divide width={self.width}")
        return self

    @classmethod
    def from_official(cls, config: dict) -> "TATiTokArch":
        vq = config["model"]["vq_model"]
        sizes = {"small": (512, 8, 8), "base": (768, 12, 12), "large": (1024, 24, 16)}
        width, layers, heads = sizes[vq.get("vit_dec_model_size", "large")]
        enc_width, enc_layers, enc_heads = sizes[vq.get("vit_enc_model_size", "base")]
        if vq.get("is_legacy", True) or vq.get("quantize_mode", "vq") != "vq" or vq.get("use_l2_norm", False):
            raise ValueError("only the VQ TA-TiTok with is_legacy=False (RGB head) and no l2-normalised codebook "
                             "is a MaskGen-VQ tokenizer")
        return cls(width=width, layers=layers, heads=heads, image_size=config["dataset"]["preprocessing"]["crop_size"],
                   patch=vq.get("vit_dec_patch_size", 16), latent_tokens=vq["num_latent_tokens"],
                   token_size=vq["token_size"], codebook_size=vq["codebook_size"],
                   text_len=vq.get("text_context_length", 77), text_dim=vq.get("text_embed_dim", 768),
                   enc_width=enc_width, enc_layers=enc_layers, enc_heads=enc_heads,
                   enc_patch=vq.get("vit_enc_patch_size", 16))


class ResidualBlock(nn.Module):
    """Pre-norm attention + MLP (keys ln_1, attn.in_proj_*, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, 4 * width)), ("gelu", nn.GELU()),
                                              ("c_proj", nn.Linear(4 * width, width))]))

    def forward(self, x: Tensor) -> Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class TATiTokDecoder(nn.Module):
    def __init__(self, a: TATiTokArch):
        super().__init__()
        self.arch, self.grid = a, a.image_size // a.patch
        w = a.width
        self.decoder_embed = nn.Linear(a.token_size, w)
        self.class_embedding = nn.Parameter(w ** -0.5 * torch.randn(1, w))
        self.positional_embedding = nn.Parameter(w ** -0.5 * torch.randn(self.grid ** 2 + 1, w))
        self.mask_token = nn.Parameter(w ** -0.5 * torch.randn(1, 1, w))
        self.latent_token_positional_embedding = nn.Parameter(w ** -0.5 * torch.randn(a.latent_tokens, w))
        self.ln_pre = nn.LayerNorm(w)
        self.transformer = nn.ModuleList(ResidualBlock(w, a.heads) for _ in range(a.layers))
        self.ln_post = nn.LayerNorm(w)
        self.ffn = nn.Sequential(nn.Conv2d(w, a.patch * a.patch * 3, 1), nn.PixelShuffle(a.patch))
        self.conv_out = nn.Conv2d(3, 3, 3, padding=1)
        self.text_guidance_proj = nn.Linear(a.text_dim, w)
        self.text_guidance_positional_embedding = nn.Parameter(w ** -0.5 * torch.randn(a.text_len, w))

    def forward(self, z: Tensor, text_guidance: Tensor) -> Tensor:
        """``z [B, N, token_size]`` quantised latent tokens, ``text_guidance [B, 77, 768]`` -> RGB ``[B, 3, H, W]``."""
        b, g = z.shape[0], self.grid
        grid = torch.cat([self.class_embedding.expand(b, 1, -1), self.mask_token.expand(b, g * g, -1)], 1)
        latents = self.decoder_embed(z) + self.latent_token_positional_embedding[: z.shape[1]]
        text = self.text_guidance_proj(text_guidance) + self.text_guidance_positional_embedding
        x = self.ln_pre(torch.cat([grid + self.positional_embedding, latents, text], 1))
        for block in self.transformer:
            x = block(x)
        x = self.ln_post(x[:, 1: 1 + g * g])
        # (p1 p2 c) channel order of the official rearrange is PixelShuffle's (c p1 p2) only for c = 1:
        # reorder the conv's output channels from (p1 p2 c) to (c p1 p2) first.
        x = self.ffn[0](x.transpose(1, 2).reshape(b, -1, g, g))
        p = self.arch.patch
        x = x.reshape(b, p, p, 3, g, g).permute(0, 3, 1, 2, 4, 5).reshape(b, 3 * p * p, g, g)
        return self.conv_out(self.ffn[1](x))


class TATiTokEncoder(nn.Module):
    """ViT encoder: [class + patches + positions] ‖ [learned latent tokens + positions] -> blocks -> the latent
    positions -> LayerNorm -> 1x1 conv to the codebook vector size (``is_legacy=False`` token-major layout)."""

    def __init__(self, a: TATiTokArch):
        super().__init__()
        w, self.grid = a.enc_width, a.image_size // a.enc_patch
        self.patch_embed = nn.Conv2d(3, w, a.enc_patch, stride=a.enc_patch)
        self.class_embedding = nn.Parameter(w ** -0.5 * torch.randn(1, w))
        self.positional_embedding = nn.Parameter(w ** -0.5 * torch.randn(self.grid ** 2 + 1, w))
        self.latent_token_positional_embedding = nn.Parameter(w ** -0.5 * torch.randn(a.latent_tokens, w))
        self.ln_pre = nn.LayerNorm(w)
        self.transformer = nn.ModuleList(ResidualBlock(w, a.enc_heads) for _ in range(a.enc_layers))
        self.ln_post = nn.LayerNorm(w)
        self.conv_out = nn.Conv2d(w, a.token_size, 1)

    def forward(self, pixels: Tensor, latent_tokens: Tensor) -> Tensor:
        """Images in [0, 1] ``[B, 3, H, W]`` -> continuous latent tokens ``[B, N, token_size]``."""
        b = pixels.shape[0]
        x = self.patch_embed(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_embedding.expand(b, 1, -1), x], 1) + self.positional_embedding
        latents = latent_tokens.expand(b, -1, -1) + self.latent_token_positional_embedding
        x = self.ln_pre(torch.cat([x, latents], 1))
        for block in self.transformer:
            x = block(x)
        x = self.ln_post(x[:, 1 + self.grid ** 2:])
        return self.conv_out(x.transpose(1, 2)[..., None])[..., 0].transpose(1, 2)   # a 1x1 conv per token


class TATiTokVQ(nn.Module):
    """TA-TiTok VQ: ``encoder`` + ``latent_tokens``, the codebook (``quantize.embedding``) and ``decoder``."""

    def __init__(self, arch: TATiTokArch):
        super().__init__()
        self.encoder = TATiTokEncoder(arch)
        self.latent_tokens = nn.Parameter(arch.enc_width ** -0.5 * torch.randn(arch.latent_tokens, arch.enc_width))
        self.decoder = TATiTokDecoder(arch)
        self.quantize = nn.Module()
        self.quantize.embedding = nn.Embedding(arch.codebook_size, arch.token_size)

    def encode(self, images: Tensor) -> Tensor:
        """Images in [0, 1] -> the nearest codes of the latent tokens ``[B, N]`` (fp32, as the official quantizer)."""
        z = self.encoder(images.float(), self.latent_tokens).float()
        codebook = self.quantize.embedding.weight.float()
        d = (z ** 2).sum(-1, keepdim=True) + (codebook ** 2).sum(-1) - 2 * z @ codebook.t()
        return d.argmin(-1)

    def decode_tokens(self, tokens: Tensor, text_guidance: Tensor) -> Tensor:
        return self.decoder(self.quantize.embedding(tokens.reshape(tokens.shape[0], -1)), text_guidance)

    def decode_soft(self, probs: Tensor, text_guidance: Tensor) -> Tensor:
        """Expected codebook vectors ``probs [B, N, V] @ codebook``, differentiable in ``probs``."""
        return self.decoder(probs.float() @ self.quantize.embedding.weight.float(), text_guidance)
