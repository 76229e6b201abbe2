"""The official aMUSEd sampler: AmusedPipeline's loop on diffusers' ``AmusedScheduler``.

Per step: guided logits ``u + w (c - u)`` (u: the null/negative prompt), a multinomial draw of every masked token,
then the scheduler re-masks the ``floor(L cos(pi/2 (s+1)/S))`` least confident draws (log p plus Gumbel noise
annealed linearly from 2 to 0, ``temperature=(2, 0)``). Pipeline defaults: 12 steps, guidance 10.
"""
from __future__ import annotations

from typing import Literal, Optional

import torch
from diffusers import AmusedScheduler
from pydantic import Field

from core.interfaces import PluginConfig, Sampler
from core.masking import guided_logits


class AmusedSamplerConfig(PluginConfig):
    cfg_scale: float = Field(10.0, description="CFG u + w (c - u) on logits (AmusedPipeline guidance_scale 10; "
                                               "1 = none)")
    temperature: tuple[float, float] = Field((2.0, 0.0), description="Gumbel temperature of the re-masking "
                                                                     "confidence, linear from first to last step")
    masking_schedule: Literal["cosine", "linear"] = Field("cosine", description="AmusedScheduler masking_schedule")


class AmusedSampler(Sampler):
    Config = AmusedSamplerConfig

    @torch.no_grad()
    def sample(self, network, teacher, cond, steps: int, generator: Optional[torch.Generator] = None):
        device = next(network.parameters()).device
        cond = cond.to(device)
        scheduler = AmusedScheduler(mask_token_id=teacher.mask_id, masking_schedule=self.config.masking_schedule)
        scheduler.set_timesteps(steps, tuple(self.config.temperature), device)
        x = torch.full((cond.shape[0], teacher.seq_len), teacher.mask_id, dtype=torch.long, device=device)
        null = teacher.null_condition(cond)
        for t in scheduler.timesteps:
            logits = guided_logits(network, x, cond, null, self.config.cfg_scale).float()
            x = scheduler.step(logits, t, x, generator=generator).prev_sample
        return x
