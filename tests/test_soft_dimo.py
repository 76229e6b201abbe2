"""Soft-Di[M]O: soft embeddings, gradient routing (generator <- GAN + reward; discriminator isolated), the
discriminator and reward plugins on tiny random models (no downloads), TTEO and best-of-N, and the CLIP reward
path end to end with a tiny text-conditioned teacher."""
import gzip
import json
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import UserError
from core.interfaces import PluginConfig, StepContext, Teacher
from plugins.discriminators import LightDiscriminator, TrunkDiscriminator
from plugins.divergences import ForwardKL
from plugins.inits import MixedInit
from plugins.methods.soft_dimo import SoftDiMO, load_generator_weights, mask_embeddings, soft_embed
from plugins.rewards import ClassifierReward, HFClipReward, HPSReward, PickScoreReward, clip_pixels, total_reward
from plugins.schedules import Arccos
from plugins.search import TTEO, BestOfN
from plugins.teachers.digits import DigitsTeacher
from plugins.teachers.evaluator import MLPClassifier
from plugins.teachers.transformer import MaskedTransformer, TransformerSpec

SPEC = TransformerSpec(dim=32, depth=1, heads=2, dropout=0.0)


# ---------------------------------------------------------------------------------------------------
# helpers: a soft_dimo method on a random tiny digits network, and a step context without DeepSpeed
# ---------------------------------------------------------------------------------------------------

class Ctx(StepContext):
    """``update`` records which roles' parameters hold gradients at each call, then steps SGD and clears."""

    def __init__(self, models, batch=None, step=0):
        super().__init__(step=step, models=models, update=self._update, batch=batch)
        self.calls = []

    def _update(self, role, loss):
        for m in self.models.values():
            m.zero_grad(set_to_none=True)
        loss.backward()
        with_grad = {r for r, m in self.models.items() if any(p.grad is not None and p.grad.abs().sum() > 0
                                                               for p in m.parameters())}
        self.calls.append((role, with_grad))
        with torch.no_grad():
            for p in self.models[role].parameters():
                if p.grad is not None:
                    p -= 1e-3 * p.grad
        for m in self.models.values():
            m.zero_grad(set_to_none=True)


def digits_method(w_gan=1.0, rewards=(), discriminator="trunk", **overrides):
    torch.manual_seed(0)
    teacher = DigitsTeacher(DigitsTeacher.Config(arch=SPEC))
    disc = {"trunk": TrunkDiscriminator(TrunkDiscriminator.Config(width=16)),
            "light": LightDiscriminator(LightDiscriminator.Config(width=16, heads=2, depth=1))}[discriminator]
    m = SoftDiMO(SoftDiMO.Config(w_gan=w_gan, rewards=list(rewards), ema_decay=None, **overrides))
    m.attach(teacher, {"divergence": ForwardKL(ForwardKL.Config()), "init": MixedInit(MixedInit.Config()),
                       "schedule": Arccos(Arccos.Config()), "discriminator": disc})
    net = teacher.build_network(load_weights=False).eval().requires_grad_(False)
    return m, teacher, net


def random_classifier(method):
    for _, r in method.rewards:
        if isinstance(r, ClassifierReward):
            r.net = MLPClassifier(64, 10).eval().requires_grad_(False)   # no 300-epoch training in unit tests


def setup_roles(method, net, batch=6):
    from core.interfaces import SetupContext
    ctx = SetupContext(teacher=method.teacher, plugins=method.plugins, device=torch.device("cpu"), world_size=1,
                       rank=0, micro_batch=batch, teacher_network=net)
    roles = method.setup(ctx)
    models = {k: r.module for k, r in roles.items()}
    return roles, models


def real_batch(teacher, n=6):
    tokens, labels = teacher.dataset()
    return tokens[:n], labels[:n]


# ---------------------------------------------------------------------------------------------------
# soft embeddings
# ---------------------------------------------------------------------------------------------------

