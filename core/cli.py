"""The one command-line grammar of every dimo entry point (``core.run`` subcommands, ``benchmarks.run``, the
MaskGit evaluation, ``benchmarks.digits_table2``): ``key=value`` arguments, dotted keys for nesting
(``tteo.seeds=4`` -> ``{"tteo": {"seeds": 4}}``), lists and mappings in YAML (``rewards=[{name: clip}]``),
``null``/``none`` for None; scalars stay strings for the schema (pydantic) to convert by the declared type.
"""
from __future__ import annotations

from typing import Callable, Optional

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


def int_option(opts: dict, key: str, default: Optional[int], minimum: int = 1) -> Optional[int]:
    """``opts[key]`` (popped) as an integer >= ``minimum``; ``default`` when absent (None stays None)."""
    value = opts.pop(key, default)
    if value is None:
        return None
    try:
        if int(value) >= minimum:
            return int(value)
    except (TypeError, ValueError):
        pass
    raise UserError(f"{key}='{value}' is not an integer >= {minimum}")


def device_option(name: str):
    """``device=auto|cpu|cuda`` as a torch device; cuda without a CUDA device is an error."""
    import torch
    if name not in ("auto", "cpu", "cuda"):
        raise UserError(f"device='{name}' is not one of: auto, cpu, cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA device is available; valid here: auto, cpu")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


def run_subcommand(argv: Optional[list[str]], commands: dict[str, Callable[[list[str]], object]], usage: str) -> int:
    """``python -m <tool> COMMAND key=value ...``: the usage without a known command (exit 0 for -h/--help, else
    2), a UserError as one line on stderr (exit 2)."""
    import sys
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in commands:
        print(usage.strip())
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        commands[argv[0]](argv[1:])
    except UserError as exc:
        print(f"dimo: error: {exc}", file=sys.stderr)
        return 2
    return 0
