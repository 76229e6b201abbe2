"""The aMUSEd teacher: strict loading of the diffusers layout, parity with diffusers' own modules and
AmusedPipeline, soft embeddings and soft decoding, and Di[M]O / Soft-Di[M]O end to end through the real engine
(random tiny weights written by the tests; nothing is downloaded)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, check_iteration_benchmark, clean_env

diffusers = pytest.importorskip("diffusers")
from diffusers import AmusedPipeline, AmusedScheduler, UVit2DModel, VQModel  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer  # noqa: E402

from core.errors import UserError  # noqa: E402
from plugins.prompts import BUILTIN_PROMPTS, PromptsConfig  # noqa: E402
from plugins.teachers.amused import AmusedSampler, AmusedTeacher  # noqa: E402

SIDE, CODES, VOCAB = 4, 8, 32          # 4 x 4 tokens, 8 codes, [M] = 31
TEXT_LEN = 16


def tiny_tokenizer() -> CLIPTokenizer:
    """A byte-level CLIP BPE vocabulary without merges (each character one token), written locally."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    chars = [chr(c) for c in cs]
    vocab = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=[], model_max_length=TEXT_LEN)


def tiny_modules(seed: int = 0):
    """The old diffusers fast-test configuration of aMUSEd (reference/teachers.md §4), random weights."""
    torch.manual_seed(seed)
    transformer = UVit2DModel(hidden_size=8, use_bias=False, hidden_dropout=0.0, cond_embed_dim=8,
                              micro_cond_encode_dim=2, micro_cond_embed_dim=10, encoder_hidden_size=8,
                              vocab_size=VOCAB, codebook_size=CODES, in_channels=8, block_out_channels=8,
                              num_res_blocks=1, downsample=True, upsample=True, block_num_heads=1,
                              num_hidden_layers=1, num_attention_heads=1, attention_dropout=0.0,
                              intermediate_size=8, layer_norm_eps=1e-6, ln_elementwise_affine=True,
                              sample_size=SIDE)
    vq = VQModel(act_fn="silu", block_out_channels=[8], down_block_types=["DownEncoderBlock2D"],
                 up_block_types=["UpDecoderBlock2D"], in_channels=3, latent_channels=8, layers_per_block=1,
                 norm_num_groups=8, num_vq_embeddings=CODES, out_channels=3, sample_size=8,
                 mid_block_add_attention=False, lookup_from_codebook=True)
    tokenizer = tiny_tokenizer()
    text = CLIPTextModelWithProjection(CLIPTextConfig(
        hidden_size=8, intermediate_size=16, projection_dim=8, num_hidden_layers=2, num_attention_heads=2,
        vocab_size=len(tokenizer), max_position_embeddings=TEXT_LEN, bos_token_id=len(tokenizer) - 2,
        eos_token_id=len(tokenizer) - 1, pad_token_id=len(tokenizer) - 1))
    return transformer.eval(), vq.eval(), text.eval(), tokenizer


def write_tiny_amused(folder: Path, seed: int = 0) -> Path:
    """The released folder layout (transformer/, vqvae/, text_encoder/, tokenizer/, scheduler/)."""
    transformer, vq, text, tokenizer = tiny_modules(seed)
    transformer.save_pretrained(folder / "transformer")
    vq.save_pretrained(folder / "vqvae")
    text.save_pretrained(folder / "text_encoder")
    tokenizer.save_pretrained(folder / "tokenizer")
    AmusedScheduler(mask_token_id=VOCAB - 1).save_pretrained(folder / "scheduler")
    return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_amused(tmp_path_factory.mktemp("amused") / "amused-tiny")


def teacher_for(folder, **kw) -> AmusedTeacher:
    return AmusedTeacher(AmusedTeacher.Config(checkpoint=str(folder), **kw))