def test_soft_embedding_is_the_expected_row_and_tends_to_the_hard_embedding():
    table = torch.randn(7, 5)
    logits = torch.randn(2, 3, 7)
    emb = soft_embed(logits, table)
    assert torch.allclose(emb, torch.einsum("blv,vd->bld", logits.softmax(-1), table), atol=1e-6)
    tokens = torch.randint(0, 7, (2, 3))
    sharp = soft_embed(F.one_hot(tokens, 7).float() * 50, table)
    assert torch.allclose(sharp, table[tokens], atol=1e-5)            # one-hot logits -> E[x]


def test_soft_embeddings_and_soft_decode_carry_gradients_to_the_generator():
    m, teacher, net = digits_method(w_gan=0.0)
    gen = MaskedTransformer(64, 17, 10, SPEC)
    z = gen(torch.randint(0, 18, (4, 64)), torch.arange(4))
    emb = soft_embed(z, net.code_embeddings())
    image = teacher.decode_soft(z.softmax(-1))
    for out in (emb.square().sum(), image.sum()):
        grads = torch.autograd.grad(out, [p for p in gen.blocks.parameters()], retain_graph=True)
        assert sum(g.abs().sum() for g in grads) > 0


def test_masking_puts_the_mask_embedding_at_the_ratio():
    emb, mask_emb = torch.randn(4, 64, 8), torch.full((8,), 7.0)
    out = mask_embeddings(emb, torch.tensor([0.0, 0.25, 0.5, 0.95]), mask_emb)
    masked = (out == 7.0).all(-1).sum(1)
    assert masked.tolist() == [0, 16, 32, 61]
    keep = ~(out == 7.0).all(-1)
    assert torch.equal(out[keep], emb[keep])


# ---------------------------------------------------------------------------------------------------
# gradient routing in one training step
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("discriminator", ["trunk", "light"])
def test_step_order_and_gradient_isolation(discriminator):
    m, teacher, net = digits_method(rewards=[{"name": "classifier", "weight": 0.5}], discriminator=discriminator)
    random_classifier(m)
    roles, models = setup_roles(m, net)
    assert set(roles) == {"generator", "aux", "teacher", "discriminator"}
    assert roles["discriminator"].lr == m.config.lr_disc and roles["discriminator"].trainable
    ctx = Ctx(models, batch=real_batch(teacher))
    logs = m.train_step(ctx)
    # one generator update (L_DiMO + w_GAN L_GAN + w_reward L_reward), then aux, then the discriminator
    assert [role for role, _ in ctx.calls] == ["generator", "aux", "discriminator"]
    graded = dict(ctx.calls)
    assert graded["generator"] == {"generator"}          # D, aux, teacher get nothing through the generator step
    assert graded["aux"] == {"aux"}
    assert graded["discriminator"] == {"discriminator"}  # the generator gets nothing through the D step
    assert all(p.requires_grad for p in models["discriminator"].parameters())   # restored after the G step
    for key in ("gan_g", "reward", "disc_loss", "d_real", "d_fake", "aux_loss", "divergence"):
        assert torch.isfinite(torch.tensor(logs[key])), key


def test_gan_and_reward_terms_each_reach_the_generator():
    """With the Di[M]O term zeroed out, each extra loss alone moves the generator's trainable weights."""
    m, teacher, net = digits_method(rewards=[{"name": "classifier"}])
    random_classifier(m)
    roles, models = setup_roles(m, net)
    gen = models["generator"]
    z, cond = m.one_step_logits(gen, 6, torch.device("cpu"))
    ctx = Ctx(models, batch=real_batch(teacher))
    trainable = [p for p in gen.parameters() if p.requires_grad]
    for loss in (m.gan_loss(ctx, z, cond), -m.reward(z, cond).mean()):
        grads = torch.autograd.grad(loss, trainable, retain_graph=True, allow_unused=True)
        assert sum(g.abs().sum() for g in grads if g is not None) > 0
    frozen = [p for p in models["discriminator"].parameters()]
    assert all(p.grad is None for p in frozen)


