"""The shape of the paper's Table 2 on the embedded digits task.

    python -m benchmarks.digits_table2 [run=<Di[M]O run folder>] [seeds=3] [samples_per_class=200]
                                       [out=results/digits_table2.json] [md=docs/results_table2.md]
                                       [temperature=<student sampling temperature; default: the run's>]

Without ``run=`` it trains the main job's default Di[M]O student (pre-training the teacher if needed).
Rows: the teacher at 1, 2, 4, 8 and 16 steps and the student at 1 step, each over ``seeds`` sampling seeds
of ``10 x samples_per_class`` samples (mean and spread), plus the real-vs-real distance as the noise floor.
Checks printed (not asserted): student FD within 15% of teacher@16, class accuracy within 5 points, and
one-step sampling throughput vs 16-step teacher sampling at the same batch, measured in this run.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

from core.checkpoint import atomic_write_text
from core.config import resolve
from core.evaluate import Scorer, format_table, sample_per_class
from core.export import load_student, versions
from core.pipeline import main_job
from core.tables import markdown_table

STEPS = (1, 2, 4, 8, 16)
KEYS = ("fd", "is", "precision", "recall", "density", "coverage", "accuracy")


def parse(args: list[str]) -> dict:
    opts = {"run": None, "seeds": "3", "samples_per_class": "200", "out": "results/digits_table2.json",
            "batch": "500", "md": None, "temperature": None}
    from core.cli import check_keys, parse_kv
    values = parse_kv(args, "run=runs/digits seeds=3", flat=set(opts))
    check_keys(values, opts, "digits_table2")
    return {**opts, **values}


def mean_spread(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def throughput(fn, teacher, batch: int, repeats: int = 3) -> float:
    """Samples per second for one batch of ``batch`` conditions (best of ``repeats``)."""
    cond = torch.arange(batch) % teacher.num_classes
    best = float("inf")
    for r in range(repeats):
        g = torch.Generator().manual_seed(r)
        t0 = time.perf_counter()
        with torch.no_grad():
            fn(cond, g)
        best = min(best, time.perf_counter() - t0)
    return batch / best


def to_markdown(result: dict) -> str:
    """The benchmark's JSON rendered as a Markdown table (mean ± std over sampling seeds)."""
    lines = markdown_table(["model", "steps", *KEYS], ([r["model"], str(r["steps"])]
                                                       + [f"{r[k]:.3f} ± {r[k + '_std']:.3f}" for k in KEYS]
                                                       for r in result["rows"]))
    floor, c, tp = result["real_vs_real"], result["checks"], result["throughput_samples_per_s"]
    lines += ["", f"Real vs real (noise floor, two halves of the 1,797 real digits): FD {floor['fd']:.3f}, "
                  f"accuracy {floor['accuracy']:.3f}.",
              f"Student FD / teacher@16 FD = {c['student_fd_over_teacher16_fd']:.2f} (target <= 1.15); accuracy gap "
              f"{c['accuracy_gap_points']:.1f} points (target <= 5); one-step vs 16-step sampling throughput "
              f"{c['throughput_ratio_1step_vs_16step']:.1f}x at batch {tp['batch']} (target >= 12x).",
              f"{len(result['seeds'])} sampling seeds x {result['samples_per_model']} samples per model; "
              f"run {result['run']} (config hash {result['config_hash']})."]
    return "\n".join(lines) + "\n"


def main(args: list[str]) -> dict:
    opts = parse(args)
    if opts["run"] is None:
        opts["run"] = main_job(resolve(["eval.enabled=false"]))["run_dir"]
    method, teacher, student, cfg = load_student(opts["run"])
    teacher_net = teacher.build_network(load_weights=True).eval()
    sampler = method.plugins["sampler"]
    models = {f"teacher@{k}": (lambda c, g, k=k: sampler.sample(teacher_net, teacher, c, k, g)) for k in STEPS}
    temperature = float(opts["temperature"]) if opts["temperature"] else None   # None: the run's own
    models["student@1"] = lambda c, g: method.generate(student, c, g, temperature=temperature)
    scorer = Scorer(teacher)
    per_class, batch = int(opts["samples_per_class"]), int(opts["batch"])
    seeds = list(range(int(opts["seeds"])))

    rows = []
    for name, fn in models.items():
        runs = [scorer.score(sample_per_class(fn, teacher, per_class, batch, 1000 + s, desc=name)[0]) for s in seeds]
        row = {"model": name.split("@")[0], "steps": int(name.split("@")[1]), "seeds": len(seeds),
               "samples": per_class * teacher.num_classes}
        for k in KEYS:
            row[k], row[f"{k}_std"] = mean_spread([r[k] for r in runs])
        rows.append(row)
    floor = scorer.real_vs_real()
    speed = {"student@1": throughput(models["student@1"], teacher, batch),
             "teacher@16": throughput(models["teacher@16"], teacher, batch)}

    t16 = next(r for r in rows if r["model"] == "teacher" and r["steps"] == 16)
    st = next(r for r in rows if r["model"] == "student")
    checks = {
        "student_fd_over_teacher16_fd": st["fd"] / t16["fd"],
        "fd_within_15pct": st["fd"] <= 1.15 * t16["fd"],
        "accuracy_gap_points": 100 * (t16["accuracy"] - st["accuracy"]),
        "accuracy_within_5_points": st["accuracy"] >= t16["accuracy"] - 0.05,
        "throughput_ratio_1step_vs_16step": speed["student@1"] / speed["teacher@16"],
        "throughput_at_least_12x": speed["student@1"] >= 12 * speed["teacher@16"],
    }
    result = {"benchmark": "digits_table2", "run": str(opts["run"]), "config_hash": json.loads(
        (Path(opts["run"]) / "student.json").read_text())["config_hash"], "config": cfg,
        "student_temperature": temperature or cfg["method"].get("sample_temperature"),
        "seeds": seeds, "samples_per_model": per_class * teacher.num_classes, "rows": rows,
        "real_vs_real": floor, "throughput_samples_per_s": {**speed, "batch": batch}, "checks": checks,
        "versions": versions(), "device": "cpu", "threads": torch.get_num_threads()}
    out = Path(opts["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=1))

    print(format_table([{**r, "fd": r["fd"]} for r in rows], keys=KEYS))
    print("spread (std over seeds): " + ", ".join(f"{r['model']}@{r['steps']} fd±{r['fd_std']:.3f}" for r in rows))
    print(f"real vs real (noise floor, {len(scorer.real_labels) // 2} vs {len(scorer.real_labels) - len(scorer.real_labels) // 2} "
          f"real images): fd {floor['fd']:.3f}, accuracy {floor['accuracy']:.3f}")
    print(f"throughput at batch {batch}: student 1 step {speed['student@1']:.0f}/s, teacher 16 steps "
          f"{speed['teacher@16']:.0f}/s, ratio {checks['throughput_ratio_1step_vs_16step']:.1f}x")
    for k, v in checks.items():
        print(f"  {k}: {v:.3f}" if isinstance(v, float) else f"  {k}: {v}")
    print(f"written to {out}")
    if opts["md"]:
        atomic_write_text(Path(opts["md"]), to_markdown(result))
        print(f"markdown table written to {opts['md']}")
    return result


if __name__ == "__main__":
    from core.errors import UserError
    try:
        main(sys.argv[1:])
    except UserError as exc:
        sys.exit(f"digits_table2: error: {exc}")
