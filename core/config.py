"""Typed run configuration: ``key=value`` overrides, YAML files, plugin schemas, and the config hash.

A run's config is resolved once into a ``RunConfig``: typed sections (``run.trainer.steps``, ``run.eval.seed``)
and, for each plugin section, the chosen plugin with its validated config (``run.plugin("method")``). Read as a
mapping it is the run's JSON view, the form config.yaml, student.json, results and the config hash hold::

    {"trainer": {...}, "eval": {...}, "teacher": {"name": "digits", ...}, "method": {"name": "dimo", ...},
     "divergence": {"name": "fkl"}, ...}

Each section is validated by its pydantic model: ``TrainerConfig``/``EvalConfig`` for the core sections,
the selected plugin's ``Config`` for plugin sections. Layers, lowest first: core defaults, the method's
``trainer_defaults``, the recipe (core/recipes.py: the teacher x method file, or ``recipe=NAME``),
``config=file.yaml`` files, then the command line; ``resolve_with_sources`` also says which layer set each value.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.errors import UserError
from core.recipes import Recipe, default_recipe, named_recipe
from registry import get_registry
from registry.registry import UnknownPluginError


class TrainerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = Field(1000, ge=0, description="optimizer steps")
    batch_size: int = Field(64, gt=0, description="samples per optimizer step over all processes and micro-steps "
                                                  "(micro-batch: batch_size / (processes x grad_accum))")
    grad_accum: int = Field(1, ge=1, description="micro-steps whose gradients each optimizer step accumulates "
                                                 "(DeepSpeed gradient_accumulation_steps); steps, warm-up, EMA, "
                                                 "logs and checkpoints count optimizer steps; see docs/guide.md")
    zero_stage: int = Field(0, ge=0, le=3, description="DeepSpeed ZeRO stage for trainable roles")
    seed: int = Field(0, description="training seed; every step reseeds from (seed, step, rank), so resume is exact")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 on GPU, fp32 on CPU")
    bf16_mode: Literal["autocast", "weights"] = Field(
        "autocast", description="how bf16 runs inside DeepSpeed: autocast (its torch_autocast section: fp32 weights, "
                                "bf16 matmuls, every role) or weights (its bf16 section: bf16 module weights with "
                                "fp32 master copies, trainable roles only); see docs/performance.md")
    compile: bool = Field(False, description="torch.compile every role's network (CUDA; see docs/performance.md)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA (nccl) if available, else CPU (gloo)")
    checkpoint_every: int = Field(0, ge=0, description="save a resumable checkpoint every N steps (0: only at the end)")
    keep_checkpoints: int = Field(2, ge=1, description="older complete checkpoints are pruned")
    resume: str = Field("auto", description="auto (latest checkpoint in output_dir, if any), never, or a path")
    output_dir: Optional[str] = Field(None, description="default: runs/<method>-<teacher>-<config hash>")
    log_every: int = Field(25, gt=0, description="steps between metric records (metrics.jsonl, wandb, progress bar)")
    wandb: Literal["offline", "online", "disabled"] = Field("offline", description="wandb mode; offline runs sync later with `wandb sync`")
    wandb_project: str = Field("dimo", description="wandb project name")
    progress: bool = Field(True, description="tqdm progress bar with losses and throughput (rank 0)")
    on_nonfinite: Literal["stop", "skip", "warn"] = Field(
        "stop", description="a nan/inf loss or gradient of any role: stop (exit 3, the last good checkpoint is kept), "
                            "skip (drop that update; checks every step) or warn (go on); see docs/guide.md")


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(True, description="evaluate after training (rank 0)")
    samples_per_class: int = Field(100, gt=0, description="generated samples per class for every evaluated model")
    teacher_steps: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [1, 2, 4, 8, 16], description="teacher sampling step counts to evaluate beside the student")
    batch_size: int = Field(500, gt=0, description="generation batch")
    seed: int = Field(1234, description="sampling seed of the evaluation")
    metrics: list[str] = Field(default_factory=lambda: ["frechet", "inception_score", "prdc", "accuracy"], description="metric plugins computed on every evaluated model (names checked when the run is resolved)")

    @field_validator("metrics")
    @classmethod
    def _installed_metrics(cls, names: list[str]) -> list[str]:
        for name in names:   # a typo fails here, not after the whole training
            try:
                get_registry().get("metric", name)
            except UnknownPluginError as exc:
                raise ValueError(str(exc)) from None
        return names


CORE_SECTIONS: dict[str, type[BaseModel]] = {"trainer": TrainerConfig, "eval": EvalConfig}
# Results do not depend on these, so they are left out of the config hash.
# bf16_mode and compile change only how the same computation runs (like device), not what is computed.
UNHASHED = {"trainer": {"output_dir", "resume", "wandb", "wandb_project", "progress", "log_every",
                        "checkpoint_every", "keep_checkpoints", "device", "on_nonfinite", "bf16_mode", "compile"}}
DEFAULT_CHOICES = {"method": "dimo", "teacher": "digits"}


class PluginChoice(NamedTuple):
    """A plugin section of a run: the plugin's name, its class and its validated config."""
    name: str
    cls: type
    config: BaseModel


