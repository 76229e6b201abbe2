"""Text-to-image evaluation: the evaluator of prompt-conditioned teachers and its metrics.

Samples are drawn per prompt (the condition is a prompt index, plugins/prompts.py); the metrics score decoded
images against their prompts, so the evaluator declares them as ``exact_metrics`` (scored from the samples, no
real-image features):

* ``clip_score``: 100 * max(cos(image, prompt), 0) averaged over samples (torchmetrics' CLIPScore definition), with
  a transformers ``CLIPModel`` (``teacher.eval_clip``; default openai/clip-vit-large-patch14); also ``clip``, the
  same without the factor 100 (the scale of the paper's Table 3);
* ``hps``: HPS v2.1 (x100, as the paper's Table 3) overall and per HPS v2 style (``hps_anime``, ... when the prompt
  set is ``hpsv2``; ``hps`` is then the mean of the style means, as the benchmark averages);
* ``text_fid`` (reported as ``fid``): FID of the samples' Inception-v3 pool features (torch-fidelity's network, as
  plugins/teachers/maskgit/evaluation.py) against reference statistics the user supplies
  (``teacher.eval_fid_reference``: mu, sigma of real images, e.g. COCO-30k with a caption file as prompt set);
* ``geneval``: GenEval per tag and overall (plugins/geneval; prompt set ``geneval``; its detector, mmdet's
  Mask2Former, is an optional install named in the error when missing).

Both reuse the differentiable reward models of plugins/rewards.py (same preprocessing, same weights), so a
missing model file is the same clear error naming the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from pydantic import Field
from torch import Tensor

from core.errors import UserError
from core.interfaces import EvalData, Evaluator, Metric, PluginConfig
from plugins.geneval.config import GenEvalConfig
from plugins.geneval.metric import GenEval
from plugins.prompts import HPS_STYLES, TEXT_METRICS  # noqa: F401 (TEXT_METRICS: re-exported)
from registry import hookimpl


class TextImageEvaluator(Evaluator):
    """Prompts of the teacher's prompt set and the model specs its metrics use."""

    def __init__(self, prompt_set, metrics: tuple[str, ...] = ("clip_score",),
                 clip_model: str = "openai/clip-vit-large-patch14", hps_checkpoint: str = "xswu/HPSv2",
                 fid_reference: Optional[str] = None, inception_weights: Optional[str] = None,
                 geneval: Optional[GenEvalConfig] = None):
        self.prompt_set = prompt_set
        self.exact_metrics = tuple(metrics)
        self.clip_model, self.hps_checkpoint = clip_model, hps_checkpoint
        self.fid_reference, self.inception_weights = fid_reference, inception_weights
        self.geneval = geneval or GenEvalConfig()

    @classmethod
    def of(cls, prompt_set, config) -> "TextImageEvaluator":
        """The evaluator a teacher's ``TextToImageConfig`` (``eval_*`` fields) describes."""
        return cls(prompt_set, tuple(config.eval_metrics), config.eval_clip, config.eval_hps,
                   config.eval_fid_reference, config.eval_inception_weights, config.eval_geneval)

    def captions(self, cond: Tensor) -> list[str]:
        return self.prompt_set.texts(cond)

    def styles(self, cond: Tensor) -> Optional[list[str]]:
        if not self.prompt_set.styles:
            return None
        return [self.prompt_set.styles[int(i)] for i in cond.reshape(-1).tolist()]


def _scores(reward, data: EvalData, batch: int, field: str, spec: str) -> Tensor:
    """The reward model's per-sample score of the sample images against their prompts, in batches."""
    images, labels = data.samples.images, data.samples.labels
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = []
    try:
        with torch.no_grad():
            for i in range(0, len(labels), batch):
                out.append(reward(images[i: i + batch].to(device), labels[i: i + batch], data.evaluator).float().cpu())
    except UserError as exc:   # the reward names its own field; the evaluation's is the teacher's
        raise UserError(f"{field}='{spec}' (evaluation model): {exc}") from None
    return torch.cat(out)


class ClipScore(Metric):
    class Config(PluginConfig):
        batch_size: int = Field(32, gt=0, description="images scored together")

    higher_is_better = {"clip_score": True, "clip": True}

    def compute(self, data: EvalData) -> dict[str, float]:
        from plugins.rewards import HFClipReward
        reward = HFClipReward(HFClipReward.Config(model=data.evaluator.clip_model))
        cos = _scores(reward, data, self.config.batch_size, "teacher.eval_clip", data.evaluator.clip_model)
        score = cos.clamp(min=0).mean()   # "clip": the paper's Table 3 scale (e.g. 0.318); clip_score: x100
        return {"clip_score": float(100 * score), "clip": float(score)}


class HPSv21(Metric):
    class Config(PluginConfig):
        batch_size: int = Field(16, gt=0, description="images scored together")

    higher_is_better = {"hps": True, **{f"hps_{s}": True for s in HPS_STYLES}}

    def compute(self, data: EvalData) -> dict[str, float]:
        from plugins.rewards import HPSReward
        reward = HPSReward(HPSReward.Config(checkpoint=data.evaluator.hps_checkpoint))
        score = 100 * _scores(reward, data, self.config.batch_size, "teacher.eval_hps", data.evaluator.hps_checkpoint)
        styles = data.evaluator.styles(data.samples.labels)
        if not styles:
            return {"hps": float(score.mean())}
        out = {f"hps_{s}": float(score[[x == s for x in styles]].mean()) for s in dict.fromkeys(styles)}
        out["hps"] = sum(out.values()) / len(out)
        return out


class TextFID(Metric):
    """FID of the sample images against the user's reference statistics (``teacher.eval_fid_reference``), with
    torch-fidelity's Inception-v3 (the network FID is defined with; ``teacher.eval_inception_weights``)."""
    class Config(PluginConfig):
        batch_size: int = Field(50, gt=0, description="images through Inception together")

    higher_is_better = {"fid": False}

    def compute(self, data: EvalData) -> dict[str, float]:
        from plugins.teachers.maskgit.evaluation import (InceptionFeatures, RunningStats, frechet_distance,
                                                         load_reference_stats)
        ev, field = data.evaluator, "teacher.eval_fid_reference"
        ref = getattr(ev, "fid_reference", None)
        if not ref:
            raise UserError(f"the text_fid metric needs reference statistics: {field}=<stats.npz> (mu, sigma of "
                            f"Inception pool features of real images, e.g. COCO-30k; `python -m "
                            f"plugins.teachers.maskgit.evaluation stats images=<folder> out=<stats.npz>`)")
        if not Path(ref).expanduser().is_file():
            raise UserError(f"{field}='{ref}' does not exist (the reference statistics .npz of the text_fid metric)")
        try:
            reference = load_reference_stats(str(Path(ref).expanduser()))
        except UserError as exc:
            raise UserError(f"{field}: {exc}") from None
        if getattr(ev, "_inception", None) is None:   # kept on the evaluator for the next seeds and models
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            try:
                ev._inception = InceptionFeatures(ev.inception_weights, device)
            except UserError as exc:
                raise UserError(f"teacher.eval_inception_weights: {exc}") from None
        stats = RunningStats()
        for batch in data.samples.images.split(self.config.batch_size):
            stats.update(ev._inception(batch)[0])
        return {"fid": frechet_distance(*stats.result(), *reference)}


@hookimpl
def dimo_register(register):
    register("metric", "clip_score", ClipScore)
    register("metric", "hps", HPSv21)
    register("metric", "text_fid", TextFID)
    register("metric", "geneval", GenEval)
