"""Soft-Di[M]O: Di[M]O plus a GAN loss and reward losses through soft embeddings (Algorithm "Soft-Di[M]O
Distillation"; no official code exists, see docs/methods/soft_dimo.md for the choices the paper leaves open).

Per step:
  x_init ~ p_init -> z_theta = G(x_init, c) -> x_theta ~ softmax(z_theta)
  generator:      L_gen = L_DiMO(x_theta)                                  (unchanged Di[M]O surrogate)
                        + w_GAN    * E[-log sigmoid D(Emb(z_theta)_r, r, c)]           r ~ U[0, r_max]
                        - w_reward * sum_i lambda_i R_i(Dec(Emb_Dec(z_theta)), c)
                  one backward, one optimizer step (D and the reward models get no gradient)
  aux:            Di[M]O's masked cross-entropy on x_theta
  discriminator:  -log sigmoid D(Emb(x_gt)_r, r, c_gt) - log(1 - sigmoid D(Emb(sg z_theta)_r', r', c))

Emb(z) = E^T softmax(z / tau) uses the teacher's input-embedding rows of the codes (``code_embeddings()``),
``Emb(z)_r`` replaces a fraction r of positions by the [M] embedding; Emb_Dec + Dec is ``teacher.decode_soft``.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from core.checkpoint import load_state_checked
from core.errors import UserError
from core.interfaces import Role
from core.masking import draw_mask
from plugins.methods.dimo import DiMO, DiMOConfig
from plugins.rewards import build_rewards, total_reward, validate_rewards
from registry import hookimpl


def soft_embed(logits: Tensor, table: Tensor, temperature: float = 1.0) -> Tensor:
    """Emb(z) = E^T softmax(z / tau): ``[B, L, V]`` logits, ``[V, D]`` rows -> ``[B, L, D]``, differentiable in z."""
    return (logits.float() / temperature).softmax(-1) @ table.float()


def mask_embeddings(emb: Tensor, ratio: Tensor, mask_emb: Tensor, count: str = "exact") -> Tensor:
    """Emb_r: a fraction ``ratio`` [B] of the positions get the [M] embedding (r = 0 keeps all of them)."""
    mask = draw_mask(ratio.cpu(), emb.shape[1], count, min_masked=0).to(emb.device)
    return torch.where(mask[..., None], mask_emb.to(emb.dtype), emb)


@contextlib.contextmanager
def no_param_grad(module: nn.Module):
    """Forward through ``module`` without recording its parameters: gradients reach its inputs only."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def load_generator_weights(network: nn.Module, spec: str) -> Path:
    """``init_from``: a run folder or its student.safetensors (a Di[M]O-distilled one-step generator)."""
    path = Path(spec).expanduser()
    path = path / "student.safetensors" if path.is_dir() else path
    if not path.is_file():
        raise UserError(f"method.init_from='{spec}' is not a run folder with student.safetensors nor a "
                        f".safetensors file")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise UserError(f"method.init_from='{spec}': '{path}' is not a safetensors file ({exc})") from None
    load_state_checked(network, state, path, "method.init_from",
                       "the teacher's network (init_from must be a student distilled from the same teacher)")
    return path


class SoftDiMOConfig(DiMOConfig):
    init_from: Optional[str] = Field(None, description="initialise the generator from a Di[M]O-distilled run "
                                                       "folder or student.safetensors (default: the teacher)")
    w_gan: float = Field(1.0, ge=0, description="weight of the non-saturating GAN loss (0: no discriminator)")
    w_reward: float = Field(1.0, ge=0, description="weight of the reward loss -sum_i lambda_i R_i")
    rewards: list[Any] = Field(default_factory=list, description="rewards R_i with weights lambda_i: a list of "
                                                                 "{name, weight, ...options} (see reward plugins)")
    gan_ratio_max: float = Field(0.95, ge=0, lt=1, description="GAN mask ratio r ~ U[0, r_max] (paper: 0.95)")
    soft_temperature: float = Field(1.0, gt=0, description="tau of the soft embeddings E^T softmax(z / tau)")
    lr_disc: float = Field(1e-4, gt=0, description="discriminator Adam lr")
    disc_betas: tuple[float, float] = Field((0.0, 0.99), description="discriminator Adam betas")
    disc_grad_clip: Optional[float] = Field(None, gt=0, description="discriminator gradient-norm clip")
    disc_updates: int = Field(1, ge=1, description="discriminator steps per generator step")
    disc_sample: Literal["same", "fresh"] = Field(
        "same", description="fake embeddings of the discriminator step: the step's z_theta (Algorithm 1) or a "
                            "fresh batch from the just-updated generator")
    aux_warmup_steps: int = Field(0, ge=0, description="first steps update aux and discriminator only (lets "
                                                       "them catch up with an init_from generator)")

    @field_validator("rewards")
    @classmethod
    def _rewards(cls, v):
        return validate_rewards(v)


