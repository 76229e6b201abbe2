"""Prompt sets and cached text conditioning for text-to-image teachers (aMUSEd, MaskGen, Meissonic).

How text enters dimo's interfaces (core/interfaces.py) without changing them:
  * a *condition* is a LongTensor ``[B]`` of indices into the teacher's prompt set, so ``sample_conditions``,
    CFG batching (``torch.cat([cond, null])``), data batches, checkpoints and results stay index tensors;
  * ``null_condition(cond)`` is the index ``len(prompts)``: the null prompt (``""``) or the negative prompt, as
    each family's official sampler uses for classifier-free guidance;
  * the teacher's network maps indices to text-encoder outputs through a :class:`TextConditioner`, which runs
    the (frozen) text encoder once per prompt and caches its outputs. Generator, aux and discriminator are deep
    copies of the teacher network: they share one conditioner (``__deepcopy__`` returns itself), so the text
    encoder and its cache exist once;
  * ``teacher.captions(cond)`` gives the prompt strings (text rewards, captions in results and grids).

Prompt sources (``teacher.prompts.source``):
  * ``builtin``: a small fixed list for smoke runs;
  * ``hpsv2`` or ``hpsv2:<style>``: the HPS v2 benchmark prompts shipped by the ``hpsv2`` package (styles
    anime, concept-art, paintings, photo; 800 each);
  * ``geneval`` or ``geneval:<tag>``: the 553 GenEval prompts with their metadata (plugins/geneval; tags
    single_object, two_object, counting, colors, position, color_attr), scored by the ``geneval`` metric;
  * a path: a ``.txt`` file (one prompt per line; blank lines and lines starting with ``#`` skipped), a
    ``.json`` list of strings, or an image-caption ``metadata.jsonl`` (its ``text`` fields; see ``teacher.data``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor

from core.errors import UserError
from core.interfaces import PluginConfig
from plugins.geneval.config import GenEvalConfig

# Short, varied prompts for smoke runs and the tiny test teachers (not a benchmark).
BUILTIN_PROMPTS = (
    "a photo of a red apple on a wooden table",
    "a watercolor painting of a lighthouse at sunset",
    "an astronaut riding a horse on the moon",
    "a bowl of ramen with chopsticks, studio lighting",
    "a cat wearing sunglasses, digital art",
    "a snowy mountain village at night",
    "two dogs playing with a blue ball in a park",
    "a futuristic city skyline, concept art",
)
HPS_STYLES = ("anime", "concept-art", "paintings", "photo")
GENEVAL_TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
TEXT_METRICS = ("clip_score", "hps", "text_fid", "geneval")


class PromptsConfig(PluginConfig):
    source: str = Field("builtin", description="builtin (a small smoke-test list), hpsv2 or hpsv2:<style> (the HPS v2 "
                                               "benchmark prompts of the hpsv2 package), geneval or geneval:<tag> "
                                               "(the GenEval prompts and metadata), or a .txt / .json file")
    negative: Optional[str] = Field(None, description="the null/negative prompt of CFG; default: the teacher "
                                                      "family's own ('' for aMUSEd and MaskGen)")
    limit: Optional[int] = Field(None, gt=0, description="keep only the first N prompts")

    @field_validator("source")
    @classmethod
    def _known_source(cls, v: str) -> str:
        if v.startswith("hpsv2:") and v.split(":", 1)[1] not in HPS_STYLES:
            raise ValueError(f"unknown HPS v2 style '{v.split(':', 1)[1]}'; valid: {', '.join(HPS_STYLES)}")
        if v.startswith("geneval:") and v.split(":", 1)[1] not in GENEVAL_TAGS:
            raise ValueError(f"unknown GenEval tag '{v.split(':', 1)[1]}'; valid: {', '.join(GENEVAL_TAGS)}")
        return v


class TextToImageConfig(PluginConfig):
    """Options every prompt-conditioned teacher shares: its prompt set and its evaluation."""
    prompts: PromptsConfig = Field(default_factory=PromptsConfig, description="the prompt set conditions index")
    eval_metrics: list[str] = Field(["clip_score"], description="text-to-image metrics of the evaluation: "
                                                                "clip_score, hps (HPS v2.1 per style), text_fid "
                                                                "(FID against teacher.eval_fid_reference), geneval "
                                                                "(with prompts.source=geneval)")
    eval_clip: str = Field("openai/clip-vit-large-patch14", description="CLIPModel folder or hub id of clip_score")
    eval_hps: str = Field("xswu/HPSv2", description="HPS v2.1 weights (file, folder or hub id) of the hps metric")
    eval_fid_reference: Optional[str] = Field(None, description="reference statistics .npz of the text_fid metric "
                                                                "(mu, sigma of Inception pool features of real images, "
                                                                "e.g. COCO-30k; `python -m "
                                                                "plugins.teachers.maskgit.evaluation stats`)")
    eval_inception_weights: Optional[str] = Field(
        None, description="torch-fidelity Inception weight file of the text_fid metric (default: "
                          "$DIMO_INCEPTION_WEIGHTS, the torch hub cache, or a download)")
    eval_geneval: GenEvalConfig = Field(default_factory=GenEvalConfig, description="detector, checkpoint and "
                                                                                   "thresholds of the geneval metric")
    data: Optional[str] = Field(None, description="real image-caption pairs (folder with metadata.jsonl: file_name, "
                                                  "text) for the GAN head and data methods; captions index the prompt "
                                                  "set (teacher.prompts.source=<folder>/metadata.jsonl)")

    @field_validator("eval_metrics")
    @classmethod
    def _text_metrics(cls, v: list[str]) -> list[str]:
        bad = [m for m in v if m not in TEXT_METRICS]
        if bad or not v:
            raise ValueError(f"{bad or v} not text-to-image metrics; valid: {', '.join(TEXT_METRICS)}")
        return v

    @model_validator(mode="after")
    def _metric_inputs(self):
        if "text_fid" in self.eval_metrics and not self.eval_fid_reference:
            raise ValueError("eval_metrics text_fid needs teacher.eval_fid_reference=<stats.npz> (mu, sigma of "
                             "Inception pool features of real images, e.g. COCO-30k; see "
                             "docs/teachers/text_conditioning.md)")
        if "geneval" in self.eval_metrics and self.prompts.source.split(":")[0] != "geneval":
            raise ValueError(f"eval_metrics geneval needs the GenEval prompts: teacher.prompts.source=geneval (or "
                             f"geneval:<tag>), not '{self.prompts.source}'")
        return self


@dataclass
class PromptSet:
    """Prompts ``0..N-1`` and the null/negative prompt at index ``N``; ``styles[i]`` groups prompts (HPS);
    ``metadata[i]``: what a benchmark checks of prompt ``i`` (GenEval: tag, include/exclude clauses)."""
    prompts: list[str]
    negative: str = ""
    styles: Optional[list[str]] = None
    source: str = "builtin"
    metadata: Optional[list[dict]] = None

    @property
    def null_index(self) -> int:
        return len(self.prompts)

    def text(self, index: int) -> str:
        if index == self.null_index:
            return self.negative
        if not 0 <= index < len(self.prompts):
            raise IndexError(f"prompt index {index} is outside the prompt set (0..{len(self.prompts) - 1}, "
                             f"null {self.null_index})")
        return self.prompts[index]

    def texts(self, cond: Tensor) -> list[str]:
        return [self.text(int(i)) for i in cond.reshape(-1).tolist()]


def hpsv2_prompts(style: Optional[str] = None) -> tuple[list[str], list[str]]:
    """(prompts, styles) of the HPS v2 benchmark, from the ``hpsv2`` package (``hpsv2.benchmark_prompts``)."""
    try:
        import hpsv2
    except ImportError:
        raise UserError("teacher.prompts.source=hpsv2 needs the HPS v2 benchmark package: `pip install hpsv2` "
                        "(or give a .txt prompt file)") from None
    root = Path(getattr(hpsv2, "root_path", "~/.cache/hpsv2")).expanduser() / "datasets" / "benchmark"
    styles = [style] if style else list(HPS_STYLES)
    prompts, labels = [], []
    for s in styles:
        cached = root / f"{s}.json"
        try:   # the package's cached file first: benchmark_prompts() re-downloads (hub zhwang/HPDv2) each call
            got = json.loads(cached.read_text()) if cached.is_file() else hpsv2.benchmark_prompts(s)
        except Exception as exc:   # noqa: BLE001 - the package raises whatever its download raises
            raise UserError(f"teacher.prompts.source=hpsv2: the HPS v2 benchmark prompts ({s}) could not be read "
                            f"from '{cached}' nor fetched by hpsv2 (hub dataset zhwang/HPDv2): {exc}") from None
        got = got[s] if isinstance(got, dict) else got
        prompts += list(got)
        labels += [s] * len(got)
    return prompts, labels


def read_prompt_file(path: Path) -> list[str]:
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"teacher.prompts.source='{path}' is not valid JSON ({exc})") from None
        if not (isinstance(data, list) and all(isinstance(p, str) for p in data)):
            raise UserError(f"teacher.prompts.source='{path}': a .json prompt file must hold a list of strings")
        return [p.strip() for p in data if p.strip()]
    if path.suffix == ".jsonl":   # an image-caption metadata file (teacher.data): its "text" fields
        return list(dict.fromkeys(text for _, text in read_captions(path)))   # each caption once
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def read_captions(path: Path) -> list[tuple[str, str]]:
    """(file_name, text) of each line of a ``metadata.jsonl`` (the Hugging Face imagefolder convention)."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out.append((str(row["file_name"]), str(row["text"]).strip()))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise UserError(f"'{path}' line {n}: expected a JSON object with file_name and text ({exc})") from None
    return out


