"""The abstract roles dimo's engine works with. Plugins implement these; core knows no concrete one.

Every plugin class takes its validated config as the first constructor argument and exposes a nested
pydantic ``Config`` with ``extra="forbid"`` (see :class:`PluginConfig`).

Token conventions used everywhere:
  * a token grid is a LongTensor ``[B, L]``; code ids are ``0 .. V-1`` and ``mask_id`` is the [M] token;
  * networks return logits over the ``V`` real codes, ``[B, L, V]`` (never over [M]);
  * a *condition* is whatever the teacher's network takes (class ids ``[B]`` for class-conditional teachers);
    ``Teacher.null_condition`` gives the unconditional branch used by classifier-free guidance.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Optional, Protocol, runtime_checkable

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn


class PluginConfig(BaseModel):
    """Base of every plugin's options: unknown keys are errors, never silently dropped."""
    model_config = ConfigDict(extra="forbid")


class Plugin:
    Config: ClassVar[type[PluginConfig]] = PluginConfig

    def __init__(self, config: PluginConfig):
        self.config = config

    @classmethod
    def check_config(cls, config: PluginConfig, teacher: "Teacher") -> None:
        """Refuse (raise ``core.errors.UserError``) settings that do not fit ``teacher``, e.g. a token id
        outside its input vocabulary. Called when a run is resolved, before anything is built or trained."""


# ---------------------------------------------------------------------------------------------------
# Networks and teachers
# ---------------------------------------------------------------------------------------------------

@runtime_checkable
class MaskedNetwork(Protocol):
    """A bidirectional masked-token network (MaskGit-style), the shape of teacher, generator and aux.

    ``inputs_embeds`` ``[B, L, D]`` replaces the token-embedding lookup ``embed_tokens(tokens)``: the init
    strategy's perturbed embeddings (Di[M]O's generator input, ``InitSample.logits``), soft embeddings, TTEO.
    Networks whose official Di[M]O code perturbs a later activation (Meissonic, aMUSEd: the output of the
    embedding's RMSNorm and conv) set ``noise_inside = True`` and take ``noise_sigma``, applied there with
    ``core.masking.vp_noise``.
    """
    noise_inside: ClassVar[bool] = False

    def __call__(self, tokens: Optional[Tensor], cond: Any, *, inputs_embeds: Optional[Tensor] = None) -> Tensor: ...

    def embed_tokens(self, tokens: Tensor) -> Tensor: ...

    def code_embeddings(self) -> Tensor:
        """``[V, D]`` input-embedding rows of the real codes: Emb(z) = E^T softmax(z) uses these."""

    def frozen_parameters(self) -> Iterable[nn.Parameter]:
        """Parameters Di[M]O keeps fixed in generator and aux: token embedding, tied head, positions."""


class WrappedNetwork(nn.Module):
    """A masked network around another (``self.network``) that adds inputs of its own (di4c's lambda, ReDi's
    source marks): the MaskedNetwork hooks are the wrapped network's."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        return self.network.embed_tokens(tokens)

    def code_embeddings(self) -> Tensor:
        return self.network.code_embeddings()

    def frozen_parameters(self):
        return self.network.frozen_parameters()


class UsesRecipes:
    """Teachers and methods, the two names of a recipe file ``<teacher>/<method>.yaml`` (core/recipes.py).
    ``recipe``: the name a class answers to besides its registered one; inherited, so a subclass registered under
    another name (a third-party DiMO subclass) gets its parent's recipes unless one is written under its own."""
    recipe: ClassVar[Optional[str]] = None

    @classmethod
    def recipe_names(cls, name: str) -> list[str]:
        """Names to look recipes up under, first match wins: the registered ``name``, then each declared
        ``recipe`` up the class hierarchy."""
        return list(dict.fromkeys([name] + [c.__dict__["recipe"] for c in cls.__mro__ if c.__dict__.get("recipe")]))


