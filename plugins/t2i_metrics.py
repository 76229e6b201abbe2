"""Text-to-image evaluation: the evaluator of prompt-conditioned teachers and its metrics.

Samples are drawn per prompt (the condition is a prompt index, plugins/prompts.py); the metrics score decoded
images against their prompts, so the evaluator declares them as ``exact_metrics`` (scored from the samples, no
real-image features):

* ``clip_score``: 100 * max(cos(image, prompt), 0) averaged over samples (torchmetrics' CLIPScore definition), with
  a transformers ``CLIPModel`` (``teacher.eval_clip``; default openai/clip-vit-large-patch14); also ``clip``, the
  same without the factor 100 (the scale of the paper's Table 3);
* ``hps``: HPS v2.1 (x100, as the paper's Table 3) overall and per HPS v2 style (``hps_anime``, ... when the prompt
  set is ``hpsv2``; ``hps`` is then the mean of the style means, as the benchmark averages);
* ``text_fid`` (reported as ``fid``): FID of the samples' Inception-v3 pool features (torch-fidelity's network, as
  plugins/teachers/maskgit/evaluation.py) against reference statistics the user supplies
  (``teacher.eval_fid_reference``: mu, sigma of real images, e.g. COCO-30k with a caption file as prompt set);
* ``geneval``: GenEval per tag and overall (plugins/geneval; prompt set ``geneval``; its detector, mmdet's
  Mask2Former, is an optional install named in the error when missing).

Both reuse the differentiable reward models of plugins/rewards.py (same preprocessing, same weights), so a
missing model file is the same clear error naming the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from pydantic import Field
from torch import Tensor

from core.cli import device_option, int_option, run_subcommand
from core.errors import UserError
from core.interfaces import EvalData, Evaluator, Metric, PluginConfig
from plugins.geneval.config import GenEvalConfig
from plugins.geneval.metric import GenEval
from plugins.prompts import HPS_STYLES, TEXT_METRICS  # noqa: F401 (TEXT_METRICS: re-exported)
from registry import hookimpl


class TextImageEvaluator(Evaluator):
    """Prompts of the teacher's prompt set and the model specs its metrics use."""

    def __init__(self, prompt_set, metrics: tuple[str, ...] = ("clip_score",),
                 clip_model: str = "openai/clip-vit-large-patch14", hps_checkpoint: str = "xswu/HPSv2",
                 fid_reference: Optional[str] = None, inception_weights: Optional[str] = None,
                 geneval: Optional[GenEvalConfig] = None):
        self.prompt_set = prompt_set
        self.exact_metrics = tuple(metrics)
        self.clip_model, self.hps_checkpoint = clip_model, hps_checkpoint
        self.fid_reference, self.inception_weights = fid_reference, inception_weights
        self.geneval = geneval or GenEvalConfig()

    @classmethod
    def of(cls, prompt_set, config) -> "TextImageEvaluator":
        """The evaluator a teacher's ``TextToImageConfig`` (``eval_*`` fields) describes."""
        return cls(prompt_set, tuple(config.eval_metrics), config.eval_clip, config.eval_hps,
                   config.eval_fid_reference, config.eval_inception_weights, config.eval_geneval)

    def captions(self, cond: Tensor) -> list[str]:
        return self.prompt_set.texts(cond)

    def styles(self, cond: Tensor) -> Optional[list[str]]:
        if not self.prompt_set.styles:
            return None
        return [self.prompt_set.styles[int(i)] for i in cond.reshape(-1).tolist()]


def _scores(reward, data: EvalData, batch: int, field: str, spec: str) -> Tensor:
    """The reward model's per-sample score of the sample images against their prompts, in batches."""
    images, labels = data.samples.images, data.samples.labels
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = []
    try:
        with torch.no_grad():
            for i in range(0, len(labels), batch):
                out.append(reward(images[i: i + batch].to(device), labels[i: i + batch], data.evaluator).float().cpu())
    except UserError as exc:   # the reward names its own field; the evaluation's is the teacher's
        raise UserError(f"{field}='{spec}' (evaluation model): {exc}") from None
    return torch.cat(out)


