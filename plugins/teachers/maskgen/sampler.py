"""The official MaskGen-VQ sampler (``MaskGen_VQ.generate``, MUSE style), with dimo's RNG plumbing.

Per step s of S, ratio = (s+1)/S:
  * guidance ``c + g_s (c - u)`` with g_s = (w - 1)(1 - cos(pi ratio^pow))/2 + 1 (cosine ramp; linear:
    ratio (w - 1) + 1; none: w), i.e. dimo's ``u + (1 + g_s)(c - u)``; u is the CLIP encoding of "";
  * logits / (0.5 + 0.8 (1 - ratio)) (softmax temperature annealing), then argmax(logits + t_s Gumbel) with
    t_s = randomize_temperature (1 - ratio);
  * re-mask the floor(L arccos-gamma(ratio)) (clamped to [1, #masked - 1]) lowest of sampled logit + t_s Gumbel;
    known tokens have confidence +inf; the last step commits everything.
Gumbel noise comes from the sampler's generator (the official code draws from the global RNG).
"""
from __future__ import annotations

import math
from typing import Literal, Optional

import torch
from pydantic import Field

from core.interfaces import PluginConfig, Sampler
from core.masking import guided_logits


def gumbel(shape, generator, device) -> torch.Tensor:
    where = generator.device if generator is not None else device
    u = torch.rand(shape, generator=generator, device=where).to(device)
    return -torch.log(-torch.log(u.clamp(min=1e-20)).clamp(min=1e-20))


def arccos_gamma(ratio: float) -> float:
    return math.acos(ratio) / (math.pi * 0.5)


class MaskGenSamplerConfig(PluginConfig):
    cfg_scale: float = Field(12.0, description="guidance_scale w of the official c + g (c - u) (README: 12)")
    guidance_decay: Literal["cosine", "linear", "none"] = Field("cosine", description="ramp of g over the steps")
    guidance_decay_scale_pow: float = Field(1.0, gt=0, description="pow of the cosine ramp")
    randomize_temperature: float = Field(2.0, ge=0, description="Gumbel temperature, annealed to 0 (README: 2.0)")
    softmax_temperature_annealing: bool = Field(True, description="logits / (0.5 + 0.8 (1 - ratio))")
    prob_sorting: bool = Field(True, description="Gumbel noise on the re-masking confidence")


class MaskGenSampler(Sampler):
    Config = MaskGenSamplerConfig

    def guidance_at(self, step: int, steps: int) -> float:
        """The official g_s; dimo's CFG scale is 1 + g_s."""
        c, ratio = self.config, (step + 1) / steps
        if c.guidance_decay == "cosine":
            return (c.cfg_scale - 1) * (1 - math.cos(ratio ** c.guidance_decay_scale_pow * math.pi)) / 2 + 1
        if c.guidance_decay == "linear":
            return ratio * (c.cfg_scale - 1) + 1
        return c.cfg_scale

    def cfg_at(self, step: int, steps: int) -> float:
        return 1 + self.guidance_at(step, steps)

    @torch.no_grad()
    def sample(self, network, teacher, cond, steps: int, generator: Optional[torch.Generator] = None):
        c = self.config
        device = next(network.parameters()).device
        cond = cond.to(device)
        ids = torch.full((cond.shape[0], teacher.seq_len), teacher.mask_id, dtype=torch.long, device=device)
        null = teacher.null_condition(cond)
        for s in range(steps):
            ratio = (s + 1) / steps
            hot = c.randomize_temperature * (1 - ratio)
            is_mask = ids == teacher.mask_id
            logits = guided_logits(network, ids, cond, null, self.cfg_at(s, steps)).float()
            logits = logits / (0.5 + 0.8 * (1 - ratio) if c.softmax_temperature_annealing else max(hot, 1e-6))
            sampled = (logits + hot * gumbel(logits.shape, generator, device)).argmax(-1)
            picked = logits.gather(-1, sampled[..., None]).squeeze(-1)
            sampled = torch.where(is_mask, sampled, ids)
            if s == steps - 1:
                return sampled
            picked = torch.where(is_mask, picked, torch.full_like(picked, float("inf")))
            n = int(min(int(is_mask[0].sum()) - 1, math.floor(teacher.seq_len * arccos_gamma(ratio))))
            n = max(1, n)
            conf = picked + hot * gumbel(picked.shape, generator, device) if c.prob_sorting else picked
            cut = conf.sort(-1).values[:, n - 1: n]
            ids = torch.where(conf <= cut, torch.full_like(sampled, teacher.mask_id), sampled)
        return ids
