"""docs/plugins.md's complete plugin (a method and a metric) is installed exactly as printed, then trains,
exports, generates and is evaluated with its metric (issue 16, class 9)."""
import re

import pytest

from conftest import ROOT
from core.testing import run_method
from registry.registry import reset_registry

DOC = (ROOT / "docs" / "plugins.md").read_text()


def doc_block(first_line: str) -> str:
    """The fenced code block of docs/plugins.md whose first line is ``first_line``."""
    blocks = re.findall(r"```\w*\n(.*?)```", DOC, re.S)
    found = [b for b in blocks if b.startswith(first_line + "\n")]
    assert len(found) == 1, f"docs/plugins.md has {len(found)} blocks starting with {first_line!r}"
    return found[0]


@pytest.fixture
def installed_doc_plugin(tmp_path, monkeypatch):
    """What ``pip install`` of the doc's package leaves on sys.path: the module and a dist-info naming its entry
    point (name, version and entry points read from the doc's pyproject.toml)."""
    toml = doc_block("# pyproject.toml")
    name = re.search(r'^name = "(.+)"', toml, re.M).group(1)
    version = re.search(r'^version = "(.+)"', toml, re.M).group(1)
    entry = re.search(r"\[project.entry-points.dimo\]\n(\w+) = \"(\w+)\"", toml)
    package = tmp_path / "site" / entry.group(2)
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(doc_block(f"# {entry.group(2)}/__init__.py"))
    info = tmp_path / "site" / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[dimo]\n{entry.group(1)} = {entry.group(2)}\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    reset_registry()
    yield name
    reset_registry()


def test_doc_plugin_registers_trains_and_evaluates(installed_doc_plugin, tiny_teacher, tmp_path):
    from registry import get_registry
    assert get_registry().info("method", "onestep_samples").distribution == installed_doc_plugin
    assert get_registry().info("metric", "class_coverage").distribution == installed_doc_plugin
    run = run_method(tmp_path, "onestep_samples", steps=3, evaluate=True, samples=6,
                     args=("method.teacher_steps=2", "eval.metrics=[accuracy, class_coverage]"))
    rows = run.summary["rows"]
    assert rows and all(0 <= row["class_coverage"] <= 1 for row in rows)
    assert run.samples[1].shape == (6, run.teacher.seq_len)
