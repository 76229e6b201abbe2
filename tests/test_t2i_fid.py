"""Text-to-image FID against user reference statistics (COCO-30k style): the ``text_fid`` metric of a prompt-conditioned
teacher's evaluation and the streaming ``inception`` evaluator, on a tiny aMUSEd teacher sampled once per caption of
a prompt file. The Inception network has random weights in torch-fidelity's layout (tests/test_maskgit.py's
fixture; the real file needs a download); the FID is checked against an independent computation (numpy/scipy)."""
import numpy as np
import pytest
import torch

from core.errors import UserError
from test_maskgit import inception_file  # noqa: F401  (a fixture: random weights in torch-fidelity's layout)

pytest.importorskip("diffusers")
from test_amused import CODES, SIDE, write_tiny_amused  # noqa: E402

CAPTIONS = "a red apple on a table\na blue car in the rain\na green tree on a hill\n"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_amused(tmp_path_factory.mktemp("amused") / "amused-tiny")


@pytest.fixture
def captions(tmp_path):
    path = tmp_path / "coco_captions.txt"
    path.write_text(CAPTIONS)
    return path


def independent_fid(features: np.ndarray, mu_r: np.ndarray, sigma_r: np.ndarray) -> float:
    """||mu - mu_r||^2 + tr(S) + tr(S_r) - 2 tr((S S_r)^1/2) with numpy's covariance; the trace of the root is the
    sum of the square roots of the eigenvalues of L^T S L (S_r = L L^T), which S S_r shares."""
    mu, sigma = features.mean(0), np.cov(features, rowvar=False)
    chol = np.linalg.cholesky(sigma_r)
    eig = np.linalg.eigvalsh(chol.T @ sigma @ chol)
    return float(((mu - mu_r) ** 2).sum() + np.trace(sigma) + np.trace(sigma_r) - 2 * np.sqrt(eig.clip(0)).sum())


def random_tokens(cond, g):
    return torch.randint(0, CODES, (len(cond), SIDE * SIDE), generator=g)


def test_fid_metric_scores_samples_per_caption_against_the_reference(folder, captions, inception_file,  # noqa: F811
                                                                     tmp_path):
    from core.evaluate import evaluate_models
    from plugins.teachers.amused import AmusedTeacher
    from plugins.teachers.maskgit.evaluation import InceptionFeatures
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(2048, 2048)) / 64
    mu_r, sigma_r = rng.normal(size=2048) / 10, basis @ basis.T + np.eye(2048) * 1e-2   # full rank, not the identity
    reference = tmp_path / "coco30k_stats.npz"
    np.savez(reference, mu=mu_r, sigma=sigma_r)
    teacher = AmusedTeacher(AmusedTeacher.Config(
        checkpoint=str(folder), prompts={"source": str(captions)}, eval_metrics=["text_fid"],
        eval_fid_reference=str(reference), eval_inception_weights=str(inception_file)))
    assert teacher.num_classes == 3
    rows, samples = evaluate_models([("teacher", 1, random_tokens)], teacher,
                                    {"metrics": ["text_fid"], "samples_per_class": 2, "batch_size": 4, "seed": 0})
    (s,) = samples.values()
    assert s.labels.tolist() == [0, 0, 1, 1, 2, 2]                 # every caption, twice
    pool, _ = InceptionFeatures(str(inception_file))(s.images)
    assert rows[0]["fid"] == pytest.approx(independent_fid(pool.numpy(), mu_r, sigma_r), rel=1e-4)


def test_fid_reference_errors(folder, captions, tmp_path):
    from core.interfaces import EvalData, Samples
    from plugins.teachers.amused import AmusedTeacher
    from registry.registry import build
    with pytest.raises(ValueError, match="text_fid needs teacher.eval_fid_reference=<stats.npz>"):
        AmusedTeacher.Config(checkpoint=str(folder), eval_metrics=["text_fid"])
    samples = Samples(torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))

    def data(reference):
        t = AmusedTeacher(AmusedTeacher.Config(checkpoint=str(folder), prompts={"source": str(captions)},
                                               eval_metrics=["text_fid"], eval_fid_reference=str(reference)))
        return EvalData(None, None, samples=samples, evaluator=t.evaluator())
    with pytest.raises(UserError, match="teacher.eval_fid_reference='.*missing.npz' does not exist"):
        build("metric", "text_fid").compute(data(tmp_path / "missing.npz"))
    bad = tmp_path / "bad.npz"
    np.savez(bad, mean=np.zeros(3))
    with pytest.raises(UserError, match="teacher.eval_fid_reference: .*no 'mu' and 'sigma'"):
        build("metric", "text_fid").compute(data(bad))
    small = tmp_path / "small.npz"
    np.savez(small, mu=np.zeros(64), sigma=np.eye(64))
    with pytest.raises(UserError, match=r"\(2048,\)"):
        build("metric", "text_fid").compute(data(small))


