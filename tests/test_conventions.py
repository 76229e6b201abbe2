"""Conventions the code base keeps, checked the way datasette checks its plugin hooks: every config field of a
built-in plugin is described (the generated reference and error messages read it), every method has its page
docs/methods/<name>.md, and every plugin kind has a documented example in docs/plugins.md."""
import re

import pytest
from pydantic import BaseModel

from conftest import ROOT
from registry import get_registry
from registry.registry import BUILTIN_DIST, KINDS

BUILTIN = [info for info in get_registry().all() if info.distribution == BUILTIN_DIST]


def undescribed(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        if not field.description:
            out.append(prefix + name)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out += undescribed(field.annotation, f"{prefix}{name}.")
    return out


@pytest.mark.parametrize("info", BUILTIN, ids=lambda i: f"{i.kind}.{i.name}")
def test_every_config_field_has_a_description(info):
    assert undescribed(info.cls.Config) == [], f"{info.kind} '{info.name}': fields without a description"


@pytest.mark.parametrize("name", sorted(i.name for i in BUILTIN if i.kind == "method"))
def test_every_method_has_its_docs_page(name):
    page = ROOT / "docs" / "methods" / f"{name}.md"
    assert page.is_file() and len(page.read_text().split()) > 50, f"docs/methods/{name}.md is missing or a stub"


def test_every_plugin_kind_has_a_documented_example():
    text = (ROOT / "docs" / "plugins.md").read_text()
    documented = set(re.findall(r'register\("(\w+)"', text))
    assert set(KINDS) <= documented, f"kinds without an example in docs/plugins.md: {set(KINDS) - documented}"
    table = set(re.findall(r"^\| `(\w+)` \|", text, flags=re.M))
    assert set(KINDS) <= table, f"kinds missing from the table of docs/plugins.md: {set(KINDS) - table}"
