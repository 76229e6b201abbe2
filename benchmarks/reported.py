"""Numbers published in the paper, kept apart from anything dimo reproduced (rendered as their own table).

Transcribed from Table 2 of "Di[M]O: Distilling Masked Diffusion Models into One-step Generator" and its
Soft-Di[M]O extension (Zhu, Wang, Lathuilière, Kalogeiton; slides "Di[M]O and Soft-Di[M]O"):
class-conditional ImageNet 256x256, MaskGit teacher, 50k samples. ``None`` is a '-' in the paper.
"""
from __future__ import annotations

from dataclasses import dataclass

CITATION = ("Y. Zhu, X. Wang, S. Lathuilière, V. Kalogeiton, \"Di[M]O: Distilling Masked Diffusion Models into "
            "One-step Generator\" and its Soft-Di[M]O extension, Table 2 (class-conditional ImageNet-256, MaskGit "
            "teacher; the Soft-Di[M]O row is that extension's own result)")
SETTING = "ImageNet 256x256, class-conditional, MaskGit teacher"
METRICS = ("fid", "is", "precision", "recall", "density", "coverage")
HIGHER_IS_BETTER = {"fid": False, "is": True, "precision": True, "recall": True, "density": True, "coverage": True}

# (group, method, citation in the paper, steps, FID, IS, Prec., Rec., Den., Cov.)
_TABLE2 = [
    ("teacher", "MaskGit", "Besnier & Chen, 2023", 16, 6.60, 224.1, 0.83, 0.40, 1.25, 0.98),
    ("teacher", "MaskGit", "Besnier & Chen, 2023", 8, 6.66, 221.6, 0.83, 0.40, 1.23, 0.97),
    ("teacher", "MaskGit", "Besnier & Chen, 2023", 4, 10.73, 192.3, 0.75, 0.31, 1.01, 0.92),
    ("teacher", "MaskGit", "Besnier & Chen, 2023", 2, 91.35, 13.4, 0.18, 0.16, 0.09, 0.12),
    ("sampler", "θ-trapezoidal", "Ren et al., 2025", 64, 6.70, None, None, None, None, None),
    ("sampler", "θ-trapezoidal", "Ren et al., 2025", 32, 7.10, None, None, None, None, None),
    ("sampler", "Halton (reproduced by the authors)", "Besnier et al., 2025", 32, 9.62, 296.2, 0.90, 0.28, 1.47, 0.98),
    ("sampler", "Halton (reproduced by the authors)", "Besnier et al., 2025", 16, 8.73, 283.2, 0.89, 0.28, 1.46, 0.98),
    ("sampler", "Halton (reproduced by the authors)", "Besnier et al., 2025", 8, 7.73, 248.8, 0.86, 0.31, 1.37, 0.97),
    ("distillation", "SDTT", "Deschenaux & Gulcehre, 2024", 4, 8.97, 205.0, 0.88, 0.41, 1.43, 0.97),
    ("distillation", "SDTT", "Deschenaux & Gulcehre, 2024", 1, 90.40, 14.0, 0.31, 0.13, 0.21, 0.34),
    ("distillation", "di4c", "Hayakawa et al., 2024", 4, 6.79, 209.2, None, None, None, None),
    ("distillation", "di4c-d", "Hayakawa et al., 2024", 4, 6.57, 213.6, None, None, None, None),
    ("distillation", "ReDi¹", "Yoo et al., 2025", 4, 7.58, 228.0, 0.87, 0.46, 1.33, 0.98),
    ("distillation", "ReDi²", "Yoo et al., 2025", 4, 7.86, 240.0, 0.87, 0.44, 1.31, 0.97),
    ("distillation", "ReDi³-distill", "Yoo et al., 2025", 1, 11.68, 182.0, 0.83, 0.44, 1.25, 0.96),
    ("distillation", "Di[M]O", "Zhu et al., 2025b", 1, 6.91, 214.0, 0.83, 0.38, 1.26, 0.97),
    ("distillation", "Soft-Di[M]O", "Zhu et al., Soft-Di[M]O", 1, 6.40, 214.8, 0.83, 0.39, 1.27, 0.97),
]


def table2() -> list[dict]:
    """The rows as dicts: group, method, cite, steps and the metric values (None where not reported)."""
    return [{"group": g, "method": m, "cite": c, "steps": s, **dict(zip(METRICS, vals))}
            for g, m, c, s, *vals in _TABLE2]


# ------------------------------------------------------------------------------------------------
# The other teachers of the Soft-Di[M]O extension, each beside the suite that reproduces it
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReportedTable:
    """Published rows of one suite: ``rows`` are (group, method, cite, steps, *metric values, entry id or None);
    the entry id names the suite result that reproduces the row (its metrics are shown beside the paper's)."""
    suite: str
    setting: str
    citation: str
    metrics: tuple[str, ...]
    titles: tuple[str, ...]
    higher_is_better: dict[str, bool]
    rows: tuple[tuple, ...]


