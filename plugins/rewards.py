"""Differentiable rewards on decoded images: Soft-Di[M]O's L_reward = -sum_i lambda_i R_i(Dec(Emb_Dec(z)), c)
and test-time embedding optimisation (TTEO).

A reward takes images ``[B, C, H, W]`` in [0, 1] (``teacher.decode_soft`` of the generator's soft codes, or
``teacher.decode`` of sampled tokens), the conditions and the teacher, and returns ``[B]`` (higher is better),
differentiable in the images. Reward networks are frozen: gradients reach the images, never their weights.

* ``classifier``: log-likelihood of the conditioning class under the task's evaluator classifier (digits, mnist).
* ``clip``: CLIP score (cosine of image and caption features; transformers ``CLIPModel``).
* ``pickscore``: PickScore v1 (a CLIP-H fine-tuned on Pick-a-Pic; logit_scale * cosine).
* ``hps``: HPS v2.1 (open_clip ViT-H-14 with the HPS v2.1 weights; cosine, as ``hpsv2.score``).

* ``word_attribute``: (teacher=words) log-probability that the letters, drawn independently from the soft
  per-position distributions, spell a word of the list with a rare property (a letter such as 'z', a suffix).

Text rewards read captions from ``teacher.captions(cond)``. Weights come from a local file/folder or the hub
cache; offline and missing, they fail with a UserError naming the field and the file.
"""
from __future__ import annotations

import math
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from core.errors import UserError
from core.hub import resolve_file
from core.interfaces import PluginConfig, Reward
from registry import hookimpl

# OpenAI CLIP preprocessing statistics: also those of open_clip ViT-H-14 (HPS) and of PickScore's processor.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_pixels(images: Tensor, size: int, fit: Literal["crop", "pad"] = "crop") -> Tensor:
    """Differentiable CLIP preprocessing: grey -> RGB, bicubic resize (``crop``: shortest side to ``size`` then
    centre crop, as CLIPImageProcessor; ``pad``: longest side to ``size`` then zero padding, as HPS), normalise."""
    x = images.float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    h, w = x.shape[-2:]
    scale = size / (min(h, w) if fit == "crop" else max(h, w))
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=scale < 1).clamp(0, 1)
    if fit == "crop":
        top, left = (nh - size) // 2, (nw - size) // 2
        x = x[..., top: top + size, left: left + size]
    else:
        ph, pw = size - nh, size - nw
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def captions_of(teacher, cond: Tensor, reward: str) -> list[str]:
    captions = teacher.captions(cond)
    if captions is None:
        raise UserError(f"reward '{reward}' scores images against text, but teacher {type(teacher).__name__} has "
                        f"no captions(cond); use it with a text-conditioned teacher (or reward 'classifier')")
    return list(captions)


def frozen(module: nn.Module) -> nn.Module:
    return module.eval().requires_grad_(False)


class ClassifierReward(Reward):
    """log p(c | image) under the task evaluator's classifier (the digits/mnist feature network), differentiable
    in the image. ``log_odds`` = log p - log(1 - p) keeps a gradient where log p saturates near 0."""

    class Config(PluginConfig):
        form: Literal["log_prob", "log_odds"] = Field(
            "log_prob", description="log_prob: log p(c|x); log_odds: log p(c|x) - log(1 - p(c|x))")

    def __init__(self, config):
        super().__init__(config)
        self.net: Optional[nn.Module] = None

    def classifier(self, teacher) -> nn.Module:
        if self.net is None:
            evaluator = teacher.evaluator() if teacher.num_classes else None
            net = getattr(evaluator, "net", None)
            if net is None:
                raise UserError(f"reward 'classifier' needs a class-conditional teacher whose evaluator has a "
                                f"classifier network; {type(teacher).__name__} has none")
            self.net = frozen(net)
        return self.net

    def __call__(self, images: Tensor, cond: Tensor, teacher) -> Tensor:
        net = self.classifier(teacher)
        net.to(images.device)
        logp = F.log_softmax(net(images.float()), -1)
        picked = logp.gather(1, cond.long().view(-1, 1).to(images.device)).squeeze(1)
        if self.config.form == "log_odds":
            return picked - torch.log1p(-picked.exp().clamp(max=1 - 1e-6))
        return picked


