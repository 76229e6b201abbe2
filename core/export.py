"""Students as self-describing artifacts: ``student.safetensors`` + ``student.json`` (the resolved config
that made it), loadable back for generation with ``python -m core.run generate checkpoint=...``."""
from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from core.checkpoint import atomic_save_safetensors, atomic_write_text, load_state_checked
from core.config import RunConfig, resolve_dict
from core.errors import UserError
from core.factory import build_method


def versions() -> dict:
    import importlib.metadata as md
    out = {}
    for pkg in ("dimo", "torch", "deepspeed"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def save_student(module: nn.Module, run: RunConfig, run_dir: Path, used_ema: bool) -> Path:
    path = run_dir / "student.safetensors"
    meta = {"config_hash": run.hash, "method": run.plugin("method").name, "teacher": run.plugin("teacher").name,
            "ema": str(used_ema)}
    atomic_save_safetensors(module.state_dict(), path, metadata=meta)
    atomic_write_text(run_dir / "student.json", json.dumps({"config": run.as_dict(), **meta,
                                                            "versions": versions()}, indent=1))
    return path


def student_weights(checkpoint: str) -> Path:
    """The weights file a ``checkpoint=`` names: a run folder's ``student.safetensors``, or the file itself."""
    p = Path(checkpoint)
    return p / "student.safetensors" if p.is_dir() else p


def read_card(checkpoint: str) -> tuple[Path, RunConfig]:
    """The weights file a ``checkpoint=`` names and the run config of its ``student.json``."""
    weights = student_weights(checkpoint)
    card = weights.with_name("student.json")
    if not weights.is_file():
        raise UserError(f"checkpoint '{checkpoint}' not found: expected a run folder or a student.safetensors file")
    if not card.is_file():
        raise UserError(f"checkpoint '{checkpoint}' has no student.json beside it, so its config is unknown")
    try:
        return weights, resolve_dict(json.loads(card.read_text())["config"])
    except (json.JSONDecodeError, KeyError) as exc:
        raise UserError(f"'{card}' is not a valid student card: {exc}") from None


def load_student_network(method, weights: Path, run: RunConfig, device=None) -> nn.Module:
    """``method``'s student network with the weights of ``weights``, frozen, on ``device`` (default: CPU)."""
    network = method.student_network()
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise UserError(f"checkpoint '{weights}' is corrupt or not a safetensors file: {exc}") from None
    load_state_checked(network, state, weights, "checkpoint",
                       f"teacher {run['teacher']}, method '{run.plugin('method').name}' (from student.json)")
    return network.to(device or "cpu").eval().requires_grad_(False)


def load_student(checkpoint: str, device=None):
    """``checkpoint``: a run folder or its ``student.safetensors``. Returns (method, teacher, network, run
    config), the network on ``device`` (default: CPU)."""
    weights, run = read_card(checkpoint)
    method, teacher = build_method(run)
    return method, teacher, load_student_network(method, weights, run, device), run
