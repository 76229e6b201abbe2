"""Non-finite losses and gradients (trainer.on_nonfinite): stop with step, role and last finite values keeping the
last good checkpoint, skip the update, or warn; metrics.jsonl stays strict JSON."""
import json
import math

import pytest
import torch

from core.config import resolve
from core.engine import Trainer
from core.health import EXIT_CODE, NonFiniteError
from conftest import TINY

BAD_STEP = 3     # 0-based: the 4th update of the run gets a nan loss


class NanAt(Trainer):
    """A trainer whose role ``network`` gets a nan loss at the given steps (as a huge learning rate would)."""
    bad_steps = (BAD_STEP,)

    def _update(self, role, loss):
        if self.health.step in self.bad_steps:
            self.before = [p.detach().clone() for p in self._module(role).parameters()]
            loss = loss * float("nan")
        super()._update(role, loss)
        if self.health.step in self.bad_steps:
            self.after = [p.detach().clone() for p in self._module(role).parameters()]


def mdm(tmp_path, mode, steps=6, *extra):
    return resolve(["method=mdm", f"trainer.steps={steps}", "trainer.batch_size=8", "trainer.log_every=2",
                    "trainer.checkpoint_every=2", f"trainer.on_nonfinite={mode}", f"trainer.output_dir={tmp_path}",
                    *TINY, *extra])


def strict_records(run_dir):
    def refuse(constant):
        raise ValueError(f"bare {constant} in metrics.jsonl")
    return [json.loads(line, parse_constant=refuse) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_stop_names_step_role_and_last_finite_values_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteError) as exc:
        NanAt(mdm(tmp_path, "stop")).train()
    msg = str(exc.value)
    assert "role 'network'" in msg and f"the first at step {BAD_STEP + 1}" in msg
    assert f"last finite values at step {BAD_STEP}: loss " in msg and "gradient norm" in msg
    assert "trainer.resume=auto" in msg and exc.value.exit_code == EXIT_CODE == 3
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert ckpts == ["step-00000002"]                     # the non-finite state at step 4 was never saved
    assert not (tmp_path / "student.safetensors").exists()
    records = strict_records(tmp_path)
    assert records[-1]["step"] == 4 and records[-1]["nonfinite/network"] == 1


def test_skip_drops_the_update_and_training_goes_on(tmp_path, capsys):
    trainer = NanAt(mdm(tmp_path, "skip"))
    result = trainer.train()
    assert all(torch.equal(a, b) for a, b in zip(trainer.before, trainer.after))   # parameters untouched
    assert all(torch.isfinite(p).all() for p in trainer._module("network").parameters())
    assert result.student_path.is_file()
    records = strict_records(tmp_path)
    assert records[1]["step"] == 4 and records[1]["skipped_updates/network"] == 1
    assert all("skipped_updates/network" not in r for r in records if r["step"] != 4)
    assert trainer.engines["network"].lr_scheduler.last_epoch == 6   # the schedule advanced on every step
    assert "1 skipped update(s), the first at step 4" in capsys.readouterr().err


def test_skip_that_never_recovers_stops(tmp_path):
    class AlwaysNan(NanAt):
        bad_steps = tuple(range(2, 6))
    with pytest.raises(NonFiniteError, match="every update since the last log step was non-finite"):
        AlwaysNan(mdm(tmp_path, "skip")).train()


def test_warn_goes_on_and_metrics_stay_strict_json(tmp_path, capsys):
    NanAt(mdm(tmp_path, "warn")).train()
    err = capsys.readouterr().err
    assert "dimo: warning at step 4" in err and "role 'network'" in err
    records = strict_records(tmp_path)           # nan losses are written as null, never as bare NaN
    assert [r["step"] for r in records] == [2, 4, 6] and records[2]["loss"] is None
    assert math.isfinite(records[0]["loss"])


def test_a_clean_run_reports_nothing(tmp_path, capsys):
    Trainer(mdm(tmp_path, "stop", 4)).train()
    assert not any(k.startswith(("nonfinite", "skipped")) for r in strict_records(tmp_path) for k in r)
    assert "non-finite" not in capsys.readouterr().err


def test_cli_exit_code_3(monkeypatch, capsys):
    from core.run import main

    def diverge(args):
        raise NonFiniteError("training stopped at step 7: non-finite values")
    monkeypatch.setattr("core.run.cmd_train", diverge)
    assert main(["trainer.steps=1"]) == 3
    assert "training stopped at step 7" in capsys.readouterr().err


def test_a_step_that_crashes_on_nan_names_step_roles_and_last_values(tmp_path):
    """A huge learning rate typically crashes inside the next step (sampling from nan probabilities) before any
    loss is seen: the error names the step and the roles instead of torch's traceback."""
    class CrashAfterNan(NanAt):
        def setup(self):
            super().setup()
            step = self.method.train_step

            def train_step(ctx):
                if ctx.step == BAD_STEP + 1:
                    raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
                return step(ctx)
            self.method.train_step = train_step
    with pytest.raises(NonFiniteError) as exc:
        CrashAfterNan(mdm(tmp_path, "warn")).train()
    msg = str(exc.value)
    assert f"training stopped at step {BAD_STEP + 2}" in msg and "probability tensor" in msg
    assert "role 'network': parameters hold nan/inf" in msg and f"last finite values at step {BAD_STEP}" in msg


def test_other_errors_pass_through():
    from core.health import Health
    health = Health("stop")
    assert health.explain(RuntimeError("CUDA out of memory"), {"net": torch.nn.Linear(2, 2)}) is None


class NanBackward(torch.autograd.Function):
    """The loss unchanged forward; nan gradients backward (an overflow inside the backward pass)."""

    @staticmethod
    def forward(ctx, loss):
        return loss.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


class NanGradAt(Trainer):
    def _update(self, role, loss):
        super()._update(role, NanBackward.apply(loss) if self.health.step == BAD_STEP else loss)


@pytest.mark.parametrize("stage", [0, 2, 3])
def test_non_finite_gradients_of_a_finite_loss_are_caught_at_every_zero_stage(tmp_path, stage):
    """ZeRO-2/3 keep no gradient on the parameters: the check reads the optimizer's reduced partitions."""
    with pytest.raises(NonFiniteError) as exc:
        NanGradAt(mdm(tmp_path, "stop", 6, f"trainer.zero_stage={stage}")).train()
    assert "role 'network'" in str(exc.value) and f"the first at step {BAD_STEP + 1}" in str(exc.value)


def test_results_json_leaves_a_non_finite_metric_out_and_stays_strict_json(tmp_path, capsys):
    import torch

    from benchmarks.results import read_records
    from core.evaluate import write_results
    from core.factory import build_method
    from core.interfaces import Samples
    run = mdm(tmp_path, "warn")
    _, teacher = build_method(run)
    row = {"model": "mdm", "steps": 1, "fd": float("nan"), "accuracy": float("inf"), "precision": 0.5,
           "samples_per_s": 10.0}
    samples = {"mdm@1": Samples(images=torch.zeros(2, 1, 8, 8), labels=torch.arange(2), tokens=torch.zeros(2, 3))}
    path = write_results(tmp_path / "results.json", [row], samples, run, teacher, torch.device("cpu"))
    json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in results.json"))
    [record] = read_records(path)
    assert record.metrics == {"precision": 0.5, "samples_per_s": 10.0} and record.entry.steps == 1
    assert "['accuracy', 'fd'] were not finite" in capsys.readouterr().out
