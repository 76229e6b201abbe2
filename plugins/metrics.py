"""Sample-quality metrics in a task evaluator's feature space (the role of Inception on ImageNet).

Maintained code does the math: torchmetrics' Frechet distance and Inception Score (with a custom,
identity "extractor" over precomputed features/logits), and prdc for precision/recall (Kynkaanniemi
k-NN) and density/coverage (Naeem et al.).
"""
from __future__ import annotations

import contextlib
import io
import warnings

from pydantic import Field
from torch import nn

from core.interfaces import EvalData, Metric, PluginConfig
from registry import hookimpl


# Evaluation runs on rank 0 with all samples in hand: no cross-process sync of metric states, which would
# also fail under NCCL (CPU states, "No backend type associated with device type cpu").
LOCAL = {"sync_on_compute": False, "dist_sync_on_step": False}


class _Precomputed(nn.Identity):
    """torchmetrics passes inputs of a custom extractor through unchanged: hand it features directly."""
    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features


class FrechetDistance(Metric):
    higher_is_better = {"fd": False}

    def compute(self, data: EvalData) -> dict[str, float]:
        from torchmetrics.image.fid import FrechetInceptionDistance
        dim = data.real_features.shape[1]
        fid = FrechetInceptionDistance(feature=_Precomputed(dim), normalize=False, **LOCAL)
        fid.update(data.real_features.double(), real=True)
        fid.update(data.fake_features.double(), real=False)
        return {"fd": float(fid.compute())}


class InceptionStyleScore(Metric):
    """exp(E_x KL(p(y|x) || p(y))) on the evaluator classifier's logits."""
    class Config(PluginConfig):
        splits: int = Field(1, gt=0, description="IS splits (mean over splits is reported)")

    higher_is_better = {"is": True}

    def compute(self, data: EvalData) -> dict[str, float]:
        from torchmetrics.image.inception import InceptionScore
        with warnings.catch_warnings():  # feature-buffer and one-split std warnings are expected here
            warnings.simplefilter("ignore")
            score = InceptionScore(feature=_Precomputed(data.fake_logits.shape[1]), splits=self.config.splits,
                                   normalize=False, **LOCAL)
            score.update(data.fake_logits.double())
            mean, _ = score.compute()
        return {"is": float(mean)}


class PRDC(Metric):
    class Config(PluginConfig):
        nearest_k: int = Field(5, gt=0, description="k of the k-NN manifolds (Naeem et al. use 5; DiMO eval 3)")

    higher_is_better = {"precision": True, "recall": True, "density": True, "coverage": True}

    def compute(self, data: EvalData) -> dict[str, float]:
        from prdc import compute_prdc
        with contextlib.redirect_stdout(io.StringIO()):   # prdc prints the set sizes
                out = compute_prdc(real_features=data.real_features.double().numpy(),
                               fake_features=data.fake_features.double().numpy(), nearest_k=self.config.nearest_k)
        return {k: float(v) for k, v in out.items()}


class ClassAccuracy(Metric):
    """Share of conditional samples the evaluator classifies as their conditioning class, and the mean
    log-likelihood of that class (``class_logp``: the ``classifier`` reward of Soft-Di[M]O on hard samples)."""
    higher_is_better = {"accuracy": True, "class_logp": True}

    def compute(self, data: EvalData) -> dict[str, float]:
        if data.fake_labels is None or data.fake_logits is None:
            return {}
        logp = data.fake_logits.double().log_softmax(1).gather(1, data.fake_labels.long()[:, None])
        return {"accuracy": float((data.fake_logits.argmax(1) == data.fake_labels).double().mean()),
                "class_logp": float(logp.mean())}


@hookimpl
def dimo_register(register):
    register("metric", "frechet", FrechetDistance)
    register("metric", "inception_score", InceptionStyleScore)
    register("metric", "prdc", PRDC)
    register("metric", "accuracy", ClassAccuracy)
