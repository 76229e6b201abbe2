"""words: the one-hot word pictures, the teacher-NLL metric, the rare-attribute reward and metric, and the
suite's baseline and test-time rows."""
import itertools
import math

import pytest
import torch

from benchmarks.suites import entries, load_suite
from core.errors import UserError
from core.interfaces import EvalData, Samples
from plugins.rewards import build_rewards
from plugins.teachers.words import WordAttribute, WordsTeacher, teacher_nll


@pytest.fixture(scope="module")
def teacher():
    return WordsTeacher(WordsTeacher.Config())


def rows(teacher, words):
    tokens = torch.tensor([teacher.words.encode(w) for w in words])
    labels = torch.tensor([len(w) - teacher.config.min_length for w in words])
    return tokens, labels


def reward(**options):
    (_, r), = build_rewards([{"name": "word_attribute", **options}])
    return r


def test_pictures_are_one_hot_and_soft_pictures_round_trip(teacher):
    tokens, _ = rows(teacher, ["zoo", "craze", "cat"])
    images = teacher.decode(tokens)
    assert images.shape == (3, *teacher.image_shape) == (3, 1, 27, 6)
    assert torch.equal(WordsTeacher.letter_probs(images).argmax(-1), tokens)
    onehot = torch.nn.functional.one_hot(tokens, 27).float()
    assert torch.equal(teacher.decode_soft(onehot), images)
    probs = torch.rand(3, 6, 27).softmax(-1)
    assert torch.allclose(WordsTeacher.letter_probs(teacher.decode_soft(probs)), probs)


def test_the_words_teacher_fits_the_interface():
    from core.testing import check_teacher
    check_teacher("words")


def test_the_reward_of_hard_words_is_zero_for_a_hit_and_log_floor_otherwise(teacher):
    r = reward(letters="z")
    tokens, labels = rows(teacher, ["zoo", "jazz", "craze", "cat", "zzq", "house"])
    out = r(teacher.decode(tokens), labels, teacher)
    floor = math.log(r.config.floor)
    assert out[:3].abs().max() < 1e-6                                  # listed words with a 'z'
    assert torch.allclose(out[3:], torch.full((3,), floor), atol=1e-4)  # no 'z'; not a word; no 'z'
    suffix = reward(letters="", suffix="ing")(teacher.decode(rows(teacher, ["ring", "ringer"])[0]),
                                              rows(teacher, ["ring", "ringer"])[1], teacher)
    assert suffix[0].abs() < 1e-6 and suffix[1] < -20
    # the attribute alone: an unlisted string with a 'z' hits
    alone = reward(letters="z", valid=False)(teacher.decode(tokens), labels, teacher)
    assert alone[4].abs() < 1e-6 and alone[3] < -10


def test_the_soft_reward_is_the_exact_hit_probability_and_gradients_flow(teacher):
    r = reward(letters="z")
    _, labels = rows(teacher, ["zoo", "jazz"])
    logits = torch.randn(2, 6, 27, requires_grad=True)
    probs = logits.softmax(-1)
    out = r(teacher.decode_soft(probs), labels, teacher)
    # brute force for class 0: every 3-letter target word, pads at the end
    targets = [w for w in teacher.words.by_class[0] if "z" in w]
    p0 = probs[0].detach()
    exact = sum(math.prod(float(p0[i, teacher.words.encode(w)[i]]) for i in range(6)) for w in targets)
    assert float(out[0].detach().exp()) == pytest.approx(exact + r.config.floor, rel=1e-4)
    out.sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # a few ascent steps on the logits raise it (what TTEO does through the generator's input embedding)
    opt = torch.optim.Adam([logits], lr=0.3)
    before = float(out.sum())
    for _ in range(10):
        loss = -r(teacher.decode_soft(logits.softmax(-1)), labels, teacher).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert -float(loss) > before + 1.0


def test_the_reward_refuses_other_teachers(teacher):
    from core.config import resolve
    from core.engine import build_method
    digits = build_method(resolve(["method=mdm", "teacher=digits"]))[1]
    with pytest.raises(UserError, match="teacher=words only"):
        reward()(torch.zeros(2, 1, 8, 8), torch.zeros(2), digits)
    with pytest.raises(ValueError, match="letters"):
        build_rewards([{"name": "word_attribute", "letters": "Z!"}])


def test_the_attribute_metric_counts_hits_and_valid_hits(teacher):
    tokens, labels = rows(teacher, ["zoo", "zzq", "cat", "jazz"])
    data = EvalData(None, None, samples=Samples(teacher.decode(tokens), labels, tokens), evaluator=teacher.evaluator())
    out = WordAttribute(WordAttribute.Config()).compute(data)
    assert out == {"attribute": 0.75, "attribute_valid": 0.5}


class Uniform(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, tokens, cond):
        return torch.zeros(*tokens.shape, 27) + self.w


def test_teacher_nll_is_the_mean_over_reveal_orders():
    small = WordsTeacher(WordsTeacher.Config(min_length=2, length=3,
                                             arch={"dim": 16, "depth": 1, "heads": 2, "dropout": 0.0}))
    tokens, labels = small.draw(3, seed=0)
    assert torch.allclose(teacher_nll(Uniform(), tokens, labels, small.mask_id),
                          torch.full((len(tokens),), math.log(27), dtype=torch.float64))
    torch.manual_seed(0)
    net = small.build_network(load_weights=False).eval()
    got = teacher_nll(net, tokens, labels, small.mask_id, batch=7)
    orders = []
    for order in itertools.permutations(range(3)):            # reveal the letters in this order
        x = torch.full_like(tokens, small.mask_id)
        nll = torch.zeros(len(tokens), dtype=torch.float64)
        for j in order:
            with torch.no_grad():
                logp = net(x, labels).double().log_softmax(-1)
            nll -= logp[torch.arange(len(tokens)), j, tokens[:, j]]
            x[:, j] = tokens[:, j]
        orders.append(nll / 3)
    assert torch.allclose(got, torch.stack(orders).mean(0), atol=1e-5)


def test_the_suite_has_the_baselines_and_the_test_time_rows():
    grid = {e.id: e for e in entries(load_suite("words"))}
    assert {"sdtt-1step-seed0", "di4c-1step-seed0", "redi-1step-seed0"} <= set(grid)
    tteo, best = grid["dimo-fkl-tteo4x4-seed0"], grid["dimo-fkl-best-of-52-seed0"]
    assert tteo.search["rewards"][0]["name"] == best.search["rewards"][0]["name"] == "word_attribute"
    assert tteo.init_from is None and best.search["n"] == 4 * (3 * 4 + 1)
    assert "word_attribute" in WordsTeacher.exact_metrics
