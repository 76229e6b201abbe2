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


def test_generate_grid_shows_every_sample_with_row_labels(tmp_path):
    """generate n=40: every sample, 16 to a row (3 rows per class), not the first 16; a grid that must leave some
    out says which."""
    import torch
    from PIL import Image
    from core.images import save_labelled_grid
    images, labels = torch.rand(10 * 40, 3, 8, 8), torch.arange(10).repeat_interleave(40)
    assert save_labelled_grid(images, labels, tmp_path / "all.png") == ""
    assert save_labelled_grid(images[labels < 5], labels[labels < 5], tmp_path / "half.png") == ""
    h_all, h_half = Image.open(tmp_path / "all.png").size[1], Image.open(tmp_path / "half.png").size[1]
    assert h_all > 1.8 * h_half and h_all > 30 * 35   # 30 rows of 32-pixel tiles
    many, labels = torch.rand(100 * 20, 3, 8, 8), torch.arange(100).repeat_interleave(20)
    note = save_labelled_grid(many, labels, tmp_path / "many.png")
    assert note == "the grid shows 20 of 20 samples for each of the first 32 of 100 classes (at most 64 rows of 16)"
