"""GenEval (Ghosh et al. 2023): object-focused text-to-image evaluation, as dimo's ``geneval`` metric.

* the 553 prompts with their metadata (``evaluation_metadata.jsonl``: tag, include/exclude clauses) are the prompt
  set ``teacher.prompts.source=geneval`` (or ``geneval:<tag>``);
* :mod:`plugins.geneval.rules`: the official scoring rules as pure functions over :class:`Detection`;
* :mod:`plugins.geneval.detector`: the :class:`Detector` interface, the official mmdet Mask2Former detector
  (optional packages, imported only when built) and the CLIP colour classifier;
* :mod:`plugins.geneval.metric`: the ``geneval`` metric (registered by plugins/t2i_metrics.py).

The data files (``evaluation_metadata.jsonl``, ``object_names.txt``) are copied unchanged from
github.com/djghosh13/geneval at commit af4902f24d3ca90ebbb446dd9891a59e0f82725f, MIT licensed (``LICENSE.geneval``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from plugins.geneval.config import GenEvalConfig
from plugins.geneval.detector import DETECTORS, Detector, build_detector, register_detector
from plugins.geneval.rules import COLORS, TAGS, Detection, Thresholds

METADATA = Path(__file__).parent / "evaluation_metadata.jsonl"
SOURCE_COMMIT = "af4902f24d3ca90ebbb446dd9891a59e0f82725f"


def geneval_metadata(tag: Optional[str] = None, path: Path = METADATA) -> list[dict]:
    """The GenEval prompts' metadata, in file order (``tag``: only that tag's)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if tag is None or r["tag"] == tag]


__all__ = ["COLORS", "TAGS", "DETECTORS", "Detection", "Detector", "GenEvalConfig", "Thresholds", "build_detector",
           "geneval_metadata", "register_detector"]
