"""Resumable checkpoints: every rank saves, a directory appears only once complete, ``resume=auto``.

Layout of ``<run>/checkpoints/step-00000100/``::

    <role>/...                DeepSpeed engine state per trainable role (module, optimizer, scheduler)
    ema-<role>.safetensors    EMA weights
    frozen-<role>.safetensors weights of frozen roles the method changes (``Role.checkpointed``)
    rng_state_rank<r>.pt      python / numpy / torch RNG states of rank r
    trainer_state.json        step, config hash, resolved config

It is written as ``step-XXXXXXXX.tmp`` and renamed when every rank is done, so a kill mid-save leaves
the previous checkpoint as the latest complete one.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from core import distributed as dist
from core.errors import UserError

STEP_DIR = re.compile(r"^step-(\d{8})$")


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_save_safetensors(tensors: dict, path: Path, metadata: Optional[dict] = None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def load_state_checked(module: torch.nn.Module, state: dict, source, field: str, expected: str = "") -> None:
    """``module.load_state_dict(state)``, but a file that does not fit is a UserError naming each tensor with
    both shapes and what the config builds (``expected``, e.g. "teacher.arch: dim=64, depth=4, heads=4"),
    never torch's RuntimeError."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"'{k}' is {tuple(state[k].shape)} in the file, {tuple(v.shape)} in this network"
              for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = ([f"{len(shapes)} tensor(s) of another shape: " + "; ".join(shapes[:4])] if shapes else []) + \
                ([f"{len(missing)} missing, e.g. {missing[:3]}"] if missing else []) + \
                ([f"{len(unexpected)} unexpected, e.g. {unexpected[:3]}"] if unexpected else [])
        hint = f" The config builds: {expected}." if expected else ""
        raise UserError(f"{field}: '{source}' does not fit the network this config builds: "
                        f"{'; '.join(parts)}.{hint} Use the config the file was made with, or another file.")
    module.load_state_dict(state)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(root: Path, step: int, engines: dict, emas: dict, trainer_state: dict, keep: int,
         frozen: Optional[dict] = None) -> Path:
    final = root / f"step-{step:08d}"
    tmp = root / f"step-{step:08d}.tmp"
    if dist.is_main():
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    dist.barrier()
    for role, engine in engines.items():
        engine.save_checkpoint(str(tmp), tag=role, client_state={"step": step})
    torch.save(rng_state(), tmp / f"rng_state_rank{dist.rank()}.pt")
    if dist.is_main():
        for role, ema in emas.items():
            atomic_save_safetensors(ema.state_dict(), tmp / f"ema-{role}.safetensors")
        for role, module in (frozen or {}).items():
            atomic_save_safetensors(module.state_dict(), tmp / f"frozen-{role}.safetensors")
        (tmp / "trainer_state.json").write_text(json.dumps({**trainer_state, "step": step}, indent=1))
    dist.barrier()
    if dist.is_main():
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        old = sorted(p for p in root.iterdir() if STEP_DIR.match(p.name))[:-keep]
        for p in old:
            shutil.rmtree(p, ignore_errors=True)
    dist.barrier()
    return final


class DamagedCheckpoint(UserError):
    """A complete checkpoint folder holding a file that cannot be read (truncated, corrupt): ``resume=auto``
    skips it and falls back to the one before it."""


def _read(path: Path, reader):
    try:
        return reader(path)
    except Exception as exc:   # json, pickle, zip and safetensors readers each raise their own types
        name = path.relative_to(path.parent.parent) if STEP_DIR.match(path.parent.parent.name) else path.name
        raise DamagedCheckpoint(f"'{name}' cannot be read ({type(exc).__name__}: {exc})") from None


def _check_zip(path: Path) -> None:
    """torch.save files are zip archives whose index is at the end: opening one finds a truncated file cheaply,
    without loading optimizer states twice."""
    with zipfile.ZipFile(path):
        pass