def test_inception_evaluator_samples_each_prompt_of_a_caption_file(folder, captions, inception_file,  # noqa: F811
                                                                    tmp_path):
    """``core.run evaluate evaluator=inception``'s plugin on a text-to-image teacher: conditions are the prompt
    indices, samples_per_class samples per caption, streamed FID against the user's statistics."""
    from plugins.teachers.amused import AmusedTeacher
    from plugins.teachers.maskgit.evaluation import InceptionFeatures
    from registry.registry import build
    teacher = AmusedTeacher(AmusedTeacher.Config(checkpoint=str(folder), prompts={"source": str(captions)}))
    missing = build("evaluator", "inception", {"weights": str(inception_file)})
    assert "COCO-30k" in missing.unavailable() and "evaluator.reference=<stats.npz>" in missing.unavailable()
    reference = tmp_path / "stats.npz"
    np.savez(reference, mu=np.zeros(2048), sigma=np.eye(2048))
    evaluator = build("evaluator", "inception", {"reference": str(reference), "weights": str(inception_file)})
    assert evaluator.unavailable() is None
    seen = []

    def generate(cond, g):
        seen.append(cond.clone())
        return random_tokens(cond, g)
    per_seed, tokens, n = evaluator.run(generate, teacher, {"samples_per_class": 2, "batch_size": 4}, [0])
    assert n == 6 and torch.cat(seen).tolist() == [0, 0, 1, 1, 2, 2]
    images = torch.cat([teacher.decode_with(t, c).float() for t, c in zip(tokens, seen)])
    pool, _ = InceptionFeatures(str(inception_file))(images)
    expected = independent_fid(pool.numpy(), np.zeros(2048), np.eye(2048))
    assert per_seed[0]["fid"] == pytest.approx(expected, rel=1e-4)


def test_fid_command_samples_a_student_on_a_caption_file(folder, captions, inception_file, tmp_path):  # noqa: F811
    """``python -m plugins.t2i_metrics fid``: a student distilled on the built-in prompts, sampled once per caption of
    a COCO-style prompt file (its run's prompt set replaced), streamed FID against the user's statistics."""
    import json

    from core.config import resolve
    from core.export import save_student
    from core.factory import build_method
    from plugins.t2i_metrics import fid_command, main, prompted_model
    from plugins.teachers.maskgit.evaluation import InceptionFeatures
    run = resolve(["method=dimo", "teacher=amused", f"teacher.checkpoint={folder}"])
    method, _ = build_method(run)
    (tmp_path / "run").mkdir()
    save_student(method.student_network(), run, tmp_path / "run", False)
    reference = tmp_path / "coco_stats.npz"
    np.savez(reference, mu=np.full(2048, 0.1), sigma=np.eye(2048) * 2)
    args = [f"checkpoint={tmp_path / 'run'}", f"prompts={captions}", f"reference={reference}", "samples_per_prompt=2",
            "batch_size=4", f"inception_weights={inception_file}", "device=cpu", f"out={tmp_path / 'fid.json'}"]
    out = fid_command(args)
    assert out["model"] == "student@1" and out["n"] == 6 and out["prompts"]["source"] == str(captions)
    assert json.loads((tmp_path / "fid.json").read_text())["config"]["teacher"]["prompts"]["source"] == str(captions)
    # the same samples again (same seed, same batches), scored independently
    generate, teacher, _, _ = prompted_model({"checkpoint": str(tmp_path / "run")}, [],
                                             {"prompts": {"source": str(captions)}}, torch.device("cpu"))
    assert teacher.prompt_set.prompts == CAPTIONS.split("\n")[:3]
    torch.manual_seed(0)
    g, labels = torch.Generator().manual_seed(0), torch.arange(3).repeat_interleave(2)
    images = torch.cat([teacher.decode_with(generate(c, g), c).float() for c in labels.split(4)])
    pool, _ = InceptionFeatures(str(inception_file))(images)
    assert out["fid"] == pytest.approx(independent_fid(pool.numpy(), np.full(2048, 0.1), np.eye(2048) * 2), rel=1e-4)
    assert main(["fid", f"checkpoint={tmp_path / 'run'}", f"prompts={captions}"]) == 2            # no reference
    assert main(["fid", f"checkpoint={tmp_path / 'run'}", f"prompts={captions}",
                 f"reference={tmp_path / 'none.npz'}"]) == 2
