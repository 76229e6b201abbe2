"""Entry-point discovery and the name -> class table, one per plugin kind."""
from __future__ import annotations

import difflib
import importlib.metadata as md
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy
from pydantic import BaseModel

from registry import hookspecs

KINDS = ("teacher", "method", "divergence", "init", "schedule", "sampler",
         "discriminator", "reward", "search", "metric", "evaluator")
GROUP = "dimo"
# Kill switches, named like pytest's and tox's.
ENV_DISABLE_AUTOLOAD = "DIMO_DISABLE_PLUGIN_AUTOLOAD"   # only the built-in (dimo distribution) plugins load
ENV_BLOCKED = "DIMO_DISABLED_PLUGINS"                    # comma-separated entry-point names never loaded
BUILTIN_DIST = "dimo"


class UnknownPluginError(KeyError):
    def __init__(self, kind: str, name: str, valid: list[str]):
        close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        self.message = (f"unknown {kind} '{name}'.{hint} Valid {kind} names: "
                        f"{', '.join(sorted(valid)) or '(none installed)'}.")
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


@dataclass
class PluginInfo:
    kind: str
    name: str
    cls: type
    plugin: str          # entry-point name
    distribution: str
    version: str


@dataclass
class RecipeInfo:
    name: str            # <teacher>/<recipe>, the file <folder>/<teacher>/<recipe>.yaml
    path: Path
    plugin: str          # entry-point name
    distribution: str
    version: str


@dataclass
class LoadFailure:
    plugin: str
    distribution: str
    error: str


@dataclass
class Registry:
    entries: dict[str, dict[str, PluginInfo]] = field(default_factory=lambda: {k: {} for k in KINDS})
    failures: list[LoadFailure] = field(default_factory=list)
    recipes: dict[str, RecipeInfo] = field(default_factory=dict)

    # -- registration -------------------------------------------------------------------------
    def add(self, kind: str, name: str, cls: type, *, plugin: str, distribution: str, version: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"plugin '{plugin}' registers unknown kind '{kind}'; valid kinds: {', '.join(KINDS)}")
        config = getattr(cls, "Config", None)
        if not (isinstance(config, type) and issubclass(config, BaseModel)):
            raise TypeError(f"{kind} '{name}' from plugin '{plugin}' has no pydantic `Config` class")
        if config.model_config.get("extra") != "forbid":
            raise TypeError(f"{kind} '{name}': its Config must set model_config = ConfigDict(extra='forbid')")
        self._claim(self.entries[kind], f"{kind} '{name}'", PluginInfo(kind, name, cls, plugin, distribution, version),
                    lambda existing: existing.cls is cls)

    def add_recipes(self, folder: Any, *, plugin: str, distribution: str, version: str) -> None:
        """Every recipe file ``<folder>/<teacher>/<recipe>.yaml`` a plugin's ``dimo_recipes`` hook declares."""
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"plugin '{plugin}' declares the recipe folder '{folder}', which is not a folder")
        for path in sorted(folder.glob("*/*.yaml")):
            info = RecipeInfo(f"{path.parent.name}/{path.stem}", path, plugin, distribution, version)
            self._claim(self.recipes, f"recipe '{info.name}'", info, lambda existing: existing.path == path)

    @staticmethod
    def _claim(table: dict, what: str, info, same) -> None:
        """``table[name] = info``: a built-in keeps its name against a third party, whichever loads first; two
        others are an error."""
        existing = table.get(info.name)
        if existing is not None and not same(existing):
            builtin = [i for i in (existing, info) if i.distribution == BUILTIN_DIST]
            if len(builtin) != 1:
                raise ValueError(f"{what} registered twice: by {existing.distribution} ({existing.plugin}) and by "
                                 f"{info.distribution} ({info.plugin})")
            other = info if builtin[0] is existing else existing
            print(f"dimo: {what} from {other.distribution} ignored: the built-in one takes precedence", file=sys.stderr)
            info = builtin[0]
        table[info.name] = info

    # -- lookup ---------------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def info(self, kind: str, name: str) -> PluginInfo:
        if kind not in KINDS:
            raise UnknownPluginError("plugin kind", kind, list(KINDS))
        try:
            return self.entries[kind][name]
        except KeyError:
            raise UnknownPluginError(kind, name, self.names(kind)) from None

    def get(self, kind: str, name: str) -> type:
        return self.info(kind, name).cls

    def all(self) -> list[PluginInfo]:
        return [info for kind in KINDS for _, info in sorted(self.entries[kind].items())]


def _entry_points() -> list[tuple[md.EntryPoint, md.Distribution]]:
    """Entry points of the dimo group, de-duplicated by (distribution, name): editable installs and
    lib64 -> lib symlinks can make one distribution appear twice."""
    seen, found = set(), []
    for dist in md.distributions():
        for ep in dist.entry_points:
            if ep.group != GROUP:
                continue
            key = (dist.metadata["Name"], ep.name)
            if key not in seen:
                seen.add(key)
                found.append((ep, dist))
    return found


def load_registry() -> Registry:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    registry = Registry()
    blocked = {n.strip() for n in os.environ.get(ENV_BLOCKED, "").split(",") if n.strip()}
    autoload = os.environ.get(ENV_DISABLE_AUTOLOAD, "").lower() not in ("1", "true", "yes")
    for ep, dist in _entry_points():
        dist_name = dist.metadata["Name"]
        if ep.name in blocked or (not autoload and dist_name != BUILTIN_DIST):
            continue
        try:
            module = ep.load()
            if pm.is_registered(module):
                continue
            pm.register(module, name=f"{dist_name}:{ep.name}")

            def register(kind: str, name: str, cls: type, _ep=ep, _dist=dist_name, _ver=dist.version) -> None:
                registry.add(kind, name, cls, plugin=_ep.name, distribution=_dist, version=_ver)

            # pluggy verified the signatures against the hookspecs at register()
            registers = [i for i in pm.hook.dimo_register.get_hookimpls() if i.plugin is module]
            recipe_folders = [i for i in pm.hook.dimo_recipes.get_hookimpls() if i.plugin is module]
            if not registers and not recipe_folders:
                raise AttributeError(f"module {ep.value} implements no dimo hook: @hookimpl "
                                     f"dimo_register(register) and/or dimo_recipes()")
            for impl in registers:
                impl.function(register=register)
            for impl in recipe_folders:
                registry.add_recipes(impl.function(), plugin=ep.name, distribution=dist_name, version=dist.version)
        except Exception as exc:  # one broken plugin must not break the framework
            if dist_name == BUILTIN_DIST:
                raise
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            registry.failures.append(LoadFailure(ep.name, f"{dist_name} {dist.version}", detail))
            print(f"dimo: plugin '{ep.name}' from {dist_name} {dist.version} failed to load and is skipped: "
                  f"{detail}", file=sys.stderr)
    return registry


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = load_registry()
    return _REGISTRY


def reset_registry() -> None:
    global _REGISTRY
    _REGISTRY = None


def build(kind: str, name: str, config: Any = None, **kwargs: Any) -> Any:
    """Instantiate a registered plugin with a validated config (dict or Config instance)."""
    cls = get_registry().get(kind, name)
    if not isinstance(config, BaseModel):
        config = cls.Config.model_validate(config or {})
    return cls(config, **kwargs)
