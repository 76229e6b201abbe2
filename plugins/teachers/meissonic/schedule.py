"""The x_t mask ratio of the official Di[M]O Meissonic code: cos(r pi / 2) with r ~ U[0, 1], clamped to
[0.02, 0.98] (its ``get_mask_code``; the MaskGit version does not clamp). Registered as ``schedule=cosine_clamped``;
the samplers' gamma is the plain cosine."""
from __future__ import annotations

from typing import Optional

import torch
from pydantic import Field, model_validator
from torch import Tensor

from core.interfaces import PluginConfig
from plugins.schedules import Cosine


class CosineClampedConfig(PluginConfig):
    low: float = Field(0.02, ge=0, le=1, description="smallest mask ratio of the forward process (official 0.02)")
    high: float = Field(0.98, ge=0, le=1, description="largest mask ratio of the forward process (official 0.98)")

    @model_validator(mode="after")
    def _ordered(self):
        if self.low > self.high:
            raise ValueError(f"low={self.low} is above high={self.high}")
        return self


class CosineClamped(Cosine):
    Config = CosineClampedConfig

    def sample_ratio(self, n: int, generator: Optional[torch.Generator] = None, device=None) -> Tensor:
        return super().sample_ratio(n, generator, device).clamp(self.config.low, self.config.high)
