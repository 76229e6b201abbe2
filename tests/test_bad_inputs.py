"""A catalogue of realistic bad inputs (issue 16): each is refused when the run is resolved, before anything is
built or trained, with one message naming the field, the value and what is allowed (exit code 2 on the CLI).

Add a case here for every new class of bad input. Everything runs in-process on resolve-time checks, so the whole
catalogue takes seconds.
"""
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from core.config import resolve
from core.errors import UserError
from core.run import main

# (arguments, substrings the message must contain)
RESOLVE_CASES = [
    # evaluation settings: checked at resolve time, not after the training
    (["eval.metrics=[uniq]"], ["eval.metrics", "unknown metric 'uniq'", "accuracy", "frechet"]),
    (["eval.metrics=[frechet, fdi]"], ["eval.metrics", "unknown metric 'fdi'"]),
    (["eval.metrics=accuracy"], ["eval.metrics", "valid list"]),
    (["eval.teacher_steps=[0]"], ["eval.teacher_steps.0", "greater than 0", "0"]),
    (["eval.teacher_steps=[4, -1]"], ["eval.teacher_steps.1", "greater than 0", "-1"]),
    (["eval.teacher_steps=[two]"], ["eval.teacher_steps.0", "valid integer", "two"]),
    (["eval.samples_per_class=0"], ["eval.samples_per_class", "greater than 0"]),
    (["eval.batch_size=-5"], ["eval.batch_size", "greater than 0", "-5"]),
    (["eval.enabled=perhaps"], ["eval.enabled", "valid boolean", "perhaps"]),
    # preset inits keep the bounds and choices of the fields they re-default
    (["init=all_mask", "init.r_init=1.5"], ["init.r_init", "less than or equal to 1", "1.5"]),
    (["init=class_tokens", "init.r_init=-0.1"], ["init.r_init", "greater than or equal to 0"]),
    (["init=fixed_token", "init.fill=banana"], ["init.fill", "'mask' or 'token'", "banana"]),
    (["init=encoded_noise", "init.random_tokens=pixels"], ["init.random_tokens", "codes", "pixels"]),
    (["init=fixed_token", "init.fill_token=999"], ["init.fill_token=999", "DigitsTeacher", "0..28"]),
    (["init.fill=token", "init.fill_token=29"], ["init.fill_token=29", "0..28"]),
    (["init=fixed_token", "init.fill_token=-1"], ["init.fill_token", "greater than or equal to 0"]),
    (["teacher=markov", "init=fixed_token", "init.fill_token=100"], ["init.fill_token=100", "MarkovTeacher"]),
    (["init.sigma=1.0"], ["init.sigma", "less than 1"]),
    (["init.r_init_range=[0.9, 0.1]"], ["r_init_range", "0 <= a <= b <= 1"]),
    (["init.r_init_range=[0.1]"], ["init.r_init_range.1", "Field required"]),
    (["init.count=sometimes"], ["init.count", "exact", "bernoulli"]),
    (["init=encoded_noise", "init.sigma=nan"], ["init.sigma", "nan"]),
    # architectures: impossible shapes fail here, not deep inside torch
    (["teacher.arch.heads=3"], ["teacher.arch", "heads=3 does not divide dim=64", "1, 2, 4, 8"]),
    (["teacher.arch.dim=48", "teacher.arch.heads=5"], ["heads=5 does not divide dim=48"]),
    (["teacher.arch.heads=0"], ["teacher.arch.heads", "greater than 0"]),
    (["teacher.arch.dim=0"], ["teacher.arch.dim", "greater than 0"]),
    (["teacher.arch.dropout=1.0"], ["teacher.arch.dropout", "less than 1"]),
    (["teacher.arch.mlp_ratio=inf"], ["teacher.arch.mlp_ratio", "finite number", "inf"]),
    (["teacher.arch.depth=two"], ["teacher.arch.depth", "valid integer"]),
    (["teacher.arch.width=3"], ["teacher.arch.width", "unknown field"]),
    (["teacher=mnist", "teacher.codebook_size=1"], ["teacher.codebook_size", "greater than or equal to 2"]),
    (["teacher=mnist", "teacher.arch.heads=7"], ["heads=7 does not divide dim=64"]),
    (["teacher=markov", "teacher.states=1"], ["teacher.states", "greater than or equal to 2"]),
    (["teacher=maskgit", "teacher.resolution=250"], ["teacher.resolution", "multiple of 16"]),
    (["teacher=maskgit", "teacher.size=giant"], ["teacher.size", "giant", "base"]),
    (["teacher=maskgit", "teacher.arch={dim: 100, heads: 16}"], ["dim=100 is not divisible by heads=16"]),
    (["teacher=maskgen", "teacher.tokenizer_arch={width: 100, heads: 16}"], ["heads=16 does not divide width=100"]),
    # nan, inf and overflowing literals are never numbers a run can use
    (["divergence=jeffrey", "divergence.beta=nan"], ["divergence.beta", "finite number", "nan"]),
    (["divergence=jeffrey", "divergence.beta=-inf"], ["divergence.beta", "finite number", "-inf"]),
    (["divergence=f", "divergence.generator=alpha", "divergence.alpha=nan"], ["divergence.alpha", "finite"]),
    (["divergence=f", "divergence.alpha=inf"], ["divergence.alpha", "finite number"]),
    (["method.cfg_scale=nan"], ["method.cfg_scale", "finite number", "nan"]),
    (["method.cfg_scale=inf"], ["method.cfg_scale", "finite number", "inf"]),
    (["method.lr_generator=inf"], ["method.lr_generator", "finite number", "inf"]),
    (["method.lr_generator=1e400"], ["method.lr_generator", "finite number", "inf"]),
    (["method.lr_aux=-1e400"], ["method.lr_aux", "greater than 0"]),
    (["method=mdm", "method.lr=1e400"], ["method.lr", "finite number"]),
    (["method=sdtt", "method.cfg_scale=nan"], ["method.cfg_scale", "finite number"]),
    (["sampler.cfg_scale=nan"], ["sampler.cfg_scale", "finite number"]),
    (["sampler.temperature=inf"], ["sampler.temperature", "finite number"]),
    # ranges and choices of plugin fields
    (["method.lr_aux=0"], ["method.lr_aux", "greater than 0"]),
    (["method.lr=1e-5"], ["method.lr", "unknown field", "lr_generator", "lr_aux"]),
    (["method.generator_temperature=0"], ["method.generator_temperature", "greater than 0"]),
    (["method=di4c", "method.delta=1.5"], ["method.delta", "less than 1"]),
    (["method=soft_dimo", "method.gan_ratio_max=1.0"], ["method.gan_ratio_max", "less than 1"]),
    (["method=soft_dimo", "method.rewards=[{name: nope}]"], ["method.rewards", "nope"]),
    (["divergence=f", "divergence.generator=kl"], ["divergence.generator", "jensen_shannon", "kl"]),
    (["divergence=f", "divergence.generator=alpha", "divergence.alpha=0"], ["alpha must not be 0 or 1"]),
    (["sampler.temperature=0"], ["sampler.temperature", "greater than 0"]),
    (["sampler.schedule=arcos"], ["sampler.schedule", "arcos", "arccos"]),
    # trainer
    (["trainer.steps=-1"], ["trainer.steps", "greater than or equal to 0", "-1"]),
    (["trainer.steps=1e3"], ["trainer.steps", "valid integer", "1e3"]),
    (["trainer.batch_size=0"], ["trainer.batch_size", "greater than 0"]),
    (["trainer.zero_stage=4"], ["trainer.zero_stage", "less than or equal to 3"]),
    (["trainer.precision=fp16"], ["trainer.precision", "fp32", "bf16", "fp16"]),
    (["trainer.on_nonfinite=ignore"], ["trainer.on_nonfinite", "stop", "skip", "warn", "ignore"]),
    (["trainer.log_every=0"], ["trainer.log_every", "greater than 0"]),
    (["trainer.keep_checkpoints=0"], ["trainer.keep_checkpoints", "greater than or equal to 1"]),
    (["trainer.device=tpu"], ["trainer.device", "cuda", "tpu"]),
    (["trainer.wandb=maybe"], ["trainer.wandb", "offline", "maybe"]),
    (["trainer.stepz=10"], ["trainer.stepz", "unknown field", "steps"]),
    # plugin names, sections and the shape of arguments
    (["method=frobnicate"], ["unknown method 'frobnicate'", "dimo"]),
    (["teacher=digitz"], ["unknown teacher 'digitz'", "Did you mean 'digits'"]),
    (["divergence=fkll"], ["unknown divergence 'fkll'", "fkl"]),
    (["schedule=cosinus"], ["unknown schedule 'cosinus'"]),
    (["method=mdm", "divergence=rkl"], ["'divergence' is not used by method 'mdm'"]),
    (["foo.bar=1"], ["unknown config section 'foo'", "trainer"]),
    (["trainer=fast"], ["config section 'trainer' must be a mapping", "fast"]),
    (["method=[dimo]"], ["method.name must be a plugin name", "dimo"]),
    (["method.lr_generator.x=1"], ["'method.lr_generator' is float", "not a mapping"]),
    (["method.=1"], ["empty key"]),
    (["steps"], ["not of the form key=value"]),
    (["eval.metrics=[accuracy"], ["could not parse", "[accuracy"]),
    (["config=/nonexistent/run.yaml"], ["config file '/nonexistent/run.yaml' does not exist"]),
]


