"""Embedded task ``words``: English words spelled letter by letter, from the word list that the
``english-words`` package ships (no download at run time), with exact metrics.

A sequence is one word of ``min_length``..``length`` lowercase letters, padded with ``_`` to ``length``
tokens (vocabulary: 26 letters and the pad); the class is the word's length. The data are every word of the
list with such a length, equally likely within a class. The exact metrics (metric plugin ``words``) score
samples against the list: the share of valid words (in the list, with the class's length), the total
variation between the character n-gram frequencies of the samples and of the list, the share of
distinct samples, and the per-letter NLL of the samples under the teacher (its exact negative ELBO: the mean
over all 2^L - 1 mask patterns, i.e. the NLL averaged over the teacher's any-order autoregressive
factorisations). Metric plugin ``word_attribute`` counts a rare word property (a letter such as 'z', a suffix),
the target of the ``word_attribute`` reward (plugins/rewards.py) in the test-time search rows.

A word decodes to a one-hot picture of 27 rows (letters and pad) by L columns (positions); the generator's soft
codes decode to the same picture with the letter probabilities as grey levels, so rewards read the per-position
letter distribution exactly.

Why it is hard for few-step sampling, as markov: letters drawn independently from their per-position
marginals rarely spell a word; revealing a few letters per step gives the teacher the context it needs.
"""
from __future__ import annotations

from typing import Literal, Optional

import torch
from pydantic import Field, model_validator
from torch import Tensor

from core.errors import UserError
from core.interfaces import EvalData, Metric, PluginConfig
from plugins.teachers.embedded import CachedTransformerTeacher
from plugins.teachers.markov import ExactEvaluator
from plugins.teachers.transformer import TransformerSpec
from registry import hookimpl

LETTERS = "abcdefghijklmnopqrstuvwxyz"
PAD = len(LETTERS)          # token id of the padding character
ALPHABET = LETTERS + "_"


class WordList:
    """The words of ``min_length``..``length`` letters of an ``english-words`` list, as padded token rows
    per class (class c = words of ``min_length + c`` letters) and as integer codes for exact look-up."""

    def __init__(self, source: str, min_length: int, length: int):
        from english_words import get_english_words_set
        words = get_english_words_set([source], lower=True, alpha=True)
        self.length, self.min_length = length, min_length
        spellable = [w for w in words if set(w) <= set(LETTERS)]   # gcide has some digits
        self.by_class = [sorted(w for w in spellable if len(w) == n) for n in range(min_length, length + 1)]
        self.tokens = [torch.tensor([self.encode(w) for w in ws], dtype=torch.long).view(-1, length)
                       for ws in self.by_class]
        self.codes = torch.cat([self.code(t, torch.full((len(t),), c)) for c, t in enumerate(self.tokens)]).sort()[0]

    def encode(self, word: str) -> list[int]:
        return [LETTERS.index(ch) for ch in word] + [PAD] * (self.length - len(word))

    def code(self, tokens: Tensor, labels: Tensor) -> Tensor:
        """``[N]`` one integer per (class, sequence): the sequence in base 27, then the class."""
        weights = torch.tensor([len(ALPHABET) ** i for i in range(self.length)])   # exact: 27^11 < 2^63 / 12
        return (tokens.long() * weights).sum(1) * len(self.tokens) + labels.long()

    def valid(self, tokens: Tensor, labels: Tensor) -> Tensor:
        """``[N]`` True where the sequence is a word of the list with its class's length."""
        return torch.isin(self.code(tokens, labels), self.codes)

    def ngram_frequencies(self, tokens: Tensor, n: int) -> Tensor:
        """``[27^n]`` relative frequency of each character n-gram over all windows of the rows."""
        windows = tokens.unfold(1, n, 1).reshape(-1, n)
        index = (windows * (len(ALPHABET) ** torch.arange(n))).sum(1)
        counts = torch.bincount(index, minlength=len(ALPHABET) ** n).double()
        return counts / counts.sum().clamp(min=1)


class WordsConfig(PluginConfig):
    checkpoint: Optional[str] = Field(None, description="safetensors file, folder or hub id; "
                                                        "default: the cached pre-trained teacher")
    source: Literal["web2", "gcide"] = Field("web2", description="english-words list: web2 (Webster's 2nd, 235k "
                                                                 "words) or gcide (GCIDE, 114k words)")
    min_length: int = Field(3, ge=1, le=12, description="shortest word; class 0")
    length: int = Field(6, ge=2, le=12, description="longest word = sequence length (shorter words are padded)")
    arch: TransformerSpec = Field(default_factory=lambda: TransformerSpec(dropout=0.0),
                                  description="transformer size; no dropout (the data are the whole list)")

    @model_validator(mode="after")
    def _lengths(self):
        if self.min_length > self.length:
            raise ValueError(f"min_length={self.min_length} exceeds length={self.length}")
        return self


