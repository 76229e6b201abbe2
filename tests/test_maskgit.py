"""The maskgit teacher: official key layout, numerics, loading errors, VQGAN, samplers, evaluation, CLI.

Tiny configurations of the same architecture (the real sizes are checked on the meta device)."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from hypothesis import given, settings, strategies as st

from conftest import clean_env
from core.errors import UserError
from plugins.samplers import (ConfidenceSampler, HaltonSampler, RandomSampler, halton_order, masked_after,
                              progress)
from plugins.teachers.maskgit.teacher import MaskGitConfig, MaskGitTeacher
from plugins.teachers.maskgit.transformer import SIZES, MaskGitArch, MaskTransformer
from plugins.teachers.maskgit.vqgan import VQGAN, DDConfig, VQGANConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(dim=32, depth=2, heads=4, mlp_dim=64, dropout=0.1)
RES, SIDE, L, V, C = 64, 4, 16, 1024, 1000
# A tiny f16 VQGAN: 5 levels (16x downsampling) with 32 channels; attention where the grid is 4x4.
TINY_DD = dict(ch=32, ch_mult=[1, 1, 1, 1, 1], num_res_blocks=1, attn_resolutions=[4], resolution=64,
               in_channels=3, out_ch=3, z_channels=8, double_z=False, dropout=0.0)


# ---------------------------------------------------------------------------------------------------
# helpers: files in the official layouts, written independently of the plugin's modules
# ---------------------------------------------------------------------------------------------------

def official_shapes(dim=32, depth=2, mlp=64, seq=L, codes=V, classes=C) -> dict:
    """Key -> shape of MaskGIT-pytorch's MaskTransformer state dict (Network/transformer.py)."""
    n = codes + classes + 2
    shapes = {"tok_emb.weight": (n, dim), "pos_emb": (1, seq + 1, dim), "bias": (seq + 1, n)}
    for prefix, norms, linears in (("first_layer", (0, 4), (2, 6)), ("last_layer", (0, 4), (2,))):
        for i in norms:
            shapes.update({f"{prefix}.{i}.weight": (dim,), f"{prefix}.{i}.bias": (dim,)})
        for i in linears:
            shapes.update({f"{prefix}.{i}.weight": (dim, dim), f"{prefix}.{i}.bias": (dim,)})
    for layer in range(depth):
        p = f"transformer.layers.{layer}."
        shapes.update({p + "0.norm.weight": (dim,), p + "0.norm.bias": (dim,),
                       p + "0.fn.mha.in_proj_weight": (3 * dim, dim), p + "0.fn.mha.in_proj_bias": (3 * dim,),
                       p + "0.fn.mha.out_proj.weight": (dim, dim), p + "0.fn.mha.out_proj.bias": (dim,),
                       p + "1.norm.weight": (dim,), p + "1.norm.bias": (dim,),
                       p + "1.fn.net.0.weight": (mlp, dim), p + "1.fn.net.0.bias": (mlp,),
                       p + "1.fn.net.3.weight": (dim, mlp), p + "1.fn.net.3.bias": (dim,)})
    return shapes


def official_state(seed=0, **kw) -> dict:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in official_shapes(**kw).items():
        outer_norm = key.startswith(("first_layer", "last_layer")) and key.split(".")[1] in ("0", "4")
        layer_norm_weight = key.endswith("weight") and (outer_norm or key.endswith("norm.weight"))
        state[key] = torch.randn(shape, generator=g) * 0.2 + (1.0 if layer_norm_weight else 0.0)
    return state


def write_checkpoint(folder: Path, state: dict, resolution=RES, prefix="") -> Path:
    path = folder / "pretrained_maskgit" / "MaskGIT" / f"MaskGIT_ImageNet_{resolution}.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"iter": 1, "global_epoch": 1, "model_state_dict": {prefix + k: v for k, v in state.items()},
                "optimizer_state_dict": {"state": {}, "param_groups": []}}, path)
    return path


def write_vqgan(folder: Path, tmp_path: Path, seed=0) -> VQGAN:
    """A taming-style Lightning ``last.ckpt`` (callback state keyed by a Lightning class, loss.* keys)
    plus ``model.yaml``, in the hub layout."""
    torch.manual_seed(seed)
    model = VQGAN(VQGANConfig(embed_dim=8, n_embed=V, ddconfig=DDConfig(**TINY_DD))).eval()
    vq = folder / "pretrained_maskgit" / "VQGAN"
    vq.mkdir(parents=True, exist_ok=True)
    (vq / "model.yaml").write_text(yaml.safe_dump({"model": {
        "base_learning_rate": 4.5e-6, "target": "taming.models.vqgan.VQModel",
        "params": {"embed_dim": 8, "n_embed": V, "ddconfig": TINY_DD,
                   "lossconfig": {"target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator"}}}}))
    state = {**model.state_dict(), "loss.discriminator.main.0.weight": torch.zeros(2, 3, 4, 4)}
    fake = tmp_path / "fake_lightning"
    (fake / "pytorch_lightning" / "callbacks").mkdir(parents=True, exist_ok=True)
    (fake / "pytorch_lightning" / "__init__.py").write_text("")
    (fake / "pytorch_lightning" / "callbacks" / "__init__.py").write_text("")
    (fake / "pytorch_lightning" / "callbacks" / "model_checkpoint.py").write_text(
        "class ModelCheckpoint:\n    pass\n")
    sys.path.insert(0, str(fake))
    try:
        from pytorch_lightning.callbacks.model_checkpoint import ModelCheckpoint
        torch.save({"epoch": 3, "global_step": 10, "pytorch-lightning_version": "1.0.8", "state_dict": state,
                    "callbacks": {ModelCheckpoint: {"best_model_score": torch.tensor(0.5)}},
                    "optimizer_states": [], "lr_schedulers": []}, vq / "last.ckpt")
    finally:
        sys.path.remove(str(fake))
        for name in [m for m in sys.modules if m.startswith("pytorch_lightning")]:
            del sys.modules[name]
    return model


