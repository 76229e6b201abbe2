"""Meissonic's pipeline sampler (viiika/Meissonic ``src/pipeline.py``): aMUSEd's loop on diffusers'
``AmusedScheduler`` (Meissonic's ``src/scheduler.py`` is the same scheduler), plus the timestep input: each step
feeds the scheduler's timestep (the step index S-1 .. 0, times 1000 inside the transformer). Guidance ``u + w (c - u)``
against the negative prompt, w = 9 (inference.py; 64 steps there, 32 in the paper's Table 3 row).

Everything else (``sample`` and the step-level operations) is aMUSEd's sampler.
"""
from __future__ import annotations

from pydantic import Field

from plugins.teachers.amused.sampler import AmusedSampler, AmusedSamplerConfig


class MeissonicSamplerConfig(AmusedSamplerConfig):
    cfg_scale: float = Field(9.0, description="CFG u + w (c - u) against the negative prompt (Meissonic: 9; 1 = none)")


class MeissonicSampler(AmusedSampler):
    Config = MeissonicSamplerConfig

    def network_inputs(self, timestep) -> dict:
        return {"timestep": float(timestep)}
