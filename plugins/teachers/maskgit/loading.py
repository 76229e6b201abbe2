"""Finding and reading the official MaskGIT files safely, with errors that name the field and the file.

* ``locate``: a file in a local folder (the hub layout ``pretrained_maskgit/...`` or any tail of it) or in
  a hub repo (through ``core.hub.resolve_file``: huggingface_hub, its cache, ``HF_HUB_OFFLINE``).
* ``safe_torch_load``: ``torch.load(weights_only=True)`` only. Old PyTorch-Lightning checkpoints (taming's
  ``last.ckpt``) pickle some Lightning / OmegaConf / numpy objects beside the tensors (e.g. the callback
  states keyed by the ``ModelCheckpoint`` class); those names are bound to inert placeholder classes, so
  nothing from the file is ever executed and Lightning need not be installed. Any other pickled global is
  refused with a clear error.
* ``load_strict``: key-by-key and shape-by-shape check, then ``load_state_dict(strict=True)``.
"""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from core.errors import UserError
from core.hub import resolve_file

# Modules whose pickled objects are metadata in Lightning-era checkpoints; they become inert placeholders.
METADATA_MODULES = ("pytorch_lightning.", "lightning.", "lightning_fabric.", "omegaconf.", "numpy.",
                    "argparse.Namespace")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
UNSUPPORTED = re.compile(r"GLOBAL ([\w.]+) was not an allowed global")


def locate(spec: str, relpath: str, field: str, size=None) -> Path:
    """``spec``: a file, a folder holding ``relpath`` (or a tail of it), or a hub id holding ``relpath``; ``size``
    as for ``core.hub.resolve_file``."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        parts = Path(relpath).parts
        tried = [path.joinpath(*parts[i:]) for i in range(len(parts))]
        for candidate in tried:
            if candidate.is_file():
                return candidate
        raise UserError(f"{field}='{spec}' is a folder without '{relpath}' (looked for: "
                        f"{', '.join(str(t.relative_to(path)) for t in tried)})")
    return resolve_file(spec, relpath, field, size)


class _Inert:
    """Stands in for a pickled metadata class: accepts any arguments and state, runs nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _placeholders(names: Iterable[str], path: Path, field: str) -> list[tuple[type, str]]:
    out = []
    for name in names:
        if not name.startswith(METADATA_MODULES):
            raise UserError(f"{field}: '{path}' pickles the object '{name}', which is neither a tensor nor "
                            f"known checkpoint metadata; refusing to unpickle code from a weights file")
        out.append((type(name.rsplit(".", 1)[-1], (_Inert,), {"__module__": "dimo.placeholder"}), name))
    return out


def read_safetensors(path: Path, field: str) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{field}: '{path}' is corrupt or not a safetensors file ({exc})") from None


def read_weights_file(path: Path, field: str) -> object:
    """A ``.safetensors`` file's tensors, else what ``torch.save`` wrote (``safe_torch_load``): the released
    checkpoints of MaskGit, MaskBit and TA-TiTok are ``.pth``/``.bin``; dimo's own are safetensors."""
    return read_safetensors(path, field) if path.suffix == ".safetensors" else safe_torch_load(path, field)


def safe_torch_load(path: Path, field: str) -> object:
    """Tensors and plain containers of a ``torch.save`` file, never executing pickled code."""
    stubs: list[tuple[type, str]] = []
    try:
        if zipfile.is_zipfile(path):
            stubs = _placeholders(torch.serialization.get_unsafe_globals_in_checkpoint(path), path, field)
        for _ in range(32):   # legacy (non-zip) files: learn the metadata names from the refusals
            try:
                with torch.serialization.safe_globals(stubs):
                    return torch.load(path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as exc:
                names = UNSUPPORTED.findall(str(exc))
                if not names:
                    raise
                stubs += _placeholders(names[:1], path, field)
        raise UserError(f"{field}: '{path}' holds too many non-tensor objects to read safely")
    except UserError:
        raise
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile,
            AttributeError, IndexError) as exc:
        raise UserError(f"{field}: '{path}' is corrupt or not a PyTorch checkpoint ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200] if str(exc) else 'no detail'})") from None


def strip_prefixes(state: dict) -> dict:
    """DDP (``module.``) and torch.compile (``_orig_mod.``) wrappers prefix every key."""
    out = {}
    for key, value in state.items():
        while key.startswith(WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = value
    return out


def load_strict(module: nn.Module, state: dict, path: Path, field: str, ignore_prefixes: tuple = ()) -> None:
    """Load ``state`` into ``module``: every key present, none extra (except ``ignore_prefixes``), same shapes."""
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UserError(f"{field}: '{path}' does not hold a state dict of tensors")
    state = {k: v for k, v in strip_prefixes(state).items() if not k.startswith(ignore_prefixes)}
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise UserError(f"{field}: '{path}' does not fit this architecture ({len(missing)} missing keys, e.g. "
                        f"{missing[:3]}; {len(unexpected)} unexpected keys, e.g. {unexpected[:3]}); check the "
                        f"size/arch/resolution/codebook_size/num_classes settings")
    for name, tensor in own.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise UserError(f"{field}: '{path}' key '{name}' has shape {tuple(state[name].shape)}, this "
                            f"architecture expects {tuple(tensor.shape)}; check size/arch/resolution")
    module.load_state_dict(state, strict=True)