def teacher_for(folder, **kw) -> MaskGitTeacher:
    return MaskGitTeacher(MaskGitConfig(checkpoint=str(folder), resolution=RES, arch=MaskGitArch(**TINY), **kw))


@pytest.fixture
def folder(tmp_path):
    write_checkpoint(tmp_path / "mg", official_state())
    return tmp_path / "mg"


def reference_forward(sd: dict, tokens, cls_ids, heads=4, seq=L, codes=V):
    """MaskGIT-pytorch's forward in plain functional torch (eval mode), logits incl. the [M] column."""
    dim = sd["tok_emb.weight"].shape[1]
    ln = lambda x, p, eps: F.layer_norm(x, (dim,), sd[p + ".weight"], sd[p + ".bias"], eps)
    lin = lambda x, p: F.linear(x, sd[p + ".weight"], sd[p + ".bias"])
    x = sd["tok_emb.weight"][torch.cat([tokens, cls_ids[:, None]], 1)] + sd["pos_emb"]
    x = lin(ln(F.gelu(lin(ln(x, "first_layer.0", 1e-12), "first_layer.2")), "first_layer.4", 1e-12), "first_layer.6")
    b, n, _ = x.shape
    for layer in range(len({k.split(".")[2] for k in sd if k.startswith("transformer.")})):
        p = f"transformer.layers.{layer}."
        h = ln(x, p + "0.norm", 1e-5)
        q, k, v = F.linear(h, sd[p + "0.fn.mha.in_proj_weight"], sd[p + "0.fn.mha.in_proj_bias"]).chunk(3, -1)
        q, k, v = (t.view(b, n, heads, dim // heads).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-1, -2) / math.sqrt(dim // heads)).softmax(-1) @ v
        x = x + lin(att.transpose(1, 2).reshape(b, n, dim), p + "0.fn.mha.out_proj")
        x = x + lin(F.gelu(lin(ln(x, p + "1.norm", 1e-5), p + "1.fn.net.0")), p + "1.fn.net.3")
    x = ln(F.gelu(lin(ln(x, "last_layer.0", 1e-12), "last_layer.2")), "last_layer.4", 1e-12)
    return (x @ sd["tok_emb.weight"].t() + sd["bias"])[:, :seq, :codes + 1]


# ---------------------------------------------------------------------------------------------------
# transformer
# ---------------------------------------------------------------------------------------------------

def test_official_layout_loads_strictly_and_matches_the_reference_forward(folder):
    state = official_state()
    net = teacher_for(folder).build_network().eval()
    assert set(net.state_dict()) == set(state)
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]), key
    tokens = torch.randint(0, V + 1, (3, L), generator=torch.Generator().manual_seed(1))
    cond = torch.tensor([5, -1, 999])
    cls_ids = torch.tensor([V + 1 + 5, V + 1 + C, V + 1 + 999])
    with torch.no_grad():
        ours = net(tokens, cond)
        net.include_mask_logit = True
        full = net(tokens, cond)
        ref = reference_forward(state, tokens, cls_ids)
    assert ours.shape == (3, L, V) and full.shape == (3, L, V + 1)
    torch.testing.assert_close(full, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours, ref[..., :V])   # the [M] column is dropped, nothing else changes


def test_wrapper_prefixes_and_bare_state_dicts_load(tmp_path):
    state = official_state(seed=3)
    write_checkpoint(tmp_path / "ddp", state, prefix="module.")
    bare = tmp_path / "bare.pth"
    torch.save(state, bare)
    for spec in (tmp_path / "ddp", bare):
        net = teacher_for(spec).build_network()
        assert torch.equal(net.tok_emb.weight, state["tok_emb.weight"])


