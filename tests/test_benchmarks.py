"""Benchmark suites, the results schema and the Markdown leaderboard."""
import copy
import json
import os
from pathlib import Path

import pytest

from benchmarks import leaderboard, reported, results
from benchmarks.runner import run_suite
from benchmarks.suites import BUILTIN, Suite, entries, load_suite
from conftest import ROOT, clean_env
from core.errors import UserError

TINY_TEACHER = {"name": "digits", "arch": {"dim": 32, "depth": 1, "heads": 2}}


def record(**changes) -> dict:
    """A valid result record (as written by the runner), with nested ``changes`` applied."""
    rec = {
        "schema_version": 1,
        "entry": {"suite": "toy", "suite_version": 1, "id": "teacher-random-4step", "group": "teacher",
                  "label": "MaskGit (random)", "teacher": "digits", "method": None, "sampler": "random", "steps": 4},
        "config": {"teacher": {"name": "digits"}}, "config_hash": "0123456789ab", "train_config_hash": None,
        "teacher_sha256": None, "seeds": {"train": None, "sample": [0, 1]},
        "env": {"dimo_version": "0.1.0", "git_commit": "abc", "git_dirty": False, "plugins": {"dimo": "0.1.0"},
                "python": "3.11", "torch": "2", "device": "cpu", "threads": 2},
        "date": "2026-01-01T00:00:00+00:00", "wall_time_s": 1.0, "train_time_s": None, "num_samples": 100,
        "metrics": {"fd": 3.0, "accuracy": 0.9}, "spread": {"fd": 0.1, "accuracy": 0.0},
        "per_seed": [{"fd": 2.9, "accuracy": 0.9}, {"fd": 3.1, "accuracy": 0.9}],
        "higher_is_better": {"fd": False, "accuracy": True}, "sample_hash": "a" * 64,
    }
    for path, value in changes.items():
        node = rec
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[k]
        if value is KeyError:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
    return rec


# ------------------------------------------------------------------------------------------------
# schema
# ------------------------------------------------------------------------------------------------

def test_a_valid_record_round_trips(tmp_path):
    path = tmp_path / "r.json"
    results.write(path, record())
    back = results.read(path)
    assert back.metrics == {"fd": 3.0, "accuracy": 0.9} and back.entry.steps == 4
    assert json.loads(path.read_text())["sample_hash"] == "a" * 64


@pytest.mark.parametrize("change, field", [
    ({"env__git_commit": KeyError}, "env.git_commit"),
    ({"config_hash": KeyError}, "config_hash"),
    ({"metrics": KeyError}, "metrics"),
    ({"entry__steps": "four"}, "entry.steps"),
    ({"entry__group": "distilation"}, "entry.group"),
    ({"seeds__sample": []}, "seeds.sample"),
    ({"sample_hash": "xyz"}, "sample_hash"),
    ({"wall_time_s": -1.0}, "wall_time_s"),
    ({"surprise": 1}, "surprise"),
])
def test_a_record_with_a_missing_or_wrong_field_is_rejected_naming_it(tmp_path, change, field):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(record(**change)))
    with pytest.raises(UserError) as err:
        results.read(path)
    assert f"field '{field}'" in str(err.value) and str(path) in str(err.value)
    with pytest.raises(UserError, match=f"field '{field}'"):   # and nothing invalid is ever written
        results.write(tmp_path / "out.json", record(**change))
    assert not (tmp_path / "out.json").exists()


def test_metric_tables_must_agree_and_be_finite():
    with pytest.raises(UserError, match="spread must have exactly the keys of metrics"):
        results.validate(record(spread={"fd": 0.1}))
    with pytest.raises(UserError, match="metrics.fd"):
        results.validate(record(metrics={"fd": float("nan"), "accuracy": 0.9}))
    with pytest.raises(UserError, match="per_seed has 1 entries for 2 sampling seeds"):
        results.validate(record(per_seed=[{"fd": 3.0, "accuracy": 0.9}]))


