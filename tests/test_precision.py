"""Mixed precision and device-independence of the engine, checked on CPU (the same code path runs on CUDA).

DeepSpeed's engine.forward switches an outer torch.autocast off unless the engine's own config asks for it;
these tests fail if a trainable role silently computes in fp32 while the run asks for bf16.
"""
import pytest
import torch
from torch import nn

from core.config import resolve
from core.engine import Trainer


@pytest.fixture(autouse=True)
def deepspeed_sees_cpu_autocast(monkeypatch):
    """On CUDA, DeepSpeed sees the method's outer autocast (torch.is_autocast_enabled() is CUDA's) and turns it
    off inside engine.forward unless configured. Make it see CPU autocast the same way, so that this CPU test
    takes the CUDA code path and fails if the engine config does not ask for bf16."""
    import deepspeed.runtime.torch_autocast as ds_autocast

    class SeesCpu:
        def __getattr__(self, name):
            return getattr(torch, name)

        @staticmethod
        def is_autocast_enabled(*device):
            return torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda")
    monkeypatch.setattr(ds_autocast, "torch", SeesCpu())


class RecordingTrainer(Trainer):
    """Records the dtype of every Linear output of each role during training (forward hooks)."""

    def _engine(self, name, role, micro):
        self.seen = getattr(self, "seen", {})
        seen = self.seen.setdefault(name, set())
        for mod in role.module.modules():
            if isinstance(mod, nn.Linear):
                mod.register_forward_hook(lambda m, i, o, seen=seen: seen.add(o.dtype))
        return super()._engine(name, role, micro)


def _train(tiny_teacher, tmp_path, *extra):
    cfg = resolve(["method=dimo", "trainer.steps=2", "trainer.batch_size=4", "trainer.log_every=1",
                   f"trainer.output_dir={tmp_path}", *tiny_teacher, *extra])
    trainer = RecordingTrainer(cfg)
    result = trainer.train()
    return trainer, result


@pytest.mark.parametrize("stage", [0, 2, 3])
def test_bf16_run_computes_every_role_in_bf16_with_fp32_master_weights(tiny_teacher, tmp_path, stage):
    trainer, result = _train(tiny_teacher, tmp_path, "trainer.precision=bf16", f"trainer.zero_stage={stage}")
    assert set(trainer.seen) == {"generator", "aux", "teacher"}
    for role, dtypes in trainer.seen.items():
        assert dtypes == {torch.bfloat16}, f"role {role} ran its Linear layers in {dtypes} under bf16"
    for name, engine in trainer.engines.items():   # weights and optimizer state stay fp32
        assert all(p.dtype == torch.float32 for p in engine.module.parameters()), name
        state = [t for s in engine.optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.dim()]
        assert all(t.dtype == torch.float32 for t in state), name
    assert all(torch.isfinite(torch.tensor(h["aux_loss"])) for h in result.history)


def test_bf16_weights_mode_keeps_fp32_master_weights_in_the_optimizer(tiny_teacher, tmp_path):
    trainer, result = _train(tiny_teacher, tmp_path, "trainer.precision=bf16", "trainer.bf16_mode=weights",
                             "trainer.zero_stage=2")
    assert trainer.seen["generator"] == {torch.bfloat16} and trainer.seen["aux"] == {torch.bfloat16}
    engine = trainer.engines["generator"]
    assert any(p.dtype == torch.bfloat16 for p in engine.module.parameters())   # bf16 module weights
    masters = engine.optimizer.single_partition_of_fp32_groups                  # ZeRO's fp32 master copies
    assert all(t.dtype == torch.float32 for t in masters)
    assert all(torch.isfinite(torch.tensor(h["aux_loss"])) for h in result.history)


def test_fp32_run_stays_fp32(tiny_teacher, tmp_path):
    trainer, _ = _train(tiny_teacher, tmp_path, "trainer.precision=fp32")
    assert all(d == {torch.float32} for d in trainer.seen.values()), trainer.seen


def test_method_logs_may_be_device_tensors_and_are_read_at_log_steps(tiny_teacher, tmp_path):
    """Di[M]O returns its logs as tensors (no host sync inside a step); the engine writes floats."""
    trainer, result = _train(tiny_teacher, tmp_path)
    assert all(isinstance(v, float) for h in result.history for k, v in h.items() if k != "step")


def test_metrics_do_not_sync_across_processes_during_rank0_evaluation(monkeypatch):
    """torchmetrics gathers its (CPU) states over the process group on compute(); under NCCL that raises
    'No backend type associated with device type cpu'. Evaluation is rank-0 only: no sync may happen."""
    import torchmetrics.metric
    from core import distributed
    from core.interfaces import EvalData
    from plugins.metrics import FrechetDistance, InceptionStyleScore

    distributed.init("cpu")   # an initialised process group, as in every run

    def refuse(*a, **k):
        raise AssertionError("a metric tried to sync across processes")
    monkeypatch.setattr(torchmetrics.metric, "gather_all_tensors", refuse)
    g = torch.Generator().manual_seed(0)
    feats = lambda: torch.randn(64, 8, generator=g)
    data = EvalData(real_features=feats(), fake_features=feats(), real_logits=feats(), fake_logits=feats())
    fd = FrechetDistance(FrechetDistance.Config()).compute(data)["fd"]
    iscore = InceptionStyleScore(InceptionStyleScore.Config()).compute(data)["is"]
    assert fd > 0 and iscore > 1
