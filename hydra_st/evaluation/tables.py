"""Plain-text / Markdown tables of metric values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def format_table(
    rows: Mapping[str, Mapping[str, float | str | None]], columns: Sequence[str], row_header: str = "", digits: int = 4
) -> str:
    """Render ``{row: {column: value}}`` as a Markdown table (missing values shown as ``–``).

    Args:
        rows: ``{row name: {column: value}}``; floats are formatted with ``digits`` decimals, strings as given.
        columns: the columns to show, in order (a row without one shows ``–``).
        row_header: the header of the first column.
        digits: decimals of float cells.

    Returns:
        The Markdown table, one line per row, without a trailing newline.

    Example:
        >>> print(format_table({"bm25": {"ndcg@10": 0.6863}}, ["ndcg@10"], row_header="retriever"))
        | retriever | ndcg@10 |
        |---|---|
        | bm25 | 0.6863 |
    """

    def cell(value: float | str | None) -> str:
        if value is None:
            return "–"
        if isinstance(value, float):
            return f"{value:.{digits}f}"
        return str(value)

    lines = [f"| {row_header} | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for name, values in rows.items():
        lines.append(f"| {name} | " + " | ".join(cell(values.get(c)) for c in columns) + " |")
    return "\n".join(lines)
