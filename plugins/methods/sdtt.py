"""SDTT, self-distillation through time (Deschenaux & Gulcehre, ICLR 2025), on MaskGit-style teachers.

Rounds r = 0, 1, ...: the round teacher samples with N_t = N_0 / K^r steps of the teacher's sampler and the
student learns to take K of those steps at once (N_s = N_t / K). Per training step, on real data x_0:

  j ~ U{0..N_s-1};  x_t ~ q(. | x_0) with as many [M] as the sampler leaves before student step j
  K round-teacher steps  x_t -> x^(1) -> ... -> x^(K)  (grid steps Kj .. Kj+K-1 of N_t), recording for every
  position the teacher's distribution p_k at the step k that revealed it (the last one if none did)
  L = mean over [M] positions of x_t of  D(target || p_theta(. | x_t))      (D = rkl by default, as official)

At a round's end the student's weights become the round teacher (a frozen role the engine checkpoints).
Round 0's teacher is the pre-trained one, with classifier-free guidance ``cfg_scale``; later round teachers
are students, already guided, so the student always samples without CFG.

The round teacher's steps are the sampler plugin's own (``Sampler.run_steps`` from any partial state: its
step counts, the positions it reveals, its temperature), as in di4c and ReDi.
"""
from __future__ import annotations

import copy
import math
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor

from core.interfaces import Method, PluginConfig, Role
from core.masking import forward_mask, guided_logits
from plugins.divergences import FDivergence, ForwardKL, ReverseKL
from registry import hookimpl


# ---------------------------------------------------------------------------------------------------
# SDTT's targets
# ---------------------------------------------------------------------------------------------------

def step_targets(trace: list[tuple[Tensor, Tensor]], masked: Tensor) -> Tensor:
    """Per position, the log-distribution of the step that revealed it; positions no step revealed keep the
    last step's (official SDTT ``_teacher_logprobs_on_mask``)."""
    target = trace[-1][0].clone()
    done = torch.zeros_like(masked)
    for logp, committed in trace:
        fresh = committed & ~done
        target = torch.where(fresh[..., None], logp, target)
        done |= committed
    return target


# ---------------------------------------------------------------------------------------------------
# SDTT
# ---------------------------------------------------------------------------------------------------

class SDTTConfig(PluginConfig):
    lr: float = Field(3e-4, gt=0, description="student AdamW lr (official config: 3e-4)")
    warmup_steps: int = Field(2500, ge=0, description="linear warm-up, then constant (official: 2500)")
    weight_decay: float = Field(0.0, ge=0, description="official: 0")
    grad_clip: Optional[float] = Field(1.0, gt=0, description="gradient-norm clip (official: 1.0)")
    ema_decay: Optional[float] = Field(0.9999, gt=0, lt=1, description="EMA of the student, exported at the end "
                                                                       "(official: 0.9999); null: none")
    distill_steps: int = Field(2, ge=2, description="K: round-teacher steps the student takes at once "
                                                    "(official num_distill_steps: 2)")
    base_steps: int = Field(16, ge=2, description="N_0: sampler steps of the pre-trained teacher in round 0; "
                                                  "must be min_steps * K^m (official: 1024)")
    min_steps: int = Field(1, ge=1, description="the last round's student step count (official: 8)")
    steps_per_round: int = Field(10_000, gt=0, description="optimizer steps per round (official grow_dt_every: "
                                                           "10000); later steps stay in the last round")
    loss: Literal["rkl", "fkl", "mse", "tvd"] = Field(
        "rkl", description="rkl: KL(student || teacher) (official kl-bwd, default); fkl: KL(teacher || student); "
                           "mse: on log-probabilities (official); tvd: total variation on probabilities")
    cfg_scale: float = Field(1.0, description="guidance of the round-0 teacher's targets, distilled into the "
                                              "student (later rounds and student sampling use none)")
    sample_temperature: float = Field(1.0, gt=0, description="student sampling temperature")
    student_dropout: bool = Field(False, description="dropout in the student's training forward (official: on); "
                                                     "off matches the eval-mode teacher's targets without bias")

    @model_validator(mode="after")
    def _round_grid(self):
        ratio, k = self.base_steps / self.min_steps, self.distill_steps
        rounds = round(math.log(ratio, k)) if ratio >= k else 0
        if rounds < 1 or self.min_steps * k ** rounds != self.base_steps:
            raise ValueError(f"base_steps={self.base_steps} must be min_steps * distill_steps^m with m >= 1 "
                             f"(valid here: {', '.join(str(self.min_steps * k ** m) for m in range(1, 6))})")
        return self


def divergence_value(name: str, logp_teacher: Tensor, logp_student: Tensor) -> Tensor:
    """Per-token loss ``[...]``; the KLs and TV are dimo's divergence plugins."""
    if name == "mse":
        return (logp_student - logp_teacher).pow(2).mean(-1)
    plugin = {"rkl": lambda: ReverseKL(ReverseKL.Config()), "fkl": lambda: ForwardKL(ForwardKL.Config()),
              "tvd": lambda: FDivergence(FDivergence.Config(generator="total_variation"))}[name]()
    return plugin.value(logp_teacher, logp_student)