class WordsTeacher(CachedTransformerTeacher):
    """English words of a shipped word list, letter by letter (exact metrics: valid-word share, character
    n-gram distance); the small MaskGit-style transformer, pre-trained by `method=mdm` and cached."""

    Config = WordsConfig
    task, weights_file = "words", "words_teacher.safetensors"
    exact_metrics = ("words", "word_attribute")
    recipe = "words"   # plugins/recipes/words/*.yaml

    def __init__(self, config: WordsConfig):
        super().__init__(config)
        self.seq_len, self.vocab_size, self.mask_id = config.length, len(ALPHABET), len(ALPHABET)
        self.num_classes = config.length - config.min_length + 1
        self.image_shape = (1, len(ALPHABET), config.length)   # one-hot picture: letters x positions
        self.words = WordList(config.source, config.min_length, config.length)   # both lists have every length

    def identity(self) -> str:
        c = self.config
        return f"{c.arch.model_dump_json()}|{c.source}-{c.min_length}-{c.length}"

    def draw(self, per_class: int, seed: int) -> tuple[Tensor, Tensor]:
        """``per_class`` words of each class, uniformly with replacement."""
        g = torch.Generator().manual_seed(seed)
        rows = [t[torch.randint(len(t), (per_class,), generator=g)] for t in self.words.tokens]
        return torch.cat(rows), torch.arange(self.num_classes).repeat_interleave(per_class)

    def dataset(self) -> tuple[Tensor, Tensor]:
        """Every word once (the classes are as unequal as the list's length distribution)."""
        labels = [torch.full((len(t),), c) for c, t in enumerate(self.words.tokens)]
        return torch.cat(self.words.tokens), torch.cat(labels)

    def decode(self, tokens: Tensor) -> Tensor:
        """A word as a one-hot 27 x L picture (row = letter or pad, column = position); ``spell`` gives the text."""
        onehot = torch.nn.functional.one_hot(tokens.long().clamp(0, self.vocab_size - 1), self.vocab_size).float()
        return onehot.transpose(1, 2).reshape(-1, *self.image_shape)

    def decode_soft(self, probs: Tensor) -> Tensor:
        """``[B, L, 27]`` letter distributions -> the same picture with probabilities as grey levels (exactly
        ``decode`` for one-hot rows; rewards read the distributions back with ``letter_probs``)."""
        return probs.transpose(1, 2).reshape(-1, *self.image_shape)

    @staticmethod
    def letter_probs(images: Tensor) -> Tensor:
        """Pictures of ``decode``/``decode_soft`` -> ``[B, L, 27]`` per-position letter distributions."""
        if images.dim() != 4 or images.shape[1] != 1 or images.shape[2] != len(ALPHABET):
            raise UserError(f"expected word pictures [B, 1, {len(ALPHABET)}, L] (teacher=words decode), got "
                            f"{tuple(images.shape)}")
        return images[:, 0].transpose(1, 2)

    def scoring_network(self):
        """The teacher network in eval mode for the NLL metric (built once), or None without cached weights."""
        if getattr(self, "_scoring_net", None) is None:
            if not self.has_weights():
                return None
            self._scoring_net = self.build_network(load_weights=True).eval().requires_grad_(False)
        return self._scoring_net

    @staticmethod
    def spell(tokens: Tensor) -> list[str]:
        return ["".join(ALPHABET[int(t)] for t in row if t < len(ALPHABET)).rstrip("_") for row in tokens]

    def evaluator(self) -> ExactEvaluator:
        return ExactEvaluator(self)


class WordsMetricConfig(PluginConfig):
    n: int = Field(2, ge=1, le=4, description="character n-gram order of ngram_tv (pad included)")


