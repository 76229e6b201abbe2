"""What the embedded teachers besides digits share (mnist, markov): a small class-conditional
MaskGit-style transformer whose pre-trained weights are cached per task and architecture, the null class
for CFG and the class rows of the input vocabulary. Subclasses add the data, decoder and evaluator."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from core.cache import cache_dir
from core.checkpoint import atomic_save_safetensors, load_state_checked
from core.errors import UserError
from core.hub import resolve_file
from core.interfaces import Teacher
from plugins.teachers.transformer import MaskedTransformer


def load_network_weights(network, path: Path, field: str = "teacher.checkpoint") -> None:
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{field}: '{path}' is corrupt or not a safetensors file ({exc})") from None
    arch = getattr(network, "spec", None)
    expected = f"teacher.arch: {arch.model_dump()}" if arch is not None else ""
    load_state_checked(network, state, path, field, expected)


class CachedTransformerTeacher(Teacher):
    """``config`` needs ``checkpoint`` and ``arch``; ``task`` names the cache folder and ``weights_file``
    the file looked for in a folder or hub repo given as ``teacher.checkpoint``."""
    task: str
    weights_file: str

    def identity(self) -> str:
        """What the cached weights depend on: the architecture (subclasses add their data settings)."""
        return self.config.arch.model_dump_json()

    def arch_id(self) -> str:
        return hashlib.sha256(self.identity().encode()).hexdigest()[:8]

    def default_checkpoint(self) -> Path:
        return cache_dir(self.task) / f"teacher-{self.arch_id()}.safetensors"

    def checkpoint_path(self) -> Optional[Path]:
        if self.config.checkpoint:
            return resolve_file(self.config.checkpoint, self.weights_file)
        path = self.default_checkpoint()
        return path if path.is_file() else None

    def has_weights(self) -> bool:
        return self.checkpoint_path() is not None

    def build_network(self, load_weights: bool = True) -> MaskedTransformer:
        net = MaskedTransformer(self.seq_len, self.vocab_size, self.num_classes, self.config.arch)
        if load_weights:
            path = self.checkpoint_path()
            if path is None:
                raise UserError(f"no pre-trained {self.task} teacher is cached for this configuration; train it "
                                f"with `python -m core.run method=mdm teacher={self.task}` or set "
                                f"teacher.checkpoint=<file>")
            load_network_weights(net, path)
        return net

    def save_pretrained(self, network, path=None) -> Path:
        path = Path(path) if path else self.default_checkpoint()
        atomic_save_safetensors(network.state_dict(), path, metadata={"identity": self.identity(),
                                                                      "teacher": self.task})
        return path

    def null_condition(self, cond: Tensor) -> Tensor:
        return torch.full_like(cond, -1)

    def input_class_token_ids(self) -> Tensor:
        return torch.arange(self.vocab_size + 1, self.vocab_size + 1 + self.num_classes)

    def input_vocab_size(self) -> int:
        return self.vocab_size + 2 + self.num_classes   # codes, [M], classes, null class
