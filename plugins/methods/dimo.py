"""Di[M]O (Zhu et al. 2025): on-policy distillation of a masked diffusion model into a one-step generator.

Algorithm 1 of the paper, per step:
  x_init ~ p_init -> z_theta = G(x_init, c) -> x_theta ~ softmax(z_theta) -> x_t ~ q_{t|0}(. | x_theta)
  -> p_phi (teacher, CFG) and p_psi (aux) on x_t -> g = dD(p_phi || p_psi)/dz_psi on masked tokens
  -> generator step on a surrogate whose gradient wrt z_theta(x_init) is exactly g (Eq. 3, z(x_t) ~ z(x_init))
  -> aux step: masked cross-entropy of psi on q_{t'|0}(. | x_theta) with targets x_theta (Eq. 1).

Where the paper and the official code differ, both are options (defaults follow the official code, which
produced the reported checkpoint; see docs/methods/dimo.md).
"""
from __future__ import annotations

import copy
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field

from core.interfaces import Method, PluginConfig, Role
from core.masking import forward_mask, guided_logits, masked_cross_entropy
from registry import hookimpl


class DiMOConfig(PluginConfig):
    lr_generator: float = Field(1e-5, gt=0, description="generator Adam lr (official MaskGit run: 1e-5)")
    lr_aux: float = Field(1e-5, gt=0, description="auxiliary model Adam lr (official MaskGit run: 1e-5)")
    warmup_steps: int = Field(100, ge=0, description="constant LR after a linear warm-up (paper App. D)")
    adam_eps: float = Field(1e-6, gt=0, description="official code: 1e-6 under mixed precision")
    grad_clip: Optional[float] = Field(1.0, gt=0, description="generator gradient-norm clip (aux is never clipped)")
    ema_decay: Optional[float] = Field(0.9999, gt=0, lt=1, description="EMA of the generator, warm-up "
                                                                       "min(decay, (1+k)/(10+k))")
    cfg_scale: float = Field(2.0, description="teacher CFG during distillation (official MaskGit: 2.0)")
    teacher_temperature: float = Field(1.0, gt=0, description="softmax temperature of p_phi in the loss (paper: 1)")
    aux_temperature: float = Field(1.0, gt=0, description="softmax temperature of p_psi in the loss (paper: 1)")
    generator_temperature: float = Field(1.0, gt=0, description="temperature of x_theta during training")
    sample_temperature: float = Field(1.0, gt=0, description="generator temperature when sampling "
                                                             "(the paper's best ImageNet FID is near 7)")
    token_norm: Literal["masked_mean", "sum"] = Field(
        "masked_mean", description="masked_mean: 1/L_M per sequence (paper Eq. 10); sum: each masked token "
                                   "weight 1, divided by the batch only (official loss_reduction=sum)")
    weight: Literal["none", "dmd"] = Field(
        "none", description="w(t): none (official code) or dmd: 1 / mean |p_psi - p_phi| per sample (App. D)")
    aux_sample: Literal["fresh", "same"] = Field(
        "fresh", description="aux targets: a fresh x_theta from the just-updated generator (official code) or "
                             "the same x_theta as the generator step (Algorithm 1)")
    aux_updates: int = Field(1, ge=1, description="aux steps per generator step (official fake_rounds)")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="aux CE label smoothing (official 0.1)")
    aux_alpha: float = Field(0.0, ge=0, le=1, description="soft-target KL weight for the aux loss (App. E.12)")
    mask_count: Literal["exact", "bernoulli"] = Field(
        "exact", description="x_t masks: exact count (official get_mask_code) or per-token Bernoulli (paper)")
    teacher_mode: Literal["eval", "train"] = Field(
        "eval", description="train reproduces the official MaskGit script, whose teacher ran with dropout")
    aux_score_mode: Literal["teacher", "train"] = Field(
        "teacher", description="mode of the aux when it scores x_t for the generator's gradient: teacher (the "
                               "teacher's mode, so aux = teacher gives g = 0 at initialisation) or train (dropout "
                               "on: with an eval-mode teacher, g = E[p_psi with dropout] - p_phi != 0 pushes the "
                               "generator to sharpen, see docs/methods/dimo_diagnosis.md)")
    nan_to_num: bool = Field(True, description="official: nan -> 0, inf -> +-1e5 in both networks' grads")