def test_discriminator_learns_to_separate_real_from_generated():
    m, teacher, net = digits_method(discriminator="light", lr_disc=3e-3)
    roles, models = setup_roles(m, net, batch=32)
    disc = models["discriminator"]
    opt = torch.optim.Adam(disc.parameters(), lr=3e-3, betas=(0.0, 0.99))
    tokens, labels = teacher.dataset()

    def update(role, loss):
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        z, cond = m.one_step_logits(models["generator"], 32, torch.device("cpu"))
    losses = []
    for step in range(40):
        idx = torch.randint(0, len(tokens), (32,))
        ctx = StepContext(step=step, models=models, update=update, batch=(tokens[idx], labels[idx]))
        losses.append(m.disc_step(ctx, z, cond)["disc_loss"])
    assert sum(losses[-5:]) / 5 < 0.5 * 2 * F.softplus(torch.tensor(0.0)).item()   # well below chance (2 log 2)


def test_trunk_discriminator_is_a_trainable_copy_conditioned_on_r():
    teacher = DigitsTeacher(DigitsTeacher.Config(arch=SPEC))
    net = teacher.build_network(load_weights=False).eval().requires_grad_(False)
    head = TrunkDiscriminator(TrunkDiscriminator.Config(width=16)).build(teacher, net)
    assert head.trunk is not net and all(p.requires_grad for p in head.trunk.parameters())
    for p in head.time_in.parameters():   # time embedding starts as a no-op on the trunk input ...
        nn.init.normal_(p)                # ... but r conditions the logit
    emb = net.code_embeddings()[torch.randint(0, 17, (3, 64))]
    a = head(emb, torch.zeros(3), torch.arange(3))
    b = head(emb, torch.full((3,), 0.9), torch.arange(3))
    assert a.shape == (3,) and not torch.allclose(a, b)
    frozen = TrunkDiscriminator(TrunkDiscriminator.Config(train="head")).build(teacher, net)
    assert not any(p.requires_grad for p in frozen.trunk.parameters())


# ---------------------------------------------------------------------------------------------------
# config, init_from
# ---------------------------------------------------------------------------------------------------

def test_reward_lists_are_validated():
    from core.config import resolve
    with pytest.raises(UserError, match="not a reward; valid: classifier, clip"):
        resolve(["method=soft_dimo", "method.rewards=[{name: nope}]"])
    with pytest.raises(UserError, match="rewards\\[0\\].colour: unknown field"):
        resolve(["method=soft_dimo", "method.rewards=[{name: classifier, colour: 1}]"])
    cfg = resolve(["method=soft_dimo", "method.rewards=[{name: classifier, weight: 0.3, form: log_odds}]"])
    assert cfg["method"]["rewards"] == [{"name": "classifier", "weight": 0.3, "form": "log_odds"}]
    assert cfg["discriminator"]["name"] == "trunk"
    assert resolve(["method=soft_dimo", "discriminator=light"])["discriminator"]["name"] == "light"


def test_rewards_combine_with_their_weights():
    class Const:
        def __init__(self, v):
            self.v = v

        def __call__(self, images, cond, teacher):
            return torch.full((images.shape[0],), self.v)
    total = total_reward([(0.5, Const(2.0)), (2.0, Const(-1.0))], torch.zeros(3, 1, 8, 8), None, None)
    assert torch.allclose(total, torch.full((3,), -1.0))


def test_init_from_loads_a_distilled_generator_and_rejects_other_shapes(tmp_path):
    from safetensors.torch import save_file
    m, teacher, net = digits_method(w_gan=0.0)
    student = MaskedTransformer(64, 17, 10, SPEC)
    save_file(student.state_dict(), str(tmp_path / "student.safetensors"))
    m.config.init_from = str(tmp_path)
    roles, _ = setup_roles(m, net)
    assert torch.equal(roles["generator"].module.blocks.layers[0].linear1.weight, student.blocks.layers[0].linear1.weight)
    assert not torch.equal(roles["aux"].module.blocks.layers[0].linear1.weight,     # aux <- teacher (Algorithm 1)
                           student.blocks.layers[0].linear1.weight)
    wide = MaskedTransformer(64, 17, 10, TransformerSpec(dim=16, depth=1, heads=2))
    save_file(wide.state_dict(), str(tmp_path / "wide.safetensors"))
    with pytest.raises(UserError, match="does not fit"):
        load_generator_weights(MaskedTransformer(64, 17, 10, SPEC), str(tmp_path / "wide.safetensors"))
    with pytest.raises(UserError, match="init_from"):
        load_generator_weights(net, str(tmp_path / "missing"))


