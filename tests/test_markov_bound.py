"""benchmarks.markov_bound: exact validity of independent tokens, the x_init count and the certificate,
checked against enumeration on tiny chains."""
import itertools
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from benchmarks.markov_bound import BoundOptions, build_chain_only, generator_validity, init_atoms, main
from core.errors import UserError
from plugins.teachers.markov import Chain


def valid(chain, seq, c):
    return all(chain.trans[c, a, b] > 0 for a, b in zip(seq, seq[1:]))


@settings(max_examples=30, deadline=None)
@given(states=st.integers(2, 4), length=st.integers(2, 5), data=st.data())
def test_independent_validity_is_the_sum_over_all_sequences_and_the_bound_holds(states, length, data):
    branching = data.draw(st.integers(1, states))
    chain = Chain(states, classes=2, branching=branching, seed=data.draw(st.integers(0, 100)))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 100)))
    probs = (3 * torch.randn(2, length, states, generator=g, dtype=torch.float64)).softmax(-1)
    labels = torch.tensor([0, 1])
    exact = chain.independent_validity(probs, labels)
    for n, c in enumerate(labels.tolist()):
        brute = sum(math.prod(float(probs[n, i, s]) for i, s in enumerate(seq))
                    for seq in itertools.product(range(states), repeat=length) if valid(chain, seq, c))
        assert float(exact[n]) == pytest.approx(brute, abs=1e-12)
    assert (chain.independent_validity_bound(probs, labels) >= exact - 1e-12).all()


def test_uniform_tokens_are_valid_with_probability_branching_over_states_per_transition():
    chain = Chain(16, classes=4, branching=3, seed=0)
    uniform = torch.full((4, 16, 16), 1 / 16, dtype=torch.float64)
    got = chain.independent_validity(uniform, torch.arange(4))
    assert torch.allclose(got, torch.full((4,), (3 / 16) ** 15, dtype=torch.float64))


@pytest.mark.parametrize("states,branching,length", [(2, 1, 5), (3, 2, 4), (4, 3, 3)])
def test_support_size_counts_the_sequences_of_positive_probability(states, branching, length):
    chain = Chain(states, classes=2, branching=branching, seed=1)
    brute = [sum(valid(chain, seq, c) for seq in itertools.product(range(states), repeat=length)) for c in (0, 1)]
    assert chain.support_size(length) == brute == [states * branching ** (length - 1)] * 2


@pytest.mark.parametrize("r_init,masked", [(0.5, 2), (0.6, 2), (1.0, 4), (0.0, 0), (0.1, 1)])
def test_x_init_count_is_what_the_init_plugin_draws(r_init, masked):
    teacher, init = build_chain_only(["teacher.states=2", "teacher.branching=1", "teacher.length=4",
                                      f"init.r_init={r_init}"])
    m, atoms = init_atoms(init, 4, 2)
    assert (m, atoms) == (masked, math.comb(4, masked) * 2 ** (4 - masked))
    drawn = init(4000, teacher, torch.Generator().manual_seed(0)).tokens
    assert len(drawn.unique(dim=0)) == atoms and ((drawn == teacher.mask_id).sum(1) == m).all()


def test_a_point_mass_per_x_init_matches_the_chain_within_the_certified_distance():
    """The certificate's construction on a tiny chain: each sequence k gets floor or ceil of N p_k of the N
    equally likely x_init (largest remainders), every output is valid and TV < K / (2N)."""
    teacher, init = build_chain_only(["teacher.states=3", "teacher.branching=2", "teacher.classes=1",
                                      "teacher.length=4", "init.r_init=0.5"])
    chain, length = teacher.chain, 4
    _, atoms = init_atoms(init, length, 3)
    seqs = [s for s in itertools.product(range(3), repeat=length) if valid(chain, s, 0)]
    p = torch.tensor([math.exp(float(chain.log_likelihood(torch.tensor([s]), torch.tensor([0])))) for s in seqs])
    counts = (p * atoms).floor()
    short = atoms - int(counts.sum())
    counts[(p * atoms - counts).argsort(descending=True)[:short]] += 1
    tv = 0.5 * float((counts / atoms - p).abs().sum())
    assert counts.sum() == atoms and tv < len(seqs) / (2 * atoms) == chain.support_size(length)[0] / (2 * atoms)