@pytest.mark.parametrize("args, expected", RESOLVE_CASES, ids=[" ".join(a) for a, _ in RESOLVE_CASES])
def test_refused_when_resolved(args, expected):
    with pytest.raises(UserError) as exc:
        resolve(args)
    for text in expected:
        assert text in str(exc.value), f"{text!r} not in: {exc.value}"


def test_resolving_never_builds_the_teacher_unless_a_check_needs_it():
    """Teachers that read a hub config.json when built (MaskGen, Meissonic, aMUSEd) resolve offline: show-config
    and the checks that do not need the teacher never touch their files."""
    cfg = resolve(["teacher=maskgen", "teacher.checkpoint=/nonexistent/maskgen"])
    assert cfg["teacher"]["checkpoint"] == "/nonexistent/maskgen"


# (YAML text of a config file, extra command-line arguments, substrings of the message)
FILE_CASES = [
    ("method: {name: dimo\n", [], ["is not valid YAML", "line"]),
    ("- method\n- teacher\n", [], ["must hold a mapping of sections, not list"]),
    ("method: [1, 2]\n", [], ["section 'method' must be a plugin name or a mapping", "[1, 2]"]),
    # a bad section is never dropped because the command line refines it
    ("method: [1, 2]\n", ["method.cfg_scale=2"], ["section 'method' must be", "[1, 2]"]),
    ("trainer: 5\n", ["trainer.steps=3"], ["section 'trainer' must be a mapping of fields", "5"]),
    ("teacher:\n  arch: [64, 4]\n", ["teacher.arch.dim=32"], ["'teacher.arch' is list [64, 4], not a mapping"]),
    ("divergence: {name: jeffrey, beta: .nan}\n", [], ["divergence.beta", "finite number"]),
    ("method: {cfg_scale: 3, lr: 0.1}\n", [], ["method.lr", "unknown field"]),
    ("eval: {metrics: [frechet, uniq]}\n", ["eval.samples_per_class=3"], ["unknown metric 'uniq'"]),
]


