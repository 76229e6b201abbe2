"""The embedded default teacher: scikit-learn's 8x8 digits (1,797 real images, no download).

Pixels take the values 0..16, so an image is exactly 64 tokens over a vocabulary of 17 grey levels
(+ [M]). The network is a small MaskGit-style transformer, class-conditional with a null class for
CFG. ``python -m core.run method=mdm teacher=digits`` pre-trains it and caches the weights; later runs
find them by default.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

import torch
from pydantic import Field
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from core.cache import cache_dir
from core.checkpoint import atomic_save_safetensors, load_state_checked
from core.errors import UserError
from core.hub import resolve_file
from core.interfaces import PluginConfig, Teacher
from plugins.teachers.evaluator import ClassifierEvaluator, MLPClassifier
from plugins.teachers.transformer import MaskedTransformer, TransformerSpec
from registry import hookimpl

WEIGHTS = "digits_teacher.safetensors"


def load_network_weights(network, path: Path, field: str = "teacher.checkpoint") -> None:
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{field}: '{path}' is corrupt or not a safetensors file ({exc})") from None
    arch = getattr(network, "spec", None)
    expected = f"teacher.arch: {arch.model_dump()}" if arch is not None else ""
    load_state_checked(network, state, path, field, expected)


class DigitsTeacher(Teacher):
    """scikit-learn's 8x8 digits as 64 tokens over 17 grey levels; a small class-conditional MaskGit-style
    transformer, pre-trained by `method=mdm` and cached (the embedded default, no download)."""

    class Config(PluginConfig):
        checkpoint: Optional[str] = Field(None, description="safetensors file, folder or hub id; "
                                                            "default: the cached pre-trained teacher")
        arch: TransformerSpec = Field(default_factory=TransformerSpec, description="transformer size")

    seq_len, vocab_size, mask_id, num_classes = 64, 17, 17, 10
    image_shape = (1, 8, 8)
    recipe = "digits"   # plugins/recipes/digits/*.yaml (subclasses inherit them)

    def arch_id(self) -> str:
        return hashlib.sha256(self.config.arch.model_dump_json().encode()).hexdigest()[:8]

    def default_checkpoint(self) -> Path:
        return cache_dir("digits") / f"teacher-{self.arch_id()}.safetensors"

    def checkpoint_path(self) -> Optional[Path]:
        if self.config.checkpoint:
            return resolve_file(self.config.checkpoint, WEIGHTS)
        path = self.default_checkpoint()
        return path if path.is_file() else None

    def has_weights(self) -> bool:
        return self.checkpoint_path() is not None

    def build_network(self, load_weights: bool = True) -> MaskedTransformer:
        net = MaskedTransformer(self.seq_len, self.vocab_size, self.num_classes, self.config.arch)
        if load_weights:
            path = self.checkpoint_path()
            if path is None:
                raise UserError("no pre-trained digits teacher is cached for this architecture; train it with "
                                "`python -m core.run method=mdm teacher=digits` or set teacher.checkpoint=<file>")
            load_network_weights(net, path)
        return net

    def save_pretrained(self, network, path=None) -> Path:
        path = Path(path) if path else self.default_checkpoint()
        atomic_save_safetensors(network.state_dict(), path,
                                metadata={"arch": self.config.arch.model_dump_json(), "teacher": "digits"})
        return path

    def null_condition(self, cond: Tensor) -> Tensor:
        return torch.full_like(cond, -1)

    def input_class_token_ids(self) -> Tensor:
        return torch.arange(self.vocab_size + 1, self.vocab_size + 1 + self.num_classes)

    def input_vocab_size(self) -> int:
        return self.vocab_size + 2 + self.num_classes   # codes, [M], classes, null class

    def encode(self, images: Tensor) -> Tensor:
        """Images in [0, 1] -> grey-level tokens (the digits 'tokenizer' is quantisation)."""
        return torch.round(images.clamp(0, 1) * (self.vocab_size - 1)).long().flatten(1)

    # -- data and images ------------------------------------------------------------------------
    def dataset(self) -> tuple[Tensor, Tensor]:
        from sklearn.datasets import load_digits
        data = load_digits()
        return torch.tensor(data.data, dtype=torch.long), torch.tensor(data.target, dtype=torch.long)

    def decode(self, tokens: Tensor) -> Tensor:
        return (tokens.clamp(0, self.vocab_size - 1).float() / (self.vocab_size - 1)).view(-1, *self.image_shape)

    def decode_soft(self, probs: Tensor) -> Tensor:
        levels = torch.linspace(0, 1, self.vocab_size, device=probs.device, dtype=probs.dtype)
        return (probs @ levels).view(-1, *self.image_shape)

    def evaluator(self) -> ClassifierEvaluator:
        tokens, labels = self.dataset()
        return ClassifierEvaluator(self.decode(tokens), labels, MLPClassifier(64, 10),
                                   cache_dir("digits") / "classifier.safetensors")


@hookimpl
def dimo_register(register):
    register("teacher", "digits", DigitsTeacher)
