"""Markdown and plain-text tables, the two formats every report here uses."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["format_table"]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], fmt: str = "markdown") -> str:
    """Render rows as a centred Markdown table (like the seed README's) or as aligned text."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells if i < len(row)) for i in range(len(headers))]
    if fmt == "text":
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)
    if fmt != "markdown":
        raise ValueError(f"unknown table format {fmt!r}: use markdown or text")
    cells = [
        [c.replace("|", "\\|") for c in row] for row in cells
    ]  # a "|" in a cell (e.g. a class name) would split it
    widths = [max(max(len(row[i]) for row in cells if i < len(row)), 3) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.center(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "| " + " | ".join(":" + "-" * (w - 2) + ":" for w in widths) + " |")
    return "\n".join(lines)
