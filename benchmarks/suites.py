"""Suites: what a leaderboard is made of, as data.

A suite names its teacher(s), the teacher samplers and step counts (the paper's "Teacher" and "Sampler"
rows), the distillation methods with their configs (the "Discrete Distillation" rows; optionally every
other installed method that declares itself applicable), the training seeds, the evaluation (samples,
sampling seeds, metrics, evaluator) and the performance measurement. ``entries(suite)`` expands it into
the grid that ``python -m benchmarks.run`` executes, one result file per entry.

Built-in suites: ``digits``, ``mnist``, ``markov``, ``words`` (embedded, CPU-sized) and ``imagenet256`` (a template
that runs only with a local MaskGit checkpoint and ImageNet-256 reference statistics). A YAML file of the
same fields is a suite too: ``python -m benchmarks.run suite=my_suite.yaml``.
"""
from __future__ import annotations

import copy
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.errors import UserError


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _sections(value: dict) -> dict:
    """``{method: dimo, divergence: {name: rkl}}`` -> sections with a ``name`` key (as config files)."""
    out = {}
    for kind, v in (value or {}).items():
        out[kind] = {"name": v} if isinstance(v, str) and kind not in ("trainer", "eval") else dict(v)
    return out


class SamplerSpec(Spec):
    group: Literal["teacher", "sampler", "reference"] = Field(
        "sampler", description="teacher: the teacher's own sampler (paper's Teacher rows); sampler: alternative "
                               "samplers; reference: rows that are not a method (e.g. exact conditionals)")
    label: str = Field(description="display name, e.g. 'MaskGit (random)'")
    id: Optional[str] = Field(None, description="entry id stem (default: teacher-<sampler name>)")
    config: dict[str, Any] = Field(description="sampler section, e.g. {name: halton, cfg_scale: 2.0}")
    teacher: dict[str, Any] = Field(default_factory=dict, description="teacher fields for these rows only")


class MethodSpec(Spec):
    label: str = Field(description="display name, e.g. 'Di[M]O (FKL)'")
    id: Optional[str] = Field(None, description="entry id stem (default: derived from the config)")
    config: dict[str, Any] = Field(description="sections: method, its plugins, trainer overrides")
    init_from: Optional[str] = Field(None, description="id of another method of the suite whose trained student "
                                                       "initialises this one (method.init_from), e.g. Soft-Di[M]O "
                                                       "from the Di[M]O checkpoint")

    @field_validator("config")
    @classmethod
    def _has_method(cls, v: dict) -> dict:
        v = _sections(v)
        if "method" not in v:
            raise ValueError("config must name a method (method: <name>)")
        return v


class TestTimeSpec(Spec):
    """Test-time search rows (Soft-Di[M]O H.8): TTEO with N starts x K iterations against plain best-of-N at
    equal compute, both on a one-step student of the suite."""
    of: str = Field(description="id of the method whose student is searched (e.g. soft_dimo)")
    label: str = Field(description="display name of that student, e.g. 'Soft-Di[M]O'")
    seeds: int = Field(4, gt=0, description="TTEO starts N per condition (paper: 4)")
    iters: int = Field(4, ge=0, description="TTEO iterations K (paper: 4)")
    lr: float = Field(0.1, gt=0, description="TTEO Adam step size on the input embedding")
    rewards: list[Any] = Field([{"name": "classifier", "form": "log_odds"}],
                               description="rewards ascended and used to pick the best (default: the digits/mnist "
                                           "classifier's log-odds, which does not saturate near p = 1 as log p does)")


class EvalSpec(Spec):
    samples_per_class: int = Field(100, gt=0, description="generated samples per class and sampling seed")
    seeds: list[int] = Field([0, 1, 2], min_length=1, description="sampling seeds (metrics: mean and std)")
    batch_size: int = Field(500, gt=0, description="generation batch")
    metrics: Optional[list[str]] = Field(None, description="metric plugins (default: the evaluator's)")


class PerfSpec(Spec):
    batch_size: int = Field(32, gt=0, description="training batch of every measured method (and of MDM)")
    warmup: int = Field(3, ge=0, description="unmeasured training iterations first")
    iters: int = Field(10, gt=0, description="measured training iterations (median)")
    teacher_steps: int = Field(16, gt=0, description="teacher sampling steps throughput is compared with")
    sample_batch: int = Field(500, gt=0, description="batch of the sampling-throughput measurement")
    repeats: int = Field(3, gt=0, description="sampling throughput: best of this many batches")


