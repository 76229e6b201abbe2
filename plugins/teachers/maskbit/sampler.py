"""MaskBit's sampler (markweberdev/maskbit ``modeling/modules/sampling.py``) as the sampler plugin ``maskbit``.

On dimo's flat grid (every (position, group) entry is a token, ``num_maskable = L*G``), per step i of S with
progress ``p = (i + 1) / S``:
  * guidance ``c + s (c - u)`` with ``s = w * ramp(i)``: ``ramp`` is 1 (``none``), ``i / S`` (``linear``) or the
    power-cosine ``(1 - cos((i / S)^pow * pi)) / 2`` (``cosine``); in dimo's ``u + w' (c - u)`` that is ``w' = 1 + s``;
  * softmax temperature T (or ``0.5 + 0.8 (1 - p)`` with ``annealing``), a draw per masked entry;
  * confidence ``log p(draw) + Gumbel * randomize_temperature * (1 - p)``; known entries are never re-masked;
  * ``floor(L*G * gamma(p))`` entries stay masked, clamped to [1, masked - 1]; the last step commits everything.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator

from plugins.samplers import ParallelSampler, SamplerConfig, uniform


class MaskBitSamplerConfig(SamplerConfig):
    guidance: float = Field(7.1, description="MaskBit's guidance_scale w in c + s (c - u), s = w * ramp "
                                             "(14-bit eval config: 7.1; overrides cfg_scale)")
    guidance_annealing: Literal["none", "linear", "cosine"] = Field(
        "cosine", description="ramp of s: none (1), linear (i/S), cosine ((1 - cos((i/S)^scale_pow pi)) / 2)")
    scale_pow: float = Field(3.0, gt=0, description="power of the cosine ramp (14-bit eval config: 3.0)")
    randomize_temperature: float = Field(7.8, ge=0, description="Gumbel noise on log-confidences, times 1 - (i+1)/S")
    annealing: bool = Field(False, description="softmax temperature 0.5 + 0.8 (1 - (i+1)/S) (use_sampling_annealing)")
    temperature: float = Field(1.0, gt=0, description="softmax temperature (softmax_temperature)")

    @model_validator(mode="after")
    def _own_rules(self):
        """The generic fields MaskBit's rules replace must keep their defaults (a silent no-op would mislead)."""
        replaced = {"cfg_scale": (1.0, "guidance"), "cfg_schedule": ("constant", "guidance_annealing"),
                    "temperature_end": (None, "annealing"), "step_counts": ("cumulative", "the official counts")}
        for name, (default, instead) in replaced.items():
            if getattr(self, name) != default:
                raise ValueError(f"{name}={getattr(self, name)!r} does not apply to sampler=maskbit; use {instead}")
        return self


class MaskBitSampler(ParallelSampler):
    Config = MaskBitSamplerConfig

    def plan(self, steps: int, length: int) -> list[int]:
        """The official counts: after step i, clamp(floor(N gamma((i+1)/S)), 1, masked - 1) stay masked, with
        gamma clamped to [1e-6, 1]; the last step's output commits every entry."""
        gamma, masked, out = self._schedule().gamma, length, []
        for i in range(steps):
            g = min(max(float(gamma(torch.tensor((i + 1) / steps, dtype=torch.float64))), 1e-6), 1.0)
            masked = max(min(int(math.floor(g * length)), masked - 1), min(1, masked - 1)) if masked > 1 else 0
            out.append(masked)
        out[-1] = 0
        return out

    def cfg_at(self, step: int, steps: int) -> float:
        c = self.config
        ramp = {"none": lambda: 1.0, "linear": lambda: step / steps,
                "cosine": lambda: (1 - math.cos(((step / steps) ** c.scale_pow) * math.pi)) / 2}[c.guidance_annealing]()
        return 1.0 + c.guidance * ramp

    def inverse_temperature_at(self, step: int, steps: int) -> float:
        c = self.config
        return 1 / (0.5 + 0.8 * (1 - (step + 1) / steps)) if c.annealing else 1 / c.temperature

    def order_scores(self, p, masked, step, steps, generator):
        u = uniform(masked.shape, generator, masked.device).clamp(1e-20, 1 - 1e-7)
        gumbel = -torch.log(-torch.log(u))
        return torch.log(p.clamp_min(1e-30)) + self.config.randomize_temperature * (1 - (step + 1) / steps) * gumbel