def test_real_sizes_and_512_variant():
    with torch.device("meta"):
        base = MaskTransformer(16, SIZES["base"])
        big512 = MaskTransformer(32, SIZES["base"])
    assert sum(p.numel() for p in base.parameters()) == 174_160_874   # README: 174.161M
    assert set(official_shapes(768, 24, 3072, 256)) == set(base.state_dict())
    for key, shape in official_shapes(768, 24, 3072, 1024).items():
        assert tuple(big512.state_dict()[key].shape) == shape, key
    assert SIZES["big"].depth == 32 and SIZES["huge"].depth == 48
    t = MaskGitTeacher(MaskGitConfig(resolution=512))
    assert (t.seq_len, t.vocab_size, t.mask_id, t.num_classes, t.image_shape) == (1024, 1024, 1024, 1000,
                                                                                  (3, 512, 512))


def test_outputs_are_deterministic_and_dropout_only_in_train_mode(folder):
    net = teacher_for(folder).build_network()
    tokens, cond = torch.randint(0, V, (2, L)), torch.tensor([1, 2])
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(tokens, cond), net(tokens, cond))
        net.train()
        torch.manual_seed(0)
        a = net(tokens, cond)
        torch.manual_seed(0)
        b = net(tokens, cond)
        assert torch.equal(a, b) and not torch.equal(a, net(tokens, cond))


def test_embedding_forward_equals_token_forward_and_noise_touches_image_tokens_only(folder):
    net = teacher_for(folder).build_network().eval()
    tokens, cond = torch.randint(0, V + 1, (2, L)), torch.tensor([3, -1])
    with torch.no_grad():
        emb = net.embed_tokens(tokens)
        torch.testing.assert_close(net(None, cond, inputs_embeds=emb), net(tokens, cond), atol=0, rtol=0)
        torch.manual_seed(7)
        from core.interfaces import InitSample
        noisy = net(None, cond, inputs_embeds=InitSample(tokens, noise_sigma=0.3).embed(net))
        torch.manual_seed(7)
        manual = 0.3 * torch.randn(2, L, TINY["dim"]) + math.sqrt(1 - 0.09) * emb
        torch.testing.assert_close(noisy, net(None, cond, inputs_embeds=manual))
        assert not torch.allclose(noisy, net(tokens, cond))
    # soft embeddings: Emb(softmax z) through code_embeddings is differentiable
    probs = torch.rand(2, L, V, requires_grad=True)
    net(None, cond, inputs_embeds=probs.softmax(-1) @ net.code_embeddings()).sum().backward()
    assert probs.grad is not None and probs.grad.abs().sum() > 0


def test_conditions_and_frozen_parameters(folder):
    teacher = teacher_for(folder)
    net = teacher.build_network().eval()
    cond = torch.tensor([0, 999, 5])
    assert torch.equal(net.class_token(cond), torch.tensor([1025, 2024, 1030]))
    null = teacher.null_condition(cond)
    assert torch.equal(net.class_token(null), torch.full((3,), 2025))
    assert torch.equal(net.class_token(torch.tensor([C])), torch.tensor([2025]))   # Halton's drop id
    assert torch.equal(teacher.input_class_token_ids()[[0, -1]], torch.tensor([1025, 2024]))
    frozen = {id(p) for p in net.frozen_parameters()}
    assert frozen == {id(net.tok_emb.weight), id(net.bias), id(net.pos_emb)}
    assert net.code_embeddings().shape == (V, TINY["dim"])


# ---------------------------------------------------------------------------------------------------
# loading errors
# ---------------------------------------------------------------------------------------------------

def test_corrupt_missing_and_mismatched_checkpoints_are_user_errors(tmp_path, folder):
    corrupt = write_checkpoint(tmp_path / "corrupt", official_state())
    corrupt.write_bytes(b"PK\x03\x04 not really a checkpoint" * 10)
    with pytest.raises(UserError, match="corrupt"):
        teacher_for(tmp_path / "corrupt").build_network()
    with pytest.raises(UserError, match="shape"):   # a checkpoint of another width
        MaskGitTeacher(MaskGitConfig(checkpoint=str(folder), resolution=RES,
                                     arch=MaskGitArch(**{**TINY, "mlp_dim": 48}))).build_network()
    with pytest.raises(UserError, match="missing keys"):   # deeper architecture than the file
        MaskGitTeacher(MaskGitConfig(checkpoint=str(folder), resolution=RES,
                                     arch=MaskGitArch(**{**TINY, "depth": 3}))).build_network()
    absent = {k: v for k, v in official_state().items() if k != "bias"}
    write_checkpoint(tmp_path / "absent", absent)
    with pytest.raises(UserError, match="missing keys.*bias"):
        teacher_for(tmp_path / "absent").build_network()
    with pytest.raises(UserError, match="MaskGIT_ImageNet_512.pth"):
        MaskGitTeacher(MaskGitConfig(checkpoint=str(folder), resolution=512)).build_network()
    torch.save({"iter": 1, "weights": [1, 2]}, tmp_path / "odd.pth")
    with pytest.raises(UserError, match="model_state_dict"):
        teacher_for(tmp_path / "odd.pth").build_network()
    with pytest.raises(ValueError, match="multiple of 16"):
        MaskGitConfig(resolution=100)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickled_code_is_refused(tmp_path):
    path = write_checkpoint(tmp_path / "evil", official_state())
    blob = torch.load(path, weights_only=True)
    blob["payload"] = Evil()
    torch.save(blob, path)
    with pytest.raises(UserError, match="refusing"):
        teacher_for(tmp_path / "evil").build_network()