class ContrastiveReward(Reward):
    """Image-text cosine of a CLIP-type model, times ``scale`` (text features are cached per caption)."""
    fit: Literal["crop", "pad"] = "crop"

    def __init__(self, config):
        super().__init__(config)
        self.model: Optional[nn.Module] = None
        self._text: dict[str, Tensor] = {}

    # subclasses: load() -> model; encode_image(pixels) / encode_text(captions) -> [B, d]; image_size; scale
    def load(self) -> nn.Module:
        raise NotImplementedError

    def _model(self, device) -> nn.Module:
        if self.model is None:
            self.model = frozen(self.load())
        return self.model.to(device)

    def text_features(self, captions: list[str], device) -> Tensor:
        missing = sorted({c for c in captions if c not in self._text})
        if missing:
            with torch.no_grad():
                feats = F.normalize(self.encode_text(missing, device).float(), dim=-1)
            self._text.update(zip(missing, feats))
        return torch.stack([self._text[c] for c in captions]).to(device)

    def __call__(self, images: Tensor, cond: Tensor, teacher) -> Tensor:
        model = self._model(images.device)
        name = type(self).__name__
        text = self.text_features(captions_of(teacher, cond, name), images.device)
        img = F.normalize(self.encode_image(clip_pixels(images, self.image_size(model), self.fit)).float(), dim=-1)
        return self.scale(model) * (img * text).sum(-1)

    def scale(self, model) -> float:
        return 1.0


def _pooled(out) -> Tensor:
    """transformers >= 5 returns BaseModelOutputWithPooling from get_*_features; older versions a tensor."""
    return out if torch.is_tensor(out) else out.pooler_output


