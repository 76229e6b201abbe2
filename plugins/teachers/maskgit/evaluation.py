"""ImageNet-style evaluation on real images: Inception-v3 features (torch-fidelity's port of the TF 2015
network, the one FID/IS are defined with), streamed over generated images, FID against a reference
statistics ``.npz`` the user supplies (``mu`` [2048], ``sigma`` [2048, 2048]: ADM's reference batches,
clean-fid / pytorch-fid stats files, or ``stats`` below), and Inception Score.

The core evaluator keeps every image in memory, which 50k ImageNet samples do not allow; this module
streams: generate a batch -> decode -> Inception -> running sums. Command line::

    python -m plugins.teachers.maskgit.evaluation fid checkpoint=<run folder> reference=<stats.npz>
        [model=student|teacher] [steps=16] [samples_per_class=50] [batch_size=50] [seed=0]
        [inception_weights=<file>] [device=auto|cpu|cuda] [out=<json>] [teacher.*=... sampler.*=...]
    python -m plugins.teachers.maskgit.evaluation stats images=<folder or .npz> out=<stats.npz>

``model=teacher`` without ``checkpoint`` samples the teacher built from ``teacher=`` (default maskgit),
``teacher.*``, ``sampler=`` and ``sampler.*`` keys, with that teacher's recipe.
Inception weights: ``inception_weights=``, else ``$DIMO_INCEPTION_WEIGHTS``, else the torch hub cache
(``$TORCH_HOME/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth``), else a download unless
``HF_HUB_OFFLINE=1`` or ``DIMO_OFFLINE=1``; when none works, a clear error says where to put the file.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np
import torch
from torch import Tensor

from core.cli import device_option, int_option, parse_kv, run_subcommand
from core.errors import UserError

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE
WEIGHTS_ENV = "DIMO_INCEPTION_WEIGHTS"
FEATURES = 2048


def offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "DIMO_OFFLINE"))


def inception_weights(explicit: Optional[str] = None) -> Path:
    """The Inception weight file: explicit path, env var, torch hub cache, or a download when online."""
    for source, value in (("inception_weights", explicit), (WEIGHTS_ENV, os.environ.get(WEIGHTS_ENV))):
        if value:
            if not Path(value).expanduser().is_file():
                raise UserError(f"{source}='{value}' does not exist; it should be the torch-fidelity Inception "
                                f"file {INCEPTION_FILE} ({INCEPTION_URL})")
            return Path(value).expanduser()
    cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    if cached.is_file():
        return cached
    help_text = (f"download {INCEPTION_URL} on a machine with internet and pass inception_weights=<file>, set "
                 f"{WEIGHTS_ENV}, or copy it to {cached}")
    if offline():
        raise UserError(f"the Inception weights ({INCEPTION_FILE}) are not cached and downloads are off "
                        f"(HF_HUB_OFFLINE/DIMO_OFFLINE); {help_text}")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(INCEPTION_URL, str(cached), progress=False)
    except Exception as exc:   # network errors come in many types (URLError, HTTPError, OSError, ...)
        raise UserError(f"could not download the Inception weights ({type(exc).__name__}: {exc}); {help_text}") \
            from None
    return cached


class InceptionFeatures:
    """Pool-3 features (2048) and unbiased logits (1008) of images in [0, 1], 8-bit quantised first
    (as saved PNGs would be), resized to 299 the TF-1.x way inside torch-fidelity."""

    def __init__(self, weights: Optional[str] = None, device="cpu"):
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError as exc:
            raise UserError(f"Inception features need torch-fidelity (pip install torch-fidelity): {exc}") from None
        path = inception_weights(weights)
        try:   # refuse files with pickled code before torch-fidelity (which unpickles freely) sees them
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise UserError(f"Inception weights '{path}' are corrupt or not a plain state dict ({exc})") from None
        try:
            self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                                   feature_extractor_weights_path=str(path))
        except RuntimeError as exc:
            raise UserError(f"Inception weights '{path}' do not fit torch-fidelity's InceptionV3: "
                            f"{str(exc).splitlines()[0]}") from None
        self.device = torch.device(device)
        self.net.to(self.device)

    @torch.no_grad()
    def __call__(self, images: Tensor) -> tuple[Tensor, Tensor]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected RGB images [B, 3, H, W], got {tuple(images.shape)}")
        x = (images.float().clamp(0, 1) * 255).round().to(torch.uint8).to(self.device)
        pool, logits = self.net(x)
        return pool.double().cpu(), logits.double().cpu()


class RunningStats:
    """Mean and covariance (ddof 1, as numpy's cov in pytorch-fid / torch-fidelity) accumulated in float64."""

    def __init__(self):
        self.n, self.sum, self.outer = 0, None, None

    def update(self, features: Tensor) -> None:
        f = features.double()
        if self.sum is None:   # the feature width comes with the first batch
            self.sum, self.outer = torch.zeros(f.shape[1], dtype=f.dtype), torch.zeros(f.shape[1], f.shape[1],
                                                                                       dtype=f.dtype)
        self.n += f.shape[0]
        self.sum += f.sum(0)
        self.outer += f.t() @ f

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n < 2:
            raise ValueError("statistics need at least 2 images")
        mu = self.sum / self.n
        sigma = (self.outer - self.n * torch.outer(mu, mu)) / (self.n - 1)
        return mu.numpy(), sigma.numpy()


def load_reference_stats(path: str, dim: int = FEATURES) -> tuple[np.ndarray, np.ndarray]:
    field = "reference"
    try:
        with np.load(path, allow_pickle=False) as data:
            if "mu" not in data or "sigma" not in data:
                raise UserError(f"{field}='{path}' has no 'mu' and 'sigma' arrays (it holds: "
                                f"{', '.join(data.files)}); compute them with `... evaluation stats`")
            mu, sigma = data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
    except UserError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"{field}='{path}' is missing or not a readable .npz file ({exc})") from None
    if mu.shape != (dim,) or sigma.shape != (dim, dim):
        raise UserError(f"{field}='{path}' has mu {mu.shape} and sigma {sigma.shape}; Inception pool features "
                        f"need ({dim},) and ({dim}, {dim})")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise UserError(f"{field}='{path}' holds non-finite values")
    return mu, sigma


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    from torch_fidelity.metric_fid import fid_statistics_to_metric
    out = fid_statistics_to_metric({"mu": mu1.astype(np.float64), "sigma": sigma1.astype(np.float64)},
                                   {"mu": mu2.astype(np.float64), "sigma": sigma2.astype(np.float64)}, False)
    return float(next(iter(out.values())))