# ---------------------------------------------------------------------------------------------------
# rewards on tiny random models (no downloads)
# ---------------------------------------------------------------------------------------------------

def test_classifier_reward_is_the_class_log_likelihood_and_differentiable():
    teacher = DigitsTeacher(DigitsTeacher.Config(arch=SPEC))
    r = ClassifierReward(ClassifierReward.Config())
    r.net = MLPClassifier(64, 10).eval().requires_grad_(False)
    images = torch.rand(5, 1, 8, 8, requires_grad=True)
    cond = torch.tensor([0, 3, 9, 3, 1])
    score = r(images, cond, teacher)
    assert torch.allclose(score, F.log_softmax(r.net(images), -1)[torch.arange(5), cond])
    (grad,) = torch.autograd.grad(score.sum(), images)
    assert grad.abs().sum() > 0 and all(p.grad is None for p in r.net.parameters())
    odds = ClassifierReward(ClassifierReward.Config(form="log_odds"))
    odds.net = r.net
    p = score.exp()
    assert torch.allclose(odds(images, cond, teacher), (p / (1 - p)).log(), atol=1e-5)


def test_clip_preprocessing_matches_resize_and_normalise():
    x = torch.rand(2, 1, 8, 8)
    out = clip_pixels(x, 32)
    ref = F.interpolate(x.expand(-1, 3, -1, -1), size=(32, 32), mode="bicubic", align_corners=False).clamp(0, 1)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    assert out.shape == (2, 3, 32, 32) and torch.allclose(out, (ref - mean) / std, atol=1e-5)
    wide = clip_pixels(torch.rand(1, 3, 8, 16), 32, fit="pad")      # letterbox: 16 rows of content, zero pads
    assert wide.shape == (1, 3, 32, 32)
    assert torch.allclose(wide[0, :, 0], ((0 - mean) / std)[0, :, 0].expand(3, 32))


def _clip_tokenizer_files(folder):
    """The exact OpenAI CLIP BPE (vocab.json + merges.txt) rebuilt from open_clip's bundled file: offline."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    """A random 1.6M-parameter transformers CLIP + the real CLIP tokenizer, saved as a local model folder."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
    folder = tmp_path_factory.mktemp("tiny_clip")
    torch.manual_seed(0)
    cfg = CLIPConfig(text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, max_position_embeddings=77),
                     vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=2), projection_dim=16)
    CLIPModel(cfg).save_pretrained(folder)
    _clip_tokenizer_files(folder)
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(folder)
    return folder


class Captioned:
    captions = staticmethod(lambda cond: [["a red square", "a blue circle"][int(c)] for c in cond])


@pytest.mark.parametrize("cls", [HFClipReward, PickScoreReward])
def test_hf_clip_rewards_on_a_tiny_model(tiny_clip_dir, cls):
    r = cls(cls.Config(model=str(tiny_clip_dir), tokenizer=str(tiny_clip_dir)))
    images = torch.rand(4, 3, 8, 8, requires_grad=True)
    cond = torch.tensor([0, 1, 0, 1])
    score = r(images, cond, Captioned)
    model = r.model
    with torch.no_grad():   # the same score computed directly with transformers
        tok = r.tokenizer(Captioned.captions(cond), padding=True, return_tensors="pt")
        txt = F.normalize(model.get_text_features(**tok).pooler_output, dim=-1)
        img = F.normalize(model.get_image_features(pixel_values=clip_pixels(images, 32)).pooler_output, dim=-1)
    scale = model.logit_scale.exp() if cls is PickScoreReward else 1.0
    assert torch.allclose(score, scale * (img * txt).sum(-1), atol=1e-5)
    (grad,) = torch.autograd.grad(score.sum(), images)
    assert grad.abs().sum() > 0 and all(p.grad is None for p in model.parameters())
    with pytest.raises(UserError, match="captions"):
        r(images, cond, DigitsTeacher(DigitsTeacher.Config(arch=SPEC)))


