"""The ``maskgit`` teacher: MaskGIT-pytorch (Besnier & Chen 2023) on ImageNet, the class-conditional
teacher of the Di[M]O paper, with its taming VQGAN; and ``halton_maskgit``, its successor Halton-MaskGIT
(Besnier et al. 2025) with LlamaGen's VQ.

Files of ``maskgit`` (hub ``llvictorll/Maskgit-pytorch``, or the same layout in a local folder)::

    pretrained_maskgit/MaskGIT/MaskGIT_ImageNet_256.pth    transformer, 256 px (16 x 16 tokens)
    pretrained_maskgit/MaskGIT/MaskGIT_ImageNet_512.pth    transformer, 512 px (32 x 32 tokens)
    pretrained_maskgit/VQGAN/last.ckpt, model.yaml         VQGAN f16, 1024 codes

Files of ``halton_maskgit``: ``ImageNet_{256,384}_{size}.pth`` (hub ``llvictorll/Halton-MaskGIT``) and
``vq_ds16_c2i.pt`` (hub ``FoundationVision/LlamaGen``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from pydantic import Field, field_validator
from torch import Tensor

from core.errors import UserError
from core.interfaces import PluginConfig, Teacher
from plugins.teachers.maskgit.halton import (HALTON_SIZES, HaltonArch, HaltonTransformer, LlamaGenVQ,
                                             LlamaGenVQConfig, fold_tied_head)
from plugins.teachers.maskgit.loading import load_strict, locate, read_weights_file, safe_torch_load, strip_prefixes
from plugins.teachers.maskgit.transformer import PATCH, SIZES, MaskGitArch, MaskTransformer

HUB_ID = "llvictorll/Maskgit-pytorch"
TRANSFORMER_FILE = "pretrained_maskgit/MaskGIT/MaskGIT_ImageNet_{resolution}.pth"
VQGAN_CKPT = "pretrained_maskgit/VQGAN/last.ckpt"
VQGAN_YAML = "pretrained_maskgit/VQGAN/model.yaml"
HALTON_HUB_ID = "llvictorll/Halton-MaskGIT"
LLAMAGEN_HUB_ID = "FoundationVision/LlamaGen"


class VQTeacherConfig(PluginConfig):
    resolution: int = Field(256, gt=0, description="image size (a multiple of 16; tokens = (resolution/16)^2)")

    @field_validator("resolution")
    @classmethod
    def _multiple_of_patch(cls, v: int) -> int:
        if v % PATCH:
            raise ValueError(f"must be a multiple of {PATCH} (the VQ's downsampling); released: 256, 512 "
                             f"(MaskGIT-pytorch), 256, 384 (Halton-MaskGIT)")
        return v


class VQTeacher(Teacher):
    """Shared by the MaskGIT generations: a token grid of (resolution/16)^2, a transformer file inside
    ``checkpoint``, a VQ decoder loaded on first use, and the null class -1 for CFG."""

    def __init__(self, config):
        super().__init__(config)
        side = config.resolution // PATCH
        self.seq_len = side * side
        self.vocab_size = self.mask_id = config.codebook_size
        self.num_classes = config.num_classes
        self.image_shape = (3, config.resolution, config.resolution)
        self._vqgan = None

    def default_transformer_file(self) -> str:
        raise NotImplementedError

    def new_network(self):
        raise NotImplementedError

    def load_vqgan(self):
        raise NotImplementedError

    def official_state(self, state: dict) -> dict:
        """The official state dict -> this network's (identity unless a subclass renames or folds keys)."""
        return state

    def checkpoint_path(self) -> Path:
        name = self.config.transformer_file or self.default_transformer_file()
        return locate(self.config.checkpoint, name, "teacher.checkpoint", self.weights_size)

    def weights_size(self) -> str:
        """How big the transformer's weights are, counted on the meta device (no memory)."""
        with torch.device("meta"):
            n = sum(p.numel() for p in self.new_network().parameters())
        return f"{n:,} parameters: at least {n * 4 / 1e9:.2f} GB in float32"

    def build_network(self, load_weights: bool = True):
        net = self.new_network()
        if load_weights:
            path = self.checkpoint_path()
            load_strict(net, self.official_state(strip_prefixes(read_state_dict(path))), path, "teacher.checkpoint")
        return net

    def save_pretrained(self, network, path) -> Path:
        """The official layout (``model_state_dict`` in a torch.save dict)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"iter": 0, "global_epoch": 0, "model_state_dict": network.state_dict()}, path)
        return path

    def null_condition(self, cond: Tensor) -> Tensor:
        return torch.full_like(cond, -1)

    def vqgan(self, device=None):
        if self._vqgan is None:
            self._vqgan = self.load_vqgan()
        if device is not None:
            self._vqgan.to(device)
        return self._vqgan

    def decode(self, tokens: Tensor) -> Tensor:
        return self.vqgan(tokens.device).decode(tokens)

    def decode_soft(self, probs: Tensor) -> Tensor:
        """Per-token code distributions ``[B, L, V]`` -> images of the expected codebook vectors."""
        return self.vqgan(probs.device).decode_soft(probs)

    def encode(self, images: Tensor) -> Tensor:
        """Images in [0, 1] ``[B, 3, H, W]`` -> tokens ``[B, L]`` (nearest codebook vectors)."""
        return self.vqgan(images.device).encode(images)


class MaskGitConfig(VQTeacherConfig):
    checkpoint: str = Field(HUB_ID, description="transformer weights: a .pth/.safetensors file, a folder with "
                                                "the hub layout, or a hub id")
    size: str = Field("base", description="transformer size: base (174M, released), big or huge")
    arch: Optional[MaskGitArch] = Field(None, description="explicit dim/depth/heads/mlp_dim/dropout; "
                                                          "overrides size (e.g. tiny test models)")
    codebook_size: int = Field(1024, gt=0, description="VQGAN codes V; [M] is V")
    num_classes: int = Field(1000, gt=0, description="classes C; the null class is input id V + C + 1")
    transformer_file: Optional[str] = Field(None, description="file inside checkpoint; default "
                                                              "pretrained_maskgit/MaskGIT/MaskGIT_ImageNet_<res>.pth")
    vqgan: Optional[str] = Field(None, description="folder or hub id of the VQGAN; default: checkpoint "
                                                   "(or the folders above it when checkpoint is a file)")
    vqgan_checkpoint: str = Field(VQGAN_CKPT, description="VQGAN weights inside vqgan (Lightning last.ckpt)")
    vqgan_config: str = Field(VQGAN_YAML, description="taming model.yaml inside vqgan")

    @field_validator("size")
    @classmethod
    def _known_size(cls, v: str) -> str:
        if v not in SIZES:
            raise ValueError(f"unknown size '{v}'; valid: {', '.join(SIZES)}")
        return v


class MaskGitTeacher(VQTeacher):
    """MaskGIT-pytorch, 1024 taming VQGAN codes, class token appended to the input."""
    Config = MaskGitConfig
    recipe = "maskgit"   # plugins/recipes/maskgit/*.yaml (subclasses inherit them)

    def default_transformer_file(self) -> str:
        return TRANSFORMER_FILE.format(resolution=self.config.resolution)

    def new_network(self) -> MaskTransformer:
        return MaskTransformer(self.config.resolution // PATCH, self.config.arch or SIZES[self.config.size],
                               self.config.codebook_size, self.config.num_classes)

    def input_class_token_ids(self) -> Tensor:
        return torch.arange(self.vocab_size + 1, self.vocab_size + 1 + self.num_classes)

    def input_vocab_size(self) -> int:
        return self.vocab_size + 2 + self.num_classes   # codes, [M], classes, null class

    def load_vqgan(self):
        from plugins.teachers.maskgit.vqgan import load_vqgan
        sources = [self.config.vqgan] if self.config.vqgan else self._vqgan_sources()
        for i, source in enumerate(sources):
            try:
                ckpt = locate(source, self.config.vqgan_checkpoint, "teacher.vqgan")
                cfg = locate(source, self.config.vqgan_config, "teacher.vqgan")
                break
            except UserError:
                if i == len(sources) - 1:
                    raise
        return load_vqgan(ckpt, cfg, "teacher.vqgan", expect_codes=self.config.codebook_size)

    def _vqgan_sources(self) -> list[str]:
        path = Path(self.config.checkpoint).expanduser()
        if path.is_file():   # .../pretrained_maskgit/MaskGIT/x.pth -> look beside and above it
            return [str(path.parent), str(path.parent.parent)]
        return [self.config.checkpoint]


class HaltonConfig(VQTeacherConfig):
    checkpoint: str = Field(HALTON_HUB_ID, description="transformer weights: a .pth file, a folder or a hub id")
    size: str = Field("base", description="tiny, small, base (released at 256), large (released at 384), xlarge")
    arch: Optional[HaltonArch] = Field(None, description="explicit dim/depth/heads/mlp_ratio/dropout/registers; "
                                                         "overrides size")
    codebook_size: int = Field(16384, gt=0, description="LlamaGen VQ codes V; [M] is V")
    num_classes: int = Field(1000, gt=0, description="classes C; the null class is C")
    transformer_file: Optional[str] = Field(None, description="file inside checkpoint; default "
                                                              "ImageNet_<res>_<size>.pth")
    vqgan: str = Field(LLAMAGEN_HUB_ID, description="file, folder or hub id of LlamaGen's VQ")
    vqgan_checkpoint: str = Field("vq_ds16_c2i.pt", description="VQ weights inside vqgan (key 'model')")
    vq: LlamaGenVQConfig = Field(default_factory=LlamaGenVQConfig, description="VQ shape (VQ-16 by default)")

    @field_validator("size")
    @classmethod
    def _known_size(cls, v: str) -> str:
        if v not in HALTON_SIZES:
            raise ValueError(f"unknown size '{v}'; valid: {', '.join(HALTON_SIZES)}")
        return v


class HaltonTeacher(VQTeacher):
    """Halton-MaskGIT: adaLN class conditioning (no class tokens in the input), LlamaGen VQ 16384 codes."""
    Config = HaltonConfig
    recipe = "halton_maskgit"   # plugins/recipes/halton_maskgit/*.yaml (subclasses inherit them)

    def default_transformer_file(self) -> str:
        return f"ImageNet_{self.config.resolution}_{self.config.size}.pth"

    def official_state(self, state: dict) -> dict:
        try:
            return fold_tied_head(state)
        except ValueError as exc:
            raise UserError(f"teacher.checkpoint: {exc}") from None

    def save_pretrained(self, network, path) -> Path:
        """The official layout, with the tied ``head.weight`` written under its second name too."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {**network.state_dict(), "head.weight": network.tok_emb.weight.detach()}
        torch.save({"iter": 0, "global_epoch": 0, "model_state_dict": state}, path)
        return path

    def new_network(self) -> HaltonTransformer:
        return HaltonTransformer(self.config.resolution // PATCH, self.config.arch or HALTON_SIZES[self.config.size],
                                 self.config.codebook_size, self.config.num_classes)

    def load_vqgan(self):
        if self.config.vq.codebook_size != self.config.codebook_size:
            raise UserError(f"teacher.vq.codebook_size={self.config.vq.codebook_size} differs from "
                            f"teacher.codebook_size={self.config.codebook_size}")
        path = locate(self.config.vqgan, self.config.vqgan_checkpoint, "teacher.vqgan")
        blob = safe_torch_load(path, "teacher.vqgan")
        model = LlamaGenVQ(self.config.vq)
        load_strict(model, blob.get("model", blob) if isinstance(blob, dict) else blob, path, "teacher.vqgan")
        return model.eval().requires_grad_(False)


def read_state_dict(path: Path) -> dict:
    """``model_state_dict`` of an official .pth (or a bare state dict / safetensors file)."""
    field = "teacher.checkpoint"
    blob = read_weights_file(path, field)
    if isinstance(blob, dict) and "model_state_dict" in blob:
        return blob["model_state_dict"]
    if isinstance(blob, dict) and blob and all(torch.is_tensor(v) for v in blob.values()):
        return blob   # a bare state dict, e.g. the released Di[M]O generator (Yuanzhi/DiMO)
    keys = list(blob)[:5] if isinstance(blob, dict) else type(blob).__name__
    raise UserError(f"{field}: '{path}' has no 'model_state_dict' (found {keys}); expected a MaskGIT-pytorch "
                    f".pth checkpoint")