@pytest.mark.parametrize("text, extra, expected", FILE_CASES, ids=[t.strip()[:30] for t, _, _ in FILE_CASES])
def test_config_files_are_refused_whole(tmp_path, text, extra, expected):
    f = tmp_path / "run.yaml"
    f.write_text(text)
    with pytest.raises(UserError) as exc:
        resolve([f"config={f}", *extra])
    for t in expected:
        assert t in str(exc.value), f"{t!r} not in: {exc.value}"


def test_a_folder_given_as_config_file(tmp_path):
    with pytest.raises(UserError, match="does not exist \\(it is a folder\\)"):
        resolve([f"config={tmp_path}"])


# -- the command line: exit code 2, one paragraph, no traceback, and no folder left behind -------------------

def cli(capsys, *args):
    rc = main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


# `evaluate` (issue 16, class 7): parsed as training parses, every value and key checked before the student is
# loaded (the checkpoint named in the test does not exist, so reaching it would say "not found")
EVALUATE_CASES = [
    (["method.lr=1"], ["unknown key(s) method", "eval.<field>", "evaluator=NAME"]),
    (["evl.seed=3"], ["unknown key(s) evl"]),
    (["eval.metrics=[uniq]"], ["eval.metrics", "unknown metric 'uniq'", "accuracy"]),
    (["eval.metrics=accuracy"], ["eval.metrics", "valid list"]),
    (["eval.samples_per_class=0"], ["eval.samples_per_class", "greater than 0"]),
    (["eval.seed=nan"], ["eval.seed", "valid integer"]),
    (["device=gpu"], ["device='gpu'", "auto, cpu, cuda"]),
    (["evaluator=nope"], ["unknown evaluator 'nope'", "embedded, inception"]),
    (["evaluator.refrence=x.npz"], ["evaluator.refrence", "unknown field"]),
    (["evaluator=inception"], ["evaluator.reference=<stats.npz>"]),
    (["evaluator=inception", "evaluator.reference=/no/stats.npz"], ["evaluator.reference='/no/stats.npz'",
                                                                     "does not exist"]),
]