class Suite(Spec):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    version: int = Field(1, ge=1, description="bump when the measurement changes meaning")
    description: str = ""
    teachers: list[dict[str, Any]] = Field(min_length=1, description="teacher sections, e.g. {name: digits}")
    teacher_steps: list[int] = Field([1, 2, 4, 8, 16], description="teacher sampling step counts")
    samplers: list[SamplerSpec] = Field(default_factory=list)
    methods: list[MethodSpec] = Field(default_factory=list)
    other_methods: bool = Field(True, description="add every other installed method that declares it belongs "
                                                  "to this suite (Method.suites) and is applicable to the "
                                                  "teacher, with its defaults and recipe")
    exclude: list[str] = Field(["mdm"], description="methods never added by other_methods (mdm trains "
                                                    "teachers: it is the Teacher rows)")
    trainer: dict[str, Any] = Field(default_factory=dict, description="trainer overrides for every method")
    seeds: list[int] = Field([0], min_length=1, description="training seeds (one entry per seed)")
    eval: EvalSpec = Field(default_factory=EvalSpec)
    evaluator: dict[str, Any] = Field(
        {"name": "embedded"}, description="evaluator plugin: a name or {name, its options}; embedded: the teacher's "
                                          "evaluator (core Scorer); inception: streamed Inception FID/IS against "
                                          "reference statistics (evaluator.reference=<stats.npz>, ImageNet)")
    performance: Optional[PerfSpec] = Field(default_factory=PerfSpec)
    test_time: Optional[TestTimeSpec] = Field(None, description="TTEO vs best-of-N rows")

    @model_validator(mode="before")
    @classmethod
    def _moved_fields(cls, data: Any) -> Any:
        if isinstance(data, dict) and "reference" in data:
            raise ValueError(f"reference={data['reference']!r}: the reference statistics are the inception evaluator's "
                             f"option now: evaluator: {{name: inception, reference: <stats.npz>}} (on the command "
                             f"line: evaluator.reference=<stats.npz>)")
        return data

    @field_validator("evaluator", mode="before")
    @classmethod
    def _evaluator(cls, v: Any) -> dict:
        """A name or a section, checked against the installed evaluator plugins and their options."""
        from core.evaluate import evaluator_section
        try:
            return evaluator_section(v)
        except UserError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("teachers")
    @classmethod
    def _named(cls, v: list) -> list:
        out = [{"name": t} if isinstance(t, str) else dict(t) for t in v]
        if any("name" not in t for t in out):
            raise ValueError("every teacher needs a name")
        return out


# ------------------------------------------------------------------------------------------------
# built-in suites
# ------------------------------------------------------------------------------------------------

def _teacher_samplers(cfg: float, teacher_label: str) -> list[dict]:
    """The teacher's own random re-masking (paper App. D) and the two alternative samplers."""
    return [{"group": "teacher", "label": f"{teacher_label} (random)", "config": {"name": "random", "cfg_scale": cfg}},
            {"group": "sampler", "label": "Confidence (MaskGIT)", "config": {"name": "confidence", "cfg_scale": cfg}},
            {"group": "sampler", "label": "Halton", "config": {"name": "halton", "cfg_scale": cfg}}]


DIVERGENCES = (("fkl", "FKL"), ("rkl", "RKL"), ("jeffrey", "Jeffrey, beta = 0.5"))


def _dimo_divergences(which=DIVERGENCES) -> list[dict]:
    return [{"label": f"Di[M]O ({label})", "id": f"dimo-{name}", "config": {"method": "dimo", "divergence": name}}
            for name, label in which]


