"""Every command on CUDA at tiny size: train (every built-in method, ZeRO 0/2/3), evaluate, generate with TTEO,
a benchmark suite, the main job and a torchrun/nccl launch. Skipped without a GPU; on one, about 3 minutes:

    python -m pytest -m cuda tests/test_cuda.py

CI is CPU-only; these run on a GPU machine (benchmarks/gpu_check.sh runs them with the throughput benchmark).
"""
import json
import math
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, clean_env, run_cli

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

METHOD_ARGS = {
    "mdm": ["method.cache_teacher=false"],
    "dimo": [],
    "soft_dimo": ["method.aux_warmup_steps=0"],
    "sdtt": ["method.base_steps=4", "method.steps_per_round=1", "method.warmup_steps=0"],
    "di4c": ["method.latent_batch=3", "method.lambda_freq_dim=8", "method.lambda_hidden=16"],
    "redi": ["method.pairs=16", "method.chunk_size=8", "method.pair_batch=8", "method.pair_steps=2",
             "method.steps_per_round=1", "method.rounds=1", "method.variant=distill"],
}


@pytest.mark.parametrize("name", list(METHOD_ARGS))
def test_every_method_trains_in_bf16_on_cuda_and_its_student_samples_there(tiny_teacher, tmp_path, name):
    from core.config import resolve
    from core.export import load_student
    from test_precision import RecordingTrainer
    trainer = RecordingTrainer(resolve([f"method={name}", "trainer.steps=3", "trainer.batch_size=8",
                                        "trainer.log_every=1", "trainer.zero_stage=2",
                                        f"trainer.output_dir={tmp_path}", *METHOD_ARGS[name], *tiny_teacher]))
    history = trainer.train().history
    assert trainer.device.type == "cuda" and trainer.use_bf16
    for role in trainer.engines:   # trainable roles compute in bf16 inside DeepSpeed
        assert trainer.seen[role] == {torch.bfloat16}, (role, trainer.seen[role])
    assert len(history) == 3 and all(math.isfinite(v) for h in history for v in h.values())
    method, teacher, net, _ = load_student(str(tmp_path), torch.device("cuda"))
    for k in method.sample_steps:
        tokens = method.generate(net, torch.arange(3), torch.Generator().manual_seed(0), steps=k)
        assert tokens.shape == (3, teacher.seq_len) and tokens.device.type == "cuda"


@pytest.mark.parametrize("stage", [0, 3])
def test_dimo_on_cuda_at_zero_0_and_3_with_the_teacher_sharded(tiny_teacher, tmp_path, stage):
    from core.config import resolve
    from core.engine import Trainer
    trainer = Trainer(resolve(["method=dimo", "trainer.steps=3", "trainer.batch_size=8", "trainer.log_every=1",
                               f"trainer.zero_stage={stage}", f"trainer.output_dir={tmp_path}", *tiny_teacher]))
    history = trainer.train().history
    assert all(math.isfinite(h["aux_loss"]) for h in history)
    assert hasattr(trainer.models["teacher"], "module") == (stage == 3)


def test_main_job_generate_tteo_and_evaluate_on_cuda(tmp_path):
    cache, run = tmp_path / "cache", tmp_path / "run"
    env = {"DIMO_CACHE": str(cache)}
    res = run_cli("teacher.arch.dim=32", "teacher.arch.depth=1", "teacher.arch.heads=2", "trainer.steps=10",
                  "trainer.batch_size=16", "eval.samples_per_class=12", "eval.teacher_steps=[1,4]",
                  "trainer.wandb=disabled", "trainer.progress=false", f"trainer.output_dir={run}", env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    from benchmarks.results import read_records
    records = read_records(run / "results.json")
    assert {(r.entry.label, r.entry.steps) for r in records} == {("teacher", 1), ("teacher", 4), ("student", 1)}
    assert all(math.isfinite(r.metrics["fd"]) for r in records)
    out = tmp_path / "g.png"
    gen = run_cli("generate", f"checkpoint={run}", "n=2", f"out={out}", "tteo.seeds=2", "tteo.iters=1",
                  "tteo.rewards=[{name: classifier, form: log_odds}]", env=env)
    assert gen.returncode == 0, gen.stderr[-3000:]
    assert out.is_file() and json.loads(out.with_suffix(".tteo.json").read_text())["tteo"]["reward"] is not None
    ev = run_cli("evaluate", f"checkpoint={run}", "eval.samples_per_class=5", env=env)
    assert ev.returncode == 0 and "student" in ev.stdout, ev.stderr[-3000:]


def test_benchmark_suite_on_cuda(tiny_teacher, tmp_path):
    import test_benchmarks as tb
    outcomes = tb.run_suite(tb.tiny_suite(), tmp_path / "results", tmp_path / "work", progress=False)
    assert [o.status for o in outcomes] == ["ran"] * 3
    record = json.loads((tmp_path / "results" / "tiny" / "dimo-1step-seed0.json").read_text())
    assert not record["env"]["device"].startswith("cpu"), record["env"]["device"]   # evaluated on the GPU


def test_torchrun_launch_on_nccl(tmp_path):
    """One process per GPU (two where there are two); the nccl path of the launcher, logging and export."""
    from test_multiprocess import ARGS, free_port
    n = min(2, torch.cuda.device_count())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_port",
           str(free_port()), "-m", "core.run", *[a for a in ARGS if not a.startswith("trainer.steps")],
           "trainer.steps=6", "trainer.zero_stage=2", f"trainer.output_dir={tmp_path}"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=clean_env())
    assert res.returncode == 0, res.stderr[-3000:]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 6 and (tmp_path / "student.safetensors").is_file()
