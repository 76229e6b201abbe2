"""Evaluators of benchmark entries: they sample a generator at the suite's seeds and score the samples.

* ``EmbeddedEvaluator``: the teacher's own evaluator through ``core.evaluate.Scorer`` (classifier features or
  exact metrics), the same code as a run's evaluation;
* ``InceptionEvaluator``: streamed Inception-v3 FID against reference statistics and IS (ImageNet scale).

``summarise`` reduces per-seed metrics to mean and spread; ``higher_is_better`` gives each metric's direction.
"""
from __future__ import annotations

import json
import statistics
from typing import Callable, Optional

import torch
from tqdm import tqdm

from benchmarks.perf import PERF_HIGHER
from core.errors import UserError


class EmbeddedEvaluator:
    """The teacher's own evaluator through core's Scorer (classifier features or exact metrics)."""

    def __init__(self):
        self._scorers: dict[str, object] = {}

    def scorer(self, teacher, section: dict, metrics: list[str]):
        from core.evaluate import Scorer
        key = json.dumps([section, metrics], sort_keys=True)
        if key not in self._scorers:
            self._scorers[key] = Scorer(teacher, metrics)
        return self._scorers[key]

    def run(self, generate: Callable, teacher, section: dict, ev: dict, seeds: list[int], desc: str,
            extra: Optional[Callable] = None):
        """``extra(samples) -> dict``: more per-seed metrics (the reward of test-time search rows)."""
        from core.evaluate import sample_per_class
        scorer = self.scorer(teacher, section, ev["metrics"])
        per_seed, tokens = [], []
        for seed in seeds:
            samples, _ = sample_per_class(generate, teacher, ev["samples_per_class"], ev["batch_size"], seed, desc)
            per_seed.append({**scorer.score(samples), **(extra(samples) if extra else {})})
            tokens.append(samples.tokens)
        return per_seed, tokens, len(tokens[0])


class InceptionEvaluator:
    """Streamed Inception-v3 FID against reference statistics and IS (ImageNet scale, nothing kept)."""

    def __init__(self, reference: str):
        from plugins.teachers.maskgit.evaluation import load_reference_stats
        self.reference = load_reference_stats(reference)
        self.extractor = None

    def run(self, generate: Callable, teacher, section: dict, ev: dict, seeds: list[int], desc: str,
            extra: Optional[Callable] = None):
        from plugins.teachers.maskgit.evaluation import InceptionFeatures, score_images
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.extractor is None:
            self.extractor = InceptionFeatures(None, device)
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
                        yield teacher.decode(t).float()
            out = score_images(batches(), self.extractor, self.reference)
            per_seed.append({"fid": out["fid"], "is": out["is"]})   # ``extra`` needs kept samples: not here
            tokens.extend(kept)
        return per_seed, tokens, len(labels)


def summarise(per_seed: list[dict]) -> tuple[dict, dict]:
    """Mean and standard deviation over sampling seeds of the metrics every seed produced finitely."""
    import math
    keys = [k for k in per_seed[0] if all(k in r and math.isfinite(r[k]) for r in per_seed)]
    dropped = sorted({k for r in per_seed for k in r} - set(keys))
    if dropped:
        print(f"benchmarks: metric(s) {dropped} were not finite for every seed and are left out")
    mean = {k: statistics.fmean(r[k] for r in per_seed) for k in keys}
    spread = {k: (statistics.stdev([r[k] for r in per_seed]) if len(per_seed) > 1 else 0.0) for k in keys}
    return mean, spread


def higher_is_better(metric_names: list[str], keys) -> dict[str, bool]:
    from registry import get_registry
    table = dict(PERF_HIGHER)
    table.update({"fid": False, "is": True, "reward": True})
    for name in metric_names:
        try:
            table.update(get_registry().get("metric", name).higher_is_better)
        except Exception:
            pass
    missing = [k for k in keys if k not in table]
    if missing:
        raise UserError(f"metric(s) {missing} declare no direction (Metric.higher_is_better)")
    return {k: table[k] for k in keys}
