"""The results schema: one JSON file per benchmark run, validated on write and on read.

A record says what ran (the entry of a suite and its fully resolved config, with the hash that identifies
it), where and how (seeds, dimo version, git commit, plugin distributions, device, wall time), and what came
out (metric values under stable names, their spread over sampling seeds, and a hash of the generated
samples). Leaderboards are rendered from these files only. A file with a missing or mistyped field is
rejected with an error naming the field (``core.errors.UserError``).
"""
from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Optional

import torch
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, ValidationError, model_validator

from core.errors import UserError

SCHEMA_VERSION = 1
GROUPS = ("reference", "teacher", "sampler", "distillation", "test-time", "performance")
Group = Literal["reference", "teacher", "sampler", "distillation", "test-time", "performance"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class EntryInfo(Strict):
    suite: str = Field(min_length=1, description="suite name, e.g. digits")
    suite_version: int = Field(ge=1, description="bumped when a suite's measurement changes meaning")
    id: str = Field(pattern=r"^[A-Za-z0-9_.@+-]+$", description="entry id, unique within the suite")
    group: Group = Field(description="leaderboard section, as in the paper's tables")
    label: str = Field(min_length=1, description="display name")
    teacher: str
    method: Optional[str] = Field(description="method plugin (None for teacher sampling)")
    sampler: Optional[str] = Field(description="teacher sampler plugin, if any")
    steps: int = Field(ge=1, description="sampling steps of the evaluated model")


class Seeds(Strict):
    train: Optional[int] = Field(description="trainer.seed of the trained model (None: no training)")
    sample: list[int] = Field(min_length=1, description="sampling seeds; metrics are their mean")


class Env(Strict):
    dimo_version: str
    git_commit: str = Field(description="commit of the dimo checkout ('unknown' outside git)")
    git_dirty: Optional[bool] = Field(description="uncommitted changes in the checkout (None: unknown)")
    plugins: dict[str, str] = Field(description="distribution -> version of every plugin the run used")
    python: str
    torch: str
    device: str
    threads: int = Field(ge=1)


class Result(Strict):
    schema_version: Literal[1]
    entry: EntryInfo
    config: dict[str, Any] = Field(description="the resolved config of the run")
    config_hash: str = Field(pattern=r"^[0-9a-f]{12}$", description="hash of config + entry (skip key)")
    train_config_hash: Optional[str] = Field(pattern=r"^[0-9a-f]{12}$", description="core.config hash of "
                                             "the training run (its run folder), if any")
    teacher_sha256: Optional[str] = Field(pattern=r"^[0-9a-f]{64}$", description="teacher weights file")
    seeds: Seeds
    env: Env
    date: str = Field(description="ISO 8601, UTC")
    wall_time_s: float = Field(ge=0, description="the whole entry: training (if run now) and evaluation")
    train_time_s: Optional[float] = Field(ge=0, description="training seconds (None: reused or none)")
    num_samples: int = Field(ge=1, description="generated samples per sampling seed")
    metrics: dict[str, FiniteFloat] = Field(min_length=1, description="mean over sampling seeds, stable names")
    spread: dict[str, FiniteFloat] = Field(description="standard deviation over sampling seeds")
    per_seed: list[dict[str, FiniteFloat]]
    higher_is_better: dict[str, bool]
    sample_hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the generated tokens")

    @model_validator(mode="after")
    def _consistent(self) -> "Result":
        keys = set(self.metrics)
        for name, other in (("spread", self.spread), ("higher_is_better", self.higher_is_better)):
            if set(other) != keys:
                raise ValueError(f"{name} must have exactly the keys of metrics ({sorted(keys)}), "
                                 f"got {sorted(other)}")
        if len(self.per_seed) != len(self.seeds.sample):
            raise ValueError(f"per_seed has {len(self.per_seed)} entries for {len(self.seeds.sample)} "
                             f"sampling seeds")
        return self


# ------------------------------------------------------------------------------------------------
# reading and writing
# ------------------------------------------------------------------------------------------------

def describe(exc: ValidationError, source: str) -> str:
    """One line per problem, each naming the field by its dotted path."""
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(record)"
        if err["type"] == "missing":
            lines.append(f"field '{field}' is missing")
        elif err["type"] == "extra_forbidden":
            lines.append(f"field '{field}' is not part of the schema (schema_version {SCHEMA_VERSION})")
        else:
            got = repr(err["input"])
            lines.append(f"field '{field}': {err['msg']} (got {got[:80]})")
    return f"{source} is not a valid dimo result:\n  " + "\n  ".join(lines)


def validate(data: Any, source: str = "result") -> Result:
    try:
        return Result.model_validate(data)
    except ValidationError as exc:
        raise UserError(describe(exc, source)) from None


def read(path: Path) -> Result:
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None
    return validate(data, str(path))


def write(path: Path, data: dict | Result) -> Result:
    """Validate, then write atomically (a crash never leaves half a file)."""
    from core.checkpoint import atomic_write_text
    record = data if isinstance(data, Result) else validate(data, str(path))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(path), record.model_dump_json(indent=1) + "\n")
    return record


def read_all(root: Path) -> list[Result]:
    """Every record under ``root`` (``<root>/<suite>/*.json``), sorted by suite and entry id."""
    records = [read(p) for p in sorted(Path(root).glob("*/*.json"))]
    return sorted(records, key=lambda r: (r.entry.suite, r.entry.id))


# ------------------------------------------------------------------------------------------------
# provenance
# ------------------------------------------------------------------------------------------------

def git_state(root: Optional[Path] = None) -> tuple[str, Optional[bool]]:
    root = root or Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        return commit, bool(dirty)
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def plugin_versions(resolved: dict) -> dict[str, str]:
    """Distributions (and versions) of the plugins named in a resolved config."""
    from registry import get_registry
    reg, out = get_registry(), {}
    for kind, section in resolved.items():
        if isinstance(section, dict) and "name" in section and kind in reg.entries:
            try:
                info = reg.info(kind, section["name"])
            except Exception:   # unknown names cannot be in a resolved config; be lenient for old records
                continue
            out[info.distribution] = info.version
    return out


def environment(resolved: dict, device: torch.device) -> dict:
    import importlib.metadata as md
    commit, dirty = git_state()
    try:
        version = md.version("dimo")
    except md.PackageNotFoundError:
        version = "unknown"
    return {"dimo_version": version, "git_commit": commit, "git_dirty": dirty,
            "plugins": plugin_versions(resolved), "python": platform.python_version(),
            "torch": torch.__version__, "device": device_name(device), "threads": torch.get_num_threads()}


def tokens_hash(token_batches: list[torch.Tensor]) -> str:
    """sha256 over the generated token grids (int64, in generation order, every seed)."""
    h = hashlib.sha256()
    for t in token_batches:
        h.update(t.detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()


def file_sha256(path: Optional[Path]) -> Optional[str]:
    if path is None or not Path(path).is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def entry_hash(resolved: dict, entry: dict) -> str:
    """What decides whether an entry must re-run: its resolved config (minus fields that do not change
    results, as core's config hash) plus the evaluation and the entry's own settings."""
    from core.config import UNHASHED
    cfg = {k: {f: v for f, v in sec.items() if f not in UNHASHED.get(k, ())} if isinstance(sec, dict) else sec
           for k, sec in resolved.items()}
    blob = json.dumps({"config": cfg, "entry": entry}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()
