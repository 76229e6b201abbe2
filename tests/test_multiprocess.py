"""The same mdm run on 2 processes under torchrun (ZeRO-2 and ZeRO-3) follows the single-process loss curve
with the same global batch."""
import json
import socket
import subprocess
import sys

import pytest

from conftest import ROOT, clean_env, run_cli

ARGS = ["method=mdm", "teacher.arch.dim=32", "teacher.arch.depth=1", "teacher.arch.heads=2", "trainer.steps=40",
        "trainer.batch_size=32", "trainer.log_every=1", "method.cache_teacher=false", "method.lr=2e-3",
        "trainer.wandb=disabled", "trainer.progress=false", "eval.enabled=false"]


def losses(run_dir):
    return [json.loads(l)["loss"] for l in (run_dir / "metrics.jsonl").read_text().splitlines()]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_torchrun_two_processes_matches_single_process(tmp_path, stage):
    single = run_cli(*ARGS, f"trainer.zero_stage={stage}", f"trainer.output_dir={tmp_path / 'single'}")
    assert single.returncode == 0, single.stderr[-2000:]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "core.run", *ARGS, f"trainer.zero_stage={stage}", f"trainer.output_dir={tmp_path / 'multi'}"]
    multi = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                           env=clean_env({"OMP_NUM_THREADS": "1"}))
    assert multi.returncode == 0, multi.stderr[-3000:]
    a, b = losses(tmp_path / "single"), losses(tmp_path / "multi")
    assert len(a) == len(b) == 40
    # both learn, and the curves agree (different random masks per rank, so not bit-identical)
    assert a[-1] < a[0] - 0.3 and b[-1] < b[0] - 0.3
    window = lambda xs, i: sum(xs[i:i + 10]) / 10
    for i in (0, 15, 30):
        assert abs(window(a, i) - window(b, i)) < 0.15, (i, a, b)
    assert (tmp_path / "multi" / "student.safetensors").is_file()