def test_hub_id_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(UserError, match="not in the local hub cache"):
        MaskGitTeacher(MaskGitConfig(checkpoint="someone/not-cached")).build_network()


# ---------------------------------------------------------------------------------------------------
# VQGAN
# ---------------------------------------------------------------------------------------------------

def test_vqgan_real_size_has_taming_keys():
    with torch.device("meta"):
        model = VQGAN(VQGANConfig())
    keys = model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == 72_141_699   # README: 72.142M
    for key in ("encoder.conv_in.weight", "encoder.down.0.block.1.conv2.weight",
                "encoder.down.3.downsample.conv.weight", "encoder.down.2.block.0.nin_shortcut.weight",
                "encoder.down.4.attn.1.proj_out.bias", "encoder.mid.attn_1.q.weight", "encoder.norm_out.weight",
                "decoder.up.4.attn.2.k.weight", "decoder.up.1.upsample.conv.weight", "decoder.up.0.block.2.norm1.bias",
                "decoder.mid.block_2.conv1.weight", "quantize.embedding.weight", "quant_conv.weight",
                "post_quant_conv.bias"):
        assert key in keys, key
    assert tuple(keys["quantize.embedding.weight"].shape) == (1024, 256)
    assert "encoder.down.3.attn.0.q.weight" not in keys and "decoder.up.0.upsample.conv.weight" not in keys


def test_vqgan_lightning_checkpoint_round_trips_shapes(tmp_path, folder):
    reference = write_vqgan(folder, tmp_path)
    teacher = teacher_for(folder)
    vq = teacher.vqgan()
    for key, value in reference.state_dict().items():
        assert torch.equal(vq.state_dict()[key], value)
    images = torch.rand(2, 3, RES, RES)
    tokens = teacher.encode(images)
    assert tokens.shape == (2, L) and tokens.dtype == torch.long and 0 <= tokens.min() and tokens.max() < V
    decoded = teacher.decode(tokens)
    assert decoded.shape == (2, 3, RES, RES) and 0 <= decoded.min() and decoded.max() <= 1
    assert teacher.encode(decoded).shape == tokens.shape
    torch.testing.assert_close(teacher.decode_soft(F.one_hot(tokens, V).float()), decoded)
    with_mask = tokens.clone()
    with_mask[:, 0] = teacher.mask_id   # [M] decodes as the last code, like the official clamp
    with_last = tokens.clone()
    with_last[:, 0] = V - 1
    torch.testing.assert_close(teacher.decode(with_mask), teacher.decode(with_last))
    logits = torch.randn(2, L, V, requires_grad=True)
    teacher.decode_soft(logits.softmax(-1)).mean().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_vqgan_nearest_code_is_its_own_encoding(tmp_path, folder):
    write_vqgan(folder, tmp_path)
    vq = teacher_for(folder).vqgan()
    codes = torch.randint(0, V, (2, 3, 3))
    z = vq.quantize.embedding(codes).permute(0, 3, 1, 2)
    assert torch.equal(vq.quantize.nearest(z), codes)


def test_vqgan_errors(tmp_path, folder):
    write_vqgan(folder, tmp_path)
    vq_dir = folder / "pretrained_maskgit" / "VQGAN"
    (vq_dir / "model.yaml").write_text("model:\n  params:\n    embed_dim: 8\n")
    with pytest.raises(UserError, match="ddconfig"):
        teacher_for(folder).vqgan()
    write_vqgan(folder, tmp_path)
    with pytest.raises(UserError, match="codebook_size"):
        teacher_for(folder, codebook_size=512).vqgan()
    (vq_dir / "last.ckpt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="corrupt"):
        teacher_for(folder).vqgan()
    (vq_dir / "last.ckpt").unlink()
    with pytest.raises(UserError, match="last.ckpt"):
        teacher_for(folder).vqgan()


# ---------------------------------------------------------------------------------------------------
# samplers
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler_cls,extra", [(RandomSampler, {}), (ConfidenceSampler, {}),
                                               (HaltonSampler, {"randomize": True}),
                                               (RandomSampler, {"step_counts": "proportional"}),
                                               (ConfidenceSampler, {"step_counts": "halton", "temperature_end": 0.5})])
@pytest.mark.parametrize("steps", [1, 3, 8])
def test_sampling_at_k_steps_fills_every_mask(folder, sampler_cls, extra, steps):
    teacher = teacher_for(folder)
    net = teacher.build_network().eval()
    sampler = sampler_cls(sampler_cls.Config(cfg_scale=3.0, cfg_schedule="linear", **extra))
    calls = []
    net.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    x = sampler.sample(net, teacher, torch.tensor([1, 2, 3]), steps, torch.Generator().manual_seed(0))
    assert x.shape == (3, L) and (x != teacher.mask_id).all() and x.max() < V and x.min() >= 0
    assert 1 <= len(calls) <= steps
    if steps > 1:
        assert calls[0] == 3 and calls[-1] == 6   # linear ramp: no guidance at the first step, CFG at the last


