"""The command line as a user meets it: help, plugins, show-config, and bad input -> exit 2, no traceback."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT, clean_env, run_cli


def test_help_and_plugins_and_show_config(tmp_path):
    help_ = run_cli("--help")
    assert help_.returncode == 0 and "show-config" in help_.stdout and "method=NAME" in help_.stdout
    plugins = run_cli("plugins")
    assert plugins.returncode == 0
    assert any(line.split()[:3] == ["method", "dimo", "dimo"] for line in plugins.stdout.splitlines())
    shown = run_cli("show-config", "method=dimo", "divergence=jeffrey", "divergence.beta=0.5")
    assert shown.returncode == 0 and "beta: 0.5" in shown.stdout and "# config hash:" in shown.stdout


@pytest.mark.parametrize("args, message", [
    (["method=dimoo"], "unknown method 'dimoo'. Did you mean 'dimo'"),
    (["method.lr_generatr=1e-5"], "method.lr_generatr: unknown field"),
    (["trainer.steps=abc"], "trainer.steps: Input should be a valid integer"),
    (["teacher.checkpoint=/nonexistent/file.safetensors"], "teacher.checkpoint='/nonexistent/file.safetensors' does not exist"),
    (["frobnicate"], "unknown command 'frobnicate'"),
])
def test_bad_input_exits_2_with_one_clear_paragraph(args, message, tmp_path):
    res = run_cli(*args, "trainer.wandb=disabled", f"trainer.output_dir={tmp_path}") \
        if args[0] != "frobnicate" else run_cli(*args)
    assert res.returncode == 2, res.stderr[-1500:]
    assert message in res.stderr
    assert "Traceback" not in res.stderr


def test_corrupt_teacher_checkpoint_is_exit_2(tmp_path):
    bad = tmp_path / "digits_teacher.safetensors"
    bad.write_bytes(b"this is not a safetensors file")
    res = run_cli("method=dimo", f"teacher.checkpoint={tmp_path}", "trainer.wandb=disabled",
                  f"trainer.output_dir={tmp_path / 'out'}")
    assert res.returncode == 2 and "corrupt or not a safetensors file" in res.stderr
    assert "Traceback" not in res.stderr


def test_generate_from_a_trained_student(tiny_teacher, tmp_path):
    run = tmp_path / "run"
    trained = run_cli("method=dimo", "trainer.steps=2", "trainer.batch_size=4", f"trainer.output_dir={run}",
                      *tiny_teacher)
    assert trained.returncode == 0, trained.stderr[-2000:]
    card = json.loads((run / "student.json").read_text())
    assert card["config"]["method"]["name"] == "dimo" and card["config_hash"]
    out = tmp_path / "grid.png"
    gen = run_cli("generate", f"checkpoint={run}", "n=3", f"out={out}")
    assert gen.returncode == 0, gen.stderr[-2000:]
    assert out.is_file() and out.with_suffix(".pt").is_file()
    bad = run_cli("generate", f"checkpoint={tmp_path / 'nope'}")
    assert bad.returncode == 2 and "not found" in bad.stderr


def test_works_outside_the_repository(tmp_path):
    res = run_cli("show-config", "method=dimo", cwd=tmp_path)   # imports come from the installed packages
    assert res.returncode == 0 and "name: dimo" in res.stdout, res.stderr[-1500:]



def test_a_launched_rank_exits_with_its_code_and_its_output_flushed():
    """Under a launcher (WORLD_SIZE > 1) core.run leaves through os._exit (core.distributed.exit_process): the exit
    code and everything printed before it must still arrive through pipes, block-buffered as for a user (no
    PYTHONUNBUFFERED)."""
    env = {k: v for k, v in clean_env({"WORLD_SIZE": "2"}).items() if k != "PYTHONUNBUFFERED"}

    def run(*args):
        return subprocess.run([sys.executable, "-m", "core.run", *args], capture_output=True, text=True, env=env,
                              cwd=ROOT, timeout=300)
    done = run("show-config")
    assert done.returncode == 0 and "# config hash:" in done.stdout
    bad = run("trainer.steps=-1")
    assert bad.returncode == 2 and "trainer.steps" in bad.stderr
