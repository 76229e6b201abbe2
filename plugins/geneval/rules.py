"""GenEval's scoring rules as pure functions over detections, independent of the detector.

The semantics are those of the official evaluation (github.com/djghosh13/geneval, commit af4902f,
``evaluation/evaluate_images.py`` and ``summary_scores.py``; Ghosh et al. 2023):

* detections of each class are kept when their score is *above* 0.3 (0.9 for ``counting`` prompts), at most 16
  per class, most confident first; an optional greedy overlap suppression (``max_overlap`` < 1, IoU with the
  inclusive-pixel convention) is off by default (1.0);
* ``include`` clauses combine with AND, ``exclude`` clauses with OR. An include ``{class, count}`` needs at least
  ``count`` kept objects of the class; only the ``count`` most confident take part in its colour and position
  checks. ``color``: each of them must be classified as that colour. ``position: [relation, group]``: each of
  them must stand in ``relation`` to every object matched by include clause number ``group`` (which must itself
  have matched). An exclude ``{class, count}`` fails when ``count`` or more objects of the class are kept;
* a relation between two boxes compares their centres after shrinking the offset on each axis by
  ``position_threshold`` (0.1) times the sum of the boxes' sizes on that axis; the shrunk offset, divided by the
  length of the true offset, must exceed 0.5 on the relation's axis ("left of": dx < -0.5, "right of": dx > 0.5,
  "above": dy < -0.5, "below": dy > 0.5, image y pointing down);
* the score of a set of images is the mean over tags of each tag's share of correct images ("overall").
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
RELATIONS = ("left of", "right of", "above", "below")

Box = tuple[float, float, float, float]   # x1, y1, x2, y2 in pixels


@dataclass(frozen=True)
class Detection:
    """One detected object: its class name (GenEval's COCO names), confidence, box and optional mask
    (``[H, W]`` bool over the image)."""
    label: str
    score: float
    box: Box
    mask: Optional[np.ndarray] = None


@dataclass(frozen=True)
class Thresholds:
    """The official defaults (``--options`` of evaluate_images.py)."""
    score: float = 0.3          # threshold
    counting: float = 0.9       # counting_threshold
    max_objects: int = 16       # max_objects
    max_overlap: float = 1.0    # max_overlap (1: no suppression)
    position: float = 0.1       # position_threshold


# ``colors_of(objects, classname) -> one colour name per object``: a colour classifier bound to the image.
ColorsOf = Callable[[Sequence[Detection], str], list[str]]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU with inclusive pixel coordinates (width = x2 - x1 + 1), as the official ``compute_iou``."""
    def area(x1, y1, x2, y2):
        return max(x2 - x1 + 1, 0) * max(y2 - y1 + 1, 0)
    inter = area(max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    union = area(*a[:4]) + area(*b[:4]) - inter
    return inter / union if union else 0.0


def keep_detections(detections: Iterable[Detection], tag: str,
                    thresholds: Thresholds = Thresholds()) -> dict[str, list[Detection]]:
    """Per class, the detections GenEval counts, most confident first (classes with none are absent)."""
    threshold = thresholds.counting if tag == "counting" else thresholds.score
    by_class: dict[str, list[Detection]] = {}
    for det in detections:
        by_class.setdefault(det.label, []).append(det)
    kept: dict[str, list[Detection]] = {}
    for label, dets in by_class.items():
        ranked = sorted((d for d in dets if d.score > threshold), key=lambda d: -d.score)[: thresholds.max_objects]
        chosen = []
        while ranked:
            best = ranked.pop(0)
            chosen.append(best)
            if thresholds.max_overlap != 1:
                ranked = [d for d in ranked if box_iou(best.box, d.box) < thresholds.max_overlap]
        if chosen:
            kept[label] = chosen
    return kept


def relations(a: Sequence[float], b: Sequence[float], margin: float = 0.1) -> set[str]:
    """The relations of box ``a`` to box ``b`` ("left of", "right of", "above", "below"; possibly two, or none
    when the centres are too close for their sizes)."""
    offset = [(a[0] + a[2]) / 2 - (b[0] + b[2]) / 2, (a[1] + a[3]) / 2 - (b[1] + b[3]) / 2]
    size = [abs(a[2] - a[0]) + abs(b[2] - b[0]), abs(a[3] - a[1]) + abs(b[3] - b[1])]
    shrunk = [math.copysign(max(abs(o) - margin * s, 0.0), o) for o, s in zip(offset, size)]
    if all(abs(v) < 1e-3 for v in shrunk):
        return set()
    norm = math.hypot(*offset)
    dx, dy = shrunk[0] / norm, shrunk[1] / norm
    out = set()
    if dx < -0.5:
        out.add("left of")
    if dx > 0.5:
        out.add("right of")
    if dy < -0.5:
        out.add("above")
    if dy > 0.5:
        out.add("below")
    return out


def judge(metadata: dict, objects: dict[str, list[Detection]], colors_of: Optional[ColorsOf] = None,
          margin: float = 0.1) -> tuple[bool, list[str]]:
    """Whether kept ``objects`` (``keep_detections``) satisfy a prompt's ``include``/``exclude`` clauses, and the
    reasons when not. ``colors_of`` is only called for clauses with a colour whose objects were found."""
    correct, reasons = True, []
    groups: list[Optional[list[Detection]]] = []
    for clause in metadata.get("include", []):
        name, count = clause["class"], clause["count"]
        found = objects.get(name, [])[:count]
        ok = len(found) >= count
        if not ok:
            reasons.append(f"expected {name}>={count}, found {len(found)}")
        else:
            if "color" in clause:
                if colors_of is None:
                    raise ValueError(f"prompt {metadata.get('prompt')!r} checks colours: a colour classifier is needed")
                colors = list(colors_of(found, name))
                if colors.count(clause["color"]) < count:
                    ok = False
                    reasons.append(f"expected {clause['color']} {name}>={count}, found {colors.count(clause['color'])}"
                                   f" {clause['color']} (" + ", ".join(f"{colors.count(c)} {c}" for c in COLORS
                                                                      if c in colors) + ")")
            if "position" in clause and ok:
                relation, target = clause["position"]
                if groups[target] is None:
                    ok = False
                    reasons.append(f"no target for {name} to be {relation}")
                else:
                    for obj in found:
                        for other in groups[target]:
                            got = relations(obj.box, other.box, margin)
                            if relation not in got:
                                ok = False
                                reasons.append(f"expected {name} {relation} target, found "
                                               f"{' and '.join(sorted(got)) or 'no relation to the'} target")
                                break
                        if not ok:
                            break
        correct = correct and ok
        groups.append(found if ok else None)
    for clause in metadata.get("exclude", []):
        name, count = clause["class"], clause["count"]
        if len(objects.get(name, [])) >= count:
            correct = False
            reasons.append(f"expected {name}<{count}, found {len(objects[name])}")
    return correct, reasons


def score_image(metadata: dict, detections: Iterable[Detection], colors_of: Optional[ColorsOf] = None,
                thresholds: Thresholds = Thresholds()) -> tuple[bool, list[str]]:
    """One image: keep the detections for the prompt's tag, then judge them."""
    return judge(metadata, keep_detections(detections, metadata["tag"], thresholds), colors_of, thresholds.position)


def summarize(results: Iterable[tuple[str, bool]]) -> dict[str, float]:
    """``(tag, correct)`` per image -> ``geneval_<tag>`` (share correct) per tag present and ``geneval``, the mean
    of the tag shares (the official "overall score (avg. over tasks)")."""
    per_tag: dict[str, list[bool]] = {}
    for tag, correct in results:
        per_tag.setdefault(tag, []).append(bool(correct))
    if not per_tag:
        return {}
    out = {f"geneval_{tag}": sum(v) / len(v) for tag, v in per_tag.items()}
    out["geneval"] = sum(out.values()) / len(out)
    return out