def test_entry_hash_follows_every_result_relevant_field_but_not_output_paths():
    cfg = {"trainer": {"steps": 10, "output_dir": "/a", "progress": True}, "eval": {"seed": 0}}
    base = results.entry_hash(cfg, {"steps": 4})
    moved = copy.deepcopy(cfg)
    moved["trainer"].update(output_dir="/b", progress=False)
    assert results.entry_hash(moved, {"steps": 4}) == base
    longer = copy.deepcopy(cfg)
    longer["trainer"]["steps"] = 11
    assert results.entry_hash(longer, {"steps": 4}) != base
    assert results.entry_hash(cfg, {"steps": 8}) != base
    assert results.entry_hash({**cfg, "eval": {"seed": 1}}, {"steps": 4}) != base


# ------------------------------------------------------------------------------------------------
# suites
# ------------------------------------------------------------------------------------------------

def test_builtin_digits_suite_grid_follows_the_paper_groups():
    suite = load_suite("digits", {"performance": None})
    grid = entries(suite)
    teacher = [e for e in grid if e.kind == "teacher"]
    assert {(e.sampler["name"], e.steps) for e in teacher} == {(s, k) for s in ("random", "confidence", "halton")
                                                               for k in (1, 2, 4, 8, 16)}
    assert {e.group for e in teacher} == {"teacher", "sampler"}
    divs = {e.sections["divergence"]["name"] for e in grid if e.kind == "distill" and "divergence" in e.sections}
    assert divs == {"fkl", "rkl", "jeffrey"}
    by_id = {e.id: e for e in grid}
    assert by_id["soft_dimo-1step-seed0"].init_from == by_id["dimo-fkl-continued-1step-seed0"].init_from \
        == "dimo-fkl-1step-seed0"
    assert {e.search["mode"] for e in grid if e.kind == "search"} == {"tteo", "best_of_n"}
    assert len(by_id) == len(grid)


def test_other_installed_methods_join_the_suites_they_declare(monkeypatch):
    from core.interfaces import Method
    from plugins.methods.dimo import DiMO
    from registry import get_registry
    from registry.registry import PluginInfo

    class NeedsData(Method):
        needs_data = True
        sample_steps = (1, 4)
        suites = ("digits",)

    class NotForDigits(Method):
        suites = ("digits",)

        @classmethod
        def applicable(cls, teacher):
            return type(teacher).__name__ != "DigitsTeacher"

    class MyDiMO(DiMO):   # inherits Di[M]O's recipe, not its suites
        pass

    reg = get_registry()
    monkeypatch.setitem(reg.entries["method"], "fake_two_step", PluginInfo(
        "method", "fake_two_step", NeedsData, "fake", "fake-dist", "1.0"))
    monkeypatch.setitem(reg.entries["method"], "fake_not_digits", PluginInfo(
        "method", "fake_not_digits", NotForDigits, "fake", "fake-dist", "1.0"))
    monkeypatch.setitem(reg.entries["method"], "my_dimo", PluginInfo(
        "method", "my_dimo", MyDiMO, "fake", "fake-dist", "1.0"))
    ids = {e.id for e in entries(load_suite("digits", {"performance": None}))}
    assert {"fake_two_step-1step-seed0", "fake_two_step-4step-seed0"} <= ids   # one entry per sample_steps
    assert not any(i.startswith("my_dimo") for i in ids)                       # declared no suite
    from core.config import resolve
    mine, builtin = resolve(["method=my_dimo"]), resolve(["method=dimo"])
    assert mine["method"] == {**builtin["method"], "name": "my_dimo"}          # the Di[M]O digits recipe
    assert mine["trainer"] == builtin["trainer"] and mine["trainer"]["steps"] == 800
    assert not any(i.startswith("fake_not_digits") for i in ids)               # declared itself not applicable
    assert not any(i.startswith("mdm") for i in ids)                           # trains teachers: the Teacher rows