BUILTIN: dict[str, dict] = {
    "digits": {
        "name": "digits", "description": "scikit-learn 8x8 digits (64 tokens, 17 grey levels), classifier "
                                         "features; the teacher's recipes set the training budgets",
        "teachers": [{"name": "digits"}],
        "samplers": _teacher_samplers(2.0, "MaskGit"),
        "methods": _dimo_divergences() + [
            {"label": "Soft-Di[M]O (from Di[M]O FKL)", "id": "soft_dimo", "config": {"method": "soft_dimo"},
             "init_from": "dimo-fkl"},
            # the control: the same continued training without the GAN and reward terms
            {"label": "Di[M]O FKL continued (Soft-Di[M]O with w_GAN = w_reward = 0)", "id": "dimo-fkl-continued",
             "config": {"method": {"name": "soft_dimo", "w_gan": 0.0, "w_reward": 0.0}}, "init_from": "dimo-fkl"}],
        "test_time": {"of": "soft_dimo", "label": "Soft-Di[M]O", "seeds": 4, "iters": 4},
        "seeds": [0, 1],   # each distilled row once per training seed; the test-time rows on seed 0
        "eval": {"samples_per_class": 100, "seeds": [0, 1, 2]},
    },
    "mnist": {
        "name": "mnist", "version": 2,   # 2: the RKL recipe (lr_generator 3e-5) beside FKL, two training seeds
        "description": "5,000 real MNIST digits, k-means VQ over 4x4 patches (7x7 tokens), classifier features",
        "teachers": [{"name": "mnist"}],
        "samplers": _teacher_samplers(2.0, "MaskGit"),
        # RKL is the recipe's divergence (FKL at the same lr: recall just outside the teacher's +-0.1)
        "methods": _dimo_divergences(DIVERGENCES[:2]),
        # CPU budget: the Jeffrey ablation, the baselines and the performance table are on digits
        "other_methods": False, "performance": None,
        "seeds": [0, 1],
        "eval": {"samples_per_class": 100, "seeds": [0, 1, 2]},
    },
    "markov": {
        "name": "markov", "version": 2,   # 2: RKL at 12,000 steps, two training seeds
        "description": "sequences of a known sparse Markov chain per class: exact log-likelihood, valid-sequence "
                       "rate and diversity",
        "teachers": [{"name": "markov"}],
        # the exact conditionals with the teacher's sampler: the sampler's own error, no network error
        "samplers": [{"group": "reference", "label": "Exact conditionals (random)", "id": "oracle-random",
                      "config": {"name": "random"}, "teacher": {"oracle": True}}] + _teacher_samplers(1.0, "MaskGit"),
        "teacher_steps": [1, 2, 4, 8, 16],
        # RKL, the recipe's divergence: FKL stays near 0% valid (dimo_diagnosis.md section 5); 12,000 steps each
        "methods": _dimo_divergences(DIVERGENCES[1:2]),
        "other_methods": False, "performance": None,   # CPU budget, as mnist
        "seeds": [0, 1],
        "eval": {"samples_per_class": 250, "seeds": [0, 1, 2]},
    },
    "words": {
        "name": "words", "version": 2,   # 2: the teacher NLL and the word_attribute metric, the baselines, TTEO rows
        "description": "English words of 3-6 letters from the english-words package's web2 list, letter by "
                       "letter: exact valid-word share, character bigram distance, NLL under the teacher; "
                       "test-time search for words with a 'z' (2.5% of the list)",
        "teachers": [{"name": "words"}],
        "samplers": _teacher_samplers(1.0, "MaskGit"),
        "teacher_steps": [1, 2, 4, 8, 16],
        # RKL: the better one on markov (dimo_diagnosis.md); the baselines with their words recipes (no guidance)
        "methods": _dimo_divergences(DIVERGENCES[:2]) + [
            {"label": "SDTT", "id": "sdtt", "config": {"method": "sdtt"}},
            {"label": "di4c", "id": "di4c", "config": {"method": "di4c"}},
            {"label": "ReDi", "id": "redi", "config": {"method": "redi"}}],
        # a rare attribute that plain sampling seldom hits: a listed word containing a 'z' (0.07% of the student's
        # samples). lr 0.01: at the default 0.1 four Adam steps on the input embedding lower the reward (they
        # overshoot: mean log P(hit) -9.8 -> -14.2, validity 16% -> 4%); 0.01 raises it (-9.8 -> -8.4)
        "test_time": {"of": "dimo-fkl", "label": "Di[M]O (FKL)", "seeds": 4, "iters": 4, "lr": 0.01,
                      "rewards": [{"name": "word_attribute", "letters": "z"}]},
        "other_methods": False, "performance": None,   # CPU budget, as mnist
        "seeds": [0, 1],   # two training seeds (each distilled row once per seed; test-time rows on seed 0)
        "eval": {"samples_per_class": 250, "seeds": [0, 1, 2]},
    },
    # A template at the paper's scale: it runs only where the checkpoint and the reference statistics
    # are local (evaluator.reference=<stats.npz>, teacher.checkpoint=<...>), and is skipped with the reason otherwise.
    "imagenet256": {
        "name": "imagenet256", "description": "class-conditional ImageNet 256x256 with the MaskGit teacher "
                                              "(paper Table 2 setting): 50k samples, Inception FID/IS",
        "teachers": [{"name": "maskgit"}],
        "teacher_steps": [2, 4, 8, 16],
        "samplers": [{"group": "teacher", "label": "MaskGit", "config": {"name": "random"}},
                     {"group": "sampler", "label": "Halton", "config": {"name": "halton"}}],
        "methods": [{"label": "Di[M]O", "id": "dimo", "config": {"method": "dimo"}}],
        "other_methods": False,
        "eval": {"samples_per_class": 50, "seeds": [0], "batch_size": 50},
        "evaluator": {"name": "inception"},
        "performance": {"batch_size": 64, "warmup": 2, "iters": 5, "sample_batch": 64},
    },
    # The Soft-Di[M]O paper's Table 1 setting (benchmarks.reported.TABLE1_MASKBIT lists its rows beside these
    # entries); runs where the MaskBit files, the reference statistics and, for Soft-Di[M]O's GAN head, real ImageNet
    # tokens (teacher.data) are local.
    "imagenet256_maskbit": {
        "name": "imagenet256_maskbit", "description": "class-conditional ImageNet 256x256 with the MaskBit teacher "
                                                      "(14 bit; Soft-Di[M]O Table 1): 50k samples, Inception FID/IS",
        "teachers": [{"name": "maskbit"}],
        "teacher_steps": [64],
        "samplers": [{"group": "teacher", "label": "MaskBit", "id": "teacher-maskbit", "config": {"name": "maskbit"}}],
        "methods": [{"label": "Di[M]O", "id": "dimo", "config": {"method": "dimo"}},
                    {"label": "Soft-Di[M]O (from Di[M]O)", "id": "soft_dimo", "config": {"method": "soft_dimo"},
                     "init_from": "dimo"}],
        "other_methods": False,
        "eval": {"samples_per_class": 50, "seeds": [0], "batch_size": 50},
        "evaluator": {"name": "inception"},
        "performance": {"batch_size": 64, "warmup": 2, "iters": 5, "sample_batch": 64, "teacher_steps": 64},
    },
    # Table 3's Meissonic rows (benchmarks.reported.TABLE3_MEISSONIC beside these entries): the HPS v2 benchmark
    # prompts, one image per prompt, HPS v2.1 per style and CLIP score (plugins/t2i_metrics.py); runs where the
    # Meissonic folder and the metric models are local. GenEval and MS-COCO FID are not in it.
    "t2i_meissonic": {
        "name": "t2i_meissonic", "description": "text-to-image 1024x1024 with the Meissonic teacher (Di[M]O Table 3): "
                                                "HPS v2 benchmark prompts, HPS v2.1 and CLIP score",
        "teachers": [{"name": "meissonic", "prompts": {"source": "hpsv2"}, "eval_metrics": ["clip_score", "hps"]}],
        "teacher_steps": [32],
        "samplers": [{"group": "teacher", "label": "Meissonic", "id": "teacher-meissonic",
                      "config": {"name": "meissonic"}}],
        "methods": [{"label": "Di[M]O", "id": "dimo", "config": {"method": "dimo"}},
                    {"label": "Soft-Di[M]O (from Di[M]O)", "id": "soft_dimo", "config": {"method": "soft_dimo"},
                     "init_from": "dimo"}],
        "other_methods": False,
        "eval": {"samples_per_class": 1, "seeds": [0], "batch_size": 8, "metrics": ["clip_score", "hps"]},
        "performance": {"batch_size": 2, "warmup": 1, "iters": 3, "sample_batch": 8, "teacher_steps": 32},
    },
    # Table 3's MaskGen-L rows (benchmarks.reported.TABLE3_MASKGEN beside these entries): the HPS v2 benchmark
    # prompts, one image per prompt, HPS v2.1 per style and CLIP score (plugins/t2i_metrics.py), TTEO with 4 starts
    # x 4 iterations on the HPS reward; runs where the MaskGen, TA-TiTok, CLIP and metric files are local. GenEval
    # and MS-COCO FID are not in it.
    "t2i_maskgen": {
        "name": "t2i_maskgen", "description": "text-to-image 256x256 with the MaskGen-L teacher (Soft-Di[M]O Table 3): "
                                              "HPS v2 benchmark prompts, HPS v2.1 and CLIP score, TTEO",
        "teachers": [{"name": "maskgen", "prompts": {"source": "hpsv2"}, "eval_metrics": ["clip_score", "hps"]}],
        "teacher_steps": [16],
        "samplers": [{"group": "teacher", "label": "MaskGen-L", "id": "teacher-maskgen", "config": {"name": "maskgen"}}],
        "methods": [{"label": "Di[M]O", "id": "dimo", "config": {"method": "dimo"}},
                    {"label": "Soft-Di[M]O (from Di[M]O)", "id": "soft_dimo", "config": {"method": "soft_dimo"},
                     "init_from": "dimo"}],
        "test_time": {"of": "soft_dimo", "label": "Soft-Di[M]O", "seeds": 4, "iters": 4,
                      "rewards": [{"name": "hps", "weight": 1.0}]},
        "other_methods": False,
        "eval": {"samples_per_class": 1, "seeds": [0], "batch_size": 16, "metrics": ["clip_score", "hps"]},
        "performance": {"batch_size": 16, "warmup": 1, "iters": 3, "sample_batch": 16, "teacher_steps": 16},
    },
}


