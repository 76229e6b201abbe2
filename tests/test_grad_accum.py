"""trainer.grad_accum: each optimizer step accumulates gradients over k micro-steps (DeepSpeed's own
gradient_accumulation_steps), with every role's n-th update accumulated over all micro-steps before any goes on
(core.engine.Lockstep, the official Di[M]O order); steps, EMA, warm-up, logs and checkpoints count optimizer steps."""
import functools
import json
import math
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, TINY, clean_env
from core.config import resolve
from core.engine import Lockstep, Trainer
from core.errors import UserError
from plugins.schedules import Arccos
from test_baselines import ENGINE_RUNS
from test_multiprocess import free_port


def trained(cfg) -> tuple[Trainer, dict]:
    trainer = Trainer(cfg)
    trainer.train()
    role = trainer.method.student_role
    return trainer, {k: v.detach().clone() for k, v in trainer._module(role).state_dict().items()}


class GradientsSeen(Trainer):
    """Records the gradients torch's Adam steps with (ZeRO-0, fp32: the engine's optimizer is the torch one)."""
    def setup(self):
        super().setup()
        self.grads = []
        self.engines["network"].optimizer.register_step_pre_hook(lambda opt, args, kwargs: self.grads.append(
            [p.grad.clone() for group in opt.param_groups for p in group["params"]]))


def test_mdm_k_micro_batches_update_as_one_batch_of_the_same_samples(tmp_path, monkeypatch):
    # Every token masked, no class dropout, no dropout: the loss is the plain mean over the batch's tokens and
    # no random draw changes it, so k micro-batches of 8 / k must give Adam the gradient of one batch of the same 8
    # at every step. (Weights are not compared: Adam's first steps move a parameter whose gradient is zero up to
    # float noise, e.g. attention's key bias, by +-lr whatever the noise's sign.)
    monkeypatch.setattr(Arccos, "gamma", lambda self, r: torch.ones_like(r))
    base = ["method=mdm", "trainer.steps=3", "trainer.batch_size=8", "method.class_dropout=0", "teacher.arch.dropout=0",
            "method.ema_decay=null", "method.warmup_steps=2", "method.cache_teacher=false", "trainer.precision=fp32",
            *TINY]
    runs = {}
    for k in (1, 2, 4):
        trainer = GradientsSeen(resolve([*base, f"trainer.grad_accum={k}", f"trainer.output_dir={tmp_path / str(k)}"]))
        trainer.train()
        assert trainer.micro == 8 // k and trainer.engines["network"].global_steps == 3 == len(trainer.grads)
        runs[k] = trainer
    one = runs[1]
    for k in (2, 4):
        for step, (expected, got) in enumerate(zip(one.grads, runs[k].grads)):
            for e, g in zip(expected, got):
                torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-7, msg=f"k={k}, step {step + 1}")
    assert not torch.equal(one.grads[0][0], one.grads[2][0])   # the weights moved: later steps saw new gradients


class Recording(Trainer):
    """Records each backward, (role, whether it is the role's accumulation boundary), and each weight copy."""
    def setup(self):
        super().setup()
        self.calls = []

    def _backward_and_step(self, role, loss):
        self.calls.append((role, self.engines[role].is_gradient_accumulation_boundary()))
        super()._backward_and_step(role, loss)

    def _copy_weights(self, dst, src):
        self.calls.append(("copy", None))
        super()._copy_weights(dst, src)


@pytest.mark.parametrize("stage", [0, 2, 3])
def test_dimo_accumulates_generator_then_aux_at_zero_stage(tiny_teacher, tmp_path, stage):
    steps = 2
    cfg = resolve(["method=dimo", f"trainer.steps={steps}", "trainer.batch_size=8", "trainer.grad_accum=2",
                   f"trainer.zero_stage={stage}", "trainer.log_every=1", f"trainer.output_dir={tmp_path}",
                   *tiny_teacher])
    trainer = Recording(cfg)
    history = trainer.train().history
    # the official order: both generator micro-batches and its step, then both aux micro-batches (sampled from
    # the updated generator) and the aux step
    assert trainer.calls == [("generator", False), ("generator", True), ("aux", False), ("aux", True)] * steps
    assert all(e.global_steps == steps and e.micro_steps == 2 * steps for e in trainer.engines.values())
    assert [r["step"] for r in history] == [1, 2]
    assert all(torch.isfinite(torch.tensor(r["aux_loss"])) and r["lr"] > 0 for r in history)


OTHER_METHODS = {**ENGINE_RUNS, "soft_dimo": ["method.aux_warmup_steps=0"]}   # soft_dimo: GAN and reward on


