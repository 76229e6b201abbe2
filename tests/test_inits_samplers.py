"""x_init strategies (paper Sec. 4.3 / Table 6) and the teacher samplers."""
import pytest
import torch

from core.errors import UserError
from core.masking import vp_noise
from plugins.inits import MixedInit
from plugins.samplers import ConfidenceSampler, HaltonSampler, RandomSampler, halton_order
from plugins.teachers.digits import DigitsTeacher
from plugins.teachers.transformer import MaskedTransformer, TransformerSpec
from registry.registry import build

TEACHER = DigitsTeacher(DigitsTeacher.Config())


def test_mixed_init_exact_fraction_of_mask_and_random_codes():
    sample = MixedInit(MixedInit.Config(r_init=0.6, sigma=0.2))(16, TEACHER, torch.Generator().manual_seed(0))
    masked = sample.tokens == TEACHER.mask_id
    assert (masked.sum(1) == round(64 * 0.6)).all()
    assert (sample.tokens[~masked] < TEACHER.vocab_size).all() and sample.noise_sigma == 0.2
    assert len(sample.tokens[~masked].unique()) > 10   # uniform random codes, not a constant


def test_mixed_init_bernoulli_and_range():
    init = MixedInit(MixedInit.Config(r_init_range=(0.2, 0.9), count="bernoulli"))
    rates = [(init(256, TEACHER, torch.Generator().manual_seed(s)).tokens == 17).float().mean().item()
             for s in range(6)]
    assert all(0.1 < r < 1.0 for r in rates) and max(rates) - min(rates) > 0.05   # redrawn each step
    with pytest.raises(ValueError):
        MixedInit.Config(r_init_range=(0.9, 0.2))


@pytest.mark.parametrize("name, check", [
    ("all_mask", lambda t: (t == 17).all()),
    ("fixed_token", lambda t: ((t == 0).float().mean() > 0.55)),
    ("class_tokens", lambda t: ((t >= 18) & (t < 28) | (t == 17)).all() and (t >= 18).any()),
    ("encoded_noise", lambda t: (t < 17).all()),
])
def test_table6_control_variants(name, check):
    init = build("init", name, {"fill_token": 0} if name == "fixed_token" else {})
    assert check(init(32, TEACHER, torch.Generator().manual_seed(0)).tokens)


def test_encoded_noise_needs_an_encoder():
    from core.interfaces import PluginConfig, Teacher

    class NoEncoder(Teacher):
        seq_len, vocab_size, image_shape = 4, 3, (1, 2, 2)
    assert not NoEncoder(PluginConfig()).has_encoder() and TEACHER.has_encoder()
    with pytest.raises(UserError, match="encoded_noise"):
        build("init", "encoded_noise")(2, NoEncoder(PluginConfig()))


def test_embedding_noise_is_variance_preserving():
    net = MaskedTransformer(64, 17, 10, TransformerSpec(dim=32, depth=1, heads=2, dropout=0.0))
    emb = net.embed_tokens(torch.randint(0, 17, (64, 64)))
    e = emb / emb.std()
    sigma = 0.3
    noisy = vp_noise(e, sigma)
    assert abs(noisy.std().item() - 1.0) < 0.02


@pytest.mark.parametrize("sampler_cls", [RandomSampler, ConfidenceSampler, HaltonSampler])
@pytest.mark.parametrize("steps", [1, 3, 16, 64])
def test_samplers_fill_every_mask_at_any_step_count(sampler_cls, steps):
    net = MaskedTransformer(64, 17, 10, TransformerSpec(dim=32, depth=1, heads=2)).eval()
    sampler = sampler_cls(sampler_cls.Config(cfg_scale=2.0, cfg_schedule="linear", temperature=1.3))
    x = sampler.sample(net, TEACHER, torch.arange(10), steps, torch.Generator().manual_seed(0))
    assert x.shape == (10, 64) and (x < 17).all()


def test_sampler_is_deterministic_given_a_generator():
    net = MaskedTransformer(64, 17, 10, TransformerSpec(dim=32, depth=1, heads=2)).eval()
    s = RandomSampler(RandomSampler.Config())
    a = s.sample(net, TEACHER, torch.arange(4), 4, torch.Generator().manual_seed(3))
    b = s.sample(net, TEACHER, torch.arange(4), 4, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_halton_order_is_a_permutation_that_spreads_out():
    order = halton_order(64)
    assert sorted(order) == list(range(64))
    first = torch.tensor(order[:4])
    rows, cols = first // 8, first % 8
    assert len(set(rows.tolist())) == 4 or len(set(cols.tolist())) >= 3   # first picks are spread apart


def test_sampler_rejects_unknown_schedule():
    with pytest.raises(Exception, match="did you mean|Did you mean"):
        RandomSampler.Config(schedule="arcos")


def test_init_logits_put_the_noise_where_the_network_declares_it():
    from core.interfaces import InitSample
    net = MaskedTransformer(64, 17, 10, TransformerSpec(dim=32, depth=1, heads=2, dropout=0.0)).eval()
    init, cond = InitSample(torch.randint(0, 17, (3, 64)), noise_sigma=0.3), torch.arange(3)
    torch.manual_seed(0)
    outside = init.logits(net, cond)                    # default: on embed_tokens, through inputs_embeds
    torch.manual_seed(0)
    assert torch.equal(outside, net(None, cond, inputs_embeds=vp_noise(net.embed_tokens(init.tokens), 0.3)))

    class Inside(torch.nn.Module):                        # e.g. Meissonic: noise after its own embedding layers
        noise_inside = True

        def forward(self, tokens, cond, *, noise_sigma=0.0, inputs_embeds=None):
            self.seen = (tokens, noise_sigma, inputs_embeds)
            return torch.zeros(())
    inside = Inside()
    init.logits(inside, cond)
    assert inside.seen[0] is init.tokens and inside.seen[1] == 0.3 and inside.seen[2] is None
