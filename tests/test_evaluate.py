"""`python -m core.run evaluate` (issue 16, classes 7 and 8): parsed as training parses, config= files, a new
results file per evaluation in the benchmarks' schema, never overwriting, with the plugins (and their
distributions) that produced it; evaluators are plugins."""
import importlib.metadata as md
import json
import tempfile
from pathlib import Path

import pytest

from benchmarks import results
from conftest import TINY
from core.errors import UserError
from core.run import main
from test_maskgit import inception_file  # noqa: F401  (a fixture: random weights in torch-fidelity's layout)


@pytest.fixture(scope="module")
def student(tiny_teacher):
    """A tiny Di[M]O student trained for two steps (the evaluation under test is what matters)."""
    from core.config import resolve
    from core.pipeline import main_job
    run = tempfile.mkdtemp(prefix="dimo-eval-student-")
    main_job(resolve([*TINY, "method=dimo", "trainer.steps=2", "trainer.batch_size=8", f"trainer.output_dir={run}"]))
    return Path(run)


def evaluate(*args) -> int:
    return main(["evaluate", *args])


def test_list_values_parse_as_in_training_and_each_evaluation_gets_a_new_file(student, capsys):
    assert evaluate(f"checkpoint={student}", "eval.metrics=[accuracy]", "eval.samples_per_class=3") == 0
    first = student / "evaluation-1.json"
    assert str(first) in capsys.readouterr().out
    [record] = results.read_records(first)
    assert record.config["eval"]["metrics"] == ["accuracy"] and set(record.metrics) == {"accuracy", "class_logp"}
    assert record.num_samples == 30 and record.entry.suite is None and record.entry.method == "dimo"
    assert record.seeds.sample == [record.config["eval"]["seed"]] and record.train_time_s is None
    before = first.read_bytes()

    assert evaluate(f"checkpoint={student / 'student.safetensors'}", "eval.metrics=[accuracy]",
                    "eval.samples_per_class=3") == 0
    [again] = results.read_records(student / "evaluation-2.json")
    assert first.read_bytes() == before                                   # the old file is never overwritten
    assert again.sample_hash == record.sample_hash and again.config_hash == record.config_hash


