"""Runs a suite's entries through the real pipeline and writes one validated result file per entry: the
orchestration only. Samples are scored by the suite's evaluator plugin (``plugins/evaluators.py``), performance is
measured by ``benchmarks.perf``, records are built and validated by ``benchmarks.results``.

  * teacher / sampler entries: the (pre-trained, cached) teacher sampled by a sampler plugin at k steps;
  * distillation entries: ``core.engine.Trainer`` trains the method (a finished run folder with the same
    core config hash is reused), then the exported student is sampled at its step count;
  * performance entries: a few training iterations of the method and of plain MDM on the same teacher
    network and batch, and sampling throughput of the student against the teacher's k-step sampling, each
    in a fresh process so that peak memory is the method's own.

An entry whose result file exists with the same config hash is skipped (``force`` re-runs it).
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import torch
from tqdm import tqdm

from benchmarks import results
from benchmarks.perf import measure_entry
from benchmarks.suites import Entry, Suite, entries
from core.errors import UserError

if TYPE_CHECKING:
    from core.config import RunConfig

QUIET_TRAINER = {"wandb": "disabled", "progress": False}


@dataclass
class Outcome:
    entry: Entry
    status: str          # "ran", "skipped", "failed"
    path: Path
    detail: str = ""


# ------------------------------------------------------------------------------------------------
# configs
# ------------------------------------------------------------------------------------------------

def eval_section(suite: Suite, entry: Entry) -> dict:
    from core.config import lookup
    from core.evaluate import metrics_for
    e = suite.eval
    return {"enabled": False, "samples_per_class": e.samples_per_class, "batch_size": e.batch_size,
            "seed": e.seeds[0], "teacher_steps": [entry.steps],
            "metrics": metrics_for(lookup("teacher", entry.teacher["name"]), e.metrics)}


def resolve_entry(suite: Suite, entry: Entry) -> "RunConfig":
    """The validated config of an entry (core's resolution: defaults, the teacher's recipe, overrides)."""
    from core.config import resolve_dict
    ev = eval_section(suite, entry)
    if entry.kind == "teacher":
        # The teacher's weights come from its mdm recipe: that config, plus the sampler being measured.
        return resolve_dict({"method": {"name": "mdm"}, "teacher": copy.deepcopy(entry.teacher),
                             "sampler": copy.deepcopy(entry.sampler), "trainer": {"seed": entry.seed, **QUIET_TRAINER},
                             "eval": ev})
    sections = copy.deepcopy(entry.sections)
    trainer = {**sections.pop("trainer", {}), "seed": entry.seed, **QUIET_TRAINER}
    if entry.kind == "perf":
        perf = suite.performance
        trainer.update(batch_size=perf.batch_size, steps=perf.warmup + perf.iters, log_every=1,
                       checkpoint_every=0)
    return resolve_dict({**sections, "teacher": copy.deepcopy(entry.teacher), "trainer": trainer, "eval": ev})


def hashed_entry(suite: Suite, entry: Entry, evaluator) -> dict:
    """The entry's own settings that change its result (on top of the resolved config)."""
    out = {"kind": entry.kind, "label": entry.label, "group": entry.group, "steps": entry.steps,
           "sampler": entry.sampler, "suite_version": suite.version}
    if entry.search is not None:
        out["search"] = entry.search
    if entry.kind == "perf":
        out["performance"] = suite.performance.model_dump()
    else:
        out["eval_seeds"] = suite.eval.seeds
        out["evaluator"] = suite.evaluator["name"]
        out.update(evaluator.identity())
    return out


def result_path(out_dir: Path, suite: Suite, entry: Entry) -> Path:
    return Path(out_dir) / suite.name / f"{entry.id}.json"


def up_to_date(path: Path, config_hash: str, teacher_sha: Optional[str] = None) -> bool:
    """The result exists with this config hash (and, when known, was made with these teacher weights:
    the teacher cache is keyed by architecture, so a re-trained teacher must invalidate results)."""
    if not path.is_file():
        return False
    try:
        record = results.read(path)
    except UserError as exc:
        print(f"benchmarks: {exc}\nbenchmarks: re-running that entry")
        return False
    return record.config_hash == config_hash and (teacher_sha is None or record.teacher_sha256 == teacher_sha)


# ------------------------------------------------------------------------------------------------
# teachers, students
# ------------------------------------------------------------------------------------------------

def build_teacher(section: dict):
    from core.config import section_config
    cls, cfg = section_config({"teacher": section}, "teacher")
    return cls(cfg)


def ensure_teacher(section: dict, seed: int, work_dir: Path) -> None:
    """Embedded teachers without cached weights are pre-trained with mdm first (as the main job does)."""
    from core.config import config_hash, resolve_dict
    from core.pipeline import main_job
    if build_teacher(section).has_weights():
        return
    cfg = resolve_dict({"method": {"name": "mdm"}, "teacher": copy.deepcopy(section),
                        "trainer": {"seed": seed, **QUIET_TRAINER}, "eval": {"enabled": False}})
    cfg = cfg.updated({"trainer": {"output_dir": str(work_dir / f"mdm-{section['name']}-{config_hash(cfg)}")}})
    print(f"benchmarks: pre-training the {section['name']} teacher (method=mdm, its recipe)")
    main_job(cfg)


