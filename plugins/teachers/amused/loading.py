"""Reading diffusers/transformers folders (a local folder or a hub id) strictly, with errors naming the field.

diffusers' own ``from_pretrained`` warns and re-initialises on missing keys; dimo builds each model from its
``config.json`` and loads the weights with ``core.checkpoint.load_state_checked`` (every key, every shape).
Shared by the text-to-image teachers (aMUSEd, MaskGen, Meissonic).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from safetensors.torch import save_file
from torch import nn

from core.checkpoint import load_state_checked
from core.errors import UserError
from plugins.teachers.maskgit.loading import locate, read_safetensors


def read_json(spec: str, relpath: str, field: str) -> dict:
    path = locate(spec, relpath, field)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{field}: '{path}' is not a JSON config ({exc})") from None


def weights_name(base: str, variant: Optional[str]) -> str:
    """``diffusion_pytorch_model.safetensors`` or, with a variant, ``diffusion_pytorch_model.fp16.safetensors``."""
    stem, ext = base.rsplit(".", 1)
    return f"{stem}.{variant}.{ext}" if variant else base


def diffusers_model(cls, spec: str, subfolder: str, field: str, variant: Optional[str] = None,
                    load_weights: bool = True, **overrides) -> nn.Module:
    """``cls.from_config(<subfolder>/config.json)``, then its safetensors weights checked key by key."""
    config = {**read_json(spec, f"{subfolder}/config.json", field), **overrides}
    model = cls.from_config(config)
    if load_weights:
        path = locate(spec, f"{subfolder}/{weights_name('diffusion_pytorch_model.safetensors', variant)}", field)
        load_state_checked(model, read_safetensors(path, field), path, field,
                           f"{cls.__name__} from {subfolder}/config.json")
    return model.eval()


def transformers_model(cls, spec: str, subfolder: str, field: str, variant: Optional[str] = None):
    """A transformers model or tokenizer from ``<spec>/<subfolder>`` (local folder or hub id)."""
    path = Path(spec).expanduser()
    source, sub = (str(path / subfolder), "") if path.is_dir() else (spec, subfolder)
    kwargs = {"subfolder": sub} if sub else {}
    if variant and hasattr(cls, "can_generate"):
        kwargs["variant"] = variant
    try:
        return cls.from_pretrained(source, **kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{field}='{spec}': could not load {cls.__name__} from '{subfolder}' (not a local folder "
                        f"with it, nor in the hub cache when offline; `hf download {spec}` first). ({first})") from None


def save_diffusers_model(network, path, class_name: str) -> Path:
    """The diffusers layout of a model folder: config.json naming ``class_name``, and its safetensors weights."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in dict(network.config).items() if not k.startswith("_")}
    (path / "config.json").write_text(json.dumps({"_class_name": class_name, **config}, indent=1))
    save_file({k: v.contiguous() for k, v in network.state_dict().items()},
              str(path / "diffusion_pytorch_model.safetensors"))
    return path