class HFClipReward(ContrastiveReward):
    """CLIP score with a transformers ``CLIPModel``: cosine(image, caption) (the usual CLIP score is
    100 * max(cosine, 0); the raw cosine keeps its gradient everywhere)."""

    class Config(PluginConfig):
        model: str = Field("openai/clip-vit-large-patch14",
                           description="CLIPModel folder or hub id (loaded from the local hub cache when offline)")
        tokenizer: Optional[str] = Field(None, description="tokenizer folder or hub id (default: model)")

    field = "reward.clip"

    def load(self) -> nn.Module:
        from transformers import AutoTokenizer, CLIPModel
        spec = self.config.model
        try:
            model = CLIPModel.from_pretrained(spec)
        except (OSError, ValueError) as exc:
            raise UserError(self._missing("model", spec, exc)) from None
        tok_spec = self.config.tokenizer or spec
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(tok_spec)
        except (OSError, ValueError) as exc:
            raise UserError(self._missing("tokenizer", tok_spec, exc)) from None
        return model

    def _missing(self, key: str, spec: str, exc: Exception) -> str:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return (f"{self.field}.{key}='{spec}' could not be loaded: it is not a local folder with the files and not "
                f"in the local hub cache (offline, or HF_HUB_OFFLINE=1). Download it first (`hf download {spec}`) "
                f"or pass a local folder. ({first})")

    def image_size(self, model) -> int:
        return int(model.config.vision_config.image_size)

    def encode_image(self, pixels: Tensor) -> Tensor:
        return _pooled(self.model.get_image_features(pixel_values=pixels.to(self.model.dtype)))

    def encode_text(self, captions: list[str], device) -> Tensor:
        max_len = self.model.config.text_config.max_position_embeddings
        tokens = self.tokenizer(captions, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        return _pooled(self.model.get_text_features(input_ids=tokens["input_ids"].to(device),
                                                    attention_mask=tokens["attention_mask"].to(device)))


class PickScoreReward(HFClipReward):
    """PickScore v1 (model card): logit_scale.exp() * cosine(image, caption) with the CLIP-H processor."""

    class Config(PluginConfig):
        model: str = Field("yuvalkirstain/PickScore_v1", description="PickScore CLIPModel folder or hub id")
        tokenizer: Optional[str] = Field("laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
                                         description="tokenizer folder or hub id (the model card's processor)")

    field = "reward.pickscore"

    def scale(self, model) -> float:
        return float(model.logit_scale.exp())


class HPSReward(ContrastiveReward):
    """HPS v2.1: open_clip ViT-H-14 with the HPS v2.1 checkpoint; score = cosine(image, caption) (no logit
    scale, as ``hpsv2.score``; the paper's tables show 100x). Images are letterboxed (HPS ResizeMaxSize)."""

    class Config(PluginConfig):
        checkpoint: str = Field("xswu/HPSv2", description="HPS weights: a .pt file, a folder or a hub id")
        filename: str = Field("HPS_v2.1_compressed.pt", description="file inside a folder or hub repo "
                                                                     "(HPS_v2_compressed.pt: HPS v2.0)")
        arch: str = Field("ViT-H-14", description="open_clip architecture the weights belong to")

    fit = "pad"

    def load(self) -> nn.Module:
        import open_clip
        path = resolve_file(self.config.checkpoint, self.config.filename, field="reward.hps.checkpoint")
        try:
            model = open_clip.create_model(self.config.arch, pretrained=None)
        except RuntimeError as exc:
            raise UserError(f"reward.hps.arch='{self.config.arch}' is not an open_clip architecture ({exc})") from None
        try:
            open_clip.load_checkpoint(model, str(path))
        except (RuntimeError, KeyError, OSError, ValueError) as exc:
            raise UserError(f"reward.hps.checkpoint: '{path}' does not hold {self.config.arch} weights "
                            f"({str(exc).splitlines()[0]})") from None
        self.tokenizer = open_clip.get_tokenizer(self.config.arch)
        return model

    def image_size(self, model) -> int:
        size = model.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    def encode_image(self, pixels: Tensor) -> Tensor:
        return self.model.encode_image(pixels)

    def encode_text(self, captions: list[str], device) -> Tensor:
        return self.model.encode_text(self.tokenizer(captions).to(device))


class WordAttributeReward(Reward):
    """teacher=words: log P(the word drawn letter by letter from the decoded distributions is in the list, has the
    class's length and the attribute), exactly: log sum_{w in T_c} prod_l p_l(w_l) over the target words T_c of
    the class (``valid: false``: log P(attribute) alone, letters independent). A hard sample scores 0 when it hits
    and log(floor) otherwise; soft codes get a gradient toward the target words the generator already half-spells."""

    class Config(PluginConfig):
        letters: str = Field("z", pattern=r"^[a-z]*$", description="the word must contain one of these letters "
                                                                    "(empty: no letter condition)")
        suffix: str = Field("", pattern=r"^[a-z]*$", description="the word must end with this suffix (empty: any)")
        valid: bool = Field(True, description="true: the letters must also spell a word of the list (exact sum over "
                                              "the list's target words); false: the attribute alone")
        floor: float = Field(1e-9, gt=0, lt=1, description="probability floor inside the log (a miss scores "
                                                           "log(floor))")

    def __init__(self, config):
        super().__init__(config)
        self._targets: dict = {}

    def targets(self, teacher, cls: int) -> Tensor:
        """``[T, L]`` token rows of the list's words of class ``cls`` that have the attribute."""
        if cls not in self._targets:
            from plugins.teachers.words import has_attribute
            rows = teacher.words.tokens[cls]
            keep = has_attribute(teacher.words.by_class[cls], self.config.letters, self.config.suffix)
            self._targets[cls] = rows[keep]
        return self._targets[cls]

    def __call__(self, images: Tensor, cond: Tensor, teacher) -> Tensor:
        from plugins.teachers.words import LETTERS, WordsTeacher
        if not isinstance(teacher, WordsTeacher):
            raise UserError(f"reward 'word_attribute' scores words of teacher=words only, not {type(teacher).__name__}")
        c = self.config
        logp = WordsTeacher.letter_probs(images.float()).clamp(min=1e-30).log()     # [B, L, V]
        cond = cond.long().view(-1).to(images.device)
        out = torch.full((len(cond),), float("-inf"), device=images.device)
        if c.valid:
            for cls in cond.unique().tolist():
                rows = cond == cls
                target = self.targets(teacher, cls).to(images.device)                # [T, L]
                if not len(target):
                    continue
                lp = logp[rows]                                                      # [b, L, V]
                per_letter = lp[:, torch.arange(target.shape[1], device=images.device)[None], target]   # [b, T, L]
                out[rows] = torch.logsumexp(per_letter.sum(-1), dim=-1)
        else:
            letters = torch.tensor([LETTERS.index(ch) for ch in c.letters], device=images.device, dtype=torch.long)
            out = torch.zeros(len(cond), device=images.device)
            if len(letters):      # P(some position shows one of the letters) = 1 - prod_l (1 - p_l(letters))
                p_any = logp.exp()[..., letters].sum(-1).clamp(max=1 - 1e-7)
                out = out + torch.log1p(-torch.exp(torch.log1p(-p_any).sum(-1))).clamp(min=-1e4)
            if c.suffix:          # the suffix ends at the class's word length
                ends = teacher.config.min_length + cond
                for i, ch in enumerate(reversed(c.suffix)):
                    pos = (ends - 1 - i).clamp(min=0)
                    out = out + logp[torch.arange(len(cond), device=images.device), pos, LETTERS.index(ch)]
        return torch.logaddexp(out, torch.full_like(out, math.log(c.floor)))


# ---------------------------------------------------------------------------------------------------
# Composition: sum_i lambda_i R_i (Soft-Di[M]O's reward loss, test-time search)
# ---------------------------------------------------------------------------------------------------

def validate_rewards(specs: list) -> list[dict]:
    """``[{name, weight, ...options}]`` (or bare names) -> validated entries; unknown names or options raise
    ValueError naming the entry, the value and the valid choices."""
    from pydantic import ValidationError
    from core.config import format_validation_error
    from registry import get_registry
    reg, out = get_registry(), []
    for i, spec in enumerate(specs):
        spec = {"name": spec} if isinstance(spec, str) else dict(spec)
        name, weight = spec.pop("name", None), spec.pop("weight", 1.0)
        if name not in reg.entries["reward"]:
            raise ValueError(f"rewards[{i}].name={name!r} is not a reward; valid: {', '.join(reg.names('reward'))}")
        cls = reg.get("reward", name)
        try:
            options = cls.Config.model_validate(spec).model_dump(mode="json")
        except ValidationError as exc:
            raise ValueError(format_validation_error(exc, cls.Config, f"rewards[{i}]")) from None
        out.append({"name": name, "weight": float(weight), **options})
    return out


def build_rewards(specs: list) -> list[tuple[float, Reward]]:
    """(lambda_i, reward plugin) pairs."""
    from registry.registry import build
    return [(s.pop("weight"), build("reward", s.pop("name"), s)) for s in validate_rewards(specs)]


def total_reward(rewards, images: Tensor, cond, teacher) -> Tensor:
    """sum_i lambda_i R_i(images, c), ``[B]``."""
    return sum(w * r(images, cond, teacher).float() for w, r in rewards)


@hookimpl
def dimo_register(register):
    register("reward", "classifier", ClassifierReward)
    register("reward", "clip", HFClipReward)
    register("reward", "pickscore", PickScoreReward)
    register("reward", "hps", HPSReward)
    register("reward", "word_attribute", WordAttributeReward)