def caption_dataset(folder: str, prompts: PromptSet, size: int, encode, batch: int = 32):
    """Real ``(tokens [N, L], conditions [N])`` of an image folder with ``metadata.jsonl``: each image resized
    (shorter side) and centre-cropped to ``size``, in [0, 1], encoded by ``encode``; its condition is the index of
    its caption in the prompt set (give ``teacher.prompts.source=<folder>/metadata.jsonl`` to use the captions)."""
    from PIL import Image
    from torchvision.transforms.functional import center_crop, resize, to_tensor
    root = Path(folder).expanduser()
    meta = root / "metadata.jsonl"
    if not meta.is_file():
        raise UserError(f"teacher.data='{folder}' has no metadata.jsonl (lines {{\"file_name\": ..., \"text\": ...}})")
    index = {p: i for i, p in enumerate(prompts.prompts)}
    rows = read_captions(meta)
    missing = [t for _, t in rows if t not in index]
    if missing:
        raise UserError(f"teacher.data: {len(missing)} caption(s) are not in the prompt set, e.g. {missing[0]!r}; "
                        f"use teacher.prompts.source={meta}")
    tokens = []
    for i in range(0, len(rows), batch):
        images = []
        for name, _ in rows[i: i + batch]:
            try:
                img = Image.open(root / name).convert("RGB")
            except OSError as exc:
                raise UserError(f"teacher.data: cannot read image '{root / name}' ({exc})") from None
            images.append(center_crop(resize(to_tensor(img), size, antialias=True), size))
        with torch.no_grad():
            tokens.append(encode(torch.stack(images)).cpu())
    return torch.cat(tokens), torch.tensor([index[t] for _, t in rows])


