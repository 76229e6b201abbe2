"""The training engine: runs any method. One DeepSpeed engine per trainable role, frozen models in
inference, data batches, the method's offline stages, EMA, checkpoints with resume, logging and a progress bar.
Methods hold only their algorithm and reach their roles through StepContext handles."""
from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, Sampler, TensorDataset
from tqdm import tqdm

from core import checkpoint, distributed as dist
from core.config import RunConfig, to_yaml
from core.errors import UserError
from core.export import save_student
from core.factory import build_method, build_plugins  # noqa: F401  (build_plugins: re-exported)
from core.health import Health
from core.interfaces import Role, SetupContext, StepContext
from core.tracking import MetricLogger


@dataclass
class RunResult:
    run_dir: Path
    student_path: Optional[Path]
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def run_dir_for(run: RunConfig) -> Path:
    return Path(run.trainer.output_dir or Path("runs") / f"{run.name}-{run.hash}")


def seed_step(seed: int, step: int, rank: int) -> None:
    """Every step draws from a seed fixed by (seed, step, rank): a resumed run repeats exactly."""
    torch.manual_seed((seed * 1_000_003 + step * 7919 + rank * 104_729) % (2 ** 63))


def warmup(optimizer: torch.optim.Optimizer, steps: int):
    """torch's linear LR warm-up: step k (from 0) at (k + 1) / ``steps`` of the lr, the full lr from step
    ``steps`` - 1 on; None (a constant lr) for ``steps`` <= 1. The optimizer and its schedule are torch's and
    DeepSpeed steps them; its own ``WarmupLR`` would hold the lr at its minimum for the first two steps."""
    if steps <= 1:
        return None
    return torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1 / steps, total_iters=steps - 1)


class EpochStream(Sampler[int]):
    """One rank's sample indices, epoch after epoch without end, from position ``start`` of that stream: each
    epoch is the DistributedSampler's (a permutation seeded from (seed, epoch), every world-th index for this
    rank). Batches run on across epoch boundaries, so every batch is full and step k's batch depends on k only."""

    def __init__(self, shards: DistributedSampler, start: int):
        self.shards, self.start = shards, start

    def __iter__(self):
        epoch, offset = divmod(self.start, len(self.shards))
        while True:
            self.shards.set_epoch(epoch)
            yield from itertools.islice(iter(self.shards), offset, None)
            epoch, offset = epoch + 1, 0


def data_batches(tokens: torch.Tensor, cond: torch.Tensor, micro: int, seed: int, rank: int = 0, world: int = 1,
                 start: int = 0):
    """This rank's ``(tokens, cond)`` batches of ``micro`` samples for micro-steps ``start, start + 1, ...``
    (``trainer.grad_accum`` of them per optimizer step): torch's
    DataLoader over the data, shuffled and split across ranks by a DistributedSampler (on one process, epoch e
    is ``randperm(n)`` seeded ``31 seed + e``). Whole batches are indexed at once (``batch_size=None``)."""
    dataset = TensorDataset(tokens, cond)
    shards = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed * 31)
    batches = BatchSampler(EpochStream(shards, start * micro), micro, drop_last=False)
    return iter(DataLoader(dataset, sampler=batches, batch_size=None))


def zero3_gather(module: nn.Module, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    import deepspeed
    return deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None)


class _Cancelled(BaseException):
    """Ends a micro-step whose step already failed in another micro-step."""


