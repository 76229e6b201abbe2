"""Mask schedules, the forward process q_{t|0} and the MDM loss."""
import math

import torch
from hypothesis import given, settings, strategies as st

from core.masking import draw_mask, forward_mask, masked_cross_entropy
from plugins.schedules import Arccos, Cosine, Linear, Square


def test_schedules_go_from_all_masked_to_none():
    r = torch.linspace(0, 1, 101)
    for sched in (Arccos(Arccos.Config()), Cosine(Cosine.Config()), Linear(Linear.Config()), Square(Square.Config())):
        g = sched.gamma(r)
        assert torch.isclose(g[0], torch.tensor(1.0)) and torch.isclose(g[-1], torch.tensor(0.0), atol=1e-6)
        assert (g[1:] <= g[:-1] + 1e-7).all()   # monotone
    # arccos: E[gamma(U)] = 2 / pi (the 64% masked on average quoted for MaskGit)
    u = torch.rand(200_000, generator=torch.Generator().manual_seed(0))
    assert abs(Arccos(Arccos.Config()).gamma(u).mean().item() - 2 / math.pi) < 0.01


@settings(max_examples=30, deadline=None)
@given(ratio=st.floats(0.0, 1.0), length=st.integers(1, 300))
def test_exact_count_masks_round_l_r_tokens_at_least_one(ratio, length):
    mask = draw_mask(torch.full((4,), ratio), length, "exact", torch.Generator().manual_seed(1))
    expected = min(max(round(length * ratio), 1), length)
    assert (mask.sum(1) == expected).all()


def test_bernoulli_masks_have_the_right_rate_and_vary():
    mask = draw_mask(torch.full((2000,), 0.3), 64, "bernoulli", torch.Generator().manual_seed(0))
    assert abs(mask.float().mean().item() - 0.3) < 0.01
    assert mask.sum(1).float().std() > 1   # per-token independence: counts vary between sequences


def test_forward_mask_replaces_only_masked_positions():
    x0 = torch.randint(0, 17, (8, 64))
    xt, mask = forward_mask(x0, torch.full((8,), 0.5), mask_id=17)
    assert (xt[mask] == 17).all() and (xt[~mask] == x0[~mask]).all()


def test_masked_cross_entropy_ignores_visible_tokens_and_reductions_agree_when_counts_match():
    logits = torch.randn(3, 10, 5)
    target = torch.randint(0, 5, (3, 10))
    mask = torch.zeros(3, 10, dtype=torch.bool)
    mask[:, :4] = True
    full = torch.nn.functional.cross_entropy(logits[:, :4].reshape(-1, 5), target[:, :4].reshape(-1))
    assert torch.isclose(masked_cross_entropy(logits, target, mask), full)
    assert torch.isclose(masked_cross_entropy(logits, target, mask, reduction="per_sample"), full)
    logits2 = logits.clone()
    logits2[:, 4:] = 100.0   # visible positions cannot change the loss
    assert torch.isclose(masked_cross_entropy(logits2, target, mask), full)