def test_a_bad_suite_is_a_user_error_naming_the_field(tmp_path):
    with pytest.raises(UserError, match="not a built-in suite"):
        load_suite("nope")
    with pytest.raises(UserError, match="suite.eval.seeds"):
        load_suite("digits", {"eval": {"seeds": []}})
    bad = tmp_path / "s.yaml"
    bad.write_text("name: x\nteachers: [digits]\nmethods: [{label: A, config: {divergence: fkl}}]\n")
    with pytest.raises(UserError, match="must name a method"):
        load_suite(str(bad))


def test_the_imagenet_template_is_skipped_with_a_reason_without_checkpoint_and_statistics(tmp_path, capsys):
    out = run_suite(load_suite("imagenet256"), tmp_path / "results", tmp_path / "work", progress=False)
    assert out == []
    msg = capsys.readouterr().out
    assert "suite 'imagenet256' skipped" in msg and "evaluator.reference=<stats.npz>" in msg
    assert not (tmp_path / "results").exists()


def test_suites_take_any_installed_evaluator_plugin(monkeypatch, tmp_path, capsys):
    """The evaluator is a plugin kind: a third-party one is selected by name with its options, which join the
    entry hash through ``identity()``; ``unavailable()`` skips the suite with its reason."""
    from pydantic import Field
    from benchmarks.runner import Runner
    from core.interfaces import PluginConfig, SampleEvaluator
    from registry import get_registry

    class Remote(SampleEvaluator):
        class Config(PluginConfig):
            model: str = Field("a", description="feature model")

        def unavailable(self):
            return f"feature model {self.config.model} is not on this machine"

        def identity(self):
            return {"model": self.config.model}

    reg = get_registry()
    monkeypatch.setitem(reg.entries, "evaluator", dict(reg.entries["evaluator"]))
    reg.add("evaluator", "remote", Remote, plugin="remote", distribution="acme-eval", version="1.0")

    def entry_hash(model):
        suite = tiny_suite(evaluator={"name": "remote", "model": model})
        return Runner(suite, tmp_path / "r", tmp_path / "w").is_current(entries(suite)[0])[1]
    assert entry_hash("b") == entry_hash("b") != entry_hash("c")
    assert run_suite(tiny_suite(evaluator="remote"), tmp_path / "r", tmp_path / "w", progress=False) == []
    assert "feature model a is not on this machine" in capsys.readouterr().out
    with pytest.raises(ValueError, match="evaluator.modle: unknown field"):
        tiny_suite(evaluator={"name": "remote", "modle": "b"})
    with pytest.raises(UserError, match="evaluator.reference=<stats.npz>"):   # the suite field it replaced
        load_suite("imagenet256", {"reference": "stats.npz"})


# ------------------------------------------------------------------------------------------------
# running: skip, change one field, force
# ------------------------------------------------------------------------------------------------

def tiny_suite(**changes) -> Suite:
    data = {"name": "tiny", "teachers": [TINY_TEACHER], "teacher_steps": [1, 2],
            "samplers": [{"group": "teacher", "label": "random", "config": {"name": "random"}}],
            "methods": [{"label": "Di[M]O", "id": "dimo", "config": {"method": "dimo",
                                                                     "trainer": {"steps": 2, "batch_size": 8}}}],
            "other_methods": False, "performance": None,
            "eval": {"samples_per_class": 5, "seeds": [0, 1], "batch_size": 50}}
    for k, v in changes.items():
        data[k] = v
    return Suite.model_validate(data)


def mtimes(root: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in sorted(root.glob("tiny/*.json"))}


