"""The main job end to end at small size, from an empty cache: pre-train the teacher, distil, evaluate."""
import pytest

from benchmarks.results import read_records
from conftest import run_cli


@pytest.mark.slow
def test_main_job_end_to_end_from_an_empty_cache(tmp_path):
    cache = tmp_path / "cache"
    out = tmp_path / "run"
    res = run_cli("teacher.arch.dim=32", "teacher.arch.depth=1", "teacher.arch.heads=2", "trainer.steps=20",
                  "trainer.batch_size=16", "eval.samples_per_class=12", "eval.teacher_steps=[1,16]",
                  "trainer.wandb=disabled", f"trainer.output_dir={out}", env={"DIMO_CACHE": str(cache)})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "pre-training it with method=mdm" in res.stdout
    assert list((cache / "digits").glob("teacher-*.safetensors"))            # the teacher is cached
    records = {(r.entry.label, r.entry.steps): r for r in read_records(out / "results.json")}   # the shared schema
    assert set(records) == {("teacher", 1), ("teacher", 16), ("student", 1)}
    for r in records.values():
        assert {"fd", "is", "precision", "recall", "density", "coverage", "accuracy"} <= set(r.metrics)
        assert r.config["method"]["name"] == "dimo" and len(r.train_config_hash) == 12
    student = records[("student", 1)]
    assert student.entry.group == "distillation" and student.train_time_s > 0 and student.num_samples == 120
    assert records[("teacher", 16)].entry.sampler and records[("teacher", 16)].train_time_s is None
    assert (out / "teacher16_vs_student.png").is_file() and (out / "samples_student_1step.png").is_file()
    assert "student" in res.stdout and "fd" in res.stdout                    # the printed table
    # the student loads back for generation
    gen = run_cli("generate", f"checkpoint={out}", "n=2", f"out={tmp_path / 'g.png'}",
                  env={"DIMO_CACHE": str(cache)})
    assert gen.returncode == 0, gen.stderr[-2000:]
