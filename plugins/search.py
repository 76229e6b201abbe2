"""Test-time search plugins on one-step students with an init plugin (dimo, soft_dimo): samples picked or
optimised by rewards ``sum_i lambda_i R_i`` (``plugins.rewards``).

* ``tteo``: test-time embedding optimisation (Soft-Di[M]O H.8): gradient ascent of the reward on the generator's
  input embedding e_in = Emb(x_init), e* = argmax R(Dec(Emb_Dec(z_theta(e_in))), c), from N starts per condition
  for K Adam steps, keeping the best of the N (multi-start best-of-N).
* ``best_of_n``: N one-step samples per condition, the highest reward kept.

``python -m core.run generate ... tteo.seeds=4 tteo.iters=4`` runs ``tteo`` and compares it with ``best_of_n``
at equal compute (``Search.cost``) and one-step sampling; the benchmark suites' test-time rows use the same
plugins.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from pydantic import Field, field_validator
from torch import Tensor

from core.interfaces import PluginConfig, Search
from core.masking import vp_noise
from plugins.rewards import build_rewards, total_reward, validate_rewards
from registry import hookimpl


class SearchConfig(PluginConfig):
    rewards: Optional[list[Any]] = Field(None, description="[{name, weight, ...}]; default [{name: classifier}] "
                                                           "(generate: the run's method.rewards first)")

    @field_validator("rewards")
    @classmethod
    def _rewards(cls, v):
        return None if v is None else validate_rewards(v)


def sample_codes(logits: Tensor, temperature: float, generator: torch.Generator) -> Tensor:
    """One token per position from softmax(logits / temperature), drawn on the CPU generator."""
    probs = (logits.detach().float() / temperature).softmax(-1).cpu()
    return torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(probs.shape[:-1])


def keep_best(tokens: Tensor, scores: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Rows are (condition, candidate) pairs, candidates consecutive: keep the best of each condition."""
    scores = scores.view(-1, n)
    pick = scores.argmax(1) + torch.arange(scores.shape[0]) * n
    return tokens[pick], scores.max(1).values


class RewardSearch(Search):
    """A search whose config names its rewards; built once, reward networks frozen."""

    def __init__(self, config):
        super().__init__(config)
        self.rewards = build_rewards(config.rewards or ["classifier"])

    def reward(self, tokens, cond, teacher):
        with torch.no_grad():
            return total_reward(self.rewards, teacher.decode_with(tokens, cond), cond, teacher).cpu()


class TTEO(RewardSearch):
    """Test-time embedding optimisation (Soft-Di[M]O H.8): N starts x K Adam steps of reward ascent on the
    generator's input embedding, the best start kept."""

    class Config(SearchConfig):
        seeds: int = Field(4, gt=0, description="N: starts per condition, the best (by reward) is kept (paper: 4)")
        iters: int = Field(4, ge=0, description="K: Adam steps on the input embedding per start (paper: 4)")
        lr: float = Field(0.1, gt=0, description="Adam step size on the input embedding (not given in the paper)")
        soft_temperature: float = Field(1.0, gt=0, description="tau of the soft decode Dec(E^T softmax(z / tau))")

    def cost(self) -> int:
        return self.config.seeds * (3 * self.config.iters + 1)

    @staticmethod
    def init_embeddings(method, network, teacher, n: int, generator: torch.Generator) -> Tensor:
        """e_in = Emb(x_init) with the init's variance-preserving noise drawn once (then optimised)."""
        init = method.plugins["init"](n, teacher, generator, torch.device("cpu"))
        device = next(network.parameters()).device
        e = network.embed_tokens(init.tokens.to(device)).detach().float()
        return vp_noise(e, init.noise_sigma, generator)

    def search(self, method, network, teacher, cond, temperature, generator):
        c = self.config
        n, device = c.seeds, next(network.parameters()).device
        cond = cond.repeat_interleave(n).to(device)
        e = self.init_embeddings(method, network, teacher, len(cond), generator).requires_grad_(True)
        opt = torch.optim.Adam([e], lr=c.lr)
        with torch.enable_grad():
            for _ in range(c.iters):
                z = network(None, cond, inputs_embeds=e)
                probs = (z.float() / c.soft_temperature).softmax(-1)
                loss = -total_reward(self.rewards, teacher.decode_soft_with(probs, cond), cond, teacher).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            tokens = sample_codes(network(None, cond, inputs_embeds=e), temperature, generator)
        return keep_best(tokens, self.reward(tokens, cond.cpu(), teacher), n)


class BestOfN(RewardSearch):
    """Best-of-N: N one-step samples per condition, the highest reward kept."""

    class Config(SearchConfig):
        n: int = Field(4, gt=0, description="one-step samples per condition; the highest reward is kept")

    def cost(self) -> int:
        return self.config.n

    def search(self, method, network, teacher, cond, temperature, generator):
        n = self.config.n
        cond = cond.repeat_interleave(n)
        with torch.no_grad():
            tokens = method.generate(network, cond, generator, temperature=temperature).cpu()
        return keep_best(tokens, self.reward(tokens, cond, teacher), n)


@hookimpl
def dimo_register(register):
    register("search", "tteo", TTEO)
    register("search", "best_of_n", BestOfN)
