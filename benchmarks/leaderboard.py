"""Leaderboards rendered from result files only: Markdown, a static sortable HTML page, and plots.

Rows are grouped as in the paper's tables (Teacher, Sampler, Discrete distillation); performance
records get their own table; the paper's published numbers (``benchmarks.reported``) are a separate
table with their citation and are never mixed with what dimo reproduced.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Iterable, Optional

from benchmarks import reported
from benchmarks.results import Result
from core.tables import markdown_table

GROUP_TITLES = {"reference": "Reference", "teacher": "Teacher", "sampler": "Sampler", "distillation": "Discrete distillation",
                "test-time": "Test-time search", "performance": "Performance"}
# Display metadata as data (HELM's schema.yaml idea): stable name -> (column title, description).
METRICS = {
    "fd": ("FD", "Fréchet distance in the task classifier's feature space (the role of FID)"),
    "fid": ("FID", "Fréchet Inception distance against the reference statistics"),
    "is": ("IS", "Inception-style score of the evaluator's class predictions"),
    "precision": ("Prec.", "k-NN precision (Kynkäänniemi et al.)"),
    "recall": ("Rec.", "k-NN recall (Kynkäänniemi et al.)"),
    "density": ("Den.", "density (Naeem et al.)"),
    "coverage": ("Cov.", "coverage (Naeem et al.)"),
    "accuracy": ("Acc.", "share of samples the evaluator classifies as their condition"),
    "class_logp": ("log p(c|x)", "mean log-likelihood of the conditioning class under the evaluator's classifier "
                                 "(the classifier reward)"),
    "reward": ("Reward", "mean reward of the final (hard) samples under the rewards a test-time search ascends"),
    "valid": ("Valid", "share of samples the task's exact check accepts (markov: every transition possible under "
                       "the chain of its class; words: a word of the list with its class's length)"),
    "transition_valid": ("Valid trans.", "share of transitions possible under the true chain (exact)"),
    "nll": ("NLL/token", "negative log-likelihood per token under the true distribution (exact; impossible "
                         "transitions charged at the floor probability)"),
    "teacher_nll": ("NLL/letter (teacher)", "words: nats per letter under the teacher, its exact negative ELBO (the "
                                            "NLL averaged over all orders of revealing the letters)"),
    "attribute": ("Attr.", "words: share of samples with the searched rare property (default: a 'z')"),
    "attribute_valid": ("Attr. & valid", "words: share of samples that are words of the list with the rare "
                                         "property (what the word_attribute reward asks for)"),
    "distinct": ("Distinct", "share of distinct sequences among the samples (diversity)"),
    "bigram_tv": ("Bigram TV", "total variation between sampled and true transition frequencies"),
    "ngram_tv": ("n-gram TV", "total variation between the character n-gram frequencies of the samples and of the "
                              "word list (exact)"),
    "iter_seconds": ("s / iter", "seconds per training iteration (median)"),
    "iter_cost_vs_mdm": ("iter ÷ MDM", "training iteration time relative to a plain MDM step, same model "
                                       "and batch"),
    "samples_per_s": ("samples/s", "sampling throughput at the method's step count"),
    "throughput_vs_teacher": ("× teacher", "sampling throughput relative to the teacher's k-step sampling"),
    "peak_memory_mb": ("peak MB", "peak memory of training (CUDA allocator, or RSS growth on CPU)"),
}
PLOT_PREFERENCE = ("fd", "fid", "valid", "nll", "accuracy", "is")
ARROW = {True: "↑", False: "↓"}


# ------------------------------------------------------------------------------------------------
# shared helpers
# ------------------------------------------------------------------------------------------------

def by_suite(records: Iterable[Result]) -> dict[str, list[Result]]:
    out: dict[str, list[Result]] = defaultdict(list)
    for r in records:
        out[r.entry.suite].append(r)
    return dict(sorted(out.items()))


def ordered(records: list[Result]) -> list[Result]:
    order = list(GROUP_TITLES)
    return sorted(records, key=lambda r: (order.index(r.entry.group), r.entry.label, r.entry.steps, r.entry.id))


def metric_columns(records: list[Result]) -> list[str]:
    """Known metrics in the display order, then any others in the order they first appear."""
    seen: list[str] = []
    for r in records:
        seen += [k for k in r.metrics if k not in seen]
    return [k for k in METRICS if k in seen] + [k for k in seen if k not in METRICS]


def title(metric: str) -> str:
    return METRICS.get(metric, (metric, ""))[0]


def fmt(value: Optional[float]) -> str:
    if value is None:
        return "-"
    a = abs(value)
    return f"{value:.1f}" if a >= 100 else f"{value:.2f}" if a >= 10 else f"{value:.3f}"


def cell(r: Result, k: str) -> str:
    if k not in r.metrics:
        return "-"
    s = r.spread.get(k, 0.0)
    return fmt(r.metrics[k]) + (f" ± {fmt(s)}" if s > 0 else "")


# How each row was made, beside its metrics: (column title, value of a record or None).
PROVENANCE = (("train seed", lambda r: r.seeds.train), ("train s", lambda r: r.train_time_s),
              ("wall s", lambda r: r.wall_time_s))


def provenance(r: Result) -> list[tuple[str, Optional[float]]]:
    """(text, sort value) of a row's training seed, training seconds (- when reused or none) and wall seconds."""
    values = [get(r) for _, get in PROVENANCE]
    return [("-" if v is None else str(v) if isinstance(v, int) else f"{v:.0f}", v) for v in values]


