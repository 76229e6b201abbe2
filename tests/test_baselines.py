"""The SDTT, di4c and ReDi baselines: their losses on tiny models (values and gradients on known cases), the
Sampler interface's step operations (``plan``, ``reveal``, ``run_steps``), ReDi's resumable pair stage, and 3
engine steps of each on the tiny digits teacher."""
import math

import pytest
import torch
import torch.nn.functional as F

from core.errors import UserError
from plugins.divergences import ReverseKL
from plugins.methods import di4c as D
from plugins.methods import redi as R
from plugins.methods.sdtt import SDTT, divergence_value, step_targets
from plugins.samplers import ConfidenceSampler, RandomSampler
from plugins.teachers.digits import DigitsTeacher
from plugins.teachers.transformer import MaskedTransformer, TransformerSpec

TEACHER = DigitsTeacher(DigitsTeacher.Config())
L, V, M = TEACHER.seq_len, TEACHER.vocab_size, TEACHER.mask_id


def tiny_net(seed=0):
    torch.manual_seed(seed)
    return MaskedTransformer(L, V, 10, TransformerSpec(dim=16, depth=1, heads=2, dropout=0.0)).eval()


def attach(method, **plugins):
    method.attach(TEACHER, {"sampler": RandomSampler(RandomSampler.Config()), **plugins})
    return method


# ---------------------------------------------------------------------------------------------------
# The Sampler interface's step operations
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", [RandomSampler(RandomSampler.Config(cfg_scale=2.0, temperature=0.8)),
                                     ConfidenceSampler(ConfidenceSampler.Config())])
def test_run_steps_from_all_mask_is_the_sampler_itself(sampler):
    from core.masking import guided_logits
    net, cond = tiny_net(), torch.arange(6)
    x = torch.full((6, L), M)
    predict = lambda x, s, pending: guided_logits(net, x, cond, TEACHER.null_condition(cond), sampler.cfg_at(s, 4))
    ours = sampler.run_steps(predict, TEACHER, x, 4, generator=torch.Generator().manual_seed(3))
    theirs = sampler.sample(net, TEACHER, cond, 4, torch.Generator().manual_seed(3))
    assert torch.equal(ours, theirs)


def test_partial_steps_follow_the_plan_and_targets_come_from_the_revealing_step():
    net, cond = tiny_net(), torch.arange(4)
    x = torch.full((4, L), M)
    sampler = RandomSampler(RandomSampler.Config())
    x2, trace = sampler.run_steps(lambda x, s, p: net(x, cond), TEACHER, x, 8, 0, 2, record=True)
    assert ((x2 == M).sum(1) == sampler.plan(8, L)[1]).all()
    target = step_targets(trace, x == M)
    (lp0, c0), (lp1, c1) = trace
    assert torch.equal(target[c0], lp0[c0]) and torch.equal(target[c1], lp1[c1])
    still = x2 == M
    assert torch.equal(target[still], lp1[still])                   # never revealed: the last step's


# ---------------------------------------------------------------------------------------------------
# SDTT
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("loss", ["rkl", "fkl", "mse", "tvd"])
def test_sdtt_loss_is_zero_when_the_student_is_its_target_and_positive_otherwise(loss):
    m = attach(SDTT(SDTT.Config(loss=loss)))
    logits = torch.randn(2, L, V)
    masked = torch.rand(2, L) < 0.5
    assert m.loss(logits.log_softmax(-1), logits, masked).abs() < 1e-6
    assert m.loss(torch.randn(2, L, V).log_softmax(-1), logits, masked) > 1e-3


def test_sdtt_divergences_are_the_known_formulas_and_rkl_has_the_plugin_gradient():
    lp, lq = torch.randn(3, V).log_softmax(-1), torch.randn(3, V).log_softmax(-1)
    p, q = lp.exp(), lq.exp()
    assert torch.allclose(divergence_value("rkl", lp, lq), (q * (lq - lp)).sum(-1), atol=1e-6)
    assert torch.allclose(divergence_value("fkl", lp, lq), (p * (lp - lq)).sum(-1), atol=1e-6)
    assert torch.allclose(divergence_value("tvd", lp, lq), 0.5 * (p - q).abs().sum(-1), atol=1e-6)
    assert torch.allclose(divergence_value("mse", lp, lq), ((lp - lq) ** 2).mean(-1))
    z = torch.randn(3, V, requires_grad=True)
    m = attach(SDTT(SDTT.Config()))
    (grad,) = torch.autograd.grad(m.loss(lp[None], z[None], torch.ones(1, 3, dtype=torch.bool)), z)
    assert torch.allclose(grad, ReverseKL(ReverseKL.Config()).grad(lp, z.log_softmax(-1)) / 3, atol=1e-6)


