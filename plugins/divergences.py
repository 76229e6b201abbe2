"""Token-level divergences D(p || q) between the teacher p = p_phi and the auxiliary model q = p_psi,
with their closed-form gradients with respect to the aux logits z_psi (paper Eq. 4, supplementary Eq. 18).

Every f-divergence here is D_f(p || q) = sum_k q_k f(p_k / q_k) (Eq. 17). Writing u = p / q and
h(u) = f(u) - u f'(u), the gradient is (Eq. 18, rearranged)

    dD/dz_j = q_j h(u_j) - q_j sum_k q_k h(u_k).

Each divergence gives ``value`` and the weighted term ``q h(u)`` in log space (inputs are log-probs), so
both stay finite when probabilities underflow and at vocabularies of 8k+ tokens. ``FDivergence``
builds the same from any generator f (a torch function of u) with autograd for f'.
"""
from __future__ import annotations

import math
from typing import Callable, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from core.errors import UserError
from core.interfaces import Divergence, PluginConfig
from registry import hookimpl


def _finite(logp: Tensor) -> Tensor:
    """At least fp32; and log 0 = -inf would turn 0 * log 0 into nan, so clamp to a finite floor."""
    if logp.dtype not in (torch.float32, torch.float64):
        logp = logp.float()
    return logp.clamp(min=torch.finfo(logp.dtype).min / 4)


class FFamily(Divergence):
    """Shared Eq. 18 machinery: subclasses give ``value`` and ``qh`` (q * h(p/q)) in log space."""

    def qh(self, lp: Tensor, lq: Tensor) -> Tensor:
        raise NotImplementedError

    def grad(self, logp_teacher: Tensor, logp_aux: Tensor) -> Tensor:
        lp, lq = _finite(logp_teacher), _finite(logp_aux)
        qh = self.qh(lp, lq)
        return qh - lq.exp() * qh.sum(-1, keepdim=True)


def fkl_value(logp_teacher: Tensor, logp_aux: Tensor) -> Tensor:
    lp, lq = _finite(logp_teacher), _finite(logp_aux)
    return (lp.exp() * (lp - lq)).sum(-1)


def fkl_grad(logp_teacher: Tensor, logp_aux: Tensor) -> Tensor:
    return _finite(logp_aux).exp() - _finite(logp_teacher).exp()


def rkl_value(logp_teacher: Tensor, logp_aux: Tensor) -> Tensor:
    lp, lq = _finite(logp_teacher), _finite(logp_aux)
    return (lq.exp() * (lq - lp)).sum(-1)


def rkl_grad(logp_teacher: Tensor, logp_aux: Tensor) -> Tensor:
    lp, lq = _finite(logp_teacher), _finite(logp_aux)
    q = lq.exp()
    return q * (lq - lp - (q * (lq - lp)).sum(-1, keepdim=True))


class ForwardKL(FFamily):
    """KL(p || q), f(u) = u log u. Gradient p_psi - p_phi (Eq. 4). Mode-covering."""

    def value(self, logp_teacher, logp_aux):
        return fkl_value(logp_teacher, logp_aux)

    def qh(self, lp, lq):
        return -lp.exp()

    def grad(self, logp_teacher, logp_aux):   # the exact closed form, no cancellation
        return fkl_grad(logp_teacher, logp_aux)


class ReverseKL(FFamily):
    """KL(q || p), f(u) = -log u. Gradient p_psi (log(p_psi / p_phi) - RKL) (Eq. 4). Mode-seeking."""

    def value(self, logp_teacher, logp_aux):
        return rkl_value(logp_teacher, logp_aux)

    def qh(self, lp, lq):
        return lq.exp() * (lq - lp + 1)

    def grad(self, logp_teacher, logp_aux):
        return rkl_grad(logp_teacher, logp_aux)


