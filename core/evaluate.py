"""Evaluation: N samples per class from a teacher at k steps or a student at 1 step, scored by metric
plugins in the task evaluator's feature space, written as JSON with a PNG grid per model."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import Tensor
from tqdm import tqdm

from core.interfaces import EvalData, Samples, Teacher

DEFAULT_METRICS = ("frechet", "inception_score", "prdc", "accuracy")


def sample_per_class(generate: Callable[[Tensor, torch.Generator], Tensor], teacher: Teacher, per_class: int,
                     batch_size: int, seed: int, desc: str = "sampling") -> tuple[Samples, float]:
    """Tokens for ``per_class`` samples of every class; returns samples and generation seconds."""
    labels = torch.arange(teacher.num_classes).repeat_interleave(per_class)
    g = torch.Generator().manual_seed(seed)
    out, images, seconds = [], [], 0.0
    # Networks may draw from the global RNG (e.g. the init's embedding noise): seed it too, so that the same
    # seed gives the same samples whatever ran before in the process.
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_available() else []):
        torch.manual_seed(seed)
        for chunk in tqdm(labels.split(batch_size), desc=desc, leave=False, disable=None):
            t0 = time.perf_counter()
            with torch.no_grad():
                tokens = generate(chunk, g)
                out.append(tokens.cpu())   # waits for the device, so the timing is the generation's
            seconds += time.perf_counter() - t0
            with torch.no_grad():          # decoded where the tokens are (the GPU in GPU runs), chunk by chunk
                images.append(teacher.decode_with(tokens, chunk).float().cpu())
    return Samples(images=torch.cat(images), labels=labels, tokens=torch.cat(out)), seconds


class Scorer:
    """Holds the evaluator and the real features so that several models are scored against one reference."""

    def __init__(self, teacher: Teacher, metrics=DEFAULT_METRICS):
        from registry.registry import build
        self.evaluator = teacher.evaluator()
        if self.evaluator is None:
            raise ValueError(f"teacher {type(teacher).__name__} has no evaluator")
        # A task whose distribution is known exactly scores sample tokens, with no image features.
        self.exact = tuple(self.evaluator.exact_metrics)
        if self.exact:
            metrics = self.exact if tuple(metrics) == tuple(DEFAULT_METRICS) else tuple(metrics)
            wrong = [m for m in metrics if m not in self.exact]
            if wrong:
                from core.errors import UserError
                raise UserError(f"eval.metrics: {wrong} need image features, which teacher "
                                f"{type(teacher).__name__} has none of; its exact metrics: {', '.join(self.exact)}")
            self.metrics = [build("metric", m) for m in metrics]
            return
        real_images, self.real_labels = self.evaluator.reference()
        self.real_features = self.evaluator.features(real_images)
        self.real_logits = self.evaluator.logits(real_images)
        self.metrics = [build("metric", m) for m in metrics]

    def score(self, samples: Samples) -> dict[str, float]:
        if self.exact:
            return self._compute(EvalData(real_features=None, fake_features=None, fake_labels=samples.labels,
                                          samples=samples, evaluator=self.evaluator))
        data = EvalData(real_features=self.real_features, fake_features=self.evaluator.features(samples.images),
                        real_logits=self.real_logits, fake_logits=self.evaluator.logits(samples.images),
                        real_labels=self.real_labels, fake_labels=samples.labels, samples=samples)
        out: dict[str, float] = {}
        for metric in self.metrics:
            out.update(metric.compute(data))
        return out

    def _compute(self, data: EvalData) -> dict[str, float]:
        out: dict[str, float] = {}
        for metric in self.metrics:
            out.update(metric.compute(data))
        return out

    def real_vs_real(self, seed: int = 0) -> dict[str, float]:
        """The noise floor: one half of the real data against the other (exact tasks: true samples)."""
        if self.exact:
            return self.score(self.evaluator.reference_samples(seed=seed))
        perm = torch.randperm(len(self.real_labels), generator=torch.Generator().manual_seed(seed))
        a, b = perm[: len(perm) // 2], perm[len(perm) // 2:]
        data = EvalData(real_features=self.real_features[a], fake_features=self.real_features[b],
                        real_logits=self.real_logits[a], fake_logits=self.real_logits[b],
                        real_labels=self.real_labels[a], fake_labels=self.real_labels[b])
        out: dict[str, float] = {}
        for metric in self.metrics:
            out.update(metric.compute(data))
        return out


TABLE_KEYS = ("fd", "is", "precision", "recall", "density", "coverage", "accuracy", "samples_per_s")


def format_table(rows: list[dict], keys=None) -> str:
    """``keys`` None: the image metrics in their usual order, then any other metric of the rows (e.g. the
    exact metrics of a known distribution)."""
    if keys is None:
        keys = list(TABLE_KEYS) + [k for k in dict.fromkeys(k for r in rows for k in r)
                                   if k not in TABLE_KEYS and k not in ("model", "steps")]
    keys = [k for k in keys if any(k in r for r in rows)]
    head = ["model", "steps"] + keys
    lines = [head] + [[r["model"], str(r["steps"])] + [f"{r[k]:.4g}" if k in r else "-" for k in keys]
                      for r in rows]
    widths = [max(len(l[i]) for l in lines) for i in range(len(head))]
    fmt = lambda l: "  ".join(v.rjust(w) if i > 1 else v.ljust(w) for i, (v, w) in enumerate(zip(l, widths)))
    return "\n".join([fmt(lines[0]), "  ".join("-" * w for w in widths)] + [fmt(l) for l in lines[1:]])


def evaluate_models(models: list[tuple[str, int, Callable]], teacher: Teacher, eval_cfg: dict,
                    run_dir: Optional[Path] = None) -> tuple[list[dict], dict[str, Samples]]:
    """``models``: (name, steps, generate(cond, generator) -> tokens). Returns result rows and samples."""
    scorer = Scorer(teacher, eval_cfg.get("metrics", DEFAULT_METRICS))
    rows, samples = [], {}
    for name, steps, fn in models:
        s, seconds = sample_per_class(fn, teacher, eval_cfg["samples_per_class"], eval_cfg["batch_size"],
                                      eval_cfg["seed"], desc=f"{name} {steps} step(s)")
        row = {"model": name, "steps": steps, **scorer.score(s), "samples_per_s": len(s.labels) / seconds}
        rows.append(row)
        samples[f"{name}@{steps}"] = s
        if run_dir is not None:
            from core.images import save_grid
            save_grid(s.images, s.labels, run_dir / f"samples_{name}_{steps}step.png",
                      captions=teacher.captions(s.labels.unique(sorted=True)))   # None without text
    return rows, samples


def write_results(path: Path, rows: list[dict], resolved: dict, extra: Optional[dict] = None) -> Path:
    from core.config import config_hash
    from core.export import versions
    from core.checkpoint import atomic_write_text
    payload = {"config": resolved, "config_hash": config_hash(resolved), "seed": resolved["eval"]["seed"],
               "train_seed": resolved["trainer"]["seed"], "versions": versions(), "rows": rows, **(extra or {})}
    atomic_write_text(path, json.dumps(payload, indent=1))
    return path


def evaluate_command(args: list[str]) -> int:
    from core.config import EvalConfig, validate
    from core.errors import UserError
    from core.export import load_student
    opts = dict(a.split("=", 1) for a in args if "=" in a)
    if "checkpoint" not in opts:
        raise UserError("evaluate needs checkpoint=<run folder or student.safetensors>")
    from core.distributed import compute_device
    device = opts.pop("device", "auto")
    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"evaluate: device='{device}' is not valid; valid: auto, cpu, cuda")
    method, teacher, net, resolved = load_student(opts.pop("checkpoint"), compute_device(device))
    eval_cfg = dict(resolved["eval"])
    overrides = {k.split(".", 1)[1]: v for k, v in opts.items() if k.startswith("eval.")}
    unknown = [k for k in opts if not k.startswith("eval.")]
    if unknown:
        raise UserError(f"evaluate: unknown key(s) {', '.join(unknown)}; valid: checkpoint, device, eval.<field>")
    eval_cfg = validate(EvalConfig, {**eval_cfg, **overrides}, "eval")
    models = [("student", k, lambda c, g, k=k: method.generate(net, c, g, steps=k)) for k in method.sample_steps]
    rows, _ = evaluate_models(models, teacher, eval_cfg)
    print(format_table(rows))
    return 0