class DiMO(Method):
    Config = DiMOConfig
    uses = ("divergence", "init", "schedule", "sampler")
    recipe = "dimo"
    suites = ("digits",)
    defaults = {"divergence": "fkl", "init": "mixed", "schedule": "arccos", "sampler": "random"}
    student_role = "generator"

    def setup(self, ctx):
        c = self.config
        teacher_net = ctx.teacher_network
        generator, aux = copy.deepcopy(teacher_net), copy.deepcopy(teacher_net)
        for net in (generator, aux):
            net.requires_grad_(True)
            for p in net.frozen_parameters():   # embedding (and tied head) fixed, as in the paper
                p.requires_grad_(False)
        self.micro = ctx.micro_batch
        return {
            "generator": Role(generator, lr=c.lr_generator, eps=c.adam_eps, warmup_steps=c.warmup_steps,
                              grad_clip=c.grad_clip, ema_decay=c.ema_decay, nan_to_num=c.nan_to_num),
            "aux": Role(aux, lr=c.lr_aux, eps=c.adam_eps, warmup_steps=c.warmup_steps, nan_to_num=c.nan_to_num),
            "teacher": Role(teacher_net, trainable=False, train_mode=c.teacher_mode == "train"),
        }

    # -- one Di[M]O iteration ----------------------------------------------------------------------
    def one_step_logits(self, generator, batch: int, device, rng=None):
        cond = self.teacher.sample_conditions(batch, rng).to(device)
        init = self.plugins["init"](batch, self.teacher, rng, device)
        return init.logits(generator, cond), cond

    def sample_tokens(self, logits, temperature: float, rng=None):
        probs = (logits.detach().float() / temperature).softmax(-1)
        device = rng.device if rng is not None else probs.device   # a CPU generator may drive a GPU network
        draw = torch.multinomial(probs.flatten(0, 1).to(device), 1, generator=rng)
        return draw.view(probs.shape[:-1]).to(probs.device)

    def generator_gradient(self, logp_teacher, logp_aux, mask):
        """g = dD/dz on masked tokens, normalised and weighted as configured."""
        c = self.config
        g = self.plugins["divergence"].grad(logp_teacher, logp_aux) * mask[..., None]
        if c.token_norm == "masked_mean":
            g = g / mask.sum(1).clamp(min=1)[:, None, None]
        if c.weight == "dmd":
            diff = (logp_aux.exp() - logp_teacher.exp()).abs().sum(-1)
            per_sample = (diff * mask).sum(1) / mask.sum(1).clamp(min=1)
            g = g / per_sample.clamp(min=1e-6)[:, None, None]
        g = g / mask.shape[0]   # batch mean
        return torch.nan_to_num(g, nan=0.0, posinf=1e5, neginf=-1e5) if c.nan_to_num else g

    @staticmethod
    def surrogate(g, z_theta):
        """A loss whose gradient wrt the one-step logits z_theta(x_init) is exactly g (Eq. 3); the official
        code's 0.5 ||z - sg(z - g)||^2 has the same gradient."""
        return (g.detach() * z_theta.float()).sum()

    def dimo_loss(self, ctx, z_theta, x_theta, cond):
        """The generator's loss on its sampled tokens x_theta: x_t ~ q(. | x_theta), teacher (CFG) and aux on
        x_t, g = dD/dz_psi, and the surrogate whose gradient wrt z_theta is g. Returns (loss, logs)."""
        c, teacher = self.config, self.teacher
        ratio = self.plugins["schedule"].sample_ratio(x_theta.shape[0], device=ctx.device)
        x_t, mask = forward_mask(x_theta, ratio, teacher.mask_id, c.mask_count)
        with torch.no_grad(), ctx.autocast():
            z_phi = guided_logits(ctx.models["teacher"], x_t, cond, teacher.null_condition(cond), c.cfg_scale)
            with ctx.mode("aux", self.aux_scores_in_train_mode()):
                z_psi = ctx.models["aux"](x_t, cond)
        logp_phi = F.log_softmax(z_phi.float() / c.teacher_temperature, -1)
        logp_psi = F.log_softmax(z_psi.float() / c.aux_temperature, -1)
        g = self.generator_gradient(logp_phi, logp_psi, mask)
        div = self.plugins["divergence"].value(logp_phi, logp_psi)
        # Device tensors: the engine reads them at log steps, so a step never waits on the host.
        logs = {"divergence": ((div * mask).sum() / mask.sum().clamp(min=1)).detach(),
                "grad_sq": (0.5 * (g ** 2).sum()).detach()}
        self._accumulate_by_ratio(ratio, div, mask)
        if getattr(ctx, "log", False):   # log steps only: a few reductions on tensors the step already has
            logs.update(self.diagnostics(z_theta, x_theta, logp_phi, logp_psi, mask))
            logs.update(self._divergence_by_ratio())
        return self.surrogate(g, z_theta), logs

    def aux_scores_in_train_mode(self) -> bool:
        """The aux's mode while it scores x_t: the teacher's (both eval, or both with dropout as the official
        MaskGit script), or train; its own update keeps train mode."""
        c = self.config
        return c.teacher_mode == "train" if c.aux_score_mode == "teacher" else True

    # -- diagnostics (docs/methods/dimo_diagnosis.md) ---------------------------------------------------
    RATIO_BINS = (0.0, 0.25, 0.5, 0.75, 1.0)

    def diagnostics(self, z_theta, x_theta, logp_phi, logp_psi, mask) -> dict:
        """How well the aux tracks the generator and what the generator's samples look like (device tensors).

        ``aux_ce`` / ``teacher_ce``: masked cross-entropy of the generator's tokens x_theta under the aux and the
        teacher on the same x_t. x_theta is fresh for the aux (drawn before its update); an aux that tracks the
        generator has aux_ce <= teacher_ce. ``aux_entropy - teacher_entropy`` > 0 on average means the FKL
        gradient p_psi - p_phi pushes the generator's logits toward the teacher's modes (sharpening)."""
        m = mask.float()
        n = m.sum().clamp(min=1)
        masked_mean = lambda v: (v * m).sum() / n
        ce = lambda logp: masked_mean(-logp.gather(-1, x_theta[..., None]).squeeze(-1))
        entropy = lambda logp: -(logp.exp() * logp).sum(-1)
        logp_gen = F.log_softmax(z_theta.detach().float() / self.config.generator_temperature, -1)
        same = (x_theta[:, None, :] == x_theta[None, :, :]).float().mean(-1)   # [B, B] share of equal tokens
        b = x_theta.shape[0]
        return {"diag/aux_ce": ce(logp_psi).detach(), "diag/teacher_ce": ce(logp_phi).detach(),
                "diag/aux_entropy": masked_mean(entropy(logp_psi)).detach(),
                "diag/teacher_entropy": masked_mean(entropy(logp_phi)).detach(),
                "diag/generator_entropy": entropy(logp_gen).mean().detach(),
                "diag/pairwise_hamming": (1 - (same.sum() - b) / max(b * (b - 1), 1)).detach(),
                "diag/distinct_frac": torch.tensor(x_theta.unique(dim=0).shape[0] / b, device=x_theta.device)}

    def _accumulate_by_ratio(self, ratio, div, mask) -> None:
        """Per-sample divergence summed by mask-ratio bin since the last log step (no host sync)."""
        per_sample = ((div * mask).sum(1) / mask.sum(1).clamp(min=1)).detach().double()
        edges = torch.tensor(self.RATIO_BINS[1:-1], device=ratio.device, dtype=ratio.dtype)
        idx = torch.bucketize(ratio, edges, right=True)
        k = len(self.RATIO_BINS) - 1
        if getattr(self, "_ratio_sums", None) is None or self._ratio_sums.device != per_sample.device:
            self._ratio_sums = torch.zeros(2, k, dtype=torch.float64, device=per_sample.device)
        self._ratio_sums[0].index_add_(0, idx, per_sample)
        self._ratio_sums[1].index_add_(0, idx, torch.ones_like(per_sample))

    def _divergence_by_ratio(self) -> dict:
        """``div_t/<lo>-<hi>``: the mean divergence of samples whose x_t mask ratio fell in the bin (nan when none
        did, written as null), then reset."""
        sums, counts = self._ratio_sums
        means = torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, float("nan")))
        bins = self.RATIO_BINS
        out = {f"div_t/{bins[i]:.2f}-{bins[i + 1]:.2f}": means[i].clone() for i in range(len(bins) - 1)}
        self._ratio_sums = None
        return out

    def train_step(self, ctx):
        c = self.config
        with ctx.autocast():
            z_theta, cond = self.one_step_logits(ctx.models["generator"], self.micro, ctx.device)
        x_theta = self.sample_tokens(z_theta, c.generator_temperature)
        loss, logs = self.dimo_loss(ctx, z_theta, x_theta, cond)
        ctx.update("generator", loss)
        for _ in range(c.aux_updates):
            logs["aux_loss"] = self.aux_step(ctx, x_theta, cond, z_theta.detach())
        return logs

    def aux_step(self, ctx, x_theta, cond, z_theta) -> torch.Tensor:
        c, device, batch = self.config, ctx.device, self.micro
        if c.aux_sample == "fresh":
            with torch.no_grad(), ctx.autocast():
                z_theta, cond = self.one_step_logits(ctx.models["generator"], batch, device)
            x_theta = self.sample_tokens(z_theta, c.generator_temperature)
        ratio = self.plugins["schedule"].sample_ratio(batch, device=device)
        x_t, mask = forward_mask(x_theta, ratio, self.teacher.mask_id, c.mask_count)
        with ctx.autocast():
            z_psi = ctx.models["aux"](x_t, cond)
        loss = masked_cross_entropy(z_psi, x_theta, mask, c.label_smoothing)
        if c.aux_alpha > 0:   # soft targets: KL(p_psi || p_theta(x_init)) on masked tokens (App. E.12)
            logq = F.log_softmax(z_psi.float(), -1)
            kl = (logq.exp() * (logq - F.log_softmax(z_theta.float(), -1))).sum(-1)
            loss = (1 - c.aux_alpha) * loss + c.aux_alpha * (kl * mask).sum() / mask.sum().clamp(min=1)
        ctx.update("aux", loss)
        return loss.detach()

    # -- one-step sampling ---------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, network, cond, generator=None, temperature: Optional[float] = None, **kwargs):
        device = next(network.parameters()).device
        init = self.plugins["init"](cond.shape[0], self.teacher, generator, device)
        logits = init.logits(network, cond.to(device))
        return self.sample_tokens(logits, temperature or self.config.sample_temperature, generator)


@hookimpl
def dimo_register(register):
    register("method", "dimo", DiMO)