def load_suite(name: str, overrides: Optional[dict] = None, teacher: Optional[dict] = None) -> Suite:
    """A built-in suite by name, or a YAML file of suite fields; ``overrides`` (nested) refine it and
    ``teacher`` refines every teacher section."""
    if name in BUILTIN:
        data = copy.deepcopy(BUILTIN[name])
    elif name.endswith((".yaml", ".yml")):
        from core.config import read_yaml_mapping
        data = read_yaml_mapping(name, "suite file")
    else:
        raise UserError(f"suite='{name}' is not a built-in suite ({', '.join(BUILTIN)}) or a .yaml file")
    from core.config import merge
    data = merge(data, overrides or {})
    if teacher:
        data["teachers"] = [merge({"name": t} if isinstance(t, str) else t, teacher)
                            for t in data.get("teachers", [])]
    try:
        return Suite.model_validate(data)
    except ValidationError as exc:
        lines = [f"{'.'.join(['suite', *map(str, e['loc'])])}: {e['msg']}" for e in exc.errors()]
        raise UserError(f"invalid suite '{name}':\n  " + "\n  ".join(lines)) from None


# ------------------------------------------------------------------------------------------------
# the grid
# ------------------------------------------------------------------------------------------------

class Entry(BaseModel):
    """One cell of the grid: everything needed to run it and to name its result."""
    model_config = ConfigDict(extra="forbid")
    id: str
    kind: Literal["teacher", "distill", "search", "perf"]
    group: Literal["reference", "teacher", "sampler", "distillation", "test-time", "performance"]
    label: str
    teacher: dict[str, Any]
    sections: dict[str, Any] = Field(default_factory=dict, description="method and plugin sections")
    sampler: Optional[dict[str, Any]] = None
    steps: int
    seed: int
    init_from: Optional[str] = Field(None, description="entry id whose student initialises this one")
    search: Optional[dict[str, Any]] = Field(None, description="test-time rows: {mode: tteo|best_of_n, ...}")


