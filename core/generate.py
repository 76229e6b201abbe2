"""``python -m core.run generate checkpoint=<run> n=64``: samples from a trained student as a PNG grid
and a tokens file.

With ``tteo.seeds=N tteo.iters=K`` (one-step students with an init plugin: dimo, soft_dimo) it samples by
test-time embedding optimisation (Soft-Di[M]O H.8): gradient ascent of a reward on the generator's input
embedding e_in = Emb(x_init), e* = argmax R(Dec(Emb_Dec(z_theta(e_in))), c), from N starts per condition for K
Adam steps, keeping the best of the N (multi-start best-of-N). ``tteo.compare`` also runs plain best-of-N at
equal compute and one-step sampling, and writes the mean rewards to ``<out>.tteo.json``.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Optional

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from core.config import format_validation_error, parse_value
from core.errors import UserError


# ---------------------------------------------------------------------------------------------------
# Rewards (reward plugins with weights lambda_i) and test-time embedding optimisation
# ---------------------------------------------------------------------------------------------------

def validate_rewards(specs: list) -> list[dict]:
    """``[{name, weight, ...options}]`` -> validated entries; unknown names or options raise ValueError."""
    from pydantic import ValidationError
    from registry import get_registry
    reg, out = get_registry(), []
    for i, spec in enumerate(specs):
        spec = {"name": spec} if isinstance(spec, str) else dict(spec)
        name, weight = spec.pop("name", None), spec.pop("weight", 1.0)
        if name not in reg.entries["reward"]:
            raise ValueError(f"rewards[{i}].name={name!r} is not a reward; valid: {', '.join(reg.names('reward'))}")
        cls = reg.get("reward", name)
        try:
            options = cls.Config.model_validate(spec).model_dump(mode="json")
        except ValidationError as exc:
            raise ValueError(format_validation_error(exc, cls.Config, f"rewards[{i}]")) from None
        out.append({"name": name, "weight": float(weight), **options})
    return out


def build_rewards(specs: list) -> list[tuple[float, Any]]:
    """(lambda_i, reward plugin) pairs."""
    from registry.registry import build
    return [(s.pop("weight"), build("reward", s.pop("name"), s)) for s in validate_rewards(specs)]


def total_reward(rewards, images: Tensor, cond: Tensor, teacher) -> Tensor:
    """sum_i lambda_i R_i(images, c), ``[B]``."""
    return sum(w * r(images, cond, teacher).float() for w, r in rewards)


class TTEOConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seeds: int = Field(4, gt=0, description="N: starts per condition, the best (by reward) is kept (paper: 4)")
    iters: int = Field(4, ge=0, description="K: Adam steps on the input embedding per start (paper: 4)")
    lr: float = Field(0.1, gt=0, description="Adam step size on the input embedding (not given in the paper)")
    rewards: Optional[list[Any]] = Field(None, description="[{name, weight, ...}]; default: the run's "
                                                           "method.rewards, else [{name: classifier}]")
    soft_temperature: float = Field(1.0, gt=0, description="tau of the soft decode Dec(E^T softmax(z / tau))")
    temperature: Optional[float] = Field(None, gt=0, description="final token sampling temperature "
                                                                 "(default: the run's sample_temperature)")
    compare: bool = Field(True, description="also run best-of-N at equal compute and one-step sampling; print "
                                            "and write <out>.tteo.json")
    bon_n: Optional[int] = Field(None, gt=0, description="best-of-N samples; default N (3K + 1), the cost of "
                                                         "TTEO in generator+reward forwards (backward = 2)")
    batch_size: int = Field(64, gt=0, description="conditions optimised together")


def _sample(logits: Tensor, temperature: float, generator: torch.Generator) -> Tensor:
    probs = (logits.detach().float() / temperature).softmax(-1).cpu()
    return torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(probs.shape[:-1])


def _best(tokens: Tensor, scores: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Rows are (condition, candidate) pairs, candidates consecutive: keep the best of each condition."""
    scores = scores.view(-1, n)
    pick = scores.argmax(1) + torch.arange(scores.shape[0]) * n
    return tokens[pick], scores.max(1).values


def _hard_reward(rewards, teacher, tokens: Tensor, cond: Tensor) -> Tensor:
    with torch.no_grad():
        return total_reward(rewards, teacher.decode(tokens), cond, teacher).cpu()


def _init_embeddings(method, network, teacher, n: int, generator: torch.Generator) -> Tensor:
    """e_in = Emb(x_init) with the init's variance-preserving noise drawn once (then optimised)."""
    init = method.plugins["init"](n, teacher, generator, torch.device("cpu"))
    device = next(network.parameters()).device
    e = network.embed_tokens(init.tokens.to(device)).detach().float()
    s = init.noise_sigma
    if s > 0:
        e = s * torch.randn(e.shape, generator=generator).to(device) + math.sqrt(1 - s * s) * e
    return e