def teacher_nll(network, tokens: Tensor, labels: Tensor, mask_id: int, batch: int = 16384) -> Tensor:
    """``[N]`` the teacher's exact negative ELBO of each sequence, per token: for every nonempty set M of masked
    positions (all 2^L - 1), -sum_{j in M} log p(x_j | x outside M, c) / |M|, averaged over the sets of each
    size and summed over the sizes, divided by L. This is the NLL averaged over the L! orders in which an
    any-order autoregressive reading of the teacher can reveal the sequence (conditional, no guidance)."""
    n, length = tokens.shape
    masks = [torch.tensor([(m >> i) & 1 for i in range(length)], dtype=torch.bool) for m in range(1, 2 ** length)]
    masks = torch.stack(masks)                                   # [2^L - 1, L]
    sizes = masks.sum(1)
    count = torch.bincount(sizes, minlength=length + 1).double()  # sets of each size
    device = next(network.parameters()).device
    total = torch.zeros(n, dtype=torch.float64)
    per = max(1, batch // max(n, 1))
    for start in range(0, len(masks), per):
        m = masks[start:start + per]                             # [k, L]
        k = len(m)
        x = tokens[None].expand(k, n, length).clone()
        x[m[:, None].expand(k, n, length)] = mask_id
        with torch.no_grad():
            logp = network(x.view(-1, length).to(device), labels.repeat(k).to(device)).float().log_softmax(-1)
        picked = logp.gather(-1, tokens.repeat(k, 1).to(device)[..., None]).squeeze(-1).cpu().double()
        picked = picked.view(k, n, length) * m[:, None].double()
        weight = 1.0 / (sizes[start:start + per].double() * count[sizes[start:start + per]])   # [k]
        total -= (picked.sum(-1) * weight[:, None]).sum(0)
    return total / length


class WordsMetrics(Metric):
    """Exact quality of spelled words against the word list, and their NLL under the teacher (``teacher_nll``:
    nats per letter, the teacher's exact negative ELBO, see ``teacher_nll``; left out when no teacher is cached)."""
    Config = WordsMetricConfig
    higher_is_better = {"valid": True, "ngram_tv": False, "distinct": True, "teacher_nll": False}

    def compute(self, data: EvalData) -> dict[str, float]:
        ev = getattr(data, "evaluator", None)
        teacher = getattr(ev, "teacher", None)
        if not isinstance(teacher, WordsTeacher) or data.samples is None or data.samples.tokens is None:
            raise UserError("metric 'words' scores sequences of teacher=words only (it needs the word list)")
        words, n = teacher.words, self.config.n
        tokens, labels = data.samples.tokens.cpu().long(), data.samples.labels.cpu().long()
        tv = torch.zeros(teacher.num_classes, dtype=torch.float64)
        for c in range(teacher.num_classes):   # each class against its own words, weighted by its share
            own = tokens[labels == c]
            if len(own):
                diff = words.ngram_frequencies(own, n) - words.ngram_frequencies(words.tokens[c], n)
                tv[c] = 0.5 * diff.abs().sum() * len(own) / len(tokens)
        keyed = torch.cat([labels[:, None], tokens], 1)
        out = {"valid": float(words.valid(tokens, labels).double().mean()), "ngram_tv": float(tv.sum()),
               "distinct": keyed.unique(dim=0).shape[0] / keyed.shape[0]}
        net = teacher.scoring_network()
        if net is not None:
            out["teacher_nll"] = float(teacher_nll(net, tokens, labels, teacher.mask_id).mean())
        return out


def has_attribute(words: list[str], letters: str, suffix: str) -> Tensor:
    """``[N]`` True where a word contains one of ``letters`` (any, when empty) and ends with ``suffix``."""
    return torch.tensor([(not letters or any(ch in w for ch in letters)) and w.endswith(suffix) for w in words],
                        dtype=torch.bool)


class WordAttributeConfig(PluginConfig):
    letters: str = Field("z", pattern=r"^[a-z]*$", description="the word must contain one of these letters "
                                                                "(empty: no letter condition); 'z': 2.5% of the list")
    suffix: str = Field("", pattern=r"^[a-z]*$", description="the word must end with this suffix (empty: any)")


class WordAttribute(Metric):
    """A rare word property (default: contains 'z'): ``attribute`` = share of samples that have it,
    ``attribute_valid`` = share that have it and are words of the list (the ``word_attribute`` reward's target)."""
    Config = WordAttributeConfig
    higher_is_better = {"attribute": True, "attribute_valid": True}

    def compute(self, data: EvalData) -> dict[str, float]:
        teacher = getattr(getattr(data, "evaluator", None), "teacher", None)
        if not isinstance(teacher, WordsTeacher) or data.samples is None or data.samples.tokens is None:
            raise UserError("metric 'word_attribute' scores sequences of teacher=words only")
        tokens, labels = data.samples.tokens.cpu().long(), data.samples.labels.cpu().long()
        hit = has_attribute(teacher.spell(tokens), self.config.letters, self.config.suffix)
        valid = teacher.words.valid(tokens, labels)
        return {"attribute": float(hit.double().mean()), "attribute_valid": float((hit & valid).double().mean())}


@hookimpl
def dimo_register(register):
    register("teacher", "words", WordsTeacher)
    register("metric", "words", WordsMetrics)
    register("metric", "word_attribute", WordAttribute)
