"""di4c, distillation of discrete diffusion through dimensional correlations (Hayakawa et al., ICML 2025).

The student is the teacher's network with an extra latent input lambda ~ U(0, 1), one per sample and shared
by all positions. Given lambda it is still a product over positions; over lambda it is a mixture of products,
which can hold the correlations between positions that a factorised teacher loses when it takes big steps:

  p_theta(x_0 | x_t) = E_lambda prod_d p_theta^d(x_0^d | x_t, lambda),  estimated with J draws lambda_1..J:
  log p^(x_0 | x_t) = logsumexp_j sum_d log p_theta^d(x_0^d | x_t, lambda_j) - log J

Per step, on real data x_0 at a progress r ~ U(0, 1) (x_t has L gamma(r) [M]) and one teacher forward on x_t:
  * distillation (r >= 1 - delta, weight 1/delta): mean_j sum_d KL(p_phi^d(. | x_t) || p_theta^d(. | x_t, lambda_j))
  * consistency (r < 1 - delta): one teacher step x_t -> x_u (progress r + delta, the teacher's sampler), then
    the student (no grad, fresh lambda) completes x_u into x~_0; maximise log p^(x~_0 | x_t)
  * data: alpha(r) (-log p^(x_0 | x_t)), alpha(r) = alpha_const sigmoid(20 (0.5 - r))
  * control variate (official use_cv): each log p^ is split into a correlation part
    logsumexp_j sum_d l_jd - sum_d logsumexp_j l_jd (+ the log J terms) and an independent part replaced by its
    expectation, the KL between the target's per-position marginal and the mixture's
    (teacher's for the data term, the student's at x_u for the consistency term).
Sums run over the [M] positions of x_t (both models carry unmasked tokens over); losses are divided by L.
Sampling: the teacher's sampler with the student, a fresh lambda per sample at every step.
"""
from __future__ import annotations

import copy
import math
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from core.interfaces import Method, PluginConfig, Role, WrappedNetwork
from core.masking import forward_mask, guided_logits
from plugins.samplers import categorical, uniform
from registry import hookimpl


# ---------------------------------------------------------------------------------------------------
# The lambda-conditioned student
# ---------------------------------------------------------------------------------------------------

class LambdaEmbedding(nn.Module):
    """lambda in [0, 1] -> a vector added to every input token embedding: a sinusoidal embedding of
    1000 lambda then an MLP (official: 128 -> 512 -> GELU -> width). The last layer starts at zero, so an
    untrained student is exactly the teacher for every lambda."""

    def __init__(self, dim: int, freq_dim: int = 128, hidden: int = 512):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, lam: Tensor) -> Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=lam.device, dtype=torch.float32) / half)
        args = 1000 * lam.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], -1))


class LambdaStudent(WrappedNetwork):
    """A masked network with the extra input ``lam`` ``[B]`` (drawn uniformly when not given). It keeps the
    MaskedNetwork protocol, and its state dict is the network's (``network.*``) plus ``lam_embed.*``."""

    def __init__(self, network: nn.Module, freq_dim: int = 128, hidden: int = 512):
        super().__init__(network)
        self.lam_embed = LambdaEmbedding(network.code_embeddings().shape[1], freq_dim, hidden)

    def forward(self, tokens: Optional[Tensor], cond: Tensor, *, lam: Optional[Tensor] = None,
                inputs_embeds: Optional[Tensor] = None) -> Tensor:
        emb = self.network.embed_tokens(tokens) if inputs_embeds is None else inputs_embeds
        if lam is None:
            lam = torch.rand(emb.shape[0], device=emb.device)
        emb = emb + self.lam_embed(lam.to(emb.device)).to(emb.dtype)[:, None]
        return self.network(None, cond, inputs_embeds=emb)



# ---------------------------------------------------------------------------------------------------
# Losses (pure functions of log-probabilities, for tests)
# ---------------------------------------------------------------------------------------------------

def token_loglik(logp_student: Tensor, y: Tensor, masked: Tensor) -> Tensor:
    """l[b, i, j, d] = log p_theta^d(y[b, i, d] | x_t, lambda_j) on [M] positions of x_t, 0 elsewhere.
    ``logp_student`` ``[B, J, L, V]``, ``y`` ``[B, I, L]``."""
    lp = logp_student[:, None].expand(-1, y.shape[1], -1, -1, -1)
    idx = y[:, :, None, :, None].expand(-1, -1, lp.shape[2], -1, 1)
    return lp.gather(-1, idx).squeeze(-1) * masked[:, None, None]


def mixture_loglik(ll: Tensor) -> Tensor:
    """log p^(y) = logsumexp_j sum_d l_jd - log J, ``[B, I]`` from ``ll`` ``[B, I, J, L]``."""
    return torch.logsumexp(ll.sum(-1), dim=2) - math.log(ll.shape[2])


def correlation_part(ll: Tensor) -> Tensor:
    """log p^(y) minus sum_d log(mixture marginal_d(y_d)): zero when the components agree. ``[B, I]``."""
    log_j = math.log(ll.shape[2])
    return mixture_loglik(ll) - (torch.logsumexp(ll, dim=2) - log_j).sum(-1)


