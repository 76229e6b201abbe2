"""The results schema: one JSON file per benchmark run, validated on write and on read.

A record says what ran (the entry of a suite, or the run folder that ``python -m core.run evaluate`` scored, and
its fully resolved config, with the hash that identifies it), where and how (seeds, dimo, torch and DeepSpeed
versions, git commit, every plugin used with the distribution and version that provided it, device, wall time),
and what came out (metric values under stable names, their spread over sampling seeds, and a hash of the
generated samples). Leaderboards are rendered from these files only. A file with a missing or mistyped field is
rejected with an error naming the field (``core.errors.UserError``). The benchmark runner writes one record per
file; a training run's evaluation writes a list of records (one per model and step count) to its ``results.json``,
and ``evaluate`` one per student step count to a new ``evaluation-N.json``.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import platform
import statistics
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Optional

import torch
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, TypeAdapter, ValidationError, model_validator

from core.errors import UserError

SCHEMA_VERSION = 1
GROUPS = ("reference", "teacher", "sampler", "distillation", "test-time", "performance")
Group = Literal["reference", "teacher", "sampler", "distillation", "test-time", "performance"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class EntryInfo(Strict):
    suite: Optional[str] = Field(min_length=1, description="suite name, e.g. digits (None: an evaluation of a "
                                                            "run folder by `python -m core.run evaluate`)")
    suite_version: Optional[int] = Field(ge=1, description="bumped when a suite's measurement changes meaning")
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
    plugin_sources: Optional[dict[str, str]] = Field(
        None, description="kind=name -> distribution of every plugin the record used: its config's sections, "
                          "metrics, evaluator, sampler and search (None in records before it was kept)")
    python: str
    torch: str
    deepspeed: Optional[str] = Field(None, description="DeepSpeed version (None: not installed, or an older record)")
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
    conditions: Optional[dict[str, Any]] = Field(
        None, description="what the samples were conditioned on, when it is text: {prompts, null_prompt}")

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


RECORDS = TypeAdapter(list[Result])


def write_records(path: Path, records: list[dict]) -> Path:
    """Validated records in ``path``, written atomically (a run's ``results.json``)."""
    from core.checkpoint import atomic_write_text
    try:
        checked = RECORDS.validate_python(records)
    except ValidationError as exc:
        raise UserError(describe(exc, str(path))) from None
    atomic_write_text(Path(path), RECORDS.dump_json(checked, indent=1).decode() + "\n")
    return Path(path)


def write_new_records(folder: Path, stem: str, records: list[dict]) -> Path:
    """Validated records in a new file ``<folder>/<stem>-N.json``, N the first free number: a file that exists
    is never overwritten, not even by a concurrent writer (the complete file is hard-linked into place)."""
    try:
        checked = RECORDS.validate_python(records)
    except ValidationError as exc:
        raise UserError(describe(exc, f"{folder}/{stem}-N.json")) from None
    tmp = Path(folder) / f".{stem}-{os.getpid()}.tmp"
    tmp.write_bytes(RECORDS.dump_json(checked, indent=1) + b"\n")
    try:
        for n in itertools.count(1):
            path = Path(folder) / f"{stem}-{n}.json"
            try:
                os.link(tmp, path)
                return path
            except FileExistsError:
                continue
    finally:
        tmp.unlink(missing_ok=True)


def read_records(path: Path) -> list[Result]:
    try:
        return RECORDS.validate_json(Path(path).read_text())
    except ValidationError as exc:
        raise UserError(describe(exc, str(path))) from None


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


def plugins_used(resolved: dict, extra: tuple[tuple[str, str], ...] = ()) -> list:
    """Registry entries (``PluginInfo``: kind, name, distribution, version) of the plugins a record used: the
    plugin sections of its config, its metrics and ``extra`` (kind, name) pairs (evaluator, search)."""
    from registry import get_registry
    from registry.registry import UnknownPluginError
    reg = get_registry()
    pairs = [(kind, section["name"]) for kind, section in resolved.items()
             if isinstance(section, dict) and section.get("name") and kind in reg.entries]
    pairs += [("metric", name) for name in (resolved.get("eval") or {}).get("metrics", [])]
    out = []
    for kind, name in dict.fromkeys(pairs + list(extra)):
        try:
            out.append(reg.info(kind, name))
        except UnknownPluginError:   # cannot be in a fresh resolved config; old records may name removed plugins
            continue
    return out


def package_version(name: str) -> Optional[str]:
    import importlib.metadata as md
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def environment(resolved: dict, device: torch.device, extra: tuple[tuple[str, str], ...] = ()) -> dict:
    """Where and with what a record was made; ``extra``: (kind, name) of plugins used beside the config's."""
    commit, dirty = git_state()
    used = plugins_used(resolved, extra)
    return {"dimo_version": package_version("dimo") or "unknown", "git_commit": commit, "git_dirty": dirty,
            "plugins": {i.distribution: i.version for i in used},
            "plugin_sources": {f"{i.kind}={i.name}": i.distribution for i in used},
            "python": platform.python_version(), "torch": torch.__version__,
            "deepspeed": package_version("deepspeed"), "device": device_name(device),
            "threads": torch.get_num_threads()}


def teacher_sha256(teacher) -> Optional[str]:
    """sha256 of the teacher's weights file (None: not trained yet, or no single file)."""
    try:
        path = teacher.checkpoint_path()
        return None if path is None else file_sha256(path)
    except (UserError, OSError):
        return None


# ------------------------------------------------------------------------------------------------
# metrics of a record
# ------------------------------------------------------------------------------------------------

def summarise(per_seed: list[dict]) -> tuple[dict, dict]:
    """Mean and standard deviation over sampling seeds of the metrics every seed produced finitely."""
    keys = [k for k in per_seed[0] if all(k in r and math.isfinite(r[k]) for r in per_seed)]
    dropped = sorted({k for r in per_seed for k in r} - set(keys))
    if dropped:
        print(f"dimo: metric(s) {dropped} were not finite for every seed and are left out")
    mean = {k: statistics.fmean(r[k] for r in per_seed) for k in keys}
    spread = {k: (statistics.stdev([r[k] for r in per_seed]) if len(per_seed) > 1 else 0.0) for k in keys}
    return mean, spread


def higher_is_better(metric_names: list[str], keys, known: dict[str, bool]) -> dict[str, bool]:
    """Each metric's direction: declared by its metric plugin (``Metric.higher_is_better``) or in ``known``
    (the evaluator's own metrics, a search's reward)."""
    from registry import get_registry
    table = dict(known)
    for name in metric_names:
        table.update(get_registry().get("metric", name).higher_is_better)
    missing = [k for k in keys if k not in table]
    if missing:
        raise UserError(f"metric(s) {missing} declare no direction (Metric.higher_is_better)")
    return {k: table[k] for k in keys}


def scored(per_seed: list[dict], tokens: list[torch.Tensor], metric_names: list[str],
           known: dict[str, bool]) -> dict:
    """The metric fields of a record from an evaluator's per-seed output."""
    mean, spread = summarise(per_seed)
    return {"metrics": mean, "spread": spread, "per_seed": [{k: r[k] for k in mean} for r in per_seed],
            "higher_is_better": higher_is_better(metric_names, mean, known), "sample_hash": tokens_hash(tokens)}


def new_record(entry: dict, resolved: dict, device: torch.device, used: tuple[tuple[str, str], ...] = (),
               **fields) -> dict:
    """A record's common fields: what ran (``entry``, the resolved config), where and with what (``env``; ``used``:
    (kind, name) of plugins used beside the config's), when; ``fields``: the rest."""
    return {"schema_version": SCHEMA_VERSION, "entry": entry, "config": dict(resolved),   # a run config's JSON view
            "env": environment(resolved, device, used), "date": now(), **fields}


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