def test_sampler_schedules_follow_the_official_formulas():
    # MaskGIT-pytorch adap_sche: per-step counts round(a_s / sum(a) N), a = arccos(linspace(1, 0, S)) / (pi/2)
    for steps, n in ((8, 256), (12, 256), (15, 1024), (16, 256)):
        a = torch.arccos(torch.linspace(1, 0, steps)) / (math.pi / 2)
        sche = (a / a.sum() * n).round()
        sche[sche == 0] = 1
        sche[-1] += n - sche.sum()
        expected = (n - sche.cumsum(0)).clamp(min=0).long().tolist()
        from plugins.schedules import Arccos
        assert masked_after(steps, n, Arccos(Arccos.Config()).gamma, "proportional") == expected
    # Halton-MaskGIT: r = max(i + 1, int((1 - arccos((i+1)/S)/(pi/2)) N)) revealed after step i
    from plugins.schedules import Arccos
    got = masked_after(32, 256, Arccos(Arccos.Config()).gamma, "halton")
    want = [256 - max(i + 1, int((1 - math.acos((i + 1) / 32) / (math.pi / 2)) * 256)) for i in range(32)]
    assert got == want
    # ramps of the official sampler: s / (S - 1)
    s = ConfidenceSampler(ConfidenceSampler.Config(cfg_scale=4.0, cfg_schedule="linear"))
    assert s.cfg_at(0, 8) == 1.0 and s.cfg_at(7, 8) == 4.0 and abs(s.cfg_at(3, 8) - (1 + 3 * 3 / 7)) < 1e-12
    h = HaltonSampler(HaltonSampler.Config(temperature=1.0, temperature_end=1 / 1.2))
    assert h.inverse_temperature_at(0, 5) == 1.0 and abs(h.inverse_temperature_at(4, 5) - 1.2) < 1e-12
    assert progress(0, 1) == 1.0


def test_halton_order_is_the_2d_halton_sequence():
    order = halton_order(256)
    assert sorted(order) == list(range(256))
    assert order[:3] == [8 * 16 + 5, 4 * 16 + 10, 12 * 16 + 1]   # (1/2, 1/3), (1/4, 2/3), (3/4, 1/9) x 16


def test_categorical_draws_follow_the_probabilities():
    from plugins.samplers import categorical
    probs = torch.tensor([[0.0, 0.2, 0.0, 0.8], [0.5, 0.0, 0.5, 0.0]]).repeat(20000, 1)
    draws = categorical(probs, torch.Generator().manual_seed(0)).view(-1, 2)
    freq = torch.stack([torch.bincount(draws[:, i], minlength=4) / len(draws) for i in range(2)])
    torch.testing.assert_close(freq, probs[:2], atol=0.01, rtol=0)
    assert freq[0, 0] == 0 and freq[0, 2] == 0 and freq[1, 1] == 0 and freq[1, 3] == 0


def test_confidence_without_noise_reveals_the_most_likely_first():
    s = ConfidenceSampler(ConfidenceSampler.Config(gumbel_temperature=0.0))
    p = torch.tensor([[0.1, 0.9, 0.5, 0.3]])
    masked = torch.ones(1, 4, dtype=torch.bool)
    assert s.order_scores(p, masked, 0, 4, None).argsort(descending=True).tolist() == [[1, 2, 3, 0]]


@settings(max_examples=60, deadline=None)
@given(steps=st.integers(1, 40), length=st.integers(1, 300),
       counts=st.sampled_from(["cumulative", "proportional", "halton"]),
       schedule=st.sampled_from(["arccos", "cosine", "linear", "square"]))
def test_masked_after_is_a_valid_plan(steps, length, counts, schedule):
    from registry.registry import build
    plan = masked_after(steps, length, build("schedule", schedule).gamma, counts)
    assert len(plan) == steps and plan[-1] == 0 and all(0 <= m <= length for m in plan)
    assert all(a >= b for a, b in zip(plan, plan[1:]))
    if counts != "proportional" and steps <= length:   # every step reveals something
        assert all(a > b for a, b in zip([length] + plan, plan))


# ---------------------------------------------------------------------------------------------------
# Halton-MaskGIT (second generation): DiT-style transformer, LlamaGen VQ
# ---------------------------------------------------------------------------------------------------

H_TINY = dict(dim=48, depth=2, heads=5, mlp_ratio=4.0, dropout=0.1, registers=1)   # head_dim 9: inner 45
H_V, H_C = 64, 10
H_VQ = dict(codebook_size=H_V, embed_dim=8, ch=32, ch_mult=[1, 1, 1, 1, 1], num_res_blocks=1, z_channels=8)


