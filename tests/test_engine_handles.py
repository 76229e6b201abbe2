"""The sealed engine: the role handles a method gets in its StepContext (``mode``, ``module``, ``copy_weights``),
the offline stages the engine runs from ``Method.offline_stages`` (ReDi's pair generation: before the steps that
need them, on every rank, and on resume without remaking what they made), and the library pieces it builds on:
torch's DataLoader with a DistributedSampler for data batches, torch's LR warm-up."""
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from core.engine import data_batches, warmup
from core.interfaces import StepContext
from plugins.methods import redi as R


def test_mode_sets_train_or_eval_inside_the_block_and_restores_afterwards():
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).train()
    frozen = nn.Linear(2, 2).eval()
    ctx = StepContext(step=0, models={"net": net, "frozen": frozen}, update=None)
    with ctx.mode("net", False), ctx.mode("frozen", True):
        assert not net.training and not net[1].training and frozen.training
    assert net.training and not frozen.training
    with pytest.raises(RuntimeError), ctx.mode("net", False):
        raise RuntimeError("a failing forward")
    assert net.training                                       # restored on the way out of an error too


def test_default_copy_weights_copies_between_the_bare_modules():
    a, b = nn.Linear(3, 3), nn.Linear(3, 3)
    ctx = StepContext(step=0, models={"a": a, "b": b}, update=None)
    ctx.copy_weights("a", "b")
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert ctx.module("a") is a


# ---------------------------------------------------------------------------------------------------
# Through the engine (in-process, on the tiny digits teacher)
# ---------------------------------------------------------------------------------------------------

def trainer_for(tiny_teacher, tmp_path, name, *overrides):
    from core.config import resolve
    from core.engine import Trainer
    return Trainer(resolve([f"method={name}", "trainer.batch_size=4", f"trainer.output_dir={tmp_path}",
                            *overrides, *tiny_teacher]))


@pytest.mark.parametrize("name, role, overrides, modes", [
    # SDTT's student forward: dropout as configured
    ("sdtt", "student", ["method.base_steps=4", "method.student_dropout=true"], [True]),
    ("sdtt", "student", ["method.base_steps=4", "method.student_dropout=false"], [False]),
    # di4c: the completion of x_u in eval mode, then the training forward as configured
    ("di4c", "student", ["method.latent_batch=2", "method.lambda_freq_dim=8", "method.lambda_hidden=16",
                         "method.student_dropout=true"], [False, True]),
    # Di[M]O: the aux scores x_t in the (eval) teacher's mode, then its own update trains with dropout
    ("dimo", "aux", ["method.aux_score_mode=teacher", "method.teacher_mode=eval"], [False, True]),
])
def test_methods_switch_modes_through_the_handle_and_the_engine_keeps_train_mode(
        tiny_teacher, tmp_path, monkeypatch, name, role, overrides, modes):
    from registry import get_registry
    cls = get_registry().get("method", name)
    seen, setup = [], cls.setup

    def recording_setup(self, ctx):
        roles = setup(self, ctx)
        roles[role].module.register_forward_pre_hook(lambda module, args: seen.append(module.training))
        return roles

    monkeypatch.setattr(cls, "setup", recording_setup)
    trainer = trainer_for(tiny_teacher, tmp_path, name, "trainer.steps=2", *overrides)
    trainer.train()
    assert seen == modes * 2
    assert trainer._module(role).training                     # back in train mode after every block
    from deepspeed import DeepSpeedEngine
    assert all(isinstance(trainer.models[n], DeepSpeedEngine) for n in trainer.engines)
    assert not any(isinstance(trainer._module(n), DeepSpeedEngine) for n in trainer.models)   # bare networks


# ---------------------------------------------------------------------------------------------------
# Offline stages: ReDi's pair generation
# ---------------------------------------------------------------------------------------------------

REDI = ["method.pairs=8", "method.chunk_size=4", "method.pair_batch=4", "method.pair_steps=2",
        "method.steps_per_round=3", "method.rounds=1", "trainer.steps=6", "trainer.checkpoint_every=2"]


