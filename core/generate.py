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
import time
from pathlib import Path
from typing import Literal, Optional

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from core.config import RunConfig, format_validation_error
from core.errors import UserError


# ---------------------------------------------------------------------------------------------------
# Test-time search (the ``tteo`` search plugin), compared with best-of-N at equal compute
# ---------------------------------------------------------------------------------------------------

class SearchOptions(BaseModel):
    """generate's own ``tteo.*`` options; the other keys configure the ``tteo`` search plugin (its Config)."""
    model_config = ConfigDict(extra="allow")
    temperature: Optional[float] = Field(None, gt=0, description="final token sampling temperature "
                                                                 "(default: the run's sample_temperature)")
    compare: bool = Field(True, description="also run best-of-N at equal compute and one-step sampling; print "
                                            "and write <out>.tteo.json")
    bon_n: Optional[int] = Field(None, gt=0, description="best-of-N samples; default the search's cost in "
                                                         "generator+reward forwards (TTEO: N (3K + 1))")
    batch_size: int = Field(64, gt=0, description="conditions searched together")


def build_search(name: str, values: dict, resolved: RunConfig):
    """The search plugin ``name`` with ``values``; rewards default to the run's method.rewards, else the
    classifier."""
    from pydantic import ValidationError
    from registry import get_registry
    cls = get_registry().get("search", name)
    values = dict(values)
    if values.get("rewards") is None:
        values["rewards"] = resolved["method"].get("rewards") or ["classifier"]
    try:
        return cls(cls.Config.model_validate(values))
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, cls.Config, name)) from None


def _batched(search, method, net, teacher, cond: Tensor, batch: int, temperature: float, seed: int):
    """(tokens, rewards, seconds) of ``search`` over ``cond`` in chunks of ``batch`` conditions."""
    g, t0 = torch.Generator().manual_seed(seed), time.perf_counter()
    out = [search.search(method, net, teacher, chunk, temperature, g) for chunk in cond.split(batch)]
    return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out]), time.perf_counter() - t0


def run_tteo(opts: SearchOptions, method, teacher, net, resolved: RunConfig, cond: Tensor, seed: int):
    """TTEO tokens for ``cond`` and, with ``compare``, the comparison record (rewards and wall times)."""
    if "init" not in getattr(method, "plugins", {}) or not hasattr(net, "embed_tokens"):
        raise UserError(f"tteo needs a one-step student with an init plugin (dimo, soft_dimo); this run's "
                        f"method is '{resolved['method']['name']}'")
    tteo = build_search("tteo", opts.model_extra, resolved)
    temperature = opts.temperature or getattr(method.config, "sample_temperature", 1.0)
    tokens, scores, secs = _batched(tteo, method, net, teacher, cond, opts.batch_size, temperature, seed)
    record = {"tteo": {**tteo.config.model_dump(exclude={"rewards"}), "reward": scores.mean().item(),
                       "seconds": secs},
              "rewards": tteo.config.rewards, "temperature": temperature, "conditions": len(cond)}
    if opts.compare:
        for name, k in (("best_of_n", opts.bon_n or tteo.cost()), ("one_step", 1)):
            bon = build_search("best_of_n", {"n": k, "rewards": tteo.config.rewards}, resolved)
            batch = max(1, opts.batch_size * tteo.config.seeds // k)
            _, s, secs = _batched(bon, method, net, teacher, cond, batch, temperature, seed)
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
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: this process's GPU if there is one")
    tteo: Optional[SearchOptions] = Field(None, description="test-time embedding optimisation (tteo.seeds=4 "
                                                            "tteo.iters=4 ...: the tteo search plugin); off "
                                                            "when not given")


def generate_command(args: list[str]) -> int:
    from pydantic import ValidationError
    from core.export import load_student
    from core.images import save_labelled_grid
    from core.cli import parse_kv
    values = parse_kv(args, "checkpoint=runs/x n=8 tteo.seeds=4")
    try:
        cfg = GenerateConfig.model_validate(values)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, GenerateConfig, "generate")) from None
    if Path(cfg.out).expanduser().is_dir():
        raise UserError(f"out='{cfg.out}' is a folder; give a file name such as {Path(cfg.out) / 'samples.png'}")
    from core.errors import check_writable_dir
    check_writable_dir(Path(cfg.out).expanduser().parent, "out", cfg.out)   # before any sampling
    from core.distributed import compute_device
    method, teacher, net, resolved = load_student(cfg.checkpoint, compute_device(cfg.device))
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
    note = save_labelled_grid(teacher.decode_with(tokens, cond), cond, out)
    torch.save({"tokens": tokens, "cond": cond}, out.with_suffix(".pt"))
    print(f"dimo: {len(cond)} samples ({cfg.n} per class) -> {out}" + (f"; {note}" if note else "") +
          f"; every sample's tokens in {out.with_suffix('.pt')}")
    return 0