def test_config_files_give_the_eval_section_and_the_command_line_refines_it(student, tmp_path):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text("eval:\n  metrics: [accuracy]\n  samples_per_class: 3\n  seed: 7\nevaluator: embedded\n")
    assert evaluate(f"checkpoint={student}", f"config={cfg}", "eval.samples_per_class=2") == 0
    newest = max(student.glob("evaluation-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    [record] = results.read_records(newest)
    assert record.num_samples == 20 and record.seeds.sample == [7]


def test_records_name_every_plugin_used_and_the_versions(student):
    assert evaluate(f"checkpoint={student}", "eval.metrics=[accuracy, frechet]", "eval.samples_per_class=2") == 0
    newest = max(student.glob("evaluation-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    env = results.read_records(newest)[0].env
    assert {"method=dimo", "teacher=digits", "divergence=fkl", "metric=accuracy", "metric=frechet",
            "evaluator=embedded"} <= set(env.plugin_sources)
    assert env.plugins == {"dimo": md.version("dimo")}
    assert env.deepspeed == md.version("deepspeed") and env.torch


def test_third_party_plugins_are_recorded_with_their_distribution_and_version(monkeypatch):
    """Provenance comes from the entry points' distributions (importlib.metadata), as `core.run plugins` shows."""
    import torch
    from core.interfaces import Metric
    from registry import get_registry

    class Toy(Metric):
        higher_is_better = {"toy": True}

    reg = get_registry()
    monkeypatch.setitem(reg.entries, "metric", dict(reg.entries["metric"]))
    reg.add("metric", "toy", Toy, plugin="toy", distribution="acme-metrics", version="0.3")
    env = results.environment({"teacher": {"name": "digits"}, "eval": {"metrics": ["toy", "accuracy"]}},
                              torch.device("cpu"), (("evaluator", "embedded"),))
    assert env["plugins"] == {"dimo": md.version("dimo"), "acme-metrics": "0.3"}
    assert env["plugin_sources"]["metric=toy"] == "acme-metrics"
    assert env["plugin_sources"]["evaluator=embedded"] == "dimo"
    results.Env.model_validate(env)


def test_training_results_record_their_plugins(tmp_path):
    import torch

    from core.config import resolve
    from core.evaluate import write_results
    from core.factory import build_method
    from core.interfaces import Samples
    run = resolve([*TINY, "method=dimo"])
    _, teacher = build_method(run)
    samples = {"student@1": Samples(images=torch.zeros(1, 1, 8, 8), labels=torch.zeros(1), tokens=torch.zeros(1, 3))}
    path = write_results(tmp_path / "results.json", [{"model": "student", "steps": 1, "accuracy": 1.0,
                                                      "samples_per_s": 5.0}], samples, run, teacher, torch.device("cpu"))
    [record] = results.read_records(path)
    assert record.env.plugin_sources["method=dimo"] == "dimo" and record.env.plugins["dimo"] == md.version("dimo")
    assert record.env.torch and record.env.deepspeed and record.entry.method == "dimo"


@pytest.mark.parametrize("text, expected", [
    ("trainer:\n  steps: 3\n", "unknown key(s) trainer"),
    ("eval: [accuracy]\n", "section 'eval' must be a mapping"),
])
def test_config_file_sections_evaluate_cannot_change_are_refused(text, expected, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    assert evaluate(f"checkpoint={tmp_path / 'missing'}", f"config={cfg}") == 2
    assert expected in capsys.readouterr().err


def test_missing_checkpoint_and_missing_argument(tmp_path, capsys):
    assert evaluate("eval.seed=1") == 2
    assert "evaluate needs checkpoint=" in capsys.readouterr().err
    assert evaluate(f"checkpoint={tmp_path / 'missing'}") == 2
    assert "not found" in capsys.readouterr().err


def test_a_record_file_with_a_wrong_field_is_refused_naming_it(tmp_path):
    bad = tmp_path / "evaluation-1.json"
    bad.write_text(json.dumps([{"schema_version": 1}]))
    with pytest.raises(UserError, match="field '0.entry' is missing"):
        results.read_records(bad)


def test_evaluators_are_plugins():
    from registry import get_registry
    reg = get_registry()
    assert {"embedded", "inception"} <= set(reg.names("evaluator"))
    assert reg.info("evaluator", "inception").distribution == "dimo"


def test_the_inception_evaluator_streams_fid_and_is_per_seed(inception_file, tmp_path):  # noqa: F811
    """Random Inception weights (tests/test_maskgit.py's fixture) and a toy decoder: one FID and IS per seed,
    every seed's tokens kept, the same seed the same score."""
    import numpy as np
    import torch
    from registry.registry import build

    class Toy:
        num_classes = 2

        def decode_with(self, tokens, cond):   # a grey level per sample, from its first token
            return (tokens[:, :1].float() / 9).view(-1, 1, 1, 1).expand(-1, 3, 32, 32)

    ref = tmp_path / "ref.npz"
    np.savez(ref, mu=np.zeros(2048), sigma=np.eye(2048))
    evaluator = build("evaluator", "inception", {"reference": str(ref), "weights": str(inception_file)})
    assert evaluator.unavailable() is None
    generate = lambda cond, g: torch.randint(0, 10, (len(cond), 4), generator=g)
    ev = {"samples_per_class": 3, "batch_size": 4}
    per_seed, tokens, n = evaluator.run(generate, Toy(), ev, [0, 1])
    assert n == 6 and [set(r) for r in per_seed] == [{"fid", "is"}] * 2
    assert sum(len(t) for t in tokens) == 12 and not torch.equal(tokens[0], tokens[2])
    again, _, _ = evaluator.run(generate, Toy(), ev, [0])
    assert again[0] == pytest.approx(per_seed[0])
    fields = results.scored(per_seed, tokens, [], evaluator.higher_is_better)
    assert fields["higher_is_better"] == {"fid": False, "is": True}
