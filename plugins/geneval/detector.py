"""GenEval's detectors and colour classifier.

* :class:`Detector`: ``detect(image) -> list[Detection]`` for an RGB ``uint8 [H, W, 3]`` image, labels among
  GenEval's 80 COCO names (``object_names.txt``). Detectors are chosen by ``teacher.eval_geneval.detector``: a name
  in :data:`DETECTORS` (``register_detector``) or ``package.module:Class``.
* :class:`Mask2FormerDetector` (``mask2former``): the official detector, mmdet's Mask2Former Swin-S COCO instance
  model. mmdet and mmcv are not dimo dependencies: they are imported when the detector is built, and their absence is
  a :class:`core.errors.UserError` naming what to install and the checkpoint to download.
* :class:`ClipColorClassifier`: the official colour check, zero-shot CLIP over the ten colour names with three
  templates, on the object's crop (its box, outside its mask filled with grey).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from core.errors import UserError
from plugins.geneval.config import CHECKPOINT_URL, MASK2FORMER, GenEvalConfig
from plugins.geneval.rules import COLORS, Detection

HERE = Path(__file__).parent
# mmdet 2.x is the line the official evaluation runs on (mmcv-full 1.7.1; mmdet installed from its 2.x branch).
INSTALL = ("pip install -U openmim && mim install 'mmcv-full==1.7.1' && pip install 'mmdet==2.28.2' "
           "(the official GenEval environment: mmcv-full 1.7.1 and mmdet 2.x; they need a torch and CUDA that "
           "mmcv-full has wheels for, see the mmcv install table)")


def object_names() -> list[str]:
    """The 80 COCO class names in the detector's class order (GenEval's ``object_names.txt``)."""
    return [line.strip() for line in (HERE / "object_names.txt").read_text().splitlines() if line.strip()]


class Detector:
    """Finds objects: ``detect(image uint8 [H, W, 3] RGB) -> list[Detection]`` (every detection, unthresholded:
    the GenEval rules keep what they count)."""

    def __init__(self, config: GenEvalConfig, device: torch.device):
        self.config, self.device = config, device

    def detect(self, image: np.ndarray) -> list[Detection]:
        raise NotImplementedError


DETECTORS: dict[str, type[Detector]] = {}


def register_detector(name: str, cls: type[Detector]) -> None:
    """Make ``teacher.eval_geneval.detector=<name>`` build ``cls(config, device)``."""
    if not (isinstance(cls, type) and issubclass(cls, Detector)):
        raise TypeError(f"detector '{name}' must be a subclass of plugins.geneval.Detector")
    DETECTORS[name] = cls


def build_detector(config: GenEvalConfig, device: torch.device) -> Detector:
    name = config.detector
    field = "teacher.eval_geneval.detector"
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise UserError(f"{field}='{name}' cannot be imported ({exc})") from None
        if not (isinstance(cls, type) and issubclass(cls, Detector)):
            raise UserError(f"{field}='{name}' is not a subclass of plugins.geneval.Detector")
    elif name in DETECTORS:
        cls = DETECTORS[name]
    else:
        raise UserError(f"{field}='{name}' is unknown; valid: {', '.join(sorted(DETECTORS))} or 'package.module:Class'")
    return cls(config, device)


def mmdet_detections(result, classnames: Sequence[str]) -> list[Detection]:
    """Detections of an mmdet ``inference_detector`` result: mmdet 2.x ``(bbox, segm)`` lists per class (``bbox[c]``
    ``[n, 5]`` x1, y1, x2, y2, score; ``segm[c]`` n masks) or an mmdet 3.x ``DetDataSample`` (``pred_instances``)."""
    out = []
    if hasattr(result, "pred_instances"):
        inst = result.pred_instances
        boxes, scores, labels = (np.asarray(inst.bboxes.cpu()), np.asarray(inst.scores.cpu()),
                                 np.asarray(inst.labels.cpu()))
        masks = np.asarray(inst.masks.cpu()).astype(bool) if hasattr(inst, "masks") else None
        for i in range(len(scores)):
            out.append(Detection(classnames[int(labels[i])], float(scores[i]), tuple(float(v) for v in boxes[i][:4]),
                                 None if masks is None else masks[i]))
        return out
    bbox = result[0] if isinstance(result, tuple) else result
    segm = result[1] if isinstance(result, tuple) and len(result) > 1 else None
    if len(bbox) != len(classnames):
        raise ValueError(f"the detector returned {len(bbox)} classes; GenEval's object names are {len(classnames)}")
    for c, rows in enumerate(bbox):
        for i, row in enumerate(np.asarray(rows).reshape(-1, 5)):
            mask = None if segm is None else np.asarray(segm[c][i]).astype(bool)
            out.append(Detection(classnames[c], float(row[4]), tuple(float(v) for v in row[:4]), mask))
    return out


class Mask2FormerDetector(Detector):
    """mmdet's Mask2Former Swin-S (COCO instance segmentation), the detector of the official GenEval numbers."""

    def __init__(self, config: GenEvalConfig, device: torch.device):
        super().__init__(config, device)
        try:
            import mmdet
            from mmdet.apis import inference_detector, init_detector
        except ImportError as exc:
            raise UserError(f"the geneval metric's detector (teacher.eval_geneval.detector=mask2former) needs mmdet "
                            f"and mmcv, which dimo does not install ({exc}). Install them with: {INSTALL}; then "
                            f"download {CHECKPOINT_URL} and pass teacher.eval_geneval.checkpoint=<that .pth file>") \
                from None
        ckpt = config.checkpoint
        if not ckpt or not Path(ckpt).expanduser().is_file():
            raise UserError(f"teacher.eval_geneval.checkpoint={ckpt!r}: the Mask2Former weights are needed as a local "
                            f"file; download {CHECKPOINT_URL} (GenEval's evaluation/download_models.sh saves it as "
                            f"{MASK2FORMER}.pth) and pass its path")
        cfg = config.mmdet_config or self.default_config(Path(mmdet.__file__).parent)
        self.infer = inference_detector
        try:
            self.model = init_detector(str(cfg), str(Path(ckpt).expanduser()), device=str(device))
        except Exception as exc:   # noqa: BLE001 - mmcv/mmdet raise many types for bad files
            raise UserError(f"Mask2Former could not be built from config '{cfg}' and checkpoint '{ckpt}': "
                            f"{type(exc).__name__}: {exc}") from None
        self.classnames = object_names()

    @staticmethod
    def default_config(root: Path) -> Path:
        """The config in a pip-installed mmdet (``.mim/configs``) or a source checkout (``../configs``)."""
        for base in (root / ".mim" / "configs", root.parent / "configs"):
            path = base / "mask2former" / f"{MASK2FORMER}.py"
            if path.is_file():
                return path
        raise UserError(f"the installed mmdet ({root}) has no configs/mask2former/{MASK2FORMER}.py; pass "
                        f"teacher.eval_geneval.mmdet_config=<that file> (in mmdetection's 2.x branch)")

    def detect(self, image: np.ndarray) -> list[Detection]:
        result = self.infer(self.model, np.ascontiguousarray(image[..., ::-1]))   # mmdet reads arrays as BGR
        return mmdet_detections(result, self.classnames)


