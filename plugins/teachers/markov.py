"""Embedded task ``markov``: sequences from a known, fixed, sparse Markov chain per class, so sample
quality is exact.

Each class c has its own chain over ``states`` tokens: every state has ``branching`` allowed successors
(chosen at random, probabilities from a Dirichlet draw), the first token is uniform. A sequence is
*valid* when every transition in it is allowed by its class's chain. The exact metrics (metric plugin
``markov``) score samples against that chain: valid-sequence rate, valid-transition rate, negative
log-likelihood per token (the true distribution's entropy rate is what perfect samples reach), the share
of distinct sequences and the total variation between sampled and expected transition frequencies.

Why it is hard for few-step sampling: a masked diffusion model predicts the masked tokens of one step
independently given the visible ones. At one step every token is drawn from its marginal, and
independent neighbours almost never form an allowed transition (about branching/states per pair); with
one or two tokens revealed per step (16+ steps for 16 tokens) the conditionals are exact and samples are
valid. ``teacher.oracle=true`` replaces the learned network by the exact conditionals (forward-backward on
the chain), which separates the sampler's factorisation error from the network's error.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from core.errors import UserError
from core.interfaces import EvalData, Evaluator, Metric, PluginConfig, Samples
from plugins.teachers.embedded import CachedTransformerTeacher
from plugins.teachers.transformer import TransformerSpec
from registry import hookimpl

FLOOR = 1e-6   # probability charged to an impossible transition in the NLL (keeps it finite)


class Chain:
    """Per-class initial distributions ``[C, V]`` and transition matrices ``[C, V, V]`` (exact)."""

    def __init__(self, states: int, classes: int, branching: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.states, self.classes = states, classes
        trans = torch.zeros(classes, states, states, dtype=torch.float64)
        for c in range(classes):
            for s in range(states):
                succ = torch.randperm(states, generator=g)[:branching]
                u = torch.rand(2, branching, generator=g, dtype=torch.float64)
                w = -u.log().sum(0)   # Gamma(2, 1) draws: normalised, a Dirichlet(2) row (no tiny probabilities)
                trans[c, s, succ] = w / w.sum()
        self.trans = trans
        self.init = torch.full((classes, states), 1.0 / states, dtype=torch.float64)

    def sample(self, labels: Tensor, length: int, generator: torch.Generator) -> Tensor:
        n = labels.shape[0]
        x = torch.empty(n, length, dtype=torch.long)
        x[:, 0] = torch.multinomial(self.init[labels], 1, generator=generator).squeeze(1)
        for i in range(1, length):
            x[:, i] = torch.multinomial(self.trans[labels, x[:, i - 1]], 1, generator=generator).squeeze(1)
        return x

    def transition_probs(self, tokens: Tensor, labels: Tensor) -> Tensor:
        """``[N, L-1]`` probability of each transition under the sample's class chain."""
        return self.trans[labels[:, None], tokens[:, :-1], tokens[:, 1:]]

    def log_likelihood(self, tokens: Tensor, labels: Tensor) -> Tensor:
        """``[N]`` log p(x | c), impossible transitions charged at ``FLOOR``."""
        first = self.init[labels, tokens[:, 0]].log()
        return first + self.transition_probs(tokens, labels).clamp(min=FLOOR).log().sum(1)

    def marginals(self, length: int) -> Tensor:
        """``[C, L, V]`` exact per-position state distributions."""
        out = [self.init]
        for _ in range(length - 1):
            out.append(torch.einsum("cs,cst->ct", out[-1], self.trans))
        return torch.stack(out, 1)

    def entropy_rate(self, length: int) -> float:
        """Exact entropy of a sequence per token, averaged over classes (nats): the NLL of perfect samples."""
        p = self.marginals(length)
        h_init = -(self.init * self.init.clamp(min=1e-300).log()).sum(-1)
        h_rows = -(self.trans * self.trans.clamp(min=1e-300).log()).sum(-1)            # [C, V]
        h = h_init + torch.einsum("clv,cv->c", p[:, :-1], h_rows)
        return float(h.mean()) / length

    def expected_bigrams(self, length: int) -> Tensor:
        """``[C, V, V]`` expected frequency of each transition over the L-1 positions."""
        p = self.marginals(length)[:, :-1]                    # [C, L-1, V]
        return torch.einsum("clv,cvw->cvw", p, self.trans) / (length - 1)

    def support_size(self, length: int) -> list[int]:
        """Per class, the exact number of sequences of ``length`` with positive probability (Python ints:
        16 * 3^15 overflows nothing, but larger chains would overflow int64)."""
        allowed = (self.trans > 0).tolist()
        counts = []
        for c in range(self.classes):
            ends = [int(p > 0) for p in self.init[c].tolist()]   # sequences ending in each state
            for _ in range(length - 1):
                ends = [sum(ends[s] for s in range(self.states) if allowed[c][s][t]) for t in range(self.states)]
            counts.append(sum(ends))
        return counts

    def independent_validity(self, probs: Tensor, labels: Tensor) -> Tensor:
        """``[N]`` exact probability that a sequence whose tokens are drawn independently, x_i ~ probs[:, i]
        (``[N, L, V]``), is valid under its class's chain: the sum over all V^L sequences of prod_i p_i(x_i)
        times the indicator of allowed transitions, by a forward recursion in O(L V^2)."""
        allowed = (self.trans[labels.cpu()] > 0).to(probs)          # [N, V, V]
        reach = probs[:, 0]                                          # P(x_1 = v, prefix valid)
        for i in range(1, probs.shape[1]):
            reach = torch.einsum("nv,nvw->nw", reach, allowed) * probs[:, i]
        return reach.sum(-1)

    def independent_validity_bound(self, probs: Tensor, labels: Tensor) -> Tensor:
        """``[N]`` prod_{i >= 2} max_s P(x_i in succ(s)), an upper bound on ``independent_validity``:
        each transition is allowed with probability at most the largest mass token i puts on one state's
        successors. It says how concentrated independent tokens must be to be valid."""
        allowed = (self.trans[labels.cpu()] > 0).to(probs)
        successor_mass = torch.einsum("nvw,nlw->nlv", allowed, probs[:, 1:])   # [N, L-1, V]
        return successor_mass.amax(-1).prod(-1)


