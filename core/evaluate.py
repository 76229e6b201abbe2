"""Evaluation: N samples per class from a teacher at k steps or a student at 1 step, scored by metric
plugins in the task evaluator's feature space, written as JSON with a PNG grid per model."""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import torch
from torch import Tensor
from tqdm import tqdm

from core.errors import UserError
from core.interfaces import EvalData, Samples, Teacher

if TYPE_CHECKING:
    from core.config import RunConfig

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


def scored_metrics(evaluator, metrics) -> tuple[str, ...]:
    """The metric plugins an evaluation runs: a task with exact metrics scores those unless others are named."""
    exact = tuple(evaluator.exact_metrics)
    return exact if exact and tuple(metrics) == tuple(DEFAULT_METRICS) else tuple(metrics)


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
            metrics = scored_metrics(self.evaluator, metrics)
            wrong = [m for m in metrics if m not in self.exact]
            if wrong:
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
        return self._compute(EvalData(real_features=self.real_features,
                                      fake_features=self.evaluator.features(samples.images),
                                      real_logits=self.real_logits, fake_logits=self.evaluator.logits(samples.images),
                                      real_labels=self.real_labels, fake_labels=samples.labels, samples=samples))

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
        return self._compute(EvalData(real_features=self.real_features[a], fake_features=self.real_features[b],
                                      real_logits=self.real_logits[a], fake_logits=self.real_logits[b],
                                      real_labels=self.real_labels[a], fake_labels=self.real_labels[b]))


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


def write_results(path: Path, rows: list[dict], samples: dict[str, Samples], run: "RunConfig", teacher: Teacher,
                  device: torch.device, train_seconds: Optional[float] = None,
                  conditions: Optional[dict] = None) -> Path:
    """A training run's evaluation as records of the shared results schema (``benchmarks.results``), one per
    evaluated model and step count; a metric that is not finite is left out of its record, with a message."""
    from benchmarks import results
    names = list(scored_metrics(teacher.evaluator(), run.eval.metrics))
    teacher_sha = results.teacher_sha256(teacher)
    records = []
    for row in rows:
        name, k = row["model"], row["steps"]
        s = samples[f"{name}@{k}"]
        student = name == "student"
        entry = {"suite": None, "suite_version": None, "id": f"{name}-{k}step", "label": name,
                 "group": "distillation" if student else "teacher", "teacher": run.plugin("teacher").name,
                 "method": None if name == "teacher" else run.plugin("method").name,
                 "sampler": run["sampler"]["name"] if name == "teacher" and "sampler" in run else None, "steps": k}
        per_seed = [{m: v for m, v in row.items() if m not in ("model", "steps")}]
        fields = results.scored(per_seed, [s.tokens], names, {"samples_per_s": True})
        records.append(results.new_record(
            entry, run, device, config_hash=results.entry_hash(run, {"id": entry["id"], "steps": k}),
            train_config_hash=run.hash, teacher_sha256=teacher_sha,
            seeds={"train": run.trainer.seed, "sample": [run.eval.seed]},
            wall_time_s=len(s.labels) / row["samples_per_s"], train_time_s=train_seconds if student else None,
            num_samples=len(s.labels), conditions=conditions or None, **fields))
    return results.write_records(path, records)


def metrics_for(teacher_cls, metrics=None) -> list[str]:
    """The metrics an evaluation of a teacher's task computes: ``metrics`` if given, except that a task with exact
    metrics (a known distribution) replaces the default image metrics by them."""
    exact = list(teacher_cls.exact_metrics)
    if metrics and not (exact and tuple(metrics) == DEFAULT_METRICS):
        return list(metrics)
    return exact or list(DEFAULT_METRICS)


# ------------------------------------------------------------------------------------------------
# python -m core.run evaluate
# ------------------------------------------------------------------------------------------------

EVALUATE_OPTIONS = {"checkpoint": None, "device": "auto"}
EVALUATE_SECTIONS = ("eval", "evaluator")
DEVICES = ("auto", "cpu", "cuda")