register_detector("mask2former", Mask2FormerDetector)


TEMPLATES = ("a photo of a {color} {name}", "a photo of a {color}-colored {name}", "a photo of a {color} object")


def object_crop(image: np.ndarray, det: Detection, background: str = "#999") -> np.ndarray:
    """What the colour classifier sees of an object: the image inside its mask (``background`` elsewhere, or
    ``original``), cropped to its box (PIL's rounding of the box)."""
    from PIL import Image, ImageColor
    img = np.asarray(image)
    if det.mask is not None:
        if det.mask.shape != img.shape[:2]:
            raise ValueError(f"mask {det.mask.shape} does not match the image {img.shape[:2]}")
        if background != "original":
            fill = np.array(ImageColor.getrgb(background)[:3], dtype=img.dtype)
            img = np.where(det.mask[..., None], img, fill)
    x1, y1, x2, y2 = (int(round(v)) for v in det.box)   # PIL's rounding; at least one pixel
    return np.asarray(Image.fromarray(np.ascontiguousarray(img)).crop((x1, y1, max(x2, x1 + 1), max(y2, y1 + 1))))


class ClipColorClassifier:
    """Zero-shot colour of each object: CLIP image features of its crop against, per colour, the normalised mean
    of the normalised text features of the three templates (``clip_benchmark``'s zero-shot classifier)."""

    def __init__(self, model: str, device: torch.device, background: str = "#999", batch: int = 16):
        from plugins.rewards import HFClipReward
        self.clip = HFClipReward(HFClipReward.Config(model=model))
        self.clip.field = "teacher.eval_geneval.clip"
        self.device, self.background, self.batch = device, background, batch
        self._weights: dict[str, torch.Tensor] = {}

    def weights(self, name: str) -> torch.Tensor:
        if name not in self._weights:
            texts = [t.format(color=c, name=name) for c in COLORS for t in TEMPLATES]
            feats = self.clip.text_features(texts, self.device).view(len(COLORS), len(TEMPLATES), -1)
            self._weights[name] = torch.nn.functional.normalize(feats.mean(1), dim=-1)
        return self._weights[name]

    @torch.no_grad()
    def __call__(self, image: np.ndarray, objects: Sequence[Detection], name: str) -> list[str]:
        from plugins.rewards import clip_pixels
        model = self.clip._model(self.device)
        size = self.clip.image_size(model)
        weights = self.weights(name)
        out: list[str] = []
        for i in range(0, len(objects), self.batch):
            pixels = []
            for det in objects[i: i + self.batch]:
                crop = torch.from_numpy(object_crop(image, det, self.background).copy())
                pixels.append(clip_pixels(crop.permute(2, 0, 1)[None].float().div(255).to(self.device), size))
            feats = torch.nn.functional.normalize(self.clip.encode_image(torch.cat(pixels)).float(), dim=-1)
            out += [COLORS[int(j)] for j in (feats @ weights.T).argmax(1)]
        return out


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``[B, 3, H, W]`` in [0, 1] -> ``uint8 [B, H, W, 3]``, as a saved PNG holds them."""
    return (images.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