class ClipScore(Metric):
    class Config(PluginConfig):
        batch_size: int = Field(32, gt=0, description="images scored together")

    higher_is_better = {"clip_score": True, "clip": True}

    def compute(self, data: EvalData) -> dict[str, float]:
        from plugins.rewards import HFClipReward
        reward = HFClipReward(HFClipReward.Config(model=data.evaluator.clip_model))
        cos = _scores(reward, data, self.config.batch_size, "teacher.eval_clip", data.evaluator.clip_model)
        score = cos.clamp(min=0).mean()   # "clip": the paper's Table 3 scale (e.g. 0.318); clip_score: x100
        return {"clip_score": float(100 * score), "clip": float(score)}


class HPSv21(Metric):
    class Config(PluginConfig):
        batch_size: int = Field(16, gt=0, description="images scored together")

    higher_is_better = {"hps": True, **{f"hps_{s}": True for s in HPS_STYLES}}

    def compute(self, data: EvalData) -> dict[str, float]:
        from plugins.rewards import HPSReward
        reward = HPSReward(HPSReward.Config(checkpoint=data.evaluator.hps_checkpoint))
        score = 100 * _scores(reward, data, self.config.batch_size, "teacher.eval_hps", data.evaluator.hps_checkpoint)
        styles = data.evaluator.styles(data.samples.labels)
        if not styles:
            return {"hps": float(score.mean())}
        out = {f"hps_{s}": float(score[[x == s for x in styles]].mean()) for s in dict.fromkeys(styles)}
        out["hps"] = sum(out.values()) / len(out)
        return out


class TextFID(Metric):
    """FID of the sample images against the user's reference statistics (``teacher.eval_fid_reference``), with
    torch-fidelity's Inception-v3 (the network FID is defined with; ``teacher.eval_inception_weights``)."""
    class Config(PluginConfig):
        batch_size: int = Field(50, gt=0, description="images through Inception together")

    higher_is_better = {"fid": False}

    def compute(self, data: EvalData) -> dict[str, float]:
        from plugins.teachers.maskgit.evaluation import (InceptionFeatures, RunningStats, frechet_distance,
                                                         load_reference_stats)
        ev, field = data.evaluator, "teacher.eval_fid_reference"
        ref = getattr(ev, "fid_reference", None)
        if not ref:
            raise UserError(f"the text_fid metric needs reference statistics: {field}=<stats.npz> (mu, sigma of "
                            f"Inception pool features of real images, e.g. COCO-30k; `python -m "
                            f"plugins.teachers.maskgit.evaluation stats images=<folder> out=<stats.npz>`)")
        if not Path(ref).expanduser().is_file():
            raise UserError(f"{field}='{ref}' does not exist (the reference statistics .npz of the text_fid metric)")
        try:
            reference = load_reference_stats(str(Path(ref).expanduser()))
        except UserError as exc:
            raise UserError(f"{field}: {exc}") from None
        if getattr(ev, "_inception", None) is None:   # kept on the evaluator for the next seeds and models
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            try:
                ev._inception = InceptionFeatures(ev.inception_weights, device)
            except UserError as exc:
                raise UserError(f"teacher.eval_inception_weights: {exc}") from None
        stats = RunningStats()
        for batch in data.samples.images.split(self.config.batch_size):
            stats.update(ev._inception(batch)[0])
        return {"fid": frechet_distance(*stats.result(), *reference)}


# ---------------------------------------------------------------------------------------------------
# a student (or the teacher) on another prompt set than its run's, and streamed FID on it
# ---------------------------------------------------------------------------------------------------

def prompted_model(opts: dict, core_args: list[str], teacher_changes: dict, device: torch.device):
    """(generate(cond, g) -> tokens, teacher, run config, model name) of ``opts['model']`` (student: the run of
    ``opts['checkpoint']``; teacher: that run's, or ``teacher=``/``teacher.*``/``sampler.*`` in ``core_args``,
    sampled at ``opts['steps']``), with ``teacher_changes`` (e.g. ``{"prompts": {"source": "geneval"}}``) merged
    into the teacher section. A condition is a prompt index and the text encoder runs per prompt, so the student's
    weights do not depend on the prompt set it was distilled on."""
    from core.config import merge, parse_overrides, resolve
    from core.export import load_student_network, read_card
    from core.factory import build_method
    model = opts.pop("model", "student")
    if model not in ("student", "teacher"):
        raise UserError(f"model='{model}' is not one of: student, teacher")
    steps = int_option(opts, "steps", 16)
    _, overrides = parse_overrides(core_args)
    changes = merge(overrides, {"teacher": teacher_changes})
    if "checkpoint" in opts:
        weights, run = read_card(str(opts.pop("checkpoint")))
        if "name" in changes["teacher"]:
            raise UserError("teacher=: with checkpoint= the run's teacher is used (its fields may be refined)")
    elif model == "teacher":
        run = resolve(["method=dimo", *core_args])
    else:
        raise UserError("model=student needs checkpoint=<run folder>")
    if not hasattr(run.plugin("teacher").config, "prompts"):
        raise UserError(f"teacher '{run.plugin('teacher').name}' is not a text-to-image teacher (no prompt set)")
    run = run.updated(changes)
    method, teacher = build_method(run)
    if model == "student":
        net = load_student_network(method, weights, run, device)
        return (lambda c, g: method.generate(net, c.to(device), g)), teacher, run, "student@1"
    net = teacher.build_network(load_weights=True).to(device).eval().requires_grad_(False)
    sampler = method.plugins["sampler"]
    return (lambda c, g: sampler.sample(net, teacher, c.to(device), steps, g)), teacher, run, f"teacher@{steps}"


