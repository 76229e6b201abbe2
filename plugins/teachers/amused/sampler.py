"""The official aMUSEd sampler: AmusedPipeline's loop on diffusers' ``AmusedScheduler``.

Per step: guided logits ``u + w (c - u)`` (u: the null/negative prompt), a multinomial draw of every masked token,
then the scheduler re-masks the ``floor(L cos(pi/2 (s+1)/S))`` least confident draws (log p plus Gumbel noise
annealed linearly from 2 to 0, ``temperature=(2, 0)``). Pipeline defaults: 12 steps, guidance 10.

``sample`` runs the scheduler itself. The step-level operations (``plan``, ``reveal``: what SDTT, di4c and ReDi run
from partial states with their own network calls) follow the same rules: after step s of S,
``max(1, min(masked - 1, floor(L cos(pi/2 (s+1)/S))))`` stay masked (all revealed at the last step), a multinomial
draw per masked token, the least confident re-masked by ``log p + t_s * Gumbel`` with t_s linear from 2 to 0.
"""
from __future__ import annotations

import math
from typing import Literal, Optional

import torch
from diffusers import AmusedScheduler
from pydantic import Field

from core.interfaces import PluginConfig, Sampler
from core.masking import guided_logits
from plugins.samplers import categorical, uniform


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
            logits = guided_logits(network, x, cond, null, self.config.cfg_scale, **self.network_inputs(t)).float()
            x = scheduler.step(logits, t, x, generator=generator).prev_sample
        return x

    def network_inputs(self, timestep) -> dict:
        """Extra network arguments at a scheduler timestep (aMUSEd's UVit2D takes none)."""
        return {}

    # -- the step-level operations (core.interfaces.Sampler), the scheduler's rules --------------------
    def plan(self, steps: int, length: int) -> list[int]:
        masked, out = length, []
        for s in range(steps - 1):
            r = (s + 1) / steps
            ratio = math.cos(r * math.pi / 2) if self.config.masking_schedule == "cosine" else 1 - r
            masked = max(1, min(masked - 1, math.floor(length * ratio)))
            out.append(masked)
        return out + [0]

    def cfg_at(self, step: int, steps: int) -> float:
        return self.config.cfg_scale

    def gumbel_temperature(self, step: int, steps: int) -> float:
        t0, t1 = self.config.temperature
        return t0 + (t1 - t0) * step / (steps - 1) if steps > 1 else t0

    def reveal(self, logits, x, pending, keep, step, steps, generator=None, inverse_temperature=1.0):
        logp = (logits.float() * inverse_temperature).log_softmax(-1)
        x0 = categorical(logp.exp(), generator)
        u = uniform(pending.shape, generator, pending.device).clamp(1e-20, 1 - 1e-7)
        score = logp.gather(-1, x0[..., None]).squeeze(-1) - self.gumbel_temperature(step, steps) * torch.log(-torch.log(u))
        score = score.masked_fill(~pending, float("-inf"))
        count = (pending.sum(1) - keep).clamp(min=0)
        committed = (score.argsort(1, descending=True).argsort(1) < count[:, None]) & pending
        return torch.where(committed, x0, x), pending & ~committed, logp, committed
