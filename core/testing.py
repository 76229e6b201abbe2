"""A test kit for dimo plugins: the checks a plugin package's own tests call (examples/*/tests use it).

    from core.testing import check_teacher, run_method

    def test_my_teacher_fits_the_interface():
        check_teacher("my_teacher", {"size": 4})          # a tiny configuration, random weights

    def test_my_method_trains_exports_and_generates(tmp_path):
        run_method(tmp_path, method="my_method", teacher="digits", teacher_config=TINY_DIGITS)

``check_teacher`` exercises the declared :class:`core.interfaces.Teacher` hooks; ``run_method`` runs the main
job (pre-training the teacher with ``mdm`` if it has no weights, a few engine steps, the evaluation when the
teacher has an evaluator), then loads the exported student back and samples at each of the method's step
counts. Failures raise AssertionError naming the hook and what was expected.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F

TINY_DIGITS = {"arch": {"dim": 32, "depth": 1, "heads": 2}}   # the digits teacher at test size
QUIET = {"wandb": "disabled", "progress": False}


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise AssertionError(what)


def check_teacher(name: str, config: Optional[dict] = None, batch: int = 2):
    """Build teacher ``name`` and check its model, codec and network against the declared interface."""
    from registry.registry import build
    teacher = build("teacher", name, config or {})
    label = f"teacher '{name}'"
    net = teacher.build_network(load_weights=False).eval()
    g = torch.Generator().manual_seed(0)
    cond = teacher.sample_conditions(batch, g)
    tokens = torch.randint(0, teacher.vocab_size, (batch, teacher.seq_len), generator=g)
    shape = (batch, teacher.seq_len, teacher.vocab_size)
    with torch.no_grad():
        logits = net(tokens, cond)
        _require(tuple(logits.shape) == shape, f"{label}: network(tokens, cond) gave {tuple(logits.shape)}, "
                                               f"expected [B, L, V] = {shape}")
        via_embeds = net(None, cond, inputs_embeds=net.embed_tokens(tokens))
        _require(torch.allclose(via_embeds, logits, atol=1e-5),
                 f"{label}: network(None, cond, inputs_embeds=embed_tokens(tokens)) differs from network(tokens)")
        masked = torch.full_like(tokens, teacher.mask_id)
        _require(tuple(net(masked, teacher.null_condition(cond)).shape) == shape,
                 f"{label}: the all-[M], unconditional forward (CFG's branch) has the wrong shape")
        rows = net.code_embeddings()
        _require(rows.shape[0] == teacher.vocab_size, f"{label}: code_embeddings() has {rows.shape[0]} rows, "
                                                      f"expected vocab_size={teacher.vocab_size}")
        images = teacher.decode(tokens)
        _require(tuple(images.shape) == (batch, *teacher.image_shape),
                 f"{label}: decode gave {tuple(images.shape)}, expected [B, *image_shape]")
        _require(bool(((images >= 0) & (images <= 1)).all()), f"{label}: decode must return images in [0, 1]")
        soft = teacher.decode_soft(F.one_hot(tokens, teacher.vocab_size).float())
        _require(torch.allclose(soft, images, atol=1e-4), f"{label}: decode_soft(one_hot(x)) != decode(x)")
        if teacher.has_encoder():
            _require(tuple(teacher.encode(images).shape) == (batch, teacher.seq_len),
                     f"{label}: encode(decode(x)) must be a [B, L] token grid")
    own = {id(p) for p in net.parameters()}
    _require(all(id(p) in own for p in net.frozen_parameters()),
             f"{label}: frozen_parameters() must be parameters of the network")
    return teacher


@dataclass
class MethodRun:
    run_dir: Path
    summary: dict
    method: Any
    teacher: Any
    student: torch.nn.Module
    samples: dict       # step count -> tokens [N, L]


def _flatten(prefix: str, values: dict) -> list[str]:
    out = []
    for k, v in values.items():
        key = f"{prefix}.{k}"
        out += _flatten(key, v) if isinstance(v, dict) else [f"{key}={v}"]
    return out


def run_method(tmp_path, method: str, teacher: str = "digits", teacher_config: Optional[dict] = None,
               steps: int = 2, batch_size: int = 4, evaluate: bool = False, args: tuple[str, ...] = (),
               samples: int = 4) -> MethodRun:
    """The main job of ``method`` on ``teacher`` for ``steps`` steps (one micro-step each, whatever a recipe's
    ``trainer.grad_accum``) in ``tmp_path``, then export -> load -> generate. With ``evaluate`` the evaluation
    runs too (``eval.samples_per_class=4``, teacher at 1 step)."""
    from core.config import resolve
    from core.export import load_student
    from core.pipeline import main_job
    run_dir = Path(tmp_path) / f"{method}-{teacher}"
    config = teacher_config if teacher_config is not None else (TINY_DIGITS if teacher == "digits" else {})
    resolved = resolve([f"method={method}", f"teacher={teacher}", *_flatten("teacher", config),
                        *_flatten("trainer", QUIET), f"trainer.steps={steps}", f"trainer.batch_size={batch_size}",
                        "trainer.grad_accum=1", f"trainer.output_dir={run_dir}", f"eval.enabled={evaluate}",
                        "eval.samples_per_class=4", "eval.teacher_steps=[1]", *args])
    summary = main_job(resolved)
    _require((run_dir / "student.safetensors").is_file() and (run_dir / "student.json").is_file(),
             f"method '{method}': no exported student in {run_dir}")
    if evaluate and resolved_has_evaluator(teacher, config):
        _require(bool(summary.get("rows")), f"method '{method}': the evaluation produced no rows")
    loaded, the_teacher, student, _ = load_student(str(run_dir))
    cond = the_teacher.sample_conditions(samples, torch.Generator().manual_seed(0))
    out = {}
    for k in loaded.sample_steps:
        tokens = loaded.generate(student, cond, torch.Generator().manual_seed(1), steps=k)
        _require(tuple(tokens.shape) == (samples, the_teacher.seq_len),
                 f"method '{method}': generate(steps={k}) gave {tuple(tokens.shape)}, expected [N, L]")
        _require(bool(((tokens >= 0) & (tokens < the_teacher.vocab_size)).all()),
                 f"method '{method}': generate(steps={k}) returned ids outside the codes 0..V-1")
        out[k] = tokens
    return MethodRun(run_dir, summary, loaded, the_teacher, student, out)


def resolved_has_evaluator(teacher: str, config: dict) -> bool:
    from registry.registry import build
    return build("teacher", teacher, config).evaluator() is not None
