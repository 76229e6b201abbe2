"""The ``geneval`` metric: each sample image of a GenEval prompt is judged by the official rules on the detector's
objects; reported are the share of correct images per tag (``geneval_<tag>``) and their mean (``geneval``)."""
from __future__ import annotations

import torch
from pydantic import Field

from core.errors import UserError
from core.interfaces import EvalData, Metric, PluginConfig
from plugins.geneval.config import GenEvalConfig
from plugins.geneval.detector import ClipColorClassifier, build_detector, to_uint8
from plugins.geneval.rules import TAGS, Thresholds, score_image, summarize


def thresholds(config: GenEvalConfig) -> Thresholds:
    return Thresholds(config.threshold, config.counting_threshold, config.max_objects, config.max_overlap,
                      config.position_threshold)


class GenEvalScorer:
    """Judges images of GenEval prompts: the detector (built on first use), the CLIP colour classifier (built when
    a colour is first asked), the official rules. ``judge(image uint8 [H, W, 3], metadata) -> (correct, reasons)``."""

    def __init__(self, config: GenEvalConfig, clip_model: str, device: torch.device):
        self.config, self.clip_model, self.device = config, clip_model, device
        self.rules = thresholds(config)
        self.detector = None
        self.colors = None

    def judge(self, image, metadata: dict) -> tuple[bool, list[str]]:
        if self.detector is None:
            self.detector = build_detector(self.config, self.device)

        def colors_of(objects, name):
            if self.colors is None:
                self.colors = ClipColorClassifier(self.config.clip or self.clip_model, self.device,
                                                  self.config.background)
            return self.colors(image, objects, name)
        return score_image(metadata, self.detector.detect(image), colors_of, self.rules)


class GenEval(Metric):
    """GenEval (the official rules, plugins/geneval/rules.py) on the samples of the GenEval prompts
    (``teacher.prompts.source=geneval``): ``geneval_<tag>``, the share of correct images per tag, and ``geneval``,
    their mean. Detector and thresholds: ``teacher.eval_geneval.*`` (mask2former needs mmdet, mmcv and its
    checkpoint; their absence is an error naming them)."""
    class Config(PluginConfig):
        batch_size: int = Field(16, gt=0, description="images converted to 8-bit arrays at a time (the detector "
                                                      "sees one image at a time)")

    higher_is_better = {"geneval": True, **{f"geneval_{t}": True for t in TAGS}}

    def compute(self, data: EvalData) -> dict[str, float]:
        ev = data.evaluator
        metadata = getattr(getattr(ev, "prompt_set", None), "metadata", None)
        if not metadata:
            raise UserError("the geneval metric needs the GenEval prompts: teacher.prompts.source=geneval "
                            "(or geneval:<tag>)")
        # kept on the evaluator (the detector is large): built once for every seed and model it scores
        if getattr(ev, "_geneval", None) is None:
            ev._geneval = GenEvalScorer(ev.geneval, ev.clip_model,
                                        torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        images, labels = data.samples.images, data.samples.labels.reshape(-1).tolist()
        results = []
        for start in range(0, len(labels), self.config.batch_size):
            for image, label in zip(to_uint8(images[start: start + self.config.batch_size]),
                                    labels[start: start + self.config.batch_size]):
                meta = metadata[int(label)]
                results.append((meta["tag"], ev._geneval.judge(image, meta)[0]))
        return summarize(results)
