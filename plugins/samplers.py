"""Multi-step teacher samplers (MaskGit-style parallel decoding), any step count.

All start from an all-[M] grid; at step s of S they predict every token (CFG on logits, temperature) and
reveal some masked positions; the count per step follows the mask schedule (``step_counts``). They
differ in *which* masked positions are revealed:
  * ``random``: uniformly at random (the paper's teacher default, App. D: "choose token to remask randomly";
    MaskGIT-pytorch ``randomize="random"``);
  * ``confidence``: most-confident-first, log p plus Gumbel noise annealed linearly to 0 (MaskGIT-pytorch
    ``randomize="linear"``, ``r_temp``);
  * ``halton``: a fixed low-discrepancy spatial order (Halton-MaskGIT, Besnier et al. 2025).

Conventions of the official code, and how they map here:
  * MaskGIT-pytorch's ``sm_temp`` *multiplies* the logits: ``temperature = 1 / sm_temp``;
  * its guidance ``(1 + w) c - w u`` is ``cfg_scale = 1 + w`` in dimo's ``u + cfg_scale (c - u)``;
  * its CFG ramp ``w_s = w s / (S - 1)`` is ``cfg_schedule=linear``; Gumbel noise uses the same ramp.
"""
from __future__ import annotations

import math
from typing import Literal, Optional

import torch
from pydantic import Field, field_validator
from torch import Tensor

from core.interfaces import PluginConfig, Sampler, Teacher
from core.masking import guided_logits
from registry import hookimpl

StepCounts = Literal["cumulative", "proportional", "halton"]


class SamplerConfig(PluginConfig):
    temperature: float = Field(1.0, gt=0, description="softmax temperature: logits / temperature "
                                                      "(MaskGIT-pytorch sm_temp = 1 / temperature)")
    temperature_end: Optional[float] = Field(
        None, gt=0, description="if set, 1 / temperature moves linearly to 1 / temperature_end over the steps "
                                "(Halton-MaskGIT sm_temp_min -> sm_temp_max)")
    cfg_scale: float = Field(1.0, description="classifier-free guidance u + w (c - u) on logits (1 = none; "
                                              "MaskGIT-pytorch's w is cfg_scale - 1)")
    cfg_schedule: Literal["constant", "linear"] = Field(
        "constant", description="linear: w_s = 1 + (w - 1) s / (S - 1), no guidance at the first step and "
                                "full w at the last (MaskGIT-pytorch)")
    schedule: str = Field("arccos", description="mask schedule plugin deciding how many stay masked")
    step_counts: StepCounts = Field(
        "cumulative", description="cumulative: floor(L gamma((s+1)/S)) stay masked after step s (MaskGIT JAX, "
                                  "MaskBit); proportional: step s reveals round(L a_s / sum a), a_s = "
                                  "gamma(1 - s/(S-1)) (MaskGIT-pytorch); halton: max(s+1, floor(L (1 - "
                                  "gamma((s+1)/S)))) revealed after step s (Halton-MaskGIT)")

    @field_validator("schedule")
    @classmethod
    def _known_schedule(cls, v: str) -> str:
        from registry import get_registry
        from registry.registry import UnknownPluginError
        try:
            get_registry().info("schedule", v)
        except UnknownPluginError as exc:   # pydantic reports ValueErrors with the field's path
            raise ValueError(str(exc)) from None
        return v


def progress(step: int, steps: int) -> float:
    """s / (S - 1): 0 at the first step, 1 at the last (1 for a single step)."""
    return step / (steps - 1) if steps > 1 else 1.0


def uniform(shape, generator: Optional[torch.Generator], device) -> Tensor:
    """U[0, 1) drawn on the generator's device (evaluation passes CPU generators), then moved."""
    where = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=where).to(device)


