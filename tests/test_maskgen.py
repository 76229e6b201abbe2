"""The MaskGen teacher against outputs of the official code (bytedance/1d-tokenizer @ 942a96f) at a tiny size:
text states, generator logits and the TA-TiTok decoded image (tests/fixtures/maskgen, made by its
make_fixture.py); strict loading errors; the official sampler's formulas; Di[M]O and Soft-Di[M]O end to end."""
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import ROOT, check_iteration_benchmark, clean_env
from core.errors import UserError
from plugins.prompts import PromptsConfig
from plugins.teachers.maskgen import MaskGenSampler, MaskGenTeacher
from plugins.teachers.maskgen.network import SIZES, MaskGenNetwork, TATiTokArch

FIX = Path(__file__).parent / "fixtures" / "maskgen"
TOK_ARCH = {"width": 16, "layers": 1, "heads": 2, "image_size": 16, "patch": 8, "latent_tokens": 8,
            "token_size": 4, "codebook_size": 16, "text_len": 77, "text_dim": 16, "enc_width": 16, "enc_layers": 1,
            "enc_heads": 2, "enc_patch": 8}
TOK_ARGS = [f"teacher.tokenizer_arch.{k}={v}" for k, v in TOK_ARCH.items()]


def prompt_file(tmp_path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(json.loads((FIX / "prompts.json").read_text())))
    return path


def teacher_at(tmp_path, generator=FIX / "generator", **kw) -> MaskGenTeacher:
    return MaskGenTeacher(MaskGenTeacher.Config(
        checkpoint=str(generator), tokenizer=str(FIX / "tokenizer"), clip_arch=str(FIX / "clip" / "dimo-tiny-clip.json"),
        clip_pretrained=str(FIX / "clip" / "open_clip_model.safetensors"),
        prompts=PromptsConfig(source=str(prompt_file(tmp_path))), tokenizer_arch=TATiTokArch(**TOK_ARCH), **kw))


@pytest.fixture(scope="module")
def official():
    return load_file(str(FIX / "official.safetensors"))


def test_grid_and_real_sizes(tmp_path):
    t = teacher_at(tmp_path)
    assert (t.seq_len, t.vocab_size, t.mask_id, t.num_classes) == (8, 16, 16, 2)
    assert t.image_shape == (3, 16, 16)
    net = MaskGenNetwork(SIZES["l"])
    assert net.embeddings.weight.shape == (8192 + 1 + 1000 + 1, 1024) and len(net.blocks) == 16
    assert net.blocks[-1].context_pre_only and not net.blocks[0].context_pre_only
    n = sum(p.numel() for p in net.parameters())
    assert 0.55e9 < n < 0.7e9, n   # MaskGen-L: "0.6B" (Table 3)