def mixture_marginal(logp_student: Tensor) -> Tensor:
    """log of the per-position marginal of the mixture, mean_j p^d(. | lambda_j): ``[B, L, V]``."""
    return torch.logsumexp(logp_student, dim=1) - math.log(logp_student.shape[1])


def kl(p: Tensor, logq: Tensor, masked: Tensor) -> Tensor:
    """sum over [M] positions of KL(p || q), ``[B]``; p may hold exact zeros (one-hot targets)."""
    per_token = (torch.special.xlogy(p, p) - p * logq).sum(-1)
    return (per_token * masked).sum(-1)


def di4c_losses(logp_student: Tensor, logp_teacher: Tensor, x0: Tensor, x_tilde: Tensor, target_u: Tensor,
                masked: Tensor, r: Tensor, delta: float, alpha: Tensor, control_variate: bool) -> dict[str, Tensor]:
    """Per-sample terms ``[B]`` (summed over [M] positions of x_t, not yet divided by L).

    logp_student ``[B, J, L, V]`` at x_t; logp_teacher ``[B, L, V]`` at x_t; x0 ``[B, L]`` data; x_tilde
    ``[B, I, L]`` teacher-step-then-student completions; target_u ``[B, L, V]`` their per-position marginal;
    r ``[B]`` progress; alpha ``[B]`` data-term weight.
    """
    p_teacher = logp_teacher.exp()
    distil_region = (r >= 1 - delta).float()
    distil = torch.stack([kl(p_teacher, logp_student[:, j], masked)
                          for j in range(logp_student.shape[1])]).mean(0)
    ll_data = token_loglik(logp_student, x0[:, None], masked)
    ll_consistency = token_loglik(logp_student, x_tilde, masked)
    if control_variate:
        marginal = mixture_marginal(logp_student)
        data = -alpha * correlation_part(ll_data)[:, 0] + kl(p_teacher, marginal, masked)
        consistency = -correlation_part(ll_consistency).mean(1) \
            + kl(target_u, marginal, masked)
    else:
        data = -alpha * mixture_loglik(ll_data)[:, 0]
        consistency = -mixture_loglik(ll_consistency).mean(1)
    return {"distillation": distil * distil_region / delta, "data": data,
            "consistency": consistency * (1 - distil_region)}


def alpha_weight(r: Tensor, schedule: str, const: float) -> Tensor:
    """The data term's weight: large at high noise (small progress r) for ``sigmoid`` (official)."""
    if schedule == "sigmoid":
        return const * torch.sigmoid(20 * (0.5 - r))
    if schedule == "linear":
        return const * (1 - r)
    return torch.full_like(r, const)


# ---------------------------------------------------------------------------------------------------
# The method
# ---------------------------------------------------------------------------------------------------

class Di4CConfig(PluginConfig):
    lr: float = Field(1e-5, gt=0, description="student Adam lr (official MaskGIT: 1e-5)")
    betas: tuple[float, float] = Field((0.9, 0.96), description="Adam betas (official: 0.9, 0.96)")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps")
    weight_decay: float = Field(0.0, ge=0, description="official AdamW 1e-5 (here Adam's L2; 0 by default)")
    grad_clip: Optional[float] = Field(1.0, gt=0, description="gradient-norm clip (official: 1.0)")
    ema_decay: Optional[float] = Field(None, gt=0, lt=1, description="EMA of the student (official: none)")
    latent_batch: int = Field(32, ge=1, description="J: lambda draws per data point (official MaskGIT: 32)")
    delta: float = Field(0.05, gt=0, lt=1, description="distillation region r >= 1 - delta and the progress "
                                                       "of the teacher step (official r_delta: 0.05)")
    alpha_schedule: Literal["sigmoid", "linear", "constant"] = Field(
        "sigmoid", description="data-term weight alpha(r) (official alpha_t: sigmoid)")
    alpha_const: float = Field(0.1, ge=0, description="scale of alpha(r) (official alpha_const: 0.1)")
    control_variate: bool = Field(True, description="split mixture log-likelihoods into correlation and "
                                                    "analytic independent parts (official use_cv: True)")
    class_dropout: float = Field(0.1, ge=0, le=1, description="condition dropped to null for teacher and "
                                                              "student, so the student keeps CFG (official: 0.1)")
    student_dropout: bool = Field(False, description="dropout in the student's training forward (official: on); "
                                                     "off matches the eval-mode teacher's targets without bias")
    lambda_freq_dim: int = Field(128, ge=2, description="sinusoidal embedding size of lambda (official: 128)")
    lambda_hidden: int = Field(512, ge=1, description="hidden width of the lambda MLP (official: 512)")


