"""GenEval from the command line: a trained student (or a teacher) sampled on the GenEval prompts, streamed (no
image kept in memory), and image folders in the official layout scored by dimo's rules::

    python -m plugins.geneval.run evaluate checkpoint=<run folder> [model=student|teacher] [steps=16]
        [tag=<tag>] [limit=N] [samples_per_prompt=4] [batch_size=16] [seed=0] [device=auto|cpu|cuda]
        [images=<folder>] [out=<json>] [teacher.*=...] [sampler.*=...]
    python -m plugins.geneval.run evaluate model=teacher teacher=<name> [teacher.*=...] [sampler=...] ...
    python -m plugins.geneval.run score images=<folder> [out=<json>] [device=...] [geneval.*=...]
        [clip=openai/clip-vit-large-patch14]

``evaluate`` replaces the run's prompt set by the GenEval prompts (``teacher.prompts.source=geneval[:tag]``): a
condition is a prompt index and the text encoder runs per prompt, so a student distilled on other prompts is
sampled on these unchanged. ``teacher.eval_geneval.*`` sets the detector (default mask2former: its checkpoint
``teacher.eval_geneval.checkpoint=<.pth>``). ``images=`` also writes the samples in the official layout
(``<folder>/<prompt index:05d>/metadata.jsonl`` and ``samples/<k:04d>.png``), which GenEval's own
``evaluation/evaluate_images.py`` reads: the same images can be scored by both. ``score`` reads that layout (the
official generation scripts write it too) and judges every image with dimo's rules; ``geneval.*`` are the fields
of ``teacher.eval_geneval``. The output JSON holds the scores and one record per image (prompt, tag, correct,
reason, file), as the official ``results.jsonl``.
"""
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from core.cli import device_option, int_option, run_subcommand
from core.errors import UserError
from plugins.geneval.config import GenEvalConfig
from plugins.geneval.detector import to_uint8
from plugins.geneval.metric import GenEvalScorer
from plugins.geneval.rules import summarize
from plugins.t2i_metrics import prompted_model

CORE_SECTIONS = ("teacher", "sampler", "schedule")


def _split(args: list[str]) -> tuple[dict, list[str]]:
    """(the command's own options, the ``teacher.*``/``sampler.*``/``schedule.*`` arguments for the run config)."""
    from core.cli import parse_kv
    core = [a for a in args if a.split("=", 1)[0].split(".", 1)[0] in CORE_SECTIONS]
    return parse_kv([a for a in args if a not in core], "checkpoint=runs/x"), core


def _record(meta: dict, correct: bool, reasons: list[str], file: Optional[str]) -> dict:
    return {"filename": file, "tag": meta["tag"], "prompt": meta["prompt"], "correct": bool(correct),
            "reason": "\n".join(reasons), "metadata": json.dumps(meta)}


def _write(out: Optional[str], payload: dict) -> None:
    print(json.dumps({k: v for k, v in payload.items() if k != "images"}, indent=1))
    if out:
        from core.checkpoint import atomic_write_text
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(out), json.dumps(payload, indent=1))