def reference_modules(folder):
    load = lambda cls, sub: cls.from_pretrained(str(folder / sub)).eval()
    return (load(UVit2DModel, "transformer"), load(VQModel, "vqvae"),
            load(CLIPTextModelWithProjection, "text_encoder"), CLIPTokenizer.from_pretrained(str(folder / "tokenizer")))


def test_grid_conditions_and_prompts(folder):
    t = teacher_for(folder)
    assert (t.seq_len, t.vocab_size, t.mask_id, t.input_vocab_size()) == (SIDE * SIDE, CODES, VOCAB - 1, VOCAB)
    assert t.image_shape == (3, SIDE, SIDE)          # one VQ block: scale factor 1
    assert t.num_classes == len(BUILTIN_PROMPTS)
    cond = t.sample_conditions(5, torch.Generator().manual_seed(0))
    assert cond.dtype == torch.long and int(cond.max()) < t.num_classes
    null = t.null_condition(cond)
    assert (null == len(BUILTIN_PROMPTS)).all() and t.captions(null) == [""] * 5
    assert t.captions(torch.tensor([2])) == [BUILTIN_PROMPTS[2]]
    neg = teacher_for(folder, prompts=PromptsConfig(negative="blurry"))
    assert neg.captions(neg.null_condition(cond[:1])) == ["blurry"]


def test_logits_match_diffusers_uvit2d_with_pipeline_text_encoding(folder):
    """dimo's network == diffusers UVit2DModel on the text states AmusedPipeline computes for the prompt."""
    t = teacher_for(folder)
    net = t.build_network()
    ref, _, text, tok = reference_modules(folder)
    cond = torch.tensor([0, 3, t.prompt_set.null_index])
    prompts = [BUILTIN_PROMPTS[0], BUILTIN_PROMPTS[3], ""]
    ids = tok(prompts, return_tensors="pt", padding="max_length", truncation=True,
              max_length=tok.model_max_length).input_ids
    with torch.no_grad():
        out = text(ids, return_dict=True, output_hidden_states=True)
        tokens = torch.randint(0, VOCAB, (3, SIDE * SIDE), generator=torch.Generator().manual_seed(1))
        micro = torch.tensor([SIDE, SIDE, 0, 0, 6.0]).expand(3, -1)
        want = ref(tokens.view(3, SIDE, SIDE), out.hidden_states[-2], out.text_embeds, micro)
        got = net(tokens, cond)
    assert got.shape == (3, SIDE * SIDE, CODES)
    torch.testing.assert_close(got, want.flatten(2).transpose(1, 2), rtol=0, atol=1e-6)


def test_sampler_reproduces_amused_pipeline(folder):
    """The official sampler: same tokens as AmusedPipeline (latents) for the same prompts and generator."""
    t = teacher_for(folder)
    net = t.build_network()
    ref, vq, text, tok = reference_modules(folder)
    pipe = AmusedPipeline(vqvae=vq, tokenizer=tok, text_encoder=text, transformer=ref,
                          scheduler=AmusedScheduler(mask_token_id=VOCAB - 1))
    pipe.set_progress_bar_config(disable=True)
    prompts = list(BUILTIN_PROMPTS[:2])
    want = pipe(prompt=prompts, num_inference_steps=6, guidance_scale=3.0, height=SIDE, width=SIDE,
                generator=torch.Generator().manual_seed(7), output_type="latent").images
    sampler = AmusedSampler(AmusedSampler.Config(cfg_scale=3.0))
    got = sampler.sample(net, t, torch.tensor([0, 1]), 6, torch.Generator().manual_seed(7))
    assert (got != t.mask_id).all()
    assert torch.equal(got, want.reshape(2, -1))