class Di4C(Method):
    Config = Di4CConfig
    uses = ("schedule", "sampler")
    recipe = "di4c"
    suites = ("digits",)
    defaults = {"schedule": "arccos", "sampler": "random"}
    needs_data = True
    sample_steps = (1, 2, 4)
    student_role = "student"

    def student_network(self) -> nn.Module:
        c = self.config
        return LambdaStudent(self.teacher.build_network(load_weights=False), c.lambda_freq_dim, c.lambda_hidden)

    def setup(self, ctx):
        c = self.config
        student = LambdaStudent(copy.deepcopy(ctx.teacher_network), c.lambda_freq_dim, c.lambda_hidden)
        student.to(ctx.device).requires_grad_(True)
        return {"student": Role(student, lr=c.lr, betas=c.betas, warmup_steps=c.warmup_steps,
                                weight_decay=c.weight_decay, grad_clip=c.grad_clip, ema_decay=c.ema_decay),
                "teacher": Role(ctx.teacher_network, trainable=False)}

    # -- one step --------------------------------------------------------------------------------------
    def teacher_step(self, logits_teacher: Tensor, x_t: Tensor, masked: Tensor, r: Tensor) -> Tensor:
        """J independent teacher steps per sample from the same logits: x_t -> x_u, progress r -> r + delta
        (at least one token revealed), positions chosen by the teacher's sampler. ``[B J, L]``."""
        c, sampler, length = self.config, self.plugins["sampler"], x_t.shape[1]
        gamma = self.plugins["schedule"].gamma
        n_u = torch.round(length * gamma((r + c.delta).clamp(max=1))).long()
        keep = torch.minimum(n_u, masked.sum(1) - 1).clamp(min=0)
        rep = lambda t: t.repeat_interleave(c.latent_batch, 0)
        sampler.begin(x_t.shape[0] * c.latent_batch, length, self.teacher, x_t.device, None)
        progress = int(100 * float(r.mean()))   # order rules that anneal with progress see the batch's mean
        x_u, *_ = sampler.reveal(rep(logits_teacher), rep(x_t), rep(masked), rep(keep), progress, 101)
        return x_u

    def complete(self, student, x_u: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """The student (fresh lambda) fills x_u's [M] in one draw: (x~_0 ``[B J, L]``, its per-position
        distribution ``[B J, L, V]`` with x_u's tokens carried over)."""
        pending = x_u == self.teacher.mask_id
        probs = student(x_u, cond, lam=torch.rand(x_u.shape[0], device=x_u.device)).float().softmax(-1)
        carried = F.one_hot(x_u.clamp(max=probs.shape[-1] - 1), probs.shape[-1]).to(probs.dtype)
        probs = torch.where(pending[..., None], probs, carried)
        return torch.where(pending, categorical(probs, None), x_u), probs

    def train_step(self, ctx):
        c, teacher = self.config, self.teacher
        student, phi = ctx.models["student"], ctx.models["teacher"]
        tokens, cond = ctx.batch
        b, length, j = tokens.shape[0], tokens.shape[1], c.latent_batch
        drop = torch.rand(cond.shape, device=cond.device) < c.class_dropout
        cond = torch.where(drop, teacher.null_condition(cond), cond)
        r = torch.rand(b, device=tokens.device)
        x_t, masked = forward_mask(tokens, self.plugins["schedule"].gamma(r), teacher.mask_id, "exact")
        rep = lambda t: t.repeat_interleave(j, 0)
        with torch.no_grad(), ctx.autocast():
            logits_phi = phi(x_t, cond).float()
            x_u = self.teacher_step(logits_phi, x_t, masked, r)
            with ctx.mode("student", False):
                x_tilde, probs_u = self.complete(student, x_u, rep(cond))
        with ctx.autocast(), ctx.mode("student", c.student_dropout):
            logits = student(rep(x_t), rep(cond), lam=torch.rand(b * j, device=tokens.device))
        logp_student = F.log_softmax(logits.float(), -1).view(b, j, length, -1)
        terms = di4c_losses(logp_student, F.log_softmax(logits_phi, -1), tokens, x_tilde.view(b, j, length),
                            probs_u.view(b, j, length, -1).mean(1), masked, r, c.delta,
                            alpha_weight(r, c.alpha_schedule, c.alpha_const), c.control_variate)
        loss = sum(terms.values()).mean() / length
        ctx.update("student", loss)
        return {"loss": loss.item(), **{k: float(v.detach().mean()) / length for k, v in terms.items()}}

    # -- sampling --------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, network, cond, generator=None, steps: Optional[int] = None, **kwargs):
        """The teacher's sampler (its CFG and temperature) with the student, lambda ~ U(0, 1) drawn per sample
        at every step and shared by all positions (official ``sample``)."""
        sampler, device = self.plugins["sampler"], next(network.parameters()).device
        cond = cond.to(device)
        null = self.teacher.null_condition(cond)
        steps = steps or self.sample_steps[0]
        x = torch.full((cond.shape[0], self.teacher.seq_len), self.teacher.mask_id, dtype=torch.long, device=device)

        def predict(x, s, pending):
            lam = uniform((x.shape[0],), generator, device)
            return guided_logits(network, x, cond, null, sampler.cfg_at(s, steps), {"lam": lam})
        return sampler.run_steps(predict, self.teacher, x, steps, generator=generator)


@hookimpl
def dimo_register(register):
    register("method", "di4c", Di4C)
