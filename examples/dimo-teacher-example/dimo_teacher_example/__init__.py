"""A minimal third-party teacher: only the declared interface of ``core.interfaces.Teacher``.

The task: 6x6 images of one bright bar (class c < 6: row c, class c >= 6: column c - 6) on a dim background,
4 grey levels, so an image is 36 tokens over 4 codes (+ [M]). The teacher's network is its own small
bidirectional transformer (the ``MaskedNetwork`` protocol); it has no weights until ``method=mdm`` pre-trains
and caches them, which the main job does on first use. ``python -m core.run method=dimo teacher=bars`` then
distils it, evaluates the student against the teacher and exports it for ``generate``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from pydantic import Field
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from core.cache import cache_dir
from core.interfaces import Evaluator, PluginConfig, Teacher
from registry import hookimpl

SIDE, LEVELS, CLASSES = 6, 4, 12


def bar_images(labels: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """Grey levels ``[N, 6, 6]``: background 0 or 1 at random, the class's bar at level 3 (2 at one random cell)."""
    n = labels.shape[0]
    img = torch.randint(0, 2, (n, SIDE, SIDE), generator=generator)
    idx = torch.arange(SIDE)
    rows, cols = labels.clamp(max=SIDE - 1), (labels - SIDE).clamp(min=0)
    bar = torch.where((labels < SIDE)[:, None, None], idx[None, :, None] == rows[:, None, None],
                      idx[None, None, :] == cols[:, None, None])
    img = torch.where(bar, torch.full_like(img, LEVELS - 1), img)
    dim = torch.randint(0, SIDE, (n,), generator=generator)
    spot = torch.where((labels < SIDE)[:, None, None], idx[None, None, :] == dim[:, None, None],
                       idx[None, :, None] == dim[:, None, None]) & bar
    return torch.where(spot, torch.full_like(img, LEVELS - 2), img)


class BarsNetwork(nn.Module):
    """A bidirectional transformer over the 36 tokens and one class token (the MaskedNetwork protocol)."""

    def __init__(self, dim: int, depth: int, heads: int):
        super().__init__()
        self.tokens = nn.Embedding(LEVELS + 1, dim)              # codes and [M]
        self.classes = nn.Embedding(CLASSES + 1, dim)             # classes and the null class (CFG)
        self.pos = nn.Parameter(torch.randn(SIDE * SIDE + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(dim, LEVELS)

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        return self.tokens(tokens)

    def code_embeddings(self) -> Tensor:
        return self.tokens.weight[:LEVELS]

    def frozen_parameters(self):
        return [self.tokens.weight, self.pos]

    def forward(self, tokens: Optional[Tensor], cond: Tensor, *, inputs_embeds: Optional[Tensor] = None) -> Tensor:
        emb = self.embed_tokens(tokens) if inputs_embeds is None else inputs_embeds
        cls = self.classes(cond.long().clamp(0, CLASSES).to(emb.device))[:, None]
        h = self.blocks(torch.cat([emb, cls.to(emb.dtype)], 1) + self.pos)
        return self.head(h[:, :-1])


class BarsEvaluator(Evaluator):
    """Features: the pixels; class logits: negative distance to each class's mean image (a fixed classifier)."""

    def __init__(self, images: Tensor, labels: Tensor):
        self.images, self.labels = images, labels
        self.means = torch.stack([images[labels == c].flatten(1).mean(0) for c in range(CLASSES)])

    def features(self, images: Tensor) -> Tensor:
        return images.flatten(1).float()

    def logits(self, images: Tensor) -> Tensor:
        return -torch.cdist(images.flatten(1).float(), self.means) * 10

    def reference(self) -> tuple[Tensor, Tensor]:
        return self.images, self.labels


class BarsConfig(PluginConfig):
    dim: int = Field(32, gt=0, description="transformer width")
    depth: int = Field(2, gt=0, description="transformer blocks")
    heads: int = Field(2, gt=0, description="attention heads (must divide dim)")
    samples: int = Field(1200, gt=0, description="size of the generated training set")
    checkpoint: Optional[str] = Field(None, description="a .safetensors file; default: the cached pre-trained one")


class BarsTeacher(Teacher):
    """6x6 bar images, 4 grey levels, 12 classes; its own network, data and evaluator."""
    Config = BarsConfig
    seq_len, vocab_size, mask_id, num_classes = SIDE * SIDE, LEVELS, LEVELS, CLASSES
    image_shape = (1, SIDE, SIDE)
    recipe = "bars"   # its tuned values per method: recipes/bars/<method>.yaml (declared by dimo_recipes below)

    # -- model ------------------------------------------------------------------------------------------
    def checkpoint_path(self) -> Optional[Path]:
        c = self.config
        return Path(c.checkpoint) if c.checkpoint else cache_dir("bars") / f"teacher-{c.dim}-{c.depth}-{c.heads}.safetensors"

    def has_weights(self) -> bool:
        return self.checkpoint_path().is_file()

    def build_network(self, load_weights: bool = True) -> BarsNetwork:
        net = BarsNetwork(self.config.dim, self.config.depth, self.config.heads)
        if load_weights:
            net.load_state_dict(load_file(str(self.checkpoint_path())))
        return net

    def save_pretrained(self, network: nn.Module, path=None) -> Path:
        path = Path(path) if path else self.checkpoint_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(path))
        return path

    def null_condition(self, cond: Tensor) -> Tensor:
        return torch.full_like(cond, CLASSES)

    # -- codec ------------------------------------------------------------------------------------------
    def decode(self, tokens: Tensor) -> Tensor:
        return (tokens.clamp(0, LEVELS - 1).float() / (LEVELS - 1)).view(-1, *self.image_shape)

    def decode_soft(self, probs: Tensor) -> Tensor:
        levels = torch.linspace(0, 1, LEVELS, device=probs.device, dtype=probs.dtype)
        return (probs @ levels).view(-1, *self.image_shape)

    def encode(self, images: Tensor) -> Tensor:
        return torch.round(images.clamp(0, 1) * (LEVELS - 1)).long().flatten(1)

    # -- task -------------------------------------------------------------------------------------------
    def dataset(self) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(0)
        labels = torch.arange(self.config.samples) % CLASSES
        return bar_images(labels, g).flatten(1), labels

    def evaluator(self) -> BarsEvaluator:
        tokens, labels = self.dataset()
        return BarsEvaluator(self.decode(tokens), labels)


@hookimpl
def dimo_register(register):
    register("teacher", "bars", BarsTeacher)


@hookimpl
def dimo_recipes():
    """Recipes under the user's config: ``python -m core.run show-config teacher=bars`` names the file."""
    return Path(__file__).parent / "recipes"