class ExactConditionals(nn.Module):
    """The true p(x_i | visible tokens, class) of a chain by forward-backward: a network with no learned
    weights, for sampler studies. The null class (CFG) conditions on the class mixture."""

    def __init__(self, chain: Chain, length: int):
        super().__init__()
        self.length, self.vocab_size = length, chain.states
        self.mask_id = chain.states
        self.log_trans = nn.Parameter(chain.trans.clamp(min=1e-300).log().float(), requires_grad=False)
        self.log_init = nn.Parameter(chain.init.log().float(), requires_grad=False)

    def forward(self, tokens: Tensor, cond: Tensor, **unused) -> Tensor:
        b, L = tokens.shape
        V, C = self.vocab_size, self.log_trans.shape[0]
        visible = tokens != self.mask_id
        other = F.one_hot(tokens.clamp(max=V - 1), V) == 0
        ev = torch.where(visible[..., None] & other, -math.inf, 0.0)[:, None]   # log evidence [B, 1, L, V]
        lt = self.log_trans[None]                                          # [1, C, V, V]
        alpha = [self.log_init[None] + ev[:, :, 0]]                        # [B, C, V]
        for i in range(1, L):
            alpha.append(torch.logsumexp(alpha[-1][..., None] + lt, dim=2) + ev[:, :, i])
        beta = [torch.zeros(b, C, V, device=tokens.device)]
        for i in range(L - 2, -1, -1):
            beta.append(torch.logsumexp(lt + (ev[:, :, i + 1] + beta[-1])[:, :, None, :], dim=3))
        post = torch.stack(alpha, 2) + torch.stack(beta[::-1], 2)        # [B, C, L, V] = log p(x_i, evidence | c)
        cond = cond.long()
        null = (cond < 0) | (cond >= C)
        own = post[torch.arange(b), cond.clamp(0, C - 1)]                  # [B, L, V]
        mixed = torch.logsumexp(post, dim=1)                               # uniform class prior
        logits = torch.where(null[:, None, None], mixed, own)
        logits = logits - torch.logsumexp(logits, -1, keepdim=True)
        return torch.nan_to_num(logits, nan=0.0, neginf=-1e4).clamp(min=-1e4)


class MarkovConfig(PluginConfig):
    checkpoint: Optional[str] = Field(None, description="safetensors file, folder or hub id; "
                                                        "default: the cached pre-trained teacher")
    states: int = Field(16, ge=2, le=1024, description="vocabulary: number of chain states")
    length: int = Field(16, ge=2, le=1024, description="sequence length (tokens)")
    classes: int = Field(4, ge=1, description="classes, each with its own chain")
    branching: int = Field(3, ge=1, description="allowed successors per state (sparsity of the chain)")
    chain_seed: int = Field(0, description="seed of the random chains")
    train_size: int = Field(20000, gt=0, description="training sequences drawn from the chains")
    oracle: bool = Field(False, description="use the exact conditionals (forward-backward) instead of the "
                                            "learned network: for sampler studies, nothing to distil")
    arch: TransformerSpec = Field(default_factory=lambda: TransformerSpec(dropout=0.0),
                                  description="transformer size; no dropout (it keeps the small network from "
                                              "learning the exact conditionals; the data are plentiful)")

    @model_validator(mode="after")
    def _branching_fits(self):
        if self.branching > self.states:
            raise ValueError(f"branching={self.branching} exceeds states={self.states}")
        return self


