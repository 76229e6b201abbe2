"""Generator initialisations x_init (paper Sec. 4.3 and supplementary Table 6).

The paper's strategy (``mixed``): a fraction r_init of the positions hold [M], the rest uniform random
code tokens, so x_init looks like the partially masked inputs the teacher was trained on; plus a
variance-preserving Gaussian perturbation of the token embeddings, e <- sigma n + sqrt(1 - sigma^2) e
(official ``noise_emb_perturb``). The other registered names are the control variants of Table 6.
"""
from __future__ import annotations

from typing import Literal, Optional

import torch
from pydantic import Field, model_validator

from core.errors import UserError
from core.interfaces import InitSample, InitStrategy, PluginConfig
from core.masking import draw_mask, vp_noise  # noqa: F401  (vp_noise: re-exported for teachers)
from registry import hookimpl


class MixedInitConfig(PluginConfig):
    r_init: float = Field(0.6, ge=0, le=1, description="fraction of [M] positions (official fix_0.6)")
    r_init_range: Optional[tuple[float, float]] = Field(
        None, description="draw r_init ~ U[a, b] per step instead (official random_a_b)")
    count: Literal["exact", "bernoulli"] = Field(
        "exact", description="exact: round(L r_init) positions (official code); bernoulli: each with prob r_init (paper)")
    fill: Literal["mask", "token"] = Field("mask", description="what the r_init positions hold")
    fill_token: int = Field(0, ge=0, description="input token id used when fill=token (Table 6: 512 or 1025)")
    random_tokens: Literal["codes", "classes", "encoded_noise"] = Field(
        "codes", description="what the other positions hold: uniform codes (paper), random class tokens, or "
                             "the teacher's encoding of a uniform-noise image (Table 6 controls)")
    sigma: float = Field(0.1, ge=0, lt=1, description="variance-preserving embedding noise (official fix_0.1)")

    @model_validator(mode="after")
    def _range_ok(self):
        if self.r_init_range is not None:
            a, b = self.r_init_range
            if not 0 <= a <= b <= 1:
                raise ValueError(f"r_init_range must satisfy 0 <= a <= b <= 1, got {self.r_init_range}")
        return self


class MixedInit(InitStrategy):
    Config = MixedInitConfig

    @classmethod
    def check_config(cls, config: MixedInitConfig, teacher) -> None:
        name = teacher.__class__.__name__
        if config.fill == "token" and config.fill_token >= teacher.input_vocab_size():
            raise UserError(f"init.fill_token={config.fill_token} is not an input token of teacher {name}: valid ids "
                            f"0..{teacher.input_vocab_size() - 1} (codes 0..{teacher.vocab_size - 1}, "
                            f"[M] {teacher.mask_id}, then class tokens if the teacher has them)")
        if config.random_tokens == "classes":
            try:
                teacher.input_class_token_ids()
            except NotImplementedError:
                raise UserError(f"init.random_tokens=classes needs class tokens in the input vocabulary; teacher "
                                f"{name} has none (valid here: codes, encoded_noise)") from None
        if config.random_tokens == "encoded_noise" and not teacher.has_encoder():
            raise UserError(f"init.random_tokens=encoded_noise needs a teacher with an encoder; {name} has none "
                            f"(valid here: codes, classes)")

    def _ratio(self, batch: int, generator, device) -> torch.Tensor:
        c = self.config
        if c.r_init_range is None:
            return torch.full((batch,), c.r_init, device=device)
        a, b = c.r_init_range   # one draw per step, shared by the batch (official get_fix_r)
        return torch.full((batch,), a + (b - a) * torch.rand((), generator=generator).item(), device=device)

    def _random_tokens(self, batch: int, teacher, generator, device) -> torch.Tensor:
        shape = (batch, teacher.seq_len)
        kind = self.config.random_tokens
        if kind == "codes":
            return torch.randint(0, teacher.vocab_size, shape, generator=generator).to(device)
        if kind == "classes":
            ids = teacher.input_class_token_ids()
            return ids[torch.randint(0, len(ids), shape, generator=generator)].to(device)
        if not teacher.has_encoder():
            raise UserError(f"init.random_tokens=encoded_noise needs a teacher with an encoder; "
                            f"{teacher.__class__.__name__} has none (valid here: codes, classes)")
        noise = torch.rand(batch, *teacher.image_shape, generator=generator)
        return teacher.encode(noise).to(device)

    def __call__(self, batch_size, teacher, generator=None, device=None) -> InitSample:
        device = device or torch.device("cpu")
        tokens = self._random_tokens(batch_size, teacher, generator, device)
        ratio = self._ratio(batch_size, generator, device)
        mask = draw_mask(ratio.cpu(), teacher.seq_len, self.config.count, generator,
                         min_masked=1 if ratio.min() > 0 else 0).to(device)
        fill = teacher.mask_id if self.config.fill == "mask" else self.config.fill_token
        tokens = torch.where(mask, torch.full_like(tokens, fill), tokens)
        return InitSample(tokens=tokens, noise_sigma=self.config.sigma)


def preset(name: str, **defaults):
    """A registered variant of MixedInit whose Config has other defaults (still overridable). Each field
    keeps its declared type, bounds and description; only the default changes."""
    from pydantic import create_model
    from pydantic.fields import FieldInfo
    base = MixedInitConfig.model_fields
    fields = {k: (base[k].annotation, FieldInfo.merge_field_infos(base[k], default=v)) for k, v in defaults.items()}
    config = create_model(f"{name}Config", __base__=MixedInitConfig, **fields)
    return type(name, (MixedInit,), {"Config": config, "__doc__": f"Table 6 control: {defaults}"})


@hookimpl
def dimo_register(register):
    register("init", "mixed", MixedInit)
    register("init", "all_mask", preset("AllMask", r_init=1.0))
    register("init", "fixed_token", preset("FixedToken", fill="token"))
    register("init", "class_tokens", preset("ClassTokens", random_tokens="classes"))
    register("init", "encoded_noise", preset("EncodedNoise", random_tokens="encoded_noise", r_init=0.0))