class Lockstep:
    """A step's micro-steps (``calls``: the method's train_step on each micro-batch) in threads that run one at
    a time, round robin: each runs until its next role update (``pause``), then the next one runs. So the n-th
    update of a role is accumulated over every micro-step, and its optimizer step taken at the last one, before
    any micro-step goes on past it: what follows an update sees the stepped weights, as with one batch of all
    the micro-batches. This is how the official Di[M]O code accumulates (all generator micro-batches, the
    generator step, then all aux micro-batches sampled from the updated generator, the aux step). Only one
    thread runs at a time, in a fixed order, so the global RNG's draws and the results are deterministic."""

    def __init__(self, calls: list, device: torch.device):
        self.calls, self.device = calls, device
        self.turn: Optional[int] = 0
        self.finished = [False] * len(calls)
        self.results: list = [None] * len(calls)
        self.error: Optional[BaseException] = None
        self.ready = threading.Condition()
        self.local = threading.local()

    def run(self) -> list:
        threads = [threading.Thread(target=self._micro_step, args=(i,), daemon=True) for i in range(len(self.calls))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if self.error is not None:
            raise self.error
        return self.results

    def pause(self) -> None:
        """Called by the running micro-step after a role update: the next micro-step runs, this one waits."""
        index = self.local.index
        self._hand_over(index)
        self._wait(index)

    def _micro_step(self, index: int) -> None:
        self.local.index = index
        try:
            self._wait(index)
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)   # the current CUDA device is per thread
            self.results[index] = self.calls[index]()
        except _Cancelled:
            pass
        except BaseException as exc:   # re-raised by run(), in the engine's thread
            self.error = exc
        finally:
            self.finished[index] = True
            self._hand_over(index)

    def _wait(self, index: int) -> None:
        with self.ready:
            self.ready.wait_for(lambda: self.turn == index)
        if self.error is not None:
            raise _Cancelled

    def _hand_over(self, index: int) -> None:
        """The turn passes to the next unfinished micro-step after ``index`` (itself if it is the last)."""
        n = len(self.calls)
        with self.ready:
            following = [j % n for j in range(index + 1, index + 1 + n) if not self.finished[j % n]]
            self.turn = following[0] if following else None
            self.ready.notify_all()


def as_scalar(value, device: torch.device) -> torch.Tensor:
    """A logged value (a float or a device tensor) as a float64 scalar on ``device``, without a host sync."""
    return torch.as_tensor(value).detach().to(device, torch.float64).reshape(())


