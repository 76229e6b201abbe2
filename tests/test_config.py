"""The key=value CLI, YAML files, typed conversion, errors that name the field, and the config hash."""
import pytest

from core.config import config_hash, parse_value, resolve
from core.errors import UserError


def test_defaults_are_the_main_job():
    cfg = resolve([])
    assert cfg["method"]["name"] == "dimo" and cfg["teacher"]["name"] == "digits"
    assert cfg["divergence"]["name"] == "fkl" and cfg["init"]["name"] == "mixed"


def test_values_are_converted_by_declared_types():
    cfg = resolve(["method=dimo", "method.lr_generator=1e-5", "trainer.zero_stage=2", "method.nan_to_num=false",
                   "divergence=jeffrey", "divergence.beta=-0.3", "eval.teacher_steps=[1, 4]",
                   "init.r_init_range=[0.1, 0.9]", "teacher.checkpoint=none"])
    assert cfg["method"]["lr_generator"] == 1e-5 and cfg["trainer"]["zero_stage"] == 2
    assert cfg["method"]["nan_to_num"] is False and cfg["divergence"]["beta"] == -0.3
    assert cfg["eval"]["teacher_steps"] == [1, 4] and cfg["init"]["r_init_range"] == [0.1, 0.9]
    assert cfg["teacher"]["checkpoint"] is None


@pytest.mark.parametrize("args, expected", [
    (["method.lr_generatr=1"], ["method.lr_generatr", "unknown field", "lr_generator"]),
    (["trainer.zero_stage=5"], ["trainer.zero_stage", "less than or equal to 3", "5"]),
    (["trainer.steps=ten"], ["trainer.steps", "valid integer", "ten"]),
    (["method.token_norm=mean"], ["method.token_norm", "masked_mean", "sum", "mean"]),
    (["teacher=digitz"], ["unknown teacher 'digitz'", "Did you mean 'digits'"]),
    (["method=mdm", "divergence=rkl"], ["'divergence' is not used by method 'mdm'", "schedule"]),
    (["frobnicate.x=1"], ["unknown config section 'frobnicate'", "trainer"]),
    (["steps"], ["not of the form key=value"]),
    (["config=/nonexistent/run.yaml"], ["config file '/nonexistent/run.yaml' does not exist"]),
    (["divergence=f", "divergence.generator=alpha", "divergence.alpha=1"], ["alpha must not be 0 or 1"]),
])
def test_errors_name_the_field_the_value_and_the_choices(args, expected):
    with pytest.raises(UserError) as exc:
        resolve(args)
    for text in expected:
        assert text in str(exc.value)


def test_yaml_file_then_command_line_refines(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("method:\n  name: dimo\n  cfg_scale: 3.0\n  lr_aux: 0.001\ndivergence: rkl\ntrainer:\n  steps: 7\n")
    cfg = resolve([f"config={f}", "method.cfg_scale=1.5"])
    assert cfg["method"]["cfg_scale"] == 1.5 and cfg["method"]["lr_aux"] == 0.001
    assert cfg["divergence"]["name"] == "rkl" and cfg["trainer"]["steps"] == 7


def test_teacher_recipe_sits_between_method_defaults_and_user():
    assert resolve(["method=mdm"])["trainer"]["steps"] == 1200          # digits recipe for mdm
    assert resolve(["method=mdm", "trainer.steps=5"])["trainer"]["steps"] == 5


def test_hash_ignores_bookkeeping_and_tracks_results_relevant_fields():
    base = config_hash(resolve([]))
    assert config_hash(resolve(["trainer.output_dir=/tmp/x", "trainer.wandb=disabled"])) == base
    assert config_hash(resolve(["method.cfg_scale=3"])) != base


def test_parse_value_keeps_scalars_as_strings():
    assert parse_value("007") == "007" and parse_value("[1,2]") == [1, 2] and parse_value("null") is None


def test_a_run_config_is_typed_once_and_reads_as_its_json_view():
    from core.config import RunConfig, TrainerConfig
    from plugins.divergences import ReverseKL as RKL
    run = resolve(["divergence=rkl", "trainer.steps=7", "method.cfg_scale=2"])
    assert isinstance(run, RunConfig) and isinstance(run.trainer, TrainerConfig) and run.trainer.steps == 7
    div = run.plugin("divergence")
    assert div.name == "rkl" and div.cls is RKL and isinstance(div.config, RKL.Config)
    assert run.plugin("method").config.cfg_scale == 2.0 == run["method"]["cfg_scale"]
    assert list(run)[:4] == ["trainer", "eval", "teacher", "method"] and run.name == "dimo-digits"
    assert run.hash == config_hash(run) == config_hash(run.as_dict())


def test_a_changed_run_is_resolved_and_checked_again():
    run = resolve(["trainer.steps=7"])
    changed = run.updated({"trainer": {"steps": 9}, "method": {"cfg_scale": 3}})
    assert (changed.trainer.steps, changed.plugin("method").config.cfg_scale) == (9, 3.0)
    assert run.trainer.steps == 7 and changed.hash != run.hash           # the original is unchanged
    copy = run.as_dict()
    copy["trainer"]["steps"] = 1                                       # a copy: the run's view is not touched
    assert run["trainer"]["steps"] == 7
    with pytest.raises(UserError, match="trainer.steps"):
        run.updated({"trainer": {"steps": -1}})


def test_the_main_job_builds_its_method_and_teacher_once(tiny_teacher, tmp_path, monkeypatch):
    """Pre-training check, training and evaluation share one build (issue 12: build once per run)."""
    from conftest import TINY
    from core import factory, pipeline
    builds = []

    def counting(run, teacher=None):
        builds.append(run.name)
        return factory.build_method(run, teacher)
    monkeypatch.setattr(pipeline, "build_method", counting)
    monkeypatch.setattr("core.engine.build_method", counting)
    monkeypatch.setattr("core.export.build_method", counting)
    summary = pipeline.main_job(resolve([*TINY, "method=dimo", "trainer.steps=1", "trainer.batch_size=4",
                                         "eval.enabled=true", "eval.samples_per_class=2", "eval.teacher_steps=[1]",
                                         f"trainer.output_dir={tmp_path}"]))
    assert builds == ["dimo-digits"] and summary["rows"]
