"""The `pip install dimo-plugin-xyz` promise: the example package installs into a fresh virtual environment
(beside the installed dimo) and its method and divergence run through `python -m core.run`. It holds in the
system interpreter and in a venv made from it, as the README's test command runs (issue 16, class 11)."""
import subprocess
import sys

import pytest

from conftest import ROOT, run_cli, venv_over_this_interpreter


@pytest.fixture(scope="module")
def plugin_python(tmp_path_factory):
    python = venv_over_this_interpreter(tmp_path_factory.mktemp("venv"))
    # No build isolation: builds offline with the setuptools of the test extra (bdist_wheel needs >= 70.1).
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                              "--no-build-isolation", str(ROOT / "examples" / "dimo-plugin-example")],
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    return python


def cli(python, *args):
    return run_cli(*args, python=python)


def test_installed_plugin_is_listed_with_its_distribution(plugin_python):
    out = cli(plugin_python, "plugins").stdout
    rows = [line.split() for line in out.splitlines()]
    assert ["method", "kd1step", "dimo-plugin-example", "0.1.0", "example"] in rows
    assert ["divergence", "sym_kl", "dimo-plugin-example", "0.1.0", "example"] in rows
    # not installed in the main environment: the plugin really comes from the package install
    assert "kd1step" not in run_cli("plugins").stdout


def test_installed_plugin_method_and_divergence_train(plugin_python, tiny_teacher, tmp_path):
    res = cli(plugin_python, "method=kd1step", "trainer.steps=3", "trainer.batch_size=4",
              f"trainer.output_dir={tmp_path / 'kd'}", *tiny_teacher)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "kd" / "student.safetensors").is_file()
    res = cli(plugin_python, "method=dimo", "divergence=sym_kl", "trainer.steps=2", "trainer.batch_size=4",
              f"trainer.output_dir={tmp_path / 'dimo'}", *tiny_teacher)
    assert res.returncode == 0, res.stderr[-2000:]


def test_blocking_the_plugin_by_name(plugin_python):
    res = run_cli("plugins", python=plugin_python, env={"DIMO_DISABLED_PLUGINS": "example"})
    assert "kd1step" not in res.stdout and "dimo " in res.stdout