class SDTT(Method):
    Config = SDTTConfig
    uses = ("sampler",)
    recipe = "sdtt"
    suites = ("digits",)
    defaults = {"sampler": "random"}
    needs_data = True                  # x_t is real data noised by q(x_t | x_0), as the official code
    sample_steps = (1, 2, 4, 8)
    student_role = "student"

    # -- rounds ----------------------------------------------------------------------------------------
    @property
    def rounds(self) -> int:
        c = self.config
        return round(math.log(c.base_steps / c.min_steps, c.distill_steps))

    def round_of(self, step: int) -> int:
        return min(step // self.config.steps_per_round, self.rounds - 1)

    def student_steps(self, round_: int) -> int:
        return self.config.base_steps // self.config.distill_steps ** (round_ + 1)

    # -- setup -----------------------------------------------------------------------------------------
    def setup(self, ctx):
        c = self.config
        student = copy.deepcopy(ctx.teacher_network).requires_grad_(True)
        return {
            "student": Role(student, lr=c.lr, warmup_steps=c.warmup_steps, weight_decay=c.weight_decay,
                            grad_clip=c.grad_clip, ema_decay=c.ema_decay),
            # the pre-trained teacher in round 0, then the previous round's student: changed in place
            "round_teacher": Role(ctx.teacher_network, trainable=False, checkpointed=True),
        }

    # -- one step --------------------------------------------------------------------------------------
    def teacher_targets(self, round_teacher, x_t: Tensor, cond: Tensor, round_: int, j: int,
                        generator: Optional[torch.Generator] = None) -> Tensor:
        """log-targets ``[B, L, V]``: K round-teacher steps (grid steps Kj .. Kj+K-1 of N_t) from x_t."""
        c, teacher = self.config, self.teacher
        k = c.distill_steps
        null = teacher.null_condition(cond)
        scale = c.cfg_scale if round_ == 0 else 1.0
        predict = lambda x, s, pending: guided_logits(round_teacher, x, cond, null, scale)
        _, trace = self.plugins["sampler"].run_steps(predict, teacher, x_t, self.student_steps(round_) * k,
                                                     k * j, k * j + k, generator=generator,
                                                     temperature=None if round_ == 0 else 1.0, record=True)
        return step_targets(trace, x_t == teacher.mask_id)

    def noised_data(self, tokens: Tensor, round_: int) -> tuple[Tensor, int]:
        """(x_t, j): real data with as many [M] as the student's plan leaves before its step j, j uniform
        (one per batch, so the sampler's step-dependent rules apply to the whole batch)."""
        n_student = self.student_steps(round_)
        plan = [tokens.shape[1]] + self.plugins["sampler"].plan(n_student, tokens.shape[1])
        j = int(torch.randint(n_student, ()))
        ratio = torch.full((tokens.shape[0],), plan[j] / tokens.shape[1], device=tokens.device)
        return forward_mask(tokens, ratio, self.teacher.mask_id, "exact")[0], j

    def loss(self, logp_target: Tensor, student_logits: Tensor, masked: Tensor) -> Tensor:
        per_token = divergence_value(self.config.loss, logp_target, F.log_softmax(student_logits.float(), -1))
        return (per_token * masked).sum() / masked.sum().clamp(min=1)

    def train_step(self, ctx):
        tokens, cond = ctx.batch
        round_, round_teacher = self.round_of(ctx.step), ctx.models["round_teacher"]
        x_t, j = self.noised_data(tokens, round_)
        with torch.no_grad(), ctx.autocast():
            target = self.teacher_targets(round_teacher, x_t, cond, round_, j)
        with ctx.autocast(), ctx.mode("student", self.config.student_dropout):
            logits = ctx.models["student"](x_t, cond)
        loss = self.loss(target, logits, x_t == self.teacher.mask_id)
        ctx.update("student", loss)
        if self.round_ends(ctx.step):
            ctx.copy_weights("round_teacher", "student")
        return {"loss": loss.item(), "round": float(round_)}

    def round_ends(self, step: int) -> bool:
        """The copy happens at the end of a round's last step, so a checkpoint taken there holds the new
        round teacher and a resumed run needs no state beyond the step."""
        done = step + 1
        return done % self.config.steps_per_round == 0 and done // self.config.steps_per_round < self.rounds

    # -- sampling --------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, network, cond, generator=None, steps: Optional[int] = None, **kwargs):
        device = next(network.parameters()).device
        cond = cond.to(device)
        x = torch.full((cond.shape[0], self.teacher.seq_len), self.teacher.mask_id, dtype=torch.long,
                       device=device)
        predict = lambda x, s, pending: network(x, cond)
        return self.plugins["sampler"].run_steps(predict, self.teacher, x, steps or self.sample_steps[0],
                                                 generator=generator, temperature=self.config.sample_temperature)


@hookimpl
def dimo_register(register):
    register("method", "sdtt", SDTT)
