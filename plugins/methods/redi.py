"""ReDi, rectified discrete flow (Yoo, Kim & Hong, NeurIPS 2025): re-train on (source, sample) couplings.

A factorised few-step sampler errs by the conditional total correlation of the coupling it was trained on;
re-training on pairs that the model itself generated lowers it round by round (rectification), until x_1 is
nearly a function of x_init and few steps, or one (``variant=distill``), suffice.

  source:  x_init^d = [M] with probability ``source_mask_rate``, else a uniform random code (official 0.3 / 0.7)
  phase 0: pairs (x_init, x_1) with x_1 the teacher's ``pair_steps``-step sample from all-[M], independent of
           x_init (the independent coupling: training on it is ReDi^0, the official source fine-tune)
  phase r = 1..rounds: pairs (x_init, x_1 = the student's ``pair_steps``-step sample started at x_init)
  training: x_t = x_1 with a random subset (fraction 1 - u, u ~ U(0, 1): the official ``linear`` schedule) of
           positions replaced by the paired x_init tokens; cross-entropy of the student on x_1 at all positions
  distill: in the last phase x_t = x_init entirely: one-step regression x_init -> x_1 (official ``distill``).

Sampling starts at a source draw; every position is pending; the teacher's sampler decides which pending
positions each step commits. Pending random tokens carry a learned marker embedding (official ``rand_mask``),
which starts as the [M] embedding. Pair generation is a declared offline stage that the engine runs before each
phase's first step (core/stages.py): chunked, cached under ``$DIMO_CACHE/redi-pairs/<key>`` keyed by the
generating weights' hash and the generation settings, resumable.
"""
from __future__ import annotations

import copy
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from core import stages
from core.interfaces import Method, PluginConfig, Role, WrappedNetwork
from core.masking import guided_logits
from registry import hookimpl


class SourceMarked(WrappedNetwork):
    """A masked network whose input marks which positions still hold a source random token: ``source``
    ``[B, L]`` bool adds a learned vector there (initialised to the [M] embedding, so a marked random token
    starts as "token + [M]"). State dict: ``network.*`` plus ``source_token``."""

    def __init__(self, network: nn.Module, mask_id: int):
        super().__init__(network)
        with torch.no_grad():
            row = network.embed_tokens(torch.tensor([mask_id], device=network.code_embeddings().device))
        self.source_token = nn.Parameter(row.detach().clone().view(-1))

    def forward(self, tokens: Optional[Tensor], cond: Tensor, *, source: Optional[Tensor] = None,
                inputs_embeds: Optional[Tensor] = None) -> Tensor:
        emb = self.network.embed_tokens(tokens) if inputs_embeds is None else inputs_embeds
        if source is not None:
            emb = emb + source[..., None].to(emb.dtype) * self.source_token.to(emb.dtype)
        return self.network(None, cond, inputs_embeds=emb)



def source_tokens(n: int, length: int, vocab: int, mask_id: int, mask_rate: float,
                  generator: Optional[torch.Generator] = None) -> Tensor:
    """x_init: [M] with probability ``mask_rate`` per position, else a uniform random code (on the CPU)."""
    masked = torch.rand(n, length, generator=generator) < mask_rate
    codes = torch.randint(vocab, (n, length), generator=generator)
    return torch.where(masked, torch.full_like(codes, mask_id), codes)


def rectified_input(x_init: Tensor, x_1: Tensor, mask_id: int, distill: bool) -> tuple[Tensor, Tensor]:
    """(x_t, source marks): x_1 with a fraction 1 - u of positions (u ~ U(0, 1) per sample, per-position
    Bernoulli as the official ``get_mask_code_reflow``) taken from x_init; all of them when ``distill``."""
    if distill:
        replace = torch.ones_like(x_1, dtype=torch.bool)
    else:
        ratio = 1 - torch.rand(x_1.shape[0], 1, device=x_1.device)
        replace = torch.rand(x_1.shape, device=x_1.device) < ratio
    x_t = torch.where(replace, x_init, x_1)
    return x_t, replace & (x_init != mask_id)


