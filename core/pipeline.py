"""The main job: (pre-train the teacher if needed) -> train the method -> evaluate teacher and student."""
from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Optional

from core import distributed as dist
from core.config import RunConfig, resolve_dict
from core.engine import Trainer, run_dir_for
from core.evaluate import evaluate_models, format_table, write_results
from core.export import load_student_network, student_weights
from core.factory import build_method
from core.interfaces import Method, Teacher


def pretrain_teacher_if_needed(run: RunConfig, method: Method, teacher: Teacher) -> None:
    """Embedded teachers without cached weights are pre-trained with ``mdm`` first (same process)."""
    if not method.needs_teacher_weights or teacher.has_weights():
        return
    if dist.is_main():
        print(f"dimo: no pre-trained {run.plugin('teacher').name} teacher cached; pre-training it with method=mdm")
    t = run.trainer
    main_job(resolve_dict({"method": {"name": "mdm"}, "teacher": run["teacher"],
                           "trainer": {"seed": t.seed, "zero_stage": t.zero_stage, "wandb": t.wandb,
                                       "progress": t.progress},
                           "eval": {"enabled": False}}))


# What a run writes before its first step; a folder holding nothing else records no work.
START_FILES = {"config.yaml", "config_hash.txt", "metrics.jsonl", "wandb"}


def holds_no_work(run_dir: Path) -> bool:
    metrics = run_dir / "metrics.jsonl"
    return {p.name for p in run_dir.iterdir()} <= START_FILES and not (metrics.is_file() and metrics.stat().st_size)


@contextlib.contextmanager
def no_empty_run_dir(run_dir: Path):
    """A run that fails before its first logged step (a teacher that cannot be loaded, a bad checkpoint) leaves no
    folder behind holding only its config; a folder that existed before is always kept."""
    existed = run_dir.exists()
    try:
        yield
    except BaseException:
        if not existed and dist.is_main() and run_dir.is_dir() and holds_no_work(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def main_job(run: RunConfig) -> dict:
    """Pre-train the teacher if needed, train, evaluate: the run's method and teacher are built once for all."""
    method, teacher = build_method(run)
    pretrain_teacher_if_needed(run, method, teacher)
    with no_empty_run_dir(run_dir_for(run)):
        result = Trainer(run, built=(method, teacher)).train()
    summary = {"run_dir": str(result.run_dir), "train_seconds": result.seconds}
    if dist.is_main():
        print(f"dimo: trained in {result.seconds:.0f} s; run folder {result.run_dir}")
    if run.eval.enabled and dist.is_main():
        summary["rows"] = evaluate_run(run, result.run_dir, method, teacher, result.seconds)
    dist.barrier()
    return summary


def conditions_record(teacher) -> dict:
    """The prompts the samples were drawn for (text-to-image teachers), recorded in results.json."""
    import torch
    cond = torch.arange(teacher.num_classes) if teacher.num_classes else None
    prompts = teacher.captions(cond) if cond is not None else None
    if prompts is None:
        return {}
    return {"prompts": list(prompts), "null_prompt": teacher.captions(teacher.null_condition(cond[:1]))[0]}


def evaluate_run(run: RunConfig, run_dir: Path, method: Method, teacher: Teacher,
                 train_seconds: Optional[float] = None) -> list[dict]:
    """Score the student the run wrote (``student.safetensors``) and the teacher, per ``run.eval``; the records
    go to ``results.json`` (the shared results schema), the table to stdout."""
    if teacher.evaluator() is None:
        return []
    device = dist.compute_device(run.trainer.device)
    student = load_student_network(method, student_weights(str(run_dir)), run, device)
    eval_cfg = run["eval"]
    sampler = method.plugins.get("sampler")
    models = []
    if method.needs_teacher_weights:   # a distilled student: compare against its teacher at k steps
        teacher_net = teacher.build_network(load_weights=True).to(device).eval()
        for k in eval_cfg["teacher_steps"]:
            models.append(("teacher", k, lambda c, g, k=k: sampler.sample(teacher_net, teacher, c, k, g)))
        for k in method.sample_steps:
            models.append(("student", k, lambda c, g, k=k: method.generate(student, c, g, steps=k)))
    else:                              # a trained teacher: its own samples at k steps
        for k in eval_cfg["teacher_steps"]:
            models.append((run.plugin("method").name, k,
                           lambda c, g, k=k: method.generate(student, c, g, steps=k)))
    rows, samples = evaluate_models(models, teacher, eval_cfg, run_dir)
    path = write_results(run_dir / "results.json", rows, samples, run, teacher, device, train_seconds,
                         conditions_record(teacher))
    print(format_table(rows))
    print(f"dimo: results in {path}")
    if method.needs_teacher_weights and "teacher@16" in samples:
        from core.images import save_panels
        k = method.sample_steps[0]
        st = samples[f"student@{k}"]
        save_panels({"teacher, 16 steps": (samples["teacher@16"].images, samples["teacher@16"].labels),
                     f"student, {k} step{'s' if k > 1 else ''}": (st.images, st.labels)},
                    run_dir / "teacher16_vs_student.png")
    return rows
