"""The maskbit teacher: parity with the official code (fixture made by tests/fixtures/maskbit/make_fixture.py with
markweberdev/maskbit), the flat (position, group) layout, loading errors, the official sampler's rules, and
Di[M]O / Soft-Di[M]O / the baselines through the real engine on a tiny MaskBit."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from core.errors import UserError
from plugins.teachers.maskbit.sampler import MaskBitSampler
from plugins.teachers.maskbit.teacher import MaskBitConfig, MaskBitTeacher
from plugins.teachers.maskbit.transformer import combine_groups, split_codes

FIXTURE = Path(__file__).parent / "fixtures" / "maskbit"
META = json.loads((FIXTURE / "parity.json").read_text())
OUT = load_file(str(FIXTURE / "parity.safetensors"))
_spec = importlib.util.spec_from_file_location("maskbit_fixture", FIXTURE / "make_fixture.py")
_fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixture)

BITS, SPLITS, RES, CLASSES = 6, 2, 64, 10
POSITIONS, C = 16, 8
TINY = {"bits": BITS, "splits": SPLITS, "resolution": RES, "num_classes": CLASSES,
        "arch": {"dim": 32, "depth": 2, "heads": 4, "mlp_dim": 64, "dropout": 0.1},
        "tokenizer_arch": {"hidden_channels": 32, "channel_mult": [1, 1, 2, 2, 2], "num_res_blocks": 1}}


def released_states() -> tuple[dict, dict]:
    """The fixture's weights under the released names (generator ``token_emb*``), buffers as the official ones."""
    keys = {k: tuple(s) for k, s in META["released_keys"].items()}
    official = {("gen.input_proj" + k[len("gen.token_emb"):] if k.startswith("gen.token_emb") else k): s
                for k, s in keys.items()}
    drawn = _fixture.weights({k: s for k, s in official.items() if k not in META["buffers"]})
    drawn.update({k: OUT[k] for k in META["buffers"]})
    gen = {("token_emb" + k[len("gen.input_proj"):] if k.startswith("gen.input_proj") else k[4:]): v
           for k, v in drawn.items() if k.startswith("gen.")}
    tok = {k[4:]: v for k, v in drawn.items() if k.startswith("tok.")}
    assert set(gen) == {k[4:] for k in keys if k.startswith("gen.")}
    return gen, tok


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("maskbit")
    gen, tok = released_states()
    torch.save(gen, root / f"maskbit_generator_{BITS}bit.bin")
    torch.save(tok, root / f"maskbit_tokenizer_{BITS}bit.bin")
    return root


def teacher_for(folder, **kw) -> MaskBitTeacher:
    return MaskBitTeacher(MaskBitConfig.model_validate({**TINY, "checkpoint": str(folder), "tokenizer": str(folder),
                                                        **kw}))


# ---------------------------------------------------------------------------------------------------
# parity with the official code
# ---------------------------------------------------------------------------------------------------

def test_logits_match_the_official_lfqbert(folder):
    teacher = teacher_for(folder)
    net = teacher.build_network().eval()
    tokens, labels = OUT["tokens"], OUT["labels"].clone()
    labels[OUT["drop"]] = -1                                             # dimo's null class = the dropped label
    with torch.no_grad():
        ours = net(tokens.reshape(3, -1), labels)
    assert ours.shape == (3, POSITIONS * SPLITS, C)
    torch.testing.assert_close(ours, OUT["logits"].reshape(3, -1, C), atol=2e-5, rtol=1e-4)
    assert teacher.mask_id == C and teacher.vocab_size == C and teacher.seq_len == POSITIONS * SPLITS