def categorical(probs: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """One draw per row of ``probs [..., V]`` by inverting the CDF."""
    cdf = probs.cumsum(-1)
    u = uniform(probs.shape[:-1] + (1,), generator, probs.device) * cdf[..., -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp(max=probs.shape[-1] - 1)


def masked_after(steps: int, length: int, gamma, counts: StepCounts) -> list[int]:
    """How many positions are still masked after each step; non-increasing, 0 after the last."""
    g = lambda r: float(gamma(torch.tensor(float(r), dtype=torch.float64)))
    if counts == "proportional":
        weights = [g(1 - progress(s, steps)) for s in range(steps)]
        total = sum(weights)
        if steps == 1 or total <= 0:
            return [0] * steps
        reveal = [max(1, round(w / total * length)) for w in weights]
        left, out = length, []
        for n in reveal:
            left = max(left - n, 0)
            out.append(left)
    elif counts == "halton":
        out = [length - min(length, max(s + 1, int(length * (1 - g((s + 1) / steps))))) for s in range(steps)]
    else:
        # (the epsilon keeps float error from flooring an exact count such as 3 * 2/3 one too low)
        out = [min(int(math.floor(length * g((s + 1) / steps) + 1e-6)), max(length - s - 1, 0))
               for s in range(steps)]
    out[-1] = 0
    return out


class ParallelSampler(Sampler):
    Config = SamplerConfig

    def _schedule(self):
        from registry.registry import build
        return build("schedule", self.config.schedule)

    def plan(self, steps: int, length: int) -> list[int]:
        return masked_after(steps, length, self._schedule().gamma, self.config.step_counts)

    def _propose(self, probs: Tensor, pending: Tensor, step: int, steps: int, generator) -> tuple[Tensor, Tensor]:
        """A draw x0 ~ probs and the order scores of the pending positions (-inf elsewhere)."""
        x0 = categorical(probs, generator)
        p_drawn = probs.gather(-1, x0[..., None]).squeeze(-1)
        score = self.order_scores(p_drawn, pending, step, steps, generator)
        return x0, score.masked_fill(~pending, float("-inf"))

    def reveal(self, logits, x, pending, keep, step, steps, generator=None, inverse_temperature=1.0):
        logp = (logits.float() * inverse_temperature).log_softmax(-1)
        x0, score = self._propose(logp.exp(), pending, step, steps, generator)
        count = (pending.sum(1) - keep).clamp(min=0)
        rank = score.argsort(1, descending=True).argsort(1)
        committed = (rank < count[:, None]) & pending
        return torch.where(committed, x0, x), pending & ~committed, logp, committed

    def order_scores(self, probs_of_sample: Tensor, masked: Tensor, step: int, steps: int,
                     generator: Optional[torch.Generator]) -> Tensor:
        """Higher score = revealed earlier. Only masked positions are considered."""
        raise NotImplementedError

    def cfg_at(self, step: int, steps: int) -> float:
        scale = self.config.cfg_scale
        if self.config.cfg_schedule == "linear":
            scale = 1 + (scale - 1) * progress(step, steps)
        return scale

    def inverse_temperature_at(self, step: int, steps: int) -> float:
        c = self.config
        start = 1 / c.temperature
        if c.temperature_end is None:
            return start
        return start + (1 / c.temperature_end - start) * progress(step, steps)

    @torch.no_grad()
    def sample(self, network, teacher: Teacher, cond: Tensor, steps: int,
               generator: Optional[torch.Generator] = None) -> Tensor:
        device = next(network.parameters()).device
        cond = cond.to(device)
        batch, length = cond.shape[0], teacher.seq_len
        x = torch.full((batch, length), teacher.mask_id, dtype=torch.long, device=device)
        null = teacher.null_condition(cond)
        plan = self.plan(steps, length)
        self.begin(batch, length, teacher, device, generator)
        for s in range(steps):
            masked = x == teacher.mask_id
            n_masked = int(masked[0].sum())
            reveal_n = n_masked - min(plan[s], n_masked)
            if reveal_n == 0:
                continue
            logits = guided_logits(network, x, cond, null, self.cfg_at(s, steps)).float()
            probs = (logits * self.inverse_temperature_at(s, steps)).softmax(-1)
            x0, score = self._propose(probs, masked, s, steps, generator)
            top = score.topk(reveal_n, dim=1).indices
            reveal = torch.zeros_like(masked).scatter_(1, top, True) & masked
            x = torch.where(reveal, x0, x)
        return x


class RandomSampler(ParallelSampler):
    def order_scores(self, p, masked, step, steps, generator):
        return uniform(masked.shape, generator, masked.device)


class ConfidenceSampler(ParallelSampler):
    class Config(SamplerConfig):
        gumbel_temperature: float = Field(4.5, ge=0, description="Gumbel noise on log-confidences, scaled by "
                                                                  "1 - s/(S-1) (MaskGIT-pytorch r_temp)")

    def order_scores(self, p, masked, step, steps, generator):
        u = uniform(masked.shape, generator, masked.device).clamp(1e-20, 1 - 1e-7)
        gumbel = -torch.log(-torch.log(u))
        anneal = self.config.gumbel_temperature * (1 - progress(step, steps))
        return torch.log(p.clamp_min(1e-30)) + anneal * gumbel


def halton(index: int, base: int) -> float:
    f, r = 1.0, 0.0
    while index > 0:
        f /= base
        r += f * (index % base)
        index //= base
    return r


def halton_order(length: int) -> list[int]:
    """Positions of a square grid in 2-D Halton order (row from base 2, column from base 3, first
    occurrences kept, as Halton-MaskGIT's ``build_halton_mask``), or of a 1-D sequence (base 2)."""
    side = int(math.isqrt(length))
    order, seen, i = [], set(), 1
    while len(order) < length and i < 100 * length:
        if side * side == length:
            pos = int(halton(i, 2) * side) * side + int(halton(i, 3) * side)
        else:
            pos = int(halton(i, 2) * length)
        if pos not in seen:
            seen.add(pos)
            order.append(pos)
        i += 1
    order += [p for p in range(length) if p not in seen]
    return order


class HaltonSampler(ParallelSampler):
    class Config(SamplerConfig):
        step_counts: StepCounts = Field("halton", description="see the random sampler; default: Halton-MaskGIT's")
        randomize: bool = Field(False, description="roll the Halton order by a random offset per sample "
                                                   "(Halton-MaskGIT randomize=True)")

    def begin(self, batch, length, teacher, device, generator):
        order = torch.tensor(halton_order(length))
        if self.config.randomize:   # torch.roll by k per sample: entry i comes from i - k
            shift = (uniform((batch, 1), generator, "cpu") * length).long()
            order = order[(torch.arange(length)[None] - shift) % length]
        else:
            order = order[None].expand(batch, length)
        rank = torch.empty(batch, length)
        rank.scatter_(1, order, torch.arange(length, 0, -1, dtype=torch.float).expand(batch, length).contiguous())
        self._rank = rank.to(device)

    def order_scores(self, p, masked, step, steps, generator):
        return self._rank.clone()


@hookimpl
def dimo_register(register):
    register("sampler", "random", RandomSampler)
    register("sampler", "confidence", ConfidenceSampler)
    register("sampler", "halton", HaltonSampler)
