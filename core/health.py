"""Non-finite losses and gradients, per trainable role (``trainer.on_nonfinite``).

Every optimizer update goes through :meth:`Health.observe` between ``backward`` and the optimizer step. It
records, on the device and without a host sync, whether the role's loss and gradient norm are finite, the
first step where they were not, and the last finite values. :meth:`Health.check` reads that state (one sync)
at log steps and before every checkpoint, so a non-finite state is never saved:

* ``stop`` (default): raise :class:`NonFiniteError` naming step, role and last finite values; the last
  complete checkpoint stays the newest one, so ``trainer.resume=auto`` restarts from it;
* ``skip``: check every update (one host sync per update) and drop the update of a role whose loss or
  gradients are not finite (parameters and optimizer state untouched; with ``trainer.grad_accum`` > 1 a
  non-finite micro-step drops the whole accumulated update); counted and reported at log steps;
* ``warn``: keep training; print a warning at each log step that saw non-finite values.

Roles with ``Role.nan_to_num`` (official Di[M]O) repair non-finite gradients by design: those are counted
(``nonfinite_grads/<role>``), while a non-finite *loss* is handled as above.
"""
from __future__ import annotations

import math
import sys
from typing import Optional

import torch

from core.errors import UserError

MODES = ("stop", "skip", "warn")
EXIT_CODE = 3


class NonFiniteError(UserError):
    """Training produced nan/inf and ``trainer.on_nonfinite=stop``. ``python -m core.run`` exits with 3."""
    exit_code = EXIT_CODE


def grad_norm(params) -> Optional[torch.Tensor]:
    """The global 2-norm of the gradients present (a device scalar; nan/inf if any entry is), or None when
    no parameter holds a gradient (ZeRO-2/3 keep them in partitions: see ``engine_grad_norm``)."""
    grads = [p.grad for p in params if p.grad is not None]
    return _norm(grads)


def engine_grad_norm(engine) -> Optional[torch.Tensor]:
    """The norm of a role's gradients at an accumulation boundary: the parameters' own, else the partitions a
    ZeRO optimizer reduced them into (``averaged_gradients``: this rank's share, the whole of it in one
    process), so non-finite gradients are seen at every stage."""
    norm = grad_norm(engine.module.parameters())
    if norm is not None:
        return norm
    parts = getattr(getattr(engine, "optimizer", None), "averaged_gradients", None) or {}
    grads = [g for v in parts.values() if v is not None for g in (v if isinstance(v, (list, tuple)) else [v])]
    return _norm([g for g in grads if torch.is_tensor(g)])


def _norm(grads: list) -> Optional[torch.Tensor]:
    if not grads:
        return None
    norms = torch._foreach_norm(grads)   # one fused kernel, no host sync
    return torch.linalg.vector_norm(torch.stack([n.float() for n in norms]))