def test_sdtt_targets_match_a_student_equal_to_the_teacher_on_first_step_tokens_and_grads_reach_only_it():
    teacher, student = tiny_net(0), tiny_net(0)
    m = attach(SDTT(SDTT.Config(base_steps=8)))
    tokens, cond = torch.randint(V, (4, L)), torch.arange(4)
    torch.manual_seed(1)
    x_t, j = m.noised_data(tokens, 0)
    with torch.no_grad():
        _, trace = m.plugins["sampler"].run_steps(lambda x, s, p: teacher(x, cond), TEACHER, x_t, 8,
                                                  2 * j, 2 * j + 2, record=True)
    target = step_targets(trace, x_t == M)
    logp = F.log_softmax(student(x_t, cond), -1)
    first = trace[0][1]
    assert divergence_value("rkl", target, logp)[first].abs().max() < 1e-5   # same model, same state
    m.loss(target, student(x_t, cond), x_t == M).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


def test_sdtt_round_schedule_and_validation():
    m = SDTT(SDTT.Config(base_steps=16, distill_steps=2, steps_per_round=10))
    assert m.rounds == 4 and [m.student_steps(r) for r in range(4)] == [8, 4, 2, 1]
    assert m.round_of(0) == 0 and m.round_of(39) == 3 and m.round_of(1000) == 3
    assert m.round_ends(9) and m.round_ends(29) and not m.round_ends(39) and not m.round_ends(10)
    from core.config import resolve
    with pytest.raises(UserError, match="base_steps=12"):
        resolve(["method=sdtt", "method.base_steps=12"])
    with pytest.raises(UserError, match="method.loss"):
        resolve(["method=sdtt", "method.loss=kld"])


# ---------------------------------------------------------------------------------------------------
# di4c
# ---------------------------------------------------------------------------------------------------

def test_di4c_student_starts_as_the_network_for_every_lambda():
    net = tiny_net()
    student = D.LambdaStudent(net, freq_dim=8, hidden=16).eval()
    x, cond = torch.randint(V + 1, (3, L)), torch.arange(3)
    for lam in (torch.zeros(3), torch.rand(3)):
        assert torch.equal(student(x, cond, lam=lam), net(x, cond))


def test_di4c_mixture_with_one_lambda_is_the_plain_model():
    logp = torch.randn(2, 1, L, V).log_softmax(-1)
    y = torch.randint(V, (2, 1, L))
    masked = torch.rand(2, L) < 0.5
    ll = D.token_loglik(logp, y, masked)
    plain = (logp[:, 0].gather(-1, y[:, 0, :, None]).squeeze(-1) * masked).sum(-1)
    assert torch.allclose(D.mixture_loglik(ll)[:, 0], plain, atol=1e-5)
    assert D.correlation_part(ll).abs().max() < 1e-5
    assert torch.allclose(D.mixture_marginal(logp), logp[:, 0])


def test_di4c_control_variate_splits_the_loglik_exactly():
    logp = torch.randn(2, 4, L, V).log_softmax(-1)
    y, masked = torch.randint(V, (2, 3, L)), torch.rand(2, L) < 0.5
    ll = D.token_loglik(logp, y, masked)
    marginal = D.mixture_marginal(logp)
    at_y = marginal[:, None].expand(-1, 3, -1, -1).gather(-1, y[..., None]).squeeze(-1)
    independent = (at_y * masked[:, None]).sum(-1)
    assert torch.allclose(D.mixture_loglik(ll), D.correlation_part(ll) + independent, atol=1e-4)


def terms_for(logp_student, logp_teacher, r, cv=True):
    b = logp_student.shape[0]
    masked = torch.rand(b, L) < 0.5
    x0, x_tilde = torch.randint(V, (b, L)), torch.randint(V, (b, 2, L))
    return D.di4c_losses(logp_student, logp_teacher, x0, x_tilde, logp_teacher.exp(), masked, r, 0.05,
                         torch.full((b,), 0.1), cv)