SOFT_CITATION = ("Y. Zhu et al., Soft-Di[M]O (extension of \"Di[M]O: Distilling Masked Diffusion Models into One-step "
                 "Generator\")")

TABLE1_MASKBIT = ReportedTable(
    suite="imagenet256_maskbit",
    setting="ImageNet 256x256, class-conditional, MaskBit teacher (14 bit), 50k samples, Inception FID/IS/P/R",
    citation=SOFT_CITATION + ", Table 1",
    metrics=("fid", "is", "precision", "recall"), titles=("FID", "IS", "Prec.", "Rec."),
    higher_is_better={"fid": False, "is": True, "precision": True, "recall": True},
    rows=(("teacher", "MaskBit", "Weber et al., 2024", 64, 1.66, 320.0, 0.81, 0.60, "teacher-maskbit-64step"),
          ("distillation", "Di[M]O-MaskBit", "Zhu et al., 2025b", 1, 2.89, 310.1, 0.87, 0.49, "dimo-1step-seed0"),
          ("distillation", "Soft-Di[M]O-MaskBit", "Zhu et al., Soft-Di[M]O", 1, 1.96, 281.4, 0.84, 0.55,
           "soft_dimo-1step-seed0"),
          ("distillation", "Soft-Di[M]O-MaskBit, trained longer", "Zhu et al., Soft-Di[M]O", 1, 1.56, 273.2, 0.81,
           0.60, None)))

TEXT_TO_IMAGE_COLUMNS = dict(   # Table 3's columns, shared by its two teachers
    metrics=("fid", "clip", "geneval", "hps"), titles=("FID", "CLIP", "GenEval", "HPS v2.1"),
    higher_is_better={"fid": False, "clip": True, "geneval": True, "hps": True})

TABLE3_MEISSONIC = ReportedTable(
    suite="t2i_meissonic",
    setting="text-to-image 1024x1024, Meissonic teacher: MS-COCO FID, CLIP score, GenEval overall, HPS v2.1 average",
    citation=SOFT_CITATION + ", Table 3",
    **TEXT_TO_IMAGE_COLUMNS,
    rows=(("teacher", "Meissonic", "Bai et al., 2024", 32, 50.13, 0.318, 0.46, 29.63, "teacher-meissonic-32step"),
          ("distillation", "Di[M]O-Meissonic", "Zhu et al., 2025b", 1, 38.45, 0.322, 0.43, 28.59, "dimo-1step-seed0"),
          ("distillation", "Soft-Di[M]O-Meissonic", "Zhu et al., Soft-Di[M]O", 1, 28.33, 0.319, 0.53, 32.35,
           "soft_dimo-1step-seed0")))

TABLE3_MASKGEN = ReportedTable(
    suite="t2i_maskgen",
    setting="text-to-image 256x256, MaskGen-L teacher: MS-COCO FID, CLIP score, GenEval overall, HPS v2.1 average",
    citation=SOFT_CITATION + ", Table 3",
    **TEXT_TO_IMAGE_COLUMNS,
    rows=(("teacher", "MaskGen-L", "Kim et al., 2025", 16, 22.64, 0.312, 0.48, 27.60, "teacher-maskgen-16step"),
          ("distillation", "Di[M]O-MaskGen-L", "Zhu et al., 2025b", 1, 24.15, 0.299, 0.42, 27.14, "dimo-1step-seed0"),
          ("distillation", "Soft-Di[M]O-MaskGen-L", "Zhu et al., Soft-Di[M]O", 1, 23.43, 0.321, 0.51, 29.38,
           "soft_dimo-1step-seed0"),
          ("test-time", "Soft-Di[M]O-MaskGen-L + TTS", "Zhu et al., Soft-Di[M]O", 1, None, None, 0.63, 31.95,
           "soft_dimo-tteo4x4-seed0")))

TABLES = {t.suite: t for t in (TABLE1_MASKBIT, TABLE3_MEISSONIC, TABLE3_MASKGEN)}


def beside(table: ReportedTable, results_root) -> list[str]:
    """Markdown: each published row with dimo's reproduced value of every metric beside it (from
    ``<results_root>/<suite>/<entry id>.json``; empty where no result exists yet)."""
    from pathlib import Path

    from benchmarks.results import read
    from core.tables import markdown_table
    head = ["group", "method", "steps"]
    for m, t in zip(table.metrics, table.titles):
        arrow = "↑" if table.higher_is_better[m] else "↓"
        head += [f"{t} {arrow} paper", f"{t} dimo"]
    rows = []
    for group, method, cite, steps, *rest in table.rows:
        values, entry = rest[:-1], rest[-1]
        path = Path(results_root) / table.suite / f"{entry}.json" if entry else None
        got = read(path).metrics if path is not None and path.is_file() else {}
        cells = [group, f"{method} ({cite})", str(steps)]
        for m, v in zip(table.metrics, values):
            cells += ["-" if v is None else f"{v:g}", f"{got[m]:.4g}" if m in got else ""]
        rows.append(cells)
    return markdown_table(head, rows, numbers_from=3)