def halton_shapes(dim=48, depth=2, heads=5, codes=H_V, classes=H_C, seq=L) -> dict:
    """Key -> shape of Halton-MaskGIT's Transformer (Network/transformer.py, register=1, proj=1)."""
    inner, hidden = heads * (dim // heads), 256 * math.ceil(int(2 * 4 * dim / 3) / 256)
    shapes = {"cls_emb.weight": (classes + 1, dim), "tok_emb.weight": (codes + 1, dim), "pos_emb.weight": (seq, dim),
              "reg_tokens.weight": (1, dim), "head.weight": (codes + 1, dim), "head.bias": (codes + 1,),
              "last_norm.norm_final.weight": (dim,), "last_norm.norm_final.bias": (dim,),
              "last_norm.mlp.1.weight": (2 * dim, dim), "last_norm.mlp.1.bias": (2 * dim,)}
    for i in range(depth):
        p = f"transformer.layers.{i}."
        shapes.update({p + "mlp.1.weight": (6 * dim, dim), p + "mlp.1.bias": (6 * dim,), p + "ln1.weight": (dim,),
                       p + "ln2.weight": (dim,), p + "attn.wq.weight": (inner, dim), p + "attn.wk.weight": (inner, dim),
                       p + "attn.wv.weight": (inner, dim), p + "attn.wo.weight": (dim, inner),
                       p + "ff.w1.weight": (hidden, dim), p + "ff.w3.weight": (hidden, dim),
                       p + "ff.w2.weight": (dim, hidden)})
    return shapes


def halton_teacher(folder, **kw):
    from plugins.teachers.maskgit.halton import HaltonArch, LlamaGenVQConfig
    from plugins.teachers.maskgit.teacher import HaltonConfig, HaltonTeacher
    fields = dict(checkpoint=str(folder), resolution=RES, arch=HaltonArch(**H_TINY), codebook_size=H_V,
                  num_classes=H_C, vqgan=str(folder), vq=LlamaGenVQConfig(**H_VQ))
    return HaltonTeacher(HaltonConfig(**{**fields, **kw}))


@pytest.fixture
def halton_folder(tmp_path):
    import argparse
    from plugins.teachers.maskgit.halton import LlamaGenVQ, LlamaGenVQConfig
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=g) * 0.2 for k, shape in halton_shapes().items()}
    state["head.weight"] = state["tok_emb.weight"]   # tied in the official model, saved under both names
    folder = tmp_path / "halton"
    folder.mkdir()
    torch.save({"iter": 5, "global_epoch": 1, "model_state_dict": {"_orig_mod." + k: v for k, v in state.items()}},
               folder / f"ImageNet_{RES}_base.pth")
    torch.manual_seed(0)
    vq = LlamaGenVQ(LlamaGenVQConfig(**H_VQ))
    torch.save({"model": vq.state_dict(), "args": argparse.Namespace(vq_model="VQ-16")}, folder / "vq_ds16_c2i.pt")
    return folder, state


def test_halton_loads_the_official_layout_and_keeps_the_protocol(halton_folder):
    folder, state = halton_folder
    teacher = halton_teacher(folder)
    net = teacher.build_network().eval()
    assert set(net.state_dict()) == set(state) - {"head.weight"}   # the tied duplicate is folded
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]), key
    tokens, cond = torch.randint(0, H_V + 1, (2, L)), torch.tensor([3, -1])
    with torch.no_grad():
        logits = net(tokens, cond)
        assert logits.shape == (2, L, H_V)
        torch.testing.assert_close(net(None, cond, inputs_embeds=net.embed_tokens(tokens)), logits, atol=0, rtol=0)
        torch.testing.assert_close(net(tokens, torch.tensor([3, H_C])), logits)   # null class = C (official drop)
        assert not torch.allclose(net(tokens, torch.tensor([3, 4])), logits)
        net.include_mask_logit = True
        assert net(tokens, cond).shape == (2, L, H_V + 1)
    assert {id(p) for p in net.frozen_parameters()} == {id(net.tok_emb.weight), id(net.head.bias),
                                                       id(net.pos_emb.weight)}
    with pytest.raises(NotImplementedError):   # no class tokens in its input vocabulary
        teacher.input_class_token_ids()
    net.include_mask_logit = False
    untied = dict(state, **{"head.weight": state["tok_emb.weight"] + 1})
    torch.save({"model_state_dict": untied}, folder / "untied.pth")
    with pytest.raises(UserError, match="tied"):
        halton_teacher(folder, transformer_file="untied.pth").build_network()
    teacher.save_pretrained(net, folder / "again.pth")   # official layout, head.weight included
    again = halton_teacher(folder, transformer_file="again.pth").build_network().eval()
    with torch.no_grad():
        torch.testing.assert_close(again(tokens, cond), logits)


