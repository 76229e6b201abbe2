"""The example plugins through dimo's plugin test kit: the one-step KD method and the symmetric-KL divergence
train on a tiny digits teacher, export, load back and generate."""
import torch

from core.testing import run_method
from dimo_plugin_example import SymmetricKL


def test_symmetric_kl_is_symmetric_and_zero_on_equal_inputs():
    p, q = torch.randn(3, 5).log_softmax(-1), torch.randn(3, 5).log_softmax(-1)
    div = SymmetricKL(SymmetricKL.Config())
    assert torch.allclose(div.value(p, q), div.value(q, p)) and div.value(p, p).abs().max() < 1e-6


def test_kd1step_and_sym_kl_train_export_and_generate(tmp_path):
    run_method(tmp_path, "mdm", steps=30, batch_size=32)             # caches the tiny digits teacher
    run = run_method(tmp_path, "kd1step", steps=3)
    assert run.samples[1].shape == (4, 64)
    run_method(tmp_path, "dimo", args=("divergence=sym_kl",))