def test_di4c_losses_vanish_for_a_lambda_free_student_equal_to_the_teacher():
    logp_teacher = torch.randn(3, L, V).log_softmax(-1)
    student = logp_teacher[:, None].expand(-1, 4, -1, -1).clone()
    terms = terms_for(student, logp_teacher, torch.tensor([0.99, 0.2, 0.5]))
    assert terms["distillation"].abs().max() < 1e-4            # KL(teacher || component) = 0
    assert terms["data"].abs().max() < 1e-4                    # correlation 0, marginal KL 0
    assert terms["consistency"][0] == 0 and terms["consistency"][1:].abs().max() < 1e-4
    assert terms["distillation"][1:].abs().max() == 0          # only r >= 1 - delta distils
    other = terms_for(torch.randn(3, 4, L, V).log_softmax(-1), logp_teacher, torch.tensor([0.99, 0.2, 0.5]))
    assert other["distillation"][0] > 0 and (other["data"] > 0).all()


def test_di4c_gradients_reach_only_the_student_and_break_lambda_symmetry():
    teacher, net = tiny_net(0), tiny_net(0)
    student = D.LambdaStudent(net, freq_dim=8, hidden=16)
    x, cond = torch.randint(V, (2, L)), torch.arange(2)
    x[:, ::2] = M
    with torch.no_grad():
        logp_teacher = teacher(x, cond).log_softmax(-1)
    lam = torch.rand(2 * 3)
    logp = student(x.repeat_interleave(3, 0), cond.repeat_interleave(3, 0), lam=lam).log_softmax(-1).view(2, 3, L, V)
    torch.manual_seed(0)
    sum(terms_for(logp, logp_teacher, torch.tensor([0.3, 0.99])).values()).sum().backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.lam_embed.mlp[-1].weight.grad.abs().sum() > 0    # the lambda branch learns from step 1


# ---------------------------------------------------------------------------------------------------
# ReDi
# ---------------------------------------------------------------------------------------------------

def test_run_chunked_resumes_after_a_kill_and_skips_finished_chunks(tmp_path):
    from core import stages
    made = []

    def make(i, fail_at=None):
        if i == fail_at:
            raise KeyboardInterrupt   # the kill
        made.append(i)
        return {"x": torch.full((3, 2), i), "i": torch.tensor([i])}

    with pytest.raises(KeyboardInterrupt):
        stages.run_chunked(tmp_path, 4, lambda i: make(i, fail_at=2), {"what": "test"})
    (tmp_path / "chunk-00002.safetensors.tmp").write_bytes(b"half a chunk")
    assert made == [0, 1] and stages.missing_chunks(tmp_path, 4) == [2, 3]
    made.clear()
    out = stages.run_chunked(tmp_path, 4, make)
    assert made == [2, 3]                                           # finished chunks are not redone
    assert torch.equal(out["i"], torch.arange(4)) and out["x"].shape == (12, 2)
    made.clear()
    stages.run_chunked(tmp_path, 4, make)
    assert made == []                                               # a complete stage is only read


def redi_method(**overrides):
    m = R.ReDi(R.ReDi.Config(pairs=12, chunk_size=4, pair_batch=4, pair_steps=2, **overrides))
    attach(m)
    m.rank, m.world = 0, 1
    return m


def test_redi_pair_stage_is_cached_resumable_and_deterministic(monkeypatch, tmp_path):
    monkeypatch.setenv("DIMO_CACHE", str(tmp_path))
    m = redi_method()
    source = R.SourceMarked(tiny_net(), M)
    killed = []

    def kill_after_first(i):
        killed.append(i)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        m.pair_stage(source, 1, on_chunk=kill_after_first)
    made = []
    resumed = m.pair_stage(source, 1, on_chunk=made.append)
    assert killed == [0] and made == [1, 2]
    pairs_dir = next((tmp_path / "redi-pairs").iterdir())
    for p in pairs_dir.glob("chunk-*"):
        p.unlink()
    fresh = m.pair_stage(source, 1)
    assert all(torch.equal(resumed[k], fresh[k]) for k in fresh)    # resume == uninterrupted
    assert (fresh["x_1"] != M).all() and fresh["x_1"].shape == (12, L)
    other = R.SourceMarked(tiny_net(1), M)
    m.pair_stage(other, 1)
    assert len(list((tmp_path / "redi-pairs").iterdir())) == 2     # other weights: another cache entry


