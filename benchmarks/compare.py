"""Reproduction check: results of a fresh run against the committed ones, metric by metric, in units of their
spread over sampling seeds.

    python -m benchmarks.run compare results=<fresh results dir> [against=benchmarks/results] [tolerance=3]

A metric agrees when ``|fresh - committed| <= tolerance * max(spread_fresh, spread_committed, floor)``, where
``floor`` (1% of the committed value's magnitude, or 1e-3) keeps deterministic metrics (spread 0) comparable.
A fresh run re-trains every model from its seed, so training noise (not in the spread) shows up too: the report
says by how many spreads each metric moved, and writes the table as JSON beside the fresh results.
"""
from __future__ import annotations

import json
from pathlib import Path

from benchmarks.results import Result, read_all


def key(r: Result) -> tuple[str, str]:
    return r.entry.suite, r.entry.id


def compare_records(fresh: list[Result], committed: list[Result], tolerance: float) -> list[dict]:
    base = {key(r): r for r in committed}
    rows = []
    for r in sorted(fresh, key=key):
        old = base.get(key(r))
        if old is None or r.entry.group == "performance":   # timings are not reproducible quantities
            continue
        for metric in sorted(set(r.metrics) & set(old.metrics)):
            a, b = r.metrics[metric], old.metrics[metric]
            scale = max(r.spread.get(metric, 0.0), old.spread.get(metric, 0.0), 0.01 * abs(b), 1e-3)
            rows.append({"suite": r.entry.suite, "entry": r.entry.id, "metric": metric, "fresh": a,
                         "committed": b, "spreads": abs(a - b) / scale, "agrees": abs(a - b) <= tolerance * scale})
    return rows


def format_report(rows: list[dict], tolerance: float) -> str:
    lines = [f"{'suite/entry':44s} {'metric':12s} {'fresh':>10s} {'committed':>10s} {'spreads':>8s}"]
    for row in rows:
        mark = "" if row["agrees"] else f"  > {tolerance:g}"
        lines.append(f"{row['suite'] + '/' + row['entry']:44s} {row['metric']:12s} {row['fresh']:10.4g} "
                     f"{row['committed']:10.4g} {row['spreads']:8.2f}{mark}")
    agree = sum(r["agrees"] for r in rows)
    lines.append(f"{agree}/{len(rows)} metrics within {tolerance:g} spreads")
    return "\n".join(lines)


def compare(fresh_dir: Path, committed_dir: Path, tolerance: float) -> list[dict]:
    rows = compare_records(read_all(fresh_dir), read_all(committed_dir), tolerance)
    print(format_report(rows, tolerance))
    (Path(fresh_dir) / "comparison.json").write_text(json.dumps(rows, indent=1))
    return rows