def finite_json(value):
    """JSON cannot hold nan/inf: non-finite floats become None (``null``), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


class _RoleState:
    def __init__(self, device):
        z = lambda dtype, v: torch.full((), v, dtype=dtype, device=device)
        self.bad = z(torch.int64, 0)              # non-finite updates since the last check
        self.total_bad = 0                         # host-side, over the run
        self.first_bad = z(torch.int64, -1)       # first step with a non-finite update since the last check
        self.bad_loss = z(torch.float64, 0.0)     # the loss at first_bad
        self.bad_grad = z(torch.float64, 0.0)     # the gradient norm at first_bad
        self.last_loss = z(torch.float64, math.nan)
        self.last_grad = z(torch.float64, math.nan)
        self.last_step = z(torch.int64, -1)       # last step whose loss and gradients were finite
        self.repaired = z(torch.int64, 0)         # nan_to_num roles: updates with repaired gradients
        self.has_grad = False                      # gradients were readable (not partitioned by ZeRO-2/3)
        self.micro_losses: list = []               # the losses of the update's micro-steps so far (grad_accum > 1)


class Health:
    """Engine hooks: set ``step`` at the start of each step; ``observe`` in every update; ``summary`` (counters
    for the metric record) at log steps; ``enforce`` after logging and before every checkpoint."""

    def __init__(self, mode: str, world: int = 1, nan_to_num_roles=()):
        if mode not in MODES:
            raise UserError(f"trainer.on_nonfinite='{mode}' is not valid; valid: {', '.join(MODES)}")
        self.mode, self.world = mode, world
        self.nan_to_num_roles = set(nan_to_num_roles)
        self.step = 0
        self.roles: dict[str, _RoleState] = {}
        self.problems: list[str] = []
        self.updates: dict[str, int] = {}       # host counters since the last summary (skip mode)
        self.skipped: dict[str, int] = {}
        self.escalate = False                   # skip mode meets a role that never recovers: stop anyway

    def observe(self, role: str, loss: torch.Tensor, engine, boundary: bool = True) -> bool:
        """Record one update of ``role`` after backward, before the optimizer step. With gradient accumulation
        it is called every micro-step and records the update at its ``boundary`` (the last micro-step): the
        micro-steps' mean loss and the accumulated gradients. Returns False when the update was dropped (mode
        ``skip`` only, which syncs here; the other modes never do)."""
        loss = loss.detach().float().sum()
        s = self.roles.get(role) or self.roles.setdefault(role, _RoleState(loss.device))
        s.micro_losses.append(loss)
        if not boundary:
            return True
        loss, s.micro_losses = torch.stack(s.micro_losses).mean(), []
        gnorm = engine_grad_norm(engine)
        s.has_grad = s.has_grad or gnorm is not None
        loss_ok = torch.isfinite(loss)
        grad_ok = torch.isfinite(gnorm) if gnorm is not None else torch.ones_like(loss_ok)
        if role in self.nan_to_num_roles:      # repaired by the engine, as the official code does
            s.repaired += (~grad_ok).long()
            grad_ok = torch.ones_like(grad_ok)
        ok = loss_ok & grad_ok
        if self.mode == "skip":
            ok = self._all_ranks(ok)
        first = (~ok) & (s.first_bad < 0)
        gnorm64 = gnorm.double() if gnorm is not None else torch.zeros_like(s.last_grad)
        s.first_bad = torch.where(first, torch.full_like(s.first_bad, self.step), s.first_bad)
        s.bad_loss = torch.where(first, loss.double(), s.bad_loss)
        s.bad_grad = torch.where(first, gnorm64, s.bad_grad)
        s.bad += (~ok).long()
        s.last_loss = torch.where(ok, loss.double(), s.last_loss)
        s.last_grad = torch.where(ok, gnorm64, s.last_grad)
        s.last_step = torch.where(ok, torch.full_like(s.last_step, self.step), s.last_step)
        if self.mode != "skip":
            return True
        self.updates[role] = self.updates.get(role, 0) + 1
        if bool(ok):                            # the one host sync per update of mode skip
            return True
        self.skipped[role] = self.skipped.get(role, 0) + 1
        skip_update(engine)
        return False

    def _all_ranks(self, flag: torch.Tensor) -> torch.Tensor:
        """True only if true on every process, so that all ranks take the same branch."""
        if self.world <= 1:
            return flag
        t = flag.to(torch.int32).reshape(1)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
        return t[0].bool()

    def _sum_ranks(self, t: torch.Tensor) -> int:
        if self.world > 1:
            t = t.clone()
            torch.distributed.all_reduce(t)
        return int(t)

    def summary(self) -> dict:
        """Read the device state (one sync) into counters for the metric record; remembers what went wrong."""
        record = {}
        for role, s in sorted(self.roles.items()):
            repaired, bad = self._sum_ranks(s.repaired), self._sum_ranks(s.bad)
            if repaired:
                record[f"nonfinite_grads/{role}"] = repaired
                s.repaired.zero_()
            if not bad:
                continue
            s.total_bad += bad
            record[f"nonfinite/{role}"] = bad
            self.problems.append(self._describe(role, s, bad))
            if self.mode == "skip" and self.skipped.get(role, 0) == self.updates.get(role, 0):
                self.problems.append(f"role '{role}': every update since the last log step was non-finite; "
                                     f"skipping cannot recover from that")
                self.escalate = True
            s.bad.zero_()
            s.first_bad.fill_(-1)
        if self.skipped:
            record.update({f"skipped_updates/{r}": n for r, n in self.skipped.items()})
        self.updates, self.skipped = {}, {}
        return record

    def enforce(self) -> None:
        """Stop (raise :class:`NonFiniteError`) or warn about what :meth:`summary` found; a no-op otherwise."""
        self.summary()
        problems, self.problems = self.problems, []
        stop = self.mode == "stop" or self.escalate
        if problems and stop:
            raise NonFiniteError(
                f"training stopped at step {self.step + 1}: non-finite values "
                f"(trainer.on_nonfinite={self.mode}).\n  " + "\n  ".join(problems) +
                "\n  The last complete checkpoint is kept (resume with trainer.resume=auto). Common causes: a "
                "learning rate too high, or a divergence/CFG setting that overflows. trainer.on_nonfinite=skip "
                "drops such updates instead; warn only reports them.")
        if problems and self.mode != "stop":
            print(f"dimo: warning at step {self.step + 1} (trainer.on_nonfinite={self.mode}, training goes on):"
                  f"\n  " + "\n  ".join(problems), file=sys.stderr)

    def explain(self, exc: BaseException, modules: dict) -> Optional[NonFiniteError]:
        """A step that raised (e.g. sampling from nan probabilities): a :class:`NonFiniteError` naming the step,
        the roles and their last finite values when nan/inf caused it, else None (the error is someone else's).
        ``modules``: the trainable roles' networks, whose parameters are checked once, here."""
        self.summary()
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        params = []
        for role, module in modules.items():
            with torch.no_grad():
                top = max((p.detach().abs().max().float() for p in module.parameters() if p.numel()),
                          default=torch.tensor(0.0))
            top = float(top)
            if not math.isfinite(top):
                params.append(f"role '{role}': parameters hold nan/inf")
            elif top > 1e30:   # finite, but any matmul with them overflows float32
                params.append(f"role '{role}': parameters reach {top:.3g}")
        if not self.problems and not params and not any(w in text.lower() for w in ("nan", "inf")):
            return None
        last = [f"role '{r}': last finite values at step {int(s.last_step) + 1}: loss {float(s.last_loss):.6g}"
                for r, s in sorted(self.roles.items()) if int(s.last_step) >= 0]
        lines, self.problems = self.problems + params + last, []
        return NonFiniteError(
            f"training stopped at step {self.step + 1}: the step failed ({type(exc).__name__}: {text}) on non-finite "
            f"or overflowing values.\n  " + "\n  ".join(lines) + "\n  The last complete checkpoint is kept (resume "
            "with trainer.resume=auto). Common causes: a learning rate too high, or a divergence/CFG setting that "
            "overflows.")

    def _describe(self, role: str, s: _RoleState, bad: int) -> str:
        first, last = int(s.first_bad) + 1, int(s.last_step) + 1
        grad = lambda v: f", gradient norm {float(v):.6g}" if s.has_grad else ""
        done = "skipped" if self.mode == "skip" else "non-finite"
        before = (f"last finite values at step {last}: loss {float(s.last_loss):.6g}{grad(s.last_grad)}"
                  if last > 0 else "no finite update before it")
        return (f"role '{role}': {bad} {done} update(s), the first at step {first} (loss "
                f"{float(s.bad_loss):.6g}{grad(s.bad_grad)}); {before}")

    @property
    def total(self) -> int:
        """Non-finite updates over the run (as of the last summary)."""
        return sum(s.total_bad for s in self.roles.values())


def skip_update(engine) -> None:
    """Drop this update: parameters and optimizer state stay as they were, the learning-rate schedule and the
    engine's step counters advance as if it had run. The optimizer's zero_grad also clears the reduced
    gradient buffers of DeepSpeed's ZeRO optimizers (checked at stages 0, 1 and 2)."""
    engine.optimizer.zero_grad(set_to_none=True)
    if engine.lr_scheduler is not None:
        engine.lr_scheduler.step()
    engine.global_steps += 1
    engine.skipped_steps += 1
    engine.micro_steps += 1   # as engine.step() would: the next accumulation boundary stays where it was