class RunConfig(Mapping):
    """One resolved run, typed and immutable: ``run.trainer`` (``TrainerConfig``), ``run.eval`` (``EvalConfig``),
    ``run.plugin(kind)`` (a ``PluginChoice`` per plugin section: teacher, method, then the method's ``uses``).

    As a mapping it is the JSON view (``run["method"]["name"]``) that config.yaml, student.json, checkpoints,
    results and the hash are made of; ``as_dict()`` is a copy to change, ``updated`` resolves a changed run."""

    def __init__(self, trainer: TrainerConfig, eval: EvalConfig, plugins: dict[str, PluginChoice]):
        self.trainer, self.eval, self._plugins = trainer, eval, dict(plugins)
        self._view = {"trainer": trainer.model_dump(mode="json"), "eval": eval.model_dump(mode="json"),
                      **{kind: {"name": p.name, **p.config.model_dump(mode="json")} for kind, p in plugins.items()}}

    def __getitem__(self, section: str) -> dict:
        return self._view[section]

    def __iter__(self):
        return iter(self._view)

    def __len__(self) -> int:
        return len(self._view)

    def __repr__(self) -> str:
        return f"RunConfig({self.name}, hash {self.hash})"

    def plugin(self, kind: str) -> PluginChoice:
        return self._plugins[kind]

    @property
    def plugin_kinds(self) -> tuple[str, ...]:
        return tuple(self._plugins)

    @property
    def name(self) -> str:
        return f"{self.plugin('method').name}-{self.plugin('teacher').name}"

    @cached_property
    def hash(self) -> str:
        return config_hash(self)

    def as_dict(self) -> dict:
        return copy.deepcopy(self._view)

    def updated(self, changes: dict) -> "RunConfig":
        """This run with ``changes`` (sections of fields) merged in, resolved and checked again."""
        return resolve_dict(merge(self.as_dict(), changes))


# ------------------------------------------------------------------------------------------------
# parsing
# ------------------------------------------------------------------------------------------------

def parse_value(text: str) -> Any:
    """Scalars stay strings (pydantic converts them by the declared type); lists and maps are YAML."""
    stripped = text.strip()
    if stripped[:1] in "[{":
        try:
            return yaml.safe_load(stripped)
        except yaml.YAMLError as exc:
            raise UserError(f"could not parse '{text}' as a list or mapping: {exc}") from None
    if stripped.lower() in ("null", "none", "~"):
        return None
    return text


def parse_overrides(args: list[str]) -> tuple[list[tuple[str, dict]], dict]:
    """``key=value`` arguments -> ([(config file, its contents)], nested overrides)."""
    files, overrides = [], {}
    for arg in args:
        if "=" not in arg:
            raise UserError(f"argument '{arg}' is not of the form key=value (e.g. method=dimo, "
                            f"method.cfg_scale=2, config=run.yaml)")
        key, value = arg.split("=", 1)
        if key == "config":
            files.append((value, load_yaml(value)))
            continue
        set_path(overrides, key.split("."), parse_value(value), arg)
    return files, overrides