@pytest.mark.parametrize("args, expected", EVALUATE_CASES)
def test_evaluate_refuses_before_loading_the_student(args, expected, tmp_path, capsys):
    rc, err = cli(capsys, "evaluate", f"checkpoint={tmp_path / 'missing'}", *args)
    assert rc == 2 and all(text in err for text in expected), err
    assert "not found" not in err


def test_output_dir_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "taken"
    f.write_text("x")
    rc, err = cli(capsys, f"trainer.output_dir={f}")
    assert rc == 2 and f"trainer.output_dir='{f}'" in err and "is a file, not a folder" in err


def test_output_dir_that_cannot_be_created(tmp_path, capsys):
    f = tmp_path / "taken"
    f.write_text("x")
    rc, err = cli(capsys, f"trainer.output_dir={f}/run")
    assert rc == 2 and "cannot be created" in err and str(f) in err
    assert f.read_text() == "x"


def test_generate_out_that_cannot_be_written(tmp_path, capsys):
    f = tmp_path / "taken"
    f.write_text("x")
    rc, err = cli(capsys, "generate", "checkpoint=/nonexistent", f"out={f}/grid.png")
    assert rc == 2 and f"out='{f}/grid.png'" in err and "is a file, not a folder" in err   # before loading


def test_generate_out_that_is_a_folder(tmp_path, capsys):
    rc, err = cli(capsys, "generate", "checkpoint=/nonexistent", f"out={tmp_path}")
    assert rc == 2 and "is a folder" in err


@pytest.mark.parametrize("args, text", [
    (["show-config", "eval.metrics=[uniq]"], "unknown metric 'uniq'"),
    (["show-config", "init=all_mask", "init.r_init=1.5"], "init.r_init"),
    (["trainer.steps=5", "method.cfg_scale=nan"], "method.cfg_scale"),
    (["traing"], "Did you mean 'train'"),
])
def test_cli_exit_code_2(args, text, capsys):
    rc, err = cli(capsys, *args)
    assert rc == 2 and text in err


def test_file_system_errors_that_reach_the_top_are_exit_2(monkeypatch, capsys):
    def fail(args):
        raise PermissionError(13, "Permission denied", "/data/runs/x/config.yaml")
    monkeypatch.setattr("core.run.cmd_train", fail)
    rc, err = cli(capsys, "trainer.steps=1")
    assert rc == 2 and "/data/runs/x/config.yaml" in err and "Permission denied" in err


def test_suite_yaml_that_does_not_parse(tmp_path):
    from benchmarks.suites import load_suite
    f = tmp_path / "suite.yaml"
    f.write_text("teachers: [digits\nmethods: dimo\n")
    with pytest.raises(UserError, match="suite file .* is not valid YAML"):
        load_suite(str(f))
    f.write_text("- digits\n")
    with pytest.raises(UserError, match="must hold a mapping"):
        load_suite(str(f))


# -- checkpoints with the right names but wrong shapes -----------------------------------------------------