def inception_score(logits: Tensor, splits: int = 10) -> tuple[float, float]:
    from torch_fidelity.metric_isc import isc_features_to_metric
    out = isc_features_to_metric(logits, splits=min(splits, max(1, logits.shape[0] // 2)))
    mean, std = out.values()
    return float(mean), float(std)


def score_images(batches: Iterable[Tensor], extractor: InceptionFeatures,
                 reference: Optional[tuple[np.ndarray, np.ndarray]] = None, splits: int = 10) -> dict:
    """Stream image batches in [0, 1]: FID against ``reference`` (mu, sigma) if given, IS, and the stats."""
    stats, logits = RunningStats(), []
    for images in batches:
        pool, logit = extractor(images)
        stats.update(pool)
        logits.append(logit)
    mu, sigma = stats.result()
    out = {"n": stats.n, "mu": mu, "sigma": sigma}
    out["is"], out["is_std"] = inception_score(torch.cat(logits), splits)
    if reference is not None:
        out["fid"] = frechet_distance(mu, sigma, *reference)
    return out


# ---------------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------------

def _parse(args: list[str]) -> dict[str, str]:
    return parse_kv(args, "checkpoint=runs/x samples_per_class=50")


def _generator_fn(opts: dict, passthrough: list[str], device) -> tuple[Callable, object, dict, str]:
    """(generate(cond, g) -> tokens, teacher, resolved config, model name) for the chosen model."""
    model = opts.pop("model", "student")
    if model not in ("student", "teacher"):
        raise UserError(f"model='{model}' is not one of: student, teacher")
    steps = int_option(opts, "steps", 16)
    if "checkpoint" in opts:
        if passthrough:
            raise UserError(f"{', '.join(passthrough)}: with checkpoint= the run's own config is used")
        from core.export import load_student
        method, teacher, student, resolved = load_student(opts.pop("checkpoint"))
    elif model == "teacher":
        from core.config import resolve
        from core.engine import build_method
        resolved = resolve(["method=dimo", "teacher=maskgit", *passthrough])   # teacher=... in passthrough wins
        method, teacher = build_method(resolved)
        student = None
    else:
        raise UserError("model=student needs checkpoint=<run folder>")
    if model == "student":
        net = student.to(device)
        return (lambda c, g: method.generate(net, c.to(device), g)), teacher, resolved, "student@1"
    net = teacher.build_network(load_weights=True).to(device).eval().requires_grad_(False)
    sampler = method.plugins["sampler"]
    return (lambda c, g: sampler.sample(net, teacher, c.to(device), steps, g)), teacher, resolved, \
        f"teacher@{steps}"


def fid_command(args: list[str]) -> dict:
    core_keys = lambda a: a.split("=", 1)[0].split(".", 1)[0] in ("teacher", "sampler", "schedule")
    opts = _parse([a for a in args if not core_keys(a)])
    passthrough = [a for a in args if core_keys(a)]
    reference = opts.pop("reference", None)
    per_class = int_option(opts, "samples_per_class", 50)
    batch = int_option(opts, "batch_size", 50)
    seed = int_option(opts, "seed", 0, minimum=0)
    weights = opts.pop("inception_weights", None)
    out_path = opts.pop("out", None)
    device = device_option(opts.pop("device", "auto"))
    ref = load_reference_stats(reference) if reference else None
    generate, teacher, resolved, model = _generator_fn(opts, passthrough, device)
    if opts:
        raise UserError(f"unknown key(s): {', '.join(opts)}; valid: checkpoint, reference, model, steps, "
                        f"samples_per_class, batch_size, seed, inception_weights, device, out")
    extractor = InceptionFeatures(weights, device)
    labels = torch.arange(teacher.num_classes).repeat_interleave(per_class)
    torch.manual_seed(seed)
    # Samplers draw from a CPU generator on any device; one-step students on GPU use the global seed.
    g = torch.Generator().manual_seed(seed) if device.type == "cpu" or model.startswith("teacher") else None
    t0 = time.perf_counter()

    def batches():
        for chunk in labels.split(batch):
            with torch.no_grad():
                yield teacher.decode_with(generate(chunk, g), chunk).float()   # decoders that read the prompt

    result = score_images(batches(), extractor, ref)
    summary = {k: v for k, v in result.items() if k not in ("mu", "sigma")}
    summary.update(model=model, seconds=time.perf_counter() - t0, reference=reference, seed=seed,
                   device=str(device))
    print(json.dumps(summary, indent=1))
    if out_path:
        from core.checkpoint import atomic_write_text
        from core.export import versions
        payload = {"config": resolved.as_dict(), "config_hash": resolved.hash, "versions": versions(), **summary}
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(out_path), json.dumps(payload, indent=1))
    return summary


def read_images(source: str, batch: int) -> Iterable[Tensor]:
    """Batches in [0, 1] from a folder of image files or an .npz whose first array is uint8 NHWC (ADM)."""
    path = Path(source).expanduser()
    if path.suffix == ".npz" and path.is_file():
        with np.load(path, allow_pickle=False) as data:
            arr = data["arr_0"] if "arr_0" in data else data[data.files[0]]
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise UserError(f"images='{source}': expected uint8 images [N, H, W, 3], got {arr.shape}")
        for i in range(0, len(arr), batch):
            yield torch.from_numpy(arr[i:i + batch]).permute(0, 3, 1, 2).float() / 255
        return
    if not path.is_dir():
        raise UserError(f"images='{source}' is neither a folder of images nor an .npz file")
    from PIL import Image
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
    if not files:
        raise UserError(f"images='{source}' holds no .png/.jpg/.jpeg/.webp files")
    for i in range(0, len(files), batch):
        arrs = [np.asarray(Image.open(f).convert("RGB")) for f in files[i:i + batch]]
        yield torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float() / 255


def stats_command(args: list[str]) -> dict:
    opts = _parse(args)
    if "images" not in opts or "out" not in opts:
        raise UserError("stats needs images=<folder or .npz> out=<stats.npz>")
    extractor = InceptionFeatures(opts.pop("inception_weights", None), device_option(opts.pop("device", "auto")))
    result = score_images(read_images(opts.pop("images"), int_option(opts, "batch_size", 50)), extractor)
    out = Path(opts.pop("out"))
    if opts:
        raise UserError(f"unknown key(s): {', '.join(opts)}; valid: images, out, batch_size, device, "
                        f"inception_weights")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, mu=result["mu"], sigma=result["sigma"])
    print(f"dimo: Inception statistics of {result['n']} images -> {out}")
    return {"n": result["n"], "out": str(out)}


def main(argv: Optional[list[str]] = None) -> int:
    return run_subcommand(argv, {"fid": fid_command, "stats": stats_command}, __doc__)


if __name__ == "__main__":
    sys.exit(main())
