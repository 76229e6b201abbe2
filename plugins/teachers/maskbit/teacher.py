"""The ``maskbit`` teacher: MaskBit (Weber et al., TMLR 2024), class-conditional ImageNet 256x256 with K-bit LFQ
tokens factorised in groups (14 bits = 2 groups of 128 values per position), the teacher of the Soft-Di[M]O paper's
Table 1. The token layout dimo uses (a flat grid of L*G entries) is described in ``transformer.py``.

Files (one hub repo each, or any local folder / file)::

    markweber/maskbit_generator_{K}bit/maskbit_generator_{K}bit.bin    LFQBert, torch.save(state_dict)
    markweber/maskbit_tokenizer_{K}bit/maskbit_tokenizer_{K}bit.bin    VQGAN+ with LFQ, torch.save(state_dict)

The generator's keys ``token_emb*`` are renamed to ``input_proj*`` first (as the official ``load_pretrained``
with ``rename_keys={"token_emb": "input_proj"}``); both then load with strict=True.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor

from core.errors import UserError
from core.interfaces import PluginConfig, Teacher
from plugins.teachers.maskbit.tokenizer import ConvVQModel, TokenizerArch
from plugins.teachers.maskbit.transformer import (PATCH, LFQBert, MaskBitArch, combine_groups, index_bits,
                                                  split_codes)
from plugins.teachers.maskgit.loading import load_strict, locate, read_weights_file, strip_prefixes

GENERATOR_HUB = "markweber/maskbit_generator_{bits}bit"
TOKENIZER_HUB = "markweber/maskbit_tokenizer_{bits}bit"
RELEASED_BITS = (10, 12, 14, 16, 18)
RENAME = {"token_emb": "input_proj"}


class MaskBitConfig(PluginConfig):
    bits: int = Field(14, gt=1, description="LFQ bits K per position (released: 10, 12, 14, 16, 18)")
    splits: int = Field(2, gt=0, description="groups G per position; each holds K/G bits (released: 2)")
    resolution: int = Field(256, gt=0, description="image size (a multiple of 16; positions = (resolution/16)^2)")
    num_classes: int = Field(1000, gt=0, description="classes; the dropped label is class id num_classes")
    checkpoint: Optional[str] = Field(None, description="generator: a .bin/.pth file, a folder or a hub id; "
                                                        "default markweber/maskbit_generator_<bits>bit")
    generator_file: Optional[str] = Field(None, description="file inside checkpoint; default "
                                                            "maskbit_generator_<bits>bit.bin")
    tokenizer: Optional[str] = Field(None, description="tokenizer: a file, a folder or a hub id; default "
                                                       "markweber/maskbit_tokenizer_<bits>bit")
    tokenizer_file: Optional[str] = Field(None, description="file inside tokenizer; default "
                                                            "maskbit_tokenizer_<bits>bit.bin")
    data: Optional[str] = Field(None, description="real tokens for methods that need data (SDTT, di4c, Soft-Di[M]O's "
                                                  "GAN): a .safetensors/.npz with 'tokens' (LFQ codes [N, L] or the "
                                                  "flat grid [N, L*G]) and 'labels' [N], e.g. ImageNet encoded with "
                                                  "teacher.encode")
    arch: MaskBitArch = Field(default_factory=MaskBitArch, description="generator shape (released: 1024/24/16/4096)")
    tokenizer_arch: TokenizerArch = Field(default_factory=TokenizerArch, description="VQGAN+ shape (released: "
                                                                                      "128, [1,1,2,2,4], 2 blocks)")

    @field_validator("resolution")
    @classmethod
    def _multiple_of_patch(cls, v: int) -> int:
        if v % PATCH:
            raise ValueError(f"must be a multiple of {PATCH} (the tokenizer's downsampling); released: 256")
        return v

    @model_validator(mode="after")
    def _bits_split(self):
        if self.bits % self.splits:
            raise ValueError(f"bits={self.bits} is not divisible by splits={self.splits} (released: bits in "
                             f"{', '.join(map(str, RELEASED_BITS))} with splits=2)")
        if self.tokenizer_arch.downsampling != PATCH:
            raise ValueError(f"tokenizer_arch.channel_mult has {len(self.tokenizer_arch.channel_mult)} levels, i.e. "
                             f"{self.tokenizer_arch.downsampling}x downsampling; the generator needs {PATCH}x (5 levels)")
        return self


class MaskBitTeacher(Teacher):
    """MaskBit: a flat grid of L*G group entries (see transformer.py), bit inputs, class appended, VQGAN+ decoder."""
    Config = MaskBitConfig
    recipe = "maskbit"   # plugins/recipes/maskbit/*.yaml (subclasses inherit them)

    def __init__(self, config: MaskBitConfig):
        super().__init__(config)
        side = config.resolution // PATCH
        self.positions, self.groups = side * side, config.splits
        self.group_bits = config.bits // config.splits
        self.seq_len = self.positions * self.groups
        self.vocab_size = self.mask_id = 2 ** self.group_bits
        self.num_classes = config.num_classes
        self.image_shape = (3, config.resolution, config.resolution)
        self._tokenizer = None
        self._data = None

    # -- files ---------------------------------------------------------------------------------------
    def _source(self, spec: Optional[str], hub: str, file: Optional[str], kind: str, field: str) -> Path:
        bits = self.config.bits
        return locate(spec or hub.format(bits=bits), file or f"maskbit_{kind}_{bits}bit.bin", field)

    def generator_path(self) -> Path:
        c = self.config
        return self._source(c.checkpoint, GENERATOR_HUB, c.generator_file, "generator", "teacher.checkpoint")

    def checkpoint_path(self) -> Path:
        """The generator file (hashed into benchmark provenance; a UserError when it is not available)."""
        return self.generator_path()

    def tokenizer_path(self) -> Path:
        c = self.config
        return self._source(c.tokenizer, TOKENIZER_HUB, c.tokenizer_file, "tokenizer", "teacher.tokenizer")

    # -- the network ---------------------------------------------------------------------------------
    def new_network(self) -> LFQBert:
        c = self.config
        return LFQBert(c.resolution // PATCH, c.arch, c.bits, c.splits, c.num_classes)

    def build_network(self, load_weights: bool = True) -> LFQBert:
        net = self.new_network()
        if load_weights:
            path = self.generator_path()
            load_strict(net, official_generator_state(read_state_dict(path, "teacher.checkpoint")), path,
                        "teacher.checkpoint")
        return net

    def save_pretrained(self, network, path) -> Path:
        """The released layout: a bare ``torch.save(state_dict)`` with the official ``token_emb`` name."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k.replace("input_proj", "token_emb", 1) if k.startswith("input_proj") else k: v
                 for k, v in network.state_dict().items()}
        torch.save(state, path)
        return path

    def null_condition(self, cond: Tensor) -> Tensor:
        return torch.full_like(cond, -1)

    def dataset(self) -> Optional[tuple[Tensor, Tensor]]:
        if self.config.data is None:
            return None
        if self._data is None:
            self._data = read_token_data(self.config.data, self)
        return self._data

    # -- the tokenizer -------------------------------------------------------------------------------
    def tokenizer(self, device=None) -> ConvVQModel:
        if self._tokenizer is None:
            path = self.tokenizer_path()
            model = ConvVQModel(self.config.tokenizer_arch, self.config.bits)
            load_strict(model, read_state_dict(path, "teacher.tokenizer"), path, "teacher.tokenizer")
            self._tokenizer = model.eval().requires_grad_(False)
        if device is not None:
            self._tokenizer.to(device)
        return self._tokenizer

    def codes(self, tokens: Tensor) -> Tensor:
        """Flat grid ``[B, L*G]`` -> LFQ codes ``[B, L]`` ([M] entries read as code 0 of their group)."""
        tokens = tokens.reshape(tokens.shape[0], -1).long()
        tokens = torch.where(tokens >= self.vocab_size, torch.zeros_like(tokens), tokens)
        return combine_groups(tokens, self.groups, self.group_bits)

    def decode(self, tokens: Tensor) -> Tensor:
        return self.tokenizer(tokens.device).decode_codes(self.codes(tokens)).float().clamp(0, 1)

    def decode_soft(self, probs: Tensor) -> Tensor:
        """Group distributions ``[B, L*G, C]`` -> images of the expected bits (LFQ's "codebook vectors" are bits,
        so E^T p per group is the expected latent; the G groups concatenate to the K channels)."""
        tok = self.tokenizer(probs.device)
        table = index_bits(torch.arange(self.vocab_size, device=probs.device), self.group_bits)
        bits = probs.float() @ table                                             # [B, L*G, K/G]
        return tok.decode_bits(bits.reshape(bits.shape[0], self.positions, self.config.bits)).float().clamp(0, 1)

    def encode(self, images: Tensor) -> Tensor:
        """Images in [0, 1] ``[B, 3, H, W]`` -> flat grid ``[B, L*G]``."""
        return split_codes(self.tokenizer(images.device).encode(images), self.groups, self.group_bits)


