"""The meissonic teacher: parity with the official Transformer2DModel (fixture made by
tests/fixtures/meissonic/make_fixture.py with viiika/Meissonic under diffusers 0.35.2), strict loading of the
released folder layout, the dimo protocol (embeddings, noise, timestep, frozen parts, gradient checkpointing), the
pipeline sampler, and Di[M]O / Soft-Di[M]O through the real engine on a tiny Meissonic (nothing is downloaded)."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from core.errors import UserError
from core.recipes import load_recipe
from plugins.prompts import BUILTIN_PROMPTS
from plugins.teachers.meissonic.sampler import MeissonicSampler
from plugins.teachers.meissonic.teacher import NEGATIVE_PROMPT, MeissonicTeacher
from test_amused import TEXT_LEN, tiny_clip_reward_folder, tiny_tokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "meissonic"
META = json.loads((FIXTURE / "config.json").read_text())
OUT = load_file(str(FIXTURE / "parity.safetensors"))
SIDE, CODES, VOCAB = 8, 32, 40


def write_tiny_meissonic(folder: Path) -> Path:
    """The released layout: transformer/ and vqvae/ (diffusers config + safetensors, the fixture's weights),
    text_encoder/ (a tiny CLIPTextModelWithProjection: 12-d states, 16-d text_embeds) and tokenizer/."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection
    for sub in ("transformer", "vqvae"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / sub / "config.json").write_text(json.dumps(META[sub]))
        save_file({k[len(sub) + 1:]: v for k, v in OUT.items() if k.startswith(sub + ".")},
                  str(folder / sub / "diffusion_pytorch_model.safetensors"))
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    CLIPTextModelWithProjection(CLIPTextConfig(
        hidden_size=12, intermediate_size=16, projection_dim=16, num_hidden_layers=2, num_attention_heads=2,
        vocab_size=len(tok), max_position_embeddings=TEXT_LEN, bos_token_id=len(tok) - 2,
        eos_token_id=len(tok) - 1, pad_token_id=len(tok) - 1)).save_pretrained(folder / "text_encoder")
    tok.save_pretrained(folder / "tokenizer")
    return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_meissonic(tmp_path_factory.mktemp("meissonic") / "meissonic-tiny")


def teacher_for(folder, **kw) -> MeissonicTeacher:
    return MeissonicTeacher(MeissonicTeacher.Config(**{"checkpoint": str(folder), "resolution": SIDE, **kw}))


def fixture_text(cond):
    """The fixture's text inputs in place of the CLIP encoder (the official call's encoder states)."""
    return {"hidden": OUT["hidden"][: len(cond)], "pooled": OUT["pooled"][: len(cond)]}


# ---------------------------------------------------------------------------------------------------
# parity with the official code
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("t", [0, 3])
def test_logits_match_the_official_transformer(folder, t):
    teacher = teacher_for(folder)
    net = teacher.build_network().eval()
    with torch.no_grad():   # the official call signature
        raw = net.transformer(net.embed(OUT["ids"]), OUT["hidden"], OUT["pooled"], torch.tensor([t, t]), OUT["micro"])
        torch.testing.assert_close(raw, OUT[f"logits_t{t}"], rtol=1e-5, atol=1e-5)
        net.text, net.micro = fixture_text, tuple(OUT["micro"][0].tolist())   # dimo's call: [B, L] -> [B, L, V]
        got = net(OUT["ids"].reshape(2, -1), torch.tensor([0, 1]), timestep=t)
    torch.testing.assert_close(got, OUT[f"logits_t{t}"].flatten(2).transpose(1, 2), rtol=1e-5, atol=1e-5)


def test_decode_matches_the_pipeline_vq_decode(folder):
    teacher = teacher_for(folder)
    torch.testing.assert_close(teacher.decode(OUT["codes"]), OUT["image"], rtol=1e-5, atol=1e-5)
    soft = teacher.decode_soft(torch.nn.functional.one_hot(OUT["codes"], CODES).float())
    torch.testing.assert_close(soft, OUT["image"], rtol=1e-4, atol=1e-4)


def test_grid_conditions_and_the_negative_prompt(folder):
    t = teacher_for(folder)
    assert (t.seq_len, t.vocab_size, t.mask_id, t.image_shape) == (SIDE * SIDE, CODES, VOCAB - 1, (3, SIDE, SIDE))
    null = t.null_condition(torch.tensor([0, 2]))
    assert t.captions(null) == [NEGATIVE_PROMPT] * 2 and t.captions(torch.tensor([2])) == [BUILTIN_PROMPTS[2]]
    with pytest.raises(UserError, match="teacher.resolution=9 must be a multiple of 2"):
        teacher_for(folder, resolution=9)
    recipe = load_recipe("meissonic/dimo").values   # aMUSEd's official Di[M]O values, extended
    assert recipe["init"] == {"name": "mixed", "r_init": 0.5, "sigma": 0.3, "count": "exact"}
    assert recipe["method"]["cfg_scale"] == 4.0


# ---------------------------------------------------------------------------------------------------
# the dimo protocol
# ---------------------------------------------------------------------------------------------------

def test_inputs_embeds_noise_timestep_and_frozen_parts(folder):
    net = teacher_for(folder).build_network().eval()
    tokens, cond = OUT["ids"].reshape(2, -1), torch.tensor([1, 5])
    with torch.no_grad():
        base = net(tokens, cond)
        torch.testing.assert_close(net(None, cond, inputs_embeds=net.embed_tokens(tokens)), base)
        assert not torch.allclose(net(tokens, cond, timestep=3), base)
        torch.manual_seed(0)
        assert not torch.allclose(net(tokens, cond, noise_sigma=0.3), base)
    frozen = {id(p) for p in net.frozen_parameters()}
    assert {id(p) for p in net.embed.parameters()} | {id(p) for p in net.mlm_layer.parameters()} == frozen
    assert net.code_embeddings().shape == (CODES, net.inner_dim)


def test_gradient_checkpointing_gives_the_same_gradients(folder):
    net = teacher_for(folder, gradient_checkpointing=False).build_network().train()
    tokens, cond = OUT["ids"].reshape(2, -1), torch.tensor([1, 5])
    grads = []
    for flag in (False, True):
        model = copy.deepcopy(net)
        model.gradient_checkpointing = flag
        model(tokens, cond).square().mean().backward()
        grads.append([p.grad.clone() for p in model.transformer_blocks.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_strict_loading_errors(folder, tmp_path):
    bad = tmp_path / "bad"
    write_tiny_meissonic(bad)
    weights = bad / "transformer" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    save_file({k: v for k, v in state.items() if not k.startswith("mlm_layer.conv2")}, str(weights))
    with pytest.raises(UserError, match="teacher.checkpoint.*mlm_layer.conv2"):
        teacher_for(bad).build_network()
    save_file({**state, "context_embedder.weight": torch.zeros(16, 7)}, str(weights))
    with pytest.raises(UserError, match="context_embedder.weight"):
        teacher_for(bad).build_network()
    with pytest.raises(UserError, match="teacher.checkpoint"):
        teacher_for(tmp_path / "nowhere")


def test_save_pretrained_round_trips(folder, tmp_path):
    teacher = teacher_for(folder)
    net = teacher.build_network()
    out = teacher.save_pretrained(net, tmp_path / "x" / "transformer")
    assert json.loads((out / "config.json").read_text())["_class_name"] == "Transformer2DModel"
    again = load_file(str(out / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(again[k], v) for k, v in net.state_dict().items())


# ---------------------------------------------------------------------------------------------------
# the pipeline sampler
# ---------------------------------------------------------------------------------------------------

def test_pipeline_sampler_feeds_the_step_index_as_timestep(folder):
    teacher = teacher_for(folder)
    net = teacher.build_network().eval()
    seen = []
    forward = net.forward
    net.forward = lambda *a, **k: seen.append(k.get("timestep")) or forward(*a, **k)
    tokens = MeissonicSampler(MeissonicSampler.Config()).sample(net, teacher, torch.tensor([0, 3]), 4,
                                                                torch.Generator().manual_seed(0))
    assert tokens.shape == (2, SIDE * SIDE) and (tokens < CODES).all()
    assert seen == [3.0, 2.0, 1.0, 0.0]


# ---------------------------------------------------------------------------------------------------
# methods through the real engine
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stage", [0, 2])
@pytest.mark.parametrize("method", ["dimo", "soft_dimo"])
def test_methods_train_through_the_engine_on_meissonic(folder, tmp_path, method, stage):
    from core.config import resolve
    from core.engine import Trainer
    from core.export import load_student
    extra = []
    if method == "soft_dimo":   # a tiny local CLIP for the recipe's reward (HPS needs its released weights)
        extra = [f"method.rewards=[{{name: clip, weight: 1.0, model: {tiny_clip_reward_folder(tmp_path / 'clip')}}}]"]
    cfg = resolve([f"method={method}", "teacher=meissonic", f"teacher.checkpoint={folder}",
                   f"teacher.resolution={SIDE}", "trainer.steps=2", "trainer.batch_size=2", f"trainer.zero_stage={stage}",
                   "trainer.grad_accum=2",   # the recipe accumulates (8); micro-batch 1 here
                   "trainer.log_every=1", "trainer.wandb=disabled", "trainer.progress=false", "eval.enabled=false",
                   "trainer.device=cpu", f"trainer.output_dir={tmp_path / 'run'}", *extra])
    assert cfg["init"]["sigma"] == 0.3 and cfg["schedule"]["name"] == "cosine_clamped"   # the official recipe
    history = Trainer(cfg).train().history
    assert method == "dimo" or all("reward" in h for h in history)
    assert len(history) == 2 and all(math.isfinite(h["aux_loss"]) and math.isfinite(h["divergence"]) for h in history)
    m, teacher, net, _ = load_student(str(tmp_path / "run"))
    tokens = m.generate(net, torch.tensor([0, 1]), torch.Generator().manual_seed(0))
    assert tokens.shape == (2, SIDE * SIDE) and (tokens < CODES).all()


@pytest.mark.parametrize("stage", [2, 3])
def test_soft_dimo_gan_with_gradient_checkpointing_through_the_iteration_benchmark(tmp_path, stage):
    """The GAN loss runs the trunk discriminator with its parameters frozen for that forward only; checkpointed
    blocks must recompute the same graph in the backward (they replay the flags). Runs the benchmark's own code."""
    from plugins.teachers.meissonic.benchmark import main
    result = main(["--size", "tiny", "--methods", "soft_dimo", "--batches", "2", "--checkpointing", "true",
                   "--stages", str(stage), "--iters", "1", "--device", "cpu", "--out", str(tmp_path / "rows.json")])
    [row] = result["rows"]
    assert (row["micro_batch"], row["gradient_checkpointing"], row["zero_stage"]) == (2, True, stage)
    assert math.isfinite(row["seconds_per_iter"]) and row["seconds_per_iter"] > 0


def test_the_plugin_test_kit_accepts_meissonic(folder):
    from core.testing import check_teacher
    check_teacher("meissonic", {"checkpoint": str(folder), "resolution": SIDE})


def test_main_job_evaluates_meissonic_with_clip_score(folder, tmp_path):
    """The main job end to end: Di[M]O, then the text-to-image evaluation (clip_score on a tiny local CLIP)."""
    from core.testing import run_method
    clip = tiny_clip_reward_folder(tmp_path / "clip")
    run = run_method(tmp_path, "dimo", "meissonic", {"checkpoint": str(folder), "resolution": SIDE,
                                                     "eval_clip": str(clip)}, steps=1, batch_size=2, evaluate=True)
    rows = run.summary["rows"]
    assert {r["model"] for r in rows} == {"teacher", "student"}
    assert all(0 <= r["clip_score"] <= 100 for r in rows)


@pytest.mark.slow   # three trainings and their evaluations (about a minute on the 2-core machine)
def test_the_t2i_meissonic_suite_runs_on_a_tiny_meissonic(folder, tmp_path):
    """The suite's grid end to end on the tiny folder: teacher row, Di[M]O, Soft-Di[M]O from it; the results sit
    beside Table 3's rows."""
    from benchmarks.reported import TABLE3_MEISSONIC, beside
    from benchmarks.runner import run_suite
    from benchmarks.suites import load_suite
    clip = tiny_clip_reward_folder(tmp_path / "clip")
    soft = {"name": "soft_dimo", "rewards": [{"name": "clip", "weight": 1.0, "model": str(clip)}]}
    suite = load_suite("t2i_meissonic", {
        "teacher_steps": [2], "performance": None, "trainer": {"steps": 1, "batch_size": 2, "grad_accum": 1},
        "eval": {"metrics": ["clip_score"]},
        "methods": [{"label": "Di[M]O", "id": "dimo", "config": {"method": "dimo"}},
                    {"label": "Soft-Di[M]O", "id": "soft_dimo", "config": {"method": soft}, "init_from": "dimo"}]},
        teacher={"checkpoint": str(folder), "resolution": SIDE, "prompts": {"source": "builtin", "limit": 2},
                 "eval_metrics": ["clip_score"], "eval_clip": str(clip)})
    outcomes = run_suite(suite, tmp_path / "results", tmp_path / "work", progress=False)
    assert [o.status for o in outcomes] == ["ran"] * 3, [(o.entry.id, o.status, o.detail) for o in outcomes]
    lines = beside(TABLE3_MEISSONIC, tmp_path / "results")
    assert all(line.count("|") == 12 for line in lines[2:])
    assert not lines[3].endswith("|  |  |  |  |")       # the Di[M]O row has its reproduced CLIP score


BASELINES = {
    "sdtt": ["method.base_steps=4", "method.steps_per_round=1", "method.warmup_steps=0", "sampler=meissonic"],
    "di4c": ["method.latent_batch=2", "method.lambda_freq_dim=8", "method.lambda_hidden=16"],
    "redi": ["method.pairs=4", "method.chunk_size=2", "method.pair_batch=2", "method.pair_steps=2",
             "method.steps_per_round=1", "method.rounds=1", "method.variant=distill", "sampler=meissonic"],
}


@pytest.mark.parametrize("stage", [0, 2])
@pytest.mark.parametrize("name", list(BASELINES))
def test_baselines_train_through_the_engine_on_meissonic(folder, tmp_path, name, stage):
    """SDTT and di4c on real image-caption tokens (teacher.data), ReDi data-free, at ZeRO 0 and 2."""
    from core.config import resolve
    from core.engine import Trainer
    from core.export import load_student
    from test_amused import caption_folder
    data = caption_folder(tmp_path / "data")
    cfg = resolve([f"method={name}", "teacher=meissonic", f"teacher.checkpoint={folder}", f"teacher.resolution={SIDE}",
                   f"teacher.data={data}", f"teacher.prompts.source={data / 'metadata.jsonl'}", "trainer.steps=2",
                   "trainer.batch_size=2", f"trainer.zero_stage={stage}", "trainer.log_every=1",
                   "trainer.wandb=disabled", "trainer.progress=false", "eval.enabled=false", "trainer.device=cpu",
                   f"trainer.output_dir={tmp_path / 'run'}", *BASELINES[name]])
    history = Trainer(cfg).train().history
    assert len(history) == 2 and all(math.isfinite(h["loss"]) for h in history)
    m, teacher, net, _ = load_student(str(tmp_path / "run"))
    tokens = m.generate(net, torch.tensor([0, 1]), torch.Generator().manual_seed(0), steps=m.sample_steps[0])
    assert tokens.shape == (2, SIDE * SIDE) and (tokens < CODES).all()


@pytest.mark.parametrize("steps", [1, 4, 32])
def test_step_operations_follow_the_scheduler(folder, steps):
    """plan = the AmusedScheduler's counts; run_steps from all-[M] fills the grid through the same plan."""
    from diffusers import AmusedScheduler
    s = MeissonicSampler(MeissonicSampler.Config())
    sched = AmusedScheduler(mask_token_id=VOCAB - 1)
    sched.set_timesteps(steps, (2, 0))
    x = torch.full((1, 64), VOCAB - 1)
    counts = []
    for t in sched.timesteps:   # uniform logits: the scheduler's counts, whatever it draws
        x = sched.step(torch.zeros(1, 64, CODES), t, x, generator=torch.Generator().manual_seed(0)).prev_sample
        counts.append(int((x == VOCAB - 1).sum()))
    assert s.plan(steps, 64) == counts
    assert s.gumbel_temperature(0, steps) == 2.0 and (steps == 1 or s.gumbel_temperature(steps - 1, steps) == 0.0)
    teacher = teacher_for(folder)
    net = teacher.build_network().eval()
    cond = torch.tensor([0, 2])
    with torch.no_grad():
        out = s.run_steps(lambda x, i, p: net(x, cond), teacher, torch.full((2, 64), teacher.mask_id), steps,
                          generator=torch.Generator().manual_seed(0))
    assert (out < CODES).all()


def test_the_recipe_clamps_the_forward_ratio_as_the_official_code():
    from plugins.teachers.meissonic.schedule import CosineClamped
    s = CosineClamped(CosineClamped.Config())
    r = s.sample_ratio(20000, torch.Generator().manual_seed(0))
    assert r.min() >= 0.02 and r.max() <= 0.98 and (r == 0.02).any() and (r == 0.98).any()
    assert torch.equal(s.gamma(torch.tensor([0.0, 1.0])), torch.cos(torch.tensor([0.0, 1.0]) * math.pi / 2))
    with pytest.raises(ValueError, match="above"):
        CosineClamped.Config(low=0.5, high=0.4)
    assert load_recipe("meissonic/dimo").values["schedule"]["name"] == "cosine_clamped"
