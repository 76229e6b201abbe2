"""PNG sample grids: one row per class (or several, labelled, for ``generate``), and side-by-side panels
(teacher k steps | student 1 step)."""
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


def save_labelled_grid(images: Tensor, labels: Tensor, path: Path, columns: int = 16, max_rows: int = 64) -> str:
    """All samples of each condition, ``columns`` to a row (a condition takes as many rows as it needs), the first
    row of each labelled with its class id at the left. Beyond ``max_rows`` rows, whole conditions are left out
    (or, when one condition alone needs more, its last samples): returns a sentence saying what the grid shows,
    or '' when it shows every sample."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid
    classes = labels.unique(sorted=True).tolist()
    n = int((labels == classes[0]).sum())
    columns = min(columns, n)
    rows_each = -(-n // columns)
    shown = classes[:max(1, max_rows // rows_each)]
    per_class = min(n, max_rows * columns)
    tiles = []
    for c in shown:
        pick = images[labels == c][:per_class].float().clamp(0, 1)
        pad = -len(pick) % columns
        tiles.append(torch.cat([pick, torch.full((pad, *pick.shape[1:]), 0.5)]))
    up = _upscale(images)
    batch = F.interpolate(torch.cat(tiles), scale_factor=up, mode="nearest") if up > 1 else torch.cat(tiles)
    grid = make_grid(batch, nrow=columns, padding=2, pad_value=0.5).permute(1, 2, 0).numpy()
    tile = batch.shape[-2] + 2
    rows_per_shown = -(-per_class // columns)
    fig = plt.figure(figsize=(grid.shape[1] / 100 + 0.8, grid.shape[0] / 100 + 0.2), dpi=100)
    ax = fig.add_axes([0.8 / (grid.shape[1] / 100 + 0.8), 0, 1 - 0.8 / (grid.shape[1] / 100 + 0.8), 1])
    ax.imshow(grid)
    ax.set_xticks([])
    ax.set_yticks([2 + i * rows_per_shown * tile + tile / 2 for i in range(len(shown))],
                  [f"class {c}" for c in shown], fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    if len(shown) < len(classes) or per_class < n:
        return (f"the grid shows {per_class} of {n} samples for each of the first {len(shown)} of {len(classes)} "
                f"classes (at most {max_rows} rows of {columns})")
    return ""


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
