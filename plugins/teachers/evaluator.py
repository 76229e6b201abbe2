"""A task's evaluator: a small classifier trained on the real images, whose penultimate layer is the
feature space of the Frechet distance / precision / recall (the role Inception-v3 plays on ImageNet)."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from core.checkpoint import atomic_save_safetensors
from core.interfaces import Evaluator


class MLPClassifier(nn.Module):
    def __init__(self, in_dim: int, num_classes: int, hidden: int = 256, feat_dim: int = 64):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(0.2),
                                  nn.Linear(hidden, feat_dim), nn.ReLU())
        self.head = nn.Linear(feat_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


class ClassifierEvaluator(Evaluator):
    """Trains the classifier on first use (held-out 20% reported as ``accuracy``) and caches it."""

    def __init__(self, images: Tensor, labels: Tensor, classifier: nn.Module, cache_file: Path,
                 epochs: int = 300, seed: int = 0):
        self.images, self.labels = images.float(), labels.long()
        self.net = classifier
        self.cache_file = cache_file
        if cache_file.is_file():
            self.net.load_state_dict(load_file(str(cache_file)))
        else:
            self._train(epochs, seed)
            atomic_save_safetensors(self.net.state_dict(), cache_file)
        self.net.eval().requires_grad_(False)

    def _split(self, seed: int):
        perm = torch.randperm(len(self.labels), generator=torch.Generator().manual_seed(seed))
        cut = int(0.8 * len(perm))
        return perm[:cut], perm[cut:]

    def _train(self, epochs: int, seed: int) -> None:
        torch.manual_seed(seed)
        train, _ = self._split(seed)
        opt = torch.optim.Adam(self.net.parameters(), lr=2e-3, weight_decay=1e-4)
        x, y = self.images[train], self.labels[train]
        self.net.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(y)).split(256):
                # light pixel noise: the classifier must also read generated images robustly
                xb = (x[idx] + 0.03 * torch.randn_like(x[idx])).clamp(0, 1)
                loss = F.cross_entropy(self.net(xb), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()

    def heldout_accuracy(self, seed: int = 0) -> float:
        _, test = self._split(seed)
        return (self.logits(self.images[test]).argmax(1) == self.labels[test]).float().mean().item()

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        return torch.cat([self.net.features(b.float().cpu()) for b in images.split(1024)])

    @torch.no_grad()
    def logits(self, images: Tensor) -> Tensor:
        return torch.cat([self.net(b.float().cpu()) for b in images.split(1024)])

    def reference(self) -> tuple[Tensor, Tensor]:
        return self.images, self.labels