def test_inputs_embeds_noise_and_frozen_parts(folder):
    t = teacher_for(folder)
    net = t.build_network()
    tokens = torch.randint(0, CODES, (2, SIDE * SIDE))
    cond = torch.tensor([1, 2])
    with torch.no_grad():
        plain = net(tokens, cond)
        torch.testing.assert_close(net(None, cond, inputs_embeds=net.embed_tokens(tokens)), plain)
        one_hot = torch.nn.functional.one_hot(tokens, CODES).float()
        torch.testing.assert_close(net(None, cond, inputs_embeds=one_hot @ net.code_embeddings()), plain)
        noisy = net(tokens, cond, noise_sigma=0.3)
    assert not torch.allclose(noisy, plain)
    frozen = {id(p) for p in net.frozen_parameters()}
    assert frozen == {id(p) for p in list(net.embed.parameters()) + list(net.mlm_layer.parameters())}
    assert not hasattr(net.embed, "_forward_hooks") or not net.embed._forward_hooks   # hooks removed


def test_decode_soft_of_one_hot_equals_decode_and_carries_gradients(folder):
    t = teacher_for(folder)
    tokens = torch.randint(0, CODES, (2, SIDE * SIDE))
    images = t.decode(tokens)
    assert images.shape == (2, 3, SIDE, SIDE) and 0 <= images.min() and images.max() <= 1
    _, vq, _, _ = reference_modules(folder)
    with torch.no_grad():
        want = vq.decode(tokens, force_not_quantize=True, shape=(2, SIDE, SIDE, 8)).sample.clip(0, 1)
    torch.testing.assert_close(images, want)
    logits = torch.nn.functional.one_hot(tokens, CODES).float().mul(50).requires_grad_(True)
    soft = t.decode_soft(logits.softmax(-1))
    torch.testing.assert_close(soft, images, atol=1e-4, rtol=0)
    soft.sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert t.encode(images).shape == (2, SIDE * SIDE)


def test_text_encoder_runs_once_per_prompt_and_is_shared_by_copies(folder):
    import copy
    t = teacher_for(folder)
    net = t.build_network()
    calls = []
    inner = net.text.encode
    net.text.encode = lambda texts, device: (calls.append(list(texts)), inner(texts, device))[1]
    net(torch.zeros(3, SIDE * SIDE, dtype=torch.long), torch.tensor([0, 0, 1]))
    twin = copy.deepcopy(net)
    assert twin.text is net.text
    twin(torch.zeros(2, SIDE * SIDE, dtype=torch.long), torch.tensor([1, 2]))
    assert calls == [[BUILTIN_PROMPTS[0], BUILTIN_PROMPTS[1]], [BUILTIN_PROMPTS[2]]]