def test_teacher_checkpoint_of_another_shape_names_tensor_and_shapes(tmp_path):
    from core.config import section_config
    small = resolve(["teacher.arch.dim=32", "teacher.arch.heads=2", "teacher.arch.depth=1"])
    cls, cfg = section_config(small, "teacher")
    path = tmp_path / "teacher.safetensors"
    save_file(cls(cfg).build_network(load_weights=False).state_dict(), str(path))
    other = resolve([f"teacher.checkpoint={path}", "teacher.arch.dim=64", "teacher.arch.heads=2",
                     "teacher.arch.depth=1"])
    cls, cfg = section_config(other, "teacher")
    with pytest.raises(UserError) as exc:
        cls(cfg).build_network(load_weights=True)
    msg = str(exc.value)
    assert "teacher.checkpoint" in msg and "'tok_emb.weight' is (29, 32) in the file, (29, 64) in this network" in msg
    assert "'dim': 64" in msg           # what the config builds


def test_teacher_checkpoint_with_missing_tensors(tmp_path):
    from core.config import section_config
    cfg_d = resolve(["teacher.arch.dim=32", "teacher.arch.heads=2", "teacher.arch.depth=1"])
    cls, cfg = section_config(cfg_d, "teacher")
    state = cls(cfg).build_network(load_weights=False).state_dict()
    path = tmp_path / "teacher.safetensors"
    save_file({k: v for k, v in state.items() if k != "bias"}, str(path))
    cls, cfg = section_config(resolve([f"teacher.checkpoint={path}", "teacher.arch.dim=32",
                                       "teacher.arch.heads=2", "teacher.arch.depth=1"]), "teacher")
    with pytest.raises(UserError, match=r"1 missing, e.g. \['bias'\]"):
        cls(cfg).build_network(load_weights=True)


def test_a_failed_start_leaves_no_run_folder(tmp_path, capsys):
    """The teacher fails to load after the run folder was made: the folder, holding only its config, goes."""
    from core.config import section_config
    cls, cfg = section_config(resolve(["teacher.arch.dim=32", "teacher.arch.heads=2", "teacher.arch.depth=1"]),
                              "teacher")
    path = tmp_path / "teacher.safetensors"
    save_file(cls(cfg).build_network(load_weights=False).state_dict(), str(path))
    out = tmp_path / "run"
    rc, err = cli(capsys, f"teacher.checkpoint={path}", f"trainer.output_dir={out}", "trainer.steps=2",
                  "trainer.wandb=disabled", "eval.enabled=false")
    assert rc == 2 and "does not fit the network" in err
    assert not out.exists()


def test_hub_miss_gives_the_download_command_and_size(tmp_path, monkeypatch):
    """Offline with an empty hub cache: the MaskGit teacher's message says how to fetch the file and how big it is."""
    from huggingface_hub import constants
    from core.config import section_config
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    cls, cfg = section_config(resolve(["teacher=maskgit"]), "teacher")
    with pytest.raises(UserError) as exc:
        cls(cfg).checkpoint_path()
    msg = str(exc.value)
    assert "hf download llvictorll/Maskgit-pytorch pretrained_maskgit/MaskGIT/MaskGIT_ImageNet_256.pth" in msg
    assert "174,160,874 parameters: at least 0.70 GB" in msg and "teacher.checkpoint=<dir>" in msg


def test_student_of_another_shape_names_tensor_and_shapes(tmp_path):
    import json
    from core.config import section_config
    from core.export import load_student
    small = resolve(["teacher.arch.dim=32", "teacher.arch.heads=2", "teacher.arch.depth=1"])
    cls, cfg = section_config(small, "teacher")
    save_file(cls(cfg).build_network(load_weights=False).state_dict(), str(tmp_path / "student.safetensors"))
    card = resolve(["teacher.arch.dim=16", "teacher.arch.heads=2", "teacher.arch.depth=1"])
    (tmp_path / "student.json").write_text(json.dumps({"config": card.as_dict()}))
    with pytest.raises(UserError) as exc:
        load_student(str(tmp_path))
    msg = str(exc.value)
    assert "'tok_emb.weight' is (29, 32) in the file, (29, 16) in this network" in msg and "student.json" in msg