def test_halton_real_sizes():
    from plugins.teachers.maskgit.halton import HALTON_SIZES, HaltonTransformer, LlamaGenVQ, LlamaGenVQConfig
    counts = {"tiny": 23_031_425, "small": 69_344_769, "base": 142_224_641, "large": 479_656_961}   # README
    with torch.device("meta"):
        for size, n in counts.items():
            net = HaltonTransformer(16, HALTON_SIZES[size])
            assert sum(p.numel() for p in net.parameters()) == n, size
        small = HaltonTransformer(24, HALTON_SIZES["small"]).state_dict()
        vq = LlamaGenVQ(LlamaGenVQConfig())
    assert tuple(small["transformer.layers.0.attn.wq.weight"].shape) == (510, 512)   # head_dim 85 x 6 heads
    assert tuple(small["pos_emb.weight"].shape) == (576, 512)                         # 384 px: 24 x 24 tokens
    assert set(halton_shapes(512, 12, 6, 16384, 1000, 576)) == set(small) | {"head.weight"}
    assert sum(p.numel() for p in vq.parameters()) == 71_883_403
    assert "decoder.conv_blocks.0.attn.2.q.weight" in vq.state_dict()   # attention at the lowest resolution
    assert "encoder.conv_blocks.4.attn.1.proj_out.weight" in vq.state_dict()


def test_halton_vq_round_trip_and_sampling(halton_folder):
    folder, _ = halton_folder
    teacher = halton_teacher(folder)
    tokens = teacher.encode(torch.rand(2, 3, RES, RES))
    assert tokens.shape == (2, L) and tokens.max() < H_V
    images = teacher.decode(tokens)
    assert images.shape == (2, 3, RES, RES) and 0 <= images.min() and images.max() <= 1
    torch.testing.assert_close(teacher.decode_soft(F.one_hot(tokens, H_V).float()), images)
    book = teacher.vqgan().codebook
    torch.testing.assert_close(book.norm(dim=-1), torch.ones(H_V))   # l2-normalised codes
    net = teacher.build_network().eval()
    sampler = HaltonSampler(HaltonSampler.Config(cfg_scale=3.0, randomize=True, temperature_end=1 / 1.2))
    x = sampler.sample(net, teacher, torch.tensor([0, 9]), 4, torch.Generator().manual_seed(0))
    assert (x != teacher.mask_id).all() and x.max() < H_V
    with pytest.raises(UserError, match="vq.codebook_size"):
        halton_teacher(folder, codebook_size=32).vqgan()


# ---------------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """A random-weights file in torch-fidelity's Inception layout (the real one needs a download)."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe
    orig = fe.FeatureExtractorInceptionV3.load_state_dict
    fe.FeatureExtractorInceptionV3.load_state_dict = lambda self, sd, *a, **k: None
    real_url = fe.load_state_dict_from_url
    fe.load_state_dict_from_url = lambda *a, **k: {}
    try:
        torch.manual_seed(0)
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    finally:
        fe.FeatureExtractorInceptionV3.load_state_dict = orig
        fe.load_state_dict_from_url = real_url
    path = tmp_path_factory.mktemp("inception") / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(net.state_dict(), path)
    return path