def test_strict_loading_errors(folder, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    from safetensors.torch import load_file, save_file
    weights = bad / "transformer" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    state["embed.embeddings.weight"] = state["embed.embeddings.weight"][:, :4].contiguous()
    state["renamed.weight"] = state.pop("mlm_layer.conv1.weight")
    save_file(state, str(weights))
    with pytest.raises(UserError, match="embed.embeddings.weight.*another shape|another shape.*embed"):
        teacher_for(bad).build_network()
    with pytest.raises(UserError, match="teacher.checkpoint"):
        teacher_for(tmp_path / "nowhere")
    (bad / "vqvae" / "diffusion_pytorch_model.safetensors").write_bytes(b"not weights")
    with pytest.raises(UserError, match="not a safetensors file"):
        teacher_for(bad).vq()


def test_save_pretrained_round_trips(folder, tmp_path):
    t = teacher_for(folder)
    net = t.build_network()
    out = tmp_path / "copy"
    shutil.copytree(folder, out)
    shutil.rmtree(out / "transformer")
    t.save_pretrained(net, out / "transformer")
    assert json.loads((out / "transformer" / "config.json").read_text())["_class_name"] == "UVit2DModel"
    back = UVit2DModel.from_pretrained(str(out / "transformer"))
    assert set(back.state_dict()) == set(net.state_dict())
    tokens, cond = torch.randint(0, CODES, (1, SIDE * SIDE)), torch.tensor([0])
    with torch.no_grad():
        torch.testing.assert_close(teacher_for(out).build_network()(tokens, cond), net(tokens, cond))


def tiny_clip_reward_folder(folder: Path) -> Path:
    """A tiny random CLIPModel + the tiny tokenizer, for the clip reward in the Soft-Di[M]O run."""
    from transformers import CLIPConfig, CLIPModel
    tok = tiny_tokenizer()
    cfg = CLIPConfig(text_config=dict(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      vocab_size=len(tok), max_position_embeddings=TEXT_LEN,
                                      bos_token_id=len(tok) - 2, eos_token_id=len(tok) - 1, pad_token_id=len(tok) - 1),
                     vision_config=dict(hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                        num_attention_heads=2, image_size=8, patch_size=4),
                     projection_dim=8)
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_clip_score_evaluation_scores_samples_against_their_prompts(folder, tmp_path):
    from core.interfaces import EvalData, Samples
    from plugins.rewards import HFClipReward
    from registry.registry import build
    clip = tiny_clip_reward_folder(tmp_path / "clip")
    t = teacher_for(folder, eval_clip=str(clip))
    ev = t.evaluator()
    assert ev.exact_metrics == ("clip_score",) and ev.captions(torch.tensor([1])) == [BUILTIN_PROMPTS[1]]
    labels = torch.arange(t.num_classes)
    images = t.decode(torch.randint(0, CODES, (len(labels), SIDE * SIDE)))
    got = build("metric", "clip_score", {"batch_size": 3}).compute(EvalData(None, None, samples=Samples(images, labels),
                                                                           evaluator=ev))
    cos = HFClipReward(HFClipReward.Config(model=str(clip)))(images, labels, t)
    assert got["clip_score"] == pytest.approx(float(100 * cos.clamp(min=0).mean()), rel=1e-5)
    assert got["clip"] == pytest.approx(got["clip_score"] / 100)
    missing = EvalData(None, None, samples=Samples(images, labels),
                       evaluator=teacher_for(folder, eval_clip=str(tmp_path / "no-clip")).evaluator())
    with pytest.raises(UserError, match="teacher.eval_clip=.*no-clip"):
        build("metric", "clip_score").compute(missing)
    with pytest.raises(ValueError, match="not text-to-image metrics"):
        AmusedTeacher.Config(checkpoint=str(folder), eval_metrics=["fid"])


def caption_folder(path: Path, n: int = 6) -> Path:
    """Random images with captions from the built-in prompts, in the imagefolder layout."""
    from PIL import Image
    path.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    lines = []
    for i in range(n):
        pixels = (torch.rand(SIDE * 2, SIDE * 3, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(path / f"{i}.png")
        lines.append(json.dumps({"file_name": f"{i}.png", "text": BUILTIN_PROMPTS[i % 3]}))
    (path / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return path


def test_caption_data_is_encoded_into_real_tokens_and_prompt_indices(folder, tmp_path):
    data = caption_folder(tmp_path / "data")
    t = teacher_for(folder, data=str(data), prompts=PromptsConfig(source=str(data / "metadata.jsonl")))
    assert t.prompt_set.prompts == list(BUILTIN_PROMPTS[:3])   # the captions, each once
    tokens, cond = t.dataset()
    assert tokens.shape == (6, SIDE * SIDE) and int(tokens.max()) < CODES
    assert [t.captions(c[None])[0] for c in cond] == [BUILTIN_PROMPTS[i % 3] for i in range(6)]
    with pytest.raises(UserError, match="not in the prompt set"):
        teacher_for(folder, data=str(data), prompts=PromptsConfig(limit=2)).dataset()
    with pytest.raises(UserError, match="metadata.jsonl"):
        teacher_for(folder, data=str(tmp_path)).dataset()


def run_dimo(tmp_path, folder, method, zero, *extra):
    args = [sys.executable, "-m", "core.run", f"method={method}", "teacher=amused", f"teacher.checkpoint={folder}",
            "trainer.steps=2", "trainer.batch_size=4", "trainer.grad_accum=2", f"trainer.zero_stage={zero}",
            "trainer.wandb=disabled", "trainer.progress=false", f"trainer.output_dir={tmp_path / 'run'}",
            "trainer.checkpoint_every=1000", *extra]
    env = clean_env({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    run = tmp_path / "run"
    assert (run / "student.safetensors").is_file(), proc.stdout[-2000:]
    return run


@pytest.mark.slow
@pytest.mark.parametrize("zero", [0, 2])
def test_core_run_dimo_and_soft_dimo_on_amused(tmp_path, folder, zero):
    """``python -m core.run method=dimo|soft_dimo teacher=amused`` through the real engine (ZeRO 0 and 2),
    Soft-Di[M]O with a CLIP reward through decode_soft, initialised from the Di[M]O student."""
    clip = tiny_clip_reward_folder(tmp_path / "clip")
    # Di[M]O with the text-to-image evaluation: teacher at 2 steps and student at 1, CLIP score per prompt
    dimo_run = run_dimo(tmp_path / "dimo", folder, "dimo", zero, "eval.samples_per_class=1", "eval.teacher_steps=[2]",
                        f"teacher.eval_clip={clip}")
    from benchmarks.results import read_records
    records = read_records(dimo_run / "results.json")
    assert all(r.conditions == {"prompts": list(BUILTIN_PROMPTS), "null_prompt": ""} for r in records)
    assert (dimo_run / "samples_student_1step.png").is_file()   # prompts under their rows
    assert [(r.entry.label, r.entry.steps) for r in records] == [("teacher", 2), ("student", 1)]
    assert all(0 <= r.metrics["clip_score"] <= 100 for r in records)
    soft_run = run_dimo(tmp_path / "soft", folder, "soft_dimo", zero, f"method.init_from={dimo_run}",
                        f"method.rewards=[{{name: clip, weight: 1.0, model: {clip}}}]", "eval.enabled=false")
    metrics = [json.loads(l) for l in (soft_run / "metrics.jsonl").read_text().splitlines() if l.strip()]
    assert any("reward" in m for m in metrics), metrics
    if zero == 0:   # the GAN head on real caption data (noised soft embeddings vs encoded images)
        data = caption_folder(tmp_path / "data")
        gan_run = run_dimo(tmp_path / "gan", folder, "soft_dimo", zero, f"teacher.data={data}",
                           f"teacher.prompts.source={data / 'metadata.jsonl'}", "method.w_gan=1.0",
                           "method.w_reward=0", "eval.enabled=false")
        gan = [json.loads(l) for l in (gan_run / "metrics.jsonl").read_text().splitlines() if l.strip()]
        assert any("disc_loss" in m for m in gan), gan
    if zero == 0:   # TTEO with multi-start on the Soft-Di[M]O student (rewards: the run's CLIP reward)
        out = tmp_path / "tteo.png"
        proc = subprocess.run([sys.executable, "-m", "core.run", "generate", f"checkpoint={soft_run}", "n=1",
                               "tteo.seeds=2", "tteo.iters=1", "tteo.batch_size=4", f"out={out}"], cwd=ROOT,
                              env=clean_env({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}), capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
        record = json.loads(out.with_suffix(".tteo.json").read_text())
        assert record["conditions"] == len(BUILTIN_PROMPTS) and out.is_file()


def test_bf16_weights_take_the_fp32_text_cache(folder):
    """DeepSpeed's bf16 mode casts the trainable copies' weights: the shared fp32 text cache must still fit."""
    net = teacher_for(folder).build_network().to(torch.bfloat16)
    out = net(torch.randint(0, CODES, (2, SIDE * SIDE)), torch.tensor([0, 1]), noise_sigma=0.1)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_passes_the_plugin_test_kit(folder):
    from core.testing import check_teacher
    check_teacher("amused", {"checkpoint": str(folder)})


def test_streaming_fid_on_prompts(folder, tmp_path):
    """COCO-30k-style FID: the streaming Inception evaluator samples the teacher once per prompt of a caption file."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("test_maskgit_mod", Path(__file__).parent / "test_maskgit.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    inception = mod.inception_file.__wrapped__(tmp_path_factory=type("F", (), {"mktemp": lambda self, n: tmp_path})())
    captions = tmp_path / "captions.txt"
    captions.write_text("a red apple\na blue car\na green tree\n")
    import numpy as np
    reference = tmp_path / "stats.npz"
    np.savez(reference, mu=np.zeros(2048), sigma=np.eye(2048))
    from plugins.teachers.maskgit.evaluation import fid_command
    out = fid_command(["model=teacher", "teacher=amused", f"teacher.checkpoint={folder}",
                       f"teacher.prompts.source={captions}", "samples_per_class=1", "steps=2", "batch_size=2",
                       f"inception_weights={inception}", "device=cpu", f"reference={reference}"])
    assert out["model"] == "teacher@2" and out["n"] == 3 and np.isfinite(out["fid"]), out


AMUSED_BASELINES = {
    "sdtt": ["method.base_steps=4", "method.steps_per_round=1", "method.warmup_steps=0", "sampler=amused"],
    "redi": ["method.pairs=4", "method.chunk_size=2", "method.pair_batch=2", "method.pair_steps=2",
             "method.steps_per_round=1", "method.rounds=1", "method.variant=distill", "sampler=amused"],
}


@pytest.mark.parametrize("name", list(AMUSED_BASELINES))
def test_baselines_run_the_amused_sampler_step_operations_through_the_engine(folder, tmp_path, name):
    """SDTT and ReDi drive the sampler's plan/reveal with their own network calls: on aMUSEd they follow
    the AmusedScheduler's rules (plan = its masked counts) and train through the real engine."""
    from core.config import resolve
    from core.engine import Trainer
    from core.export import load_student
    s = AmusedSampler(AmusedSampler.Config())
    sched = AmusedScheduler(mask_token_id=VOCAB - 1)
    sched.set_timesteps(4, (2, 0))
    x, counts = torch.full((1, SIDE * SIDE), VOCAB - 1), []
    for t in sched.timesteps:
        x = sched.step(torch.zeros(1, SIDE * SIDE, CODES), t, x, generator=torch.Generator().manual_seed(0)).prev_sample
        counts.append(int((x == VOCAB - 1).sum()))
    assert s.plan(4, SIDE * SIDE) == counts
    data = caption_folder(tmp_path / "data")    # SDTT trains on real tokens; ReDi ignores them
    cfg = resolve([f"method={name}", "teacher=amused", f"teacher.checkpoint={folder}", f"teacher.data={data}",
                   f"teacher.prompts.source={data / 'metadata.jsonl'}", "trainer.steps=2",
                   "trainer.batch_size=2", "trainer.log_every=1", "trainer.wandb=disabled", "trainer.progress=false",
                   "eval.enabled=false", "trainer.device=cpu", f"trainer.output_dir={tmp_path / 'run'}",
                   *AMUSED_BASELINES[name]])
    history = Trainer(cfg).train().history
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    m, _, net, _ = load_student(str(tmp_path / "run"))
    tokens = m.generate(net, torch.tensor([0, 1]), torch.Generator().manual_seed(0), steps=m.sample_steps[0])
    assert tokens.shape == (2, SIDE * SIDE) and (tokens < CODES).all()



def test_iteration_benchmark_smoke_run(tmp_path):
    """The GPU measurement script at tiny size: a random folder in the released layout, Di[M]O and Soft-Di[M]O
    (GAN head on random tokens) through the engine."""
    from plugins.teachers.amused.benchmark import main
    check_iteration_benchmark(main, tmp_path)
