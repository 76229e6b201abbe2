"""Cached, chunked, resumable offline stages (e.g. ReDi's pair generation). A method declares its stages in
``Method.offline_stages`` and the engine runs them before the steps that need them (``Method.run_stage``); a
resumed run re-enters the latest one, which, cached here, reads its output back instead of remaking it.

A stage writes its output as numbered safetensors chunks in one folder::

    <cache>/<stage>/<key>/stage.json             what the chunks hold (settings, for people; written first)
    <cache>/<stage>/<key>/chunk-00000.safetensors
    ...

Each chunk is written as ``*.tmp`` and renamed when complete, so a killed run leaves only whole chunks; a
rerun makes only the chunks that are missing. ``key`` names *everything* the output depends on (weights
hash + generation settings, see :func:`stage_key`), so a finished stage is reused by any run that asks for
the same thing. Chunk ``i`` is made by rank ``i % world``; every rank then reads all of them.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from core import distributed as dist
from core.cache import cache_dir
from core.checkpoint import atomic_save_safetensors, atomic_write_text

MakeChunk = Callable[[int], dict[str, Tensor]]


def weights_hash(module: nn.Module) -> str:
    """A content hash of a module's state (names, shapes, dtypes and bytes), independent of file format."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def stage_key(*parts: Any) -> str:
    """A short hash of JSON-serialisable parts (weights hashes, settings dicts)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def stage_dir(stage: str, key: str) -> Path:
    return cache_dir(stage, key)


def chunk_path(folder: Path, index: int) -> Path:
    return folder / f"chunk-{index:05d}.safetensors"


def missing_chunks(folder: Path, n_chunks: int) -> list[int]:
    return [i for i in range(n_chunks) if not chunk_path(folder, i).is_file()]


def run_chunked(folder: Path, n_chunks: int, make_chunk: MakeChunk, describe: Optional[dict] = None,
                rank: int = 0, world: int = 1, on_chunk: Optional[Callable[[int], None]] = None) -> dict[str, Tensor]:
    """Make the chunks of ``folder`` that are not there yet (this rank's share), wait for every rank, and
    return all chunks concatenated along dim 0, key by key. ``make_chunk(i)`` must be deterministic in ``i``
    (seed it from ``i``) so that a resumed stage equals an uninterrupted one."""
    folder.mkdir(parents=True, exist_ok=True)
    if describe is not None and rank == 0 and not (folder / "stage.json").is_file():
        atomic_write_text(folder / "stage.json", json.dumps({**describe, "chunks": n_chunks}, indent=1, default=str))
    for i in missing_chunks(folder, n_chunks):
        if i % world != rank:
            continue
        atomic_save_safetensors(make_chunk(i), chunk_path(folder, i))
        if on_chunk is not None:
            on_chunk(i)
    if world > 1:
        dist.barrier()
    return load_chunks(folder, range(n_chunks))


def load_chunks(folder: Path, indices: Iterable[int]) -> dict[str, Tensor]:
    parts = [load_file(str(chunk_path(folder, i))) for i in indices]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]} if parts else {}