class TeacherModel(Plugin):
    """The masked diffusion model: its token grid, conditions and network factory.

    Subclasses set ``seq_len``, ``vocab_size`` (number of real codes V), ``mask_id`` and ``num_classes``.
    """
    seq_len: int
    vocab_size: int
    mask_id: int
    num_classes: Optional[int] = None

    def input_vocab_size(self) -> int:
        """Rows of the network's input-token embedding, i.e. the valid ids of an input token grid: codes
        ``0..V-1`` and [M] ``= V``; teachers with class tokens in the input (MaskGIT layout) have more."""
        return self.vocab_size + 1

    def build_network(self, load_weights: bool = True) -> nn.Module:
        """The MDM network (a :class:`MaskedNetwork`); with ``load_weights`` the teacher's trained weights."""
        raise NotImplementedError

    def has_weights(self) -> bool:
        """Whether trained weights are available now; the main job pre-trains (``method=mdm``) a teacher
        that says False before distilling it (embedded teachers without a cached checkpoint)."""
        return True

    def checkpoint_path(self) -> Optional[Path]:
        """The file holding the trained network weights, hashed into benchmark provenance; None if none."""
        return None

    def save_pretrained(self, network: nn.Module, path: str) -> None:
        """Write ``network``'s weights where ``build_network(load_weights=True)`` finds them (``mdm`` caching)."""
        raise NotImplementedError(f"{type(self).__name__} cannot save pre-trained weights")

    def sample_conditions(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """``n`` conditions for training and sampling (class ids by default)."""
        return torch.randint(0, self.num_classes, (n,), generator=generator)

    def null_condition(self, cond: Tensor) -> Tensor:
        """The unconditional counterpart of ``cond`` for classifier-free guidance."""
        raise NotImplementedError

    def captions(self, cond: Tensor) -> Optional[list[str]]:
        """The prompt of each condition (text rewards, result grids); None for teachers without text."""
        return None

    def input_class_token_ids(self) -> Tensor:
        """Input-embedding ids of the class tokens (for the Table 6 'random class tokens' control)."""
        raise NotImplementedError(f"{type(self).__name__} has no class tokens in its input vocabulary")


class Codec:
    """Between token grids and images: ``decode`` (sampling, metrics), ``decode_soft`` (rewards through soft
    codes), ``encode`` (images -> tokens; optional)."""
    image_shape: Optional[tuple[int, int, int]] = None   # (C, H, W) of decoded images, if any

    def decode(self, tokens: Tensor) -> Tensor:
        """Token grid -> images ``[B, C, H, W]`` in [0, 1]."""
        raise NotImplementedError

    def decode_soft(self, probs: Tensor) -> Tensor:
        """Per-token code distributions ``[B, L, V]`` -> images (expected codebook vectors), differentiable."""
        raise NotImplementedError

    def decode_with(self, tokens: Tensor, cond: Tensor) -> Tensor:
        """``decode`` of tokens generated for conditions ``cond``. Decoders that read the condition (MaskGen's
        TA-TiTok reads the prompt's text) override this; the default ignores it. Samples, grids and rewards call it."""
        return self.decode(tokens)

    def decode_soft_with(self, probs: Tensor, cond: Tensor) -> Tensor:
        """``decode_soft`` for conditions ``cond`` (see ``decode_with``); the reward path calls it."""
        return self.decode_soft(probs)

    def encode(self, images: Tensor) -> Tensor:
        """Images ``[B, C, H, W]`` in [0, 1] -> token grid ``[B, L]`` (the Table 6 'encoded noise' init)."""
        raise NotImplementedError(f"{type(self).__name__} has no encoder")

    def has_encoder(self) -> bool:
        return type(self).encode is not Codec.encode


class Task:
    """What a teacher is evaluated and trained on: real data and the evaluator of its metrics.
    ``exact_metrics``: the metrics its evaluator computes from sample tokens (see :class:`Evaluator`)."""
    exact_metrics: ClassVar[tuple[str, ...]] = ()

    def dataset(self) -> Optional[tuple[Tensor, Tensor]]:
        """Real ``(tokens [N, L], conditions [N])`` for pre-training and GAN heads; None if data-free."""
        return None

    def evaluator(self) -> Optional["Evaluator"]:
        """Feature extractor and reference data for metrics, if the teacher has one."""
        return None


class Teacher(TeacherModel, Codec, Task, UsesRecipes):
    """A frozen masked diffusion model plus everything around it: the model (:class:`TeacherModel`), its
    codec (:class:`Codec`) and its task (:class:`Task`). Teacher plugins subclass this; every hook above has
    a default or raises NotImplementedError naming what is missing. See examples/dimo-teacher-example."""


class Evaluator:
    """What metrics need from a task: features and class logits of images, and reference images.

    ``exact_metrics`` names metric plugins that score sample tokens against a known distribution instead of
    image features (the markov task); the evaluator then needs no ``features``/``reference``.
    """
    exact_metrics: ClassVar[tuple[str, ...]] = ()

    def features(self, images: Tensor) -> Tensor:
        raise NotImplementedError

    def logits(self, images: Tensor) -> Tensor:
        raise NotImplementedError

    def reference(self) -> tuple[Tensor, Tensor]:
        """(images, labels) of real data."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------
# Masked diffusion pieces
# ---------------------------------------------------------------------------------------------------

class MaskSchedule(Plugin):
    """gamma: progress r in [0, 1] -> fraction of masked tokens; gamma(0) = 1 (all [M]), gamma(1) = 0."""

    def gamma(self, r: Tensor) -> Tensor:
        raise NotImplementedError

    def sample_ratio(self, n: int, generator: Optional[torch.Generator] = None, device=None) -> Tensor:
        """Mask ratios of the forward process: gamma(r) with r ~ U[0, 1] (MaskGit training)."""
        r = torch.rand(n, generator=generator, device=device)
        return self.gamma(r)


class Divergence(Plugin):
    """Token-level D(p_teacher || p_aux) and its closed-form gradient wrt the aux logits.

    Both take log-probabilities ``[..., V]`` (log_softmax of logits) so they stay finite for
    probabilities near 0 and large vocabularies.
    """

    def value(self, logp_teacher: Tensor, logp_aux: Tensor) -> Tensor:
        raise NotImplementedError

    def grad(self, logp_teacher: Tensor, logp_aux: Tensor) -> Tensor:
        raise NotImplementedError


@dataclass
class InitSample:
    tokens: Tensor                 # [B, L] x_init
    noise_sigma: float = 0.0       # variance-preserving noise on their embeddings

    def embed(self, network: nn.Module, generator: Optional[torch.Generator] = None) -> Tensor:
        """The generator's ``inputs_embeds``: Emb(x_init) with Di[M]O's variance-preserving noise (drawn from
        ``generator``, else the global RNG, as the official code's forward did)."""
        from core.masking import vp_noise
        return vp_noise(network.embed_tokens(self.tokens), self.noise_sigma, generator)

    def logits(self, network: nn.Module, cond: Tensor) -> Tensor:
        """The generator's logits on x_init, the noise at the network's site (``MaskedNetwork.noise_inside``:
        an optional protocol attribute, hence the getattr)."""
        if getattr(network, "noise_inside", False):
            return network(self.tokens, cond, noise_sigma=self.noise_sigma)
        return network(None, cond, inputs_embeds=self.embed(network))


class InitStrategy(Plugin):
    """Builds the generator's input x_init and the noise of its embeddings (``InitSample.embed``)."""

    def __call__(self, batch_size: int, teacher: Teacher, generator: Optional[torch.Generator] = None,
                 device=None) -> InitSample:
        raise NotImplementedError


Predict = Callable[[Tensor, int, Tensor], Tensor]   # (tokens [B, L], step s, pending [B, L]) -> logits [B, L, V]


class Sampler(Plugin):
    """A multi-step parallel-decoding sampler (MaskGit style): from all-[M], each of ``steps`` steps predicts
    every pending position and commits some of them.

    ``sample`` is the whole run with the sampler's own CFG and temperature. Methods that run the sampler's
    steps from partial states with their own network call (sdtt, di4c, redi) use the step-level operations:
    ``plan`` (how many stay pending), ``begin`` (per-run state), ``cfg_at``/``inverse_temperature_at`` (the
    per-step settings), ``reveal`` (one step on given logits) and ``run_steps`` (a range of steps).
    """

    def sample(self, network: nn.Module, teacher: Teacher, cond: Tensor, steps: int,
               generator: Optional[torch.Generator] = None) -> Tensor:
        """Tokens ``[B, L]`` for conditions ``cond`` after ``steps`` steps from an all-[M] grid."""
        raise NotImplementedError

    def plan(self, steps: int, length: int) -> list[int]:
        """How many of ``length`` positions stay pending after each of ``steps`` steps (non-increasing, 0 last)."""
        raise NotImplementedError

    def begin(self, batch: int, length: int, teacher: Teacher, device, generator=None) -> None:
        """Called before a run of steps on ``batch`` sequences (samplers with per-sample state draw it here)."""

    def cfg_at(self, step: int, steps: int) -> float:
        """Classifier-free guidance scale of step ``step`` of ``steps``."""
        return 1.0

    def inverse_temperature_at(self, step: int, steps: int) -> float:
        """1 / softmax temperature of step ``step`` of ``steps``."""
        return 1.0

    def reveal(self, logits: Tensor, x: Tensor, pending: Tensor, keep: Tensor, step: int, steps: int,
               generator: Optional[torch.Generator] = None, inverse_temperature: float = 1.0
               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One step on precomputed ``logits``: draw x0 ~ softmax(logits * inverse_temperature) and commit it at
        all but ``keep [B]`` of the ``pending`` positions, chosen by the sampler's order. Returns
        ``(x, pending, logp, committed)``; ``logp`` is the log-distribution the draw came from."""
        raise NotImplementedError

    def run_steps(self, predict: Predict, teacher: Teacher, x: Tensor, steps: int, start: int = 0,
                  stop: Optional[int] = None, pending: Optional[Tensor] = None,
                  generator: Optional[torch.Generator] = None, temperature: Optional[float] = None,
                  record: bool = False):
        """Steps ``start .. stop-1`` of the ``steps``-step plan from state ``x`` (pending positions: ``pending``,
        default the [M] ones), logits from ``predict``. ``temperature`` None follows the sampler's own. Returns
        the tokens, or with ``record`` ``(tokens, [(logp, committed) per step])``."""
        stop = steps if stop is None else stop
        pending = (x == teacher.mask_id) if pending is None else pending
        plan = self.plan(steps, x.shape[1])
        self.begin(x.shape[0], x.shape[1], teacher, x.device, generator)
        trace = []
        for s in range(start, stop):
            keep = pending.sum(1).clamp(max=plan[s])
            if not record and bool((pending.sum(1) == keep).all()):
                continue   # nothing to reveal: skip the forward, as ``sample`` does
            inv = self.inverse_temperature_at(s, steps) if temperature is None else 1 / temperature
            x, pending, logp, committed = self.reveal(predict(x, s, pending), x, pending, keep, s, steps,
                                                      generator, inv)
            trace.append((logp, committed))
        return (x, trace) if record else x


class Discriminator(Plugin):
    """Soft-Di[M]O GAN head on (masked) embeddings: D(emb [B, L, D], r [B], cond) -> logit [B]."""

    def build(self, teacher: Teacher, teacher_network: nn.Module) -> nn.Module:
        raise NotImplementedError


class Reward(Plugin):
    """A differentiable reward on decoded images: higher is better, shape [B]."""

    def __call__(self, images: Tensor, cond: Any, teacher: Teacher) -> Tensor:
        raise NotImplementedError


class Search(Plugin):
    """Test-time search on a trained student: samples for given conditions, picked or optimised by the rewards
    ``sum_i lambda_i R_i`` its config names (TTEO, best-of-N)."""

    def search(self, method: "Method", network: nn.Module, teacher: Teacher, cond: Tensor, temperature: float,
               generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Tokens ``[B, L]`` for ``cond [B]`` and their rewards ``[B]`` (decoded hard tokens, on the CPU)."""
        raise NotImplementedError

    def reward(self, tokens: Tensor, cond: Tensor, teacher: Teacher) -> Tensor:
        """The search's reward of hard tokens ``[B, L]``: ``[B]`` on the CPU."""
        raise NotImplementedError

    def cost(self) -> int:
        """Generator + reward forwards per condition (a backward counts 2): best-of-N at equal compute."""
        raise NotImplementedError


class Metric(Plugin):
    """A metric over generated samples, computed in the feature space of the task's evaluator.
    ``compute`` returns named scalars; ``higher_is_better`` says which way each one is good."""
    higher_is_better: ClassVar[dict[str, bool]] = {}

    def compute(self, data: "EvalData") -> dict[str, float]:
        raise NotImplementedError


class SampleEvaluator(Plugin):
    """Plugin kind ``evaluator``: scores a generator by sampling it at every sampling seed and computing metrics of
    the samples (``embedded``: the task's :class:`Evaluator` and the metric plugins; ``inception``: streamed
    Inception FID/IS). ``python -m core.run evaluate`` and the benchmark suites run it. ``higher_is_better``: the
    direction of the metrics it computes itself, not through metric plugins."""
    higher_is_better: ClassVar[dict[str, bool]] = {}

    def run(self, generate: Callable[[Tensor, torch.Generator], Tensor], teacher: Teacher, ev: dict,
            seeds: list[int], desc: str = "sampling", extra: Optional[Callable[["Samples"], dict]] = None
            ) -> tuple[list[dict[str, float]], list[Tensor], int]:
        """Per-seed metrics, the generated tokens (generation order, every seed) and the samples per seed.
        ``generate(cond, generator) -> tokens``; ``ev``: a resolved ``eval`` section (``samples_per_class``,
        ``batch_size``, ``metrics``); ``extra(samples) -> dict``: more per-seed metrics, where samples are kept."""
        raise NotImplementedError

    def unavailable(self) -> Optional[str]:
        """Why it cannot run on this machine (e.g. missing reference statistics), or None when it can."""
        return None

    def identity(self) -> dict:
        """What, beyond its name, changes its results (hashed into a result's ``config_hash``)."""
        return {}


@dataclass
class Samples:
    images: Tensor                   # [N, C, H, W] in [0, 1]
    labels: Optional[Tensor] = None  # conditioning classes [N]
    tokens: Optional[Tensor] = None


@dataclass
class EvalData:
    """Features (and class logits) of real and generated images, computed once per evaluation."""
    real_features: Tensor
    fake_features: Tensor
    real_logits: Optional[Tensor] = None
    fake_logits: Optional[Tensor] = None
    real_labels: Optional[Tensor] = None
    fake_labels: Optional[Tensor] = None
    samples: Optional[Samples] = None
    evaluator: Optional[Any] = None  # the task's evaluator, for exact metrics of known distributions


# ---------------------------------------------------------------------------------------------------
# Methods: the algorithm only; the engine owns the loop, DeepSpeed, checkpoints and logging
# ---------------------------------------------------------------------------------------------------

@dataclass
class Role:
    """A model the method needs. Trainable roles become DeepSpeed engines with their own optimizer."""
    module: nn.Module
    trainable: bool = True
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: Optional[float] = None
    ema_decay: Optional[float] = None     # keep an EMA copy (with warm-up min(decay, (1+k)/(10+k)))
    nan_to_num: bool = False              # official Di[M]O: nan -> 0, inf -> +-1e5 in grads
    train_mode: bool = False              # frozen roles only: keep dropout on (official MaskGit teacher)
    checkpointed: bool = False            # frozen roles only: weights the method changes during training
                                          # (e.g. SDTT's round teacher) are saved in checkpoints


@dataclass
class SetupContext:
    teacher: Teacher
    plugins: dict[str, Plugin]            # the method's other plugins by kind (divergence, init, ...)
    device: torch.device
    world_size: int
    rank: int
    micro_batch: int                      # per-process batch of one micro-step: batch_size / (world x grad_accum)
    teacher_network: nn.Module            # loaded, frozen


@dataclass
class StepContext:
    """What ``train_step`` (and ``run_stage``) get: the step, the role handles and the batch. A method reaches
    its roles only through these handles, never through a DeepSpeed engine:

    * ``models[role](...)``: the forward (through the engine for trainable roles, so ``update`` can backprop);
    * ``update(role, loss)``: backward, gradient clipping, the optimizer and LR-schedule step (with
      ``trainer.grad_accum=k``, the engine runs k micro-steps in lockstep and steps at the k-th; never call it
      inside a ``mode`` block, which the other micro-steps would then run in);
    * ``mode(role, training)``: a block in which the role runs in train (dropout) or eval mode;
    * ``module(role)``: the bare network, for a forward that must not arm the engine's backward hooks;
    * ``copy_weights(dst, src)``: role ``dst``'s weights := role ``src``'s, in place (ZeRO-safe);
    * ``Role(checkpointed=True)`` (declared in ``setup``): a frozen role the method changes is saved and
      restored with checkpoints.
    """
    step: int
    models: dict[str, Any]                # role -> engine (trainable) or module (frozen)
    update: Callable[[str, Tensor], None] # update(role, loss): backward, clip, optimizer step
    batch: Optional[tuple[Tensor, Tensor]] = None   # real (tokens, cond) if the method needs data
    device: torch.device = torch.device("cpu")
    autocast: Callable[[], Any] = field(default=lambda: torch.autocast("cpu", enabled=False))
    log: bool = False                     # this step's logs are recorded: methods may add costlier diagnostics
    # The engine passes its own; these defaults serve contexts built without one (tests, benchmarks):
    module: Optional[Callable[[str], nn.Module]] = None
    copy_weights: Optional[Callable[[str, str], None]] = None

    def __post_init__(self):
        if self.module is None:
            self.module = lambda name: self.models[name]
        if self.copy_weights is None:
            self.copy_weights = lambda dst, src: self.module(dst).load_state_dict(self.module(src).state_dict())

    @contextlib.contextmanager
    def mode(self, role: str, training: bool):
        """Role ``role`` in train (``training``: dropout on) or eval mode inside the block, in its previous mode
        afterwards (the engine keeps trainable roles in train mode, frozen ones in ``Role.train_mode``)."""
        network = self.module(role)
        was = network.training
        network.train(training)
        try:
            yield
        finally:
            network.train(was)


class Method(Plugin, UsesRecipes):
    """One training/distillation algorithm.

    ``uses``: plugin kinds it takes from the config (with ``defaults`` naming the default choice).
    ``needs_data``: the engine feeds real ``(tokens, cond)`` batches.
    ``student_role``: the role exported at the end (its EMA if it has one).
    """
    uses: ClassVar[tuple[str, ...]] = ()
    defaults: ClassVar[dict[str, str]] = {}
    trainer_defaults: ClassVar[dict[str, Any]] = {}
    needs_data: ClassVar[bool] = False
    student_role: ClassVar[str] = "generator"
    needs_teacher_weights: ClassVar[bool] = True   # False for methods that train a teacher from scratch
    sample_steps: ClassVar[tuple[int, ...]] = (1,)  # step counts its student samples at (evaluation rows)
    suites: ClassVar[tuple[str, ...]] = ()           # benchmark suites whose other_methods rows include it;
                                                     # declared per class, never inherited (see belongs_to)
    offline_stages: ClassVar[tuple[str, ...]] = ()  # e.g. ("pair_generation",): the engine runs each through
                                                    # run_stage before the steps stage_steps names

    @classmethod
    def belongs_to(cls, suite: str) -> bool:
        """Whether the class itself declares ``suite``: a subclass joins a suite only by declaring it."""
        return suite in cls.__dict__.get("suites", ())

    @classmethod
    def applicable(cls, teacher: Teacher) -> bool:
        """Whether this method can run on ``teacher`` (suites list only applicable methods)."""
        return not cls.needs_data or teacher.dataset() is not None

    def attach(self, teacher: Teacher, plugins: dict[str, Plugin]) -> None:
        """Called by core before ``setup``/``generate``: the teacher and the plugins named in ``uses``."""
        self.teacher = teacher
        self.plugins = plugins

    def setup(self, ctx: SetupContext) -> dict[str, Role]:
        raise NotImplementedError

    def train_step(self, ctx: StepContext) -> dict[str, float]:
        raise NotImplementedError

    def stage_steps(self, name: str) -> tuple[int, ...]:
        """The steps that offline stage ``name`` runs before: before step 0 unless the method says otherwise (ReDi
        makes each phase's pairs before the phase's first step)."""
        return (0,)

    def run_stage(self, name: str, ctx: StepContext) -> None:
        """Run offline stage ``name`` (one of ``offline_stages``) on every rank before step ``ctx.step``, keeping
        what the steps need on the method (``ctx.batch`` is None; nothing is updated). The engine calls it at
        the ``stage_steps``, and on resume once more for the latest of them at or before the resumed step, so
        a stage must be cached (``core/stages.py``): run again, it reads its output back without remaking it."""
        raise NotImplementedError(f"{type(self).__name__} declares offline_stages={self.offline_stages} "
                                  f"but does not implement run_stage")

    def student_network(self) -> nn.Module:
        """An untrained module with the exported student's architecture (``load_student`` loads its weights);
        methods whose student adds parameters to the teacher's network (di4c's lambda input) override it."""
        return self.teacher.build_network(load_weights=False)

    def finalize(self, student: nn.Module, run_dir) -> None:
        """Called on rank 0 after the student is exported (e.g. mdm caches a new teacher)."""

    def generate(self, network: nn.Module, cond: Tensor, generator: Optional[torch.Generator] = None,
                 steps: Optional[int] = None, **kwargs: Any) -> Tensor:
        """Sample tokens from the exported student for conditions ``cond`` (``steps``: one of
        ``sample_steps``; None means the first)."""
        raise NotImplementedError
