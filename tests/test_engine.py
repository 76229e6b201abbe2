"""The engine runs real methods through DeepSpeed for a few steps, at every ZeRO stage."""
import json

import pytest
import torch
from safetensors.torch import load_file

from core.config import resolve
from core.engine import Trainer


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_dimo_runs_at_every_zero_stage(tiny_teacher, tmp_path, stage):
    cfg = resolve(["method=dimo", "trainer.steps=3", "trainer.batch_size=8", f"trainer.zero_stage={stage}",
                   "trainer.log_every=1", f"trainer.output_dir={tmp_path}", *tiny_teacher])
    trainer = Trainer(cfg)
    result = trainer.train()
    assert [h["step"] for h in result.history] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(h["aux_loss"])) for h in result.history)
    assert set(trainer.engines) == {"generator", "aux"}          # one engine per trainable role
    teacher = trainer.models["teacher"]
    assert not any(p.requires_grad for p in teacher.parameters())  # frozen teacher
    if stage == 3:
        assert hasattr(teacher, "module")                          # sharded as an inference engine
    student = load_file(str(result.student_path))
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "config_hash.txt").is_file()
    assert json.loads((tmp_path / "student.json").read_text())["method"] == "dimo"
    assert student["tok_emb.weight"].shape[1] == 32


def test_dimo_changes_the_generator_but_not_its_embeddings(tiny_teacher, tmp_path):
    cfg = resolve(["method=dimo", "trainer.steps=4", "trainer.batch_size=8", "method.ema_decay=null",
                   "method.lr_generator=1e-3", f"trainer.output_dir={tmp_path}", *tiny_teacher])
    trainer = Trainer(cfg)
    trainer.train()
    gen = trainer._module("generator")
    teacher = trainer.models["teacher"]
    assert torch.equal(gen.tok_emb.weight, teacher.tok_emb.weight)     # frozen embedding / tied head
    assert torch.equal(gen.pos_emb, teacher.pos_emb)
    moved = [(a - b).abs().max().item() for a, b in zip(gen.blocks.parameters(), teacher.blocks.parameters())]
    assert max(moved) > 0


def test_mdm_learns_on_digits(tmp_path):
    cfg = resolve(["method=mdm", "trainer.steps=60", "trainer.batch_size=32", "trainer.log_every=10",
                   "method.cache_teacher=false", f"trainer.output_dir={tmp_path}", "teacher.arch.dim=32",
                   "teacher.arch.depth=1", "teacher.arch.heads=2", "trainer.wandb=disabled", "eval.enabled=false"])
    history = Trainer(cfg).train().history
    assert history[-1]["loss"] < history[0]["loss"] - 0.2


def test_wandb_logs_offline_into_the_run_folder(tiny_teacher, tmp_path):
    args = [a for a in tiny_teacher if not a.startswith("trainer.wandb")]
    cfg = resolve(["method=dimo", "trainer.steps=2", "trainer.batch_size=4", "trainer.log_every=1",
                   f"trainer.output_dir={tmp_path}", *args])
    Trainer(cfg).train()
    assert any((tmp_path / "wandb").glob("offline-run-*"))
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and "divergence" in json.loads(lines[0])
