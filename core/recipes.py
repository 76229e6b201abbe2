"""Recipes: tuned values of one method on one teacher, as YAML files (torchtune-style recipes, as data).

A recipe is ``<folder>/<teacher>/<recipe>.yaml`` in a folder that a plugin declares through its ``dimo_recipes``
hook (dimo's own: ``plugins/recipes/``), named ``<teacher>/<recipe>``. It has the format of a ``config=`` file;
resolution layers it above the defaults and below the user's files and command line (core/config.py).

Which recipe applies:

* ``recipe=NAME``: the recipe NAME of the selected teacher (``recipe=soft_dimo``), ``recipe=TEACHER/NAME`` any
  teacher's, ``recipe=none`` none;
* otherwise the first file that exists of ``<t>/<m>``, for t in the teacher's and m in the method's
  ``recipe_names`` (the registered name, then each ``recipe`` declared up the class hierarchy): a DiMO subclass
  gets the Di[M]O recipe unless a recipe is written under its own name; none is no recipe.

``extends: NAME`` in a file starts from another recipe (a NAME without a teacher: the same teacher's). Sections
merge field by field, except that a section naming another plugin replaces the inherited one: fields belong to
the plugin they were written for.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Optional

from core.errors import UserError
from registry import get_registry
from registry.registry import RecipeInfo


@dataclass(frozen=True)
class Recipe:
    info: RecipeInfo
    values: dict          # config sections, ``extends`` applied

    @property
    def name(self) -> str:
        return self.info.name

    def describe(self) -> str:
        return f"{self.name} ({self.info.path}, from {self.info.distribution} {self.info.version})"


def default_recipe(teacher: tuple[str, type], method: tuple[str, type]) -> Optional[Recipe]:
    """The recipe a (teacher, method) pair gets when the user names none; None if no file is written for it."""
    recipes = get_registry().recipes
    methods = method[1].recipe_names(method[0])
    found = next((f"{t}/{m}" for t in teacher[1].recipe_names(teacher[0]) for m in methods
                  if f"{t}/{m}" in recipes), None)
    return None if found is None else load_recipe(found)


def named_recipe(name: str, teacher: tuple[str, type]) -> Recipe:
    """``recipe=NAME``: NAME of the selected teacher (through its recipe names), or a qualified TEACHER/NAME."""
    recipes = get_registry().recipes
    candidates = [name] if "/" in name else [f"{t}/{name}" for t in teacher[1].recipe_names(teacher[0])]
    found = next((c for c in candidates if c in recipes), None)
    if found is None:
        raise UserError(unknown_recipe(name, teacher[0], candidates))
    return load_recipe(found)


def unknown_recipe(name: str, teacher: str, candidates: list[str]) -> str:
    names = sorted(get_registry().recipes)
    own = [n.split("/", 1)[1] for n in names if n.startswith(f"{teacher}/")]
    close = difflib.get_close_matches(name, own + names, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return (f"unknown recipe '{name}' (looked for {', '.join(candidates)}).{hint} Valid: recipe=NAME for "
            f"teacher '{teacher}': {', '.join(own) or '(none written)'}; recipe=TEACHER/NAME: "
            f"{', '.join(names) or '(none installed)'}; recipe=none for no recipe.")


def load_recipe(name: str, inheriting: tuple[str, ...] = ()) -> Recipe:
    """The installed recipe ``name`` as config sections, with what it ``extends`` underneath."""
    from core.config import config_sections, read_yaml_mapping   # core.config resolves with this module
    info = get_registry().recipes[name]
    data = read_yaml_mapping(str(info.path), f"recipe file '{name}'")
    parent = data.pop("extends", None)
    values = config_sections(data, f"recipe file '{info.path}'")
    for kind in ("teacher", "method"):
        if "name" in values.get(kind, {}):
            raise UserError(f"recipe file '{info.path}': {kind}.name is set; a recipe is for the teacher and "
                            f"method it is named after and cannot select them (remove {kind}.name)")
    if parent is None:
        return Recipe(info, values)
    if not isinstance(parent, str):
        raise UserError(f"recipe file '{info.path}': extends must be a recipe name, got {parent!r}")
    parent = parent if "/" in parent else f"{name.split('/')[0]}/{parent}"
    if parent not in get_registry().recipes:
        raise UserError(f"recipe file '{info.path}': extends '{parent}', which is not an installed recipe; valid: "
                        f"{', '.join(sorted(get_registry().recipes))}")
    if parent in inheriting + (name,):
        raise UserError(f"recipes extend each other: {' -> '.join(inheriting + (name, parent))}")
    return Recipe(info, inherit(load_recipe(parent, inheriting + (name,)).values, values))


def inherit(base: dict, top: dict) -> dict:
    """``top``'s sections over ``base``'s: field by field, or whole where ``top`` names another plugin."""
    from core.config import merge
    out = dict(base)
    for kind, section in top.items():
        other_plugin = "name" in section and section["name"] != base.get(kind, {}).get("name")
        out[kind] = section if other_plugin else merge(base.get(kind, {}), section, kind)
    return out