def student_dir(resolved: dict, work_dir: Path) -> Path:
    """The run folder of a trained student: named by the core config hash and the teacher's weights."""
    from core.config import config_hash
    weights = (results.teacher_sha256(build_teacher(resolved["teacher"])) or "none")[:8]
    return work_dir / f"{resolved['method']['name']}-{resolved['teacher']['name']}-{config_hash(resolved)}-t{weights}"


def train_student(resolved: dict, work_dir: Path) -> tuple[Path, Optional[float]]:
    """Train (or reuse a finished run folder with the same core config hash and teacher weights).
    Returns (run folder, training seconds or None when reused)."""
    from core.config import config_hash
    from core.engine import Trainer
    ensure_teacher(resolved["teacher"], resolved["trainer"]["seed"], work_dir)
    run_dir = student_dir(resolved, work_dir)
    card = run_dir / "student.json"
    if card.is_file() and json.loads(card.read_text()).get("config_hash") == config_hash(resolved):
        return run_dir, None
    return run_dir, Trainer(resolved.updated({"trainer": {"output_dir": str(run_dir)}})).train().seconds


def build_search(search: dict):
    """The search plugin of a test-time row (``{mode: tteo|best_of_n, ...its options}``)."""
    from registry.registry import build
    return build("search", search["mode"], {k: v for k, v in search.items() if k != "mode"})


def search_reward(search, teacher) -> Callable:
    """Per-seed metric of a test-time search row: the mean reward of its final (hard) samples."""
    return lambda samples: {"reward": float(search.reward(samples.tokens, samples.labels, teacher).mean())}


def search_generator(search, method, teacher, student) -> Callable:
    """Test-time search rows: TTEO (multi-start) or plain best-of-N, picking by the row's rewards."""
    temperature = getattr(method.config, "sample_temperature", 1.0)
    return lambda c, g: search.search(method, student, teacher, c, temperature, g)[0]


# ------------------------------------------------------------------------------------------------
# one entry
# ------------------------------------------------------------------------------------------------