def evaluate_command(args: list[str]) -> dict:
    opts, core_args = _split(args)
    tag, limit = opts.pop("tag", None), int_option(opts, "limit", None)
    per_prompt = int_option(opts, "samples_per_prompt", 4)
    batch = int_option(opts, "batch_size", 16)
    seed = int_option(opts, "seed", 0, minimum=0)
    device = device_option(str(opts.pop("device", "auto")))
    images_dir, out = opts.pop("images", None), opts.pop("out", None)
    prompts = {"source": f"geneval:{tag}" if tag else "geneval", "limit": limit}
    generate, teacher, run, model = prompted_model(opts, core_args, {"prompts": prompts, "eval_metrics": ["geneval"]},
                                                   device)
    if opts:
        raise UserError(f"unknown key(s): {', '.join(opts)}; valid: checkpoint, model, steps, tag, limit, "
                        f"samples_per_prompt, batch_size, seed, device, images, out, teacher.*, sampler.*")
    config = teacher.config
    scorer = GenEvalScorer(config.eval_geneval, config.eval_clip, device)
    metadata = teacher.prompt_set.metadata
    labels = torch.arange(len(metadata)).repeat_interleave(per_prompt)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    records, shown, t0 = [], {}, time.perf_counter()
    for chunk in labels.split(batch):
        with torch.no_grad():
            images = to_uint8(teacher.decode_with(generate(chunk, g), chunk).float())
        for image, label in zip(images, chunk.tolist()):
            meta, k = metadata[label], shown.get(label, 0)
            shown[label] = k + 1
            file = None
            if images_dir:
                from PIL import Image
                folder = Path(images_dir) / f"{label:05d}"
                (folder / "samples").mkdir(parents=True, exist_ok=True)
                (folder / "metadata.jsonl").write_text(json.dumps(meta) + "\n")
                file = str(folder / "samples" / f"{k:04d}.png")
                Image.fromarray(image).save(file)
            correct, reasons = scorer.judge(image, meta)
            records.append(_record(meta, correct, reasons, file))
    summary = {**summarize((r["tag"], r["correct"]) for r in records), "model": model,
               "images_per_prompt": per_prompt, "prompts": len(metadata), "seed": seed, "device": str(device),
               "seconds": time.perf_counter() - t0, "geneval_config": config.eval_geneval.model_dump(mode="json"),
               "config": run.as_dict()}
    _write(out, {**summary, "images": records})
    return {**summary, "images": records}


def read_folder(folder: Path) -> list[tuple[dict, Path]]:
    """``(metadata, image file)`` of the official layout: ``<folder>/<digits>/metadata.jsonl`` (one JSON line) and
    ``samples/<digits>.png``."""
    if not folder.is_dir():
        raise UserError(f"images='{folder}' is not a folder")
    out = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()):
        meta_file = sub / "metadata.jsonl"
        try:
            meta = json.loads(meta_file.read_text().strip().splitlines()[0])
        except (OSError, IndexError, json.JSONDecodeError) as exc:
            raise UserError(f"'{meta_file}': expected one GenEval metadata line ({exc})") from None
        for image in sorted((sub / "samples").glob("*.png")):
            if re.fullmatch(r"\d+\.png", image.name):
                out.append((meta, image))
    if not out:
        raise UserError(f"images='{folder}' holds no <digits>/samples/<digits>.png images (GenEval's layout)")
    return out


def score_command(args: list[str]) -> dict:
    from PIL import Image, ImageOps
    from pydantic import ValidationError

    from core.cli import parse_kv
    opts = parse_kv(args, "images=<folder>")
    if "images" not in opts:
        raise UserError("score needs images=<folder> (GenEval's layout: <digits>/metadata.jsonl, samples/*.png)")
    folder, out = Path(str(opts.pop("images"))), opts.pop("out", None)
    device = device_option(str(opts.pop("device", "auto")))
    clip = str(opts.pop("clip", "openai/clip-vit-large-patch14"))
    try:
        config = GenEvalConfig(**opts.pop("geneval", {}))
    except ValidationError as exc:
        raise UserError(f"geneval.*: {exc}") from None
    if opts:
        raise UserError(f"unknown key(s): {', '.join(opts)}; valid: images, out, device, clip, geneval.<field>")
    scorer = GenEvalScorer(config, clip, device)
    records = []
    for meta, file in read_folder(folder):
        image = np.asarray(ImageOps.exif_transpose(Image.open(file)).convert("RGB"))
        correct, reasons = scorer.judge(image, meta)
        records.append(_record(meta, correct, reasons, str(file)))
    summary = {**summarize((r["tag"], r["correct"]) for r in records), "images_scored": len(records),
               "geneval_config": config.model_dump(mode="json")}
    _write(out, {**summary, "images": records})
    return {**summary, "images": records}


def main(argv: Optional[list[str]] = None) -> int:
    return run_subcommand(argv, {"evaluate": evaluate_command, "score": score_command}, __doc__)


if __name__ == "__main__":
    sys.exit(main())