def test_hps_reward_loads_an_open_clip_checkpoint_file(tmp_path):
    import open_clip
    arch = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16,
                                            "patch_size": 8},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
    (tmp_path / "TinyHPS.json").write_text(json.dumps(arch))
    open_clip.add_model_config(tmp_path / "TinyHPS.json")
    torch.manual_seed(0)
    model = open_clip.create_model("TinyHPS", pretrained=None)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "HPS_v2.1_compressed.pt")   # HPS file layout
    r = HPSReward(HPSReward.Config(checkpoint=str(tmp_path), arch="TinyHPS"))
    images = torch.rand(2, 3, 16, 16, requires_grad=True)
    score = r(images, torch.tensor([0, 1]), Captioned)
    with torch.no_grad():
        img = model.encode_image(clip_pixels(images, 32, fit="pad"), normalize=True)
        txt = model.encode_text(open_clip.get_tokenizer("TinyHPS")(["a red square", "a blue circle"]), normalize=True)
    assert torch.allclose(score, (img * txt).sum(-1), atol=1e-5)
    assert torch.autograd.grad(score.sum(), images)[0].abs().sum() > 0
    torch.save({"state_dict": {"visual.proj": torch.zeros(1)}}, tmp_path / "broken.pt")
    with pytest.raises(UserError, match="does not hold TinyHPS weights"):
        HPSReward(HPSReward.Config(checkpoint=str(tmp_path / "broken.pt"), arch="TinyHPS"))(images, torch.tensor([0, 1]), Captioned)


def test_rewards_fail_clearly_offline_without_weights(monkeypatch, tmp_path):
    import huggingface_hub.constants as hc
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    images = torch.rand(1, 3, 8, 8)
    with pytest.raises(UserError, match=r"reward\.clip\.model='dimo-test/no-such-clip'.*hub cache"):
        HFClipReward(HFClipReward.Config(model="dimo-test/no-such-clip"))(images, torch.tensor([0]), Captioned)
    with pytest.raises(UserError, match=r"reward\.hps\.checkpoint='dimo-test/no-such-hps'.*local hub cache"):
        HPSReward(HPSReward.Config(checkpoint="dimo-test/no-such-hps"))(images, torch.tensor([0]), Captioned)


# ---------------------------------------------------------------------------------------------------
# TTEO and best-of-N
# ---------------------------------------------------------------------------------------------------

def test_tteo_ascends_the_reward_on_the_input_embedding_and_keeps_the_best_start():
    from plugins.methods.dimo import DiMO
    teacher = DigitsTeacher(DigitsTeacher.Config(arch=SPEC))
    method = DiMO(DiMO.Config())
    method.attach(teacher, {"init": MixedInit(MixedInit.Config())})
    torch.manual_seed(0)
    net = teacher.build_network(load_weights=False).eval().requires_grad_(False)
    classifier = MLPClassifier(64, 10).eval().requires_grad_(False)
    classifier.head.weight.mul_(30)   # a confident random classifier: a reward with a clear slope
    cond = torch.arange(10)

    def search(cls, **options):
        plugin = cls(cls.Config(rewards=["classifier"], **options))
        plugin.rewards[0][1].net = classifier
        return plugin

    def soft_reward(iters, lr=0.3):
        """Mean soft reward after TTEO (1 start), read back through the same embedding path."""
        seen = []
        tteo = search(TTEO, seeds=1, iters=iters, lr=lr)
        orig = tteo.rewards[0][1].__call__

        def spy(images, c, t):
            out = orig(images, c, t)
            if images.requires_grad:
                seen.append(out.mean().item())
            return out
        tteo.rewards = [(1.0, spy)]
        tteo.search(method, net, teacher, cond, 1.0, torch.Generator().manual_seed(0))
        return seen
    trace = soft_reward(8)
    assert len(trace) == 8 and trace[-1] > trace[0] + 0.2            # gradient ascent raises the reward
    assert all(b > a - 1e-3 for a, b in zip(trace, trace[1:]))
    assert all(p.grad is None for p in net.parameters())              # the generator is not changed
    tteo = search(TTEO, seeds=3, iters=2)
    tokens, scores = tteo.search(method, net, teacher, cond, 1.0, torch.Generator().manual_seed(1))
    assert tokens.shape == (10, 64) and scores.shape == (10,)
    hard = total_reward(tteo.rewards, teacher.decode(tokens), cond, teacher)
    assert torch.allclose(hard, scores, atol=1e-5)                    # scores are the kept samples' rewards
    assert tteo.cost() == 3 * (3 * 2 + 1)                             # N (3K + 1) forwards per condition
    # best-of-N keeps the maximum of its N candidates
    g = torch.Generator().manual_seed(2)
    torch.manual_seed(2)   # the init's embedding noise is drawn from the global RNG
    _, best = search(BestOfN, n=6).search(method, net, teacher, cond, 1.0, g)
    g = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    cand = method.generate(net, cond.repeat_interleave(6), g, temperature=1.0)
    all_scores = total_reward(tteo.rewards, teacher.decode(cand), cond.repeat_interleave(6), teacher).view(10, 6)
    assert torch.allclose(best, all_scores.max(1).values.detach(), atol=1e-5)


