"""The forward masking process q_{t|0} and the masked cross-entropy MDM loss.

q_{t|0}(x_t | x_0) = prod_i Cat(x_t^i; (1 - r_t) delta(x_0^i) + r_t delta([M]))   (paper, slides)

Two ways to draw the mask at ratio r, both supported everywhere a mask is drawn:
  * ``bernoulli``: each token masked independently with probability r (the paper's q_{t|0});
  * ``exact``: exactly round(L r) tokens (at least 1) by a random permutation (the official code,
    ``get_mask_code``), which gives lower-variance losses.
"""
from __future__ import annotations

import math
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

MaskCount = Literal["bernoulli", "exact"]


def draw_mask(ratio: Tensor, seq_len: int, count: MaskCount = "exact",
              generator: Optional[torch.Generator] = None, min_masked: int = 1) -> Tensor:
    """Boolean ``[B, L]``: True where the token is replaced by [M]. ``ratio`` is ``[B]`` in [0, 1]."""
    batch = ratio.shape[0]
    device = ratio.device
    if count == "bernoulli":
        u = torch.rand(batch, seq_len, generator=generator, device=device)
        return u < ratio[:, None]
    if count == "exact":
        n = torch.round(ratio * seq_len).long().clamp(min=min_masked, max=seq_len)
        scores = torch.rand(batch, seq_len, generator=generator, device=device)
        rank = scores.argsort(dim=1).argsort(dim=1)   # a uniformly random permutation per row
        return rank < n[:, None]
    raise ValueError(f"mask count '{count}' is not one of: bernoulli, exact")


def forward_mask(x0: Tensor, ratio: Tensor, mask_id: int, count: MaskCount = "exact",
                 generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
    """Sample x_t ~ q_{t|0}(. | x0) at per-sample mask ratios. Returns ``(x_t, mask)``."""
    mask = draw_mask(ratio.to(x0.device), x0.shape[1], count, generator)
    return torch.where(mask, torch.full_like(x0, mask_id), x0), mask


def vp_noise(emb: torch.Tensor, sigma: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Di[M]O's variance-preserving perturbation e <- sigma n + sqrt(1 - sigma^2) e, n ~ N(0, I) (official
    ``noise_emb_perturb``); n from ``generator`` (on its device) or, without one, from the global RNG."""
    if sigma <= 0:
        return emb
    where = generator.device if generator is not None else emb.device
    noise = torch.randn(emb.shape, generator=generator, device=where, dtype=emb.dtype).to(emb.device)
    return sigma * noise + math.sqrt(1 - sigma ** 2) * emb


def masked_cross_entropy(logits: Tensor, target: Tensor, mask: Tensor, label_smoothing: float = 0.0,
                         reduction: Literal["mean", "per_sample"] = "mean") -> Tensor:
    """The MDM loss E[-log p(x_0 | x_t)] over masked positions.

    ``mean`` averages over all masked tokens of the batch (MaskGit, official Di[M]O aux update);
    ``per_sample`` averages within each sample first (1/L_M per sequence) and then over the batch.
    """
    ce = F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), reduction="none",
                         label_smoothing=label_smoothing).view_as(target)
    ce = ce * mask
    if reduction == "mean":
        return ce.sum() / mask.sum().clamp(min=1)
    per_sample = ce.sum(1) / mask.sum(1).clamp(min=1)
    return per_sample.mean()


def guided_logits(network, tokens: Tensor, cond: Tensor, null_cond: Tensor, scale: float,
                  per_sample: Optional[dict[str, Tensor]] = None, **kwargs) -> Tensor:
    """Classifier-free guidance on logits: z_u + w (z_c - z_u), both branches in one batch. ``per_sample``
    inputs (di4c's lambda, ReDi's source marks) are given to both branches; ``kwargs`` pass through."""
    per_sample = per_sample or {}
    if scale == 1.0:
        return network(tokens, cond, **per_sample, **kwargs)
    twice = {k: torch.cat([v, v]) for k, v in per_sample.items()}
    both = network(torch.cat([tokens, tokens]), torch.cat([cond, null_cond]), **twice, **kwargs)
    z_c, z_u = both.chunk(2)
    return z_u + scale * (z_c - z_u)
