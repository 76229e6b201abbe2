"""Shared test fixtures: an isolated dimo cache, a tiny digits architecture, and a cached tiny teacher."""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# Tests never touch the user's cache of pre-trained teachers.
os.environ.setdefault("DIMO_CACHE", tempfile.mkdtemp(prefix="dimo-test-cache-"))
os.environ.setdefault("WANDB_SILENT", "true")

ROOT = Path(__file__).resolve().parents[1]
# A tiny digits teacher (same architecture family) keeps engine tests to seconds.
TINY = ["teacher.arch.dim=32", "teacher.arch.depth=1", "teacher.arch.heads=2", "trainer.wandb=disabled",
        "trainer.progress=false", "eval.enabled=false"]


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


@pytest.fixture(scope="session")
def tiny_teacher():
    """Pre-train (30 steps) and cache the tiny digits teacher once per session; returns the TINY args."""
    from core.config import resolve
    from core.pipeline import main_job
    main_job(resolve(["method=mdm", "teacher=digits", "trainer.steps=30", "trainer.batch_size=32",
                      f"trainer.output_dir={tempfile.mkdtemp(prefix='dimo-tiny-teacher-')}", *TINY]))
    return list(TINY)
