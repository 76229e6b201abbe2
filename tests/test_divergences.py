"""Closed-form divergence gradients (paper Eq. 4, Eq. 18) against autograd, in log space, at large V."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from plugins.divergences import (GENERATORS, FDivergence, ForwardKL, GeneralizedJeffrey, ReverseKL,
                                 generic_f_grad)

NAMED = ["fkl", "rkl", "jensen_shannon", "squared_hellinger", "alpha", "total_variation"]


def logits_pair(seed, batch, vocab, scale, peaked):
    g = torch.Generator().manual_seed(seed)
    zp = torch.randn(batch, vocab, generator=g, dtype=torch.float64) * scale
    zq = torch.randn(batch, vocab, generator=g, dtype=torch.float64) * scale
    if peaked:   # near one-hot rows: probabilities down to e^-60
        zp[:, 0] += 60
        zq[:, 1] += 60
    return zp, zq


def autograd_grad(div, zp, zq):
    zq = zq.clone().requires_grad_(True)
    value = div.value(zp.log_softmax(-1), zq.log_softmax(-1))
    (g,) = torch.autograd.grad(value.sum(), zq)
    return value, g


def all_divergences(beta, alpha):
    yield ForwardKL(ForwardKL.Config())
    yield ReverseKL(ReverseKL.Config())
    yield GeneralizedJeffrey(GeneralizedJeffrey.Config(beta=beta))
    for name in NAMED:
        yield FDivergence(FDivergence.Config(generator=name, alpha=alpha))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), vocab=st.sampled_from([2, 17, 1025, 8192]),
       scale=st.floats(0.1, 6.0), peaked=st.booleans(), beta=st.floats(-1.0, 2.0),
       alpha=st.sampled_from([-0.5, 0.3, 0.5, 2.0]))
def test_closed_form_gradient_equals_autograd(seed, vocab, scale, peaked, beta, alpha):
    zp, zq = logits_pair(seed, 3, vocab, scale, peaked)
    for div in all_divergences(beta, alpha):
        value, g_auto = autograd_grad(div, zp, zq)
        g = div.grad(zp.log_softmax(-1), zq.log_softmax(-1))
        assert torch.isfinite(value).all() and torch.isfinite(g).all()
        tol = 1e-6 * max(1.0, g_auto.abs().max().item())
        assert torch.allclose(g.double(), g_auto, atol=tol, rtol=1e-5), type(div).__name__


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), vocab=st.sampled_from([5, 257]), alpha=st.sampled_from([-0.5, 0.3, 2.0]))
def test_eq18_with_any_generator_matches_the_log_space_forms(seed, vocab, alpha):
    zp, zq = logits_pair(seed, 4, vocab, 2.0, False)
    lp, lq = zp.log_softmax(-1), zq.log_softmax(-1)
    for name in NAMED:
        stable = FDivergence(FDivergence.Config(generator=name, alpha=alpha)).grad(lp, lq)
        generic = generic_f_grad(GENERATORS[name](alpha=alpha), lp, lq)
        assert torch.allclose(stable.double(), generic.double(), atol=1e-9), name


@given(seed=st.integers(0, 1000))
@settings(max_examples=20, deadline=None)
def test_jeffrey_endpoints_are_fkl_and_rkl(seed):
    zp, zq = logits_pair(seed, 5, 33, 3.0, False)
    lp, lq = zp.log_softmax(-1), zq.log_softmax(-1)
    j0 = GeneralizedJeffrey(GeneralizedJeffrey.Config(beta=0.0))
    j1 = GeneralizedJeffrey(GeneralizedJeffrey.Config(beta=1.0))
    fkl, rkl = ForwardKL(ForwardKL.Config()), ReverseKL(ReverseKL.Config())
    assert torch.allclose(j0.grad(lp, lq), fkl.grad(lp, lq)) and torch.allclose(j0.value(lp, lq), fkl.value(lp, lq))
    assert torch.allclose(j1.grad(lp, lq), rkl.grad(lp, lq)) and torch.allclose(j1.value(lp, lq), rkl.value(lp, lq))


def test_paper_eq4_forms():
    zp, zq = logits_pair(0, 2, 11, 2.0, False)
    p, q = zp.softmax(-1), zq.softmax(-1)
    lp, lq = zp.log_softmax(-1), zq.log_softmax(-1)
    assert torch.allclose(ForwardKL(ForwardKL.Config()).grad(lp, lq), q - p)
    rkl = (q * (lq - lp)).sum(-1, keepdim=True)
    assert torch.allclose(ReverseKL(ReverseKL.Config()).grad(lp, lq), q * (lq - lp - rkl))


def test_divergences_vanish_at_equality_and_are_positive_elsewhere():
    zp, zq = logits_pair(1, 4, 50, 2.0, False)
    lp, lq = zp.log_softmax(-1), zq.log_softmax(-1)
    for div in all_divergences(0.3, 0.5):
        assert div.value(lp, lp).abs().max() < 1e-9
        assert div.grad(lp, lp).abs().max() < 1e-9
        assert (div.value(lp, lq) > 0).all()


def test_stable_with_underflowing_probabilities_at_8k_vocab():
    lp = torch.full((1, 8192), -1e4, dtype=torch.float32)
    lp[0, 0] = 0.0
    lq = torch.log_softmax(torch.randn(1, 8192), -1)
    lq[0, 5] = -math.inf   # an impossible token for the aux model
    for div in all_divergences(-0.3, 0.5):
        assert torch.isfinite(div.grad(lp, lq)).all() and torch.isfinite(div.value(lp, lq)).all()


def test_half_precision_inputs_are_upcast():
    zp, zq = logits_pair(2, 2, 64, 2.0, False)
    g = ReverseKL(ReverseKL.Config()).grad(zp.log_softmax(-1).bfloat16(), zq.log_softmax(-1).bfloat16())
    assert g.dtype == torch.float32


def test_alpha_config_rejects_kl_limits():
    with pytest.raises(ValueError):
        FDivergence.Config(generator="alpha", alpha=0.0)
