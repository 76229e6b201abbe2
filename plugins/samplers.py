"""Multi-step teacher samplers (MaskGit-style parallel decoding), any step count.

All start from an all-[M] grid; at step s they predict every token (CFG on logits, temperature), and
reveal enough positions that gamma((s+1)/S) of the grid stays masked. They differ in *which* masked
positions are revealed:
  * ``random``: uniformly at random (the paper's teacher default, App. D: "choose token to remask randomly");
  * ``confidence``: MaskGit's most-confident-first with Gumbel noise annealed to 0 over the steps;
  * ``halton``: a fixed low-discrepancy spatial order (Halton-MaskGIT, Besnier et al. 2025).
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


class SamplerConfig(PluginConfig):
    temperature: float = Field(1.0, gt=0, description="softmax temperature of the token predictions")
    cfg_scale: float = Field(1.0, description="classifier-free guidance w on logits (1 = none)")
    cfg_schedule: Literal["constant", "linear"] = Field(
        "constant", description="linear: w_s = 1 + (w - 1) (s + 1) / S, the MaskGIT-pytorch ramp")
    schedule: str = Field("arccos", description="mask schedule plugin deciding how many stay masked")

    @field_validator("schedule")
    @classmethod
    def _known_schedule(cls, v: str) -> str:
        from registry import get_registry
        get_registry().info("schedule", v)   # raises with valid names and a did-you-mean
        return v


class ParallelSampler(Sampler):
    Config = SamplerConfig

    def _schedule(self):
        from registry.registry import build
        return build("schedule", self.config.schedule)

    def order_scores(self, probs_of_sample: Tensor, masked: Tensor, step: int, steps: int,
                     generator: Optional[torch.Generator]) -> Tensor:
        """Higher score = revealed earlier. Only masked positions are considered."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, network, teacher: Teacher, cond: Tensor, steps: int,
               generator: Optional[torch.Generator] = None) -> Tensor:
        device = next(network.parameters()).device
        cond = cond.to(device)
        batch, length = cond.shape[0], teacher.seq_len
        x = torch.full((batch, length), teacher.mask_id, dtype=torch.long, device=device)
        null = teacher.null_condition(cond)
        schedule = self._schedule()
        self.begin(batch, length, teacher, device, generator)
        for s in range(steps):
            scale = self.config.cfg_scale
            if self.config.cfg_schedule == "linear":
                scale = 1 + (scale - 1) * (s + 1) / steps
            logits = guided_logits(network, x, cond, null, scale).float() / self.config.temperature
            probs = logits.softmax(-1)
            x0 = torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(batch, length)
            masked = x == teacher.mask_id
            keep_masked = 0 if s == steps - 1 else int(math.floor(
                length * schedule.gamma(torch.tensor((s + 1) / steps)).item()))
            n_masked = int(masked[0].sum())
            keep_masked = min(keep_masked, max(n_masked - 1, 0))   # reveal at least one token per step
            p_sample = probs.gather(-1, x0[..., None]).squeeze(-1)
            score = self.order_scores(p_sample, masked, s, steps, generator)
            score = score.masked_fill(~masked, float("-inf"))
            reveal_n = n_masked - keep_masked
            top = score.topk(reveal_n, dim=1).indices
            reveal = torch.zeros_like(masked).scatter_(1, top, True) & masked
            x = torch.where(reveal, x0, x)
        return x

    def begin(self, batch, length, teacher, device, generator) -> None:
        pass


class RandomSampler(ParallelSampler):
    def order_scores(self, p, masked, step, steps, generator):
        return torch.rand(masked.shape, generator=generator, device=masked.device)


class ConfidenceSampler(ParallelSampler):
    class Config(SamplerConfig):
        gumbel_temperature: float = Field(4.5, ge=0, description="Gumbel noise on confidences, annealed "
                                                                  "linearly to 0 (MaskGIT-pytorch r_temp)")

    def order_scores(self, p, masked, step, steps, generator):
        u = torch.rand(masked.shape, generator=generator, device=masked.device).clamp(1e-20, 1 - 1e-7)
        gumbel = -torch.log(-torch.log(u))
        anneal = self.config.gumbel_temperature * (1 - (step + 1) / steps)
        return torch.log(p.clamp_min(1e-30)) + anneal * gumbel


def halton(index: int, base: int) -> float:
    f, r = 1.0, 0.0
    while index > 0:
        f /= base
        r += f * (index % base)
        index //= base
    return r


def halton_order(length: int) -> list[int]:
    """Positions of a square grid (or a 1-D sequence) in 2-D (bases 2, 3) / 1-D (base 2) Halton order."""
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
    def begin(self, batch, length, teacher, device, generator):
        rank = torch.empty(length)
        rank[torch.tensor(halton_order(length))] = torch.arange(length, 0, -1, dtype=torch.float)
        self._rank = rank.to(device)[None].expand(batch, length)

    def order_scores(self, p, masked, step, steps, generator):
        return self._rank.clone()


@hookimpl
def dimo_register(register):
    register("sampler", "random", RandomSampler)
    register("sampler", "confidence", ConfidenceSampler)
    register("sampler", "halton", HaltonSampler)