def test_suite_runs_once_skips_when_unchanged_and_reruns_exactly_the_changed_entry(tiny_teacher, tmp_path):
    res, work = tmp_path / "results", tmp_path / "work"
    first = run_suite(tiny_suite(), res, work, progress=False)
    assert [o.status for o in first] == ["ran"] * 3
    before = mtimes(res)
    assert set(before) == {"teacher-random-1step.json", "teacher-random-2step.json", "dimo-1step-seed0.json"}
    student = results.read(res / "tiny" / "dimo-1step-seed0.json")
    assert student.entry.group == "distillation" and student.train_time_s > 0
    assert student.seeds.train == 0 and student.seeds.sample == [0, 1] and len(student.per_seed) == 2
    assert student.num_samples == 50 and {"fd", "accuracy"} <= set(student.metrics)
    assert student.env.plugins.get("dimo") and student.teacher_sha256

    again = run_suite(tiny_suite(), res, work, progress=False)
    assert [o.status for o in again] == ["skipped"] * 3 and mtimes(res) == before

    # one field of one entry: the Di[M]O generator lr -> only that entry re-runs
    changed = tiny_suite(methods=[{"label": "Di[M]O", "id": "dimo", "config": {
        "method": {"name": "dimo", "lr_generator": 1e-4}, "trainer": {"steps": 2, "batch_size": 8}}}])
    third = run_suite(changed, res, work, progress=False)
    assert {o.entry.id: o.status for o in third} == {"teacher-random-1step": "skipped",
                                                      "teacher-random-2step": "skipped",
                                                      "dimo-1step-seed0": "ran"}
    after = mtimes(res)
    assert after["dimo-1step-seed0.json"] != before["dimo-1step-seed0.json"]
    assert {k: v for k, v in after.items() if k.startswith("teacher")} == \
        {k: v for k, v in before.items() if k.startswith("teacher")}
    rerun = results.read(res / "tiny" / "dimo-1step-seed0.json")
    assert rerun.config["method"]["lr_generator"] == 1e-4 and rerun.config_hash != student.config_hash

    # an evaluation change re-runs the evaluation but reuses the trained student's run folder
    fewer = run_suite(tiny_suite(eval={"samples_per_class": 4, "seeds": [0, 1], "batch_size": 50}), res, work,
                      progress=False, only=["dimo"])
    assert [o.status for o in fewer] == ["ran"]
    assert results.read(res / "tiny" / "dimo-1step-seed0.json").train_time_s is None

    old = results.read(res / "tiny" / "teacher-random-1step.json")
    forced = run_suite(tiny_suite(), res, work, force=True, progress=False, only=["teacher-random-1"])
    assert [(o.entry.id, o.status) for o in forced] == [("teacher-random-1step", "ran")]
    new = results.read(res / "tiny" / "teacher-random-1step.json")
    assert new.date >= old.date and new.wall_time_s != old.wall_time_s
    assert new.sample_hash == old.sample_hash                                   # deterministic sampling
    assert new.metrics == pytest.approx(old.metrics, rel=1e-9)


def test_new_teacher_weights_invalidate_results_and_students(tiny_teacher, tmp_path):
    import shutil
    from safetensors.torch import load_file, save_file
    from benchmarks.runner import build_teacher
    weights = tmp_path / "teacher.safetensors"
    shutil.copy(build_teacher(TINY_TEACHER).default_checkpoint(), weights)
    suite = tiny_suite(teachers=[{**TINY_TEACHER, "checkpoint": str(weights)}], teacher_steps=[1])
    first = run_suite(suite, tmp_path / "r", tmp_path / "w", progress=False)
    assert [o.status for o in first] == ["ran", "ran"]
    assert [o.status for o in run_suite(suite, tmp_path / "r", tmp_path / "w", progress=False)] == ["skipped"] * 2
    state = load_file(str(weights))
    state["bias"] = state["bias"] + 0.5                       # a re-trained teacher, same architecture
    save_file(state, str(weights))
    third = run_suite(suite, tmp_path / "r", tmp_path / "w", progress=False)
    assert [o.status for o in third] == ["ran", "ran"]
    student = results.read(tmp_path / "r" / "tiny" / "dimo-1step-seed0.json")
    assert student.train_time_s is not None                    # re-trained, not the old teacher's student
    assert len(list((tmp_path / "w").glob("dimo-digits-*"))) == 2