class MarkovTeacher(CachedTransformerTeacher):
    """Sequences of a known sparse Markov chain per class (exact metrics: valid-sequence rate, exact
    log-likelihood, diversity); the small MaskGit-style transformer, pre-trained by `method=mdm` and cached."""

    Config = MarkovConfig
    task, weights_file = "markov", "markov_teacher.safetensors"
    exact_metrics = ("markov",)
    recipe = "markov"   # plugins/recipes/markov/*.yaml (subclasses inherit them)

    def __init__(self, config: MarkovConfig):
        super().__init__(config)
        self.seq_len, self.vocab_size, self.mask_id = config.length, config.states, config.states
        self.num_classes = config.classes
        self.image_shape = (1, 1, config.length)
        self.chain = Chain(config.states, config.classes, config.branching, config.chain_seed)
        self._data: Optional[tuple[Tensor, Tensor]] = None

    def identity(self) -> str:
        c = self.config
        return (f"{c.arch.model_dump_json()}|{c.states}-{c.length}-{c.classes}-{c.branching}-{c.chain_seed}-"
                f"{c.train_size}")

    def build_network(self, load_weights: bool = True) -> nn.Module:
        if self.config.oracle:
            return ExactConditionals(self.chain, self.seq_len)
        return super().build_network(load_weights)

    def checkpoint_path(self):
        return None if self.config.oracle else super().checkpoint_path()

    def has_weights(self) -> bool:
        return self.config.oracle or super().has_weights()

    def save_pretrained(self, network, path=None):
        if self.config.oracle:
            raise UserError("teacher.oracle=true is the exact chain: there are no weights to save")
        return super().save_pretrained(network, path)

    def draw(self, per_class: int, seed: int) -> tuple[Tensor, Tensor]:
        labels = torch.arange(self.num_classes).repeat_interleave(per_class)
        return self.chain.sample(labels, self.seq_len, torch.Generator().manual_seed(seed)), labels

    def dataset(self) -> tuple[Tensor, Tensor]:
        if self._data is None:
            self._data = self.draw(math.ceil(self.config.train_size / self.num_classes), self.config.chain_seed + 1)
        return self._data

    def decode(self, tokens: Tensor) -> Tensor:
        """A sequence as a 1 x L grey strip (for sample grids)."""
        return (tokens.clamp(0, self.vocab_size - 1).float() / (self.vocab_size - 1)).view(-1, *self.image_shape)

    def decode_soft(self, probs: Tensor) -> Tensor:
        levels = torch.linspace(0, 1, self.vocab_size, device=probs.device, dtype=probs.dtype)
        return (probs @ levels).view(-1, *self.image_shape)

    def evaluator(self) -> "ExactEvaluator":
        return ExactEvaluator(self)


class ExactEvaluator(Evaluator):
    """The evaluator of a task whose distribution is known (markov, words): no image features; the teacher's
    ``exact_metrics`` score the sample tokens against it (``core.evaluate.Scorer`` uses them instead of
    features); ``teacher.draw`` gives exact samples."""

    def __init__(self, teacher):
        self.teacher, self.length = teacher, teacher.seq_len
        self.exact_metrics = teacher.exact_metrics

    def reference_samples(self, per_class: int = 250, seed: int = 12345) -> Samples:
        """Fresh exact samples of the chains (the data row: what perfect samples score)."""
        tokens, labels = self.teacher.draw(per_class, seed)
        return Samples(images=self.teacher.decode(tokens), labels=labels, tokens=tokens)


class MarkovMetrics(Metric):
    """Exact quality of sequences under the known chain of their class."""
    higher_is_better = {"valid": True, "transition_valid": True, "nll": False, "distinct": True,
                        "bigram_tv": False}

    def compute(self, data: EvalData) -> dict[str, float]:
        ev = getattr(data, "evaluator", None)
        if not isinstance(getattr(ev, "teacher", None), MarkovTeacher) or data.samples is None \
                or data.samples.tokens is None:
            raise UserError("metric 'markov' scores sequences of teacher=markov only (it needs the exact chain)")
        chain, length = ev.teacher.chain, ev.length
        tokens, labels = data.samples.tokens.cpu().long(), data.samples.labels.cpu().long()
        allowed = chain.transition_probs(tokens, labels) > 0
        pairs = torch.zeros(chain.classes, chain.states, chain.states, dtype=torch.float64)
        flat = (labels[:, None] * chain.states + tokens[:, :-1]) * chain.states + tokens[:, 1:]
        pairs.view(-1).index_add_(0, flat.flatten(), torch.ones(flat.numel(), dtype=torch.float64))
        counts = pairs.sum((1, 2), keepdim=True)
        emp = pairs / counts.clamp(min=1)
        tv = 0.5 * (emp - chain.expected_bigrams(length)).abs().sum((1, 2))   # per class
        weights = counts.flatten() / counts.sum()
        keyed = torch.cat([labels[:, None], tokens], 1)
        return {"valid": float(allowed.all(1).double().mean()),
                "transition_valid": float(allowed.double().mean()),
                "nll": float(-chain.log_likelihood(tokens, labels).mean()) / length,
                "distinct": keyed.unique(dim=0).shape[0] / keyed.shape[0],
                "bigram_tv": float((tv * weights).sum())}


@hookimpl
def dimo_register(register):
    register("teacher", "markov", MarkovTeacher)
    register("metric", "markov", MarkovMetrics)
