"""Training curves of a run folder, from its metrics.jsonl, as PNG files in <run dir>/plots/.

    python -m benchmarks.plot_run <run dir> [<run dir> ...] [--out DIR]

One figure per group of logged quantities (docs/methods/dimo_diagnosis.md says what each tells):
losses, aux tracking (aux vs teacher cross-entropy on fresh generator samples, entropies), the divergence
by mask ratio t, generator entropy and sample diversity, gradient norms per role, and the effective signal
after nan_to_num and clipping. Keys that fit no group go to other.png. Several run folders are drawn on the
same axes (one line per run; the figures go to the first run's folder unless --out is given).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.errors import UserError

# (file stem, title, predicate on the metric key)
GROUPS = [
    ("losses", "Losses", lambda k: k in ("divergence", "aux_loss", "grad_sq", "loss", "gan_g", "gan_d", "reward")),
    ("aux_tracking", "Aux vs teacher on the generator's samples (masked CE, entropy)",
     lambda k: k in ("diag/aux_ce", "diag/teacher_ce", "diag/aux_entropy", "diag/teacher_entropy")),
    ("divergence_by_t", "Divergence by mask ratio t of x_t", lambda k: k.startswith("div_t/")),
    ("generator", "Generator: per-token entropy and sample diversity",
     lambda k: k in ("diag/generator_entropy", "diag/pairwise_hamming", "diag/distinct_frac")),
    ("grad_norms", "Gradient norm per role (after nan_to_num, before clipping)", lambda k: k.startswith("grad_norm/")),
    ("effective_signal", "Effective signal: clip factor, non-finite and zero gradient entries",
     lambda k: k.startswith(("clip_scale/", "grad_nonfinite_frac/", "grad_zero_frac/", "nonfinite"))),
]
SKIP = ("step", "lr", "samples_per_s")
STYLES = ("-", "--", ":", "-.")


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"run folder '{run_dir}' has no metrics.jsonl (give the folder a training run wrote)")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}: line {n} is not JSON ({exc.msg})") from None
    if not rows:
        raise UserError(f"{path} is empty: the run logged no step yet")
    return rows


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) where the key was logged with a number (null, i.e. nan/inf or an empty bin, skipped)."""
    pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
    return [p[0] for p in pts], [p[1] for p in pts]


def group_keys(keys) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key in sorted(keys):
        if key in SKIP:
            continue
        stem = next((g[0] for g in GROUPS if g[2](key)), "other")
        out.setdefault(stem, []).append(key)
    return out


def plot_runs(run_dirs: list[Path], out: Path | None = None) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = {Path(d).name or str(d): read_metrics(Path(d)) for d in run_dirs}
    out = Path(out) if out else Path(run_dirs[0]) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    titles = {g[0]: g[1] for g in GROUPS} | {"other": "Other logged values"}
    keys = {k for rows in runs.values() for r in rows for k in r}
    written = []
    for stem, names in group_keys(keys).items():
        fig, ax = plt.subplots(figsize=(7, 4))
        for r, (run, rows) in enumerate(runs.items()):   # colour: the quantity; line style: the run
            for c, key in enumerate(names):
                steps, values = series(rows, key)
                if steps:
                    label = key if len(runs) == 1 else f"{run}: {key}"
                    ax.plot(steps, values, color=f"C{c % 10}", linestyle=STYLES[r % len(STYLES)],
                            marker="." if len(steps) < 30 else None, label=label)
        ax.set_title(titles[stem], fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"{stem}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plot_run", description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run folder(s) holding metrics.jsonl")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <first run>/plots)")
    args = parser.parse_args(argv)
    try:
        for path in plot_runs(args.run_dirs, args.out):
            print(path)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