def test_soft_dimo_starts_from_the_dimo_student_and_test_time_rows_search_it(tiny_teacher, tmp_path):
    methods = [{"label": "Di[M]O", "id": "dimo", "config": {"method": "dimo", "trainer": {"steps": 2, "batch_size": 8}}},
               {"label": "Soft-Di[M]O", "id": "soft", "init_from": "dimo",
                "config": {"method": {"name": "soft_dimo", "w_gan": 0.1, "rewards": ["classifier"]},
                           "discriminator": "light", "trainer": {"steps": 2, "batch_size": 8}}}]
    suite = tiny_suite(teacher_steps=[1], methods=methods, test_time={"of": "soft", "label": "Soft", "seeds": 2,
                                                                     "iters": 1})
    grid = {e.id: e for e in entries(suite)}
    assert grid["soft-1step-seed0"].init_from == "dimo-1step-seed0"
    assert grid["soft-best-of-8-seed0"].search == {"mode": "best_of_n", "n": 8,
                                                   "rewards": [{"name": "classifier", "form": "log_odds"}]}
    res, work = tmp_path / "r", tmp_path / "w"
    out = run_suite(suite, res, work, progress=False)
    assert [o.status for o in out] == ["ran"] * 6
    soft = results.read(res / "tiny" / "soft-1step-seed0.json")
    source = Path(soft.config["method"]["init_from"])
    assert source.parent == work and source.name.startswith("dimo-digits-") and (source / "student.json").is_file()
    tteo = results.read(res / "tiny" / "soft-tteo2x1-seed0.json")
    bon = results.read(res / "tiny" / "soft-best-of-8-seed0.json")
    one = results.read(res / "tiny" / "soft-best-of-2-seed0.json")
    assert tteo.entry.group == bon.entry.group == "test-time" and {"class_logp", "reward"} <= set(tteo.metrics)
    assert bon.metrics["reward"] > one.metrics["reward"]   # best of 8 by that reward beats best of 2
    assert tteo.higher_is_better["reward"]
    # re-training the source student re-runs everything started from it, and nothing else
    changed = copy.deepcopy(methods)
    changed[0]["config"]["method"] = {"name": "dimo", "lr_generator": 2e-5}
    again = run_suite(tiny_suite(teacher_steps=[1], methods=changed, test_time=suite.test_time.model_dump()),
                      res, work, progress=False)
    assert {o.entry.id: o.status for o in again} == {
        "teacher-random-1step": "skipped", "dimo-1step-seed0": "ran", "soft-1step-seed0": "ran",
        "soft-tteo2x1-seed0": "ran", "soft-best-of-8-seed0": "ran", "soft-best-of-2-seed0": "ran"}
    with pytest.raises(UserError, match="init_from='nope' is not a method id"):
        entries(tiny_suite(methods=[{**methods[1], "init_from": "nope"}]))


def test_same_seed_same_samples_hash(tiny_teacher, tmp_path):
    a = run_suite(tiny_suite(samplers=[{"group": "teacher", "label": "r", "config": {"name": "random"}}],
                             methods=[], teacher_steps=[2]), tmp_path / "a", tmp_path / "w", progress=False)
    b = run_suite(tiny_suite(samplers=[{"group": "teacher", "label": "r", "config": {"name": "random"}}],
                             methods=[], teacher_steps=[2]), tmp_path / "b", tmp_path / "w", progress=False)
    ra, rb = results.read(a[0].path), results.read(b[0].path)
    assert ra.sample_hash == rb.sample_hash
    assert ra.metrics == pytest.approx(rb.metrics, rel=1e-9)   # same samples; float summation order may differ
    c = run_suite(tiny_suite(samplers=[{"group": "teacher", "label": "r", "config": {"name": "random"}}],
                             methods=[], teacher_steps=[2],
                             eval={"samples_per_class": 5, "seeds": [7, 1], "batch_size": 50}),
                  tmp_path / "c", tmp_path / "w", progress=False)
    assert results.read(c[0].path).sample_hash != ra.sample_hash