def read_yaml_mapping(path: str, what: str = "config file") -> dict:
    """A YAML file that must hold a mapping; every file-system or syntax problem is a UserError."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} '{path}' does not exist" + (" (it is a folder)" if p.is_dir() else ""))
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{what} '{path}' is not valid YAML: {' '.join(str(exc).split())}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{what} '{path}' cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} '{path}' must hold a mapping of sections, not {type(data).__name__}")
    return data


def load_yaml(path: str) -> dict:
    return config_sections(read_yaml_mapping(path), f"config file '{path}'")


def config_sections(data: dict, where: str) -> dict:
    """The sections of a config or recipe file: ``divergence: rkl`` selects a plugin (``{"name": "rkl"}``)."""
    out = {}
    for key, value in data.items():
        if isinstance(value, str) and key not in CORE_SECTIONS:
            value = {"name": value}
        if not isinstance(value, dict):
            example = "a plugin name or a mapping of fields" if key not in CORE_SECTIONS else "a mapping of fields"
            raise UserError(f"{where}: section '{key}' must be {example}, got {type(value).__name__} {value!r}")
        out[str(key)] = value
    return out


def set_path(tree: dict, keys: list[str], value: Any, arg: str = "") -> None:
    if not all(keys):
        raise UserError(f"argument '{arg}' has an empty key")
    from core.cli import set_nested
    if len(keys) == 1 and keys[0] not in CORE_SECTIONS:
        keys = [keys[0], "name"]             # a bare group key selects a plugin: method=dimo
    set_nested(tree, keys, value, arg)


def merge(base: dict, top: dict, path: str = "") -> dict:
    """``top`` refines ``base`` key by key. Setting keys inside a value that is not a section is an error
    (never a silent replacement of what the lower layer said)."""
    out = copy.deepcopy(base)
    for k, v in top.items():
        here = f"{path}.{k}" if path else str(k)
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v, here)
        elif isinstance(v, dict) and out.get(k) is not None:
            raise UserError(f"'{here}' is {type(out[k]).__name__} {out[k]!r}, not a mapping, so keys inside it "
                            f"({', '.join(map(str, v))}) cannot be set; write it as a mapping of fields")
        else:
            out[k] = copy.deepcopy(v)
    return out


# ------------------------------------------------------------------------------------------------
# resolution
# ------------------------------------------------------------------------------------------------

class Resolution(NamedTuple):
    config: RunConfig             # the resolved config
    sources: dict[str, str]       # dotted field -> "default", "recipe <name>", "file <path>" or "command line"
    recipe: Optional[Recipe]      # the recipe applied, if any


def resolve(args: list[str], base: Optional[dict] = None) -> RunConfig:
    """Resolve command-line arguments into a validated, fully populated run config."""
    return resolve_with_sources(args, base).config


def resolve_with_sources(args: list[str], base: Optional[dict] = None) -> Resolution:
    """``resolve``, saying where each value comes from (``show-config``)."""
    files, overrides = parse_overrides(args)
    layers = [("base", base)] if base else []
    return resolve_layers(layers + [(f"file {path}", values) for path, values in files]
                          + [("command line", overrides)])


def resolve_dict(user: Mapping) -> RunConfig:
    """A run config from sections given as data (a stored config.yaml or student.json, a suite entry)."""
    return resolve_layers([("given", user)]).config


def resolve_layers(layers: list[tuple[str, Mapping]]) -> Resolution:
    """The user's layers (label, sections), lowest first, over the defaults and the recipe."""
    user: dict = {}
    for _, values in layers:
        user = merge(user, values)
    reg = get_registry()
    for key, section in user.items():
        if not isinstance(section, dict):
            raise UserError(f"config section '{key}' must be a mapping of fields, got {type(section).__name__} "
                            f"{section!r}")
        if "name" in section and section["name"] is not None and not isinstance(section["name"], str):
            raise UserError(f"{key}.name must be a plugin name, got {section['name']!r} (valid: "
                            f"{', '.join(reg.names(key)) if key in reg.entries else 'a name'})")
    method_name = user.get("method", {}).get("name") or DEFAULT_CHOICES["method"]
    teacher_name = user.get("teacher", {}).get("name") or DEFAULT_CHOICES["teacher"]
    method_cls = lookup("method", method_name)
    teacher_cls = lookup("teacher", teacher_name)
    groups = ("teacher", "method") + tuple(method_cls.uses)

    unknown = set(user) - set(CORE_SECTIONS) - set(groups) - {"recipe"}
    for key in sorted(unknown):
        if key in reg.entries:
            raise UserError(f"'{key}' is not used by method '{method_name}'; it takes: "
                            f"{', '.join(groups[2:]) or 'no other plugins'}")
        raise UserError(f"unknown config section '{key}'; valid sections: "
                        f"{', '.join(list(CORE_SECTIONS) + list(groups))}")

    recipe = choose_recipe(user, (teacher_name, teacher_cls), (method_name, method_cls), groups)
    below = [("default", {"trainer": dict(method_cls.trainer_defaults)})]
    below += [(f"recipe {recipe.name}", recipe.values)] if recipe else []
    layered: dict = {}
    for _, values in below:
        layered = merge(layered, values)
    layered = merge(layered, user)

    core = {section: validate_model(model, layered.get(section, {}), section)
            for section, model in CORE_SECTIONS.items()}
    plugins: dict[str, PluginChoice] = {}
    for kind in groups:
        values = dict(layered.get(kind, {}))
        name = values.pop("name", None) or {"method": method_name, "teacher": teacher_name}.get(kind) \
            or method_cls.defaults.get(kind)
        if name is None:
            raise UserError(f"method '{method_name}' needs a {kind}: set {kind}=<name> "
                            f"(valid: {', '.join(reg.names(kind))})")
        cls = lookup(kind, name)
        plugins[kind] = PluginChoice(name, cls, validate_model(cls.Config, values, kind))
    resolved = RunConfig(core["trainer"], core["eval"], plugins)
    check_resolved(resolved)
    return Resolution(resolved, value_sources(resolved, below + layers), recipe)


