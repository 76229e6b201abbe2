"""Example dimo plugin: one divergence and one method, registered through the `dimo` entry point."""
from typing import Optional

import copy

import torch
import torch.nn.functional as F
from pydantic import Field

from core.interfaces import Divergence, Method, PluginConfig, Role
from core.masking import guided_logits
from plugins.divergences import fkl_grad, fkl_value, rkl_grad, rkl_value
from registry import hookimpl


class SymmetricKL(Divergence):
    """KL(p || q) + KL(q || p); gradient wrt the aux logits is the sum of Eq. 4's two terms."""

    def value(self, logp_teacher, logp_aux):
        return fkl_value(logp_teacher, logp_aux) + rkl_value(logp_teacher, logp_aux)

    def grad(self, logp_teacher, logp_aux):
        return fkl_grad(logp_teacher, logp_aux) + rkl_grad(logp_teacher, logp_aux)


class OneStepKD(Method):
    """Match the generator's one-step logits on x_init to the teacher's (CFG) logits on the same x_init."""

    class Config(PluginConfig):
        lr: float = Field(1e-4, gt=0)
        cfg_scale: float = 1.0
        temperature: float = Field(1.0, gt=0)

    uses = ("init",)
    defaults = {"init": "mixed"}

    def setup(self, ctx):
        generator = copy.deepcopy(ctx.teacher_network).requires_grad_(True)
        for p in generator.frozen_parameters():
            p.requires_grad_(False)
        self.micro = ctx.micro_batch
        return {"generator": Role(generator, lr=self.config.lr),
                "teacher": Role(ctx.teacher_network, trainable=False)}

    def train_step(self, ctx):
        cond = self.teacher.sample_conditions(self.micro).to(ctx.device)
        init = self.plugins["init"](self.micro, self.teacher, device=ctx.device)
        with torch.no_grad():
            target = guided_logits(ctx.models["teacher"], init.tokens, cond, self.teacher.null_condition(cond),
                                   self.config.cfg_scale).log_softmax(-1)
        logits = init.logits(ctx.models["generator"], cond).log_softmax(-1)
        loss = F.kl_div(logits, target, log_target=True, reduction="batchmean") / logits.shape[1]
        ctx.update("generator", loss)
        return {"kd_loss": loss.item()}

    @torch.no_grad()
    def generate(self, network, cond, generator=None, steps: Optional[int] = None, **kwargs):
        device = next(network.parameters()).device
        init = self.plugins["init"](cond.shape[0], self.teacher, generator, device)
        logits = init.logits(network, cond.to(device))
        probs = (logits / self.config.temperature).softmax(-1)
        return torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(probs.shape[:-1])


@hookimpl
def dimo_register(register):
    register("divergence", "sym_kl", SymmetricKL)
    register("method", "kd1step", OneStepKD)