def test_redi_phase0_pairs_come_from_the_teacher_from_all_mask_and_later_ones_from_the_source():
    m = redi_method()
    source = R.SourceMarked(tiny_net(), M)
    g = lambda: torch.Generator().manual_seed(0)
    x_init = R.source_tokens(4, L, V, M, 0.3, g())
    cond = torch.arange(4)
    x1 = m.generate_pairs(source, x_init, cond, 0, g())
    assert torch.equal(x1, m.plugins["sampler"].sample(source.network, TEACHER, cond, 2, g()))
    x1_later = m.generate_pairs(source, x_init, cond, 1, g())
    assert (x1_later != M).all()


def test_redi_inputs_marks_and_source():
    x_init = R.source_tokens(200, L, V, M, 0.3, torch.Generator().manual_seed(0))
    assert abs((x_init == M).float().mean().item() - 0.3) < 0.02
    x_1 = torch.randint(V, (200, L))
    x_t, source = R.rectified_input(x_init, x_1, M, distill=True)
    assert torch.equal(x_t, x_init) and torch.equal(source, x_init != M)
    x_t, source = R.rectified_input(x_init, x_1, M, distill=False)
    assert ((x_t == x_init) | (x_t == x_1)).all() and not (source & (x_t == M)).any()
    net = tiny_net()
    marked = R.SourceMarked(net, M)
    assert torch.equal(marked.source_token, net.tok_emb.weight[M])
    assert torch.equal(marked(x_t, torch.arange(200)), net(x_t, torch.arange(200)))


# ---------------------------------------------------------------------------------------------------
# Through the engine on the tiny digits teacher, then sampling at every declared step count
# ---------------------------------------------------------------------------------------------------

ENGINE_RUNS = {
    "sdtt": ["method.base_steps=4", "method.steps_per_round=1", "method.warmup_steps=0",
             "trainer.checkpoint_every=2"],
    "di4c": ["method.latent_batch=3", "method.lambda_freq_dim=8", "method.lambda_hidden=16"],
    "redi": ["method.pairs=16", "method.chunk_size=8", "method.pair_batch=8", "method.pair_steps=2",
             "method.steps_per_round=1", "method.rounds=1", "method.variant=distill"],
}


@pytest.mark.parametrize("name", list(ENGINE_RUNS))
def test_baseline_trains_through_the_engine_and_samples_at_its_steps(tiny_teacher, tmp_path, name):
    from core.config import resolve
    from core.engine import Trainer
    from core.export import load_student
    cfg = resolve([f"method={name}", "trainer.steps=3", "trainer.batch_size=4", "trainer.log_every=1",
                   f"trainer.output_dir={tmp_path}", *ENGINE_RUNS[name], *tiny_teacher])
    trainer = Trainer(cfg)
    history = trainer.train().history
    assert len(history) == 3 and all(math.isfinite(h["loss"]) for h in history)
    method, teacher, net, _ = load_student(str(tmp_path))
    for k in method.sample_steps:
        tokens = method.generate(net, torch.arange(3), torch.Generator().manual_seed(0), steps=k)
        assert tokens.shape == (3, L) and (tokens < V).all()
    if name == "sdtt":   # rounds 0, 1, 1; the round teacher is the student after step 1 and is checkpointed
        assert [h["round"] for h in history] == [0, 1, 1]
        assert (tmp_path / "checkpoints" / "step-00000002" / "frozen-round_teacher.safetensors").is_file()
        start = teacher.build_network().state_dict()
        moved = trainer.models["round_teacher"].state_dict()
        assert any(not torch.equal(start[k], moved[k].cpu()) for k in start)
    if name == "redi":
        assert [h["phase"] for h in history] == [0, 1, 1]


@pytest.mark.parametrize("name", ["sdtt", "redi"])
def test_methods_that_copy_into_frozen_roles_refuse_zero3_before_training(tiny_teacher, tmp_path, name):
    from core.config import resolve
    from core.engine import Trainer
    cfg = resolve([f"method={name}", "trainer.steps=2", "trainer.batch_size=4", "trainer.zero_stage=3",
                   f"trainer.output_dir={tmp_path}", *ENGINE_RUNS[name], *tiny_teacher])
    with pytest.raises(UserError, match=f"method '{name}' copies weights into its frozen role.*valid "
                                        f"trainer.zero_stage for {name}: 0, 1, 2"):
        Trainer(cfg).train()
    assert not (tmp_path / "checkpoints").exists()