def choose_recipe(user: dict, teacher: tuple[str, type], method: tuple[str, type], groups) -> Optional[Recipe]:
    """The recipe layer (popped from ``user``): ``recipe=NAME``, ``recipe=none``, or the pair's own."""
    if "recipe" not in user:
        recipe = default_recipe(teacher, method)
    else:
        section = user.pop("recipe")
        if set(section) != {"name"}:
            raise UserError(f"recipe takes a name (recipe=NAME, recipe=TEACHER/NAME or recipe=none), got {section!r}")
        recipe = named_recipe(section["name"], teacher) if section["name"] is not None else None
    unused = set(recipe.values) - set(CORE_SECTIONS) - set(groups) if recipe else ()
    if unused:
        raise UserError(f"recipe {recipe.describe()} sets {', '.join(sorted(unused))}, which method '{method[0]}' "
                        f"does not use; it takes: {', '.join(list(CORE_SECTIONS) + list(groups))}")
    return recipe


def value_sources(resolved: dict, layers: list[tuple[str, dict]]) -> dict[str, str]:
    """Dotted field -> the label of the highest layer that sets it; "default" where none does."""
    return {".".join(path): next((label for label, values in reversed(layers) if sets(values, path)), "default")
            for path in leaf_paths(resolved)}


def leaf_paths(tree: dict, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Key paths to every value that is not a non-empty mapping (lists are values)."""
    return [p for k, v in tree.items()
            for p in (leaf_paths(v, prefix + (k,)) if isinstance(v, dict) and v else [prefix + (k,)])]


def sets(values: Any, path: tuple[str, ...]) -> bool:
    """Whether a layer's ``values`` hold ``path``."""
    for key in path:
        if not isinstance(values, dict) or key not in values:
            return False
        values = values[key]
    return True


class LazyTeacher:
    """The teacher of a resolved config, built on first use: most checks never touch it, and building some
    teachers reads files (a hub config.json), which ``show-config`` and offline resolution must not need."""

    def __init__(self, cls, config):
        self._cls, self._config, self._obj = cls, config, None

    def __getattr__(self, name):
        if self._obj is None:
            self._obj = self._cls(self._config)
        return getattr(self._obj, name)

    @property
    def __class__(self):   # messages and isinstance see the teacher's own class
        return self._cls


def check_resolved(run: RunConfig) -> None:
    """Checks across sections, so that a run fails when it is resolved, never after training: each plugin's
    ``check_config`` against the teacher (token ids, what the teacher can do)."""
    teacher = run.plugin("teacher")
    lazy = LazyTeacher(teacher.cls, teacher.config)
    for kind in run.plugin_kinds:
        choice = run.plugin(kind)
        choice.cls.check_config(choice.config, lazy)


def lookup(kind: str, name: str):
    try:
        return get_registry().get(kind, name)
    except UnknownPluginError as exc:
        raise UserError(str(exc)) from None


def validate_model(model: type[BaseModel], values: Any, section: str) -> BaseModel:
    """``values`` validated by ``model``; every problem is a UserError naming the section's fields."""
    if not isinstance(values, dict):
        raise UserError(f"'{section}' must be a mapping of fields, got {values!r}")
    try:
        obj = model.model_validate(values)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, model, section)) from None
    except UnknownPluginError as exc:   # a validator that looks a plugin name up (pydantic passes it through)
        raise UserError(f"{section}: {exc}") from None
    bad = nonfinite_fields(obj.model_dump(), section)
    if bad:   # 'nan', 'inf' and overflowing literals such as 1e400 parse as floats; no field means them
        raise UserError("invalid configuration:\n  " + "\n  ".join(
            f"{path}: must be a finite number (got {value!r})" for path, value in bad))
    return obj


