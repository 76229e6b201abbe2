"""The words task: the shipped word list as padded letter sequences, exact metrics, and the suite entry."""
import pytest
import torch

from benchmarks.suites import entries, load_suite
from core.config import resolve
from core.engine import build_method
from core.errors import UserError
from core.evaluate import Scorer
from core.interfaces import EvalData, Samples
from plugins.teachers.words import WordsMetrics


@pytest.fixture(scope="module")
def teacher():
    return build_method(resolve(["method=mdm", "teacher=words"]))[1]


def score(teacher, tokens, labels, n=2):
    metric = WordsMetrics(WordsMetrics.Config(n=n))
    return metric.compute(EvalData(None, None, samples=Samples(teacher.decode(tokens), labels, tokens),
                                   evaluator=teacher.evaluator()))


def test_the_classes_are_word_lengths_and_spelling_round_trips(teacher):
    from english_words import get_english_words_set
    listed = get_english_words_set(["web2"], lower=True, alpha=True)
    tokens, labels = teacher.dataset()
    words = teacher.spell(tokens)
    assert len(words) == sum(3 <= len(w) <= 6 for w in listed) and set(words) <= listed
    assert all(len(w) == 3 + c for w, c in zip(words, labels.tolist()))
    assert teacher.words.valid(tokens, labels).all()
    assert not teacher.words.valid(tokens[:50], (labels[:50] + 1) % 4).any()   # a word of another length


def test_gcide_words_with_digits_are_left_out():
    from english_words import get_english_words_set
    from plugins.teachers.words import WordList
    listed = get_english_words_set(["gcide"], lower=True, alpha=True)
    words = WordList("gcide", 1, 12)
    kept = {w for ws in words.by_class for w in ws}
    assert kept == {w for w in listed if w.isalpha() and w.isascii() and len(w) <= 12}
    assert all(len(t) for t in words.tokens)
    assert "vitaminb2" in listed and "vitaminb2" not in kept


def test_valid_is_membership_in_the_list(teacher):
    from english_words import get_english_words_set
    listed = get_english_words_set(["web2"], lower=True, alpha=True)
    g = torch.Generator().manual_seed(0)
    letters = torch.randint(0, 4, (3000, 3), generator=g)          # a..d: short strings, some are words
    tokens = torch.cat([letters, torch.full((3000, 3), 26)], 1)
    labels = torch.zeros(3000, dtype=torch.long)
    expected = torch.tensor([w in listed for w in teacher.spell(tokens)])
    assert torch.equal(teacher.words.valid(tokens, labels), expected) and 0 < expected.sum() < 3000
    assert score(teacher, tokens, labels)["valid"] == pytest.approx(float(expected.double().mean()))


def test_the_list_scores_perfectly_and_noise_does_not(teacher):
    tokens, labels = teacher.dataset()
    exact = score(teacher, tokens, labels, n=3)
    assert exact["valid"] == 1.0 and exact["ngram_tv"] == pytest.approx(0.0, abs=1e-12) and exact["distinct"] == 1.0
    noise = torch.randint(0, 27, (1000, 6), generator=torch.Generator().manual_seed(1))
    bad = score(teacher, noise, torch.arange(4).repeat(250))
    assert bad["valid"] == 0.0 and bad["ngram_tv"] > 0.5
    dup = tokens[:1].repeat(10, 1)
    assert score(teacher, dup, labels[:1].repeat(10))["distinct"] == 0.1
    sampled = Scorer(teacher).real_vs_real()        # fresh draws from the list: the data row
    assert sampled["valid"] == 1.0 and sampled["ngram_tv"] < 0.2


def test_bad_input(teacher):
    with pytest.raises(UserError, match="min_length=7 exceeds length=6"):
        resolve(["method=mdm", "teacher=words", "teacher.min_length=7"])
    with pytest.raises(UserError, match="teacher.source"):
        resolve(["method=mdm", "teacher=words", "teacher.source=webster"])
    markov = build_method(resolve(["method=mdm", "teacher=markov"]))[1]
    tokens, labels = markov.draw(2, seed=0)
    with pytest.raises(UserError, match="teacher=words only"):
        WordsMetrics(WordsMetrics.Config()).compute(
            EvalData(None, None, samples=Samples(markov.decode(tokens), labels, tokens), evaluator=markov.evaluator()))


def test_the_suite_has_teacher_rows_and_both_divergences():
    suite = load_suite("words")
    ids = [e.id for e in entries(suite)]
    assert {"teacher-random-1step", "teacher-random-16step", "dimo-fkl-1step-seed0", "dimo-rkl-1step-seed0"} <= set(ids)


@pytest.mark.slow
def test_words_main_job_pretrains_and_scores_exactly(tmp_path):
    from conftest import run_cli
    res = run_cli("method=mdm", "teacher=words", "teacher.arch.dim=32", "teacher.arch.depth=1",
                  "teacher.arch.heads=2", "trainer.steps=20", "trainer.wandb=disabled",
                  "eval.samples_per_class=10", "eval.teacher_steps=[1,8]", f"trainer.output_dir={tmp_path / 'r'}",
                  env={"DIMO_CACHE": str(tmp_path / "cache")})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "valid" in res.stdout and "ngram_tv" in res.stdout
