"""A new user's first hour (issue 16, class 9): the documented tiny run works and prints no start-up noise, and
every example value that ``--help`` suggests is one the default method accepts."""
import re

import pytest

from conftest import ROOT, run_cli
from core.config import resolve
from core.run import __doc__ as HELP

# Start-up notices of DeepSpeed and torch that are not the user's concern.
NOISE = ["Setting accelerator to CPU", "No CUDA runtime is found", "built successfully", "[WARNING]"]


def help_examples() -> list[str]:
    """``key=value`` examples in the Keys section of ``--help``, except placeholders (PATH, NAME, files)."""
    keys = HELP.split("Keys:")[1].split("\n\n")[0]
    found = re.findall(r"(?<![\w.])([a-z_]+(?:\.[a-z_]+)*=[^\s,]+)", keys)
    return [a for a in found if not re.search(r"[A-Z<]|\.yaml$", a.split("=", 1)[1])]


def test_help_has_examples():
    assert len(help_examples()) >= 4


@pytest.mark.parametrize("arg", help_examples())
def test_help_examples_are_accepted_by_the_default_method(arg):
    resolve([arg])


@pytest.mark.slow
def test_tiny_example_runs_the_main_job_quietly(tiny_teacher, tmp_path):
    """examples/tiny.yaml: the README's smoke test (its teacher is the tests' cached tiny teacher)."""
    res = run_cli(f"config={ROOT / 'examples' / 'tiny.yaml'}", f"trainer.output_dir={tmp_path / 'tiny'}",
                  "trainer.progress=false")
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "tiny" / "results.json").is_file() and "student  1" in res.stdout
    for text in NOISE:
        assert text not in res.stdout + res.stderr, text
