"""Building a run's objects from its resolved config: the teacher, the method and the method's plugins.

A module of its own so that the engine (which trains and exports) and the export (which loads students back)
both import it, and neither imports the other for it.
"""
from __future__ import annotations

from core.config import section_config
from core.interfaces import Method, Plugin, Teacher


def build_plugins(resolved: dict, kinds) -> dict[str, Plugin]:
    """The plugins of ``kinds`` (a method's ``uses``) with their resolved configs."""
    plugins = {}
    for kind in kinds:
        cls, cfg = section_config(resolved, kind)
        plugins[kind] = cls(cfg)
    return plugins


def build_teacher(resolved: dict) -> Teacher:
    cls, cfg = section_config(resolved, "teacher")
    return cls(cfg)


def build_method(resolved: dict, teacher: Teacher | None = None) -> tuple[Method, Teacher]:
    """The method attached to its teacher (``teacher``: an already built one, else built here) and plugins."""
    teacher = teacher if teacher is not None else build_teacher(resolved)
    method_cls, method_cfg = section_config(resolved, "method")
    method = method_cls(method_cfg)
    method.attach(teacher, build_plugins(resolved, method_cls.uses))
    return method, teacher
