"""Mask schedules gamma(r): fraction of masked tokens at progress r (gamma(0) = 1, gamma(1) = 0).

The same functions drive the forward process (r ~ U[0, 1], the official ``get_mask_code``) and the
teacher samplers (r = step / steps).
"""
import math

import torch
from torch import Tensor

from core.interfaces import MaskSchedule
from registry import hookimpl


class Arccos(MaskSchedule):
    """MaskGit's default and Di[M]O's on ImageNet: arccos(r) / (pi / 2)."""
    def gamma(self, r: Tensor) -> Tensor:
        return torch.arccos(r.clamp(0, 1)) / (math.pi / 2)


class Cosine(MaskSchedule):
    """cos(r pi / 2): Di[M]O's schedule for Meissonic."""
    def gamma(self, r: Tensor) -> Tensor:
        return torch.cos(r.clamp(0, 1) * math.pi / 2)


class Linear(MaskSchedule):
    def gamma(self, r: Tensor) -> Tensor:
        return 1 - r.clamp(0, 1)


class Square(MaskSchedule):
    def gamma(self, r: Tensor) -> Tensor:
        return 1 - r.clamp(0, 1) ** 2


@hookimpl
def dimo_register(register):
    register("schedule", "arccos", Arccos)
    register("schedule", "cosine", Cosine)
    register("schedule", "linear", Linear)
    register("schedule", "square", Square)
