"""Evaluator plugins (kind ``evaluator``): sample a generator at every sampling seed and score the samples.

* ``embedded``: the task's own evaluator through ``core.evaluate.Scorer`` (classifier features and the metric
  plugins of ``eval.metrics``, or the exact metrics of a known distribution), the same code as a run's evaluation;
* ``inception``: streamed Inception-v3 FID against reference statistics, and IS (ImageNet scale: no sample kept);
  a text-to-image teacher is sampled ``eval.samples_per_class`` times per prompt of its prompt set (COCO-30k: the
  30k captions as a prompt file, one sample each, against the statistics of the matching real images).

``python -m core.run evaluate evaluator=NAME`` and the benchmark suites (``evaluator:``) select one.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from pydantic import Field
from tqdm import tqdm

from core.errors import UserError
from core.interfaces import PluginConfig, SampleEvaluator
from registry import hookimpl


class Embedded(SampleEvaluator):
    """The teacher's own evaluator through core's Scorer: classifier features or exact metrics."""

    def __init__(self, config: PluginConfig):
        super().__init__(config)
        self._scorers: dict[str, object] = {}

    def scorer(self, teacher, metrics: list[str]):
        """One Scorer (its reference features) per teacher config and metric list, reused across entries."""
        from core.evaluate import Scorer
        key = json.dumps([type(teacher).__name__, teacher.config.model_dump(mode="json"), metrics], sort_keys=True)
        if key not in self._scorers:
            self._scorers[key] = Scorer(teacher, metrics)
        return self._scorers[key]

    def run(self, generate, teacher, ev, seeds, desc="sampling", extra=None):
        from core.evaluate import sample_per_class
        scorer = self.scorer(teacher, list(ev["metrics"]))
        per_seed, tokens = [], []
        for seed in seeds:
            samples, _ = sample_per_class(generate, teacher, ev["samples_per_class"], ev["batch_size"], seed, desc)
            per_seed.append({**scorer.score(samples), **(extra(samples) if extra else {})})
            tokens.append(samples.tokens)
        return per_seed, tokens, len(tokens[0])


class InceptionConfig(PluginConfig):
    reference: Optional[str] = Field(None, description="reference statistics .npz (mu, sigma of Inception pool "
                                                       "features; `python -m plugins.teachers.maskgit.evaluation "
                                                       "stats`)")
    weights: Optional[str] = Field(None, description="the torch-fidelity Inception weight file (default: "
                                                     "$DIMO_INCEPTION_WEIGHTS, the torch hub cache, or a download)")


class Inception(SampleEvaluator):
    """Streamed Inception-v3 FID against reference statistics, and IS (ImageNet scale, nothing kept)."""
    Config = InceptionConfig
    higher_is_better = {"fid": False, "is": True}

    def __init__(self, config: InceptionConfig):
        super().__init__(config)
        self.extractor, self.reference = None, None

    def unavailable(self) -> Optional[str]:
        from plugins.teachers.maskgit.evaluation import inception_weights
        ref = self.config.reference
        if not ref:
            return ("the inception evaluator needs reference statistics of real images (ImageNet-256 for class-"
                    "conditional teachers; e.g. COCO-30k for text-to-image ones, sampled once per prompt of the "
                    "teacher's prompt file): set evaluator.reference=<stats.npz> (mu, sigma of Inception pool "
                    "features; see docs/benchmarks.md)")
        if not Path(ref).is_file():
            return f"evaluator.reference='{ref}' does not exist"
        try:
            inception_weights(self.config.weights)
        except UserError as exc:
            return str(exc)
        return None

    def identity(self) -> dict:
        from benchmarks.results import file_sha256
        return {"reference_sha256": file_sha256(self.config.reference)}

    def run(self, generate, teacher, ev, seeds, desc="sampling", extra=None):
        from plugins.teachers.maskgit.evaluation import InceptionFeatures, load_reference_stats, score_images
        reason = self.unavailable()
        if reason:
            raise UserError(reason)
        if self.extractor is None:
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            self.extractor = InceptionFeatures(self.config.weights, device)
            self.reference = load_reference_stats(self.config.reference)
        labels = torch.arange(teacher.num_classes).repeat_interleave(ev["samples_per_class"])
        per_seed, tokens = [], []
        for seed in seeds:
            g = torch.Generator().manual_seed(seed)
            kept: list[torch.Tensor] = []

            def batches():
                for chunk in tqdm(labels.split(ev["batch_size"]), desc=desc, leave=False, disable=None):
                    with torch.no_grad():
                        t = generate(chunk, g)
                        kept.append(t.cpu())
                        yield teacher.decode_with(t, chunk).float()
            out = score_images(batches(), self.extractor, self.reference)
            per_seed.append({"fid": out["fid"], "is": out["is"]})   # ``extra`` needs kept samples: not here
            tokens.extend(kept)
        return per_seed, tokens, len(labels)


@hookimpl
def dimo_register(register):
    register("evaluator", "embedded", Embedded)
    register("evaluator", "inception", Inception)