# -- damaged checkpoints: resume=auto falls back to the last complete one -----------------------------------

class FakeEngine:
    """The two checkpoint calls the engine makes on a DeepSpeed engine, for one small module."""
    def __init__(self, module):
        self.module = module

    def save_checkpoint(self, folder, tag, client_state):
        (Path(folder) / tag).mkdir()
        torch.save(self.module.state_dict(), Path(folder) / tag / "mp_rank_00_model_states.pt")

    def load_checkpoint(self, folder, tag):
        self.module.load_state_dict(torch.load(Path(folder) / tag / "mp_rank_00_model_states.pt"))
        return folder, {}


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGES = {   # name -> (damage done to the newest checkpoint folder, the file the warning names)
    "truncated RNG file": (lambda c: truncate(c / "rng_state_rank0.pt"), "rng_state_rank0.pt"),
    "corrupt trainer_state.json": (lambda c: (c / "trainer_state.json").write_text("{not json"), "trainer_state"),
    "trainer_state.json without step": (lambda c: (c / "trainer_state.json").write_text("{}"), "has no step"),
    "truncated DeepSpeed file": (lambda c: truncate(c / "generator" / "mp_rank_00_model_states.pt"),
                                 "generator/mp_rank_00_model_states.pt"),
    "DeepSpeed role folder gone": (lambda c: shutil.rmtree(c / "generator"), "no DeepSpeed state for role"),
    "bad EMA safetensors": (lambda c: (c / "ema-generator.safetensors").write_bytes(b"garbage"),
                            "ema-generator.safetensors"),
    "EMA file gone": (lambda c: (c / "ema-generator.safetensors").unlink(), "ema-generator.safetensors"),
}


def two_checkpoints(root):
    """Checkpoints at steps 2 and 4 of one module, its weights differing between them."""
    from core import checkpoint
    net, ema = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    saved = {}
    for step in (2, 4):
        torch.nn.init.constant_(ema.weight, float(step))
        saved[step] = ema.weight.clone()
        checkpoint.save(root, step, {"generator": FakeEngine(net)}, {"generator": ema},
                        {"config_hash": "h"}, keep=2)
    return {"generator": FakeEngine(torch.nn.Linear(3, 3))}, {"generator": torch.nn.Linear(3, 3)}, saved


@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_damaged_newest_checkpoint_is_skipped(tmp_path, capsys, damage):
    from core import checkpoint
    engines, emas, saved = two_checkpoints(tmp_path)
    harm, named = DAMAGES[damage]
    harm(tmp_path / "step-00000004")
    assert checkpoint.resume_latest(tmp_path, engines, emas, "h") == 2
    assert torch.equal(emas["generator"].weight, saved[2])       # the older checkpoint's state, not a mix
    err = capsys.readouterr().err
    assert f"skips the damaged checkpoint '{tmp_path / 'step-00000004'}'" in err and named in err


def test_no_usable_checkpoint_is_a_clear_error(tmp_path):
    from core import checkpoint
    engines, emas, _ = two_checkpoints(tmp_path)
    truncate(tmp_path / "step-00000004" / "rng_state_rank0.pt")
    (tmp_path / "step-00000002" / "ema-generator.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError) as exc:
        checkpoint.resume_latest(tmp_path, engines, emas, "h")
    msg = str(exc.value)
    assert "no usable checkpoint" in msg and "'step-00000004' (rank 0: 'rng_state_rank0.pt'" in msg
    assert "'step-00000002' (rank 0: 'ema-generator.safetensors'" in msg and "trainer.resume=never" in msg


def test_checkpoint_of_another_config_is_an_error_not_skipped(tmp_path):
    from core import checkpoint
    engines, emas, _ = two_checkpoints(tmp_path)
    with pytest.raises(UserError, match="made with config hash h, this run has other"):
        checkpoint.resume_latest(tmp_path, engines, emas, "other")


def test_catalogue_size():
    """The issue asks for at least 60 bad inputs; every class above grows with new cases."""
    assert len(RESOLVE_CASES) + len(FILE_CASES) + len(DAMAGES) + len(EVALUATE_CASES) >= 60