def evaluate_settings(args: list[str]) -> tuple[dict, dict]:
    """``evaluate``'s own options (checkpoint=, device=) and the sections it may change (eval, evaluator), parsed
    as training parses its arguments: ``config=`` files, refined by ``section.field=value`` (YAML lists too)."""
    from core.cli import split_options
    from core.config import merge, parse_overrides
    options, rest = split_options(args, EVALUATE_OPTIONS)
    files, overrides = parse_overrides(rest)
    user: dict = {}
    for layer in [values for _, values in files] + [overrides]:   # lowest first, as in training
        user = merge(user, layer)
    unknown = [k for k in user if k not in EVALUATE_SECTIONS]
    if unknown:
        raise UserError(f"evaluate: unknown key(s) {', '.join(unknown)}; valid: checkpoint, device, config, "
                        f"eval.<field>, evaluator=NAME, evaluator.<option> (the trained run fixes its other sections)")
    options = {**EVALUATE_OPTIONS, **options}
    if not options["checkpoint"]:
        raise UserError("evaluate needs checkpoint=<run folder or student.safetensors>")
    if options["device"] not in DEVICES:
        raise UserError(f"evaluate: device='{options['device']}' is not valid; valid: {', '.join(DEVICES)}")
    return options, user


def evaluator_section(value=None) -> dict:
    """An evaluator selection (a name, or a mapping of ``name`` and its options; default ``embedded``) checked
    against the installed evaluator plugins: ``{name, **options}``."""
    from core.config import lookup, validate
    section = {"name": value} if isinstance(value, str) else dict(value or {})
    name = section.pop("name", None) or "embedded"
    return {"name": name, **validate(lookup("evaluator", name).Config, section, "evaluator")}


def build_evaluator(section: dict):
    from registry.registry import build
    return build("evaluator", section["name"], {k: v for k, v in section.items() if k != "name"})


def evaluate_command(args: list[str]) -> int:
    """Score a trained student with an evaluator plugin; the records (``benchmarks.results`` schema, one per
    student step count) go to a new ``evaluation-N.json`` beside the run's results, never over an old file."""
    from benchmarks import results
    from core.config import EvalConfig, merge, validate
    from core.distributed import compute_device
    from core.errors import check_writable_dir
    from core.export import load_student, student_weights
    options, user = evaluate_settings(args)
    validate(EvalConfig, user.get("eval", {}), "eval")            # bad values fail before anything is loaded
    weights = student_weights(options["checkpoint"])
    check_writable_dir(weights.parent, "checkpoint", options["checkpoint"])
    section = evaluator_section(user.get("evaluator"))
    evaluator = build_evaluator(section)
    reason = evaluator.unavailable()
    if reason:
        raise UserError(reason)
    device = compute_device(options["device"])
    method, teacher, net, resolved = load_student(options["checkpoint"], device)
    ev = validate(EvalConfig, merge(resolved["eval"], user.get("eval", {})), "eval")
    ev["metrics"] = metrics_for(type(teacher), ev["metrics"])
    resolved = resolved.updated({"eval": ev})
    ev = resolved["eval"]
    identity = {"evaluate": str(weights.name), "student_sha256": results.file_sha256(weights),
                "evaluator": section, **evaluator.identity()}
    records, rows = [], []
    for k in method.sample_steps:
        t0 = time.perf_counter()
        per_seed, tokens, n = evaluator.run(lambda c, g, k=k: method.generate(net, c, g, steps=k), teacher, ev,
                                            [ev["seed"]], desc=f"student {k} step(s)")
        entry = {"suite": None, "suite_version": None, "id": f"student-{k}step", "group": "distillation",
                 "label": weights.parent.name or "student", "teacher": resolved["teacher"]["name"],
                 "method": resolved["method"]["name"], "sampler": None, "steps": k}
        fields = results.scored(per_seed, tokens, ev["metrics"], evaluator.higher_is_better)
        records.append(results.new_record(
            entry, resolved, device, (("evaluator", section["name"]),),
            config_hash=results.entry_hash(resolved, {**identity, "steps": k}), train_config_hash=resolved.hash,
            teacher_sha256=results.teacher_sha256(teacher), seeds={"train": resolved["trainer"]["seed"],
                                                                   "sample": [ev["seed"]]},
            wall_time_s=time.perf_counter() - t0, train_time_s=None, num_samples=n, **fields))
        rows.append({"model": "student", "steps": k, **fields["metrics"]})
    print(format_table(rows))
    print(f"dimo: results in {results.write_new_records(weights.parent, 'evaluation', records)}")
    return 0