class ReDiConfig(PluginConfig):
    lr: float = Field(1e-4, gt=0, description="student Adam lr (official: 1e-4)")
    betas: tuple[float, float] = Field((0.9, 0.96), description="Adam betas (official: 0.9, 0.96)")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps")
    grad_clip: Optional[float] = Field(1.0, gt=0, description="gradient-norm clip (official: 1.0)")
    ema_decay: Optional[float] = Field(None, gt=0, lt=1, description="EMA of the student, exported at the end")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="cross-entropy label smoothing (official: 0.1)")
    class_dropout: float = Field(0.1, ge=0, le=1, description="condition dropped to null (official: 0.1)")
    rounds: int = Field(2, ge=0, description="rectification rounds after phase 0 (ReDi^1, ReDi^2, ...)")
    steps_per_round: int = Field(2000, gt=0, description="optimizer steps per phase (phase 0 and each round); "
                                                        "later steps stay in the last phase")
    variant: Literal["rectify", "distill"] = Field(
        "rectify", description="rectify: multi-step student (ReDi^k); distill: the last phase trains the "
                               "one-step map x_init -> x_1 (ReDi^k-distill)")
    pairs: int = Field(50_000, gt=0, description="(x_init, x_1) pairs per phase (official: 50000)")
    pair_steps: int = Field(16, gt=0, description="sampler steps that make x_1 (official: 16)")
    chunk_size: int = Field(1000, gt=0, description="pairs per cached chunk (the unit of resumption)")
    pair_batch: int = Field(500, gt=0, description="generation batch")
    pair_seed: int = Field(0, description="seed of the sources and of the generation")
    source_mask_rate: float = Field(0.3, ge=0, le=1, description="P([M]) per source position, else a random "
                                                                 "code (official interpolate_rate: 0.3)")
    sample_cfg_scale: float = Field(1.0, description="student CFG when sampling and when making the pairs of "
                                                     "phases >= 1 (phase 0's pairs carry the sampler's guidance)")
    sample_temperature: float = Field(1.0, gt=0, description="student sampling temperature (official "
                                                             "ReDi-distill: sm_temp 2, i.e. 0.5)")


