"""Real ImageNet tokens for MaskBit (``teacher.data``): an ImageFolder (one sub-folder per class, classes in sorted
order as torchvision's ``ImageFolder`` and the ImageNet-1k label ids) encoded by the MaskBit tokenizer.

    python -m plugins.teachers.maskbit.data images=<imagenet/train> out=imagenet_tokens.safetensors \
        [teacher.tokenizer=<dir>] [teacher.bits=14] [per_class=N] [batch_size=64] [device=auto|cpu|cuda]

Each image is resized (shorter side, bicubic, as MaskBit's generator training) and centre-cropped to the resolution,
in [0, 1] (MaskBit's tokenizer takes [0, 1] images), and stored as LFQ codes ``tokens [N, L]`` with ``labels [N]``.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import save_file

from core.errors import UserError

SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def image_files(root: Path, per_class: Optional[int]) -> list[tuple[Path, int]]:
    if not root.is_dir():
        raise UserError(f"images='{root}' is not a folder (ImageFolder layout: <root>/<class>/<image>)")
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if not classes:
        raise UserError(f"images='{root}' has no class sub-folders (ImageFolder layout: <root>/<class>/<image>)")
    out = []
    for label, folder in enumerate(classes):
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES)
        out += [(f, label) for f in files[:per_class]]
    if not out:
        raise UserError(f"images='{root}' holds no {'/'.join(SUFFIXES)} files")
    return out


def load_image(path: Path, size: int) -> torch.Tensor:
    from PIL import Image
    from torchvision.transforms.functional import InterpolationMode, center_crop, resize, to_tensor
    try:
        img = Image.open(path).convert("RGB")
    except OSError as exc:
        raise UserError(f"cannot read image '{path}' ({exc})") from None
    return center_crop(resize(to_tensor(img), size, InterpolationMode.BICUBIC, antialias=True), size).clamp(0, 1)


def encode_folder(teacher, root: str, out: str, per_class: Optional[int] = None, batch: int = 64,
                  device: str = "cpu") -> Path:
    """Encode ``root`` with ``teacher``'s tokenizer into ``out`` (tokens: LFQ codes, labels)."""
    from plugins.teachers.maskbit.transformer import combine_groups
    files = image_files(Path(root).expanduser(), per_class)
    size = teacher.image_shape[1]
    codes = []
    for i in range(0, len(files), batch):
        images = torch.stack([load_image(f, size) for f, _ in files[i: i + batch]]).to(device)
        with torch.no_grad():
            codes.append(combine_groups(teacher.encode(images), teacher.groups, teacher.group_bits).cpu())
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"tokens": torch.cat(codes).contiguous(), "labels": torch.tensor([c for _, c in files])}, str(path))
    return path


def main(argv: Optional[list[str]] = None) -> int:
    from core.config import resolve
    from plugins.teachers.maskbit.teacher import MaskBitConfig, MaskBitTeacher
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        opts = dict(a.split("=", 1) for a in args if "=" in a and not a.startswith("teacher."))
        bad = [a for a in args if "=" not in a]
        if bad or "images" not in opts or "out" not in opts:
            raise UserError("usage: python -m plugins.teachers.maskbit.data images=<ImageFolder> out=<file.safetensors> "
                            "[teacher.*=...] [per_class=N] [batch_size=64] [device=auto|cpu|cuda]")
        unknown = set(opts) - {"images", "out", "per_class", "batch_size", "device"}
        if unknown:
            raise UserError(f"unknown key(s) {sorted(unknown)}; valid: images, out, per_class, batch_size, device, "
                            f"teacher.*")
        device = opts.get("device", "auto")
        if device not in ("auto", "cpu", "cuda"):
            raise UserError(f"device='{device}' is not one of: auto, cpu, cuda")
        device = "cuda" if device != "cpu" and torch.cuda.is_available() else "cpu"
        if not Path(opts["images"]).expanduser().is_dir():
            raise UserError(f"images='{opts['images']}' is not a folder (ImageFolder layout: <root>/<class>/<image>)")
        section = resolve(["teacher=maskbit", *[a for a in args if a.startswith("teacher.")]])["teacher"]
        teacher = MaskBitTeacher(MaskBitConfig.model_validate({k: v for k, v in section.items() if k != "name"}))
        per_class = int(opts["per_class"]) if "per_class" in opts else None
        path = encode_folder(teacher, opts["images"], opts["out"], per_class, int(opts.get("batch_size", 64)), device)
    except UserError as exc:
        print(f"dimo: error: {exc}", file=sys.stderr)
        return 2
    print(f"dimo: {path} (use teacher.data={path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
