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
        config: GenEvalConfig = ev.geneval
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        # built once per evaluator (the detector is large): kept on it for the next seeds and models
        if getattr(ev, "_geneval_detector", None) is None:
            ev._geneval_detector = build_detector(config, device)
        detector, rules = ev._geneval_detector, thresholds(config)
        images, labels = data.samples.images, data.samples.labels.reshape(-1).tolist()
        results = []
        for start in range(0, len(labels), self.config.batch_size):
            for image, label in zip(to_uint8(images[start: start + self.config.batch_size]),
                                    labels[start: start + self.config.batch_size]):
                meta = metadata[int(label)]

                def colors_of(objects, name, image=image):
                    if getattr(ev, "_geneval_colors", None) is None:
                        ev._geneval_colors = ClipColorClassifier(config.clip or ev.clip_model, device,
                                                                 config.background)
                    return ev._geneval_colors(image, objects, name)
                correct, _ = score_image(meta, detector.detect(image), colors_of, rules)
                results.append((meta["tag"], correct))
        return summarize(results)