def test_decoder_and_encoder_match_the_official_tokenizer(folder):
    teacher = teacher_for(folder)
    flat = split_codes(OUT["codes"], SPLITS, BITS // SPLITS)
    torch.testing.assert_close(teacher.decode(flat), OUT["image"].clamp(0, 1), atol=1e-4, rtol=1e-4)
    codes = combine_groups(teacher.encode(OUT["picture"]), SPLITS, BITS // SPLITS)
    assert torch.equal(codes, OUT["picture_codes"].reshape(2, -1).long())


def test_group_split_and_combine_are_the_official_factorisation():
    codes = torch.randint(0, 2 ** 14, (3, 256))
    flat = split_codes(codes, 2, 7)
    assert flat.shape == (3, 512) and flat.max() < 128
    assert torch.equal(flat.view(3, 256, 2)[..., 0], codes & 127) and torch.equal(flat.view(3, 256, 2)[..., 1], codes >> 7)
    assert torch.equal(combine_groups(flat, 2, 7), codes)


# ---------------------------------------------------------------------------------------------------
# the flat layout where tokens flow: embeddings, soft embeddings, noise, soft decode
# ---------------------------------------------------------------------------------------------------

def test_bits_are_the_embedding_and_soft_embeddings_are_expected_bits(folder):
    teacher = teacher_for(folder)
    net = teacher.build_network().eval()
    x = OUT["tokens"].reshape(3, -1)
    emb = net.embed_tokens(x)
    assert emb.shape == (3, 32, 3) and torch.equal(emb[x == C], torch.zeros_like(emb[x == C]))
    assert set(emb[x != C].unique().tolist()) == {-1.0, 1.0}
    cond = torch.tensor([1, 2, -1])
    with torch.no_grad():
        torch.testing.assert_close(net(None, cond, inputs_embeds=emb), net(x, cond))
        onehot = torch.nn.functional.one_hot(x.clamp(max=C - 1), C).float() * 1e4
        soft = onehot.softmax(-1) @ net.code_embeddings()
        hard = x.clamp(max=C - 1)
        torch.testing.assert_close(net(None, cond, inputs_embeds=soft), net(hard, cond), atol=1e-5, rtol=1e-5)
        from core.interfaces import InitSample
        noisy = InitSample(tokens=x, noise_sigma=0.3).logits(net, cond)      # Di[M]O's noise on the bits
        assert not torch.allclose(noisy, net(x, cond))
        torch.testing.assert_close(InitSample(tokens=x, noise_sigma=0.0).logits(net, cond), net(x, cond))
    frozen = {id(p) for p in net.frozen_parameters()}
    assert {id(net.input_proj.weight), id(net.class_emb.weight), id(net.pos_emb)} <= frozen


def test_soft_decode_of_one_hot_is_the_hard_decode_and_carries_gradients(folder):
    teacher = teacher_for(folder)
    flat = split_codes(OUT["codes"], SPLITS, BITS // SPLITS)
    z = (torch.nn.functional.one_hot(flat, C).float() * 50).requires_grad_(True)
    img = teacher.decode_soft(z.softmax(-1))
    torch.testing.assert_close(img, teacher.decode(flat), atol=1e-4, rtol=1e-4)
    img.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------
# loading: the documented rename, strictness, clear errors
# ---------------------------------------------------------------------------------------------------

def test_wrong_names_shapes_and_files_are_clear_errors(folder, tmp_path):
    gen, _ = released_states()
    bad = {k: v for k, v in gen.items() if k != "prediction_layer.bias"}
    torch.save(bad, tmp_path / "missing.bin")
    with pytest.raises(UserError, match="teacher.checkpoint.*missing keys.*prediction_layer.bias"):
        teacher_for(folder, checkpoint=str(tmp_path / "missing.bin")).build_network()
    torch.save({**gen, "pos_emb": torch.zeros(1, 5, 32)}, tmp_path / "shape.bin")
    with pytest.raises(UserError, match="pos_emb.*shape"):
        teacher_for(folder, checkpoint=str(tmp_path / "shape.bin")).build_network()
    (tmp_path / "junk.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="teacher.checkpoint.*corrupt"):
        teacher_for(folder, checkpoint=str(tmp_path / "junk.bin")).build_network()
    with pytest.raises(UserError, match="teacher.checkpoint.*without 'maskbit_generator_6bit.bin'"):
        teacher_for(tmp_path / "none", checkpoint=str(tmp_path)).build_network()
    with pytest.raises(UserError, match="teacher.tokenizer"):
        teacher_for(folder, tokenizer=str(tmp_path / "missing.bin")).decode(torch.zeros(1, 32, dtype=torch.long))
    with pytest.raises(ValueError, match="not divisible by splits"):
        MaskBitConfig(bits=7)
    with pytest.raises(ValueError, match="multiple of 16"):
        MaskBitConfig(resolution=100)


def test_save_pretrained_writes_the_released_layout(folder, tmp_path):
    teacher = teacher_for(folder)
    path = teacher.save_pretrained(teacher.build_network(), tmp_path / "out.bin")
    state = torch.load(path, weights_only=True)
    assert "token_emb.weight" in state and not any(k.startswith("input_proj") for k in state)
    again = teacher_for(folder, checkpoint=str(path)).build_network()
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), teacher.build_network().state_dict().values()))


def test_real_sizes_on_the_meta_device():
    teacher = MaskBitTeacher(MaskBitConfig())
    with torch.device("meta"):
        net = teacher.new_network()
    n = sum(p.numel() for p in net.parameters())
    assert teacher.seq_len == 512 and teacher.vocab_size == 128 and teacher.mask_id == 128
    assert 300e6 < n < 310e6, n                        # the paper's Table 1: 305M
    assert net.input_proj.weight.shape == (1024, 14) and net.prediction_layer.weight.shape == (256, 1024)


def test_token_data_is_read_and_validated(folder, tmp_path):
    codes = torch.randint(0, 64, (5, POSITIONS))
    save_file({"tokens": codes, "labels": torch.arange(5)}, str(tmp_path / "d.safetensors"))
    tokens, labels = teacher_for(folder, data=str(tmp_path / "d.safetensors")).dataset()
    assert tokens.shape == (5, 32) and torch.equal(combine_groups(tokens, 2, 3), codes)
    save_file({"tokens": codes, "labels": torch.arange(5) + 10}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(UserError, match="teacher.data.*labels"):
        teacher_for(folder, data=str(tmp_path / "bad.safetensors")).dataset()


# ---------------------------------------------------------------------------------------------------
# the official sampler
# ---------------------------------------------------------------------------------------------------

def official_counts(steps: int, n: int) -> list[int]:
    """sampling.py: clamp(floor(gamma((i+1)/S) n), 1, masked - 1), arccos gamma clamped to [1e-6, 1]."""
    masked, out = n, []
    for i in range(steps):
        ratio = min(max(math.acos((i + 1) / steps) / (math.pi / 2), 1e-6), 1.0)
        masked = int(torch.clamp(torch.tensor(math.floor(ratio * n)), 1, masked - 1))
        out.append(masked)
    return out[:-1] + [0]


@pytest.mark.parametrize("steps", [1, 2, 8, 64])
def test_sampler_counts_guidance_and_temperature_are_the_official_ones(steps):
    s = MaskBitSampler(MaskBitSampler.Config())
    assert s.plan(steps, 512) == official_counts(steps, 512)
    for i in range(steps):   # c + w ramp (c - u) = u + (1 + w ramp)(c - u), ramp = (1 - cos((i/S)^3 pi)) / 2
        assert s.cfg_at(i, steps) == pytest.approx(1 + 7.1 * (1 - math.cos((i / steps) ** 3 * math.pi)) / 2)
    annealed = MaskBitSampler(MaskBitSampler.Config(annealing=True, guidance_annealing="linear"))
    assert annealed.inverse_temperature_at(0, 4) == pytest.approx(1 / (0.5 + 0.8 * 0.75))
    assert annealed.cfg_at(2, 4) == pytest.approx(1 + 7.1 * 0.5)


def test_teacher_sampling_fills_every_entry(folder):
    teacher = teacher_for(folder)
    net = teacher.build_network().eval()
    sampler = MaskBitSampler(MaskBitSampler.Config())
    tokens = sampler.sample(net, teacher, torch.tensor([0, 5]), 6, torch.Generator().manual_seed(0))
    assert tokens.shape == (2, 32) and (tokens < C).all()
    assert teacher.decode(tokens).shape == (2, 3, RES, RES)


# ---------------------------------------------------------------------------------------------------
# methods through the real engine
# ---------------------------------------------------------------------------------------------------

def engine_args(folder, tmp_path, data=None) -> list[str]:
    args = ["teacher=maskbit", f"teacher.checkpoint={folder}", f"teacher.tokenizer={folder}",
            f"teacher.bits={BITS}", f"teacher.resolution={RES}", f"teacher.num_classes={CLASSES}",
            "teacher.tokenizer_arch.hidden_channels=32", "teacher.tokenizer_arch.channel_mult=[1,1,2,2,2]",
            "teacher.tokenizer_arch.num_res_blocks=1", "trainer.batch_size=4", "trainer.log_every=1",
            "trainer.wandb=disabled", "trainer.progress=false", "eval.enabled=false", "trainer.device=cpu",
            f"trainer.output_dir={tmp_path / 'run'}"]
    args += [f"teacher.arch.{k}={v}" for k, v in TINY["arch"].items()]
    return args + ([f"teacher.data={data}"] if data else [])


@pytest.fixture
def token_data(tmp_path):
    g = torch.Generator().manual_seed(0)
    save_file({"tokens": torch.randint(0, 64, (16, POSITIONS), generator=g), "labels": torch.arange(16) % 10},
              str(tmp_path / "tokens.safetensors"))
    return tmp_path / "tokens.safetensors"


RUNS = {
    "dimo": ["method=dimo"],
    "soft_dimo": ["method=soft_dimo", "method.aux_warmup_steps=0", "discriminator=light",
                  "discriminator.width=16", "discriminator.depth=1", "discriminator.heads=2"],
    "sdtt": ["method=sdtt", "method.base_steps=4", "method.steps_per_round=1", "method.warmup_steps=0",
             "sampler=maskbit"],
    "di4c": ["method=di4c", "method.latent_batch=2", "method.lambda_freq_dim=8", "method.lambda_hidden=16"],
    "redi": ["method=redi", "method.pairs=8", "method.chunk_size=4", "method.pair_batch=4", "method.pair_steps=2",
             "method.steps_per_round=1", "method.rounds=1", "method.variant=distill", "sampler=maskbit"],
}


@pytest.mark.parametrize("stage", [0, 2])
@pytest.mark.parametrize("name", list(RUNS))
def test_methods_train_through_the_engine_on_maskbit(folder, tmp_path, token_data, name, stage):
    from core.config import resolve
    from core.engine import Trainer
    from core.export import load_student
    cfg = resolve([*RUNS[name], "trainer.steps=2", f"trainer.zero_stage={stage}",
                   *engine_args(folder, tmp_path, token_data)])
    trainer = Trainer(cfg)
    history = trainer.train().history
    loss = "aux_loss" if name in ("dimo", "soft_dimo") else "loss"
    assert len(history) == 2 and all(math.isfinite(h[loss]) for h in history)
    method, teacher, net, _ = load_student(str(tmp_path / "run"))
    tokens = method.generate(net, torch.tensor([1, 4]), torch.Generator().manual_seed(0),
                             steps=method.sample_steps[0])
    assert tokens.shape == (2, POSITIONS * SPLITS) and (tokens < C).all()
    assert teacher.decode(tokens).shape == (2, 3, RES, RES)


# ---------------------------------------------------------------------------------------------------
# TTEO through the bit embeddings, and the benchmark suite
# ---------------------------------------------------------------------------------------------------

def test_tteo_optimises_the_bit_embeddings_of_the_flat_grid(folder):
    from plugins.inits import MixedInit
    from plugins.methods.dimo import DiMO
    from plugins.search import TTEO
    teacher = teacher_for(folder)
    net = teacher.build_network().eval()
    method = DiMO(DiMO.Config())
    method.attach(teacher, {"init": MixedInit(MixedInit.Config())})
    search = TTEO(TTEO.Config(seeds=2, iters=6, lr=0.5))
    soft = []   # the reward of the soft decode at each Adam step (the hard samples' at the end are not recorded)

    def brightness(images, cond, teacher):
        if images.requires_grad:
            soft.append(images.mean().item())
        return images.mean((1, 2, 3))
    search.rewards = [(1.0, brightness)]
    e0 = TTEO.init_embeddings(method, net, teacher, 2, torch.Generator().manual_seed(0))
    assert e0.shape == (2, POSITIONS * SPLITS, BITS // SPLITS)
    tokens, rewards = search.search(method, net, teacher, torch.tensor([1, 2]), 1.0, torch.Generator().manual_seed(0))
    assert tokens.shape == (2, POSITIONS * SPLITS) and (tokens < C).all() and rewards.shape == (2,)
    assert len(soft) == 6 and soft[-1] > soft[0]


def test_the_imagenet_maskbit_suite_holds_the_rows_table1_reports():
    from benchmarks.reported import TABLE1_MASKBIT, beside
    from benchmarks.suites import entries, load_suite
    ids = {e.id for e in entries(load_suite("imagenet256_maskbit"))}
    named = {row[-1] for row in TABLE1_MASKBIT.rows if row[-1]}
    assert named <= ids, named - ids
    lines = beside(TABLE1_MASKBIT, Path("/nonexistent"))
    assert len(lines) == 2 + len(TABLE1_MASKBIT.rows) and "| 1.66 |  |" in lines[2]


def test_the_imagenet_evaluation_cli_streams_the_maskbit_teacher(folder, tmp_path, tmp_path_factory):
    """MaskGit's ImageNet evaluation hooks (streamed Inception features, IS/FID) run the maskbit teacher."""
    from plugins.teachers.maskgit.evaluation import main
    from test_maskgit import inception_file
    weights = inception_file.__wrapped__(tmp_path_factory)
    out = tmp_path / "fid.json"
    args = ["fid", "model=teacher", "steps=2", "samples_per_class=1", "batch_size=10", "device=cpu", f"out={out}",
            f"inception_weights={weights}"]
    args += [a for a in engine_args(folder, tmp_path) if a.startswith("teacher")]
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert result["n"] == CLASSES and result["model"] == "teacher@2" and math.isfinite(result["is"])
    assert result["config"]["sampler"]["name"] == "maskbit"


def test_iteration_benchmark_smoke_run(tmp_path):
    """The GPU measurement script at tiny size: random released-layout files, Soft-Di[M]O's GAN on their codes."""
    from plugins.teachers.maskbit.benchmark import main
    result = main(["--size", "tiny", "--methods", "soft_dimo", "--batches", "4", "--stages", "0", "--iters", "1",
                   "--device", "cpu", "--out", str(tmp_path / "rows.json")])
    [row] = json.loads((tmp_path / "rows.json").read_text())["rows"]
    assert row == result["rows"][0] and (row["method"], row["batch"], row["zero_stage"]) == ("soft_dimo", 4, 0)
    assert math.isfinite(row["seconds_per_iter"]) and row["seconds_per_iter"] > 0 and row["peak_memory_gib"] > 0


def test_the_plugin_test_kit_accepts_maskbit(folder):
    from core.testing import check_teacher
    check_teacher("maskbit", {**TINY, "checkpoint": str(folder), "tokenizer": str(folder)})


def test_an_image_folder_becomes_teacher_data(folder, tmp_path):
    """``python -m plugins.teachers.maskbit.data``: ImageFolder -> LFQ codes and sorted-class labels -> dataset()."""
    from PIL import Image
    from plugins.teachers.maskbit.data import main
    for c, name in enumerate(["n01", "n02"]):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(2):
            pixels = (torch.rand(80, 96, 3, generator=torch.Generator().manual_seed(4 * c + i)) * 255).byte().numpy()
            Image.fromarray(pixels).save(tmp_path / "imgs" / name / f"{i}.png")
    out = tmp_path / "tokens.safetensors"
    teacher_args = [a for a in engine_args(folder, tmp_path) if a.startswith("teacher.")]
    assert main([f"images={tmp_path / 'imgs'}", f"out={out}", "device=cpu", *teacher_args]) == 0
    data = load_file(str(out))
    assert data["tokens"].shape == (4, POSITIONS) and data["labels"].tolist() == [0, 0, 1, 1]
    tokens, labels = teacher_for(folder, data=str(out)).dataset()
    assert tokens.shape == (4, POSITIONS * SPLITS) and torch.equal(labels, data["labels"])
    assert main([f"images={tmp_path / 'nothing'}", f"out={out}"]) == 2
    assert main([f"images={tmp_path / 'imgs'}", f"out={out}", "colour=red"]) == 2


def test_generic_sampler_fields_that_maskbit_replaces_are_refused():
    from core.config import resolve
    from core.errors import UserError as Err
    with pytest.raises(Err, match="sampler.*cfg_scale.*guidance"):
        resolve(["teacher=maskbit", "sampler=maskbit", "sampler.cfg_scale=3"])
    assert resolve(["teacher=maskbit", "method=dimo", "sampler.guidance=4.0"])["sampler"]["guidance"] == 4.0