def load_prompts(config: PromptsConfig, default_negative: str = "") -> PromptSet:
    src = config.source
    styles, metadata = None, None
    if src == "builtin":
        prompts = list(BUILTIN_PROMPTS)
    elif src == "hpsv2" or src.startswith("hpsv2:"):
        prompts, styles = hpsv2_prompts(src.split(":", 1)[1] if ":" in src else None)
    elif src == "geneval" or src.startswith("geneval:"):
        from plugins.geneval import geneval_metadata
        metadata = geneval_metadata(src.split(":", 1)[1] if ":" in src else None)
        prompts = [m["prompt"] for m in metadata]
    else:
        path = Path(src).expanduser()
        if not path.is_file():
            raise UserError(f"teacher.prompts.source='{src}' is neither builtin, hpsv2, hpsv2:<style> "
                            f"({', '.join(HPS_STYLES)}), geneval, geneval:<tag> nor an existing .txt/.json prompt "
                            f"file")
        prompts = read_prompt_file(path)
    if config.limit:
        prompts, styles = prompts[: config.limit], styles[: config.limit] if styles else None
        metadata = metadata[: config.limit] if metadata else None
    if not prompts:
        raise UserError(f"teacher.prompts.source='{src}' holds no prompts")
    negative = default_negative if config.negative is None else config.negative
    return PromptSet(prompts, negative, styles, src, metadata)


Encoder = Callable[[list[str], torch.device], dict[str, Tensor]]


@dataclass(eq=False)
class TextConditioner:
    """Prompt index -> cached text-encoder outputs. ``encode(texts, device)`` returns named tensors with a
    leading batch axis (e.g. ``hidden [N, 77, D]``, ``pooled [N, D]``); it is called once per new prompt
    (batched over the new prompts of a call) under ``no_grad``, and the outputs are kept on that device."""
    prompts: PromptSet
    encode: Encoder
    cache: dict[int, dict[str, Tensor]] = field(default_factory=dict)

    def __deepcopy__(self, memo):   # shared by every copy of the network (teacher, generator, aux, ...)
        return self

    def __call__(self, cond: Tensor) -> dict[str, Tensor]:
        idx = cond.reshape(-1).long().tolist()
        bad = [i for i in idx if not 0 <= i <= self.prompts.null_index]
        if bad:
            raise IndexError(f"condition(s) {bad[:4]} outside the prompt set: 0..{self.prompts.null_index - 1} "
                             f"are prompts, {self.prompts.null_index} the null/negative prompt")
        new = sorted(set(i for i in idx if i not in self.cache))
        if new:
            with torch.no_grad():
                out = self.encode([self.prompts.text(i) for i in new], cond.device)
            for j, i in enumerate(new):
                self.cache[i] = {k: v[j].detach() for k, v in out.items()}
        first = self.cache[idx[0]]
        return {k: torch.stack([self.cache[i][k] for i in idx]).to(cond.device) for k in first}


class PromptConditioned:
    """The conditions of a text-to-image teacher: a condition is the index of a prompt in ``self.prompt_set``
    (its null or negative prompt at ``null_index``), and ``teacher.data`` holds image-caption pairs that
    ``self.encode`` turns into real tokens (the GAN head's), once per process."""

    _data = None

    def null_condition(self, cond):
        import torch
        return torch.full_like(cond, self.prompt_set.null_index)

    def captions(self, cond) -> list[str]:
        return self.prompt_set.texts(cond)

    def dataset(self):
        if self.config.data is None:
            return None
        if self._data is None:
            self._data = caption_dataset(self.config.data, self.prompt_set, self.image_shape[1], self.encode)
        return self._data