class Trainer:
    """Trains ``run``'s method. ``built``: its (method, teacher) when the caller has built them already (the main
    job builds them once for pre-training, training and evaluation); otherwise they are built in ``setup``."""

    def __init__(self, run: RunConfig, built: Optional[tuple] = None):
        self.cfg, self.tcfg, self.built = run, run.trainer, built
        self.hash = run.hash
        self.run_dir = run_dir_for(run)

    # -- setup -----------------------------------------------------------------------------------
    def _deepspeed_config(self, role: Role, micro: int, trainable: bool) -> dict:
        stage = self.tcfg.zero_stage if trainable else (3 if self.tcfg.zero_stage == 3 else 0)
        cfg = {"train_micro_batch_size_per_gpu": micro, "gradient_accumulation_steps": self.accum,
               "zero_optimization": {"stage": stage}, "steps_per_print": 10 ** 9, "wall_clock_breakdown": False,
               **self._precision_config(trainable)}
        if trainable and role.grad_clip:
            cfg["gradient_clipping"] = role.grad_clip
        return cfg

    def _precision_config(self, trainable: bool) -> dict:
        """DeepSpeed's engine.forward switches an outer torch.autocast off unless its own section asks for it,
        so bf16 is declared to every engine here; the optimizer's master weights and state stay fp32 either way.
        ``weights`` (DeepSpeed's bf16 mode) applies to trainable roles; frozen engines always autocast."""
        if not self.use_bf16:
            return {}
        if trainable and self.tcfg.bf16_mode == "weights":
            return {"bf16": {"enabled": True}}
        return {"torch_autocast": {"enabled": True, "dtype": "bfloat16"}}

    def _engine(self, name: str, role: Role, micro: int):
        import deepspeed
        module = role.module.to(self.device)
        if self.tcfg.compile:   # in place: parameter names (checkpoints, EMA) are unchanged
            module.compile()
        if not role.trainable:
            module.train(role.train_mode).requires_grad_(False)
            if self.tcfg.zero_stage == 3:   # shard frozen models too when training is ZeRO-3
                engine, *_ = deepspeed.initialize(model=module, config=self._deepspeed_config(role, micro, False))
                return engine
            return module
        params = [p for p in module.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"role '{name}' is trainable but has no parameter that requires grad")
        opt = torch.optim.Adam(params, lr=role.lr, betas=role.betas, eps=role.eps, weight_decay=role.weight_decay)
        engine, *_ = deepspeed.initialize(model=module, optimizer=opt, lr_scheduler=warmup(opt, role.warmup_steps),
                                          config=self._deepspeed_config(role, micro, True))
        engine.train()
        return engine

    def setup(self) -> None:
        self.device = dist.init(self.tcfg.device)
        self.rank, self.world = dist.rank(), dist.world_size()
        self.use_bf16 = self.tcfg.precision == "bf16" or (self.tcfg.precision == "auto"
                                                             and self.device.type == "cuda")
        if self.device.type == "cuda":   # TF32 for the fp32 matmuls that remain (losses, fp32 runs)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        self.accum = self.tcfg.grad_accum
        if self.tcfg.batch_size % (self.world * self.accum):
            raise UserError(f"trainer.batch_size={self.tcfg.batch_size} is not divisible by the {self.world} "
                            f"process(es) x trainer.grad_accum={self.accum}; valid batch sizes: multiples of "
                            f"{self.world * self.accum}")
        self.micro = self.tcfg.batch_size // (self.world * self.accum)
        self._lockstep: Optional[Lockstep] = None
        self.run_dir = Path(dist.broadcast_object(str(self.run_dir)))
        if dist.is_main():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            checkpoint.atomic_write_text(self.run_dir / "config.yaml", to_yaml(self.cfg))
            checkpoint.atomic_write_text(self.run_dir / "config_hash.txt", self.hash + "\n")
        dist.barrier()
        torch.manual_seed(self.tcfg.seed)
        self.method, self.teacher = self.built or build_method(self.cfg)
        teacher_net = None
        if self.method.needs_teacher_weights:
            teacher_net = self.teacher.build_network(load_weights=True).to(self.device).eval().requires_grad_(False)
        ctx = SetupContext(teacher=self.teacher, plugins=self.method.plugins, device=self.device,
                           world_size=self.world, rank=self.rank, micro_batch=self.micro, teacher_network=teacher_net)
        self.roles = self.method.setup(ctx)
        changed = [n for n, r in self.roles.items() if r.checkpointed and not r.trainable]
        if changed and self.tcfg.zero_stage == 3:   # copy_weights into a sharded frozen role is not supported
            name = self.cfg.plugin("method").name
            raise UserError(f"method '{name}' copies weights into its frozen role(s) {', '.join(changed)}, which "
                            f"trainer.zero_stage=3 shards; valid trainer.zero_stage for {name}: 0, 1, 2")
        # EMA copies are taken before DeepSpeed wraps (and, under ZeRO-3, partitions) the modules.
        self.emas = {n: copy.deepcopy(r.module).to(self.device).eval().requires_grad_(False)
                     for n, r in self.roles.items() if r.ema_decay}
        self.models = {name: self._engine(name, role, self.micro) for name, role in self.roles.items()}
        self.engines = {n: m for n, m in self.models.items() if self.roles[n].trainable}
        self.data = self._dataset() if self.method.needs_data else None
        if self.method.needs_data and self.data is None:
            raise UserError(f"method '{self.cfg.plugin('method').name}' needs real data, but teacher "
                            f"'{self.cfg.plugin('teacher').name}' provides none")

    def _dataset(self):
        """Real ``(tokens, conditions)`` for methods that need data (a benchmark may substitute its own)."""
        return self.teacher.dataset()

    def _module(self, name: str) -> nn.Module:
        model = self.models[name]
        return model.module if hasattr(model, "module") else model

    def _copy_weights(self, dst: str, src: str) -> None:
        """Role ``dst``'s weights := role ``src``'s (e.g. SDTT's round teacher := the student), in place."""
        source = self._module(src)
        with torch.no_grad(), zero3_gather(source, self.tcfg.zero_stage == 3):
            self._module(dst).load_state_dict(source.state_dict())

    # -- the loop --------------------------------------------------------------------------------
    def _autocast(self):
        if self.use_bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _context(self, step: int, batch=None) -> StepContext:
        return StepContext(step=step, models=self.models, update=self._update, module=self._module,
                           copy_weights=self._copy_weights, batch=batch, device=self.device,
                           autocast=self._autocast, log=self._logging)

    def _run_stages(self, step: int, first: bool) -> None:
        """The method's offline stages due before ``step`` (after its reseeding), on every rank, then a barrier.
        The first step of a resumed run re-enters the latest earlier occurrence of each stage instead: its
        output is cached, so this reads it back for the steps that follow, and earlier occurrences are skipped."""
        for name in self.method.offline_stages:
            points = self.method.stage_steps(name)
            if step in points or (first and any(p < step for p in points)):
                self.method.run_stage(name, self._context(step))
                dist.barrier()

    def _train_step(self, step: int, batches) -> dict:
        """The method's step on ``trainer.grad_accum`` micro-batches (in Lockstep when more than one), each log
        averaged over the micro-steps that gave a value (nan, e.g. an empty diagnostic bin, counts as none;
        non-finite losses are Health's to report)."""
        contexts = [self._context(step, None if batches is None else tuple(t.to(self.device) for t in next(batches)))
                    for _ in range(self.accum)]
        if self.accum == 1:
            return self.method.train_step(contexts[0])
        self._lockstep = Lockstep([functools.partial(self.method.train_step, c) for c in contexts], self.device)
        try:
            micro_logs = self._lockstep.run()
        finally:
            self._lockstep = None
        keys = dict.fromkeys(k for logs in micro_logs for k in logs)
        return {k: torch.stack([as_scalar(logs[k], self.device) for logs in micro_logs if k in logs]).nanmean()
                for k in keys}

    def _update(self, role: str, loss: torch.Tensor) -> None:
        """ctx.update: backward (DeepSpeed scales the loss by 1 / grad_accum and accumulates); at the role's
        accumulation boundary also the repairs, diagnostics and the optimizer step. In Lockstep the next
        micro-step runs after it."""
        self._backward_and_step(role, loss)
        if self._lockstep is not None:
            self._lockstep.pause()

    def _backward_and_step(self, role: str, loss: torch.Tensor) -> None:
        engine = self.engines[role]
        engine.backward(loss)
        boundary = engine.is_gradient_accumulation_boundary()
        if not self.health.observe(role, loss, engine, boundary):   # trainer.on_nonfinite=skip dropped this update
            return
        if not boundary:
            engine.step()   # counts the micro-step; DeepSpeed steps the optimizer at the boundary only
            return
        grads = [p.grad for p in engine.module.parameters() if p.grad is not None]   # none under ZeRO-2/3
        diagnose = self._logging and bool(grads)
        nonfinite = torch.stack([(~torch.isfinite(g)).sum() for g in grads]).sum() if diagnose else None
        if self.roles[role].nan_to_num and self.tcfg.zero_stage < 2:
            for g in grads:
                torch.nan_to_num_(g, nan=0.0, posinf=1e5, neginf=-1e5)
        if diagnose:
            self._grad_diagnostics(role, grads, nonfinite)
        engine.step()
        norm = engine.get_global_grad_norm()   # None where DeepSpeed's optimizer path does not compute it
        if norm is not None:
            self._grad_norms[role] = norm      # a tensor or float; read at log steps only

    def _grad_diagnostics(self, role: str, grads: list, nonfinite: torch.Tensor) -> None:
        """The learning signal the optimizer gets (device tensors, read at the log step): the global norm after
        nan_to_num and before clipping, the factor clipping scales it by, the share of entries that were nan/inf
        (zeroed or saturated by nan_to_num) and the share that are exactly zero."""
        norm = torch.linalg.vector_norm(torch.stack([n.float() for n in torch._foreach_norm(grads)]))
        total = sum(g.numel() for g in grads)
        self._grad_norms[role] = norm
        clip = self.roles[role].grad_clip
        if clip:
            self._grad_logs[f"clip_scale/{role}"] = (clip / (norm + 1e-6)).clamp(max=1.0)
        self._grad_logs[f"grad_nonfinite_frac/{role}"] = nonfinite.double() / total
        self._grad_logs[f"grad_zero_frac/{role}"] = torch.stack([(g == 0).sum() for g in grads]).sum().double() / total

    def _update_ema(self, step: int) -> None:
        for name, ema in self.emas.items():
            decay = min(self.roles[name].ema_decay, (1 + step) / (10 + step))
            src = self._module(name)
            with torch.no_grad(), zero3_gather(src, self.tcfg.zero_stage == 3):
                ema_params = list(ema.parameters())
                src_params = [p.detach().to(e.dtype) for e, p in zip(ema_params, src.parameters())]
                torch._foreach_lerp_(ema_params, src_params, 1 - decay)   # one fused kernel, not one per tensor

    def train(self) -> RunResult:
        t0 = time.time()
        self.setup()
        start = 0
        ckpt_root = self.run_dir / "checkpoints"
        resume = self.tcfg.resume
        if resume == "auto":   # the newest readable checkpoint; damaged ones are skipped with a warning
            start = checkpoint.resume_latest(ckpt_root, self.engines, self.emas, self.hash,
                                             self._frozen_checkpointed())
        elif resume != "never":
            if not (Path(resume) / "trainer_state.json").is_file():
                raise UserError(f"trainer.resume='{resume}' is not a checkpoint folder (no trainer_state.json); "
                                f"valid: auto, never, or a path to a step-XXXXXXXX folder")
            start = checkpoint.load(Path(resume), self.engines, self.emas, self.hash, self._frozen_checkpointed())
        logger = MetricLogger(self.run_dir, self.cfg.as_dict(), self.tcfg.wandb, self.tcfg.wandb_project,
                              self.run_dir.name)
        if start:
            logger.console(f"dimo: resumed from step {start} in {ckpt_root}")
        steps = self.tcfg.steps
        bar = tqdm(total=steps, initial=start, disable=not (dist.is_main() and self.tcfg.progress),
                   desc=self.cfg.name.replace("-", ":", 1), dynamic_ncols=True)
        history, last = [], time.time()
        batches = None if self.data is None else data_batches(*self.data, self.micro, self.tcfg.seed,
                                                              self.rank, self.world, start * self.accum)
        self.health = Health(self.tcfg.on_nonfinite, self.world,
                             [n for n, r in self.roles.items() if r.trainable and r.nan_to_num])
        for step in range(start, steps):
            seed_step(self.tcfg.seed, step, self.rank)
            self._grad_norms: dict[str, Any] = {}
            self._grad_logs: dict[str, Any] = {}
            self.health.step = step
            self._logging = (step + 1) % self.tcfg.log_every == 0 or step + 1 == steps
            self._run_stages(step, first=step == start)
            try:
                logs = self._train_step(step, batches)
            except RuntimeError as exc:   # e.g. sampling from nan probabilities: name step, roles, last values
                err = self.health.explain(exc, {n: self._module(n) for n in self.engines})
                if err is None:
                    raise
                raise err from exc
            self._update_ema(step)
            done = step + 1
            if self._logging:
                logs = {**logs, **self._grad_logs}
                now = time.time()
                rate = self.tcfg.log_every / max(now - last, 1e-9)
                last = now
                record = {**self._mean_over_ranks(logs),
                          **{f"grad_norm/{k}": float(v) for k, v in self._grad_norms.items() if v is not None},
                          "lr": self._lr(), "samples_per_s": rate * self.tcfg.batch_size, **self.health.summary()}
                history.append({"step": done, **record})
                logger.log(done, record)
                self.health.enforce()   # stop (or warn) on nan/inf, after the record is written
                bar.set_postfix({**{k: f"{record[k]:.4g}" for k in list(logs)[:3]},
                                 "samples/s": f"{record['samples_per_s']:.0f}"})
            bar.update(1)
            every = self.tcfg.checkpoint_every
            if every and done % every == 0 and done < steps:
                self.health.enforce()   # a non-finite state is never saved
                self._save(ckpt_root, done)
        bar.close()
        student = self._export()
        logger.close()
        dist.barrier()
        return RunResult(self.run_dir, student, history, time.time() - t0)

    def _mean_over_ranks(self, logs: dict) -> dict:
        """Logged values are averaged over processes, so curves compare across world sizes."""
        # Methods may return device tensors: they are read here, at log steps, never inside a step.
        values = (torch.stack([as_scalar(v, self.device) for v in logs.values()]) if logs
                  else torch.zeros(0, dtype=torch.float64, device=self.device))
        if self.world > 1:   # on this rank's device: NCCL reduces CUDA tensors only
            torch.distributed.all_reduce(values)
            values /= self.world
        return dict(zip(logs, values.tolist()))

    def _lr(self) -> float:
        for engine in self.engines.values():
            return float(engine.get_lr()[0])
        return 0.0

    def _frozen_checkpointed(self) -> dict:
        """Frozen roles whose weights the method changes (Role.checkpointed), saved with checkpoints (never
        sharded: setup refuses ZeRO-3 for such methods)."""
        return {n: self._module(n) for n, r in self.roles.items() if not r.trainable and r.checkpointed}

    def _save(self, root: Path, step: int) -> None:
        checkpoint.save(root, step, self.engines, self.emas,
                        {"config_hash": self.hash, "config": self.cfg.as_dict()}, self.tcfg.keep_checkpoints,
                        self._frozen_checkpointed())

    def _export(self) -> Path:
        role = self.method.student_role
        use_ema = role in self.emas
        src = self.emas[role] if use_ema else self._module(role)
        with zero3_gather(src, self.tcfg.zero_stage == 3 and not use_ema):
            if dist.is_main():
                save_student(src, self.cfg, self.run_dir, used_ema=use_ema)
                self.method.finalize(src, self.run_dir)
        dist.barrier()
        return self.run_dir / "student.safetensors"
