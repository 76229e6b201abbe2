"""Kill a run with SIGKILL mid-way, restart with resume=auto: it continues from the last checkpoint and ends
with the same weights as an uninterrupted run with the same seed."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, clean_env, run_cli


def args_for(out: Path, tiny):
    return ["method=dimo", "trainer.steps=24", "trainer.batch_size=8", "trainer.checkpoint_every=6",
            "trainer.log_every=2", f"trainer.output_dir={out}", *tiny]


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tiny_teacher, tmp_path):
    straight = run_cli(*args_for(tmp_path / "straight", tiny_teacher))
    assert straight.returncode == 0, straight.stderr[-2000:]

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "core.run", *args_for(out, tiny_teacher)], cwd=ROOT,
                            env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (out / "checkpoints" / "step-00000012").is_dir():
        assert proc.poll() is None, "run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "student.safetensors").exists()          # it really died mid-run

    resumed = run_cli(*args_for(out, tiny_teacher))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from step" in resumed.stdout + resumed.stderr
    a = load_file(str(tmp_path / "straight" / "student.safetensors"))
    b = load_file(str(out / "student.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # a half-written checkpoint (as after a kill during save) is ignored, the last complete one is used
    assert not list((out / "checkpoints").glob("*.tmp"))


def short_run(out: Path, tiny, steps: int):
    return run_cli("method=dimo", f"trainer.steps={steps}", "trainer.batch_size=4", "trainer.checkpoint_every=2",
                   f"trainer.output_dir={out}", *tiny)


def test_damaged_newest_checkpoint_falls_back_then_nothing_usable_is_a_clear_error(tiny_teacher, tmp_path):
    out = tmp_path / "run"
    first = short_run(out, tiny_teacher, 6)           # complete checkpoints at steps 2 and 4
    assert first.returncode == 0, first.stderr[-2000:]
    newest = out / "checkpoints" / "step-00000004"
    rng = newest / "rng_state_rank0.pt"
    rng.write_bytes(rng.read_bytes()[:100])           # truncated, as by a full disk
    again = short_run(out, tiny_teacher, 6)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"skips the damaged checkpoint '{newest}'" in again.stderr and "rng_state_rank0.pt" in again.stderr
    assert "resumed from step 2" in again.stdout + again.stderr and "Traceback" not in again.stderr

    for ckpt in (out / "checkpoints").glob("step-*"):   # nothing usable left: one clear error, exit 2
        (ckpt / "trainer_state.json").write_text("{not json")
    last = short_run(out, tiny_teacher, 8)
    assert last.returncode == 2, last.stderr[-2000:]
    assert "no usable checkpoint" in last.stderr and "trainer.resume=never" in last.stderr
    assert "Traceback" not in last.stderr


@pytest.mark.slow
def test_damage_seen_by_one_rank_is_skipped_by_every_rank(tmp_path):
    """Under torchrun, rank 1's RNG file of the newest checkpoint is truncated: both ranks fall back together."""
    from test_multiprocess import free_port
    out = tmp_path / "run"
    args = ["method=mdm", "teacher.arch.dim=32", "teacher.arch.depth=1", "teacher.arch.heads=2", "trainer.steps=6",
            "trainer.batch_size=8", "trainer.checkpoint_every=2", "trainer.zero_stage=2", "method.cache_teacher=false",
            "trainer.wandb=disabled", "trainer.progress=false", "eval.enabled=false", f"trainer.output_dir={out}"]

    def torchrun():
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                               "--master_port", str(free_port()), "-m", "core.run", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=900, env=clean_env({"OMP_NUM_THREADS": "1"}))
    first = torchrun()
    assert first.returncode == 0, first.stderr[-3000:]
    rng = out / "checkpoints" / "step-00000004" / "rng_state_rank1.pt"
    rng.write_bytes(rng.read_bytes()[:100])
    again = torchrun()
    assert again.returncode == 0, again.stderr[-3000:]
    assert "skips the damaged checkpoint" in again.stderr and "rank 1: 'rng_state_rank1.pt'" in again.stderr
    assert "resumed from step 2" in again.stdout + again.stderr