def tteo_sample(method, network, teacher, cond: Tensor, rewards, cfg: TTEOConfig, temperature: float,
                generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Multi-start TTEO for conditions ``cond``: returns tokens ``[B, L]`` and their (hard) rewards ``[B]``."""
    n, device = cfg.seeds, next(network.parameters()).device
    c = cond.repeat_interleave(n).to(device)
    e = _init_embeddings(method, network, teacher, len(c), generator).requires_grad_(True)
    opt = torch.optim.Adam([e], lr=cfg.lr)
    with torch.enable_grad():
        for _ in range(cfg.iters):
            z = network(None, c, inputs_embeds=e)
            probs = (z.float() / cfg.soft_temperature).softmax(-1)
            loss = -total_reward(rewards, teacher.decode_soft(probs), c, teacher).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        tokens = _sample(network(None, c, inputs_embeds=e), temperature, generator)
    return _best(tokens, _hard_reward(rewards, teacher, tokens, c.cpu()), n)


def best_of_n(method, network, teacher, cond: Tensor, rewards, n: int, temperature: float,
              generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Plain best-of-N: ``n`` one-step samples per condition, the highest reward kept."""
    c = cond.repeat_interleave(n)
    with torch.no_grad():
        tokens = method.generate(network, c, generator, temperature=temperature).cpu()
    return _best(tokens, _hard_reward(rewards, teacher, tokens, c), n)


def _batched(fn, cond: Tensor, batch: int) -> tuple[Tensor, Tensor, float]:
    t0, out = time.perf_counter(), [fn(chunk) for chunk in cond.split(batch)]
    return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out]), time.perf_counter() - t0


def run_tteo(cfg: TTEOConfig, method, teacher, net, resolved: dict, cond: Tensor, seed: int):
    """TTEO tokens for ``cond`` and, with ``compare``, the comparison record (rewards and wall times)."""
    if "init" not in getattr(method, "plugins", {}) or not hasattr(net, "embed_tokens"):
        raise UserError(f"tteo needs a one-step student with an init plugin (dimo, soft_dimo); this run's "
                        f"method is '{resolved['method']['name']}'")
    specs = cfg.rewards if cfg.rewards is not None else (resolved["method"].get("rewards") or ["classifier"])
    try:
        rewards = build_rewards(specs)
    except ValueError as exc:
        raise UserError(f"tteo.rewards: {exc}") from None
    temperature = cfg.temperature or getattr(method.config, "sample_temperature", 1.0)
    g = torch.Generator().manual_seed(seed)
    tokens, scores, secs = _batched(lambda c: tteo_sample(method, net, teacher, c, rewards, cfg, temperature, g),
                                    cond, cfg.batch_size)
    record = {"tteo": {"seeds": cfg.seeds, "iters": cfg.iters, "lr": cfg.lr, "reward": scores.mean().item(),
                       "seconds": secs}, "rewards": validate_rewards(specs), "temperature": temperature,
              "conditions": len(cond)}
    if cfg.compare:
        n = cfg.bon_n or cfg.seeds * (3 * cfg.iters + 1)
        for name, k in (("best_of_n", n), ("one_step", 1)):
            g = torch.Generator().manual_seed(seed)
            _, s, secs = _batched(lambda c: best_of_n(method, net, teacher, c, rewards, k, temperature, g),
                                  cond, max(1, cfg.batch_size * cfg.seeds // k))
            record[name] = {"n": k, "reward": s.mean().item(), "seconds": secs}
    return tokens, record


def format_tteo(record: dict) -> str:
    t = record["tteo"]
    lines = [f"dimo: TTEO {t['seeds']} seeds x {t['iters']} iters: mean reward {t['reward']:.4f} ({t['seconds']:.1f} s)"]
    for name in ("best_of_n", "one_step"):
        if name in record:
            r = record[name]
            lines.append(f"dimo: best-of-{r['n']}{' (equal compute)' if name == 'best_of_n' else ''}: mean reward "
                         f"{r['reward']:.4f} ({r['seconds']:.1f} s)")
    return "\n".join(lines)


class GenerateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    checkpoint: str = Field(description="a run folder or its student.safetensors")
    n: int = Field(64, gt=0, description="samples per class (class-conditional) or in total")
    seed: int = 0
    out: str = Field("samples.png", description="PNG grid; tokens go beside it as .pt")
    steps: int | None = Field(None, gt=0, description="sampling steps for multi-step students")
    tteo: Optional[TTEOConfig] = Field(None, description="test-time embedding optimisation (tteo.seeds=4 "
                                                         "tteo.iters=4 ...); off when not given")


def generate_command(args: list[str]) -> int:
    from pydantic import ValidationError
    from core.export import load_student
    from core.images import save_grid
    values = {}
    for a in args:
        if "=" not in a:
            raise UserError(f"argument '{a}' is not key=value")
        k, v = a.split("=", 1)
        *parents, leaf = k.split(".")   # tteo.seeds=4 -> {"tteo": {"seeds": 4}}
        node = values
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"argument '{a}': '{part}' is a value, not a section")
        node[leaf] = parse_value(v)
    try:
        cfg = GenerateConfig.model_validate(values)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, GenerateConfig, "generate")) from None
    method, teacher, net, resolved = load_student(cfg.checkpoint)
    g = torch.Generator().manual_seed(cfg.seed)
    cond = torch.arange(teacher.num_classes).repeat_interleave(cfg.n)
    kwargs = {"steps": cfg.steps} if cfg.steps else {}
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if cfg.tteo is not None:
        tokens, record = run_tteo(cfg.tteo, method, teacher, net, resolved, cond, cfg.seed)
        print(format_tteo(record))
        if cfg.tteo.compare:
            path = out.with_suffix(".tteo.json")
            path.write_text(json.dumps({"checkpoint": cfg.checkpoint, "seed": cfg.seed, **record}, indent=1))
            print(f"dimo: comparison written to {path}")
    else:
        with torch.no_grad():
            tokens = method.generate(net, cond, g, **kwargs)
    save_grid(teacher.decode(tokens), cond, out, per_class=min(cfg.n, 16))
    torch.save({"tokens": tokens, "cond": cond}, out.with_suffix(".pt"))
    print(f"dimo: {len(cond)} samples -> {out} (tokens in {out.with_suffix('.pt')})")
    return 0
