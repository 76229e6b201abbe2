"""Meissonic's pipeline sampler (viiika/Meissonic ``src/pipeline.py``): aMUSEd's loop on diffusers'
``AmusedScheduler`` (Meissonic's ``src/scheduler.py`` is the same scheduler), plus the timestep input: each step
feeds the scheduler's timestep (the step index S-1 .. 0, times 1000 inside the transformer). Guidance ``u + w (c - u)``
against the negative prompt, w = 9 (inference.py; 64 steps there, 32 in the paper's Table 3 row)."""
from __future__ import annotations

from typing import Optional

import torch
from diffusers import AmusedScheduler
from pydantic import Field

from core.masking import guided_logits
from plugins.teachers.amused.sampler import AmusedSampler, AmusedSamplerConfig


class MeissonicSamplerConfig(AmusedSamplerConfig):
    cfg_scale: float = Field(9.0, description="CFG u + w (c - u) against the negative prompt (Meissonic: 9; 1 = none)")


class MeissonicSampler(AmusedSampler):
    Config = MeissonicSamplerConfig

    @torch.no_grad()
    def sample(self, network, teacher, cond, steps: int, generator: Optional[torch.Generator] = None):
        device = next(network.parameters()).device
        cond = cond.to(device)
        scheduler = AmusedScheduler(mask_token_id=teacher.mask_id, masking_schedule=self.config.masking_schedule)
        scheduler.set_timesteps(steps, tuple(self.config.temperature), device)
        x = torch.full((cond.shape[0], teacher.seq_len), teacher.mask_id, dtype=torch.long, device=device)
        null = teacher.null_condition(cond)
        for t in scheduler.timesteps:
            logits = guided_logits(network, x, cond, null, self.config.cfg_scale, timestep=float(t)).float()
            x = scheduler.step(logits, t, x, generator=generator).prev_sample
        return x
