"""PNG sample grids: one row per class, and side-by-side panels (teacher k steps | student 1 step)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def class_grid(images: Tensor, labels: Tensor, per_class: int = 10, upscale: int = 4) -> Tensor:
    """``[3, H', W']`` grid: row c holds the first ``per_class`` images of class c."""
    from torchvision.utils import make_grid
    rows = []
    for c in labels.unique(sorted=True).tolist():
        pick = images[labels == c][:per_class]
        if len(pick) < per_class:
            pick = torch.cat([pick, torch.zeros(per_class - len(pick), *images.shape[1:])])
        rows.append(pick)
    batch = torch.cat(rows).float().clamp(0, 1)
    if upscale > 1:
        batch = F.interpolate(batch, scale_factor=upscale, mode="nearest")
    return make_grid(batch, nrow=per_class, padding=2, pad_value=0.5)


def save_grid(images: Tensor, labels: Tensor, path: Path, per_class: int = 10,
              captions: Optional[list[str]] = None, max_captioned_rows: int = 16) -> Path:
    """One row per condition; with ``captions`` (one per condition, in sorted label order: the prompts of a
    text-to-image teacher) the first ``max_captioned_rows`` rows are drawn with their caption under them."""
    if captions is not None:
        return _save_captioned(images, labels, path, per_class, captions, max_captioned_rows)
    from torchvision.utils import save_image
    save_image(class_grid(images, labels, per_class, _upscale(images)), str(path))
    return path


def _save_captioned(images: Tensor, labels: Tensor, path: Path, per_class: int, captions: list[str],
                    max_rows: int) -> Path:
    import textwrap

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = labels.unique(sorted=True).tolist()[:max_rows]
    fig, axes = plt.subplots(len(rows), 1, figsize=(min(1.6 * per_class, 16), 2.1 * len(rows)), squeeze=False)
    for ax, c, text in zip(axes[:, 0], rows, captions):
        pick = labels == c
        ax.imshow(class_grid(images[pick], labels[pick], per_class, _upscale(images)).permute(1, 2, 0).numpy())
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_xlabel(textwrap.fill(text, 110), fontsize=8)   # the caption under its row
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_panels(panels: dict[str, tuple[Tensor, Tensor]], path: Path, per_class: int = 10) -> Path:
    """Grids side by side with a title above each (matplotlib)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.6))
    for ax, (title, (images, labels)) in zip(list(axes) if len(panels) > 1 else [axes], panels.items()):
        ax.imshow(class_grid(images, labels, per_class, _upscale(images)).permute(1, 2, 0).numpy())
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _upscale(images: Tensor) -> int:
    return max(1, 64 // images.shape[-1])