class GeneralizedJeffrey(FFamily):
    """(1 - beta) FKL + beta RKL, f(u) = ((1 - beta) u - beta) log u. beta may lie outside [0, 1]
    (the paper uses beta in [-0.3, 1]); beta = 0 is FKL, beta = 1 is RKL."""

    class Config(PluginConfig):
        beta: float = Field(0.5, description="0: forward KL, 1: reverse KL, 0.5 (default): the symmetric Jeffreys "
                                             "divergence (halved); any real value (the paper explores [-0.3, 1])")

    def value(self, logp_teacher, logp_aux):
        b = self.config.beta
        return (1 - b) * fkl_value(logp_teacher, logp_aux) + b * rkl_value(logp_teacher, logp_aux)

    def qh(self, lp, lq):
        b = self.config.beta
        return -(1 - b) * lp.exp() + b * lq.exp() * (lq - lp + 1)

    def grad(self, logp_teacher, logp_aux):
        b = self.config.beta
        return (1 - b) * fkl_grad(logp_teacher, logp_aux) + b * rkl_grad(logp_teacher, logp_aux)


# -- the alpha-divergence, outside (0, 1) too ------------------------------------------------------

def _alpha_terms(lp: Tensor, lq: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """log T_k = alpha log q_k + (1 - alpha) log p_k in float64, shifted by its max M: returns (T / e^M, M).
    Outside (0, 1) the terms reach e^100 and more on confident logits (beyond float32); the shift keeps
    the sums finite and the scale e^M is applied once, at the end."""
    log_t = alpha * lq.double() + (1 - alpha) * lp.double()
    m = log_t.amax(-1, keepdim=True)
    return (log_t - m).exp(), m


def alpha_value(lp: Tensor, lq: Tensor, alpha: float) -> Tensor:
    t, m = _alpha_terms(lp, lq, alpha)
    return ((t.sum(-1) * m.squeeze(-1).exp() - 1) / (alpha * (alpha - 1))).to(lq.dtype)


def exclusive_sum(x: Tensor) -> Tensor:
    """sum_{k != j} x_k for every j, from prefix and suffix sums of non-negative x: nothing is subtracted, so
    nothing cancels (``x.sum() - x`` loses the small rest next to a dominant x_j)."""
    before = torch.nn.functional.pad(x.cumsum(-1)[..., :-1], (1, 0))
    after = torch.nn.functional.pad(x.flip(-1).cumsum(-1).flip(-1)[..., 1:], (0, 1))
    return before + after


def alpha_grad(lp: Tensor, lq: Tensor, alpha: float) -> Tensor:
    """dD/dz_j = (T_j - q_j S) / (alpha - 1), S = sum_k T_k (Eq. 18 with h(u) = (u^(1 - alpha) - 1) / (alpha - 1)),
    written as (T_j sum_{k!=j} q_k - q_j sum_{k!=j} T_k) / (alpha - 1): at the aux's peak token (q_j -> 1) the
    two terms are the small rest of the distribution, summed directly instead of as 1 - q_j and S - T_j."""
    t, m = _alpha_terms(lp, lq, alpha)
    q = lq.double().exp()
    g = (t * exclusive_sum(q) - q * exclusive_sum(t)) * (m.exp() / (alpha - 1))
    out = g.to(lq.dtype)
    if not 0 < alpha < 1 and not torch.isfinite(out).all():   # inside (0, 1) T_k <= 1: no check, no sync
        raise UserError(
            f"divergence.alpha={alpha}: the alpha-divergence gradient exceeds the {lq.dtype} range on these logits "
            f"(its largest term is e^{m.max().item():.0f}: the teacher is confident where the aux is not, and "
            f"alpha outside (0, 1) weights p^(1-alpha) q^alpha without bound). Use alpha in (0, 1), "
            f"divergence=fkl/rkl/jeffrey, or a higher method.teacher_temperature.")
    return out


# -- any f-divergence ----------------------------------------------------------------------------

GENERATORS: dict[str, Callable[..., Callable[[Tensor], Tensor]]] = {
    "fkl": lambda **_: lambda u: u * torch.log(u),
    "rkl": lambda **_: lambda u: -torch.log(u),
    "jensen_shannon": lambda **_: lambda u: -(u + 1) * torch.log((1 + u) / 2) + u * torch.log(u),
    "squared_hellinger": lambda **_: lambda u: (torch.sqrt(u) - 1) ** 2,
    "alpha": lambda alpha, **_: lambda u: (u ** (1 - alpha) - (1 - alpha) * u - alpha) / (alpha * (alpha - 1)),
    "total_variation": lambda **_: lambda u: 0.5 * (u - 1).abs(),
}


class FDivergence(FFamily):
    """D_f for a named generator from the paper's Table 4 (``generator=...``), computed in log space.

    Jensen-Shannon uses Table 4's generator, which gives 2 JS (no 1/2 factor). Total variation is not
    differentiable where p = q; its (sub)gradient there is taken as 0.
    """

    class Config(PluginConfig):
        generator: Literal["fkl", "rkl", "jensen_shannon", "squared_hellinger", "alpha", "total_variation"] = Field(
            "jensen_shannon", description="the generator f of the f-divergence (paper Table 4)")
        alpha: float = Field(0.5, description="alpha of the alpha-divergence (not 0 or 1)")

        @model_validator(mode="after")
        def _alpha_valid(self):
            if self.generator == "alpha" and self.alpha in (0.0, 1.0):
                raise ValueError("alpha must not be 0 or 1 (those are the KL limits: use fkl / rkl)")
            return self

    def value(self, logp_teacher, logp_aux):
        lp, lq = _finite(logp_teacher), _finite(logp_aux)
        p, q, g = lp.exp(), lq.exp(), self.config.generator
        if g == "fkl":
            return (p * (lp - lq)).sum(-1)
        if g == "rkl":
            return (q * (lq - lp)).sum(-1)
        if g == "jensen_shannon":
            lm = torch.logaddexp(lp, lq)
            return (p * (math.log(2) + lp - lm) + q * (math.log(2) + lq - lm)).sum(-1)
        if g == "squared_hellinger":
            return (p + q - 2 * torch.exp((lp + lq) / 2)).sum(-1)
        if g == "alpha":
            return alpha_value(lp, lq, self.config.alpha)
        return 0.5 * (p - q).abs().sum(-1)

    def qh(self, lp, lq):
        q, g = lq.exp(), self.config.generator
        if g == "fkl":
            return -lp.exp()
        if g == "rkl":
            return q * (lq - lp + 1)
        if g == "jensen_shannon":      # h(u) = -log((1 + u) / 2)
            return q * (math.log(2) + lq - torch.logaddexp(lp, lq))
        if g == "squared_hellinger":   # h(u) = 1 - sqrt(u)
            return q - torch.exp((lp + lq) / 2)
        if g == "alpha":               # h(u) = (u^(1 - alpha) - 1) / (alpha - 1)
            a = self.config.alpha
            return (torch.exp(a * lq + (1 - a) * lp) - q) / (a - 1)
        return -0.5 * q * torch.sign(lp - lq)   # total variation: h(u) = -sign(u - 1) / 2

    def grad(self, logp_teacher, logp_aux):
        if self.config.generator == "alpha":
            return alpha_grad(_finite(logp_teacher), _finite(logp_aux), self.config.alpha)
        return super().grad(logp_teacher, logp_aux)


def generic_f_grad(f: Callable[[Tensor], Tensor], logp_teacher: Tensor, logp_aux: Tensor) -> Tensor:
    """Eq. 18 for an arbitrary generator f, with f' by autograd (reference implementation for tests
    and for user-defined f; not log-space stable when p / q overflows)."""
    lp, lq = logp_teacher.double(), logp_aux.double()
    u = torch.exp(lp - lq).detach().requires_grad_(True)
    fu = f(u)
    (df,) = torch.autograd.grad(fu.sum(), u)
    q = lq.exp()
    qh = q * (fu.detach() - u.detach() * df)
    return (qh - q * qh.sum(-1, keepdim=True)).to(logp_aux.dtype)


@hookimpl
def dimo_register(register):
    register("divergence", "fkl", ForwardKL)
    register("divergence", "rkl", ReverseKL)
    register("divergence", "jeffrey", GeneralizedJeffrey)
    register("divergence", "f", FDivergence)
