"""Masked diffusion pre-training (MaskGit): masked cross-entropy on real data at t ~ schedule.

Works for any teacher that provides data; it is also how a user trains a small teacher of their own.
The exported network becomes the teacher: for embedded teachers it is cached where later runs look.
"""
from __future__ import annotations

from typing import Optional

import torch
from pydantic import Field

from core.interfaces import Method, PluginConfig, Role
from core.masking import forward_mask, masked_cross_entropy
from registry import hookimpl


class MDM(Method):
    class Config(PluginConfig):
        # The optimiser fields repeat sdtt's, di4c's and redi's by name on purpose (duplicates flags them): each
        # method's defaults and their sources differ, and one Role consumes them all.
        lr: float = Field(1e-3, gt=0, description="AdamW lr (betas 0.9, 0.96 as MaskGIT-pytorch)")
        warmup_steps: int = Field(100, ge=0, description="linear warm-up steps, then constant")
        weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
        grad_clip: Optional[float] = Field(1.0, gt=0, description="gradient-norm clip; null: none")
        ema_decay: Optional[float] = Field(0.999, gt=0, lt=1, description="EMA of the network, exported at "
                                                                       "the end; null: none")
        label_smoothing: float = Field(0.1, ge=0, lt=1, description="MaskGIT-pytorch trains with 0.1")
        class_dropout: float = Field(0.1, ge=0, le=1, description="condition dropped to null for CFG")
        mask_count: str = Field("exact", pattern="^(exact|bernoulli)$", description="masks of x_t: exact count "
                                "(official get_mask_code) or per-token bernoulli")
        init_from_teacher: bool = Field(False, description="fine-tune the teacher's weights instead of "
                                                           "training from scratch")
        cache_teacher: bool = Field(True, description="save the result as the teacher's default checkpoint")
        eval_sampler_steps: int = Field(16, gt=0, description="sampler steps of generate() when none are given")

    uses = ("schedule", "sampler")
    recipe = "mdm"
    defaults = {"schedule": "arccos", "sampler": "random"}
    needs_data = True
    needs_teacher_weights = False
    student_role = "network"

    def setup(self, ctx):
        net = self.teacher.build_network(load_weights=self.config.init_from_teacher)
        c = self.config
        return {"network": Role(net, lr=c.lr, warmup_steps=c.warmup_steps, weight_decay=c.weight_decay,
                                grad_clip=c.grad_clip, ema_decay=c.ema_decay, betas=(0.9, 0.96))}

    def train_step(self, ctx):
        tokens, cond = ctx.batch
        drop = torch.rand(cond.shape, device=cond.device) < self.config.class_dropout
        cond = torch.where(drop, self.teacher.null_condition(cond), cond)
        ratio = self.plugins["schedule"].sample_ratio(tokens.shape[0], device=tokens.device)
        x_t, mask = forward_mask(tokens, ratio, self.teacher.mask_id, self.config.mask_count)
        with ctx.autocast():
            logits = ctx.models["network"](x_t, cond)
        loss = masked_cross_entropy(logits, tokens, mask, self.config.label_smoothing)
        ctx.update("network", loss)
        return {"loss": loss.detach()}   # read by the engine at log steps

    def finalize(self, student, run_dir):
        if self.config.cache_teacher and getattr(self.teacher.config, "checkpoint", None) is None:
            path = self.teacher.save_pretrained(student)
            print(f"dimo: cached the trained {type(self.teacher).__name__} at {path}")

    def generate(self, network, cond, generator=None, steps: Optional[int] = None, **kwargs):
        return self.plugins["sampler"].sample(network, self.teacher, cond, steps or self.config.eval_sampler_steps,
                                              generator)


@hookimpl
def dimo_register(register):
    register("method", "mdm", MDM)