def test_text_states_match_official_open_clip_encoding(tmp_path, official):
    t = teacher_at(tmp_path)
    text = t.text_conditioner()
    got = text(torch.tensor([0, 1, 2]))
    torch.testing.assert_close(got["hidden"][:2], official["cond_hidden"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got["pooled"][:2], official["cond_pooled"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got["hidden"][2], official["null_hidden"], atol=1e-5, rtol=1e-5)   # "" prompt
    torch.testing.assert_close(got["pooled"][2], official["null_pooled"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got["final"][:2], official["final"], atol=1e-5, rtol=1e-5)


def test_logits_match_official_maskgen_vq(tmp_path, official):
    t = teacher_at(tmp_path)
    net = t.build_network()
    tokens = official["tokens"]
    cond = torch.tensor([0, 1])
    with torch.no_grad():
        torch.testing.assert_close(net(tokens, cond), official["logits_cond"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(net(tokens, t.null_condition(cond)), official["logits_null"], atol=1e-5, rtol=1e-5)
        # inputs_embeds path and one-hot soft embeddings give the same logits
        one_hot = torch.nn.functional.one_hot(tokens.clamp(max=15), 16).float() @ net.code_embeddings()
        torch.testing.assert_close(net(None, cond, inputs_embeds=one_hot), net(tokens.clamp(max=15), cond))
    assert {id(p) for p in net.frozen_parameters()} == {id(net.embeddings.weight), id(net.pos_embed)}
    assert "lm_head.weight" in load_file(str(FIX / "generator" / "model.safetensors"))   # folded on load
    # the check can see the text: conditional and null logits differ far beyond the tolerance
    assert (official["logits_cond"] - official["logits_null"]).abs().max() > 100 * 1e-5


def test_decode_matches_official_tatitok_decoder(tmp_path, official):
    t = teacher_at(tmp_path)
    codes = official["codes"]
    vq = t.tatitok()
    with torch.no_grad():
        raw = vq.decode_tokens(codes, official["final"])
    torch.testing.assert_close(raw, official["image"], atol=1e-4, rtol=1e-4)
    images = t.decode(codes, torch.tensor([0, 1]))
    torch.testing.assert_close(images, official["image"].clamp(0, 1), atol=1e-4, rtol=1e-4)
    logits = (torch.nn.functional.one_hot(codes, 16).float() * 60).requires_grad_(True)
    soft = t.decode_soft(logits.softmax(-1), torch.tensor([0, 1]))
    torch.testing.assert_close(soft, images, atol=1e-4, rtol=0)
    soft.sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert t.decode(codes).shape == (2, 3, 16, 16)   # without conditions: the null prompt's text guidance
    # the framework's conditioned hooks (rewards, samples, grids) pass the prompts to the decoder
    torch.testing.assert_close(t.decode_with(codes, torch.tensor([0, 1])), images)
    assert not torch.allclose(t.decode_with(codes, torch.tensor([2, 2])), images)
    torch.testing.assert_close(t.decode_soft_with(logits.detach().softmax(-1), torch.tensor([0, 1])), soft.detach())


def test_encode_matches_official_tatitok_encoder_and_feeds_caption_data(tmp_path, official):
    t = teacher_at(tmp_path)
    assert torch.equal(t.encode(official["pixels"]), official["encoded"])
    vq = t.tatitok()
    with torch.no_grad():
        latents = vq.encoder(official["pixels"], vq.latent_tokens)
    torch.testing.assert_close(latents, official["latents"], atol=1e-5, rtol=1e-5)
    assert (official["latents"][0] - official["latents"][1]).abs().max() > 1e-3   # the images matter
    from test_amused import caption_folder
    data = caption_folder(tmp_path / "data")
    t = teacher_at(tmp_path, data=str(data))
    t.config.prompts.source = str(data / "metadata.jsonl")
    t.prompt_set = __import__("plugins.prompts", fromlist=["load_prompts"]).load_prompts(t.config.prompts)
    tokens, cond = t.dataset()
    assert tokens.shape == (6, 8) and int(tokens.max()) < 16 and cond.tolist() == [0, 1, 2, 0, 1, 2]


def test_strict_loading_errors(tmp_path):
    bad = tmp_path / "gen"
    shutil.copytree(FIX / "generator", bad)
    state = load_file(str(bad / "model.safetensors"))
    state["pos_embed"] = state["pos_embed"][:, :4].contiguous()
    state["blocks.0.attn.extra"] = state.pop("blocks.0.attn.to_q.weight")
    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(UserError, match="another shape.*pos_embed") as err:
        teacher_at(tmp_path, generator=bad).build_network()
    assert "blocks.0.attn.to_q.weight" in str(err.value) and "blocks.0.attn.extra" in str(err.value)
    tok = tmp_path / "tok"
    shutil.copytree(FIX / "tokenizer", tok)
    state = load_file(str(tok / "model.safetensors"))
    state["pixel_decoder.weight"] = torch.zeros(1)
    save_file(state, str(tok / "model.safetensors"))
    t = teacher_at(tmp_path)
    t.config.tokenizer = str(tok)
    with pytest.raises(UserError, match="unexpected.*pixel_decoder"):
        t.tatitok()
    with pytest.raises(UserError, match="teacher.checkpoint"):
        teacher_at(tmp_path, generator=tmp_path / "missing")
    untied = tmp_path / "untied"
    shutil.copytree(FIX / "generator", untied)
    state = load_file(str(untied / "model.safetensors"))
    state["lm_head.weight"] = state["lm_head.weight"] + 1
    save_file(state, str(untied / "model.safetensors"))
    with pytest.raises(UserError, match="untied head"):
        teacher_at(tmp_path, generator=untied).build_network()


def test_save_pretrained_round_trips(tmp_path):
    t = teacher_at(tmp_path)
    net = t.build_network()
    t.save_pretrained(net, tmp_path / "saved")
    assert set(load_file(str(tmp_path / "saved" / "model.safetensors"))) == \
        set(load_file(str(FIX / "generator" / "model.safetensors")))
    back = teacher_at(tmp_path, generator=tmp_path / "saved").build_network()
    tokens, cond = torch.randint(0, 17, (2, 8)), torch.tensor([0, 2])
    with torch.no_grad():
        torch.testing.assert_close(back(tokens, cond), net(tokens, cond))


def test_sampler_ramp_and_completion(tmp_path):
    s = MaskGenSampler(MaskGenSampler.Config())
    w = [s.guidance_at(i, 16) for i in range(16)]
    assert w[-1] == pytest.approx(12.0) and w[0] == pytest.approx(11 * (1 - math.cos(math.pi / 16)) / 2 + 1)
    assert all(a < b for a, b in zip(w, w[1:]))
    assert s.cfg_at(3, 16) == pytest.approx(1 + w[3])   # c + g (c - u) = u + (1 + g)(c - u)
    t = teacher_at(tmp_path)
    net = t.build_network()
    out = s.sample(net, t, torch.tensor([0, 1]), 4, torch.Generator().manual_seed(0))
    assert out.shape == (2, 8) and (out < 16).all()
    again = s.sample(net, t, torch.tensor([0, 1]), 4, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


@pytest.mark.slow
@pytest.mark.parametrize("zero", [0, 2])
def test_core_run_dimo_and_soft_dimo_on_maskgen(tmp_path, zero):
    """``python -m core.run method=dimo|soft_dimo teacher=maskgen`` on the fixture weights (ZeRO 0 and 2)."""
    from test_amused import tiny_clip_reward_folder
    common = ["teacher=maskgen", f"teacher.checkpoint={FIX / 'generator'}", f"teacher.tokenizer={FIX / 'tokenizer'}",
              f"teacher.clip_arch={FIX / 'clip' / 'dimo-tiny-clip.json'}",
              f"teacher.clip_pretrained={FIX / 'clip' / 'open_clip_model.safetensors'}", *TOK_ARGS,
              "trainer.steps=2", "trainer.batch_size=4", "trainer.grad_accum=2", f"trainer.zero_stage={zero}",
              "trainer.wandb=disabled", "trainer.progress=false", "eval.enabled=false", "trainer.checkpoint_every=1000"]
    env = clean_env({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    run = lambda *a: subprocess.run([sys.executable, "-m", "core.run", *a], cwd=ROOT, env=env, capture_output=True,
                                    text=True, timeout=600)
    proc = run("method=dimo", *common, f"trainer.output_dir={tmp_path / 'dimo'}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    clip = tiny_clip_reward_folder(tmp_path / "clip")
    proc = run("method=soft_dimo", *common, f"trainer.output_dir={tmp_path / 'soft'}",
               f"method.init_from={tmp_path / 'dimo'}", f"method.rewards=[{{name: clip, weight: 1.0, model: {clip}}}]")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    metrics = [json.loads(l) for l in (tmp_path / "soft" / "metrics.jsonl").read_text().splitlines() if l.strip()]
    assert any("reward" in m for m in metrics)


def test_bf16_weights_take_the_fp32_text_cache(tmp_path):
    net = teacher_at(tmp_path).build_network().to(torch.bfloat16)
    from plugins.inits import InitSample
    out = InitSample(torch.randint(0, 17, (2, 8)), noise_sigma=0.1).logits(net, torch.tensor([0, 2]))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


@pytest.mark.slow   # four trainings/searches and their evaluations
def test_the_t2i_maskgen_suite_runs_on_the_fixture(tmp_path):
    """Teacher row, Di[M]O, Soft-Di[M]O from it and TTEO on it; the results sit beside Table 3's MaskGen rows."""
    from benchmarks.reported import TABLE3_MASKGEN, beside
    from benchmarks.runner import run_suite
    from benchmarks.suites import load_suite
    from test_amused import tiny_clip_reward_folder
    clip = tiny_clip_reward_folder(tmp_path / "clip")
    reward = [{"name": "clip", "weight": 1.0, "model": str(clip)}]
    suite = load_suite("t2i_maskgen", {
        "teacher_steps": [2], "performance": None, "trainer": {"steps": 1, "batch_size": 2, "grad_accum": 1},
        "eval": {"metrics": ["clip_score"]},
        "methods": [{"label": "Di[M]O", "id": "dimo", "config": {"method": "dimo"}},
                    {"label": "Soft-Di[M]O", "id": "soft_dimo", "config": {"method": {"name": "soft_dimo",
                                                                                      "rewards": reward}},
                     "init_from": "dimo"}],
        "test_time": {"of": "soft_dimo", "label": "Soft-Di[M]O", "seeds": 2, "iters": 1, "rewards": reward}},
        teacher={"checkpoint": str(FIX / "generator"), "tokenizer": str(FIX / "tokenizer"),
                 "clip_arch": str(FIX / "clip" / "dimo-tiny-clip.json"),
                 "clip_pretrained": str(FIX / "clip" / "open_clip_model.safetensors"), "tokenizer_arch": TOK_ARCH,
                 "prompts": {"source": "builtin", "limit": 2}, "eval_metrics": ["clip_score"], "eval_clip": str(clip)})
    outcomes = run_suite(suite, tmp_path / "results", tmp_path / "work", progress=False)
    ran = [(o.entry.id, o.status, o.detail) for o in outcomes]
    assert all(o.status == "ran" for o in outcomes), ran
    lines = beside(TABLE3_MASKGEN, tmp_path / "results")
    assert len(lines) == 2 + 4 and all(line.count("|") == 12 for line in lines[2:])
    assert not lines[3].endswith("|  |  |  |  |")       # the Di[M]O row has its reproduced CLIP score


def test_passes_the_plugin_test_kit(tmp_path):
    from core.testing import check_teacher
    check_teacher("maskgen", {"checkpoint": str(FIX / "generator"), "tokenizer": str(FIX / "tokenizer"),
                              "clip_arch": str(FIX / "clip" / "dimo-tiny-clip.json"),
                              "clip_pretrained": str(FIX / "clip" / "open_clip_model.safetensors"),
                              "tokenizer_arch": TOK_ARCH})



def test_iteration_benchmark_smoke_run(tmp_path):
    """The GPU measurement script at tiny size: a random generator folder in the released layout (config.json
    fields, keys with the tied head) and a random open_clip tower, Di[M]O and Soft-Di[M]O through the engine."""
    from plugins.teachers.maskgen.benchmark import main
    check_iteration_benchmark(main, tmp_path)