@pytest.mark.parametrize("name", list(OTHER_METHODS))
def test_every_built_in_method_accumulates(tiny_teacher, tmp_path, name):
    steps = 3
    cfg = resolve([f"method={name}", f"trainer.steps={steps}", "trainer.batch_size=4", "trainer.grad_accum=2",
                   "trainer.log_every=1", f"trainer.output_dir={tmp_path}", *OTHER_METHODS[name], *tiny_teacher])
    trainer = Recording(cfg)
    history = trainer.train().history
    assert len(history) == steps
    assert not [(h["step"], k) for h in history for k, v in h.items()   # div_t/: nan where no sample fell in the bin
                if not (math.isfinite(v) or k.startswith("div_t/"))]
    for role, engine in trainer.engines.items():   # every role steps once per optimizer step, over 2 micro-steps
        assert engine.global_steps == steps and engine.micro_steps == 2 * steps, role
        assert [b for r, b in trainer.calls if r == role] == [False, True] * steps, role
    if name in ("sdtt", "redi"):   # a step's copy into the frozen role takes the student's stepped weights
        assert trainer.calls[:4] == [("student", False), ("student", True), ("copy", None), ("copy", None)]


@pytest.mark.slow
def test_two_processes_accumulate_under_torchrun(tiny_teacher, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "core.run", "method=dimo", "trainer.steps=2", "trainer.batch_size=8", "trainer.grad_accum=2",
           "trainer.zero_stage=2", "trainer.log_every=1", f"trainer.output_dir={out}", *tiny_teacher]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env=clean_env({"OMP_NUM_THREADS": "1"}))
    assert run.returncode == 0, run.stderr[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and (out / "student.safetensors").is_file()


def dimo_k2(out, tiny, *extra):
    return resolve(["method=dimo", "trainer.steps=4", "trainer.batch_size=4", "trainer.grad_accum=2",
                    "trainer.checkpoint_every=2", f"trainer.output_dir={out}", *tiny, *extra])


def test_resume_with_accumulation_is_bit_identical(tiny_teacher, tmp_path):
    _, straight = trained(dimo_k2(tmp_path / "straight", tiny_teacher))
    shutil.copytree(tmp_path / "straight" / "checkpoints" / "step-00000002",
                    tmp_path / "resumed" / "checkpoints" / "step-00000002")
    trainer, resumed = trained(dimo_k2(tmp_path / "resumed", tiny_teacher))
    assert trainer.engines["generator"].global_steps == 4    # 2 restored + 2 run
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


class NanInFirstMicroStep(Trainer):
    """MDM whose first micro-step of step 2 gets a nan loss; keeps the weights after every step."""
    def _backward_and_step(self, role, loss):
        first = self.engines[role].micro_steps % self.accum == 0
        super()._backward_and_step(role, loss * float("nan") if self.health.step == 1 and first else loss)

    def setup(self):
        super().setup()
        self.weights = []

    def _update_ema(self, step):
        super()._update_ema(step)
        self.weights.append([p.detach().clone() for p in self._module("network").parameters()])


def test_skip_drops_the_whole_accumulated_update_of_a_non_finite_micro_step(tmp_path):
    cfg = resolve(["method=mdm", "trainer.steps=3", "trainer.batch_size=8", "trainer.grad_accum=2",
                   "trainer.on_nonfinite=skip", "trainer.log_every=2", "method.cache_teacher=false",
                   f"trainer.output_dir={tmp_path}", *TINY])
    trainer = NanInFirstMicroStep(cfg)
    history = trainer.train().history
    before, dropped, after = trainer.weights
    assert all(torch.equal(a, b) for a, b in zip(before, dropped))          # step 2 changed nothing
    assert not all(torch.equal(a, b) for a, b in zip(dropped, after))       # step 3 trained again
    assert [(h["step"], h.get("skipped_updates/network"), h.get("nonfinite/network")) for h in history] == [
        (2, 1, 1), (3, None, None)]                                          # one update dropped, counted once
    engine = trainer.engines["network"]
    assert engine.global_steps == 3 and engine.micro_steps == 6 and engine.skipped_steps == 1


def test_lockstep_runs_micro_steps_round_robin_between_updates_and_reraises_an_error():
    order, running = [], {}

    def micro_step(i, fail=False):
        order.append((i, "before update"))
        running["lockstep"].pause()
        if fail:
            raise ValueError(f"micro-step {i} failed")
        order.append((i, "after update"))
        return i

    running["lockstep"] = Lockstep([functools.partial(micro_step, i) for i in range(3)], torch.device("cpu"))
    assert running["lockstep"].run() == [0, 1, 2]
    assert order == [(i, "before update") for i in range(3)] + [(i, "after update") for i in range(3)]
    running["lockstep"] = Lockstep([functools.partial(micro_step, i, fail=i == 1) for i in range(3)],
                                   torch.device("cpu"))
    with pytest.raises(ValueError, match="micro-step 1 failed"):   # the others end; nothing hangs
        running["lockstep"].run()


def test_bad_grad_accum_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match=r"trainer\.grad_accum"):
        resolve(["trainer.grad_accum=0"])
    cfg = resolve(["method=mdm", "trainer.batch_size=6", "trainer.grad_accum=4", f"trainer.output_dir={tmp_path}",
                   *TINY])
    with pytest.raises(UserError, match=r"trainer\.batch_size=6 .* trainer\.grad_accum=4; valid batch sizes: "
                                        r"multiples of 4"):
        Trainer(cfg).setup()
