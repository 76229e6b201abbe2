"""Di[M]O's diagnosis instruments (docs/methods/dimo_diagnosis.md): what the method and the engine log at log
steps, their values on inputs where the answer is known, and the plot command."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from core.config import resolve
from core.engine import Trainer
from plugins.divergences import ForwardKL
from plugins.methods.dimo import DiMO


def method(**overrides):
    m = DiMO(DiMO.Config(**overrides))
    m.plugins = {"divergence": ForwardKL(ForwardKL.Config())}
    return m


def test_diagnostics_on_known_inputs():
    b, L, V = 4, 6, 5
    x = torch.tensor([[0, 1, 2, 3, 4, 0]] * 2 + [[1, 1, 1, 1, 1, 1]] * 2)
    mask = torch.zeros(b, L, dtype=torch.bool)
    mask[:, :3] = True
    sure = F.one_hot(x, V).float() * 40           # the aux puts all its mass on x_theta
    uniform = torch.zeros(b, L, V)                # the teacher is uniform
    d = method().diagnostics(sure, x, uniform.log_softmax(-1), sure.log_softmax(-1), mask)
    assert d["diag/aux_ce"] < 1e-6 and d["diag/teacher_ce"] == pytest.approx(math.log(V))
    assert d["diag/aux_entropy"] < 1e-6 and d["diag/teacher_entropy"] == pytest.approx(math.log(V))
    assert d["diag/generator_entropy"] < 1e-6
    assert float(d["diag/distinct_frac"]) == 0.5
    # pairs: (0,1) and (2,3) equal; the 4 cross pairs differ in 5 of 6 tokens
    assert float(d["diag/pairwise_hamming"]) == pytest.approx(4 * 2 * (5 / 6) / 12)


def test_divergence_by_mask_ratio_bins_and_resets():
    m = method()
    ratio = torch.tensor([0.1, 0.3, 0.3, 0.9])
    div = torch.tensor([[1.0, 3.0], [2.0, 2.0], [4.0, 0.0], [5.0, 5.0]])
    mask = torch.tensor([[True, True], [True, True], [True, False], [True, True]])
    m._accumulate_by_ratio(ratio, div, mask)
    m._accumulate_by_ratio(torch.tensor([0.25]), torch.tensor([[6.0, 6.0]]), torch.tensor([[True, True]]))
    out = {k: float(v) for k, v in m._divergence_by_ratio().items()}
    assert out["div_t/0.00-0.25"] == 2.0
    assert out["div_t/0.25-0.50"] == pytest.approx((2 + 4 + 6) / 3)   # 0.25 falls in the upper bin
    assert math.isnan(out["div_t/0.50-0.75"]) and out["div_t/0.75-1.00"] == 5.0
    m._accumulate_by_ratio(torch.tensor([0.6]), torch.tensor([[1.0, 1.0]]), torch.tensor([[True, True]]))
    again = {k: float(v) for k, v in m._divergence_by_ratio().items()}
    assert again["div_t/0.50-0.75"] == 1.0 and math.isnan(again["div_t/0.00-0.25"])


def test_a_run_logs_the_instruments_at_log_steps_only(tiny_teacher, tmp_path):
    cfg = resolve(["method=dimo", "trainer.steps=4", "trainer.batch_size=8", "trainer.log_every=2",
                   "method.grad_clip=1e-4", f"trainer.output_dir={tmp_path}", *tiny_teacher])
    Trainer(cfg).train()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    for r in rows:
        for key in ("diag/aux_ce", "diag/teacher_ce", "diag/generator_entropy", "diag/pairwise_hamming",
                    "grad_norm/generator", "grad_norm/aux", "clip_scale/generator", "grad_nonfinite_frac/generator",
                    "grad_zero_frac/aux", "div_t/0.75-1.00"):
            assert key in r, key
        assert "clip_scale/aux" not in r                                  # the aux is never clipped
        assert r["clip_scale/generator"] == pytest.approx(1e-4 / (r["grad_norm/generator"] + 1e-6), rel=1e-3)
        assert r["grad_nonfinite_frac/generator"] == 0.0 and 0 <= r["grad_zero_frac/aux"] < 1
        assert 0 < r["diag/pairwise_hamming"] <= 1 and r["diag/aux_ce"] > 0


def loss_gradient_at_initialisation(aux_score_mode: str, teacher_mode: str = "eval") -> torch.Tensor:
    """g of one Di[M]O loss when the aux is still an exact copy of the teacher (both with dropout 0.3,
    the aux in train mode as the engine keeps it), without CFG: the gradient must vanish."""
    import copy
    from core.interfaces import StepContext
    from plugins.schedules import Arccos
    from plugins.teachers.digits import DigitsTeacher
    from plugins.teachers.transformer import MaskedTransformer, TransformerSpec
    torch.manual_seed(0)
    teacher = DigitsTeacher(DigitsTeacher.Config())
    net = MaskedTransformer(64, 17, 10, TransformerSpec(dim=32, depth=1, heads=2, dropout=0.3))
    aux = copy.deepcopy(net).train()
    net.train(teacher_mode == "train")
    m = DiMO(DiMO.Config(cfg_scale=1.0, aux_score_mode=aux_score_mode, teacher_mode=teacher_mode))
    m.attach(teacher, {"divergence": ForwardKL(ForwardKL.Config()), "schedule": Arccos(Arccos.Config())})
    ctx = StepContext(step=0, models={"teacher": net, "aux": aux}, update=None)
    z_theta = torch.randn(16, 64, 17, requires_grad=True)
    x_theta = torch.randint(0, 17, (16, 64))
    loss, _ = m.dimo_loss(ctx, z_theta, x_theta, torch.arange(16) % 10)
    (g,) = torch.autograd.grad(loss, z_theta)
    assert aux.training                                      # the aux's own update still trains with dropout
    return g


def test_an_aux_equal_to_the_teacher_gives_no_gradient():
    """The fix of issue 15's dropout asymmetry: the aux scores in the teacher's mode, so at initialisation
    (aux = teacher, no CFG) the generator gets no signal; scoring with dropout against an eval-mode teacher
    gives a non-zero gradient that only the mode mismatch produces."""
    assert g_abs(loss_gradient_at_initialisation("teacher")) == 0
    assert g_abs(loss_gradient_at_initialisation("train")) > 0


def g_abs(g):
    return float(g.abs().max())


def test_plot_run_writes_one_png_per_group(tmp_path, capsys):
    from benchmarks.plot_run import main
    rows = [{"step": s, "divergence": 1.0 / s, "aux_loss": 2.0, "diag/aux_ce": 1.5, "diag/teacher_ce": 1.8,
             "div_t/0.00-0.25": None if s == 2 else 0.1, "grad_norm/generator": 3.0, "clip_scale/generator": 0.3,
             "diag/generator_entropy": 0.9, "mystery": s, "lr": 1e-3} for s in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert main([str(tmp_path)]) == 0
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names == ["aux_tracking.png", "divergence_by_t.png", "effective_signal.png", "generator.png",
                     "grad_norms.png", "losses.png", "other.png"]
    assert all((tmp_path / "plots" / n).read_bytes()[:4] == b"\x89PNG" for n in names)
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "has no metrics.jsonl" in capsys.readouterr().err
