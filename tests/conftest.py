"""Shared test fixtures: an isolated dimo cache, a tiny digits architecture, and a cached tiny teacher."""
import os
import site
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

import pytest

# Tests never touch the user's cache of pre-trained teachers.
os.environ.setdefault("DIMO_CACHE", tempfile.mkdtemp(prefix="dimo-test-cache-"))
os.environ.setdefault("WANDB_SILENT", "true")

ROOT = Path(__file__).resolve().parents[1]
# A tiny digits teacher (same architecture family) keeps engine tests to seconds.
TINY = ["teacher.arch.dim=32", "teacher.arch.depth=1", "teacher.arch.heads=2", "trainer.wandb=disabled",
        "trainer.progress=false", "eval.enabled=false"]


def check_iteration_benchmark(main, tmp_path: Path) -> list[dict]:
    """A teacher's GPU iteration benchmark (benchmarks.engine_timing.teacher_benchmark) at its tiny size on CPU:
    Di[M]O and Soft-Di[M]O at ZeRO 0 and 2, every row finite and written to the JSON as returned."""
    import json
    import math
    result = main(["--size", "tiny", "--batches", "2", "--stages", "0,2", "--iters", "1", "--device", "cpu",
                   "--out", str(tmp_path / "rows.json")])
    rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
    assert rows == result["rows"] and [(r["method"], r["zero_stage"]) for r in rows] == [
        ("dimo", 0), ("dimo", 2), ("soft_dimo", 0), ("soft_dimo", 2)]
    assert all(math.isfinite(r["seconds_per_iter"]) and r["seconds_per_iter"] > 0 for r in rows)
    return rows


def clean_env(extra=None) -> dict:
    """The environment for a child process, without the launcher variables an in-process run has set."""
    launcher = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in launcher}
    env.update(extra or {})
    return env


def run_cli(*args, env=None, timeout=600, cwd=None, python=sys.executable) -> subprocess.CompletedProcess:
    """``python -m core.run ARGS`` in a fresh process (as a user runs it)."""
    return subprocess.run([str(python), "-m", "core.run", *args], capture_output=True, text=True,
                          env=clean_env(env), timeout=timeout, cwd=cwd or ROOT)


def venv_over_this_interpreter(env_dir: Path) -> Path:
    """A fresh virtual environment that sees, behind its own packages, exactly the packages of the interpreter
    running the tests (dimo, torch, setuptools), whether that is the system interpreter or itself a venv. (A venv
    with ``system_site_packages`` would see the *base* interpreter's packages instead.) A ``.pth`` file adds this
    interpreter's site folders with ``site.addsitedir``, so their own ``.pth`` files (dimo's editable install) apply."""
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    own = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                         capture_output=True, text=True, check=True).stdout.strip()
    parents = site.getsitepackages() + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])
    calls = "".join(f"; site.addsitedir({d!r})" for d in parents)   # a .pth runs one line: no loop scopes
    Path(own, "dimo_test_parent.pth").write_text(f"import site{calls}\n")
    return python


@pytest.fixture(scope="session")
def tiny_teacher():
    """Pre-train (30 steps) and cache the tiny digits teacher once per session; returns the TINY args."""
    from core.config import resolve
    from core.pipeline import main_job
    main_job(resolve(["method=mdm", "teacher=digits", "trainer.steps=30", "trainer.batch_size=32",
                      f"trainer.output_dir={tempfile.mkdtemp(prefix='dimo-tiny-teacher-')}", *TINY]))
    return list(TINY)