def fid_command(args: list[str]) -> dict:
    """``python -m plugins.t2i_metrics fid``: FID (and IS) of a student or teacher sampled on a prompt file,
    streamed, against reference statistics."""
    import json
    import time

    from core.cli import parse_kv
    from plugins.teachers.maskgit.evaluation import InceptionFeatures, load_reference_stats, score_images
    core = [a for a in args if a.split("=", 1)[0].split(".", 1)[0] in ("teacher", "sampler", "schedule")]
    opts = parse_kv([a for a in args if a not in core], "checkpoint=runs/x prompts=captions.txt")
    if "prompts" not in opts or "reference" not in opts:
        raise UserError("fid needs prompts=<captions .txt/.json> and reference=<stats.npz> (mu, sigma of Inception "
                        "pool features of the matching real images)")
    prompts = {"source": str(opts.pop("prompts")), "limit": int_option(opts, "limit", None) if "limit" in opts else None}
    reference = str(opts.pop("reference"))
    if not Path(reference).expanduser().is_file():
        raise UserError(f"reference='{reference}' does not exist (the reference statistics .npz)")
    ref = load_reference_stats(reference)
    per_prompt, batch = int_option(opts, "samples_per_prompt", 1), int_option(opts, "batch_size", 50)
    seed = int_option(opts, "seed", 0, minimum=0)
    weights, out = opts.pop("inception_weights", None), opts.pop("out", None)
    device = device_option(str(opts.pop("device", "auto")))
    generate, teacher, run, model = prompted_model(opts, core, {"prompts": prompts}, device)
    if opts:
        raise UserError(f"unknown key(s): {', '.join(opts)}; valid: checkpoint, model, steps, prompts, limit, "
                        f"reference, samples_per_prompt, batch_size, seed, inception_weights, device, out, "
                        f"teacher.*, sampler.*")
    extractor = InceptionFeatures(weights, device)
    labels = torch.arange(teacher.num_classes).repeat_interleave(per_prompt)
    torch.manual_seed(seed)
    g, t0 = torch.Generator().manual_seed(seed), time.perf_counter()

    def batches():
        for chunk in labels.split(batch):
            with torch.no_grad():
                yield teacher.decode_with(generate(chunk, g), chunk).float()

    result = score_images(batches(), extractor, ref)
    summary = {"fid": result["fid"], "is": result["is"], "n": result["n"], "model": model, "prompts": prompts,
               "reference": reference, "seed": seed, "seconds": time.perf_counter() - t0, "device": str(device)}
    print(json.dumps(summary, indent=1))
    if out:
        from core.checkpoint import atomic_write_text
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(out), json.dumps({**summary, "config": run.as_dict()}, indent=1))
    return summary


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m plugins.t2i_metrics fid checkpoint=<run> prompts=<captions.txt> reference=<stats.npz>
    [model=student|teacher] [steps=16] [limit=N] [samples_per_prompt=1] [batch_size=50] [seed=0]
    [inception_weights=<file>] [device=auto] [out=<json>] [teacher.*=...] [sampler.*=...]``"""
    return run_subcommand(argv, {"fid": fid_command}, main.__doc__)


@hookimpl
def dimo_register(register):
    register("metric", "clip_score", ClipScore)
    register("metric", "hps", HPSv21)
    register("metric", "text_fid", TextFID)
    register("metric", "geneval", GenEval)


if __name__ == "__main__":
    import sys
    sys.exit(main())