class ReDi(Method):
    Config = ReDiConfig
    uses = ("sampler",)
    recipe = "redi"
    suites = ("digits",)
    defaults = {"sampler": "random"}
    needs_data = False               # pairs come from the teacher's sampler, not from data
    offline_stages = ("pair_generation",)
    sample_steps = (1, 4)
    student_role = "student"

    def student_network(self) -> nn.Module:
        return SourceMarked(self.teacher.build_network(load_weights=False), self.teacher.mask_id)

    def setup(self, ctx):
        c = self.config
        student = SourceMarked(copy.deepcopy(ctx.teacher_network), self.teacher.mask_id).requires_grad_(True)
        self.pairs = None   # the current phase's, kept by run_stage
        self.rank, self.world, self.micro = ctx.rank, ctx.world_size, ctx.micro_batch
        return {"student": Role(student, lr=c.lr, betas=c.betas, warmup_steps=c.warmup_steps,
                                grad_clip=c.grad_clip, ema_decay=c.ema_decay),
                # what generates the current phase's pairs: the teacher, then the student at each phase start
                "pair_source": Role(SourceMarked(ctx.teacher_network, self.teacher.mask_id), trainable=False,
                                    checkpointed=True)}

    # -- phases ----------------------------------------------------------------------------------------
    def phase_of(self, step: int) -> int:
        return min(step // self.config.steps_per_round, self.config.rounds)

    def is_distill(self, phase: int) -> bool:
        return self.config.variant == "distill" and phase == self.config.rounds

    def phase_ends(self, step: int) -> bool:
        done = step + 1
        return done % self.config.steps_per_round == 0 and done // self.config.steps_per_round <= self.config.rounds

    # -- the offline stage -----------------------------------------------------------------------------
    def generation_settings(self, phase: int) -> dict:
        c = self.config
        return {"phase": phase, "pairs": c.pairs, "pair_steps": c.pair_steps, "chunk_size": c.chunk_size,
                "pair_seed": c.pair_seed, "source_mask_rate": c.source_mask_rate,
                "student_sampling": [c.sample_cfg_scale, c.sample_temperature] if phase else None,
                "sampler": [type(self.plugins["sampler"]).__name__, self.plugins["sampler"].config.model_dump()],
                "teacher": type(self.teacher).__name__}

    def stage_steps(self, name: str) -> tuple[int, ...]:
        """Each phase's pairs are made before its first step (phase r >= 1 by the student of phase r - 1)."""
        return tuple(phase * self.config.steps_per_round for phase in range(self.config.rounds + 1))

    def run_stage(self, name: str, ctx) -> None:
        """``pair_generation``: the pairs of the phase that holds ``ctx.step``, by the pair source in eval mode."""
        with ctx.mode("pair_source", False):
            self.pairs = self.pair_stage(ctx.module("pair_source"), self.phase_of(ctx.step))

    def pair_stage(self, source_net: nn.Module, phase: int, on_chunk=None) -> dict[str, Tensor]:
        """The phase's pairs, from the cache when complete; missing chunks are generated first."""
        settings = self.generation_settings(phase)
        key = stages.stage_key("redi-pairs-v1", stages.weights_hash(source_net), settings)
        n_chunks = -(-self.config.pairs // self.config.chunk_size)
        pairs = stages.run_chunked(stages.stage_dir("redi-pairs", key), n_chunks,
                                   lambda i: self.make_chunk(source_net, phase, i), settings,
                                   self.rank, self.world, on_chunk)
        return {k: v.long() for k, v in pairs.items()}

    @torch.no_grad()
    def make_chunk(self, source_net: nn.Module, phase: int, index: int) -> dict[str, Tensor]:
        c, teacher = self.config, self.teacher
        n = min(c.chunk_size, c.pairs - index * c.chunk_size)
        g = torch.Generator().manual_seed(c.pair_seed * 1_000_003 + phase * 7919 + index)
        x_init = source_tokens(n, teacher.seq_len, teacher.vocab_size, teacher.mask_id, c.source_mask_rate, g)
        start = index * c.chunk_size
        cond = (torch.arange(start, start + n) % teacher.num_classes) if teacher.num_classes \
            else teacher.sample_conditions(n, g)
        out = [self.generate_pairs(source_net, x_init[s:s + c.pair_batch], cond[s:s + c.pair_batch], phase, g)
               for s in range(0, n, c.pair_batch)]
        return {"x_init": x_init.int(), "x_1": torch.cat(out).int(), "cond": cond.int()}

    def generate_pairs(self, source_net: nn.Module, x_init: Tensor, cond: Tensor, phase: int,
                       generator: torch.Generator) -> Tensor:
        """x_1: in phase 0 the teacher's sampler from all-[M] (its CFG and temperature; independent of x_init);
        afterwards the student from x_init exactly as it samples (``sample_cfg_scale``, ``sample_temperature``):
        its conditional branch already carries the guidance of phase 0's pairs, and guiding it again would
        apply CFG twice."""
        c, sampler, device = self.config, self.plugins["sampler"], next(source_net.parameters()).device
        cond = cond.to(device)
        if phase == 0:
            return sampler.sample(source_net.network, self.teacher, cond, c.pair_steps, generator).cpu()
        return self.sample_from(source_net, x_init.to(device), cond, c.pair_steps, generator,
                                cfg=c.sample_cfg_scale, temperature=c.sample_temperature).cpu()

    def sample_from(self, network, x_init: Tensor, cond: Tensor, steps: int, generator=None,
                    cfg: Optional[float] = None, temperature: Optional[float] = None) -> Tensor:
        """The sampler's rules from a source draw (every position pending; pending random tokens marked);
        ``cfg``/``temperature`` None: the sampler's own."""
        sampler, mask_id = self.plugins["sampler"], self.teacher.mask_id
        null = self.teacher.null_condition(cond)

        def predict(x, s, pending):
            scale = sampler.cfg_at(s, steps) if cfg is None else cfg
            return guided_logits(network, x, cond, null, scale, {"source": pending & (x != mask_id)})
        everything = torch.ones_like(x_init, dtype=torch.bool)
        return sampler.run_steps(predict, self.teacher, x_init, steps, pending=everything, generator=generator,
                                 temperature=temperature)

    # -- training --------------------------------------------------------------------------------------
    def train_step(self, ctx):
        c, teacher, device = self.config, self.teacher, ctx.device
        phase = self.phase_of(ctx.step)
        idx = torch.randint(self.pairs["x_1"].shape[0], (self.micro,))
        x_init, x_1, cond = (self.pairs[k][idx].to(device) for k in ("x_init", "x_1", "cond"))
        drop = torch.rand(cond.shape, device=device) < c.class_dropout
        cond = torch.where(drop, teacher.null_condition(cond), cond)
        x_t, source = rectified_input(x_init, x_1, teacher.mask_id, self.is_distill(phase))
        with ctx.autocast():
            logits = ctx.models["student"](x_t, cond, source=source)
        loss = F.cross_entropy(logits.float().flatten(0, 1), x_1.flatten(), label_smoothing=c.label_smoothing)
        ctx.update("student", loss)
        if self.phase_ends(ctx.step):   # the student becomes the next phase's pair generator (checkpointed)
            ctx.copy_weights("pair_source", "student")
        return {"loss": loss.item(), "phase": float(phase)}

    # -- sampling --------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, network, cond, generator=None, steps: Optional[int] = None, **kwargs):
        c, teacher = self.config, self.teacher
        device = next(network.parameters()).device
        x_init = source_tokens(cond.shape[0], teacher.seq_len, teacher.vocab_size, teacher.mask_id,
                               c.source_mask_rate, generator).to(device)
        return self.sample_from(network, x_init, cond.to(device), steps or self.sample_steps[0], generator,
                                cfg=c.sample_cfg_scale, temperature=c.sample_temperature)


@hookimpl
def dimo_register(register):
    register("method", "redi", ReDi)