class Runner:
    def __init__(self, suite: Suite, out_dir: Path, work_dir: Path, force: bool = False):
        self.suite, self.out_dir, self.work_dir, self.force = suite, Path(out_dir), Path(work_dir), force
        self._evaluator = None
        self._teacher_sha: dict[str, Optional[str]] = {}

    def current_teacher_sha(self, section: dict) -> Optional[str]:
        """sha256 of the teacher's weights as they are now (None: not trained yet, or no file)."""
        key = json.dumps(section, sort_keys=True)
        if key not in self._teacher_sha:
            self._teacher_sha[key] = results.teacher_sha256(build_teacher(section))
        return self._teacher_sha[key]

    def resolve(self, entry: Entry) -> "RunConfig":
        """The entry's config; a student initialised from another entry's student points at that run folder
        (named by that entry's config hash, so re-training the source re-runs this entry)."""
        resolved = resolve_entry(self.suite, entry)
        if entry.init_from and entry.kind != "perf":
            source = self.entry(entry.init_from)
            resolved = resolved.updated(
                {"method": {"init_from": str(student_dir(resolve_entry(self.suite, source), self.work_dir))}})
        return resolved

    def entry(self, entry_id: str) -> Entry:
        return next(e for e in entries(self.suite) if e.id == entry_id)

    def ensure_source(self, entry: Entry) -> None:
        """Train the student this entry starts from, if it is not trained yet."""
        if entry.init_from and entry.kind != "perf":
            train_student(resolve_entry(self.suite, self.entry(entry.init_from)), self.work_dir)

    def is_current(self, entry: Entry) -> tuple[bool, str, Path]:
        resolved = self.resolve(entry)
        h = results.entry_hash(resolved, hashed_entry(self.suite, entry, self.evaluator()))
        path = result_path(self.out_dir, self.suite, entry)
        return up_to_date(path, h, self.current_teacher_sha(entry.teacher)), h, path

    def evaluator(self):
        """The suite's evaluator plugin, built once (it keeps reference features across entries)."""
        if self._evaluator is None:
            from core.evaluate import build_evaluator
            self._evaluator = build_evaluator(self.suite.evaluator)
        return self._evaluator

    def availability(self) -> Optional[str]:
        """None when the suite can run here, else the reason it cannot (the suite is then skipped)."""
        reason = self.evaluator().unavailable()
        if reason:
            return reason
        for section in self.suite.teachers:
            try:
                teacher = build_teacher(section)
                teacher.checkpoint_path()   # a UserError when the weights are missing
            except UserError as exc:
                return f"teacher '{section['name']}' is not available here: {exc}"
        return None

    def run_entry(self, entry: Entry) -> Outcome:
        current, h, path = self.is_current(entry)
        if current and not self.force:
            return Outcome(entry, "skipped", path, "result with this config hash exists")
        t0 = time.time()
        self.ensure_source(entry)
        resolved = self.resolve(entry)
        if entry.kind == "perf":
            record = self._perf(entry, resolved)
        else:
            record = self._quality(entry, resolved)
        record.update(config_hash=h, wall_time_s=time.time() - t0)
        results.write(path, record)
        self._teacher_sha.clear()   # a teacher may have been pre-trained by this entry
        return Outcome(entry, "ran", path)

    def _record(self, entry: Entry, resolved: dict, device: torch.device, **fields) -> dict:
        used = [("evaluator", self.suite.evaluator["name"])] if entry.kind != "perf" else []
        if entry.search is not None:
            used.append(("search", entry.search["mode"]))
        info = {"suite": self.suite.name, "suite_version": self.suite.version, "id": entry.id, "group": entry.group,
                "label": entry.label, "teacher": entry.teacher["name"],
                "method": resolved["method"]["name"] if entry.kind != "teacher" else None,
                "sampler": (entry.sampler or {}).get("name"), "steps": entry.steps}
        return results.new_record(info, resolved, device, tuple(used), **fields)

    def _quality(self, entry: Entry, resolved: dict) -> dict:
        from core.config import config_hash
        from core.export import load_student
        from registry.registry import build
        train_seconds, train_hash = None, None
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if entry.kind == "teacher":
            ensure_teacher(resolved["teacher"], entry.seed, self.work_dir)
            teacher = build_teacher(resolved["teacher"])
            net = teacher.build_network(load_weights=True).to(device).eval()
            sampler = build("sampler", resolved["sampler"]["name"],
                            {k: v for k, v in resolved["sampler"].items() if k != "name"})
            generate = lambda c, g: sampler.sample(net, teacher, c, entry.steps, g)
            train_seed = None
        else:
            run_dir, train_seconds = train_student(resolved, self.work_dir)
            train_hash = config_hash(resolved)
            method, teacher, student, _ = load_student(str(run_dir))
            student.to(device)
            generate = lambda c, g: method.generate(student, c.to(device), g, steps=entry.steps)
            if entry.kind == "search":
                search = build_search(entry.search)
                generate = search_generator(search, method, teacher, student)
            train_seed = entry.seed
        ev, evaluator = resolved["eval"], self.evaluator()
        extra = search_reward(search, teacher) if entry.kind == "search" else None
        per_seed, tokens, n = evaluator.run(generate, teacher, ev, self.suite.eval.seeds, desc=entry.id, extra=extra)
        return self._record(entry, resolved, device, train_config_hash=train_hash,
                            teacher_sha256=results.teacher_sha256(teacher),
                            seeds={"train": train_seed, "sample": list(self.suite.eval.seeds)},
                            train_time_s=train_seconds, num_samples=n,
                            **results.scored(per_seed, tokens, ev["metrics"],
                                             {**evaluator.higher_is_better, "reward": True}))

    def _perf(self, entry: Entry, resolved: dict) -> dict:
        ensure_teacher(resolved["teacher"], entry.seed, self.work_dir)
        sampler_cfg = next((s.config for s in self.suite.samplers if s.group == "teacher"), {"name": "random"})
        resolved, fields = measure_entry(resolved, self.suite.performance.model_dump(), sampler_cfg, entry.steps)
        teacher = build_teacher(resolved["teacher"])
        device = torch.device("cpu" if fields.pop("device").startswith("cpu (") else "cuda")
        return self._record(entry, resolved, device, teacher_sha256=results.teacher_sha256(teacher),
                            seeds={"train": entry.seed, "sample": [0]}, **fields)


def run_suite(suite: Suite, out_dir: Path, work_dir: Path, force: bool = False, only: Optional[list[str]] = None,
              kinds: Optional[list[str]] = None, progress: bool = True) -> list[Outcome]:
    runner = Runner(suite, out_dir, work_dir, force)
    reason = runner.availability()
    if reason:
        print(f"benchmarks: suite '{suite.name}' skipped: {reason}")
        return []
    grid = [e for e in entries(suite) if (not only or any(e.id.startswith(o) for o in only))
            and (not kinds or e.kind in kinds)]
    outcomes = []
    bar = tqdm(grid, desc=f"suite {suite.name}", unit="entry", disable=not progress, dynamic_ncols=True)
    for entry in bar:
        bar.set_postfix_str(entry.id)
        outcome = runner.run_entry(entry)
        outcomes.append(outcome)
        tqdm.write(f"  {outcome.status:7s} {entry.id}" + (f" ({outcome.detail})" if outcome.detail else ""))
    bar.close()
    return outcomes