def test_generate_command_with_tteo(tiny_teacher, tmp_path):
    from core.config import resolve
    from core.engine import Trainer
    from core.generate import generate_command
    run = tmp_path / "run"
    Trainer(resolve(["method=dimo", "trainer.steps=1", "trainer.batch_size=4", f"trainer.output_dir={run}",
                     *tiny_teacher])).train()
    out = tmp_path / "g.png"
    assert generate_command([f"checkpoint={run}", "n=2", f"out={out}", "tteo.seeds=2", "tteo.iters=1",
                             "tteo.rewards=[{name: classifier, form: log_odds}]"]) == 0
    record = json.loads(out.with_suffix(".tteo.json").read_text())
    assert record["best_of_n"]["n"] == 2 * (3 * 1 + 1) and record["one_step"]["n"] == 1
    assert record["rewards"] == [{"name": "classifier", "weight": 1.0, "form": "log_odds"}]
    assert torch.load(out.with_suffix(".pt"))["tokens"].shape == (20, 64)
    with pytest.raises(UserError, match="tteo.seeds"):
        generate_command([f"checkpoint={run}", "tteo.seeds=0"])


# ---------------------------------------------------------------------------------------------------
# the CLIP reward path end to end: a tiny text-conditioned teacher through the engine
# ---------------------------------------------------------------------------------------------------

COLOURS = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 0, 0], [1, 1, 1]])
PROMPTS = ("a red picture", "a green picture", "a blue picture", "a yellow picture")
WORDS = sorted({w for p in PROMPTS for w in p.split()})


class TextMaskedTransformer(MaskedTransformer):
    """The small MaskGit-style network, conditioned on text: the condition token is the mean embedding of the
    caption's words (ids ``[B, T]``, 0 = padding; an all-padding caption is the unconditional branch)."""

    def __init__(self, seq_len, vocab_size, spec):
        super().__init__(seq_len, vocab_size, 1, spec)
        self.words = nn.EmbeddingBag(len(WORDS) + 1, spec.dim, mode="mean", padding_idx=0)

    def forward(self, tokens, cond, *, inputs_embeds=None):
        emb = self.embed_tokens(tokens) if inputs_embeds is None else inputs_embeds
        text = self.words(cond.to(emb.device).long())[:, None]
        h = self.drop(torch.cat([emb, text.to(emb.dtype)], 1) + self.pos_emb)
        return self.norm(self.blocks(h))[:, : self.seq_len] @ self.code_embeddings().t() + self.bias