class FixedLogits(nn.Module):
    """A generator that ignores x_init: the same logits for every input."""

    def __init__(self, logits):
        super().__init__()
        self.logits, self.embed_tokens = logits, nn.Embedding(40, 4)

    def forward(self, tokens, cond, inputs_embeds=None):
        return self.logits.expand(inputs_embeds.shape[0], -1, -1)


def test_generator_validity_is_exact_for_a_point_mass_and_for_uniform_tokens():
    teacher, init = build_chain_only([])
    opts = BoundOptions(draws=50, batch=100)
    seq = teacher.chain.sample(torch.tensor([0]), 16, torch.Generator().manual_seed(0))[0]
    # class 0's valid sequence as a point mass: valid for class 0 only (the others' chains differ)
    point = generator_validity(FixedLogits(1e4 * nn.functional.one_hot(seq, 16).float()), teacher, init, 1.0, opts)
    exact = float(teacher.chain.independent_validity(nn.functional.one_hot(seq, 16).double()[None].expand(4, -1, -1),
                                                     torch.arange(4)).mean())
    assert point["validity"] == pytest.approx(exact) and point["sampled"]["valid"] == pytest.approx(exact)
    assert point["token_entropy"] < 1e-6 and 0.25 <= exact and point["sampled"]["distinct"] == 4 / 200
    uniform = generator_validity(FixedLogits(torch.zeros(1, 16, 16)), teacher, init, 1.0, opts)
    assert uniform["validity"] == pytest.approx((3 / 16) ** 15) and uniform["validity_stderr"] < 1e-20
    assert uniform["token_entropy"] == pytest.approx(math.log(16))


def test_the_chain_report_and_bad_input(tmp_path):
    out = tmp_path / "b.json"
    report = main([f"out={out}"])
    assert out.is_file() and report["best_conditional"]["tv_to_chain_below"] < 1e-3
    assert report["targets"] == {"best_achievable": 1.0, "eighty_percent_of_best": 0.8}
    assert report["ignoring_x_init"]["marginal_product_validity"] < report["ignoring_x_init"]["marginal_product_bound"]
    assert main(["init.r_init=1.0"])["best_conditional"]["tv_to_chain_below"] == 1.0   # one x_init: no certificate
    with pytest.raises(UserError, match="init.count='bernoulli'.*init=mixed with init.count='exact'"):
        main(["init.count=bernoulli"])
    with pytest.raises(UserError, match="teacher.states=4.*either run folders"):
        main(["runs/x", "teacher.states=4"])
    for bad in ("draws=0", "temperatures=[1.0,0]"):
        with pytest.raises(UserError, match=bad.split("=")[0]):
            main([bad])


@pytest.mark.slow
def test_a_trained_student_is_measured_against_the_bound_and_the_targets(tmp_path, monkeypatch):
    """The whole path on a tiny markov student: load the run, the teacher as the step-0 generator, the student at
    two temperatures, the run's own valid rates and the issue's targets."""
    from core.config import resolve
    from core.pipeline import main_job
    monkeypatch.setenv("DIMO_CACHE", str(tmp_path / "cache"))
    arch = ["teacher=markov", "teacher.arch.dim=32", "teacher.arch.depth=1", "teacher.arch.heads=2",
            "trainer.batch_size=16", "eval.samples_per_class=10", "trainer.wandb=disabled"]
    main_job(resolve(["method=mdm", "trainer.steps=5", "eval.enabled=false",
                      f"trainer.output_dir={tmp_path / 't'}", *arch]))
    main_job(resolve(["method=dimo", "trainer.steps=3", "eval.teacher_steps=[16]",
                      f"trainer.output_dir={tmp_path / 's'}", *arch]))
    report = main([str(tmp_path / "s"), "draws=20", "temperatures=[1.0,0.5]"])
    step0, *students = report["generators"]
    assert step0["generator"].startswith("teacher") and len(students) == 2
    assert [s["temperature"] for s in students] == [1.0, 0.5] and students[0]["draws"] == 80
    assert all(0 <= s["validity"] <= s["bound"] + 1e-12 for s in report["generators"])
    teacher16 = students[0]["main_job_valid"]["teacher_16_steps"]
    assert report["targets"]["half_of_teacher_16_steps"] == pytest.approx(teacher16 / 2)
    assert report["targets"]["eighty_percent_of_best"] == 0.8