def validate(model: type[BaseModel], values: Any, section: str) -> dict:
    """``validate_model``, as JSON-ready values."""
    return validate_model(model, values, section).model_dump(mode="json")


def nonfinite_fields(value: Any, path: str) -> list[tuple[str, float]]:
    """(dotted path, value) of every nan/inf float in a nested structure of dicts, lists and tuples."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [(path, value)]
    if isinstance(value, dict):
        return [bad for k, v in value.items() for bad in nonfinite_fields(v, f"{path}.{k}")]
    if isinstance(value, (list, tuple)):
        return [bad for i, v in enumerate(value) for bad in nonfinite_fields(v, f"{path}.{i}")]
    return []


def format_validation_error(exc: ValidationError, model: type[BaseModel], section: str) -> str:
    lines = []
    for err in exc.errors():
        path = ".".join([section] + [str(p) for p in err["loc"]])
        if err["type"] == "extra_forbidden":
            valid = ", ".join(sorted(model.model_fields)) or "(no fields)"
            lines.append(f"{path}: unknown field (got {err['input']!r}); valid fields of {section}: {valid}")
        else:
            lines.append(f"{path}: {err['msg']} (got {err['input']!r})")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def section_config(resolved: Mapping, kind: str):
    """(plugin class, validated config) of a plugin section: a run's own, or a section given as data."""
    if isinstance(resolved, RunConfig):
        return resolved.plugin(kind).cls, resolved.plugin(kind).config
    values = dict(resolved[kind])
    cls = lookup(kind, values.pop("name"))
    return cls, validate_model(cls.Config, values, kind)


def config_hash(resolved: Mapping) -> str:
    hashed = {k: {f: v for f, v in sec.items() if f not in UNHASHED.get(k, ())} if isinstance(sec, dict) else sec
              for k, sec in resolved.items() if k != "eval"}
    blob = json.dumps(hashed, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def to_yaml(resolved: Mapping) -> str:
    return yaml.safe_dump(dict(resolved), sort_keys=False)


def to_annotated_yaml(resolved: Mapping, sources: dict[str, str]) -> str:
    """``to_yaml`` with each value's source as an end-of-line comment (the YAML loads to the same config)."""
    rows = []   # (text, comment)

    def walk(tree: dict, prefix: str, indent: str) -> None:
        for key, value in tree.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict) and value:
                rows.append((f"{indent}{key}:", ""))
                walk(value, f"{path}.", indent + "  ")
            else:
                rows.append((f"{indent}{key}: {flow_yaml(value)}", sources.get(path, "default")))

    walk(resolved, "", "")
    column = min(max(len(text) for text, _ in rows), 60) + 2
    return "".join(f"{text.ljust(column)}# {comment}\n" if comment else f"{text}\n" for text, comment in rows)


def flow_yaml(value: Any) -> str:
    """One value as one line of YAML (``[1, 2]``, ``{name: clip, weight: 1.0}``, ``null``)."""
    return yaml.safe_dump(value, default_flow_style=True, width=math.inf).removesuffix("\n...\n").strip()