def direction(records: list[Result], k: str) -> str:
    for r in records:
        if k in r.higher_is_better:
            return ARROW[r.higher_is_better[k]]
    return ""


def setup_line(records: list[Result]) -> str:
    """Seeds, sizes, device and code version of a suite's quality records."""
    q = [r for r in records if r.entry.group != "performance"]
    if not q:
        return ""
    seeds = sorted({tuple(r.seeds.sample) for r in q})
    train = sorted({r.seeds.train for r in q if r.seeds.train is not None})
    sizes = sorted({r.num_samples for r in q})
    devices = sorted({r.env.device for r in q})
    commits = sorted({r.env.git_commit[:10] + ("+dirty" if r.env.git_dirty else "") for r in q})
    return (f"{'/'.join(str(n) for n in sizes)} generated samples per model and sampling seed; sampling seeds "
            f"{', '.join(str(list(s)) for s in seeds)} (values are mean ± std over these seeds); training "
            f"seed(s) {train or '-'}; {len(q)} results; device {', '.join(devices)}; dimo commit(s) "
            f"{', '.join(commits)}.")


# ------------------------------------------------------------------------------------------------
# Markdown
# ------------------------------------------------------------------------------------------------

def md_table(records: list[Result], first: str = "group") -> list[str]:
    cols = metric_columns(records)
    head = [first, "model", "steps"] + [f"{title(k)} {direction(records, k)}".strip() for k in cols]
    head += [t for t, _ in PROVENANCE]
    return markdown_table(head, ([GROUP_TITLES[r.entry.group], r.entry.label, str(r.entry.steps)]
                                 + [cell(r, k) for k in cols] + [text for text, _ in provenance(r)]
                                 for r in ordered(records)), numbers_from=3)


def md_reported() -> list[str]:
    cols = list(reported.METRICS)
    head = ["group", "method", "steps"] + [f"{title(k)} {ARROW[reported.HIGHER_IS_BETTER[k]]}" for k in cols]
    return markdown_table(head, ([GROUP_TITLES[row["group"]], f"{row['method']} ({row['cite']})", str(row["steps"])]
                                 + [("-" if row[k] is None else f"{row[k]:g}") for k in cols]
                                 for row in reported.table2()), numbers_from=3)


