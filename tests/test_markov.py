"""The markov task: a known chain, exact conditionals, exact metrics, and the few-step failure it exposes."""
import itertools
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from core.config import resolve
from core.engine import build_method
from core.errors import UserError
from core.evaluate import Scorer, format_table, sample_per_class
from core.interfaces import EvalData, Samples
from plugins.teachers.markov import Chain, ExactConditionals, MarkovMetrics
from registry.registry import build


def teacher(*args):
    _, t = build_method(resolve(["method=mdm", "teacher=markov", *args]))
    return t


def test_chain_is_sparse_stochastic_and_fixed_by_its_seed():
    c = Chain(states=16, classes=4, branching=3, seed=0)
    assert torch.allclose(c.trans.sum(-1), torch.ones(4, 16, dtype=torch.float64))
    assert ((c.trans > 0).sum(-1) == 3).all()
    assert torch.equal(Chain(16, 4, 3, 0).trans, c.trans) and not torch.equal(Chain(16, 4, 3, 1).trans, c.trans)


def test_true_samples_score_as_the_data_and_the_nll_matches_the_entropy_rate():
    t = teacher()
    scorer = Scorer(t)                                  # the default metrics become the exact ones
    assert [type(m).__name__ for m in scorer.metrics] == ["MarkovMetrics"]
    data = scorer.real_vs_real()
    assert data["valid"] == 1.0 and data["transition_valid"] == 1.0 and data["distinct"] > 0.99
    assert abs(data["nll"] - t.chain.entropy_rate(t.seq_len)) < 0.02      # 1,000 samples of 16 tokens
    assert data["bigram_tv"] < 0.06
    tokens, labels = t.dataset()
    assert (t.chain.transition_probs(tokens, labels) > 0).all() and len(tokens) == 20000


def test_metrics_count_invalid_transitions_and_duplicates():
    t = teacher()
    tokens, labels = t.draw(4, seed=3)
    bad = tokens.clone()
    row, col = 0, 5
    allowed = t.chain.trans[labels[row], bad[row, col - 1]] > 0
    bad[row, col] = int((~allowed).nonzero()[0])       # an impossible successor
    metric = MarkovMetrics(MarkovMetrics.Config())
    ev = t.evaluator()
    out = metric.compute(EvalData(None, None, samples=Samples(t.decode(bad), labels, bad), evaluator=ev))
    assert out["valid"] == pytest.approx(15 / 16)
    assert out["transition_valid"] < 1.0
    clean = metric.compute(EvalData(None, None, samples=Samples(t.decode(tokens), labels, tokens), evaluator=ev))
    assert out["nll"] > clean["nll"] + (-math.log(1e-6) - 3) / 16 / 16     # the floor is charged
    dup = torch.cat([tokens[:1]] * 16)
    d = metric.compute(EvalData(None, None, samples=Samples(t.decode(dup), labels[:1].repeat(16), dup),
                                evaluator=ev))
    assert d["distinct"] == 1 / 16 and d["bigram_tv"] > clean["bigram_tv"]
    with pytest.raises(UserError, match="teacher=markov only"):
        metric.compute(EvalData(None, None, samples=Samples(t.decode(bad), labels, bad)))


def brute_force_joint(chain: Chain, tokens, cls, mask_id):
    """p(x_i = s, visible | class) by enumerating every sequence (tiny chains only)."""
    L, V = len(tokens), chain.states
    probs = torch.zeros(L, V, dtype=torch.float64)
    for seq in itertools.product(range(V), repeat=L):
        if any(t != mask_id and t != s for t, s in zip(tokens, seq)):
            continue
        p = chain.init[cls, seq[0]] * math.prod(float(chain.trans[cls, a, b]) for a, b in zip(seq, seq[1:]))
        for i, s in enumerate(seq):
            probs[i, s] += p
    return probs


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 1000), data=st.data())
def test_exact_conditionals_match_enumeration(seed, data):
    chain = Chain(states=3, classes=2, branching=2, seed=seed)
    L, mask_id = 4, 3
    net = ExactConditionals(chain, L)
    g = torch.Generator().manual_seed(seed)
    cls = data.draw(st.integers(0, 1))
    seq = chain.sample(torch.tensor([cls]), L, g)[0]            # visible tokens from a possible sequence
    hide = data.draw(st.lists(st.booleans(), min_size=L, max_size=L))
    tokens = [mask_id if h else int(s) for h, s in zip(hide, seq)]
    got = net(torch.tensor([tokens]), torch.tensor([cls]))[0].double().softmax(-1)
    joint = [brute_force_joint(chain, tokens, c, mask_id) for c in (0, 1)]
    assert torch.allclose(got, joint[cls] / joint[cls].sum(-1, keepdim=True), atol=1e-5)
    # the null class (CFG's unconditional branch) conditions on the uniform mixture of the classes
    mixed = joint[0] + joint[1]
    got_null = net(torch.tensor([tokens]), torch.tensor([-1]))[0].double().softmax(-1)
    assert torch.allclose(got_null, mixed / mixed.sum(-1, keepdim=True), atol=1e-5)


def test_few_steps_break_the_joint_structure_many_steps_do_not():
    """The task's point, measured exactly with the exact conditionals: independent per-step predictions."""
    t = teacher("teacher.oracle=true")
    net = t.build_network()
    sampler = build("sampler", "random")
    scorer = Scorer(t)
    valid = {}
    for k in (1, 2, 16):
        s, _ = sample_per_class(lambda c, g: sampler.sample(net, t, c, k, g), t, 100, 400, seed=0)
        valid[k] = scorer.score(s)["valid"]
    assert valid[1] < 0.02 and valid[2] < 0.2 and valid[16] == 1.0


def test_exact_tasks_refuse_image_metrics_and_print_their_own_columns():
    t = teacher()
    with pytest.raises(UserError, match="eval.metrics.*frechet.*exact metrics: markov"):
        Scorer(t, ["frechet"])
    table = format_table([{"model": "teacher", "steps": 4, "valid": 0.5, "nll": 1.2, "samples_per_s": 3.0}])
    assert "valid" in table.splitlines()[0] and "nll" in table.splitlines()[0]


def test_oracle_has_no_weights_to_save_and_needs_no_training():
    t = teacher("teacher.oracle=true")
    assert t.has_weights() and isinstance(t.build_network(), ExactConditionals)
    with pytest.raises(UserError, match="no weights to save"):
        t.save_pretrained(t.build_network())
    with pytest.raises(UserError, match="branching=20 exceeds states=16"):
        resolve(["method=mdm", "teacher=markov", "teacher.branching=20"])


@pytest.mark.slow
def test_markov_main_job_pretrains_and_scores_exactly(tmp_path):
    from conftest import run_cli
    res = run_cli("method=mdm", "teacher=markov", "teacher.arch.dim=32", "teacher.arch.depth=1",
                  "teacher.arch.heads=2", "trainer.steps=20", "trainer.wandb=disabled",
                  "eval.samples_per_class=10", "eval.teacher_steps=[1,16]", f"trainer.output_dir={tmp_path / 'r'}",
                  env={"DIMO_CACHE": str(tmp_path / "cache")})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "valid" in res.stdout and "bigram_tv" in res.stdout