def test_offline_stage_runs_before_its_steps_and_is_not_remade_on_resume(tiny_teacher, tmp_path, monkeypatch):
    events = []
    monkeypatch.setattr(R.stages, "stage_dir", lambda stage, key: tmp_path / "cache" / stage / key)
    for hook, kind in (("run_stage", "stage"), ("train_step", "step")):
        original = getattr(R.ReDi, hook)

        def recorded(self, *args, original=original, kind=kind):
            ctx = args[-1]
            events.append((kind, ctx.step))
            return original(self, *args)
        monkeypatch.setattr(R.ReDi, hook, recorded)
    make_chunk = R.ReDi.make_chunk
    monkeypatch.setattr(R.ReDi, "make_chunk", lambda self, net, phase, i: (
        events.append(("chunk", phase)), make_chunk(self, net, phase, i))[1])

    run = tmp_path / "run"
    trainer_for(tiny_teacher, run, "redi", *REDI).train()
    # phase 0 (the teacher's pairs) before step 0, phase 1 (the student's) before step 3: two chunks each
    assert events == [("stage", 0), ("chunk", 0), ("chunk", 0), ("step", 0), ("step", 1), ("step", 2),
                      ("stage", 3), ("chunk", 1), ("chunk", 1), ("step", 3), ("step", 4), ("step", 5)]
    uninterrupted = load_file(str(run / "student.safetensors"))

    events.clear()
    trainer_for(tiny_teacher, run, "redi", *REDI, "trainer.resume=auto").train()   # from step-00000004
    # phase 1's pairs are read back from the cache (no chunk made), phase 0's stage is skipped
    assert events == [("stage", 4), ("step", 4), ("step", 5)]
    resumed = load_file(str(run / "student.safetensors"))
    assert all(torch.equal(uninterrupted[k], resumed[k]) for k in uninterrupted)


# ---------------------------------------------------------------------------------------------------
# Data batches and the LR warm-up
# ---------------------------------------------------------------------------------------------------

def indexed_data(n):
    """Tokens whose first column is the sample's index, and conditions 10 x the index."""
    return torch.arange(n)[:, None].repeat(1, 3), torch.arange(n) * 10


def take(batches, k):
    out = [next(batches) for _ in range(k)]
    assert all(torch.equal(cond, tokens[:, 0] * 10) for tokens, cond in out)   # rows stay paired
    return [tokens[:, 0] for tokens, _ in out]


def test_one_process_draws_each_epochs_permutation_and_batches_run_across_epochs():
    n, micro, seed = 10, 4, 3
    batches = take(data_batches(*indexed_data(n), micro, seed), 6)               # 24 draws: 3 epochs
    epochs = [torch.randperm(n, generator=torch.Generator().manual_seed(31 * seed + e)) for e in range(3)]
    assert all(b.shape == (micro,) for b in batches)
    assert torch.equal(torch.cat(batches), torch.cat(epochs)[:24])


def test_ranks_share_each_epoch_and_a_resumed_stream_continues_exactly():
    n, micro, world = 12, 3, 2
    streams = [take(data_batches(*indexed_data(n), micro, 0, rank, world), 4) for rank in range(world)]
    for epoch in (0, 1):   # 2 batches per rank per epoch: together, every sample once
        drawn = torch.cat([b for stream in streams for b in stream[2 * epoch:2 * epoch + 2]])
        assert sorted(drawn.tolist()) == list(range(n))
    for rank in range(world):
        resumed = take(data_batches(*indexed_data(n), micro, 0, rank, world, start=1), 3)
        assert all(torch.equal(a, b) for a, b in zip(resumed, streams[rank][1:]))


@pytest.mark.parametrize("steps", [0, 1, 4])
def test_warmup_is_linear_from_the_first_step_to_the_full_lr(steps):
    opt = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=0.2)
    schedule = warmup(opt, steps)
    lrs = []
    for _ in range(steps + 3):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if schedule is not None:
            schedule.step()
    expected = [0.2 * min(1.0, (k + 1) / steps) if steps else 0.2 for k in range(steps + 3)]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert (schedule is None) == (steps <= 1)


def test_a_resumed_data_run_matches_the_uninterrupted_one(tiny_teacher, tmp_path):
    """SDTT reads data batches (the DataLoader resumes at the step's position) and copies the student into its
    checkpointed round teacher at step 2 (the step it resumes at)."""
    args = ["method.base_steps=4", "method.steps_per_round=2", "method.student_dropout=true", "trainer.steps=4",
            "trainer.checkpoint_every=2"]
    trainer_for(tiny_teacher, tmp_path, "sdtt", *args).train()
    uninterrupted = load_file(str(tmp_path / "student.safetensors"))
    trainer_for(tiny_teacher, tmp_path, "sdtt", *args, "trainer.resume=auto").train()   # from step-00000002
    resumed = load_file(str(tmp_path / "student.safetensors"))
    assert all(torch.equal(uninterrupted[k], resumed[k]) for k in uninterrupted)