def markdown(records: list[Result], descriptions: dict[str, str], plots: dict[str, list[str]],
             regenerate: str, html_name: Optional[str] = None) -> str:
    out = ["# Leaderboards", "",
           "<!-- generated by `python -m benchmarks.run render` from benchmarks/results/<suite>/*.json; "
           "do not edit by hand -->", "",
           "Every number below was produced by dimo's benchmark suites on the machine named in each section "
           "and is rendered from the result files only. Regenerate (entries whose result exists with the same "
           "config hash are skipped; `force=true` re-runs them):", "", "```bash", regenerate, "```", ""]
    out += ["Values are mean ± standard deviation over the sampling seeds named in each section; the spread does not "
            "include training noise (one training seed per model). To check a reproduction, run the suites into a "
            "fresh folder with an empty cache and compare metric by metric, in units of that spread:", "",
            "```bash", "DIMO_CACHE=/tmp/fresh-cache python -m benchmarks.run suite=digits results=/tmp/fresh "
            "work=/tmp/fresh-runs render=false", "python -m benchmarks.run compare results=/tmp/fresh tolerance=3",
            "```", ""]
    if html_name:
        out += [f"A sortable HTML version: [{html_name}]({html_name}).", ""]
    for suite, recs in by_suite(records).items():
        quality = [r for r in recs if r.entry.group != "performance"]
        perf = [r for r in recs if r.entry.group == "performance"]
        out += [f"## {suite}", ""]
        if descriptions.get(suite):
            out += [descriptions[suite] + ".", ""]
        if quality:
            out += ["### Reproduced", "", setup_line(quality), ""] + md_table(quality) + [""]
            out += [f"![{suite}: {Path(p).stem}]({p})" for p in plots.get(suite, [])] + [""]
        if perf:
            cfg = perf[0].config["trainer"]
            out += ["### Performance", "",
                    f"Training iteration time relative to a plain MDM step on the same teacher network and batch "
                    f"({cfg['batch_size']}), sampling throughput relative to the teacher's k-step sampling (same "
                    f"batch), peak memory of training; device {perf[0].env.device}. Single measurements "
                    f"(median over iterations, best of sampling repeats), so expect ±10-20% between runs on a "
                    f"shared CPU.", ""] + md_table(perf, first="group") + [""]
    out += ["## Reported in the paper (not reproduced here)", "",
            f"{reported.SETTING}. {reported.CITATION}. These numbers are copied from the paper, not produced by "
            f"dimo, and are kept out of the tables above.", ""] + md_reported() + [""]
    out += ["## Metrics", ""] + [f"- **{t}** (`{k}`): {d}" for k, (t, d) in METRICS.items()] + [""]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------
# HTML (static, sortable, no network)
# ------------------------------------------------------------------------------------------------

def _cell(text: str, value, left: bool = False) -> dict:
    return {"text": text, "v": "" if value is None else value, "left": left}


def _group_cell(group: str) -> dict:
    return _cell(GROUP_TITLES[group], list(GROUP_TITLES).index(group), True)


def html_table(records: list[Result], caption: str) -> dict:
    cols = metric_columns(records)
    head = [{"text": h, "left": True} for h in ("group", "model", "steps")]
    head += [{"text": f"{title(k)} {direction(records, k)}", "title": METRICS.get(k, ("", ""))[1]} for k in cols]
    head += [{"text": t} for t, _ in PROVENANCE]
    rows = [{"group": r.entry.group, "attrs": {"data-entry": f"{r.entry.suite}/{r.entry.id}",
                                               "title": f"config hash {r.config_hash}"},
             "cells": [_group_cell(r.entry.group), _cell(r.entry.label, r.entry.label, True),
                       _cell(str(r.entry.steps), r.entry.steps)] + [_cell(cell(r, k), r.metrics.get(k)) for k in cols]
                      + [_cell(text, v) for text, v in provenance(r)]}
            for r in ordered(records)]
    return {"caption": caption, "head": head, "rows": rows}


def html_reported() -> dict:
    cols = list(reported.METRICS)
    head = [{"text": h, "left": True} for h in ("group", "method", "steps")]
    head += [{"text": f"{title(k)} {ARROW[reported.HIGHER_IS_BETTER[k]]}"} for k in cols]
    rows = [{"group": row["group"], "attrs": {"data-reported": "true"},
             "cells": [_group_cell(row["group"]), _cell(f"{row['method']} ({row['cite']})", row["method"], True),
                       _cell(str(row["steps"]), row["steps"])]
                      + [_cell("-" if row[k] is None else f"{row[k]:g}", row[k]) for k in cols]}
            for row in reported.table2()]
    return {"id": "reported", "caption": f"Reported in the paper, not reproduced: {reported.SETTING}",
            "head": head, "rows": rows}