def _teacher_class(section: dict):
    from core.config import lookup
    return lookup("teacher", section["name"])


def applicable_methods(teacher_section: dict, exclude: list[str], suite: str) -> list[str]:
    """Installed methods that declare they belong to ``suite`` (``Method.suites``, never inherited), distil a
    given teacher and declare themselves applicable to it."""
    from registry import get_registry
    teacher_cls = _teacher_class(teacher_section)
    cfg = {k: v for k, v in teacher_section.items() if k != "name"}
    teacher = teacher_cls(teacher_cls.Config.model_validate(cfg))
    out = []
    for name in get_registry().names("method"):
        cls = get_registry().get("method", name)
        if name in exclude or not cls.needs_teacher_weights or not cls.belongs_to(suite):
            continue
        try:
            ok = cls.applicable(teacher)
        except Exception as exc:   # a broken third-party plugin must not stop the suite
            print(f"benchmarks: method '{name}' failed its applicability check ({exc}); left out")
            ok = False
        if ok:
            out.append(name)
    return out


def _method_specs(suite: Suite, teacher: dict) -> list[MethodSpec]:
    specs = list(suite.methods)
    if suite.other_methods:
        named = {s.config["method"]["name"] for s in specs}
        for name in applicable_methods(teacher, suite.exclude, suite.name):
            if name not in named:
                specs.append(MethodSpec(label=name, id=name, config={"method": name}))
    return specs


def _stem(spec: MethodSpec) -> str:
    if spec.id:
        return spec.id
    parts = [spec.config["method"]["name"]] + [v["name"] for k, v in spec.config.items()
                                                if k not in ("method", "trainer") and "name" in v]
    return "-".join(parts)


