"""Markdown tables, the one formatter behind the leaderboards, the paper-beside-dimo tables, the generated
reference and the digits report."""
from __future__ import annotations

from typing import Iterable, Optional


def markdown_table(head: list[str], rows: Iterable[list[str]], numbers_from: Optional[int] = None) -> list[str]:
    """The table's lines; columns from index ``numbers_from`` on are right-aligned (None: all left)."""
    split = len(head) if numbers_from is None else numbers_from
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * split + "---:|" * (len(head) - split)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in rows]