@pytest.mark.slow
def test_performance_entries_measure_cost_against_mdm_and_the_teacher(tiny_teacher, tmp_path):
    suite = tiny_suite(samplers=[{"group": "teacher", "label": "r", "config": {"name": "random"}}],
                       performance={"batch_size": 8, "warmup": 1, "iters": 3, "teacher_steps": 8,
                                    "sample_batch": 40, "repeats": 2})
    out = run_suite(suite, tmp_path / "r", tmp_path / "w", kinds=["perf"], progress=False)
    recs = {o.entry.id: results.read(o.path) for o in out}
    assert set(recs) == {"perf-mdm", "perf-dimo"}
    mdm, dimo = recs["perf-mdm"].metrics, recs["perf-dimo"].metrics
    assert mdm["iter_cost_vs_mdm"] == 1.0
    assert dimo["iter_cost_vs_mdm"] > 1.2           # generator, aux and two teacher passes per iteration
    assert dimo["throughput_vs_teacher"] > 2.0      # one network call against 8 steps with the teacher
    assert dimo["peak_memory_mb"] > 0 and recs["perf-dimo"].entry.group == "performance"


# ------------------------------------------------------------------------------------------------
# leaderboards
# ------------------------------------------------------------------------------------------------

def some_records():
    recs = [record(), record(entry__id="teacher-random-1step", entry__steps=1, metrics__fd=9.0),
            record(entry__id="halton-4", entry__group="sampler", entry__label="Halton", entry__sampler="halton"),
            record(entry__id="dimo-1step-seed0", entry__group="distillation", entry__label="Di[M]O (FKL)",
                   entry__method="dimo", entry__sampler=None, entry__steps=1, metrics__fd=3.3)]
    perf = record(entry__id="perf-dimo", entry__group="performance", entry__label="Di[M]O (FKL)",
                  entry__steps=1, metrics={"iter_cost_vs_mdm": 3.1}, spread={"iter_cost_vs_mdm": 0.0},
                  per_seed=[{"iter_cost_vs_mdm": 3.1}], higher_is_better={"iter_cost_vs_mdm": False},
                  seeds={"train": 0, "sample": [0]}, config={"trainer": {"batch_size": 8}})
    return [results.validate(r) for r in recs + [perf]]


def test_markdown_groups_like_the_paper_and_keeps_reported_numbers_apart(tmp_path):
    paths = leaderboard.render(some_records(), tmp_path, {"toy": "a toy suite"}, "python -m benchmarks.run suite=toy")
    md = paths["markdown"].read_text()
    reproduced, reported_part = md.split("## Reported in the paper")
    assert "| Teacher | MaskGit (random) | 1 | 9.000 ± 0.100 |" in reproduced
    assert reproduced.index("| Teacher |") < reproduced.index("| Sampler | Halton |") < \
        reproduced.index("| Discrete distillation | Di[M]O (FKL) | 1 |")
    assert "### Performance" in reproduced and "| Performance | Di[M]O (FKL) | 1 | 3.100 |" in reproduced
    assert "sampling seeds [0, 1]" in reproduced                   # seeds and spread are documented
    assert "6.91" not in reproduced and "Zhu et al., 2025b" not in reproduced
    assert "| Discrete distillation | Di[M]O (Zhu et al., 2025b) | 1 | 6.91 | 214 |" in reported_part
    assert reported.CITATION in reported_part
    assert (tmp_path / "leaderboards" / "toy_fd.png").stat().st_size > 1000
    assert (tmp_path / "leaderboards" / "toy_fd.svg").read_text().startswith("<?xml")
    # rendering is a pure function of the records
    first = (tmp_path / "leaderboards" / "toy_fd.svg").read_text()
    leaderboard.render(some_records(), tmp_path, {"toy": "a toy suite"}, "python -m benchmarks.run suite=toy")
    assert paths["markdown"].read_text() == md and (tmp_path / "leaderboards" / "toy_fd.svg").read_text() == first