def read_checkpoint(path: Path, engines: dict, emas: dict, frozen: dict) -> dict:
    """Read (and so check) every file of ``path`` this rank needs before any state is changed: a damaged
    checkpoint is found before it half-loads. DeepSpeed's own files are only checked for truncation here."""
    state = _read(path / "trainer_state.json", lambda f: json.loads(f.read_text()))
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise DamagedCheckpoint("'trainer_state.json' has no step")
    for role in engines:
        files = sorted((path / role).rglob("*.pt"))
        if not files:
            raise DamagedCheckpoint(f"it has no DeepSpeed state for role '{role}'")
        for f in files:
            _read(f, _check_zip)
    weights = {(prefix, role): _read(path / f"{prefix}-{role}.safetensors", lambda f: load_file(str(f)))
               for prefix, modules in (("ema", emas), ("frozen", frozen)) for role in modules}
    rng_file = path / f"rng_state_rank{dist.rank()}.pt"
    rng = _read(rng_file, lambda f: torch.load(f, weights_only=False)) if rng_file.is_file() else None
    return {"state": state, "weights": weights, "rng": rng}


def load(path: Path, engines: dict, emas: dict, config_hash: str, frozen: Optional[dict] = None) -> int:
    """Restore engines, EMA and frozen weights and RNG states from ``path``; returns its step. A file that
    cannot be read raises :class:`DamagedCheckpoint`, a checkpoint of another config a plain UserError."""
    frozen = frozen or {}
    contents = read_checkpoint(path, engines, emas, frozen)
    state = contents["state"]
    if state.get("config_hash") != config_hash:
        raise UserError(f"checkpoint '{path}' was made with config hash {state.get('config_hash')}, this run has "
                        f"{config_hash}; use another trainer.output_dir or set trainer.resume=never")
    for role, engine in engines.items():
        try:
            loaded, _ = engine.load_checkpoint(str(path), tag=role)
        except Exception as exc:  # DeepSpeed raises many types for truncated/corrupt files
            raise DamagedCheckpoint(f"role '{role}' could not be loaded ({type(exc).__name__}: {exc})") from None
        if loaded is None:
            raise DamagedCheckpoint(f"it has no DeepSpeed state for role '{role}'")
    modules = {("ema", role): m for role, m in emas.items()} | {("frozen", role): m for role, m in frozen.items()}
    for (prefix, role), module in modules.items():
        load_state_checked(module, contents["weights"][prefix, role], path / f"{prefix}-{role}.safetensors",
                           f"trainer.resume ({prefix} weights of role '{role}')")
    if contents["rng"] is not None:
        set_rng_state(contents["rng"])
    return int(state["step"])


def complete(root: Path) -> list[Path]:
    """The complete checkpoint folders under ``root``, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if STEP_DIR.match(p.name) and (p / "trainer_state.json").is_file())


def resume_latest(root: Path, engines: dict, emas: dict, config_hash: str,
                  frozen: Optional[dict] = None) -> int:
    """``trainer.resume=auto``: load the newest checkpoint under ``root`` that every rank can read, skipping
    damaged ones with a warning naming each; returns its step (0: none yet). Only when complete checkpoints
    exist and all are damaged is it an error."""
    damaged = []
    for path in reversed(complete(root)):
        try:
            step, problem = load(path, engines, emas, config_hash, frozen), None
        except DamagedCheckpoint as exc:
            step, problem = 0, f"rank {dist.rank()}: {exc}"
        problems = [p for p in dist.all_gather_object(problem) if p]   # every rank skips, or none does
        if not problems:
            return step
        damaged.append(f"'{path.name}' ({'; '.join(problems)})")
        if dist.is_main():
            print(f"dimo: warning: trainer.resume=auto skips the damaged checkpoint '{path}': "
                  f"{'; '.join(problems)}. Trying the one before it.", file=sys.stderr)
    if damaged:
        raise UserError(f"trainer.resume=auto: no usable checkpoint in '{root}', every one is damaged: "
                        f"{', '.join(damaged)}. Remove those folders (or set trainer.resume=never) to start from "
                        f"step 0, or set trainer.resume=<path of a step-XXXXXXXX folder> to use another one.")
    return 0