def html_page(records: list[Result], descriptions: dict[str, str], regenerate: str) -> str:
    """The page from ``templates/leaderboard.html.j2`` (Jinja2, autoescaped)."""
    import jinja2
    env = jinja2.Environment(loader=jinja2.PackageLoader("benchmarks", "templates"), autoescape=True,
                             keep_trailing_newline=True)
    suites = []
    for suite, recs in by_suite(records).items():
        quality = [r for r in recs if r.entry.group != "performance"]
        perf = [r for r in recs if r.entry.group == "performance"]
        suites.append({"name": suite, "description": descriptions.get(suite),
                       "setup": setup_line(quality) if quality else "",
                       "quality": html_table(quality, f"{suite}: reproduced") if quality else None,
                       "perf": html_table(perf, f"{suite}: performance") if perf else None})
    return env.get_template("leaderboard.html.j2").render(
        suites=suites, regenerate=regenerate, citation=reported.CITATION, reported=html_reported())


# ------------------------------------------------------------------------------------------------
# plots
# ------------------------------------------------------------------------------------------------

def plot_metrics(records: list[Result], limit: int = 2) -> list[str]:
    present = {k for r in records for k in r.metrics}
    return [k for k in PLOT_PREFERENCE if k in present][:limit]


def plot_suite(records: list[Result], metric: str, out_stem: Path) -> list[Path]:
    """Metric vs sampling steps: a line per teacher sampler, a marker per distilled method (± spread)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    series: dict[tuple[str, str], list[Result]] = defaultdict(list)
    for r in records:
        if metric in r.metrics and r.entry.group != "performance":
            series[(r.entry.group, r.entry.label)].append(r)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    markers = iter("osD^vP*Xh<>")
    for (group, label), rs in sorted(series.items(), key=lambda kv: (list(GROUP_TITLES).index(kv[0][0]), kv[0][1])):
        rs = sorted(rs, key=lambda r: r.entry.steps)
        x = [r.entry.steps for r in rs]
        y = [r.metrics[metric] for r in rs]
        e = [r.spread.get(metric, 0.0) for r in rs]
        style = "--" if group == "reference" else "-" if group in ("teacher", "sampler") else "none"
        ax.errorbar(x, y, yerr=e, linestyle=style, marker=next(markers, "o"), capsize=3, label=label,
                    markersize=7 if group == "distillation" else 5)
    ax.set_xscale("log", base=2)
    steps = sorted({r.entry.steps for rs in series.values() for r in rs})
    ax.set_xticks(steps, [str(s) for s in steps])
    ax.set_xlabel("sampling steps")
    higher = next((r.higher_is_better[metric] for rs in series.values() for r in rs), None)
    ax.set_ylabel(f"{title(metric)} ({'higher' if higher else 'lower'} is better)")
    ax.set_title(f"{records[0].entry.suite}: {title(metric)} vs sampling steps (± std over sampling seeds)",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths = [out_stem.with_suffix(".png"), out_stem.with_suffix(".svg")]
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(paths[0], dpi=110, metadata={"Software": None})
    matplotlib.rcParams["svg.hashsalt"] = "dimo"   # stable ids: re-rendering the same data gives the same file
    fig.savefig(paths[1], metadata={"Date": None, "Creator": None})
    plt.close(fig)
    return paths


# ------------------------------------------------------------------------------------------------
# everything
# ------------------------------------------------------------------------------------------------

def render(records: list[Result], out_dir: Path, descriptions: dict[str, str], regenerate: str,
           name: str = "leaderboards") -> dict[str, Path]:
    """``<out>/<name>.md``, ``<out>/<name>/index.html`` and ``<out>/<name>/<suite>_<metric>.{png,svg}``."""
    out_dir = Path(out_dir)
    assets = out_dir / name
    assets.mkdir(parents=True, exist_ok=True)
    plots: dict[str, list[str]] = {}
    for suite, recs in by_suite(records).items():
        for metric in plot_metrics(recs):
            png, _ = plot_suite(recs, metric, assets / f"{suite}_{metric}")
            plots.setdefault(suite, []).append(f"{name}/{png.name}")
    page = assets / "index.html"
    page.write_text(html_page(records, descriptions, regenerate))
    md = out_dir / f"{name}.md"
    md.write_text(markdown(records, descriptions, plots, regenerate, html_name=f"{name}/index.html"))
    return {"markdown": md, "html": page}