def test_compare_measures_disagreement_in_spreads(tmp_path):
    from benchmarks.compare import compare
    for root, fd in (("old", 3.0), ("new", 3.25)):
        results.write(tmp_path / root / "toy" / "teacher-random-4step.json",
                      record(metrics__fd=fd, per_seed=[{"fd": fd, "accuracy": 0.9}] * 2))
    rows = compare(tmp_path / "new", tmp_path / "old", tolerance=3)
    fd = next(r for r in rows if r["metric"] == "fd")
    assert fd["spreads"] == pytest.approx(2.5) and fd["agrees"]          # spread 0.1 -> 2.5 spreads
    assert not compare(tmp_path / "new", tmp_path / "old", tolerance=2)[1]["agrees"]
    assert json.loads((tmp_path / "new" / "comparison.json").read_text())[1]["metric"] == "fd"


def test_reported_table_is_the_papers_table2():
    rows = reported.table2()
    dimo = next(r for r in rows if r["method"] == "Di[M]O")
    assert (dimo["steps"], dimo["fid"], dimo["is"]) == (1, 6.91, 214.0)
    assert {r["group"] for r in rows} == {"teacher", "sampler", "distillation"} and len(rows) == 18


def test_committed_leaderboard_is_rendered_from_the_committed_results(tmp_path):
    """docs/leaderboards.md is what `benchmarks.run render` makes of benchmarks/results (no hand edits)."""
    committed = ROOT / "docs" / "leaderboards.md"
    if not committed.is_file():
        pytest.skip("docs/leaderboards.md not generated yet")
    recs = results.read_all(ROOT / "benchmarks" / "results")
    from benchmarks.run import REGENERATE
    paths = leaderboard.render(recs, tmp_path, {n: s.get("description", "") for n, s in BUILTIN.items()}, REGENERATE)
    assert paths["markdown"].read_text() == committed.read_text()


def test_cli_reports_bad_input_with_exit_code_2(tmp_path):
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-m", "benchmarks.run", "suite=nope"], capture_output=True, text=True,
                         env=clean_env(), cwd=ROOT, timeout=120)
    assert res.returncode == 2 and "not a built-in suite" in res.stderr
    res = subprocess.run([sys.executable, "-m", "benchmarks.run", "force=maybe", "suite=digits"],
                         capture_output=True, text=True, env=clean_env(), cwd=ROOT, timeout=120)
    assert res.returncode == 2 and "force='maybe' is not a boolean" in res.stderr
    assert os.environ.get("DIMO_CACHE")   # the conftest cache, never the user's


def test_cpu_peak_memory_is_the_blocks_own_even_after_a_larger_earlier_peak():
    import mmap

    import torch

    from benchmarks.memory import PeakMemory

    def touch(mib: int) -> mmap.mmap:
        # fresh anonymous pages, so that the figure does not depend on what malloc kept from earlier tests
        buf = mmap.mmap(-1, mib * 2 ** 20)
        for i in range(0, len(buf), mmap.PAGESIZE):
            buf[i] = 1
        return buf

    touch(96).close()                          # a 96 MiB peak before the block
    with PeakMemory(torch.device("cpu")) as mem:
        touch(48).close()                      # 48 MiB inside it, freed before the block ends
    if mem.exact:
        assert 40 < mem.mb < 90
    else:                                      # no resettable high-water mark: never under-reports
        assert mem.mb >= 0
