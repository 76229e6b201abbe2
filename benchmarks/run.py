"""Benchmark suites and leaderboards.

    python -m benchmarks.run suite=NAME [key=value ...]     run a suite, then re-render the leaderboards
    python -m benchmarks.run render [results=...] [out=...] re-render the leaderboards from result files
    python -m benchmarks.run list suite=NAME                the suite's grid and which entries are up to date
    python -m benchmarks.run compare results=DIR            a fresh run's results against the committed ones
                                                            (against=benchmarks/results, tolerance=3 spreads)

Suites: digits, mnist, markov (embedded, CPU-sized), imagenet256 (runs only with a local MaskGit checkpoint
and reference statistics), or a YAML file of suite fields (see docs/benchmarks.md).

Options:
    force=true                re-run entries even when their result (same config hash) exists
    only=ID[,ID...]           run only entries whose id starts with one of these (e.g. only=dimo-fkl)
    kinds=teacher,distill,perf  run only these kinds of entries
    results=DIR               result files, one JSON per entry (default benchmarks/results)
    work=DIR                  run folders of trained students and teachers (default runs/benchmarks)
    out=DIR                   leaderboard output: DIR/leaderboards.md and DIR/leaderboards/ (default docs)
    render=false              do not re-render the leaderboards after a suite
    progress=false            no progress bar
Any other key refines the suite: eval.seeds=[0], eval.samples_per_class=50, seeds=[0,1], trainer.steps=200
(every method), teacher.<field>=... (every teacher), evaluator.reference=<stats.npz>, performance=null, ...
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from core.errors import UserError

EMBEDDED = ("digits", "mnist", "markov")
OPTIONS = {"suite": None, "force": "false", "only": "", "kinds": "", "results": "benchmarks/results",
           "work": "runs/benchmarks", "out": "docs", "render": "true", "progress": "true",
           "against": "benchmarks/results", "tolerance": "3"}
REGENERATE = " && ".join(f"python -m benchmarks.run suite={s}" for s in EMBEDDED)


def flag(opts: dict, key: str) -> bool:
    value = str(opts[key]).lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise UserError(f"{key}='{opts[key]}' is not a boolean; valid: true, false")
    return value in ("true", "1", "yes")


def parse(args: list[str]) -> tuple[dict, dict]:
    """Runner options and nested suite overrides (``teacher.x=...`` applies to every teacher)."""
    from core.cli import parse_kv
    overrides = parse_kv(args, "suite=digits, force=true", flat=set(OPTIONS))
    opts = {**OPTIONS, **{k: overrides.pop(k) for k in OPTIONS if k in overrides}}
    if isinstance(overrides.get("teacher"), dict):
        overrides["__teacher__"] = overrides.pop("teacher")
    return opts, overrides


def load(opts: dict, overrides: dict):
    from benchmarks.suites import load_suite
    if not opts["suite"]:
        raise UserError("suite=<name> is required: digits, mnist, markov, imagenet256 or a .yaml file")
    teacher = overrides.pop("__teacher__", None)
    return load_suite(opts["suite"], overrides, teacher)


def render(opts: dict) -> dict:
    from benchmarks import leaderboard, results
    from benchmarks.suites import BUILTIN
    records = results.read_all(Path(opts["results"]))
    descriptions = {name: spec.get("description", "") for name, spec in BUILTIN.items()}
    paths = leaderboard.render(records, Path(opts["out"]), descriptions, REGENERATE)
    print(f"benchmarks: {len(records)} results -> {paths['markdown']}, {paths['html']}")
    return paths


def cmd_run(args: list[str]) -> int:
    from benchmarks.runner import run_suite
    opts, overrides = parse(args)
    suite = load(opts, overrides)
    t0 = time.time()
    outcomes = run_suite(suite, Path(opts["results"]), Path(opts["work"]), force=flag(opts, "force"),
                         only=[o for o in opts["only"].split(",") if o],
                         kinds=[k for k in opts["kinds"].split(",") if k], progress=flag(opts, "progress"))
    ran = sum(o.status == "ran" for o in outcomes)
    print(f"benchmarks: suite '{suite.name}': {ran} entries ran, {len(outcomes) - ran} up to date, "
          f"{time.time() - t0:.0f} s")
    if flag(opts, "render") and Path(opts["results"]).is_dir():
        render(opts)
    return 0


def cmd_list(args: list[str]) -> int:
    from benchmarks.runner import Runner
    from benchmarks.suites import entries
    opts, overrides = parse(args)
    suite = load(opts, overrides)
    runner = Runner(suite, Path(opts["results"]), Path(opts["work"]))
    for e in entries(suite):
        current, h, _ = runner.is_current(e)
        print(f"{e.id:40s} {e.group:13s} {h}  {'up to date' if current else 'to run'}")
    return 0


def cmd_render(args: list[str]) -> int:
    opts, extra = parse(args)
    if extra:
        raise UserError(f"render takes only results=, out=; got {', '.join(extra)}")
    render(opts)
    return 0


def cmd_compare(args: list[str]) -> int:
    from benchmarks.compare import compare
    opts, extra = parse(args)
    if extra:
        raise UserError(f"compare takes only results=, against=, tolerance=; got {', '.join(extra)}")
    try:
        tolerance = float(opts["tolerance"])
    except ValueError:
        raise UserError(f"tolerance='{opts['tolerance']}' is not a number (spreads, e.g. 3)") from None
    rows = compare(Path(opts["results"]), Path(opts["against"]), tolerance)
    return 0 if rows and all(r["agrees"] for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help", "help") for a in argv):
        print(__doc__.strip())
        return 0
    command = argv.pop(0) if argv and "=" not in argv[0] else "run"
    handlers = {"run": cmd_run, "render": cmd_render, "list": cmd_list, "compare": cmd_compare}
    if command not in handlers:
        print(f"benchmarks: unknown command '{command}'; valid: {', '.join(handlers)}", file=sys.stderr)
        return 2
    try:
        return handlers[command](argv)
    except UserError as exc:
        print(f"benchmarks: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