def official_generator_state(state: dict) -> dict:
    """The released generator's keys -> this network's: DDP/compile prefixes off, ``token_emb`` -> ``input_proj``."""
    out = {}
    for key, value in strip_prefixes(state).items():
        for old, new in RENAME.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


def read_state_dict(path: Path, field: str) -> dict:
    """A bare state dict (``torch.save(state_dict)``, the released format) or a safetensors file."""
    blob = read_weights_file(path, field)
    for key in ("state_dict", "model_state_dict", "model"):   # tolerate common wrappers
        if isinstance(blob, dict) and isinstance(blob.get(key), dict):
            blob = blob[key]
            break
    if not isinstance(blob, dict) or not blob or not all(torch.is_tensor(v) for v in blob.values()):
        raise UserError(f"{field}: '{path}' does not hold a state dict of tensors (expected MaskBit's "
                        f"torch.save(state_dict) .bin)")
    return blob


def read_token_data(spec: str, teacher: MaskBitTeacher) -> tuple[Tensor, Tensor]:
    """``teacher.data``: tokens (LFQ codes ``[N, L]`` or the flat grid ``[N, L*G]``) and labels ``[N]``."""
    field, path = "teacher.data", Path(spec).expanduser()
    try:
        if path.suffix == ".npz":
            import numpy as np
            with np.load(path, allow_pickle=False) as blob:
                data = {k: torch.from_numpy(blob[k]) for k in blob.files}
        else:
            from safetensors.torch import load_file
            data = load_file(str(path))
    except Exception as exc:   # numpy, safetensors and the OS raise many types for unreadable files
        raise UserError(f"{field}='{spec}' is missing or not a readable .safetensors/.npz file ({exc})") from None
    if "tokens" not in data or "labels" not in data:
        raise UserError(f"{field}='{spec}' needs arrays 'tokens' and 'labels' (it holds: {', '.join(data)})")
    tokens, labels = data["tokens"].long(), data["labels"].long().reshape(-1)
    if tokens.dim() == 2 and tokens.shape[1] == teacher.positions and teacher.groups > 1:
        if tokens.min() < 0 or tokens.max() >= 2 ** teacher.config.bits:
            raise UserError(f"{field}: LFQ codes must lie in 0..{2 ** teacher.config.bits - 1}")
        tokens = split_codes(tokens, teacher.groups, teacher.group_bits)
    if tokens.dim() != 2 or tokens.shape[1] != teacher.seq_len or len(tokens) != len(labels):
        raise UserError(f"{field}: tokens {tuple(tokens.shape)} and labels {tuple(labels.shape)} do not fit this "
                        f"teacher: expected [N, {teacher.positions}] codes or [N, {teacher.seq_len}] group entries "
                        f"and N labels")
    if tokens.min() < 0 or tokens.max() >= teacher.vocab_size or labels.min() < 0 or \
            labels.max() >= teacher.num_classes:
        raise UserError(f"{field}: group entries must lie in 0..{teacher.vocab_size - 1} and labels in "
                        f"0..{teacher.num_classes - 1}")
    return tokens, labels