def test_inception_weights_offline_error(tmp_path, monkeypatch):
    from plugins.teachers.maskgit.evaluation import inception_weights
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("DIMO_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(UserError, match="weights-inception-2015-12-05-6726825d.pth"):
        inception_weights()
    with pytest.raises(UserError, match="does not exist"):
        inception_weights(str(tmp_path / "nope.pth"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert inception_weights() == cached


def test_running_stats_frechet_and_reference_files(tmp_path):
    from plugins.teachers.maskgit.evaluation import RunningStats, frechet_distance, load_reference_stats
    feats = torch.randn(300, 6, dtype=torch.float64) @ torch.randn(6, 6, dtype=torch.float64)
    stats = RunningStats()
    for chunk in feats.split(70):
        stats.update(chunk)
    mu, sigma = stats.result()
    np.testing.assert_allclose(mu, feats.mean(0).numpy(), atol=1e-10)
    np.testing.assert_allclose(sigma, np.cov(feats.numpy(), rowvar=False), atol=1e-9)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6
    shifted = frechet_distance(mu + 1.0, sigma, mu, sigma)
    assert abs(shifted - 6.0) < 1e-6   # |mu1 - mu2|^2 with equal covariances
    np.savez(tmp_path / "bad.npz", mean=mu)
    with pytest.raises(UserError, match="'mu' and 'sigma'"):
        load_reference_stats(str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "small.npz", mu=mu, sigma=sigma)
    with pytest.raises(UserError, match="2048"):
        load_reference_stats(str(tmp_path / "small.npz"))
    with pytest.raises(UserError, match="not a readable"):
        load_reference_stats(str(tmp_path / "missing.npz"))


def test_inception_features_and_pickled_weights_refused(inception_file, tmp_path):
    from plugins.teachers.maskgit.evaluation import InceptionFeatures
    ext = InceptionFeatures(str(inception_file))
    pool, logits = ext(torch.rand(3, 3, 32, 32))
    assert pool.shape == (3, 2048) and logits.shape == (3, 1008) and pool.dtype == torch.float64
    evil = tmp_path / "evil.pth"
    torch.save({"w": Evil()}, evil)
    with pytest.raises(UserError, match="corrupt or not a plain state dict"):
        InceptionFeatures(str(evil))


def test_score_images_streams_fid_and_is():
    from plugins.teachers.maskgit.evaluation import score_images
    proj = torch.randn(3 * 8 * 8, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fake_extractor = lambda x: ((x.flatten(1).double() @ proj), x.flatten(1)[:, :10].double() * 5)
    images = torch.rand(40, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    out = score_images(images.split(7), fake_extractor)
    assert out["n"] == 40 and out["mu"].shape == (16,) and 1 < out["is"] < 10
    again = score_images(images.split(13), fake_extractor, reference=(out["mu"], out["sigma"]))
    scale = np.trace(out["sigma"])   # rank-deficient covariances: compare with the overall scale
    assert abs(again["fid"]) < 1e-5 * scale
    moved = score_images((images * 0.5).split(13), fake_extractor, reference=(out["mu"], out["sigma"]))
    assert moved["fid"] > 0.1 * scale


def evaluation_cli(inception_file, tmp_path, folder, with_reference: bool) -> dict:
    import json
    from PIL import Image
    from plugins.teachers.maskgit.evaluation import main
    write_vqgan(folder, tmp_path)
    write_checkpoint(folder, official_state(classes=2))   # a 2-class teacher keeps sampling short
    real = tmp_path / "real"
    real.mkdir()
    for i in range(4):
        pixels = (np.random.default_rng(i).random((RES, RES, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(real / f"{i}.png")
    stats = tmp_path / "ref.npz"
    if with_reference:
        assert main(["stats", f"images={real}", f"out={stats}", f"inception_weights={inception_file}",
                     "device=cpu"]) == 0
    out = tmp_path / "fid.json"
    args = ["fid", "model=teacher", "steps=2", "samples_per_class=2", "batch_size=4", "device=cpu", f"out={out}",
            f"inception_weights={inception_file}", f"teacher.checkpoint={folder}", f"teacher.resolution={RES}",
            "teacher.num_classes=2", "sampler.cfg_scale=2"] + [f"teacher.arch.{k}={v}" for k, v in TINY.items()]
    assert main(args + ([f"reference={stats}"] if with_reference else [])) == 0
    return json.loads(out.read_text())


def test_evaluation_cli_streams_the_teacher_through_inception(inception_file, tmp_path, folder):
    from plugins.teachers.maskgit.evaluation import main
    result = evaluation_cli(inception_file, tmp_path, folder, with_reference=False)
    assert result["n"] == 4 and result["model"] == "teacher@2" and result["is"] > 0 and "fid" not in result
    assert result["config"]["teacher"]["num_classes"] == 2 and result["config"]["sampler"]["cfg_scale"] == 2
    assert main(["fid", "model=student"]) == 2                  # needs a run folder: a clear error, exit 2
    assert main(["fid", "model=teacher", "steps=zero"]) == 2    # a named, clear error
    assert main(["fid", f"reference={tmp_path / 'none.npz'}"]) == 2


@pytest.mark.slow   # a 2048-dimensional Frechet distance takes half a minute on a busy 2-core machine
def test_evaluation_cli_fid_against_reference_statistics(inception_file, tmp_path, folder):
    result = evaluation_cli(inception_file, tmp_path, folder, with_reference=True)
    assert result["n"] == 4 and math.isfinite(result["fid"]) and result["fid"] > 0


# ---------------------------------------------------------------------------------------------------
# the command line: method=dimo teacher=maskgit on a folder made here
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["maskgit", "halton_maskgit"])
def test_core_run_dimo_on_a_maskgit_folder(tmp_path, folder, halton_folder, name):
    run = tmp_path / "run"
    env = clean_env({"DIMO_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"})
    args = [sys.executable, "-m", "core.run", "method=dimo", f"teacher={name}", f"teacher.resolution={RES}",
            "trainer.steps=2", "trainer.batch_size=2", "trainer.device=cpu", "trainer.wandb=disabled",
            "trainer.progress=false", f"trainer.output_dir={run}", "eval.enabled=false"]
    if name == "maskgit":
        args += [f"teacher.checkpoint={folder}"] + [f"teacher.arch.{k}={v}" for k, v in TINY.items()]
    else:
        args += [f"teacher.checkpoint={halton_folder[0]}", f"teacher.codebook_size={H_V}",
                 f"teacher.num_classes={H_C}"] + [f"teacher.arch.{k}={v}" for k, v in H_TINY.items()]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "student.safetensors").is_file()
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    if name == "maskgit":   # the teacher's Di[M]O recipe applies below the command line
        assert resolved["method"]["token_norm"] == "sum" and resolved["method"]["lr_generator"] == 1e-5
        assert resolved["sampler"]["step_counts"] == "proportional"
    else:
        assert resolved["sampler"]["name"] == "halton" and resolved["sampler"]["randomize"] is True
    from core.export import load_student
    method, teacher, student, _ = load_student(str(run))
    tokens = method.generate(student, torch.tensor([0, 7]), torch.Generator().manual_seed(0))
    assert tokens.shape == (2, L) and tokens.max() < teacher.vocab_size
    bad = subprocess.run(args[:5] + ["teacher.resolution=100"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "teacher.resolution" in bad.stderr