def _source_id(stems: dict, spec: MethodSpec, prefix: str, seed: int) -> Optional[str]:
    """The entry whose trained student initialises ``spec`` (its first step count, same seed)."""
    if spec.init_from is None:
        return None
    from core.config import lookup
    source = stems[spec.init_from]
    k = lookup("method", source.config["method"]["name"]).sample_steps[0]
    return f"{prefix}{spec.init_from}-{k}step-seed{seed}"


def _search_entries(suite: Suite, teacher: dict, prefix: str, stems: dict) -> list[Entry]:
    """TTEO (N starts x K iterations) and best-of-N at equal compute: N (3K + 1) one-step samples, since a
    TTEO iteration costs a generator and reward forward plus a backward (about twice a forward)."""
    tt = suite.test_time
    if tt.of not in stems:
        raise UserError(f"suite '{suite.name}': test_time.of={tt.of!r} is not a method id of the suite; "
                        f"valid: {', '.join(stems)}")
    spec, seed = stems[tt.of], suite.seeds[0]
    sections = copy.deepcopy(spec.config)
    sections["trainer"] = {**suite.trainer, **sections.get("trainer", {})}
    n = tt.seeds * (3 * tt.iters + 1)
    common = {"rewards": tt.rewards}
    rows = [(f"tteo{tt.seeds}x{tt.iters}", f"{tt.label} + TTEO ({tt.seeds} starts x {tt.iters} iters)",
             {"mode": "tteo", "seeds": tt.seeds, "iters": tt.iters, "lr": tt.lr, **common}),
            (f"best-of-{n}", f"{tt.label} + best-of-{n} (equal compute)", {"mode": "best_of_n", "n": n, **common}),
            (f"best-of-{tt.seeds}", f"{tt.label} + best-of-{tt.seeds} (TTEO's starts, no ascent)",
             {"mode": "best_of_n", "n": tt.seeds, **common})]
    source = _source_id(stems, spec, prefix, seed)
    return [Entry(id=f"{prefix}{tt.of}-{stem}-seed{seed}", kind="search", group="test-time", label=label,
                  teacher=teacher, sections=sections, steps=1, seed=seed, init_from=source or None, search=search)
            for stem, label, search in rows]


def entries(suite: Suite) -> list[Entry]:
    from core.config import lookup
    out: list[Entry] = []
    for teacher in suite.teachers:
        prefix = f"{teacher['name']}-" if len(suite.teachers) > 1 else ""
        for s in suite.samplers:
            for k in suite.teacher_steps:
                out.append(Entry(id=f"{prefix}{s.id or 'teacher-' + s.config['name']}-{k}step", kind="teacher",
                                 group=s.group, label=s.label, teacher={**teacher, **s.teacher}, sampler=s.config,
                                 steps=k, seed=suite.seeds[0]))
        specs = _method_specs(suite, teacher)
        stems = {_stem(spec): spec for spec in specs}
        for spec in specs:
            method_cls = lookup("method", spec.config["method"]["name"])
            sections = copy.deepcopy(spec.config)
            sections["trainer"] = {**suite.trainer, **sections.get("trainer", {})}
            if spec.init_from is not None and spec.init_from not in stems:
                raise UserError(f"suite '{suite.name}': methods[{spec.label!r}].init_from={spec.init_from!r} is "
                                f"not a method id of the suite; valid: {', '.join(stems)}")
            for seed in suite.seeds:
                source = _source_id(stems, spec, prefix, seed)
                for k in method_cls.sample_steps:
                    out.append(Entry(id=f"{prefix}{_stem(spec)}-{k}step-seed{seed}", kind="distill",
                                     group="distillation", label=spec.label, teacher=teacher, sections=sections,
                                     steps=k, seed=seed, init_from=source or None))
        if suite.test_time is not None:
            out += _search_entries(suite, teacher, prefix, stems)
        if suite.performance is not None:
            mdm = MethodSpec(label="MDM (teacher training)", id="mdm", config={"method": "mdm"})
            for spec in [mdm] + specs:
                sections = copy.deepcopy(spec.config)
                method_cls = lookup("method", spec.config["method"]["name"])
                steps = method_cls.sample_steps[0] if method_cls.needs_teacher_weights else suite.performance.teacher_steps
                out.append(Entry(id=f"{prefix}perf-{_stem(spec)}", kind="perf", group="performance",
                                 label=spec.label, teacher=teacher, sections=sections, steps=steps,
                                 seed=suite.seeds[0]))
    ids = [e.id for e in out]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise UserError(f"suite '{suite.name}' has duplicate entry ids {dupes}; give the methods distinct ids")
    return out
