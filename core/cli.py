"""The one command-line grammar of every dimo entry point (``core.run`` subcommands, ``benchmarks.run``, the
MaskGit evaluation, ``benchmarks.digits_table2``): ``key=value`` arguments, dotted keys for nesting
(``tteo.seeds=4`` -> ``{"tteo": {"seeds": 4}}``), lists and mappings in YAML (``rewards=[{name: clip}]``),
``null``/``none`` for None; scalars stay strings for the schema (pydantic) to convert by the declared type.
"""
from __future__ import annotations

from typing import Optional

from core.errors import UserError


def set_nested(tree: dict, keys: list[str], value, arg: str = "") -> None:
    """``tree[k0][k1]... = value``, creating sections; a key inside a value is an error."""
    if not all(keys):
        raise UserError(f"argument '{arg}' has an empty key")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise UserError(f"argument '{arg}': '{k}' is a value, not a section")
    node[keys[-1]] = value


def parse_kv(args: list[str], example: str = "key=value", flat: Optional[set[str]] = None) -> dict:
    """``key=value`` arguments -> a nested dict; keys in ``flat`` are kept whole (their values unparsed)."""
    from core.config import parse_value
    out: dict = {}
    for arg in args:
        if "=" not in arg:
            raise UserError(f"argument '{arg}' is not of the form key=value (e.g. {example})")
        key, value = arg.split("=", 1)
        if flat is not None and key in flat:
            out[key] = value
        else:
            set_nested(out, key.split("."), parse_value(value), arg)
    return out


def split_options(args: list[str], names) -> tuple[dict[str, str], list[str]]:
    """A command's own flat options (e.g. ``checkpoint=``, ``device=``) taken out of ``args``; the rest are config
    keys for ``core.config.parse_overrides``, parsed exactly as training parses them (``config=`` files too)."""
    options, rest = {}, []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key in names:
            options[key] = value
        else:
            rest.append(arg)
    return options, rest


def check_keys(values: dict, valid, command: str) -> None:
    """Unknown top-level keys are errors naming the valid ones."""
    unknown = [k for k in values if k not in valid]
    if unknown:
        raise UserError(f"{command}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