class TinyTextTeacher(Teacher):
    """4x4 images over 6 colour codes, captioned by one of four prompts; data: mostly the prompt's colour."""

    class Config(PluginConfig):
        pass

    seq_len, vocab_size, mask_id, num_classes, image_shape = 16, 6, 6, None, (3, 4, 4)

    @staticmethod
    def encode_prompts(idx):
        ids = [[WORDS.index(w) + 1 for w in PROMPTS[i].split()] for i in idx.tolist()]
        return torch.tensor(ids)

    def captions(self, cond):
        return [" ".join(WORDS[i - 1] for i in row.tolist() if i) for row in cond]

    def sample_conditions(self, n, generator=None):
        return self.encode_prompts(torch.randint(0, len(PROMPTS), (n,), generator=generator))

    def null_condition(self, cond):
        return torch.zeros_like(cond)

    def build_network(self, load_weights=True):
        return TextMaskedTransformer(self.seq_len, self.vocab_size, SPEC)

    def decode(self, tokens):
        return self.decode_soft(F.one_hot(tokens.clamp(max=self.vocab_size - 1), self.vocab_size).float())

    def decode_soft(self, probs):
        return (probs @ COLOURS.to(probs)).transpose(1, 2).reshape(-1, *self.image_shape)

    def dataset(self):
        g = torch.Generator().manual_seed(0)
        idx = torch.arange(64) % len(PROMPTS)
        noise = torch.randint(0, self.vocab_size, (64, 16), generator=g)
        tokens = torch.where(torch.rand(64, 16, generator=g) < 0.8, idx[:, None].expand(-1, 16), noise)
        return tokens, self.encode_prompts(idx)


@contextmanager
def registered_teacher(name, cls):
    from registry import get_registry
    reg = get_registry()
    reg.add("teacher", name, cls, plugin="tests", distribution="tests", version="0")
    try:
        yield
    finally:
        reg.entries["teacher"].pop(name, None)


def test_clip_reward_path_end_to_end_with_a_text_conditioned_teacher(tiny_clip_dir, tmp_path):
    from core.config import resolve
    from core.engine import Trainer
    reward = f"{{name: clip, weight: 2.0, model: '{tiny_clip_dir}'}}"
    with registered_teacher("tiny_text", TinyTextTeacher):
        cfg = resolve(["method=soft_dimo", "teacher=tiny_text", f"method.rewards=[{reward}]",
                       "method.ema_decay=null", "method.lr_generator=1e-3", "trainer.steps=3",
                       "trainer.batch_size=4", "trainer.log_every=1", f"trainer.output_dir={tmp_path}",
                       "trainer.wandb=disabled", "trainer.progress=false", "eval.enabled=false"])
        trainer = Trainer(cfg)
        result = trainer.train()
    assert set(trainer.engines) == {"generator", "aux", "discriminator"}
    assert all(torch.isfinite(torch.tensor([h["reward"], h["gan_g"], h["disc_loss"]])).all() for h in result.history)
    assert len(result.history) == 3
    gen, teacher = trainer._module("generator"), trainer.models["teacher"]
    assert torch.equal(gen.tok_emb.weight, teacher.tok_emb.weight)                      # frozen embedding
    assert not torch.equal(gen.blocks.layers[0].linear1.weight, teacher.blocks.layers[0].linear1.weight)

    # the reward's gradient reaches the generator through Dec(Emb_Dec(z)) and the CLIP image tower
    method = trainer.method
    z, cond = method.one_step_logits(gen, 4, torch.device("cpu"))
    r = method.reward(z, cond)
    assert r.shape == (4,) and r.abs().max() <= 2.0 + 1e-5                           # 2 x cosine
    grads = torch.autograd.grad(r.sum(), [p for p in gen.blocks.parameters()], allow_unused=True)
    assert sum(g.abs().sum() for g in grads if g is not None) > 0


@pytest.mark.parametrize("stage", [0, 2, 3])
def test_soft_dimo_trains_through_the_engine(tiny_teacher, tmp_path, stage):
    from core.config import resolve
    from core.engine import Trainer
    cfg = resolve(["method=soft_dimo", "method.aux_warmup_steps=0", "trainer.steps=2", "trainer.batch_size=4",
                   f"trainer.zero_stage={stage}",
                   "trainer.log_every=1", f"trainer.output_dir={tmp_path}",
                   *tiny_teacher])
    trainer = Trainer(cfg)
    result = trainer.train()
    assert set(trainer.engines) == {"generator", "aux", "discriminator"}
    for h in result.history:
        assert all(torch.isfinite(torch.tensor(h[k])) for k in ("gan_g", "disc_loss", "aux_loss"))
    assert result.student_path.is_file()