class SoftDiMO(DiMO):
    Config = SoftDiMOConfig
    uses = DiMO.uses + ("discriminator",)
    recipe = "soft_dimo"
    suites = ("digits",)
    defaults = {**DiMO.defaults, "discriminator": "trunk"}

    def __init__(self, config):
        super().__init__(config)
        self.needs_data = config.w_gan > 0      # real tokens for the discriminator
        self.rewards: list = []

    def attach(self, teacher, plugins):
        super().attach(teacher, plugins)
        self.rewards = build_rewards(self.config.rewards)

    def setup(self, ctx):
        c = self.config
        roles = super().setup(ctx)
        if c.init_from:
            load_generator_weights(roles["generator"].module, c.init_from)
        net = ctx.teacher_network
        # Frozen copies (before any ZeRO-3 partitioning): the code rows E and the [M] embedding.
        self.table = net.code_embeddings().detach().float().clone().to(ctx.device)
        self.mask_emb = net.embed_tokens(torch.tensor([[self.teacher.mask_id]], device=ctx.device)) \
            .detach().float().reshape(-1).clone()
        if c.w_gan > 0:
            disc = self.plugins["discriminator"].build(self.teacher, net)
            roles["discriminator"] = Role(disc, lr=c.lr_disc, betas=c.disc_betas, eps=c.adam_eps,
                                          grad_clip=c.disc_grad_clip, nan_to_num=c.nan_to_num)
        return roles

    # -- the GAN and reward losses (Di[M]O's is DiMO.dimo_loss) -------------------------------------
    def gan_ratio(self, n: int, device) -> Tensor:
        return torch.rand(n, device=device) * self.config.gan_ratio_max

    def discriminate(self, disc, emb: Tensor, cond) -> Tensor:
        r = self.gan_ratio(emb.shape[0], emb.device)
        return disc(mask_embeddings(emb, r, self.mask_emb, self.config.mask_count), r, cond).float()

    def gan_loss(self, ctx, z_theta, cond) -> Tensor:
        """Non-saturating generator loss -log sigmoid D(Emb(z)_r); D's parameters record no gradient. The bare
        module is called: a DeepSpeed engine's forward arms backward hooks that only its own backward may fire."""
        disc = ctx.module("discriminator")
        with no_param_grad(disc), ctx.autocast():
            d_fake = self.discriminate(disc, soft_embed(z_theta, self.table, self.config.soft_temperature), cond)
        return F.softplus(-d_fake).mean()

    def reward(self, z_theta, cond) -> Tensor:
        probs = (z_theta.float() / self.config.soft_temperature).softmax(-1)
        return total_reward(self.rewards, self.teacher.decode_soft_with(probs, cond), cond, self.teacher)

    def train_step(self, ctx):
        c = self.config
        gen = ctx.models["generator"]
        with ctx.autocast():
            z_theta, cond = self.one_step_logits(gen, self.micro, ctx.device)
        x_theta = self.sample_tokens(z_theta, c.generator_temperature)
        logs: dict[str, float] = {}
        if ctx.step >= c.aux_warmup_steps:
            loss, logs = self.dimo_loss(ctx, z_theta, x_theta, cond)
            if c.w_gan > 0:
                gan = self.gan_loss(ctx, z_theta, cond)
                loss = loss + c.w_gan * gan
                logs["gan_g"] = gan.item()
            if self.rewards and c.w_reward > 0:
                with ctx.autocast():
                    r = self.reward(z_theta, cond).mean()
                loss = loss - c.w_reward * r
                logs["reward"] = r.item()
            ctx.update("generator", loss)
        for _ in range(c.aux_updates):
            logs["aux_loss"] = self.aux_step(ctx, x_theta, cond, z_theta.detach())
        if c.w_gan > 0:
            for _ in range(c.disc_updates):
                logs.update(self.disc_step(ctx, z_theta.detach(), cond))
        return logs

    def disc_step(self, ctx, z_theta, cond) -> dict[str, float]:
        """Real data tokens vs the generator's (detached) soft embeddings, each masked at its own r ~ U[0, r_max]."""
        c = self.config
        if c.disc_sample == "fresh":
            with torch.no_grad(), ctx.autocast():
                z_theta, cond = self.one_step_logits(ctx.models["generator"], self.micro, ctx.device)
        real_tokens, real_cond = ctx.batch
        disc = ctx.models["discriminator"]
        with ctx.autocast():
            d_real = self.discriminate(disc, self.table[real_tokens.to(ctx.device)], real_cond)
            d_fake = self.discriminate(disc, soft_embed(z_theta.detach(), self.table, c.soft_temperature), cond)
        loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        ctx.update("discriminator", loss)
        return {"disc_loss": loss.item(), "d_real": d_real.mean().item(), "d_fake": d_fake.mean().item()}


@hookimpl
def dimo_register(register):
    register("method", "soft_dimo", SoftDiMO)
