"""``python -m core.run generate checkpoint=<run> n=64``: samples from a trained student as a PNG grid
and a tokens file."""
from __future__ import annotations

from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

from core.config import format_validation_error, parse_value
from core.errors import UserError


class GenerateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    checkpoint: str = Field(description="a run folder or its student.safetensors")
    n: int = Field(64, gt=0, description="samples per class (class-conditional) or in total")
    seed: int = 0
    out: str = Field("samples.png", description="PNG grid; tokens go beside it as .pt")
    steps: int | None = Field(None, gt=0, description="sampling steps for multi-step students")


def generate_command(args: list[str]) -> int:
    from pydantic import ValidationError
    from core.export import load_student
    from core.images import save_grid
    values = {}
    for a in args:
        if "=" not in a:
            raise UserError(f"argument '{a}' is not key=value")
        k, v = a.split("=", 1)
        values[k] = parse_value(v)
    try:
        cfg = GenerateConfig.model_validate(values)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, GenerateConfig, "generate")) from None
    method, teacher, net, resolved = load_student(cfg.checkpoint)
    g = torch.Generator().manual_seed(cfg.seed)
    cond = torch.arange(teacher.num_classes).repeat_interleave(cfg.n)
    kwargs = {"steps": cfg.steps} if cfg.steps else {}
    with torch.no_grad():
        tokens = method.generate(net, cond, g, **kwargs)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_grid(teacher.decode(tokens), cond, out, per_class=min(cfg.n, 16))
    torch.save({"tokens": tokens, "cond": cond}, out.with_suffix(".pt"))
    print(f"dimo: {len(cond)} samples -> {out} (tokens in {out.with_suffix('.pt')})")
    return 0
