"""The embedded default teacher: scikit-learn's 8x8 digits (1,797 real images, no download).

Pixels take the values 0..16, so an image is exactly 64 tokens over a vocabulary of 17 grey levels
(+ [M]). The network is a small MaskGit-style transformer, class-conditional with a null class for
CFG. ``python -m core.run method=mdm teacher=digits`` pre-trains it and caches the weights; later runs
find them by default.
"""
from __future__ import annotations

from typing import Optional

import torch
from pydantic import Field
from torch import Tensor

from core.cache import cache_dir
from core.interfaces import PluginConfig
from plugins.teachers.embedded import CachedTransformerTeacher
from plugins.teachers.evaluator import ClassifierEvaluator, MLPClassifier
from plugins.teachers.transformer import TransformerSpec
from registry import hookimpl

WEIGHTS = "digits_teacher.safetensors"


class DigitsTeacher(CachedTransformerTeacher):
    """scikit-learn's 8x8 digits as 64 tokens over 17 grey levels; a small class-conditional MaskGit-style
    transformer, pre-trained by `method=mdm` and cached (the embedded default, no download)."""

    class Config(PluginConfig):
        checkpoint: Optional[str] = Field(None, description="safetensors file, folder or hub id; "
                                                            "default: the cached pre-trained teacher")
        arch: TransformerSpec = Field(default_factory=TransformerSpec, description="transformer size")

    seq_len, vocab_size, mask_id, num_classes = 64, 17, 17, 10
    image_shape = (1, 8, 8)
    recipe = "digits"   # plugins/recipes/digits/*.yaml (subclasses inherit them)
    task, weights_file = "digits", WEIGHTS

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
