"""Markdown tables, laid out in one place: callers format the cells, ``table`` writes the pipes and the rule."""

from __future__ import annotations


def table(header: list[str], rows: list[list[str]]) -> str:
    """``| a | b |`` lines: the header, the ``|---|`` rule, one line per row; no trailing newline."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows])
